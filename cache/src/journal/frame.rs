//! The journal's on-disk format: a file header, then chained frames.
//!
//! ```text
//! file header  magic "DLJF" | version u32 | seq u64 | nonce u64 | crc32c u32 (of the 24 bytes before)
//! frame        kind u8 | len u32 | log_id u64 | segment_id u64 | batch u64 | payload crc32c u32 | check u32 | payload
//! ```
//!
//! All integers are little endian. A frame's `check` is the CRC32C of its
//! first 25 header bytes, seeded with the previous frame's `check` (the
//! file header's CRC for the first frame). So:
//!
//! * **Replay never searches for frames.** It reads a frame only where the
//!   verified header before it says the frame starts. Payloads are stored
//!   verbatim and may hold anything, including a byte-exact copy of a real
//!   frame; they are never parsed as frames.
//! * **A frame verifies only at its own place.** Its check depends on the
//!   file's sequence number and random nonce and on every header before it,
//!   so a frame copied into a payload, another file or another position
//!   fails its check even if replay were to look there.
//! * **Payload damage is local.** A frame whose header verifies but whose
//!   payload does not names its segment and where the next frame starts, so
//!   replay marks that segment damaged and goes on. A header that does not
//!   verify leaves the rest of the file unlocatable (see [`mod@super::replay`]).
//! * **Batches are numbered.** `batch` is the group commit that wrote the
//!   frame, rising within a file. The writer starts a batch only after the
//!   previous one's `fdatasync` returned, so a verified frame of a later
//!   batch proves every earlier batch of the file was synced; replay uses
//!   that to tell a torn last batch from damage (see [`mod@super::replay`]).
//!
//! Records are entries, fences, drops and damage marks (`Damaged`: the node
//! found a record of the segment damaged; kept so the mark outlives the file
//! that held the damaged record).
//!
//! The version is checked before anything else: a file of another format is
//! refused with a clear error, never guessed at.

use std::hash::{BuildHasher, Hasher};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::segment_key::SegmentKey;

pub const FILE_MAGIC: &[u8; 4] = b"DLJF";
/// The format this build writes and reads.
pub const VERSION: u32 = 3;
pub const FILE_HEADER_LEN: usize = 28;
pub const FRAME_HEADER_LEN: usize = 37;
/// Header bytes covered by a frame's check (all but the check itself).
const CHECKED_LEN: usize = FRAME_HEADER_LEN - 4;

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
    /// A record of the segment was found damaged on this node, for
    /// `reason`: the segment stays damaged here until it is dropped.
    Damaged { segment: SegmentKey, reason: String },
}

const KIND_ENTRY: u8 = 1;
const KIND_FENCE: u8 = 2;
const KIND_DROP: u8 = 3;
const KIND_DAMAGED: u8 = 4;

impl Record {
    pub fn segment(&self) -> SegmentKey {
        match self {
            Record::Entry { segment, .. }
            | Record::Fence { segment, .. }
            | Record::Drop { segment }
            | Record::Damaged { segment, .. } => *segment,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Record::Entry { .. } => KIND_ENTRY,
            Record::Fence { .. } => KIND_FENCE,
            Record::Drop { .. } => KIND_DROP,
            Record::Damaged { .. } => KIND_DAMAGED,
        }
    }

    /// Bytes of the payload.
    pub fn payload_len(&self) -> usize {
        match self {
            Record::Entry { bytes, .. } => bytes.len(),
            Record::Fence { .. } => 8,
            Record::Drop { .. } => 0,
            Record::Damaged { reason, .. } => reason.len(),
        }
    }

    /// Bytes the frame takes in the journal.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload_len()
    }
}

/// The header every journal file starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub seq: u64,
    /// Random per file: no one outside the node can compute a frame's check.
    pub nonce: u64,
}

impl FileHeader {
    /// A header for file `seq` with a fresh random nonce.
    pub fn new(seq: u64) -> FileHeader {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(seq);
        FileHeader {
            seq,
            nonce: hasher.finish(),
        }
    }

    /// The header's bytes; their CRC seeds the first frame's check.
    pub fn encode(&self) -> ([u8; FILE_HEADER_LEN], u32) {
        let mut buf = BytesMut::with_capacity(FILE_HEADER_LEN);
        buf.put_slice(FILE_MAGIC);
        buf.put_u32_le(VERSION);
        buf.put_u64_le(self.seq);
        buf.put_u64_le(self.nonce);
        let crc = crc32c::crc32c(&buf);
        buf.put_u32_le(crc);
        (buf[..].try_into().expect("header length"), crc)
    }
}

/// Why a file header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header, or its checksum fails (a torn or damaged
    /// header).
    Damaged,
    /// Not a journal file of any version this build knows.
    NotAJournal,
    /// A journal of another format version.
    Version(u32),
    /// A valid header of another file.
    WrongSeq(u64),
}

/// Reads the file header of file `seq`; returns the seed of the first
/// frame's check.
pub fn parse_file_header(file: &[u8], seq: u64) -> Result<u32, HeaderError> {
    if file.len() < 8 {
        return Err(HeaderError::Damaged);
    }
    if &file[..4] != FILE_MAGIC {
        return Err(if file[..4].iter().all(|b| *b == 0) {
            HeaderError::Damaged
        } else {
            HeaderError::NotAJournal
        });
    }
    let version = u32::from_le_bytes(file[4..8].try_into().expect("4 bytes"));
    let verified = file.get(..FILE_HEADER_LEN).filter(|header| {
        let crc = crc32c::crc32c(&header[..FILE_HEADER_LEN - 4]);
        header[FILE_HEADER_LEN - 4..] == crc.to_le_bytes()
    });
    let Some(mut header) = verified else {
        // A header that does not verify: a file longer than a header that
        // names another version is of another format (refused, never
        // guessed at); anything else is a torn or damaged header (a torn
        // creation leaves a short file with part of its header: the magic,
        // then zeros).
        return Err(if version != VERSION && file.len() > FILE_HEADER_LEN {
            HeaderError::Version(version)
        } else {
            HeaderError::Damaged
        });
    };
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    let crc = crc32c::crc32c(&header[..FILE_HEADER_LEN - 4]);
    header.advance(8);
    let found = header.get_u64_le();
    if found != seq {
        return Err(HeaderError::WrongSeq(found));
    }
    Ok(crc)
}

/// Encodes frames of one file, keeping the check chain.
#[derive(Debug)]
pub struct Encoder {
    chain: u32,
}

impl Encoder {
    /// Starts after the file header (seeded with its CRC).
    pub fn new(seed: u32) -> Encoder {
        Encoder { chain: seed }
    }

    /// Appends the frame of group commit `batch` to `buf`; returns the
    /// payload's offset in `buf`.
    pub fn encode(&mut self, record: &Record, batch: u64, buf: &mut BytesMut) -> usize {
        let fence;
        let payload: &[u8] = match record {
            Record::Entry { bytes, .. } => bytes,
            Record::Fence { epoch, .. } => {
                fence = epoch.to_le_bytes();
                &fence
            }
            Record::Drop { .. } => &[],
            Record::Damaged { reason, .. } => reason.as_bytes(),
        };
        let segment = record.segment();
        let start = buf.len();
        buf.put_u8(record.kind());
        buf.put_u32_le(u32::try_from(payload.len()).expect("journal record under 4 GiB"));
        buf.put_u64_le(segment.log_id);
        buf.put_u64_le(segment.segment_id);
        buf.put_u64_le(batch);
        buf.put_u32_le(crc32c::crc32c(payload));
        self.chain = crc32c::crc32c_append(self.chain, &buf[start..start + CHECKED_LEN]);
        buf.put_u32_le(self.chain);
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
    /// The file ends inside the frame's header or payload.
    Truncated,
    /// The header fails its check: where the next frame starts is unknown.
    BadHeader,
    /// The header verifies, the payload does not: the frame belonged to
    /// `segment` and group commit `batch` (`fence`: it was a fence), and
    /// the next frame starts at `next` with check seed `chain`.
    BadPayload {
        segment: SegmentKey,
        batch: u64,
        fence: bool,
        next: usize,
        chain: u32,
    },
}

/// A frame read from a file.
#[derive(Debug)]
pub struct Next {
    pub parsed: Parsed,
    /// The group commit that wrote the frame.
    pub batch: u64,
    /// Offset of the next frame.
    pub next: usize,
    /// Seed of the next frame's check.
    pub chain: u32,
}

/// Parses the frame at `at`, whose check is seeded with `chain`.
pub fn parse_at(file: &Bytes, at: usize, chain: u32) -> Result<Next, FrameError> {
    let Some(header) = file.get(at..at + FRAME_HEADER_LEN) else {
        return Err(FrameError::Truncated);
    };
    let check = crc32c::crc32c_append(chain, &header[..CHECKED_LEN]);
    let mut fields = header;
    let kind = fields.get_u8();
    let len = fields.get_u32_le() as usize;
    let segment = SegmentKey {
        log_id: fields.get_u64_le(),
        segment_id: fields.get_u64_le(),
    };
    let batch = fields.get_u64_le();
    let payload_crc = fields.get_u32_le();
    if fields.get_u32_le() != check {
        return Err(FrameError::BadHeader);
    }
    let payload_start = at + FRAME_HEADER_LEN;
    let next = payload_start + len;
    if next > file.len() {
        return Err(FrameError::Truncated);
    }
    let bad = FrameError::BadPayload {
        segment,
        batch,
        fence: kind == KIND_FENCE,
        next,
        chain: check,
    };
    let bytes = file.slice(payload_start..next);
    if crc32c::crc32c(&bytes) != payload_crc {
        return Err(bad);
    }
    let record = match (kind, len) {
        (KIND_ENTRY, _) => {
            let Ok(header) = dlog_wire::codec::verify_entry(&bytes) else {
                return Err(bad);
            };
            if (header.log_id, header.segment_id) != (segment.log_id, segment.segment_id) {
                return Err(bad);
            }
            Record::Entry {
                segment,
                entry_id: header.entry_id,
                lac: header.lac,
                bytes,
            }
        }
        (KIND_FENCE, 8) => Record::Fence {
            segment,
            epoch: (&bytes[..]).get_u64_le(),
        },
        (KIND_DROP, 0) => Record::Drop { segment },
        (KIND_DAMAGED, _) => Record::Damaged {
            segment,
            reason: String::from_utf8_lossy(&bytes).into_owned(),
        },
        _ => return Err(bad),
    };
    Ok(Next {
        parsed: Parsed {
            record,
            payload_offset: payload_start as u64,
            payload_len: len as u32,
        },
        batch,
        next,
        chain: check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(records: &[Record]) -> (Bytes, Vec<usize>) {
        let (header, seed) = FileHeader::new(7).encode();
        let mut buf = BytesMut::from(&header[..]);
        let mut encoder = Encoder::new(seed);
        let mut starts = Vec::new();
        for (batch, record) in records.iter().enumerate() {
            starts.push(buf.len());
            encoder.encode(record, batch as u64, &mut buf);
        }
        (buf.freeze(), starts)
    }

    /// Every frame of file 7: a record, or the error met there.
    fn parse_all(file: &Bytes) -> Vec<Result<Record, FrameError>> {
        let mut chain = parse_file_header(file, 7).unwrap();
        let mut at = FILE_HEADER_LEN;
        let mut out = Vec::new();
        while at < file.len() {
            match parse_at(file, at, chain) {
                Ok(next) => {
                    out.push(Ok(next.parsed.record));
                    (at, chain) = (next.next, next.chain);
                }
                Err(
                    bad @ FrameError::BadPayload {
                        next, chain: after, ..
                    },
                ) => {
                    out.push(Err(bad));
                    (at, chain) = (next, after);
                }
                Err(err) => {
                    out.push(Err(err));
                    break;
                }
            }
        }
        out
    }

    const S: SegmentKey = SegmentKey {
        log_id: 4,
        segment_id: 2,
    };

    #[test]
    fn frames_round_trip_and_a_moved_frame_fails_its_check() {
        let records = vec![
            Record::Fence {
                segment: S,
                epoch: 9,
            },
            Record::Drop { segment: S },
            Record::Fence {
                segment: S,
                epoch: 10,
            },
        ];
        let (file, starts) = file_with(&records);
        let parsed: Vec<_> = parse_all(&file).into_iter().map(Result::unwrap).collect();
        assert_eq!(parsed, records);

        // The second frame copied over the first: same bytes, wrong place.
        let mut moved = file.to_vec();
        let drop_frame = file[starts[1]..starts[2]].to_vec();
        moved.truncate(starts[0]);
        moved.extend_from_slice(&drop_frame);
        assert_eq!(
            parse_all(&Bytes::from(moved)),
            vec![Err(FrameError::BadHeader)]
        );
        // Or into another file with the same sequence number.
        let (other, _) = file_with(&[]);
        let mut copied = other.to_vec();
        copied.extend_from_slice(&file[starts[0]..starts[1]]);
        assert_eq!(
            parse_all(&Bytes::from(copied)),
            vec![Err(FrameError::BadHeader)]
        );
    }

    #[test]
    fn a_damaged_payload_names_its_segment_and_the_next_frame_is_kept() {
        let fence = |epoch| Record::Fence { segment: S, epoch };
        let (file, starts) = file_with(&[fence(1), fence(2), fence(3)]);
        let mut damaged = file.to_vec();
        damaged[starts[1] + FRAME_HEADER_LEN] ^= 0x08;
        let parsed = parse_all(&Bytes::from(damaged));
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], Ok(fence(1)));
        assert!(
            matches!(parsed[1], Err(FrameError::BadPayload { segment, batch: 1, fence: true, next, .. })
                if segment == S && next == starts[2]),
            "{:?}",
            parsed[1]
        );
        assert_eq!(parsed[2], Ok(fence(3)));
    }

    #[test]
    fn file_headers_name_their_version_and_file() {
        let (header, _) = FileHeader::new(7).encode();
        assert!(parse_file_header(&header, 7).is_ok());
        assert_eq!(parse_file_header(&header, 8), Err(HeaderError::WrongSeq(7)));
        // Another version, with its header's checksum: refused.
        let mut other = header;
        other[4] = 9;
        let crc = crc32c::crc32c(&other[..24]);
        other[24..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(parse_file_header(&other, 7), Err(HeaderError::Version(9)));
        // Another version without a verified header: refused when the file
        // holds more than a header, a torn creation otherwise.
        let mut longer = header.to_vec();
        longer[4] = 9;
        longer.extend_from_slice(&[1; 10]);
        assert_eq!(parse_file_header(&longer, 7), Err(HeaderError::Version(9)));
        let mut torn = b"DLJF".to_vec();
        torn.resize(FILE_HEADER_LEN, 0);
        assert_eq!(parse_file_header(&torn, 7), Err(HeaderError::Damaged));
        assert_eq!(
            parse_file_header(b"DLJ1\x01\x00\x00\x00", 7),
            Err(HeaderError::NotAJournal)
        );
        assert_eq!(parse_file_header(&[0; 28], 7), Err(HeaderError::Damaged));
        assert_eq!(
            parse_file_header(&header[..20], 7),
            Err(HeaderError::Damaged)
        );
        let mut flipped = header;
        flipped[15] ^= 1;
        assert_eq!(parse_file_header(&flipped, 7), Err(HeaderError::Damaged));
    }
}
