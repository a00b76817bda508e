//! `dlog-wire`: the contract between distributedlog clients and nodes, and
//! between nodes. What the client SDK needs, and nothing heavier.
//!
//! | module | owns |
//! |---|---|
//! | [`proto`] | the `dlog.v1` gRPC contract (generated from `proto/`) |
//! | [`metadata`] | every gRPC metadata key the contract uses (`dlog-owner`, `dlog-next-offset`, `dlog-first-offset`) |
//! | [`ids`] | distinct types for numbers a call could mix up ([`ids::Epoch`]) |
//! | [`names`] | validated namespace and log names |
//! | [`limits`] | size and count limits of records and appends |
//! | [`record`] | validated records and appends, converted from protobuf |
//! | [`payload_schema`] | typed payloads: a namespace's schema of JSON fields, the check of appends, the typed values of offload |
//! | [`codec`] | the binary entry format cache nodes store and serve: header, records, CRC32C |
//! | [`error`] | error kinds, retryability and the mapping to gRPC status |
//! | [`placement`] | the rule that names a log's preferred ingest node (rendezvous hashing) |
//! | [`pipeline`] | the server side of an ordered, pipelined bidirectional stream |
//! | [`http2`] | the HTTP/2 flow-control windows of every dlog server |

pub mod codec;
pub mod error;
pub mod http2;
pub mod ids;
pub mod limits;
pub mod metadata;
pub mod names;
pub mod payload_schema;
pub mod pipeline;
pub mod placement;
pub mod proto;
pub mod record;

/// Current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
