//! Typed payload columns: a namespace's payload schema adds a typed,
//! nullable column per field with the field's id; a value that does not
//! fit is null, never a failed encode; dlog's reads ignore the columns;
//! and without a schema a file is byte for byte what it was before typed
//! columns existed.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use dlog_storage::segment_file::{
    FileInfo, SegmentFile, decode_file, encode_records, encode_segment, payload_columns,
};
use dlog_wire::codec::{Entry, EntryHeader, EntryRecord};
use dlog_wire::names::LogName;
use dlog_wire::payload_schema::PayloadSchema;
use dlog_wire::record::Record;
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// JSON payloads `{"user":"u<i%7>","amount":<i>}`, every other one keyed.
fn json_entry(count: u64) -> Entry {
    let records: Vec<EntryRecord> = (0..count)
        .map(|i| EntryRecord {
            timestamp_ms: 1_700_000_000_000 + i as i64,
            record: Record {
                key: i.is_multiple_of(2).then(|| Bytes::from(format!("k{i}"))),
                ..Record::new(format!("{{\"user\":\"u{}\",\"amount\":{i}}}", i % 7))
            },
        })
        .collect();
    entry(records)
}

fn entry(records: Vec<EntryRecord>) -> Entry {
    Entry {
        header: EntryHeader {
            log_id: 1,
            segment_id: 4,
            entry_id: 0,
            epoch: 1,
            first_offset: 0,
            lac: None,
            record_count: records.len() as u32,
        },
        records,
    }
}

fn encode(entry: &Entry, schema: Option<&PayloadSchema>) -> SegmentFile {
    let log: LogName = "ns/orders".parse().unwrap();
    let info = FileInfo {
        log: &log,
        segment_id: 4,
        start_offset: 0,
        end_offset: entry.records.len() as u64,
        payload_schema: schema,
    };
    encode_segment(std::slice::from_ref(entry), &info).unwrap()
}

fn schema(document: &str) -> PayloadSchema {
    PayloadSchema::declare(document, None).unwrap()
}

fn read_all(file: &SegmentFile) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file.bytes.clone())
        .unwrap()
        .build()
        .unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1, "one batch for a small file");
    batches.remove(0)
}

/// The CRC32C and size of the file `json_entry(300)` encoded without a
/// schema by the code before typed columns (commit f95e37d,
/// /work/notes/typed-golden.txt). A new parquet release may change them;
/// typed columns must not.
const GOLDEN: (u32, usize) = (0xec76_9891, 5107);

#[test]
fn without_a_schema_a_file_is_the_bytes_it_was_before() {
    let entry = json_entry(300);
    let file = encode(&entry, None);
    assert_eq!((file.crc32c, file.bytes.len()), GOLDEN);
    // A cleared schema (every field removed) types nothing either.
    let cleared = schema(r#"{"fields":[{"name":"user","type":"string"}]}"#).cleared();
    assert_eq!(encode(&entry, Some(&cleared)).bytes, file.bytes);
    assert!(payload_columns(&file.bytes).unwrap().fields().is_empty());
}

#[test]
fn a_schema_adds_typed_columns_with_their_ids_and_reads_ignore_them() {
    let entry = json_entry(300);
    let schema = schema(
        r#"{"fields":[{"name":"user","type":"string","required":true},{"name":"amount","type":"int64"}]}"#,
    );
    let file = encode(&entry, Some(&schema));
    // Deterministic: the same records and schema, the same bytes.
    assert_eq!(encode(&entry, Some(&schema)).bytes, file.bytes);
    assert_ne!(file.bytes, encode(&entry, None).bytes);

    let batch = read_all(&file);
    let file_schema = batch.schema();
    let names: Vec<&str> = (file_schema.fields().iter())
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "log_offset",
            "append_time",
            "txid",
            "key",
            "headers",
            "payload",
            "producer_time",
            "user",
            "amount"
        ]
    );
    let typed = payload_columns(&file.bytes).unwrap();
    let ids: Vec<(&str, &str, bool)> = (typed.fields().iter())
        .map(|f| {
            let id = f.metadata()[PARQUET_FIELD_ID_META_KEY].as_str();
            (f.name().as_str(), id, f.is_nullable())
        })
        .collect();
    assert_eq!(ids, [("user", "1000", true), ("amount", "1001", true)]);
    let users = batch.column_by_name("user").unwrap().as_string::<i32>();
    let amounts = (batch.column_by_name("amount").unwrap()).as_primitive::<Int64Type>();
    assert_eq!((users.value(10), amounts.value(10)), ("u3", 10));
    assert_eq!(users.null_count() + amounts.null_count(), 0);

    // dlog's reads: the records as without a schema.
    assert_eq!(
        decode_file(file.bytes.clone()).unwrap(),
        decode_file(encode(&entry, None).bytes).unwrap()
    );
}

#[test]
fn values_that_no_longer_fit_are_null_and_the_encode_succeeds() {
    // Appended before the schema said so: not JSON, null, an array, a
    // wrong type, a field missing, a timestamp that is no RFC 3339 time.
    let payloads: [Option<&str>; 8] = [
        Some(r#"{"user":"a","amount":1,"score":0.5,"ok":true,"at":"2024-05-01T12:00:00Z"}"#),
        Some("not json"),
        None,
        Some("[1,2]"),
        Some(r#"{"user":7,"amount":"x","score":"high","ok":1,"at":"2024-05-01"}"#),
        Some(r#"{"amount":2}"#),
        Some(r#"{"user":"b","amount":3.5,"score":4,"at":"2024-05-01T14:00:00+02:00"}"#),
        Some(r#"{"user":null,"amount":9223372036854775807}"#),
    ];
    let records = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| EntryRecord {
            timestamp_ms: 1_700_000_000_000 + i as i64,
            record: payload.map_or_else(Record::null, |p| Record::new(p.to_owned())),
        })
        .collect();
    let entry = entry(records);
    let schema = schema(
        r#"{"fields":[{"name":"user","type":"string","required":true},{"name":"amount","type":"int64"},
            {"name":"score","type":"double"},{"name":"ok","type":"boolean"},{"name":"at","type":"timestamp"}]}"#,
    );
    let file = encode(&entry, Some(&schema));
    let batch = read_all(&file);
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    let user = column("user");
    let users: Vec<Option<&str>> = user.as_string::<i32>().iter().collect();
    assert_eq!(
        users,
        [Some("a"), None, None, None, None, None, Some("b"), None]
    );
    let amounts: Vec<Option<i64>> = column("amount")
        .as_primitive::<Int64Type>()
        .iter()
        .collect();
    assert_eq!(
        amounts,
        [
            Some(1),
            None,
            None,
            None,
            None,
            Some(2),
            None,
            Some(i64::MAX)
        ]
    );
    let scores: Vec<Option<f64>> = column("score")
        .as_primitive::<Float64Type>()
        .iter()
        .collect();
    assert_eq!(
        scores,
        [Some(0.5), None, None, None, None, None, Some(4.0), None]
    );
    let oks: Vec<Option<bool>> = column("ok").as_boolean().iter().collect();
    assert_eq!(oks, [Some(true), None, None, None, None, None, None, None]);
    let at = column("at");
    assert_eq!(
        at.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let ats: Vec<Option<i64>> = at
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect();
    let noon = 1_714_564_800_000_000; // 2024-05-01T12:00:00Z
    assert_eq!(
        ats,
        [Some(noon), None, None, None, None, None, Some(noon), None]
    );
    // The raw payloads are as appended.
    let records = decode_file(file.bytes).unwrap();
    assert_eq!(records[1].record.payload, Bytes::from_static(b"not json"));
    assert!(records[2].record.null_payload);
}

#[test]
fn a_copy_cut_from_records_read_back_gets_the_columns_too() {
    let entry = json_entry(300);
    let schema = schema(r#"{"fields":[{"name":"user","type":"string"}]}"#);
    let records: Vec<_> = (decode_file(encode(&entry, None).bytes).unwrap())
        .into_iter()
        .filter(|r| r.offset >= 100)
        .collect();
    let log: LogName = "ns/orders".parse().unwrap();
    let info = FileInfo {
        log: &log,
        segment_id: 4,
        start_offset: 100,
        end_offset: 300,
        payload_schema: Some(&schema),
    };
    let copy = encode_records(&records, &info).unwrap();
    let batch = read_all(&copy);
    let users = batch.column_by_name("user").unwrap().as_string::<i32>();
    assert_eq!((batch.num_rows(), users.value(0)), (200, "u2"));
}
