# The Iceberg catalog with iceberg_catalog (on by default) and
# iceberg_catalog_kind = "postgres" (the default): an RDS for PostgreSQL
# database holding the SQL catalog that every log's table is registered in
# (docs/iceberg.md). Compactors commit to it; pyiceberg, Spark, Trino and
# Flink (Iceberg's JDBC catalog) read the same rows. With "glue" the AWS
# Glue Data Catalog is the catalog instead and none of this file's
# resources exist (glue.tf).
#
# What the module sets up:
#   database     encrypted with the module's KMS key, Multi-AZ, private,
#                deletion protection, automated backups and a final
#                snapshot, TLS only (rds.force_ssl), connection, DDL and
#                slow-query logs exported to CloudWatch, Performance
#                Insights and enhanced monitoring, IAM authentication on
#   password     kept and rotated by RDS in Secrets Manager
#                (manage_master_user_password), encrypted with the same
#                key: it is never in Terraform's state
#   network      5432 from the compactor group and catalog_allowed_cidrs,
#                nothing else (the rules are network.tf's, merged in with
#                the RDS catalog)
#   compactors   read that one secret (iam.tf) and build their catalog URI
#                from it at every start and every 15 minutes
#                (scripts/dlog-catalog-fetch.sh); a rotated password
#                restarts the compactor, which is crash-safe
#
# On failure: while the database is unreachable (a Multi-AZ failover, a
# maintenance reboot) compactors fail their table commits and retry; a
# segment is marked offloaded only after its file is in the table, so
# offload waits and nothing is lost. A compactor that cannot build its URI
# at start does not start (it would otherwise offload files into no table).

data "aws_subnet" "catalog" {
  for_each = local.catalog_rds ? toset(var.subnet_ids) : toset([])

  id = each.key
}

locals {
  # Which catalog: the RDS database of this file, or Glue (glue.tf).
  catalog_rds  = var.iceberg_catalog && var.iceberg_catalog_kind == "postgres"
  catalog_glue = var.iceberg_catalog && var.iceberg_catalog_kind == "glue"

  catalog_port         = 5432
  catalog_database     = "iceberg"
  catalog_username     = "dlog"
  catalog_identifier   = "${var.cluster_name}-catalog"
  catalog_log_types    = ["postgresql", "upgrade"]
  catalog_zones        = distinct([for s in values(data.aws_subnet.catalog) : s.availability_zone])
  catalog_fetch_script = file("${path.module}/scripts/dlog-catalog-fetch.sh")

  # The compactor's part of dlog-node.tftpl; node_template_vars (main.tf)
  # gives every other role catalog_fetch = false and no catalog_uri. The
  # RDS catalog's URI is fetched at start (it holds the password); Glue's
  # is fixed.
  catalog_node_vars = {
    catalog_uri        = local.catalog_glue ? local.glue_catalog_uri : ""
    catalog_fetch      = local.catalog_rds
    catalog_secret_arn = local.catalog_rds ? aws_db_instance.catalog[0].master_user_secret[0].secret_arn : ""
    catalog_endpoint   = local.catalog_rds ? "${aws_db_instance.catalog[0].address}:${local.catalog_port}/${local.catalog_database}" : ""
  }
}

resource "aws_db_subnet_group" "catalog" {
  count = local.catalog_rds ? 1 : 0

  name        = local.catalog_identifier
  description = "distributedlog ${var.cluster_name}: Iceberg catalog"
  subnet_ids  = var.subnet_ids
  tags        = local.common_tags

  lifecycle {
    precondition {
      condition     = length(local.catalog_zones) >= 2
      error_message = "The Iceberg catalog needs subnet_ids in at least two availability zones (RDS requires it of a DB subnet group)."
    }
  }
}

resource "aws_security_group" "catalog" {
  count = local.catalog_rds ? 1 : 0

  name        = local.catalog_identifier
  description = "distributedlog ${var.cluster_name}: Iceberg catalog database"
  vpc_id      = var.vpc_id
  tags        = merge(local.common_tags, { Name = local.catalog_identifier })
}

# A new family (catalog_engine_version) makes a new group before the
# instance moves to it.
resource "aws_db_parameter_group" "catalog" {
  count = local.catalog_rds ? 1 : 0

  name_prefix = "${local.catalog_identifier}-"
  family      = "postgres${var.catalog_engine_version}"
  description = "distributedlog ${var.cluster_name}: Iceberg catalog, TLS only, connection and DDL logs"
  tags        = local.common_tags

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  # Schema changes (the catalog creates its tables on first use) and no
  # row data: the rows are metadata locations, but statements of all
  # kinds would flood the log with the compactors' commits.
  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  # Any statement slower than a second, whatever its kind.
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# RDS writes exported logs to these groups; made here so that they have a
# retention (RDS would create them to keep everything forever).
resource "aws_cloudwatch_log_group" "catalog" {
  for_each = local.catalog_rds ? toset(local.catalog_log_types) : toset([])

  name              = "/aws/rds/instance/${local.catalog_identifier}/${each.key}"
  retention_in_days = var.log_retention_days
  tags              = local.common_tags
}

# Enhanced monitoring: RDS's agent puts OS metrics through this role.
data "aws_iam_policy_document" "catalog_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "catalog_monitoring" {
  count = local.catalog_rds && var.catalog_monitoring_interval_seconds > 0 ? 1 : 0

  name               = "${local.catalog_identifier}-monitoring"
  description        = "distributedlog ${var.cluster_name}: RDS enhanced monitoring of the Iceberg catalog"
  assume_role_policy = data.aws_iam_policy_document.catalog_monitoring_assume.json
  tags               = local.common_tags
}

resource "aws_iam_role_policy_attachment" "catalog_monitoring" {
  count = length(aws_iam_role.catalog_monitoring)

  role       = aws_iam_role.catalog_monitoring[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "catalog" {
  count = local.catalog_rds ? 1 : 0

  identifier     = local.catalog_identifier
  engine         = "postgres"
  engine_version = var.catalog_engine_version
  instance_class = var.catalog_instance_class
  db_name        = local.catalog_database
  username       = local.catalog_username
  port           = local.catalog_port

  # RDS makes the password, keeps it in Secrets Manager and rotates it.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = local.kms_key_arn

  allocated_storage     = var.catalog_storage_gb
  max_allocated_storage = var.catalog_max_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = local.kms_key_arn

  db_subnet_group_name   = aws_db_subnet_group.catalog[0].name
  vpc_security_group_ids = [aws_security_group.catalog[0].id]
  publicly_accessible    = false
  multi_az               = var.catalog_multi_az
  parameter_group_name   = aws_db_parameter_group.catalog[0].name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  iam_database_authentication_enabled = true

  backup_retention_period   = var.catalog_backup_retention_days
  copy_tags_to_snapshot     = true
  deletion_protection       = var.catalog_deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.catalog_identifier}-final"

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = true

  enabled_cloudwatch_logs_exports       = local.catalog_log_types
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = local.kms_key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = var.catalog_monitoring_interval_seconds
  monitoring_role_arn                   = var.catalog_monitoring_interval_seconds > 0 ? aws_iam_role.catalog_monitoring[0].arn : null

  tags = merge(local.common_tags, { Name = local.catalog_identifier })

  depends_on = [aws_cloudwatch_log_group.catalog, aws_iam_role_policy_attachment.catalog_monitoring]
}
