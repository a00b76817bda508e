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
  description = "Private subnets (one per availability zone, ideally three) of the ingest, reader and compactor auto-scaling groups. etcd members and cache nodes name their own subnets (etcd_members, cache_nodes), so editing this list never moves them."
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
  description = "AMI of every node, pinned: Debian 12 or a compatible image with cloud-init, systemd, curl and apt (etcd, awscli and jq come from Debian's packages). A new value rolls the auto-scaling groups; etcd members and cache nodes take it only when replaced one at a time (see the guide)."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be an AMI ID (ami-...)."
  }
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume of ingest, reader, compactor and cache nodes."
  type        = number
  default     = 20
}

variable "enable_ssm" {
  description = "Install the SSM agent (version ssm_agent_version) on every node and attach AmazonSSMManagedInstanceCore to every node role, so operators reach nodes through Session Manager instead of SSH."
  type        = bool
  default     = true
}

variable "ssm_agent_version" {
  description = "Version of the SSM agent installed when enable_ssm is set, from AWS's regional distribution bucket over HTTPS."
  type        = string
  default     = "3.3.3270.0"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+){3}$", var.ssm_agent_version))
    error_message = "ssm_agent_version must be a version such as 3.3.3270.0."
  }
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
  description = "https URL of the dlog release artifact that every node downloads at first boot: either the dlog binary itself or a .tar.gz holding a file named dlog (for a versioned S3 object, a pre-signed https URL of that version). It must match the AMI's architecture."
  type        = string

  validation {
    condition     = can(regex("^https://[^\\s'\"]+$", var.dlog_release_url))
    error_message = "dlog_release_url must be an https:// URL without spaces or quotes."
  }
}

variable "dlog_release_sha256" {
  description = "SHA-256 (64 lowercase hex digits) of the artifact at dlog_release_url; a node installs nothing else."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.dlog_release_sha256))
    error_message = "dlog_release_sha256 must be 64 lowercase hex digits."
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

variable "metrics_port" {
  description = "Port where every dlog node serves Prometheus metrics and HTTP health (dlog serve --metrics-listen: GET /metrics, GET /health), reachable from metrics_allowed_cidrs and, for /health, from the NLB."
  type        = number
  default     = 9100

  validation {
    condition     = var.metrics_port >= 1024 && var.metrics_port <= 65535
    error_message = "metrics_port must be an unprivileged port (1024-65535), other than the gRPC ports."
  }
}

variable "metrics_allowed_cidrs" {
  description = "Networks of the Prometheus servers allowed to scrape metrics_port on every dlog node. Empty (the default) opens the port to no one; the nodes still serve it on their private address."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.metrics_allowed_cidrs : can(cidrhost(cidr, 0))])
    error_message = "metrics_allowed_cidrs must hold CIDR blocks such as 10.0.0.0/16."
  }
}

variable "compactor_port" {
  description = "Port compactor nodes pass to --listen. No security group rule opens it: nothing calls a compactor."
  type        = number
  default     = 7073
}

# -------------------------------------------------------------------- TLS ---

variable "tls_ca_cert_pem" {
  description = "Certificate (PEM) of a CA of your own that signs the node and etcd certificates, with tls_ca_private_key_pem; null creates a private CA for this cluster (output tls_ca_cert_pem). Use a CA dedicated to this cluster: nodes trust every certificate it signs with OU=dlog-node."
  type        = string
  default     = null
}

variable "tls_ca_private_key_pem" {
  description = "Private key (PEM) of tls_ca_cert_pem; null when the module creates the CA. It is kept in the Terraform state."
  type        = string
  default     = null
  sensitive   = true
}

variable "tls_ca_validity_days" {
  description = "Validity of the CA the module creates. Replacing the CA needs a rollout of its certificate to every client."
  type        = number
  default     = 3650

  validation {
    condition     = var.tls_ca_validity_days >= 30
    error_message = "tls_ca_validity_days must be at least 30."
  }
}

variable "tls_cert_validity_days" {
  description = "Validity of the node and etcd certificates."
  type        = number
  default     = 365

  validation {
    condition     = var.tls_cert_validity_days >= 2
    error_message = "tls_cert_validity_days must be at least 2."
  }
}

variable "tls_cert_renew_before_days" {
  description = "The first terraform apply this many days before a certificate expires issues a new one; running nodes fetch it within 15 minutes, without a restart. Apply at least that often."
  type        = number
  default     = 30

  validation {
    condition     = var.tls_cert_renew_before_days >= 1
    error_message = "tls_cert_renew_before_days must be at least 1."
  }
}

# ---------------------------------------------------------------- network ---

variable "client_tokens" {
  description = "Require a client token on every LogService, ReadService and AdminService call (dlog serve --auth-tokens). The first node to start writes a root token to /var/lib/dlog/root-token (mode 0600); make scoped tokens with it (dlog token create). Tokens travel inside TLS (tls.tf)."
  type        = bool
  default     = true
}

variable "allowed_client_cidrs" {
  description = "CIDR blocks of clients: they reach the NLB listeners and, to follow an owner redirect, ingest nodes directly on ingest_port. Required: name the client networks."
  type        = list(string)

  validation {
    condition     = length(var.allowed_client_cidrs) > 0 && alltrue([for c in var.allowed_client_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_client_cidrs must hold at least one valid CIDR block."
  }
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
  description = "Key prefix of segment objects inside the bucket (the /PREFIX part of s3://BUCKET/PREFIX); the compactor and reader policies are limited to it. Not empty: etcd snapshots live beside it, under etcd_snapshot_prefix."
  type        = string
  default     = "dlog"

  validation {
    condition     = can(regex("^[A-Za-z0-9._=/-]*$", var.object_prefix)) && trim(var.object_prefix, "/") != ""
    error_message = "object_prefix must be non-empty and hold only letters, digits and . _ = / -."
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
  default     = true
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

variable "etcd_members" {
  description = "etcd members by stable name (the member name, such as etcd-a): the subnet each runs in and its private IP in that subnet, reserved on its own network interface. 1, 3 or 5 members, each in a subnet of its own availability zone. Adding or removing an entry on a running cluster needs etcdctl member add/remove (see the guide)."
  type = map(object({
    subnet_id  = string
    private_ip = string
  }))

  validation {
    condition     = contains([1, 3, 5], length(var.etcd_members))
    error_message = "etcd_members must hold 1, 3 or 5 members."
  }

  validation {
    condition     = alltrue([for name in keys(var.etcd_members) : can(regex("^[a-z0-9][a-z0-9-]{0,30}$", name))])
    error_message = "etcd member names must be 1-31 characters of lowercase letters, digits and '-'."
  }

  validation {
    condition     = length(distinct([for m in values(var.etcd_members) : m.private_ip])) == length(var.etcd_members)
    error_message = "Every etcd member needs its own private_ip."
  }
}

variable "etcd_instance_type" {
  description = "Instance type of etcd members; not burstable (t2/t3/t3a/t4g), since etcd heartbeats and fsyncs stall when CPU credits run out."
  type        = string
  default     = "m6i.large"

  validation {
    condition     = !can(regex("^(t2|t3|t3a|t4g)\\.", var.etcd_instance_type))
    error_message = "etcd_instance_type must not be a burstable (t2/t3/t3a/t4g) type."
  }
}

variable "etcd_volume_size_gb" {
  description = "Size of each member's encrypted gp3 data volume (the etcd data directory), which outlives the instance."
  type        = number
  default     = 20
}

variable "etcd_wal_volume_size_gb" {
  description = "Size of each member's encrypted gp3 WAL volume (etcd --wal-dir), which outlives the instance."
  type        = number
  default     = 20
}

variable "etcd_wal_volume_iops" {
  description = "Provisioned IOPS of each member's gp3 WAL volume."
  type        = number
  default     = 3000
}

variable "etcd_quota_backend_gb" {
  description = "etcd --quota-backend-bytes, in GiB: past it etcd refuses writes (NOSPACE alarm) until compaction and defragmentation free space."
  type        = number
  default     = 4

  validation {
    condition     = var.etcd_quota_backend_gb >= 1 && var.etcd_quota_backend_gb <= 8
    error_message = "etcd_quota_backend_gb must be between 1 and 8."
  }
}

variable "etcd_initial_cluster_state" {
  description = "How a member with an empty data directory may start: new while the cluster is being created (the first apply), existing afterwards, so that a replaced member can only rejoin after etcdctl member add and never bootstraps a cluster of its own. Only new instances read it."
  type        = string

  validation {
    condition     = contains(["new", "existing"], var.etcd_initial_cluster_state)
    error_message = "etcd_initial_cluster_state must be new or existing."
  }
}

variable "etcd_snapshot_prefix" {
  description = "Key prefix in the segment bucket under which every member uploads its etcd snapshots (PREFIX/<cluster_name>/<member>/...); it must lie outside object_prefix. The etcd role may only PutObject there."
  type        = string
  default     = "etcd-snapshots"

  validation {
    condition     = can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", var.etcd_snapshot_prefix))
    error_message = "etcd_snapshot_prefix must be non-empty and hold only letters, digits, . _ = - and inner /."
  }
}

variable "etcd_snapshot_interval_minutes" {
  description = "Minutes between two etcd snapshots of each member."
  type        = number
  default     = 60

  validation {
    condition     = var.etcd_snapshot_interval_minutes >= 5
    error_message = "etcd_snapshot_interval_minutes must be at least 5."
  }
}

variable "etcd_snapshot_retention_days" {
  description = "Days after which a lifecycle rule deletes an etcd snapshot."
  type        = number
  default     = 30

  validation {
    condition     = var.etcd_snapshot_retention_days >= 1
    error_message = "etcd_snapshot_retention_days must be at least 1."
  }
}

# ------------------------------------------------------------------ cache ---

variable "cache_nodes" {
  description = "Cache nodes by stable name (such as cache-a) with the subnet each runs in; at least the largest ensemble size (E) of any namespace, spread over at least min(count, 3) availability zones, with at least one in every availability zone of subnet_ids. A new entry adds a node; see the guide before removing one."
  type = map(object({
    subnet_id = string
  }))

  validation {
    condition     = length(var.cache_nodes) >= 1
    error_message = "cache_nodes must hold at least one node."
  }

  validation {
    condition     = alltrue([for name in keys(var.cache_nodes) : can(regex("^[a-z0-9][a-z0-9-]{0,30}$", name))])
    error_message = "cache node names must be 1-31 characters of lowercase letters, digits and '-'."
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

# -------------------------------------------------------- iceberg catalog ---

variable "iceberg_catalog" {
  description = "Register every log's Iceberg table in a catalog that every compactor commits to (compactor.iceberg_catalog, docs/iceberg.md) and query engines read; iceberg_catalog_kind says which. false: no catalog, and compactors write Parquet files only, in no table."
  type        = bool
  default     = true
}

variable "iceberg_catalog_kind" {
  description = "The Iceberg catalog with iceberg_catalog: \"postgres\", an RDS for PostgreSQL database holding the SQL catalog (catalog.tf), or \"glue\", the account's AWS Glue Data Catalog in the cluster's region (glue.tf: a Glue database per dlog namespace, created by the compactors; no database server). Changing it on a running cluster starts new, empty tables in the other catalog (docs/iceberg.md)."
  type        = string
  default     = "postgres"

  validation {
    condition     = contains(["postgres", "glue"], var.iceberg_catalog_kind)
    error_message = "iceberg_catalog_kind must be \"postgres\" or \"glue\"."
  }
}

variable "catalog_instance_class" {
  description = "DB instance class of the catalog. The catalog holds one row per log and takes one small transaction per offloaded segment and per retention pass, plus the engines' table loads."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.catalog_instance_class))
    error_message = "catalog_instance_class must be a DB instance class such as db.t4g.medium."
  }
}

variable "catalog_engine_version" {
  description = "Major version of PostgreSQL for the catalog (its parameter group family is postgres<version>). RDS applies minor versions by itself; a higher major version is an upgrade in the next maintenance window."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^1[3-9]$", var.catalog_engine_version))
    error_message = "catalog_engine_version must be a PostgreSQL major version from 13, such as 16."
  }
}

variable "catalog_storage_gb" {
  description = "Allocated gp3 storage of the catalog, in GiB; RDS grows it up to catalog_max_storage_gb when it fills."
  type        = number
  default     = 20

  validation {
    condition     = var.catalog_storage_gb >= 20
    error_message = "catalog_storage_gb must be at least 20 (the gp3 minimum of RDS for PostgreSQL)."
  }
}

variable "catalog_max_storage_gb" {
  description = "Upper bound of the catalog's storage autoscaling, in GiB."
  type        = number
  default     = 100
}

variable "catalog_multi_az" {
  description = "Run the catalog as a Multi-AZ deployment (a standby in another zone, failover in a minute or two). Without it, compactors stop committing tables (and offloading) while the single instance is down."
  type        = bool
  default     = true
}

variable "catalog_deletion_protection" {
  description = "Deletion protection of the catalog database: terraform destroy, or an apply that replaces it, fails until this is false. The catalog is the only index of every log's table."
  type        = bool
  default     = true
}

variable "catalog_backup_retention_days" {
  description = "Days RDS keeps automated backups of the catalog (point-in-time restore within them)."
  type        = number
  default     = 7

  validation {
    condition     = var.catalog_backup_retention_days >= 1 && var.catalog_backup_retention_days <= 35
    error_message = "catalog_backup_retention_days must be between 1 and 35."
  }
}

variable "catalog_monitoring_interval_seconds" {
  description = "Interval of RDS enhanced monitoring (OS metrics) of the catalog, through the role the module creates; 0 turns it off."
  type        = number
  default     = 60

  validation {
    condition     = contains([0, 1, 5, 10, 15, 30, 60], var.catalog_monitoring_interval_seconds)
    error_message = "catalog_monitoring_interval_seconds must be one of 0, 1, 5, 10, 15, 30, 60."
  }
}

variable "catalog_allowed_cidrs" {
  description = "Networks of query engines and analysts (a bastion, a Spark or Trino cluster) allowed to reach the catalog on 5432. Empty (the default): only compactors reach it."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.catalog_allowed_cidrs : can(cidrhost(cidr, 0))])
    error_message = "catalog_allowed_cidrs must hold CIDR blocks such as 10.0.0.0/16."
  }
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

# ------------------------------------------------------------- operations ---

variable "alarm_sns_topic_arn" {
  description = "SNS topic every CloudWatch alarm of the module notifies (alarm and back to OK)."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:sns:", var.alarm_sns_topic_arn))
    error_message = "alarm_sns_topic_arn must be the ARN of an SNS topic."
  }
}

variable "disk_alarm_threshold_percent" {
  description = "Used-space percentage of a cache journal or an etcd data or WAL volume above which its alarm fires."
  type        = number
  default     = 80
}

variable "etcd_quota_alarm_percent" {
  description = "Share of etcd_quota_backend_gb used by a member's database above which its alarm fires."
  type        = number
  default     = 70
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups that node logs are shipped to (/distributedlog/<cluster_name>/<role>)."
  type        = number
  default     = 30
}
