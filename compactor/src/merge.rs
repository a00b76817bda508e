//! Merging the small files of adjacent offloaded segments of a log into
//! one file (ARCHITECTURE.md, "The compactor, crash by crash").
//!
//! A log that rolls segments often (by time, or a small roll size) leaves
//! many small Parquet files, which table engines read slowly. The
//! compactor rewrites a run of adjacent offloaded segments' files into one
//! object of up to `merge_target_bytes` ([`plan`] picks the runs), swaps it
//! for their files in the log's Iceberg table, and points each segment's
//! manifest entry at it ([`ObjectInfo::merged`] names the offsets it
//! holds; `dlog read` takes only the segment's own rows from it). Each
//! segment's own object is kept as its `retired_object` for the table file
//! grace, so a read or a query planned before the merge finishes reading
//! it, and is deleted after that ([`crate::Compactor`]).
//!
//! Step by step, under the claims of every segment of the run (read again
//! under them):
//!
//! 1. record the merge on every segment of the run in one manifest
//!    transaction ([`MergeIntent`]: the merged object's key, unique to this
//!    merge, and its offsets), after checking that the table holds exactly
//!    the run's files;
//! 2. read each segment's object, checked against the CRC32C the manifest
//!    recorded, and join them into one file (deterministic bytes): their
//!    row groups copied as they are (`segment_concat`, which keeps every
//!    file's typed columns), a file of an earlier layout first encoded
//!    again alone in the current one;
//! 3. upload it with `PutMode::Create`, read it back, and record its size
//!    and CRC32C in the intent (one transaction);
//! 4. swap the run's files for it in the log's Iceberg table in one
//!    `replace` snapshot ([`LogTables::merge`]), unless the table changed
//!    so that the swap would lose or repeat rows (a trim removed one of
//!    them): then the merge is undone;
//! 5. in one manifest transaction, point every segment of the run at the
//!    merged object, keep its own object as retired, and clear the intent.
//!
//! Undoing a merge clears the intent in one transaction, which fences a
//! compactor paused in the steps above (its writes compare the revisions it
//! read). The merged object, if any, is left to [`sweep_leftovers`], which
//! deletes it once nothing names it and the table does not hold it.
//!
//! | crash after step | state | the next pass |
//! |---|---|---|
//! | 1 (`merge.after_intent`) | intent recorded, nothing written | resumes the intent: 2–5 |
//! | 3 (`merge.after_upload`) | object uploaded and recorded, table and segments unchanged | reads the object and checks it against the record, then 4–5 |
//! | 4 (`merge.after_table_commit`) | merged file in the table, segments on their own objects | checks the object, finds it in the table (`AlreadyThere`), then 5 |
//! | 5 (`merge.after_manifest`) | segments on the merged object | deletes the retired objects after the grace |
//!
//! A crash between the upload and its record leaves an object the intent
//! does not describe yet: the next attempt uploads the same bytes again
//! (`AlreadyExists` with equal bytes). A merge whose write fails for a
//! reason waiting does not fix (a damaged object) is undone and not
//! planned again by this process; errors of the store are retried. Merges
//! run only with Iceberg tables on ([`crate::Compactor`]).
//!
//! While a segment carries an intent, retention does not delete it and a
//! trim cut does not touch it: the merge finishes or is undone first. A
//! merged object is deleted with the segment that ends it (every earlier
//! one is below the trim point by then), with the copies cut from it at
//! trim points ([`segment_file::merged_cut_folder`]).

use dlog_meta::manifest::{
    Manifest, MergeIntent, ObjectInfo, OffsetRange, RetiredObject, SegmentMeta, SegmentState,
    UploadedObject, Versioned,
};
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_storage::segment_concat;
use dlog_storage::segment_file::{self, FileInfo};
use dlog_wire::ids::LogId;
use dlog_wire::names::LogName;
use object_store::ObjectStoreExt;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::offload::{
    adopt_equal_object, cpu_work, payload_schema, read_object, read_recorded, upload, verify_upload,
};
use crate::series;
use crate::table::{LogTables, Replaced, TableFile};

/// The default size merged files are made up to (128 MiB).
pub const DEFAULT_TARGET_BYTES: u64 = 128 * 1024 * 1024;

/// The most segments one merge takes: its manifest transactions compare
/// and write every one of them, and etcd allows 128 operations per
/// transaction by default.
pub const MAX_RUN_SEGMENTS: usize = 60;

/// What a merge reads from and writes to.
#[derive(Debug, Clone, Copy)]
pub struct MergeIn<'a> {
    pub manifest: &'a Manifest,
    pub objects: &'a ObjectStoreHandle,
    pub tables: Option<&'a LogTables>,
    /// See [`crate::CompactorOptions::encode_inline`].
    pub encode_inline: bool,
    /// Unique to this compactor (its lease): part of the keys of the
    /// merged objects it writes, so that no two merges share a key.
    pub nonce: u64,
}

/// What became of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Its segments point at the merged object now.
    Done,
    /// The merge was given up and its object deleted; the segments keep
    /// their own files.
    Undone,
    /// Nothing done: the segments changed meanwhile, or the table would
    /// refuse the merge.
    Skipped,
    /// The merge was undone because its write failed for a reason waiting
    /// does not fix (a damaged object): not to be planned again soon.
    Failed,
}

/// Whether the segment's file may be merged with its neighbours': an
/// offloaded segment with records, on its own object smaller than
/// `target`, at or above the trim point, not merged before, and still
/// wholly in its log's table (not removed, not cut at a trim point).
pub fn mergeable(segment: &SegmentMeta, trim_point: u64, target: u64) -> bool {
    segment.state == SegmentState::Offloaded
        && (segment.object.as_ref()).is_some_and(|o| o.merged.is_none() && o.size < target)
        && segment.merging_into.is_none()
        && segment.retired_object.is_none()
        && segment.table_removed_at_ms.is_none()
        && segment.table_cut_offset.is_none()
        && segment.start_offset >= trim_point
        && segment
            .end_offset
            .is_some_and(|end| end > segment.start_offset)
}

/// The runs of segment ids to work on, in offset order: first every merge
/// in progress (the segments carrying one intent), then new runs. A new run
/// is two or more adjacent mergeable segments whose files together stay
/// within `target` bytes, and it is taken only once it is complete: the
/// next segment is offloaded and cannot join (its file would pass the
/// target, or it is not mergeable and never will be: merged already, too
/// big), or the run reached [`MAX_RUN_SEGMENTS`]. So a log that writes
/// slowly gets files of the target size, not a merge per pass.
pub fn plan(segments: &[SegmentMeta], trim_point: u64, target: u64) -> Vec<Vec<u64>> {
    let mut runs: Vec<Vec<u64>> = Vec::new();
    let mut resumed: Vec<(&str, Vec<u64>)> = Vec::new();
    for segment in segments {
        if let Some(intent) = &segment.merging_into {
            match resumed.iter_mut().find(|(key, _)| *key == intent.key) {
                Some((_, ids)) => ids.push(segment.segment_id),
                None => resumed.push((&intent.key, vec![segment.segment_id])),
            }
        }
    }
    runs.extend(resumed.into_iter().map(|(_, ids)| ids));

    let size = |s: &SegmentMeta| s.object.as_ref().map_or(0, |o| o.size);
    let mut run: Vec<&SegmentMeta> = Vec::new();
    let mut run_bytes = 0u64;
    for segment in segments {
        let adjacent = run
            .last()
            .is_some_and(|last| last.end_offset == Some(segment.start_offset));
        if !run.is_empty() && !adjacent {
            run.clear(); // a gap (deleted or missing segment): start again
        }
        if mergeable(segment, trim_point, target) {
            if !run.is_empty() && run_bytes + size(segment) > target {
                if run.len() > 1 {
                    runs.push(run.iter().map(|s| s.segment_id).collect());
                }
                run.clear();
            }
            if run.is_empty() {
                run_bytes = 0;
            }
            run.push(segment);
            run_bytes += size(segment);
            if run.len() == MAX_RUN_SEGMENTS {
                runs.push(run.iter().map(|s| s.segment_id).collect());
                run.clear();
            }
            continue;
        }
        // Offloaded and never mergeable as it is: the run before it is
        // complete. Anything else (sealed, open) may still join later.
        let settled = segment.state == SegmentState::Offloaded && segment.merging_into.is_none();
        if run.len() > 1 && settled {
            runs.push(run.iter().map(|s| s.segment_id).collect());
        }
        run.clear();
    }
    runs
}

/// Merges (or resumes or undoes the merge of) the run, whose segments the
/// caller claimed and read under the claims, in offset order.
#[tracing::instrument(name = "merge", skip_all, fields(%log, first = run.first().map(|s| s.value.segment_id), segments = run.len()))]
pub async fn merge_run(
    to: MergeIn<'_>,
    log: &LogName,
    log_id: u64,
    run: Vec<Versioned<SegmentMeta>>,
    target: u64,
) -> Result<Merged> {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return Ok(Merged::Skipped);
    };
    let range = OffsetRange {
        start_offset: first.value.start_offset,
        end_offset: last.value.end_offset.unwrap_or(first.value.start_offset),
    };
    let intents: Vec<Option<&MergeIntent>> =
        run.iter().map(|s| s.value.merging_into.as_ref()).collect();
    let run = match intents.first().copied().flatten() {
        None if intents.iter().all(Option::is_none) => {
            let trim_point = to.manifest.trim_point(log).await?;
            let fresh = run.iter().all(|s| mergeable(&s.value, trim_point, target))
                && adjacent(&run)
                && run.len() > 1;
            if !fresh || !table_agrees(to, log, log_id, &run, range).await? {
                return Ok(Merged::Skipped);
            }
            let key = merged_key(to, log, log_id, range);
            let intent = MergeIntent {
                key: key.to_string(),
                range,
                uploaded: None,
            };
            if !record_intent(to.manifest, log, log_id, &run, Some(intent)).await? {
                return Ok(Merged::Skipped);
            }
            failpoint::hit("merge.after_intent");
            reread(to.manifest, log, &run).await?
        }
        Some(intent) if intents.iter().all(|i| *i == Some(intent)) => run,
        // Segments changed between the plan and the claims.
        _ => return Ok(Merged::Skipped),
    };
    let intent = run[0].value.merging_into.clone().expect("checked above");
    let whole = adjacent(&run)
        && intent.range == range
        && (run.iter())
            .all(|s| own_object(s).is_some() && s.value.state == SegmentState::Offloaded);
    let started = std::time::Instant::now();
    let key = object_store::path::Path::from(intent.key.as_str());
    if !whole {
        // Retention and cuts wait for segments with an intent, so this
        // takes a hand-edited manifest; never undo a file the table holds.
        if is_live(to, log, log_id, &key).await? {
            let reason = format!("{key} is in the table, but its segments changed");
            return Err(merge_error(log, run[0].value.segment_id, reason));
        }
        return undo(to, log, log_id, run).await;
    }
    let (file, run) = match intent.uploaded {
        // Uploaded and recorded by an earlier attempt (maybe in the table
        // already): the object at the key must be exactly that one.
        Some(uploaded) => (recorded_upload(to, log, &run, &key, uploaded).await?, run),
        None => match write_merged(to, log, &run, &key, range).await {
            Ok(file) => {
                let uploaded = UploadedObject {
                    size: file.bytes.len() as u64,
                    crc32c: file.crc32c,
                };
                let recorded = MergeIntent {
                    uploaded: Some(uploaded),
                    ..intent.clone()
                };
                if !record_intent(to.manifest, log, log_id, &run, Some(recorded)).await? {
                    return Ok(Merged::Skipped);
                }
                failpoint::hit("merge.after_upload");
                let run = reread(to.manifest, log, &run).await?;
                (file, run)
            }
            // A damaged object or a conflicting one at the key is never
            // fixed by waiting: the merge is undone rather than retried
            // with segments retention and cuts wait for. Errors of the
            // store itself are retried on the next pass.
            Err(
                err @ (Error::Incomplete { .. } | Error::ObjectConflict { .. } | Error::File(_)),
            ) => {
                tracing::warn!(key = %key, "merge failed, undoing it: {err:#}");
                undo(to, log, log_id, run).await?;
                return Ok(Merged::Failed);
            }
            Err(err) => return Err(err),
        },
    };
    if let Some(tables) = to.tables {
        let olds: Vec<String> = (run.iter())
            .filter_map(own_object)
            .map(|o| to.objects.url_of(&o.key.as_str().into()))
            .collect();
        let entry = TableFile {
            key: &key,
            file: &file,
            segment_id: run[0].value.segment_id,
            start_offset: range.start_offset,
            end_offset: range.end_offset,
            time_range_ms: file.time_range_ms,
        };
        // Decided on the table as it is: committed by an earlier attempt
        // (`AlreadyThere`), or refused for good (`Gone`: a trim took one
        // of the files out), when the merge is undone.
        let trim = to.manifest.trim_point(log).await?;
        match tables.merge(log, log_id, trim, &olds, &entry).await? {
            Replaced::Committed | Replaced::AlreadyThere => {}
            Replaced::Gone => {
                tracing::info!(key = %key, "the log's table changed under the merge: undoing it");
                return undo(to, log, log_id, run).await;
            }
        }
        failpoint::hit("merge.after_table_commit");
    }
    let now = dlog_wire::now_ms();
    let repointed: Vec<(Versioned<SegmentMeta>, SegmentMeta)> = run
        .into_iter()
        .map(|read| {
            let own = read.value.object.clone().expect("checked above");
            let changed = SegmentMeta {
                object: Some(ObjectInfo {
                    key: intent.key.clone(),
                    size: file.bytes.len() as u64,
                    crc32c: file.crc32c,
                    offloaded_at_ms: own.offloaded_at_ms,
                    merged: Some(range),
                }),
                retired_object: Some(RetiredObject {
                    object: own,
                    at_ms: now,
                }),
                merging_into: None,
                ..read.value.clone()
            };
            (read, changed)
        })
        .collect();
    let segments = repointed.len();
    if !(to.manifest)
        .rewrite_segments(log, LogId(log_id), &repointed)
        .await?
    {
        return Ok(Merged::Skipped);
    }
    failpoint::hit("merge.after_manifest");
    metrics::histogram!(series::MERGE_DURATION).record(started.elapsed());
    metrics::counter!(series::MERGED_SEGMENTS).increment(segments as u64);
    metrics::counter!(series::PARQUET_WRITTEN_BYTES).increment(file.bytes.len() as u64);
    tracing::info!(key = %key, segments, bytes = file.bytes.len(), "merged the files of adjacent segments");
    Ok(Merged::Done)
}

/// The key of a new merged object: the log folder's, named by the offsets
/// it holds, the time the merge began and the compactor's nonce, so that
/// no two merges, and no segment, share a key (a merge undone and planned
/// again writes anew).
fn merged_key(
    to: MergeIn<'_>,
    log: &LogName,
    log_id: u64,
    range: OffsetRange,
) -> object_store::path::Path {
    let folder = segment_file::log_folder(&to.objects.prefix, log, log_id);
    folder.join(format!(
        "{:020}-{:020}-m{:x}-{:x}.parquet",
        range.start_offset,
        range.end_offset,
        dlog_wire::now_ms(),
        to.nonce
    ))
}

/// The segment's own object, if it is not on a merged one.
fn own_object(segment: &Versioned<SegmentMeta>) -> Option<&ObjectInfo> {
    let segment = &segment.value;
    segment
        .object
        .as_ref()
        .filter(|o| o.merged.is_none() && segment.retired_object.is_none())
}

/// Whether the file at `key` is live in the log's table (false without
/// tables).
async fn is_live(
    to: MergeIn<'_>,
    log: &LogName,
    log_id: u64,
    key: &object_store::path::Path,
) -> Result<bool> {
    match to.tables {
        Some(tables) => {
            let trim = to.manifest.trim_point(log).await?;
            Ok(tables.is_live(log, log_id, trim, key).await?)
        }
        None => Ok(false),
    }
}

/// Whether each segment starts where the one before ends.
fn adjacent(run: &[Versioned<SegmentMeta>]) -> bool {
    run.windows(2)
        .all(|pair| pair[0].value.end_offset == Some(pair[1].value.start_offset))
}

/// With Iceberg tables on, whether the log's table holds exactly the run's
/// own files (else the merge is not begun: a backfill or a trim is due).
async fn table_agrees(
    to: MergeIn<'_>,
    log: &LogName,
    log_id: u64,
    run: &[Versioned<SegmentMeta>],
    range: OffsetRange,
) -> Result<bool> {
    let Some(tables) = to.tables else {
        return Ok(true);
    };
    let olds: Vec<String> = (run.iter())
        .filter_map(own_object)
        .map(|o| to.objects.url_of(&o.key.as_str().into()))
        .collect();
    let bounds = (range.start_offset, range.end_offset);
    let trim = to.manifest.trim_point(log).await?;
    Ok(tables.mergeable(log, log_id, trim, &olds, bounds).await?)
}

/// Writes `intent` (or clears it, `None`) on every segment of the run in
/// one transaction; false if one changed since it was read.
async fn record_intent(
    manifest: &Manifest,
    log: &LogName,
    log_id: u64,
    run: &[Versioned<SegmentMeta>],
    intent: Option<MergeIntent>,
) -> Result<bool> {
    let changes: Vec<(Versioned<SegmentMeta>, SegmentMeta)> = (run.iter())
        .map(|read| {
            let changed = SegmentMeta {
                merging_into: intent.clone(),
                ..read.value.clone()
            };
            (read.clone(), changed)
        })
        .collect();
    Ok(manifest
        .rewrite_segments(log, LogId(log_id), &changes)
        .await?)
}

/// The run's segments as they are now (the caller still holds their claims).
async fn reread(
    manifest: &Manifest,
    log: &LogName,
    run: &[Versioned<SegmentMeta>],
) -> Result<Vec<Versioned<SegmentMeta>>> {
    let mut now = Vec::with_capacity(run.len());
    for segment in run {
        now.push(manifest.segment(log, segment.value.segment_id).await?);
    }
    Ok(now)
}

/// Steps 2–3: the run's rows as one file at `key`, uploaded and read back.
async fn write_merged(
    to: MergeIn<'_>,
    log: &LogName,
    run: &[Versioned<SegmentMeta>],
    key: &object_store::path::Path,
    range: OffsetRange,
) -> Result<segment_file::SegmentFile> {
    let mut objects = Vec::with_capacity(run.len());
    for segment in run {
        let object = own_object(segment).expect("checked by the caller");
        let id = segment.value.segment_id;
        let mismatch = |reason| merge_error(log, id, reason);
        objects.push(read_recorded(to.objects, object, mismatch).await?.0);
    }
    let (owned_log, first_id) = (log.clone(), run[0].value.segment_id);
    let schema = payload_schema(to.manifest, log).await?;
    let time_range_ms = run_time_range(run);
    let segments: Vec<(u64, u64, u64)> = (run.iter())
        .map(|s| {
            (
                s.value.segment_id,
                s.value.start_offset,
                s.value.end_offset.unwrap_or(0),
            )
        })
        .collect();
    let encode = move || {
        let info = FileInfo {
            log: &owned_log,
            segment_id: first_id,
            start_offset: range.start_offset,
            end_offset: range.end_offset,
            payload_schema: schema.as_ref(),
        };
        merge_files(objects, &segments, &info, time_range_ms)
    };
    let file = cpu_work(to.encode_inline, encode)
        .await
        .map_err(|err| merge_error(log, first_id, format!("encoding task failed: {err}")))?
        .map_err(|err| merge_error(log, first_id, format!("rewrite: {err}")))?;
    let file = match upload(to.objects, key, &file).await {
        Ok(()) => file,
        Err(Error::ObjectConflict { .. }) => {
            // Written by a release that encodes other bytes: kept only if
            // it holds the same records in the current layout.
            let existing = read_object(to.objects, key).await?;
            match adopt_equal_object(existing, file, key, to.encode_inline).await? {
                (kept, true) => kept,
                (kept, false) => {
                    return Err(Error::ObjectConflict {
                        key: key.to_string(),
                        size: kept.bytes.len() as u64,
                        crc: kept.crc32c,
                    });
                }
            }
        }
        Err(err) => return Err(err),
    };
    verify_upload(to.objects, key, file.crc32c).await?;
    Ok(file)
}

/// Gives the merge up: clears the intent on every segment of the run in
/// one transaction (which also fences a compactor paused in the middle of
/// this merge: its repoint compares the revisions it read). The merged
/// object, if uploaded, is left to [`sweep_leftovers`]: a paused
/// compactor may still put it in the table (only after a failed write,
/// when the table would take it), and the sweep deletes only what the
/// table does not hold, after the table file grace.
async fn undo(
    to: MergeIn<'_>,
    log: &LogName,
    log_id: u64,
    run: Vec<Versioned<SegmentMeta>>,
) -> Result<Merged> {
    if !record_intent(to.manifest, log, log_id, &run, None).await? {
        return Ok(Merged::Skipped);
    }
    let key = run.first().and_then(|s| s.value.merging_into.as_ref());
    tracing::info!(key = ?key.map(|i| &i.key), "undid a merge");
    Ok(Merged::Undone)
}

/// The merged object an earlier attempt uploaded and recorded, read again
/// and checked against that record (a damaged or replaced object is an
/// error, never recorded as the segments' file).
async fn recorded_upload(
    to: MergeIn<'_>,
    log: &LogName,
    run: &[Versioned<SegmentMeta>],
    key: &object_store::path::Path,
    uploaded: UploadedObject,
) -> Result<segment_file::SegmentFile> {
    let bytes = read_object(to.objects, key).await?;
    let crc32c = crc32c::crc32c(&bytes);
    if crc32c != uploaded.crc32c || bytes.len() as u64 != uploaded.size {
        let reason = format!(
            "{key} holds {} bytes with CRC32C {crc32c:#010x}, the merge recorded {} bytes with {:#010x}",
            bytes.len(),
            uploaded.size,
            uploaded.crc32c
        );
        return Err(merge_error(log, run[0].value.segment_id, reason));
    }
    let time_range_ms = run_time_range(run);
    let (first, last) = (&run[0].value, &run[run.len() - 1].value);
    Ok(segment_file::SegmentFile {
        rows: last
            .end_offset
            .unwrap_or(0)
            .saturating_sub(first.start_offset),
        time_range_ms,
        crc32c,
        bytes,
    })
}

/// The files of a run's segments (`segments`: id, start and end offset of
/// each, in order) as one file described by `info`. Files in the current
/// layout are joined as they are, typed columns included
/// ([`segment_concat::concat_files`]); a file of an earlier layout is
/// first encoded again alone, in the current one. Deterministic bytes.
pub fn merge_files(
    objects: Vec<bytes::Bytes>,
    segments: &[(u64, u64, u64)],
    info: &FileInfo<'_>,
    time_range_ms: Option<(i64, i64)>,
) -> segment_file::Result<segment_file::SegmentFile> {
    let mut files = Vec::with_capacity(objects.len());
    for (bytes, &(segment_id, start_offset, end_offset)) in objects.iter().zip(segments) {
        if segment_concat::is_current_layout(bytes)? {
            files.push(bytes.clone());
            continue;
        }
        let records = segment_file::decode_file(bytes.clone())?;
        let own = FileInfo {
            segment_id,
            start_offset,
            end_offset,
            ..info.clone()
        };
        files.push(segment_file::encode_records(&records, &own)?.bytes);
    }
    if let Some(file) = segment_concat::concat_files(&files, info, time_range_ms)? {
        return Ok(file);
    }
    // Columns that cannot be joined (one id under two names: never
    // written by one namespace's history): every record encoded again.
    let mut records = Vec::new();
    for bytes in objects {
        records.extend(segment_file::decode_file(bytes)?);
    }
    segment_file::encode_records(&records, info)
}

/// The smallest and largest append time of the run's records, ms.
fn run_time_range(run: &[Versioned<SegmentMeta>]) -> Option<(i64, i64)> {
    let times =
        |pick: fn(&SegmentMeta) -> Option<i64>| run.iter().filter_map(move |s| pick(&s.value));
    (times(|s| s.min_timestamp_ms).min()).zip(times(|s| s.max_timestamp_ms).max())
}

/// How old an object named as a merged object must be before the sweep
/// may delete it when nothing names it: older than any compactor's lease
/// by far, so that no merge of a live compactor still uploads it.
pub const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Deletes the merged objects in the log id's folder that were written
/// before `older_than_ms` and that nothing names: no segment's object,
/// retired object or merge intent, and no live file of the log's table.
/// Such an object is what a compactor paused past its lease uploads for a
/// merge another compactor finished or undid meanwhile. The folder is
/// listed before the manifest is read: an object listed was uploaded after
/// its intent was recorded, so the manifest read then names it, or names
/// what became of its merge. Returns how many objects it deleted.
pub async fn sweep_leftovers(
    to: MergeIn<'_>,
    log: &LogName,
    log_id: u64,
    older_than_ms: i64,
) -> Result<usize> {
    let folder = segment_file::log_folder(&to.objects.prefix, log, log_id);
    let listed = (to.objects.store.list_with_delimiter(Some(&folder)).await)
        .map_err(Error::object_store("list", &folder))?;
    let merged_names: Vec<object_store::path::Path> = (listed.objects.into_iter())
        .filter(|o| o.last_modified.timestamp_millis() < older_than_ms)
        .map(|o| o.location)
        .filter(|at| at.filename().is_some_and(is_merged_name))
        .collect();
    if merged_names.is_empty() {
        return Ok(0);
    }
    let (segments, _) = to.manifest.segments(log).await?;
    to.manifest.check_live(log, log_id).await?;
    let named = |key: &str| {
        segments.iter().any(|s| {
            s.object.as_ref().is_some_and(|o| o.key == key)
                || s.retired_object
                    .as_ref()
                    .is_some_and(|r| r.object.key == key)
                || s.merging_into.as_ref().is_some_and(|i| i.key == key)
        })
    };
    let trim = to.manifest.trim_point(log).await?;
    let mut deleted = 0;
    for key in merged_names {
        if named(key.as_ref()) {
            continue;
        }
        if let Some(tables) = to.tables
            && tables.is_live(log, log_id, trim, &key).await?
        {
            continue;
        }
        match to.objects.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(source) => return Err(Error::object_store("delete", &key)(source)),
        }
        tracing::info!(%log, key = %key, "deleted a merged object nothing names");
    }
    Ok(deleted)
}

/// Whether a file name is a merged object's (`merged_key`).
fn is_merged_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".parquet") else {
        return false;
    };
    let parts: Vec<&str> = stem.split('-').collect();
    matches!(parts.as_slice(), [start, end, time, nonce]
        if start.len() == 20 && end.len() == 20
            && time.strip_prefix('m').is_some_and(|t| u64::from_str_radix(t, 16).is_ok())
            && u64::from_str_radix(nonce, 16).is_ok())
}

fn merge_error(log: &LogName, segment: u64, reason: String) -> Error {
    Error::Incomplete {
        log: log.clone(),
        segment,
        reason: format!("merge: {reason}"),
    }
}
