//! Rotation of the etcd client's TLS files without a restart.
//!
//! etcd-client builds its TLS once, from the files read at start, so a
//! re-issued client certificate would reach a node's etcd connections
//! only after a restart, and a reconnection after the old one expired
//! would fail. [`watch_files`] reads the CA, certificate and key every
//! interval. A changed set that reads the same twice in a row (a rotation
//! caught between two renames is not taken) gets a new client, which must
//! answer a read before it replaces the one in use: a set etcd refuses
//! (a CA it does not trust, a certificate not yet valid) is logged and
//! left, and the working client stays. Calls made after the swap use the
//! new client (its own balanced connections to every member); streams
//! already open (watches) go on over the old connections until they end,
//! and are re-opened on the new client.
//!
//! Crash safety: nothing is written; files are only read.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use etcd_client as etcd;

use super::{Error, EtcdTls, Result};

/// The bytes of the three files, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsPem {
    ca: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsPem {
    /// Reads the files named by `tls`.
    pub(crate) fn read(tls: &EtcdTls) -> Result<TlsPem> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|err| {
                Error::Unavailable(format!("read etcd TLS file {}: {err}", path.display()))
            })
        };
        let identity = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(Error::Unavailable(
                    "etcd TLS: give both the client certificate and its key, or neither".to_owned(),
                ));
            }
        };
        Ok(TlsPem {
            ca: read(&tls.ca)?,
            identity,
        })
    }

    /// etcd-client's TLS options for this set.
    pub(crate) fn options(&self) -> etcd::TlsOptions {
        let mut options =
            etcd::TlsOptions::new().ca_certificate(etcd::Certificate::from_pem(&self.ca));
        if let Some((cert, key)) = &self.identity {
            options = options.identity(etcd::Identity::from_pem(cert, key));
        }
        options
    }
}

/// A client with `pem` that has answered a read.
async fn checked_client(
    endpoints: &[String],
    options: etcd::ConnectOptions,
    pem: &TlsPem,
) -> std::result::Result<etcd::Client, String> {
    let mut client = etcd::Client::connect(endpoints, Some(options.with_tls(pem.options())))
        .await
        .map_err(|err| err.to_string())?;
    // Any key: the read proves that etcd took the certificate (in TLS 1.3 a
    // refused client certificate shows only at the first request).
    client
        .get(
            "/",
            Some(etcd::GetOptions::new().with_keys_only().with_limit(1)),
        )
        .await
        .map_err(|err| err.to_string())?;
    Ok(client)
}

/// Reads `tls` every `interval` while `slot` lives, and puts a client with
/// a changed, stable set that etcd takes in its place.
pub(crate) fn watch_files(
    slot: Weak<RwLock<etcd::Client>>,
    endpoints: Vec<String>,
    options: etcd::ConnectOptions,
    tls: EtcdTls,
    loaded: TlsPem,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut loaded = loaded;
        let mut pending: Option<TlsPem> = None;
        loop {
            tokio::time::sleep(interval).await;
            if slot.strong_count() == 0 {
                return;
            }
            let pem = match TlsPem::read(&tls) {
                Ok(pem) => pem,
                Err(err) => {
                    tracing::warn!("etcd TLS files not reloaded: {err}");
                    continue;
                }
            };
            if pem == loaded {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&pem) {
                // Seen once: maybe mid-rotation. Next time, if unchanged.
                pending = Some(pem);
                continue;
            }
            match checked_client(&endpoints, options.clone(), &pem).await {
                Ok(client) => {
                    let Some(slot) = slot.upgrade() else { return };
                    *slot.write().unwrap_or_else(|p| p.into_inner()) = client;
                    loaded = pem;
                    pending = None;
                    tracing::info!("etcd TLS files reloaded: new connections use them");
                }
                Err(err) => tracing::warn!(
                    "etcd TLS files changed, but etcd does not take the new set; keeping the one in use: {err}"
                ),
            }
        }
    });
}

/// A slot for the client in use, read by every call.
pub(crate) fn slot(client: etcd::Client) -> Arc<RwLock<etcd::Client>> {
    Arc::new(RwLock::new(client))
}
