//! The binary entry format: the unit of replication, journaling and caching.
//!
//! An entry is a batch of consecutive records of one log segment:
//!
//! ```text
//!  0  magic "DLE1"/"DLE2"   4 bytes
//!  4  log_id                u64 LE
//! 12  segment_id            u64 LE
//! 20  entry_id              u64 LE
//! 28  epoch                 u64 LE   writer epoch that produced the entry
//! 36  first_offset          u64 LE   offset of the first record
//! 44  lac                   u64 LE   last add confirmed when sent (u64::MAX = none)
//! 52  record_count          u32 LE
//! 56  body_len              u32 LE
//! 60  crc32c                u32 LE   over bytes 0..60 and the body
//! 64  body: record_count records, each
//!       timestamp_ms i64 | flags u8 | [txid i64] | [producer_time_ms i64]
//!       | [key_len u32, key] | header_count u32, (name_len u16, name, value_len u32, value)*
//!       | payload_len u32, payload
//! ```
//!
//! Flags: 1 = txid, 2 = key, 4 = null payload (its length is then 0), 8 =
//! producer time. A field in brackets is there only with its flag. Flags 4
//! and 8 came later: an entry written before them has neither bit set and
//! decodes exactly as it did. A bit this code does not know (an entry of a
//! newer version) is refused as [`DecodeError::UnknownFlags`], never read
//! as something else. Headers are stored in the record's order, repeated
//! names included.
//!
//! The magic says which code may read the entry: "DLE2" when a record uses
//! what came with flags 4 and 8 (a null payload, a producer time) or
//! headers that are not strictly ordered by name (repeats, or the client's
//! own order), "DLE1" otherwise, byte for byte as before. Code older than
//! these features read headers into a map (sorted, last repeat kept) and
//! ignored flags it did not know: an old node refuses a "DLE2" entry as a
//! bad magic instead of reading a changed record (ARCHITECTURE.md, the
//! record model's upgrade order).
//!
//! The CRC covers the header as well as the body, so a flipped bit anywhere
//! is caught. Decoding never panics: truncated or corrupted input gives a
//! [`DecodeError`]. Decoded payloads are slices of the input buffer (no copy).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Classify, ErrorKind};
use crate::record::{Headers, Record};

const MAGIC: &[u8; 4] = b"DLE1";
/// The magic of an entry that code before ordered headers, null payloads
/// and producer times must not read (module doc).
const MAGIC_V2: &[u8; 4] = b"DLE2";
/// Bytes before the body.
pub const HEADER_LEN: usize = 64;
const CRC_AT: usize = 60;
const NO_LAC: u64 = u64::MAX;
const FLAG_TXID: u8 = 1;
const FLAG_KEY: u8 = 2;
const FLAG_NULL_PAYLOAD: u8 = 4;
const FLAG_PRODUCER_TIME: u8 = 8;
const KNOWN_FLAGS: u8 = FLAG_TXID | FLAG_KEY | FLAG_NULL_PAYLOAD | FLAG_PRODUCER_TIME;

/// Fixed fields of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub log_id: u64,
    pub segment_id: u64,
    pub entry_id: u64,
    pub epoch: u64,
    pub first_offset: u64,
    /// Last add confirmed of the segment when the entry was sent.
    pub lac: Option<u64>,
    pub record_count: u32,
}

impl EntryHeader {
    /// Offset one past the last record of the entry.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + u64::from(self.record_count)
    }
}

/// A record inside an entry, with the timestamp the owner assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    pub timestamp_ms: i64,
    pub record: Record,
}

/// A decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub header: EntryHeader,
    pub records: Vec<EntryRecord>,
}

/// Why bytes are not a valid entry. All are `DATA_LOSS`: the bytes were
/// damaged in storage or flight, and another replica should be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("entry truncated: {field} needs {needed} bytes at byte {at}, {len} present")]
    Truncated {
        field: &'static str,
        at: usize,
        needed: usize,
        len: usize,
    },
    #[error("not an entry: bad magic {found:02x?}")]
    BadMagic { found: [u8; 4] },
    #[error("entry checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("entry body is {actual} bytes but its header says {declared}")]
    BodyLength { declared: usize, actual: usize },
    #[error("entry has {extra} bytes after its {records} records")]
    TrailingBytes { records: u32, extra: usize },
    #[error("header name of record {index} is not UTF-8")]
    HeaderName { index: u32 },
    #[error(
        "record {index} has flags {flags:#04x}, of which {unknown:#04x} are unknown (an entry of a newer version?)"
    )]
    UnknownFlags { index: u32, flags: u8, unknown: u8 },
    #[error("record {index} has a null payload of {len} bytes")]
    NullPayloadWithBytes { index: u32, len: usize },
    #[error("offsets of the entry overflow u64: first {first_offset}, {record_count} records")]
    OffsetOverflow {
        first_offset: u64,
        record_count: u32,
    },
}

impl Classify for DecodeError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::DataLoss
    }
}

/// Whether code that read headers into a sorted map and knew only flags 1
/// and 2 would read `record` differently (module doc).
fn needs_v2(record: &Record) -> bool {
    record.null_payload
        || record.producer_time_ms.is_some()
        || record
            .headers
            .iter()
            .zip(record.headers.iter().skip(1))
            .any(|((a, _), (b, _))| a >= b)
}

/// Encodes an entry. The header's `record_count` is taken from `records`.
///
/// Panics only if a single field exceeds `u32::MAX` bytes, which the limits
/// of [`crate::limits`] rule out long before.
pub fn encode_entry(header: &EntryHeader, records: &[EntryRecord]) -> Bytes {
    let body_len: usize = records.iter().map(|r| framed_len(&r.record)).sum();
    let mut buf = BytesMut::with_capacity(HEADER_LEN + body_len);
    let newer = records.iter().any(|r| needs_v2(&r.record));
    buf.put_slice(if newer { MAGIC_V2 } else { MAGIC });
    buf.put_u64_le(header.log_id);
    buf.put_u64_le(header.segment_id);
    buf.put_u64_le(header.entry_id);
    buf.put_u64_le(header.epoch);
    buf.put_u64_le(header.first_offset);
    buf.put_u64_le(header.lac.unwrap_or(NO_LAC));
    buf.put_u32_le(len_u32(records.len()));
    buf.put_u32_le(len_u32(body_len));
    buf.put_u32_le(0); // checksum, filled below
    for entry_record in records {
        encode_record(&mut buf, entry_record);
    }
    let crc = checksum(&buf);
    buf[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    buf.freeze()
}

/// The longest header name an entry can frame (its length is a `u16`).
/// [`crate::record::check_record`] refuses longer ones whatever the limits.
pub const MAX_HEADER_NAME_BYTES: usize = u16::MAX as usize;

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("entry field longer than u32::MAX bytes")
}

/// Entries smaller than this get a buffer of their own in [`own_buffer`];
/// larger ones are mostly their message already.
const OWN_BUFFER_BELOW: usize = 64 * 1024;

/// `entry` in a buffer of its own if it is small. A received entry is a
/// slice of its message's buffer, and HTTP/2 frames pack many small
/// messages in one: a cache that keeps the entry and weighs only its bytes
/// (a cache node's hot entries, a reader's entry cache) would keep the whole
/// buffer alive (10 000 logs: ~70 KB of memory per log).
pub fn own_buffer(entry: Bytes) -> Bytes {
    if entry.len() < OWN_BUFFER_BELOW {
        Bytes::copy_from_slice(&entry)
    } else {
        entry
    }
}

/// Bytes `record` takes in an entry: its own bytes and their framing
/// (at least 17 bytes, also for a record with no bytes at all).
pub fn framed_len(record: &Record) -> usize {
    8 + 1
        + record.txid.map_or(0, |_| 8)
        + record.producer_time_ms.map_or(0, |_| 8)
        + record.key.as_ref().map_or(0, |k| 4 + k.len())
        + 4
        + record
            .headers
            .iter()
            .map(|(k, v)| 2 + k.len() + 4 + v.len())
            .sum::<usize>()
        + 4
        + record.nullable_payload().map_or(0, Bytes::len)
}

fn encode_record(buf: &mut BytesMut, entry_record: &EntryRecord) {
    let record = &entry_record.record;
    buf.put_i64_le(entry_record.timestamp_ms);
    let mut flags = 0;
    if record.txid.is_some() {
        flags |= FLAG_TXID;
    }
    if record.key.is_some() {
        flags |= FLAG_KEY;
    }
    if record.null_payload {
        flags |= FLAG_NULL_PAYLOAD;
    }
    if record.producer_time_ms.is_some() {
        flags |= FLAG_PRODUCER_TIME;
    }
    buf.put_u8(flags);
    if let Some(txid) = record.txid {
        buf.put_i64_le(txid);
    }
    if let Some(time) = record.producer_time_ms {
        buf.put_i64_le(time);
    }
    if let Some(key) = &record.key {
        buf.put_u32_le(len_u32(key.len()));
        buf.put_slice(key);
    }
    buf.put_u32_le(len_u32(record.headers.len()));
    for (name, value) in &record.headers {
        buf.put_u16_le(u16::try_from(name.len()).expect("header name longer than 64 KiB"));
        buf.put_slice(name.as_bytes());
        buf.put_u32_le(len_u32(value.len()));
        buf.put_slice(value);
    }
    // A null payload is written empty whatever bytes the record holds (the
    // limits refuse such records; the entry stays decodable regardless).
    let payload = record.nullable_payload().map_or(&[][..], |p| &p[..]);
    buf.put_u32_le(len_u32(payload.len()));
    buf.put_slice(payload);
}

/// CRC32C of an encoded entry with its checksum field taken as zero.
fn checksum(entry: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&entry[..CRC_AT]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    crc32c::crc32c_append(crc, &entry[HEADER_LEN..])
}

/// Parses and verifies the header and checksum of an encoded entry without
/// decoding its records. This is what the cache tier does on every add and read.
pub fn verify_entry(entry: &[u8]) -> Result<EntryHeader, DecodeError> {
    if entry.len() < HEADER_LEN {
        return Err(DecodeError::Truncated {
            field: "header",
            at: 0,
            needed: HEADER_LEN,
            len: entry.len(),
        });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&entry[..4]);
    if &magic != MAGIC && &magic != MAGIC_V2 {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let mut fields = &entry[4..HEADER_LEN];
    let log_id = fields.get_u64_le();
    let segment_id = fields.get_u64_le();
    let entry_id = fields.get_u64_le();
    let epoch = fields.get_u64_le();
    let first_offset = fields.get_u64_le();
    let lac = fields.get_u64_le();
    let record_count = fields.get_u32_le();
    let body_len = fields.get_u32_le() as usize;
    let stored = fields.get_u32_le();
    let actual = entry.len() - HEADER_LEN;
    if body_len != actual {
        return Err(DecodeError::BodyLength {
            declared: body_len,
            actual,
        });
    }
    let computed = checksum(entry);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    if first_offset.checked_add(u64::from(record_count)).is_none() {
        return Err(DecodeError::OffsetOverflow {
            first_offset,
            record_count,
        });
    }
    Ok(EntryHeader {
        log_id,
        segment_id,
        entry_id,
        epoch,
        first_offset,
        lac: (lac != NO_LAC).then_some(lac),
        record_count,
    })
}

/// Verifies and decodes a whole entry; payloads, keys and header values are
/// slices of `entry`.
pub fn decode_entry(entry: Bytes) -> Result<Entry, DecodeError> {
    let header = verify_entry(&entry)?;
    let mut body = BodyReader {
        bytes: entry.slice(HEADER_LEN..),
        at: HEADER_LEN,
    };
    // A corrupt count cannot make us allocate much: each record is >= 17 bytes.
    let mut records = Vec::with_capacity((header.record_count as usize).min(body.bytes.len() / 17));
    for index in 0..header.record_count {
        records.push(body.record(index)?);
    }
    if !body.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes {
            records: header.record_count,
            extra: body.bytes.len(),
        });
    }
    Ok(Entry { header, records })
}

/// Bounds-checked reads from the body; `at` is the position in the entry,
/// for error messages.
struct BodyReader {
    bytes: Bytes,
    at: usize,
}

impl BodyReader {
    fn need(&self, field: &'static str, needed: usize) -> Result<(), DecodeError> {
        if self.bytes.len() < needed {
            return Err(DecodeError::Truncated {
                field,
                at: self.at,
                needed,
                len: self.bytes.len(),
            });
        }
        Ok(())
    }

    fn take(&mut self, field: &'static str, len: usize) -> Result<Bytes, DecodeError> {
        self.need(field, len)?;
        self.at += len;
        Ok(self.bytes.split_to(len))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(field, 1)?;
        self.at += 1;
        Ok(self.bytes.get_u8())
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(field, 2)?;
        self.at += 2;
        Ok(self.bytes.get_u16_le())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(field, 4)?;
        self.at += 4;
        Ok(self.bytes.get_u32_le())
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.need(field, 8)?;
        self.at += 8;
        Ok(self.bytes.get_i64_le())
    }

    fn record(&mut self, index: u32) -> Result<EntryRecord, DecodeError> {
        let timestamp_ms = self.i64("timestamp")?;
        let flags = self.u8("flags")?;
        let unknown = flags & !KNOWN_FLAGS;
        if unknown != 0 {
            return Err(DecodeError::UnknownFlags {
                index,
                flags,
                unknown,
            });
        }
        let txid = if flags & FLAG_TXID != 0 {
            Some(self.i64("txid")?)
        } else {
            None
        };
        let producer_time_ms = if flags & FLAG_PRODUCER_TIME != 0 {
            Some(self.i64("producer time")?)
        } else {
            None
        };
        let key = if flags & FLAG_KEY != 0 {
            let len = self.u32("key length")? as usize;
            Some(self.take("key", len)?)
        } else {
            None
        };
        let header_count = self.u32("header count")?;
        let mut headers = Headers::new();
        for _ in 0..header_count {
            let name_len = usize::from(self.u16("header name length")?);
            let name = self.take("header name", name_len)?;
            let name =
                String::from_utf8(name.to_vec()).map_err(|_| DecodeError::HeaderName { index })?;
            let value_len = self.u32("header value length")? as usize;
            headers.push(name, self.take("header value", value_len)?);
        }
        let payload_len = self.u32("payload length")? as usize;
        let null_payload = flags & FLAG_NULL_PAYLOAD != 0;
        if null_payload && payload_len != 0 {
            return Err(DecodeError::NullPayloadWithBytes {
                index,
                len: payload_len,
            });
        }
        let payload = self.take("payload", payload_len)?;
        Ok(EntryRecord {
            timestamp_ms,
            record: Record {
                payload,
                null_payload,
                key,
                headers,
                txid,
                producer_time_ms,
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = EntryRecord> {
        (
            (any::<i64>(), proptest::option::of(any::<i64>())),
            proptest::option::of(any::<i64>()),
            proptest::option::of(vec(any::<u8>(), 0..16)),
            // Few names, so that repeats are common.
            vec(("[ab]{0,2}", vec(any::<u8>(), 0..8)), 0..4),
            proptest::option::of(vec(any::<u8>(), 0..64)),
        )
            .prop_map(
                |((timestamp_ms, producer_time_ms), txid, key, headers, payload)| EntryRecord {
                    timestamp_ms,
                    record: Record {
                        null_payload: payload.is_none(),
                        payload: payload.unwrap_or_default().into(),
                        key: key.map(Bytes::from),
                        headers: headers.into_iter().collect(),
                        txid,
                        producer_time_ms,
                    },
                },
            )
    }

    fn arb_entry() -> impl Strategy<Value = (EntryHeader, Vec<EntryRecord>)> {
        (
            any::<[u64; 4]>(),
            0u64..u64::MAX / 2,
            proptest::option::of(0u64..1000),
            vec(arb_record(), 0..8),
        )
            .prop_map(
                |([log_id, segment_id, entry_id, epoch], first_offset, lac, records)| {
                    let header = EntryHeader {
                        log_id,
                        segment_id,
                        entry_id,
                        epoch,
                        first_offset,
                        lac,
                        record_count: records.len() as u32,
                    };
                    (header, records)
                },
            )
    }

    proptest! {
        #[test]
        fn entries_round_trip((header, records) in arb_entry()) {
            let bytes = encode_entry(&header, &records);
            let entry = decode_entry(bytes.clone()).unwrap();
            prop_assert_eq!(entry.header, header);
            prop_assert_eq!(&entry.records, &records);
            prop_assert_eq!(verify_entry(&bytes).unwrap(), header);
        }

        #[test]
        fn any_flipped_bit_is_detected((header, records) in arb_entry(), bit in any::<prop::sample::Index>()) {
            let mut bytes = encode_entry(&header, &records).to_vec();
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_entry(Bytes::from(bytes)).is_err());
        }

        #[test]
        fn any_truncation_is_detected((header, records) in arb_entry(), cut in any::<prop::sample::Index>()) {
            let bytes = encode_entry(&header, &records);
            let len = cut.index(bytes.len());
            prop_assert!(decode_entry(bytes.slice(..len)).is_err());
        }

        /// Fuzz-style: arbitrary bytes never panic the decoder, with or
        /// without a valid magic in front.
        #[test]
        fn arbitrary_bytes_never_panic(mut garbage in vec(any::<u8>(), 0..512), magic in any::<bool>()) {
            if magic && garbage.len() >= 4 {
                garbage[..4].copy_from_slice(MAGIC);
            }
            let _ = decode_entry(Bytes::from(garbage));
        }
    }

    fn sample() -> Bytes {
        let header = EntryHeader {
            log_id: 1,
            segment_id: 2,
            entry_id: 3,
            epoch: 4,
            first_offset: 100,
            lac: Some(2),
            record_count: 1,
        };
        encode_entry(
            &header,
            &[EntryRecord {
                timestamp_ms: 5,
                record: Record::new("hello"),
            }],
        )
    }

    /// Seals `body` (records) under a valid header and CRC, as the encoder would.
    fn sealed(record_count: u32, body: &[u8]) -> Bytes {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        for field in [1u64, 2, 3, 4, 100, 2] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        bytes.extend_from_slice(&record_count.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(body);
        let crc = checksum(&bytes);
        bytes[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        Bytes::from(bytes)
    }

    /// An entry laid out byte by byte as the code before null payloads and
    /// producer times wrote it: it decodes to the same records, and the
    /// encoder still writes such records to exactly these bytes.
    #[test]
    fn entries_written_before_flags_4_and_8_decode_unchanged() {
        let mut body = Vec::new();
        // Record 0: txid and key (flags 3), headers a and b (the old map
        // wrote them ordered by name), payload "hello".
        body.extend_from_slice(&5i64.to_le_bytes());
        body.push(3);
        body.extend_from_slice(&42i64.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(b"k");
        body.extend_from_slice(&2u32.to_le_bytes());
        for (name, value) in [("a", "2"), ("b", "1")] {
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(&1u32.to_le_bytes());
            body.extend_from_slice(value.as_bytes());
        }
        body.extend_from_slice(&5u32.to_le_bytes());
        body.extend_from_slice(b"hello");
        // Record 1: no flags, no headers, an empty payload.
        body.extend_from_slice(&6i64.to_le_bytes());
        body.push(0);
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        let old = sealed(2, &body);

        let entry = decode_entry(old.clone()).unwrap();
        let expected = vec![
            EntryRecord {
                timestamp_ms: 5,
                record: Record {
                    payload: Bytes::from_static(b"hello"),
                    key: Some(Bytes::from_static(b"k")),
                    headers: [("a", "2"), ("b", "1")].into(),
                    txid: Some(42),
                    ..Record::default()
                },
            },
            EntryRecord {
                timestamp_ms: 6,
                record: Record::new(""),
            },
        ];
        assert_eq!(entry.records, expected);
        assert!(!entry.records[1].record.null_payload, "empty, not null");
        assert_eq!(encode_entry(&entry.header, &expected), old);
    }

    #[test]
    fn order_repeats_null_payloads_and_producer_times_round_trip() {
        let mut headers = Headers::new();
        headers.push("z", "1");
        headers.push("a", "2");
        headers.push("z", "3");
        let records = vec![
            EntryRecord {
                timestamp_ms: 10,
                record: Record {
                    key: Some(Bytes::from_static(b"k")),
                    headers,
                    txid: Some(7),
                    producer_time_ms: Some(-1_000),
                    ..Record::null()
                },
            },
            EntryRecord {
                timestamp_ms: 11,
                record: Record {
                    producer_time_ms: Some(1_700_000_000_123),
                    ..Record::new("")
                },
            },
        ];
        let header = first_entry_of_log_1(2);
        let bytes = encode_entry(&header, &records);
        assert_eq!(
            bytes.len(),
            HEADER_LEN + records.iter().map(|r| framed_len(&r.record)).sum::<usize>()
        );
        assert_eq!(&bytes[..4], MAGIC_V2, "older code must not read this entry");
        let decoded = decode_entry(bytes).unwrap();
        assert_eq!(decoded.records, records);
        let names: Vec<&str> = (decoded.records[0].record.headers.iter())
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["z", "a", "z"]);
        assert!(decoded.records[0].record.null_payload);
        assert!(!decoded.records[1].record.null_payload);
    }

    /// The header of entry 0 of segment 0 of log 1, at epoch 1.
    pub(crate) fn first_entry_of_log_1(record_count: u32) -> EntryHeader {
        EntryHeader {
            log_id: 1,
            segment_id: 0,
            entry_id: 0,
            epoch: 1,
            first_offset: 0,
            lac: None,
            record_count,
        }
    }

    /// Only what older code would read differently gets the newer magic.
    #[test]
    fn the_magic_says_whether_older_code_may_read_the_entry() {
        let header = first_entry_of_log_1(1);
        let magic = |record: Record| {
            let entry = encode_entry(
                &header,
                &[EntryRecord {
                    timestamp_ms: 1,
                    record,
                }],
            );
            decode_entry(entry.clone()).unwrap();
            entry[..4].to_vec()
        };
        let with_headers = |names: &[&str]| {
            let mut headers = Headers::new();
            for name in names {
                headers.push(*name, "v");
            }
            Record {
                headers,
                ..Record::new("p")
            }
        };
        assert_eq!(magic(Record::new("p")), MAGIC);
        assert_eq!(magic(Record::new("")), MAGIC, "empty is not null");
        assert_eq!(magic(with_headers(&["a", "b", "c"])), MAGIC);
        assert_eq!(magic(with_headers(&["b", "a"])), MAGIC_V2);
        assert_eq!(magic(with_headers(&["a", "a"])), MAGIC_V2);
        assert_eq!(magic(Record::null()), MAGIC_V2);
        let timed = Record {
            producer_time_ms: Some(5),
            ..Record::new("p")
        };
        assert_eq!(magic(timed), MAGIC_V2);
    }

    /// A flag bit of a newer format is refused, even under a valid CRC,
    /// and so is a null payload that has bytes.
    #[test]
    fn unknown_flags_and_a_null_payload_with_bytes_are_refused() {
        let record = |flags: u8, payload: &[u8]| {
            let mut body = 9i64.to_le_bytes().to_vec();
            body.push(flags);
            body.extend_from_slice(&0u32.to_le_bytes());
            body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            body.extend_from_slice(payload);
            body
        };
        for bit in [16u8, 32, 64, 128] {
            let err = decode_entry(sealed(1, &record(bit | FLAG_KEY, b""))).unwrap_err();
            assert_eq!(
                err,
                DecodeError::UnknownFlags {
                    index: 0,
                    flags: bit | FLAG_KEY,
                    unknown: bit
                }
            );
            assert_eq!(err.kind(), ErrorKind::DataLoss);
        }
        assert_eq!(
            decode_entry(sealed(1, &record(0x12, b"")))
                .unwrap_err()
                .to_string(),
            "record 0 has flags 0x12, of which 0x10 are unknown (an entry of a newer version?)"
        );
        assert_eq!(
            decode_entry(sealed(1, &record(FLAG_NULL_PAYLOAD, b"xy"))).unwrap_err(),
            DecodeError::NullPayloadWithBytes { index: 0, len: 2 }
        );
        let null = decode_entry(sealed(1, &record(FLAG_NULL_PAYLOAD, b""))).unwrap();
        assert_eq!(null.records[0].record, Record::null());
    }

    #[test]
    fn a_record_count_that_lies_is_caught_even_with_a_valid_checksum() {
        // Re-seal a body with a wrong count under a correct CRC: the decoder
        // must still refuse rather than read past the end or panic.
        let mut bytes = sample().to_vec();
        bytes[52..56].copy_from_slice(&2u32.to_le_bytes());
        let crc = checksum(&bytes);
        bytes[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_entry(Bytes::from(bytes)).unwrap_err(),
            DecodeError::Truncated {
                field: "timestamp",
                at: 86,
                needed: 8,
                len: 0
            }
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let bytes = sample();
        assert_eq!(
            decode_entry(bytes.slice(..10)).unwrap_err().to_string(),
            "entry truncated: header needs 64 bytes at byte 0, 10 present"
        );
        let mut flipped = bytes.to_vec();
        flipped[70] ^= 0x01;
        assert!(matches!(
            decode_entry(Bytes::from(flipped)).unwrap_err(),
            DecodeError::ChecksumMismatch { .. }
        ));
        let mut bad_magic = bytes.to_vec();
        bad_magic[0] = b'X';
        assert_eq!(
            decode_entry(Bytes::from(bad_magic)).unwrap_err(),
            DecodeError::BadMagic { found: *b"XLE1" }
        );
        assert_eq!(
            decode_entry(bytes.slice(..bytes.len() - 1)).unwrap_err(),
            DecodeError::BodyLength {
                declared: bytes.len() - HEADER_LEN,
                actual: bytes.len() - HEADER_LEN - 1
            }
        );
        assert_eq!(
            DecodeError::BadMagic { found: [0; 4] }.kind(),
            ErrorKind::DataLoss
        );
    }
}
