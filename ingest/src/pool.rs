//! Connections to cache nodes, and the choice of ensembles among the live
//! ones (registered in the manifest, minus those that failed us recently).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dlog_infra::manifest::{Manifest, NodeInfo, Role};
use dlog_infra::proto::cache_service_client::CacheServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long a cache node that failed is left out of new ensembles.
const SUSPECT_FOR: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of one cache node.
pub type CacheClient = CacheServiceClient<Channel>;

/// Cache node connections of one ingest node.
#[derive(Debug)]
pub struct CachePool {
    manifest: Manifest,
    clients: Mutex<HashMap<String, (String, CacheClient)>>,
    suspects: Mutex<HashMap<String, Instant>>,
}

impl CachePool {
    pub fn new(manifest: Manifest) -> CachePool {
        CachePool {
            manifest,
            clients: Mutex::default(),
            suspects: Mutex::default(),
        }
    }

    /// Registered cache nodes that have not failed us lately.
    pub async fn live_nodes(&self) -> Result<Vec<NodeInfo>> {
        let nodes = self.manifest.nodes(Role::Cache).await?;
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        suspects.retain(|_, since| since.elapsed() < SUSPECT_FOR);
        Ok(nodes
            .into_iter()
            .filter(|node| !suspects.contains_key(&node.id))
            .collect())
    }

    /// Leaves a node out of new ensembles for a while.
    pub fn suspect(&self, node_id: &str) {
        tracing::warn!(
            node = node_id,
            "cache node failed; leaving it out of new ensembles"
        );
        self.suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_owned(), Instant::now());
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node_id);
    }

    /// Picks `size` live nodes (fewer if fewer live, but never fewer than
    /// `ack_quorum`), spreading logs over nodes by `seed`.
    pub async fn choose_ensemble(
        &self,
        size: usize,
        ack_quorum: usize,
        seed: u64,
    ) -> Result<Vec<NodeInfo>> {
        let mut live = self.live_nodes().await?;
        if live.len() < ack_quorum.max(1) {
            return Err(Error::NoCacheNodes {
                live: live.len(),
                needed: ack_quorum.max(1),
            });
        }
        let rotate = (seed % live.len() as u64) as usize;
        live.rotate_left(rotate);
        live.truncate(size.max(1));
        Ok(live)
    }

    /// A client of a cache node, by id.
    pub async fn client(&self, node_id: &str) -> Result<CacheClient> {
        if let Some((_, client)) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node_id)
        {
            return Ok(client.clone());
        }
        let nodes = self.manifest.nodes(Role::Cache).await?;
        let node = nodes
            .into_iter()
            .find(|n| n.id == node_id)
            .ok_or_else(|| Error::Cache {
                node: node_id.to_owned(),
                status: tonic::Status::unavailable("not registered (down?)"),
            })?;
        let endpoint = Endpoint::from_shared(node.address.clone())
            .map_err(|err| Error::Cache {
                node: node_id.to_owned(),
                status: tonic::Status::invalid_argument(format!(
                    "bad address {}: {err}",
                    node.address
                )),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|err| Error::Cache {
            node: node_id.to_owned(),
            status: tonic::Status::unavailable(format!("connect to {}: {err}", node.address)),
        })?;
        let client = CacheServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_owned(), (node.address, client.clone()));
        Ok(client)
    }
}
