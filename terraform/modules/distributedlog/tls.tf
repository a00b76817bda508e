# Certificates for every hop, from a private CA of this cluster:
#
#   CA       created here (tls_ca_cert_pem = null) or given (tls_ca_cert_pem
#            and tls_ca_private_key_pem); it signs the two kinds below.
#   node     one certificate shared by every dlog node (ingest, reader,
#            cache, compactor): OU=dlog-node, the role a cache node demands
#            of its peers (docs/configuration.md, [tls]). Its names are
#            tls_server_name, which nodes and clients check it against
#            (dlog --tls-server-name), and the NLB's DNS name. It is also
#            the nodes' client certificate for etcd.
#   etcd     one per member: its private IP and 127.0.0.1, server and
#            client use (peers authenticate each other with it), and a
#            common name only members have, which etcd requires of peers
#            (--peer-cert-allowed-cn).
#
# Each set (CA certificate, certificate, private key) is a JSON secret in
# Secrets Manager, encrypted with the segment KMS key. Nodes fetch theirs
# at every start and every 15 minutes (scripts/dlog-tls-fetch.sh), so a
# certificate Terraform re-issues reaches running nodes without a restart:
# dlog reloads its files (tls.reload_interval) and etcd reads them at each
# new connection. Keys and certificates are made anew by the first apply
# after tls_cert_validity_days - tls_cert_renew_before_days (time_rotating),
# so a stolen key is good only until then.
#
# The private keys are in the Terraform state: keep the state encrypted and
# its access as narrow as the CA's.

locals {
  create_ca       = var.tls_ca_cert_pem == null
  ca_cert_pem     = local.create_ca ? tls_self_signed_cert.ca[0].cert_pem : var.tls_ca_cert_pem
  ca_key_pem      = local.create_ca ? tls_private_key.ca[0].private_key_pem : var.tls_ca_private_key_pem
  tls_server_name = "nodes.${var.cluster_name}.dlog.internal"
  etcd_peer_cn    = "etcd.${var.cluster_name}.dlog.internal"

  tls_validity_hours = var.tls_cert_validity_days * 24
  tls_renew_hours    = var.tls_cert_renew_before_days * 24
  # Where scripts/dlog-tls-fetch.sh writes a node's set.
  tls_dir = "/etc/dlog/tls"
}

# The CA is never replaced by an apply: every node and client trusts only
# it, and a new one would reach nodes at different moments (a split
# cluster). Replacing it is a deliberate change (terraform/README.md).
resource "tls_private_key" "ca" {
  count = local.create_ca ? 1 : 0

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"

  lifecycle {
    prevent_destroy = true
  }
}

resource "tls_self_signed_cert" "ca" {
  count = local.create_ca ? 1 : 0

  private_key_pem       = tls_private_key.ca[0].private_key_pem
  is_ca_certificate     = true
  validity_period_hours = var.tls_ca_validity_days * 24
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]

  subject {
    common_name  = "distributedlog ${var.cluster_name} CA"
    organization = "distributedlog"
  }

  lifecycle {
    prevent_destroy = true

    precondition {
      condition     = var.tls_ca_validity_days > 2 * var.tls_cert_validity_days
      error_message = "tls_ca_validity_days must be more than twice tls_cert_validity_days: certificates are issued until the CA's last years."
    }
  }
}

# Marks when node and etcd keys are due for replacement; their
# certificates follow the keys (and renew early on their own too).
resource "time_rotating" "tls_keys" {
  rotation_days = var.tls_cert_validity_days - var.tls_cert_renew_before_days
}

# Every certificate the module issues, by the name of its secret: the one
# all dlog nodes share, and one per etcd member.
locals {
  # tomap: one object type for both kinds, as for_each wants a map.
  tls_leaves = tomap(merge(
    {
      node = {
        what         = "the dlog nodes"
        common_name  = local.tls_server_name
        unit         = "dlog-node"
        dns_names    = [local.tls_server_name, aws_lb.this.dns_name]
        ip_addresses = []
        tags         = {}
      }
    },
    {
      for name, member in var.etcd_members : name => {
        what         = "etcd member ${name}"
        common_name  = local.etcd_peer_cn
        unit         = "dlog-etcd ${name}"
        dns_names    = ["localhost"]
        ip_addresses = [member.private_ip, "127.0.0.1"]
        tags         = { "dlog:etcd-member" = name }
      }
    },
  ))
}

resource "tls_private_key" "leaf" {
  for_each = local.tls_leaves

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"

  lifecycle {
    replace_triggered_by = [time_rotating.tls_keys]
  }
}

resource "tls_cert_request" "leaf" {
  for_each = local.tls_leaves

  private_key_pem = tls_private_key.leaf[each.key].private_key_pem
  dns_names       = each.value.dns_names
  ip_addresses    = each.value.ip_addresses

  subject {
    common_name         = each.value.common_name
    organization        = "distributedlog"
    organizational_unit = each.value.unit
  }
}

resource "tls_locally_signed_cert" "leaf" {
  for_each = local.tls_leaves

  cert_request_pem      = tls_cert_request.leaf[each.key].cert_request_pem
  ca_private_key_pem    = local.ca_key_pem
  ca_cert_pem           = local.ca_cert_pem
  validity_period_hours = local.tls_validity_hours
  early_renewal_hours   = local.tls_renew_hours
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]

  lifecycle {
    precondition {
      condition     = (var.tls_ca_cert_pem == null) == (var.tls_ca_private_key_pem == null)
      error_message = "tls_ca_cert_pem and tls_ca_private_key_pem go together: give both (your CA) or neither (the module creates one)."
    }
    precondition {
      condition     = var.tls_cert_renew_before_days < var.tls_cert_validity_days
      error_message = "tls_cert_renew_before_days must be less than tls_cert_validity_days."
    }
    precondition {
      condition     = !contains(keys(var.etcd_members), "node")
      error_message = "No etcd member may be named node: its certificate and secret would be the dlog nodes'."
    }
  }
}

# ------------------------------------------------------- Secrets Manager ---

resource "aws_secretsmanager_secret" "tls" {
  for_each = local.tls_leaves

  name        = "${var.cluster_name}/tls/${each.key}"
  description = "distributedlog ${var.cluster_name}: CA, certificate and key of ${each.value.what}"
  kms_key_id  = local.kms_key_arn
  # No recovery window: the set is re-made by an apply, and a window would
  # block re-creating a cluster of the same name for a week.
  recovery_window_in_days = 0
  tags                    = merge(local.common_tags, each.value.tags)
}

resource "aws_secretsmanager_secret_version" "tls" {
  for_each = local.tls_leaves

  secret_id = aws_secretsmanager_secret.tls[each.key].id
  secret_string = jsonencode({
    ca          = local.ca_cert_pem
    certificate = tls_locally_signed_cert.leaf[each.key].cert_pem
    private_key = tls_private_key.leaf[each.key].private_key_pem_pkcs8
  })
}
