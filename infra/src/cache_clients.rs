//! Connections to cache nodes by node id, for every component that talks to
//! them (ingest owners, recovery, compactors, readers). Addresses come from
//! the nodes' registrations in the manifest; nodes that failed recently can
//! be marked suspect and are then left out of [`CacheClients::live_nodes`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::error::{Classify, ErrorKind};
use crate::manifest::{self, Manifest, NodeInfo, Role};
use crate::proto::cache_service_client::CacheServiceClient;

/// How long a cache node that failed is left out of `live_nodes`.
const SUSPECT_FOR: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 ping period on cache node connections, and how long a ping may
/// go unanswered before the connection is dropped.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A client of one cache node.
pub type CacheClient = CacheServiceClient<Channel>;

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

/// Cache node connections, shared by the tasks of one process.
#[derive(Debug)]
pub struct CacheClients {
    manifest: Manifest,
    clients: Mutex<HashMap<String, CacheClient>>,
    suspects: Mutex<HashMap<String, Instant>>,
}

impl CacheClients {
    pub fn new(manifest: Manifest) -> CacheClients {
        CacheClients {
            manifest,
            clients: Mutex::default(),
            suspects: Mutex::default(),
        }
    }

    /// Registered cache nodes that were not marked suspect lately.
    pub async fn live_nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        let nodes = self.manifest.nodes(Role::Cache).await?;
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        suspects.retain(|_, since| since.elapsed() < SUSPECT_FOR);
        Ok(nodes
            .into_iter()
            .filter(|node| !suspects.contains_key(&node.id))
            .collect())
    }

    /// Leaves a node out of `live_nodes` for a while and drops its connection.
    pub fn suspect(&self, node_id: &str) {
        tracing::warn!(node = node_id, "cache node failed; treating it as suspect");
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_owned(), Instant::now());
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node_id);
    }

    /// A client of a cache node, by id.
    pub async fn client(&self, node_id: &str) -> Result<CacheClient, Error> {
        if let Some(client) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node_id)
        {
            return Ok(client.clone());
        }
        let unreachable = |reason: String| Error::Unreachable {
            node: node_id.to_owned(),
            reason,
        };
        let nodes = self.manifest.nodes(Role::Cache).await?;
        let node = nodes
            .into_iter()
            .find(|n| n.id == node_id)
            .ok_or_else(|| unreachable("not registered (down?)".into()))?;
        let endpoint = Endpoint::from_shared(node.address.clone())
            .map_err(|err| unreachable(format!("bad address {}: {err}", node.address)))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // A peer that stops answering (frozen, partitioned) is found
            // by HTTP/2 pings and its connection closed, failing every
            // request on it, even on a connection that looks idle.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|err| unreachable(format!("connect to {}: {err}", node.address)))?;
        let client = CacheServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_owned(), client.clone());
        Ok(client)
    }
}
