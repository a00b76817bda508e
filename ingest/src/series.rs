//! The ingest role's Prometheus series. Recorded through the `metrics`
//! facade, which does nothing until a process installs a recorder (the
//! `dlog` binary does with `--metrics-listen`).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Seconds from an append's acceptance by its log's owner to its
/// acknowledgement (fdatasync on the ack quorum).
pub const APPEND_DURATION: &str = "dlog_ingest_append_duration_seconds";
/// Records acknowledged.
pub const APPENDED_RECORDS: &str = "dlog_ingest_appended_records_total";
/// Bytes of acknowledged entries, as replicated (records with framing).
pub const APPENDED_BYTES: &str = "dlog_ingest_appended_bytes_total";
/// Records per replicated entry: the owner's batch size.
pub const ENTRY_RECORDS: &str = "dlog_ingest_entry_records";
/// Bytes queued or in flight on this node, against its in-flight budget.
pub const IN_FLIGHT_BYTES: &str = "dlog_ingest_in_flight_bytes";
/// Appends refused for back-pressure; `scope` is `log` or `node`.
pub const BACKPRESSURE_REFUSALS: &str = "dlog_ingest_backpressure_refusals_total";
/// Appends refused over a quota; `scope` is `log` or `namespace`, `unit`
/// is `bytes` or `records`.
pub const QUOTA_REFUSALS: &str = "dlog_ingest_quota_refusals_total";
/// Records a subscription is behind its log's acknowledged end, reported
/// by the log's owner (labels `log`, `subscription`).
pub const SUBSCRIPTION_LAG: &str = "dlog_subscription_lag_records";
/// Logs this node owns now.
pub const OWNED_LOGS: &str = "dlog_ingest_owned_logs";
/// Ownership taken (`change="acquired"`), given up (`change="released"`),
/// or handed over to the placement rule's node (`change="handed_over"`).
pub const OWNERSHIP_CHANGES: &str = "dlog_ingest_ownership_changes_total";
/// Open segments recovered (fenced, copied, sealed) on taking a log over.
pub const RECOVERIES: &str = "dlog_ingest_segment_recoveries_total";
/// Segments opened on an ensemble that relaxed a placement rule, by `rule`
/// (`ensemble_size`: fewer live cache nodes than E; `distinct_zones`:
/// fewer live zones than replicas).
pub const PLACEMENT_RELAXED: &str = "dlog_ingest_placement_relaxed_total";
/// Seconds one segment's recovery took.
pub const RECOVERY_DURATION: &str = "dlog_ingest_segment_recovery_duration_seconds";

/// Registers the series' help texts and units with the installed recorder.
pub fn describe() {
    describe_histogram!(
        APPEND_DURATION,
        Unit::Seconds,
        "Time from an append's acceptance by the log's owner to its acknowledgement"
    );
    describe_counter!(APPENDED_RECORDS, Unit::Count, "Records acknowledged");
    describe_counter!(
        APPENDED_BYTES,
        Unit::Bytes,
        "Bytes of acknowledged entries as replicated"
    );
    describe_histogram!(ENTRY_RECORDS, Unit::Count, "Records per replicated entry");
    describe_gauge!(
        IN_FLIGHT_BYTES,
        Unit::Bytes,
        "Bytes queued or in flight against the node's budget"
    );
    describe_counter!(
        BACKPRESSURE_REFUSALS,
        Unit::Count,
        "Appends refused with RESOURCE_EXHAUSTED for back-pressure, by scope (log or node)"
    );
    describe_counter!(
        QUOTA_REFUSALS,
        Unit::Count,
        "Appends refused with RESOURCE_EXHAUSTED over a quota, by scope (log or namespace) and unit"
    );
    describe_gauge!(OWNED_LOGS, Unit::Count, "Logs this node owns");
    describe_gauge!(
        SUBSCRIPTION_LAG,
        Unit::Count,
        "Records between a subscription's committed offset and its log's acknowledged end"
    );
    describe_counter!(
        OWNERSHIP_CHANGES,
        Unit::Count,
        "Log ownerships acquired or released"
    );
    describe_counter!(RECOVERIES, Unit::Count, "Open segments recovered");
    describe_counter!(
        PLACEMENT_RELAXED,
        Unit::Count,
        "Segments opened on an ensemble that relaxed a placement rule, by rule (ensemble_size, distinct_zones)"
    );
    describe_histogram!(
        RECOVERY_DURATION,
        Unit::Seconds,
        "Time to recover one open segment"
    );
}

/// Handles of the series an owner records per append and per entry, looked
/// up once per owner instead of once per record.
#[derive(Debug, Clone)]
pub(crate) struct OwnerSeries {
    pub append_duration: metrics::Histogram,
    pub appended_records: metrics::Counter,
    pub appended_bytes: metrics::Counter,
    pub entry_records: metrics::Histogram,
}

impl OwnerSeries {
    pub fn new() -> OwnerSeries {
        OwnerSeries {
            append_duration: metrics::histogram!(APPEND_DURATION),
            appended_records: metrics::counter!(APPENDED_RECORDS),
            appended_bytes: metrics::counter!(APPENDED_BYTES),
            entry_records: metrics::histogram!(ENTRY_RECORDS),
        }
    }
}
