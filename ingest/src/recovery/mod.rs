//! Recovery of a segment left `open` by a dead or deposed owner (ARCHITECTURE.md,
//! "The recovery protocol"), run by a new owner before it writes.
//!
//! 1. `Fence(segment, my_epoch)` to every node of the ensemble. A node that
//!    answers refuses adds of older epochs from then on, also for entries
//!    it does not hold yet, and reports its last entry id and LAC.
//! 2. Wait for at least E − A + 1 answers: then every acknowledged entry
//!    (on A nodes) is on at least one answering node.
//! 3. Read entries from 0 with recovery reads (they carry `my_epoch` and
//!    fence again, so fencing is sticky on every node read from), in pages
//!    of bounded count (and bytes, capped by the cache node), each with its
//!    own deadline. Entries up to the highest known LAC are acknowledged
//!    already; each entry after it that a node holds is copied to the
//!    ensemble until A nodes have it. A node whose fence answer reported a
//!    last entry below the LAC is also given the entries it lacks: a cache
//!    node holds a prefix of each segment (it refuses an add that would
//!    leave a hole) and reports where it ends, so a copy it takes whole
//!    leaves it holding every entry up to the page's end. A node whose copy
//!    failed is "lagging" (step 4).
//!    A read that fails (timeout, `DATA_LOSS`, a dropped connection) is
//!    "unknown", never "not held"; `DATA_LOSS` also marks the node damaged
//!    (it lost records for good). Recovery stops at an entry only once
//!    E − A + 1 nodes answered that they do not hold it: no ack quorum can
//!    then hold it. If that cannot be established after a few rounds over
//!    the ensemble, recovery fails and leaves the segment open (the next
//!    attempt repeats it). It also fails, rather than seal, where it would
//!    end at or below the highest LAC a fence answer reported: those
//!    entries were acknowledged, and nodes that "do not hold" them lost
//!    their data (see the cache node's identity check).
//! 4. Seal the segment in the manifest, under the epoch fence, at the end of
//!    the last entry recovered, with its statistics.
//!
//! If fewer than A nodes answered the fence and took every copy of step 3
//! (a node that lost its journal refuses copies; with E = A the ensemble
//! has no other node to copy to), the others are replaced by live nodes
//! outside the ensemble, each given the whole segment, and the seal records
//! the new ensemble ([`replace`]). Where a copy missed its quorum this is
//! required (recovery fails without it); otherwise it is done for nodes
//! that answered `DATA_LOSS`, as far as spare nodes allow.
//!
//! Crash points: a new owner that dies anywhere before step 4 leaves the
//! segment open and fenced at its epoch; the next owner (higher epoch)
//! fences again and repeats the same steps, and copies are idempotent. After
//! step 4 the segment is sealed and never recovered again. A replacement
//! node filled before a crash holds a copy no ensemble names: the next
//! recovery ignores it, and its node drops it once the segment is offloaded
//! and dropped from the cache (the cache node's reconciliation).

mod replace;

use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::{Manifest, SealInfo, SegmentMeta};
use dlog_wire::codec;
use dlog_wire::names::LogName;
use dlog_wire::proto::{AddEntryRequest, FenceRequest, ReadEntriesRequest, SegmentRef};
use futures::future::join_all;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{Error, Result};
use crate::pool::CachePool;

/// Deadline of one fence, one read page and one copy on one node.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most entries one recovery read asks for (the cache node also caps a
/// page's bytes), so that a page is read well within [`NODE_TIMEOUT`].
const PAGE_ENTRIES: u32 = 256;
/// Rounds over the ensemble for one page before recovery gives up.
const READ_ROUNDS: u32 = 3;
/// Pause before the next round (times the round number).
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// Recovers and seals one open segment at `epoch`; returns it sealed.
pub async fn recover_segment(
    pool: &CachePool,
    manifest: &Manifest,
    log: &LogName,
    log_id: u64,
    epoch: u64,
    segment: &SegmentMeta,
) -> Result<SegmentMeta> {
    let fail = |reason: String| Error::Recovery {
        log: log.clone(),
        reason: format!("segment {}: {reason}", segment.segment_id),
    };
    let reference = SegmentRef {
        log: log.to_string(),
        log_id,
        segment_id: segment.segment_id,
    };
    let ensemble = &segment.ensemble;
    let ack_quorum = (segment.ack_quorum as usize).clamp(1, ensemble.len().max(1));
    let needed = ensemble.len() + 1 - ack_quorum;

    // 1–2. Fence every node; enough answers cover every acknowledged entry.
    let fences = join_all(ensemble.iter().map(|node| {
        let reference = reference.clone();
        async move {
            let mut client = pool.client(node).await?;
            let request = FenceRequest {
                segment: Some(reference),
                epoch,
            };
            match tokio::time::timeout(NODE_TIMEOUT, client.fence(request)).await {
                Ok(Ok(response)) => Ok((node.clone(), response.into_inner())),
                Ok(Err(status)) => Err(Error::Cache {
                    node: node.clone(),
                    status,
                }),
                Err(_) => Err(Error::Cache {
                    node: node.clone(),
                    status: tonic::Status::deadline_exceeded("fence timed out"),
                }),
            }
        }
    }))
    .await;
    let mut responders = Vec::new();
    let mut lac: Option<u64> = None;
    // Per node, the end (exclusive) of the entries its fence answer said it
    // holds with no hole: a node holds a prefix of the segment (the cache
    // node refuses an add that would leave one), so it lacks what follows.
    let mut held_end: Vec<Option<u64>> = vec![None; ensemble.len()];
    // Nodes that may not hold the whole segment: they did not answer the
    // fence, or a copy to them fell short (below); `damaged`: they
    // answered `DATA_LOSS`, so they lost records for good.
    let mut lagging = vec![false; ensemble.len()];
    let mut damaged = vec![false; ensemble.len()];
    for (index, fence) in fences.into_iter().enumerate() {
        match fence {
            Ok((node, response)) => {
                lac = lac.max(response.lac);
                // A cache node older than `held_end` may hold entries with
                // holes (it took copies past them): assume nothing, so it
                // is given the whole segment (adding again what it holds
                // changes nothing).
                held_end[index] = Some(response.held_end.unwrap_or(0));
                responders.push(node);
            }
            Err(err) => {
                lagging[index] = true;
                damaged[index] = matches!(&err, Error::Cache { status, .. }
                    if status.code() == tonic::Code::DataLoss);
                tracing::warn!(%log, segment = segment.segment_id, "recovery: fence failed: {err:#}")
            }
        }
    }
    if responders.len() < needed {
        return Err(fail(format!(
            "only {} of {} cache nodes answered the fence, {needed} needed",
            responders.len(),
            ensemble.len()
        )));
    }

    // 3. Read every entry, page by page; copy those past the LAC to an ack
    //    quorum. Stop only where `needed` nodes said they do not hold the
    //    next entry; a read that failed says nothing.
    let mut stats = SealInfo::empty(segment.start_offset);
    let mut next_entry = 0u64;
    let mut copied = 0usize;
    let mut preferred = 0usize;
    // Why, if some copy missed a quorum.
    let mut short: Option<String> = None;
    loop {
        // An entry up to a reported LAC was acknowledged: some node holds
        // it, so a node saying it does not (one that lost its disk) cannot
        // end the segment there. Ask every node before giving up on it.
        // MUTANT (mutation check only): nothing past the highest reported
        // LAC is recovered; the segment ends there.
        #[cfg(feature = "mutation-recovery-stops-at-lac")]
        if lac.is_none_or(|lac| next_entry > lac) {
            break;
        }
        let needed_here = match lac {
            Some(lac) if next_entry <= lac => ensemble.len(),
            _ => needed,
        };
        let reading = Reading {
            pool,
            segment: &reference,
            ensemble,
            epoch,
        };
        let Some((node, page)) =
            read_next_page(&reading, preferred, next_entry, needed_here, &mut damaged)
                .await
                .map_err(|reason| fail(format!("entry {next_entry}: {reason}")))?
        else {
            break;
        };
        preferred = node;
        let page_start = next_entry;
        for bytes in &page {
            let entry = codec::decode_entry(bytes.clone())
                .map_err(|err| fail(format!("entry from {}: {err}", ensemble[node])))?;
            if entry.header.entry_id != next_entry {
                return Err(fail(format!(
                    "{} sent entry {} where {next_entry} was due",
                    ensemble[node], entry.header.entry_id
                )));
            }
            stats.add(&entry, bytes.len());
            next_entry += 1;
        }
        // Each node gets what it lacks: every entry past the LAC (so an
        // ack quorum holds it), and below it whatever its fence answer
        // said it does not hold (its stream broke before they came).
        let lac_end = lac.map_or(0, |lac| lac.saturating_add(1));
        let copy_from: Vec<u64> = held_end
            .iter()
            .map(|held| held.map_or(lac_end, |held| held.min(lac_end)))
            .collect();
        let copies = copy_entries(
            pool, &reference, epoch, ensemble, &page, page_start, &copy_from,
        )
        .await;
        let mut complete = 0;
        for (node, copy) in copies.iter().enumerate() {
            match copy {
                None => complete += 1,
                Some(Ok(count)) => {
                    copied += count;
                    complete += 1;
                }
                Some(Err(failure)) => {
                    lagging[node] = true;
                    damaged[node] |= failure.data_loss;
                }
            }
        }
        if next_entry > lac_end && complete < ack_quorum && short.is_none() {
            let errors: Vec<&str> = copies
                .iter()
                .filter_map(|c| c.as_ref()?.as_ref().err())
                .map(|failure| failure.reason.as_str())
                .collect();
            short = Some(format!(
                "copied entries {}..{next_entry} to {complete} nodes, {ack_quorum} needed: {}",
                page_start.max(lac_end),
                errors.join("; ")
            ));
        }
    }
    for (node, damaged) in damaged.iter().enumerate() {
        lagging[node] |= *damaged;
    }
    // Entries up to a reported LAC were acknowledged: nodes saying they do
    // not hold one (a node that lost its disk, say) must not cut it off.
    if let Some(lac) = lac
        && next_entry <= lac
    {
        return Err(fail(format!(
            "{needed} nodes do not hold entry {next_entry}, but a fence answer reported \
             LAC {lac}: the segment stays open"
        )));
    }

    // Fewer than an ack quorum of nodes that answered the fence and took
    // every copy: give the whole segment to nodes outside the ensemble in
    // place of the others. Required where a copy missed its quorum; else
    // (nothing past the LAC, or the copies reached a quorum only with
    // nodes that did not answer the fence) done for damaged nodes as far
    // as spares allow.
    let usable = lagging.iter().filter(|&&l| !l).count();
    let any_damaged = damaged.iter().any(|&d| d);
    let new_ensemble =
        if next_entry > 0 && (short.is_some() || (usable < ack_quorum && any_damaged)) {
            let nodes = replace::Lagging {
                lagging: &lagging,
                damaged: &damaged,
                required: short.is_some(),
            };
            let replaced = replace::replace_lagging(
                pool, &reference, epoch, ensemble, nodes, ack_quorum, next_entry,
            )
            .await;
            match (replaced, short) {
                (Ok(replaced), _) if replaced == *ensemble => None,
                (Ok(replaced), _) => {
                    tracing::warn!(%log, segment = segment.segment_id, from = ?ensemble,
                    to = ?replaced, "recovery: replaced cache nodes that may not hold the segment");
                    Some(replaced)
                }
                (Err(reason), Some(short)) => return Err(fail(format!("{short}; {reason}"))),
                (Err(reason), None) => {
                    tracing::warn!(%log, segment = segment.segment_id,
                    "recovery: {usable} of {} nodes hold the whole segment and no replacement \
                     could be filled ({reason}); sealing as it is", ensemble.len());
                    None
                }
            }
        } else {
            None
        };

    // 4. Seal where the recovered entries end.
    let sealed = manifest
        .seal_segment_with_ensemble(
            log,
            dlog_meta::manifest::Fence { log_id, epoch },
            segment.segment_id,
            &stats,
            new_ensemble,
        )
        .await?;
    tracing::info!(
        %log,
        segment = segment.segment_id,
        end_offset = stats.end_offset,
        entries = next_entry,
        copied,
        "recovered and sealed a segment"
    );
    Ok(sealed)
}

/// What one node answered to a recovery read.
enum Answer {
    /// Entries from the one asked for, in order.
    Entries(Vec<Bytes>),
    /// The node (fenced by the read) does not hold the entry.
    NotHeld,
    /// The read failed: the node may or may not hold the entry.
    Unknown(String),
    /// The node answered `DATA_LOSS`: it lost records of the segment for
    /// good, so it does not hold the whole segment (and may or may not
    /// hold this entry).
    Damaged(String),
}

/// The segment recovery reads: through `pool`, from `ensemble`, fencing
/// at `epoch`.
struct Reading<'a> {
    pool: &'a CachePool,
    segment: &'a SegmentRef,
    ensemble: &'a [String],
    epoch: u64,
}

/// Reads the page of entries from `from`, trying the ensemble's nodes in
/// turn from `preferred`, for a few rounds. Returns the node that served it
/// and the page, or `None` once `needed` nodes answered that they do not
/// hold `from`; fails if neither happened (some reads failed).
async fn read_next_page(
    reading: &Reading<'_>,
    preferred: usize,
    from: u64,
    needed: usize,
    damaged: &mut [bool],
) -> std::result::Result<Option<(usize, Vec<Bytes>)>, String> {
    let Reading {
        pool,
        segment,
        ensemble,
        epoch,
    } = *reading;
    let mut not_held = vec![false; ensemble.len()];
    let mut failures: Vec<String> = Vec::new();
    for round in 0..READ_ROUNDS {
        if round > 0 {
            tokio::time::sleep(ROUND_PAUSE * round).await;
        }
        failures.clear();
        for offset in 0..ensemble.len() {
            let index = (preferred + offset) % ensemble.len();
            if not_held[index] {
                continue;
            }
            let node = &ensemble[index];
            match read_page(pool, node, segment, from, epoch).await {
                Answer::Entries(page) => return Ok(Some((index, page))),
                Answer::NotHeld => {
                    not_held[index] = true;
                    if not_held.iter().filter(|&&n| n).count() >= needed {
                        return Ok(None);
                    }
                }
                // MUTANT (mutation check only): a failed read counts as "not held".
                #[cfg(feature = "mutation-failed-read-not-held")]
                Answer::Unknown(_) => {
                    not_held[index] = true;
                    if not_held.iter().filter(|&&n| n).count() >= needed {
                        return Ok(None);
                    }
                }
                #[cfg(not(feature = "mutation-failed-read-not-held"))]
                Answer::Unknown(reason) => failures.push(format!("{node}: {reason}")),
                Answer::Damaged(reason) => {
                    damaged[index] = true;
                    failures.push(format!("{node}: {reason}"));
                }
            }
        }
    }
    Err(format!(
        "{} of {} nodes answered that they do not hold it ({needed} needed to end the \
         segment there), the others could not be read: {}; the segment stays open",
        not_held.iter().filter(|&&n| n).count(),
        ensemble.len(),
        failures.join("; ")
    ))
}

/// One recovery read (it fences `node` at `epoch` first) of at most
/// [`PAGE_ENTRIES`] entries from `from`, with its own deadline.
async fn read_page(
    pool: &CachePool,
    node: &str,
    segment: &SegmentRef,
    from: u64,
    epoch: u64,
) -> Answer {
    let mut client = match pool.client(node).await {
        Ok(client) => client,
        Err(err) => return Answer::Unknown(format!("{err:#}")),
    };
    let request = ReadEntriesRequest {
        segment: Some(segment.clone()),
        from_entry: from,
        max_entries: PAGE_ENTRIES,
        fence_epoch: Some(epoch),
        sealed_last_entry: None,
    };
    let read = dlog_meta::cache_clients::read_all_entries(&mut client, request);
    match tokio::time::timeout(NODE_TIMEOUT, read).await {
        Ok(Ok(entries)) if entries.is_empty() => Answer::NotHeld,
        Ok(Ok(entries)) => Answer::Entries(entries),
        Ok(Err(status)) if status.code() == tonic::Code::NotFound => Answer::NotHeld,
        Ok(Err(status)) if status.code() == tonic::Code::DataLoss => {
            Answer::Damaged(format!("{}: {}", status.code(), status.message()))
        }
        Ok(Err(status)) => Answer::Unknown(format!("{}: {}", status.code(), status.message())),
        Err(_) => Answer::Unknown(format!("no answer within {NODE_TIMEOUT:?}")),
    }
}

/// Why a copy to one node failed.
struct CopyFailure {
    /// The node answered `DATA_LOSS`: it lost records of the segment.
    data_loss: bool,
    reason: String,
}

/// Writes the entries of `page` (entry ids from `page_start`) at the
/// recovering epoch to every node of `nodes`, node `i` those from
/// `from[i]` on; returns, per node, how many it acknowledged or why its
/// copy failed, or `None` where it was given nothing.
async fn copy_entries(
    pool: &CachePool,
    segment: &SegmentRef,
    epoch: u64,
    nodes: &[String],
    page: &[Bytes],
    page_start: u64,
    from: &[u64],
) -> Vec<Option<std::result::Result<usize, CopyFailure>>> {
    join_all(nodes.iter().zip(from).map(|(node, &from)| async move {
        let skip = usize::try_from(from.saturating_sub(page_start)).unwrap_or(usize::MAX);
        let entries = page.get(skip..).unwrap_or_default();
        if entries.is_empty() {
            return None;
        }
        Some(copy_to(pool, segment, epoch, node, entries).await)
    }))
    .await
}

/// Writes `entries` (in order, at the recovering epoch) to `node`; returns
/// how many it acknowledged or why the copy failed. The node refuses an
/// entry that would leave a hole, so a copy it takes whole proves it holds
/// every entry before the first one too.
async fn copy_to(
    pool: &CachePool,
    segment: &SegmentRef,
    epoch: u64,
    node: &str,
    entries: &[Bytes],
) -> std::result::Result<usize, CopyFailure> {
    let failure = |data_loss, reason| CopyFailure { data_loss, reason };
    let mut client = pool
        .client(node)
        .await
        .map_err(|e| failure(false, e.to_string()))?;
    let requests: Vec<AddEntryRequest> = entries
        .iter()
        .map(|entry| AddEntryRequest {
            segment: Some(segment.clone()),
            epoch,
            entry: entry.clone(),
            lac: None,
        })
        .collect();
    let (sender, receiver) = tokio::sync::mpsc::channel(requests.len().max(1));
    for request in requests {
        let _ = sender.try_send(request);
    }
    drop(sender);
    let copy = async {
        let mut acks = client
            .add_entries(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        let mut count = 0usize;
        while acks.message().await?.is_some() {
            count += 1;
        }
        Ok::<_, tonic::Status>(count)
    };
    match tokio::time::timeout(NODE_TIMEOUT, copy).await {
        Ok(Ok(count)) if count == entries.len() => Ok(count),
        Ok(Ok(count)) => Err(failure(
            false,
            format!("copy to {node}: took {count} of {} entries", entries.len()),
        )),
        Ok(Err(status)) => Err(failure(
            status.code() == tonic::Code::DataLoss,
            format!("copy to {node}: {status}"),
        )),
        Err(_) => Err(failure(false, format!("copy to {node}: timed out"))),
    }
}
