output "ingest_endpoint" {
  description = "Point `dlog --endpoint` (or DLOG_ENDPOINT) here."
  value       = module.distributedlog.ingest_endpoint
}

output "reader_endpoint" {
  description = "Point `dlog --read-endpoint` (or DLOG_READ_ENDPOINT) here."
  value       = module.distributedlog.reader_endpoint
}

output "nlb_dns_name" {
  description = "DNS name of the network load balancer."
  value       = module.distributedlog.nlb_dns_name
}

output "bucket_name" {
  description = "Segment bucket."
  value       = module.distributedlog.bucket_name
}

output "object_store_url" {
  description = "Where the Parquet files are, for analytics engines."
  value       = module.distributedlog.object_store_url
}

output "etcd_endpoints" {
  description = "etcd client endpoints."
  value       = module.distributedlog.etcd_endpoints
}

output "metastore_url" {
  description = "The --metastore URL of the cluster."
  value       = module.distributedlog.metastore_url
}

output "tls_ca_cert_pem" {
  description = "The cluster CA: save it to a file and give it to clients (dlog --tls-ca FILE)."
  value       = module.distributedlog.tls_ca_cert_pem
}

output "tls_server_name" {
  description = "The name clients check node certificates against (dlog --tls-server-name)."
  value       = module.distributedlog.tls_server_name
}

output "catalog_endpoint" {
  description = "HOST:PORT of the Iceberg catalog (RDS for PostgreSQL)."
  value       = module.distributedlog.catalog_endpoint
}

output "catalog_secret_arn" {
  description = "Secrets Manager secret with the catalog's user and password (rotated by RDS)."
  value       = module.distributedlog.catalog_secret_arn
}

output "catalog_uri_templates" {
  description = "pyiceberg and JDBC connection strings of the catalog, without the password."
  value       = module.distributedlog.catalog_uri_templates
}
