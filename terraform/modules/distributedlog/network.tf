# Security groups open only what each role needs:
#   clients   -> NLB            ingest_port, reader_port
#   clients   -> ingest         ingest_port (direct, to follow an owner redirect)
#   NLB       -> ingest         ingest_port   NLB -> reader  reader_port
#   NLB       -> ingest, reader metrics_port (HTTP health checks, GET /health)
#   ingest, reader, compactor -> cache   cache_port
#   every node -> etcd          2379 (client)
#   etcd      <-> etcd          2380 (peer)
#   Prometheus -> dlog nodes  metrics_port, only from metrics_allowed_cidrs (empty by default)
#   compactor -> catalog      5432, with the RDS catalog (catalog.tf)
#   query engines -> catalog  5432, only from catalog_allowed_cidrs (empty by default)
#   SSH (22) only from ssh_allowed_cidrs, which is empty by default.
# Egress is limited the same way, plus 80/443 to egress_cidrs for packages,
# the release artifact and AWS APIs.

resource "aws_security_group" "nlb" {
  name        = "${var.cluster_name}-nlb"
  description = "distributedlog ${var.cluster_name}: network load balancer"
  vpc_id      = var.vpc_id
  tags        = merge(local.common_tags, { Name = "${var.cluster_name}-nlb" })
}

resource "aws_security_group" "node" {
  for_each = toset(local.node_roles)

  name        = "${var.cluster_name}-${each.key}"
  description = "distributedlog ${var.cluster_name}: ${each.key} nodes"
  vpc_id      = var.vpc_id
  tags        = merge(local.common_tags, { Name = "${var.cluster_name}-${each.key}", "dlog:role" = each.key })
}

locals {
  security_group_ids = merge(
    { nlb = aws_security_group.nlb.id },
    { for role in local.node_roles : role => aws_security_group.node[role].id },
    local.catalog_rds ? { catalog = aws_security_group.catalog[0].id } : {},
  )

  # Every allowed connection between two groups becomes an ingress rule on
  # the destination and the matching egress rule on the source.
  internal_flows = merge(
    {
      nlb-to-ingest       = { from = "nlb", to = "ingest", port = var.ingest_port, what = "LogService through the NLB" }
      nlb-to-reader       = { from = "nlb", to = "reader", port = var.reader_port, what = "ReadService through the NLB" }
      nlb-health-ingest   = { from = "nlb", to = "ingest", port = var.metrics_port, what = "NLB health checks (GET /health)" }
      nlb-health-reader   = { from = "nlb", to = "reader", port = var.metrics_port, what = "NLB health checks (GET /health)" }
      ingest-to-cache     = { from = "ingest", to = "cache", port = var.cache_port, what = "entry replication and recovery" }
      reader-to-cache     = { from = "reader", to = "cache", port = var.cache_port, what = "hot-tail reads" }
      compactor-to-cache  = { from = "compactor", to = "cache", port = var.cache_port, what = "offload reads and segment drops" }
      ingest-to-etcd      = { from = "ingest", to = "etcd", port = local.etcd_client_port, what = "manifest" }
      reader-to-etcd      = { from = "reader", to = "etcd", port = local.etcd_client_port, what = "manifest" }
      cache-to-etcd       = { from = "cache", to = "etcd", port = local.etcd_client_port, what = "node registration" }
      compactor-to-etcd   = { from = "compactor", to = "etcd", port = local.etcd_client_port, what = "manifest" }
      etcd-to-etcd-client = { from = "etcd", to = "etcd", port = local.etcd_client_port, what = "member health checks" }
      etcd-to-etcd-peer   = { from = "etcd", to = "etcd", port = local.etcd_peer_port, what = "raft peers" }
    },
    local.catalog_rds ? {
      compactor-to-catalog = { from = "compactor", to = "catalog", port = local.catalog_port, what = "Iceberg table commits" }
    } : {},
  )

  # Clients reach both NLB listeners, and ingest nodes directly.
  client_rules = merge([
    for cidr in var.allowed_client_cidrs : {
      "nlb-ingest-${cidr}"    = { group = "nlb", port = var.ingest_port, cidr = cidr, what = "clients to LogService" }
      "nlb-reader-${cidr}"    = { group = "nlb", port = var.reader_port, cidr = cidr, what = "clients to ReadService" }
      "ingest-direct-${cidr}" = { group = "ingest", port = var.ingest_port, cidr = cidr, what = "clients following an owner redirect" }
    }
  ]...)

  # Query engines and analysts reach the Iceberg catalog (catalog.tf).
  catalog_client_rules = {
    for cidr in var.catalog_allowed_cidrs : "catalog-${cidr}" => {
      group = "catalog", port = local.catalog_port, cidr = cidr, what = "query engines reading the Iceberg catalog"
    } if local.catalog_rds
  }

  # Prometheus scrapes every dlog node's metrics port.
  metrics_rules = merge([
    for cidr in var.metrics_allowed_cidrs : {
      for role in local.node_roles : "${role}-${cidr}" => { group = role, cidr = cidr }
      if role != "etcd"
    }
  ]...)

  ssh_rules = merge([
    for cidr in var.ssh_allowed_cidrs : {
      for role in local.node_roles : "${role}-${cidr}" => { group = role, cidr = cidr }
    }
  ]...)

  internet_egress_rules = merge([
    for pair in setproduct(local.node_roles, var.egress_cidrs, [80, 443]) : {
      "${pair[0]}-${pair[2]}-${pair[1]}" = { group = pair[0], cidr = pair[1], port = pair[2] }
    }
  ]...)
}

resource "aws_vpc_security_group_ingress_rule" "internal" {
  for_each = local.internal_flows

  security_group_id            = local.security_group_ids[each.value.to]
  referenced_security_group_id = local.security_group_ids[each.value.from]
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  description                  = "${each.value.from}: ${each.value.what}"
  tags                         = local.common_tags
}

resource "aws_vpc_security_group_egress_rule" "internal" {
  for_each = local.internal_flows

  security_group_id            = local.security_group_ids[each.value.from]
  referenced_security_group_id = local.security_group_ids[each.value.to]
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  description                  = "to ${each.value.to}: ${each.value.what}"
  tags                         = local.common_tags
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each = merge(local.client_rules, local.catalog_client_rules)

  security_group_id = local.security_group_ids[each.value.group]
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  description       = each.value.what
  tags              = local.common_tags
}

resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each = local.metrics_rules

  security_group_id = local.security_group_ids[each.value.group]
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = var.metrics_port
  to_port           = var.metrics_port
  description       = "Prometheus scrapes of dlog metrics"
  tags              = local.common_tags
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = local.ssh_rules

  security_group_id = local.security_group_ids[each.value.group]
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  description       = "SSH from an operator network"
  tags              = local.common_tags
}

resource "aws_vpc_security_group_egress_rule" "internet" {
  for_each = local.internet_egress_rules

  security_group_id = local.security_group_ids[each.value.group]
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  description       = "packages, release artifact and AWS APIs"
  tags              = local.common_tags
}

# With the gateway endpoint, S3 addresses come from its prefix list, which
# egress_cidrs may not cover.
resource "aws_vpc_security_group_egress_rule" "s3_endpoint" {
  for_each = length(var.s3_endpoint_route_table_ids) > 0 ? toset(["reader", "compactor"]) : toset([])

  security_group_id = local.security_group_ids[each.key]
  prefix_list_id    = aws_vpc_endpoint.s3[0].prefix_list_id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "S3 through the gateway endpoint"
  tags              = local.common_tags
}

# One network load balancer in front of both stateless tiers: clients use
# <dns>:ingest_port for LogService and <dns>:reader_port for ReadService.
resource "aws_lb" "this" {
  name                             = "${var.cluster_name}-nlb"
  load_balancer_type               = "network"
  internal                         = var.nlb_internal
  subnets                          = length(var.nlb_subnet_ids) > 0 ? var.nlb_subnet_ids : var.subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  tags                             = local.common_tags
}
