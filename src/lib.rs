//! distributedlog: a replicated, strictly ordered, durable log service tiered
//! on object storage.
//!
//! This package is what most users import or run: the client SDK (to come
//! with the reader tier: `Client`, `LogWriter`, `LogReader`) and the `dlog`
//! command. The components live in their own crates: `dlog-infra`
//! (foundation), `dlog-cache`, `dlog-ingest`, `dlog-compactor`, `dlog-reader`.

pub use dlog_infra as infra;

pub mod client;
pub mod server;

pub use client::Client;
