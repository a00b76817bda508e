//! Errors of the compactor.

use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::names::LogName;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("segment {segment} of log {log}: {reason}")]
    Incomplete {
        log: LogName,
        segment: u64,
        reason: String,
    },
    #[error("read segment {segment} of log {log} from the cache nodes: {reason}")]
    Read {
        log: LogName,
        segment: u64,
        reason: String,
    },
    #[error(
        "segment {segment} of log {log}: hide the rows below the trim point from the table: {reason}"
    )]
    TableCut {
        log: LogName,
        segment: u64,
        reason: String,
    },
    #[error("object {key} already exists with other content (size {size}, crc {crc:#010x})")]
    ObjectConflict { key: String, size: u64, crc: u32 },
    #[error("object store: {what} {key}")]
    ObjectStore {
        what: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error(transparent)]
    File(#[from] dlog_storage::segment_file::Error),
    #[error(transparent)]
    Manifest(#[from] dlog_meta::manifest::Error),
    #[error(transparent)]
    Table(#[from] crate::table::Error),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Manifest(err) => err.kind(),
            Error::ObjectConflict { .. } | Error::Incomplete { .. } => ErrorKind::DataLoss,
            Error::File(err) => err.kind(),
            Error::Read { .. }
            | Error::TableCut { .. }
            | Error::ObjectStore { .. }
            | Error::Table(_) => ErrorKind::Unavailable,
        }
    }
}

impl Error {
    /// Wraps an object-store failure of `what` (a verb) on `key`, for
    /// `map_err`.
    pub fn object_store(
        what: &'static str,
        key: &impl ToString,
    ) -> impl FnOnce(object_store::Error) -> Error {
        let key = key.to_string();
        move |source| Error::ObjectStore { what, key, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
