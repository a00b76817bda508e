//! Errors of the read path, and how they reach a client: by cause, so a
//! client retries what is transient (`UNAVAILABLE`: a replica or the object
//! store failed to answer), repositions on `OUT_OF_RANGE` (trimmed, with
//! `dlog-first-offset`), and stops on `DATA_LOSS` (bytes that fail their
//! checksum or do not decode) and `INTERNAL` (a bug).

use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::metadata;
use dlog_wire::names::LogName;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "offset {offset} of log {log} was trimmed; the first readable offset is {first_offset}"
    )]
    Trimmed {
        log: LogName,
        offset: u64,
        first_offset: u64,
    },
    #[error("segment {segment} of log {log}: {reason}")]
    Unavailable {
        log: LogName,
        segment: u64,
        reason: String,
    },
    #[error("segment {segment} of log {log}: {reason}")]
    Corrupt {
        log: LogName,
        segment: u64,
        reason: String,
    },
    #[error("object {key}: {source}")]
    Object {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object {key}: {source}")]
    Parquet {
        key: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error(transparent)]
    File(#[from] dlog_storage::segment_file::Error),
    #[error(transparent)]
    Manifest(#[from] dlog_meta::manifest::Error),
    /// The object's bytes are not the ones offloaded (size or CRC32C
    /// differ from the manifest's).
    #[error("object {key}: {reason}")]
    CorruptObject { key: String, reason: String },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// A read pinned to a log id newer than this node's view of the log.
    #[error("this reader node has not seen log {log} with id {log_id} yet; retry")]
    NotSeenYet { log: LogName, log_id: u64 },
    /// Too many reads at once, on this node or from this client.
    #[error("{0}")]
    Busy(String),
    /// A bug: the read task panicked. Never a clean end of the stream,
    /// which a client would take for a complete read.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error shared by every read that waited on the same fetch.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Trimmed { .. } => ErrorKind::OutOfRange,
            Error::Unavailable { .. } | Error::Object { .. } | Error::NotSeenYet { .. } => {
                ErrorKind::Unavailable
            }
            // Failing to fetch bytes is transient; bytes that do not decode
            // are damaged.
            Error::Parquet { source, .. } if object_error(source).is_some() => {
                ErrorKind::Unavailable
            }
            Error::Corrupt { .. } | Error::CorruptObject { .. } | Error::Parquet { .. } => {
                ErrorKind::DataLoss
            }
            Error::Busy(_) => ErrorKind::ResourceExhausted,
            Error::Internal(_) => ErrorKind::Internal,
            Error::File(err) => err.kind(),
            Error::Manifest(err) => err.kind(),
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Shared(err) => err.kind(),
        }
    }
}

impl Error {
    /// The object is not in the store (e.g. retention deleted it after
    /// moving the trim point): a newer manifest view says where to go on.
    pub fn object_missing(&self) -> bool {
        match self {
            Error::Object { source, .. } => matches!(source, object_store::Error::NotFound { .. }),
            Error::Parquet { source, .. } => {
                matches!(
                    object_error(source),
                    Some(object_store::Error::NotFound { .. })
                )
            }
            Error::Shared(err) => err.object_missing(),
            _ => false,
        }
    }
}

/// The object-store error a Parquet error wraps, if it is one.
fn object_error(err: &parquet::errors::ParquetError) -> Option<&object_store::Error> {
    match err {
        parquet::errors::ParquetError::External(inner) => inner.downcast_ref(),
        _ => None,
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> tonic::Status {
        let mut status = dlog_wire::error::to_status(&err);
        if let Error::Trimmed { first_offset, .. } = &err {
            metadata::set_u64(&mut status, metadata::FIRST_OFFSET, *first_offset);
        }
        status
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
