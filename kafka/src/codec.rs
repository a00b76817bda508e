//! Kafka record batches to dlog records and back.
//!
//! Produce: each batch's framing and CRC are checked here (a wrong CRC is
//! `CORRUPT_MESSAGE`, as in Kafka), compressed batches are inflated with a
//! bound (a batch that inflates past the request limit is refused, so no
//! hostile batch can make the node allocate without limit), and the records
//! are decoded by the kafka-protocol crate.
//!
//! What a Kafka record keeps (docs/kafka.md):
//! - key (null stays null), value (a null value stays null: the record's
//!   null payload), headers in their order, a repeated name as many times
//!   as it came (names must be UTF-8; a null header value is stored empty);
//! - the producer's timestamp, when its batch is CreateTime, as the
//!   record's producer time, beside the time the owner appended it.
//!
//! Fetch: every batch is marked CreateTime. A record's timestamp is its
//! producer time when it has one, else the time the owner appended it (a
//! record appended through gRPC without a producer time, or produced in a
//! LogAppendTime batch). So a consumer sees what the producer gave, and a
//! time for every record; ListOffsets by time positions by append time.

use std::io::Read;

use bytes::{Buf, Bytes, BytesMut};
use distributedlog::{Headers, Record, StoredRecord};
use dlog_wire::record::MAX_PRODUCER_TIME_MS;
use kafka_protocol::ResponseError;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_TIMESTAMP,
    Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use dlog_wire::limits::Limits;

use crate::errors::Refusal;

/// Bytes of a batch before its CRC-covered part: base offset (8), length
/// (4), partition leader epoch (4), magic (1), CRC (4).
const BATCH_HEAD: usize = 21;
/// Offset of the length field, and the bytes it does not count.
const LENGTH_AT: usize = 8;
const UNCOUNTED: usize = 12;
/// Offset of the attributes within the batch.
const ATTRIBUTES_AT: usize = 21;
const TRANSACTIONAL: i16 = 1 << 4;
const CONTROL: i16 = 1 << 5;
/// Offset of the producer id within the batch.
const PRODUCER_ID_AT: usize = 43;
/// Offsets of the producer epoch and the base sequence within the batch.
const EPOCH_AT: usize = 51;
const SEQUENCE_AT: usize = 53;
/// Offset of the record count within the batch.
const COUNT_AT: usize = 57;

/// The header that carries an idempotent batch's producer on the batch's
/// first record: `PID:EPOCH:FIRST_SEQUENCE:COUNT:LOG_ID` (crate::idempotence).
/// Kafka consumers never see it; a produced record may not carry it.
pub(crate) const PRODUCER_HEADER: &str = "dlog.kafka.producer";

/// Who wrote an idempotent batch, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Producer {
    pub id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
}

/// The records of one partition's `records` field of a Produce request.
#[derive(Debug)]
pub(crate) struct Produced {
    pub records: Vec<Record>,
    /// The producer, when the batch is idempotent.
    pub producer: Option<Producer>,
}

/// The records of one partition's `records` field of a Produce request,
/// in order, within `limits`: the batch headers' record counts are checked
/// before anything is decoded, and the batches together inflate to at most
/// twice the append limit (records carry framing), so that no small
/// compressed request makes the node build millions of records. An
/// idempotent batch must come alone (as Kafka requires from Produce v3 on).
pub(crate) fn produced_records(mut records: Bytes, limits: &Limits) -> Result<Produced, Refusal> {
    let mut out = Vec::new();
    let mut producer = None;
    let mut batches = 0;
    let mut counted = 0usize;
    let mut inflate_budget = limits.max_append_bytes.saturating_mul(2);
    if records.is_empty() {
        return Err(Refusal::new(
            ResponseError::InvalidRecord,
            "no record batch",
        ));
    }
    while records.has_remaining() {
        let batch = next_batch(&mut records)?;
        let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
        if attributes & (TRANSACTIONAL | CONTROL) != 0 {
            return Err(Refusal::new(
                ResponseError::InvalidRecord,
                "transactional batches are not supported",
            ));
        }
        let count = i32::from_be_bytes(
            batch[COUNT_AT..COUNT_AT + 4]
                .try_into()
                .expect("four bytes"),
        );
        counted = counted.saturating_add(usize::try_from(count).unwrap_or(usize::MAX));
        if counted > limits.max_append_records {
            return Err(Refusal::new(
                ResponseError::RecordListTooLarge,
                format!(
                    "more than {} records for one partition in one request",
                    limits.max_append_records
                ),
            ));
        }
        let producer_id = i64::from_be_bytes(
            batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8]
                .try_into()
                .expect("eight bytes"),
        );
        batches += 1;
        if producer_id != NO_PRODUCER_ID {
            let epoch = i16::from_be_bytes([batch[EPOCH_AT], batch[EPOCH_AT + 1]]);
            let first_sequence = i32::from_be_bytes(
                batch[SEQUENCE_AT..SEQUENCE_AT + 4]
                    .try_into()
                    .expect("four bytes"),
            );
            if producer_id < 0 || epoch < 0 || first_sequence < 0 {
                return Err(Refusal::new(
                    ResponseError::InvalidRecord,
                    format!("producer {producer_id} epoch {epoch} sequence {first_sequence}"),
                ));
            }
            producer = Some(Producer {
                id: producer_id,
                epoch,
                first_sequence,
            });
        }
        if producer.is_some() && batches > 1 {
            return Err(Refusal::new(
                ResponseError::InvalidRecord,
                "an idempotent batch must be the only batch of its partition in a request",
            ));
        }
        let mut batch = batch;
        let budget = inflate_budget;
        let inflated = std::cell::Cell::new(0usize);
        let decoded = RecordBatchDecoder::decode_with_custom_compression(
            &mut batch,
            Some(|data: &mut Bytes, compression| {
                let out = inflate(data, compression, budget)?;
                inflated.set(out.len());
                Ok(out)
            }),
        )
        .map_err(|e| match e.downcast_ref::<Refusal>() {
            Some(refusal) => refusal.clone(),
            None => Refusal::new(
                ResponseError::CorruptMessage,
                format!("malformed record batch: {e}"),
            ),
        })?;
        inflate_budget = inflate_budget.saturating_sub(inflated.get());
        for record in decoded.records {
            out.push(to_dlog(record)?);
        }
    }
    Ok(Produced {
        records: out,
        producer,
    })
}

/// Splits the next batch off `records`, checking its framing, magic and CRC.
fn next_batch(records: &mut Bytes) -> Result<Bytes, Refusal> {
    let corrupt = |why: String| Refusal::new(ResponseError::CorruptMessage, why);
    if records.len() < BATCH_HEAD {
        return Err(corrupt(format!(
            "a record batch of {} bytes is shorter than its header",
            records.len()
        )));
    }
    let length = i32::from_be_bytes(
        records[LENGTH_AT..LENGTH_AT + 4]
            .try_into()
            .expect("four bytes"),
    );
    let total = usize::try_from(length)
        .ok()
        .and_then(|n| n.checked_add(UNCOUNTED))
        .filter(|total| (ATTRIBUTES_AT + 40..=records.len()).contains(total))
        .ok_or_else(|| {
            corrupt(format!(
                "a record batch declares {length} bytes; {} are left",
                records.len() - UNCOUNTED
            ))
        })?;
    let magic = records[16] as i8;
    if magic != 2 {
        return Err(Refusal::new(
            ResponseError::UnsupportedForMessageFormat,
            format!("record batch format v{magic}: only v2 is supported"),
        ));
    }
    let batch = records.split_to(total);
    let stored_crc = u32::from_be_bytes(batch[17..21].try_into().expect("four bytes"));
    let crc = crc32c::crc32c(&batch[BATCH_HEAD..]);
    if crc != stored_crc {
        return Err(corrupt(format!(
            "record batch CRC {stored_crc:#010x} does not match its contents ({crc:#010x})"
        )));
    }
    Ok(batch)
}

/// Inflates a batch's records with at most `max` bytes out.
fn inflate(data: &mut Bytes, compression: Compression, max: usize) -> anyhow::Result<Bytes> {
    let input = std::mem::take(data);
    let mut out = Vec::new();
    let limit = max as u64 + 1;
    match compression {
        Compression::None => return Ok(input),
        Compression::Gzip => {
            flate2::read::GzDecoder::new(input.reader())
                .take(limit)
                .read_to_end(&mut out)?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(input.reader())?
                .take(limit)
                .read_to_end(&mut out)?;
        }
        other => {
            return Err(Refusal::new(
                ResponseError::UnsupportedCompressionType,
                format!("{other:?} compression is not supported (use none, gzip or zstd)"),
            )
            .into());
        }
    }
    if out.len() > max {
        return Err(Refusal::new(
            ResponseError::RecordListTooLarge,
            format!("a record batch inflates to more than {max} bytes"),
        )
        .into());
    }
    Ok(Bytes::from(out))
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Refusal {}

fn to_dlog(record: KRecord) -> Result<Record, Refusal> {
    let mut headers = Headers::new();
    for (name, value) in record.headers {
        if name.as_str() == PRODUCER_HEADER {
            return Err(Refusal::new(
                ResponseError::InvalidRecord,
                format!("the header name {PRODUCER_HEADER} is reserved"),
            ));
        }
        headers.push(name.as_str(), value.unwrap_or_default());
    }
    // The producer's own time, when the batch says the times are that
    // (-1 is Kafka's "no timestamp").
    let producer_time_ms = match (record.timestamp_type, record.timestamp) {
        (TimestampType::LogAppend, _) | (_, NO_TIMESTAMP) => None,
        (TimestampType::Creation, time) if (0..=MAX_PRODUCER_TIME_MS).contains(&time) => Some(time),
        (TimestampType::Creation, time) => {
            return Err(Refusal::new(
                ResponseError::InvalidTimestamp,
                format!(
                    "record timestamp {time} is outside 0..={MAX_PRODUCER_TIME_MS} \
                     (ms since the Unix epoch)"
                ),
            ));
        }
    };
    Ok(Record {
        null_payload: record.value.is_none(),
        payload: record.value.unwrap_or_default(),
        key: record.key,
        headers,
        txid: None,
        producer_time_ms,
    })
}

/// Encodes stored records as v2 record batches (uncompressed), marked
/// CreateTime. Offsets are the dlog offsets; timestamps the producer times,
/// or the append times of records without one.
pub(crate) fn fetched_batches(records: &[StoredRecord]) -> anyhow::Result<Bytes> {
    let records: Vec<KRecord> = records.iter().map(to_kafka).collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    // Uncompressed records into a growable buffer fail only past 2 GiB or
    // for offsets 2^31 apart, which one fetch (bounded) never holds.
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)?;
    Ok(buf.freeze())
}

fn to_kafka(stored: &StoredRecord) -> KRecord {
    let offset = stored.offset as i64;
    let headers = (stored.record.headers.iter())
        .filter(|(name, _)| name != PRODUCER_HEADER)
        .map(|(name, value)| (StrBytes::from_string(name.clone()), Some(value.clone())))
        .collect();
    KRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        // The encoder marks every batch CreateTime (it writes no timestamp
        // type bit); say the same here.
        timestamp_type: TimestampType::Creation,
        offset,
        // The encoder starts a new batch wherever `offset - sequence`
        // changes: a sequence that follows the offset keeps one batch.
        sequence: offset as i32,
        timestamp: stored
            .record
            .producer_time_ms
            .unwrap_or(stored.timestamp_ms),
        key: stored.record.key.clone(),
        value: stored.record.nullable_payload().cloned(),
        headers,
    }
}

/// Bytes a stored record takes in a fetch response, roughly (for the fetch
/// size limits).
pub(crate) fn fetched_size(stored: &StoredRecord) -> usize {
    20 + stored.record.size() + 2 * stored.record.headers.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> KRecord {
        let headers = vec![(
            StrBytes::from_static_str("h"),
            Some(Bytes::from(format!("v{i}"))),
        )];
        KRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value {i}"))),
            headers,
        }
    }

    fn encode(records: &[KRecord], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
        buf.freeze()
    }

    fn batch(compression: Compression) -> Bytes {
        let records: Vec<KRecord> = (0..5).map(record).collect();
        encode(&records, compression)
    }

    #[test]
    fn produced_batches_become_records_with_key_and_headers() {
        let produced = produced_records(batch(Compression::None), &Limits::DEFAULT).unwrap();
        assert_eq!(produced.producer, None);
        let records = produced.records;
        assert_eq!(records.len(), 5);
        assert_eq!(records[2].payload, "value 2");
        assert_eq!(records[2].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(records[3].key, None);
        assert_eq!(records[3].headers["h"], "v3");
    }

    #[test]
    fn a_wrong_crc_is_a_corrupt_message() {
        let mut bytes = batch(Compression::None).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        let refusal = produced_records(Bytes::from(bytes), &Limits::DEFAULT).unwrap_err();
        assert_eq!(refusal.code, ResponseError::CorruptMessage, "{refusal}");
        assert!(refusal.message.contains("CRC"), "{refusal}");
    }

    #[test]
    fn truncated_and_oversized_lengths_are_refused() {
        let bytes = batch(Compression::None);
        let refusal =
            produced_records(bytes.slice(..bytes.len() - 3), &Limits::DEFAULT).unwrap_err();
        assert_eq!(refusal.code, ResponseError::CorruptMessage, "{refusal}");
        let refusal = produced_records(bytes.slice(..10), &Limits::DEFAULT).unwrap_err();
        assert_eq!(refusal.code, ResponseError::CorruptMessage, "{refusal}");
    }

    #[test]
    fn a_batch_that_inflates_past_the_limit_is_refused() {
        // The crate's own gzip encoder is off: compress by hand.
        let plain = batch(Compression::None);
        let few = Limits {
            max_append_records: 4,
            ..Limits::DEFAULT
        };
        let refusal = produced_records(plain, &few).unwrap_err();
        assert_eq!(
            refusal.code,
            ResponseError::RecordListTooLarge,
            "counted before decoding"
        );
        let mut body = Vec::new();
        let mut encoder = flate2::write::GzEncoder::new(&mut body, flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, &vec![0u8; 1 << 20]).unwrap();
        encoder.finish().unwrap();
        let mut data = Bytes::from(body);
        let err = inflate(&mut data, Compression::Gzip, 1000).unwrap_err();
        let refusal = err.downcast_ref::<Refusal>().unwrap();
        assert_eq!(refusal.code, ResponseError::RecordListTooLarge);
    }

    #[test]
    fn snappy_and_lz4_are_unsupported_compression() {
        let mut data = Bytes::from_static(b"whatever");
        let err = inflate(&mut data, Compression::Lz4, 1000).unwrap_err();
        let refusal = err.downcast_ref::<Refusal>().unwrap();
        assert_eq!(refusal.code, ResponseError::UnsupportedCompressionType);
    }

    #[test]
    fn fetched_records_encode_as_one_batch_that_decodes_back() {
        let stored: Vec<StoredRecord> = (0..4)
            .map(|i| StoredRecord {
                offset: 100 + i,
                timestamp_ms: 1_700_000_000_000,
                record: Record {
                    key: Some(Bytes::from_static(b"k")),
                    headers: [("a", "1")].into(),
                    ..Record::new(format!("p{i}"))
                },
            })
            .collect();
        let mut bytes = fetched_batches(&stored).unwrap();
        let infos = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
        assert_eq!(infos.len(), 1, "one batch");
        assert_eq!(infos[0].record_count, 4);
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(set.records[3].offset, 103);
        assert_eq!(set.records[3].value.as_deref(), Some(&b"p3"[..]));
        assert_eq!(
            set.records[0].headers,
            [(
                StrBytes::from_static_str("a"),
                Some(Bytes::from_static(b"1"))
            )]
        );
    }

    /// What the record model keeps end to end through the listener:
    /// headers in order with a repeated name, a null value, the producer's
    /// timestamp; a record without a producer time is fetched with its
    /// append time, in the same CreateTime batch.
    #[test]
    fn repeated_headers_null_values_and_producer_times_survive_produce_and_fetch() {
        let header = |name: &'static str, value: Option<&'static [u8]>| {
            (
                StrBytes::from_static_str(name),
                value.map(Bytes::from_static),
            )
        };
        let mut tombstone = record(0);
        tombstone.value = None;
        tombstone.timestamp = 1_600_000_000_123;
        tombstone.headers = vec![
            header("a", Some(b"1")),
            header("b", None),
            header("a", Some(b"2")),
        ];
        let produced = produced_records(
            encode(&[tombstone, record(1)], Compression::None),
            &Limits::DEFAULT,
        )
        .unwrap();
        let stored = &produced.records[0];
        assert!(stored.null_payload);
        assert_eq!(stored.nullable_payload(), None);
        let pairs: Vec<(&str, &[u8])> = (stored.headers.iter())
            .map(|(name, value)| (name.as_str(), &value[..]))
            .collect();
        assert_eq!(pairs, [("a", &b"1"[..]), ("b", b""), ("a", b"2")]);
        assert_eq!(stored.producer_time_ms, Some(1_600_000_000_123));
        assert_eq!(
            produced.records[1].producer_time_ms,
            Some(1_700_000_000_001)
        );
        assert!(!produced.records[1].null_payload);

        // Back out through a fetch; the second record as if appended
        // through gRPC, without a producer time.
        let append_time = 1_700_000_000_999;
        let mut without = produced.records[1].clone();
        without.producer_time_ms = None;
        let stored = [
            StoredRecord {
                offset: 10,
                timestamp_ms: append_time,
                record: produced.records[0].clone(),
            },
            StoredRecord {
                offset: 11,
                timestamp_ms: append_time,
                record: without,
            },
        ];
        let mut bytes = fetched_batches(&stored).unwrap();
        let infos = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].timestamp_type, TimestampType::Creation);
        let fetched = RecordBatchDecoder::decode(&mut bytes).unwrap().records;
        assert_eq!(fetched[0].value, None, "a tombstone stays a tombstone");
        assert_eq!(
            fetched[0].headers,
            [
                header("a", Some(b"1")),
                header("b", Some(b"")),
                header("a", Some(b"2"))
            ]
        );
        assert_eq!(fetched[0].timestamp, 1_600_000_000_123);
        assert_eq!(fetched[1].timestamp, append_time);
        assert_eq!(fetched[1].value.as_deref(), Some(&b"value 1"[..]));
    }

    #[test]
    fn producer_timestamps_out_of_range_are_invalid_and_log_append_times_are_not_kept() {
        let mut negative = record(0);
        negative.timestamp = -5;
        let refusal =
            produced_records(encode(&[negative], Compression::None), &Limits::DEFAULT).unwrap_err();
        assert_eq!(refusal.code, ResponseError::InvalidTimestamp, "{refusal}");

        let mut none = record(0);
        none.timestamp = NO_TIMESTAMP;
        let produced =
            produced_records(encode(&[none], Compression::None), &Limits::DEFAULT).unwrap();
        assert_eq!(produced.records[0].producer_time_ms, None);

        // A LogAppendTime batch: the attribute bit set by hand (the encoder
        // writes none), under a fresh CRC.
        let mut bytes = encode(&[record(0)], Compression::None).to_vec();
        bytes[ATTRIBUTES_AT + 1] |= 1 << 3;
        let crc = crc32c::crc32c(&bytes[BATCH_HEAD..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let produced = produced_records(Bytes::from(bytes), &Limits::DEFAULT).unwrap();
        assert!(
            produced
                .records
                .iter()
                .all(|r| r.producer_time_ms.is_none())
        );
    }
}
