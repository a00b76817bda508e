# One role per node kind, least privilege:
#   compactor  get/put/list/delete segment objects under the prefix
#   reader     get/list segment objects under the prefix
#   ingest     no S3 access (the manifest is in etcd)
#   cache      no S3 access (the journal is local)
#   etcd       nothing
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
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
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
