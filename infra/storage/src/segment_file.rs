//! The Parquet form of a segment (docs/wire.md, "Parquet files"): one row per record,
//!
//! ```text
//! log_offset Int64, append_time Timestamp(µs, UTC), txid Int64?, key Binary?,
//! headers List<Struct<name: Utf8, value: Binary>>?, payload Binary?,
//! producer_time Timestamp(µs, UTC)?
//! ```
//!
//! zstd-compressed, row groups of 64 Ki rows, page-level statistics (column
//! and offset indexes) on the first three columns so readers prune, and
//! file metadata naming the log, the segment and the offset range. The
//! bytes are a pure function of the records (no clock, fixed `created_by`),
//! so a retried offload uploads the very same object.
//!
//! The columns are the ones lakehouse engines take as they are: a signed
//! offset (Iceberg and Spark have no unsigned integers; named `log_offset`
//! because `offset` is a reserved word in SQL), microsecond UTC timestamps
//! (Iceberg's `timestamptz`), and Iceberg field ids on every column
//! ([`FIELD_IDS`]), so the file joins an Iceberg table as written.
//! `headers` keeps the record's order and repeated names (null when a
//! record has none); `payload` is null for a null payload (a Kafka
//! tombstone), empty for an empty one; `producer_time` is the client's
//! own time, null when it gave none (`append_time` is the owner's).
//!
//! A namespace with a payload schema (`dlog_wire::payload_schema`) gets
//! one more column per field after these, named as the field, typed
//! (`Utf8`, `Int64`, `Float64`, `Boolean`, `Timestamp(µs, UTC)`), nullable,
//! with the field's id (1000 up): the value of that field of the record's
//! JSON payload, null where the field is absent, null or of another type,
//! or the payload no JSON object (a record appended before the schema
//! said so). The raw `payload` stays. A file without a schema is
//! byte for byte what it was before typed columns existed, and dlog's own
//! readers read only the record columns ([`record_columns`]).
//!
//! Files are written in format version 3 (the above). Reading takes every
//! version: version 2 files have `offset UInt64`, `timestamp
//! Timestamp(ms, UTC)` and `producer_time_ms Int64?`; version 1 files also
//! have `headers Map<Utf8, Binary>?`, a non-null `payload` and no producer
//! time. The first three columns keep their places in all of them, so
//! row-group statistics are found at the same column index.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, NullBufferBuilder,
    OffsetBufferBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Int64Array, ListArray, PrimitiveArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use dlog_wire::codec::{Entry, EntryRecord};
use dlog_wire::names::LogName;
use dlog_wire::payload_schema::{self, FieldType, PayloadSchema, Typed};
use dlog_wire::record::{Headers, Record, StoredRecord};
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, PARQUET_FIELD_ID_META_KEY, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{FooterTail, KeyValue, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::{ColumnPath, SchemaDescriptor};

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
/// Version 1 files (the layout before ordered headers) are read as well.
pub const FORMAT_VERSION: &str = "3";
/// The layout versions this code reads.
const READABLE_VERSIONS: [&str; 3] = ["1", "2", "3"];

/// Whether this code reads files of layout version `version`.
pub fn readable_version(version: &str) -> bool {
    READABLE_VERSIONS.contains(&version)
}

/// Refuses a file whose `dlog.format_version` (in its key-value metadata)
/// this code does not know: a file of a later layout must not be read by
/// column names that may have changed meaning. A file without the key is
/// read (none was written without it, but it is no later layout).
pub fn check_format_version(metadata: Option<&Vec<KeyValue>>) -> std::result::Result<(), String> {
    let version = metadata
        .into_iter()
        .flatten()
        .find(|kv| kv.key == "dlog.format_version")
        .and_then(|kv| kv.value.as_deref());
    match version {
        Some(v) if !READABLE_VERSIONS.contains(&v) => Err(format!(
            "written in dlog format version {v}; this node reads versions {}: upgrade it",
            READABLE_VERSIONS.join(", ")
        )),
        _ => Ok(()),
    }
}

/// The `dlog.format_version` of a whole segment file in memory (None: not
/// a readable Parquet file, or no version recorded).
pub fn format_version(bytes: &Bytes) -> Option<String> {
    let footer = footer_length(bytes.len().checked_sub(8).and_then(|at| bytes.get(at..))?)?;
    footer_format_version(bytes.get(bytes.len().checked_sub(8 + footer)?..)?)
}

/// The length of a Parquet file's footer (its metadata), from the file's
/// last 8 bytes; `None` when they do not end a Parquet file.
pub fn footer_length(last8: &[u8]) -> Option<usize> {
    Some(FooterTail::try_from(last8).ok()?.metadata_length())
}

/// The format version named in a Parquet file's footer, from its last
/// `footer_length + 8` bytes, so that a file's layout is learned by two
/// range reads of its end instead of a read of the whole file.
pub fn footer_format_version(end: &[u8]) -> Option<String> {
    let metadata =
        ParquetMetaDataReader::decode_metadata(end.get(..end.len().checked_sub(8)?)?).ok()?;
    let pairs = metadata.file_metadata().key_value_metadata()?;
    pairs
        .iter()
        .find(|kv| kv.key == "dlog.format_version")
        .and_then(|kv| kv.value.clone())
}

/// Rows per row group.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Columns with page statistics (the ones readers position by).
pub const INDEXED_COLUMNS: [&str; 3] = ["log_offset", "append_time", "txid"];

/// Microseconds per millisecond: records carry times in ms, files in µs.
pub const MICROS: i64 = 1000;

/// The Iceberg field id of every column and nested field of the current
/// layout, written into the file as `PARQUET:field_id`. Numbered as an
/// Iceberg catalog numbers a new table's schema (the top-level columns
/// first, then nested fields), so a table created from this layout keeps
/// these very ids.
pub const FIELD_IDS: [(&str, i32); 10] = [
    ("log_offset", 1),
    ("append_time", 2),
    ("txid", 3),
    ("key", 4),
    ("headers", 5),
    ("payload", 6),
    ("producer_time", 7),
    ("headers.element", 8),
    ("headers.element.name", 9),
    ("headers.element.value", 10),
];

/// The field id of `path` (see [`FIELD_IDS`]).
fn field_id(path: &str) -> i32 {
    FIELD_IDS
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, id)| *id)
        .expect("every field of the layout has an id")
}

/// A field carrying Iceberg field id `id`.
fn field_with_id(id: i32, name: &str, data_type: DataType, nullable: bool) -> Field {
    let id =
        std::collections::HashMap::from([(PARQUET_FIELD_ID_META_KEY.to_owned(), id.to_string())]);
    Field::new(name, data_type, nullable).with_metadata(id)
}

/// A field of the record columns, carrying its Iceberg field id.
fn field(path: &str, name: &str, data_type: DataType, nullable: bool) -> Field {
    field_with_id(field_id(path), name, data_type, nullable)
}

fn micros_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The fields of one header.
fn header_fields() -> Fields {
    vec![
        field("headers.element.name", "name", DataType::Utf8, false),
        field("headers.element.value", "value", DataType::Binary, false),
    ]
    .into()
}

/// The list item of the `headers` column. Named `element`, as the Parquet
/// list layout and Iceberg name it.
fn header_item() -> FieldRef {
    Arc::new(field(
        "headers.element",
        "element",
        DataType::Struct(header_fields()),
        false,
    ))
}

/// The Arrow schema of the segment files written now (format version 3)
/// without typed payload columns: the record columns.
pub fn schema() -> SchemaRef {
    file_schema(None)
}

/// The record columns, then a typed column per field of `payload_schema`.
fn file_schema(payload_schema: Option<&PayloadSchema>) -> SchemaRef {
    let mut fields = vec![
        field("log_offset", "log_offset", DataType::Int64, false),
        field("append_time", "append_time", micros_utc(), false),
        field("txid", "txid", DataType::Int64, true),
        field("key", "key", DataType::Binary, true),
        field("headers", "headers", DataType::List(header_item()), true),
        field("payload", "payload", DataType::Binary, true),
        field("producer_time", "producer_time", micros_utc(), true),
    ];
    let typed = payload_schema.into_iter().flat_map(|s| &s.fields);
    fields.extend(typed.map(|f| field_with_id(f.id, &f.name, arrow_type(f.field_type), true)));
    Arc::new(Schema::new(fields))
}

/// The column type of a payload field.
fn arrow_type(field_type: FieldType) -> DataType {
    match field_type {
        FieldType::String => DataType::Utf8,
        FieldType::Int64 => DataType::Int64,
        FieldType::Double => DataType::Float64,
        FieldType::Boolean => DataType::Boolean,
        FieldType::Timestamp => micros_utc(),
    }
}

/// The typed payload columns of a whole segment file in memory: its
/// fields with a field id from [`payload_schema::FIRST_FIELD_ID`] up, as
/// a schema of their own (none: an empty one).
pub fn payload_columns(bytes: &Bytes) -> Result<Schema> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(|source| {
        Error::Parquet {
            what: "read footer",
            source,
        }
    })?;
    let typed = |field: &&FieldRef| {
        (field.metadata().get(PARQUET_FIELD_ID_META_KEY))
            .and_then(|id| id.parse::<i32>().ok())
            .is_some_and(|id| id >= payload_schema::FIRST_FIELD_ID)
    };
    let fields: Vec<FieldRef> = builder
        .schema()
        .fields()
        .iter()
        .filter(typed)
        .cloned()
        .collect();
    Ok(Schema::new(fields))
}

/// The record columns of a file of any layout, for reading records: its
/// typed payload columns are left unread.
pub fn record_columns(schema: &SchemaDescriptor) -> ProjectionMask {
    let roots = (0..schema.root_schema().get_fields().len()).filter(|&i| {
        let name = schema.root_schema().get_fields()[i].name();
        payload_schema::RESERVED_NAMES.contains(&name)
    });
    ProjectionMask::roots(schema, roots)
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

/// `<log folder>/_trimmed/<segment_id:020>`: the copies of one segment's
/// file cut at trim points inside it, which the log's Iceberg table holds
/// instead of the segment's file. Engines that list a folder of Parquet
/// files skip folders whose name starts with `_`, and a glob of the log
/// folder's `*.parquet` does not reach into it.
pub fn cut_folder(prefix: &Path, log: &LogName, log_id: u64, segment_id: u64) -> Path {
    log_folder(prefix, log, log_id)
        .join("_trimmed")
        .join(format!("{segment_id:020}"))
}

/// `<log folder>/_trimmed/<start:020>-<end:020>`: the copies of a merged
/// object (the files of the segments `start..end` merged into one) cut at
/// trim points inside it. Deleted with the merged object, by the segment
/// that ends it.
pub fn merged_cut_folder(
    prefix: &Path,
    log: &LogName,
    log_id: u64,
    (start_offset, end_offset): (u64, u64),
) -> Path {
    log_folder(prefix, log, log_id)
        .join("_trimmed")
        .join(format!("{start_offset:020}-{end_offset:020}"))
}

/// The copy of a file holding its rows `start_offset..end_offset` (the
/// file's end), in `folder` ([`cut_folder`] or [`merged_cut_folder`]). Its
/// CRC32C is part of the name: a release that encodes the same rows into
/// other bytes writes beside an earlier release's copy, never over it.
pub fn cut_key(folder: &Path, (start_offset, end_offset): (u64, u64), crc32c: u32) -> Path {
    folder.clone().join(format!(
        "{start_offset:020}-{end_offset:020}-{crc32c:08x}.parquet"
    ))
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
    /// The smallest and largest append time of its records, ms (`None`
    /// for a file without rows).
    pub time_range_ms: Option<(i64, i64)>,
}

/// What the file says about itself, and how its payloads are typed.
#[derive(Debug, Clone)]
pub struct FileInfo<'a> {
    pub log: &'a LogName,
    pub segment_id: u64,
    pub start_offset: u64,
    pub end_offset: u64,
    /// The namespace's payload schema as the encoder read it: a typed
    /// column per field. `None` (or a schema without fields in force):
    /// the record columns only.
    pub payload_schema: Option<&'a PayloadSchema>,
}

impl FileInfo<'_> {
    /// The payload schema whose fields become columns, if any.
    fn typed(&self) -> Option<&PayloadSchema> {
        self.payload_schema.filter(|s| s.is_active())
    }
}

fn properties(info: &FileInfo<'_>) -> Result<WriterProperties> {
    properties_for(info, &file_schema(info.typed()))
}

/// The writer properties of a file of `schema` (the record columns, then
/// typed payload columns), described by `info`.
pub(crate) fn properties_for(info: &FileInfo<'_>, schema: &Schema) -> Result<WriterProperties> {
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
        .set_column_dictionary_enabled(ColumnPath::from("log_offset"), false)
        .set_column_encoding(
            ColumnPath::from("log_offset"),
            Encoding::DELTA_BINARY_PACKED,
        )
        .set_column_dictionary_enabled(ColumnPath::from("payload"), false);
    // Typed columns get row group statistics: engines skip row groups by
    // them in a query's filter.
    let record_columns = file_schema(None).fields().len();
    for field in schema.fields().iter().skip(record_columns) {
        builder = builder.set_column_statistics_enabled(
            ColumnPath::from(field.name().as_str()),
            EnabledStatistics::Chunk,
        );
    }
    Ok(builder.build())
}

/// Rows go to the Parquet writer in batches of at most this many record
/// bytes: Arrow `Binary` arrays have i32 offsets, so one batch must stay
/// well under 2 GiB (a segment may be larger; row groups are unaffected,
/// the writer fills them across batches).
const BATCH_BYTES: usize = 256 * 1024 * 1024;

/// One row of a file: its offset, its append time (ms) and its record.
type Row<'a> = (u64, i64, &'a Record);

/// The smallest and largest append time of some rows, ms.
type TimeRange = Option<(i64, i64)>;

/// The segment's rows in `start..end`, in batches of at most
/// [`BATCH_BYTES`] (and at least one batch), with the smallest and largest
/// append time.
fn batches<'a>(
    rows: impl Iterator<Item = Row<'a>>,
    typed: Option<&PayloadSchema>,
) -> Result<(Vec<RecordBatch>, TimeRange)> {
    let mut batches = Vec::new();
    let mut time_range_ms: TimeRange = None;
    let (mut chunk, mut bytes) = (Vec::new(), 0usize);
    for row in rows {
        let (_, time, record) = row;
        time_range_ms =
            Some(time_range_ms.map_or((time, time), |(lo, hi)| (lo.min(time), hi.max(time))));
        let size = record.size();
        if !chunk.is_empty() && bytes.saturating_add(size) > BATCH_BYTES {
            batches.push(batch(&chunk, typed)?);
            (chunk, bytes) = (Vec::new(), 0);
        }
        chunk.push(row);
        bytes += size;
    }
    if !chunk.is_empty() || batches.is_empty() {
        batches.push(batch(&chunk, typed)?);
    }
    Ok((batches, time_range_ms))
}

/// The builder of one typed payload column.
enum TypedColumn {
    String(StringBuilder),
    Int64(Int64Builder),
    Double(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl TypedColumn {
    fn new(field_type: FieldType, rows: usize) -> TypedColumn {
        match field_type {
            FieldType::String => TypedColumn::String(StringBuilder::with_capacity(rows, 0)),
            FieldType::Int64 => TypedColumn::Int64(Int64Builder::with_capacity(rows)),
            FieldType::Double => TypedColumn::Double(Float64Builder::with_capacity(rows)),
            FieldType::Boolean => TypedColumn::Boolean(BooleanBuilder::with_capacity(rows)),
            FieldType::Timestamp => {
                TypedColumn::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows))
            }
        }
    }

    /// Appends a value (of the column's type: the conversion is by it) or a null.
    fn append(&mut self, value: Option<Typed<'_>>) {
        match (self, value) {
            (TypedColumn::String(b), Some(Typed::String(v))) => b.append_value(v),
            (TypedColumn::Int64(b), Some(Typed::Int64(v))) => b.append_value(v),
            (TypedColumn::Double(b), Some(Typed::Double(v))) => b.append_value(v),
            (TypedColumn::Boolean(b), Some(Typed::Boolean(v))) => b.append_value(v),
            (TypedColumn::Timestamp(b), Some(Typed::Timestamp(v))) => b.append_value(v),
            (TypedColumn::String(b), _) => b.append_null(),
            (TypedColumn::Int64(b), _) => b.append_null(),
            (TypedColumn::Double(b), _) => b.append_null(),
            (TypedColumn::Boolean(b), _) => b.append_null(),
            (TypedColumn::Timestamp(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            TypedColumn::String(mut b) => Arc::new(b.finish()),
            TypedColumn::Int64(mut b) => Arc::new(b.finish()),
            TypedColumn::Double(mut b) => Arc::new(b.finish()),
            TypedColumn::Boolean(mut b) => Arc::new(b.finish()),
            TypedColumn::Timestamp(mut b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// The typed payload columns of `rows`, one per field of `schema`. Each
/// payload is parsed once (serde_json); what does not fit is null.
fn typed_columns(rows: &[Row<'_>], schema: &PayloadSchema) -> Vec<ArrayRef> {
    let mut columns: Vec<TypedColumn> = (schema.fields.iter())
        .map(|f| TypedColumn::new(f.field_type, rows.len()))
        .collect();
    for (_, _, record) in rows {
        let payload = record.nullable_payload().map(|p| &p[..]);
        let object = schema.parse(payload).ok();
        for (column, value) in columns.iter_mut().zip(schema.row(object.as_ref())) {
            column.append(value);
        }
    }
    columns.into_iter().map(TypedColumn::finish).collect()
}

fn batch(rows: &[Row<'_>], typed: Option<&PayloadSchema>) -> Result<RecordBatch> {
    let count = rows.len();
    let mut offsets = Vec::with_capacity(count);
    let mut timestamps = Vec::with_capacity(count);
    let mut txids = Vec::with_capacity(count);
    let mut producer_times = Vec::with_capacity(count);
    let mut keys = BinaryBuilder::with_capacity(count, 0);
    let mut header_names = StringBuilder::new();
    let mut header_values = BinaryBuilder::new();
    let mut header_lengths = OffsetBufferBuilder::<i32>::new(count);
    let mut header_nulls = NullBufferBuilder::new(count);
    let payload_bytes: usize = rows.iter().map(|(_, _, r)| r.payload.len()).sum();
    let mut payloads = BinaryBuilder::with_capacity(count, payload_bytes);
    for &(offset, timestamp_ms, record) in rows {
        let record_headers = &record.headers;
        // Offsets stay below 2^63 (the manifest and the wire cap them), and
        // times within year 9999 fit in µs.
        offsets.push(offset as i64);
        timestamps.push(timestamp_ms.saturating_mul(MICROS));
        txids.push(record.txid);
        producer_times.push(record.producer_time_ms.map(|ms| ms.saturating_mul(MICROS)));
        keys.append_option(record.key.as_deref());
        for (name, value) in record_headers {
            header_names.append_value(name);
            header_values.append_value(value);
        }
        header_lengths.push_length(record_headers.len());
        header_nulls.append(!record_headers.is_empty());
        payloads.append_option(record.nullable_payload());
    }
    let arrow = |what| move |source| Error::Arrow { what, source };
    let header_entries = StructArray::try_new(
        header_fields(),
        vec![
            Arc::new(header_names.finish()),
            Arc::new(header_values.finish()),
        ],
        None,
    )
    .map_err(arrow("headers"))?;
    let headers = ListArray::try_new(
        header_item(),
        header_lengths.finish(),
        Arc::new(header_entries),
        header_nulls.finish(),
    )
    .map_err(arrow("headers"))?;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(offsets)),
        Arc::new(TimestampMicrosecondArray::from(timestamps).with_timezone("UTC")),
        Arc::new(Int64Array::from(txids)),
        Arc::new(keys.finish()),
        Arc::new(headers),
        Arc::new(payloads.finish()) as Arc<BinaryArray>,
        Arc::new(TimestampMicrosecondArray::from(producer_times).with_timezone("UTC")),
    ];
    if let Some(schema) = typed {
        columns.extend(typed_columns(rows, schema));
    }
    RecordBatch::try_new(file_schema(typed), columns).map_err(arrow("record batch"))
}

/// Encodes a segment's entries (in order, covering `start..end` exactly).
pub fn encode_segment(entries: &[Entry], info: &FileInfo<'_>) -> Result<SegmentFile> {
    let rows = entries.iter().flat_map(|entry| {
        let first = entry.header.first_offset;
        (first..)
            .zip(&entry.records)
            .filter(|(offset, _)| *offset < info.end_offset)
            .map(|(offset, entry_record): (u64, &EntryRecord)| {
                (offset, entry_record.timestamp_ms, &entry_record.record)
            })
    });
    encode_rows(rows, info)
}

/// Encodes records read back from a file (in offset order, covering
/// `start..end` exactly), in the current layout: the part of a segment a
/// log's table keeps after a trim inside it.
pub fn encode_records(records: &[StoredRecord], info: &FileInfo<'_>) -> Result<SegmentFile> {
    let expected = info.start_offset..info.end_offset;
    if let Some((record, offset)) =
        (records.iter().zip(expected)).find(|(record, offset)| record.offset != *offset)
    {
        return Err(Error::Incomplete {
            log: info.log.clone(),
            segment: info.segment_id,
            reason: format!("offset {} where {offset} was due", record.offset),
        });
    }
    encode_rows(
        records
            .iter()
            .map(|r| (r.offset, r.timestamp_ms, &r.record)),
        info,
    )
}

fn encode_rows<'a>(
    rows: impl Iterator<Item = Row<'a>>,
    info: &FileInfo<'_>,
) -> Result<SegmentFile> {
    let (batches, time_range_ms) = batches(rows, info.typed())?;
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
    let mut writer = ArrowWriter::try_new(
        &mut buffer,
        file_schema(info.typed()),
        Some(properties(info)?),
    )
    .map_err(|err| Error::Parquet {
        what: "start writer",
        source: err,
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
        time_range_ms,
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

/// The `headers` column of a batch, in either layout: each row's headers
/// are `names[i]`, `values[i]` for `i` in `offsets[row]..offsets[row + 1]`.
struct HeaderColumn<'a> {
    column: &'a dyn Array,
    offsets: &'a [i32],
    names: &'a StringArray,
    values: &'a BinaryArray,
}

impl<'a> HeaderColumn<'a> {
    fn of(batch: &'a RecordBatch) -> Result<HeaderColumn<'a>> {
        let wrong = |reason: &str| Error::Schema {
            column: "headers",
            reason: reason.to_owned(),
        };
        let column = batch
            .column_by_name("headers")
            .ok_or_else(|| wrong("is missing"))?
            .as_ref();
        let (offsets, names, values) = if let Some(list) = column.as_list_opt::<i32>() {
            // Format version 2: List<Struct<name, value>>.
            let entries = list
                .values()
                .as_struct_opt()
                .ok_or_else(|| wrong("is a list of something else than name and value"))?;
            let field = |name: &str| {
                entries
                    .column_by_name(name)
                    .ok_or_else(|| wrong(&format!("has no field {name}")))
            };
            let names = field("name")?.as_string_opt::<i32>();
            let values = field("value")?.as_binary_opt::<i32>();
            (list.value_offsets(), names, values)
        } else if let Some(map) = column.as_map_opt() {
            // Format version 1: Map<Utf8, Binary>.
            let names = map.keys().as_string_opt::<i32>();
            let values = map.values().as_binary_opt::<i32>();
            (map.value_offsets(), names, values)
        } else {
            return Err(wrong(&format!("has type {}", column.data_type())));
        };
        Ok(HeaderColumn {
            column,
            offsets,
            names: names.ok_or_else(|| wrong("has non-string names"))?,
            values: values.ok_or_else(|| wrong("has non-binary values"))?,
        })
    }

    fn row(&self, row: usize) -> Headers {
        let mut headers = Headers::new();
        if self.column.is_valid(row) {
            let range = self.offsets[row] as usize..self.offsets[row + 1] as usize;
            for i in range {
                // dlog writes no null value; another writer's reads as empty.
                let value = if self.values.is_valid(i) {
                    Bytes::copy_from_slice(self.values.value(i))
                } else {
                    Bytes::new()
                };
                headers.push(self.names.value(i), value);
            }
        }
        headers
    }
}

/// A column of i64 values in any layout, read as the record's value: an
/// offset as u64, a time in ms (µs columns divided, flooring).
enum Int64Column<'a> {
    Unsigned(&'a PrimitiveArray<UInt64Type>),
    Signed(&'a PrimitiveArray<Int64Type>),
    Millis(&'a PrimitiveArray<TimestampMillisecondType>),
    Micros(&'a PrimitiveArray<TimestampMicrosecondType>),
}

impl<'a> Int64Column<'a> {
    /// The first of `names` the batch has, in whichever of the types.
    fn of(batch: &'a RecordBatch, names: &[&'static str]) -> Result<Option<Int64Column<'a>>> {
        let Some((name, array)) = names
            .iter()
            .find_map(|name| Some((*name, batch.column_by_name(name)?)))
        else {
            return Ok(None);
        };
        let array = array.as_ref();
        let column = if let Some(a) = array.as_primitive_opt::<UInt64Type>() {
            Int64Column::Unsigned(a)
        } else if let Some(a) = array.as_primitive_opt::<Int64Type>() {
            Int64Column::Signed(a)
        } else if let Some(a) = array.as_primitive_opt::<TimestampMillisecondType>() {
            Int64Column::Millis(a)
        } else if let Some(a) = array.as_primitive_opt::<TimestampMicrosecondType>() {
            Int64Column::Micros(a)
        } else {
            return Err(Error::Schema {
                column: name,
                reason: format!("has type {}", array.data_type()),
            });
        };
        Ok(Some(column))
    }

    fn required(batch: &'a RecordBatch, names: &[&'static str]) -> Result<Int64Column<'a>> {
        Int64Column::of(batch, names)?.ok_or(Error::Schema {
            column: names[0],
            reason: "is missing".to_owned(),
        })
    }

    fn array(&self) -> &dyn Array {
        match self {
            Int64Column::Unsigned(a) => *a,
            Int64Column::Signed(a) => *a,
            Int64Column::Millis(a) => *a,
            Int64Column::Micros(a) => *a,
        }
    }

    /// The value of `row`: ms for a time, the raw number otherwise.
    fn value(&self, row: usize) -> i64 {
        match self {
            Int64Column::Unsigned(a) => a.value(row) as i64,
            Int64Column::Signed(a) => a.value(row),
            Int64Column::Millis(a) => a.value(row),
            Int64Column::Micros(a) => a.value(row).div_euclid(MICROS),
        }
    }

    fn value_opt(&self, row: usize) -> Option<i64> {
        self.array().is_valid(row).then(|| self.value(row))
    }
}

/// The offsets of a batch of a current-layout file.
pub(crate) fn offsets_of(batch: &RecordBatch) -> Result<Vec<i64>> {
    let offsets = Int64Column::required(batch, &["log_offset"])?;
    Ok((0..batch.num_rows())
        .map(|row| offsets.value(row))
        .collect())
}

/// The append times of a batch of a current-layout file, ms.
pub(crate) fn append_times_ms(batch: &RecordBatch) -> Result<Vec<i64>> {
    let times = Int64Column::required(batch, &["append_time"])?;
    Ok((0..batch.num_rows()).map(|row| times.value(row)).collect())
}

/// The records of one batch read from a segment file, in row order
/// (any format version).
pub fn decode_batch(batch: &RecordBatch) -> Result<Vec<StoredRecord>> {
    let offsets = Int64Column::required(batch, &["log_offset", "offset"])?;
    let timestamps = Int64Column::required(batch, &["append_time", "timestamp"])?;
    let txids = column(batch, "txid", |a| a.as_primitive_opt::<Int64Type>())?;
    let keys = column(batch, "key", |a| a.as_binary_opt::<i32>())?;
    let headers = HeaderColumn::of(batch)?;
    let payloads = column(batch, "payload", |a| a.as_binary_opt::<i32>())?;
    // Version 1 files have no such column.
    let producer_times = Int64Column::of(batch, &["producer_time", "producer_time_ms"])?;
    let optional = |array: &dyn Array, row: usize| array.is_valid(row);
    let mut records = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let null_payload = !optional(payloads, row);
        records.push(StoredRecord {
            offset: offsets.value(row) as u64,
            timestamp_ms: timestamps.value(row),
            record: Record {
                payload: if null_payload {
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(payloads.value(row))
                },
                null_payload,
                key: optional(keys, row).then(|| Bytes::copy_from_slice(keys.value(row))),
                headers: headers.row(row),
                txid: optional(txids, row).then(|| txids.value(row)),
                producer_time_ms: producer_times
                    .as_ref()
                    .and_then(|times| times.value_opt(row)),
            },
        });
    }
    Ok(records)
}

/// Every record of a whole segment file held in memory.
pub fn decode_file(bytes: Bytes) -> Result<Vec<StoredRecord>> {
    let parquet = |what| move |source| Error::Parquet { what, source };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet("read footer"))?;
    let columns = record_columns(builder.parquet_schema());
    let reader = (builder.with_projection(columns).build()).map_err(parquet("start reading"))?;
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

#[cfg(test)]
mod version_tests {
    use parquet::file::metadata::KeyValue;

    use super::{FORMAT_VERSION, check_format_version};

    #[test]
    fn only_known_layout_versions_are_read() {
        let with = |v: &str| {
            vec![KeyValue::new(
                "dlog.format_version".to_owned(),
                v.to_owned(),
            )]
        };
        assert!(check_format_version(Some(&with("1"))).is_ok());
        assert!(check_format_version(Some(&with(FORMAT_VERSION))).is_ok());
        assert!(check_format_version(None).is_ok());
        assert!(check_format_version(Some(&with("2"))).is_ok());
        let later = check_format_version(Some(&with("4"))).unwrap_err();
        assert!(later.contains("version 4"), "{later}");
    }
}
