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
  default     = ["10.0.0.0/8"]
}

variable "dlog_release_url" {
  description = "URL of the dlog release artifact (binary or .tar.gz) for linux amd64."
  type        = string
}

variable "dlog_release_sha256" {
  description = "SHA-256 of that artifact; empty skips the check."
  type        = string
  default     = ""
}
