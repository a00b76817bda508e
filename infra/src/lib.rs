//! `dlog-infra`: the foundation every distributedlog component builds on.
//!
//! | module | owns |
//! |---|---|
//! | [`proto`] | the `dlog.v1` gRPC contract (generated) |
//! | [`names`] | validated namespace and log names |
//! | [`limits`] | size and count limits of records and appends |
//! | [`record`] | validated records and appends, converted from protobuf |
//! | [`cache_clients`] | connections to cache nodes by id, suspects |
//! | [`transport`] | how a cache client reaches its node: gRPC, or in-process (simulation) |
//! | [`codec`] | the binary entry format: header, records, CRC32C |
//! | [`error`] | error kinds, retryability and the mapping to gRPC status |
//! | [`failpoint`] | named crash points for tests (`DLOG_FAILPOINTS`) |
//! | [`metastore`] | the `MetaStore` KV trait with etcd semantics; etcd and embedded backends |
//! | [`manifest`] | logs, epochs, segments, owners, nodes, trim points, subscriptions on a `MetaStore` |
//! | [`objstore`] | object stores built from a URL (`s3://`, `file://`, `memory://`) |
//! | [`segment_file`] | the Parquet form of a segment: schema, object keys, encoding and decoding |
//! | [`telemetry`] | tracing set-up |
//! | `testkit` | (feature `testkit`) real etcd / S3 servers and processes for tests |

pub mod cache_clients;
pub mod codec;
pub mod error;
pub mod failpoint;
pub mod limits;
pub mod manifest;
pub mod metastore;
pub mod names;
pub mod objstore;
pub mod proto;
pub mod record;
pub mod segment_file;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod transport;

/// Current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
