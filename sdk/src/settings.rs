//! Namespace and log settings through `AdminService`: what
//! [`Client::namespace`](crate::Client::namespace) and
//! [`Client::log_settings`](crate::Client::log_settings) answer, and what
//! [`Client::configure_namespace`](crate::Client::configure_namespace) and
//! [`Client::configure_log`](crate::Client::configure_log) change.

use dlog_wire::proto as pb;

/// Settings in force for a namespace or a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Segments whose newest record is older than this are deleted;
    /// `None`: kept forever.
    pub retention_ms: Option<u64>,
    /// The oldest segments are deleted while the log is larger; `None`: no
    /// size limit.
    pub retention_bytes: Option<u64>,
    /// The open segment rolls past this many bytes.
    pub roll_max_bytes: u64,
    /// The open segment rolls past this many records.
    pub roll_max_records: u64,
    /// The open segment rolls at this age.
    pub roll_max_age_ms: u64,
    /// Replication of new segments: the ensemble E (cache nodes per segment).
    pub ensemble: u32,
    /// The write quorum W (copies of each entry).
    pub write_quorum: u32,
    /// The ack quorum A (durable copies before an append is acknowledged).
    pub ack_quorum: u32,
    /// Appended bytes per second per log; `None`: no quota. Appends over
    /// a quota are refused with `RESOURCE_EXHAUSTED` and a retry-after
    /// hint, which the client waits out.
    pub max_append_bytes_per_sec: Option<u64>,
    /// Appended records per second per log; `None`: no quota.
    pub max_append_records_per_sec: Option<u64>,
    /// Appended bytes per second over all of a namespace's logs that one
    /// ingest node owns; `None`: no quota.
    pub namespace_max_append_bytes_per_sec: Option<u64>,
    /// Appended records per second, like
    /// [`Settings::namespace_max_append_bytes_per_sec`].
    pub namespace_max_append_records_per_sec: Option<u64>,
    /// The namespace's payload schema in force, as JSON with each field's
    /// Iceberg/Parquet field id (docs/wire.md, "Payload schemas"); `None`:
    /// payloads are not checked.
    pub payload_schema: Option<String>,
    /// Whether these are the namespace's (or log's) own settings; `false`:
    /// inherited from the cluster default (or the log's namespace).
    pub own: bool,
}

impl Settings {
    pub(crate) fn from_wire(settings: Option<pb::Settings>, own: bool) -> Settings {
        let s = settings.unwrap_or_default();
        Settings {
            retention_ms: s.retention_ms,
            retention_bytes: s.retention_bytes,
            roll_max_bytes: s.roll_max_bytes,
            roll_max_records: s.roll_max_records,
            roll_max_age_ms: s.roll_max_age_ms,
            ensemble: s.ensemble,
            write_quorum: s.write_quorum,
            ack_quorum: s.ack_quorum,
            max_append_bytes_per_sec: s.max_append_bytes_per_sec,
            max_append_records_per_sec: s.max_append_records_per_sec,
            namespace_max_append_bytes_per_sec: s.namespace_max_append_bytes_per_sec,
            namespace_max_append_records_per_sec: s.namespace_max_append_records_per_sec,
            payload_schema: s.payload_schema,
            own,
        }
    }
}

/// A change of settings: only what is set changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    /// See [`Settings::retention_ms`].
    pub retention_ms: Option<u64>,
    /// See [`Settings::retention_bytes`].
    pub retention_bytes: Option<u64>,
    /// See [`Settings::roll_max_bytes`].
    pub roll_max_bytes: Option<u64>,
    /// See [`Settings::roll_max_records`].
    pub roll_max_records: Option<u64>,
    /// See [`Settings::roll_max_age_ms`].
    pub roll_max_age_ms: Option<u64>,
    /// Replication as (E, W, A).
    pub replication: Option<(u32, u32, u32)>,
    /// See [`Settings::max_append_bytes_per_sec`].
    pub max_append_bytes_per_sec: Option<u64>,
    /// See [`Settings::max_append_records_per_sec`].
    pub max_append_records_per_sec: Option<u64>,
    /// See [`Settings::namespace_max_append_bytes_per_sec`]; namespaces only.
    pub namespace_max_append_bytes_per_sec: Option<u64>,
    /// See [`Settings::namespace_max_append_records_per_sec`]; namespaces only.
    pub namespace_max_append_records_per_sec: Option<u64>,
    /// A payload schema document (JSON: `{"fields":[{"name":"user",
    /// "type":"string","required":true}]}`); namespaces only. Appends whose
    /// payloads do not match are refused with `INVALID_ARGUMENT`.
    pub payload_schema: Option<String>,
    /// Keep records forever (no age limit).
    pub clear_retention_ms: bool,
    /// No size limit.
    pub clear_retention_bytes: bool,
    /// No bytes quota per log.
    pub clear_max_append_bytes_per_sec: bool,
    /// No records quota per log.
    pub clear_max_append_records_per_sec: bool,
    /// No bytes quota for the namespace.
    pub clear_namespace_max_append_bytes_per_sec: bool,
    /// No records quota for the namespace.
    pub clear_namespace_max_append_records_per_sec: bool,
    /// Stop checking payloads (the field ids stay taken); namespaces only.
    pub clear_payload_schema: bool,
}

impl SettingsChange {
    /// Whether the change changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    pub(crate) fn to_wire(&self) -> pb::SettingsChange {
        let (ensemble, write_quorum, ack_quorum) = match self.replication {
            Some((e, w, a)) => (Some(e), Some(w), Some(a)),
            None => (None, None, None),
        };
        pb::SettingsChange {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            roll_max_bytes: self.roll_max_bytes,
            roll_max_records: self.roll_max_records,
            roll_max_age_ms: self.roll_max_age_ms,
            ensemble,
            write_quorum,
            ack_quorum,
            max_append_bytes_per_sec: self.max_append_bytes_per_sec,
            clear_retention_ms: self.clear_retention_ms,
            clear_retention_bytes: self.clear_retention_bytes,
            clear_max_append_bytes_per_sec: self.clear_max_append_bytes_per_sec,
            max_append_records_per_sec: self.max_append_records_per_sec,
            namespace_max_append_bytes_per_sec: self.namespace_max_append_bytes_per_sec,
            namespace_max_append_records_per_sec: self.namespace_max_append_records_per_sec,
            clear_max_append_records_per_sec: self.clear_max_append_records_per_sec,
            clear_namespace_max_append_bytes_per_sec: self.clear_namespace_max_append_bytes_per_sec,
            clear_namespace_max_append_records_per_sec: self
                .clear_namespace_max_append_records_per_sec,
            payload_schema: self.payload_schema.clone(),
            clear_payload_schema: self.clear_payload_schema,
        }
    }
}
