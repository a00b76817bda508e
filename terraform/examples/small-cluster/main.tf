# A small production cluster: 3 etcd members, 3 cache nodes on NVMe
# instance storage, 2 ingest, 2 reader and 2 compactor nodes, one internal
# network load balancer, in an existing VPC.

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project = "distributedlog"
    }
  }
}

module "distributedlog" {
  source = "../../modules/distributedlog"

  cluster_name = var.cluster_name
  vpc_id       = var.vpc_id
  subnet_ids   = var.private_subnet_ids

  dlog_release_url    = var.dlog_release_url
  dlog_release_sha256 = var.dlog_release_sha256

  allowed_client_cidrs        = var.allowed_client_cidrs
  s3_endpoint_route_table_ids = var.private_route_table_ids

  etcd_count         = 3
  etcd_instance_type = "t3.medium"

  cache_count         = 3
  cache_instance_type = "i4i.large"

  ingest_instance_type    = "c6i.large"
  ingest_min_size         = 2
  ingest_desired_capacity = 2
  ingest_max_size         = 6

  reader_instance_type    = "c6i.large"
  reader_min_size         = 2
  reader_desired_capacity = 2
  reader_max_size         = 6

  compactor_instance_type    = "m6i.large"
  compactor_min_size         = 1
  compactor_desired_capacity = 2
  compactor_max_size         = 4
}
