//! Validated records and append requests.
//!
//! Protobuf requests become domain types here, through `TryFrom` (default
//! limits) or `from_proto` (configured limits). Past this point no code sees
//! an unchecked name, an oversize record or an out-of-order txid inside one
//! request.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::{Classify, ErrorKind};
use crate::limits::Limits;
use crate::names::{LogName, NameError};
use crate::proto;

/// A record as a client submits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub payload: Bytes,
    pub key: Option<Bytes>,
    pub headers: BTreeMap<String, Bytes>,
    /// Application transaction id, non-decreasing within a log when given.
    pub txid: Option<i64>,
}

impl Record {
    /// A record with only a payload.
    pub fn new(payload: impl Into<Bytes>) -> Record {
        Record {
            payload: payload.into(),
            ..Record::default()
        }
    }

    /// Bytes of header names and values.
    pub fn headers_len(&self) -> usize {
        self.headers.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Bytes the record counts against the size limits.
    pub fn size(&self) -> usize {
        self.payload.len() + self.key.as_ref().map_or(0, Bytes::len) + self.headers_len()
    }
}

/// A stored record: a [`Record`] with the offset and timestamp the owner gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub record: Record,
}

impl From<StoredRecord> for proto::StoredRecord {
    fn from(stored: StoredRecord) -> Self {
        let Record {
            payload,
            key,
            headers,
            txid,
        } = stored.record;
        proto::StoredRecord {
            offset: stored.offset,
            timestamp_ms: stored.timestamp_ms,
            txid,
            key,
            headers: headers.into_iter().collect(),
            payload,
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
                key: stored.key,
                headers: stored.headers.into_iter().collect(),
                txid: stored.txid,
            },
        }
    }
}

impl From<Record> for proto::Record {
    fn from(record: Record) -> Self {
        proto::Record {
            payload: record.payload,
            key: record.key,
            headers: record.headers.into_iter().collect(),
            txid: record.txid,
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
    let headers = record.headers_len();
    if headers > limits.max_headers_bytes {
        return Err(RecordError::HeadersTooLarge {
            index,
            bytes: headers,
            max: limits.max_headers_bytes,
        });
    }
    if let Some((header, name)) = (record.headers.keys().enumerate())
        .find(|(_, name)| name.len() > crate::codec::MAX_HEADER_NAME_BYTES)
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
        let log: LogName = request.log.parse()?;
        let records: Vec<Record> = request
            .records
            .into_iter()
            .map(|r| Record {
                payload: r.payload,
                key: r.key,
                headers: r.headers.into_iter().collect(),
                txid: r.txid,
            })
            .collect();
        check_append(&records, limits)?;
        Ok(Append {
            log,
            records,
            expected_offset: request.expected_offset,
            expected_log_id: request.log_id,
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
        big_headers
            .headers
            .insert("h".into(), Bytes::from(vec![0u8; 64 * 1024]));
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
        long_name.headers.insert("h".repeat(65_536), Bytes::new());
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
        long_name.headers = [("h".repeat(65_535), Bytes::new())].into();
        let append = Append::try_from(request(vec![long_name])).unwrap();
        let entry = crate::codec::EntryRecord {
            timestamp_ms: 0,
            record: append.records[0].clone(),
        };
        let header = crate::codec::EntryHeader {
            log_id: 1,
            segment_id: 0,
            entry_id: 0,
            epoch: 1,
            first_offset: 0,
            lac: None,
            record_count: 1,
        };
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
