//! `dlog-ingest`: the ingest node, where every append is sequenced.
//!
//! Each log has one owner at a time, fenced by an epoch in the manifest. The
//! owner assigns dense offsets, batches appends into entries, replicates each
//! entry to its segment's ensemble of cache nodes and answers an append once
//! A replicas made every entry up to it durable. A new owner first recovers
//! what the previous one left open.
//!
//! | module | owns |
//! |---|---|
//! | [`node`] | ownership: claim, epoch bump, recovery, routing and redirects; balanced ownership and hand-overs (`node::balance`) |
//! | [`owner`] | one log's sequencing, batching, quorum acks, segment roll and seal |
//! | [`replicas`] | one open segment's replicas: sends, acks, failures |
//! | [`links`] | the shared `Replicate` stream to each cache node that carries every segment's adds |
//! | [`orphans`] | adopting idle logs whose owner died with a segment open |
//! | [`delete`] | deleting a log: the manifest mark, then fencing its open segments' replicas |
//! | [`recovery`] | fence, copy and seal a segment left open (ARCHITECTURE.md, "The recovery protocol") |
//! | [`quota`] | append quotas per log and per namespace (bytes and records per second) |
//! | [`pool`] | connections to cache nodes, ensemble choice |
//! | [`placement`] | the placement rules: which live nodes, over which zones, make an ensemble |
//! | [`service`] | the public `LogService` gRPC server |
//! | [`admin`] | the `AdminService`: namespace and log settings through the API |
//! | [`error`] | errors and their gRPC status, redirects included |
//! | [`series`] | the role's Prometheus series (metrics) |

pub mod admin;
pub mod delete;
pub mod error;
pub mod links;
pub mod node;
pub mod orphans;
pub mod owner;
pub mod placement;
pub mod pool;
pub mod quota;
pub mod recovery;
pub mod replicas;
pub mod series;
pub mod service;

pub use admin::AdminServer;
pub use node::{IngestNode, IngestOptions};
pub use service::LogServer;
