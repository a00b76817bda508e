//! Replacing ensemble nodes that cannot take recovery's copies.
//!
//! Recovery copies the entries past the highest LAC to an ack quorum of the
//! ensemble before it seals. A node whose journal was damaged refuses those
//! copies (`DATA_LOSS`) until it is wiped; in an ensemble with no node to
//! spare (E = A, e.g. a segment opened while only two cache nodes were up)
//! no quorum can then be reached, and the log would stay unwritable.
//! Instead, each node whose copies fell short is replaced by a live node
//! outside the ensemble, which first receives the whole segment (read back
//! from the nodes that serve it, at the recovering epoch), so that every
//! node of the new ensemble can serve every entry and every entry is on an
//! ack quorum of it. The seal then records the new ensemble.
//!
//! Crash points: before the seal the segment is still open under its old
//! ensemble; a replacement's copy is named by no ensemble, the next
//! recovery starts over, and the copy is dropped by its node's
//! reconciliation once the segment is offloaded and dropped. The seal is
//! fenced by the epoch like any seal: a newer owner's recovery wins.

use bytes::Bytes;
use dlog_wire::codec;
use dlog_wire::proto::SegmentRef;

use super::{Answer, copy_entries, read_page};
use crate::pool::CachePool;

/// Gives the whole segment (`count` entries from entry 0) to one live node
/// outside `ensemble` for each node flagged in `lagging`, as far as such
/// nodes exist; returns the new ensemble, each replaced node swapped for
/// its replacement in place. Fails unless the nodes that took every copy
/// and the filled replacements make an ack quorum.
pub(super) async fn replace_lagging(
    pool: &CachePool,
    segment: &SegmentRef,
    epoch: u64,
    ensemble: &[String],
    lagging: &[bool],
    ack_quorum: usize,
    count: u64,
) -> Result<Vec<String>, String> {
    let kept = lagging.iter().filter(|&&l| !l).count();
    let spares = pool
        .spare_nodes(ensemble)
        .await
        .map_err(|err| format!("no replacement: {err:#}"))?;
    let mut new_ensemble = ensemble.to_vec();
    let mut filled = 0;
    let mut spares = spares.into_iter();
    let mut failures = Vec::new();
    for (slot, _) in lagging.iter().enumerate().filter(|(_, l)| **l) {
        let Some(spare) = spares.next() else { break };
        match fill(pool, segment, epoch, ensemble, &spare, count).await {
            Ok(()) => {
                new_ensemble[slot] = spare;
                filled += 1;
            }
            Err(reason) => failures.push(reason),
        }
    }
    if kept + filled < ack_quorum {
        return Err(format!(
            "{kept} nodes took every copy and {filled} replacements were filled, \
             {ack_quorum} needed ({})",
            if failures.is_empty() {
                "no live node outside the ensemble".to_owned()
            } else {
                failures.join("; ")
            }
        ));
    }
    Ok(new_ensemble)
}

/// Copies entries `0..count` to `target`, reading them page by page from
/// whichever node of `sources` serves them (entries verify their own CRC
/// when decoded by the cache node that stores them).
async fn fill(
    pool: &CachePool,
    segment: &SegmentRef,
    epoch: u64,
    sources: &[String],
    target: &str,
    count: u64,
) -> Result<(), String> {
    let target = [target.to_owned()];
    let mut next = 0u64;
    while next < count {
        let page = read_from_any(pool, segment, epoch, sources, next).await?;
        let page: Vec<Bytes> = page.into_iter().take((count - next) as usize).collect();
        for (i, bytes) in page.iter().enumerate() {
            let id = codec::decode_entry(bytes.clone())
                .map_err(|err| format!("entry {} read again: {err}", next + i as u64))?
                .header
                .entry_id;
            if id != next + i as u64 {
                return Err(format!("entry {id} read where {} was due", next + i as u64));
            }
        }
        let copied = copy_entries(pool, segment, epoch, &target, &page).await;
        match copied.into_iter().next() {
            Some(Ok(n)) if n == page.len() => next += n as u64,
            Some(Ok(n)) => {
                return Err(format!(
                    "{}: took {n} of {} entries from {next}",
                    target[0],
                    page.len()
                ));
            }
            Some(Err(reason)) => return Err(reason),
            None => unreachable!("one target, one answer"),
        }
    }
    Ok(())
}

/// The page of entries from `from` of the first node of `sources` that
/// serves it.
async fn read_from_any(
    pool: &CachePool,
    segment: &SegmentRef,
    epoch: u64,
    sources: &[String],
    from: u64,
) -> Result<Vec<Bytes>, String> {
    let mut failures = Vec::new();
    for node in sources {
        match read_page(pool, node, segment, from, epoch).await {
            Answer::Entries(page) => return Ok(page),
            Answer::NotHeld => failures.push(format!("{node}: not held")),
            Answer::Unknown(reason) => failures.push(format!("{node}: {reason}")),
        }
    }
    Err(format!(
        "entry {from} could not be read again: {}",
        failures.join("; ")
    ))
}
