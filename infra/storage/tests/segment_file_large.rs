//! Segments whose payloads add up to more than 2 GiB (possible with a roll
//! policy above that size) are encoded: Arrow's `Binary` arrays have i32
//! offsets, so the rows go to the Parquet writer in batches of bounded
//! bytes rather than in one batch whose builder would overflow and panic.

use bytes::Bytes;
use dlog_storage::segment_file::{FileInfo, encode_segment};
use dlog_wire::codec::{Entry, EntryHeader, EntryRecord};
use dlog_wire::names::LogName;
use dlog_wire::record::Record;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

#[test]
fn a_segment_over_2_gib_of_payload_is_encoded() {
    // 2 100 records of 1 MiB (the largest record), one shared buffer.
    let payload = Bytes::from(vec![7u8; 1024 * 1024]);
    let count = 2_100u64;
    let per_entry = 100u64;
    let entries: Vec<Entry> = (0..count / per_entry)
        .map(|e| Entry {
            header: EntryHeader {
                log_id: 1,
                segment_id: 1,
                entry_id: e,
                epoch: 1,
                first_offset: e * per_entry,
                lac: None,
                record_count: per_entry as u32,
            },
            records: (0..per_entry)
                .map(|_| EntryRecord {
                    timestamp_ms: 1,
                    record: Record::new(payload.clone()),
                })
                .collect(),
        })
        .collect();
    let log: LogName = "big/segment".parse().unwrap();
    let info = FileInfo {
        log: &log,
        segment_id: 1,
        start_offset: 0,
        end_offset: count,
        payload_schema: None,
    };
    let file = encode_segment(&entries, &info).expect("encoded");
    assert_eq!(file.rows, count);
    let reader = ParquetRecordBatchReaderBuilder::try_new(file.bytes).unwrap();
    let rows: i64 = reader
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .sum();
    assert_eq!(rows, count as i64);
}
