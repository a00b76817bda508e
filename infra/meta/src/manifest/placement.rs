//! Where logs should be owned: the live ingest nodes (`node/ingest/<id>`)
//! and the moves an operator asked for (`placement/<ns>/<log>` → the node
//! id). The preferred owner of a log is the node its placement key names
//! while that node is live, otherwise the rendezvous rule over the live
//! ingest nodes ([`dlog_wire::placement`]). The owner keys
//! (`owner/<ns>/<log>`) say who owns a log now.

use std::collections::BTreeMap;

use dlog_wire::names::LogName;
use serde::{Deserialize, Serialize};

use super::{Error, LogState, Manifest, NodeInfo, Result, Role, decode_json, encode_json};
use crate::metastore::{Compare, LeaseId, Revision, Txn, TxnOp, WatchStream};

/// A log's placement key: the node an operator moved it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Placement {
    node: String,
}

/// The live ingest nodes and the operators' moves, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct PlacementView {
    pub nodes: Vec<NodeInfo>,
    /// Logs moved by hand, to the node id.
    pub moved: BTreeMap<LogName, String>,
    pub revision: Revision,
}

impl PlacementView {
    /// The node that should own `log`: the node it was moved to while
    /// that node is live, otherwise the rendezvous rule's choice.
    pub fn preferred(&self, log: &LogName) -> Option<&NodeInfo> {
        if let Some(node) = self.moved.get(log)
            && let Some(live) = self.nodes.iter().find(|n| &n.id == node)
        {
            return Some(live);
        }
        let name = log.to_string();
        let id = dlog_wire::placement::preferred(&name, self.nodes.iter().map(|n| n.id.as_str()))?;
        self.nodes.iter().find(|n| n.id == id)
    }
}

impl Manifest {
    /// Prefix of the placement keys (logs moved by hand).
    pub fn placements_prefix(&self) -> String {
        format!("{}placement/", self.root)
    }

    pub(super) fn placement_key(&self, log: &LogName) -> String {
        format!(
            "{}{}/{}",
            self.placements_prefix(),
            log.namespace(),
            log.log()
        )
    }

    /// Moves `log` to the ingest node `node` (`None`: back to the rule).
    /// The log must exist; whether the node is live is the caller's check
    /// (a move to a node that is not live waits for it, and the rule
    /// decides meanwhile). Written on the log as read, active: a deletion
    /// that runs meanwhile (it deletes this key) is not undone by a put
    /// landing after it.
    pub async fn set_placement(&self, log: &LogName, node: Option<&str>) -> Result<()> {
        loop {
            let meta = self.log_versioned(log).await?;
            if meta.value.state != LogState::Active {
                return Err(Error::LogNotFound(log.clone()));
            }
            let key = self.placement_key(log);
            let op = match node {
                Some(node) => TxnOp::put(
                    &key,
                    encode_json(&Placement {
                        node: node.to_owned(),
                    }),
                ),
                None => TxnOp::delete(&key),
            };
            let unchanged = Compare::mod_revision_is(self.meta_key(log), meta.mod_revision);
            let response = (self.store)
                .txn(Txn::new().when([unchanged]).and_then([op]))
                .await?;
            // Otherwise the log changed meanwhile (settings, end of stream,
            // deletion): decide again on it as it is now.
            if response.succeeded {
                return Ok(());
            }
        }
    }

    /// The live ingest nodes and the moved logs. `revision` is that of
    /// the first read: watching both prefixes from after it misses no
    /// change (one between the two reads is seen twice).
    pub async fn placement_view(&self) -> Result<PlacementView> {
        let nodes = self
            .store
            .range(&self.nodes_prefix(Role::Ingest), true)
            .await?;
        let placements = self.store.range(&self.placements_prefix(), true).await?;
        let revision = nodes.revision;
        let (nodes, placements) = (nodes.kvs, placements.kvs);
        let nodes = nodes
            .iter()
            .map(decode_json)
            .collect::<Result<Vec<NodeInfo>>>()?;
        let prefix = self.placements_prefix();
        let mut moved = BTreeMap::new();
        for kv in &placements {
            let Some((ns, log)) = kv.key.strip_prefix(&prefix).and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let (Ok(log), Ok(placement)) = (LogName::new(ns, log), decode_json::<Placement>(kv))
            else {
                tracing::warn!(key = kv.key, "a placement key does not decode");
                continue;
            };
            moved.insert(log, placement.node);
        }
        Ok(PlacementView {
            nodes,
            moved,
            revision,
        })
    }

    /// Removes a node's registration of `role` ahead of its lease (a node
    /// shutting down: the placement rule stops naming it at once), if it
    /// is still on `lease`: a process started since under the same id
    /// keeps its own. True when removed.
    pub async fn deregister_node(&self, role: Role, id: &str, lease: LeaseId) -> Result<bool> {
        let key = format!("{}{id}", self.nodes_prefix(role));
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(false);
        };
        if kv.lease != Some(lease) {
            return Ok(false);
        }
        let unchanged = Compare::mod_revision_is(&key, kv.mod_revision);
        let response = (self.store)
            .txn(Txn::new().when([unchanged]).and_then([TxnOp::delete(&key)]))
            .await?;
        Ok(response.succeeded)
    }

    /// Changes of the ingest registrations from `start_revision` on.
    pub async fn watch_ingest_nodes(
        &self,
        start_revision: Option<Revision>,
    ) -> Result<WatchStream> {
        Ok(self
            .store
            .watch(&self.nodes_prefix(Role::Ingest), start_revision)
            .await?)
    }

    /// Changes of the placement keys from `start_revision` on.
    pub async fn watch_placements(&self, start_revision: Option<Revision>) -> Result<WatchStream> {
        Ok(self
            .store
            .watch(&self.placements_prefix(), start_revision)
            .await?)
    }

    /// Every owner key: the log and the node owning it.
    pub async fn owners(&self) -> Result<Vec<(LogName, NodeInfo)>> {
        let range = self.store.range(&self.owners_prefix(), true).await?;
        let mut owners = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let Some(log) = self.log_of_owner_key(&kv.key) else {
                continue;
            };
            owners.push((log, decode_json(kv)?));
        }
        Ok(owners)
    }

    /// The logs whose owner key names `node` on `lease` (keys that do not
    /// decode are passed over).
    pub async fn owned_on_lease(&self, node: &str, lease: LeaseId) -> Result<Vec<LogName>> {
        let range = self.store.range(&self.owners_prefix(), true).await?;
        let logs = (range.kvs.iter())
            .filter(|kv| kv.lease == Some(lease))
            .filter(|kv| decode_json::<NodeInfo>(kv).is_ok_and(|owner| owner.id == node))
            .filter_map(|kv| self.log_of_owner_key(&kv.key))
            .collect();
        Ok(logs)
    }
}
