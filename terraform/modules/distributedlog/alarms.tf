# Operations: the log groups node logs are shipped to, and CloudWatch
# alarms that notify alarm_sns_topic_arn:
#   status checks     every etcd member (which also recovers on a failed
#                     system check: its data is on EBS) and cache node
#                     (instance storage: no automatic recovery, a human
#                     decides; see the guide's "Rolling the cache tier")
#   NLB targets       any unhealthy ingest or reader target
#   disk space        cache journals, etcd data and WAL volumes (from
#                     dlog-report; missing data alarms too: the node is
#                     then unobserved)
#   etcd quota        database size against etcd_quota_backend_gb
#   certificates      a node's TLS certificate on disk expires within half
#                     of tls_cert_renew_before_days: no apply re-issued it,
#                     or the node cannot fetch it (missing data alarms too)

locals {
  alarm_actions = [var.alarm_sns_topic_arn]

  disk_alarms = merge(
    { for name, _ in var.cache_nodes : "${name}-journal" => { instance = aws_instance.cache[name].id, mount = "/var/lib/dlog", what = "cache journal of ${name}" } },
    { for name, _ in var.etcd_members : "${name}-data" => { instance = aws_instance.etcd[name].id, mount = "/var/lib/dlog-etcd", what = "etcd data volume of ${name}" } },
    { for name, _ in var.etcd_members : "${name}-wal" => { instance = aws_instance.etcd[name].id, mount = "/var/lib/dlog-etcd-wal", what = "etcd WAL volume of ${name}" } },
  )

  status_alarms = merge(
    { for name, _ in var.etcd_members : name => aws_instance.etcd[name].id },
    { for name, _ in var.cache_nodes : name => aws_instance.cache[name].id },
  )

  target_groups = {
    ingest = aws_lb_target_group.ingest.arn_suffix
    reader = aws_lb_target_group.reader.arn_suffix
  }
}

resource "aws_cloudwatch_log_group" "node" {
  for_each = toset(local.node_roles)

  name              = "${local.log_group_prefix}/${each.key}"
  retention_in_days = var.log_retention_days
  tags              = merge(local.common_tags, { "dlog:role" = each.key })
}

resource "aws_cloudwatch_metric_alarm" "status_check" {
  for_each = local.status_alarms

  alarm_name          = "${var.cluster_name}-${each.key}-status-check"
  alarm_description   = "distributedlog ${var.cluster_name}: ${each.key} fails its EC2 status checks."
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed"
  dimensions          = { InstanceId = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.common_tags
}

# A failed system check moves the member to healthy hardware with the same
# ID, address and volumes.
resource "aws_cloudwatch_metric_alarm" "etcd_recover" {
  for_each = var.etcd_members

  alarm_name          = "${var.cluster_name}-${each.key}-recover"
  alarm_description   = "distributedlog ${var.cluster_name}: ${each.key} fails its EC2 system status check; recovering it."
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed_System"
  dimensions          = { InstanceId = aws_instance.etcd[each.key].id }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  alarm_actions       = concat(["arn:${local.partition}:automate:${local.aws_region}:ec2:recover"], local.alarm_actions)
  tags                = local.common_tags
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  for_each = local.target_groups

  alarm_name          = "${var.cluster_name}-${each.key}-unhealthy-targets"
  alarm_description   = "distributedlog ${var.cluster_name}: the NLB sees an unhealthy ${each.key} node."
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.this.arn_suffix, TargetGroup = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.common_tags
}

resource "aws_cloudwatch_metric_alarm" "disk" {
  for_each = local.disk_alarms

  alarm_name          = "${var.cluster_name}-${each.key}-disk"
  alarm_description   = "distributedlog ${var.cluster_name}: the ${each.value.what} is over ${var.disk_alarm_threshold_percent}% full, or its node stopped reporting."
  namespace           = local.metric_namespace
  metric_name         = "DiskUsedPercent"
  dimensions          = { InstanceId = each.value.instance, Mount = each.value.mount }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.disk_alarm_threshold_percent
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.common_tags
}

resource "aws_cloudwatch_metric_alarm" "tls_cert_expiry" {
  alarm_name          = "${var.cluster_name}-tls-cert-expiry"
  alarm_description   = "distributedlog ${var.cluster_name}: a node's TLS certificate expires within ${floor(var.tls_cert_renew_before_days / 2)} days: run terraform apply (it re-issues certificates within tls_cert_renew_before_days of expiry), then check dlog-tls-fetch on the nodes."
  namespace           = local.metric_namespace
  metric_name         = "TlsCertDaysLeft"
  dimensions          = { Cluster = var.cluster_name }
  statistic           = "Minimum"
  period              = 3600
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = floor(var.tls_cert_renew_before_days / 2)
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.common_tags
}

resource "aws_cloudwatch_metric_alarm" "etcd_quota" {
  for_each = var.etcd_members

  alarm_name          = "${var.cluster_name}-${each.key}-quota"
  alarm_description   = "distributedlog ${var.cluster_name}: the etcd database of ${each.key} uses over ${var.etcd_quota_alarm_percent}% of its quota; at 100% etcd refuses writes."
  namespace           = local.metric_namespace
  metric_name         = "EtcdDbUsedPercent"
  dimensions          = { InstanceId = aws_instance.etcd[each.key].id }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.etcd_quota_alarm_percent
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.common_tags
}
