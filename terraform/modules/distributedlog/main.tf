# distributedlog on AWS: shared lookups and the values every role is started
# with. Each role has its own file: s3.tf, iam.tf, network.tf, etcd.tf,
# cache.tf, ingest.tf, reader.tf, compactor.tf.

data "aws_region" "current" {}

data "aws_partition" "current" {}

# Official Debian 12 images are published by Debian's AWS account; a given
# ami_id is looked up as is so its root device name is known.
data "aws_ami" "node" {
  most_recent = true
  owners      = var.ami_id == null ? ["136693071363"] : null

  filter {
    name   = var.ami_id == null ? "name" : "image-id"
    values = [var.ami_id == null ? "debian-12-amd64-*" : var.ami_id]
  }
}

data "aws_subnet" "node" {
  count = length(var.subnet_ids)
  id    = var.subnet_ids[count.index]
}

locals {
  common_tags = merge(var.tags, {
    "dlog:cluster" = var.cluster_name
    ManagedBy      = "terraform"
  })

  node_ami_id      = data.aws_ami.node.id
  root_device_name = data.aws_ami.node.root_device_name
  aws_region       = data.aws_region.current.name

  # etcd: static private IPs, so the member list and the metastore URL are
  # known before any instance exists.
  etcd_client_port = 2379
  etcd_peer_port   = 2380
  etcd_member_names = [
    for i in range(var.etcd_count) : "etcd-${i}"
  ]
  etcd_private_ips = length(var.etcd_private_ips) > 0 ? var.etcd_private_ips : [
    for i in range(var.etcd_count) :
    cidrhost(data.aws_subnet.node[i % length(var.subnet_ids)].cidr_block, var.etcd_ip_host_offset + i)
  ]
  etcd_endpoints = [for ip in local.etcd_private_ips : "${ip}:${local.etcd_client_port}"]
  etcd_initial_cluster = join(",", [
    for i, name in local.etcd_member_names : "${name}=http://${local.etcd_private_ips[i]}:${local.etcd_peer_port}"
  ])

  # The two URLs of `dlog serve` (docs/cli.md).
  metastore_url    = "etcd://${join(",", local.etcd_endpoints)}/${var.cluster_name}"
  object_prefix    = trim(var.object_prefix, "/")
  object_store_url = local.object_prefix == "" ? "s3://${aws_s3_bucket.segments.bucket}" : "s3://${aws_s3_bucket.segments.bucket}/${local.object_prefix}"

  # Values shared by the cloud-init of every dlog node; each role merges in
  # role, port, nvme_journal and lifecycle_watch.
  node_template_vars = {
    cluster_name         = var.cluster_name
    aws_region           = local.aws_region
    metastore_url        = local.metastore_url
    object_store_url     = local.object_store_url
    release_url          = var.dlog_release_url
    release_sha256       = var.dlog_release_sha256
    stop_timeout_seconds = var.drain_timeout_seconds
  }

  # Instance refresh: never more than 100 points between min and max.
  refresh_max_healthy_percentage = min(200, var.instance_refresh_min_healthy_percentage + 100)
  # The termination hook outlives the clean shutdown it waits for.
  termination_hook_seconds = var.drain_timeout_seconds + 30
}
