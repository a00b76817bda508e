# Cache nodes: the replicated write cache. Plain instances (not an
# auto-scaling group) because each holds a journal of unoffloaded entries on
# its local NVMe instance storage; cloud-init formats and mounts that device
# at /var/lib/dlog and dlog runs with --data-dir /var/lib/dlog.
#
# Like etcd members, cache nodes are never replaced by Terraform on its own:
# roll them one at a time (see the guide), never all at once.

resource "aws_instance" "cache" {
  count = var.cache_count

  ami                    = local.node_ami_id
  instance_type          = var.cache_instance_type
  subnet_id              = var.subnet_ids[count.index % length(var.subnet_ids)]
  vpc_security_group_ids = [aws_security_group.node["cache"].id]
  iam_instance_profile   = aws_iam_instance_profile.node["cache"].name
  key_name               = var.ssh_key_name
  monitoring             = true

  user_data = templatefile("${path.module}/templates/dlog-node.tftpl", merge(local.node_template_vars, {
    role            = "cache"
    port            = var.cache_port
    nvme_journal    = true
    lifecycle_watch = false
  }))
  user_data_replace_on_change = false

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    delete_on_termination = true
  }

  tags        = merge(local.common_tags, { Name = "${var.cluster_name}-cache-${count.index}", "dlog:role" = "cache" })
  volume_tags = merge(local.common_tags, { Name = "${var.cluster_name}-cache-${count.index}", "dlog:role" = "cache" })

  lifecycle {
    ignore_changes = [ami, user_data]
  }

  # Cache nodes register in etcd at start; have the members up first.
  depends_on = [aws_instance.etcd]
}
