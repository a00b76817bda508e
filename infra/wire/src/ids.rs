//! Distinct types for numbers that must not be mixed up where a mix-up
//! would compile (several `u64`s side by side in one call).
//!
//! [`Epoch`] is the first; offsets, segment ids and entry ids are still
//! plain `u64` (ARCHITECTURE.md, "Decisions").

use std::fmt;

/// An owner epoch: a log's ownership generation, bumped by each new owner
/// and carried by every write so that cache nodes can fence older owners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
