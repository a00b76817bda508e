//! Cache node connections of an ingest node and the choice of ensembles
//! among the live ones (by the rules of [`crate::placement`]).

use std::ops::Deref;

use dlog_meta::cache_clients::{self, CacheClients};
use dlog_meta::manifest::Manifest;

use crate::error::{Error, Result};
use crate::links::{Attachment, ReplicaLinks, SegmentKey};
use crate::placement::{self, Placement};
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

    /// Live nodes outside `ensemble`, to replace the members not in
    /// `kept`: those in a zone no kept member is in first, then the others,
    /// each part spread over zones and rotated by `seed` (so replacements
    /// spread over the nodes; [`placement::spread`]).
    pub async fn spare_nodes(
        &self,
        ensemble: &[String],
        kept: &[String],
        seed: u64,
    ) -> Result<Vec<String>> {
        let live = self.clients.live_nodes().await?;
        let kept_zones: Vec<String> = live
            .iter()
            .filter(|node| kept.contains(&node.id))
            .map(|node| node.zone.clone())
            .collect();
        let spares: Vec<_> = live
            .into_iter()
            .filter(|node| !ensemble.contains(&node.id))
            .collect();
        let ordered =
            placement::prefer_missing_zones(placement::spread(&spares, seed), &kept_zones);
        Ok(ordered.into_iter().map(|node| node.id).collect())
    }

    /// How many cache nodes are live now.
    pub async fn live_count(&self) -> Result<usize> {
        Ok(self.clients.live_nodes().await?.len())
    }

    /// Picks `size` live nodes (fewer if fewer are live, but never fewer
    /// than `ack_quorum`) over as many zones as are live, spreading logs
    /// over nodes by `seed` ([`placement::place`]); the placement says
    /// which rules gave way.
    pub async fn choose_ensemble(
        &self,
        size: usize,
        ack_quorum: usize,
        seed: u64,
    ) -> Result<Placement> {
        let live = self.clients.live_nodes().await?;
        if live.len() < ack_quorum.max(1) {
            return Err(Error::NoCacheNodes {
                live: live.len(),
                needed: ack_quorum.max(1),
            });
        }
        Ok(placement::place(&live, size, seed))
    }
}
