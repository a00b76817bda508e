# distributedlog on AWS: shared lookups and the values every role is started
# with. Each role has its own file: s3.tf, iam.tf, network.tf, etcd.tf,
# cache.tf, ingest.tf, reader.tf, compactor.tf; catalog.tf the Iceberg
# catalog database; alarms.tf holds the CloudWatch alarms and the log groups.

data "aws_region" "current" {}

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

# The AMI is pinned (ami_id is required): it is looked up only for its root
# device name, so a new Debian image never rolls a group by itself.
data "aws_ami" "node" {
  filter {
    name   = "image-id"
    values = [var.ami_id]
  }
}

# The subnets of the stable nodes and of the auto-scaling groups, by ID:
# their zones decide placement and the zone preconditions of etcd.tf and
# cache.tf.
data "aws_subnet" "node" {
  for_each = toset(concat(
    [for m in values(var.etcd_members) : m.subnet_id],
    [for c in values(var.cache_nodes) : c.subnet_id],
    var.subnet_ids,
  ))
  id = each.key
}

locals {
  common_tags = merge(var.tags, {
    "dlog:cluster" = var.cluster_name
    ManagedBy      = "terraform"
  })

  node_ami_id      = data.aws_ami.node.id
  root_device_name = data.aws_ami.node.root_device_name
  aws_region       = data.aws_region.current.name
  account_id       = data.aws_caller_identity.current.account_id
  partition        = data.aws_partition.current.partition

  # etcd: members keyed by stable names (the keys of etcd_members), each
  # with a reserved address on its own network interface, so the member
  # list and the metastore URL are known before any instance exists and no
  # edit of another variable renames or readdresses a member.
  etcd_client_port = 2379
  etcd_peer_port   = 2380
  etcd_names       = sort(keys(var.etcd_members))
  etcd_endpoints   = [for name in local.etcd_names : "${var.etcd_members[name].private_ip}:${local.etcd_client_port}"]
  etcd_initial_cluster = join(",", [
    for name in local.etcd_names : "${name}=https://${var.etcd_members[name].private_ip}:${local.etcd_peer_port}"
  ])
  etcd_zones  = [for name in local.etcd_names : data.aws_subnet.node[var.etcd_members[name].subnet_id].availability_zone]
  cache_zones = [for name in sort(keys(var.cache_nodes)) : data.aws_subnet.node[var.cache_nodes[name].subnet_id].availability_zone]
  # The zones the ingest, reader and compactor groups run in: each needs a
  # cache node, so a zone's readers have a replica to read locally and
  # ensembles (3/3/2) can put one replica in each zone.
  group_zones           = distinct([for id in var.subnet_ids : data.aws_subnet.node[id].availability_zone])
  zones_without_a_cache = setsubtract(local.group_zones, local.cache_zones)

  # The two URLs of `dlog serve` (docs/cli.md).
  metastore_url    = "etcd://${join(",", local.etcd_endpoints)}/${var.cluster_name}"
  object_prefix    = trim(var.object_prefix, "/")
  object_store_url = local.object_prefix == "" ? "s3://${aws_s3_bucket.segments.bucket}" : "s3://${aws_s3_bucket.segments.bucket}/${local.object_prefix}"

  # etcd snapshots: their own prefix, outside the segment prefix.
  etcd_snapshot_prefix = "${trim(var.etcd_snapshot_prefix, "/")}/${var.cluster_name}"

  # Log shipping and disk metrics (scripts/dlog-report.sh, on every node).
  log_group_prefix = "/distributedlog/${var.cluster_name}"
  metric_namespace = "distributedlog"
  report_script    = file("${path.module}/scripts/dlog-report.sh")
  ssm_agent_script = file("${path.module}/scripts/install-ssm-agent.sh")
  tls_fetch_script = file("${path.module}/scripts/dlog-tls-fetch.sh")

  # Values shared by the cloud-init of every dlog node; each role merges in
  # role, port, nvme_journal and lifecycle_watch, and the compactor its
  # catalog_* values (local.catalog_node_vars, catalog.tf).
  node_template_vars = {
    cluster_name         = var.cluster_name
    aws_region           = local.aws_region
    metastore_url        = local.metastore_url
    object_store_url     = local.object_store_url
    release_url          = var.dlog_release_url
    release_sha256       = var.dlog_release_sha256
    stop_timeout_seconds = var.drain_timeout_seconds
    metrics_port         = var.metrics_port
    client_tokens        = var.client_tokens
    tls_secret_arn       = aws_secretsmanager_secret.tls["node"].arn
    tls_dir              = local.tls_dir
    tls_server_name      = local.tls_server_name
    tls_fetch_script     = local.tls_fetch_script
    enable_ssm           = var.enable_ssm
    ssm_agent_version    = var.ssm_agent_version
    log_group_prefix     = local.log_group_prefix
    metric_namespace     = local.metric_namespace
    report_script        = local.report_script
    ssm_agent_script     = local.ssm_agent_script
    catalog_uri          = ""
    catalog_fetch        = false
    catalog_secret_arn   = ""
    catalog_endpoint     = ""
    catalog_fetch_script = local.catalog_fetch_script
  }

  # Instance refresh: never more than 100 points between min and max.
  refresh_max_healthy_percentage = min(200, var.instance_refresh_min_healthy_percentage + 100)
  # The termination hook outlives the clean shutdown it waits for.
  termination_hook_seconds = var.drain_timeout_seconds + 30
  # Auto-scaling group names, known before the groups exist: the lifecycle
  # watcher of each group's nodes completes the hook on its own group.
  asg_names = { for role in ["ingest", "reader", "compactor"] : role => "${var.cluster_name}-${role}" }
}
