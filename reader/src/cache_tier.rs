//! Reads of sealed and open segments from the cache nodes.
//!
//! Entries fetched from a replica go into a moka cache shared by every read
//! on this node, and concurrent misses on one entry make one upstream
//! fetch (`try_get_with` coalesces them), which also prefetches the
//! entries after it. The LAC of an open segment is followed by one shared
//! long-poll per segment ([`SharedWatches`]). Nothing past the LAC is ever
//! requested from an open segment.
//!
//! No replica can hang a read: every request has a deadline
//! ([`REQUEST_DEADLINE`] beyond any wait it asks for), streams have one per
//! message, a fetch also asks the next replica when the first has not
//! answered in [`HEDGE_AFTER`], and replicas that failed or missed a
//! deadline are asked last for a while.
//!
//! Zones: replicas in this node's zone (`--zone`, as the segment's
//! placement recorded the replicas') are asked before the others, so a
//! read crosses zones only when no replica of its own zone answers; one
//! that does not have an entry of an open segment yet (a few milliseconds
//! behind the LAC another replica reported) is asked again a few times
//! over up to 100 ms before another zone is. The bytes fetched are counted
//! by whether they crossed (`dlog_reader_cache_fetched_bytes_total{zone}`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use dlog_meta::cache_clients::CacheClients;
use dlog_meta::manifest::{SegmentMeta, SegmentState};
use dlog_wire::codec::{Entry, decode_entry};
use dlog_wire::ids::{EntryId, Offset};
use dlog_wire::names::LogName;
use dlog_wire::proto::{ReadEntriesRequest, ReadLacRequest, SegmentRef};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::series;
use crate::shared_watch::SharedWatches;

/// Entries fetched from a replica in one request, beyond the one asked for.
const PREFETCH: u64 = 64;
/// How long one LAC long-poll waits on a cache node.
const LAC_POLL: Duration = Duration::from_secs(5);
/// How long a cache node may take to answer a request (beyond any wait
/// the request asks for), or to send the next message of a stream, before
/// the read gives up on it and asks another replica.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// How long a fetch waits on one replica before it also asks the next.
const HEDGE_AFTER: Duration = Duration::from_millis(300);
/// How often, and after how long, a replica in this node's zone that does
/// not have an entry of an open segment yet (its LAC a little behind the
/// one read elsewhere) is asked again before a replica in another zone:
/// at most 100 ms, within [`HEDGE_AFTER`].
const LOCAL_RETRIES: u32 = 4;
const LOCAL_RETRY_AFTER: Duration = Duration::from_millis(25);
/// How long a replica that failed or timed out is asked last.
const SLOW_FOR: Duration = Duration::from_secs(10);
/// Open segments whose last answered LAC a node remembers (the newest
/// used; one idle for 10 minutes is forgotten).
const ANSWERED_LACS: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EntryKey {
    log_id: u64,
    segment: u64,
    entry: u64,
}

/// A segment to read, with what the read path needs to address it.
#[derive(Debug, Clone)]
pub struct SegmentSource {
    pub log: LogName,
    pub log_id: u64,
    pub segment: SegmentMeta,
}

impl SegmentSource {
    fn reference(&self) -> SegmentRef {
        SegmentRef {
            log: self.log.to_string(),
            log_id: self.log_id,
            segment_id: self.segment.segment_id,
        }
    }

    fn unavailable(&self, reason: String) -> Error {
        Error::Unavailable {
            log: self.log.clone(),
            segment: self.segment.segment_id,
            reason,
        }
    }
}

/// The cache-node side of the read path.
#[derive(Debug)]
pub struct CacheTier {
    caches: Arc<CacheClients>,
    entries: moka::future::Cache<EntryKey, Arc<Entry>>,
    lacs: SharedWatches<(u64, u64), Option<u64>>,
    /// The highest LAC [`CacheTier::current_lac`] answered per open segment
    /// `(log id, segment id)`: a later answer is never lower, also when
    /// the replica that reported it stops answering (the others may know
    /// only an older LAC piggybacked on their entries).
    answered_lacs: moka::future::Cache<(u64, u64), u64>,
    slow: Arc<SlowNodes>,
    /// This node's zone; empty: none.
    zone: Arc<str>,
}

/// Replicas that failed or missed a deadline lately: asked last (never
/// left out: they may be the only ones holding an entry).
#[derive(Debug, Default)]
struct SlowNodes(Mutex<HashMap<String, Instant>>);

impl SlowNodes {
    fn mark(&self, node: &str) {
        let mut slow = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slow.insert(node.to_owned(), Instant::now());
    }

    fn is_slow(&self, node: &str) -> bool {
        let slow = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slow.get(node)
            .is_some_and(|since| since.elapsed() < SLOW_FOR)
    }

    /// The segment's replicas in the order to ask them: those in `zone`
    /// first, then the others, each part rotated by `turn` (to spread
    /// load); slow nodes last of all.
    fn order<'a>(&self, segment: &'a SegmentMeta, zone: &str, turn: usize) -> Vec<&'a str> {
        let ensemble = &segment.ensemble;
        let n = ensemble.len();
        let rotated = (0..n).map(|i| ensemble[(turn + i) % n].as_str());
        let (local, remote): (Vec<&str>, Vec<&str>) =
            rotated.partition(|node| locality(segment, zone, node) == Locality::Same);
        let (fast, slow): (Vec<&str>, Vec<&str>) = local
            .into_iter()
            .chain(remote)
            .partition(|node| !self.is_slow(node));
        fast.into_iter().chain(slow).collect()
    }
}

/// Where a replica is from a reader's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locality {
    Same,
    Cross,
    /// The reader's zone or the replica's is not known.
    Unknown,
}

impl Locality {
    fn label(self) -> &'static str {
        match self {
            Locality::Same => "same",
            Locality::Cross => "cross",
            Locality::Unknown => "unknown",
        }
    }
}

/// Whether replica `node` of `segment` is in `zone` (the reader's).
pub(crate) fn locality(segment: &SegmentMeta, zone: &str, node: &str) -> Locality {
    match segment.zone_of(node) {
        _ if zone.is_empty() => Locality::Unknown,
        None => Locality::Unknown,
        Some(theirs) if theirs == zone => Locality::Same,
        Some(_) => Locality::Cross,
    }
}

impl CacheTier {
    /// `cache_bytes`: capacity of the shared entry cache.
    pub fn new(caches: Arc<CacheClients>, cache_bytes: u64) -> CacheTier {
        let entries = moka::future::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|_, entry: &Arc<Entry>| {
                let bytes: usize = entry.records.iter().map(|r| r.record.size() + 32).sum();
                u32::try_from(bytes + 64).unwrap_or(u32::MAX)
            })
            .build();
        CacheTier {
            caches,
            entries,
            lacs: SharedWatches::default(),
            answered_lacs: moka::future::Cache::builder()
                .max_capacity(ANSWERED_LACS)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            slow: Arc::default(),
            zone: Arc::from(""),
        }
    }

    /// This node's zone: replicas in it are asked first.
    pub fn set_zone(&mut self, zone: &str) {
        self.zone = Arc::from(zone);
    }

    /// Entry `entry` of the segment; `last` is the highest entry the read
    /// may touch (the sealed last entry, or the LAC of an open segment).
    pub async fn entry(
        &self,
        source: &SegmentSource,
        entry: EntryId,
        last: EntryId,
    ) -> Result<Arc<Entry>> {
        let (entry, last) = (entry.0, last.0);
        let key = EntryKey {
            log_id: source.log_id,
            segment: source.segment.segment_id,
            entry,
        };
        let missed = std::sync::atomic::AtomicBool::new(false);
        let fetch = async {
            missed.store(true, std::sync::atomic::Ordering::Relaxed);
            self.fetch(source, entry, last).await
        };
        let found = self
            .entries
            .try_get_with(key, fetch)
            .await
            .map_err(Error::Shared);
        series::count_lookup("cache", missed.into_inner());
        found
    }

    /// Reads `entry..=min(entry + PREFETCH, last)` from the first replica
    /// that has it intact; caches all, returns the first. Replicas are
    /// asked one after another, the next one as soon as the previous
    /// failed or after [`HEDGE_AFTER`] without an answer (a frozen node
    /// costs that, not a hang); the first good answer wins.
    async fn fetch(&self, source: &SegmentSource, entry: u64, last: u64) -> Result<Arc<Entry>> {
        let sealed = source.segment.state != SegmentState::Open;
        let count = (last.saturating_sub(entry) + 1).min(PREFETCH);
        let mut errors = Vec::new();
        let mut untried = self
            .slow
            .order(&source.segment, &self.zone, entry as usize)
            .into_iter();
        let mut asking = futures::stream::FuturesUnordered::new();
        // Re-asks left for a replica of this node's zone that does not
        // have an entry of an open segment yet.
        let mut local_retries = LOCAL_RETRIES;
        let start = |node: &str, after: Duration| {
            let node = node.to_owned();
            async move {
                if !after.is_zero() {
                    tokio::time::sleep(after).await;
                }
                let answer = self
                    .fetch_from(source, &node, entry, count, sealed.then_some(last))
                    .await;
                (node, answer)
            }
        };
        if let Some(node) = untried.next() {
            asking.push(start(node, Duration::ZERO));
        }
        loop {
            let hedge = tokio::time::sleep(HEDGE_AFTER);
            tokio::select! {
                answer = asking.next() => match answer {
                    None => break,
                    Some((node, Ok(mut fetched))) if !fetched.is_empty() => {
                        let first = fetched.remove(0);
                        for more in fetched {
                            let key = EntryKey {
                                log_id: source.log_id,
                                segment: source.segment.segment_id,
                                entry: more.header.entry_id,
                            };
                            self.entries.insert(key, more).await;
                        }
                        tracing::trace!(%node, entry, "fetched");
                        return Ok(first);
                    }
                    Some((node, answer)) => {
                        match answer {
                            // Behind the LAC others reported by a few
                            // milliseconds, most likely (every replica
                            // gets every entry): asked again shortly before
                            // another zone is.
                            Ok(_) if !sealed
                                && local_retries > 0
                                && locality(&source.segment, &self.zone, &node) == Locality::Same =>
                            {
                                local_retries -= 1;
                                asking.push(start(&node, LOCAL_RETRY_AFTER));
                                continue;
                            }
                            Ok(_) => errors.push(format!("{node}: does not have entry {entry} yet")),
                            Err(reason) => {
                                tracing::debug!(%node, entry, "replica failed: {reason}");
                                self.slow.mark(&node);
                                errors.push(format!("{node}: {reason}"));
                            }
                        }
                        if let Some(node) = untried.next() {
                            asking.push(start(node, Duration::ZERO));
                        }
                    }
                },
                () = hedge, if untried.len() > 0 => {
                    if let Some(node) = untried.next() {
                        asking.push(start(node, Duration::ZERO));
                    }
                }
            }
        }
        Err(source.unavailable(format!(
            "no replica served entry {entry}: {}",
            errors.join("; ")
        )))
    }

    async fn fetch_from(
        &self,
        source: &SegmentSource,
        node: &str,
        from: u64,
        count: u64,
        sealed_last_entry: Option<u64>,
    ) -> std::result::Result<Vec<Arc<Entry>>, String> {
        let late = |what: &str| format!("{what}: no answer in {REQUEST_DEADLINE:?}");
        let mut client = tokio::time::timeout(REQUEST_DEADLINE, self.caches.client(node))
            .await
            .map_err(|_| late("connect"))?
            .map_err(|e| e.to_string())?;
        let request = ReadEntriesRequest {
            segment: Some(source.reference()),
            from_entry: from,
            max_entries: u32::try_from(count).unwrap_or(u32::MAX),
            fence_epoch: None,
            sealed_last_entry,
        };
        let answer = tokio::time::timeout(REQUEST_DEADLINE, client.read_entries(request))
            .await
            .map_err(|_| late("read entries"))?;
        let mut stream = match answer {
            Ok(response) => response.into_inner(),
            // Of an open segment: the node's LAC already covers an entry it
            // has not indexed yet. It does not have it yet, like a node
            // whose LAC is behind; not a failure to ask it last for.
            Err(status)
                if sealed_last_entry.is_none()
                    && status.code() == tonic::Code::NotFound
                    && status.message().starts_with("entry ") =>
            {
                return Ok(Vec::new());
            }
            Err(status) => return Err(status.message().to_owned()),
        };
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        // An idle deadline per message: a node that stops mid-stream is
        // given up like one that never answered.
        while let Some(message) = tokio::time::timeout(REQUEST_DEADLINE, stream.message())
            .await
            .map_err(|_| late("next entry"))?
            .map_err(|s| s.message().to_owned())?
        {
            bytes += message.entry.len() as u64;
            // The entry cache keeps it: not the whole receive buffer with it.
            let owned = dlog_wire::codec::own_buffer(message.entry);
            let entry = decode_entry(owned).map_err(|err| err.to_string())?;
            let expected = from + entries.len() as u64;
            if entry.header.entry_id != expected || entry.header.log_id != source.log_id {
                return Err(format!(
                    "sent entry {} where {expected} was due",
                    entry.header.entry_id
                ));
            }
            entries.push(Arc::new(entry));
            if entries.len() as u64 == count {
                break;
            }
        }
        let replica = locality(&source.segment, &self.zone, node);
        series::count_fetched(replica.label(), bytes);
        Ok(entries)
    }

    /// The entry of the segment holding `offset`, searching entries
    /// `0..=last` (entries tile the segment's offsets in order).
    pub async fn locate(
        &self,
        source: &SegmentSource,
        offset: Offset,
        last: EntryId,
    ) -> Result<EntryId> {
        let (mut low, mut high) = (0, last.0);
        while low < high {
            let middle = low + (high - low).div_ceil(2);
            let entry = self.entry(source, EntryId(middle), last).await?;
            if entry.header.first_offset <= offset.0 {
                low = middle;
            } else {
                high = middle - 1;
            }
        }
        Ok(EntryId(low))
    }

    /// The LAC of an open segment as this node follows it (`None` until a
    /// replica reports one); one shared long-poll per segment.
    pub fn lac(&self, source: &SegmentSource) -> watch::Receiver<Option<u64>> {
        let key = (source.log_id, source.segment.segment_id);
        let (caches, slow, source) = (self.caches.clone(), self.slow.clone(), source.clone());
        let zone = self.zone.clone();
        self.lacs.subscribe(key, None, move |sender| {
            follow_lac(caches, slow, zone, source, sender)
        })
    }

    /// The LAC of an open segment now (no waiting): the highest any
    /// replica reports, once enough replicas answered that one of them
    /// holds every acknowledged entry (write quorum - ack quorum + 1), and
    /// never below one answered before on this node.
    /// `Ok(None)`: no entry was confirmed yet. An error when too few
    /// answered: an unknown LAC is never "nothing confirmed".
    pub async fn current_lac(&self, source: &SegmentSource) -> Result<Option<u64>> {
        let ensemble = &source.segment.ensemble;
        let asks = ensemble.iter().map(|node| async move {
            let answer = tokio::time::timeout(
                REQUEST_DEADLINE,
                read_lac(&self.caches, source, node, None, Duration::ZERO),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no answer in {REQUEST_DEADLINE:?}")));
            (node, answer)
        });
        let (mut best, mut answered, mut errors) = (None, 0usize, Vec::new());
        for (node, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(lac) => {
                    answered += 1;
                    best = best.max(lac);
                }
                Err(reason) => {
                    self.slow.mark(node);
                    errors.push(format!("{node}: {reason}"));
                }
            }
        }
        let segment = &source.segment;
        // Every acknowledged entry is on A of the E nodes the owner sends to,
        // so E − A + 1 answers include one that has the highest LAC piggybacked
        // on an acknowledged entry (the write quorum W does not bound where
        // acks come from).
        let needed = (ensemble.len().saturating_sub(segment.ack_quorum as usize) + 1)
            .min(ensemble.len().max(1));
        if answered < needed {
            return Err(source.unavailable(format!(
                "LAC unknown: {answered} of {} replicas answered, {needed} needed: {}",
                ensemble.len(),
                errors.join("; ")
            )));
        }
        let key = (source.log_id, source.segment.segment_id);
        let Some(best) = best else {
            return Ok(self.answered_lacs.get(&key).await);
        };
        let answered = self
            .answered_lacs
            .entry(key)
            .and_upsert_with(|before| {
                std::future::ready(before.map_or(best, |before| best.max(*before.value())))
            })
            .await;
        Ok(Some(*answered.value()))
    }

    /// Segments with a running LAC long-poll on this node.
    pub fn followed_segments(&self) -> usize {
        self.lacs.len()
    }
}

/// One LAC request with a deadline: the wait it asks for plus
/// [`REQUEST_DEADLINE`].
async fn read_lac(
    caches: &CacheClients,
    source: &SegmentSource,
    node: &str,
    after: Option<u64>,
    wait: Duration,
) -> std::result::Result<Option<u64>, String> {
    let ask = async {
        let mut client = caches.client(node).await.map_err(|e| e.to_string())?;
        let response = client
            .read_lac(ReadLacRequest {
                segment: Some(source.reference()),
                after_entry: after,
                timeout_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            })
            .await
            .map_err(|status| status.message().to_owned())?;
        Ok(response.into_inner().lac)
    };
    let deadline = wait + REQUEST_DEADLINE;
    tokio::time::timeout(deadline, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no LAC answer in {deadline:?}")))
}

/// Long-polls one replica at a time for the LAC, one in this node's zone
/// first; a replica that fails or misses its deadline is asked last for a
/// while.
async fn follow_lac(
    caches: Arc<CacheClients>,
    slow: Arc<SlowNodes>,
    zone: Arc<str>,
    source: SegmentSource,
    sender: Arc<watch::Sender<Option<u64>>>,
) {
    let mut turn = 0;
    loop {
        let order = slow.order(&source.segment, &zone, turn);
        let Some(node) = order.first().map(|n| n.to_string()) else {
            return;
        };
        let known = *sender.borrow();
        match read_lac(&caches, &source, &node, known, LAC_POLL).await {
            Ok(lac) if lac > known => {
                sender.send_replace(lac);
            }
            Ok(_) => {}
            Err(reason) => {
                tracing::debug!(log = %source.log, segment = source.segment.segment_id, node, "LAC poll failed: {reason}");
                slow.mark(&node);
                turn += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(ensemble: &[&str], zones: &[&str]) -> SegmentMeta {
        SegmentMeta::open(1, ensemble.iter().map(|n| n.to_string()).collect(), 3, 2, 0)
            .with_zones(zones.iter().map(|z| z.to_string()).collect())
    }

    #[test]
    fn replicas_in_the_readers_zone_are_asked_first_and_slow_ones_last() {
        let slow = SlowNodes::default();
        let segment = segment(&["c1", "c2", "c3"], &["a", "b", "c"]);
        for turn in 0..6 {
            let order = slow.order(&segment, "b", turn);
            assert_eq!(order[0], "c2", "turn {turn}: {order:?}");
            assert_eq!(order.len(), 3);
        }
        // The others still take turns behind it.
        let seconds: std::collections::BTreeSet<&str> = (0..6)
            .map(|turn| slow.order(&segment, "b", turn)[1])
            .collect();
        assert_eq!(seconds.len(), 2, "{seconds:?}");
        // The local replica failed: asked last, the others first.
        slow.mark("c2");
        assert_eq!(*slow.order(&segment, "b", 0).last().unwrap(), "c2");
        // No zone of the reader's: plain rotation.
        let fresh = SlowNodes::default();
        assert_eq!(fresh.order(&segment, "", 1), ["c2", "c3", "c1"]);
    }

    #[test]
    fn locality_needs_both_zones() {
        let placed = segment(&["c1", "c2"], &["a", ""]);
        assert_eq!(locality(&placed, "a", "c1"), Locality::Same);
        assert_eq!(locality(&placed, "b", "c1"), Locality::Cross);
        assert_eq!(locality(&placed, "a", "c2"), Locality::Unknown);
        assert_eq!(locality(&placed, "", "c1"), Locality::Unknown);
        assert_eq!(locality(&placed, "a", "c9"), Locality::Unknown);
        // A segment from before zones.
        let old = segment(&["c1"], &[]);
        assert_eq!(locality(&old, "a", "c1"), Locality::Unknown);
    }
}
