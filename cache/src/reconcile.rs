//! Reconciliation of a cache node's segments against the manifest, so that
//! every copy the cluster no longer needs is freed even when the
//! compactor's `DropSegment` never reached this node (it was down, or the
//! log was deleted while a segment was open and nothing offloaded it).
//! Journal files are freed oldest first only, so one leaked copy would
//! hold every later file on disk.
//!
//! A pass runs at start and then periodically. It takes the node's
//! segments first and reads the manifest after: an owner creates a
//! segment's key before it sends the segment its first entry, so a segment
//! held here and missing from the manifest read afterwards was deleted.
//! It drops (durably, as a `DropSegment` would) every held segment whose
//!
//! * log id no longer names a log (purged, or re-created under a new id),
//!   and a newer log exists (so the id is not one being created now);
//! * log is being deleted;
//! * key is gone while a later segment of the log exists (retention);
//! * state is offloaded with the cache copies marked dropped.
//!
//! Crash points: a drop is a journal record like any other; a crash
//! before it is durable leaves the copy, which the next pass drops.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dlog_meta::manifest::{LogState, Manifest, SegmentMeta, SegmentState};
use tokio_util::sync::CancellationToken;

use crate::identity::{self, Cookie};
use crate::segment_key::SegmentKey;
use crate::store::CacheStore;

/// Pause between passes by default.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

/// A pass failed: a manifest read or a drop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read the manifest: {0}")]
    Manifest(#[from] dlog_meta::manifest::Error),
    #[error("drop a segment: {0}")]
    Store(#[from] crate::error::Error),
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    pub held: usize,
    pub dropped: usize,
}

/// Whether a held segment may go, given its log's manifest entries.
fn unneeded(segment: u64, segments: &BTreeMap<u64, SegmentMeta>) -> bool {
    match segments.get(&segment) {
        Some(meta) => meta.state == SegmentState::Offloaded && meta.cache_dropped,
        // Deleted by retention if a later segment exists; else it may be
        // one that is being created right now: keep it.
        None => segments
            .keys()
            .next_back()
            .is_some_and(|last| *last > segment),
    }
}

/// One pass: drops what the manifest no longer needs.
pub async fn pass(store: &CacheStore, manifest: &Manifest) -> Result<PassReport, Error> {
    let mut held: HashMap<u64, Vec<u64>> = HashMap::new();
    let segments = store.segments();
    let mut report = PassReport {
        held: segments.len(),
        dropped: 0,
    };
    for key in segments {
        held.entry(key.log_id).or_default().push(key.segment_id);
    }
    if held.is_empty() {
        return Ok(report);
    }
    let logs: HashMap<u64, _> = manifest
        .log_metas("")
        .await?
        .into_iter()
        .map(|(name, meta)| (meta.log_id, (name, meta.state)))
        .collect();
    // A log's id is handed out in the transaction that writes its metadata,
    // before any of its segments can reach a cache node, and this node's
    // segments were read before the manifest: an id at or below the last
    // one handed out that names no log any more was purged. (An id above it
    // is no log of this cluster's; it is left alone.)
    let last_log_id = manifest.last_log_id().await?;
    for (log_id, segment_ids) in held {
        let drop_all = match logs.get(&log_id) {
            None => log_id <= last_log_id,
            Some((_, LogState::Deleting)) => true,
            Some((_, LogState::Active)) => false,
        };
        let in_manifest: BTreeMap<u64, SegmentMeta> = match (drop_all, logs.get(&log_id)) {
            (false, Some((name, _))) => manifest
                .segments(name)
                .await?
                .0
                .into_iter()
                .map(|s| (s.segment_id, s))
                .collect(),
            _ => BTreeMap::new(),
        };
        for segment_id in segment_ids {
            if drop_all || unneeded(segment_id, &in_manifest) {
                let key = SegmentKey { log_id, segment_id };
                store.drop_segment(key).await?;
                report.dropped += 1;
                tracing::info!(segment = %key, "cache reconcile: dropped a segment the manifest no longer needs");
            }
        }
        // An embedded metastore never waits: let adds on this worker run
        // between logs.
        tokio::task::yield_now().await;
    }
    Ok(report)
}

/// Runs a pass now and every `period` until `stop`; also checks that the
/// manifest still registers this node's identity, and cancels `replaced`
/// when another instance took the node id over.
pub async fn run(
    store: Arc<CacheStore>,
    manifest: Manifest,
    cookie: Cookie,
    period: Duration,
    stop: CancellationToken,
    replaced: CancellationToken,
) {
    loop {
        match identity::still_registered(&manifest, &cookie).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(
                    node = %cookie.node_id,
                    instance = %cookie.instance_id,
                    "another instance registered this cache node id (re-initialised elsewhere); stopping"
                );
                replaced.cancel();
                return;
            }
            Err(err) => tracing::warn!("cache identity check failed: {err:#}"),
        }
        match pass(&store, &manifest).await {
            Ok(report) if report.dropped > 0 => {
                tracing::info!(
                    held = report.held,
                    dropped = report.dropped,
                    "cache reconcile pass"
                )
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("cache reconcile pass failed: {err}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(segment_id: u64, state: SegmentState, cache_dropped: bool) -> SegmentMeta {
        SegmentMeta {
            segment_id,
            epoch: 1,
            ensemble: vec!["a".into()],
            zones: Vec::new(),
            write_quorum: 1,
            ack_quorum: 1,
            start_offset: 0,
            state,
            end_offset: None,
            last_entry_id: None,
            bytes: 0,
            min_timestamp_ms: None,
            max_timestamp_ms: None,
            min_txid: None,
            max_txid: None,
            object: None,
            cache_dropped,
            table_removed_at_ms: None,
            table_cut_offset: None,
            table_backfilled_at_ms: None,
            merging_into: None,
            retired_object: None,
        }
    }

    #[test]
    fn only_unneeded_segments_go() {
        let segments: BTreeMap<u64, SegmentMeta> = [
            meta(3, SegmentState::Offloaded, true),
            meta(4, SegmentState::Offloaded, false),
            meta(5, SegmentState::Sealed, false),
            meta(6, SegmentState::Open, false),
        ]
        .into_iter()
        .map(|s| (s.segment_id, s))
        .collect();
        assert!(unneeded(1, &segments), "deleted by retention");
        assert!(unneeded(3, &segments), "offloaded and dropped");
        assert!(
            !unneeded(4, &segments),
            "offloaded, still in its grace period"
        );
        assert!(!unneeded(5, &segments));
        assert!(!unneeded(6, &segments));
        assert!(!unneeded(7, &segments), "maybe being created");
        assert!(!unneeded(1, &BTreeMap::new()));
    }
}
