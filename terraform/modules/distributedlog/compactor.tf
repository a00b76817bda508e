# Compactor nodes: stateless offload of sealed segments to Parquet on S3,
# each file committed to its log's Iceberg table (catalog.tf). Several may
# run; each claims a segment with an etcd lease, and an upload is
# idempotent (same key, same bytes), so a node can go at any time. No load
# balancer and no inbound rule: nothing calls a compactor.

resource "aws_launch_template" "compactor" {
  name_prefix            = "${var.cluster_name}-compactor-"
  description            = "distributedlog ${var.cluster_name}: compactor nodes"
  image_id               = local.node_ami_id
  instance_type          = var.compactor_instance_type
  key_name               = var.ssh_key_name
  vpc_security_group_ids = [aws_security_group.node["compactor"].id]
  update_default_version = true

  # gzip: the rendered cloud-config is over EC2's 16 KB limit.
  # With iceberg_catalog, cloud-init also gets the RDS catalog's secret and
  # endpoint, or the Glue catalog's URI (catalog.tf, glue.tf).
  user_data = base64gzip(templatefile("${path.module}/templates/dlog-node.tftpl", merge(local.node_template_vars, {
    role            = "compactor"
    port            = var.compactor_port
    nvme_journal    = false
    lifecycle_watch = true
    asg_name        = local.asg_names["compactor"]
  }, local.catalog_node_vars)))

  iam_instance_profile {
    arn = aws_iam_instance_profile.node["compactor"].arn
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
    tags          = merge(local.common_tags, { Name = "${var.cluster_name}-compactor", "dlog:role" = "compactor" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.common_tags, { Name = "${var.cluster_name}-compactor", "dlog:role" = "compactor" })
  }

  tags = local.common_tags
}

resource "aws_autoscaling_group" "compactor" {
  name                      = local.asg_names["compactor"]
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.compactor_min_size
  max_size                  = var.compactor_max_size
  desired_capacity          = var.compactor_desired_capacity
  health_check_type         = "EC2"
  health_check_grace_period = 180
  default_instance_warmup   = 60

  launch_template {
    id      = aws_launch_template.compactor.id
    version = aws_launch_template.compactor.latest_version
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
    for_each = merge(local.common_tags, { "dlog:role" = "compactor" })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = false
    }
  }

  lifecycle {
    precondition {
      condition     = var.compactor_min_size <= var.compactor_desired_capacity && var.compactor_desired_capacity <= var.compactor_max_size
      error_message = "compactor_min_size <= compactor_desired_capacity <= compactor_max_size must hold."
    }
  }

  # Compactors read sealed segments from the cache nodes and the manifest
  # from etcd; have both up first.
  depends_on = [aws_instance.etcd, aws_instance.cache, aws_secretsmanager_secret_version.tls, aws_iam_role_policy.tls_secret, aws_iam_role_policy.catalog_secret]
}

# Terminating:Wait holds a leaving node while dlog-lifecycle-watch stops dlog,
# so it finishes or abandons its upload and gives back its segment claims.
# A separate resource (not initial_lifecycle_hook) so that a new
# drain_timeout_seconds reaches an existing group.
resource "aws_autoscaling_lifecycle_hook" "compactor_drain" {
  name                   = "drain"
  autoscaling_group_name = aws_autoscaling_group.compactor.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  default_result         = "CONTINUE"
  heartbeat_timeout      = local.termination_hook_seconds
}
