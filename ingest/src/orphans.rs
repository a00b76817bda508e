//! Adoption of orphaned logs. When an owner dies, the entries it had made
//! durable but not yet covered by a LAC that reached the cache nodes stay
//! invisible to readers until a new owner recovers the open segment. Most
//! logs get a new owner at their next append; this task makes sure idle
//! ones do too: at start it sweeps every log with an open segment and no
//! live owner, and afterwards it watches owner keys and adopts a log when
//! its owner key disappears (lease expired, node released it) while a
//! segment is still open, and sweeps again every 30 s. Only the node the
//! placement rule prefers adopts a log (the others are redirected by
//! [`IngestNode::owner`]); should several race, the owner claim picks one.

use std::sync::Arc;
use std::time::Duration;

use dlog_meta::manifest::{self, LogState, SegmentState};
use dlog_meta::metastore::WatchEvent;
use dlog_wire::names::LogName;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::node::IngestNode;

/// How often every log is checked again for a missing owner.
const RESWEEP: Duration = Duration::from_secs(30);
/// How long after owner keys vanish their logs are adopted: the placement
/// view settles 100 ms after a registration change, then is read again.
const PLACEMENT_SETTLE: Duration = Duration::from_millis(400);

/// Runs until `stop` is cancelled.
pub async fn adopt_orphans(node: Arc<IngestNode>, stop: CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = watch_and_adopt(&node) => {}
    }
}

async fn watch_and_adopt(node: &IngestNode) {
    let manifest = node.manifest();
    loop {
        // Watch first, then sweep: an owner that vanishes during the sweep
        // is seen by one or the other.
        let mut events = match manifest
            .store()
            .watch(&manifest.owners_prefix(), None)
            .await
        {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!("watching owner keys failed: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        sweep(node).await;
        // A sweep now and then too: an adoption that failed (cache nodes
        // down) gets another chance without a new owner event.
        let mut resweep = tokio::time::interval(RESWEEP);
        resweep.tick().await;
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = resweep.tick() => {
                    sweep(node).await;
                    continue;
                }
            };
            match event {
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    // Owner keys of a node whose lease ended go together
                    // with its registration: let the placement view see
                    // the registration go first, or the rule would still
                    // name the dead node and no node would adopt.
                    let mut orphans: Vec<LogName> =
                        manifest.log_of_owner_key(&key).into_iter().collect();
                    while let Some(Some(Ok(event))) = events.next().now_or_never() {
                        if let WatchEvent::Delete { key, .. } = event {
                            orphans.extend(manifest.log_of_owner_key(&key));
                        }
                    }
                    tokio::time::sleep(PLACEMENT_SETTLE).await;
                    for log in orphans {
                        adopt_if_orphaned(node, &log).await;
                    }
                }
                Some(Ok(WatchEvent::Put(_))) => {}
                Some(Err(err)) => {
                    tracing::warn!("owner watch ended: {err}; restarting");
                    break;
                }
                None => break,
            }
        }
    }
}

async fn sweep(node: &IngestNode) {
    match node.manifest().log_metas("").await {
        Ok(logs) => {
            for (log, meta) in logs {
                if meta.state == LogState::Active {
                    adopt_if_orphaned(node, &log).await;
                }
                // An embedded metastore never waits: let the appends on
                // this worker run between logs.
                tokio::task::yield_now().await;
            }
        }
        Err(err) => tracing::warn!("listing logs for orphans failed: {err}"),
    }
}

/// Takes ownership of `log` (recovering its open segment) if it has an
/// open segment and no live owner other than this node.
async fn adopt_if_orphaned(node: &IngestNode, log: &LogName) {
    let manifest = node.manifest();
    let open = match manifest.segments(log).await {
        Ok((segments, _)) => segments.iter().any(|s| s.state == SegmentState::Open),
        Err(_) => return,
    };
    if !open {
        return;
    }
    if let Ok(Some(owner)) = manifest.owner(log).await
        && owner.id != node.me().id
    {
        return;
    }
    match node.owner(log).await {
        Ok(_) => tracing::info!(%log, "adopted a log whose owner is gone"),
        // Deleted meanwhile (its owner key goes with the deletion): nothing
        // to adopt.
        Err(Error::NotOwner { .. })
        | Err(Error::Elsewhere { .. })
        | Err(Error::ShuttingDown)
        | Err(Error::Manifest(manifest::Error::LogNotFound(_))) => {}
        Err(err) => tracing::warn!(%log, "adopting an orphaned log failed: {err:#}"),
    }
}
