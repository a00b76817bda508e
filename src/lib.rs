//! distributedlog: a replicated, strictly ordered, durable log service tiered
//! on object storage.
//!
//! This package is what most users import or run: the client SDK
//! ([`Client`]; [`LogReader`] to read, [`LogWriter`] to write in batches)
//! and the `dlog` command. The components live in their own crates:
//! `dlog-infra` (foundation), `dlog-cache`, `dlog-ingest`, `dlog-compactor`,
//! `dlog-reader`.

pub use dlog_infra as infra;

pub mod bench;
pub mod client;
pub mod reader;
pub mod server;
pub mod writer;

pub use client::{AppendIf, Appended, Client, Error as ClientError};
pub use dlog_infra::record::{Record, StoredRecord};
pub use reader::{LogReader, ReadOptions, Start, TailInfo};
pub use writer::{LogWriter, PendingWrite, WriterOptions};
