# The manifest store: etcd_count members (3 by default) on plain instances
# with static private IPs, one per subnet in turn, etcd from Debian's
# etcd-server package run by a systemd unit written by cloud-init.
#
# Terraform never replaces a member on its own (ami and user_data changes
# are ignored): a member is replaced deliberately, one at a time, as the
# guide describes, because replacing a majority at once loses the manifest.

resource "aws_instance" "etcd" {
  count = var.etcd_count

  ami                    = local.node_ami_id
  instance_type          = var.etcd_instance_type
  subnet_id              = var.subnet_ids[count.index % length(var.subnet_ids)]
  private_ip             = local.etcd_private_ips[count.index]
  vpc_security_group_ids = [aws_security_group.node["etcd"].id]
  iam_instance_profile   = aws_iam_instance_profile.node["etcd"].name
  key_name               = var.ssh_key_name
  monitoring             = true

  user_data = templatefile("${path.module}/templates/etcd-member.tftpl", {
    cluster_name          = var.cluster_name
    member_name           = local.etcd_member_names[count.index]
    private_ip            = local.etcd_private_ips[count.index]
    client_port           = local.etcd_client_port
    peer_port             = local.etcd_peer_port
    initial_cluster       = local.etcd_initial_cluster
    initial_cluster_state = var.etcd_initial_cluster_state
  })
  user_data_replace_on_change = false

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  # etcd wants a low-latency SSD for its write-ahead log: gp3 with its
  # baseline 3000 IOPS is enough for the manifest of a small cluster.
  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.etcd_volume_size_gb
    encrypted             = true
    delete_on_termination = true
  }

  tags        = merge(local.common_tags, { Name = "${var.cluster_name}-${local.etcd_member_names[count.index]}", "dlog:role" = "etcd" })
  volume_tags = merge(local.common_tags, { Name = "${var.cluster_name}-${local.etcd_member_names[count.index]}", "dlog:role" = "etcd" })

  lifecycle {
    ignore_changes = [ami, user_data]

    precondition {
      condition     = length(var.etcd_private_ips) == 0 || length(var.etcd_private_ips) == var.etcd_count
      error_message = "etcd_private_ips must be empty or hold exactly etcd_count addresses."
    }
  }
}
