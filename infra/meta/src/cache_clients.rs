//! Connections to cache nodes by node id, for every component that talks to
//! them (ingest owners, recovery, compactors, readers). Addresses come from
//! the nodes' registrations in the manifest; nodes that failed recently can
//! be marked suspect and are then left out of [`CacheClients::live_nodes`].
//!
//! A suspect is usable again as soon as it is known to be back: it
//! registered again (a restarted node has a new lease), or it answers a
//! probe. Only a node that does neither stays out for [`SUSPECT_FOR`].
//!
//! How a node is reached is a [`Connector`]: gRPC over the network in
//! production ([`GrpcConnector`]); the deterministic simulation (crate
//! `dlog-sim`) routes calls to in-process cache servers through its own.
//! Times are tokio's, so they follow the simulation's paused clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;
use tonic::transport::Endpoint;

use crate::manifest::{self, Manifest, NodeInfo, Role};
use crate::metastore::LeaseId;
use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::proto::cache_service_client::CacheServiceClient;
use dlog_wire::proto::{ReadEntriesRequest, SegmentRef};

/// Longest a cache node that failed is left out of `live_nodes` while it
/// neither registers again nor answers a probe.
pub const SUSPECT_FOR: Duration = Duration::from_secs(30);
/// A suspect is probed at most this often (and not sooner after it failed).
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 ping period on cache node connections, and how long a ping may
/// go unanswered before the connection is dropped.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A client of one cache node.
pub type CacheClient = CacheServiceClient<Transport>;

/// Every entry one `ReadEntries` call streams back, collected.
pub async fn read_all_entries(
    client: &mut CacheClient,
    request: dlog_wire::proto::ReadEntriesRequest,
) -> Result<Vec<bytes::Bytes>, tonic::Status> {
    let mut stream = client.read_entries(request).await?.into_inner();
    let mut entries = Vec::new();
    while let Some(message) = stream.message().await? {
        entries.push(message.entry);
    }
    Ok(entries)
}

use crate::tls::TlsMaterial;
pub use crate::transport::{Connector, GrpcConnector, LocalFirst, Transport};

/// A cache node could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cache node {node}: {reason}")]
    Unreachable { node: String, reason: String },
    #[error("find cache nodes")]
    Manifest(#[from] manifest::Error),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

/// A node left out of `live_nodes`.
#[derive(Debug, Clone, Copy)]
struct Suspect {
    since: Instant,
    /// The lease of the registration it failed under, if known: another
    /// lease means it restarted.
    lease: Option<LeaseId>,
    probed: Instant,
}

/// Cache node connections, shared by the tasks of one process.
#[derive(Debug)]
pub struct CacheClients {
    manifest: Manifest,
    /// Connections, with the lease of the registration they were made for.
    clients: Mutex<BTreeMap<String, (CacheClient, Option<LeaseId>)>>,
    /// Ordered, so suspects are probed in the same order every time (the
    /// simulation's runs are reproducible).
    suspects: Mutex<BTreeMap<String, Suspect>>,
    connector: Arc<dyn Connector>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl CacheClients {
    pub fn new(manifest: Manifest) -> CacheClients {
        CacheClients::with_connector(manifest, Arc::new(GrpcConnector::default()))
    }

    /// Cache node connections made by `connector`.
    pub fn with_connector(manifest: Manifest, connector: Arc<dyn Connector>) -> CacheClients {
        CacheClients {
            manifest,
            clients: Mutex::default(),
            suspects: Mutex::default(),
            connector,
        }
    }

    /// Registered cache nodes with the lease of their registration.
    async fn registrations(&self) -> Result<Vec<(NodeInfo, Option<LeaseId>)>, Error> {
        let prefix = self.manifest.nodes_prefix(Role::Cache);
        let range = self
            .manifest
            .store()
            .range(&prefix, true)
            .await
            .map_err(manifest::Error::from)?;
        range
            .kvs
            .into_iter()
            .map(|kv| {
                let node =
                    serde_json::from_slice(&kv.value).map_err(|err| manifest::Error::Corrupt {
                        key: kv.key.clone(),
                        reason: err.to_string(),
                    })?;
                Ok((node, kv.lease))
            })
            .collect()
    }

    /// Registered cache nodes, except suspects that are not back yet.
    pub async fn live_nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        let nodes = self.registrations().await?;
        let mut to_probe = Vec::new();
        {
            let mut suspects = locked(&self.suspects);
            suspects.retain(|id, suspect| {
                let Some((node, lease)) = nodes.iter().find(|(n, _)| n.id == *id) else {
                    return suspect.since.elapsed() < SUSPECT_FOR;
                };
                let restarted = suspect.lease.is_some() && *lease != suspect.lease;
                if restarted {
                    tracing::info!(node = %id, "cache node registered again; using it");
                    return false;
                }
                if suspect.since.elapsed() >= SUSPECT_FOR {
                    return false;
                }
                if suspect.probed.elapsed() >= PROBE_EVERY {
                    suspect.probed = Instant::now();
                    to_probe.push(node.clone());
                }
                true
            });
        }
        let answered =
            futures::future::join_all(to_probe.into_iter().map(|node| async move {
                probe(&*self.connector, &node).await.then_some(node.id)
            }))
            .await;
        let mut suspects = locked(&self.suspects);
        for id in answered.into_iter().flatten() {
            tracing::info!(node = %id, "cache node answers again; using it");
            suspects.remove(&id);
        }
        Ok(nodes
            .into_iter()
            .map(|(node, _)| node)
            .filter(|node| !suspects.contains_key(&node.id))
            .collect())
    }

    /// Leaves a node out of `live_nodes` until it is back (or for
    /// [`SUSPECT_FOR`]) and drops its connection.
    pub fn suspect(&self, node_id: &str) {
        tracing::warn!(node = node_id, "cache node failed; treating it as suspect");
        let lease = locked(&self.clients)
            .remove(node_id)
            .and_then(|(_, lease)| lease);
        let now = Instant::now();
        locked(&self.suspects).insert(
            node_id.to_owned(),
            Suspect {
                since: now,
                lease,
                probed: now,
            },
        );
    }

    /// A client of a cache node, by id.
    pub async fn client(&self, node_id: &str) -> Result<CacheClient, Error> {
        if let Some((client, _)) = locked(&self.clients).get(node_id) {
            return Ok(client.clone());
        }
        let unreachable = |reason: String| Error::Unreachable {
            node: node_id.to_owned(),
            reason,
        };
        let (node, lease) = self
            .registrations()
            .await?
            .into_iter()
            .find(|(n, _)| n.id == node_id)
            .ok_or_else(|| unreachable("not registered (down?)".into()))?;
        let client = connect(&*self.connector, &node, CONNECT_TIMEOUT)
            .await
            .map_err(|err| unreachable(format!("connect to {}: {err}", node.address)))?;
        locked(&self.clients).insert(node_id.to_owned(), (client.clone(), lease));
        Ok(client)
    }
}

async fn connect(
    connector: &dyn Connector,
    node: &NodeInfo,
    timeout: Duration,
) -> Result<CacheClient, String> {
    let transport = connector.connect(node, timeout).await?;
    Ok(CacheServiceClient::new(transport)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

/// Connects over the network (HTTP/2), with keepalive pings; over TLS,
/// with the node's current certificate, when `tls` is given. A node with
/// TLS does not fall back to a plaintext peer, nor one without TLS try a
/// TLS peer.
pub(crate) fn grpc_connect(
    node: &NodeInfo,
    timeout: Duration,
    tls: Option<Arc<TlsMaterial>>,
) -> BoxFuture<'static, Result<Transport, String>> {
    let secure = node.address.starts_with("https://");
    let endpoint = match (secure, &tls) {
        (true, None) => Err(format!(
            "cache node {} is at {}, a TLS address, and this node has no TLS settings (tls.cert, tls.key, tls.ca)",
            node.id, node.address
        )),
        (false, Some(_)) => Err(format!(
            "cache node {} is at {}, a plaintext address, and this node talks TLS only",
            node.id, node.address
        )),
        // With TLS, tonic sees `http://` and our connector does the TLS
        // (TlsMaterial::dial), with the certificate current at each dial.
        _ => Endpoint::from_shared(node.address.replacen("https://", "http://", 1))
            .map_err(|err| format!("bad address {}: {err}", node.address)),
    };
    let endpoint = endpoint.map(|endpoint| {
        endpoint
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            // A peer that stops answering (frozen, partitioned) is found by
            // HTTP/2 pings and its connection closed, failing every request on
            // it, even on a connection that looks idle.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_connection_window_size(dlog_wire::http2::CONNECTION_WINDOW)
            .initial_stream_window_size(dlog_wire::http2::STREAM_WINDOW)
    });
    Box::pin(async move {
        let endpoint = endpoint?;
        let channel = match tls {
            Some(tls) => {
                let dial = tower::service_fn(move |uri: http::Uri| {
                    let tls = tls.clone();
                    async move { tls.dial(uri).await }
                });
                endpoint.connect_with_connector(dial).await
            }
            None => endpoint.connect().await,
        };
        Ok(Transport::Grpc(channel.map_err(|err| err.to_string())?))
    })
}

/// Whether a node answers at all: a read of a segment no log has (log id
/// 0 is never handed out) must come back as `NOT_FOUND` from a live node.
async fn probe(connector: &dyn Connector, node: &NodeInfo) -> bool {
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut client = connect(connector, node, PROBE_TIMEOUT).await.ok()?;
        let request = ReadEntriesRequest {
            segment: Some(SegmentRef {
                log: String::new(),
                log_id: 0,
                segment_id: 0,
            }),
            from_entry: 0,
            max_entries: 1,
            fence_epoch: None,
            sealed_last_entry: None,
        };
        Some(client.read_entries(request).await.err().map(|s| s.code()))
    })
    .await;
    matches!(answer, Ok(Some(Some(tonic::Code::NotFound))))
}
