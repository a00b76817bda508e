//! The sweep of late objects of purged logs.
//!
//! A purge deletes a deleted log's object folder (`.../id=<log_id>/`)
//! before it removes the log's keys, but a compactor paused past its lease
//! (or killed mid-upload and slow to die) can still finish an upload into
//! that folder afterwards. Nothing records such an object and nothing
//! reads it. The purge leaves a record (`purged/<log_id>`,
//! [`dlog_meta::manifest::Purged`]); every sweep deletes the objects of
//! each recorded folder again, and drops a record once it is older than
//! [`CompactorOptions::keep_purge_records`](crate::compactor::CompactorOptions).
//!
//! The sweep deletes only folders the manifest names as purged, never
//! what a bucket listing merely fails to find in the manifest: after an
//! etcd restore, or with another cluster on the same prefix, the folders
//! the manifest does not know hold live data.
//!
//! Crash points: deleting is idempotent and a record is dropped only after
//! its folder was swept, so a sweep that stops half-way leaves the rest to
//! the next one.

use std::time::Duration;

use dlog_meta::manifest::Purged;

/// Whether `purged`'s record has been kept for `keep` at `now_ms`.
pub fn record_expired(purged: &Purged, keep: Duration, now_ms: i64) -> bool {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(purged.purged_at_ms) >= keep_ms
}
