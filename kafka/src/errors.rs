//! Kafka error codes for dlog failures.

use distributedlog::{ClientError, ErrorKind};
use kafka_protocol::ResponseError;

/// A partition-level failure: the code and the line Kafka clients log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ResponseError,
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: ResponseError, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The Kafka error for a failed dlog call. Retryable dlog failures become
/// codes Kafka clients retry; a missing log is an unknown partition.
pub(crate) fn refusal(error: &ClientError) -> Refusal {
    let code = match error.kind() {
        ErrorKind::NotFound => ResponseError::UnknownTopicOrPartition,
        ErrorKind::AlreadyExists => ResponseError::TopicAlreadyExists,
        ErrorKind::InvalidArgument => ResponseError::InvalidRecord,
        ErrorKind::OutOfRange => ResponseError::OffsetOutOfRange,
        ErrorKind::FailedPrecondition => ResponseError::InvalidRecord,
        // Ownership moving, a cache node down, or a quota: all cured by
        // a retry, which Kafka clients make on these codes.
        ErrorKind::Unavailable => ResponseError::NotLeaderOrFollower,
        ErrorKind::ResourceExhausted => ResponseError::ThrottlingQuotaExceeded,
        ErrorKind::DataLoss => ResponseError::KafkaStorageError,
        ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => {
            ResponseError::TopicAuthorizationFailed
        }
        ErrorKind::Internal => ResponseError::UnknownServerError,
    };
    Refusal::new(code, error.to_string())
}
