//! Errors of the cache node.

use dlog_wire::codec::DecodeError;
use dlog_wire::error::{Classify, ErrorKind};

use crate::segment_key::SegmentKey;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("segment {segment} is fenced at epoch {fenced}: epoch {epoch} refused")]
    Fenced {
        segment: SegmentKey,
        epoch: u64,
        fenced: u64,
    },
    #[error("segment {segment} was dropped from this node")]
    Dropped { segment: SegmentKey },
    #[error("segment {segment} is not on this node")]
    SegmentNotFound { segment: SegmentKey },
    #[error("entry {entry} of segment {segment} is not on this node")]
    EntryNotFound { segment: SegmentKey, entry: u64 },
    #[error("segment {segment} is damaged on this node ({reason}): read it from another replica")]
    Corrupt { segment: SegmentKey, reason: String },
    #[error("entry {entry} of segment {segment} already holds different bytes")]
    Conflict { segment: SegmentKey, entry: u64 },
    #[error(
        "entry {entry} of segment {segment} would leave a hole: this node holds entries before {held_end} only"
    )]
    Gap {
        segment: SegmentKey,
        entry: u64,
        held_end: u64,
    },
    #[error("entry does not match its request: {0}")]
    Mismatch(String),
    #[error("invalid entry")]
    InvalidEntry(#[source] DecodeError),
    #[error("journal {path}: {what}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("journal file {path} is refused: {reason}")]
    JournalFormat { path: String, reason: String },
    #[error(
        "journal directory {dir} is in use by another cache store (another process, or opened twice)"
    )]
    Locked { dir: String },
    #[error("the journal stopped after a write failure; restart the node")]
    JournalFailed,
    #[error("the cache node is shutting down")]
    ShuttingDown,
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Fenced { .. }
            | Error::Dropped { .. }
            | Error::Conflict { .. }
            | Error::Gap { .. } => ErrorKind::FailedPrecondition,
            Error::SegmentNotFound { .. } | Error::EntryNotFound { .. } => ErrorKind::NotFound,
            Error::Corrupt { .. } => ErrorKind::DataLoss,
            Error::Mismatch(_) | Error::InvalidEntry(_) => ErrorKind::InvalidArgument,
            Error::JournalFormat { .. } | Error::Locked { .. } => ErrorKind::FailedPrecondition,
            Error::Io { .. } | Error::JournalFailed | Error::ShuttingDown => ErrorKind::Unavailable,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
