//! `dlog-reader`: the tiered read path and the public `ReadService`.
//!
//! | module | owns |
//! |---|---|
//! | [`admission`] | how many reads run at once, per node and per client |
//! | [`engine`] | the read loop: positioning, segment by segment from the right tier, tailing, trim checks |
//! | [`cache_tier`] | sealed and open segments from cache replicas; shared entry cache; shared LAC long-polls |
//! | [`parquet_tier`] | offloaded segments from Parquet; footer and row-group caches; pruning by statistics |
//! | [`log_view`] | one watched manifest view per log, shared by its readers |
//! | [`shared_watch`] | the one-task-per-key publisher both of the above use for fan-out |
//! | [`service`] | `ReadService` over gRPC |
//! | [`error`] | read errors and their gRPC status (`OUT_OF_RANGE` carries `dlog-first-offset`) |
//! | [`series`] | the role's Prometheus series (metrics) |

pub mod admission;
pub mod cache_tier;
pub mod engine;
pub mod error;
#[cfg(test)]
mod format_tests;
pub mod log_view;
pub mod parquet_tier;
#[cfg(test)]
mod review_tests;
#[cfg(test)]
mod safety_tests;
pub mod series;
pub mod service;
pub mod shared_watch;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod view_tests;

pub use engine::{ReadEngine, ReadItem, ReadSpec, ReaderOptions, Start, Tail};
pub use error::Error;
pub use service::ReadServer;
