# Segment bucket: Parquet files written by the compactor, read by readers and
# analytics engines, and etcd snapshots under their own prefix. SSE-KMS with
# one key (the bucket policy refuses any other encryption), no public
# access, TLS only, versioned by default.

# The key policy is explicit: the account administers the key and grants
# its use through IAM policies (the node roles' policies in iam.tf, which
# allow it only through S3, and through Secrets Manager for the TLS secrets
# of tls.tf and the catalog's password). RDS also encrypts the Iceberg
# catalog database, its Performance Insights data and its password secret
# with it (catalog.tf), through grants that Terraform's principal makes.
data "aws_iam_policy_document" "segments_key" {
  statement {
    sid       = "AccountAdministersKeyAndDelegatesToIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "segments" {
  count = var.kms_key_arn == null ? 1 : 0

  description             = "distributedlog ${var.cluster_name}: segment objects in S3 and TLS secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.segments_key.json
  tags                    = local.common_tags
}

resource "aws_kms_alias" "segments" {
  count = var.kms_key_arn == null ? 1 : 0

  name          = "alias/${var.cluster_name}-segments"
  target_key_id = aws_kms_key.segments[0].key_id
}

locals {
  kms_key_arn = var.kms_key_arn == null ? aws_kms_key.segments[0].arn : var.kms_key_arn

  # What the compactor and reader policies may touch.
  segment_objects_arn = local.object_prefix == "" ? "${aws_s3_bucket.segments.arn}/*" : "${aws_s3_bucket.segments.arn}/${local.object_prefix}/*"
  segment_list_prefixes = local.object_prefix == "" ? [] : [
    local.object_prefix,
    "${local.object_prefix}/*",
  ]
  etcd_snapshot_objects_arn = "${aws_s3_bucket.segments.arn}/${local.etcd_snapshot_prefix}/*"
}

resource "aws_s3_bucket" "segments" {
  bucket        = var.bucket_name
  bucket_prefix = var.bucket_name == null ? "${var.cluster_name}-segments-" : null
  force_destroy = var.bucket_force_destroy
  tags          = local.common_tags

  lifecycle {
    # The compactor may delete anything under the segment prefix: etcd
    # snapshots must not be there.
    precondition {
      condition     = local.object_prefix != "" && !startswith("${local.etcd_snapshot_prefix}/", "${local.object_prefix}/") && !startswith("${local.object_prefix}/", "${local.etcd_snapshot_prefix}/")
      error_message = "object_prefix must be non-empty and neither it nor etcd_snapshot_prefix/cluster_name may contain the other."
    }
  }
}

resource "aws_s3_bucket_ownership_controls" "segments" {
  bucket = aws_s3_bucket.segments.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "segments" {
  bucket = aws_s3_bucket.segments.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "segments" {
  bucket = aws_s3_bucket.segments.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = local.kms_key_arn
    }
    # One data key per bucket instead of one KMS call per object.
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "segments" {
  count = var.bucket_versioning ? 1 : 0

  bucket = aws_s3_bucket.segments.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "segments" {
  bucket = aws_s3_bucket.segments.id

  # A compactor that dies mid-upload leaves parts behind; the retry uploads
  # the same key again, so the abandoned parts are only cost.
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  rule {
    id     = "expire-etcd-snapshots"
    status = "Enabled"

    filter {
      prefix = "${local.etcd_snapshot_prefix}/"
    }

    expiration {
      days = var.etcd_snapshot_retention_days
    }
  }

  dynamic "rule" {
    for_each = var.bucket_versioning ? [1] : []

    content {
      id     = "expire-noncurrent-versions"
      status = "Enabled"

      filter {}

      noncurrent_version_expiration {
        noncurrent_days = 30
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.segments]
}

data "aws_iam_policy_document" "segments_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.segments.arn, "${aws_s3_bucket.segments.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyTlsOlderThan12"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.segments.arn, "${aws_s3_bucket.segments.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }

  # Objects get the bucket's key by default; a writer that asks for another
  # kind of encryption (AES256, aws:kms:dsse) or names another key is
  # refused. A writer that names none gets the bucket default.
  statement {
    sid       = "DenyEncryptionOtherThanKms"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.segments.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEqualsIfExists"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["aws:kms"]
    }
  }

  # aws:kms without a key ID would get the AWS managed key aws/s3 instead.
  statement {
    sid       = "DenyKmsWithoutTheBucketKey"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.segments.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringEquals"
      variable = "s3:x-amz-server-side-encryption"
      values   = ["aws:kms"]
    }

    condition {
      test     = "Null"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = ["true"]
    }
  }

  statement {
    sid       = "DenyOtherKmsKeys"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.segments.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "StringNotEqualsIfExists"
      variable = "s3:x-amz-server-side-encryption-aws-kms-key-id"
      values   = [local.kms_key_arn]
    }
  }
}

resource "aws_s3_bucket_policy" "segments" {
  bucket = aws_s3_bucket.segments.id
  policy = data.aws_iam_policy_document.segments_bucket.json

  # S3 rejects a policy change while the public access block is changing.
  depends_on = [aws_s3_bucket_public_access_block.segments]
}

# Optional gateway endpoint: S3 traffic of the nodes stays on the AWS network
# and off the NAT gateway.
resource "aws_vpc_endpoint" "s3" {
  count = length(var.s3_endpoint_route_table_ids) > 0 ? 1 : 0

  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.aws_region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.s3_endpoint_route_table_ids
  tags              = merge(local.common_tags, { Name = "${var.cluster_name}-s3" })
}
