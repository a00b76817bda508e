//! The Parquet form of a segment (docs/wire.md, "Parquet files"): one row per record,
//!
//! ```text
//! offset UInt64, timestamp Timestamp(ms, UTC), txid Int64?, key Binary?,
//! headers Map<Utf8, Binary>?, payload Binary
//! ```
//!
//! zstd-compressed, row groups of 64 Ki rows, page-level statistics (column
//! and offset indexes) on offset, timestamp and txid so readers prune, and
//! file metadata naming the log, the segment and the offset range. The
//! bytes are a pure function of the records (no clock, fixed `created_by`),
//! so a retried offload uploads the very same object.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, MapBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Int64Array, RecordBatch, TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use dlog_wire::codec::{Entry, EntryRecord};
use dlog_wire::names::LogName;
use dlog_wire::record::{Record, StoredRecord};
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// A segment file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("segment {segment} of log {log}: {reason}")]
    Incomplete {
        log: LogName,
        segment: u64,
        reason: String,
    },
    #[error("arrow: {what}")]
    Arrow {
        what: &'static str,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("parquet: {what}")]
    Parquet {
        what: &'static str,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("not a segment file: column {column} {reason}")]
    Schema {
        column: &'static str,
        reason: String,
    },
}

impl dlog_wire::error::Classify for Error {
    fn kind(&self) -> dlog_wire::error::ErrorKind {
        match self {
            Error::Incomplete { .. } | Error::Schema { .. } => {
                dlog_wire::error::ErrorKind::DataLoss
            }
            Error::Arrow { .. } | Error::Parquet { .. } => dlog_wire::error::ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Version of the file layout, in the file metadata as `dlog.format_version`.
pub const FORMAT_VERSION: &str = "1";
/// Rows per row group.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Columns with page statistics (the ones readers position by).
pub const INDEXED_COLUMNS: [&str; 3] = ["offset", "timestamp", "txid"];

/// The Arrow schema of segment files.
pub fn schema() -> SchemaRef {
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
    Arc::new(Schema::new(vec![
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
    ]))
}

/// `<prefix>/ns=<ns>/log=<log>/id=<log_id>/<start:020>-<end:020>.parquet`:
/// Hive-style folders (engines glob `ns=*/log=*/id=*/`), names in offset
/// order. The log id folder keeps a log deleted and re-created under the
/// same name (offsets from 0 again) from ever meeting its predecessor's
/// objects, and caches keyed by object key from mixing the two.
pub fn object_key(
    prefix: &Path,
    log: &LogName,
    log_id: u64,
    start_offset: u64,
    end_offset: u64,
) -> Path {
    log_folder(prefix, log, log_id).join(format!("{start_offset:020}-{end_offset:020}.parquet"))
}

/// `<prefix>/ns=<ns>/log=<log>/id=<log_id>`: every object of one log id.
pub fn log_folder(prefix: &Path, log: &LogName, log_id: u64) -> Path {
    prefix
        .clone()
        .join(format!("ns={}", log.namespace()))
        .join(format!("log={}", log.log()))
        .join(format!("id={log_id}"))
}

/// An encoded segment file.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub bytes: Bytes,
    pub rows: u64,
    pub crc32c: u32,
}

/// What the file says about itself.
#[derive(Debug, Clone)]
pub struct FileInfo<'a> {
    pub log: &'a LogName,
    pub segment_id: u64,
    pub start_offset: u64,
    pub end_offset: u64,
}

fn properties(info: &FileInfo<'_>) -> Result<WriterProperties> {
    let zstd = ZstdLevel::try_new(1).map_err(|err| Error::Parquet {
        what: "zstd level",
        source: err,
    })?;
    let metadata = vec![
        KeyValue::new("dlog.log".to_owned(), info.log.to_string()),
        KeyValue::new("dlog.segment_ids".to_owned(), info.segment_id.to_string()),
        KeyValue::new(
            "dlog.start_offset".to_owned(),
            info.start_offset.to_string(),
        ),
        KeyValue::new("dlog.end_offset".to_owned(), info.end_offset.to_string()),
        KeyValue::new("dlog.format_version".to_owned(), FORMAT_VERSION.to_owned()),
    ];
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_created_by("distributedlog".to_owned())
        .set_key_value_metadata(Some(metadata))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::None);
    for column in INDEXED_COLUMNS {
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::Page);
    }
    // Offsets are consecutive: delta encoding stores them in almost
    // nothing. Payloads rarely repeat: a dictionary attempt on them only
    // costs hashing every value before falling back.
    builder = builder
        .set_column_dictionary_enabled(ColumnPath::from("offset"), false)
        .set_column_encoding(ColumnPath::from("offset"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("payload"), false);
    Ok(builder.build())
}

/// Rows go to the Parquet writer in batches of at most this many record
/// bytes: Arrow `Binary` arrays have i32 offsets, so one batch must stay
/// well under 2 GiB (a segment may be larger; row groups are unaffected,
/// the writer fills them across batches).
const BATCH_BYTES: usize = 256 * 1024 * 1024;

/// The segment's rows (offset, record) in `start..end`, in batches of at
/// most [`BATCH_BYTES`] (and at least one row).
fn batches(entries: &[Entry], info: &FileInfo<'_>) -> Result<Vec<RecordBatch>> {
    let rows = entries.iter().flat_map(|entry| {
        let first = entry.header.first_offset;
        (first..)
            .zip(&entry.records)
            .filter(|(offset, _)| *offset < info.end_offset)
    });
    let mut batches = Vec::new();
    let (mut chunk, mut bytes) = (Vec::new(), 0usize);
    for (offset, record) in rows {
        let size = record.record.size();
        if !chunk.is_empty() && bytes.saturating_add(size) > BATCH_BYTES {
            batches.push(batch(&chunk)?);
            (chunk, bytes) = (Vec::new(), 0);
        }
        chunk.push((offset, record));
        bytes += size;
    }
    if !chunk.is_empty() || batches.is_empty() {
        batches.push(batch(&chunk)?);
    }
    Ok(batches)
}

fn batch(rows: &[(u64, &EntryRecord)]) -> Result<RecordBatch> {
    let count = rows.len();
    let mut offsets = Vec::with_capacity(count);
    let mut timestamps = Vec::with_capacity(count);
    let mut txids = Vec::with_capacity(count);
    let mut keys = BinaryBuilder::with_capacity(count, 0);
    let mut headers = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
    let payload_bytes: usize = rows.iter().map(|(_, r)| r.record.payload.len()).sum();
    let mut payloads = BinaryBuilder::with_capacity(count, payload_bytes);
    for &(offset, record) in rows {
        offsets.push(offset);
        timestamps.push(record.timestamp_ms);
        txids.push(record.record.txid);
        keys.append_option(record.record.key.as_deref());
        if record.record.headers.is_empty() {
            headers.append(false).map_err(|err| Error::Arrow {
                what: "headers",
                source: err,
            })?;
        } else {
            for (name, value) in &record.record.headers {
                headers.keys().append_value(name);
                headers.values().append_value(value);
            }
            headers.append(true).map_err(|err| Error::Arrow {
                what: "headers",
                source: err,
            })?;
        }
        payloads.append_value(&record.record.payload);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(offsets)),
        Arc::new(TimestampMillisecondArray::from(timestamps).with_timezone("UTC")),
        Arc::new(Int64Array::from(txids)),
        Arc::new(keys.finish()),
        Arc::new(headers.finish()),
        Arc::new(payloads.finish()) as Arc<BinaryArray>,
    ];
    RecordBatch::try_new(schema(), columns).map_err(|err| Error::Arrow {
        what: "record batch",
        source: err,
    })
}

/// Encodes a segment's entries (in order, covering `start..end` exactly).
pub fn encode_segment(entries: &[Entry], info: &FileInfo<'_>) -> Result<SegmentFile> {
    let batches = batches(entries, info)?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if rows != info.end_offset - info.start_offset {
        return Err(Error::Incomplete {
            log: info.log.clone(),
            segment: info.segment_id,
            reason: format!(
                "{rows} records for offsets {}..{}",
                info.start_offset, info.end_offset
            ),
        });
    }
    let memory: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut buffer = Vec::with_capacity(memory / 2);
    let mut writer =
        ArrowWriter::try_new(&mut buffer, schema(), Some(properties(info)?)).map_err(|err| {
            Error::Parquet {
                what: "start writer",
                source: err,
            }
        })?;
    for batch in &batches {
        writer.write(batch).map_err(|err| Error::Parquet {
            what: "write rows",
            source: err,
        })?;
    }
    writer.close().map_err(|err| Error::Parquet {
        what: "finish file",
        source: err,
    })?;
    let crc32c = crc32c::crc32c(&buffer);
    Ok(SegmentFile {
        bytes: Bytes::from(buffer),
        rows,
        crc32c,
    })
}

fn column<'a, T>(
    batch: &'a RecordBatch,
    name: &'static str,
    cast: impl FnOnce(&'a dyn Array) -> Option<&'a T>,
) -> Result<&'a T> {
    let array = batch.column_by_name(name).ok_or(Error::Schema {
        column: name,
        reason: "is missing".to_owned(),
    })?;
    cast(array.as_ref()).ok_or_else(|| Error::Schema {
        column: name,
        reason: format!("has type {}", array.data_type()),
    })
}

/// The records of one batch read from a segment file, in row order.
pub fn decode_batch(batch: &RecordBatch) -> Result<Vec<StoredRecord>> {
    let offsets = column(batch, "offset", |a| a.as_primitive_opt::<UInt64Type>())?;
    let timestamps = column(batch, "timestamp", |a| {
        a.as_primitive_opt::<TimestampMillisecondType>()
    })?;
    let txids = column(batch, "txid", |a| a.as_primitive_opt::<Int64Type>())?;
    let keys = column(batch, "key", |a| a.as_binary_opt::<i32>())?;
    let headers = column(batch, "headers", |a| a.as_map_opt())?;
    let payloads = column(batch, "payload", |a| a.as_binary_opt::<i32>())?;
    let header_names = headers
        .keys()
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Schema {
            column: "headers",
            reason: "has non-string keys".to_owned(),
        })?;
    let header_values = headers
        .values()
        .as_binary_opt::<i32>()
        .ok_or_else(|| Error::Schema {
            column: "headers",
            reason: "has non-binary values".to_owned(),
        })?;
    let optional = |array: &dyn Array, row: usize| array.is_valid(row);
    let mut records = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut record_headers = BTreeMap::new();
        if headers.is_valid(row) {
            let range =
                headers.value_offsets()[row] as usize..headers.value_offsets()[row + 1] as usize;
            for i in range {
                let value = if header_values.is_valid(i) {
                    Bytes::copy_from_slice(header_values.value(i))
                } else {
                    Bytes::new()
                };
                record_headers.insert(header_names.value(i).to_owned(), value);
            }
        }
        records.push(StoredRecord {
            offset: offsets.value(row),
            timestamp_ms: timestamps.value(row),
            record: Record {
                payload: Bytes::copy_from_slice(payloads.value(row)),
                key: optional(keys, row).then(|| Bytes::copy_from_slice(keys.value(row))),
                headers: record_headers,
                txid: optional(txids, row).then(|| txids.value(row)),
            },
        });
    }
    Ok(records)
}

/// Every record of a whole segment file held in memory.
pub fn decode_file(bytes: Bytes) -> Result<Vec<StoredRecord>> {
    let parquet = |what| move |source| Error::Parquet { what, source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(parquet("read footer"))?
        .build()
        .map_err(parquet("start reading"))?;
    let mut records = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| Error::Arrow {
            what: "read rows",
            source,
        })?;
        records.extend(decode_batch(&batch)?);
    }
    Ok(records)
}
