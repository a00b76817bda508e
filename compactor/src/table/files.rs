//! What a log's table holds, as the compactor reads and writes it: its
//! live data files (with their `log_offset` bounds), the data file entry
//! of an offloaded file, and the dlog properties (log id, trim point).

use std::collections::HashMap;

use dlog_storage::segment_file;
use iceberg::ErrorKind;
use iceberg::spec::{
    DataContentType, DataFileBuilder, DataFileFormat, Datum, Manifest, ManifestContentType,
    ManifestFile, PrimitiveLiteral,
};
use iceberg::table::Table;

use super::{LOG_ID_PROPERTY, TRIM_OFFSET_PROPERTY, TableFile};

pub(super) fn table_log_id(table: &Table) -> Option<u64> {
    table
        .metadata()
        .properties()
        .get(LOG_ID_PROPERTY)
        .and_then(|id| id.parse().ok())
}

/// A live data file of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFile {
    pub location: String,
    /// Its smallest `log_offset` (the file's lower bound).
    pub first_offset: Option<i64>,
    /// Its largest `log_offset` (the file's upper bound).
    pub last_offset: Option<i64>,
}

/// The manifests of a table's current snapshot, read once: what the
/// compactor decides from (its live files) and what its commit carries
/// over or rewrites.
#[derive(Default)]
pub(super) struct Contents {
    /// Manifests dlog does not read (delete files another engine wrote,
    /// such as Spark's merge-on-read deletes): carried as they are.
    pub others: Vec<ManifestFile>,
    /// Data manifests with live entries, with their entries. A manifest
    /// of removed entries only was its snapshot's news and is left out.
    pub data: Vec<(ManifestFile, Manifest)>,
}

impl Contents {
    pub async fn of(table: &Table) -> iceberg::Result<Contents> {
        let mut contents = Contents::default();
        let Some(snapshot) = table.metadata().current_snapshot() else {
            return Ok(contents);
        };
        let list = table.manifest_list_reader(snapshot).load().await?;
        for manifest_file in list.entries() {
            if manifest_file.content != ManifestContentType::Data {
                contents.others.push(manifest_file.clone());
            } else if manifest_file.added_files_count != Some(0)
                || manifest_file.existing_files_count != Some(0)
            {
                let manifest = manifest_file.load_manifest(table.file_io()).await?;
                contents.data.push((manifest_file.clone(), manifest));
            }
        }
        Ok(contents)
    }

    /// The live data files.
    pub fn live(&self) -> Vec<LiveFile> {
        let offset_id = segment_file::FIELD_IDS[0].1;
        let entries = (self.data.iter()).flat_map(|(_, manifest)| manifest.entries());
        entries
            .filter(|entry| entry.is_alive())
            .map(|entry| {
                let file = entry.data_file();
                LiveFile {
                    location: entry.file_path().to_owned(),
                    first_offset: long_bound(file.lower_bounds().get(&offset_id)),
                    last_offset: long_bound(file.upper_bounds().get(&offset_id)),
                }
            })
            .collect()
    }
}

fn long_bound(bound: Option<&Datum>) -> Option<i64> {
    match bound?.literal() {
        PrimitiveLiteral::Long(value) => Some(*value),
        _ => None,
    }
}

/// The trim point the table records (0 when none).
pub(super) fn trim_offset_of(table: &Table) -> u64 {
    table
        .metadata()
        .properties()
        .get(TRIM_OFFSET_PROPERTY)
        .and_then(|offset| offset.parse().ok())
        .unwrap_or(0)
}

/// The data file entry of an offloaded file, with the offset and time
/// bounds engines prune by.
pub(super) fn data_file(
    location: &str,
    file: &TableFile<'_>,
) -> iceberg::Result<iceberg::spec::DataFile> {
    let id = |name: &str| {
        segment_file::FIELD_IDS
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, id)| *id)
            .expect("a column of the layout")
    };
    let mut lower = HashMap::new();
    let mut upper = HashMap::new();
    if file.end_offset > file.start_offset {
        // The removal by trim point reads this bound (`remove_below`).
        lower.insert(id("log_offset"), Datum::long(file.start_offset as i64));
        upper.insert(id("log_offset"), Datum::long(file.end_offset as i64 - 1));
    }
    if let Some((first, last)) = file.time_range_ms {
        let micros = segment_file::MICROS;
        lower.insert(
            id("append_time"),
            Datum::timestamptz_micros(first.saturating_mul(micros)),
        );
        upper.insert(
            id("append_time"),
            Datum::timestamptz_micros(last.saturating_mul(micros)),
        );
    }
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(location.to_owned())
        .file_format(DataFileFormat::Parquet)
        .record_count(file.file.rows)
        .file_size_in_bytes(file.file.bytes.len() as u64)
        .lower_bounds(lower)
        .upper_bounds(upper)
        .build()
        .map_err(|err| iceberg::Error::new(ErrorKind::DataInvalid, err.to_string()))
}
