//! Error kinds shared by the workspace, and their mapping to gRPC status.
//!
//! Every crate has its own `Error` type; each implements [`Classify`] so the
//! service edge turns it into a `tonic::Status` in one place ([`to_status`]),
//! and the client SDK knows which failures a retry can cure.

use std::fmt;

/// What kind of failure an error is; decides the gRPC code and retryability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The log, segment, namespace or key does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The request is malformed: bad name, size over a limit, txid order.
    InvalidArgument,
    /// The state does not allow the request: expected offset mismatch, end of
    /// stream, stale epoch.
    FailedPrecondition,
    /// The position is outside the readable range (trimmed).
    OutOfRange,
    /// Transient: a node is down, ownership is moving. Retry.
    Unavailable,
    /// Quota or backpressure. Retry later.
    ResourceExhausted,
    /// Stored data failed its checksum.
    DataLoss,
    /// A bug or an unexpected state.
    Internal,
    /// No credentials, or unknown ones (a missing or revoked token).
    Unauthenticated,
    /// Credentials that do not allow the request (a token out of scope).
    PermissionDenied,
}

impl ErrorKind {
    /// The gRPC code for this kind.
    pub fn code(self) -> tonic::Code {
        match self {
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorKind::OutOfRange => tonic::Code::OutOfRange,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorKind::DataLoss => tonic::Code::DataLoss,
            ErrorKind::Internal => tonic::Code::Internal,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        }
    }

    /// Whether repeating the same request may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::ResourceExhausted)
    }

    /// The kind a gRPC code stands for, for errors that arrive over the wire.
    pub fn from_code(code: tonic::Code) -> ErrorKind {
        match code {
            tonic::Code::NotFound => ErrorKind::NotFound,
            tonic::Code::AlreadyExists => ErrorKind::AlreadyExists,
            tonic::Code::InvalidArgument => ErrorKind::InvalidArgument,
            tonic::Code::FailedPrecondition => ErrorKind::FailedPrecondition,
            tonic::Code::OutOfRange => ErrorKind::OutOfRange,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted => {
                ErrorKind::Unavailable
            }
            tonic::Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            tonic::Code::DataLoss => ErrorKind::DataLoss,
            tonic::Code::Unauthenticated => ErrorKind::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Errors that know their [`ErrorKind`].
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

/// The one place an error becomes a gRPC status: its kind's code and the
/// whole context chain as a one-line message.
pub fn to_status<E>(err: &E) -> tonic::Status
where
    E: Classify + std::error::Error,
{
    tonic::Status::new(err.kind().code(), error_chain(err))
}

/// `outer: inner: innermost`, the way the context reads best on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_kinds_are_retryable() {
        assert!(ErrorKind::Unavailable.is_retryable());
        assert!(ErrorKind::ResourceExhausted.is_retryable());
        assert!(!ErrorKind::InvalidArgument.is_retryable());
        assert!(!ErrorKind::FailedPrecondition.is_retryable());
    }

    #[test]
    fn codes_round_trip_through_kinds() {
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidArgument,
            ErrorKind::FailedPrecondition,
            ErrorKind::OutOfRange,
            ErrorKind::Unavailable,
            ErrorKind::ResourceExhausted,
            ErrorKind::DataLoss,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::from_code(kind.code()), kind);
        }
    }
}
