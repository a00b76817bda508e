//! The tiered read loop: one task per `Read` call walks the log's segments
//! in offset order, each from the tier that holds it:
//!
//! | segment | tier |
//! |---|---|
//! | offloaded | Parquet on object storage; the cache copy if the object fails and the copy is still there |
//! | sealed | any cache replica, up to its sealed last entry |
//! | open | any cache replica, up to the LAC; with `follow`, waits for the LAC to move |
//!
//! Between segments (and while waiting) it takes the latest manifest view,
//! so a segment offloaded and dropped from the cache mid-read is picked up
//! from Parquet at the next offset: no gap, no duplicate. Offsets below the
//! trim point are refused with the first readable offset.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use dlog_meta::cache_clients::CacheClients;
use dlog_meta::manifest::{self, Manifest, SegmentMeta, SegmentState};
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_wire::ids::{EntryId, Offset};
use dlog_wire::names::LogName;
pub use dlog_wire::record::Start;
use dlog_wire::record::StoredRecord;
use tokio::sync::{mpsc, watch};

use crate::admission::Admission;
use crate::cache_tier::{CacheTier, SegmentSource};
use crate::error::{Error, Result};
use crate::log_view::{LogView, LogViews};
use crate::parquet_tier::{Column, ParquetTier};
use crate::series;

/// Batches a read may have queued for its client, beyond the one it builds.
pub const READ_CHANNEL: usize = 4;
/// The largest response message the read service sends.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Bytes a record takes in a response, about: its size plus offset,
/// timestamp, txid and framing.
fn record_bytes(record: &StoredRecord) -> usize {
    record.record.size() + 32
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Counts a following read while it runs.
struct TailingRead(Arc<std::sync::atomic::AtomicUsize>);

impl TailingRead {
    fn start(count: &Arc<std::sync::atomic::AtomicUsize>) -> TailingRead {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TailingRead(count.clone())
    }
}

impl Drop for TailingRead {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One `Read` call.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub log: LogName,
    pub start: Start,
    pub limit: Option<u64>,
    pub follow: bool,
    /// Only the log with this id: `NOT_FOUND` once it is gone, even if a
    /// log of the same name exists. `None`: the id the read first sees.
    pub log_id: Option<u64>,
    /// Who asks (its address), for the per-client bound; `None`: unknown.
    pub client: Option<String>,
}

/// The incarnation a read of `log` reads in `view`: the `pinned` one,
/// which must be the view's (an older one was deleted: `NOT_FOUND`; a newer
/// one this node has not seen yet: retry), or else the view's.
fn incarnation(log: &LogName, view: &LogView, pinned: Option<u64>) -> Result<u64> {
    let Some(meta) = &view.meta else {
        return Err(manifest::Error::LogNotFound(log.clone()).into());
    };
    match pinned {
        Some(log_id) if log_id < meta.log_id => {
            Err(manifest::Error::LogNotFound(log.clone()).into())
        }
        Some(log_id) if log_id > meta.log_id => Err(Error::NotSeenYet {
            log: log.clone(),
            log_id,
        }),
        _ => Ok(meta.log_id),
    }
}

/// What a read delivers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadItem {
    Records(Vec<StoredRecord>),
    /// The log was marked end-of-stream and everything was delivered.
    EndOfStream,
}

/// Where a log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub first_offset: u64,
    pub next_offset: u64,
    pub end_of_stream: bool,
    /// The incarnation measured.
    pub log_id: u64,
}

/// Settings of a reader node (the `[reader]` section of the node settings
/// file).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReaderOptions {
    /// Capacity of the shared cache of entries read from cache nodes.
    pub entry_cache_bytes: u64,
    /// Capacity of the shared cache of decoded Parquet row groups.
    pub row_group_cache_bytes: u64,
    /// Records per streamed message, at most.
    pub max_batch_records: usize,
    /// Record bytes per streamed message, at most (a message holds at
    /// least one record); clamped to half the response limit. With the
    /// channel of [`READ_CHANNEL`] batches this bounds what one slow
    /// client pins: about `(READ_CHANNEL + 1) * max_batch_bytes`.
    pub max_batch_bytes: usize,
    /// Reads running at once on this node; more are `RESOURCE_EXHAUSTED`.
    pub max_reads: usize,
    /// Reads running at once for one client (by address).
    pub max_reads_per_client: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            entry_cache_bytes: 256 * 1024 * 1024,
            row_group_cache_bytes: 256 * 1024 * 1024,
            max_batch_records: 1000,
            max_batch_bytes: 8 * 1024 * 1024,
            max_reads: 10_000,
            max_reads_per_client: 1_000,
        }
    }
}

/// The read engine of a reader node; shared by all its reads.
#[derive(Debug)]
pub struct ReadEngine {
    manifest: Manifest,
    views: LogViews,
    cache: CacheTier,
    parquet: ParquetTier,
    admission: Admission,
    /// Reads running with `follow`.
    tailing_reads: Arc<std::sync::atomic::AtomicUsize>,
    options: ReaderOptions,
}

/// A position target that skips records until the first match.
#[derive(Debug, Clone, Copy)]
enum Seek {
    Txid(i64),
    Timestamp(i64),
}

impl Seek {
    fn matches(self, record: &StoredRecord) -> bool {
        match self {
            Seek::Txid(x) => record.record.txid.is_some_and(|t| t >= x),
            Seek::Timestamp(t) => record.timestamp_ms >= t,
        }
    }

    /// A closed segment that cannot hold the first match.
    fn skips(self, segment: &SegmentMeta) -> bool {
        if segment.end_offset.is_none() {
            return false;
        }
        match self {
            Seek::Txid(x) => segment.max_txid.is_none_or(|max| max < x),
            Seek::Timestamp(t) => segment.max_timestamp_ms.is_some_and(|max| max < t),
        }
    }
}

/// The sending side of one read: batches records, counts the limit,
/// applies a pending seek.
struct Out {
    sender: mpsc::Sender<Result<ReadItem>>,
    batch: Vec<StoredRecord>,
    max_batch: usize,
    /// Record bytes in `batch`, and the most a batch may hold.
    batch_bytes: usize,
    max_batch_bytes: usize,
    remaining: Option<u64>,
    seek: Option<Seek>,
    /// The next offset to deliver.
    next: u64,
    /// Whether the read waited at the tail: from then on, its deliveries
    /// count in the append → delivery latency.
    tailing: bool,
    /// The entry holding `next`, when known: (segment id, entry id). Lets
    /// a tailing read go on from where it stopped instead of searching
    /// the segment again at every LAC move.
    next_entry: Option<(u64, u64)>,
}

impl Out {
    fn done(&self) -> bool {
        self.remaining == Some(0) || self.sender.is_closed()
    }

    /// Takes the record if it is the next one (earlier ones are skipped).
    async fn push(&mut self, record: &StoredRecord) {
        if record.offset < self.next || self.done() {
            return;
        }
        #[cfg(test)]
        crate::testing::maybe_panic(record.offset);
        self.next = record.offset.saturating_add(1);
        if let Some(seek) = self.seek {
            if !seek.matches(record) {
                return;
            }
            self.seek = None;
        }
        let bytes = record_bytes(record);
        if !self.batch.is_empty() && self.batch_bytes + bytes > self.max_batch_bytes {
            self.flush().await;
        }
        self.batch.push(record.clone());
        self.batch_bytes += bytes;
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(1);
        }
        if self.batch.len() >= self.max_batch
            || self.batch_bytes >= self.max_batch_bytes
            || self.remaining == Some(0)
        {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if !self.batch.is_empty() {
            metrics::counter!(series::SERVED_RECORDS).increment(self.batch.len() as u64);
            metrics::counter!(series::SERVED_BYTES).increment(self.batch_bytes as u64);
            if self.tailing {
                let oldest = self.batch[0].timestamp_ms;
                let waited = dlog_wire::now_ms().saturating_sub(oldest).max(0);
                metrics::histogram!(series::DELIVERY_LATENCY).record(waited as f64 / 1000.0);
            }
            self.batch_bytes = 0;
            let batch = std::mem::take(&mut self.batch);
            let _ = self.sender.send(Ok(ReadItem::Records(batch))).await;
        }
    }
}

impl ReadEngine {
    pub fn new(
        manifest: Manifest,
        objects: ObjectStoreHandle,
        options: ReaderOptions,
    ) -> ReadEngine {
        let caches = Arc::new(CacheClients::new(manifest.clone()));
        Self::with_cache_clients(manifest, objects, options, caches)
    }

    /// [`ReadEngine::new`] reaching the cache nodes through `caches`.
    pub fn with_cache_clients(
        manifest: Manifest,
        objects: ObjectStoreHandle,
        options: ReaderOptions,
        caches: Arc<CacheClients>,
    ) -> ReadEngine {
        ReadEngine {
            views: LogViews::new(manifest.clone()),
            cache: CacheTier::new(caches, options.entry_cache_bytes),
            parquet: ParquetTier::new(objects, options.row_group_cache_bytes),
            admission: Admission::new(options.max_reads, options.max_reads_per_client),
            tailing_reads: Arc::default(),
            manifest,
            options,
        }
    }

    /// This node's zone (`--zone`): replicas in it are read first.
    pub fn with_zone(mut self, zone: &str) -> ReadEngine {
        self.cache.set_zone(zone);
        self
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Logs with a running manifest watch on this node.
    pub fn watched_logs(&self) -> usize {
        self.views.watched()
    }

    /// Open segments with a running LAC poll on this node.
    pub fn followed_segments(&self) -> usize {
        self.cache.followed_segments()
    }

    /// Starts a read; its records arrive on the returned channel, in
    /// offset order, and it stops when the receiver is dropped.
    pub fn read(self: &Arc<Self>, spec: ReadSpec) -> mpsc::Receiver<Result<ReadItem>> {
        let (sender, receiver) = mpsc::channel(READ_CHANNEL);
        let admitted = self.admission.admit(spec.client.as_deref());
        let engine = self.clone();
        tokio::spawn(async move {
            let _tailing = spec
                .follow
                .then(|| TailingRead::start(&engine.tailing_reads));
            let _permit = match admitted {
                Ok(permit) => permit,
                Err(err) => {
                    let _ = sender.send(Err(err)).await;
                    return;
                }
            };
            let mut out = Out {
                sender: sender.clone(),
                batch: Vec::new(),
                max_batch: engine.options.max_batch_records.max(1),
                batch_bytes: 0,
                max_batch_bytes: engine
                    .options
                    .max_batch_bytes
                    .clamp(1, MAX_RESPONSE_BYTES / 2),
                remaining: spec.limit,
                seek: None,
                next: 0,
                tailing: false,
                next_entry: None,
            };
            let work = async {
                let result = engine.run(&spec, &mut out).await;
                out.flush().await;
                result
            };
            let result = tokio::select! {
                // A panic is an error the client sees, never a clean end of
                // the stream (which it would take for a complete read).
                result = AssertUnwindSafe(work).catch_unwind() => {
                    result.unwrap_or_else(|panic| Err(Error::Internal(format!(
                        "the read task panicked: {}",
                        panic_message(panic.as_ref())
                    ))))
                }
                // The client went away: stop now, also while waiting for a
                // manifest change or a LAC move, so the shared watch and
                // long-poll stop with their last reader.
                () = sender.closed() => return,
            };
            if let Err(err) = result {
                tracing::debug!(log = %spec.log, "read ended: {err}");
                let _ = sender.send(Err(err)).await;
            }
        });
        receiver
    }

    /// Reads running on this node.
    pub fn running_reads(&self) -> usize {
        self.admission.running()
    }

    /// Sets the role's gauges: running reads, and those following the tail.
    pub fn sample_gauges(&self) {
        metrics::gauge!(series::ACTIVE_READS).set(self.running_reads() as f64);
        metrics::gauge!(series::TAILING_READS).set(
            self.tailing_reads
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        );
    }

    /// Checks what can be refused before a read streams anything: the log
    /// exists (as incarnation `pinned`, if given), and an offset start is
    /// not below the trim point; answers the id of the log the read is to
    /// read. Costs no cache-node round trip (unlike
    /// [`ReadEngine::check_tail`]).
    pub async fn check_start(
        &self,
        log: &LogName,
        start: Start,
        pinned: Option<u64>,
    ) -> Result<u64> {
        let view = self.views.subscribe(log).await?.borrow().clone();
        let log_id = incarnation(log, &view, pinned)?;
        match start {
            Start::Offset(offset) if offset < view.trim_point => Err(Error::Trimmed {
                log: log.clone(),
                offset,
                first_offset: view.trim_point,
            }),
            _ => Ok(log_id),
        }
    }

    /// The readable range of a log.
    pub async fn check_tail(&self, log: &LogName) -> Result<Tail> {
        let views = self.views.subscribe(log).await?;
        let view = views.borrow().clone();
        let log_id = incarnation(log, &view, None)?;
        let next_offset = self.tail(log, &view).await?;
        Ok(Tail {
            first_offset: view.trim_point.min(next_offset),
            next_offset,
            end_of_stream: view.meta.as_ref().and_then(|m| m.end_of_stream).is_some(),
            log_id,
        })
    }

    /// One past the last acknowledged record.
    async fn tail(&self, log: &LogName, view: &LogView) -> Result<u64> {
        let Some(open) = view.open_segment() else {
            return Ok(view.sealed_end());
        };
        let source = source(log, view, open);
        // An unknown LAC is an error (the client retries), never the start
        // of the open segment: that would move the tail backwards.
        match self.cache.current_lac(&source).await? {
            Some(lac) => Ok(self
                .cache
                .entry(&source, EntryId(lac), EntryId(lac))
                .await?
                .header
                .end_offset()),
            None => Ok(open.start_offset),
        }
    }

    async fn run(&self, spec: &ReadSpec, out: &mut Out) -> Result<()> {
        let log = &spec.log;
        let mut views = self.views.subscribe(log).await?;
        let view = views.borrow_and_update().clone();
        // Before anything is taken from the view: a start measured on
        // another incarnation would be an offset of another log.
        let read_id = incarnation(log, &view, spec.log_id)?;
        out.next = match spec.start {
            Start::Offset(offset) => offset,
            Start::Earliest | Start::Txid(_) | Start::Timestamp(_) => view.trim_point,
            Start::Tail => self.tail(log, &view).await?,
        };
        out.seek = match spec.start {
            Start::Txid(x) => Some(Seek::Txid(x)),
            Start::Timestamp(t) => Some(Seek::Timestamp(t)),
            _ => None,
        };
        loop {
            if out.done() {
                return Ok(());
            }
            let view = views.borrow_and_update().clone();
            let Some(meta) = &view.meta else {
                return Err(manifest::Error::LogNotFound(log.clone()).into());
            };
            // One read, one incarnation: a view of another log id means the
            // log was deleted (and re-created) while this read was held
            // back; its offsets name other records now.
            if meta.log_id != read_id {
                return Err(manifest::Error::LogNotFound(log.clone()).into());
            }
            if out.next < view.trim_point {
                return Err(Error::Trimmed {
                    log: log.clone(),
                    offset: out.next,
                    first_offset: view.trim_point,
                });
            }
            if meta.end_of_stream.is_some_and(|end| out.next >= end) {
                out.flush().await;
                let _ = out.sender.send(Ok(ReadItem::EndOfStream)).await;
                return Ok(());
            }
            let Some(segment) = view.segment_for(out.next) else {
                // Past every segment (e.g. the owner is opening the next one).
                out.flush().await;
                if !spec.follow || !self.wait_for_change(&mut views, log, None).await? {
                    return Ok(());
                }
                continue;
            };
            if let Some(seek) = out.seek
                && seek.skips(segment)
            {
                out.next = out.next.max(segment.end_offset.unwrap_or(out.next));
                continue;
            }
            let source = source(log, &view, segment);
            match segment.state {
                SegmentState::Offloaded => match self.read_offloaded(&source, out).await {
                    Ok(()) => {}
                    Err(err) if !segment.cache_dropped => {
                        tracing::warn!(%log, segment = segment.segment_id, "Parquet read failed, using the cache copy: {err}");
                        self.read_sealed(&source, out).await?;
                    }
                    Err(err) if err.object_missing() => {
                        // Retention moves the trim point before it deletes
                        // the object: a newer view refuses the offset with
                        // the first readable one (OUT_OF_RANGE).
                        out.flush().await;
                        if !self
                            .wait_for_change(&mut views, log, Some(Duration::from_secs(2)))
                            .await?
                        {
                            return Err(err);
                        }
                    }
                    Err(err) => return Err(err),
                },
                SegmentState::Sealed => {
                    if let Err(err) = self.read_sealed(&source, out).await {
                        // Offloaded and dropped meanwhile? A newer view says.
                        out.flush().await;
                        if !self
                            .wait_for_change(&mut views, log, Some(Duration::from_secs(2)))
                            .await?
                        {
                            return Err(err);
                        }
                        tracing::info!(%log, segment = segment.segment_id, next = out.next, "cache read failed ({err}); re-planning from the newer manifest view");
                    }
                }
                SegmentState::Open => {
                    let caught_up = self
                        .read_open(&source, out, spec.follow, &mut views)
                        .await?;
                    if caught_up && !spec.follow {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Waits for a newer view of the log (or `timeout`); false on timeout.
    async fn wait_for_change(
        &self,
        views: &mut watch::Receiver<Arc<LogView>>,
        log: &LogName,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let changed = async {
            if views.changed().await.is_err() {
                // The shared watch restarted: subscribe to the new one.
                *views = self.views.subscribe(log).await?;
            }
            Ok::<_, Error>(())
        };
        match timeout {
            Some(timeout) => match tokio::time::timeout(timeout, changed).await {
                Ok(result) => result.map(|()| true),
                Err(_) => Ok(false),
            },
            None => changed.await.map(|()| true),
        }
    }

    async fn read_offloaded(&self, source: &SegmentSource, out: &mut Out) -> Result<()> {
        let segment = &source.segment;
        let object = segment.object.as_ref().ok_or_else(|| Error::Corrupt {
            log: source.log.clone(),
            segment: segment.segment_id,
            reason: "offloaded without an object".to_owned(),
        })?;
        let (column, from) = match out.seek {
            Some(Seek::Txid(x)) => (Column::Txid, x),
            Some(Seek::Timestamp(t)) => (Column::Timestamp, t),
            None => (Column::Offset, i64::try_from(out.next).unwrap_or(i64::MAX)),
        };
        let groups = self.parquet.row_groups_from(object, column, from).await?;
        let total = self.parquet.metadata(object).await?.num_row_groups();
        // The segment's own rows: a merged object holds its neighbours' too.
        let end = segment.end_offset.unwrap_or(u64::MAX);
        let own = segment.start_offset..end;
        // From the first row group that may hold the start, every one after.
        for group in groups.first().copied().unwrap_or(total)..total {
            let rows = self.parquet.row_group(object, group).await?;
            for record in rows.iter().filter(|r| own.contains(&r.offset)) {
                out.push(record).await;
            }
            let past_end = rows.last().is_some_and(|r| r.offset + 1 >= end);
            if out.done() || past_end {
                break;
            }
        }
        if out.done() {
            return Ok(());
        }
        out.next = out.next.max(segment.end_offset.unwrap_or(out.next));
        Ok(())
    }

    async fn read_sealed(&self, source: &SegmentSource, out: &mut Out) -> Result<()> {
        let end = source
            .segment
            .end_offset
            .unwrap_or(source.segment.start_offset);
        if let Some(last) = source.segment.last_entry_id {
            self.read_entries(source, out, last).await?;
        }
        if !out.done() {
            out.next = out.next.max(end);
        }
        Ok(())
    }

    /// Reads the open segment up to the LAC. Returns whether the read
    /// caught up with the LAC and nothing moved while it waited (without
    /// `follow` it does not wait). Returns early when the view changes
    /// (e.g. the segment was sealed), so the caller re-plans.
    async fn read_open(
        &self,
        source: &SegmentSource,
        out: &mut Out,
        follow: bool,
        views: &mut watch::Receiver<Arc<LogView>>,
    ) -> Result<bool> {
        let mut lacs = self.cache.lac(source);
        let followed = *lacs.borrow_and_update();
        // A following read may not know the LAC yet: it goes on from
        // `out.next`, and the shared long-poll brings the LAC. A read that
        // stops at the tail must know where the tail is: ending here would
        // look like a complete read, so an unknown LAC is its error
        // (`UNAVAILABLE`; the SDK retries).
        let now = match self.cache.current_lac(source).await {
            Ok(now) => now,
            Err(err) if !follow && followed.is_none() => return Err(err),
            Err(_) => None,
        };
        let mut lac = followed.max(now);
        loop {
            if let Some(lac) = lac {
                self.read_entries(source, out, lac).await?;
            }
            out.flush().await;
            if out.done() || !follow {
                return Ok(true);
            }
            tokio::select! {
                changed = lacs.changed() => {
                    if changed.is_err() {
                        lacs = self.cache.lac(source);
                    }
                    lac = lac.max(*lacs.borrow_and_update());
                    out.tailing = true;
                }
                changed = views.changed() => {
                    if changed.is_err() {
                        *views = self.views.subscribe(&source.log).await?;
                    }
                    return Ok(false);
                }
            }
        }
    }

    /// Delivers records from `out.next` through entry `last`.
    async fn read_entries(&self, source: &SegmentSource, out: &mut Out, last: u64) -> Result<()> {
        let segment = source.segment.segment_id;
        let mut entry_id = match out.next_entry {
            Some((known, entry_id)) if known == segment => entry_id,
            _ => {
                let end = self
                    .cache
                    .entry(source, EntryId(last), EntryId(last))
                    .await?
                    .header
                    .end_offset();
                if out.next >= end {
                    out.next_entry = Some((segment, last + 1));
                    return Ok(());
                }
                self.cache
                    .locate(source, Offset(out.next), EntryId(last))
                    .await?
                    .0
            }
        };
        while entry_id <= last && !out.done() {
            let entry = self
                .cache
                .entry(source, EntryId(entry_id), EntryId(last))
                .await?;
            for (i, record) in entry.records.iter().enumerate() {
                let offset = entry.header.first_offset + i as u64;
                if offset < out.next {
                    continue;
                }
                let stored = StoredRecord {
                    offset,
                    timestamp_ms: record.timestamp_ms,
                    record: record.record.clone(),
                };
                out.push(&stored).await;
            }
            entry_id += 1;
        }
        out.next_entry = Some((segment, entry_id));
        Ok(())
    }
}

fn source(log: &LogName, view: &LogView, segment: &SegmentMeta) -> SegmentSource {
    SegmentSource {
        log: log.clone(),
        log_id: view.meta.as_ref().map_or(0, |m| m.log_id),
        segment: segment.clone(),
    }
}
