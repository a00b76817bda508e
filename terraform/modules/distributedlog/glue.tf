# The Iceberg catalog with iceberg_catalog_kind = "glue": the account's AWS
# Glue Data Catalog in the cluster's region. Each dlog namespace is a Glue
# database and each log a Glue table in it, kept the way Iceberg engines
# keep theirs (table_type ICEBERG, metadata_location), so Athena, EMR,
# Spark, Trino and pyiceberg's GlueCatalog read them
# (compactor/src/table/glue.rs, docs/iceberg.md).
#
# No resource but the compactors' permissions: the compactors create a
# namespace's database when its first table is made, since namespaces come
# and go at run time. Commits are UpdateTable calls guarded by the Glue
# table's VersionId (the catalog's own optimistic lock).
#
# On failure: while Glue is unreachable or throttles, compactors fail their
# table commits and retry; a segment is marked offloaded only after its
# file is in the table, so offload waits and nothing is lost.

locals {
  # The compactors' catalog URI (compactor.iceberg_catalog); credentials
  # come from the instance profile.
  glue_catalog_uri = "glue://?region=${local.aws_region}"
  glue_arn_prefix  = "arn:${local.partition}:glue:${local.aws_region}:${local.account_id}"
}

# Glue's tables and databases: read, create, commit to, and drop a deleted
# log's table. Every call is also authorized on the catalog and the
# database it names, hence those resources.
data "aws_iam_policy_document" "glue_catalog" {
  count = local.catalog_glue ? 1 : 0

  statement {
    sid = "IcebergTablesInGlue"
    actions = [
      "glue:GetDatabase",
      "glue:CreateDatabase",
      "glue:GetTable",
      "glue:CreateTable",
      "glue:UpdateTable",
      "glue:DeleteTable",
    ]
    resources = [
      "${local.glue_arn_prefix}:catalog",
      "${local.glue_arn_prefix}:database/*",
      "${local.glue_arn_prefix}:table/*/*",
    ]
  }
}

resource "aws_iam_role_policy" "glue_catalog" {
  count = local.catalog_glue ? 1 : 0

  name   = "iceberg-glue-catalog"
  role   = aws_iam_role.node["compactor"].id
  policy = data.aws_iam_policy_document.glue_catalog[0].json
}
