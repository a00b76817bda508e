//! Iceberg tables of the logs (ARCHITECTURE.md, "Iceberg tables"): one
//! table per log, `<namespace>.<log>` in an Iceberg SQL catalog (SQLite
//! or Postgres, the catalog pyiceberg, Spark and Trino call JDBC/SQL) or
//! in the AWS Glue Data Catalog, located in the log id's folder and holding that folder's Parquet files
//! as its data files, as they were written.
//!
//! The compactor appends each offloaded file to its log's table between
//! verifying the upload and marking the segment offloaded
//! ([`crate::offload`]), so a segment the manifest calls offloaded is in
//! the table. An append is idempotent: a file already in the table (a
//! crash after the commit, before the manifest write; or a second
//! compactor) is not added again. Each commit is decided on the table as
//! loaded and swapped in only if the table is still that one
//! ([`commit`]), so two compactors racing on one file leave it there once.
//!
//! Retention removes the files wholly below the log's trim point from the
//! table before their objects go, and records the trim point in the table
//! (`dlog.trim-offset`) in the same commit; an append of a file wholly below it is refused, so a
//! compactor that was paused past its lease never brings a removed file
//! back. A table records the log's trim point from its creation on (every
//! operation that may create it is given the manifest's), so a re-created
//! table refuses such a file too.
//!
//! A segment with the trim point inside it has its file swapped for a copy
//! holding its rows from the trim point on ([`LogTables::replace`],
//! driven by [`crate::table_cut`]); an append of a segment whose file or
//! copy is in the table adds nothing.
//!
//! Engines may not delete data files (`gc.enabled=false`): a file that
//! left the table may still be a segment's object, and the compactor
//! deletes files itself, a grace period after they left the table.
//!
//! A table belongs to one log id (table property `dlog.log-id`): a log
//! deleted and re-created under its name gets a new table, and a deleted
//! log's table is dropped with it. A table under a log's name without that
//! property is not dlog's (the catalog may be shared: a Glue database is
//! the account's) and is never dropped: the log's table operations fail
//! until someone renames or drops it.
//!
//! | module | owns |
//! |---|---|
//! | this one | a log's table (created, replaced, dropped), appends, removals, expiry |
//! | `catalog` | the catalog chosen by its URI: loads, creations, and the compare-and-swap and conditional drop of a table's entry |
//! | `sql` | the Iceberg SQL catalog (SQLite, Postgres) and its table rows |
//! | `glue` | the AWS Glue Data Catalog |
//! | `commit` | building a snapshot and swapping the catalog entry to it |
//! | `columns` | the typed payload columns a file brings, added to the table's schema before it |
//! | `files` | what a table holds: live files and their bounds, a file's entry, dlog's properties |
//! | `storage` | Iceberg's file access over the cluster's object store |

mod catalog;
mod columns;
mod commit;
mod files;
mod glue;
mod sql;
mod storage;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use dlog_storage::objstore::ObjectStoreHandle;
use dlog_storage::segment_file::{self, SegmentFile};
use dlog_wire::names::LogName;
use iceberg::spec::Operation;
use iceberg::table::Table;
use iceberg::{ErrorKind, NamespaceIdent, TableCreation, TableIdent};

use catalog::TableCatalog;
use commit::{Change, Outcome};
pub use files::LiveFile;
use files::{Contents, data_file, table_log_id, trim_offset_of};
use object_store::path::Path;

pub use storage::{ObjectStorage, ObjectStorageFactory};

/// The catalog name the tables are registered under in a SQL catalog
/// (`catalog_name` in its rows; pyiceberg's `SqlCatalog("dlog", ...)`).
pub const CATALOG_NAME: &str = "dlog";

/// `uri` with its password, if it has one, shown as `***`: for messages
/// and logs, which a cluster ships off the node (terraform/README.md), while
/// a Postgres catalog's URI carries the database password.
pub fn redacted_uri(uri: &str) -> String {
    let Some(scheme) = uri.find("://") else {
        return uri.to_owned();
    };
    let start = scheme + 3;
    let rest = &uri[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return uri.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return uri.to_owned();
    };
    format!("{}***{}", &uri[..start + colon + 1], &uri[start + at..])
}
/// The table property naming the log id a table holds.
pub const LOG_ID_PROPERTY: &str = "dlog.log-id";
/// The table property holding the log's trim point as of the last
/// removal: files wholly below it are not appended.
pub const TRIM_OFFSET_PROPERTY: &str = "dlog.trim-offset";
/// Iceberg's table property that lets engines delete data files no
/// snapshot lists any more (snapshot expiry, orphan removal, purge). Off
/// on dlog's tables: a file that leaves the table may still be a segment's
/// object that dlog's readers use (a segment cut at a trim point inside
/// it), and the compactor deletes files itself, a grace period after they
/// left the table.
const GC_ENABLED_PROPERTY: &str = "gc.enabled";
/// The table property holding when dlog created the table (ms): segments
/// offloaded before then are added by the backfill (`table_backfill`).
/// Tables of an earlier release have none, and get no backfill.
pub const CREATED_AT_PROPERTY: &str = "dlog.created-at-ms";
/// How long after a table's creation (`dlog.created-at-ms`) an offloaded
/// segment may have been and still be backfilled ([`LogTables::missing_files`]).
pub const BACKFILL_MARGIN_MS: i64 = 10 * 60 * 1000;
/// Commits lost to other commits in a row before an operation gives up
/// (until the next pass).
const ATTEMPTS: usize = 16;

/// An Iceberg operation failed.
#[derive(Debug, thiserror::Error)]
#[error("iceberg table {table}: {what}")]
pub struct Error {
    pub table: String,
    pub what: String,
    #[source]
    pub source: Option<iceberg::Error>,
}

impl Error {
    fn new(table: &str, what: impl Into<String>, source: Option<iceberg::Error>) -> Error {
        Error {
            table: table.to_owned(),
            what: what.into(),
            source,
        }
    }

    /// For `map_err`: Iceberg failed at `what` on `table`.
    fn wrap(table: &str, what: &str) -> impl FnOnce(iceberg::Error) -> Error + use<> {
        let (table, what) = (table.to_owned(), what.to_owned());
        move |err| Error {
            table,
            what,
            source: Some(err),
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

/// One offloaded file, as the table records it.
#[derive(Debug, Clone)]
pub struct TableFile<'a> {
    pub key: &'a Path,
    pub file: &'a SegmentFile,
    pub segment_id: u64,
    pub start_offset: u64,
    pub end_offset: u64,
    /// Append times of the first and last record, ms.
    pub time_range_ms: Option<(i64, i64)>,
}

/// What a removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Files taken out of the table.
    pub files: usize,
    /// A time no earlier than every snapshot that listed them, ms.
    pub at_ms: i64,
}

/// What a replacement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The new file is in the table instead of the old one now.
    Committed,
    /// The new file was in the table already.
    AlreadyThere,
    /// The old file is no longer in the table (replaced or removed by
    /// another commit): nothing was changed.
    Gone,
}

/// How long a log whose table name another's table takes goes without a
/// table before the name is looked at again.
const OCCUPIED_RECHECK_MS: i64 = 60 * 60 * 1000;

/// What the backfill should do with its candidate segments
/// ([`LogTables::missing_files`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backfill {
    /// Segments whose file the table lacks: to append.
    pub missing: Vec<u64>,
    /// Segments offloaded within the margin after the table's creation
    /// whose file it holds: to record as backfilled, so that they are never
    /// candidates again.
    pub held_in_margin: Vec<u64>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The file is in the table now.
    Committed,
    /// The file was in the table already (an earlier attempt committed it).
    AlreadyThere,
    /// The file lies wholly below the trim point the table records: it
    /// was removed, or would be at once.
    BelowTrim,
}

/// The Iceberg tables of every log, in one catalog.
pub struct LogTables {
    catalog: TableCatalog,
    objects: ObjectStoreHandle,
    /// Names taken by a table dlog did not create, and when that was
    /// found: such a log gets no table ([`Self::holds`]) until the name
    /// is looked at again, [`OCCUPIED_RECHECK_MS`] later.
    occupied: std::sync::Mutex<HashMap<LogName, i64>>,
}

impl std::fmt::Debug for LogTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTables")
            .field("root", &self.objects.root)
            .finish_non_exhaustive()
    }
}

impl LogTables {
    /// Opens the catalog at `uri`: the SQL catalog
    /// (`sqlite:///PATH?mode=rwc` or `postgres://...`, its tables created
    /// if need be) or the AWS Glue Data Catalog
    /// (`glue://?region=REGION`, `glue`).
    pub async fn open(uri: &str, objects: ObjectStoreHandle) -> Result<LogTables> {
        Self::open_with(uri, objects, None).await
    }

    /// [`Self::open`], with `glue_credentials` instead of the standard AWS
    /// chain's for a Glue catalog (the tests').
    pub(crate) async fn open_with(
        uri: &str,
        objects: ObjectStoreHandle,
        glue_credentials: Option<aws_sdk_glue::config::Credentials>,
    ) -> Result<LogTables> {
        let catalog = (TableCatalog::open(uri, &objects, glue_credentials).await).map_err(
            Error::wrap("catalog", &format!("open {}", redacted_uri(uri))),
        )?;
        Ok(LogTables {
            catalog,
            objects,
            occupied: std::sync::Mutex::default(),
        })
    }

    /// Whether the catalog can hold the log's table: not a Glue catalog
    /// and a name with an upper-case letter ([`glue`]). A log it cannot
    /// hold gets no table, and is compacted as without a catalog.
    pub fn holds(&self, log: &LogName) -> bool {
        if !self.catalog.holds(&Self::ident(log)) {
            return false;
        }
        let mut occupied = self.occupied.lock().unwrap_or_else(|p| p.into_inner());
        match occupied.get(log) {
            Some(at) if dlog_wire::now_ms() < at.saturating_add(OCCUPIED_RECHECK_MS) => false,
            Some(_) => {
                occupied.remove(log);
                true
            }
            None => true,
        }
    }

    /// The log's name is taken by a table dlog did not create: the log
    /// gets no table for now ([`Self::holds`]), and this error says why.
    /// Once the name is free again, the table dlog then creates gets every
    /// segment offloaded before it from the backfill.
    fn occupied_by_another(&self, log: &LogName, why: String) -> Error {
        (self.occupied.lock().unwrap_or_else(|p| p.into_inner()))
            .insert(log.clone(), dlog_wire::now_ms());
        tracing::warn!(%log, "the log's table name is taken by a table dlog did not create ({why}): \
            the log gets no table until the name is free (looked at again hourly)");
        Error::new(
            &log.to_string(),
            format!("{why}: the log gets no table until that table is renamed or dropped"),
            None,
        )
    }

    fn ident(log: &LogName) -> TableIdent {
        TableIdent::new(
            NamespaceIdent::new(log.namespace().to_string()),
            log.log().to_owned(),
        )
    }

    /// The table of `log_id` ([`Self::table`], created if missing, with
    /// `trim_offset`) with the manifests of its current snapshot, read once.
    async fn loaded(
        &self,
        log: &LogName,
        log_id: u64,
        trim_offset: u64,
    ) -> Result<(Table, Contents)> {
        let table = self.table(log, log_id, trim_offset).await?;
        let contents = (Contents::of(&table).await)
            .map_err(|err| Error::new(&log.to_string(), "list files", Some(err)))?;
        Ok((table, contents))
    }

    /// The table of `log_id` as it is, if there is one: never created, and
    /// `None` when the name's table is another log id's.
    async fn existing(&self, log: &LogName, log_id: u64) -> Result<Option<Table>> {
        match self.catalog.load_table(&Self::ident(log)).await {
            Ok(table) if table_log_id(&table) == Some(log_id) => Ok(Some(table)),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == ErrorKind::TableNotFound => Ok(None),
            Err(err) => Err(Error::new(&log.to_string(), "load", Some(err))),
        }
    }

    /// The table of `log_id`, created if missing. A table of an earlier
    /// log id under the name is dropped first (its files went, or go, with
    /// that log's purge), and so is an unreadable row whose metadata file
    /// is gone from an earlier log id's folder (a purged log's table). A
    /// table under the name without `dlog.log-id` is not dlog's: an error,
    /// and never dropped. A table created here records `trim_offset`, the
    /// log's trim point (the manifest's), as its trim point at once, so a
    /// compactor paused past its lease cannot append a file below it (one
    /// whose object retention deletes) to a re-created table.
    pub async fn table(&self, log: &LogName, log_id: u64, trim_offset: u64) -> Result<Table> {
        let ident = Self::ident(log);
        let name = log.to_string();
        let fail = |what: &str| Error::wrap(&name, what);
        let folder = self.folder(log, log_id);
        for _ in 0..ATTEMPTS {
            match self.catalog.load_table(&ident).await {
                Ok(table) => match table_log_id(&table) {
                    Some(id) if id == log_id => {
                        let properties = table.metadata().properties();
                        if properties.get(GC_ENABLED_PROPERTY) == Some(&"false".to_owned()) {
                            return Ok(table);
                        }
                        // A table of an earlier release: engines' garbage
                        // collection off.
                        let change = Change {
                            properties: HashMap::from([(
                                GC_ENABLED_PROPERTY.to_owned(),
                                "false".to_owned(),
                            )]),
                            ..Change::default()
                        };
                        // Best effort: a table the commit cannot reach now
                        // (a compactor's clock far behind the table's last
                        // update) keeps working, and is tried again at the
                        // next load.
                        match commit::commit(&table, Contents::default(), change, &self.catalog)
                            .await
                        {
                            Ok(_) => continue,
                            Err(err) => {
                                tracing::warn!(%log, log_id, "turning the table's garbage collection off: {err}");
                                return Ok(table);
                            }
                        }
                    }
                    Some(id) if id > log_id => {
                        return Err(Error::new(
                            &name,
                            format!(
                                "holds log id {id}, newer than {log_id}: the log was re-created"
                            ),
                            None,
                        ));
                    }
                    Some(_) => {
                        let at = table.metadata_location().unwrap_or_default().to_owned();
                        tracing::info!(%log, log_id, "dropping the table of an earlier log of this name");
                        // Only the table as loaded: not one created since.
                        (self.catalog.drop_if(&ident, &at).await)
                            .map_err(fail("drop the earlier log's table"))?;
                        continue;
                    }
                    // Not dlog's: the catalog may be shared (a Glue
                    // database is the account's), and another's table is
                    // never dropped.
                    None => {
                        let why =
                            format!("exists and was not created by dlog (no {LOG_ID_PROPERTY})");
                        return Err(self.occupied_by_another(log, why));
                    }
                },
                Err(err) if err.kind() == ErrorKind::TableNotFound => {}
                Err(err) => {
                    let at = match self.catalog.location(&ident).await {
                        Ok(at) => at,
                        // A Glue table that is not an Iceberg table.
                        Err(located) if located.kind() == ErrorKind::DataInvalid => {
                            return Err(self.occupied_by_another(log, located.to_string()));
                        }
                        Err(located) => return Err(fail("read the catalog row")(located)),
                    };
                    if let Some(at) = &at
                        && self.objects.key_of(at).is_none()
                    {
                        let why = format!("its metadata {at} lies outside dlog's object store");
                        return Err(self.occupied_by_another(log, why));
                    }
                    match at {
                        Some(at) if self.purged_metadata(log, log_id, &at).await => {
                            tracing::warn!(%log, log_id, metadata = %at,
                                "dropping the table of an earlier log id whose metadata is gone: {err}");
                            (self.catalog.drop_if(&ident, &at).await)
                                .map_err(fail("drop an unreadable table"))?;
                            continue;
                        }
                        _ => return Err(fail("load")(err)),
                    }
                }
            }
            let namespace = ident.namespace().clone();
            (self.catalog.create_namespace_if_missing(&namespace).await)
                .map_err(fail("create namespace"))?;
            let schema = iceberg::arrow::arrow_schema_to_schema(&segment_file::schema())
                .map_err(fail("schema"))?;
            let creation = TableCreation::builder()
                .name(log.log().to_owned())
                .location(folder.clone())
                .schema(schema)
                .properties([
                    (LOG_ID_PROPERTY.to_owned(), log_id.to_string()),
                    ("write.format.default".to_owned(), "parquet".to_owned()),
                    (GC_ENABLED_PROPERTY.to_owned(), "false".to_owned()),
                    (
                        CREATED_AT_PROPERTY.to_owned(),
                        dlog_wire::now_ms().to_string(),
                    ),
                    (TRIM_OFFSET_PROPERTY.to_owned(), trim_offset.to_string()),
                ])
                .build();
            match self.catalog.create_table(&namespace, creation).await {
                Ok(table) => return Ok(table),
                // Another compactor created it meanwhile: look again.
                Err(err) if err.kind() == ErrorKind::TableAlreadyExists => continue,
                Err(err) => return Err(fail("create")(err)),
            }
        }
        Err(Error::new(
            &name,
            format!("no stable table after {ATTEMPTS} attempts"),
            None,
        ))
    }

    /// Whether the metadata file `at` lies in the folder of a log id older
    /// than `log_id` and is gone from the object store (that log was
    /// purged). A load that failed for any other reason (the store did not
    /// answer) or a newer log id's table is never taken for this.
    async fn purged_metadata(&self, log: &LogName, log_id: u64, at: &str) -> bool {
        let base = self.folder(log, 0);
        let base = base.strip_suffix('0').unwrap_or(&base);
        let older = (at.strip_prefix(base))
            .and_then(|rest| rest.split('/').next())
            .and_then(|id| id.parse::<u64>().ok())
            .is_some_and(|id| id < log_id);
        let Some(key) = self.objects.key_of(at) else {
            return false;
        };
        older
            && matches!(
                object_store::ObjectStoreExt::head(&*self.objects.store, &key).await,
                Err(object_store::Error::NotFound { .. })
            )
    }

    /// The URL of the log id's folder: its table's location.
    fn folder(&self, log: &LogName, log_id: u64) -> String {
        let folder = segment_file::log_folder(&self.objects.prefix, log, log_id);
        self.objects.url_of(&folder)
    }

    /// Adds to `table` the typed payload columns of `file` it lacks, in a
    /// commit of its own before the file's ([`columns`]); true when the
    /// table changed (by this commit or another one that came first): the
    /// caller loads it again.
    async fn add_columns_of(&self, table: &Table, file: &SegmentFile, name: &str) -> Result<bool> {
        let what = "add the file's typed columns";
        let Some(schema) =
            columns::with_columns_of(table, file).map_err(Error::wrap(name, what))?
        else {
            return Ok(false);
        };
        let change = Change {
            schema: Some(schema),
            ..Change::default()
        };
        let outcome = (commit::commit(table, Contents::default(), change, &self.catalog).await)
            .map_err(Error::wrap(name, what))?;
        if outcome == Outcome::Committed {
            tracing::info!(
                table = name,
                "added a file's typed payload columns to the table's schema"
            );
        }
        Ok(true)
    }

    /// Appends one offloaded file to its log's table, unless it is there
    /// or below the table's trim point. The table gets the file's typed
    /// payload columns first, if it lacks some. `trim_offset`: the log's
    /// trim point, recorded by a table created here ([`Self::table`]).
    pub async fn append(
        &self,
        log: &LogName,
        log_id: u64,
        trim_offset: u64,
        file: &TableFile<'_>,
    ) -> Result<Appended> {
        let name = log.to_string();
        let location = self.objects.url_of(file.key);
        let failed = |what: &str| Error::wrap(&name, what);
        for _ in 0..ATTEMPTS {
            let (table, contents) = self.loaded(log, log_id, trim_offset).await?;
            if trim_offset_of(&table) >= file.end_offset {
                return Ok(Appended::BelowTrim);
            }
            // Its rows may be there in another file instead: a copy of it
            // cut at a trim point inside it (`replace`), or a file merged
            // from it and its neighbours' (`merge`). The table never holds
            // two files whose offsets overlap.
            let (start, end) = (file.start_offset as i64, file.end_offset as i64);
            // Only dlog's own files count: a file another engine wrote
            // with wide offset bounds must not keep segments out.
            let folder = segment_file::log_folder(&self.objects.prefix, log, log_id);
            let ours = self.folder_prefix(&folder);
            let dlog_file = |at: &str| {
                at.strip_prefix(&ours)
                    .is_some_and(|rest| !rest.contains('/') || rest.starts_with("_trimmed/"))
            };
            if (contents.live().iter()).any(|f| {
                f.location == location || (dlog_file(&f.location) && overlaps(f, start, end))
            }) {
                return Ok(Appended::AlreadyThere);
            }
            if self.add_columns_of(&table, file.file, &name).await? {
                continue;
            }
            let change = Change {
                operation: Operation::Append,
                add: vec![data_file(&location, file).map_err(failed("describe file"))?],
                summary: HashMap::from([
                    ("dlog.segment-id".to_owned(), file.segment_id.to_string()),
                    (
                        "dlog.start-offset".to_owned(),
                        file.start_offset.to_string(),
                    ),
                    ("dlog.end-offset".to_owned(), file.end_offset.to_string()),
                ]),
                ..Change::default()
            };
            match commit::commit(&table, contents, change, &self.catalog).await {
                Ok(Outcome::Committed) => return Ok(Appended::Committed),
                Ok(Outcome::Conflict) => continue,
                Err(err) => return Err(failed(&format!("append {location}"))(err)),
            }
        }
        Err(Error::new(
            &name,
            format!("append {location}: {ATTEMPTS} commits lost to others in a row"),
            None,
        ))
    }

    /// The live files of the log's table that hold rows both below and at
    /// or above `offset` (a segment's file with the log's trim point,
    /// `offset`, inside it); the table is created if it is missing, with
    /// `offset` as its trim point.
    pub async fn files_across(
        &self,
        log: &LogName,
        log_id: u64,
        offset: u64,
    ) -> Result<Vec<LiveFile>> {
        let (_, contents) = self.loaded(log, log_id, offset).await?;
        let offset = offset as i64;
        Ok((contents.live().into_iter())
            .filter(|file| {
                file.first_offset.is_some_and(|first| first < offset)
                    && file.last_offset.is_some_and(|last| last >= offset)
            })
            .collect())
    }

    /// Of `segments` (segment id, object key, when it was offloaded), those
    /// offloaded before the table was created, or up to
    /// [`BACKFILL_MARGIN_MS`] after, whose file the table does not hold,
    /// neither as it is nor as a copy cut at a trim point ([`Backfill`]).
    /// Segments offloaded later were appended by their offload: one missing
    /// now was taken out by something else (another engine), not lost, and
    /// is not brought back. The margin covers the compactors' clocks
    /// differing and a segment appended to a table dropped (and re-created)
    /// between its append and its manifest write; it is safe because a
    /// segment whose file is in the table is left out here, and an append
    /// of a file the table holds, or of one overlapping a dlog file it
    /// holds, adds nothing ([`Self::append`]: `AlreadyThere`). Segments in
    /// the margin whose file the table holds are answered too, for the
    /// caller to record as backfilled: otherwise they would stay
    /// candidates, and be brought back should another engine rewrite their
    /// file later. The table is created if it is missing, with
    /// `trim_offset`.
    pub async fn missing_files(
        &self,
        log: &LogName,
        log_id: u64,
        trim_offset: u64,
        segments: &[(u64, Path, i64)],
    ) -> Result<Backfill> {
        let (table, contents) = self.loaded(log, log_id, trim_offset).await?;
        // Tables of an earlier release have no creation time: no backfill.
        let created: Option<i64> = (table.metadata().properties().get(CREATED_AT_PROPERTY))
            .and_then(|at| at.parse::<i64>().ok());
        let (created, before) = match created {
            Some(at) => (at, at.saturating_add(BACKFILL_MARGIN_MS)),
            None => (i64::MIN, i64::MIN),
        };
        let live: Vec<String> = contents.live().into_iter().map(|f| f.location).collect();
        let mut backfill = Backfill::default();
        for (segment_id, key, offloaded_at) in segments {
            if *offloaded_at >= before {
                continue;
            }
            let own = self.objects.url_of(key);
            let copies = self.copies_prefix(log, log_id, *segment_id);
            let held = (live.iter()).any(|at| *at == own || at.starts_with(&copies));
            if !held {
                backfill.missing.push(*segment_id);
            } else if *offloaded_at >= created {
                backfill.held_in_margin.push(*segment_id);
            }
        }
        Ok(backfill)
    }

    /// The URL prefix of the copies of a segment's file cut at trim points
    /// inside it ([`segment_file::cut_folder`]).
    pub fn copies_prefix(&self, log: &LogName, log_id: u64, segment_id: u64) -> String {
        let folder = segment_file::cut_folder(&self.objects.prefix, log, log_id, segment_id);
        self.folder_prefix(&folder)
    }

    /// The URL prefix of the objects in `folder`.
    pub fn folder_prefix(&self, folder: &Path) -> String {
        format!("{}/", self.objects.url_of(folder))
    }

    /// Puts `new`, a copy of the segment's file holding its rows from a
    /// trim point on, in the table instead of every file of that segment it
    /// holds (the segment's own file at `own`, or earlier copies), in one
    /// commit (an Iceberg `overwrite` snapshot). Decided on the table as
    /// loaded, like every commit: nothing changes (`Gone`) if no file of the
    /// segment is left (another commit removed them), or if the table hides
    /// more of it already (a cut or a trim point at or past `new`'s start).
    /// `copies` is the URL prefix of the file's copies.
    pub async fn replace(
        &self,
        log: &LogName,
        log_id: u64,
        trim_offset: u64,
        (own, copies): (&str, &str),
        new: &TableFile<'_>,
    ) -> Result<Replaced> {
        let name = log.to_string();
        let location = self.objects.url_of(new.key);
        let failed = |what: &str| Error::wrap(&name, what);
        for _ in 0..ATTEMPTS {
            let (table, contents) = self.loaded(log, log_id, trim_offset).await?;
            let segments: Vec<LiveFile> = (contents.live().into_iter())
                .filter(|f| f.location == own || f.location.starts_with(copies))
                .collect();
            let there = segments.iter().any(|f| f.location == location);
            // The segment's other files, which `new` replaces.
            let others: Vec<&LiveFile> = (segments.iter())
                .filter(|f| f.location != location)
                .collect();
            // A cut decided on an older trim point (a compactor paused past
            // its lease) never brings back rows a later cut or removal hid.
            let start = new.start_offset as i64;
            let stale = trim_offset_of(&table) > new.start_offset
                || (others.iter()).any(|f| f.first_offset.is_none_or(|first| first >= start));
            if there && others.is_empty() {
                return Ok(Replaced::AlreadyThere);
            }
            if (!there && others.is_empty()) || stale {
                return Ok(Replaced::Gone);
            }
            if !there && self.add_columns_of(&table, new.file, &name).await? {
                continue;
            }
            // With `new` there already, only the others go: a whole file
            // appended beside it by a compactor of an earlier release.
            let add = if there {
                Vec::new()
            } else {
                vec![data_file(&location, new).map_err(failed("describe file"))?]
            };
            let remove = others.into_iter().map(|f| f.location.clone()).collect();
            let operation = if add.is_empty() {
                Operation::Delete
            } else {
                Operation::Overwrite
            };
            let change = Change {
                operation,
                add,
                remove,
                summary: HashMap::from([
                    ("dlog.segment-id".to_owned(), new.segment_id.to_string()),
                    ("dlog.start-offset".to_owned(), new.start_offset.to_string()),
                    ("dlog.end-offset".to_owned(), new.end_offset.to_string()),
                ]),
                ..Change::default()
            };
            match commit::commit(&table, contents, change, &self.catalog).await {
                Ok(Outcome::Committed) => return Ok(Replaced::Committed),
                Ok(Outcome::Conflict) => continue,
                Err(err) => return Err(failed(&format!("put {location} in"))(err)),
            }
        }
        Err(Error::new(
            &name,
            format!("put {location} in: {ATTEMPTS} commits lost to others in a row"),
            None,
        ))
    }

    /// Whether the file at `key` is a live data file of the log's table.
    pub async fn is_live(
        &self,
        log: &LogName,
        log_id: u64,
        trim_offset: u64,
        key: &Path,
    ) -> Result<bool> {
        let (_, contents) = self.loaded(log, log_id, trim_offset).await?;
        let location = self.objects.url_of(key);
        Ok(contents.live().iter().any(|f| f.location == location))
    }

    /// Whether the files at `olds` (adjacent segments' files holding the
    /// offsets `start..end`) may be merged: all live, no other live file
    /// holds any of those offsets, and the table's trim point is not past
    /// `start`. Looked at before a merge starts, so a merge the table
    /// would refuse is not begun.
    pub async fn mergeable(
        &self,
        log: &LogName,
        log_id: u64,
        trim_offset: u64,
        olds: &[String],
        (start, end): (u64, u64),
    ) -> Result<bool> {
        let (table, contents) = self.loaded(log, log_id, trim_offset).await?;
        let state = merge_state(&table, &contents.live(), olds, None, (start, end));
        Ok(state == MergeState::Ready)
    }

    /// Puts `new`, the files of adjacent segments merged into one, in the
    /// table instead of those files (`olds`, their locations), in one
    /// commit (an Iceberg `replace` snapshot: same rows, other files).
    /// Decided on the table as loaded: `Gone` (nothing changed) unless
    /// every old file is live, no other live file holds any of `new`'s
    /// offsets and the table's trim point is not past its start;
    /// `AlreadyThere` once `new` is live and no old file is.
    pub async fn merge(
        &self,
        log: &LogName,
        log_id: u64,
        trim_offset: u64,
        olds: &[String],
        new: &TableFile<'_>,
    ) -> Result<Replaced> {
        let name = log.to_string();
        let location = self.objects.url_of(new.key);
        let failed = |what: &str| Error::wrap(&name, what);
        let range = (new.start_offset, new.end_offset);
        for _ in 0..ATTEMPTS {
            let (table, contents) = self.loaded(log, log_id, trim_offset).await?;
            match merge_state(&table, &contents.live(), olds, Some(&location), range) {
                MergeState::Ready => {
                    if self.add_columns_of(&table, new.file, &name).await? {
                        continue;
                    }
                }
                MergeState::Done => return Ok(Replaced::AlreadyThere),
                MergeState::Refused => return Ok(Replaced::Gone),
                MergeState::Mixed => {
                    return Err(Error::new(
                        &name,
                        format!("{location} is in the table beside files it merged"),
                        None,
                    ));
                }
            }
            let change = Change {
                operation: Operation::Replace,
                add: vec![data_file(&location, new).map_err(failed("describe file"))?],
                remove: olds.iter().cloned().collect(),
                summary: HashMap::from([
                    ("dlog.start-offset".to_owned(), new.start_offset.to_string()),
                    ("dlog.end-offset".to_owned(), new.end_offset.to_string()),
                    ("dlog.merged-files".to_owned(), olds.len().to_string()),
                ]),
                ..Change::default()
            };
            match commit::commit(&table, contents, change, &self.catalog).await {
                Ok(Outcome::Committed) => return Ok(Replaced::Committed),
                Ok(Outcome::Conflict) => continue,
                Err(err) => return Err(failed(&format!("merge into {location}"))(err)),
            }
        }
        Err(Error::new(
            &name,
            format!("merge into {location}: {ATTEMPTS} commits lost to others in a row"),
            None,
        ))
    }

    /// Removes from the log's table every file wholly below `trim_offset`
    /// (by its `log_offset` upper bound), and records `trim_offset` as the
    /// table's trim point, in one commit; returns how many files it
    /// removed. Nothing is committed when there is nothing to change.
    /// Removing by bound rather than by a list of segments also takes out a
    /// file that a compactor paused past its lease appended after the
    /// manifest forgot its segment.
    pub async fn remove_below(
        &self,
        log: &LogName,
        log_id: u64,
        trim_offset: u64,
    ) -> Result<Removed> {
        let name = log.to_string();
        let failed = |what: &str| Error::wrap(&name, what);
        for _ in 0..ATTEMPTS {
            let (table, contents) = self.loaded(log, log_id, trim_offset).await?;
            let remove: std::collections::HashSet<String> = (contents.live().into_iter())
                .filter(|file| {
                    file.last_offset
                        .is_some_and(|last| last < trim_offset as i64)
                })
                .map(|file| file.location)
                .collect();
            let recorded = trim_offset_of(&table);
            let latest = table.metadata().last_updated_ms();
            if remove.is_empty() && recorded >= trim_offset {
                return Ok(Removed {
                    files: 0,
                    at_ms: latest,
                });
            }
            let removed = remove.len();
            let change = Change {
                operation: Operation::Delete,
                remove,
                properties: HashMap::from([(
                    TRIM_OFFSET_PROPERTY.to_owned(),
                    recorded.max(trim_offset).to_string(),
                )]),
                summary: HashMap::from([("dlog.trim-offset".to_owned(), trim_offset.to_string())]),
                ..Change::default()
            };
            match commit::commit(&table, contents, change, &self.catalog).await {
                Ok(Outcome::Committed) => {
                    // No earlier than any snapshot of the table: the grace
                    // of the removed files counts from here, whatever the
                    // clocks of the compactors that wrote the table.
                    let at_ms = dlog_wire::now_ms().max(latest);
                    return Ok(Removed {
                        files: removed,
                        at_ms,
                    });
                }
                Ok(Outcome::Conflict) => continue,
                Err(err) => return Err(failed("remove files")(err)),
            }
        }
        Err(Error::new(
            &name,
            format!("remove files: {ATTEMPTS} commits lost to others in a row"),
            None,
        ))
    }

    /// Expires the table's snapshots older than `older_than_ms` (the
    /// current one always stays), so that table readers stop finding the
    /// files removed before then, which may then be deleted. Metadata
    /// only: the files themselves are the compactor's to delete.
    pub async fn expire_snapshots(
        &self,
        log: &LogName,
        log_id: u64,
        older_than_ms: i64,
    ) -> Result<()> {
        let name = log.to_string();
        // No table of this log id: nothing to expire.
        let Some(mut table) = self.existing(log, log_id).await? else {
            return Ok(());
        };
        let failed = |err| Error::new(&name, "expire snapshots", Some(err));
        for _ in 0..ATTEMPTS {
            match commit::expire(&table, older_than_ms, &self.catalog).await {
                Ok(None | Some(Outcome::Committed)) => return Ok(()),
                Ok(Some(Outcome::Conflict)) => match self.existing(log, log_id).await? {
                    Some(again) => table = again,
                    None => return Ok(()),
                },
                Err(err) => return Err(failed(err)),
            }
        }
        Err(Error::new(
            &name,
            format!("expire snapshots: {ATTEMPTS} commits lost to others in a row"),
            None,
        ))
    }

    /// Deletes the files of the table's `metadata/` folder that were
    /// written before `older_than_ms` and that neither its current metadata
    /// (with the earlier versions its metadata log keeps) nor any of its
    /// snapshots refer to: the manifest lists and manifests of expired
    /// snapshots, metadata files the metadata log no longer names, and what
    /// commits that lost their race or died left behind. Younger files may
    /// belong to a commit in flight and stay. Only Iceberg's own kinds of
    /// file (`.avro`, `.metadata.json`) are deleted. Returns how many.
    pub async fn remove_unreferenced_metadata(
        &self,
        log: &LogName,
        log_id: u64,
        older_than_ms: i64,
    ) -> Result<usize> {
        let name = log.to_string();
        let failed = |what: &str| Error::wrap(&name, what);
        let Some(table) = self.existing(log, log_id).await? else {
            return Ok(0);
        };
        let metadata = table.metadata();
        // Only a table in its log id's folder: never another table's files
        // (one moved, or registered a second time over the same folder).
        if metadata.location() != self.folder(log, log_id) {
            return Err(Error::new(
                &name,
                format!(
                    "located at {}, not in its log's folder: metadata not swept",
                    metadata.location()
                ),
                None,
            ));
        }
        let mut referenced: std::collections::HashSet<String> = (metadata.metadata_log().iter())
            .map(|entry| entry.metadata_file.clone())
            .collect();
        referenced.extend(table.metadata_location().map(str::to_owned));
        referenced.extend((metadata.statistics_iter()).map(|f| f.statistics_path.clone()));
        referenced
            .extend((metadata.partition_statistics_iter()).map(|f| f.statistics_path.clone()));
        for snapshot in metadata.snapshots() {
            referenced.insert(snapshot.manifest_list().to_owned());
            let list = (table.manifest_list_reader(snapshot).load().await)
                .map_err(failed("read a manifest list"))?;
            referenced.extend(list.entries().iter().map(|m| m.manifest_path.clone()));
        }
        let folder = format!("{}/metadata", metadata.location());
        let Some(folder) = self.objects.key_of(&folder) else {
            return Err(Error::new(
                &name,
                format!("{folder} is outside the object store"),
                None,
            ));
        };
        let listed: Vec<object_store::ObjectMeta> =
            futures::TryStreamExt::try_collect(self.objects.store.list(Some(&folder)))
                .await
                .map_err(|err| Error::new(&name, format!("list {folder}: {err}"), None))?;
        let mut deleted = 0;
        for object in listed {
            let url = self.objects.url_of(&object.location);
            let iceberg_file = url.ends_with(".avro") || url.ends_with(".metadata.json");
            let old = object.last_modified.timestamp_millis() < older_than_ms;
            if !iceberg_file || !old || referenced.contains(&url) {
                continue;
            }
            match object_store::ObjectStoreExt::delete(&*self.objects.store, &object.location).await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(err) => {
                    return Err(Error::new(&name, format!("delete {url}: {err}"), None));
                }
            }
        }
        Ok(deleted)
    }

    /// Drops the table of `log_id` (a deleted log's purge, or the sweep of
    /// a purged log id), if it is that log id's: the row is deleted only
    /// if it still names the metadata this call looked at, never a table
    /// created since. Its files are the log folder's, which the purge
    /// deletes.
    pub async fn drop_log(&self, log: &LogName, log_id: u64) -> Result<()> {
        let ident = Self::ident(log);
        let name = log.to_string();
        for _ in 0..ATTEMPTS {
            let at = match self.catalog.load_table(&ident).await {
                Ok(table) if table_log_id(&table) == Some(log_id) => {
                    table.metadata_location().unwrap_or_default().to_owned()
                }
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == ErrorKind::TableNotFound => return Ok(()),
                Err(err) => {
                    // Unreadable (its metadata deleted by a purge): drop it
                    // if it lies in this log id's folder.
                    let folder = self.folder(log, log_id);
                    match self.catalog.location(&ident).await {
                        Ok(Some(at)) if at.starts_with(&format!("{folder}/")) => at,
                        Ok(_) => return Ok(()),
                        // Not an Iceberg table: not dlog's, nothing to drop.
                        Err(located) if located.kind() == ErrorKind::DataInvalid => return Ok(()),
                        Err(_) => return Err(Error::new(&name, "load", Some(err))),
                    }
                }
            };
            if (self.catalog.drop_if(&ident, &at).await)
                .map_err(|err| Error::new(&name, "drop", Some(err)))?
            {
                return Ok(());
            }
        }
        Err(Error::new(
            &name,
            format!("drop: {ATTEMPTS} tries lost to other commits"),
            None,
        ))
    }

    /// The locations of the table's live data files (its current snapshot).
    pub async fn data_files(&self, log: &LogName) -> Result<Vec<String>> {
        let name = log.to_string();
        let table = (self.catalog.load_table(&Self::ident(log)).await)
            .map_err(|err| Error::new(&name, "load", Some(err)))?;
        let contents = (Contents::of(&table).await)
            .map_err(|err| Error::new(&name, "list files", Some(err)))?;
        Ok(contents.live().into_iter().map(|f| f.location).collect())
    }
}

/// Whether the live file holds any offset of `start..end` (by its
/// `log_offset` bounds; a file without them holds none of dlog's rows).
fn overlaps(file: &LiveFile, start: i64, end: i64) -> bool {
    match (file.first_offset, file.last_offset) {
        (Some(first), Some(last)) => first < end && last >= start,
        _ => false,
    }
}

/// Where a merge of the files `olds` into the file at `new` stands in a
/// table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MergeState {
    /// Every old file is live, nothing else holds their offsets: commit.
    Ready,
    /// The merged file is live and none of the old ones: committed before.
    Done,
    /// The table changed so that the merge would lose or repeat rows.
    Refused,
    /// The merged file is live beside old ones: not a table dlog made.
    Mixed,
}

fn merge_state(
    table: &Table,
    live: &[LiveFile],
    olds: &[String],
    new: Option<&str>,
    (start, end): (u64, u64),
) -> MergeState {
    let is_live = |at: &str| live.iter().any(|f| f.location == at);
    let there = new.is_some_and(is_live);
    let olds_live = olds.iter().filter(|at| is_live(at)).count();
    match (there, olds_live) {
        (true, 0) => return MergeState::Done,
        (true, _) => return MergeState::Mixed,
        _ => {}
    }
    let (first, past) = (start as i64, end as i64);
    let strangers = (live.iter()).any(|f| !olds.contains(&f.location) && overlaps(f, first, past));
    if olds_live < olds.len() || strangers || trim_offset_of(table) > start {
        return MergeState::Refused;
    }
    MergeState::Ready
}
