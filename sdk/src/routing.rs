//! One hop to a log's owner: the client computes the placement rule
//! ([`dlog_wire::placement`]) over the live ingest nodes, which it asks an
//! endpoint for (`ListIngestNodes`) at most every [`DIRECTORY_TTL`], and
//! sends a log's first request straight to its preferred node. A wrong
//! guess (a log moved by hand, a node just joined) costs the redirect it
//! would have cost anyway; an endpoint that does not know the call (an
//! older node) turns the guessing off until the next refresh.

use std::time::{Duration, Instant};

use dlog_wire::proto as pb;

use crate::client::{Client, REQUEST_TIMEOUT};

/// How long a list of ingest nodes is used before it is asked again.
const DIRECTORY_TTL: Duration = Duration::from_secs(10);

/// The live ingest nodes as last asked: (id, address) pairs.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    nodes: Vec<(String, String)>,
    fetched: Option<Instant>,
}

impl Client {
    /// The address of `log`'s preferred owner by the placement rule, if the
    /// client knows the ingest nodes.
    pub(crate) async fn preferred_address(&self, log: &str) -> Option<String> {
        let fresh = |directory: &Directory| {
            directory
                .fetched
                .is_some_and(|at| at.elapsed() < DIRECTORY_TTL)
        };
        let mut directory = self.directory.lock().await;
        if !fresh(&directory) {
            directory.nodes = self.fetch_ingest_nodes().await.unwrap_or_default();
            directory.fetched = Some(Instant::now());
        }
        let id = dlog_wire::placement::preferred(
            log,
            directory.nodes.iter().map(|(id, _)| id.as_str()),
        )?;
        directory
            .nodes
            .iter()
            .find(|(node, _)| node == id)
            .map(|(_, address)| address.clone())
    }

    /// One `ListIngestNodes` call to the current write endpoint.
    async fn fetch_ingest_nodes(&self) -> Option<Vec<(String, String)>> {
        let address = self.write_endpoint();
        let mut client = self.log_client(&address).ok()?;
        let call = client.list_ingest_nodes(pb::ListIngestNodesRequest {});
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(response)) => Some(
                (response.into_inner().nodes.into_iter())
                    .map(|n| (n.id, n.address))
                    .collect(),
            ),
            Ok(Err(status)) => {
                tracing::debug!(address, "listing the ingest nodes: {}", status.message());
                None
            }
            Err(_) => None,
        }
    }
}
