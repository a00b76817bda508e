//! Segment files read back with the parquet crate (through
//! [`decode_file`]) give exactly the records
//! encoded, with the metadata and page indexes readers rely on, and the
//! same records always give the same bytes.

use std::collections::BTreeMap;

use bytes::Bytes;
use dlog_storage::segment_file::{
    FileInfo, ROW_GROUP_ROWS, decode_file, encode_segment, log_folder, object_key,
};
use dlog_wire::codec::{Entry, EntryHeader, EntryRecord};
use dlog_wire::names::LogName;
use dlog_wire::record::{Headers, Record};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Varied by offset: headers out of name order with a repeated name, null
/// and empty payloads, producer times or none.
fn record(offset: u64) -> EntryRecord {
    let mut headers = Headers::new();
    if offset.is_multiple_of(3) {
        headers.push("trace", format!("t{offset}"));
        headers.push("z", Bytes::from_static(b"\x00\xff"));
        headers.push("trace", "again");
    }
    let payload = match offset % 11 {
        0 => Record::null(),
        1 => Record::new(""),
        _ => Record::new(format!("payload {offset}")),
    };
    EntryRecord {
        timestamp_ms: 1_700_000_000_000 + offset as i64,
        record: Record {
            key: offset
                .is_multiple_of(2)
                .then(|| Bytes::from(format!("k{offset}"))),
            headers,
            txid: (!offset.is_multiple_of(5)).then_some(offset as i64 * 10),
            producer_time_ms: offset
                .is_multiple_of(7)
                .then_some(1_600_000_000_000 - offset as i64),
            ..payload
        },
    }
}

fn entries(start: u64, count: u64, per_entry: u64) -> Vec<Entry> {
    (0..count.div_ceil(per_entry))
        .map(|e| {
            let first = start + e * per_entry;
            let n = per_entry.min(start + count - first);
            Entry {
                header: EntryHeader {
                    log_id: 1,
                    segment_id: 4,
                    entry_id: e,
                    epoch: 1,
                    first_offset: first,
                    lac: None,
                    record_count: n as u32,
                },
                records: (first..first + n).map(record).collect(),
            }
        })
        .collect()
}

#[test]
fn records_round_trip_exactly() {
    let log: LogName = "ns/orders".parse().unwrap();
    let (start, count) = (1000, 150_000);
    let info = FileInfo {
        log: &log,
        segment_id: 4,
        start_offset: start,
        end_offset: start + count,
        payload_schema: None,
    };
    let file = encode_segment(&entries(start, count, 100), &info).unwrap();
    assert_eq!(file.rows, count);
    assert_eq!(file.crc32c, crc32c::crc32c(&file.bytes));

    let records = decode_file(file.bytes.clone()).unwrap();
    assert_eq!(records.len() as u64, count);
    for (i, got) in records.iter().enumerate() {
        let offset = start + i as u64;
        let expected = record(offset);
        assert_eq!(got.offset, offset);
        assert_eq!(got.timestamp_ms, expected.timestamp_ms);
        assert_eq!(got.record, expected.record, "record at offset {offset}");
    }
    let metadata = ParquetRecordBatchReaderBuilder::try_new(file.bytes)
        .unwrap()
        .metadata()
        .as_ref()
        .clone();

    // Metadata names the log, the segment and the offset range.
    let kv: BTreeMap<String, String> = metadata
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(kv["dlog.log"], "ns/orders");
    assert_eq!(kv["dlog.segment_ids"], "4");
    assert_eq!(kv["dlog.start_offset"], "1000");
    assert_eq!(kv["dlog.end_offset"], "151000");
    assert_eq!(kv["dlog.format_version"], "3");

    // Lakehouse columns: a signed offset, µs UTC times, and the Iceberg
    // field id of every column and nested field.
    let schema = metadata.file_metadata().schema_descr();
    let arrow = parquet::arrow::parquet_to_arrow_schema(schema, None).unwrap();
    let micros_utc =
        arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(
        arrow.field_with_name("log_offset").unwrap().data_type(),
        &arrow_schema::DataType::Int64
    );
    assert_eq!(
        arrow.field_with_name("append_time").unwrap().data_type(),
        &micros_utc
    );
    assert_eq!(
        arrow.field_with_name("producer_time").unwrap().data_type(),
        &micros_utc
    );
    let mut ids = BTreeMap::new();
    fn collect(t: &parquet::schema::types::Type, path: &str, ids: &mut BTreeMap<String, i32>) {
        let info = t.get_basic_info();
        // The Parquet list layout's `list` group is not a field of its own.
        let path = match (path, info.name()) {
            (_, "list") => path.to_owned(),
            ("", name) => name.to_owned(),
            (parent, name) => format!("{parent}.{name}"),
        };
        if info.has_id() {
            ids.insert(path.clone(), info.id());
        }
        if t.is_group() {
            for field in t.get_fields() {
                collect(field, &path, ids);
            }
        }
    }
    for field in schema.root_schema().get_fields() {
        collect(field, "", &mut ids);
    }
    let expected: BTreeMap<String, i32> = dlog_storage::segment_file::FIELD_IDS
        .iter()
        .map(|(path, id)| (path.to_string(), *id))
        .collect();
    assert_eq!(ids, expected, "field ids in the file");
    let first = record(start).timestamp_ms;
    let last = record(start + count - 1).timestamp_ms;
    assert_eq!(file.time_range_ms, Some((first, last)));

    // Row groups of 64 Ki rows, each with offset statistics and page indexes.
    assert_eq!(
        metadata.num_row_groups(),
        (count as usize).div_ceil(ROW_GROUP_ROWS)
    );
    let offset_column = 0;
    let first_group = metadata.row_group(0).column(offset_column);
    let stats = first_group.statistics().expect("offset statistics");
    assert_eq!(stats.min_bytes_opt().unwrap(), &start.to_le_bytes());
    for column in [0, 1, 2] {
        let chunk = metadata.row_group(0).column(column);
        assert!(
            chunk.column_index_offset().is_some(),
            "column index of column {column} written"
        );
        assert!(
            chunk.offset_index_offset().is_some(),
            "offset index of column {column} written"
        );
    }
    let payload = (metadata.row_group(0).columns().iter())
        .find(|column| column.column_path().string() == "payload")
        .expect("a payload column");
    assert!(
        payload.statistics().is_none(),
        "no statistics on payloads: they only cost space"
    );
    assert_eq!(
        metadata.file_metadata().created_by(),
        Some("distributedlog")
    );
}

#[test]
fn the_same_records_give_the_same_bytes() {
    let log: LogName = "ns/a".parse().unwrap();
    let info = FileInfo {
        log: &log,
        segment_id: 1,
        start_offset: 0,
        end_offset: 500,
        payload_schema: None,
    };
    let a = encode_segment(&entries(0, 500, 7), &info).unwrap();
    let b = encode_segment(&entries(0, 500, 50), &info).unwrap();
    assert_eq!(
        a.bytes, b.bytes,
        "bytes depend on the records, not on how they were batched"
    );
}

#[test]
fn missing_records_are_refused() {
    let log: LogName = "ns/a".parse().unwrap();
    let info = FileInfo {
        log: &log,
        segment_id: 1,
        start_offset: 0,
        end_offset: 600,
        payload_schema: None,
    };
    let err = encode_segment(&entries(0, 500, 10), &info).unwrap_err();
    assert_eq!(
        err.to_string(),
        "segment 1 of log ns/a: 500 records for offsets 0..600"
    );
}

#[test]
fn object_keys_are_hive_style_and_sort_by_offset() {
    let log: LogName = "ns/orders".parse().unwrap();
    let prefix = object_store::path::Path::from("cluster-a");
    let a = object_key(&prefix, &log, 7, 0, 10).to_string();
    let b = object_key(&prefix, &log, 7, 10, 200).to_string();
    assert_eq!(
        a,
        "cluster-a/ns=ns/log=orders/id=7/00000000000000000000-00000000000000000010.parquet"
    );
    assert!(a < b);
    // The same name re-created (a new log id) never meets the old objects.
    let recreated = object_key(&prefix, &log, 8, 0, 10).to_string();
    assert_ne!(recreated, a);
    assert!(recreated.starts_with(&log_folder(&prefix, &log, 8).to_string()));
}
