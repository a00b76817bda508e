//! `distributedlog`: the Rust client of distributedlog, a replicated,
//! strictly ordered, durable log service tiered on object storage.
//!
//! [`Client`] connects to a cluster (or a `dlog standalone` node) and makes
//! the admin calls and single appends; [`LogWriter`] writes a log in
//! ordered batches, each record exactly once; [`LogReader`] reads a log as
//! a stream that survives node failures; subscriptions
//! ([`Client::commit_subscription`], [`Client::subscription`]) keep a
//! reader's position on the server.
//!
//! A [`Record`] is a payload (or a null payload, [`Record::null`]), an
//! optional key, [`Headers`] (name and value pairs kept in the order given,
//! a name may repeat), an optional txid and an optional producer time (the
//! writer's own clock, kept beside the append time the log's owner gives
//! every record, which is what reads by time use). A [`StoredRecord`] is
//! one read back, with its offset and append time.
//!
//! ```no_run
//! # async fn example(client: distributedlog::Client) -> Result<(), distributedlog::ClientError> {
//! use distributedlog::Record;
//! let mut record = Record::new("order 42 shipped");
//! record.key = Some("order-42".into());
//! record.headers.push("trace", "t-1");
//! record.headers.push("trace", "t-2"); // both kept, in this order
//! record.producer_time_ms = Some(1_714_564_800_250);
//! // A tombstone for the key: a null payload, not an empty one.
//! let mut deleted = Record::null();
//! deleted.key = Some("order-41".into());
//! client.append("shop/orders", vec![record, deleted], None).await?;
//! # Ok(())
//! # }
//! ```
//!
//! This crate holds the client only: it depends on the wire contract
//! (`dlog-wire`) and gRPC, not on the server. The server and the `dlog`
//! command are the `dlog` package of the same repository.
//!
//! The examples in this documentation are compiled, not run (they need a
//! node); `examples/quickstart.rs` is run against a standalone node by the
//! repository's tests.
//!
//! | module | owns |
//! |---|---|
//! | [`client`] | [`Client`]: connections, redirects to log owners, retries; admin calls and appends |
//! | [`log_writer`] | [`LogWriter`]: ordered, batched, exactly-once writes |
//! | [`log_reader`] | [`LogReader`]: reads that resume after failures; tail; subscriptions |
//! | `routing` | a log's first request straight to its preferred owner: the placement rule over the live ingest nodes |
//! | `retry` | the one retry policy: backoff with jitter, attempts, a total deadline |
//! | `unreachable` | the error of a call no node answered: each endpoint tried, once, with its role |
//! | [`info`] | what admin calls answer: [`LogInfo`], [`SegmentInfo`], [`Sealed`], [`ClusterStatus`] |
//! | [`settings`] | namespace and log settings: [`Settings`], [`SettingsChange`] |
//! | [`tokens`] | client tokens: [`TokenInfo`]; [`Client::with_token`] sends one |
//! | [`placement`] | where logs are owned: [`Placement`]; [`Client::move_log`] moves one by hand |

#![warn(missing_docs)]

pub mod client;
pub mod info;
pub mod log_reader;
pub mod log_writer;
pub mod placement;
mod retry;
mod routing;
pub mod settings;
pub mod tokens;
mod unreachable;

pub use client::{AppendIf, Appended, Client, Error as ClientError, LogsPage};
pub use dlog_wire::error::ErrorKind;
pub use dlog_wire::record::{Headers, Record, RecordError, StoredRecord};
pub use info::{ClusterStatus, LogInfo, NodeInfo, Sealed, SegmentInfo, SegmentState};
pub use log_reader::{LogReader, ReadOptions, Start, TailInfo};
pub use log_writer::{LogWriter, PendingWrite, WriterOptions};
pub use placement::{MovedLog, NodePlacement, Placement};
pub use settings::{Settings, SettingsChange};
pub use tokens::TokenInfo;
