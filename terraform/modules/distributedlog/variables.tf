# Inputs of the distributedlog module. terraform/README.md has a table of
# every variable below; tests/check_references.py fails when they differ.

# ---------------------------------------------------------------- cluster ---

variable "cluster_name" {
  description = "Name of the cluster: prefix of every AWS resource name and the etcd key prefix /dlog/<cluster_name>/ (the /CLUSTER part of the metastore URL)."
  type        = string
  default     = "dlog"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,23}$", var.cluster_name))
    error_message = "cluster_name must be 1-24 characters of lowercase letters, digits and '-', starting with a letter or digit (load balancer and target group names derive from it)."
  }
}

variable "vpc_id" {
  description = "ID of the VPC the cluster runs in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (one per availability zone, ideally three) for every node: etcd members and cache nodes are spread over them in order, and the auto-scaling groups use all of them."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

variable "ami_id" {
  description = "AMI for every node. It must be Debian 12 or a compatible image with cloud-init, systemd, curl and apt (etcd is installed from Debian's etcd-server package). null picks the latest official Debian 12 amd64 image: pin an ID in production so that a new image does not roll every node group."
  type        = string
  default     = null
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume of ingest, reader, compactor and cache nodes."
  type        = number
  default     = 20
}

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore to every node role, so operators reach nodes through Session Manager instead of SSH."
  type        = bool
  default     = true
}

variable "ssh_key_name" {
  description = "EC2 key pair for SSH; null launches nodes without a key."
  type        = string
  default     = null
}

variable "ssh_allowed_cidrs" {
  description = "CIDR blocks allowed to reach port 22 of every node. Empty (the default) opens no SSH port at all."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------- release ---

variable "dlog_release_url" {
  description = "http(s) URL of the dlog release artifact that every node downloads at first boot: either the dlog binary itself or a .tar.gz holding a file named dlog. It must match the AMI's architecture."
  type        = string

  validation {
    condition     = can(regex("^https?://[^\\s'\"]+$", var.dlog_release_url))
    error_message = "dlog_release_url must be an http:// or https:// URL without spaces or quotes."
  }
}

variable "dlog_release_sha256" {
  description = "Expected SHA-256 (hex) of the artifact at dlog_release_url; empty skips the check."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([0-9a-f]{64})?$", var.dlog_release_sha256))
    error_message = "dlog_release_sha256 must be empty or 64 lowercase hex digits."
  }
}

# ------------------------------------------------------------------ ports ---

variable "ingest_port" {
  description = "gRPC port of ingest nodes (LogService), also the NLB listener port for it."
  type        = number
  default     = 7070
}

variable "reader_port" {
  description = "gRPC port of reader nodes (ReadService), also the NLB listener port for it."
  type        = number
  default     = 7071
}

variable "cache_port" {
  description = "gRPC port of cache nodes (internal CacheService), reachable from ingest, reader and compactor nodes only."
  type        = number
  default     = 7072
}

variable "compactor_port" {
  description = "Port compactor nodes pass to --listen. No security group rule opens it: nothing calls a compactor."
  type        = number
  default     = 7073
}

# ---------------------------------------------------------------- network ---

variable "allowed_client_cidrs" {
  description = "CIDR blocks of clients: they reach the NLB listeners and, to follow an owner redirect, ingest nodes directly on ingest_port."
  type        = list(string)
  default     = ["10.0.0.0/8"]
}

variable "egress_cidrs" {
  description = "CIDR blocks nodes may reach on ports 80 and 443 (Debian mirrors, the release URL, S3, KMS, SSM)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "nlb_internal" {
  description = "Make the network load balancer internal (reachable only from inside the VPC and networks routed to it)."
  type        = bool
  default     = true
}

variable "nlb_subnet_ids" {
  description = "Subnets for the network load balancer; empty uses subnet_ids. Give public subnets when nlb_internal is false."
  type        = list(string)
  default     = []
}

variable "nlb_deregistration_delay_seconds" {
  description = "How long the NLB keeps sending existing connections to a deregistered ingest or reader node before closing them."
  type        = number
  default     = 30
}

variable "s3_endpoint_route_table_ids" {
  description = "Route tables of the node subnets; when not empty, an S3 gateway endpoint is created on them so segment traffic does not cross a NAT gateway."
  type        = list(string)
  default     = []
}

# -------------------------------------------------------- object storage ---

variable "bucket_name" {
  description = "Name of the segment bucket; null lets AWS pick a unique name starting with <cluster_name>-segments-."
  type        = string
  default     = null
}

variable "object_prefix" {
  description = "Key prefix of segment objects inside the bucket (the /PREFIX part of s3://BUCKET/PREFIX); the compactor and reader policies are limited to it. Empty uses the whole bucket."
  type        = string
  default     = "dlog"

  validation {
    condition     = can(regex("^[A-Za-z0-9._=/-]*$", var.object_prefix))
    error_message = "object_prefix may hold only letters, digits and . _ = / -."
  }
}

variable "kms_key_arn" {
  description = "ARN of an existing KMS key for SSE-KMS of the bucket; null creates a key with rotation enabled."
  type        = string
  default     = null
}

variable "bucket_force_destroy" {
  description = "Let terraform destroy delete the bucket with every segment in it. Keep false in production."
  type        = bool
  default     = false
}

variable "bucket_versioning" {
  description = "Enable object versioning on the bucket; noncurrent versions (left by trim, retention and merges) then expire after 30 days."
  type        = bool
  default     = false
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which the lifecycle rule aborts an incomplete multipart upload (a compactor that died mid-upload)."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1
    error_message = "abort_incomplete_multipart_days must be at least 1."
  }
}

# ------------------------------------------------------------------- etcd ---

variable "etcd_count" {
  description = "Number of etcd members: 3 tolerates one failure, 5 tolerates two."
  type        = number
  default     = 3

  validation {
    condition     = contains([1, 3, 5], var.etcd_count)
    error_message = "etcd_count must be 1, 3 or 5."
  }
}

variable "etcd_instance_type" {
  description = "Instance type of etcd members."
  type        = string
  default     = "t3.medium"
}

variable "etcd_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume that holds the etcd data directory."
  type        = number
  default     = 20
}

variable "etcd_private_ips" {
  description = "Static private IPs of the etcd members, one per member, each inside the subnet it lands in (member i uses subnet_ids[i % length(subnet_ids)]). Empty computes them from etcd_ip_host_offset."
  type        = list(string)
  default     = []
}

variable "etcd_ip_host_offset" {
  description = "When etcd_private_ips is empty, member i gets host number etcd_ip_host_offset + i in its subnet (cidrhost). Keep these addresses out of other use."
  type        = number
  default     = 10
}

variable "etcd_initial_cluster_state" {
  description = "--initial-cluster-state of members that boot from this configuration: new when the cluster is created, existing while a replaced member joins a running cluster (see the guide)."
  type        = string
  default     = "new"

  validation {
    condition     = contains(["new", "existing"], var.etcd_initial_cluster_state)
    error_message = "etcd_initial_cluster_state must be new or existing."
  }
}

# ------------------------------------------------------------------ cache ---

variable "cache_count" {
  description = "Number of cache nodes; at least the largest ensemble size (E) of any namespace, 3 by default."
  type        = number
  default     = 3

  validation {
    condition     = var.cache_count >= 1
    error_message = "cache_count must be at least 1."
  }
}

variable "cache_instance_type" {
  description = "Instance type of cache nodes. It must have local NVMe instance storage: the journal lives there."
  type        = string
  default     = "i4i.large"
}

# ----------------------------------------------------------------- ingest ---

variable "ingest_instance_type" {
  description = "Instance type of ingest nodes."
  type        = string
  default     = "c6i.large"
}

variable "ingest_min_size" {
  description = "Minimum size of the ingest auto-scaling group."
  type        = number
  default     = 2
}

variable "ingest_max_size" {
  description = "Maximum size of the ingest auto-scaling group."
  type        = number
  default     = 6
}

variable "ingest_desired_capacity" {
  description = "Desired size of the ingest auto-scaling group."
  type        = number
  default     = 2
}

# ----------------------------------------------------------------- reader ---

variable "reader_instance_type" {
  description = "Instance type of reader nodes."
  type        = string
  default     = "c6i.large"
}

variable "reader_min_size" {
  description = "Minimum size of the reader auto-scaling group."
  type        = number
  default     = 2
}

variable "reader_max_size" {
  description = "Maximum size of the reader auto-scaling group."
  type        = number
  default     = 6
}

variable "reader_desired_capacity" {
  description = "Desired size of the reader auto-scaling group."
  type        = number
  default     = 2
}

# -------------------------------------------------------------- compactor ---

variable "compactor_instance_type" {
  description = "Instance type of compactor nodes."
  type        = string
  default     = "m6i.large"
}

variable "compactor_min_size" {
  description = "Minimum size of the compactor auto-scaling group."
  type        = number
  default     = 1
}

variable "compactor_max_size" {
  description = "Maximum size of the compactor auto-scaling group."
  type        = number
  default     = 4
}

variable "compactor_desired_capacity" {
  description = "Desired size of the compactor auto-scaling group."
  type        = number
  default     = 2
}

# ---------------------------------------------------------------- rolling ---

variable "drain_timeout_seconds" {
  description = "Time a stopping node gets for its clean shutdown (systemd TimeoutStopSec of dlog.service); the auto-scaling termination hook waits this plus 30 seconds."
  type        = number
  default     = 120

  validation {
    condition     = var.drain_timeout_seconds >= 30 && var.drain_timeout_seconds <= 7000
    error_message = "drain_timeout_seconds must be between 30 and 7000."
  }
}

variable "instance_refresh_min_healthy_percentage" {
  description = "min_healthy_percentage of the rolling instance refresh of the ingest, reader and compactor groups; the maximum is this plus 100 (at most 200), so 100 launches each replacement before the old node is drained."
  type        = number
  default     = 100

  validation {
    condition     = var.instance_refresh_min_healthy_percentage >= 0 && var.instance_refresh_min_healthy_percentage <= 100
    error_message = "instance_refresh_min_healthy_percentage must be between 0 and 100."
  }
}
