//! The snapshots the compactor commits to a log's table: files added
//! (offload), files removed (retention, trim), or both (a merge), with
//! table properties set in the same commit. A schema change (typed payload
//! columns added) is a commit of its own, without files.
//!
//! Snapshot expiry, too, is a metadata commit of ours ([`expire`]).
//!
//! iceberg-rust 0.10 commits only appends and snapshot expiry itself, and
//! its transactions re-apply an action on a table that changed under them
//! without a condition of ours. So the compactor builds each snapshot with
//! the crate's manifest and metadata writers and commits it with the
//! catalog's compare-and-swap: the table's entry moves to the new metadata
//! file only if it still names the metadata this snapshot was built on
//! ([`TableCatalog::swap`]: a conditional row update in the SQL catalog,
//! a `VersionId`-guarded update in Glue). Every caller decides what to commit
//! from the table it loaded, so a lost race is simply done again on the
//! newer table, and whatever the race did (the file is there already, the
//! trim point moved past it) is seen there.
//!
//! Crash safety: manifests, the manifest list and the metadata file are
//! new objects under fresh names, written before the swap. A crash before
//! the swap leaves unreferenced files and the table as it was; after it,
//! the new snapshot is the table's.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestFile, ManifestListWriter, ManifestWriter,
    ManifestWriterBuilder, Operation, Schema, Snapshot, SnapshotReference, SnapshotRetention,
    Summary, TableMetadataBuilder,
};
use iceberg::table::Table;
use iceberg::{Error, ErrorKind, MetadataLocation, Result, TableUpdate};

use super::catalog::TableCatalog;
use super::files::Contents;

/// Manifests a table may have before a commit merges their live entries
/// into one.
pub(super) const MERGE_AT: usize = 16;

/// The longest a commit may take from its first write to the swap of the
/// catalog row: one that took longer (a compactor paused mid-commit) is
/// given up and done again on the table as it is then, since the metadata
/// sweep deletes files nothing refers to once they are a few days old, and
/// a commit's own files are unreferenced until its swap.
const COMMIT_MAX_MS: i64 = 60 * 60 * 1000;

/// One snapshot's change to a table.
#[derive(Debug, Default)]
pub struct Change {
    pub operation: Operation,
    pub add: Vec<DataFile>,
    /// Locations of live data files to remove.
    pub remove: HashSet<String>,
    /// Table properties set by the same commit.
    pub properties: HashMap<String, String>,
    /// Extra snapshot summary entries.
    pub summary: HashMap<String, String>,
    /// The table's new current schema; only in a commit without files.
    pub schema: Option<Schema>,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// Another commit moved the table first; decide again on the new one.
    Conflict,
}

/// Commits `change` on `table` as one new snapshot; `contents` are the
/// table's manifests as the caller read them to decide the change.
pub async fn commit(
    table: &Table,
    contents: Contents,
    change: Change,
    catalog: &TableCatalog,
) -> Result<Outcome> {
    let started_ms = dlog_wire::now_ms();
    let metadata = table.metadata();
    if metadata.format_version() != FormatVersion::V2 {
        return Err(Error::new(
            ErrorKind::FeatureUnsupported,
            format!(
                "table format {:?}: dlog writes format 2 tables",
                metadata.format_version()
            ),
        ));
    }
    let current_location = table.metadata_location_result()?.to_owned();
    if change.add.is_empty() && change.remove.is_empty() {
        let mut updates = Vec::new();
        if let Some(schema) = change.schema {
            updates.push(TableUpdate::AddSchema { schema });
            updates.push(TableUpdate::SetCurrentSchema {
                schema_id: TableMetadataBuilder::LAST_ADDED,
            });
        }
        if !change.properties.is_empty() {
            updates.push(TableUpdate::SetProperties {
                updates: change.properties,
            });
        }
        return apply(table, &current_location, updates, catalog, started_ms).await;
    }
    if change.schema.is_some() {
        return Err(Error::new(
            ErrorKind::FeatureUnsupported,
            "a schema change is committed on its own, before files with its columns",
        ));
    }
    let snapshot_id = fastrand::i64(1..i64::MAX);
    let sequence = metadata.next_sequence_number();
    let parent = metadata.current_snapshot_id();
    let folder = format!("{}/metadata", metadata.location());
    let file_io = table.file_io();

    let mut totals = Totals::default();
    let mut manifests: Vec<ManifestFile> = Vec::new();
    if !change.add.is_empty() {
        let path = format!("{folder}/dlog-{snapshot_id}-added.avro");
        let mut writer = manifest_writer(table, &path, snapshot_id)?;
        for file in &change.add {
            totals.added(file.record_count(), file.file_size_in_bytes());
            writer.add_file(file.clone(), sequence)?;
        }
        manifests.push(writer.write_manifest_file().await?);
    }
    let Contents { others, data } = contents;
    manifests.extend(others);
    // Past MERGE_AT manifests, the live entries are rewritten into one, so
    // that an append reads a bounded number of files however many segments
    // the log has offloaded (Iceberg's merge append).
    let merge = data.len() >= MERGE_AT;
    let mut rewrite: Option<ManifestWriter> = None;
    for (n, (manifest_file, manifest)) in data.iter().enumerate() {
        let live: Vec<_> = manifest.entries().iter().filter(|e| e.is_alive()).collect();
        for entry in &live {
            totals.existing(entry.record_count(), entry.file_size_in_bytes());
        }
        if !merge && !live.iter().any(|e| change.remove.contains(e.file_path())) {
            manifests.push(manifest_file.clone());
            continue;
        }
        // Rewritten: the kept files as existing, the removed as deleted.
        if rewrite.is_none() {
            let path = format!("{folder}/dlog-{snapshot_id}-m{n}.avro");
            rewrite = Some(manifest_writer(table, &path, snapshot_id)?);
        }
        let writer = rewrite.as_mut().expect("just made");
        for entry in live {
            // Inherited from the manifest when it was read: a live entry
            // without them is a broken table, not a 0.
            let (Some(data_sequence), Some(added_by)) =
                (entry.sequence_number(), entry.snapshot_id())
            else {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    format!(
                        "entry {} has no sequence number or snapshot id",
                        entry.file_path()
                    ),
                ));
            };
            let file_sequence = entry.file_sequence_number.or(Some(data_sequence));
            let file = entry.data_file().clone();
            if change.remove.contains(entry.file_path()) {
                totals.removed(entry.record_count(), entry.file_size_in_bytes());
                writer.add_delete_file(file, data_sequence, file_sequence)?;
            } else {
                writer.add_existing_file(file, added_by, data_sequence, file_sequence)?;
            }
        }
        if !merge {
            // One rewritten manifest per touched manifest.
            manifests.push(
                rewrite
                    .take()
                    .expect("just used")
                    .write_manifest_file()
                    .await?,
            );
        }
    }
    if let Some(writer) = rewrite {
        manifests.push(writer.write_manifest_file().await?);
    }

    let list_location = format!("{folder}/snap-{snapshot_id}-dlog.avro");
    let mut list = ManifestListWriter::v2(
        file_io.new_output(&list_location)?.writer().await?,
        snapshot_id,
        parent,
        sequence,
    );
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let mut summary = change.summary;
    summary.extend(totals.summary());
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence)
        .with_timestamp_ms(dlog_wire::now_ms().max(metadata.last_updated_ms()))
        .with_manifest_list(list_location)
        .with_summary(Summary {
            operation: change.operation,
            additional_properties: summary,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    let mut updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_owned(),
            reference: SnapshotReference::new(
                snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        },
    ];
    if !change.properties.is_empty() {
        updates.push(TableUpdate::SetProperties {
            updates: change.properties,
        });
    }
    apply(table, &current_location, updates, catalog, started_ms).await
}

/// Removes the table's snapshots replaced before `older_than_ms` from its
/// metadata, except the current one and any a branch or tag names; `None`
/// when there is none to remove. Metadata only: data files stay (dlog
/// deletes its own, a grace period after they left the table). Iceberg's
/// own expiry refuses tables with `gc.enabled=false`, which dlog's are,
/// since that action may also delete data files.
pub(super) async fn expire(
    table: &Table,
    older_than_ms: i64,
    catalog: &TableCatalog,
) -> Result<Option<Outcome>> {
    let started_ms = dlog_wire::now_ms();
    let metadata = table.metadata();
    let named = named_snapshots(metadata)?;
    let current = metadata.current_snapshot_id();
    // A snapshot is aged by when the next one replaced it on the main
    // branch (a reader that loaded the table just before may still plan on
    // it), or else by when it was taken.
    let history = metadata.history();
    let superseded: HashMap<i64, i64> = (history.iter().zip(history.iter().skip(1)))
        .map(|(entry, next)| (entry.snapshot_id, next.timestamp_ms))
        .collect();
    let expired: Vec<i64> = (metadata.snapshots())
        .filter(|s| {
            let aged_from = superseded.get(&s.snapshot_id()).copied();
            aged_from.unwrap_or(s.timestamp_ms()).max(s.timestamp_ms()) < older_than_ms
        })
        .map(|s| s.snapshot_id())
        .filter(|id| Some(*id) != current && !named.contains(id))
        .collect();
    if expired.is_empty() {
        return Ok(None);
    }
    let current_location = table.metadata_location_result()?.to_owned();
    let updates = vec![TableUpdate::RemoveSnapshots {
        snapshot_ids: expired,
    }];
    Ok(Some(
        apply(table, &current_location, updates, catalog, started_ms).await?,
    ))
}

/// The snapshots that a branch or tag names (`refs` in the table's
/// metadata, which the crate does not expose but serializes).
fn named_snapshots(metadata: &iceberg::spec::TableMetadata) -> Result<HashSet<i64>> {
    let json = serde_json::to_value(metadata).map_err(|err| {
        Error::new(ErrorKind::Unexpected, "serialize table metadata").with_source(err)
    })?;
    let refs = json.get("refs").and_then(|refs| refs.as_object());
    Ok((refs.into_iter().flat_map(|refs| refs.values()))
        .filter_map(|reference| reference.get("snapshot-id")?.as_i64())
        .collect())
}

/// Writes the table's metadata with `updates` applied as its next version,
/// then swaps the catalog entry to it.
async fn apply(
    table: &Table,
    current_location: &str,
    updates: Vec<TableUpdate>,
    catalog: &TableCatalog,
    started_ms: i64,
) -> Result<Outcome> {
    let mut builder = (table.metadata().clone()).into_builder(Some(current_location.to_owned()));
    for update in updates {
        builder = update.apply(builder)?;
    }
    let new_metadata = builder.build()?.metadata;
    let new_location = MetadataLocation::from_str(current_location)?
        .with_next_version()
        .with_new_metadata(&new_metadata);
    new_metadata
        .write_to(table.file_io(), &new_location)
        .await?;
    let took_ms = dlog_wire::now_ms().saturating_sub(started_ms);
    if took_ms > COMMIT_MAX_MS {
        tracing::warn!(table = %table.identifier(), took_ms, "a table commit took too long: given up, done again");
        return Ok(Outcome::Conflict);
    }
    let swapped = catalog
        .swap(
            table.identifier(),
            current_location,
            &new_location.to_string(),
        )
        .await?;
    Ok(if swapped {
        Outcome::Committed
    } else {
        Outcome::Conflict
    })
}

/// A writer of a new data manifest of `snapshot_id` at `path`, in the
/// table's current schema and partition spec.
fn manifest_writer(table: &Table, path: &str, snapshot_id: i64) -> Result<ManifestWriter> {
    let metadata = table.metadata();
    let output = table.file_io().new_output(path)?;
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().as_ref().clone();
    Ok(ManifestWriterBuilder::new(output, Some(snapshot_id), schema, spec).build_v2_data())
}

/// The record and file counts of a snapshot's summary.
#[derive(Debug, Default)]
struct Totals {
    added_files: u64,
    added_records: u64,
    added_size: u64,
    removed_files: u64,
    removed_records: u64,
    removed_size: u64,
    files: u64,
    records: u64,
    size: u64,
}

impl Totals {
    fn added(&mut self, records: u64, size: u64) {
        self.added_files += 1;
        self.added_records += records;
        self.added_size += size;
        self.existing(records, size);
    }

    fn existing(&mut self, records: u64, size: u64) {
        self.files += 1;
        self.records += records;
        self.size += size;
    }

    fn removed(&mut self, records: u64, size: u64) {
        self.removed_files += 1;
        self.removed_records += records;
        self.removed_size += size;
        self.files -= 1;
        self.records -= records;
        self.size -= size;
    }

    /// The summary keys of the Iceberg spec ("Optional snapshot summary
    /// fields") that engines show.
    fn summary(&self) -> HashMap<String, String> {
        let mut summary = HashMap::new();
        let mut put = |key: &str, value: u64| {
            summary.insert(key.to_owned(), value.to_string());
        };
        if self.added_files > 0 {
            put("added-data-files", self.added_files);
            put("added-records", self.added_records);
            put("added-files-size", self.added_size);
        }
        if self.removed_files > 0 {
            put("deleted-data-files", self.removed_files);
            put("deleted-records", self.removed_records);
            put("removed-files-size", self.removed_size);
        }
        put("total-data-files", self.files);
        put("total-records", self.records);
        put("total-files-size", self.size);
        put("total-delete-files", 0);
        put("total-position-deletes", 0);
        put("total-equality-deletes", 0);
        summary
    }
}
