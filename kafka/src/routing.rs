//! Which node leads a partition: the log's owner, when it serves Kafka
//! clients. Metadata names it, and a Produce that reaches another node is
//! answered `NOT_LEADER_OR_FOLLOWER`, so that clients refresh their
//! metadata and follow, as they do when Kafka's leadership moves. A log
//! without an owner, or owned by a node without a listener, is led by
//! whichever node is asked: its dlog client passes the append on (and this
//! node's ingest role may take the log).
//!
//! Owners are looked up in the manifest and remembered for [`OWNER_TTL`]:
//! after a failover a client may be sent to the old owner for that long,
//! and retries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Gateway, broker_id};

/// How long a looked-up owner is trusted.
pub(crate) const OWNER_TTL: Duration = Duration::from_secs(1);
/// Most owners remembered (a cap, not a working set: past it the memory is
/// cleared).
const MAX_REMEMBERED: usize = 100_000;

type Owner = Option<(String, Option<SocketAddr>)>;

#[derive(Debug, Default)]
pub(crate) struct Owners {
    looked_up: Mutex<HashMap<String, (Instant, Owner)>>,
}

/// The leader of `log`: `(broker id, address)`.
pub(crate) async fn leader(gateway: &Gateway, log: &str) -> (i32, SocketAddr) {
    let me = (broker_id(&gateway.options.node), gateway.options.advertised);
    match owner(gateway, log).await {
        Some((node, Some(addr))) => (broker_id(&node), addr),
        _ => me,
    }
}

/// Whether a Produce for `log` belongs on another node (its owner, which
/// serves Kafka clients).
pub(crate) async fn led_elsewhere(gateway: &Gateway, log: &str) -> bool {
    matches!(
        owner(gateway, log).await,
        Some((node, Some(_))) if node != gateway.options.node
    )
}

async fn owner(gateway: &Gateway, log: &str) -> Owner {
    let directory = gateway.directory.as_ref()?;
    let now = Instant::now();
    {
        let looked_up = gateway
            .owners
            .looked_up
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, owner)) = looked_up.get(log)
            && now.duration_since(*at) < OWNER_TTL
        {
            return owner.clone();
        }
    }
    let owner = match directory.owner(log).await {
        Ok(owner) => owner,
        Err(e) => {
            // Unknown: this node takes the request (its dlog client finds
            // the owner), rather than refusing it.
            tracing::debug!(log, error = %e, "kafka: owner lookup failed");
            return None;
        }
    };
    let mut looked_up = gateway
        .owners
        .looked_up
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if looked_up.len() >= MAX_REMEMBERED {
        looked_up.clear();
    }
    looked_up.insert(log.to_owned(), (now, owner.clone()));
    owner
}

/// The brokers Metadata lists: every node serving Kafka clients, this one
/// included.
pub(crate) async fn brokers(gateway: &Gateway) -> Vec<(i32, SocketAddr)> {
    let me = (broker_id(&gateway.options.node), gateway.options.advertised);
    let mut brokers = vec![me];
    if let Some(directory) = &gateway.directory {
        match directory.brokers().await {
            Ok(found) => brokers.extend(found.iter().map(|(node, addr)| (broker_id(node), *addr))),
            Err(e) => tracing::debug!(error = %e, "kafka: listing the brokers failed"),
        }
    }
    brokers.sort();
    brokers.dedup_by_key(|(id, _)| *id);
    brokers
}
