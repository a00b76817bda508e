# One role per node kind, least privilege:
#   compactor  get/put/list/delete segment objects under the prefix
#   reader     get/list segment objects under the prefix
#   ingest     no S3 access (the manifest is in etcd)
#   cache      no S3 access (the journal is local)
#   etcd       PutObject of snapshots under the etcd snapshot prefix only
# Every role: GetSecretValue of its own TLS secret (tls.tf), dlog nodes the
# node secret, etcd members the members' secrets, decrypted with the segment
# key through Secrets Manager only. The compactor also reads the Iceberg
# catalog's password secret (catalog.tf), the same way.
# Every role: its own log group (dlog-report ships the journal), metrics in
# the distributedlog namespace; ingest, reader and compactor: completing the
# lifecycle hook of their own auto-scaling group.
# Credentials reach `dlog serve` through the instance profile (IMDSv2).

locals {
  node_roles = ["ingest", "reader", "cache", "compactor", "etcd"]
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  for_each = toset(local.node_roles)

  name               = "${var.cluster_name}-${each.key}"
  description        = "distributedlog ${var.cluster_name}: ${each.key} nodes"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = merge(local.common_tags, { "dlog:role" = each.key })
}

resource "aws_iam_instance_profile" "node" {
  for_each = toset(local.node_roles)

  name = "${var.cluster_name}-${each.key}"
  role = aws_iam_role.node[each.key].name
  tags = local.common_tags
}

resource "aws_iam_role_policy_attachment" "ssm" {
  for_each = var.enable_ssm ? toset(local.node_roles) : toset([])

  role       = aws_iam_role.node[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "compactor_s3" {
  statement {
    sid       = "ListSegmentPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.segments.arn]

    dynamic "condition" {
      for_each = length(local.segment_list_prefixes) > 0 ? [1] : []

      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = local.segment_list_prefixes
      }
    }
  }

  statement {
    sid = "ReadWriteDeleteSegmentObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.segment_objects_arn]
  }

  statement {
    sid       = "UseSegmentKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.aws_region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "reader_s3" {
  statement {
    sid       = "ListSegmentPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.segments.arn]

    dynamic "condition" {
      for_each = length(local.segment_list_prefixes) > 0 ? [1] : []

      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = local.segment_list_prefixes
      }
    }
  }

  statement {
    sid       = "ReadSegmentObjects"
    actions   = ["s3:GetObject"]
    resources = [local.segment_objects_arn]
  }

  statement {
    sid       = "DecryptSegmentKeyThroughS3"
    actions   = ["kms:Decrypt"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.aws_region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "compactor_s3" {
  name   = "segments-read-write"
  role   = aws_iam_role.node["compactor"].id
  policy = data.aws_iam_policy_document.compactor_s3.json
}

resource "aws_iam_role_policy" "reader_s3" {
  name   = "segments-read"
  role   = aws_iam_role.node["reader"].id
  policy = data.aws_iam_policy_document.reader_s3.json
}

# etcd snapshots: PutObject under the snapshot prefix and nothing else in
# S3 (no read, list or delete: a compromised member cannot remove backups).
data "aws_iam_policy_document" "etcd_snapshots" {
  statement {
    sid       = "PutSnapshots"
    actions   = ["s3:PutObject"]
    resources = [local.etcd_snapshot_objects_arn]
  }

  # GenerateDataKey for the upload, Decrypt to complete a multipart one.
  statement {
    sid       = "EncryptSnapshotsThroughS3"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.aws_region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "etcd_snapshots" {
  name   = "etcd-snapshots-put"
  role   = aws_iam_role.node["etcd"].id
  policy = data.aws_iam_policy_document.etcd_snapshots.json
}

data "aws_iam_policy_document" "report" {
  for_each = toset(local.node_roles)

  statement {
    sid       = "ShipLogsToOwnGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.node[each.key].arn}:*"]
  }

  # PutMetricData has no resource: it is limited by namespace instead.
  statement {
    sid       = "PutMetricsInOwnNamespace"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metric_namespace]
    }
  }
}

resource "aws_iam_role_policy" "report" {
  for_each = toset(local.node_roles)

  name   = "logs-and-metrics"
  role   = aws_iam_role.node[each.key].id
  policy = data.aws_iam_policy_document.report[each.key].json
}

data "aws_iam_policy_document" "lifecycle_hook" {
  for_each = local.asg_names

  statement {
    sid       = "CompleteOwnGroupsHook"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = ["arn:${local.partition}:autoscaling:${local.aws_region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${each.value}"]
  }
}

resource "aws_iam_role_policy" "lifecycle_hook" {
  for_each = local.asg_names

  name   = "complete-lifecycle-hook"
  role   = aws_iam_role.node[each.key].id
  policy = data.aws_iam_policy_document.lifecycle_hook[each.key].json
}

# TLS: each role reads its own certificate set and no other. The members
# share one role, so a member can read another member's secret; all of them
# hold the same kind of certificate.
locals {
  tls_secret_arns = merge(
    { for role in local.node_roles : role => [aws_secretsmanager_secret.tls["node"].arn] if role != "etcd" },
    { etcd = [for name in local.etcd_names : aws_secretsmanager_secret.tls[name].arn] },
  )
}

# The module's secrets (TLS sets, the catalog's password) are decrypted
# with the segment key, through Secrets Manager only.
data "aws_iam_policy_document" "decrypt_secrets" {
  statement {
    sid       = "DecryptSecretsThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.aws_region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "tls_secret" {
  for_each = toset(local.node_roles)

  source_policy_documents = [data.aws_iam_policy_document.decrypt_secrets.json]

  statement {
    sid       = "ReadOwnTlsSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.tls_secret_arns[each.key]
  }
}

resource "aws_iam_role_policy" "tls_secret" {
  for_each = toset(local.node_roles)

  name   = "tls-secret-read"
  role   = aws_iam_role.node[each.key].id
  policy = data.aws_iam_policy_document.tls_secret[each.key].json
}

# The Iceberg catalog: the compactor reads the database password that RDS
# keeps (and rotates) in Secrets Manager, encrypted with the segment key.
data "aws_iam_policy_document" "catalog_secret" {
  count = local.catalog_rds ? 1 : 0

  source_policy_documents = [data.aws_iam_policy_document.decrypt_secrets.json]

  statement {
    sid       = "ReadCatalogPassword"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_db_instance.catalog[0].master_user_secret[0].secret_arn]
  }
}

resource "aws_iam_role_policy" "catalog_secret" {
  count = local.catalog_rds ? 1 : 0

  name   = "iceberg-catalog-secret-read"
  role   = aws_iam_role.node["compactor"].id
  policy = data.aws_iam_policy_document.catalog_secret[0].json
}
