//! [`SegmentKey`], the name of a segment on a cache node.

use std::fmt;

/// A segment on this node: `(log_id, segment_id)`. The log id, not the
/// log's name, so that a log deleted and created again under the same name
/// never shares a segment with its predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey {
    pub log_id: u64,
    pub segment_id: u64,
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.log_id, self.segment_id)
    }
}
