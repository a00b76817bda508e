# A small production cluster: 3 etcd members and 3 cache nodes (one per
# availability zone), 2 ingest, 2 reader and 2 compactor nodes, one
# internal network load balancer, the Iceberg catalog database, in an
# existing VPC, and an SNS topic for the module's alarms.

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project = "distributedlog"
    }
  }
}

# Subscribe the operators (e-mail, chat, paging) to this topic.
resource "aws_sns_topic" "alarms" {
  name              = "${var.cluster_name}-alarms"
  kms_master_key_id = "alias/aws/sns"
}

module "distributedlog" {
  source = "../../modules/distributedlog"

  cluster_name = var.cluster_name
  vpc_id       = var.vpc_id
  subnet_ids   = var.private_subnet_ids
  ami_id       = var.ami_id

  dlog_release_url    = var.dlog_release_url
  dlog_release_sha256 = var.dlog_release_sha256

  allowed_client_cidrs        = var.allowed_client_cidrs
  s3_endpoint_route_table_ids = var.private_route_table_ids
  alarm_sns_topic_arn         = aws_sns_topic.alarms.arn

  # Stable names: editing subnet lists or other variables never renames,
  # moves or readdresses a member or a node.
  etcd_members               = var.etcd_members
  etcd_initial_cluster_state = var.etcd_initial_cluster_state
  etcd_instance_type         = "m6i.large"

  cache_nodes         = var.cache_nodes
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

  # The Iceberg catalog (on by default): Multi-AZ RDS for PostgreSQL that
  # only compactors reach; name the networks of query engines here.
  catalog_allowed_cidrs = var.catalog_allowed_cidrs
}
