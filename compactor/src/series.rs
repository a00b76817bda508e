//! The compactor role's Prometheus series. Recorded through the `metrics`
//! facade, which does nothing until a process installs a recorder (the
//! `dlog` binary does with `--metrics-listen`).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Sealed segments not yet offloaded, as of the last pass.
pub const OFFLOAD_LAG_SEGMENTS: &str = "dlog_compactor_offload_lag_segments";
/// Bytes of the sealed segments not yet offloaded, as of the last pass.
pub const OFFLOAD_LAG_BYTES: &str = "dlog_compactor_offload_lag_bytes";
/// Seconds to offload one segment: read, encode, upload, verify, record.
pub const OFFLOAD_DURATION: &str = "dlog_compactor_offload_duration_seconds";
/// Segments offloaded.
pub const OFFLOADED_SEGMENTS: &str = "dlog_compactor_offloaded_segments_total";
/// Bytes of Parquet objects written.
pub const PARQUET_WRITTEN_BYTES: &str = "dlog_compactor_parquet_written_bytes_total";
/// Segments deleted below a trim point (retention or trim).
pub const RETENTION_DELETED_SEGMENTS: &str = "dlog_compactor_retention_deleted_segments_total";
/// Seconds to append one offloaded file to its log's Iceberg table.
pub const TABLE_COMMIT_DURATION: &str = "dlog_compactor_table_commit_duration_seconds";
/// Segments whose files were merged into larger ones.
pub const MERGED_SEGMENTS: &str = "dlog_compactor_merged_segments_total";
/// Seconds to merge one run of adjacent segments' files.
pub const MERGE_DURATION: &str = "dlog_compactor_merge_duration_seconds";
/// Seconds of one pass over every log.
pub const PASS_DURATION: &str = "dlog_compactor_pass_duration_seconds";

/// Registers the series' help texts and units with the installed recorder.
pub fn describe() {
    describe_gauge!(
        OFFLOAD_LAG_SEGMENTS,
        Unit::Count,
        "Sealed segments not yet offloaded, as of the last pass"
    );
    describe_gauge!(
        OFFLOAD_LAG_BYTES,
        Unit::Bytes,
        "Bytes of sealed segments not yet offloaded, as of the last pass"
    );
    describe_histogram!(
        OFFLOAD_DURATION,
        Unit::Seconds,
        "Time to offload one segment to Parquet"
    );
    describe_counter!(OFFLOADED_SEGMENTS, Unit::Count, "Segments offloaded");
    describe_counter!(
        PARQUET_WRITTEN_BYTES,
        Unit::Bytes,
        "Bytes of Parquet objects written"
    );
    describe_counter!(
        RETENTION_DELETED_SEGMENTS,
        Unit::Count,
        "Segments deleted below a trim point"
    );
    describe_histogram!(
        TABLE_COMMIT_DURATION,
        Unit::Seconds,
        "Time to append one offloaded file to its log's Iceberg table"
    );
    describe_counter!(
        MERGED_SEGMENTS,
        Unit::Count,
        "Segments whose files were merged into larger ones"
    );
    describe_histogram!(
        MERGE_DURATION,
        Unit::Seconds,
        "Time to merge one run of adjacent segments' files"
    );
    describe_histogram!(
        PASS_DURATION,
        Unit::Seconds,
        "Time of one compactor pass over every log"
    );
}
