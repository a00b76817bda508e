//! `dlog-cache`: the cache node, the replicated local write cache and the
//! durability point of every append.
//!
//! An entry a cache node acknowledges is fdatasynced in its journal and
//! survives `kill -9` and power loss of the node. The owner of a log counts
//! a write as acknowledged once A of its W cache nodes said so.
//!
//! Segment life cycle as a cache node sees it:
//!
//! ```text
//!  adds (epoch e) ──▶ open ──fence(e' > e)──▶ fenced: adds below e' refused
//!                       │                        │ (recovery reads, copies)
//!                       └──────── sealed in the manifest by the owner ──▶
//!                                  offloaded by the compactor ──▶ DropSegment
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`journal`] | the append-only, group-committed journal files: their chained format, replay, the file layer, file deletion |
//! | [`segment_key`] | `SegmentKey`, a segment's name on a node: `(log_id, segment_id)` |
//! | [`index`] | (segment, entry) → journal position, fencing epochs, LAC, damage marks |
//! | [`store`] | the engine: adds, fences, reads up to the LAC, LAC long-poll, drops, hot-entry cache |
//! | [`service`] | the `CacheService` gRPC server |
//! | [`identity`] | the data directory's cookie and lock |
//! | [`confirm`] | adds only while the manifest recently confirmed the node's identity |
//! | [`trust`] | which segments a re-initialised node may answer fences and recovery reads for |
//! | [`reconcile`] | frees segments the manifest no longer needs (at start and periodically) |
//! | [`series`] | the role's Prometheus series (metrics) |

pub mod confirm;
pub mod error;
pub mod identity;
pub mod index;
pub mod journal;
pub mod reconcile;
pub mod segment_key;
pub mod series;
pub mod service;
pub mod store;
pub mod trust;

pub use error::Error;
pub use segment_key::SegmentKey;
pub use store::{CacheStore, ReadMode, StoreOptions};
