//! Framing of journal records.
//!
//! ```text
//! magic "DLJ1" | kind u8 | len u32 LE | crc32c u32 LE (of kind and payload) | payload
//! ```
//!
//! The magic lets replay find the next good frame after a damaged one, so
//! corruption in the middle of a file costs only the damaged records.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::SegmentKey;

pub const MAGIC: &[u8; 4] = b"DLJ1";
pub const FRAME_HEADER_LEN: usize = 13;

/// What a journal record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An encoded entry (its own header names log, segment and entry id).
    Entry {
        segment: SegmentKey,
        entry_id: u64,
        /// The LAC the entry carries.
        lac: Option<u64>,
        bytes: Bytes,
    },
    /// The segment refuses adds below `epoch` from now on.
    Fence { segment: SegmentKey, epoch: u64 },
    /// The segment is gone from this node.
    Drop { segment: SegmentKey },
}

const KIND_ENTRY: u8 = 1;
const KIND_FENCE: u8 = 2;
const KIND_DROP: u8 = 3;

impl Record {
    pub fn segment(&self) -> SegmentKey {
        match self {
            Record::Entry { segment, .. }
            | Record::Fence { segment, .. }
            | Record::Drop { segment } => *segment,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Record::Entry { .. } => KIND_ENTRY,
            Record::Fence { .. } => KIND_FENCE,
            Record::Drop { .. } => KIND_DROP,
        }
    }

    /// Bytes the frame takes in the journal.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN
            + match self {
                Record::Entry { bytes, .. } => bytes.len(),
                Record::Fence { .. } => 24,
                Record::Drop { .. } => 16,
            }
    }

    /// Appends the frame to `buf`; returns the payload's offset in `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> usize {
        let mut payload = BytesMut::new();
        let payload: &[u8] = match self {
            Record::Entry { bytes, .. } => bytes,
            Record::Fence { segment, epoch } => {
                payload.put_u64_le(segment.log_id);
                payload.put_u64_le(segment.segment_id);
                payload.put_u64_le(*epoch);
                &payload
            }
            Record::Drop { segment } => {
                payload.put_u64_le(segment.log_id);
                payload.put_u64_le(segment.segment_id);
                &payload
            }
        };
        let kind = self.kind();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
        buf.put_slice(MAGIC);
        buf.put_u8(kind);
        buf.put_u32_le(u32::try_from(payload.len()).expect("journal record under 4 GiB"));
        buf.put_u32_le(crc);
        let at = buf.len();
        buf.put_slice(payload);
        at
    }
}

/// One frame found in a journal file.
#[derive(Debug)]
pub struct Parsed {
    pub record: Record,
    /// Offset of the payload in the file.
    pub payload_offset: u64,
    pub payload_len: u32,
}

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The file ends inside the frame.
    Truncated,
    /// Magic, checksum or payload are wrong.
    Damaged,
}

/// Parses the frame at `at`. Returns it and the offset of the next frame.
pub fn parse_at(file: &Bytes, at: usize) -> Result<(Parsed, usize), FrameError> {
    let rest = &file[at..];
    if rest.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    if &rest[..4] != MAGIC {
        return Err(FrameError::Damaged);
    }
    let mut header = &rest[4..FRAME_HEADER_LEN];
    let kind = header.get_u8();
    let len = header.get_u32_le() as usize;
    let crc = header.get_u32_le();
    let Some(payload) = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Err(FrameError::Truncated);
    };
    if crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload) != crc {
        return Err(FrameError::Damaged);
    }
    let payload_start = at + FRAME_HEADER_LEN;
    let bytes = file.slice(payload_start..payload_start + len);
    let mut fields = &bytes[..];
    let record = match (kind, len) {
        (KIND_ENTRY, _) => {
            let header =
                dlog_infra::codec::verify_entry(&bytes).map_err(|_| FrameError::Damaged)?;
            Record::Entry {
                segment: SegmentKey {
                    log_id: header.log_id,
                    segment_id: header.segment_id,
                },
                entry_id: header.entry_id,
                lac: header.lac,
                bytes,
            }
        }
        (KIND_FENCE, 24) => Record::Fence {
            segment: SegmentKey {
                log_id: fields.get_u64_le(),
                segment_id: fields.get_u64_le(),
            },
            epoch: fields.get_u64_le(),
        },
        (KIND_DROP, 16) => Record::Drop {
            segment: SegmentKey {
                log_id: fields.get_u64_le(),
                segment_id: fields.get_u64_le(),
            },
        },
        _ => return Err(FrameError::Damaged),
    };
    Ok((
        Parsed {
            record,
            payload_offset: payload_start as u64,
            payload_len: len as u32,
        },
        payload_start + len,
    ))
}

/// The next offset after `from` where a valid frame starts, if any.
pub fn resync(file: &Bytes, from: usize) -> Option<usize> {
    let mut at = from;
    while at + FRAME_HEADER_LEN <= file.len() {
        let found = file[at..].windows(4).position(|w| w == MAGIC)?;
        at += found;
        if parse_at(file, at).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// A best guess at which segment a damaged entry frame belonged to, read
/// from its unverified entry header.
pub fn guess_segment(file: &Bytes, at: usize) -> Option<SegmentKey> {
    let payload = file.get(at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + 20)?;
    if &payload[..4] != b"DLE1" {
        return None;
    }
    let mut fields = &payload[4..];
    Some(SegmentKey {
        log_id: fields.get_u64_le(),
        segment_id: fields.get_u64_le(),
    })
}
