//! Adding to a log's Iceberg table the offloaded segments it lacks because
//! they were offloaded before the table was created (tables turned on for
//! a cluster that ran without; ARCHITECTURE.md, "Iceberg tables").
//!
//! Runs with the sweep. The segments looked at are those offloaded before
//! the table's creation (table property `dlog.created-at-ms`) or within
//! [`crate::table::BACKFILL_MARGIN_MS`] after it (another compactor's clock;
//! a segment appended to a table dropped and re-created before its
//! manifest write), not taken out of the table by retention, whose file
//! (or a copy of it) the table does not hold
//! ([`LogTables::missing_files`]). A segment offloaded later was appended
//! by its offload, so one missing from the table now was taken out by
//! something else, and is not brought back. For each, under the segment's
//! claim:
//!
//! 1. skip it if it lies wholly below the log's trim point;
//! 2. read its footer (two range reads of its end): a file of an earlier
//!    layout has another schema and stays out;
//! 3. if the trim point (or a cut recorded for it) lies inside it, write a
//!    copy cut there ([`crate::table_cut`]) and append that, recording the
//!    cut; else read the whole object, check it against the CRC32C the
//!    manifest recorded, and append it ([`LogTables::append`]: not again if
//!    it is there, not if it lies below the trim point the table records).
//!
//! Crash safety: the append is the only table write, and it is idempotent;
//! a copy uploaded without its append is one more copy in the segment's
//! `_trimmed` folder, deleted with the segment. The next sweep looks again.

use std::ops::Range;

use dlog_meta::manifest::SegmentMeta;
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_storage::segment_file::{self, SegmentFile};
use dlog_wire::ids::{LogId, SegmentId};
use dlog_wire::names::LogName;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::offload::read_recorded;
use crate::table::{Appended, TableFile};
use crate::table_cut::{CutIn, cut_below_trim, write_copy};

/// Whether the table should hold `segment`'s file (or a copy) and the
/// backfill may put it there: it is offloaded, holds records, was not taken
/// out of the table, and was not backfilled before (one that left the table
/// since was taken out by something else). Merged files never are: only
/// files already in the table are merged, and a merge's crash leaves
/// either the old files or the merged one there.
pub fn candidate(segment: &SegmentMeta) -> bool {
    segment.object.as_ref().is_some_and(|o| o.merged.is_none())
        && segment.merging_into.is_none()
        && segment.retired_object.is_none()
        && segment.table_removed_at_ms.is_none()
        && segment.table_backfilled_at_ms.is_none()
        && segment
            .end_offset
            .is_some_and(|end| end > segment.start_offset)
}

/// What a backfill of one segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfilled {
    /// What the append did.
    Appended(Appended),
    /// The file is of an earlier layout: it stays out of the table.
    EarlierLayout,
    /// The segment changed since it was listed, or lies below the trim
    /// point.
    NotWanted,
}

/// Appends the segment's file, or a copy of it cut at the trim point, to
/// the log's table if it is in the current layout. The caller holds the
/// segment's claim and read `segment` under it.
pub async fn backfill_segment(
    to: CutIn<'_>,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
) -> Result<Backfilled> {
    let Some(object) = segment.object.as_ref().filter(|_| candidate(segment)) else {
        return Ok(Backfilled::NotWanted);
    };
    let end = segment.end_offset.unwrap_or(segment.start_offset);
    let trim = to.manifest.trim_point(log).await?;
    let cut_at = trim.max(segment.table_cut_offset.unwrap_or(0));
    if end <= cut_at {
        return Ok(Backfilled::NotWanted);
    }
    let key = Path::from(object.key.as_str());
    let layout = layout_of(to.objects, &key, object.size).await?;
    if layout.as_deref() != Some(segment_file::FORMAT_VERSION) {
        return Ok(Backfilled::EarlierLayout);
    }
    if cut_at > segment.start_offset {
        let (copy_key, copy) = write_copy(to, log, log_id, segment, cut_at).await?;
        let entry = TableFile {
            key: &copy_key,
            file: &copy,
            segment_id: segment.segment_id,
            start_offset: cut_at,
            end_offset: end,
            time_range_ms: copy.time_range_ms,
        };
        let appended = to.tables.append(log, log_id, trim, &entry).await?;
        return settle(to, log, log_id, segment, appended).await;
    }
    let mismatch = |reason| Error::Incomplete {
        log: log.clone(),
        segment: segment.segment_id,
        reason,
    };
    let (bytes, crc32c) = read_recorded(to.objects, object, mismatch).await?;
    let time_range_ms = segment.min_timestamp_ms.zip(segment.max_timestamp_ms);
    let file = SegmentFile {
        bytes,
        rows: end - segment.start_offset,
        crc32c,
        time_range_ms,
    };
    let entry = TableFile {
        key: &key,
        file: &file,
        segment_id: segment.segment_id,
        start_offset: segment.start_offset,
        end_offset: end,
        time_range_ms,
    };
    let appended = to.tables.append(log, log_id, trim, &entry).await?;
    settle(to, log, log_id, segment, appended).await
}

/// After an append: cuts the segment at the trim point as it is now, if
/// that lies inside it (it may have moved, or the table may hold another
/// file of the segment beside the one appended), then records the
/// backfill.
async fn settle(
    to: CutIn<'_>,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
    appended: Appended,
) -> Result<Backfilled> {
    let trim = to.manifest.trim_point(log).await?;
    let end = segment.end_offset.unwrap_or(segment.start_offset);
    if segment.start_offset < trim && trim < end {
        cut_below_trim(to, log, log_id, segment, trim).await?;
    }
    let (id, segment_id) = (LogId(log_id), SegmentId(segment.segment_id));
    (to.manifest)
        .mark_table_backfilled(log, id, segment_id, dlog_wire::now_ms())
        .await?;
    Ok(Backfilled::Appended(appended))
}

/// The format version a segment file's footer names, read from the end of
/// the object (`size` bytes) only.
async fn layout_of(objects: &ObjectStoreHandle, key: &Path, size: u64) -> Result<Option<String>> {
    let range = |range: Range<u64>| async move {
        (objects.store.get_range(key, range).await)
            .map_err(Error::object_store("read the footer of", key))
    };
    let Some(tail_at) = size.checked_sub(8) else {
        return Ok(None);
    };
    let tail = range(tail_at..size).await?;
    let Some(footer) = segment_file::footer_length(&tail) else {
        return Ok(None);
    };
    let Some(footer_at) = size.checked_sub(8 + footer as u64) else {
        return Ok(None);
    };
    let end = range(footer_at..size).await?;
    Ok(segment_file::footer_format_version(&end))
}
