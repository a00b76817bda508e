# The manifest store: one etcd member per entry of etcd_members (3 by
# default, keyed by stable names such as etcd-a), each in its own
# availability zone, etcd from Debian's etcd-server package run by a
# systemd unit written by cloud-init.
#
# A member's identity outlives its instance: its network interface (with the
# reserved address the member list names) and its two EBS volumes (data and
# WAL) are separate resources with prevent_destroy. Replacing the instance
# (new AMI, new instance type, lost host) re-attaches them, and the member
# comes back with its data under its old name. Terraform never replaces an
# instance on its own: ami, user_data, key_name and instance_type changes
# are ignored until a member is replaced deliberately, one at a time, as the
# guide's runbook says. A member whose data volume is new (lost, or the
# first boot of the cluster) starts only in the two cases etcd allows: the
# first bootstrap of a new cluster, or after `etcdctl member add` (see
# templates/etcd-member.tftpl, dlog-etcd-start).

locals {
  etcd_peer_endpoints = {
    for name in local.etcd_names : name => join(",", [
      for other in local.etcd_names : "https://${var.etcd_members[other].private_ip}:${local.etcd_client_port}" if other != name
    ])
  }
}

resource "aws_network_interface" "etcd" {
  for_each = var.etcd_members

  description     = "distributedlog ${var.cluster_name}: etcd member ${each.key}"
  subnet_id       = each.value.subnet_id
  private_ips     = [each.value.private_ip]
  security_groups = [aws_security_group.node["etcd"].id]
  tags            = merge(local.common_tags, { Name = "${var.cluster_name}-${each.key}", "dlog:role" = "etcd" })

  lifecycle {
    # The address is the member's peer URL: keep it reserved.
    prevent_destroy = true
  }
}

resource "aws_ebs_volume" "etcd_data" {
  for_each = var.etcd_members

  availability_zone = data.aws_subnet.node[each.value.subnet_id].availability_zone
  type              = "gp3"
  size              = var.etcd_volume_size_gb
  encrypted         = true
  tags              = merge(local.common_tags, { Name = "${var.cluster_name}-${each.key}-data", "dlog:role" = "etcd" })

  lifecycle {
    prevent_destroy = true
  }
}

# The WAL on its own volume: its fsyncs do not queue behind snapshot and
# backend writes.
resource "aws_ebs_volume" "etcd_wal" {
  for_each = var.etcd_members

  availability_zone = data.aws_subnet.node[each.value.subnet_id].availability_zone
  type              = "gp3"
  size              = var.etcd_wal_volume_size_gb
  iops              = var.etcd_wal_volume_iops
  encrypted         = true
  tags              = merge(local.common_tags, { Name = "${var.cluster_name}-${each.key}-wal", "dlog:role" = "etcd" })

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_instance" "etcd" {
  for_each = var.etcd_members

  ami                  = local.node_ami_id
  instance_type        = var.etcd_instance_type
  iam_instance_profile = aws_iam_instance_profile.node["etcd"].name
  key_name             = var.ssh_key_name
  monitoring           = true
  ebs_optimized        = true

  network_interface {
    network_interface_id = aws_network_interface.etcd[each.key].id
    device_index         = 0
  }

  # gzip: the rendered cloud-config is over EC2's 16 KB limit, and
  # cloud-init unpacks gzip by itself.
  user_data_base64 = base64gzip(templatefile("${path.module}/templates/etcd-member.tftpl", {
    cluster_name              = var.cluster_name
    aws_region                = local.aws_region
    member_name               = each.key
    member_index              = index(local.etcd_names, each.key)
    private_ip                = each.value.private_ip
    client_port               = local.etcd_client_port
    peer_port                 = local.etcd_peer_port
    initial_cluster           = local.etcd_initial_cluster
    initial_cluster_state     = var.etcd_initial_cluster_state
    peer_client_urls          = local.etcd_peer_endpoints[each.key]
    data_volume_id            = aws_ebs_volume.etcd_data[each.key].id
    wal_volume_id             = aws_ebs_volume.etcd_wal[each.key].id
    quota_backend_bytes       = var.etcd_quota_backend_gb * 1024 * 1024 * 1024
    snapshot_bucket           = aws_s3_bucket.segments.bucket
    snapshot_prefix           = local.etcd_snapshot_prefix
    snapshot_interval_minutes = var.etcd_snapshot_interval_minutes
    enable_ssm                = var.enable_ssm
    ssm_agent_version         = var.ssm_agent_version
    log_group_prefix          = local.log_group_prefix
    metric_namespace          = local.metric_namespace
    report_script             = local.report_script
    ssm_agent_script          = local.ssm_agent_script
    tls_fetch_script          = local.tls_fetch_script
    tls_secret_arn            = aws_secretsmanager_secret.tls[each.key].arn
    tls_dir                   = local.tls_dir
    peer_cert_cn              = local.etcd_peer_cn
  }))
  user_data_replace_on_change = false

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  # The root volume holds only the OS: etcd's data and WAL are on the
  # volumes attached below.
  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    delete_on_termination = true
  }

  tags = merge(local.common_tags, { Name = "${var.cluster_name}-${each.key}", "dlog:role" = "etcd", "dlog:etcd-member" = each.key })

  lifecycle {
    # Replaced deliberately only (terraform apply -replace, one member at a
    # time): these would otherwise replace or stop every member at once.
    ignore_changes = [ami, user_data, user_data_base64, key_name, instance_type]

    precondition {
      condition     = length(distinct(local.etcd_zones)) == length(local.etcd_zones)
      error_message = "Every etcd member must be in a subnet of its own availability zone (etcd_members): ${join(", ", local.etcd_zones)}."
    }
  }

  # The member's certificate is in Secrets Manager, and readable, before it boots.
  depends_on = [aws_secretsmanager_secret_version.tls, aws_iam_role_policy.tls_secret]
}

resource "aws_volume_attachment" "etcd_data" {
  for_each = var.etcd_members

  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.etcd_data[each.key].id
  instance_id = aws_instance.etcd[each.key].id
  # etcd is stopped (systemd) before the volume leaves the instance.
  stop_instance_before_detaching = true
}

resource "aws_volume_attachment" "etcd_wal" {
  for_each = var.etcd_members

  device_name                    = "/dev/sdg"
  volume_id                      = aws_ebs_volume.etcd_wal[each.key].id
  instance_id                    = aws_instance.etcd[each.key].id
  stop_instance_before_detaching = true
}
