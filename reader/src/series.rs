//! The reader role's Prometheus series. Recorded through the `metrics`
//! facade, which does nothing until a process installs a recorder (the
//! `dlog` binary does with `--metrics-listen`).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Reads running on this node.
pub const ACTIVE_READS: &str = "dlog_reader_active_reads";
/// Reads running with `follow` (tailing the log).
pub const TAILING_READS: &str = "dlog_reader_tailing_reads";
/// Records sent to readers.
pub const SERVED_RECORDS: &str = "dlog_reader_served_records_total";
/// Bytes of records sent to readers (payload, key, headers).
pub const SERVED_BYTES: &str = "dlog_reader_served_bytes_total";
/// Lookups in the node's shared caches, by `tier` (`cache` entries,
/// `parquet` row groups) and `result` (`hit`, `miss`).
pub const CACHE_LOOKUPS: &str = "dlog_reader_cache_lookups_total";
/// Bytes of entries fetched from cache nodes, by `zone`: `same` (a replica
/// in this node's zone), `cross` (another zone), `unknown` (this node or
/// the replica has no zone recorded).
pub const CACHE_FETCHED_BYTES: &str = "dlog_reader_cache_fetched_bytes_total";
/// Seconds from a record's acknowledgement timestamp to its delivery to a
/// read that waited at the tail (millisecond resolution).
pub const DELIVERY_LATENCY: &str = "dlog_reader_append_to_delivery_seconds";

/// Registers the series' help texts and units with the installed recorder.
pub fn describe() {
    describe_gauge!(ACTIVE_READS, Unit::Count, "Reads running on this node");
    describe_gauge!(TAILING_READS, Unit::Count, "Reads following the tail");
    describe_counter!(SERVED_RECORDS, Unit::Count, "Records sent to readers");
    describe_counter!(
        SERVED_BYTES,
        Unit::Bytes,
        "Bytes of records sent to readers"
    );
    describe_counter!(
        CACHE_LOOKUPS,
        Unit::Count,
        "Lookups in the reader's caches by tier (cache, parquet) and result (hit, miss)"
    );
    describe_counter!(
        CACHE_FETCHED_BYTES,
        Unit::Bytes,
        "Bytes of entries fetched from cache nodes, by zone (same, cross, unknown)"
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Time from a record's append timestamp to its delivery to a tailing read"
    );
}

/// Counts one lookup in a tier's cache.
pub(crate) fn count_lookup(tier: &'static str, missed: bool) {
    let result = if missed { "miss" } else { "hit" };
    metrics::counter!(CACHE_LOOKUPS, "tier" => tier, "result" => result).increment(1);
}

/// Counts the bytes of entries fetched from one replica, by `zone`
/// (`same`, `cross`, `unknown`).
pub(crate) fn count_fetched(zone: &'static str, bytes: u64) {
    metrics::counter!(CACHE_FETCHED_BYTES, "zone" => zone).increment(bytes);
}
