//! Joining segment files without decoding them (`segment_concat`): the
//! joined file holds every input's records in order, every input's typed
//! columns (nulls where an input lacks one), the inputs' row groups with
//! their page indexes, and the same bytes on every attempt; inputs that
//! cannot be joined so are left to the caller.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use dlog_storage::segment_concat::concat_files;
use dlog_storage::segment_file::{FileInfo, SegmentFile, decode_file, encode_segment};
use dlog_wire::codec::{Entry, EntryHeader, EntryRecord};
use dlog_wire::names::LogName;
use dlog_wire::payload_schema::PayloadSchema;
use dlog_wire::record::Record;
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};

fn log() -> LogName {
    "ns/orders".parse().unwrap()
}

/// A file of the offsets `start..end`, payloads
/// `{"user":"u<offset%5>","amount":<offset>}`, typed by `schema`.
fn file(start: u64, end: u64, schema: Option<&PayloadSchema>) -> SegmentFile {
    let records: Vec<EntryRecord> = (start..end)
        .map(|offset| EntryRecord {
            timestamp_ms: 1_700_000_000_000 + offset as i64,
            record: Record::new(format!(
                "{{\"user\":\"u{}\",\"amount\":{offset}}}",
                offset % 5
            )),
        })
        .collect();
    let entry = Entry {
        header: EntryHeader {
            log_id: 1,
            segment_id: start,
            entry_id: 0,
            epoch: 1,
            first_offset: start,
            lac: None,
            record_count: records.len() as u32,
        },
        records,
    };
    let log = log();
    let info = FileInfo {
        log: &log,
        segment_id: start,
        start_offset: start,
        end_offset: end,
        payload_schema: schema,
    };
    encode_segment(std::slice::from_ref(&entry), &info).unwrap()
}

fn join(files: &[&SegmentFile], start: u64, end: u64) -> Option<SegmentFile> {
    let log = log();
    let info = FileInfo {
        log: &log,
        segment_id: 7,
        start_offset: start,
        end_offset: end,
        payload_schema: None,
    };
    let bytes: Vec<Bytes> = files.iter().map(|f| f.bytes.clone()).collect();
    concat_files(&bytes, &info, Some((1, 2))).unwrap()
}

fn read_all(bytes: &Bytes) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .unwrap()
        .with_batch_size(100_000)
        .build()
        .unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1, "one batch for a small file");
    batches.remove(0)
}

fn row_groups(bytes: &Bytes) -> usize {
    ParquetMetaDataReader::new()
        .parse_and_finish(bytes)
        .unwrap()
        .num_row_groups()
}

#[test]
fn files_join_with_every_typed_column_they_were_written_with() {
    let users =
        PayloadSchema::declare(r#"{"fields":[{"name":"user","type":"string"}]}"#, None).unwrap();
    // `user` removed, `amount` added: ids 1000 and 1001.
    let amounts = PayloadSchema::declare(
        r#"{"fields":[{"name":"amount","type":"int64"}]}"#,
        Some(&users),
    )
    .unwrap();
    let plain = file(0, 100, None);
    let typed_user = file(100, 250, Some(&users));
    let typed_amount = file(250, 400, Some(&amounts));
    let inputs = [&plain, &typed_user, &typed_amount];

    let joined = join(&inputs, 0, 400).expect("current-layout files are joined");
    assert_eq!(joined.rows, 400);
    assert_eq!(joined.time_range_ms, Some((1, 2)));
    assert_eq!(joined.crc32c, crc32c::crc32c(&joined.bytes));

    // The records, in order, as dlog reads them.
    let mut expected = Vec::new();
    for input in inputs {
        expected.extend(decode_file(input.bytes.clone()).unwrap());
    }
    assert_eq!(decode_file(joined.bytes.clone()).unwrap(), expected);

    // Row groups copied, not re-formed: one per input.
    assert_eq!(row_groups(&joined.bytes), 3);

    // Both typed columns, with their ids, values where the input had them.
    let batch = read_all(&joined.bytes);
    let schema = batch.schema();
    let typed: Vec<(String, String)> = schema.fields()[7..]
        .iter()
        .map(|f| {
            (
                f.name().clone(),
                f.metadata()[PARQUET_FIELD_ID_META_KEY].clone(),
            )
        })
        .collect();
    assert_eq!(
        typed,
        [
            ("user".to_owned(), "1000".to_owned()),
            ("amount".to_owned(), "1001".to_owned())
        ]
    );
    let user = batch.column_by_name("user").unwrap().as_string::<i32>();
    let amount = (batch.column_by_name("amount").unwrap()).as_primitive::<Int64Type>();
    for row in 0..400 {
        let offset = row as i64;
        assert_eq!(
            user.is_valid(row),
            (100..250).contains(&offset),
            "row {row}"
        );
        assert_eq!(amount.is_valid(row), offset >= 250, "row {row}");
    }
    assert_eq!(user.value(100), "u0");
    assert_eq!(amount.value(399), 399);

    // The page index of the offset column survives (readers seek by it).
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&joined.bytes)
        .unwrap();
    let offsets = metadata.offset_index().expect("offset index");
    assert_eq!(offsets.len(), 3);
    let first_page = |group: usize| offsets[group][0].page_locations[0].offset;
    assert!(first_page(0) < first_page(1) && first_page(1) < first_page(2));

    // The same bytes on every attempt.
    assert_eq!(join(&inputs, 0, 400).unwrap().bytes, joined.bytes);
}

#[test]
fn files_that_disagree_or_miss_rows_are_not_joined() {
    let user =
        PayloadSchema::declare(r#"{"fields":[{"name":"user","type":"string"}]}"#, None).unwrap();
    // Another namespace history: id 1000 under another name.
    let who =
        PayloadSchema::declare(r#"{"fields":[{"name":"who","type":"string"}]}"#, None).unwrap();
    let a = file(0, 10, Some(&user));
    let b = file(10, 20, Some(&who));
    assert!(join(&[&a, &b], 0, 20).is_none(), "one id, two names");

    // A file that is not in the current layout.
    let mut old = file(20, 30, None).bytes.to_vec();
    let key = b"dlog.format_version";
    let at = old
        .windows(key.len())
        .rposition(|w| w == key)
        .expect("the version key in the footer");
    // The value follows the key in the footer's thrift encoding: "3" → "2".
    let value = old[at + key.len()..]
        .iter()
        .position(|&b| b == b'3')
        .unwrap()
        + at
        + key.len();
    old[value] = b'2';
    let old = SegmentFile {
        bytes: Bytes::from(old),
        ..file(20, 30, None)
    };
    let c = file(30, 40, None);
    assert!(join(&[&old, &c], 20, 40).is_none(), "a version 2 file");

    // Files that do not cover the range are an error, not a short file.
    let log = log();
    let info = FileInfo {
        log: &log,
        segment_id: 7,
        start_offset: 0,
        end_offset: 25,
        payload_schema: None,
    };
    let err = concat_files(std::slice::from_ref(&a.bytes), &info, None).unwrap_err();
    assert!(err.to_string().contains("10 rows"), "{err}");
}

#[test]
fn a_cut_keeps_the_rows_from_the_trim_point_with_every_column_of_the_file() {
    let both = PayloadSchema::declare(
        r#"{"fields":[{"name":"user","type":"string"},{"name":"amount","type":"int64"}]}"#,
        None,
    )
    .unwrap();
    let original = file(100, 250, Some(&both));
    let log = log();
    let info = FileInfo {
        log: &log,
        segment_id: 100,
        start_offset: 130,
        end_offset: 250,
        // The namespace's schema now: neither field (both removed).
        payload_schema: None,
    };
    let cut = dlog_storage::segment_concat::cut_file(original.bytes.clone(), 130, &info)
        .unwrap()
        .expect("a current-layout file is cut with its columns");
    assert_eq!(cut.rows, 120);
    let mut expected = decode_file(original.bytes.clone()).unwrap();
    expected.retain(|r| r.offset >= 130);
    assert_eq!(decode_file(cut.bytes.clone()).unwrap(), expected);
    assert_eq!(
        cut.time_range_ms,
        Some((1_700_000_000_130, 1_700_000_000_249))
    );
    let batch = read_all(&cut.bytes);
    let user = batch
        .column_by_name("user")
        .expect("a removed field's column stays");
    assert_eq!(user.null_count(), 0);
    assert_eq!(user.as_string::<i32>().value(0), "u0");
    let amount = batch
        .column_by_name("amount")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(amount.value(119), 249);
    // The same bytes on every attempt; a range the file does not end is refused.
    let again = dlog_storage::segment_concat::cut_file(original.bytes.clone(), 130, &info);
    assert_eq!(again.unwrap().unwrap().bytes, cut.bytes);
    let short = FileInfo {
        end_offset: 300,
        ..info
    };
    assert!(dlog_storage::segment_concat::cut_file(original.bytes.clone(), 130, &short).is_err());
}
