variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "Name of the cluster (resource names, etcd key prefix)."
  type        = string
  default     = "dlog"
}

variable "vpc_id" {
  description = "ID of an existing VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets of that VPC, one per availability zone (three recommended)."
  type        = list(string)
}

variable "private_route_table_ids" {
  description = "Route tables of those subnets, for the S3 gateway endpoint; empty creates no endpoint."
  type        = list(string)
  default     = []
}

variable "allowed_client_cidrs" {
  description = "Networks of the applications that use the log."
  type        = list(string)
}

variable "ami_id" {
  description = "Pinned AMI of every node (Debian 12 amd64)."
  type        = string
}

variable "etcd_members" {
  description = "etcd members by name: subnet (one zone each) and reserved private IP."
  type = map(object({
    subnet_id  = string
    private_ip = string
  }))
}

variable "etcd_initial_cluster_state" {
  description = "new for the first apply, existing from then on."
  type        = string
}

variable "cache_nodes" {
  description = "Cache nodes by name, with their subnets (one zone each)."
  type = map(object({
    subnet_id = string
  }))
}

variable "dlog_release_url" {
  description = "https URL of the dlog release artifact (binary or .tar.gz) for linux amd64."
  type        = string
}

variable "dlog_release_sha256" {
  description = "SHA-256 of that artifact (required)."
  type        = string
}

variable "catalog_allowed_cidrs" {
  description = "Networks of query engines (Spark, Trino, a bastion) allowed to reach the Iceberg catalog; empty: compactors only."
  type        = list(string)
  default     = []
}
