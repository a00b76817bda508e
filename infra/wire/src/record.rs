//! Validated records and append requests.
//!
//! Owns the record model every node and client shares: [`Record`] (payload,
//! or a null payload; key; ordered [`Headers`]; txid; the producer's own
//! time) and [`StoredRecord`] (a record with the offset and append time the
//! owner gave it), and their conversions from and to protobuf.
//!
//! Protobuf requests become domain types here, through `TryFrom` (default
//! limits) or `from_proto` (configured limits). Past this point no code sees
//! an unchecked name, an oversize record, a null payload with bytes or an
//! out-of-order txid inside one request.

use bytes::Bytes;

use crate::error::{Classify, ErrorKind};
use crate::limits::Limits;
use crate::names::{LogName, NameError};
use crate::proto;

/// A record's headers: name and value pairs in the order the client gave
/// them. A name may come more than once; [`Headers::get`] finds the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Bytes)>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds a header after the others, whether or not its name is there already.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.0.push((name.into(), value.into()));
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// The values of every header named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// The headers in order.
    pub fn iter(&self) -> std::slice::Iter<'_, (String, Bytes)> {
        self.0.iter()
    }

    /// How many headers there are (a repeated name counts each time).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of header names and values.
    pub fn bytes_len(&self) -> usize {
        self.0
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum()
    }
}

impl<N: Into<String>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        headers.extend(iter);
        headers
    }
}

impl<N: Into<String>, V: Into<Bytes>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (name, value) in iter {
            self.push(name, value);
        }
    }
}

impl<N: Into<String>, V: Into<Bytes>, const COUNT: usize> From<[(N, V); COUNT]> for Headers {
    fn from(pairs: [(N, V); COUNT]) -> Self {
        pairs.into_iter().collect()
    }
}

impl IntoIterator for Headers {
    type Item = (String, Bytes);
    type IntoIter = std::vec::IntoIter<(String, Bytes)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a (String, Bytes);
    type IntoIter = std::slice::Iter<'a, (String, Bytes)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `headers["name"]`: the first value of that name, as [`Headers::get`].
///
/// Panics when no header has that name.
impl std::ops::Index<&str> for Headers {
    type Output = Bytes;

    fn index(&self, name: &str) -> &Bytes {
        self.get(name)
            .unwrap_or_else(|| panic!("no header named {name:?}"))
    }
}

impl From<Vec<proto::Header>> for Headers {
    fn from(headers: Vec<proto::Header>) -> Self {
        Headers(headers.into_iter().map(|h| (h.name, h.value)).collect())
    }
}

impl From<Headers> for Vec<proto::Header> {
    fn from(headers: Headers) -> Self {
        (headers.0.into_iter())
            .map(|(name, value)| proto::Header { name, value })
            .collect()
    }
}

/// The latest producer time a record may carry: the last millisecond of
/// year 9999 (the range of RFC 3339). Producer times are from 0 to this.
/// Besides keeping times printable, the bound keeps the difference of any
/// two record times within an `i64` (Kafka batches store them as deltas).
pub const MAX_PRODUCER_TIME_MS: i64 = 253_402_300_799_999;

/// Bytes each header counts in [`Record::size`] beyond its name and value:
/// about what it takes in memory once decoded (a name and a value handle)
/// and on the journal (its two lengths), so that a record of many empty
/// headers cannot pass the size limits and the memory bounds as nothing.
pub const HEADER_OVERHEAD: usize = 16;

/// A record as a client submits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Empty when [`Record::null_payload`] is set.
    pub payload: Bytes,
    /// The payload is null rather than empty (a Kafka tombstone); the
    /// payload bytes must then be empty ([`check_record`] refuses others).
    pub null_payload: bool,
    pub key: Option<Bytes>,
    pub headers: Headers,
    /// Application transaction id, non-decreasing within a log when given.
    pub txid: Option<i64>,
    /// The client's own time for the record, milliseconds since the Unix
    /// epoch (Kafka's CreateTime), kept as given; from 0 to
    /// [`MAX_PRODUCER_TIME_MS`]. The owner's append time
    /// ([`StoredRecord::timestamp_ms`]) is what positioning and retention use.
    pub producer_time_ms: Option<i64>,
}

impl Record {
    /// A record with only a payload.
    pub fn new(payload: impl Into<Bytes>) -> Record {
        Record {
            payload: payload.into(),
            ..Record::default()
        }
    }

    /// A record whose payload is null (a Kafka tombstone).
    pub fn null() -> Record {
        Record {
            null_payload: true,
            ..Record::default()
        }
    }

    /// The payload, or `None` when it is null.
    pub fn nullable_payload(&self) -> Option<&Bytes> {
        (!self.null_payload).then_some(&self.payload)
    }

    /// Bytes of header names and values.
    pub fn headers_len(&self) -> usize {
        self.headers.bytes_len()
    }

    /// Bytes the record counts against the size limits, and that caches and
    /// memory bounds weigh it at: its payload, key and header bytes, plus
    /// [`HEADER_OVERHEAD`] for each header, so that many empty headers are
    /// not weightless.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.headers_len()
            + self.headers.len() * HEADER_OVERHEAD
    }
}

/// A stored record: a [`Record`] with the offset and timestamp the owner gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    /// When the owner appended the record, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub record: Record,
}

impl From<StoredRecord> for proto::StoredRecord {
    fn from(stored: StoredRecord) -> Self {
        let Record {
            payload,
            null_payload,
            key,
            headers,
            txid,
            producer_time_ms,
        } = stored.record;
        proto::StoredRecord {
            offset: stored.offset,
            timestamp_ms: stored.timestamp_ms,
            txid,
            key,
            headers: headers.into(),
            payload,
            null_payload,
            producer_time_ms,
        }
    }
}

impl From<proto::StoredRecord> for StoredRecord {
    fn from(stored: proto::StoredRecord) -> Self {
        StoredRecord {
            offset: stored.offset,
            timestamp_ms: stored.timestamp_ms,
            record: Record {
                payload: stored.payload,
                null_payload: stored.null_payload,
                key: stored.key,
                headers: stored.headers.into(),
                txid: stored.txid,
                producer_time_ms: stored.producer_time_ms,
            },
        }
    }
}

impl From<Record> for proto::Record {
    fn from(record: Record) -> Self {
        proto::Record {
            payload: record.payload,
            null_payload: record.null_payload,
            key: record.key,
            headers: record.headers.into(),
            txid: record.txid,
            producer_time_ms: record.producer_time_ms,
        }
    }
}

/// Unchecked: [`check_append`] validates what came in.
impl From<proto::Record> for Record {
    fn from(record: proto::Record) -> Self {
        Record {
            payload: record.payload,
            null_payload: record.null_payload,
            key: record.key,
            headers: record.headers.into(),
            txid: record.txid,
            producer_time_ms: record.producer_time_ms,
        }
    }
}

/// A request failed validation. Every variant is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("append has no records")]
    Empty,
    #[error("append has {count} records, more than the limit of {max}")]
    TooManyRecords { count: usize, max: usize },
    #[error("append is {bytes} bytes, more than the limit of {max}")]
    AppendTooLarge { bytes: usize, max: usize },
    #[error("record {index} is {bytes} bytes, more than the limit of {max}")]
    RecordTooLarge {
        index: usize,
        bytes: usize,
        max: usize,
    },
    #[error("key of record {index} is {bytes} bytes, more than the limit of {max}")]
    KeyTooLarge {
        index: usize,
        bytes: usize,
        max: usize,
    },
    #[error("headers of record {index} are {bytes} bytes, more than the limit of {max}")]
    HeadersTooLarge {
        index: usize,
        bytes: usize,
        max: usize,
    },
    #[error("record {index} has {count} headers, more than the limit of {max}")]
    TooManyHeaders {
        index: usize,
        count: usize,
        max: usize,
    },
    #[error("record {index} has a null payload and {bytes} payload bytes: a null payload is empty")]
    NullPayloadWithBytes { index: usize, bytes: usize },
    #[error(
        "producer time {time} of record {index} is outside 0..={MAX_PRODUCER_TIME_MS} \
         (ms since the Unix epoch, up to the end of year 9999)"
    )]
    ProducerTimeOutOfRange { index: usize, time: i64 },
    /// Beyond the entry format's framing, whatever the limits say.
    #[error(
        "header name {header} of record {index} is {bytes} bytes, more than the limit of {}",
        crate::codec::MAX_HEADER_NAME_BYTES
    )]
    HeaderNameTooLarge {
        index: usize,
        header: usize,
        bytes: usize,
    },
    #[error("txid {txid} of record {index} is below txid {previous} of an earlier record")]
    TxidDecreasing {
        index: usize,
        txid: i64,
        previous: i64,
    },
}

impl Classify for RecordError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// Checks one record against the limits; `index` names it in errors.
pub fn check_record(index: usize, record: &Record, limits: &Limits) -> Result<(), RecordError> {
    if let Some(key) = &record.key
        && key.len() > limits.max_key_bytes
    {
        return Err(RecordError::KeyTooLarge {
            index,
            bytes: key.len(),
            max: limits.max_key_bytes,
        });
    }
    if record.null_payload && !record.payload.is_empty() {
        return Err(RecordError::NullPayloadWithBytes {
            index,
            bytes: record.payload.len(),
        });
    }
    if let Some(time) = record.producer_time_ms
        && !(0..=MAX_PRODUCER_TIME_MS).contains(&time)
    {
        return Err(RecordError::ProducerTimeOutOfRange { index, time });
    }
    if record.headers.len() > limits.max_header_count {
        return Err(RecordError::TooManyHeaders {
            index,
            count: record.headers.len(),
            max: limits.max_header_count,
        });
    }
    let headers = record.headers_len();
    if headers > limits.max_headers_bytes {
        return Err(RecordError::HeadersTooLarge {
            index,
            bytes: headers,
            max: limits.max_headers_bytes,
        });
    }
    if let Some((header, (name, _))) = (record.headers.iter().enumerate())
        .find(|(_, (name, _))| name.len() > crate::codec::MAX_HEADER_NAME_BYTES)
    {
        return Err(RecordError::HeaderNameTooLarge {
            index,
            header,
            bytes: name.len(),
        });
    }
    let size = record.size();
    if size > limits.max_record_bytes {
        return Err(RecordError::RecordTooLarge {
            index,
            bytes: size,
            max: limits.max_record_bytes,
        });
    }
    Ok(())
}

/// A validated append request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub log: LogName,
    pub records: Vec<Record>,
    pub expected_offset: Option<u64>,
    /// Append only to the log with this id (not to a re-created namesake).
    pub expected_log_id: Option<u64>,
}

impl Append {
    /// Validates a request against configured limits.
    pub fn from_proto(
        request: proto::AppendRequest,
        limits: &Limits,
    ) -> Result<Append, RecordError> {
        let records = request.records.into_iter().map(Record::from).collect();
        let mut append = Append::checked(&request.log, records, limits)?;
        append.expected_offset = request.expected_offset;
        append.expected_log_id = request.log_id;
        Ok(append)
    }

    /// An unconditional append of `records` to the log named `log`, once
    /// the name and the records pass their checks against `limits`.
    pub fn checked(
        log: &str,
        records: Vec<Record>,
        limits: &Limits,
    ) -> Result<Append, RecordError> {
        let log: LogName = log.parse()?;
        check_append(&records, limits)?;
        Ok(Append {
            log,
            records,
            expected_offset: None,
            expected_log_id: None,
        })
    }

    /// Total bytes of the records.
    pub fn size(&self) -> usize {
        self.records.iter().map(Record::size).sum()
    }
}

impl TryFrom<proto::AppendRequest> for Append {
    type Error = RecordError;

    fn try_from(request: proto::AppendRequest) -> Result<Self, RecordError> {
        Append::from_proto(request, &Limits::DEFAULT)
    }
}

/// Checks the records of one append: count, sizes, txid order within it.
pub fn check_append(records: &[Record], limits: &Limits) -> Result<(), RecordError> {
    if records.is_empty() {
        return Err(RecordError::Empty);
    }
    if records.len() > limits.max_append_records {
        return Err(RecordError::TooManyRecords {
            count: records.len(),
            max: limits.max_append_records,
        });
    }
    let mut total = 0usize;
    let mut previous_txid: Option<i64> = None;
    for (index, record) in records.iter().enumerate() {
        check_record(index, record, limits)?;
        total += record.size();
        if let Some(txid) = record.txid {
            if let Some(previous) = previous_txid
                && txid < previous
            {
                return Err(RecordError::TxidDecreasing {
                    index,
                    txid,
                    previous,
                });
            }
            previous_txid = Some(txid);
        }
    }
    if total > limits.max_append_bytes {
        return Err(RecordError::AppendTooLarge {
            bytes: total,
            max: limits.max_append_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(records: Vec<proto::Record>) -> proto::AppendRequest {
        proto::AppendRequest {
            log: "ns/log".into(),
            records,
            expected_offset: None,
            log_id: None,
        }
    }

    fn payload(len: usize) -> proto::Record {
        proto::Record {
            payload: Bytes::from(vec![7u8; len]),
            ..Default::default()
        }
    }

    fn header(name: &str, value: impl Into<Bytes>) -> proto::Header {
        proto::Header {
            name: name.to_owned(),
            value: value.into(),
        }
    }

    #[test]
    fn accepts_records_at_the_limits() {
        let limits = Limits::DEFAULT;
        let append = Append::try_from(request(vec![payload(limits.max_record_bytes)])).unwrap();
        assert_eq!(append.records.len(), 1);
        assert_eq!(append.log.to_string(), "ns/log");
    }

    #[test]
    fn rejects_each_limit_with_a_precise_error() {
        let limits = Limits::DEFAULT;
        let err = Append::try_from(request(vec![
            payload(1),
            payload(limits.max_record_bytes + 1),
        ]))
        .unwrap_err();
        assert_eq!(
            err,
            RecordError::RecordTooLarge {
                index: 1,
                bytes: limits.max_record_bytes + 1,
                max: limits.max_record_bytes
            }
        );
        assert_eq!(
            err.to_string(),
            "record 1 is 1048577 bytes, more than the limit of 1048576"
        );

        let big_key = proto::Record {
            key: Some(Bytes::from(vec![1u8; 4097])),
            ..payload(1)
        };
        assert!(matches!(
            Append::try_from(request(vec![big_key])).unwrap_err(),
            RecordError::KeyTooLarge {
                index: 0,
                bytes: 4097,
                ..
            }
        ));

        let mut big_headers = payload(1);
        big_headers.headers.push(header("h", vec![0u8; 64 * 1024]));
        assert!(matches!(
            Append::try_from(request(vec![big_headers])).unwrap_err(),
            RecordError::HeadersTooLarge {
                index: 0,
                bytes: 65537,
                ..
            }
        ));

        // A name the entry format cannot frame, within the headers limit
        // (and refused under any limits).
        let mut long_name = payload(1);
        long_name.headers.push(header(&"h".repeat(65_536), ""));
        let unlimited = Limits {
            max_headers_bytes: usize::MAX,
            max_record_bytes: usize::MAX,
            ..Limits::DEFAULT
        };
        for limits in [Limits::DEFAULT, unlimited] {
            assert_eq!(
                Append::from_proto(request(vec![long_name.clone()]), &limits).unwrap_err(),
                RecordError::HeaderNameTooLarge {
                    index: 0,
                    header: 0,
                    bytes: 65_536,
                }
            );
        }
        long_name.headers = vec![header(&"h".repeat(65_535), "")];
        let append = Append::try_from(request(vec![long_name])).unwrap();
        let entry = crate::codec::EntryRecord {
            timestamp_ms: 0,
            record: append.records[0].clone(),
        };
        let header = crate::codec::tests::first_entry_of_log_1(1);
        crate::codec::decode_entry(crate::codec::encode_entry(&header, &[entry])).unwrap();

        let five = (0..5).map(|_| payload(1024 * 1024)).collect();
        assert_eq!(
            Append::try_from(request(five)).unwrap_err(),
            RecordError::AppendTooLarge {
                bytes: 5 * 1024 * 1024,
                max: 4 * 1024 * 1024
            }
        );

        let many = (0..10_001).map(|_| payload(1)).collect();
        assert_eq!(
            Append::try_from(request(many)).unwrap_err(),
            RecordError::TooManyRecords {
                count: 10_001,
                max: 10_000
            }
        );
        assert_eq!(
            Append::try_from(request(vec![])).unwrap_err(),
            RecordError::Empty
        );
    }

    #[test]
    fn headers_keep_their_order_and_repeated_names() {
        let mut record = payload(1);
        record.headers = vec![header("b", "1"), header("a", "2"), header("b", "3")];
        let append = Append::try_from(request(vec![record])).unwrap();
        let headers = &append.records[0].headers;
        let pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), &value[..]))
            .collect();
        assert_eq!(pairs, [("b", &b"1"[..]), ("a", b"2"), ("b", b"3")]);
        assert_eq!(headers.get("b").unwrap(), "1", "the first of a name");
        assert_eq!(headers["a"], "2");
        assert_eq!(headers.get_all("b").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(headers.get("c"), None);
        assert_eq!((headers.len(), headers.bytes_len()), (3, 6));
        // And back to protobuf, in the same order.
        let back = proto::Record::from(append.records[0].clone());
        let names: Vec<&str> = back.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "b"]);
    }

    /// The repeated `Header` field reads the bytes a `map<string, bytes>`
    /// field of the same number wrote (and the other way round): clients
    /// built before the list, and their stored requests, keep working.
    #[test]
    fn headers_are_wire_compatible_with_the_old_map() {
        use prost::Message;
        /// `Record` as it was declared before headers became a list.
        #[derive(Clone, PartialEq, prost::Message)]
        struct OldRecord {
            #[prost(bytes = "bytes", tag = "1")]
            payload: Bytes,
            #[prost(map = "string, bytes", tag = "3")]
            headers: std::collections::HashMap<String, Vec<u8>>,
        }
        let old = OldRecord {
            payload: Bytes::from_static(b"p"),
            headers: [("trace".to_owned(), b"t1".to_vec())].into(),
        };
        let new = proto::Record::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(new.headers, [header("trace", "t1")]);
        assert_eq!((new.null_payload, new.producer_time_ms), (false, None));

        let mut listed = payload(1);
        listed.headers = vec![header("a", "1"), header("b", "2"), header("a", "3")];
        let seen_by_old = OldRecord::decode(listed.encode_to_vec().as_slice()).unwrap();
        // A map keeps the last value of a repeated name.
        assert_eq!(
            seen_by_old.headers,
            [
                ("a".to_owned(), b"3".to_vec()),
                ("b".to_owned(), b"2".to_vec())
            ]
            .into()
        );
    }

    #[test]
    fn a_null_payload_must_be_empty() {
        let null = proto::Record {
            null_payload: true,
            producer_time_ms: Some(1_700_000_000_123),
            ..Default::default()
        };
        let append = Append::try_from(request(vec![null.clone()])).unwrap();
        let record = &append.records[0];
        assert!(record.null_payload);
        assert_eq!(record.nullable_payload(), None);
        assert_eq!(record.producer_time_ms, Some(1_700_000_000_123));
        assert_eq!(Record::new("").nullable_payload(), Some(&Bytes::new()));

        let with_bytes = proto::Record {
            payload: Bytes::from_static(b"abc"),
            ..null
        };
        let err = Append::try_from(request(vec![payload(1), with_bytes])).unwrap_err();
        assert_eq!(
            err,
            RecordError::NullPayloadWithBytes { index: 1, bytes: 3 }
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.to_string(),
            "record 1 has a null payload and 3 payload bytes: a null payload is empty"
        );
    }

    #[test]
    fn producer_times_are_within_year_0_to_9999() {
        let at = |time| proto::Record {
            producer_time_ms: Some(time),
            ..payload(1)
        };
        for time in [0, 1_700_000_000_000, MAX_PRODUCER_TIME_MS] {
            assert!(Append::try_from(request(vec![at(time)])).is_ok(), "{time}");
        }
        for time in [-1, i64::MIN, MAX_PRODUCER_TIME_MS + 1, i64::MAX] {
            assert_eq!(
                Append::try_from(request(vec![payload(1), at(time)])).unwrap_err(),
                RecordError::ProducerTimeOutOfRange { index: 1, time }
            );
        }
    }

    /// Empty headers cost no bytes against the headers limit; their count
    /// is bounded on its own.
    #[test]
    fn the_header_count_is_bounded() {
        let limits = Limits::DEFAULT;
        let mut many = payload(1);
        many.headers = vec![header("", ""); limits.max_header_count];
        assert!(Append::try_from(request(vec![many.clone()])).is_ok());
        many.headers.push(header("", ""));
        assert_eq!(
            Append::try_from(request(vec![many])).unwrap_err(),
            RecordError::TooManyHeaders {
                index: 0,
                count: limits.max_header_count + 1,
                max: limits.max_header_count,
            }
        );
    }

    #[test]
    fn rejects_decreasing_txids_within_an_append() {
        let with_txid = |txid| proto::Record {
            txid: Some(txid),
            ..payload(1)
        };
        let ok = request(vec![with_txid(3), payload(1), with_txid(3), with_txid(9)]);
        assert!(Append::try_from(ok).is_ok());
        let bad = request(vec![with_txid(5), payload(1), with_txid(4)]);
        assert_eq!(
            Append::try_from(bad).unwrap_err(),
            RecordError::TxidDecreasing {
                index: 2,
                txid: 4,
                previous: 5
            }
        );
    }

    #[test]
    fn rejects_invalid_log_names() {
        let mut req = request(vec![payload(1)]);
        req.log = "no-slash".into();
        let err = Append::try_from(req).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.to_string(),
            "invalid log name \"no-slash\": expected NS/LOG"
        );
    }
}

/// Where a read starts (docs/wire.md, "Read"), shared by the SDK and the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At this offset.
    Offset(u64),
    /// At the first record with a txid at or above this.
    Txid(i64),
    /// At the first record stored at or after this time (ms since the epoch).
    Timestamp(i64),
    /// At the first readable record.
    Earliest,
    /// At the next record appended after the read starts.
    Tail,
}

impl From<Start> for proto::read_request::Start {
    fn from(start: Start) -> Self {
        use proto::read_request::Start as P;
        match start {
            Start::Offset(offset) => P::Offset(offset),
            Start::Txid(txid) => P::Txid(txid),
            Start::Timestamp(ms) => P::TimestampMs(ms),
            Start::Earliest => P::Earliest(proto::Earliest {}),
            Start::Tail => P::Tail(proto::Tail {}),
        }
    }
}

impl From<Option<proto::read_request::Start>> for Start {
    /// No start means the earliest record.
    fn from(start: Option<proto::read_request::Start>) -> Self {
        use proto::read_request::Start as P;
        match start {
            Some(P::Offset(offset)) => Start::Offset(offset),
            Some(P::Txid(txid)) => Start::Txid(txid),
            Some(P::TimestampMs(ms)) => Start::Timestamp(ms),
            Some(P::Tail(_)) => Start::Tail,
            Some(P::Earliest(_)) | None => Start::Earliest,
        }
    }
}
