//! The production [`MetaStore`] backend: a real etcd cluster via etcd-client.
//!
//! A thin translation layer: etcd already has exactly the semantics of the
//! trait. Keys must be UTF-8 (every key this project writes is).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client as etcd;
use futures::StreamExt;

use super::etcd_reload::{self, TlsPem};
use super::{
    CmpOp, Compare, CompareTarget, Error, EtcdTls, KeyValue, LeaseId, MetaStore, RangeResponse,
    Result, Revision, TxnOp, TxnResponse, WatchEvent, WatchStream,
};

/// How often the etcd TLS files are read again ([`super::etcd_reload`]).
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A [`MetaStore`] on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    /// The client in use: replaced when rotated TLS files are taken.
    client: Arc<RwLock<etcd::Client>>,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port`, or
    /// `https://host:port` with `tls`). The TLS files are read again every
    /// [`TLS_RELOAD_INTERVAL`], so a rotated client certificate is used
    /// without a restart.
    pub async fn connect(endpoints: &[String], tls: Option<&EtcdTls>) -> Result<EtcdStore> {
        EtcdStore::connect_reloading(endpoints, tls, TLS_RELOAD_INTERVAL).await
    }

    /// [`EtcdStore::connect`], reading the TLS files every `interval`.
    pub async fn connect_reloading(
        endpoints: &[String],
        tls: Option<&EtcdTls>,
        interval: Duration,
    ) -> Result<EtcdStore> {
        let options = etcd::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let pem = tls.map(TlsPem::read).transpose()?;
        let with_tls = match &pem {
            Some(pem) => options.clone().with_tls(pem.options()),
            None => options.clone(),
        };
        let client = etcd::Client::connect(endpoints, Some(with_tls))
            .await
            .map_err(|err| {
                Error::Unavailable(format!("connect to etcd at {}: {err}", endpoints.join(",")))
            })?;
        let client = Arc::new(RwLock::new(client));
        if let (Some(tls), Some(pem)) = (tls, pem) {
            etcd_reload::watch_files(
                Arc::downgrade(&client),
                endpoints.to_vec(),
                options,
                tls.clone(),
                pem,
                interval,
            );
        }
        Ok(EtcdStore {
            client,
            endpoints: endpoints.to_vec(),
        })
    }

    /// The client in use.
    fn client(&self) -> etcd::Client {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Keys read per request of a prefix read: one gRPC answer stays far
/// below the client's 4 MiB message limit, which a prefix of some 20 000
/// owner keys, or a log's 10 000 segments, would pass in one answer.
const RANGE_PAGE: i64 = 500;
/// Prefix reads tried while their snapshot is compacted away under them.
const RANGE_ATTEMPTS: u32 = 3;

impl EtcdStore {
    /// Every key under `prefix`, in key order, in pages of [`RANGE_PAGE`]
    /// read at the first page's revision: one consistent snapshot.
    async fn range_in_pages(&self, prefix: &str) -> Result<RangeResponse> {
        let end = prefix_end(prefix.as_bytes());
        // etcd names "every key" as the range from "\0" to "\0".
        let mut from = match prefix {
            "" => vec![0],
            prefix => prefix.as_bytes().to_vec(),
        };
        let mut kvs = Vec::new();
        let mut revision = 0;
        loop {
            let mut options = etcd::GetOptions::new()
                .with_range(end.clone())
                .with_limit(RANGE_PAGE);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let response = (self.client())
                .get(from.clone(), Some(options))
                .await
                .map_err(map_err)?;
            if revision == 0 {
                // Without it the pages could not be read at one revision.
                revision = (response.header())
                    .map(|h| h.revision())
                    .filter(|&r| r > 0)
                    .ok_or_else(|| {
                        Error::Unavailable(format!(
                            "etcd answered a read of {prefix} without its revision"
                        ))
                    })?;
            }
            for kv in response.kvs() {
                kvs.push(convert_kv(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(RangeResponse { kvs, revision }),
            }
        }
    }
}

/// Whether etcd refused a read because its revision was compacted away
/// (status OUT_OF_RANGE, "etcdserver: mvcc: required revision has been
/// compacted").
fn is_compacted(err: &Error) -> bool {
    matches!(err, Error::Etcd(etcd::Error::GRpcStatus(status))
        if status.code() == tonic::Code::OutOfRange && status.message().contains("compacted"))
}

/// The end of etcd's range for keys starting with `prefix`: the prefix
/// with its last byte below 0xff raised by one and what follows cut; "\0"
/// (to the end of the key space) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(at) => {
            let mut end = prefix[..=at].to_vec();
            end[at] += 1;
            end
        }
        None => vec![0],
    }
}

/// Maps etcd's "lease not found" (a gRPC status or a keep-alive error) to
/// [`Error::LeaseNotFound`]; callers fill in the lease id.
fn map_err(err: etcd::Error) -> Error {
    match &err {
        etcd::Error::GRpcStatus(status) if status.message().contains("lease not found") => {
            Error::LeaseNotFound(0)
        }
        etcd::Error::LeaseKeepAliveError(message) if message.contains("lease not found") => {
            Error::LeaseNotFound(0)
        }
        _ => Error::Etcd(err),
    }
}

/// [`map_err`] for calls about one lease.
fn map_lease_err(lease: LeaseId) -> impl FnOnce(etcd::Error) -> Error {
    move |err| match map_err(err) {
        Error::LeaseNotFound(_) => Error::LeaseNotFound(lease),
        other => other,
    }
}

fn convert_kv(kv: &etcd::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(kv.key())
        .map_err(|_| Error::KeyNotUtf8(kv.key().to_vec()))?
        .to_owned();
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn convert_compare(compare: Compare) -> etcd::Compare {
    let op = match compare.op {
        CmpOp::Equal => etcd::CompareOp::Equal,
        CmpOp::NotEqual => etcd::CompareOp::NotEqual,
        CmpOp::Greater => etcd::CompareOp::Greater,
        CmpOp::Less => etcd::CompareOp::Less,
    };
    match compare.target {
        CompareTarget::Value(value) => etcd::Compare::value(compare.key, op, value.to_vec()),
        CompareTarget::Version(v) => etcd::Compare::version(compare.key, op, v),
        CompareTarget::ModRevision(r) => etcd::Compare::mod_revision(compare.key, op, r),
        CompareTarget::CreateRevision(r) => etcd::Compare::create_revision(compare.key, op, r),
    }
}

fn convert_op(op: TxnOp) -> etcd::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => etcd::TxnOp::put(
            key,
            value.to_vec(),
            lease.map(|l| etcd::PutOptions::new().with_lease(l)),
        ),
        TxnOp::Delete { key } => etcd::TxnOp::delete(key, None),
        TxnOp::DeletePrefix { prefix } => {
            etcd::TxnOp::delete(prefix, Some(etcd::DeleteOptions::new().with_prefix()))
        }
        TxnOp::Get { key } => etcd::TxnOp::get(key, None),
    }
}

#[async_trait]
impl MetaStore for EtcdStore {
    async fn range(&self, key: &str, prefix: bool) -> Result<RangeResponse> {
        if !prefix {
            let response = self.client().get(key, None).await.map_err(map_err)?;
            let revision = response.header().map_or(0, |h| h.revision());
            let kvs = response
                .kvs()
                .iter()
                .map(convert_kv)
                .collect::<Result<Vec<_>>>()?;
            return Ok(RangeResponse { kvs, revision });
        }
        // The snapshot was compacted away between two pages of a long read:
        // read it all again (other errors are the caller's to retry).
        let mut attempt = 1;
        loop {
            match self.range_in_pages(key).await {
                Err(err) if attempt < RANGE_ATTEMPTS && is_compacted(&err) => {
                    tracing::debug!(key, attempt, "reading a prefix again: {err:#}");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn txn(&self, txn: super::Txn) -> Result<TxnResponse> {
        let has_lease_put = txn
            .success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                TxnOp::Put { lease: Some(l), .. } => Some(*l),
                _ => None,
            });
        let request = etcd::Txn::new()
            .when(
                txn.compares
                    .into_iter()
                    .map(convert_compare)
                    .collect::<Vec<_>>(),
            )
            .and_then(txn.success.into_iter().map(convert_op).collect::<Vec<_>>())
            .or_else(txn.failure.into_iter().map(convert_op).collect::<Vec<_>>());
        let response = self
            .client()
            .txn(request)
            .await
            .map_err(|err| match has_lease_put {
                Some(lease) => map_lease_err(lease)(err),
                None => map_err(err),
            })?;
        let mut gets = Vec::new();
        for op in response.op_responses() {
            if let etcd::TxnOpResponse::Get(get) = op {
                gets.push(get.kvs().first().map(convert_kv).transpose()?);
            }
        }
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            revision: response.header().map_or(0, |h| h.revision()),
            gets,
        })
    }

    async fn watch(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream> {
        let mut options = etcd::WatchOptions::new().with_prefix();
        if let Some(revision) = start_revision {
            options = options.with_start_revision(revision);
        }
        let mut stream = self
            .client()
            .watch(prefix, Some(options))
            .await
            .map_err(map_err)?;
        // The first message confirms creation, or refuses a compacted start.
        let first = stream.message().await.map_err(map_err)?;
        let mut pending = Vec::new();
        if let Some(response) = first {
            if response.canceled() {
                return Err(Error::Compacted {
                    requested: start_revision.unwrap_or(0),
                    compacted: response.compact_revision(),
                });
            }
            pending = convert_events(&response)?;
        }
        let events = futures::stream::unfold(
            (stream, pending.into_iter(), false),
            |(mut stream, mut pending, done)| async move {
                loop {
                    if done {
                        return None;
                    }
                    if let Some(event) = pending.next() {
                        return Some((Ok(event), (stream, pending, false)));
                    }
                    match stream.message().await {
                        Ok(Some(response)) if response.canceled() => {
                            let err = Error::Compacted {
                                requested: 0,
                                compacted: response.compact_revision(),
                            };
                            return Some((Err(err), (stream, pending, true)));
                        }
                        Ok(Some(response)) => match convert_events(&response) {
                            Ok(events) => pending = events.into_iter(),
                            Err(err) => return Some((Err(err), (stream, pending, true))),
                        },
                        Ok(None) => {
                            let err = Error::Unavailable("etcd closed the watch".into());
                            return Some((Err(err), (stream, pending, true)));
                        }
                        Err(err) => return Some((Err(map_err(err)), (stream, pending, true))),
                    }
                }
            },
        );
        Ok(events.boxed())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let response = self
            .client()
            .lease_grant(secs, None)
            .await
            .map_err(map_err)?;
        Ok(response.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let (mut keeper, mut responses) = self
            .client()
            .lease_keep_alive(lease)
            .await
            .map_err(map_lease_err(lease))?;
        keeper.keep_alive().await.map_err(map_lease_err(lease))?;
        match responses.message().await.map_err(map_lease_err(lease))? {
            Some(response) if response.ttl() > 0 => {
                Ok(Duration::from_secs(response.ttl().unsigned_abs()))
            }
            _ => Err(Error::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.client()
            .lease_revoke(lease)
            .await
            .map_err(map_lease_err(lease))?;
        Ok(())
    }
}

fn convert_events(response: &etcd::WatchResponse) -> Result<Vec<WatchEvent>> {
    response
        .events()
        .iter()
        .filter_map(|event| event.kv().map(|kv| (event.event_type(), kv)))
        .map(|(kind, kv)| {
            let kv = convert_kv(kv)?;
            Ok(match kind {
                etcd::EventType::Put => WatchEvent::Put(kv),
                etcd::EventType::Delete => WatchEvent::Delete {
                    key: kv.key,
                    revision: kv.mod_revision,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_etcd_ends_it() {
        assert_eq!(prefix_end(b"/dlog/a/"), b"/dlog/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    /// Only etcd's "compacted" refusal starts a prefix read again.
    #[test]
    fn only_a_compacted_revision_reads_a_prefix_again() {
        let status = |code, message: &str| {
            Error::Etcd(etcd::Error::GRpcStatus(tonic::Status::new(code, message)))
        };
        let compacted = "etcdserver: mvcc: required revision has been compacted";
        assert!(is_compacted(&status(tonic::Code::OutOfRange, compacted)));
        assert!(!is_compacted(&status(tonic::Code::Unavailable, compacted)));
        let future = "etcdserver: mvcc: required revision is a future revision";
        assert!(!is_compacted(&status(tonic::Code::OutOfRange, future)));
        assert!(!is_compacted(&Error::Unavailable(compacted.into())));
    }
}
