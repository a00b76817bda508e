//! Deleting a log: mark it deleted in the manifest (which fences every
//! manifest write of its owners), then fence the replicas of its open
//! segments, so that no owner, wherever it runs, acknowledges another
//! append into the deleted log once `DeleteLog` has answered.
//!
//! Why the replicas: the owner of a log checks the manifest only when it
//! opens or seals a segment, so an owner whose node missed the deletion
//! (its etcd watch was down, it was paused) keeps taking appends into its
//! open segment. An append that names no log id may reach it after the log
//! was deleted and re-created under its name, and would be acknowledged
//! into the deleted log. Fencing the open segments at the highest epoch on
//! E − A + 1 nodes each leaves fewer than A nodes that take its adds: no
//! ack quorum is possible from then on. Segments cannot be opened any
//! more (the deletion removed the log's id key, which every segment
//! creation compares), so the set fenced is complete.
//!
//! The open segments are those of the manifest read the deletion compared
//! (no segment was created between the two), so a purge racing the fences
//! cannot hide one. An owner that opens its streams to a segment created
//! before the deletion checks the log is live after opening them (see
//! [`crate::owner`]), so a node that lost its fence since cannot take its
//! entries.
//!
//! Crash points: a crash after the manifest mark and before the fences
//! leaves the deleted log's open segment unfenced; the caller got no
//! answer, and a retried `DeleteLog` fences the open segments of the log
//! being deleted before it answers `NOT_FOUND`. Until then, or if no retry
//! comes, the compactor's purge drops the segment from the cache nodes it
//! reaches (a dropped segment refuses adds). Fences are idempotent.

use std::time::Duration;

use dlog_meta::manifest::{self, LogMeta, LogState, Manifest, SegmentMeta, SegmentState};
use dlog_wire::names::LogName;
use dlog_wire::proto::{FenceRequest, SegmentRef};
use futures::future::join_all;

use crate::error::{Error, Result};
use crate::pool::CachePool;

/// The epoch a deleted log's open segments are fenced at: above any owner's.
const DELETED_EPOCH: u64 = u64::MAX;
/// Deadline of one fence on one node.
const FENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds over a segment's ensemble before giving up.
const FENCE_ROUNDS: u32 = 3;
/// Pause before the next round (times the round number).
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// Marks `log` deleted in the manifest, then fences the replicas of its
/// open segments (as they were at the deletion); returns the deleted log's
/// metadata. Fails (retryable, `UNAVAILABLE`) if some open segment could
/// not be fenced on enough nodes: the log is deleted then, and a retry
/// fences again before it answers `NOT_FOUND` (the log is gone), so a
/// caller that retries until `NOT_FOUND` knows the fences are in place.
pub async fn delete_log(manifest: &Manifest, pool: &CachePool, log: &LogName) -> Result<LogMeta> {
    match manifest.delete_log_with_segments(log).await {
        Ok((meta, segments)) => {
            fence_open_segments(pool, log, meta.log_id, &segments).await?;
            Ok(meta)
        }
        Err(manifest::Error::LogNotFound(_)) => {
            // Being deleted already (an earlier call may have failed to
            // fence): no segment can be opened any more, so fence what is
            // open, then answer as before.
            let snapshot = manifest.log_snapshot(log).await?;
            if let Some(meta) = snapshot.meta.filter(|m| m.state == LogState::Deleting) {
                fence_open_segments(pool, log, meta.log_id, &snapshot.segments).await?;
            }
            Err(manifest::Error::LogNotFound(log.clone()).into())
        }
        Err(err) => Err(err.into()),
    }
}

/// Fences every open segment of `segments`.
async fn fence_open_segments(
    pool: &CachePool,
    log: &LogName,
    log_id: u64,
    segments: &[SegmentMeta],
) -> Result<()> {
    let open = segments
        .iter()
        .filter(|segment| segment.state == SegmentState::Open);
    for segment in open {
        fence_segment(pool, log, log_id, segment)
            .await
            .map_err(|reason| Error::DeletedUnfenced {
                log: log.clone(),
                reason: format!("segment {}: {reason}", segment.segment_id),
            })?;
    }
    Ok(())
}

/// Fences `segment` at [`DELETED_EPOCH`] until E − A + 1 of its nodes
/// refuse older adds.
async fn fence_segment(
    pool: &CachePool,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
) -> std::result::Result<(), String> {
    let ensemble = &segment.ensemble;
    let ack_quorum = (segment.ack_quorum as usize).clamp(1, ensemble.len().max(1));
    let needed = ensemble.len() + 1 - ack_quorum;
    let reference = SegmentRef {
        log: log.to_string(),
        log_id,
        segment_id: segment.segment_id,
    };
    let mut fenced = vec![false; ensemble.len()];
    let mut failures = Vec::new();
    for round in 0..FENCE_ROUNDS {
        if round > 0 {
            tokio::time::sleep(ROUND_PAUSE * round).await;
        }
        let pending: Vec<usize> = (0..ensemble.len()).filter(|&i| !fenced[i]).collect();
        let answers = join_all(
            pending
                .iter()
                .map(|&i| fence_node(pool, &ensemble[i], &reference)),
        )
        .await;
        failures.clear();
        for (&i, answer) in pending.iter().zip(answers) {
            match answer {
                Ok(()) => fenced[i] = true,
                Err(reason) => failures.push(format!("{}: {reason}", ensemble[i])),
            }
        }
        if fenced.iter().filter(|&&f| f).count() >= needed {
            return Ok(());
        }
    }
    Err(format!(
        "fenced on {} of {} cache nodes, {needed} needed ({})",
        fenced.iter().filter(|&&f| f).count(),
        ensemble.len(),
        failures.join("; ")
    ))
}

/// One fence; `Ok` when the node refuses the old owner's adds from now on:
/// it took the fence, or it dropped the segment (`FAILED_PRECONDITION`).
/// `DATA_LOSS` does not count: a re-initialised node answers it for old
/// segments without fencing them.
async fn fence_node(
    pool: &CachePool,
    node: &str,
    segment: &SegmentRef,
) -> std::result::Result<(), String> {
    let mut client = pool.client(node).await.map_err(|err| format!("{err:#}"))?;
    let request = FenceRequest {
        segment: Some(segment.clone()),
        epoch: DELETED_EPOCH,
    };
    match tokio::time::timeout(FENCE_TIMEOUT, client.fence(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
        Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
        Err(_) => Err(format!("no answer within {FENCE_TIMEOUT:?}")),
    }
}
