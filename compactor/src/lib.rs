//! `dlog-compactor`: moves sealed segments from the cache tier to object
//! storage as Parquet, and applies retention and trim. The file format
//! itself lives in [`dlog_storage::segment_file`]: readers share it.
//!
//! | module | owns |
//! |---|---|
//! | [`offload`] | reading a sealed segment from its replicas, crash-safe upload, the `offloaded` CAS |
//! | [`merge`] | merging adjacent small files of a log into one, in the manifest and the log's table |
//! | [`failpoint`] | named crash points of the offload steps, for tests (`compactor.failpoints`) |
//! | [`compactor`] | the work loop: offload, cache drops after a grace period, retention, deleted logs |
//! | [`orphans`] | the sweep of object folders whose log id no live log has |
//! | [`series`] | the role's Prometheus series (metrics) |
//! | [`table`] | the Iceberg table of each log: catalog, idempotent appends, drops |
//! | [`table_backfill`] | adding to a log's table the offloaded segments it lacks |
//! | [`table_cut`] | hiding the rows below a trim point inside a segment from its log's table |

pub mod compactor;
pub mod error;
pub mod failpoint;
pub mod merge;
#[cfg(test)]
mod merge_tests;
pub mod offload;
pub mod orphans;
#[cfg(test)]
mod retention_tests;
pub mod series;
pub mod table;
pub mod table_backfill;
pub mod table_cut;

pub use compactor::{Compactor, CompactorOptions, PassReport};
pub use error::Error;
pub use table::LogTables;
