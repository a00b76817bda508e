//! The journal's on-disk format: a file header, then chained frames, each
//! group commit (batch) starting with the file's sync marker.
//!
//! ```text
//! file header  magic "DLJF" | version u32 | seq u64 | nonce u64 | crc32c u32 (of the 24 bytes before)
//! batch        sync marker [16] | frame | frame | ...          (version 4; version 3 has no marker)
//! batch        sync marker [16] | opener | frame | frame | ... (version 5)
//! opener       a frame of kind 5, no payload, log and segment 0
//! frame        kind u8 | len u32 | log_id u64 | segment_id u64 | batch u64 | payload crc32c u32 | check u32 | payload
//! ```
//!
//! All integers are little endian. A frame's `check` is the CRC32C of its
//! first 33 header bytes, seeded with the previous frame's `check`; the first
//! frame of a batch (right after the marker) is seeded instead with a value
//! derived from the file header's CRC and the marker's offset in the file
//! (version 3: every frame chains to the one before, the first to the file
//! header's CRC). So:
//!
//! * **Replay never reads frames out of payloads.** It parses a frame only
//!   where the verified header before it says the frame starts. Payloads
//!   are stored verbatim and may hold anything, including a byte-exact copy
//!   of a real frame or batch start; they are never parsed as records.
//! * **A frame verifies only at its own place.** Its check depends on the
//!   file's random nonce, the marker's offset and every header of its batch
//!   before it, so a frame copied into a payload, another file or another
//!   position fails its check.
//! * **Batch starts can be found after damage.** The sync marker is 16
//!   bytes derived from the file's random nonce (never sent anywhere, so a
//!   client cannot put it in a payload on purpose), and a batch's first
//!   frame verifies on its own, without the chain of the frames before it.
//!   After a header that does not verify, replay scans forward for the
//!   marker, and a marker followed by a batch-start frame that verifies at
//!   that offset proves that a later batch was started
//!   ([`find_batch_start`]). Scanning only decides what the damage is;
//!   records are still read by following the chain alone. Cost: 16 bytes
//!   per group commit.
//! * **Payload damage is local.** A frame whose header verifies but whose
//!   payload does not names its segment and where the next frame starts, so
//!   replay marks that segment damaged and goes on. A header that does not
//!   verify leaves the rest of the file unlocatable (see [`mod@super::replay`]).
//! * **Batches are numbered.** `batch` is the group commit that wrote the
//!   frame, rising within a file. The writer starts a batch only after the
//!   previous one's `fdatasync` returned, so any verified frame of a later
//!   batch (version 4: any verified batch start further on) proves that
//!   everything before it in the file was synced; replay uses that to tell
//!   a torn last batch from damage (see [`mod@super::replay`]).
//!
//! Records are entries, fences, drops and damage marks (`Damaged`: the node
//! found a record of the segment damaged; kept so the mark outlives the file
//! that held the damaged record).
//!
//! Version 5 opens each batch as soon as the previous one's `fdatasync`
//! returns: the marker and an empty opener frame are written then (not
//! synced), and the batch's records follow later. So the last synced batch
//! of a file has a batch start behind it too, and damage in it is told
//! from a torn tail like damage in any earlier batch. Cost: 53 bytes and
//! one unsynced `write` per group commit.
//!
//! Versions: this build writes version 5 and replays versions 3 to 5 (a
//! version-3 file is one written before an upgrade; every start begins a new
//! file, so it is the newest file for one start at most). The version is
//! checked before anything else: a file of another format is refused with a
//! clear error, never guessed at. A header that fails its CRC is damage,
//! also when the flipped bit is in the magic or the version: a header that
//! verifies once its magic and version are set back to this format's is
//! this format's, damaged.

use std::hash::{BuildHasher, Hasher};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::segment_key::SegmentKey;

pub const FILE_MAGIC: &[u8; 4] = b"DLJF";
/// The format this build writes.
pub const VERSION: u32 = 5;
/// The format before batch openers, still replayed.
pub const VERSION_4: u32 = 4;
/// The format before sync markers, still replayed.
pub const VERSION_3: u32 = 3;
pub const FILE_HEADER_LEN: usize = 28;
pub const FRAME_HEADER_LEN: usize = 37;
/// Bytes of the sync marker written before every batch (version 4).
pub const SYNC_MARKER_LEN: usize = 16;
/// Bytes of a batch opener: a sync marker and an empty frame (version 5).
pub const OPENER_LEN: usize = SYNC_MARKER_LEN + FRAME_HEADER_LEN;
/// Header bytes covered by a frame's check (all but the check itself).
const CHECKED_LEN: usize = FRAME_HEADER_LEN - 4;
/// First byte of every sync marker: not a record kind, so a marker is never
/// the start of a frame header.
const MARKER_FIRST: u8 = 0xFF;

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
/// A batch opener's frame (version 5): no record, no payload.
const KIND_OPENER: u8 = 5;

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
    /// Random per file: no one outside the node can compute a frame's check
    /// or the file's sync marker.
    pub nonce: u64,
    pub version: u32,
}

/// What the frames of one file are verified with, derived from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKeys {
    /// The file header's CRC.
    seed: u32,
    /// Version 4 and later: the bytes before every batch's first frame.
    marker: Option<[u8; SYNC_MARKER_LEN]>,
}

impl FileKeys {
    fn new(version: u32, seed: u32, nonce: u64) -> FileKeys {
        let marker = (version >= VERSION_4).then(|| {
            let mut marker = [0; SYNC_MARKER_LEN];
            marker[..8].copy_from_slice(&mix(nonce ^ 0x5359_4e43_4d41_524b).to_le_bytes());
            marker[8..].copy_from_slice(&mix(nonce.rotate_left(32)).to_le_bytes());
            marker[0] = MARKER_FIRST;
            marker
        });
        FileKeys { seed, marker }
    }

    /// Seed of the check of the file's first frame.
    pub fn first_chain(&self) -> u32 {
        self.seed
    }

    /// Whether batches start with a sync marker (version 4 and later).
    pub fn has_markers(&self) -> bool {
        self.marker.is_some()
    }

    /// Seed of the check of a batch's first frame, whose marker is at
    /// `offset` in the file.
    fn batch_seed(&self, offset: usize) -> u32 {
        crc32c::crc32c_append(self.seed, &(offset as u64).to_le_bytes())
    }

    /// The marker, if one starts at `at`.
    fn marker_at(&self, file: &[u8], at: usize) -> Option<[u8; SYNC_MARKER_LEN]> {
        self.marker
            .filter(|marker| file.get(at..at + SYNC_MARKER_LEN) == Some(&marker[..]))
    }
}

/// A bijective 64-bit mixer (the SplitMix64 finaliser): spreads the nonce
/// over the marker's bytes.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl FileHeader {
    /// A header for file `seq` of this build's format with a fresh random
    /// nonce.
    pub fn new(seq: u64) -> FileHeader {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(seq);
        FileHeader {
            seq,
            nonce: hasher.finish(),
            version: VERSION,
        }
    }

    /// The header's bytes, and the keys its frames are written with.
    pub fn encode(&self) -> ([u8; FILE_HEADER_LEN], FileKeys) {
        let mut buf = BytesMut::with_capacity(FILE_HEADER_LEN);
        buf.put_slice(FILE_MAGIC);
        buf.put_u32_le(self.version);
        buf.put_u64_le(self.seq);
        buf.put_u64_le(self.nonce);
        let crc = crc32c::crc32c(&buf);
        buf.put_u32_le(crc);
        let keys = FileKeys::new(self.version, crc, self.nonce);
        (buf[..].try_into().expect("header length"), keys)
    }
}

/// Why a file header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header, or its checksum fails (a torn or damaged
    /// header, also one whose magic or version has a flipped bit).
    Damaged,
    /// Not a journal file of any version this build knows.
    NotAJournal,
    /// A journal of another format version.
    Version(u32),
    /// A valid header of another file.
    WrongSeq(u64),
}

fn known(version: u32) -> bool {
    [VERSION, VERSION_4, VERSION_3].contains(&version)
}

/// Whether `header` verifies once its magic and version are set back to
/// those of a format this build reads: a header of this format with a
/// flipped bit there, not a file of another format.
fn verifies_repaired(header: &[u8]) -> bool {
    [VERSION, VERSION_4, VERSION_3].iter().any(|version| {
        let mut repaired = [0; FILE_HEADER_LEN];
        repaired.copy_from_slice(header);
        repaired[..4].copy_from_slice(FILE_MAGIC);
        repaired[4..8].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&repaired[..FILE_HEADER_LEN - 4]);
        repaired[FILE_HEADER_LEN - 4..] == crc.to_le_bytes()
    })
}

/// Reads the file header of file `seq`; returns the keys of its frames.
pub fn parse_file_header(file: &[u8], seq: u64) -> Result<FileKeys, HeaderError> {
    if file.len() < 8 {
        return Err(HeaderError::Damaged);
    }
    let version = u32::from_le_bytes(file[4..8].try_into().expect("4 bytes"));
    let header = file.get(..FILE_HEADER_LEN);
    let verified = header.filter(|header| {
        let crc = crc32c::crc32c(&header[..FILE_HEADER_LEN - 4]);
        header[FILE_HEADER_LEN - 4..] == crc.to_le_bytes()
    });
    let Some(mut header) = verified else {
        // A header that does not verify. Damage when its magic and version
        // are ours, or verify once set back to ours (a bit flipped there);
        // a torn creation leaves a short file with part of its header (the
        // magic, then zeros). Otherwise a file of another format (refused,
        // never guessed at): one with another magic, or longer than a
        // header and naming another version.
        if header.is_some_and(verifies_repaired) || file[..4].iter().all(|b| *b == 0) {
            return Err(HeaderError::Damaged);
        }
        if &file[..4] != FILE_MAGIC {
            return Err(HeaderError::NotAJournal);
        }
        return Err(if !known(version) && file.len() > FILE_HEADER_LEN {
            HeaderError::Version(version)
        } else {
            HeaderError::Damaged
        });
    };
    if &header[..4] != FILE_MAGIC {
        return Err(HeaderError::NotAJournal);
    }
    if !known(version) {
        return Err(HeaderError::Version(version));
    }
    let crc = crc32c::crc32c(&header[..FILE_HEADER_LEN - 4]);
    header.advance(8);
    let found = header.get_u64_le();
    if found != seq {
        return Err(HeaderError::WrongSeq(found));
    }
    Ok(FileKeys::new(version, crc, header.get_u64_le()))
}

/// Encodes frames of one file, keeping the check chain.
#[derive(Debug)]
pub struct Encoder {
    keys: FileKeys,
    chain: u32,
}

impl Encoder {
    /// Starts after the file header.
    pub fn new(keys: FileKeys) -> Encoder {
        Encoder {
            keys,
            chain: keys.first_chain(),
        }
    }

    /// Starts a group commit: appends the sync marker (version 4 and later) to `buf`,
    /// whose end is at `offset` in the file.
    pub fn start_batch(&mut self, offset: u64, buf: &mut BytesMut) {
        if let Some(marker) = self.keys.marker {
            let offset = usize::try_from(offset).expect("journal file offset fits usize");
            self.chain = self.keys.batch_seed(offset);
            buf.put_slice(&marker);
        }
    }

    /// Opens group commit `batch` ahead of its records (version 5): appends
    /// its sync marker and an empty opener frame to `buf`, whose end is at
    /// `offset` in the file. The batch's records then follow without a
    /// marker of their own.
    pub fn open_batch(&mut self, offset: u64, batch: u64, buf: &mut BytesMut) {
        self.start_batch(offset, buf);
        let start = buf.len();
        buf.put_u8(KIND_OPENER);
        buf.put_u32_le(0);
        buf.put_u64_le(0);
        buf.put_u64_le(0);
        buf.put_u64_le(batch);
        buf.put_u32_le(crc32c::crc32c(&[]));
        self.chain = crc32c::crc32c_append(self.chain, &buf[start..start + CHECKED_LEN]);
        buf.put_u32_le(self.chain);
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
    /// The file ends inside the frame's marker, header or payload.
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
    /// The frame's record; `None` for a batch opener, which holds none.
    pub parsed: Option<Parsed>,
    /// The group commit that wrote the frame.
    pub batch: u64,
    /// Offset of the next frame.
    pub next: usize,
    /// Seed of the next frame's check.
    pub chain: u32,
}

/// A frame header that verified.
struct Header {
    kind: u8,
    len: usize,
    segment: SegmentKey,
    batch: u64,
    payload_crc: u32,
    check: u32,
}

/// Reads and verifies the frame header at `at`, its check seeded with
/// `seed`.
fn header_at(file: &[u8], at: usize, seed: u32) -> Result<Header, FrameError> {
    let Some(bytes) = file.get(at..at + FRAME_HEADER_LEN) else {
        return Err(FrameError::Truncated);
    };
    let check = crc32c::crc32c_append(seed, &bytes[..CHECKED_LEN]);
    let mut fields = bytes;
    let header = Header {
        kind: fields.get_u8(),
        len: fields.get_u32_le() as usize,
        segment: SegmentKey {
            log_id: fields.get_u64_le(),
            segment_id: fields.get_u64_le(),
        },
        batch: fields.get_u64_le(),
        payload_crc: fields.get_u32_le(),
        check,
    };
    if fields.get_u32_le() != check {
        return Err(FrameError::BadHeader);
    }
    Ok(header)
}

/// Where the first batch start at or after `from` is: a sync marker
/// followed by a frame header that verifies as a batch's first frame at
/// that offset. `None` for a version-3 file (it has no markers). Only a
/// batch the writer started can be found: a marker or frame copied into a
/// payload fails the check at its new offset.
pub fn find_batch_start(file: &[u8], from: usize, keys: &FileKeys) -> Option<usize> {
    let marker = keys.marker?;
    let mut at = from;
    while let Some(found) = file
        .get(at..)?
        .windows(SYNC_MARKER_LEN)
        .position(|window| window == marker)
    {
        let start = at + found;
        if header_at(file, start + SYNC_MARKER_LEN, keys.batch_seed(start)).is_ok() {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// Parses the frame at `at`: a batch's first frame if the file's sync
/// marker is there, else a frame whose check is seeded with `chain`.
pub fn parse_at(file: &Bytes, at: usize, keys: &FileKeys, chain: u32) -> Result<Next, FrameError> {
    let (at, seed) = match keys.marker_at(file, at) {
        Some(_) => (at + SYNC_MARKER_LEN, keys.batch_seed(at)),
        None => (at, chain),
    };
    let header = header_at(file, at, seed)?;
    let payload_start = at + FRAME_HEADER_LEN;
    let next = payload_start + header.len;
    if next > file.len() {
        return Err(FrameError::Truncated);
    }
    let (kind, len, segment) = (header.kind, header.len, header.segment);
    let bad = FrameError::BadPayload {
        segment,
        batch: header.batch,
        fence: kind == KIND_FENCE,
        next,
        chain: header.check,
    };
    let bytes = file.slice(payload_start..next);
    if crc32c::crc32c(&bytes) != header.payload_crc {
        return Err(bad);
    }
    let record = match (kind, len) {
        (KIND_OPENER, 0) => {
            return Ok(Next {
                parsed: None,
                batch: header.batch,
                next,
                chain: header.check,
            });
        }
        (KIND_ENTRY, _) => {
            let Ok(entry) = dlog_wire::codec::verify_entry(&bytes) else {
                return Err(bad);
            };
            if (entry.log_id, entry.segment_id) != (segment.log_id, segment.segment_id) {
                return Err(bad);
            }
            Record::Entry {
                segment,
                entry_id: entry.entry_id,
                lac: entry.lac,
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
        parsed: Some(Parsed {
            record,
            payload_offset: payload_start as u64,
            payload_len: len as u32,
        }),
        batch: header.batch,
        next,
        chain: header.check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// File 7 of `version`, one batch per slice; returns where each batch
    /// starts (its marker, or its first frame in version 3).
    fn file_of(version: u32, batches: &[&[Record]]) -> (Bytes, Vec<usize>) {
        let header = FileHeader {
            version,
            ..FileHeader::new(7)
        };
        let (header, keys) = header.encode();
        let mut buf = BytesMut::from(&header[..]);
        let mut encoder = Encoder::new(keys);
        let mut starts = Vec::new();
        for (batch, records) in batches.iter().enumerate() {
            starts.push(buf.len());
            encoder.start_batch(buf.len() as u64, &mut buf);
            for record in *records {
                encoder.encode(record, batch as u64, &mut buf);
            }
        }
        (buf.freeze(), starts)
    }

    /// File 7 of this build's format, a batch per record.
    fn file_with(records: &[Record]) -> (Bytes, Vec<usize>) {
        let batches: Vec<&[Record]> = records.iter().map(std::slice::from_ref).collect();
        file_of(VERSION, &batches)
    }

    /// Every frame of file 7: a record, or the error met there.
    fn parse_all(file: &Bytes) -> Vec<Result<Record, FrameError>> {
        let keys = parse_file_header(file, 7).unwrap();
        let mut chain = keys.first_chain();
        let mut at = FILE_HEADER_LEN;
        let mut out = Vec::new();
        while at < file.len() {
            match parse_at(file, at, &keys, chain) {
                Ok(next) => {
                    out.extend(next.parsed.map(|parsed| Ok(parsed.record)));
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
        damaged[starts[1] + SYNC_MARKER_LEN + FRAME_HEADER_LEN] ^= 0x08;
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
        // Another version with a header of another layout (its checksum is
        // not where ours is): refused when the file holds more than a
        // header, a torn creation otherwise.
        let mut longer = header.to_vec();
        longer[4] = 9;
        longer[20] ^= 0x55;
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

    #[test]
    fn a_flipped_bit_in_the_magic_or_version_is_damage_not_another_format() {
        let (header, _) = FileHeader::new(7).encode();
        let mut file = header.to_vec();
        file.extend_from_slice(&[1; 40]);
        for bit in 0..64 {
            let mut flipped = file.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                parse_file_header(&flipped, 7),
                Err(HeaderError::Damaged),
                "bit {bit} of the magic and version"
            );
        }
    }

    #[test]
    fn batch_starts_are_found_after_damage_and_copies_are_not() {
        let fence = |epoch| Record::Fence { segment: S, epoch };
        let (file, starts) = file_of(VERSION, &[&[fence(1)], &[fence(2), fence(3)], &[fence(4)]]);
        let keys = parse_file_header(&file, 7).unwrap();
        assert_eq!(find_batch_start(&file, 0, &keys), Some(starts[0]));
        assert_eq!(
            find_batch_start(&file, starts[0] + 1, &keys),
            Some(starts[1])
        );
        // A damaged header in batch 1: batch 2's start is still found, on
        // its own (the chain through the damaged header is broken).
        let mut damaged = file.to_vec();
        let second = starts[1] + SYNC_MARKER_LEN + FRAME_HEADER_LEN + 8;
        damaged[second + 3] ^= 0x20;
        let damaged = Bytes::from(damaged);
        assert_eq!(
            parse_all(&damaged),
            vec![Ok(fence(1)), Ok(fence(2)), Err(FrameError::BadHeader)]
        );
        assert_eq!(find_batch_start(&damaged, second, &keys), Some(starts[2]));
        assert_eq!(find_batch_start(&damaged, starts[2] + 1, &keys), None);

        // Batch 0 (marker, frame and payload) copied after the last batch:
        // the marker is there, the frame does not verify at its new place.
        let mut copied = file.to_vec();
        copied.extend_from_slice(&file[starts[0]..starts[1]]);
        let copied = Bytes::from(copied);
        assert_eq!(find_batch_start(&copied, starts[2] + 1, &keys), None);
        assert_eq!(parse_all(&copied)[4], Err(FrameError::BadHeader));
        // Or into another file of the same sequence number.
        let (other, _) = file_with(&[]);
        let mut moved = other.to_vec();
        moved.extend_from_slice(&file[starts[0]..starts[1]]);
        let moved = Bytes::from(moved);
        let other_keys = parse_file_header(&moved, 7).unwrap();
        assert_eq!(find_batch_start(&moved, 0, &other_keys), None);
    }

    #[test]
    fn version_3_files_have_no_markers_and_still_parse() {
        let fence = |epoch| Record::Fence { segment: S, epoch };
        let (file, starts) = file_of(VERSION_3, &[&[fence(1)], &[fence(2), fence(3)]]);
        assert_eq!(
            starts,
            [FILE_HEADER_LEN, FILE_HEADER_LEN + FRAME_HEADER_LEN + 8]
        );
        let keys = parse_file_header(&file, 7).unwrap();
        assert!(!keys.has_markers());
        assert_eq!(
            parse_all(&file)
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>(),
            vec![fence(1), fence(2), fence(3)]
        );
        assert_eq!(find_batch_start(&file, 0, &keys), None);
        // The same records in version 4: a marker per batch.
        let (v4, _) = file_of(VERSION, &[&[fence(1)], &[fence(2), fence(3)]]);
        assert_eq!(v4.len(), file.len() + 2 * SYNC_MARKER_LEN);
    }
}
