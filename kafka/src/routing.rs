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
/// Brokers by id, with the time they were listed.
type Brokers = Option<(Instant, Vec<(i32, SocketAddr)>)>;

#[derive(Debug, Default)]
pub(crate) struct Owners {
    looked_up: Mutex<HashMap<String, (Instant, Owner)>>,
    brokers: Mutex<Brokers>,
}

/// The leader of `log`: `(broker id, address)`.
pub(crate) async fn leader(gateway: &Gateway, log: &str) -> (i32, SocketAddr) {
    let me = (broker_id(&gateway.options.node), gateway.options.advertised);
    match owner(gateway, log).await {
        Some((node, Some(addr))) if addr != gateway.options.advertised => (broker_id(&node), addr),
        _ => me,
    }
}

/// Whether a Produce for `log` belongs on another node (its owner, which
/// serves Kafka clients).
pub(crate) async fn led_elsewhere(gateway: &Gateway, log: &str) -> bool {
    // An owner advertising this very address (one load balancer for all,
    // or 127.0.0.1 on every host) is reached here anyway: take it.
    matches!(
        owner(gateway, log).await,
        Some((node, Some(addr))) if node != gateway.options.node && addr != gateway.options.advertised
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
/// included, by broker id (looked up at most once per [`OWNER_TTL`]).
pub(crate) async fn brokers(gateway: &Gateway) -> Vec<(i32, SocketAddr)> {
    let me = (broker_id(&gateway.options.node), gateway.options.advertised);
    let Some(directory) = &gateway.directory else {
        return vec![me];
    };
    {
        let cached = gateway
            .owners
            .brokers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, brokers)) = &*cached
            && at.elapsed() < OWNER_TTL
        {
            return brokers.clone();
        }
    }
    let mut brokers = vec![me];
    match directory.brokers().await {
        Ok(found) => brokers.extend(found.iter().map(|(node, addr)| (broker_id(node), *addr))),
        Err(e) => tracing::debug!(error = %e, "kafka: listing the brokers failed"),
    }
    brokers.sort();
    brokers.dedup_by_key(|(id, _)| *id);
    let mut cached = gateway
        .owners
        .brokers
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    *cached = Some((Instant::now(), brokers.clone()));
    brokers
}

/// The broker that coordinates `group`: one every node computes alike from
/// the broker list (a hash of the group id over the brokers by id), so that
/// members bootstrapped on different nodes still form one group. While
/// nodes' lists differ (a node joining or leaving) members may be sent back
/// and forth (`NOT_COORDINATOR`) for a moment.
pub(crate) async fn coordinator(gateway: &Gateway, group: &str) -> (i32, SocketAddr) {
    let brokers = brokers(gateway).await;
    let index = (broker_id(group) as usize) % brokers.len();
    brokers[index]
}

/// Whether this node coordinates `group`.
pub(crate) async fn coordinates(gateway: &Gateway, group: &str) -> bool {
    coordinator(gateway, group).await.0 == broker_id(&gateway.options.node)
}
