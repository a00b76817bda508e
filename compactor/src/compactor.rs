//! The compactor's work loop. Stateless: everything it needs is in the
//! manifest, so any number may run; work on a segment is claimed first.
//!
//! Each pass over the logs:
//! * offloads every `sealed` segment ([`crate::offload`]);
//! * drops offloaded segments from their cache nodes once the grace period
//!   after offload passed, then records that in the manifest;
//! * applies retention: moves the trim point past segments older than the
//!   namespace's retention age or beyond its retention size, then deletes
//!   whole segments below the trim point (explicit `dlog trim` included);
//!   with Iceberg tables on, a segment across the trim point has its file in
//!   the log's table cut there ([`crate::table_cut`]);
//! * removes deleted logs: objects, cache copies, then their keys.
//!
//! Deletion order is always manifest first (trim point, which readers
//! obey), then the data (object, cache copy), then the segment key, so a
//! crash in between leaves a segment key below the trim point that the next
//! pass deletes again (deleting what is already gone is not an error).
//!
//! A log's identity is its log id, not its name: a log deleted and
//! re-created under the same name starts again at segment 1, offset 0. So
//! claims name the log id, objects live under the log id's folder, every
//! manifest write compares the live log id, and work that read a segment by
//! name checks afterwards that the log id it works for is still live before
//! deleting what the segment names. A compactor working from a stale view
//! (slow, paused past its lease) therefore never touches a re-created log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::failpoint;
use crate::merge::{self, MergeIn, Merged};
use crate::series;
use crate::table::Appended;
use crate::table_backfill::{self, Backfilled};
use crate::table_cut::{self, CutIn, cut_below_trim};
use dlog_meta::cache_clients::CacheClients;
use dlog_meta::manifest::{self, LogMeta, LogState, Manifest, SegmentMeta, SegmentState};
use dlog_meta::metastore::LeaseId;
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_storage::segment_file;
use dlog_wire::ids::{LogId, Offset, SegmentId};
use dlog_wire::names::LogName;
use dlog_wire::proto::{DropSegmentRequest, SegmentRef};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::offload::{OffloadTo, offload_segment};
use crate::table::LogTables;

/// The least age of a table metadata file before the sweep may delete it
/// when nothing refers to it: a commit in flight writes its files before
/// the catalog names them (dlog's own commits give up after an hour; other
/// engines' may take longer, as Iceberg's own orphan removal assumes).
pub const METADATA_SWEEP_AGE: Duration = Duration::from_secs(3 * 24 * 60 * 60);

/// Settings of a compactor.
#[derive(Debug, Clone)]
pub struct CompactorOptions {
    /// Pause between passes.
    pub poll_interval: Duration,
    /// How long after offload the cache nodes keep a segment, so readers
    /// that saw it sealed a moment ago still find it there.
    pub cache_drop_grace: Duration,
    /// Encode Parquet files on the calling task instead of tokio's blocking
    /// pool. Set by the deterministic simulation: a blocking-pool thread
    /// finishes at a moment no seed decides.
    pub encode_inline: bool,
    /// How often [`Compactor::run`] sweeps the folders of purged logs
    /// ([`crate::orphans`]); `None`: never.
    pub orphan_sweep_interval: Option<Duration>,
    /// How long a purge's record is kept (its folder swept) after the
    /// purge.
    pub keep_purge_records: Duration,
    /// With Iceberg tables: how long a file removed from its log's table
    /// (retention) stays in the object store, so that queries planned on
    /// an older snapshot finish reading it. Snapshots older than this are
    /// expired before the file goes.
    pub table_file_grace: Duration,
    /// Adjacent offloaded segments whose files are smaller than this are
    /// merged into files of up to this many bytes ([`crate::merge`]); 0:
    /// never. Their own files go `table_file_grace` after the merge.
    pub merge_target_bytes: u64,
}

impl Default for CompactorOptions {
    fn default() -> Self {
        CompactorOptions {
            poll_interval: Duration::from_secs(1),
            cache_drop_grace: Duration::from_secs(60),
            encode_inline: false,
            orphan_sweep_interval: Some(Duration::from_secs(600)),
            keep_purge_records: Duration::from_secs(24 * 3600),
            table_file_grace: Duration::from_secs(3600),
            merge_target_bytes: crate::merge::DEFAULT_TARGET_BYTES,
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub offloaded: usize,
    pub dropped_from_cache: usize,
    pub deleted_segments: usize,
    pub purged_logs: usize,
    pub failures: usize,
    /// Sealed segments not offloaded at the end of the pass, and their bytes.
    pub lag_segments: usize,
    pub lag_bytes: u64,
    /// Segments whose files were merged into larger ones.
    pub merged_segments: usize,
}

/// A compactor.
#[derive(Debug)]
pub struct Compactor {
    manifest: Manifest,
    objects: ObjectStoreHandle,
    /// The logs' Iceberg tables, when a catalog is configured.
    tables: Option<Arc<LogTables>>,
    caches: Arc<CacheClients>,
    node_id: String,
    lease: LeaseId,
    options: CompactorOptions,
    /// Segments (log id, segment id) whose file the backfill found in an
    /// earlier layout: not looked at again by this process.
    earlier_layouts: std::sync::Mutex<std::collections::HashSet<(u64, u64)>>,
    /// Runs (log id, first segment id) whose merge failed for a reason
    /// waiting does not fix: not planned again by this process.
    failed_merges: std::sync::Mutex<std::collections::HashSet<(u64, u64)>>,
    /// Logs whose name the catalog cannot hold, warned about in this pass
    /// ([`Compactor::tables_of`]).
    unheld_names: std::sync::Mutex<std::collections::HashSet<LogName>>,
}

impl Compactor {
    /// `lease` holds this compactor's claims; `node_id` names it in them.
    pub fn new(
        manifest: Manifest,
        objects: ObjectStoreHandle,
        node_id: String,
        lease: LeaseId,
        options: CompactorOptions,
    ) -> Compactor {
        let caches = Arc::new(CacheClients::new(manifest.clone()));
        Compactor {
            manifest,
            objects,
            tables: None,
            caches,
            node_id,
            lease,
            options,
            earlier_layouts: Default::default(),
            failed_merges: Default::default(),
            unheld_names: Default::default(),
        }
    }

    /// Reaches the cache nodes through `caches` instead of connections of
    /// its own (the simulation's network, for one).
    pub fn with_cache_clients(mut self, caches: Arc<CacheClients>) -> Compactor {
        self.caches = caches;
        self
    }

    /// Appends every offloaded file to its log's Iceberg table in
    /// `tables` ([`crate::table`]), and drops a deleted log's table.
    pub fn with_tables(mut self, tables: Arc<LogTables>) -> Compactor {
        self.tables = Some(tables);
        self
    }

    /// The tables for `log`: `None` without a catalog, and for a log whose
    /// name the catalog cannot hold (Glue keeps names in lower case, so
    /// one with an upper-case letter): that log gets no table, and is
    /// offloaded, merged (not: merges need the table), retained and purged
    /// as without a catalog, never held up or holding up others. Warned
    /// about once per pass.
    fn tables_of(&self, log: &LogName) -> Option<&LogTables> {
        let tables = self.tables.as_deref()?;
        if tables.holds(log) {
            return Some(tables);
        }
        let mut warned = (self.unheld_names.lock()).unwrap_or_else(|e| e.into_inner());
        if warned.insert(log.clone()) {
            tracing::warn!(%log, "the Iceberg catalog cannot hold this log's name (Glue keeps \
                names in lower case): the log gets no table, and is compacted as without one");
        }
        None
    }

    /// What this compactor's claims hold: its node id and lease, so that
    /// an instance whose lease expired (it was paused) never gives back a
    /// claim its restarted successor, under the same node id, took since.
    fn claim_holder(&self) -> String {
        format!("{}@{:x}", self.node_id, self.lease)
    }

    /// Runs passes until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(node = %self.node_id, "compactor running");
        let sweep_every = self.options.orphan_sweep_interval;
        let mut next_sweep = tokio::time::Instant::now() + sweep_every.unwrap_or_default();
        loop {
            match self.pass().await {
                Ok(report) if report != PassReport::default() => {
                    tracing::debug!(?report, "compactor pass")
                }
                Ok(_) => {}
                Err(err) => tracing::warn!("compactor pass failed: {err:#}"),
            }
            if let Some(every) = sweep_every
                && tokio::time::Instant::now() >= next_sweep
            {
                if let Err(err) = self.sweep_orphans().await {
                    tracing::warn!("orphan sweep failed: {err:#}");
                }
                if let Err(err) = self.expire_table_snapshots().await {
                    tracing::warn!("snapshot expiry failed: {err:#}");
                }
                next_sweep = tokio::time::Instant::now() + every;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    /// Deletes the objects left in the folders of purged logs (see
    /// [`crate::orphans`]) and drops the purge records older than
    /// `keep_purge_records`; returns how many objects it deleted.
    pub async fn sweep_orphans(&self) -> Result<usize> {
        let mut deleted = 0;
        for purged in self.manifest.purged_logs().await? {
            // One record's failure never holds up the others.
            match self.sweep_purged(&purged).await {
                Ok(swept) => deleted += swept,
                Err(err) => tracing::warn!(log = %purged.log, log_id = purged.log_id,
                    "sweeping a purged log's folder: {err:#}"),
            }
        }
        Ok(deleted)
    }

    /// [`Self::sweep_orphans`] for one purge record; returns how many
    /// objects it deleted.
    async fn sweep_purged(&self, purged: &manifest::Purged) -> Result<usize> {
        // Defence against an id handed out again (a log id counter set
        // back by hand after an etcd restore): never sweep a live log.
        match self.manifest.log(&purged.log).await {
            Ok(meta) if meta.log_id == purged.log_id => {
                tracing::warn!(log = %purged.log, log_id = purged.log_id,
                    "a purged log id is live again; its folder is not swept");
                return Ok(0);
            }
            Ok(_) | Err(manifest::Error::LogNotFound(_)) => {}
            Err(err) => return Err(err.into()),
        }
        // A compactor that resumed after the purge may have created the
        // purged log id's table again.
        if let Some(tables) = self.tables_of(&purged.log) {
            tables.drop_log(&purged.log, purged.log_id).await?;
        }
        let swept = self.delete_log_objects(&purged.log, purged.log_id).await?;
        if swept > 0 {
            tracing::info!(log = %purged.log, log_id = purged.log_id, objects = swept,
                "deleted objects uploaded after their log was purged");
        }
        let keep = self.options.keep_purge_records;
        if crate::orphans::record_expired(purged, keep, dlog_wire::now_ms()) {
            self.manifest.forget_purge(purged.log_id).await?;
        }
        Ok(swept)
    }

    /// Expires the snapshots older than `table_file_grace` of every live
    /// log's table (the current one always stays), then deletes the
    /// metadata files that nothing in the table refers to any more and that
    /// are older than [`METADATA_SWEEP_AGE`] (or the grace, if longer), so
    /// table metadata stops growing with each offload. Runs with the orphan
    /// sweep.
    pub async fn expire_table_snapshots(&self) -> Result<()> {
        if self.tables.is_none() {
            return Ok(());
        }
        let now = dlog_wire::now_ms();
        let older_than = now.saturating_sub(self.table_file_grace_ms());
        let sweep_age = self
            .table_file_grace_ms()
            .max(METADATA_SWEEP_AGE.as_millis() as i64);
        for (log, meta) in self.manifest.log_metas("").await? {
            if meta.state != LogState::Active {
                continue;
            }
            let to = self.merge_in(&log);
            let leftover_age =
                (merge::LEFTOVER_AGE.as_millis() as i64).max(self.table_file_grace_ms());
            let leftovers_before = now.saturating_sub(leftover_age);
            match merge::sweep_leftovers(to, &log, meta.log_id, leftovers_before).await {
                Ok(_) | Err(Error::Manifest(manifest::Error::LogReplaced { .. })) => {}
                Err(err) => tracing::warn!(%log, "sweeping merged objects: {err:#}"),
            }
            let Some(tables) = self.tables_of(&log) else {
                continue;
            };
            match self.backfill_table(tables, &log, meta.log_id).await {
                Ok(0) => {}
                Ok(files) => {
                    tracing::info!(%log, files, "added offloaded segments missing from the log's table")
                }
                Err(err) => tracing::warn!(%log, "table backfill: {err:#}"),
            }
            let swept = match tables.expire_snapshots(&log, meta.log_id, older_than).await {
                Ok(()) => {
                    let before = now.saturating_sub(sweep_age);
                    tables
                        .remove_unreferenced_metadata(&log, meta.log_id, before)
                        .await
                }
                Err(err) => Err(err),
            };
            match swept {
                Ok(0) => {}
                Ok(files) => {
                    tracing::info!(%log, files, "deleted table metadata nothing refers to")
                }
                Err(err) => tracing::warn!(%log, "snapshot expiry: {err:#}"),
            }
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Adds to the log's table the offloaded segments it lacks
    /// ([`crate::table_backfill`]), each under its claim; returns how many
    /// it appended.
    async fn backfill_table(
        &self,
        tables: &LogTables,
        log: &LogName,
        log_id: u64,
    ) -> Result<usize> {
        let (segments, _) = self.manifest.segments(log).await?;
        let known_earlier = |segment_id: u64| {
            let earlier = self
                .earlier_layouts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            earlier.contains(&(log_id, segment_id))
        };
        let candidates: Vec<(u64, object_store::path::Path, i64)> = (segments.iter())
            .filter(|s| table_backfill::candidate(s) && !known_earlier(s.segment_id))
            .filter_map(|s| {
                let object = s.object.as_ref()?;
                Some((
                    s.segment_id,
                    object.key.as_str().into(),
                    object.offloaded_at_ms,
                ))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        let to = self.cut_in(tables);
        let mut appended = 0;
        let trim = self.manifest.trim_point(log).await?;
        let backfill = tables.missing_files(log, log_id, trim, &candidates).await?;
        for segment_id in backfill.held_in_margin {
            // Appended by its offload: never a candidate again, so a rewrite
            // of its file by another engine does not bring it back.
            let marked = self
                .claimed(log, log_id, segment_id, |segment| async move {
                    if table_backfill::candidate(&segment) {
                        let (id, segment) = (LogId(log_id), SegmentId(segment.segment_id));
                        (self.manifest)
                            .mark_table_backfilled(log, id, segment, dlog_wire::now_ms())
                            .await?;
                    }
                    Ok(())
                })
                .await;
            if let Err(err) = marked {
                tracing::warn!(%log, segment = segment_id, "table backfill: {err:#}");
            }
        }
        for segment_id in backfill.missing {
            let backfilled = self
                .claimed(log, log_id, segment_id, |segment| async move {
                    table_backfill::backfill_segment(to, log, log_id, &segment).await
                })
                .await;
            match backfilled {
                Ok(Some(Backfilled::Appended(Appended::Committed))) => appended += 1,
                Ok(Some(Backfilled::EarlierLayout)) => {
                    let mut earlier = self
                        .earlier_layouts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    earlier.insert((log_id, segment_id));
                }
                Ok(_) => {}
                // One segment's failure does not hold up the others.
                Err(err) => tracing::warn!(%log, segment = segment_id, "table backfill: {err:#}"),
            }
        }
        Ok(appended)
    }

    /// One pass over every log.
    pub async fn pass(&self) -> Result<PassReport> {
        let started = std::time::Instant::now();
        let mut report = PassReport::default();
        (self.unheld_names.lock())
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for (log, meta) in self.manifest.log_metas("").await? {
            let result = match meta.state {
                LogState::Deleting => self.purge_log(&log, &meta, &mut report).await,
                LogState::Active => self.work_on_log(&log, &meta, &mut report).await,
            };
            if let Err(err) = result {
                report.failures += 1;
                tracing::warn!(%log, "compactor: {err:#}");
            }
            // An embedded metastore answers without ever waiting, so a pass
            // over 10 000 logs would hold its async worker for tens of
            // milliseconds and stall the appends queued behind it.
            tokio::task::yield_now().await;
        }
        metrics::histogram!(series::PASS_DURATION).record(started.elapsed());
        metrics::gauge!(series::OFFLOAD_LAG_SEGMENTS).set(report.lag_segments as f64);
        metrics::gauge!(series::OFFLOAD_LAG_BYTES).set(report.lag_bytes as f64);
        Ok(report)
    }

    async fn work_on_log(
        &self,
        log: &LogName,
        meta: &LogMeta,
        report: &mut PassReport,
    ) -> Result<()> {
        let (segments, _) = self.manifest.segments(log).await?;
        // Counted before any offload, so a log whose offload fails (and
        // ends its part of the pass) still counts all its sealed segments.
        for segment in segments.iter().filter(|s| s.state == SegmentState::Sealed) {
            report.lag_segments += 1;
            report.lag_bytes += segment.bytes;
        }
        for segment in &segments {
            match segment.state {
                SegmentState::Sealed if self.offload(log, meta, segment.segment_id).await? => {
                    report.offloaded += 1;
                    report.lag_segments -= 1;
                    report.lag_bytes -= segment.bytes;
                }
                SegmentState::Offloaded if !segment.cache_dropped => {
                    let offloaded_at = segment.object.as_ref().map_or(0, |o| o.offloaded_at_ms);
                    let grace = self.options.cache_drop_grace.as_millis() as i64;
                    if dlog_wire::now_ms() >= offloaded_at.saturating_add(grace) {
                        self.drop_from_cache(log, meta.log_id, segment).await?;
                        failpoint::hit("offload.after_cache_drop");
                        self.manifest
                            .mark_cache_dropped(
                                log,
                                LogId(meta.log_id),
                                SegmentId(segment.segment_id),
                            )
                            .await?;
                        report.dropped_from_cache += 1;
                    }
                }
                _ => {}
            }
        }
        // Merges need the table: a merged file must be swapped for the
        // files it merged in one snapshot, and a table turned on later
        // could not tell which segments a merged file holds.
        if self.options.merge_target_bytes > 0 && self.tables_of(log).is_some() {
            // A merge that keeps failing never holds up retention.
            if let Err(err) = self.merge_small_files(log, meta, &segments, report).await {
                report.failures += 1;
                tracing::warn!(%log, "merge: {err:#}");
            }
        }
        if let Err(err) = (self.delete_retired_objects(log, meta.log_id, &segments)).await {
            report.failures += 1;
            tracing::warn!(%log, "deleting merged segments' own objects: {err:#}");
        }
        self.apply_retention(log, meta, &segments, report).await
    }

    /// Merges runs of adjacent small files of the log ([`crate::merge`]),
    /// each under the claims of its segments; merges in progress first.
    async fn merge_small_files(
        &self,
        log: &LogName,
        meta: &LogMeta,
        segments: &[SegmentMeta],
        report: &mut PassReport,
    ) -> Result<()> {
        let target = self.options.merge_target_bytes;
        let candidates = (segments.iter())
            .filter(|s| s.merging_into.is_some() || merge::mergeable(s, 0, target))
            .count();
        if candidates < 2 && !segments.iter().any(|s| s.merging_into.is_some()) {
            return Ok(());
        }
        let trim_point = self.manifest.trim_point(log).await?;
        let to = self.merge_in(log);
        let failed = |run: &[u64]| {
            let failed = (self.failed_merges.lock()).unwrap_or_else(|e| e.into_inner());
            failed.contains(&(meta.log_id, run[0]))
        };
        let resumed =
            |id: u64| (segments.iter()).any(|s| s.segment_id == id && s.merging_into.is_some());
        for run in merge::plan(segments, trim_point, target) {
            if failed(&run) && !resumed(run[0]) {
                continue;
            }
            let merged = self
                .claimed_run(log, meta.log_id, &run, |read| async move {
                    merge::merge_run(to, log, meta.log_id, read, target).await
                })
                .await;
            match merged {
                Ok(Some(Merged::Done)) => report.merged_segments += run.len(),
                Ok(Some(Merged::Failed)) => {
                    report.failures += 1;
                    let mut failed = (self.failed_merges.lock()).unwrap_or_else(|e| e.into_inner());
                    failed.insert((meta.log_id, run[0]));
                }
                Ok(_) => {}
                // One run's failure does not hold up the others.
                Err(err) => {
                    report.failures += 1;
                    tracing::warn!(%log, first = run[0], "merge: {err:#}");
                }
            }
        }
        Ok(())
    }

    /// Deletes the own objects of merged segments once the table file
    /// grace after their merge is over (snapshots that listed them expired
    /// first), then forgets them, each under its segment's claim.
    ///
    /// | crash after | state | the next pass |
    /// |---|---|---|
    /// | the expiry | snapshots expired, object kept | deletes it |
    /// | the deletion (`merge.after_retired_delete`) | object gone, still recorded | deletes again (`NotFound` is fine), forgets it |
    async fn delete_retired_objects(
        &self,
        log: &LogName,
        log_id: u64,
        segments: &[SegmentMeta],
    ) -> Result<()> {
        let now = dlog_wire::now_ms();
        let grace = self.table_file_grace_ms();
        let ripe = |s: &SegmentMeta| {
            (s.retired_object.as_ref()).is_some_and(|r| now > r.at_ms.saturating_add(grace))
        };
        for segment in segments.iter().filter(|s| ripe(s)) {
            self.claimed(log, log_id, segment.segment_id, |segment| async move {
                let Some(retired) = segment.retired_object.as_ref().filter(|_| ripe(&segment))
                else {
                    return Ok(());
                };
                if let Some(tables) = self.tables_of(log) {
                    tables
                        .expire_snapshots(log, log_id, now.saturating_sub(grace))
                        .await?;
                }
                self.delete_object(&retired.object.key.as_str().into())
                    .await?;
                failpoint::hit("merge.after_retired_delete");
                let (id, segment_id) = (LogId(log_id), SegmentId(segment.segment_id));
                self.manifest
                    .forget_retired_object(log, id, segment_id)
                    .await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Runs `work` on the current manifest entries (with their revisions)
    /// of the segments `ids`, in that order, while holding the claims of
    /// all of them. `None` when another compactor holds one, one is gone,
    /// or the log id is no longer live.
    async fn claimed_run<T, F, Fut>(
        &self,
        log: &LogName,
        log_id: u64,
        ids: &[u64],
        work: F,
    ) -> Result<Option<T>>
    where
        F: FnOnce(Vec<manifest::Versioned<SegmentMeta>>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut held = Vec::with_capacity(ids.len());
        let mut all = true;
        for segment_id in ids {
            let claim = self.segment_claim(log, log_id, *segment_id);
            match self
                .manifest
                .claim(&claim, &self.claim_holder(), self.lease)
                .await
            {
                Ok(true) => held.push(claim),
                Ok(false) => {
                    all = false;
                    break;
                }
                Err(err) => {
                    self.release_claims(&held).await?;
                    return Err(err.into());
                }
            }
        }
        let result = async {
            if !all {
                return Ok(None);
            }
            let mut read = Vec::with_capacity(ids.len());
            for segment_id in ids {
                match self.manifest.segment(log, *segment_id).await {
                    Ok(current) => read.push(current),
                    Err(manifest::Error::SegmentNotFound { .. }) => return Ok(None),
                    Err(err) => return Err(err.into()),
                }
            }
            // Read first, then check: the entries read are `log_id`'s.
            match self.manifest.check_live(log, log_id).await {
                Ok(()) => work(read).await.map(Some),
                Err(manifest::Error::LogReplaced { .. }) => Ok(None),
                Err(err) => Err(err.into()),
            }
        }
        .await;
        self.release_claims(&held).await?;
        result
    }

    async fn release_claims(&self, claims: &[String]) -> Result<()> {
        for claim in claims {
            self.manifest
                .release_claim(claim, &self.claim_holder())
                .await?;
        }
        Ok(())
    }

    /// The claim of one segment: `segment/<ns>/<log>/<log_id>/<segment_id>`.
    fn segment_claim(&self, log: &LogName, log_id: u64, segment_id: u64) -> String {
        format!(
            "segment/{}/{}/{log_id}/{segment_id}",
            log.namespace(),
            log.log()
        )
    }

    /// Runs `work` on the segment's current manifest entry while holding
    /// the segment's claim (on this compactor's lease), so offload and
    /// deletion of one segment never overlap, across compactors too.
    /// `None` when another compactor holds it, the segment is gone, or the
    /// log id is no longer live (the entry read may be a re-created log's).
    async fn claimed<T, F, Fut>(
        &self,
        log: &LogName,
        log_id: u64,
        segment_id: u64,
        work: F,
    ) -> Result<Option<T>>
    where
        F: FnOnce(SegmentMeta) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let claim = self.segment_claim(log, log_id, segment_id);
        if !self
            .manifest
            .claim(&claim, &self.claim_holder(), self.lease)
            .await?
        {
            return Ok(None);
        }
        let current = match self.manifest.segment(log, segment_id).await {
            // Read first, then check: the entry read is `log_id`'s.
            Ok(current) => match self.manifest.check_live(log, log_id).await {
                Ok(()) => Ok(Some(current.value)),
                Err(manifest::Error::LogReplaced { .. }) => Ok(None),
                Err(err) => Err(err.into()),
            },
            Err(manifest::Error::SegmentNotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        };
        let result = match current {
            Ok(Some(segment)) => work(segment).await.map(Some),
            Ok(None) => Ok(None),
            Err(err) => Err(err),
        };
        self.manifest
            .release_claim(&claim, &self.claim_holder())
            .await?;
        result
    }

    async fn offload(&self, log: &LogName, meta: &LogMeta, segment_id: u64) -> Result<bool> {
        let offloaded = self
            .claimed(log, meta.log_id, segment_id, |segment| async move {
                if segment.state != SegmentState::Sealed {
                    return Ok(false); // done by another compactor meanwhile
                }
                if segment.end_offset == Some(segment.start_offset) {
                    // Nothing to offload: an empty segment (sealed right
                    // after it opened) just leaves the manifest and the cache.
                    self.drop_from_cache(log, meta.log_id, &segment).await?;
                    self.manifest
                        .delete_segment(log, LogId(meta.log_id), SegmentId(segment_id))
                        .await?;
                    return Ok(true);
                }
                let to = OffloadTo {
                    manifest: &self.manifest,
                    caches: &self.caches,
                    objects: &self.objects,
                    tables: self.tables_of(log),
                };
                offload_segment(to, log, meta.log_id, &segment, self.options.encode_inline).await?;
                Ok(true)
            })
            .await?;
        Ok(offloaded == Some(true))
    }

    /// Deletes a segment below the trim point: its object and cache copies,
    /// then its key. Reads the segment afresh under its claim, so an object
    /// uploaded since the pass listed the segment is deleted too.
    async fn delete_segment(
        &self,
        log: &LogName,
        log_id: LogId,
        segment_id: SegmentId,
        now_ms: i64,
    ) -> Result<bool> {
        let deleted = self
            .claimed(log, log_id.0, segment_id.0, |segment| async move {
                // A merge in progress is finished or undone first.
                if segment.merging_into.is_some() {
                    return Ok(false);
                }
                // Read afresh: offloaded since the pass listed it (its file
                // then in the table), it waits for the table's removal and
                // grace like any other.
                if let Some(tables) = self.tables_of(log)
                    && segment.object.is_some()
                {
                    if !self.table_grace_over(&segment, now_ms) {
                        return Ok(false);
                    }
                    // The snapshots that listed the file go before it does.
                    let grace = self.table_file_grace_ms();
                    tables
                        .expire_snapshots(log, log_id.0, now_ms.saturating_sub(grace))
                        .await?;
                }
                self.delete_segment_data(log, log_id.0, &segment, true)
                    .await?;
                self.manifest
                    .delete_segment(log, log_id, segment_id)
                    .await?;
                Ok(true)
            })
            .await?;
        Ok(deleted == Some(true))
    }

    /// Whether the segment's file left its log's table more than
    /// `table_file_grace` before `now_ms`: then every snapshot that listed
    /// it is older than `now_ms - grace`, and expiring those (strictly
    /// older) takes them all.
    fn table_grace_over(&self, segment: &SegmentMeta, now_ms: i64) -> bool {
        let grace = self.table_file_grace_ms();
        segment
            .table_removed_at_ms
            .is_some_and(|at| now_ms > at.saturating_add(grace))
    }

    fn table_file_grace_ms(&self) -> i64 {
        i64::try_from(self.options.table_file_grace.as_millis()).unwrap_or(i64::MAX)
    }

    /// Tells every registered node of the ensemble to drop the segment.
    async fn drop_from_cache(
        &self,
        log: &LogName,
        log_id: u64,
        segment: &SegmentMeta,
    ) -> Result<()> {
        let reference = SegmentRef {
            log: log.to_string(),
            log_id,
            segment_id: segment.segment_id,
        };
        let live: Vec<String> = self
            .caches
            .live_nodes()
            .await
            .map_err(|err| Error::Read {
                log: log.clone(),
                segment: segment.segment_id,
                reason: err.to_string(),
            })?
            .into_iter()
            .map(|n| n.id)
            .collect();
        for node in segment.ensemble.iter().filter(|n| live.contains(n)) {
            let dropped = async {
                let mut client = self.caches.client(node).await.map_err(|e| e.to_string())?;
                let dropped = client
                    .drop_segment(DropSegmentRequest {
                        segment: Some(reference.clone()),
                    })
                    .await;
                if let Err(status) = &dropped
                    && status.code() == tonic::Code::Unavailable
                {
                    // Its connection goes, and the node is left out
                    // until it answers again (a restarted node then gets
                    // a fresh connection).
                    self.caches.suspect(node);
                }
                dropped.map_err(|status| status.message().to_owned())
            };
            if let Err(reason) = dropped.await {
                return Err(Error::Read {
                    log: log.clone(),
                    segment: segment.segment_id,
                    reason: format!("drop from {node}: {reason}"),
                });
            }
        }
        Ok(())
    }

    async fn apply_retention(
        &self,
        log: &LogName,
        meta: &LogMeta,
        segments: &[SegmentMeta],
        report: &mut PassReport,
    ) -> Result<()> {
        let config = match &meta.config {
            Some(config) => config.clone(),
            None => self.manifest.namespace(log.namespace()).await?,
        };
        let closed: Vec<&SegmentMeta> = segments
            .iter()
            .filter(|s| s.state != SegmentState::Open && s.end_offset.is_some())
            .collect();
        let mut trim_to = self.manifest.trim_point(log).await?;
        if let Some(retention_ms) = config.retention_ms {
            // Saturating: an age longer than the epoch (stored before
            // validation refused it) keeps everything instead of wrapping.
            let age = i64::try_from(retention_ms).unwrap_or(i64::MAX);
            let cutoff = dlog_wire::now_ms().saturating_sub(age);
            for segment in &closed {
                match segment.max_timestamp_ms {
                    Some(newest) if newest < cutoff => {
                        trim_to = trim_to.max(segment.end_offset.unwrap_or(0));
                    }
                    _ => break,
                }
            }
        }
        if let Some(retention_bytes) = config.retention_bytes {
            let mut total = segments
                .iter()
                .fold(0u64, |sum, s| sum.saturating_add(s.bytes));
            for segment in &closed {
                if total <= retention_bytes {
                    break;
                }
                total = total.saturating_sub(segment.bytes);
                trim_to = trim_to.max(segment.end_offset.unwrap_or(0));
            }
        }
        // Manifest first: readers refuse offsets below the trim point.
        let trim_point = self
            .manifest
            .trim_log_id(log, LogId(meta.log_id), Offset(trim_to))
            .await?;
        // A segment across the trim point keeps its object; its copy in the
        // table is cut there once (`table_cut`).
        let across: Vec<&SegmentMeta> = (closed.iter().copied())
            .filter(|s| {
                table_cut::holds_trim_inside(s, trim_point)
                    && s.table_cut_offset.is_none_or(|cut| cut < trim_point)
            })
            .collect();
        let below: Vec<&SegmentMeta> = closed
            .into_iter()
            .filter(|s| s.end_offset.is_some_and(|end| end <= trim_point))
            .collect();
        if !below.is_empty() {
            failpoint::hit("retention.after_trim_point");
        }
        let deleted = self
            .delete_below(log, meta, below, trim_point, report)
            .await;
        // After the deletions, so that a cut that keeps failing never holds
        // them up; and whatever they did, so that neither holds up the other.
        if let Some(tables) = self.tables_of(log) {
            for segment in across {
                if let Err(err) = self
                    .cut_in_table(tables, log, meta.log_id, segment.segment_id, trim_point)
                    .await
                {
                    report.failures += 1;
                    tracing::warn!(%log, segment = segment.segment_id, trim_point, "{err:#}");
                }
            }
        }
        deleted
    }

    /// Takes the segments below the trim point out of the log's table and
    /// deletes those whose grace is over.
    async fn delete_below(
        &self,
        log: &LogName,
        meta: &LogMeta,
        below: Vec<&SegmentMeta>,
        trim_point: u64,
        report: &mut PassReport,
    ) -> Result<()> {
        // One clock reading decides which files are past their grace and
        // which snapshots expire, so no file goes that a kept snapshot lists.
        let now = dlog_wire::now_ms();
        let below = match self.tables_of(log) {
            Some(tables) => {
                self.leave_table(tables, log, meta, below, trim_point, now)
                    .await?
            }
            None => below,
        };
        for segment in below {
            if self
                .delete_segment(log, LogId(meta.log_id), SegmentId(segment.segment_id), now)
                .await?
            {
                report.deleted_segments += 1;
                metrics::counter!(series::RETENTION_DELETED_SEGMENTS).increment(1);
                tracing::info!(%log, segment = segment.segment_id, trim_point, "deleted a segment below the trim point");
            }
        }
        Ok(())
    }

    /// What a merge of this compactor on `log` reads from and writes to.
    fn merge_in(&self, log: &LogName) -> MergeIn<'_> {
        MergeIn {
            manifest: &self.manifest,
            objects: &self.objects,
            tables: self.tables_of(log),
            encode_inline: self.options.encode_inline,
            nonce: self.lease as u64,
        }
    }

    /// What a cut or a backfill of this compactor reads from and writes to.
    fn cut_in<'a>(&'a self, tables: &'a LogTables) -> CutIn<'a> {
        CutIn {
            manifest: &self.manifest,
            objects: &self.objects,
            tables,
            encode_inline: self.options.encode_inline,
        }
    }

    /// Hides the segment's rows below `trim_point` from the log's table
    /// ([`crate::table_cut`]), under the segment's claim, so that it is not
    /// deleted meanwhile, on its entry read afresh.
    async fn cut_in_table(
        &self,
        tables: &LogTables,
        log: &LogName,
        log_id: u64,
        segment_id: u64,
        trim_point: u64,
    ) -> Result<()> {
        let to = self.cut_in(tables);
        self.claimed(log, log_id, segment_id, |segment| async move {
            cut_below_trim(to, log, log_id, &segment, trim_point).await
        })
        .await?;
        Ok(())
    }

    /// Takes the files of segments below the trim point out of the log's
    /// table before their objects go, and returns the segments whose data
    /// may be deleted now: those never offloaded, and those out of the
    /// table for `table_file_grace` ([`Compactor::delete_segment`] expires
    /// the snapshots that still listed them, under the segment's claim).
    ///
    /// | crash after | state | the next pass |
    /// |---|---|---|
    /// | the removal commit | files out of the table, segments unmarked | finds nothing to remove, marks them |
    /// | the marks | grace running | deletes after the grace period |
    /// | the expiry | snapshots expired, objects kept | deletes them |
    async fn leave_table<'s>(
        &self,
        tables: &LogTables,
        log: &LogName,
        meta: &LogMeta,
        below: Vec<&'s SegmentMeta>,
        trim_point: u64,
        now: i64,
    ) -> Result<Vec<&'s SegmentMeta>> {
        let in_table: Vec<&SegmentMeta> = (below.iter().copied())
            .filter(|s| s.object.is_some() && s.table_removed_at_ms.is_none())
            .collect();
        // Segments never offloaded are deleted at once: raise the table's
        // trim point first, so that a compactor still offloading one (paused
        // past its lease) cannot append its file afterwards.
        let unrecorded = below.iter().any(|s| s.object.is_none());
        if !in_table.is_empty() || unrecorded {
            let removed = tables.remove_below(log, meta.log_id, trim_point).await?;
            failpoint::hit("retention.after_table_remove");
            if removed.files > 0 {
                tracing::info!(%log, removed = removed.files, trim_point, "removed files below the trim point from the log's table");
            }
            let removed_at = removed.at_ms;
            for segment in &in_table {
                self.manifest
                    .mark_table_removed(
                        log,
                        LogId(meta.log_id),
                        SegmentId(segment.segment_id),
                        removed_at,
                    )
                    .await?;
            }
        }
        let ripe = |s: &SegmentMeta| self.table_grace_over(s, now);
        Ok(below
            .into_iter()
            .filter(|s| s.object.is_none() || ripe(s))
            .collect())
    }

    /// Deletes the segment's object (and its `_trimmed` copies when
    /// `copies`) and its cache copies.
    async fn delete_segment_data(
        &self,
        log: &LogName,
        log_id: u64,
        segment: &SegmentMeta,
        copies: bool,
    ) -> Result<()> {
        if let Some(retired) = &segment.retired_object {
            self.delete_object(&retired.object.key.as_str().into())
                .await?;
        }
        // A merged object goes with the segment that ends it: the earlier
        // ones are below the trim point by then, and the later ones keep it.
        let shared = (segment.object.as_ref().and_then(|o| o.merged))
            .filter(|range| segment.end_offset != Some(range.end_offset));
        if let Some(object) = segment.object.as_ref().filter(|_| shared.is_none()) {
            self.delete_object(&object_store::path::Path::from(object.key.as_str()))
                .await?;
            failpoint::hit("retention.after_object_delete");
            if let Some(range) = object.merged {
                let bounds = (range.start_offset, range.end_offset);
                let copies =
                    segment_file::merged_cut_folder(&self.objects.prefix, log, log_id, bounds);
                self.delete_under(&copies).await?;
            }
            // Its copies cut for the table left it no later than its file
            // (a purge deletes the whole folder after).
            if copies && (self.tables_of(log).is_some() || segment.table_cut_offset.is_some()) {
                let copies =
                    segment_file::cut_folder(&self.objects.prefix, log, log_id, segment.segment_id);
                self.delete_under(&copies).await?;
            }
        }
        if !segment.cache_dropped {
            self.drop_from_cache(log, log_id, segment).await?;
        }
        Ok(())
    }

    async fn purge_log(
        &self,
        log: &LogName,
        meta: &LogMeta,
        report: &mut PassReport,
    ) -> Result<()> {
        let (segments, _) = self.manifest.segments(log).await?;
        // Read first, then check: the segments read are this log id's only
        // if the deleted log is still there (another compactor may have
        // purged it, and the name been re-created, since it was listed).
        match self.manifest.log(log).await {
            Ok(now) if now.log_id == meta.log_id => {}
            Ok(_) | Err(manifest::Error::LogNotFound(_)) => return Ok(()),
            Err(err) => return Err(err.into()),
        }
        // The table first, so that no table reader meets deleted files.
        if let Some(tables) = self.tables_of(log) {
            tables.drop_log(log, meta.log_id).await?;
        }
        // Open segments go too: nobody can seal them any more (the deletion
        // removed the live log id that every owner write compares), and a
        // cache node refuses entries for a segment once it dropped it.
        for segment in &segments {
            self.delete_segment_data(log, meta.log_id, segment, false)
                .await?;
        }
        self.delete_log_objects(log, meta.log_id).await?;
        if self.manifest.purge_log(log, meta.log_id).await? {
            report.purged_logs += 1;
            tracing::info!(%log, log_id = meta.log_id, "removed a deleted log");
        }
        Ok(())
    }

    /// Deletes every object under the log id's folder, also those a crash
    /// or a stale compactor uploaded without recording them; returns how
    /// many it listed.
    async fn delete_log_objects(&self, log: &LogName, log_id: u64) -> Result<usize> {
        let folder = segment_file::log_folder(&self.objects.prefix, log, log_id);
        self.delete_under(&folder).await
    }

    /// Deletes every object under `folder`; returns how many it listed.
    async fn delete_under(&self, folder: &object_store::path::Path) -> Result<usize> {
        let listed: Vec<object_store::ObjectMeta> = self
            .objects
            .store
            .list(Some(folder))
            .try_collect()
            .await
            .map_err(Error::object_store("list", folder))?;
        for object in &listed {
            self.delete_object(&object.location).await?;
        }
        Ok(listed.len())
    }

    /// Deletes one object; one already gone is deleted too.
    async fn delete_object(&self, key: &object_store::path::Path) -> Result<()> {
        match self.objects.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::object_store("delete", key)(source)),
        }
    }
}
