//! Certificates for tests with TLS: certificate authorities, and node and
//! client certificates they sign, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// A certificate for `127.0.0.1` and `localhost`, whose subject has
    /// the organisational unit `unit` when given (`dlog-node` for nodes).
    pub fn leaf(&self, name: &str, unit: Option<&str>) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(unit) = unit {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, unit);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// An endpoint for `address` over TLS that trusts `ca_pem` and presents
/// `identity`, if given.
#[allow(dead_code)]
pub fn tls_endpoint(
    address: &str,
    ca_pem: &str,
    identity: Option<&Leaf>,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Endpoint::from_shared(address.to_owned())?.tls_config(tls)
}

impl Leaf {
    /// Writes `NAME.pem` and `NAME.key` in `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        (cert, key)
    }
}

/// The test cluster's certificates: nodes trust `ca` and `next_ca` (a
/// rotation moves to the second); etcd has its own CA.
#[derive(Debug)]
pub struct ClusterPki {
    pub ca: Ca,
    pub next_ca: Ca,
    pub dir: PathBuf,
    /// `ca` then `next_ca`, PEM: the nodes' `tls.ca`.
    pub trusted: PathBuf,
    /// Only `ca`: what clients trust.
    pub ca_file: PathBuf,
    pub etcd_ca_file: PathBuf,
    /// etcd's server certificate and key.
    pub etcd_server: (PathBuf, PathBuf),
    /// The nodes' client certificate and key for etcd.
    pub etcd_client: (PathBuf, PathBuf),
    /// A node certificate for the test itself, when it stands in for a
    /// node (calls the cache service).
    pub test_node: Leaf,
}

impl ClusterPki {
    pub fn new(dir: &Path) -> ClusterPki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = Ca::new("dlog test CA");
        let next_ca = Ca::new("dlog test CA, next");
        let trusted = dir.join("trusted-cas.pem");
        std::fs::write(&trusted, format!("{}{}", ca.pem, next_ca.pem)).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let etcd_ca = Ca::new("etcd test CA");
        let etcd_ca_file = dir.join("etcd-ca.pem");
        std::fs::write(&etcd_ca_file, &etcd_ca.pem).unwrap();
        let etcd_server = etcd_ca.leaf("etcd", None).write(dir, "etcd-server");
        let etcd_client = etcd_ca.leaf("dlog", None).write(dir, "etcd-client");
        let test_node = ca.leaf("test", Some("dlog-node"));
        ClusterPki {
            ca,
            next_ca,
            dir: dir.to_owned(),
            trusted,
            ca_file,
            etcd_ca_file,
            etcd_server,
            etcd_client,
            test_node,
        }
    }

    /// A node's certificate files (signed by `ca`, node role) and the
    /// settings that point at them and at etcd's TLS files.
    pub fn node_env(&self, node: &str) -> Vec<(String, String)> {
        let (cert, key) = self.ca.leaf(node, Some("dlog-node")).write(&self.dir, node);
        let path = |p: &Path| p.display().to_string();
        vec![
            ("DLOG_TLS__CERT".into(), path(&cert)),
            ("DLOG_TLS__KEY".into(), path(&key)),
            ("DLOG_TLS__CA".into(), path(&self.trusted)),
            ("DLOG_TLS__RELOAD_INTERVAL".into(), "500ms".into()),
            ("DLOG_TLS__ETCD_CA".into(), path(&self.etcd_ca_file)),
            ("DLOG_TLS__ETCD_CERT".into(), path(&self.etcd_client.0)),
            ("DLOG_TLS__ETCD_KEY".into(), path(&self.etcd_client.1)),
        ]
    }

    /// The TLS settings of a test's own connection to etcd.
    pub fn etcd_tls(&self) -> dlog_meta::metastore::EtcdTls {
        dlog_meta::metastore::EtcdTls {
            ca: self.etcd_ca_file.clone(),
            cert: Some(self.etcd_client.0.clone()),
            key: Some(self.etcd_client.1.clone()),
        }
    }
}
