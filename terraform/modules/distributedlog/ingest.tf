# Ingest nodes (LogService): stateless, an auto-scaling group behind the
# NLB's ingest_port listener. Log ownership lives in etcd on each node's
# lease; a node stopped by SIGTERM releases what it owns (see dlog-node.tftpl
# for the termination hook watcher that stops dlog before the instance goes).

resource "aws_launch_template" "ingest" {
  name_prefix            = "${var.cluster_name}-ingest-"
  description            = "distributedlog ${var.cluster_name}: ingest nodes"
  image_id               = local.node_ami_id
  instance_type          = var.ingest_instance_type
  key_name               = var.ssh_key_name
  vpc_security_group_ids = [aws_security_group.node["ingest"].id]
  update_default_version = true

  # gzip: the rendered cloud-config is over EC2's 16 KB limit.
  user_data = base64gzip(templatefile("${path.module}/templates/dlog-node.tftpl", merge(local.node_template_vars, {
    role            = "ingest"
    port            = var.ingest_port
    nvme_journal    = false
    lifecycle_watch = true
    asg_name        = local.asg_names["ingest"]
  })))

  iam_instance_profile {
    arn = aws_iam_instance_profile.node["ingest"].arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = local.root_device_name

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size_gb
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.common_tags, { Name = "${var.cluster_name}-ingest", "dlog:role" = "ingest" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.common_tags, { Name = "${var.cluster_name}-ingest", "dlog:role" = "ingest" })
  }

  tags = local.common_tags
}

resource "aws_lb_target_group" "ingest" {
  name                 = "${var.cluster_name}-ingest"
  port                 = var.ingest_port
  protocol             = "TCP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  deregistration_delay = var.nlb_deregistration_delay_seconds
  # Long-lived AppendSession streams are closed when the delay ends, so the
  # client reconnects to a live node instead of hanging on a drained one.
  connection_termination = true

  # The node's HTTP health (on its metrics port): 503 from the moment it
  # starts to drain, so the NLB stops sending new connections while
  # in-flight work finishes; a TCP check would pass until the port closes.
  health_check {
    protocol            = "HTTP"
    port                = tostring(var.metrics_port)
    path                = "/health"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 3
    unhealthy_threshold = 2
  }

  tags = local.common_tags
}

resource "aws_lb_listener" "ingest" {
  load_balancer_arn = aws_lb.this.arn
  port              = var.ingest_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.ingest.arn
  }

  tags = local.common_tags
}

resource "aws_autoscaling_group" "ingest" {
  name                      = local.asg_names["ingest"]
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.ingest_min_size
  max_size                  = var.ingest_max_size
  desired_capacity          = var.ingest_desired_capacity
  target_group_arns         = [aws_lb_target_group.ingest.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 180
  default_instance_warmup   = 60

  launch_template {
    id      = aws_launch_template.ingest.id
    version = aws_launch_template.ingest.latest_version
  }

  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = var.instance_refresh_min_healthy_percentage
      max_healthy_percentage = local.refresh_max_healthy_percentage
      instance_warmup        = 60
    }
  }

  dynamic "tag" {
    for_each = merge(local.common_tags, { "dlog:role" = "ingest" })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = false
    }
  }

  lifecycle {
    precondition {
      condition     = var.ingest_min_size <= var.ingest_desired_capacity && var.ingest_desired_capacity <= var.ingest_max_size
      error_message = "ingest_min_size <= ingest_desired_capacity <= ingest_max_size must hold."
    }
  }

  # Nodes register in etcd at start; have the members up first.
  depends_on = [aws_instance.etcd, aws_secretsmanager_secret_version.tls, aws_iam_role_policy.tls_secret]
}

# Terminating:Wait holds a leaving node while dlog-lifecycle-watch stops dlog,
# whose clean shutdown releases the logs the node owns.
# A separate resource (not initial_lifecycle_hook) so that a new
# drain_timeout_seconds reaches an existing group.
resource "aws_autoscaling_lifecycle_hook" "ingest_drain" {
  name                   = "drain"
  autoscaling_group_name = aws_autoscaling_group.ingest.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  default_result         = "CONTINUE"
  heartbeat_timeout      = local.termination_hook_seconds
}
