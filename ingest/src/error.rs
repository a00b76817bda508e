//! Errors of the ingest tier, and how they reach the wire.

use dlog_meta::manifest::{self, NodeInfo};
use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::metadata;
use dlog_wire::names::LogName;
use dlog_wire::payload_schema::Mismatch;
use dlog_wire::record::RecordError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log {log} is owned by node {} at {}", owner.id, owner.address)]
    NotOwner { log: LogName, owner: Box<NodeInfo> },
    /// The placement rule gives the log to another node (balanced
    /// ownership), or this node is handing it over there: not applied.
    #[error("log {log} is placed on node {} at {}: ask there", node.id, node.address)]
    Elsewhere { log: LogName, node: Box<NodeInfo> },
    #[error("expected offset {expected} but the next offset of log {log} is {actual}")]
    ExpectedOffset {
        log: LogName,
        expected: u64,
        actual: u64,
    },
    #[error(
        "expected offset {expected} but log {log} has appends in flight from offset \
         {acknowledged} on, not yet acknowledged: retry later"
    )]
    AppendsInFlight {
        log: LogName,
        expected: u64,
        acknowledged: u64,
    },
    /// The writer asked for another incarnation of the log (one that was
    /// deleted, or an id the log never had).
    #[error(
        "log {log} has id {actual}, not the {expected} this request names \
         (a log deleted and re-created under its name gets a new id)"
    )]
    LogIdMismatch {
        log: LogName,
        expected: u64,
        actual: u64,
    },
    /// A payload does not match its namespace's payload schema; `index`
    /// is the record's place in the append, from 0.
    #[error("log {log}: record {index}: {mismatch}")]
    PayloadMismatch {
        log: LogName,
        index: usize,
        mismatch: Mismatch,
    },
    #[error("txid {txid} is below txid {last} already in log {log}")]
    TxidDecreasing { log: LogName, txid: i64, last: i64 },
    #[error("log {log} ended at offset {end}: appends are refused after end of stream")]
    EndOfStream { log: LogName, end: u64 },
    #[error("log {log} has {in_flight} bytes in flight, over its limit of {limit}: retry later")]
    Backpressure {
        log: LogName,
        in_flight: usize,
        limit: usize,
    },
    #[error(
        "this ingest node has {in_flight} bytes in flight, over its limit of {limit}: retry later"
    )]
    NodeBackpressure { in_flight: usize, limit: usize },
    #[error(
        "log {log} is over its {} quota of {} {}/s: retry after {} ms",
        over.scope, over.limit, over.unit, over.retry_after_ms()
    )]
    OverQuota {
        log: LogName,
        over: crate::quota::OverQuota,
    },
    #[error(
        "log {log}: an earlier append of this session failed, so this one was not applied \
         (open a new session and resend from the first failed append)"
    )]
    SessionBroken { log: LogName },
    #[error("not enough live cache nodes: {live} live, {needed} needed")]
    NoCacheNodes { live: usize, needed: usize },
    #[error("replicate to cache node {node}")]
    Cache {
        node: String,
        #[source]
        status: tonic::Status,
    },
    /// The owner at `epoch` stopped: fenced by a newer owner (a cache node
    /// or the manifest refused its epoch), or its node lost the lease.
    #[error("log {log}: the owner at epoch {epoch} is fenced out ({reason}); retry")]
    OwnershipLost {
        log: LogName,
        epoch: u64,
        reason: String,
    },
    #[error(
        "log {log} is deleted, but {reason}: its old owner may still acknowledge appends \
         until the compactor drops the segment"
    )]
    DeletedUnfenced { log: LogName, reason: String },
    #[error("recover log {log}: {reason}")]
    Recovery { log: LogName, reason: String },
    #[error("the ingest node is shutting down")]
    ShuttingDown,
    /// A log moved by hand to a node that is not a live ingest node.
    #[error("no live ingest node {node:?} (live: {live})")]
    NoSuchNode { node: String, live: String },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::NotOwner { .. }
            | Error::Elsewhere { .. }
            | Error::NoCacheNodes { .. }
            | Error::Cache { .. }
            | Error::OwnershipLost { .. }
            | Error::Recovery { .. }
            | Error::DeletedUnfenced { .. }
            | Error::ShuttingDown => ErrorKind::Unavailable,
            Error::ExpectedOffset { .. }
            | Error::EndOfStream { .. }
            | Error::SessionBroken { .. } => ErrorKind::FailedPrecondition,
            Error::TxidDecreasing { .. } | Error::PayloadMismatch { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::LogIdMismatch { .. } | Error::NoSuchNode { .. } => ErrorKind::NotFound,
            // Refused before anything was applied, like backpressure.
            Error::Backpressure { .. }
            | Error::NodeBackpressure { .. }
            | Error::OverQuota { .. }
            | Error::AppendsInFlight { .. } => ErrorKind::ResourceExhausted,
            Error::Record(err) => err.kind(),
            Error::Manifest(manifest::Error::OwnedBy { .. }) => ErrorKind::Unavailable,
            Error::Manifest(err) => err.kind(),
        }
    }
}

impl Error {
    /// The owner to redirect to, when this is a redirect.
    pub fn owner(&self) -> Option<&NodeInfo> {
        match self {
            Error::NotOwner { owner, .. } | Error::Elsewhere { node: owner, .. } => Some(owner),
            Error::Manifest(manifest::Error::OwnedBy { owner, .. }) => Some(owner),
            _ => None,
        }
    }
}

/// The gRPC status for an error: its kind's code, the context chain as the
/// message, and on redirects the owner's address in `dlog-owner` metadata.
/// An expected-offset mismatch carries the actual next offset in
/// `dlog-next-offset`; a refusal over a quota, when to retry in
/// `dlog-retry-after-ms`.
pub fn to_status(err: &Error) -> tonic::Status {
    let mut status = dlog_wire::error::to_status(err);
    if let Some(owner) = err.owner()
        && let Ok(value) = owner.address.parse()
    {
        status.metadata_mut().insert(metadata::OWNER, value);
    }
    if let Error::ExpectedOffset { actual, .. } = err {
        metadata::set_u64(&mut status, metadata::NEXT_OFFSET, *actual);
    }
    if let Error::OverQuota { over, .. } = err {
        metadata::set_u64(&mut status, metadata::RETRY_AFTER_MS, over.retry_after_ms());
    }
    status
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
