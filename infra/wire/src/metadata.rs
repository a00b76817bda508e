//! The gRPC metadata keys of the `dlog.v1` contract (docs/wire.md). Each key
//! is named here once; servers set them and the SDK reads them.

/// On `UNAVAILABLE` from a node that does not own the log: the address
/// (`http://host:port`) of the node that does. The client retries there.
pub const OWNER: &str = "dlog-owner";

/// On an `expected_offset` mismatch (`FAILED_PRECONDITION`): the log's
/// actual next offset, in decimal.
pub const NEXT_OFFSET: &str = "dlog-next-offset";

/// On `OUT_OF_RANGE` from a read below the trim point: the first readable
/// offset, in decimal.
pub const FIRST_OFFSET: &str = "dlog-first-offset";

/// On `RESOURCE_EXHAUSTED` for an append over a quota: how long to wait
/// before trying again, in milliseconds, in decimal.
pub const RETRY_AFTER_MS: &str = "dlog-retry-after-ms";

/// Reads the decimal `u64` a status carries under `key`, if any.
pub fn read_u64(status: &tonic::Status, key: &str) -> Option<u64> {
    status.metadata().get(key)?.to_str().ok()?.parse().ok()
}

/// Sets `key` to `value` in decimal on `status`.
pub fn set_u64(status: &mut tonic::Status, key: &'static str, value: u64) {
    let value = tonic::metadata::MetadataValue::from(value);
    status.metadata_mut().insert(key, value);
}
