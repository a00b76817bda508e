//! Joining whole segment files into one file without decoding their rows
//! (the fast path of a merge of small files, `dlog_compactor::merge`), and
//! cutting a file at a trim point with the columns it has
//! (`dlog_compactor::table_cut`).
//!
//! Each row group of each input file is copied into the output as it is,
//! column chunk by column chunk (compressed pages, statistics, column and
//! offset indexes), so a merge costs a copy of the bytes, not a decode and
//! an encode of every row. The output's row groups are the inputs' (up to
//! [`ROW_GROUP_ROWS`] rows each).
//!
//! The output's columns are the record columns, then the union of the
//! inputs' typed payload columns in field id order: a column an input
//! lacks (a field declared after it was written, or removed before) is
//! written as nulls for that input's rows, so no input loses the typed
//! values it was written with, whatever the namespace's schema says now.
//!
//! Only files in the current layout ([`FORMAT_VERSION`]) whose record
//! columns and typed columns agree (a name always with the same type and
//! field id) are joined; [`concat_files`] answers `None` otherwise, and
//! the caller decodes and encodes the records instead.
//!
//! A cut ([`cut_file`]) decodes the file's row groups as Arrow batches and
//! writes the rows from the trim point on, with every column of the file:
//! typed columns of fields since removed from the schema keep their
//! values.
//!
//! Like [`segment_file::encode_records`], the bytes are a pure function of
//! the inputs and the [`FileInfo`] (a retried merge or cut writes the same
//! object).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::{FieldRef, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{
    ArrowSchemaConverter, ArrowWriter, PARQUET_FIELD_ID_META_KEY,
    add_encoded_arrow_schema_to_metadata, parquet_to_arrow_schema,
};
use parquet::column::writer::{ColumnCloseResult, ColumnWriter};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::SchemaDescriptor;

use crate::segment_file::{self, Error, FORMAT_VERSION, FileInfo, Result, SegmentFile};

/// One input file: its bytes and what its footer says.
struct Input {
    bytes: Bytes,
    metadata: ParquetMetaData,
    /// Its typed payload columns by name, with the index of their leaf.
    typed_leaves: BTreeMap<String, usize>,
    /// How many top-level record columns come before them.
    record_roots: usize,
}

/// The files `files` (in offset order, together covering
/// `info.start_offset..info.end_offset`) joined into one file, or `None`
/// when they cannot be joined without decoding (see the module doc).
/// `time_range_ms` is the smallest and largest append time of their rows.
pub fn concat_files(
    files: &[Bytes],
    info: &FileInfo<'_>,
    time_range_ms: Option<(i64, i64)>,
) -> Result<Option<SegmentFile>> {
    let parquet = |what| move |source| Error::Parquet { what, source };
    let mut inputs = Vec::with_capacity(files.len());
    let mut typed: BTreeMap<i32, FieldRef> = BTreeMap::new();
    let record_schema = segment_file::schema();
    let mut next_offset = info.start_offset;
    for bytes in files {
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(bytes)
            .map_err(parquet("read footer"))?;
        let file_metadata = metadata.file_metadata();
        let Some(schema) = current_layout(&metadata)? else {
            return Ok(None);
        };
        // Each file holds the offsets that follow the previous one's, as
        // its footer says and its row count agrees (rows are not decoded).
        let Some((start, end)) = offset_range(&metadata) else {
            return Ok(None);
        };
        if start != next_offset || end < start || file_metadata.num_rows() as u64 != end - start {
            let rows = file_metadata.num_rows();
            return Err(incomplete(
                info,
                format!(
                    "a file of offsets {start}..{end} with {rows} rows where offset {next_offset} was due"
                ),
            ));
        }
        next_offset = end;
        let records = record_schema.fields().len();
        for field in &schema.fields()[records..] {
            let Some(id) = field_id(field) else {
                return Ok(None);
            };
            match typed.get(&id) {
                Some(known) if known != field => return Ok(None),
                Some(_) => {}
                None => {
                    typed.insert(id, field.clone());
                }
            }
        }
        let typed_leaves = typed_leaves(file_metadata.schema_descr(), records);
        inputs.push(Input {
            bytes: bytes.clone(),
            metadata,
            typed_leaves,
            record_roots: records,
        });
    }
    // One name for one id only (ids are never reused for another name).
    let mut names: Vec<&str> = typed.values().map(|f| f.name().as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|pair| pair[0] == pair[1]) {
        return Ok(None);
    }
    let fields: Vec<FieldRef> = (record_schema.fields().iter().cloned())
        .chain(typed.into_values())
        .collect();
    let schema = Schema::new(fields);
    let mut properties = segment_file::properties_for(info, &schema)?;
    add_encoded_arrow_schema_to_metadata(&schema, &mut properties);
    let descriptor = ArrowSchemaConverter::new()
        .convert(&schema)
        .map_err(parquet("convert schema"))?;
    // A chunk is copied only under the very column it was written as (a
    // file of another writer release could describe one otherwise).
    for input in &inputs {
        let own = input.metadata.file_metadata().schema_descr();
        for leaf in 0..descriptor.num_columns() {
            let source = source_leaf(input, leaf, &descriptor);
            if source.is_some_and(|source| own.column(source) != descriptor.column(leaf)) {
                return Ok(None);
            }
        }
    }
    let output_size: usize = files.iter().map(Bytes::len).sum();
    let mut writer = SerializedFileWriter::new(
        Vec::with_capacity(output_size),
        descriptor.root_schema_ptr(),
        Arc::new(properties),
    )
    .map_err(parquet("start writer"))?;
    let mut rows = 0u64;
    for input in &inputs {
        for group in 0..input.metadata.num_row_groups() {
            let mut out = writer
                .next_row_group()
                .map_err(parquet("start row group"))?;
            rows += copy_row_group(&mut out, input, group, &descriptor)?;
            out.close().map_err(parquet("finish row group"))?;
        }
    }
    if rows != info.end_offset - info.start_offset {
        return Err(incomplete(info, format!("{rows} rows in the files")));
    }
    let buffer = writer.into_inner().map_err(parquet("finish file"))?;
    Ok(Some(finished(buffer, rows, time_range_ms)))
}

/// A file short of (or past) the offsets `info` describes.
fn incomplete(info: &FileInfo<'_>, what: String) -> Error {
    Error::Incomplete {
        log: info.log.clone(),
        segment: info.segment_id,
        reason: format!(
            "{what} for offsets {}..{}",
            info.start_offset, info.end_offset
        ),
    }
}

/// A written file with its row count, checksum and time range.
fn finished(buffer: Vec<u8>, rows: u64, time_range_ms: Option<(i64, i64)>) -> SegmentFile {
    let crc32c = crc32c::crc32c(&buffer);
    SegmentFile {
        bytes: Bytes::from(buffer),
        rows,
        crc32c,
        time_range_ms,
    }
}

/// The Arrow schema of a file in the current layout: [`FORMAT_VERSION`],
/// the record columns first; `None` for another layout.
fn current_layout(metadata: &ParquetMetaData) -> Result<Option<Schema>> {
    let file_metadata = metadata.file_metadata();
    let version = (file_metadata.key_value_metadata().into_iter().flatten())
        .find(|kv| kv.key == "dlog.format_version")
        .and_then(|kv| kv.value.clone());
    if version.as_deref() != Some(FORMAT_VERSION) {
        return Ok(None);
    }
    let schema = parquet_to_arrow_schema(
        file_metadata.schema_descr(),
        file_metadata.key_value_metadata(),
    )
    .map_err(|source| Error::Parquet {
        what: "read schema",
        source,
    })?;
    let record_schema = segment_file::schema();
    let records = record_schema.fields().len();
    let agrees = schema.fields().len() >= records
        && schema.fields()[..records] == record_schema.fields()[..];
    Ok(agrees.then_some(schema))
}

/// The rows of a file from offset `from` on (to the file's end,
/// `info.end_offset`), with every column the file has, or `None` when the
/// file is not in the current layout (see the module doc).
pub fn cut_file(bytes: Bytes, from: u64, info: &FileInfo<'_>) -> Result<Option<SegmentFile>> {
    let parquet = |what| move |source| Error::Parquet { what, source };
    let arrow = |what| move |source| Error::Arrow { what, source };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet("read footer"))?;
    let Some(schema) = current_layout(builder.metadata())? else {
        return Ok(None);
    };
    let schema = Arc::new(schema);
    let properties = segment_file::properties_for(info, &schema)?;
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))
        .map_err(parquet("start writer"))?;
    let reader = builder.build().map_err(parquet("start reading"))?;
    let (mut rows, mut expected) = (0u64, from);
    let mut times: Option<(i64, i64)> = None;
    for batch in reader {
        let batch = batch.map_err(arrow("read rows"))?;
        // Same schema, with the file's own field metadata.
        let batch = batch
            .with_schema(schema.clone())
            .map_err(arrow("file schema"))?;
        let offsets = segment_file::offsets_of(&batch)?;
        // Offsets ascend by one: the rows from `from` on are a tail.
        let skip = offsets.iter().take_while(|&&o| o < from as i64).count();
        let kept = batch.slice(skip, batch.num_rows() - skip);
        for &offset in &offsets[skip..] {
            if offset != expected as i64 {
                return Err(incomplete(
                    info,
                    format!("offset {offset} where {expected} was due"),
                ));
            }
            expected += 1;
        }
        if kept.num_rows() == 0 {
            continue;
        }
        for time in segment_file::append_times_ms(&kept)? {
            times = Some(times.map_or((time, time), |(lo, hi)| (lo.min(time), hi.max(time))));
        }
        rows += kept.num_rows() as u64;
        writer.write(&kept).map_err(parquet("write rows"))?;
    }
    if expected != info.end_offset || info.start_offset != from {
        return Err(incomplete(info, format!("rows {from}..{expected}")));
    }
    let buffer = writer.into_inner().map_err(parquet("finish file"))?;
    Ok(Some(finished(buffer, rows, times)))
}

/// The Iceberg field id of a column, from its Parquet field id.
fn field_id(field: &FieldRef) -> Option<i32> {
    field
        .metadata()
        .get(PARQUET_FIELD_ID_META_KEY)?
        .parse()
        .ok()
}

/// The leaf index of each typed payload column of a file (a typed column
/// is one primitive leaf; the record columns come first).
fn typed_leaves(schema: &SchemaDescriptor, record_roots: usize) -> BTreeMap<String, usize> {
    (0..schema.num_columns())
        .filter(|&leaf| schema.get_column_root_idx(leaf) >= record_roots)
        .map(|leaf| (schema.column(leaf).path().parts()[0].clone(), leaf))
        .collect()
}

/// The leaf of `input` that output leaf `leaf` is copied from: the same
/// leaf for a record column (the record columns come first in both),
/// the typed column of the same name otherwise; `None`: the input has
/// no such column (it is written as nulls).
fn source_leaf(input: &Input, leaf: usize, output: &SchemaDescriptor) -> Option<usize> {
    if output.get_column_root_idx(leaf) < input.record_roots {
        return Some(leaf);
    }
    let column = output.column(leaf);
    input.typed_leaves.get(&column.path().parts()[0]).copied()
}

/// The offsets a file's footer says it holds (`dlog.start_offset`,
/// `dlog.end_offset`).
fn offset_range(metadata: &ParquetMetaData) -> Option<(u64, u64)> {
    let kv = metadata.file_metadata().key_value_metadata()?;
    let value = |key: &str| -> Option<u64> {
        kv.iter()
            .find(|kv| kv.key == key)?
            .value
            .as_deref()?
            .parse()
            .ok()
    };
    Some((value("dlog.start_offset")?, value("dlog.end_offset")?))
}

/// Whether a file is in the current layout, which [`concat_files`] joins
/// as it is.
pub fn is_current_layout(bytes: &Bytes) -> Result<bool> {
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(bytes)
        .map_err(|source| Error::Parquet {
            what: "read footer",
            source,
        })?;
    Ok(current_layout(&metadata)?.is_some())
}

/// Copies row group `group` of `input` into `out`, the output's columns in
/// order: a chunk of the input where it has the column, nulls where it has
/// not. Answers the row group's row count.
fn copy_row_group(
    out: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    input: &Input,
    group: usize,
    output: &SchemaDescriptor,
) -> Result<u64> {
    let parquet = |what| move |source| Error::Parquet { what, source };
    let row_group = input.metadata.row_group(group);
    let rows = row_group.num_rows() as u64;
    for leaf in 0..output.num_columns() {
        match source_leaf(input, leaf, output) {
            Some(source) => {
                let metadata = &input.metadata;
                let column_index = (metadata.column_index())
                    .and_then(|groups| groups.get(group)?.get(source).cloned());
                let offset_index = (metadata.offset_index())
                    .and_then(|groups| groups.get(group)?.get(source).cloned());
                let chunk = row_group.column(source);
                let close = ColumnCloseResult {
                    bytes_written: chunk.compressed_size() as u64,
                    rows_written: rows,
                    metadata: chunk.clone(),
                    bloom_filter: None,
                    column_index,
                    offset_index,
                };
                out.append_column(&input.bytes, close)
                    .map_err(parquet("copy column chunk"))?;
            }
            None => write_nulls(out, rows as usize)?,
        }
    }
    Ok(rows)
}

/// Writes the next column of `out` as `rows` nulls (a typed payload
/// column: an optional primitive at the top level).
fn write_nulls(out: &mut SerializedRowGroupWriter<'_, Vec<u8>>, rows: usize) -> Result<()> {
    let parquet = |what| move |source| Error::Parquet { what, source };
    let mut column = (out.next_column())
        .map_err(parquet("start null column"))?
        .ok_or(Error::Schema {
            column: "typed payload column",
            reason: "is missing from the output".to_owned(),
        })?;
    let levels = vec![0i16; rows];
    let written = match column.untyped() {
        ColumnWriter::BoolColumnWriter(w) => w.write_batch(&[], Some(&levels), None),
        ColumnWriter::Int64ColumnWriter(w) => w.write_batch(&[], Some(&levels), None),
        ColumnWriter::DoubleColumnWriter(w) => w.write_batch(&[], Some(&levels), None),
        ColumnWriter::ByteArrayColumnWriter(w) => w.write_batch(&[], Some(&levels), None),
        _ => {
            return Err(Error::Schema {
                column: "typed payload column",
                reason: "has a physical type payload fields never have".to_owned(),
            });
        }
    };
    written.map_err(parquet("write nulls"))?;
    column.close().map_err(parquet("finish null column"))
}
