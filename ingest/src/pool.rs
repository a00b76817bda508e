//! Cache node connections of an ingest node and the choice of ensembles
//! among the live ones.

use std::ops::Deref;

use dlog_meta::cache_clients::{self, CacheClients};
use dlog_meta::manifest::{Manifest, NodeInfo};

use crate::error::{Error, Result};
use crate::links::{Attachment, ReplicaLinks, SegmentKey};
use crate::replicas::EventSender;

pub use dlog_meta::cache_clients::CacheClient;

/// Cache node connections of one ingest node.
#[derive(Debug)]
pub struct CachePool {
    clients: CacheClients,
    /// The replication stream to each cache node.
    links: ReplicaLinks,
}

impl Deref for CachePool {
    type Target = CacheClients;

    fn deref(&self) -> &CacheClients {
        &self.clients
    }
}

impl From<cache_clients::Error> for Error {
    fn from(err: cache_clients::Error) -> Error {
        match err {
            cache_clients::Error::Unreachable { node, reason } => Error::Cache {
                node,
                status: tonic::Status::unavailable(reason),
            },
            cache_clients::Error::Manifest(err) => Error::Manifest(err),
        }
    }
}

impl CachePool {
    pub fn new(manifest: Manifest) -> CachePool {
        CachePool {
            clients: CacheClients::new(manifest),
            links: ReplicaLinks::default(),
        }
    }

    /// Connections made by `connector` (the simulation's in-process one).
    pub fn with_connector(
        manifest: Manifest,
        connector: std::sync::Arc<dyn cache_clients::Connector>,
    ) -> CachePool {
        CachePool {
            clients: CacheClients::with_connector(manifest, connector),
            links: ReplicaLinks::default(),
        }
    }

    /// A client of a cache node, by id.
    pub async fn client(&self, node_id: &str) -> Result<CacheClient> {
        Ok(self.clients.client(node_id).await?)
    }

    /// Attaches replica `replica` of segment `key` to the replication
    /// stream to `node` ([`crate::links`]); its answers go to `events`.
    pub async fn attach(
        &self,
        node: &str,
        key: SegmentKey,
        replica: usize,
        events: EventSender,
    ) -> Result<Attachment> {
        self.links
            .attach(node, key, replica, events, self.client(node))
            .await
    }

    /// Live nodes outside `ensemble`, the cluster's list rotated by `seed`
    /// (so that replacements spread over the nodes).
    pub async fn spare_nodes(&self, ensemble: &[String], seed: u64) -> Result<Vec<String>> {
        let mut spares: Vec<String> = self
            .clients
            .live_nodes()
            .await?
            .into_iter()
            .map(|node| node.id)
            .filter(|id| !ensemble.contains(id))
            .collect();
        if !spares.is_empty() {
            let rotate = (seed % spares.len() as u64) as usize;
            spares.rotate_left(rotate);
        }
        Ok(spares)
    }

    /// How many cache nodes are live now.
    pub async fn live_count(&self) -> Result<usize> {
        Ok(self.clients.live_nodes().await?.len())
    }

    /// Picks `size` live nodes (fewer if fewer are live, but never fewer
    /// than `ack_quorum`), spreading logs over nodes by `seed`.
    pub async fn choose_ensemble(
        &self,
        size: usize,
        ack_quorum: usize,
        seed: u64,
    ) -> Result<Vec<NodeInfo>> {
        let mut live = self.clients.live_nodes().await?;
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
}
