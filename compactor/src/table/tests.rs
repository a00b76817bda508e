//! The table operations against a real SQLite catalog file and the
//! in-memory object store: idempotent appends, removals guarded by the
//! recorded trim point, racing compactors, re-created logs. Each case but
//! the race runs again against the Glue catalog, on a moto server
//! ([`cases`]); the Glue catalog's own conventions are checked at the end.

use bytes::Bytes;
use dlog_storage::objstore::{self, ObjectStoreHandle};
use dlog_storage::segment_file::{self, FileInfo, SegmentFile};
use dlog_wire::names::LogName;
use dlog_wire::payload_schema::PayloadSchema;
use dlog_wire::record::{Record, StoredRecord};
use object_store::path::Path;

use aws_sdk_glue::config::Credentials;
use dlog_testkit::MotoServer;

use super::{Appended, LogTables, Replaced, TableFile};

struct Setup {
    _dir: tempfile::TempDir,
    uri: String,
    objects: ObjectStoreHandle,
    /// The Glue-compatible server a `glue://` URI names.
    _moto: Option<MotoServer>,
}

/// A fresh SQLite catalog file, or the catalog database that
/// `DLOG_TEST_ICEBERG_CATALOG` names (`postgres://...`, an empty database:
/// how the Postgres catalog was checked by hand).
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let uri = std::env::var("DLOG_TEST_ICEBERG_CATALOG")
        .unwrap_or_else(|_| format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display()));
    Setup {
        _dir: dir,
        uri,
        objects: objstore::open("memory://").unwrap(),
        _moto: None,
    }
}

/// A fresh moto server as the Glue catalog, or `None` (skip) without one
/// outside CI.
fn glue_setup() -> Option<Setup> {
    let moto = MotoServer::start()?;
    Some(Setup {
        _dir: tempfile::tempdir().unwrap(),
        uri: moto.glue_uri(),
        objects: objstore::open("memory://").unwrap(),
        _moto: Some(moto),
    })
}

/// The credentials the tests sign Glue requests with (moto takes any).
fn test_credentials() -> Credentials {
    Credentials::new(
        MotoServer::ACCESS_KEY,
        MotoServer::SECRET_KEY,
        None,
        None,
        "dlog-tests",
    )
}

async fn open(setup: &Setup) -> LogTables {
    LogTables::open_with(&setup.uri, setup.objects.clone(), Some(test_credentials()))
        .await
        .unwrap()
}

/// Deletes every object under `folder` (a purge).
async fn wipe(objects: &ObjectStoreHandle, folder: &Path) {
    let listed: Vec<_> = futures::TryStreamExt::try_collect(object_store::ObjectStore::list(
        &*objects.store,
        Some(folder),
    ))
    .await
    .unwrap();
    for object in listed {
        object_store::ObjectStoreExt::delete(&*objects.store, &object.location)
            .await
            .unwrap();
    }
}

/// A segment file of `rows` JSON records `{"user":"u<i%3>","n":<i>}`.
fn file(rows: u64) -> SegmentFile {
    typed_file(rows, None)
}

/// [`file`] with the typed columns of `schema`.
fn typed_file(rows: u64, schema: Option<&PayloadSchema>) -> SegmentFile {
    let log: LogName = "lake/events".parse().unwrap();
    let records: Vec<StoredRecord> = (0..rows)
        .map(|i| StoredRecord {
            offset: i,
            timestamp_ms: 1_700_000_000_000 + i as i64,
            record: Record::new(Bytes::from(format!(r#"{{"user":"u{}","n":{i}}}"#, i % 3))),
        })
        .collect();
    let info = FileInfo {
        log: &log,
        segment_id: 1,
        start_offset: 0,
        end_offset: rows,
        payload_schema: schema,
    };
    segment_file::encode_records(&records, &info).unwrap()
}

fn key(objects: &ObjectStoreHandle, log: &LogName, id: u64, start: u64, end: u64) -> Path {
    segment_file::object_key(&objects.prefix, log, id, start, end)
}

/// Appends the segment `start..end` of `log` (log id `id`).
async fn append(tables: &LogTables, log: &LogName, id: u64, start: u64, end: u64) -> Appended {
    try_append(tables, log, id, start, end).await.unwrap()
}

/// [`append`], failures returned.
async fn try_append(
    tables: &LogTables,
    log: &LogName,
    id: u64,
    start: u64,
    end: u64,
) -> super::Result<Appended> {
    try_append_trimmed(tables, log, id, 0, start, end).await
}

/// [`try_append`] by a compactor that read the log's trim point as `trim`.
async fn try_append_trimmed(
    tables: &LogTables,
    log: &LogName,
    id: u64,
    trim: u64,
    start: u64,
    end: u64,
) -> super::Result<Appended> {
    let key = key(&tables.objects, log, id, start, end);
    let file = file(end - start);
    let entry = TableFile {
        key: &key,
        file: &file,
        segment_id: start / 10 + 1,
        start_offset: start,
        end_offset: end,
        time_range_ms: file.time_range_ms,
    };
    tables.append(log, id, trim, &entry).await
}

async fn an_append_is_committed_once_and_the_table_has_the_layout_ids(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/events".parse().unwrap();
    assert_eq!(append(&tables, &log, 4, 0, 10).await, Appended::Committed);
    assert_eq!(
        append(&tables, &log, 4, 0, 10).await,
        Appended::AlreadyThere
    );
    assert_eq!(append(&tables, &log, 4, 10, 20).await, Appended::Committed);
    let files = tables.data_files(&log).await.unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].starts_with("memory://ns=lake/log=events/id=4/"),
        "{files:?}"
    );

    // The catalog kept the ids written into the Parquet files.
    let table = tables.table(&log, 4, 0).await.unwrap();
    let schema = table.metadata().current_schema();
    for (path, id) in segment_file::FIELD_IDS {
        let field = schema
            .field_by_name(path)
            .unwrap_or_else(|| panic!("no field {path} in {schema:?}"));
        assert_eq!(field.id, id, "{path}");
    }
    assert_eq!(table.metadata().snapshots().count(), 2);
    // Engines may not delete files that leave the table: dlog does.
    assert_eq!(
        (table.metadata().properties().get("gc.enabled")).map(String::as_str),
        Some("false")
    );
}

async fn removed_files_leave_the_table_and_never_come_back(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/trimmed".parse().unwrap();
    for start in [0, 10, 20] {
        append(&tables, &log, 1, start, start + 10).await;
    }
    let old = key(&setup.objects, &log, 1, 0, 10);
    // 15 is inside the second file: only the first is wholly below.
    assert_eq!(tables.remove_below(&log, 1, 15).await.unwrap().files, 1);
    assert_eq!(
        tables.remove_below(&log, 1, 15).await.unwrap().files,
        0,
        "idempotent"
    );
    let files = tables.data_files(&log).await.unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(!files.contains(&setup.objects.url_of(&old)), "{files:?}");

    // A paused compactor's late append of the removed file is refused;
    // a file above the trim point still goes in.
    assert_eq!(append(&tables, &log, 1, 0, 10).await, Appended::BelowTrim);
    assert_eq!(append(&tables, &log, 1, 30, 40).await, Appended::Committed);
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 3);
    // Raising the trim point with nothing to remove records it alone, and
    // a file appended wholly below it is refused.
    let snapshots = tables
        .table(&log, 1, 0)
        .await
        .unwrap()
        .metadata()
        .snapshots()
        .count();
    assert_eq!(
        tables.remove_below(&log, 1, 20).await.unwrap().files,
        1,
        "10..20"
    );
    assert_eq!(tables.remove_below(&log, 1, 25).await.unwrap().files, 0);
    let table = tables.table(&log, 1, 0).await.unwrap();
    assert_eq!(
        table.metadata().snapshots().count(),
        snapshots + 1,
        "a property commit adds no snapshot"
    );
    assert_eq!(
        table.metadata().properties()[super::TRIM_OFFSET_PROPERTY],
        "25"
    );
    assert_eq!(append(&tables, &log, 1, 15, 25).await, Appended::BelowTrim);

    // Expiring keeps the current snapshot only once all are older.
    let now = dlog_wire::now_ms();
    tables.expire_snapshots(&log, 1, now + 1).await.unwrap();
    let table = tables.table(&log, 1, 0).await.unwrap();
    assert_eq!(table.metadata().snapshots().count(), 1);
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 2);
}

async fn a_copy_cut_at_the_trim_point_replaces_its_segments_file_once(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/cut".parse().unwrap();
    append(&tables, &log, 1, 0, 10).await;
    append(&tables, &log, 1, 10, 20).await;
    assert_eq!(tables.remove_below(&log, 1, 15).await.unwrap().files, 1);
    let segment = setup.objects.url_of(&key(&setup.objects, &log, 1, 10, 20));
    let across = tables.files_across(&log, 1, 15).await.unwrap();
    let bounds: Vec<_> = (across.iter())
        .map(|f| (f.location.as_str(), f.first_offset, f.last_offset))
        .collect();
    assert_eq!(bounds, vec![(segment.as_str(), Some(10), Some(19))]);
    assert!(tables.files_across(&log, 1, 10).await.unwrap().is_empty());

    let copy = file(5);
    let copy_key = segment_file::cut_key(
        &segment_file::cut_folder(&setup.objects.prefix, &log, 1, 2),
        (15, 20),
        copy.crc32c,
    );
    let entry = TableFile {
        key: &copy_key,
        file: &copy,
        segment_id: 2,
        start_offset: 15,
        end_offset: 20,
        time_range_ms: copy.time_range_ms,
    };
    let copies = tables.copies_prefix(&log, 1, 2);
    let replace = || tables.replace(&log, 1, 0, (&segment, &copies), &entry);
    assert_eq!(replace().await.unwrap(), Replaced::Committed);
    assert_eq!(replace().await.unwrap(), Replaced::AlreadyThere);
    let copy_url = setup.objects.url_of(&copy_key);
    assert_eq!(
        tables.data_files(&log).await.unwrap(),
        vec![copy_url.clone()]
    );
    assert!(tables.files_across(&log, 1, 15).await.unwrap().is_empty());

    // A paused compactor's late append of the segment's own file adds
    // nothing: the copy holds part of its rows.
    assert_eq!(
        append(&tables, &log, 1, 10, 20).await,
        Appended::AlreadyThere
    );
    // One of an earlier release appends it all the same, beside the copy:
    // the same cut again takes it out.
    let table = tables.table(&log, 1, 0).await.unwrap();
    let contents = super::files::Contents::of(&table).await.unwrap();
    let own_file = file(10);
    let own_key = key(&setup.objects, &log, 1, 10, 20);
    let own = TableFile {
        key: &own_key,
        file: &own_file,
        start_offset: 10,
        ..entry.clone()
    };
    let change = super::commit::Change {
        operation: iceberg::spec::Operation::Append,
        add: vec![super::files::data_file(&segment, &own).unwrap()],
        ..Default::default()
    };
    super::commit::commit(&table, contents, change, &tables.catalog)
        .await
        .unwrap();
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 2);
    assert_eq!(replace().await.unwrap(), Replaced::Committed);
    assert_eq!(
        tables.data_files(&log).await.unwrap(),
        vec![copy_url.clone()]
    );
    // A cut decided on an older trim point (a compactor paused past its
    // lease) changes nothing; a later one replaces the copy.
    let cut_at = |start: u64, end: u64| {
        let copy = file(end - start);
        let key = segment_file::cut_key(
            &segment_file::cut_folder(&setup.objects.prefix, &log, 1, 2),
            (start, end),
            copy.crc32c,
        );
        (key, copy)
    };
    let (late_key, late_copy) = cut_at(12, 20);
    let late = TableFile {
        key: &late_key,
        file: &late_copy,
        start_offset: 12,
        ..entry.clone()
    };
    assert_eq!(
        tables
            .replace(&log, 1, 0, (&segment, &copies), &late)
            .await
            .unwrap(),
        Replaced::Gone
    );
    assert_eq!(tables.data_files(&log).await.unwrap(), vec![copy_url]);
    let (next_key, next_copy) = cut_at(17, 20);
    let next = TableFile {
        key: &next_key,
        file: &next_copy,
        start_offset: 17,
        ..entry.clone()
    };
    assert_eq!(
        tables
            .replace(&log, 1, 0, (&segment, &copies), &next)
            .await
            .unwrap(),
        Replaced::Committed
    );
    let next_url = setup.objects.url_of(&next_key);
    assert_eq!(tables.data_files(&log).await.unwrap(), vec![next_url]);
    let table = tables.table(&log, 1, 0).await.unwrap();
    let operations: Vec<_> = (table.metadata().snapshots())
        .map(|s| s.summary().operation.clone())
        .collect();
    assert!(
        operations.contains(&iceberg::spec::Operation::Overwrite),
        "{operations:?}"
    );

    // The copy leaves the table with the segment's end.
    assert_eq!(tables.remove_below(&log, 1, 20).await.unwrap().files, 1);
    assert!(tables.data_files(&log).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_compactors_append_each_file_exactly_once() {
    let setup = setup();
    let log: LogName = "lake/race".parse().unwrap();
    let first = open(&setup).await;
    // Created before the race, so both see one table.
    append(&first, &log, 9, 0, 10).await;
    let second = open(&setup).await;
    let mut tasks = Vec::new();
    for (n, tables) in [first, second].into_iter().enumerate() {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            // Both append every file; each appends one of its own too.
            for start in (10..100).step_by(10) {
                outcomes.push(append(&tables, &log, 9, start, start + 10).await);
            }
            let own = 1_000 + n as u64 * 10;
            outcomes.push(append(&tables, &log, 9, own, own + 10).await);
            (tables, outcomes)
        }));
    }
    let mut committed = 0;
    let mut tables = None;
    for task in tasks {
        let (t, outcomes) = task.await.unwrap();
        committed += outcomes
            .iter()
            .filter(|o| **o == Appended::Committed)
            .count();
        tables = Some(t);
    }
    let files = tables.unwrap().data_files(&log).await.unwrap();
    let unique: std::collections::BTreeSet<&String> = files.iter().collect();
    assert_eq!(
        unique.len(),
        files.len(),
        "a file twice in the table: {files:?}"
    );
    assert_eq!(files.len(), 1 + 9 + 2, "{files:?}");
    assert_eq!(
        committed,
        9 + 2,
        "each shared file committed by one of the two"
    );
}

async fn a_recreated_log_gets_a_new_table_and_a_stale_compactor_cannot_take_it_back(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/again".parse().unwrap();
    append(&tables, &log, 3, 0, 10).await;
    // Deleted and re-created: log id 5 under the same name.
    append(&tables, &log, 5, 0, 10).await;
    let files = tables.data_files(&log).await.unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].contains("/id=5/"), "{files:?}");
    // The old log id's compactor (stale) is refused, not given the table.
    let err = try_append(&tables, &log, 3, 10, 20).await.unwrap_err();
    assert!(err.to_string().contains("re-created"), "{err}");
    tables.drop_log(&log, 3).await.unwrap();
    assert_eq!(
        tables.data_files(&log).await.unwrap().len(),
        1,
        "not its table"
    );
    tables.drop_log(&log, 5).await.unwrap();
    assert!(tables.data_files(&log).await.is_err(), "dropped");
}

async fn many_appends_keep_a_bounded_number_of_manifests(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/many".parse().unwrap();
    for n in 0..40 {
        assert_eq!(
            append(&tables, &log, 2, n * 10, n * 10 + 10).await,
            Appended::Committed
        );
    }
    let table = tables.table(&log, 2, 0).await.unwrap();
    let snapshot = table.metadata().current_snapshot().unwrap();
    let list = table.manifest_list_reader(snapshot).load().await.unwrap();
    assert!(
        list.entries().len() <= super::commit::MERGE_AT,
        "{} manifests after 40 appends",
        list.entries().len()
    );
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 40);
    // Removal after merges: exactly the files below the trim point go.
    assert_eq!(tables.remove_below(&log, 2, 205).await.unwrap().files, 20);
    let files = tables.data_files(&log).await.unwrap();
    assert_eq!(files.len(), 20);
    let summary = &tables.table(&log, 2, 0).await.unwrap();
    let summary = &summary
        .metadata()
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties;
    assert_eq!(summary["total-data-files"], "20", "{summary:?}");
    assert_eq!(summary["deleted-data-files"], "20", "{summary:?}");
}

async fn an_unreadable_table_of_a_purged_log_id_does_not_block_its_successor(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/zombie".parse().unwrap();
    append(&tables, &log, 3, 0, 10).await;
    // The purge deleted log id 3's folder, metadata included, but a late
    // compactor had registered the table again.
    let folder = segment_file::log_folder(&setup.objects.prefix, &log, 3);
    wipe(&setup.objects, &folder).await;
    assert!(tables.data_files(&log).await.is_err(), "unreadable");
    // Log id 3's own drop takes it (it lies in its folder)...
    tables.drop_log(&log, 3).await.unwrap();
    append(&tables, &log, 3, 0, 10).await;
    wipe(&setup.objects, &folder).await;
    // ...and the re-created log id 7 replaces it.
    assert_eq!(append(&tables, &log, 7, 0, 10).await, Appended::Committed);
    let files = tables.data_files(&log).await.unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].contains("/id=7/"), "{files:?}");

    // A stale compactor of log id 3 that cannot read id 7's table (here:
    // its metadata is gone) refuses, and never drops a newer log id's row.
    wipe(
        &setup.objects,
        &segment_file::log_folder(&setup.objects.prefix, &log, 7),
    )
    .await;
    assert!(try_append(&tables, &log, 3, 10, 20).await.is_err());
    let row = tables
        .catalog
        .location(&LogTables::ident(&log))
        .await
        .unwrap();
    assert!(
        row.is_some_and(|at| at.contains("/id=7/")),
        "id 7's row stays"
    );
}

#[test]
fn a_catalog_uri_is_shown_without_its_password() {
    use super::redacted_uri;
    assert_eq!(
        redacted_uri(
            "postgres://dlog:p%40ss%3A%2F@db.example:5432/iceberg?sslmode=verify-full&sslrootcert=/etc/dlog/rds-ca.pem"
        ),
        "postgres://dlog:***@db.example:5432/iceberg?sslmode=verify-full&sslrootcert=/etc/dlog/rds-ca.pem"
    );
    // No password, or no user at all: nothing to hide.
    for uri in [
        "postgres://dlog@db.example/iceberg",
        "postgres://db.example/iceberg?user=x",
        "sqlite:///var/lib/dlog/iceberg-catalog.db?mode=rwc",
        "sqlite:catalog.db",
    ] {
        assert_eq!(redacted_uri(uri), uri);
    }
}

async fn metadata_no_snapshot_refers_to_is_swept_and_the_table_still_works(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/swept".parse().unwrap();
    for n in 0..30 {
        append(&tables, &log, 3, n * 10, n * 10 + 10).await;
    }
    let folder = segment_file::log_folder(&setup.objects.prefix, &log, 3).join("metadata");
    let count = |kind: &'static str| {
        let objects = setup.objects.clone();
        let folder = folder.clone();
        async move {
            let listed: Vec<_> = futures::TryStreamExt::try_collect(
                object_store::ObjectStore::list(&*objects.store, Some(&folder)),
            )
            .await
            .unwrap();
            (listed.iter())
                .filter(|o| o.location.as_ref().ends_with(kind))
                .count()
        }
    };
    let manifests_before = count(".avro").await;
    let metadata_before = count(".metadata.json").await;

    // Nothing is old enough yet: a commit in flight may own any of them.
    let an_hour_ago = dlog_wire::now_ms() - 3_600_000;
    let swept = tables.remove_unreferenced_metadata(&log, 3, an_hour_ago);
    assert_eq!(swept.await.unwrap(), 0);

    let later = dlog_wire::now_ms() + 1;
    tables.expire_snapshots(&log, 3, later).await.unwrap();
    let swept = tables.remove_unreferenced_metadata(&log, 3, later + 1);
    let swept = swept.await.unwrap();
    assert!(swept > 0, "nothing swept");
    assert_eq!(
        count(".avro").await + count(".metadata.json").await + swept,
        manifests_before + metadata_before + 1,
        "the expiry wrote one metadata file"
    );
    let table = tables.table(&log, 3, 0).await.unwrap();
    let snapshot = table.metadata().current_snapshot().unwrap();
    let list = table.manifest_list_reader(snapshot).load().await.unwrap();
    // The current snapshot's list and manifests are what is left of them.
    assert_eq!(count(".avro").await, 1 + list.entries().len());
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 30);
    assert_eq!(
        append(&tables, &log, 3, 300, 310).await,
        Appended::Committed
    );
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 31);
}

async fn a_foreign_file_with_wide_bounds_does_not_keep_segments_out(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/foreign".parse().unwrap();
    assert_eq!(append(&tables, &log, 1, 0, 10).await, Appended::Committed);
    // Another engine's file in the table's data folder, with offsets far
    // past the log's.
    let table = tables.table(&log, 1, 0).await.unwrap();
    let contents = super::files::Contents::of(&table).await.unwrap();
    let folder = segment_file::log_folder(&setup.objects.prefix, &log, 1);
    let foreign_key = folder.join("data").join("engine-0001.parquet");
    let foreign_file = file(1000);
    let foreign = TableFile {
        key: &foreign_key,
        file: &foreign_file,
        segment_id: 0,
        start_offset: 0,
        end_offset: 1_000_000,
        time_range_ms: foreign_file.time_range_ms,
    };
    let location = setup.objects.url_of(&foreign_key);
    let change = super::commit::Change {
        operation: iceberg::spec::Operation::Append,
        add: vec![super::files::data_file(&location, &foreign).unwrap()],
        ..Default::default()
    };
    super::commit::commit(&table, contents, change, &tables.catalog)
        .await
        .unwrap();
    // dlog's own files still decide: the next segment goes in, the first
    // one is there already.
    assert_eq!(append(&tables, &log, 1, 10, 20).await, Appended::Committed);
    assert_eq!(
        append(&tables, &log, 1, 0, 10).await,
        Appended::AlreadyThere
    );
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 3);
}

/// A table gets the typed payload columns a file brings, with the file's
/// field ids, before the file: a field added later adds its column (the
/// earlier ones stay), a file of an earlier schema adds nothing, and a
/// file whose column id the table has under another name is refused.
async fn typed_columns_join_the_schema_before_their_files(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/typed".parse().unwrap();
    let first = PayloadSchema::declare(
        r#"{"fields":[{"name":"user","type":"string","required":true}]}"#,
        None,
    )
    .unwrap();
    let second = PayloadSchema::declare(
        r#"{"fields":[{"name":"n","type":"int64"},{"name":"at","type":"timestamp"}]}"#,
        Some(&first),
    )
    .unwrap();
    let append_typed = |start: u64, schema: PayloadSchema| {
        let tables = &tables;
        let log = log.clone();
        async move {
            let key = key(&tables.objects, &log, 4, start, start + 10);
            let file = typed_file(10, Some(&schema));
            let entry = TableFile {
                key: &key,
                file: &file,
                segment_id: start / 10 + 1,
                start_offset: start,
                end_offset: start + 10,
                time_range_ms: file.time_range_ms,
            };
            tables.append(&log, 4, 0, &entry).await
        }
    };
    let columns = |table: &iceberg::table::Table| -> Vec<(String, i32, String, bool)> {
        let schema = table.metadata().current_schema();
        (schema.as_struct().fields().iter())
            .filter(|f| f.id >= dlog_wire::payload_schema::FIRST_FIELD_ID)
            .map(|f| (f.name.clone(), f.id, f.field_type.to_string(), f.required))
            .collect()
    };
    let column = |name: &str, id: i32, kind: &str| (name.to_owned(), id, kind.to_owned(), false);

    assert_eq!(append(&tables, &log, 4, 0, 10).await, Appended::Committed);
    let table = tables.table(&log, 4, 0).await.unwrap();
    assert!(columns(&table).is_empty());
    let plain_schema = table.metadata().current_schema_id();

    assert_eq!(
        append_typed(10, first.clone()).await.unwrap(),
        Appended::Committed
    );
    let table = tables.table(&log, 4, 0).await.unwrap();
    assert_eq!(columns(&table), [column("user", 1000, "string")]);
    assert_ne!(table.metadata().current_schema_id(), plain_schema);
    // One snapshot per file: the schema change is a commit of its own.
    assert_eq!(table.metadata().snapshots().count(), 2);

    assert_eq!(
        append_typed(20, second.clone()).await.unwrap(),
        Appended::Committed
    );
    let table = tables.table(&log, 4, 0).await.unwrap();
    assert_eq!(
        columns(&table),
        [
            column("user", 1000, "string"),
            column("n", 1001, "long"),
            column("at", 1002, "timestamptz")
        ]
    );
    assert_eq!(table.metadata().last_column_id(), 1002);
    let evolved = table.metadata().current_schema_id();
    // A file of the first schema (an offload retried after the change).
    assert_eq!(append_typed(30, first).await.unwrap(), Appended::Committed);
    let table = tables.table(&log, 4, 0).await.unwrap();
    assert_eq!(table.metadata().current_schema_id(), evolved);
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 4);

    // Id 1001 under another name: the file stays out.
    let mut clash = second.clone();
    clash.fields[0].name = "count".to_owned();
    let refused = append_typed(40, clash).await.unwrap_err().to_string();
    assert!(refused.contains("typed columns"), "{refused}");
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 4);
}

async fn a_foreign_table_under_a_logs_name_is_refused_and_never_dropped(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/theirs".parse().unwrap();
    let ident = LogTables::ident(&log);
    // Another team's Iceberg table under the log's name, without dlog's
    // `dlog.log-id`.
    (tables
        .catalog
        .create_namespace_if_missing(ident.namespace())
        .await)
        .unwrap();
    let schema = iceberg::arrow::arrow_schema_to_schema(&segment_file::schema()).unwrap();
    let creation = iceberg::TableCreation::builder()
        .name("theirs".to_owned())
        .location("memory://elsewhere/theirs".to_owned())
        .schema(schema)
        .build();
    (tables
        .catalog
        .create_table(ident.namespace(), creation)
        .await)
        .unwrap();
    let theirs = tables.catalog.location(&ident).await.unwrap().unwrap();

    for id in [1, 2] {
        let err = try_append(&tables, &log, id, 0, 10).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("not created by dlog (no dlog.log-id)"),
            "{err}"
        );
    }
    // The log gets no table until the name is free.
    assert!(!tables.holds(&log), "the log still gets a table");
    // Neither a deleted log's drop nor a purge's takes it.
    tables.drop_log(&log, 1).await.unwrap();
    assert_eq!(
        tables.catalog.location(&ident).await.unwrap().as_deref(),
        Some(theirs.as_str()),
        "their table stays"
    );
}

async fn a_created_table_records_the_trim_point_at_once(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/trimmed".parse().unwrap();
    append(&tables, &log, 1, 0, 10).await;
    // Re-created, trimmed to 30 before its table was: the table has the
    // trim point from its creation on...
    assert_eq!(
        try_append_trimmed(&tables, &log, 2, 30, 30, 40)
            .await
            .unwrap(),
        Appended::Committed
    );
    let table = tables.table(&log, 2, 0).await.unwrap();
    assert_eq!(super::files::trim_offset_of(&table), 30);
    // ...so a compactor paused past its lease, with an older trim point,
    // cannot append a file below it (whose object retention deletes).
    assert_eq!(
        try_append_trimmed(&tables, &log, 2, 0, 10, 20)
            .await
            .unwrap(),
        Appended::BelowTrim
    );
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 1);
}

async fn the_backfill_takes_segments_offloaded_shortly_after_the_tables_creation(setup: Setup) {
    let tables = open(&setup).await;
    let log: LogName = "lake/margin".parse().unwrap();
    let table = tables.table(&log, 1, 0).await.unwrap();
    let created: i64 = table.metadata().properties()[super::CREATED_AT_PROPERTY]
        .parse()
        .unwrap();
    let margin = super::BACKFILL_MARGIN_MS;
    let segment = |id: u64, at: i64| (id, key(&tables.objects, &log, 1, id * 10, id * 10 + 10), at);
    let segments = [
        segment(1, created - 1),
        // Another compactor's clock behind, or an append to a table
        // dropped before its manifest write.
        segment(2, created + margin / 2),
        // Appended by its offload: missing now means taken out.
        segment(3, created + margin + 1),
    ];
    let backfill = tables.missing_files(&log, 1, 0, &segments).await.unwrap();
    assert_eq!(backfill.missing, [1, 2]);
    assert!(backfill.held_in_margin.is_empty(), "{backfill:?}");
}

/// Each case as a test against the SQL catalog (`sql`) and against the Glue
/// catalog on a moto server (`glue`). Not the race of two compactors: moto
/// ignores UpdateTable's `VersionId`, so a race there would lose commits
/// that AWS Glue refuses.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn sql() {
                super::$case(super::setup()).await;
            }

            #[tokio::test]
            async fn glue() {
                if let Some(setup) = super::glue_setup() {
                    super::$case(setup).await;
                }
            }
        }
    )*};
}

cases!(
    an_append_is_committed_once_and_the_table_has_the_layout_ids,
    removed_files_leave_the_table_and_never_come_back,
    a_copy_cut_at_the_trim_point_replaces_its_segments_file_once,
    a_recreated_log_gets_a_new_table_and_a_stale_compactor_cannot_take_it_back,
    many_appends_keep_a_bounded_number_of_manifests,
    an_unreadable_table_of_a_purged_log_id_does_not_block_its_successor,
    metadata_no_snapshot_refers_to_is_swept_and_the_table_still_works,
    a_foreign_file_with_wide_bounds_does_not_keep_segments_out,
    typed_columns_join_the_schema_before_their_files,
    a_foreign_table_under_a_logs_name_is_refused_and_never_dropped,
    a_created_table_records_the_trim_point_at_once,
    the_backfill_takes_segments_offloaded_shortly_after_the_tables_creation,
);

/// A Glue client of the setup's moto server, to look at what the catalog
/// wrote the way another engine would.
fn glue_client(setup: &Setup) -> aws_sdk_glue::Client {
    use aws_sdk_glue::config::{BehaviorVersion, Region};
    let moto = setup._moto.as_ref().expect("a Glue setup");
    let config = aws_sdk_glue::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(MotoServer::REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(test_credentials())
        .build();
    aws_sdk_glue::Client::from_conf(config)
}

#[tokio::test]
async fn a_glue_table_follows_the_iceberg_conventions_and_swaps_only_from_its_location() {
    let Some(setup) = glue_setup() else { return };
    let tables = open(&setup).await;
    let log: LogName = "lake/glued".parse().unwrap();
    let ident = LogTables::ident(&log);
    append(&tables, &log, 2, 0, 10).await;
    let first = tables.catalog.location(&ident).await.unwrap().unwrap();
    append(&tables, &log, 2, 10, 20).await;
    let second = tables.catalog.location(&ident).await.unwrap().unwrap();
    assert_ne!(first, second);

    // What engines read: an external table typed ICEBERG, naming its
    // current and previous metadata files, located in the log's folder.
    let glue = glue_client(&setup);
    let got = glue
        .get_table()
        .database_name("lake")
        .name("glued")
        .send()
        .await
        .unwrap();
    let table = got.table.unwrap();
    assert_eq!(table.table_type(), Some("EXTERNAL_TABLE"));
    let parameters = table.parameters().unwrap();
    assert_eq!(parameters["table_type"], "ICEBERG");
    assert_eq!(parameters["dlog.log-id"], "2", "dlog's mark");
    assert_eq!(parameters["metadata_location"], second);
    assert!(
        parameters.contains_key("previous_metadata_location"),
        "{parameters:?}"
    );
    let location = table.storage_descriptor().and_then(|sd| sd.location());
    assert_eq!(location, Some(tables.folder(&log, 2).as_str()));
    assert!(second.starts_with(&format!("{}/metadata/", tables.folder(&log, 2))));

    // A swap from a location the table has left is refused, and changes
    // nothing; one from its current location moves it.
    assert!(
        !tables
            .catalog
            .swap(&ident, &first, "memory://x")
            .await
            .unwrap()
    );
    assert_eq!(
        tables.catalog.location(&ident).await.unwrap().as_deref(),
        Some(second.as_str())
    );
    assert!(tables.catalog.swap(&ident, &second, &first).await.unwrap());
    let table = (glue
        .get_table()
        .database_name("lake")
        .name("glued")
        .send()
        .await)
        .unwrap()
        .table
        .unwrap();
    let parameters = table.parameters().unwrap();
    assert_eq!(parameters["metadata_location"], first);
    assert_eq!(parameters["previous_metadata_location"], second);
    // Other parameters stay.
    assert_eq!(parameters["table_type"], "ICEBERG");

    // A drop conditional on a location the table has left drops nothing.
    assert!(!tables.catalog.drop_if(&ident, &second).await.unwrap());
    assert!(tables.catalog.drop_if(&ident, &first).await.unwrap());
    assert_eq!(tables.catalog.location(&ident).await.unwrap(), None);
}

#[tokio::test]
async fn a_glue_commit_keeps_what_other_engines_set_on_the_table() {
    use aws_sdk_glue::types::{Column, StorageDescriptor, TableInput};
    let Some(setup) = glue_setup() else { return };
    let tables = open(&setup).await;
    let log: LogName = "lake/shared".parse().unwrap();
    append(&tables, &log, 2, 0, 10).await;
    let glue = glue_client(&setup);
    let get = || async {
        (glue
            .get_table()
            .database_name("lake")
            .name("shared")
            .send()
            .await)
            .unwrap()
            .table
            .unwrap()
    };
    // An engine adds its columns, partition keys, owner and a parameter.
    let table = get().await;
    let column = |name: &str| {
        Column::builder()
            .name(name)
            .r#type("string")
            .build()
            .unwrap()
    };
    let mut parameters = table.parameters().unwrap().clone();
    parameters.insert("engine.setting".to_owned(), "kept".to_owned());
    let sd = table.storage_descriptor().unwrap();
    let input = TableInput::builder()
        .name("shared")
        .table_type(table.table_type().unwrap())
        .owner("analytics")
        .description("events, by day")
        .partition_keys(column("day"))
        .set_parameters(Some(parameters))
        .storage_descriptor(
            StorageDescriptor::builder()
                .set_location(sd.location().map(str::to_owned))
                .columns(column("payload"))
                .build(),
        )
        .build()
        .unwrap();
    (glue
        .update_table()
        .database_name("lake")
        .table_input(input)
        .send()
        .await)
        .unwrap();

    append(&tables, &log, 2, 10, 20).await;
    let table = get().await;
    let parameters = table.parameters().unwrap();
    assert_eq!(
        parameters["metadata_location"],
        tables
            .catalog
            .location(&LogTables::ident(&log))
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(parameters["engine.setting"], "kept");
    assert_eq!(table.owner(), Some("analytics"));
    assert_eq!(table.description(), Some("events, by day"));
    let names = |columns: &[Column]| {
        columns
            .iter()
            .map(|c| c.name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(table.partition_keys()), ["day"]);
    let sd = table.storage_descriptor().unwrap();
    assert_eq!(names(sd.columns()), ["payload"]);
    assert_eq!(sd.location(), Some(tables.folder(&log, 2).as_str()));
    assert_eq!(tables.data_files(&log).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_glue_table_that_is_not_iceberg_is_never_deleted_nor_blocks_the_log() {
    use aws_sdk_glue::types::{DatabaseInput, TableInput};
    use std::collections::HashMap;
    let Some(setup) = glue_setup() else { return };
    let tables = open(&setup).await;
    let glue = glue_client(&setup);
    let database = DatabaseInput::builder().name("lake").build().unwrap();
    (glue.create_database().database_input(database).send().await).unwrap();
    let at = "memory://elsewhere/metadata/00000-x.metadata.json";
    let input = TableInput::builder()
        .name("foreign")
        .table_type("EXTERNAL_TABLE")
        .set_parameters(Some(HashMap::from([(
            "classification".to_owned(),
            "json".to_owned(),
        )])))
        .build()
        .unwrap();
    (glue
        .create_table()
        .database_name("lake")
        .table_input(input)
        .send()
        .await)
        .unwrap();
    let log: LogName = "lake/foreign".parse().unwrap();
    let ident = LogTables::ident(&log);
    // It names no metadata at all: nothing of dlog's to drop.
    assert!(!tables.catalog.drop_if(&ident, at).await.unwrap());
    // A deleted log's drop leaves it (not dlog's); the log gets no table
    // meanwhile, instead of failing every pass.
    tables.drop_log(&log, 1).await.unwrap();
    let err = try_append(&tables, &log, 1, 0, 10).await.unwrap_err();
    assert!(err.to_string().contains("not an Iceberg table"), "{err}");
    assert!(!tables.holds(&log), "the log still gets a table");
    let kept = (glue
        .get_table()
        .database_name("lake")
        .name("foreign")
        .send()
        .await)
        .unwrap();
    assert_eq!(kept.table().map(|t| t.name()), Some("foreign"));
}

#[tokio::test]
async fn a_missing_glue_table_is_not_found_and_mixed_case_names_are_refused() {
    let Some(setup) = glue_setup() else { return };
    let tables = open(&setup).await;
    // No database, then a database without the table.
    for name in ["nowhere/absent", "lake/absent"] {
        let log: LogName = name.parse().unwrap();
        let Err(err) = tables.catalog.load_table(&LogTables::ident(&log)).await else {
            panic!("{name}: no table expected");
        };
        assert_eq!(err.kind(), iceberg::ErrorKind::TableNotFound, "{err}");
        if name == "nowhere/absent" {
            append(&tables, &"lake/present".parse().unwrap(), 1, 0, 10).await;
        }
    }
    let log: LogName = "lake/Events".parse().unwrap();
    assert!(!tables.holds(&log), "the compactor gives it no table");
    assert!(tables.holds(&"lake/events".parse().unwrap()));
    let err = try_append(&tables, &log, 1, 0, 10).await.unwrap_err();
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.contains("lower case"), "{chain}");
}

#[tokio::test]
async fn a_glue_catalog_uri_is_parsed_strictly() {
    use super::glue::GlueUri;
    assert_eq!(
        GlueUri::parse("glue://?region=eu-west-1&endpoint=http://127.0.0.1:5000&catalog_id=123")
            .unwrap(),
        GlueUri {
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:5000".into()),
            catalog_id: Some("123".into()),
        }
    );
    assert_eq!(GlueUri::parse("glue://").unwrap(), GlueUri::default());
    for (uri, why) in [
        ("glue://host?region=x", "no host"),
        ("glue://?region=", "empty"),
        ("glue://?region=a&region=b", "twice"),
        ("glue://?warehouse=s3://b", "unknown key"),
    ] {
        let err = GlueUri::parse(uri).unwrap_err();
        assert!(err.contains(why), "{uri}: {err}");
    }
    // Opening says which URI failed, on one line.
    let objects = objstore::open("memory://").unwrap();
    let err = LogTables::open("glue://?bucket=x", objects)
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("glue://?bucket=x") && !shown.contains('\n'),
        "{shown}"
    );
}
