//! The Parquet tier reads both segment file layouts
//! (`dlog_storage::segment_file`): files offloaded before ordered headers
//! (format version 1: headers as a map, non-null payloads, no producer time
//! column) stay readable after the upgrade, next to files of the current
//! layout, in one read, positioned by offset and by time.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, MapBuilder, StringBuilder};
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
    let schema = Arc::new(Schema::new(vec![
        Field::new("offset", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("txid", DataType::Int64, true),
        Field::new("key", DataType::Binary, true),
        Field::new("headers", DataType::Map(Arc::new(entries), false), true),
        Field::new("payload", DataType::Binary, false),
    ]));
    let mut headers = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
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
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.offset))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.timestamp_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.txid))),
        Arc::new(keys.finish()),
        Arc::new(headers.finish()),
        Arc::new(payloads.finish()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    Bytes::from(bytes)
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
async fn files_of_both_layouts_are_read_in_one_read() {
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

    // Offsets 3..5: the current layout, with what version 1 could not hold.
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
        .offloaded_records(&log, fence, 3, new_records.clone())
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
    let new = new_records
        .into_iter()
        .zip(3..)
        .map(|(entry, offset)| StoredRecord {
            offset,
            timestamp_ms: entry.timestamp_ms,
            record: entry.record,
        });
    let expected: Vec<StoredRecord> = old.into_iter().chain(new).collect();
    assert_eq!(records, expected);
    assert!(
        !records[1].record.null_payload,
        "version 1 payloads are never null"
    );
    assert!(records[3].record.null_payload);

    // Positioned inside the old file, by offset and by time (its statistics
    // are found where the current layout has them).
    let from_offset = read(&fixture, &log, Start::Offset(2)).await;
    assert_eq!(from_offset.first().map(|r| r.offset), Some(2));
    let from_time = read(&fixture, &log, Start::Timestamp(1_500)).await;
    assert_eq!(from_time.first().map(|r| r.offset), Some(2));
    assert_eq!(from_time.len(), 3);
}
