//! Size and count limits of records and append requests (docs/wire.md, "Limits").
//!
//! Configurable per deployment; requests above a limit are refused with
//! `INVALID_ARGUMENT` before anything is written.

use serde::{Deserialize, Serialize};

/// Limits enforced at the service edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest record (payload + key + headers), bytes.
    pub max_record_bytes: usize,
    /// Largest append request (sum of its records), bytes.
    pub max_append_bytes: usize,
    /// Most records in one append request.
    pub max_append_records: usize,
    /// Largest record key, bytes.
    pub max_key_bytes: usize,
    /// Largest sum of header names and values of one record, bytes.
    pub max_headers_bytes: usize,
    /// Most headers of one record. Empty headers cost nothing against
    /// `max_headers_bytes` but their framing and memory, so they are
    /// counted too.
    pub max_header_count: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_record_bytes: 1024 * 1024,
        max_append_bytes: 4 * 1024 * 1024,
        max_append_records: 10_000,
        max_key_bytes: 4 * 1024,
        max_headers_bytes: 64 * 1024,
        max_header_count: 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
