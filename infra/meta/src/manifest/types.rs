//! Values stored in the manifest. JSON, so operators can read them with
//! `etcdctl get --prefix /dlog/`.

use crate::metastore::Revision;
use dlog_wire::codec::{Entry, EntryRecord};
use dlog_wire::ids::{EntryId, Offset};
use dlog_wire::payload_schema::PayloadSchema;
use serde::{Deserialize, Serialize};

/// Replication of a log's segments: ensemble size E, write quorum W, ack
/// quorum A (DL/BookKeeper terms), with 64 >= E >= W >= A >= 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    pub ensemble: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
}

impl Replication {
    /// 3/3/2: survives one cache node failure without stalling acks.
    pub const DEFAULT: Replication = Replication {
        ensemble: 3,
        write_quorum: 3,
        ack_quorum: 2,
    };
    /// Standalone: one cache node.
    pub const SINGLE: Replication = Replication {
        ensemble: 1,
        write_quorum: 1,
        ack_quorum: 1,
    };

    /// Largest ensemble: an owner tracks which replicas acknowledged an
    /// entry in a `u64` bitmask, one bit per ensemble member.
    pub const MAX_ENSEMBLE: u32 = 64;

    /// Checks 64 >= E >= W >= A >= 1.
    pub fn validate(&self) -> Result<(), String> {
        if self.ensemble > Self::MAX_ENSEMBLE {
            return Err(format!(
                "replication {}/{}/{}: the ensemble may have at most {} nodes",
                self.ensemble,
                self.write_quorum,
                self.ack_quorum,
                Self::MAX_ENSEMBLE
            ));
        }
        if self.ack_quorum == 0
            || self.write_quorum < self.ack_quorum
            || self.ensemble < self.write_quorum
        {
            return Err(format!(
                "replication {}/{}/{} must satisfy ensemble >= write quorum >= ack quorum >= 1",
                self.ensemble, self.write_quorum, self.ack_quorum
            ));
        }
        Ok(())
    }
}

impl Default for Replication {
    fn default() -> Self {
        Replication::DEFAULT
    }
}

/// The largest roll size ([`RollPolicy::max_bytes`]): a namespace may not
/// set more, and an owner rolls at this size whatever was stored before.
/// The compactor uploads every file in one create-only request, which S3
/// takes up to 5 GiB; a segment's file stays well below that even when
/// typed payload columns repeat its payloads' strings.
pub const MAX_ROLL_BYTES: u64 = 1024 * 1024 * 1024;

/// When the owner rolls the open segment to a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RollPolicy {
    pub max_bytes: u64,
    pub max_records: u64,
    pub max_age_ms: u64,
}

impl Default for RollPolicy {
    fn default() -> Self {
        RollPolicy {
            max_bytes: 256 * 1024 * 1024,
            max_records: 10_000_000,
            max_age_ms: 10 * 60 * 1000,
        }
    }
}

/// Per-namespace configuration (`ns/<ns>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespaceConfig {
    /// Delete segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    pub roll: RollPolicy,
    pub replication: Replication,
    /// Appended bytes per second per log; above it appends get
    /// `RESOURCE_EXHAUSTED` with a retry-after hint.
    pub max_append_bytes_per_sec: Option<u64>,
    /// Appended records per second per log.
    pub max_append_records_per_sec: Option<u64>,
    /// Appended bytes per second over all of the namespace's logs that one
    /// ingest node owns. Set on the namespace only: a log's own settings
    /// take them from their namespace ([`super::Manifest::log_config`]).
    pub namespace_max_append_bytes_per_sec: Option<u64>,
    /// Appended records per second, like `namespace_max_append_bytes_per_sec`.
    pub namespace_max_append_records_per_sec: Option<u64>,
    /// The JSON fields of the namespace's payloads and their types, with
    /// the field ids of their columns (`dlog_wire::payload_schema`). Set on
    /// the namespace only, like the namespace-wide quotas. Once set it is
    /// never dropped: a cleared schema keeps its fields as removed, so their
    /// ids are never handed out again. Kept under a key of its own
    /// (`payload_schema/<ns>`); read inside these settings only where a
    /// release before that key wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_schema: Option<PayloadSchema>,
}

/// The revisions of a namespace's keys as read
/// ([`super::Manifest::namespace_versioned`]); `None`: the key was absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceRevisions {
    /// `ns/<ns>`: absent when the namespace has no settings of its own.
    pub settings: Option<Revision>,
    /// `payload_schema/<ns>`.
    pub payload_schema: Option<Revision>,
}

/// The longest retention age accepted: 100 years. Longer is meant as
/// "forever", which is no `retention_ms` at all.
pub const MAX_RETENTION_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

impl NamespaceConfig {
    /// The payload schema that checks appends and types columns, if the
    /// namespace has one in force (not cleared).
    pub fn active_payload_schema(&self) -> Option<&PayloadSchema> {
        self.payload_schema.as_ref().filter(|s| s.is_active())
    }

    /// Checks the retention settings: an age must be 1 ms to
    /// [`MAX_RETENTION_MS`], a size at least 1 byte (absent keeps all).
    pub fn validate_retention(&self) -> Result<(), String> {
        if let Some(ms) = self.retention_ms
            && !(1..=MAX_RETENTION_MS).contains(&ms)
        {
            return Err(format!(
                "retention_ms {ms} must be 1..={MAX_RETENTION_MS} (leave it unset to keep records forever)"
            ));
        }
        if self.retention_bytes == Some(0) {
            return Err(
                "retention_bytes 0 would delete every segment (leave it unset to keep all)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// A change of settings seen on the manifest ([`super::Manifest::settings_change`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsChange {
    /// The configuration of namespaces without their own.
    Default,
    Namespace(dlog_wire::names::Namespace),
    /// A log's metadata, its own configuration included.
    Log(dlog_wire::names::LogName),
}

/// Life cycle of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogState {
    Active,
    /// Deleted by an admin; the compactor removes its objects and then its keys.
    Deleting,
}

/// `log/<ns>/<log>/meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMeta {
    /// Unique for the cluster's lifetime: a re-created log never meets the
    /// old one's segments on cache nodes or in object storage.
    pub log_id: u64,
    pub created_at_ms: i64,
    pub state: LogState,
    /// Overrides of the namespace configuration.
    #[serde(default)]
    pub config: Option<NamespaceConfig>,
    /// Set by `MarkEndOfStream`: no append is accepted afterwards.
    #[serde(default)]
    pub end_of_stream: Option<u64>,
}

/// What an owner's manifest writes are fenced by: the incarnation of the
/// log (its log id: a log deleted and re-created under the same name gets a
/// new one, and its epochs start over) and the writer epoch within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub log_id: u64,
    pub epoch: u64,
}

/// Life cycle of a segment: `open -> sealed -> offloaded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    Open,
    Sealed,
    Offloaded,
}

impl SegmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Open => "open",
            SegmentState::Sealed => "sealed",
            SegmentState::Offloaded => "offloaded",
        }
    }
}

/// Where an offloaded segment's Parquet file is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// CRC32C of the whole object.
    pub crc32c: u32,
    /// When the segment was marked offloaded; cache nodes drop it a grace
    /// period later.
    #[serde(default)]
    pub offloaded_at_ms: i64,
    /// Set when the object is a merge of adjacent segments' files (the
    /// compactor's merge of small files): the offsets it holds, this
    /// segment's among them. Readers take only the segment's own rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<OffsetRange>,
}

/// The offsets `start_offset..end_offset` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub start_offset: u64,
    pub end_offset: u64,
}

/// A merge of adjacent segments' files into one object, recorded on each
/// of those segments before the object is written, so that a merge cut
/// short by a crash is finished or undone by the next pass, never left
/// as an object nobody records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeIntent {
    /// The merged object's key.
    pub key: String,
    /// The offsets of the segments merged (first segment's start to the
    /// last one's end).
    pub range: OffsetRange,
    /// The merged object as uploaded and read back (before it goes in
    /// the table): a resumed merge checks the object at the key against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<UploadedObject>,
}

/// The size and CRC32C of an uploaded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedObject {
    pub size: u64,
    pub crc32c: u32,
}

/// A segment's own object after its rows moved into a merged object:
/// deleted a grace period after `at_ms`, once no reader planned on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredObject {
    pub object: ObjectInfo,
    pub at_ms: i64,
}

/// `log/<ns>/<log>/seg/<segment_id:020>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub segment_id: u64,
    /// Epoch of the owner that opened the segment.
    pub epoch: u64,
    /// Cache node ids holding the segment.
    pub ensemble: Vec<String>,
    /// The zone of each node of `ensemble`, slot by slot, as registered
    /// when the segment was placed (empty: a segment of a version before
    /// zones, or a zone unknown; `""` for a node without a zone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    pub write_quorum: u32,
    pub ack_quorum: u32,
    pub start_offset: u64,
    pub state: SegmentState,
    /// Exclusive end; set when sealed.
    pub end_offset: Option<u64>,
    pub last_entry_id: Option<u64>,
    pub bytes: u64,
    pub min_timestamp_ms: Option<i64>,
    pub max_timestamp_ms: Option<i64>,
    pub min_txid: Option<i64>,
    pub max_txid: Option<i64>,
    pub object: Option<ObjectInfo>,
    /// Set once every cache node of the ensemble dropped the offloaded segment.
    #[serde(default)]
    pub cache_dropped: bool,
    /// When the segment's file left its log's Iceberg table (retention):
    /// its object is deleted a grace period later, after the queries
    /// that planned on an older snapshot are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_removed_at_ms: Option<i64>,
    /// The trim point inside this segment below which its rows are gone
    /// from its log's Iceberg table: the table holds a copy of the file cut
    /// at that offset instead of the segment's own file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_cut_offset: Option<u64>,
    /// When the table backfill put the segment's file (or a copy) in its
    /// log's Iceberg table: it is not put back if it leaves the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_backfilled_at_ms: Option<i64>,
    /// A merge of this segment's file with its neighbours' in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merging_into: Option<MergeIntent>,
    /// The segment's own object, replaced by a merged one (`object`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_object: Option<RetiredObject>,
}

impl SegmentMeta {
    /// The template of a new open segment, for `Manifest::create_segment`
    /// (which assigns the segment id): nothing written, sealed or offloaded.
    pub fn open(
        epoch: u64,
        ensemble: Vec<String>,
        write_quorum: u32,
        ack_quorum: u32,
        start_offset: u64,
    ) -> SegmentMeta {
        SegmentMeta {
            segment_id: 0,
            epoch,
            ensemble,
            zones: Vec::new(),
            write_quorum,
            ack_quorum,
            start_offset,
            state: SegmentState::Open,
            end_offset: None,
            last_entry_id: None,
            bytes: 0,
            min_timestamp_ms: None,
            max_timestamp_ms: None,
            min_txid: None,
            max_txid: None,
            object: None,
            cache_dropped: false,
            table_removed_at_ms: None,
            table_cut_offset: None,
            table_backfilled_at_ms: None,
            merging_into: None,
            retired_object: None,
        }
    }

    /// The template with the zone of each ensemble node, slot by slot.
    pub fn with_zones(mut self, zones: Vec<String>) -> SegmentMeta {
        self.zones = zones;
        self
    }

    /// The zone of the ensemble node `node`, if recorded and not empty.
    pub fn zone_of(&self, node: &str) -> Option<&str> {
        let slot = self.ensemble.iter().position(|n| n == node)?;
        self.zones
            .get(slot)
            .map(String::as_str)
            .filter(|zone| !zone.is_empty())
    }
}

/// What sealing records about a segment, gathered over its entries as
/// they are written (by the owner) or copied (by recovery).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealInfo {
    pub end_offset: u64,
    pub last_entry_id: Option<u64>,
    pub bytes: u64,
    pub min_timestamp_ms: Option<i64>,
    pub max_timestamp_ms: Option<i64>,
    pub min_txid: Option<i64>,
    pub max_txid: Option<i64>,
}

impl SealInfo {
    /// Nothing counted yet, for a segment that starts at `start_offset`.
    pub fn empty(start_offset: u64) -> SealInfo {
        SealInfo {
            end_offset: start_offset,
            ..SealInfo::default()
        }
    }

    /// Counts an entry (in entry order).
    pub fn add(&mut self, entry: &Entry, encoded_len: usize) {
        self.add_records(
            EntryId(entry.header.entry_id),
            Offset(entry.header.first_offset),
            &entry.records,
            encoded_len,
        );
    }

    /// Counts an entry given by its parts.
    pub fn add_records(
        &mut self,
        entry_id: EntryId,
        first_offset: Offset,
        records: &[EntryRecord],
        encoded_len: usize,
    ) {
        let (entry_id, first_offset) = (entry_id.0, first_offset.0);
        self.end_offset = first_offset + records.len() as u64;
        self.last_entry_id = Some(entry_id);
        self.bytes += encoded_len as u64;
        for record in records {
            let ts = record.timestamp_ms;
            self.min_timestamp_ms = Some(self.min_timestamp_ms.map_or(ts, |m| m.min(ts)));
            self.max_timestamp_ms = Some(self.max_timestamp_ms.map_or(ts, |m| m.max(ts)));
            if let Some(txid) = record.record.txid {
                self.min_txid = Some(self.min_txid.map_or(txid, |m| m.min(txid)));
                self.max_txid = Some(self.max_txid.map_or(txid, |m| m.max(txid)));
            }
        }
    }
}

/// A node's registration (`node/<role>/<id>`) and a log's owner
/// (`owner/<ns>/<log>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    #[serde(default)]
    pub zone: String,
    /// Relative capacity for placement; 0 = default.
    #[serde(default)]
    pub capacity: u32,
    /// `IP:PORT` of the node's Kafka listener, if it serves Kafka clients
    /// (in an owner key: where Kafka clients reach the log's owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
}

/// Roles a node can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Ingest,
    Cache,
    Compactor,
    Reader,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Cache, Role::Compactor, Role::Reader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Cache => "cache",
            Role::Compactor => "compactor",
            Role::Reader => "reader",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected ingest, cache, compactor or reader")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Replication;

    fn replication(ensemble: u32, write_quorum: u32, ack_quorum: u32) -> Replication {
        Replication {
            ensemble,
            write_quorum,
            ack_quorum,
        }
    }

    #[test]
    fn replication_settings_are_validated() {
        for ok in [(1, 1, 1), (3, 3, 2), (5, 3, 2), (64, 64, 64), (64, 3, 1)] {
            let r = replication(ok.0, ok.1, ok.2);
            assert_eq!(r.validate(), Ok(()), "{ok:?}");
        }
        for bad in [
            (0, 0, 0),
            (3, 3, 0),
            (3, 2, 3),
            (2, 3, 2),
            (65, 3, 2),
            (65, 65, 65),
        ] {
            let r = replication(bad.0, bad.1, bad.2);
            assert!(r.validate().is_err(), "{bad:?} must be refused");
        }
        let err = replication(100, 3, 2).validate().unwrap_err();
        assert!(err.contains("at most 64"), "{err}");
    }
}
