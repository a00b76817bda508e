//! Distinct types for numbers that must not be mixed up where a mix-up
//! would compile (several `u64`s side by side in one call).
//!
//! They are used at the calls that take several of these numbers at once
//! (the manifest's fenced writes, the reader's entry lookups, segment
//! statistics); records and protobuf messages keep plain `u64` fields.

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

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A log's id: never reused, so a log deleted and re-created under its
    /// name has another one.
    LogId
);
id_type!(
    /// A segment's id within its log (dense, from 1).
    SegmentId
);
id_type!(
    /// An entry's id within its segment (dense, from 0).
    EntryId
);
id_type!(
    /// A record's offset in its log.
    Offset
);
