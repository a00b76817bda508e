//! Rotation of the etcd client's TLS files without a restart.
//!
//! etcd-client builds its TLS once, from the files read at start, so a
//! re-issued client certificate would reach a node's etcd connections
//! only after a restart, and a reconnection after the old one expired
//! would fail. [`watch_files`] reads the CA, certificate and key every
//! interval. A changed set that reads the same twice in a row (a rotation
//! caught between two renames is not taken) replaces the client in use
//! only if it loses no member: each member is asked alone, with the set in
//! use and with the new one, and every member that answers the first must
//! answer the second. A set some member refuses (a CA it does not trust
//! yet, a clock behind the certificate) is logged once and left, and the
//! working client stays; it is asked again after 10 s, 20 s, ... at most 5
//! minutes. When the set in use reaches no member any more (expired), a new
//! set that reaches any member is taken.
//!
//! Calls made after a swap use the new client (its own balanced
//! connections to every member). Streams already open (watches) go on over
//! the old connections until they end, and are re-opened on the new client:
//! until then they keep the old certificate's identity.
//!
//! Crash safety: nothing is written; files are only read.

use std::sync::{RwLock, Weak};
use std::time::Duration;

use etcd_client as etcd;

use super::{Error, EtcdTls, Result};
use crate::tls::Settling;

/// The shortest interval between two reads of the files.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// How long one member may take to answer a probe, handshake included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The TLS handshake's own limit.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait before a refused set is asked again.
const MAX_RETRY: Duration = Duration::from_secs(300);

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
        let mut options = etcd::TlsOptions::new()
            .ca_certificate(etcd::Certificate::from_pem(&self.ca))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some((cert, key)) = &self.identity {
            options = options.identity(etcd::Identity::from_pem(cert, key));
        }
        options
    }
}

/// Whether `endpoint` alone answers a read with `pem`: a serializable read,
/// which that member answers itself.
async fn answers(endpoint: &str, options: &etcd::ConnectOptions, pem: &TlsPem) -> bool {
    let probe = async {
        let options = options.clone().with_tls(pem.options());
        let mut client = etcd::Client::connect([endpoint], Some(options)).await?;
        let read = etcd::GetOptions::new()
            .with_serializable()
            .with_keys_only()
            .with_limit(1);
        client.get("/", Some(read)).await
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, probe).await, Ok(Ok(_)))
}

/// Whether `new` may replace `current`: it reaches every member `current`
/// reaches, and at least one. `Err` names the members it would lose.
async fn may_replace(
    endpoints: &[String],
    options: &etcd::ConnectOptions,
    current: &TlsPem,
    new: &TlsPem,
) -> std::result::Result<(), String> {
    let mut lost = Vec::new();
    let mut reached = 0;
    for endpoint in endpoints {
        if answers(endpoint, options, new).await {
            reached += 1;
        } else if answers(endpoint, options, current).await {
            lost.push(endpoint.as_str());
        }
    }
    match (lost.is_empty(), reached) {
        (true, 0) => Err("no member answers with it".to_owned()),
        (true, _) => Ok(()),
        (false, _) => Err(format!(
            "{} answer with the set in use but not with the new one",
            lost.join(", ")
        )),
    }
}

/// A refused set, and when to ask again.
struct Refused {
    pem: TlsPem,
    wait: Duration,
    next: tokio::time::Instant,
}

/// Reads `tls` every `interval` while `slot` lives, and puts a client with
/// a changed, stable set that loses no member in its place.
pub(crate) fn watch_files(
    slot: Weak<RwLock<etcd::Client>>,
    endpoints: Vec<String>,
    options: etcd::ConnectOptions,
    tls: EtcdTls,
    loaded: TlsPem,
    interval: Duration,
) {
    let interval = interval.max(MIN_INTERVAL);
    tokio::spawn(async move {
        let mut loaded = loaded;
        let mut pending = Settling::default();
        let mut refused: Option<Refused> = None;
        let mut unreadable = false;
        loop {
            tokio::time::sleep(interval).await;
            if slot.strong_count() == 0 {
                return;
            }
            let pem = match TlsPem::read(&tls) {
                Ok(pem) => {
                    unreadable = false;
                    pem
                }
                Err(err) => {
                    if !std::mem::replace(&mut unreadable, true) {
                        tracing::warn!("etcd TLS files not reloaded: {err}");
                    }
                    continue;
                }
            };
            if pem == loaded {
                refused = None;
            }
            let Some(pem) = pending.settled(pem, &loaded) else {
                continue;
            };
            let now = tokio::time::Instant::now();
            if refused
                .as_ref()
                .is_some_and(|r| r.pem == pem && now < r.next)
            {
                continue;
            }
            match may_replace(&endpoints, &options, &loaded, &pem).await {
                Ok(()) => {
                    let with_tls = options.clone().with_tls(pem.options());
                    let client = match etcd::Client::connect(&endpoints, Some(with_tls)).await {
                        Ok(client) => client,
                        Err(err) => {
                            tracing::warn!("etcd TLS files: no client with the new set: {err}");
                            continue;
                        }
                    };
                    let Some(slot) = slot.upgrade() else { return };
                    *slot.write().unwrap_or_else(|p| p.into_inner()) = client;
                    loaded = pem;
                    refused = None;
                    tracing::info!("etcd TLS files reloaded: new calls use them");
                }
                Err(why) => {
                    let wait = match &refused {
                        Some(r) if r.pem == pem => (r.wait * 2).min(MAX_RETRY),
                        _ => {
                            tracing::warn!(
                                "etcd TLS files changed, but the new set is not taken, the one in use stays: {why}"
                            );
                            (interval * 5).min(Duration::from_secs(10)).max(interval)
                        }
                    };
                    refused = Some(Refused {
                        pem,
                        wait,
                        next: now + wait,
                    });
                }
            }
        }
    });
}
