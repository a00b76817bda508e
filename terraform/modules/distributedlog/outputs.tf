# Outputs of the distributedlog module; terraform/README.md lists each one.

output "nlb_dns_name" {
  description = "DNS name of the network load balancer in front of ingest and reader nodes."
  value       = aws_lb.this.dns_name
}

output "ingest_endpoint" {
  description = "gRPC endpoint of LogService through the NLB, for `dlog --endpoint` and the SDK."
  value       = "https://${aws_lb.this.dns_name}:${var.ingest_port}"
}

output "reader_endpoint" {
  description = "gRPC endpoint of ReadService through the NLB: for `dlog --read-endpoint` / DLOG_READ_ENDPOINT and the SDK's Client::with_read_endpoints."
  value       = "https://${aws_lb.this.dns_name}:${var.reader_port}"
}

output "tls_ca_cert_pem" {
  description = "The cluster CA certificate (PEM): clients check nodes against it (dlog --tls-ca FILE, Client::with_tls)."
  value       = local.ca_cert_pem
}

output "tls_server_name" {
  description = "The name in the node certificate: clients give it with dlog --tls-server-name (Client::with_tls_server_name) so that direct connections to an owner, by IP, check too."
  value       = local.tls_server_name
}

output "tls_node_cert_expires" {
  description = "When the node certificate expires (RFC 3339); the first apply tls_cert_renew_before_days before it issues the next one."
  value       = tls_locally_signed_cert.leaf["node"].validity_end_time
}

output "tls_secret_arns" {
  description = "Secrets Manager secrets holding the TLS sets: node (every dlog node) and one per etcd member."
  value       = { for name, secret in aws_secretsmanager_secret.tls : name => secret.arn }
}

output "bucket_name" {
  description = "Name of the segment bucket."
  value       = aws_s3_bucket.segments.bucket
}

output "bucket_arn" {
  description = "ARN of the segment bucket."
  value       = aws_s3_bucket.segments.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts segment objects."
  value       = local.kms_key_arn
}

output "object_store_url" {
  description = "The --object-store URL every node runs with (s3://BUCKET/PREFIX); analytics engines read Parquet under it."
  value       = local.object_store_url
}

output "etcd_endpoints" {
  description = "Client endpoints (IP:2379, TLS with a client certificate of the cluster CA) of the etcd members."
  value       = local.etcd_endpoints
}

output "metastore_url" {
  description = "The --metastore URL every node runs with (etcd://HOST:PORT,.../CLUSTER)."
  value       = local.metastore_url
}

output "cache_private_ips" {
  description = "Private IPs of the cache nodes, by node name."
  value       = { for name, node in aws_instance.cache : name => node.private_ip }
}

output "etcd_instance_ids" {
  description = "Instance IDs of the etcd members, by member name."
  value       = { for name, member in aws_instance.etcd : name => member.id }
}

output "etcd_snapshot_url" {
  description = "Where etcd snapshots are uploaded: s3://BUCKET/PREFIX/CLUSTER/, one folder per member."
  value       = "s3://${aws_s3_bucket.segments.bucket}/${local.etcd_snapshot_prefix}/"
}

output "log_group_names" {
  description = "CloudWatch log groups of the node logs, by role."
  value       = { for role, group in aws_cloudwatch_log_group.node : role => group.name }
}

output "autoscaling_group_names" {
  description = "Names of the ingest, reader and compactor auto-scaling groups."
  value = {
    ingest    = aws_autoscaling_group.ingest.name
    reader    = aws_autoscaling_group.reader.name
    compactor = aws_autoscaling_group.compactor.name
  }
}

output "security_group_ids" {
  description = "Security group IDs by role (nlb, ingest, reader, cache, compactor, etcd), and catalog with the RDS catalog (iceberg_catalog_kind = \"postgres\")."
  value       = local.security_group_ids
}

output "iam_role_arns" {
  description = "IAM role ARNs by node role."
  value       = { for role in local.node_roles : role => aws_iam_role.node[role].arn }
}

# The RDS Iceberg catalog (catalog.tf); null without it (no iceberg_catalog,
# or iceberg_catalog_kind = "glue").

output "catalog_endpoint" {
  description = "HOST:PORT of the Iceberg catalog database (RDS for PostgreSQL)."
  value       = local.catalog_rds ? aws_db_instance.catalog[0].endpoint : null
}

output "catalog_address" {
  description = "Host name of the Iceberg catalog database; its TLS certificate carries this name."
  value       = local.catalog_rds ? aws_db_instance.catalog[0].address : null
}

output "catalog_port" {
  description = "Port of the Iceberg catalog database."
  value       = local.catalog_rds ? local.catalog_port : null
}

output "catalog_database" {
  description = "Database that holds the catalog's tables (iceberg_tables, iceberg_namespace_properties)."
  value       = local.catalog_rds ? local.catalog_database : null
}

output "catalog_secret_arn" {
  description = "Secrets Manager secret in which RDS keeps and rotates the catalog's user and password (JSON: username, password)."
  value       = local.catalog_rds ? aws_db_instance.catalog[0].master_user_secret[0].secret_arn : null
}

output "catalog_uri_templates" {
  description = "Connection strings of the catalog without the password, TLS checked against the RDS CA bundle saved as rds-ca.pem: pyiceberg's SqlCatalog uri (replace PASSWORD) and the JDBC catalog's uri (user and password go in jdbc.user and jdbc.password)."
  value = local.catalog_rds ? {
    pyiceberg = "postgresql+psycopg2://${local.catalog_username}:PASSWORD@${aws_db_instance.catalog[0].address}:${local.catalog_port}/${local.catalog_database}?sslmode=verify-full&sslrootcert=rds-ca.pem"
    jdbc      = "jdbc:postgresql://${aws_db_instance.catalog[0].address}:${local.catalog_port}/${local.catalog_database}?sslmode=verify-full&sslrootcert=rds-ca.pem"
  } : null
}

output "catalog_resource_id" {
  description = "Resource ID of the catalog database, for the rds-db:connect permission of IAM-authenticated database users (arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID/USER)."
  value       = local.catalog_rds ? aws_db_instance.catalog[0].resource_id : null
}
