//! TLS connections to etcd that take rotated certificate files.
//!
//! etcd-client builds its TLS once, from the files read at start: a
//! certificate re-issued later would reach the node's etcd connections
//! only after a restart, and a reconnection after the old certificate
//! expired would fail. Here every new connection (reconnections included)
//! reads the CA, certificate and key again, so a rotation needs no
//! restart. A set that does not read as a valid configuration (a rotation
//! caught between two renames: the key does not match the certificate) is
//! not used; the last good one is, with a warning.
//!
//! One channel serves all endpoints: each dial tries them in turn,
//! starting after the one the previous dial reached, so a lost member is
//! skipped at the next reconnection.
//!
//! Crash safety: nothing is written; files are only read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Error, EtcdTls, Result};

/// How long one endpoint may take to accept a TCP connection and finish
/// the TLS handshake.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials etcd endpoints over TLS with the current files.
#[derive(Debug)]
pub(crate) struct EtcdDialer {
    endpoints: Vec<(String, u16)>,
    files: EtcdTls,
    next: AtomicUsize,
    last_good: Mutex<Option<Arc<rustls::ClientConfig>>>,
}

impl EtcdDialer {
    /// A dialer for `endpoints` (`https://host:port`). Reads the files
    /// once now, so that a wrong path or a bad set fails at start.
    pub(crate) fn new(endpoints: &[String], files: &EtcdTls) -> Result<Arc<EtcdDialer>> {
        let parsed = endpoints
            .iter()
            .map(|endpoint| host_port(endpoint))
            .collect::<Result<Vec<_>>>()?;
        let config = client_config(files).map_err(Error::Unavailable)?;
        Ok(Arc::new(EtcdDialer {
            endpoints: parsed,
            files: files.clone(),
            next: AtomicUsize::new(0),
            last_good: Mutex::new(Some(config)),
        }))
    }

    /// The URI tonic is given; the connection itself is [`EtcdDialer::dial`]'s.
    /// How long a whole dial may take: every endpoint in turn.
    pub(crate) fn dial_timeout(&self) -> Duration {
        DIAL_TIMEOUT * self.endpoints.len() as u32 + Duration::from_secs(1)
    }

    pub(crate) fn channel_uri(&self) -> String {
        let (host, port) = &self.endpoints[0];
        format!("http://{}:{port}", bracketed(host))
    }

    /// The configuration from the files as they are now, or the last good
    /// one when they do not make one.
    fn config(&self) -> std::io::Result<Arc<rustls::ClientConfig>> {
        let mut last_good = self.last_good.lock().unwrap_or_else(|p| p.into_inner());
        match client_config(&self.files) {
            Ok(config) => {
                *last_good = Some(config.clone());
                Ok(config)
            }
            Err(err) => match last_good.as_ref() {
                Some(config) => {
                    tracing::warn!("etcd TLS files not taken, using the previous set: {err}");
                    Ok(config.clone())
                }
                None => Err(std::io::Error::other(err)),
            },
        }
    }

    /// A TLS connection to the first endpoint that takes one, starting
    /// after the one reached last time.
    pub(crate) async fn dial(&self) -> std::io::Result<TokioIo<TlsStream<TcpStream>>> {
        let config = self.config()?;
        let connector = tokio_rustls::TlsConnector::from(config);
        // After the one reached last time: a reconnection is most often
        // caused by that member going away.
        let start = self.next.load(Ordering::Relaxed) + 1;
        let mut last_error = None;
        for i in 0..self.endpoints.len() {
            let index = (start + i) % self.endpoints.len();
            let (host, port) = &self.endpoints[index];
            match tokio::time::timeout(DIAL_TIMEOUT, dial_one(&connector, host, *port)).await {
                Ok(Ok(stream)) => {
                    self.next.store(index, Ordering::Relaxed);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(err)) => last_error = Some(format!("{host}:{port}: {err}")),
                Err(_) => last_error = Some(format!("{host}:{port}: no TLS connection within 5 s")),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            last_error.unwrap_or_else(|| "no etcd endpoint".to_owned()),
        ))
    }
}

async fn dial_one(
    connector: &tokio_rustls::TlsConnector,
    host: &str,
    port: u16,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host} is not a TLS server name"),
        )
    })?;
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    connector.connect(name, tcp).await
}

/// The host (brackets removed) and port of `https://host:port`.
fn host_port(endpoint: &str) -> Result<(String, u16)> {
    let invalid = |why: &str| Error::Unavailable(format!("etcd endpoint {endpoint:?}: {why}"));
    let uri: http::Uri = endpoint.parse().map_err(|_| invalid("not a URL"))?;
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
    Ok((host, port))
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A client configuration from the files: etcd's certificate checked
/// against the CA, ours presented when given.
fn client_config(files: &EtcdTls) -> std::result::Result<Arc<rustls::ClientConfig>, String> {
    let ca = crate::tls::read_file(&files.ca)?;
    let roots = crate::tls::roots(&files.ca, &ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let chain = crate::tls::certificates(cert, &crate::tls::read_file(cert)?)?;
            let key_pem = crate::tls::read_file(key)?;
            let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|err| format!("{}: {err}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|err| format!("{} and {}: {err}", cert.display(), key.display()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(
                "etcd TLS: give both the client certificate and its key, or neither".to_owned(),
            );
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_and_without_brackets() {
        assert_eq!(
            host_port("https://127.0.0.1:2379").unwrap(),
            ("127.0.0.1".to_owned(), 2379)
        );
        assert_eq!(
            host_port("https://[::1]:2379").unwrap(),
            ("::1".to_owned(), 2379)
        );
        assert_eq!(bracketed("::1"), "[::1]");
        assert!(host_port("https://127.0.0.1").is_err());
    }
}
