//! TLS of a node: its certificate, key and cluster CA, read from files and
//! read again when they change, so a rotation needs no restart.
//!
//! One [`TlsMaterial`] serves both directions:
//! - as a server, every accepted connection gets the configuration current
//!   at its handshake ([`TlsMaterial::server_config`]). Clients may come
//!   without a certificate (SDK users authenticate with tokens); one that
//!   presents a certificate must chain to the CA;
//! - as a client of other nodes (cache replication, recovery, reads),
//!   every new connection, reconnections included, presents the node's
//!   current certificate and checks the peer's against the current CA
//!   ([`TlsMaterial::dial`]).
//!
//! A set of files is used only once it reads the same twice in a row (a
//! rotation caught between two writes is not taken) and checks out: the
//! key matches the certificate, the certificate chains to the node's own
//! CA file, is valid now and carries the node role. Otherwise the set in
//! use stays and a warning says why. Open connections keep the
//! certificate of their handshake, as in any TLS server.
//!
//! Roles: a certificate is a node's when its subject carries the
//! organisational unit [`NODE_ROLE`]. Only such peers may call the cache
//! service ([`require_node_peer`]).
//!
//! Crash safety: nothing is written; files are only read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The organisational unit (OU) of a node's certificate subject.
pub const NODE_ROLE: &str = "dlog-node";

/// Where a node's TLS files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain (PEM).
    pub cert: PathBuf,
    /// The key of that certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster CA's certificates (PEM): peers' and client certificates
    /// must chain to one of them.
    pub ca: PathBuf,
}

/// The files' bytes, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

#[derive(Debug)]
struct Loaded {
    pem: Pem,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

#[derive(Debug)]
struct State {
    loaded: Loaded,
    pending: Settling<Pem>,
}

/// Files read again and again, whose new content is taken only once two
/// reads in a row agree: a rotation caught between two renames is not.
#[derive(Debug)]
pub(crate) struct Settling<T> {
    /// A changed read, waiting to be read the same again.
    seen: Option<T>,
}

impl<T> Default for Settling<T> {
    fn default() -> Self {
        Settling { seen: None }
    }
}

impl<T: PartialEq + Clone> Settling<T> {
    /// `read`, when it differs from `in_use` and the previous read was the
    /// same. Until `in_use` becomes it, the same read is returned again
    /// (a set that failed to apply is tried again).
    pub(crate) fn settled(&mut self, read: T, in_use: &T) -> Option<T> {
        if read == *in_use {
            self.seen = None;
            return None;
        }
        if self.seen.as_ref() == Some(&read) {
            return Some(read);
        }
        // Seen once: maybe mid-rotation. Next time, if unchanged.
        self.seen = Some(read);
        None
    }
}

/// A node's TLS configuration, current with its files.
#[derive(Debug)]
pub struct TlsMaterial {
    files: TlsFiles,
    /// The name peers' certificates are checked against, instead of the
    /// host of their address.
    server_name: Option<ServerName<'static>>,
    state: RwLock<State>,
}

impl TlsMaterial {
    /// Reads and checks the files; the error names the file at fault.
    pub fn load(files: TlsFiles, server_name: Option<String>) -> Result<Arc<TlsMaterial>, String> {
        let server_name = match server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                format!("tls.server_name {name:?} is not a DNS name or IP address")
            })?),
            None => None,
        };
        let pem = read(&files)?;
        let loaded = configure(&files, pem)?;
        Ok(Arc::new(TlsMaterial {
            files,
            server_name,
            state: RwLock::new(State {
                loaded,
                pending: Settling::default(),
            }),
        }))
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration for the next accepted connection.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.state().loaded.server.clone()
    }

    /// Opens a TLS connection to the node at `uri` (`http://host:port`:
    /// the scheme tonic sees; the TLS is ours) with the current
    /// certificate, checking the peer's against the current CA and
    /// `tls.server_name` or the host. For `Endpoint::connect_with_connector`,
    /// so that reconnections take a rotated certificate too.
    pub async fn dial(
        &self,
        uri: http::Uri,
    ) -> std::io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
        let invalid = |what: &str| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {uri}"))
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_owned())
                .map_err(|_| invalid("not a TLS server name"))?,
        };
        let config = self.state().loaded.client.clone();
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        // The peer must be a node too, not just anyone the CA signed for
        // that name: a cache node takes appends and answers recovery.
        match peer(stream.get_ref().1.peer_certificates()) {
            Peer::Certified { node: true, .. } => Ok(hyper_util::rt::TokioIo::new(stream)),
            Peer::Certified { subject, .. } => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{uri} presented the certificate of {subject:?}, without the {NODE_ROLE} role (OU)"
                ),
            )),
            Peer::Anonymous => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{uri} presented no certificate"),
            )),
        }
    }

    /// Reads the files again; a changed set that reads the same as at the
    /// previous call and checks out replaces the one in use. `Ok(true)`
    /// when it did.
    pub fn reload(&self) -> Result<bool, String> {
        let pem = read(&self.files)?;
        let settled = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let State { loaded, pending } = &mut *state;
            pending.settled(pem, &loaded.pem)
        };
        let Some(pem) = settled else {
            return Ok(false);
        };
        let loaded = configure(&self.files, pem)?;
        self.state.write().unwrap_or_else(|p| p.into_inner()).loaded = loaded;
        Ok(true)
    }

    /// Checks the files every `interval` until `stop`.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            // File reads block; a hung mount must not hold a worker, nor
            // the node's stop.
            let material = self.clone();
            let reloaded = tokio::select! {
                _ = stop.cancelled() => return,
                reloaded = tokio::task::spawn_blocking(move || material.reload()) => reloaded,
            };
            match reloaded {
                Ok(Ok(true)) => tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate files changed: new connections use them"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::warn!("TLS files not reloaded, the ones in use stay: {err}")
                }
                Err(err) => tracing::warn!("TLS files not reloaded: {err}"),
            }
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("read {}: {err}", path.display()))
}

fn read(files: &TlsFiles) -> Result<Pem, String> {
    Ok(Pem {
        cert: read_file(&files.cert)?,
        key: read_file(&files.key)?,
        ca: read_file(&files.ca)?,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The CA certificates as roots.
fn roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        roots
            .add(cert)
            .map_err(|err| format!("{}: {err}", path.display()))?;
    }
    Ok(roots)
}

/// Checks a set of files and builds both configurations from it.
fn configure(files: &TlsFiles, pem: Pem) -> Result<Loaded, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = Arc::new(roots(&files.ca, &pem.ca)?);
    let chain = certificates(&files.cert, &pem.cert)?;
    let key = || {
        PrivateKeyDer::from_pem_slice(&pem.key)
            .map_err(|err| format!("{}: {err}", files.key.display()))
    };
    let pair = |err: rustls::Error| {
        format!(
            "{} and {}: {err}",
            files.cert.display(),
            files.key.display()
        )
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|err| format!("{}: {err}", files.ca.display()))?;
    // The node's own certificate, as its peers will check it: chains to
    // the CA, valid now, a node's.
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
        .map_err(|err| {
            format!(
                "{}: not a client certificate the CA in {} accepts now: {err}",
                files.cert.display(),
                files.ca.display()
            )
        })?;
    if !matches!(peer(Some(&chain)), Peer::Certified { node: true, .. }) {
        return Err(format!(
            "{}: the subject has no OU={NODE_ROLE}: other nodes would refuse it",
            files.cert.display()
        ));
    }
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key()?)
        .map_err(pair)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key()?)
        .map_err(pair)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        pem,
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// What the peer of a TLS connection proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No client certificate.
    Anonymous,
    /// A certificate the CA signed, with the node role or without it.
    Certified { node: bool, subject: String },
}

/// The peer of a connection, from the certificates it presented (the
/// handshake already checked them against the CA).
pub fn peer(certs: Option<&[CertificateDer<'_>]>) -> Peer {
    let Some(leaf) = certs.and_then(|certs| certs.first()) else {
        return Peer::Anonymous;
    };
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => {
            let subject = cert.subject();
            let node = subject
                .iter_organizational_unit()
                .any(|unit| unit.as_str() == Ok(NODE_ROLE));
            Peer::Certified {
                node,
                subject: subject.to_string(),
            }
        }
        // The handshake parsed it; only a certificate webpki accepts and
        // this parser does not lands here. No role, then.
        Err(_) => Peer::Certified {
            node: false,
            subject: "an unreadable certificate".to_owned(),
        },
    }
}

/// Lets a request through only from a node: a peer whose certificate
/// carries the node role. No certificate: `UNAUTHENTICATED`; another
/// certificate: `PERMISSION_DENIED`. On a node without TLS (`tls` false)
/// every request passes: there is no identity to check. (In-process calls
/// of the node's own roles do not come through this check.)
pub fn require_node_peer(request: &tonic::Request<()>, tls: bool) -> Result<(), tonic::Status> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let Some(info) = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>() else {
        // A node with TLS serves TLS connections only: a request without
        // their information means the wiring changed, so refuse.
        return match tls {
            false => Ok(()),
            true => Err(tonic::Status::unauthenticated(
                "the cache service serves nodes only: no TLS peer on this request",
            )),
        };
    };
    let certs = info.peer_certs();
    match peer(certs.as_deref().map(|certs| certs.as_slice())) {
        Peer::Certified { node: true, .. } => Ok(()),
        Peer::Anonymous => Err(tonic::Status::unauthenticated(
            "the cache service serves nodes only: connect with a node certificate",
        )),
        Peer::Certified { subject, .. } => Err(tonic::Status::permission_denied(format!(
            "the cache service serves nodes only: the certificate of {subject:?} has no {NODE_ROLE} role (OU)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

    struct Ca(CertifiedIssuer<'static, KeyPair>);

    impl Ca {
        fn new() -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
        }

        /// (certificate, key) PEM for 127.0.0.1, with the node role or not.
        fn leaf(&self, node: bool) -> (String, String) {
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
            if node {
                params
                    .distinguished_name
                    .push(DnType::OrganizationalUnitName, NODE_ROLE);
            }
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &*self.0).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    fn write(dir: &Path, ca: &Ca, (cert, key): &(String, String)) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            ca: dir.join("ca.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        std::fs::write(&files.ca, ca.0.pem()).unwrap();
        files
    }

    /// A node dials only nodes: a server with a certificate the CA signed
    /// but without the node role is refused, as a cache node would refuse
    /// such a client (before: the dial checked the CA and the name only).
    #[tokio::test]
    async fn a_node_dials_only_servers_with_the_node_role() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let client = TlsMaterial::load(write(dir.path(), &ca, &ca.leaf(true)), None).unwrap();
        for (node, expected) in [(false, false), (true, true)] {
            let server_dir = tempfile::tempdir().unwrap();
            let files = write(server_dir.path(), &ca, &ca.leaf(node));
            // The server's own check would refuse a certificate without
            // the role: build its configuration by hand.
            let pem = read(&files).unwrap();
            let chain = certificates(&files.cert, &pem.cert).unwrap();
            let key = PrivateKeyDer::from_pem_slice(&pem.key).unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let _ = acceptor.accept(tcp).await;
            });
            let uri: http::Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
            let dialled = client.dial(uri).await;
            assert_eq!(
                dialled.is_ok(),
                expected,
                "node role {node}: {:?}",
                dialled.err()
            );
            if !expected {
                let err = dialled.err().unwrap();
                assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
            }
            server.abort();
        }
    }

    /// A rotated set is taken only when two checks read it the same, and
    /// only if it checks out; a certificate without the node role is kept
    /// out and the one in use stays.
    #[test]
    fn a_rotation_is_taken_once_stable_and_only_if_it_checks_out() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let files = write(dir.path(), &ca, &ca.leaf(true));
        assert!(TlsMaterial::load(files.clone(), Some("not a name!".into())).is_err());
        let material = TlsMaterial::load(files.clone(), None).unwrap();
        let first = material.state().loaded.pem.clone();
        assert!(!material.reload().unwrap(), "nothing changed");

        // Without the node role: refused at the second identical read.
        write(dir.path(), &ca, &ca.leaf(false));
        assert!(!material.reload().unwrap(), "taken at the first read");
        let refused = material.reload().unwrap_err();
        assert!(refused.contains("no OU=dlog-node"), "{refused}");
        assert_eq!(material.state().loaded.pem, first);

        // A good one: taken at the second read.
        write(dir.path(), &ca, &ca.leaf(true));
        assert!(!material.reload().unwrap());
        assert!(material.reload().unwrap());
        assert_ne!(material.state().loaded.pem, first);

        // A key that does not match its certificate: refused.
        let (cert, _) = ca.leaf(true);
        let (_, other_key) = ca.leaf(true);
        write(dir.path(), &ca, &(cert, other_key));
        assert!(!material.reload().unwrap());
        assert!(material.reload().is_err());
        assert!(TlsMaterial::load(files, None).is_err());
    }
}
