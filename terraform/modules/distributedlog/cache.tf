# Cache nodes: the replicated write cache. Plain instances (not an
# auto-scaling group) because each holds a journal of unoffloaded entries on
# its local NVMe instance storage; cloud-init formats and mounts that device
# at /var/lib/dlog and dlog runs with --data-dir /var/lib/dlog.
#
# One node per entry of cache_nodes, keyed by a stable name, so adding a
# node or editing another variable never renames or moves an existing one.
# Instance storage does not survive a stop, so a routine edit must never
# stop or replace these nodes: stopping through the API is disabled, and
# the attributes that would stop (instance_type) or replace (ami,
# user_data, key_name, subnet_id) an instance are ignored. A new value
# reaches a node only when it is replaced deliberately, one node at a time
# (the guide's "Rolling the cache tier").

resource "aws_instance" "cache" {
  for_each = var.cache_nodes

  ami                    = local.node_ami_id
  instance_type          = var.cache_instance_type
  subnet_id              = each.value.subnet_id
  vpc_security_group_ids = [aws_security_group.node["cache"].id]
  iam_instance_profile   = aws_iam_instance_profile.node["cache"].name
  key_name               = var.ssh_key_name
  monitoring             = true
  disable_api_stop       = true

  # gzip: the rendered cloud-config is over EC2's 16 KB limit, and
  # cloud-init unpacks gzip by itself.
  user_data_base64 = base64gzip(templatefile("${path.module}/templates/dlog-node.tftpl", merge(local.node_template_vars, {
    role            = "cache"
    port            = var.cache_port
    nvme_journal    = true
    lifecycle_watch = false
    asg_name        = ""
  })))
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

  tags        = merge(local.common_tags, { Name = "${var.cluster_name}-${each.key}", "dlog:role" = "cache", "dlog:cache-node" = each.key })
  volume_tags = merge(local.common_tags, { Name = "${var.cluster_name}-${each.key}", "dlog:role" = "cache" })

  lifecycle {
    ignore_changes = [ami, user_data, user_data_base64, key_name, instance_type, subnet_id]

    precondition {
      condition     = length(distinct(local.cache_zones)) >= min(length(var.cache_nodes), 3)
      error_message = "cache_nodes must span at least min(number of cache nodes, 3) availability zones, so an ensemble of 3 can have its replicas in 3 zones: ${join(", ", local.cache_zones)}."
    }

    precondition {
      condition     = length(local.zones_without_a_cache) == 0
      error_message = "Every availability zone of subnet_ids needs at least one cache node (replicas are placed one per zone and readers read their own zone's): none in ${join(", ", sort(tolist(local.zones_without_a_cache)))}."
    }
  }

  # Cache nodes register in etcd at start; have the members up first.
  depends_on = [aws_instance.etcd, aws_volume_attachment.etcd_data, aws_volume_attachment.etcd_wal, aws_secretsmanager_secret_version.tls, aws_iam_role_policy.tls_secret]
}
