//! The Parquet tier reads every segment file layout
//! (`dlog_storage::segment_file`): files offloaded before ordered headers
//! (format version 1: headers as a map, non-null payloads, no producer time
//! column) and before the lakehouse columns (version 2: unsigned `offset`,
//! ms `timestamp`, `producer_time_ms`) stay readable after the upgrade,
//! next to files of the current layout, in one read, positioned by offset
//! and by time.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, MapBuilder, MapFieldNames, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use dlog_meta::manifest::SealInfo;
use dlog_wire::codec::EntryRecord;
use dlog_wire::names::LogName;
use dlog_wire::record::{Headers, Record, StoredRecord};
use parquet::arrow::ArrowWriter;

use crate::engine::{ReadSpec, ReaderOptions, Start};
use crate::testing::Fixture;

/// One row of a version 1 file.
struct OldRow {
    offset: u64,
    timestamp_ms: i64,
    txid: Option<i64>,
    key: Option<&'static [u8]>,
    headers: Vec<(&'static str, &'static [u8])>,
    payload: &'static [u8],
}

/// A segment file as the writer before format version 2 made it, built
/// here with arrow alone (not with the project's writer).
fn version_1_file(rows: &[OldRow]) -> Bytes {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Binary, true),
            ]
            .into(),
        ),
        false,
    );
    let mut fields = leading_fields_before_version_3();
    fields.extend([
        Field::new("headers", DataType::Map(Arc::new(entries), false), true),
        Field::new("payload", DataType::Binary, false),
    ]);
    let names = MapFieldNames {
        entry: "entries".to_owned(),
        key: "key".to_owned(),
        value: "value".to_owned(),
    };
    let mut headers = MapBuilder::new(Some(names), StringBuilder::new(), BinaryBuilder::new());
    let mut keys = BinaryBuilder::new();
    let mut payloads = BinaryBuilder::new();
    for row in rows {
        for (name, value) in &row.headers {
            headers.keys().append_value(name);
            headers.values().append_value(value);
        }
        headers.append(!row.headers.is_empty()).unwrap();
        keys.append_option(row.key);
        payloads.append_value(row.payload);
    }
    let mut columns = offsets_and_times(rows.iter().map(|r| (r.offset, r.timestamp_ms)));
    columns.extend([
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.txid))) as ArrayRef,
        Arc::new(keys.finish()),
        Arc::new(headers.finish()),
        Arc::new(payloads.finish()),
    ]);
    parquet_file(fields, columns)
}

/// `offset UInt64, timestamp Timestamp(ms, UTC), txid Int64?, key
/// Binary?`: the first columns of format versions 1 and 2.
fn leading_fields_before_version_3() -> Vec<Field> {
    vec![
        Field::new("offset", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("txid", DataType::Int64, true),
        Field::new("key", DataType::Binary, true),
    ]
}

/// The `offset` and `timestamp` columns of versions 1 and 2.
fn offsets_and_times(rows: impl Iterator<Item = (u64, i64)> + Clone) -> Vec<ArrayRef> {
    vec![
        Arc::new(UInt64Array::from_iter_values(rows.clone().map(|r| r.0))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.map(|r| r.1)).with_timezone("UTC"),
        ),
    ]
}

/// One row group of `columns` under `fields`, as a Parquet file.
fn parquet_file(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Bytes {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    Bytes::from(bytes)
}

/// One row of a version 2 file: offset, append time (ms), producer time
/// (ms), payload (None: null).
type V2Row = (u64, i64, Option<i64>, Option<&'static [u8]>);

/// A segment file as format version 2 wrote it (ordered headers, ms
/// times, unsigned offsets), built with arrow alone. Every row has the
/// headers `h: v`.
fn version_2_file(rows: &[V2Row]) -> Bytes {
    let header_fields: arrow_schema::Fields = vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Binary, false),
    ]
    .into();
    let item = Arc::new(Field::new(
        "element",
        DataType::Struct(header_fields.clone()),
        false,
    ));
    let mut fields = leading_fields_before_version_3();
    fields.extend([
        Field::new("headers", DataType::List(item.clone()), true),
        Field::new("payload", DataType::Binary, true),
        Field::new("producer_time_ms", DataType::Int64, true),
    ]);
    let count = rows.len();
    let names: ArrayRef = Arc::new(arrow_array::StringArray::from(vec!["h"; count]));
    let values: ArrayRef = Arc::new(arrow_array::BinaryArray::from(vec![&b"v"[..]; count]));
    let entries = arrow_array::StructArray::new(header_fields, vec![names, values], None);
    let mut offsets = arrow_array::builder::OffsetBufferBuilder::<i32>::new(count);
    for _ in 0..count {
        offsets.push_length(1);
    }
    let offsets = offsets.finish();
    let headers = arrow_array::ListArray::new(item, offsets, Arc::new(entries), None);
    let mut columns = offsets_and_times(rows.iter().map(|r| (r.0, r.1)));
    columns.extend([
        Arc::new(Int64Array::from(vec![None; count])) as ArrayRef,
        Arc::new(arrow_array::BinaryArray::from(vec![None::<&[u8]>; count])),
        Arc::new(headers),
        Arc::new(arrow_array::BinaryArray::from_iter(
            rows.iter().map(|r| r.3),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
    ]);
    parquet_file(fields, columns)
}

async fn read(fixture: &Fixture, log: &LogName, start: Start) -> Vec<StoredRecord> {
    let engine = fixture.engine(ReaderOptions::default());
    let mut items = engine.read(ReadSpec {
        log: log.clone(),
        start,
        limit: None,
        follow: false,
        log_id: None,
        client: None,
    });
    let mut records = Vec::new();
    while let Some(item) = items.recv().await {
        match item.unwrap() {
            crate::ReadItem::Records(batch) => records.extend(batch),
            crate::ReadItem::EndOfStream => {}
        }
    }
    records
}

#[tokio::test]
async fn files_of_every_layout_are_read_in_one_read() {
    let fixture = Fixture::new().await;
    let log: LogName = "old/files".parse().unwrap();
    let fence = fixture.create_log(&log).await;

    // Offsets 0..3: a version 1 file.
    let old_rows = [
        OldRow {
            offset: 0,
            timestamp_ms: 1_000,
            txid: Some(7),
            key: Some(b"k0"),
            headers: vec![("a", &b"1"[..]), ("b", &b"\x00\xff"[..])],
            payload: b"first",
        },
        OldRow {
            offset: 1,
            timestamp_ms: 1_000,
            txid: None,
            key: None,
            headers: vec![],
            payload: b"",
        },
        OldRow {
            offset: 2,
            timestamp_ms: 2_000,
            txid: None,
            key: None,
            headers: vec![("trace", &b"t2"[..])],
            payload: b"third",
        },
    ];
    let segment = fixture.open_segment(&log, fence, 0, &[]).await;
    let seal = SealInfo {
        end_offset: 3,
        last_entry_id: Some(0),
        bytes: 20,
        min_timestamp_ms: Some(1_000),
        max_timestamp_ms: Some(2_000),
        min_txid: Some(7),
        max_txid: Some(7),
    };
    fixture
        .offloaded_file(&log, fence, &segment, seal, version_1_file(&old_rows))
        .await;

    // Offsets 3..5: a version 2 file, one null payload, one producer time.
    let segment = fixture.open_segment(&log, fence, 3, &[]).await;
    let seal = SealInfo {
        end_offset: 5,
        last_entry_id: Some(0),
        bytes: 20,
        min_timestamp_ms: Some(2_500),
        max_timestamp_ms: Some(2_600),
        min_txid: None,
        max_txid: None,
    };
    let v2_rows: [V2Row; 2] = [
        (3, 2_500, Some(123), Some(&b"p3"[..])),
        (4, 2_600, None, None),
    ];
    fixture
        .offloaded_file(&log, fence, &segment, seal, version_2_file(&v2_rows))
        .await;

    // Offsets 5..7: the current layout, with what version 1 could not hold.
    let mut repeated = Headers::new();
    repeated.push("z", "1");
    repeated.push("a", "2");
    repeated.push("z", "3");
    let new_records = vec![
        EntryRecord {
            timestamp_ms: 3_000,
            record: Record {
                headers: repeated,
                producer_time_ms: Some(500),
                ..Record::null()
            },
        },
        EntryRecord {
            timestamp_ms: 4_000,
            record: Record::new("last"),
        },
    ];
    fixture
        .offloaded_records(&log, fence, 5, new_records.clone())
        .await;

    let records = read(&fixture, &log, Start::Earliest).await;
    let old: Vec<StoredRecord> = old_rows
        .iter()
        .map(|row| StoredRecord {
            offset: row.offset,
            timestamp_ms: row.timestamp_ms,
            record: Record {
                payload: Bytes::from_static(row.payload),
                key: row.key.map(Bytes::from_static),
                headers: row.headers.iter().copied().collect(),
                txid: row.txid,
                ..Record::default()
            },
        })
        .collect();
    let v2 = v2_rows
        .iter()
        .map(|&(offset, timestamp_ms, producer, payload)| {
            let mut record = match payload {
                Some(bytes) => Record::new(Bytes::from_static(bytes)),
                None => Record::null(),
            };
            record.headers.push("h", "v");
            record.producer_time_ms = producer;
            StoredRecord {
                offset,
                timestamp_ms,
                record,
            }
        });
    let new = new_records
        .into_iter()
        .zip(5..)
        .map(|(entry, offset)| StoredRecord {
            offset,
            timestamp_ms: entry.timestamp_ms,
            record: entry.record,
        });
    let expected: Vec<StoredRecord> = old.into_iter().chain(v2).chain(new).collect();
    assert_eq!(records, expected);
    assert!(
        !records[1].record.null_payload,
        "version 1 payloads are never null"
    );
    assert!(records[4].record.null_payload);
    assert!(records[5].record.null_payload);

    // Positioned inside the old file, by offset and by time (its statistics
    // are found where the current layout has them).
    let from_offset = read(&fixture, &log, Start::Offset(2)).await;
    assert_eq!(from_offset.first().map(|r| r.offset), Some(2));
    let from_time = read(&fixture, &log, Start::Timestamp(1_500)).await;
    assert_eq!(from_time.first().map(|r| r.offset), Some(2));
    assert_eq!(from_time.len(), 5);
    // And inside the version 2 and current files (ms and µs times).
    let from_time = read(&fixture, &log, Start::Timestamp(2_550)).await;
    assert_eq!(from_time.first().map(|r| r.offset), Some(4));
    let from_time = read(&fixture, &log, Start::Timestamp(3_500)).await;
    assert_eq!(from_time.first().map(|r| r.offset), Some(6));
}
