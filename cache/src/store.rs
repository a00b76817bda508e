//! The cache node's storage engine: journal + index + hot-entry cache.
//!
//! ```text
//!   segment entries on this node:   0  1  2  3  4  5  6  7
//!                                   ^^^^^^^^^^^^^^  ^^^^^
//!                        readable (<= LAC)    held, durable, not yet known
//!                                                   to be acknowledged
//!                                          LAC ─┘        └─ last_entry_id
//! ```
//!
//! Guarantees:
//! * an add completes only after its entry is fdatasynced (group commit);
//! * a node holds a prefix of each segment: an add past the end of what it
//!   holds or has queued is refused (`Gap`), so an accepted add proves the
//!   entries before it are held too (recovery's copies rely on it);
//! * adds with an epoch below the segment's fencing epoch are refused, also
//!   for entries the node does not hold yet, and a fence is raised in memory
//!   before it is durable, so no add slips in after a fence was accepted;
//!   a fence answers only once durable, and then counts every add accepted
//!   before it;
//! * normal reads never go past the LAC; reads of a sealed segment go up to
//!   its sealed last entry; recovery reads carry the fencing epoch, fence
//!   the segment first (sticky) and may read to the last entry;
//! * every read checks the entry's CRC; a bad one marks the segment damaged
//!   here (`DATA_LOSS`) so readers go to another replica;
//! * a segment damaged here refuses adds, fences and reads with
//!   `DATA_LOSS`: a node that cannot serve its entries must not count as a
//!   fence answer (recovery would take its progress for coverage) nor
//!   acknowledge more of it. Damage replay finds is written back as a
//!   `Damaged` record, so the mark outlives the file of the damaged record;
//! * the journal directory is locked (`flock` on `journal.lock`) while the
//!   store is open: a second store on it is refused;
//! * when replay could not locate some records (see [`crate::index`]), the
//!   node answers every add, fence and read with `DATA_LOSS`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use dlog_wire::codec;
use dlog_wire::ids::Epoch;
use moka::sync::Cache;

use crate::error::{Error, Result};
use crate::identity;
use crate::index::{Index, Progress, SegmentState};
use crate::journal::{self, DamageKind, Journal, JournalOptions, Location, Record};
use crate::segment_key::SegmentKey;
use crate::series::{self, AddSeries};

/// Storage settings of a cache node.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub journal: JournalOptions,
    /// Bytes of recently added entries kept in memory for tailing readers.
    pub hot_cache_bytes: u64,
}

impl StoreOptions {
    pub fn new(journal_dir: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            journal: JournalOptions::new(journal_dir),
            hot_cache_bytes: 256 * 1024 * 1024,
        }
    }
}

type HotKey = (SegmentKey, u64);

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Up to the LAC: what tailing readers may see.
    Committed,
    /// Up to a sealed segment's last entry, as the manifest records it.
    Sealed { last_entry: u64 },
    /// Up to the last entry held, after fencing at `epoch` (recovery).
    Recovery { epoch: u64 },
}

/// The storage engine; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct CacheStore {
    journal: Journal,
    index: Arc<Mutex<Index>>,
    hot: Cache<HotKey, Bytes>,
    series: AddSeries,
    /// Reads journal payloads on the calling task instead of a blocking
    /// thread (the simulation, [`CacheStore::open_sim`]).
    inline_reads: bool,
    /// The journal directory's lock; dropped last, after the writer stopped.
    _lock: std::fs::File,
}

/// Refuses everything but drops while the node is lost (see
/// [`Index::mark_lost`]): `DATA_LOSS`, so readers and recovery go elsewhere.
fn check_not_lost(index: &Index, segment: SegmentKey) -> Result<()> {
    match index.lost() {
        Some(reason) => Err(Error::Corrupt {
            segment,
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Refuses adds, fences and reads of a segment damaged here, and of every
/// segment while the node is lost: `DATA_LOSS`.
fn check_usable(index: &Index, segment: SegmentKey) -> Result<()> {
    check_not_lost(index, segment)?;
    match index.segment(&segment).and_then(|s| s.damaged.as_ref()) {
        Some(reason) => Err(Error::Corrupt {
            segment,
            reason: reason.clone(),
        }),
        None => Ok(()),
    }
}

/// The state of `segment` for a write at `epoch` (an add, a LAC, a
/// fence), created when the node has not seen the segment yet. Refused when
/// the segment was dropped, its data is lost or damaged, or it is fenced
/// above `epoch`: every write to a segment passes this one check.
fn unfenced_segment(
    index: &mut Index,
    segment: SegmentKey,
    epoch: u64,
) -> Result<&mut SegmentState> {
    if index.is_dropped(&segment) {
        return Err(Error::Dropped { segment });
    }
    check_usable(index, segment)?;
    let state = index.segment_or_new(segment);
    if epoch < state.fence_epoch {
        return Err(Error::Fenced {
            segment,
            epoch,
            fenced: state.fence_epoch,
        });
    }
    Ok(state)
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

impl CacheStore {
    /// Replays the journal, rebuilds the index and starts the writer.
    /// Blocking: call from a blocking context or `spawn_blocking`.
    pub fn open(options: StoreOptions) -> Result<CacheStore> {
        Self::open_with(options, false, |options, last_file, marks, on_durable| {
            Journal::start_after(journal::OsFiles, options, last_file, marks, on_durable)
        })
    }

    /// [`CacheStore::open`] for the deterministic simulation: the journal
    /// writes through `layer` from a task of the current runtime, waiting
    /// `sync_delay()` between each batch's write and its sync, and reads run
    /// on the calling task. Nothing runs on another thread.
    pub fn open_sim<L: journal::FileLayer>(
        options: StoreOptions,
        layer: L,
        sync_delay: journal::SyncDelay,
    ) -> Result<CacheStore> {
        Self::open_with(options, true, |options, last_file, marks, on_durable| {
            Journal::start_task(layer, options, last_file, marks, on_durable, sync_delay)
        })
    }

    fn open_with(
        options: StoreOptions,
        inline_reads: bool,
        start: impl FnOnce(JournalOptions, u64, Vec<Record>, journal::OnDurable) -> Result<Journal>,
    ) -> Result<CacheStore> {
        let dir = &options.journal.dir;
        let dir_lock =
            identity::lock_file(dir, identity::JOURNAL_LOCK_FILE).map_err(|err| match err {
                identity::Error::Locked { dir } => Error::Locked { dir },
                identity::Error::Io { source, .. } => Error::Io {
                    path: dir.display().to_string(),
                    what: "lock the journal directory",
                    source,
                },
                other => Error::Io {
                    path: dir.display().to_string(),
                    what: "lock the journal directory",
                    source: std::io::Error::other(other.to_string()),
                },
            })?;
        let replay = journal::replay(dir)?;
        let mut index = Index::default();
        for &file in &replay.files {
            index.note_file(file);
        }
        for (record, location) in &replay.records {
            index.apply(record, *location);
        }
        // Damage marks to write back (see the module doc).
        let mut marks = Vec::new();
        for damage in &replay.damage {
            let (file, offset) = (damage.file, damage.offset);
            match damage.kind {
                DamageKind::TornTail => {}
                DamageKind::Segment { segment, fence } => {
                    let reason = format!("journal file {file} damaged at byte {offset}");
                    if index.mark_damaged(segment, reason.clone()) {
                        marks.push(Record::Damaged { segment, reason });
                    }
                    if let (true, Some(state)) = (fence, index.segment_mut(&segment)) {
                        // A fence of unknown epoch: refuse every epoch.
                        state.fence_epoch = u64::MAX;
                    }
                }
                DamageKind::Unlocatable => index.mark_lost(format!(
                    "journal file {file} damaged at byte {offset}: the records after it \
                     cannot be located, so this node may have lost records of any segment and \
                     serves none (wipe its journal directory and start it with --reinit-cache \
                     to bring it back empty)"
                )),
            }
        }
        if let Some(reason) = index.lost() {
            tracing::error!("cache store: {reason}");
        }
        tracing::info!(
            records = replay.records.len(),
            segments = index.segment_count(),
            damaged = replay
                .damage
                .iter()
                .filter(|d| d.kind != DamageKind::TornTail)
                .count(),
            "cache store: journal replayed"
        );
        let index = Arc::new(Mutex::new(index));
        let hot: Cache<HotKey, Bytes> = Cache::builder()
            .weigher(|_, bytes: &Bytes| u32::try_from(bytes.len()).unwrap_or(u32::MAX))
            .max_capacity(options.hot_cache_bytes)
            .build();
        let on_durable: journal::OnDurable = {
            let index = index.clone();
            let hot = hot.clone();
            Box::new(move |batch: &[(Record, Location)], active: u64| {
                let mut index = lock(&index);
                for (record, location) in batch {
                    index.apply(record, *location);
                    if let Record::Entry {
                        segment,
                        entry_id,
                        bytes,
                        ..
                    } = record
                    {
                        hot.insert((*segment, *entry_id), bytes.clone());
                    }
                }
                index.take_deletable_files(active)
            })
        };
        let last_file = replay.files.last().copied().unwrap_or(0);
        let journal = start(options.journal, last_file, marks, on_durable)?;
        Ok(CacheStore {
            journal,
            index,
            hot,
            series: AddSeries::new(),
            inline_reads,
            _lock: dir_lock,
        })
    }

    /// Validates an entry and queues it; the returned future completes once
    /// it is durable. Calls made in order on one segment are journaled in
    /// that order, so a stream can pipeline adds.
    pub fn add(
        &self,
        segment: SegmentKey,
        epoch: Epoch,
        entry: Bytes,
    ) -> Result<impl Future<Output = Result<u64>> + Send + 'static> {
        let arrived = std::time::Instant::now();
        let header = codec::verify_entry(&entry).map_err(Error::InvalidEntry)?;
        if header.log_id != segment.log_id || header.segment_id != segment.segment_id {
            return Err(Error::Mismatch(format!(
                "entry of segment {}/{} sent for segment {segment}",
                header.log_id, header.segment_id
            )));
        }
        if header.epoch > epoch.0 {
            return Err(Error::Mismatch(format!(
                "entry written at epoch {} sent with epoch {epoch}",
                header.epoch
            )));
        }
        let entry_id = header.entry_id;
        // The hot cache keeps it: not the request's whole buffer with it.
        let entry = codec::own_buffer(entry);
        let receiver = {
            let mut index = lock(&self.index);
            let state = unfenced_segment(&mut index, segment, epoch.0).inspect_err(|err| {
                if matches!(err, Error::Fenced { .. }) {
                    self.series.fenced.increment(1);
                }
            })?;
            if entry_id > state.held_end {
                return Err(Error::Gap {
                    segment,
                    entry: entry_id,
                    held_end: state.held_end,
                });
            }
            // Queued under the index lock, so a concurrent fence is ordered
            // strictly before or after this add in the journal.
            let receiver = self.journal.submit(Record::Entry {
                segment,
                entry_id,
                lac: header.lac,
                bytes: entry,
            })?;
            if entry_id == state.held_end {
                state.held_end += 1;
            }
            receiver
        };
        let duration = self.series.duration.clone();
        Ok(async move {
            receiver.await.map_err(|_| Error::ShuttingDown)??;
            duration.record(arrived.elapsed());
            Ok(entry_id)
        })
    }

    /// Records an explicit LAC (an idle owner's heartbeat to readers).
    pub fn advance_lac(&self, segment: SegmentKey, epoch: Epoch, lac: u64) -> Result<()> {
        let mut index = lock(&self.index);
        unfenced_segment(&mut index, segment, epoch.0)?.advance_lac(lac);
        Ok(())
    }

    /// Fences a segment at `epoch`: from now on adds below it are refused.
    /// Answers, once the fence is durable, with the node's progress.
    pub async fn fence(&self, segment: SegmentKey, epoch: Epoch) -> Result<Progress> {
        let Epoch(epoch) = epoch;
        let receiver = {
            let mut index = lock(&self.index);
            unfenced_segment(&mut index, segment, epoch)?.fence_epoch = epoch;
            self.journal.submit(Record::Fence { segment, epoch })?
        };
        receiver.await.map_err(|_| Error::ShuttingDown)??;
        let index = lock(&self.index);
        let state = index.segment(&segment).ok_or(Error::Dropped { segment })?;
        Ok(state.progress())
    }

    /// The end of the entries the node holds of the segment with no hole
    /// (or has queued to the journal), if it knows the segment.
    pub fn held_end(&self, segment: SegmentKey) -> Option<u64> {
        lock(&self.index).segment(&segment).map(|s| s.held_end)
    }

    /// The segment's progress now, if the node knows it.
    pub fn progress(&self, segment: SegmentKey) -> Option<Progress> {
        lock(&self.index).segment(&segment).map(|s| s.progress())
    }

    /// Waits until the LAC passes `after` (or is set at all, for `None`), at
    /// most `timeout`; returns the progress then.
    pub async fn wait_for_lac(
        &self,
        segment: SegmentKey,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Progress> {
        let mut receiver = {
            let mut index = lock(&self.index);
            if index.is_dropped(&segment) {
                return Err(Error::Dropped { segment });
            }
            index.segment_or_new(segment).subscribe()
        };
        let passed = |p: &Progress| match (p.lac, after) {
            (Some(lac), Some(after)) => lac > after,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let waited = tokio::time::timeout(timeout, receiver.wait_for(passed))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|progress| *progress);
        // Timed out, or the segment was dropped meanwhile: answer with what
        // is known.
        Ok(waited.unwrap_or_else(|| *receiver.borrow()))
    }

    /// Reads up to `max` consecutive entries from `from`.
    ///
    /// How far a read may go depends on who asks ([`ReadMode`]). Asking for
    /// an entry within the limit that the node does not hold is
    /// `EntryNotFound` (ask another replica).
    pub async fn read(
        &self,
        segment: SegmentKey,
        from: u64,
        max: usize,
        mode: ReadMode,
    ) -> Result<Vec<Bytes>> {
        self.read_page(segment, from, max, u64::MAX, mode).await
    }

    /// Like [`CacheStore::read`], and also stops before the entries pass
    /// `max_bytes` in all (the first entry is always read): a page whose
    /// work is bounded by count and by bytes.
    pub async fn read_page(
        &self,
        segment: SegmentKey,
        from: u64,
        max: usize,
        max_bytes: u64,
        mode: ReadMode,
    ) -> Result<Vec<Bytes>> {
        if let ReadMode::Recovery { epoch } = mode {
            self.fence(segment, Epoch(epoch)).await?;
        }
        let locations: Vec<(u64, Location)> = {
            let index = lock(&self.index);
            if index.is_dropped(&segment) {
                return Err(Error::Dropped { segment });
            }
            check_not_lost(&index, segment)?;
            let state = index
                .segment(&segment)
                .ok_or(Error::SegmentNotFound { segment })?;
            if let Some(reason) = &state.damaged {
                return Err(Error::Corrupt {
                    segment,
                    reason: reason.clone(),
                });
            }
            let progress = state.progress();
            let limit = match mode {
                ReadMode::Committed => progress.lac,
                ReadMode::Sealed { last_entry } => Some(last_entry),
                ReadMode::Recovery { .. } => progress.last_entry_id,
            };
            let Some(limit) = limit.filter(|limit| from <= *limit) else {
                return Ok(Vec::new());
            };
            let mut locations = Vec::new();
            let mut bytes = 0u64;
            for (expected, (&id, &location)) in
                (from..=limit).zip(state.entries.range(from..=limit))
            {
                bytes += u64::from(location.len);
                let full = !locations.is_empty() && bytes > max_bytes;
                if id != expected || locations.len() >= max || full {
                    break;
                }
                locations.push((id, location));
            }
            if locations.is_empty() {
                return Err(Error::EntryNotFound {
                    segment,
                    entry: from,
                });
            }
            locations
        };
        let mut entries = Vec::with_capacity(locations.len());
        for (entry_id, location) in locations {
            entries.push(self.read_entry(segment, entry_id, location).await?);
        }
        Ok(entries)
    }

    async fn read_entry(
        &self,
        segment: SegmentKey,
        entry_id: u64,
        location: Location,
    ) -> Result<Bytes> {
        if let Some(bytes) = self.hot.get(&(segment, entry_id)) {
            return Ok(bytes);
        }
        let reader = self.journal.reader();
        let bytes = if self.inline_reads {
            reader.read(location)?
        } else {
            tokio::task::spawn_blocking(move || reader.read(location))
                .await
                .map_err(|_| Error::ShuttingDown)??
        };
        if let Err(err) = codec::verify_entry(&bytes) {
            let reason = format!("entry {entry_id}: {err}");
            tracing::error!(%segment, entry_id, "cache store: checksum failure on read: {err}");
            lock(&self.index).mark_damaged(segment, reason.clone());
            return Err(Error::Corrupt { segment, reason });
        }
        self.hot.insert((segment, entry_id), bytes.clone());
        Ok(bytes)
    }

    /// Drops a segment (after it was offloaded): durable, then forgotten;
    /// journal files only it used are deleted.
    pub async fn drop_segment(&self, segment: SegmentKey) -> Result<()> {
        let receiver = self.journal.submit(Record::Drop { segment })?;
        receiver.await.map_err(|_| Error::ShuttingDown)??;
        Ok(())
    }

    /// Group-commit counters.
    pub fn journal_stats(&self) -> &journal::JournalStats {
        self.journal.stats()
    }

    /// The live segments the node knows (dropped ones excluded).
    pub fn segments(&self) -> Vec<SegmentKey> {
        lock(&self.index).segment_keys()
    }

    /// Number of segments the node knows.
    pub fn segment_count(&self) -> usize {
        lock(&self.index).segment_count()
    }

    /// Sets the gauges of what the node holds: segments, journal files and
    /// bytes (blocking I/O: lists the journal directory).
    pub fn sample_gauges(&self) {
        metrics::gauge!(series::SEGMENTS).set(self.segment_count() as f64);
        match self.journal.usage() {
            Ok(usage) => {
                metrics::gauge!(series::JOURNAL_FILES).set(usage.files as f64);
                metrics::gauge!(series::JOURNAL_BYTES).set(usage.bytes as f64);
            }
            Err(err) => tracing::debug!("journal usage not sampled: {err:#}"),
        }
    }

    /// Finishes queued writes and stops the writer.
    pub fn shutdown(&self) {
        self.journal.shutdown();
    }
}
