terraform {
  # The oldest Terraform release this module is written and reviewed for.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.40 or later: security groups on network load balancers and the
      # max_healthy_percentage preference of instance refresh are both used.
      version = ">= 5.40, < 6.0"
    }
    tls = {
      source = "hashicorp/tls"
      # 4.0 or later: private_key_pem_pkcs8, and no ca_key_algorithm.
      version = ">= 4.0, < 5.0"
    }
    time = {
      source = "hashicorp/time"
      # time_rotating: new keys with each re-issue of the certificates.
      version = ">= 0.9, < 1.0"
    }
  }
}
