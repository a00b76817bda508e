//! The cache role's Prometheus series. Recorded through the `metrics`
//! facade, which does nothing until a process installs a recorder (the
//! `dlog` binary does with `--metrics-listen`).

use metrics::{Counter, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};

/// Seconds from an add's arrival to its entry being durable here.
pub const ADD_DURATION: &str = "dlog_cache_add_duration_seconds";
/// Seconds of one group commit's `fdatasync`.
pub const FDATASYNC_DURATION: &str = "dlog_cache_fdatasync_duration_seconds";
/// Records (entries, LACs, fences) made durable by one group commit.
pub const COMMIT_RECORDS: &str = "dlog_cache_commit_records";
/// Bytes in the journal directory's files now.
pub const JOURNAL_BYTES: &str = "dlog_cache_journal_bytes";
/// Journal files now.
pub const JOURNAL_FILES: &str = "dlog_cache_journal_files";
/// Adds refused because the segment was fenced at a higher epoch.
pub const FENCED_ADDS: &str = "dlog_cache_fenced_adds_total";
/// Segments this node holds.
pub const SEGMENTS: &str = "dlog_cache_segments";

/// Registers the series' help texts and units with the installed recorder.
pub fn describe() {
    describe_histogram!(
        ADD_DURATION,
        Unit::Seconds,
        "Time from an add's arrival to its entry being durable"
    );
    describe_histogram!(
        FDATASYNC_DURATION,
        Unit::Seconds,
        "Time of one group commit's fdatasync"
    );
    describe_histogram!(
        COMMIT_RECORDS,
        Unit::Count,
        "Journal records made durable by one group commit"
    );
    describe_gauge!(JOURNAL_BYTES, Unit::Bytes, "Bytes in the journal's files");
    describe_gauge!(JOURNAL_FILES, Unit::Count, "Journal files");
    describe_counter!(
        FENCED_ADDS,
        Unit::Count,
        "Adds refused because the segment is fenced at a higher epoch"
    );
    describe_gauge!(SEGMENTS, Unit::Count, "Segments held by this node");
}

/// Handles of the journal writer's series, looked up once.
#[derive(Debug, Clone)]
pub(crate) struct CommitSeries {
    pub fdatasync: Histogram,
    pub records: Histogram,
}

impl CommitSeries {
    pub fn new() -> CommitSeries {
        CommitSeries {
            fdatasync: metrics::histogram!(FDATASYNC_DURATION),
            records: metrics::histogram!(COMMIT_RECORDS),
        }
    }
}

/// Handles of the store's per-add series, looked up once.
#[derive(Debug, Clone)]
pub(crate) struct AddSeries {
    pub duration: Histogram,
    pub fenced: Counter,
}

impl AddSeries {
    pub fn new() -> AddSeries {
        AddSeries {
            duration: metrics::histogram!(ADD_DURATION),
            fenced: metrics::counter!(FENCED_ADDS),
        }
    }
}
