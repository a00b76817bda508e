//! Where logs are owned (balanced ownership) through `AdminService`:
//! [`Client::placement`] shows it, [`Client::move_log`] moves a log to an
//! ingest node by hand. Both need `admin`.

use dlog_wire::proto as pb;

use crate::client::{Client, Result};

/// One live ingest node and the logs it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlacement {
    /// The node's id (`--node-id`).
    pub id: String,
    /// Where clients reach it.
    pub address: String,
    /// Its `--zone`; empty if none.
    pub zone: String,
    /// Logs it owns now.
    pub owned: u64,
    /// Of those, logs the placement rule gives to another node (being
    /// handed over).
    pub misplaced: u64,
}

/// A log moved to a node by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedLog {
    /// The log's full name (`ns/log`).
    pub log: String,
    /// The node it was moved to.
    pub node: String,
    /// The node owning it now; empty if none.
    pub owner: String,
}

/// Where the cluster's logs are owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The live ingest nodes, by id.
    pub nodes: Vec<NodePlacement>,
    /// Logs moved by hand, by name.
    pub moved: Vec<MovedLog>,
    /// Logs owned by nodes no longer registered (until their lease ends).
    pub owned_elsewhere: u64,
}

impl Client {
    /// Each live ingest node with the logs it owns, and the logs moved by
    /// hand.
    pub async fn placement(&self) -> Result<Placement> {
        let response = self
            .admin_call(|mut c| {
                Box::pin(async move {
                    Ok(c.get_placement(pb::GetPlacementRequest {})
                        .await?
                        .into_inner())
                })
            })
            .await?;
        Ok(Placement {
            nodes: (response.nodes.into_iter())
                .map(|n| NodePlacement {
                    id: n.id,
                    address: n.address,
                    zone: n.zone,
                    owned: n.owned,
                    misplaced: n.misplaced,
                })
                .collect(),
            moved: (response.moved.into_iter())
                .map(|m| MovedLog {
                    log: m.log,
                    node: m.node,
                    owner: m.owner,
                })
                .collect(),
            owned_elsewhere: response.owned_elsewhere,
        })
    }

    /// Moves `log` to the ingest node `node` (`None`: back to the
    /// placement rule); its owner hands it over. Answers the node that
    /// should own it now. `NOT_FOUND` for a log or node that does not
    /// exist.
    pub async fn move_log(&self, log: &str, node: Option<&str>) -> Result<String> {
        let request = pb::MoveLogRequest {
            log: log.to_owned(),
            node: node.unwrap_or_default().to_owned(),
        };
        self.admin_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move { Ok(c.move_log(request).await?.into_inner().preferred) })
        })
        .await
    }
}
