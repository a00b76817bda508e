//! The `MetaStore`: a key-value store with etcd semantics, and its backends.
//!
//! Everything the cluster agrees on (logs, epochs, segments, owners, nodes)
//! lives in a `MetaStore` (see [`crate::manifest`] for the keys). The trait
//! is etcd's model, kept small:
//!
//! * every change bumps one global **revision**; a key remembers the
//!   revision that created it, the one that last changed it, and a version
//!   (number of puts since creation, 0 = absent);
//! * a [`Txn`] applies its `success` ops if every [`Compare`] holds, its
//!   `failure` ops otherwise, atomically, at one revision;
//! * a **watch** streams every change under a prefix from a revision on, so a
//!   reader can list at revision R and watch from R + 1 without a gap;
//! * a **lease** deletes its keys when it is not kept alive within its TTL.
//!
//! Backends: [`etcd::EtcdStore`] (production) and [`embedded::EmbeddedStore`]
//! (one process, persisted in a local directory; standalone mode and unit
//! tests). Both pass the same conformance suite (`infra/tests/metastore.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use dlog_wire::error::{Classify, ErrorKind};

pub mod embedded;
pub mod etcd;
mod etcd_reload;

/// Global revision of the store.
pub type Revision = i64;
/// Lease id.
pub type LeaseId = i64;

/// A stored key and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// Puts since the key was created; 0 would mean absent.
    pub version: i64,
    pub lease: Option<LeaseId>,
}

/// How a [`Compare`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

impl CmpOp {
    fn holds<T: Ord>(self, actual: T, expected: T) -> bool {
        match self {
            CmpOp::Equal => actual == expected,
            CmpOp::NotEqual => actual != expected,
            CmpOp::Greater => actual > expected,
            CmpOp::Less => actual < expected,
        }
    }
}

/// What of a key a [`Compare`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value. An absent key compares as no value at all: never equal.
    Value(Bytes),
    /// 0 when the key is absent.
    Version(i64),
    /// 0 when the key is absent.
    ModRevision(Revision),
    /// 0 when the key is absent.
    CreateRevision(Revision),
}

/// A condition of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CmpOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<String>, op: CmpOp, target: CompareTarget) -> Compare {
        Compare {
            key: key.into(),
            op,
            target,
        }
    }

    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Compare {
        Compare::new(key, CmpOp::Equal, CompareTarget::Version(0))
    }

    /// The key exists with exactly this value.
    pub fn value_is(key: impl Into<String>, value: impl Into<Bytes>) -> Compare {
        Compare::new(key, CmpOp::Equal, CompareTarget::Value(value.into()))
    }

    /// The key was last changed at this revision (0: absent).
    pub fn mod_revision_is(key: impl Into<String>, revision: Revision) -> Compare {
        Compare::new(key, CmpOp::Equal, CompareTarget::ModRevision(revision))
    }

    /// Evaluates the compare against the current state of its key.
    pub fn holds(&self, current: Option<&KeyValue>) -> bool {
        match &self.target {
            CompareTarget::Value(expected) => match current {
                Some(kv) => self.op.holds(&kv.value, expected),
                None => false,
            },
            CompareTarget::Version(v) => self.op.holds(current.map_or(0, |kv| kv.version), *v),
            CompareTarget::ModRevision(r) => {
                self.op.holds(current.map_or(0, |kv| kv.mod_revision), *r)
            }
            CompareTarget::CreateRevision(r) => self
                .op
                .holds(current.map_or(0, |kv| kv.create_revision), *r),
        }
    }
}

/// An operation inside a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
    /// Reads the key as of the txn; the result lands in [`TxnResponse::gets`].
    Get {
        key: String,
    },
}

impl TxnOp {
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    pub fn put_with_lease(
        key: impl Into<String>,
        value: impl Into<Bytes>,
        lease: LeaseId,
    ) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<String>) -> TxnOp {
        TxnOp::Delete { key: key.into() }
    }

    pub fn get(key: impl Into<String>) -> TxnOp {
        TxnOp::Get { key: key.into() }
    }
}

/// An atomic compare-and-apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        self.compares.extend(compares);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.failure.extend(ops);
        self
    }
}

/// Outcome of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (the success branch ran).
    pub succeeded: bool,
    /// Store revision after the txn.
    pub revision: Revision,
    /// Results of the `Get` ops of the branch that ran, in order.
    pub gets: Vec<Option<KeyValue>>,
}

/// Keys under a prefix, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key now has this value (created or changed).
    Put(KeyValue),
    /// The key was deleted (or its lease expired) at this revision.
    Delete { key: String, revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// Events of a watch, in revision order. Ends with an error when the store
/// cannot continue it (e.g. it was compacted past the watcher).
pub type WatchStream = BoxStream<'static, Result<WatchEvent, Error>>;

/// Errors of a [`MetaStore`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("metastore unavailable: {0}")]
    Unavailable(String),
    #[error("lease {0:#x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    #[error(
        "watch from revision {requested} is no longer possible: history compacted up to {compacted}"
    )]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("key is not UTF-8: {0:?}")]
    KeyNotUtf8(Vec<u8>),
    #[error("embedded metastore {path}: {what}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded metastore {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("invalid metastore url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("etcd")]
    Etcd(#[source] etcd_client::Error),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Unavailable(_) | Error::Etcd(_) => ErrorKind::Unavailable,
            Error::LeaseNotFound(_) => ErrorKind::FailedPrecondition,
            Error::Compacted { .. } => ErrorKind::OutOfRange,
            Error::KeyNotUtf8(_) | Error::Corrupt { .. } => ErrorKind::DataLoss,
            Error::Io { .. } => ErrorKind::Unavailable,
            Error::InvalidUrl { .. } => ErrorKind::InvalidArgument,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A KV store with etcd semantics. See the module docs.
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    /// Reads one key, or every key starting with `key` when `prefix` is set,
    /// sorted by key, at one revision.
    async fn range(&self, key: &str, prefix: bool) -> Result<RangeResponse>;

    /// Applies a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Streams changes of keys under `prefix`, starting at `start_revision`
    /// (inclusive) or, when `None`, with the next change.
    async fn watch(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;

    /// Refreshes a lease; returns its TTL. `LeaseNotFound` once it expired.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration>;

    /// Revokes a lease now, deleting its keys. Revoking an unknown lease is
    /// `LeaseNotFound`.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.range(key, false).await?.kvs.into_iter().next())
    }

    /// Puts a key unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Bytes) -> Result<Revision> {
        let response = self
            .txn(Txn::new().and_then([TxnOp::put(key, value)]))
            .await?;
        Ok(response.revision)
    }

    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool> {
        let response = self
            .txn(
                Txn::new()
                    .when([Compare::new(key, CmpOp::Greater, CompareTarget::Version(0))])
                    .and_then([TxnOp::delete(key)]),
            )
            .await?;
        Ok(response.succeeded)
    }
}

/// A shared metastore handle.
pub type SharedMetaStore = Arc<dyn MetaStore>;

/// Opens a metastore from a URL: `etcd://HOST:PORT[,HOST:PORT..][/CLUSTER]`
/// or `embedded://DIR`. Returns the store and the cluster name (`default`
/// unless the etcd URL names one; embedded stores are one cluster each).
pub async fn open(url: &str) -> Result<(SharedMetaStore, String)> {
    open_with(url, None).await
}

/// TLS to etcd: the CA that signed etcd's certificate, and the client
/// certificate and key when etcd requires client certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: std::path::PathBuf,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// [`open`], over TLS to etcd when `tls` is given (an embedded store
/// ignores it).
pub async fn open_with(url: &str, tls: Option<&EtcdTls>) -> Result<(SharedMetaStore, String)> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(rest) = url.strip_prefix("etcd://") {
        let (hosts, cluster) = match rest.split_once('/') {
            Some((hosts, cluster)) if !cluster.is_empty() => (hosts, cluster),
            Some((hosts, _)) => (hosts, "default"),
            None => (rest, "default"),
        };
        dlog_wire::names::Namespace::new(cluster)
            .map_err(|_| invalid("cluster name must match [A-Za-z0-9._-]{1,128}"))?;
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| match tls {
                Some(_) => format!("https://{h}"),
                None => format!("http://{h}"),
            })
            .collect();
        if endpoints.is_empty() {
            return Err(invalid("no etcd endpoint"));
        }
        let store = etcd::EtcdStore::connect(&endpoints, tls).await?;
        Ok((Arc::new(store), cluster.to_owned()))
    } else if let Some(dir) = url.strip_prefix("embedded://") {
        if dir.is_empty() {
            return Err(invalid("no directory"));
        }
        let store = embedded::EmbeddedStore::open(dir).await?;
        Ok((Arc::new(store), "default".to_owned()))
    } else {
        Err(invalid(
            "expected etcd://HOST:PORT[,HOST:PORT..][/CLUSTER] or embedded://DIR",
        ))
    }
}

/// Keeps a lease alive in the background until cancelled or lost.
///
/// `lost` is cancelled when the lease cannot be refreshed before it expires
/// (or the store says it is gone): whoever holds things on this lease (log
/// ownership, node registration) must stop acting on them.
#[derive(Debug)]
pub struct LeaseKeeper {
    pub lease: LeaseId,
    pub lost: CancellationToken,
    stop: CancellationToken,
}

impl LeaseKeeper {
    /// Grants a lease and starts refreshing it every `ttl / 3`.
    pub async fn start(store: SharedMetaStore, ttl: Duration) -> Result<LeaseKeeper> {
        let lease = store.lease_grant(ttl).await?;
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let keeper = LeaseKeeper {
            lease,
            lost: lost.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            let period = ttl / 3;
            let mut deadline = tokio::time::Instant::now() + ttl;
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                match store.lease_keep_alive(lease).await {
                    Ok(_) => deadline = tokio::time::Instant::now() + ttl,
                    Err(Error::LeaseNotFound(_)) => {
                        tracing::warn!(lease, "lease expired");
                        lost.cancel();
                        return;
                    }
                    Err(err) if tokio::time::Instant::now() + period >= deadline => {
                        tracing::warn!(
                            lease,
                            "lease keep-alive failed, giving the lease up: {err:#}"
                        );
                        lost.cancel();
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(lease, "lease keep-alive failed, will retry: {err:#}")
                    }
                }
            }
        });
        Ok(keeper)
    }

    /// Stops refreshing (the lease then expires on its own unless revoked).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
