//! Hiding the rows below a trim point from a log's Iceberg table when the
//! trim point falls inside a segment (ARCHITECTURE.md, "Iceberg tables").
//!
//! Retention takes whole files out of the table ([`LogTables::remove_below`]);
//! a segment that straddles the trim point keeps its file, and with it rows
//! that `dlog read` no longer returns. So the compactor writes a copy of
//! the segment's file holding only its rows at or above the trim point, and
//! puts it in the table instead of that segment's files in one commit. The
//! segment's own object stays as it is: the log's readers use it (they skip
//! the trimmed rows themselves) until retention deletes the segment, and
//! engines may not delete it when it leaves the table (`gc.enabled` is off
//! on dlog's tables).
//!
//! Step by step, under the segment's claim (so the segment is not deleted
//! meanwhile, [`crate::Compactor`]):
//!
//! 1. find the table's file across the trim point (none: step 6);
//! 2. read the segment's own object and check it against the CRC32C the
//!    manifest recorded (a copy is always cut from the original, never from
//!    an earlier copy);
//! 3. keep the rows at or above the trim point and write them
//!    (deterministic bytes; offsets checked to run without a gap to the
//!    segment's end): with the file's own columns, typed ones included,
//!    when it is in the current layout (`segment_concat::cut_file`), else
//!    encoded again in the current layout with the typed columns of the
//!    namespace's payload schema as read now;
//! 4. upload at [`segment_file::cut_key`], whose name carries the copy's
//!    CRC32C, with `PutMode::Create`, and read it back;
//! 5. put the copy in the table instead of the segment's files, if the
//!    table still holds one ([`LogTables::replace`]);
//! 6. record the cut in the segment's manifest entry, so later passes skip
//!    it until the trim point moves.
//!
//! | crash after step | state | the next pass |
//! |---|---|---|
//! | 1–3 | nothing written | starts over |
//! | 4 | copy uploaded, table unchanged | uploads again (same bytes, same key), then 5 |
//! | 5 | copy in the table, segment unmarked | finds no file across the trim point, marks it |
//! | 6 | done | skips the segment |
//!
//! The copies live in the segment's `_trimmed` folder and are deleted with
//! the segment, a grace period after its last file left the table (every
//! copy left the table no later than that, so every snapshot that listed
//! any of them is expired by then). An append of the segment's own file
//! after a cut (a compactor paused past its lease) finds the copy and adds
//! nothing ([`LogTables::append`]).

use dlog_meta::manifest::{Manifest, SegmentMeta};
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_storage::segment_concat;
use dlog_storage::segment_file::{self, FileInfo};
use dlog_wire::ids::{LogId, SegmentId};
use dlog_wire::names::LogName;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::offload::{cpu_work, payload_schema, read_recorded, upload, verify_upload};
use crate::table::{LogTables, Replaced, TableFile};

/// Cuts lost to other commits in a row before the pass moves on.
const ATTEMPTS: usize = 4;

/// What a cut reads from and writes to.
#[derive(Debug, Clone, Copy)]
pub struct CutIn<'a> {
    pub manifest: &'a Manifest,
    pub objects: &'a ObjectStoreHandle,
    pub tables: &'a LogTables,
    /// See [`crate::CompactorOptions::encode_inline`].
    pub encode_inline: bool,
}

/// Hides the rows of `segment` below `trim_offset` (which lies inside it)
/// from the log's table, and records that in the manifest. The caller
/// holds the segment's claim and read `segment` under it. Returns whether
/// a copy was committed by this call.
#[tracing::instrument(name = "table_cut", skip_all, fields(%log, segment = segment.segment_id, trim_offset))]
pub async fn cut_below_trim(
    to: CutIn<'_>,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
    trim_offset: u64,
) -> Result<bool> {
    let Some(object) = &segment.object else {
        return Ok(false);
    };
    // A merge in progress finishes first (`merge`): its file is the one
    // to cut then.
    if !holds_trim_inside(segment, trim_offset) || segment.merging_into.is_some() {
        return Ok(false);
    }
    let own = to.objects.url_of(&object.key.as_str().into());
    let copies = to
        .tables
        .folder_prefix(&copies_folder(to, log, log_id, segment));
    let mut committed = false;
    let mut attempts = 0;
    loop {
        // Only this segment's files: a file another engine wrote (its own
        // compaction) is not dlog's to cut.
        let files = to.tables.files_across(log, log_id, trim_offset).await?;
        let ours = |location: &str| location == own || location.starts_with(&copies);
        if !files.iter().any(|file| ours(&file.location)) {
            let (id, segment_id) = (LogId(log_id), SegmentId(segment.segment_id));
            (to.manifest)
                .mark_table_cut(log, id, segment_id, trim_offset)
                .await?;
            return Ok(committed);
        }
        if attempts == ATTEMPTS {
            return Err(cut_error(
                log,
                segment,
                format!("{ATTEMPTS} cuts lost to other commits in a row"),
            ));
        }
        attempts += 1;
        let copy = write_copy(to, log, log_id, segment, trim_offset).await?;
        let (key, file) = (&copy.0, &copy.1);
        let entry = TableFile {
            key,
            file,
            segment_id: segment.segment_id,
            start_offset: trim_offset,
            end_offset: object_end(segment),
            time_range_ms: file.time_range_ms,
        };
        match to
            .tables
            .replace(log, log_id, trim_offset, (&own, &copies), &entry)
            .await?
        {
            Replaced::Committed => {
                committed = true;
                tracing::info!(copy = %key, "hid the rows below the trim point from the log's table");
            }
            // Another compactor cut it (then the next look finds nothing)
            // or changed the table meanwhile (then it is looked at again).
            Replaced::AlreadyThere | Replaced::Gone => {}
        }
    }
}

/// Steps 2–4: the copy of the segment's rows from `trim_offset` on,
/// uploaded and read back; returns its key and file.
pub(crate) async fn write_copy(
    to: CutIn<'_>,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
    trim_offset: u64,
) -> Result<(object_store::path::Path, segment_file::SegmentFile)> {
    let object = segment.object.as_ref().expect("checked by the caller");
    // A merged object is cut whole from the trim point on: its copy holds
    // the later segments' rows too.
    let end = object_end(segment);
    let (bytes, _) =
        read_recorded(to.objects, object, |reason| cut_error(log, segment, reason)).await?;
    let schema = payload_schema(to.manifest, log).await?;
    let (owned_log, segment_id) = (log.clone(), segment.segment_id);
    let encode = move || {
        let info = FileInfo {
            log: &owned_log,
            segment_id,
            start_offset: trim_offset,
            end_offset: end,
            payload_schema: schema.as_ref(),
        };
        // A file in the current layout keeps its own columns (typed ones
        // of fields since removed included); others are encoded again.
        if let Some(file) = segment_concat::cut_file(bytes.clone(), trim_offset, &info)? {
            return Ok(file);
        }
        let mut records = segment_file::decode_file(bytes)?;
        records.retain(|record| record.offset >= trim_offset);
        segment_file::encode_records(&records, &info)
    };
    let file = cpu_work(to.encode_inline, encode)
        .await
        .map_err(|err| cut_error(log, segment, format!("encoding task failed: {err}")))?
        .map_err(|err| cut_error(log, segment, format!("rewrite {}: {err}", object.key)))?;
    let folder = copies_folder(to, log, log_id, segment);
    let key = segment_file::cut_key(&folder, (trim_offset, end), file.crc32c);
    upload(to.objects, &key, &file).await?;
    verify_upload(to.objects, &key, file.crc32c).await?;
    failpoint::hit("retention.after_cut_upload");
    Ok((key, file))
}

/// Whether the trim point falls inside the segment's object, at an offset
/// of this segment: strictly inside its own file, or at any offset of it
/// past the start of the merged object it is on (a trim point at the
/// boundary of two merged segments cuts the merged file under the later
/// one's claim).
pub fn holds_trim_inside(segment: &SegmentMeta, trim_offset: u64) -> bool {
    let Some(object) = &segment.object else {
        return false;
    };
    let end = segment.end_offset.unwrap_or(segment.start_offset);
    let object_start = object
        .merged
        .map_or(segment.start_offset, |r| r.start_offset);
    object_start < trim_offset && segment.start_offset <= trim_offset && trim_offset < end
}

/// The end of the rows of the segment's object: the segment's end, or
/// the merged object's.
fn object_end(segment: &SegmentMeta) -> u64 {
    match segment.object.as_ref().and_then(|o| o.merged) {
        Some(range) => range.end_offset,
        None => segment.end_offset.unwrap_or(segment.start_offset),
    }
}

/// The folder of the copies of the segment's object cut at trim points:
/// the segment's own, or the merged object's (deleted with it).
pub(crate) fn copies_folder(
    to: CutIn<'_>,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
) -> object_store::path::Path {
    let prefix = &to.objects.prefix;
    match segment.object.as_ref().and_then(|o| o.merged) {
        Some(range) => segment_file::merged_cut_folder(
            prefix,
            log,
            log_id,
            (range.start_offset, range.end_offset),
        ),
        None => segment_file::cut_folder(prefix, log, log_id, segment.segment_id),
    }
}

fn cut_error(log: &LogName, segment: &SegmentMeta, reason: String) -> Error {
    Error::TableCut {
        log: log.clone(),
        segment: segment.segment_id,
        reason,
    }
}
