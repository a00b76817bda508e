//! Errors of the read path, and how they reach a client.

use dlog_infra::error::{Classify, ErrorKind};
use dlog_infra::names::LogName;

/// gRPC metadata key carrying the first readable offset with `OUT_OF_RANGE`.
pub const FIRST_OFFSET_METADATA: &str = "dlog-first-offset";

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
    File(#[from] dlog_infra::segment_file::Error),
    #[error(transparent)]
    Manifest(#[from] dlog_infra::manifest::Error),
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// An error shared by every read that waited on the same fetch.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Trimmed { .. } => ErrorKind::OutOfRange,
            Error::Unavailable { .. } | Error::Object { .. } => ErrorKind::Unavailable,
            Error::Corrupt { .. } | Error::Parquet { .. } => ErrorKind::DataLoss,
            Error::File(err) => err.kind(),
            Error::Manifest(err) => err.kind(),
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Shared(err) => err.kind(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> tonic::Status {
        let mut status = dlog_infra::error::to_status(&err);
        if let Error::Trimmed { first_offset, .. } = &err
            && let Ok(value) = first_offset.to_string().parse()
        {
            status.metadata_mut().insert(FIRST_OFFSET_METADATA, value);
        }
        status
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
