//! Replacing ensemble nodes that cannot take recovery's copies.
//!
//! Recovery copies the entries past the highest LAC to an ack quorum of the
//! ensemble before it seals. A node whose journal was damaged refuses those
//! copies and fences (`DATA_LOSS`) until it is wiped; in an ensemble with
//! no node to spare (E = A, e.g. a segment opened while only two cache
//! nodes were up) no quorum can then be reached, and the log would stay
//! unwritable. Instead, each node that did not answer the fence or whose
//! copies fell short ("lagging") is replaced, damaged nodes first, by a live
//! node outside the ensemble (only the damaged ones where no copy missed
//! its quorum: a node that is only slow is not worth a whole copy), which
//! first receives the whole segment (with no spare left, the node itself
//! receives it in place: a re-initialised member of an E = A ensemble on
//! a cluster with no other node) (read
//! back from the nodes that serve it, at the recovering epoch; nodes that
//! took every copy are read first, damaged nodes never). The kept
//! nodes answered the fence and took every copy, and each replacement holds
//! every entry, so every entry past the LAC is on an ack quorum of the new
//! ensemble, and every entry at or below it on each replacement and on
//! each kept node that acknowledged it. The seal then records the new
//! ensemble. (A kept node answered the fence and took every entry it
//! lacked, below the LAC too. A lagging node that is not replaced, because
//! no copy missed its quorum and it is not damaged, or because nothing
//! could be filled, may lack some: the seal names it all the same.)
//!
//! Crash points: before the seal the segment is still open under its old
//! ensemble; a replacement's copy is named by no ensemble, the next
//! recovery starts over, and the copy is dropped by its node's
//! reconciliation once the segment is offloaded and dropped. The seal is
//! fenced by the epoch like any seal: a newer owner's recovery wins.

use bytes::Bytes;
use dlog_wire::codec;
use dlog_wire::proto::SegmentRef;

use super::{Answer, copy_to, read_page};
use crate::pool::CachePool;

/// The ensemble's nodes that may not hold the whole segment (`lagging`),
/// and among them those that answered `DATA_LOSS` (`damaged`), by slot;
/// `required`: a copy missed its quorum, so every lagging node must go.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lagging<'a> {
    pub lagging: &'a [bool],
    pub damaged: &'a [bool],
    pub required: bool,
}

/// Why filling a replacement stopped.
enum FillError {
    /// The replacement failed: another spare may do.
    Target(String),
    /// No node served the entries to copy: no spare can be filled now.
    Source(String),
}

/// Gives the whole segment (`count` entries from entry 0) to a live node
/// outside `ensemble` in place of lagging nodes, damaged ones first: every
/// lagging node if `nodes.required` (a copy missed its quorum), else only the
/// damaged ones (a node that is only slow is not worth a whole copy). A
/// spare that fails is not tried again; spares in zones the kept members
/// lack come first, in an order rotated by `seed`, so replacements spread
/// over the cluster ([`CachePool::spare_nodes`]); with no
/// spare left, the node is filled in place. Returns the
/// new ensemble, each replaced node swapped for its replacement in place.
/// If required, fails unless the kept nodes (not lagging) and the filled
/// replacements make an ack quorum; otherwise returns whatever was filled.
pub(super) async fn replace_lagging(
    pool: &CachePool,
    segment: &SegmentRef,
    epoch: u64,
    ensemble: &[String],
    nodes: Lagging<'_>,
    ack_quorum: usize,
    count: u64,
) -> Result<Vec<String>, String> {
    let required = nodes.required;
    let seed = segment.log_id ^ segment.segment_id.rotate_left(32);
    let mut slots: Vec<usize> = (0..ensemble.len())
        .filter(|&i| nodes.damaged[i] || (required && nodes.lagging[i]))
        .collect();
    // Spares in zones the kept members lack come first.
    let kept: Vec<String> = (0..ensemble.len())
        .filter(|i| !slots.contains(i))
        .map(|i| ensemble[i].clone())
        .collect();
    let mut spares = pool
        .spare_nodes(ensemble, &kept, seed)
        .await
        .map_err(|err| format!("no replacement: {err:#}"))?
        .into_iter();
    slots.sort_by_key(|&i| !nodes.damaged[i]);
    // Sources: nodes that took every copy first, damaged nodes never.
    let mut sources: Vec<&str> = (0..ensemble.len())
        .filter(|&i| !nodes.damaged[i])
        .map(|i| ensemble[i].as_str())
        .collect();
    sources.sort_by_key(|node| {
        let slot = ensemble
            .iter()
            .position(|n| n == node)
            .expect("from the ensemble");
        nodes.lagging[slot]
    });
    let mut new_ensemble = ensemble.to_vec();
    let mut filled = 0;
    let mut failures = Vec::new();
    'slots: for slot in slots {
        // Spares first; with none left, the node itself, in place: a node
        // that lost its disk (re-initialised) or lacks entries below the
        // LAC takes the whole segment from entry 0 (it holds a prefix, and
        // adding again what it holds changes nothing). Where every node of
        // the cluster is in the ensemble (E = A = 2 on two cache nodes),
        // this is what lets a wiped member count again.
        let in_place = std::iter::once(ensemble[slot].clone());
        for target in spares.by_ref().chain(in_place) {
            match fill(pool, segment, epoch, &sources, &target, count).await {
                Ok(()) => {
                    new_ensemble[slot] = target;
                    filled += 1;
                    continue 'slots;
                }
                Err(FillError::Target(reason)) => failures.push(reason),
                Err(FillError::Source(reason)) => {
                    failures.push(reason);
                    break 'slots;
                }
            }
        }
    }
    let kept = nodes.lagging.iter().filter(|&&l| !l).count();
    if required && kept + filled < ack_quorum {
        return Err(format!(
            "{kept} nodes hold the whole segment and {filled} replacements were filled, \
             {ack_quorum} needed ({})",
            if failures.is_empty() {
                "no live node outside the ensemble".to_owned()
            } else {
                failures.join("; ")
            }
        ));
    }
    if filled == 0 && !failures.is_empty() {
        tracing::warn!(segment = %segment.segment_id, "recovery: no replacement filled: {}",
            failures.join("; "));
    }
    Ok(new_ensemble)
}

/// Copies entries `0..count` to `target`, reading them page by page from
/// the first node of `sources` that serves them, staying with the node
/// that served the last page.
async fn fill(
    pool: &CachePool,
    segment: &SegmentRef,
    epoch: u64,
    sources: &[&str],
    target: &str,
    count: u64,
) -> Result<(), FillError> {
    let mut preferred = 0;
    let mut next = 0u64;
    while next < count {
        let (served, page) = read_from_any(pool, segment, epoch, sources, preferred, next)
            .await
            .map_err(FillError::Source)?;
        preferred = served;
        let page: Vec<Bytes> = page.into_iter().take((count - next) as usize).collect();
        for (i, bytes) in page.iter().enumerate() {
            let id = codec::decode_entry(bytes.clone())
                .map_err(|err| {
                    FillError::Source(format!("entry {} read again: {err}", next + i as u64))
                })?
                .header
                .entry_id;
            if id != next + i as u64 {
                return Err(FillError::Source(format!(
                    "entry {id} read where {} was due",
                    next + i as u64
                )));
            }
        }
        next += copy_to(pool, segment, epoch, target, &page)
            .await
            .map_err(|failure| FillError::Target(failure.reason))? as u64;
    }
    Ok(())
}

/// The page of entries from `from` of the first node of `sources` (from
/// `preferred` on) that serves it, and that node's index.
async fn read_from_any(
    pool: &CachePool,
    segment: &SegmentRef,
    epoch: u64,
    sources: &[&str],
    preferred: usize,
    from: u64,
) -> Result<(usize, Vec<Bytes>), String> {
    let mut failures = Vec::new();
    for offset in 0..sources.len() {
        let index = (preferred + offset) % sources.len();
        let node = sources[index];
        match read_page(pool, node, segment, from, epoch).await {
            Answer::Entries(page) => return Ok((index, page)),
            Answer::NotHeld => failures.push(format!("{node}: not held")),
            Answer::Unknown(reason) | Answer::Damaged(reason) => {
                failures.push(format!("{node}: {reason}"))
            }
        }
    }
    Err(format!(
        "entry {from} could not be read again: {}",
        failures.join("; ")
    ))
}
