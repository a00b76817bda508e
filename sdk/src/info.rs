//! What the admin calls answer: logs, their segments, the cluster. Plain
//! SDK types, converted from the protobuf answers so that a caller never
//! handles generated code.

use dlog_wire::proto as pb;

/// A log as [`Client::create_log`](crate::Client::create_log) and
/// [`Client::get_log`](crate::Client::get_log) describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    /// Full name, `namespace/log`.
    pub log: String,
    /// The id of this incarnation of the name (a log deleted and created
    /// again gets a new one).
    pub log_id: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The first readable offset (below it the log is trimmed).
    pub first_offset: u64,
    /// The offset the next appended record will get.
    pub next_offset: u64,
    /// Records between `first_offset` and `next_offset`.
    pub records: u64,
    /// The log was marked end-of-stream: `next_offset` is final.
    pub end_of_stream: bool,
    /// The log's segments, oldest first.
    pub segments: Vec<SegmentInfo>,
}

/// Where a segment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentState {
    /// Being appended to, on its cache replicas.
    Open,
    /// Closed with a final end offset, still on its cache replicas.
    Sealed,
    /// Copied to object storage as a Parquet file.
    Offloaded,
    /// A state this SDK does not know (a newer server).
    Unknown,
}

impl SegmentState {
    /// Lower-case name: `open`, `sealed`, `offloaded` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Open => "open",
            SegmentState::Sealed => "sealed",
            SegmentState::Offloaded => "offloaded",
            SegmentState::Unknown => "unknown",
        }
    }
}

/// One segment of a log: a contiguous range of offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment's id, unique within its log.
    pub segment_id: u64,
    /// Open, sealed or offloaded.
    pub state: SegmentState,
    /// The offset of its first record.
    pub start_offset: u64,
    /// One past its last record; `None` while the segment is open.
    pub end_offset: Option<u64>,
    /// The owner epoch that wrote it.
    pub epoch: u64,
    /// The cache nodes holding its replicas.
    pub ensemble: Vec<String>,
    /// Its size in bytes.
    pub bytes: u64,
    /// The object key of its Parquet file, once offloaded.
    pub object: Option<String>,
}

/// What [`Client::seal`](crate::Client::seal) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// The segment that was sealed; `None` when no segment was open.
    pub segment_id: Option<u64>,
    /// One past the log's last record.
    pub end_offset: u64,
}

/// The cluster as [`Client::status`](crate::Client::status) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The registered nodes.
    pub nodes: Vec<NodeInfo>,
    /// Number of logs.
    pub logs: u64,
    /// Segments being appended to.
    pub open_segments: u64,
    /// Segments sealed and not yet offloaded.
    pub sealed_segments: u64,
    /// Segments in object storage.
    pub offloaded_segments: u64,
    /// Bytes of the sealed segments that still wait for offload.
    pub offload_lag_bytes: u64,
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its role: `ingest`, `cache`, `reader`, `compactor`.
    pub role: String,
    /// Its node id.
    pub id: String,
    /// The address it serves on.
    pub address: String,
    /// Its availability zone, empty when not configured.
    pub zone: String,
}

impl From<pb::LogInfo> for LogInfo {
    fn from(info: pb::LogInfo) -> LogInfo {
        LogInfo {
            log: info.log,
            log_id: info.log_id,
            created_at_ms: info.created_at_ms,
            first_offset: info.first_offset,
            next_offset: info.next_offset,
            records: info.records,
            end_of_stream: info.end_of_stream,
            segments: info.segments.into_iter().map(SegmentInfo::from).collect(),
        }
    }
}

impl From<pb::SegmentInfo> for SegmentInfo {
    fn from(segment: pb::SegmentInfo) -> SegmentInfo {
        let state = match pb::SegmentState::try_from(segment.state) {
            Ok(pb::SegmentState::Open) => SegmentState::Open,
            Ok(pb::SegmentState::Sealed) => SegmentState::Sealed,
            Ok(pb::SegmentState::Offloaded) => SegmentState::Offloaded,
            _ => SegmentState::Unknown,
        };
        SegmentInfo {
            segment_id: segment.segment_id,
            state,
            start_offset: segment.start_offset,
            end_offset: segment.end_offset,
            epoch: segment.epoch,
            ensemble: segment.ensemble,
            bytes: segment.bytes,
            object: segment.object,
        }
    }
}

impl From<pb::SealLogResponse> for Sealed {
    fn from(sealed: pb::SealLogResponse) -> Sealed {
        Sealed {
            segment_id: sealed.segment_id,
            end_offset: sealed.end_offset,
        }
    }
}

impl From<pb::GetStatusResponse> for ClusterStatus {
    fn from(status: pb::GetStatusResponse) -> ClusterStatus {
        ClusterStatus {
            nodes: status
                .nodes
                .into_iter()
                .map(|n| NodeInfo {
                    role: n.role,
                    id: n.id,
                    address: n.address,
                    zone: n.zone,
                })
                .collect(),
            logs: status.logs,
            open_segments: status.open_segments,
            sealed_segments: status.sealed_segments,
            offloaded_segments: status.offloaded_segments,
            offload_lag_bytes: status.offload_lag_bytes,
        }
    }
}
