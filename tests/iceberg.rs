//! Iceberg tables end to end with real processes: a real etcd, a real S3
//! server, cache, ingest, reader and compactor nodes (`dlog serve`), and a
//! SQLite file as the Iceberg SQL catalog. Readers no one here wrote
//! (pyiceberg through the same catalog, DuckDB, DataFusion) must find in a
//! log's table exactly the rows `dlog read` returns: after offloads, after
//! the compactor was killed at each step of offload and table commit, and
//! after a trim, whose files leave the table at once and the object store
//! a grace period later.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, Node};
use distributedlog::Client;
use dlog_meta::manifest::{SegmentMeta, SegmentState};
use dlog_testkit::{S3Server, require_python_module, stdout_of};
use dlog_wire::names::LogName;
use dlog_wire::record::Record;
use object_store::ObjectStoreExt;

/// The SQLite file both the compactor (sqlx) and pyiceberg (SQLAlchemy)
/// open as the catalog.
struct Catalog {
    _dir: tempfile::TempDir,
    /// For the compactor: `sqlite:///abs/path?mode=rwc`.
    sqlx: String,
    /// For pyiceberg: `sqlite:////abs/path`.
    sqlalchemy: String,
}

impl Catalog {
    fn new() -> Catalog {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("catalog.db");
        Catalog {
            sqlx: format!("sqlite://{}?mode=rwc", file.display()),
            sqlalchemy: format!("sqlite:///{}", file.display()),
            _dir: dir,
        }
    }
}

/// Records with keys, ordered and repeated headers, null payloads and
/// producer times, varied by `i`.
fn record(i: u64) -> Record {
    let mut record = if i % 9 == 4 {
        Record::null()
    } else {
        Record::new(Bytes::from(format!(
            "{{\"user\":\"u{}\",\"n\":{i}}}",
            i % 5
        )))
    };
    if !i.is_multiple_of(3) {
        record.key = Some(Bytes::from(format!("user-{}", i % 5)));
    }
    if i.is_multiple_of(2) {
        record.headers.push("z-trace", format!("t{i}"));
        record.headers.push("a", Bytes::from_static(b"\x00\xff"));
        record.headers.push("z-trace", "again");
    }
    if i.is_multiple_of(4) {
        record.txid = Some(i as i64);
    }
    if i.is_multiple_of(7) {
        record.producer_time_ms = Some(1_600_000_000_000 + i as i64);
    }
    record
}

/// Appends one segment's worth (`batches` × 40 records from `first`), then
/// seals it.
async fn append_segment(client: &Client, log: &str, first: u64, batches: u64) {
    for b in 0..batches {
        let records = (0..40).map(|i| record(first + b * 40 + i)).collect();
        client.append(log, records, None).await.unwrap();
    }
    client.seal(log).await.unwrap();
}

/// Waits until every closed segment of `log` satisfies `done` (and there
/// are `count` of them); returns them.
async fn wait_segments(
    cluster: &Cluster,
    log: &str,
    count: usize,
    what: &str,
    done: impl Fn(&SegmentMeta) -> bool,
) -> Vec<SegmentMeta> {
    let ready = |closed: &[SegmentMeta]| closed.len() == count && closed.iter().all(&done);
    (cluster.wait_closed_segments(log, what, Duration::from_secs(40), ready)).await
}

fn offloaded(segment: &SegmentMeta) -> bool {
    segment.state == SegmentState::Offloaded
}

/// What `dlog read --json` prints for the whole log, from the reader node.
fn dlog_read(cluster: &Cluster, log: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["read", log, "--json"])
        .env("DLOG_ENDPOINT", cluster.ingests[0].address())
        .env("DLOG_READ_ENDPOINT", cluster.readers[0].address())
        .envs(cluster.cli_env())
        .output()
        .unwrap();
    stdout_of(output, "dlog read")
}

/// Runs tests/python/check_iceberg.py on the log's table against `dlog
/// read`; returns what it found.
fn check_table(
    cluster: &Cluster,
    catalog: &Catalog,
    python: &std::path::Path,
    log: &str,
) -> serde_json::Value {
    let s3 = cluster.s3.as_ref().unwrap();
    let read = dlog_read(cluster, log);
    let dir = tempfile::tempdir().unwrap();
    let read_file = dir.path().join("read.jsonl");
    std::fs::write(&read_file, &read).unwrap();
    let env: BTreeMap<String, String> = s3.env().into_iter().collect();
    let name: LogName = log.parse().unwrap();
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/check_iceberg.py"
        ))
        .args([
            catalog.sqlalchemy.clone(),
            s3.endpoint(),
            S3Server::BUCKET.to_owned(),
            env["AWS_ACCESS_KEY_ID"].clone(),
            env["AWS_SECRET_ACCESS_KEY"].clone(),
            format!("{}.{}", name.namespace(), name.log()),
            read_file.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the table differs from dlog read:\n{}\n{}\ncompactor log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.compactors[0].log_text()
    );
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        found["rows"].as_u64().unwrap() as usize,
        read.lines().count(),
        "{found}"
    );
    found
}

/// Restarts `compactor` to crash at `point`, waits for the crash, then
/// starts it normally.
async fn crash_at(compactor: &mut Node, point: &str) {
    compactor.start_to_crash_at(point);
    assert!(
        compactor.wait_exit(Duration::from_secs(40)).await,
        "the compactor did not reach {point}:\n{}",
        compactor.log_text()
    );
    assert!(
        compactor.log_text().contains(&format!("failpoint {point}")),
        "the compactor died elsewhere than {point}"
    );
    compactor.start();
}

/// A cluster whose compactor has a catalog and a table file grace of 2 s,
/// with its catalog and the Python that has pyiceberg, DuckDB and
/// DataFusion; `None` (a skip) outside CI when something is missing.
async fn cluster_with_tables() -> Option<(Cluster, Catalog, std::path::PathBuf)> {
    let mut cluster = Cluster::start_with(3, 1, 1, 1).await?;
    let python = require_python_module("pyiceberg.catalog.sql, duckdb, datafusion")?;
    let catalog = Catalog::new();
    let compactor = &mut cluster.compactors[0];
    compactor.kill();
    compactor.set_env("DLOG_COMPACTOR__ICEBERG_CATALOG", &catalog.sqlx);
    compactor.set_env("DLOG_COMPACTOR__TABLE_FILE_GRACE", "2s");
    compactor.start();
    Some((cluster, catalog, python))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logs_table_holds_what_dlog_read_returns_through_crashes_and_a_trim() {
    let Some((mut cluster, catalog, python)) = cluster_with_tables().await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    let log = "lake/events";
    client.create_log(log).await.unwrap();
    for s in 0..3 {
        append_segment(&client, log, s * 1_000, 5).await;
    }
    wait_segments(&cluster, log, 3, "offloaded", offloaded).await;
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(
        (found["rows"].as_u64(), found["files"].as_u64()),
        (Some(600), Some(3)),
        "{found}"
    );

    // Killed between upload, table commit and manifest write: the next
    // compactor leaves each file in the table once.
    let points = ["offload.after_verify", "offload.after_table_commit"];
    for (i, point) in points.iter().enumerate() {
        cluster.compactors[0].kill();
        append_segment(&client, log, 10_000 + i as u64 * 1_000, 3).await;
        crash_at(&mut cluster.compactors[0], point).await;
        wait_segments(&cluster, log, 4 + i, "offloaded", offloaded).await;
    }
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(
        (found["rows"].as_u64(), found["files"].as_u64()),
        (Some(840), Some(5)),
        "{found}"
    );

    // A trim after the second segment, with the compactor killed right
    // after the removal commit: the two files leave the table, and their
    // objects and segments go after the grace period.
    let segments = wait_segments(&cluster, log, 5, "offloaded", offloaded).await;
    let boundary = segments[1].end_offset.unwrap();
    let removed_keys: Vec<String> = segments[..2]
        .iter()
        .map(|s| s.object.as_ref().unwrap().key.clone())
        .collect();
    cluster.compactors[0].kill();
    assert_eq!(client.trim(log, boundary).await.unwrap(), boundary);
    crash_at(&mut cluster.compactors[0], "retention.after_table_remove").await;
    wait_segments(&cluster, log, 3, "left after the trim", offloaded).await;
    let objects = cluster
        .s3
        .as_ref()
        .unwrap()
        .object_store(common::OBJECT_PREFIX);
    for key in &removed_keys {
        let head = objects
            .store
            .head(&object_store::path::Path::from(key.as_str()))
            .await;
        assert!(
            matches!(head, Err(object_store::Error::NotFound { .. })),
            "{key} outlived its segment: {head:?}"
        );
    }
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(
        (found["rows"].as_u64(), found["files"].as_u64()),
        (Some(440), Some(3)),
        "{found}"
    );
    assert_eq!(found["first"].as_u64(), Some(boundary), "{found}");
    let operations = found["operations"].to_string();
    assert!(operations.contains("delete"), "{found}");

    // A trim inside the first segment left, with the compactor killed
    // after uploading the cut copy of its file: the table then holds that
    // segment's rows from the trim point on, as `dlog read` does.
    let inside = boundary + 50;
    let straddling = segments[2].clone();
    cluster.compactors[0].kill();
    assert_eq!(client.trim(log, inside).await.unwrap(), inside);
    crash_at(&mut cluster.compactors[0], "retention.after_cut_upload").await;
    let cut = |s: &SegmentMeta| s.start_offset >= inside || s.table_cut_offset == Some(inside);
    wait_segments(&cluster, log, 3, "cut at the trim point", cut).await;
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(
        (found["rows"].as_u64(), found["files"].as_u64()),
        (Some(390), Some(3)),
        "{found}"
    );
    assert_eq!(found["first"].as_u64(), Some(inside), "{found}");
    assert!(
        found["operations"].to_string().contains("overwrite"),
        "{found}"
    );

    // A trim past that segment: its file and its copy leave the table, and
    // both objects go after the grace period.
    let past = straddling.end_offset.unwrap();
    assert_eq!(client.trim(log, past).await.unwrap(), past);
    wait_segments(&cluster, log, 2, "left after the trim", offloaded).await;
    let name: LogName = log.parse().unwrap();
    let copies = dlog_storage::segment_file::cut_folder(
        &objects.prefix,
        &name,
        cluster.manifest.log(&name).await.unwrap().log_id,
        straddling.segment_id,
    );
    let left: Vec<_> = futures::TryStreamExt::try_collect(object_store::ObjectStore::list(
        &*objects.store,
        Some(&copies),
    ))
    .await
    .unwrap();
    assert!(left.is_empty(), "copies outlived their segment: {left:?}");
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(
        (found["rows"].as_u64(), found["files"].as_u64()),
        (Some(240), Some(2)),
        "{found}"
    );
}

/// A catalog configured on a cluster that offloaded without one, with a
/// trim point inside a segment: the sweep adds the segments offloaded
/// before (that one as a copy cut at the trim point), and the table then
/// holds what `dlog read` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segments_offloaded_before_the_catalog_join_the_table() {
    let Some(mut cluster) = Cluster::start_with(3, 1, 1, 1).await else {
        return;
    };
    let Some(python) = require_python_module("pyiceberg.catalog.sql, duckdb, datafusion") else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    let log = "lake/before";
    client.create_log(log).await.unwrap();
    for s in 0..2 {
        append_segment(&client, log, s * 1_000, 3).await;
    }
    wait_segments(&cluster, log, 2, "offloaded", offloaded).await;
    // A trim point inside the first segment: the table gets the rows from
    // there on, in a copy of that segment's file.
    assert_eq!(client.trim(log, 50).await.unwrap(), 50);

    let catalog = Catalog::new();
    let compactor = &mut cluster.compactors[0];
    compactor.kill();
    compactor.set_env("DLOG_COMPACTOR__ICEBERG_CATALOG", &catalog.sqlx);
    compactor.set_env("DLOG_COMPACTOR__ORPHAN_SWEEP_INTERVAL", "1s");
    compactor.start();
    append_segment(&client, log, 5_000, 2).await;
    wait_segments(&cluster, log, 3, "offloaded", offloaded).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !(cluster.compactors[0].log_text()).contains("added offloaded segments missing") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backfill:\n{}",
            cluster.compactors[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(
        (found["rows"].as_u64(), found["files"].as_u64()),
        (Some(270), Some(3)),
        "{found}"
    );
    assert_eq!(found["first"].as_u64(), Some(50), "{found}");
    // Each added once (three files above): recorded on the segments
    // offloaded before the catalog. The one offloaded with it was appended
    // by its offload; a sweep after that records it too (it lies within
    // the backfill's margin after the table's creation, and is in the
    // table), whether or not that sweep ran yet.
    let segments = wait_segments(&cluster, log, 3, "offloaded", offloaded).await;
    let backfilled: Vec<bool> = (segments.iter())
        .map(|s| s.table_backfilled_at_ms.is_some())
        .collect();
    assert_eq!(backfilled[..2], [true, true], "{backfilled:?}");
}

/// Small files merged three by three, with the compactor killed at every
/// step of a merge and of the deletion of the files it replaced: the
/// table, and `dlog read`, hold every row once throughout; a trim inside
/// a merged file cuts it for the table; a trim past it deletes it with the
/// last of its segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_files_merge_through_crashes_and_trims() {
    let Some((mut cluster, catalog, python)) = cluster_with_tables().await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    let log = "lake/merged";
    client.create_log(log).await.unwrap();
    // Records numbered from 100 000 on, so that every file is about as big.
    let first_record = |segment: u64| 100_000 + segment * 1_000;
    append_segment(&client, log, first_record(0), 2).await;
    let first = wait_segments(&cluster, log, 1, "offloaded", offloaded).await;
    let size = first[0].object.as_ref().unwrap().size;
    // Three files fit in the target, four do not.
    let target = (size * 3 + size / 2).to_string();
    cluster.compactors[0].kill();
    cluster.compactors[0].set_env("DLOG_COMPACTOR__MERGE_TARGET_BYTES", &target);

    // Run r (segment ids 3r-2..=3r) is merged once segment 3r+1 is
    // offloaded: each round adds three segments and kills the compactor
    // at one step.
    let points = [
        "merge.after_intent",
        "merge.after_upload",
        "merge.after_table_commit",
        "merge.after_manifest",
        "merge.after_retired_delete",
    ];
    let merged_through = |runs: u64, retired: bool| {
        move |s: &SegmentMeta| {
            let merged = s.object.as_ref().is_some_and(|o| o.merged.is_some())
                && s.merging_into.is_none()
                && (!retired || s.retired_object.is_none());
            offloaded(s) && (s.segment_id > 3 * runs || merged)
        }
    };
    for (round, point) in (1..).zip(points) {
        for s in 0..3 {
            append_segment(&client, log, first_record(3 * round - 2 + s), 2).await;
        }
        crash_at(&mut cluster.compactors[0], point).await;
        let count = 3 * round as usize + 1;
        wait_segments(&cluster, log, count, "merged", merged_through(round, false)).await;
        cluster.compactors[0].kill();
    }
    cluster.compactors[0].start();
    let segments = wait_segments(&cluster, log, 16, "merged and retired", |s| {
        merged_through(5, true)(s)
    })
    .await;
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(
        (found["rows"].as_u64(), found["files"].as_u64()),
        (Some(16 * 80), Some(6)),
        "{found}"
    );
    assert!(
        found["operations"].to_string().contains("replace"),
        "{found}"
    );
    // Nothing left behind: five merged objects and the last segment's own.
    let s3 = cluster.s3.as_ref().unwrap();
    let objects = s3.object_store(common::OBJECT_PREFIX);
    let name: LogName = log.parse().unwrap();
    let log_id = cluster.manifest.log(&name).await.unwrap().log_id;
    let data_objects = || async {
        let folder = dlog_storage::segment_file::log_folder(&objects.prefix, &name, log_id);
        let listed: Vec<object_store::ObjectMeta> = futures::TryStreamExt::try_collect(
            object_store::ObjectStore::list(&*objects.store, Some(&folder)),
        )
        .await
        .unwrap();
        (listed.into_iter())
            .map(|o| o.location.to_string())
            .filter(|at| !at.contains("/metadata/"))
            .collect::<Vec<String>>()
    };
    assert_eq!(data_objects().await.len(), 6, "{:?}", data_objects().await);

    // A trim inside the second merged file (in its middle segment): the
    // table holds the rows from there on.
    let inside = segments[4].start_offset + 30;
    assert_eq!(client.trim(log, inside).await.unwrap(), inside);
    let cut = |s: &SegmentMeta| s.start_offset >= inside || s.table_cut_offset == Some(inside);
    wait_segments(&cluster, log, 12, "cut at the trim point", cut).await;
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(found["first"].as_u64(), Some(inside), "{found}");
    assert_eq!(found["rows"].as_u64(), Some(16 * 80 - inside), "{found}");

    // A trim past the second merged file: it goes with its last segment,
    // and the first one with its own.
    let past = segments[5].end_offset.unwrap();
    assert_eq!(client.trim(log, past).await.unwrap(), past);
    wait_segments(&cluster, log, 10, "left after the trim", offloaded).await;
    let left = data_objects().await;
    assert_eq!(left.len(), 4, "{left:?}");
    let found = check_table(&cluster, &catalog, &python, log);
    assert_eq!(
        (found["rows"].as_u64(), found["files"].as_u64()),
        (Some(16 * 80 - past), Some(4)),
        "{found}"
    );
}

/// Runs `dlog` with `args` (and `stdin`) against the cluster's first
/// ingest node; returns whether it succeeded, and its stdout and stderr.
fn dlog_cli(cluster: &Cluster, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(args)
        .env("DLOG_ENDPOINT", cluster.ingests[0].address())
        .envs(cluster.cli_env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `dlog ns set` of a schema document written to `dir`.
fn set_schema(
    cluster: &Cluster,
    dir: &std::path::Path,
    ns: &str,
    document: &str,
) -> (bool, String) {
    let file = dir.join(format!("schema-{}.json", fastrand_name(document)));
    std::fs::write(&file, document).unwrap();
    let path = file.display().to_string();
    let (ok, stdout, stderr) = dlog_cli(cluster, &["ns", "set", ns, "--payload-schema", &path], "");
    (ok, if ok { stdout } else { stderr })
}

/// A file name part that differs between documents.
fn fastrand_name(document: &str) -> String {
    format!("{:08x}", crc32c::crc32c(document.as_bytes()))
}

/// The log's Parquet objects (not the cut copies, none here), copied to
/// `dir` as they are: what an engine pointed at the folder reads.
async fn copy_files(cluster: &Cluster, log: &str, dir: &std::path::Path) -> usize {
    let objects = cluster
        .s3
        .as_ref()
        .unwrap()
        .object_store(common::OBJECT_PREFIX);
    let name: LogName = log.parse().unwrap();
    let log_id = cluster.manifest.log(&name).await.unwrap().log_id;
    let folder = dlog_storage::segment_file::log_folder(&objects.prefix, &name, log_id);
    let listed: Vec<object_store::ObjectMeta> = futures::TryStreamExt::try_collect(
        object_store::ObjectStore::list(&*objects.store, Some(&folder)),
    )
    .await
    .unwrap();
    let mut copied = 0;
    for object in listed {
        let key = object.location.to_string();
        if !key.ends_with(".parquet") || key.contains("_trimmed") {
            continue;
        }
        let bytes = objects.store.get(&object.location).await.unwrap();
        let file = dir.join(object.location.filename().unwrap());
        std::fs::write(file, bytes.bytes().await.unwrap()).unwrap();
        copied += 1;
    }
    copied
}

/// Typed payloads end to end: a namespace's payload schema set with `dlog
/// ns set` (a bad file and a type change refused, one line each), JSON
/// records appended (a segment of them before the schema, some of which do
/// not fit it), a non-matching append refused whole with INVALID_ARGUMENT
/// naming the record and the field (through the SDK and `dlog append`),
/// a field added later; then DuckDB and DataFusion over the log's Parquet
/// files and pyiceberg over its table group by the typed `user` column,
/// without parsing JSON, and must agree with the same grouping computed
/// from `dlog read` of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typed_payload_columns_answer_queries_without_parsing_json() {
    let Some(mut cluster) = Cluster::start_with(3, 1, 1, 1).await else {
        return;
    };
    let Some(python) = require_python_module("pyiceberg.catalog.sql, duckdb, datafusion") else {
        return;
    };
    let catalog = Catalog::new();
    let dir = tempfile::tempdir().unwrap();
    // Stopped while the first segment is written and the schema set, so
    // that segment's file is encoded with the schema: its records appended
    // before it get nulls where they do not fit.
    let compactor = &mut cluster.compactors[0];
    compactor.kill();
    compactor.set_env("DLOG_COMPACTOR__ICEBERG_CATALOG", &catalog.sqlx);
    let client = cluster.client(cluster.ingests[0].address());
    let log = "shop/orders";
    client.create_log(log).await.unwrap();

    // Before any schema: anything goes, JSON or not.
    let before: Vec<Record> = (0..100u64)
        .map(|i| match i % 10 {
            3 => Record::new(Bytes::from(format!(r#"{{"user":"u1","amount":"x{i}"}}"#))),
            7 => Record::new(Bytes::from(format!("not json {i}"))),
            _ if i == 50 => Record::null(),
            _ => Record::new(Bytes::from(format!(
                r#"{{"user":"u{}","amount":{i}}}"#,
                i % 4
            ))),
        })
        .collect();
    client.append(log, before, None).await.unwrap();
    client.seal(log).await.unwrap();

    let (ok, err) = set_schema(
        &cluster,
        dir.path(),
        "shop",
        r#"{"fields":[{"name":"user","type":"text"}]}"#,
    );
    assert!(!ok && err.lines().count() == 1, "{err}");
    assert!(err.contains("unknown variant `text`"), "{err}");
    let schema = r#"{"fields":[{"name":"user","type":"string","required":true},{"name":"amount","type":"int64"}]}"#;
    let (ok, out) = set_schema(&cluster, dir.path(), "shop", schema);
    assert!(ok, "{out}");
    assert!(
        out.contains("user string required (id 1000), amount int64 (id 1001)"),
        "{out}"
    );

    // A schema in force: a batch with one bad record is refused whole.
    let next = client.get_log(log).await.unwrap().next_offset;
    let good = |i: u64| {
        Record::new(Bytes::from(format!(
            r#"{{"user":"u{}","amount":{}}}"#,
            i % 3,
            100 + i
        )))
    };
    let bad = vec![
        good(0),
        good(1),
        Record::new(r#"{"user":"u9","amount":"12"}"#),
    ];
    let refused = client.append(log, bad, None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(
        refused
            .to_string()
            .contains(r#"record 2: field "amount": expected int64, got string "12""#),
        "{refused}"
    );
    let (ok, _, err) = dlog_cli(
        &cluster,
        &["append", log],
        "{\"user\":\"u0\"}\n{\"amount\":3}\n",
    );
    assert!(!ok, "dlog append of a record without its user succeeded");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(r#"record 1: field "user": missing (required)"#),
        "{err}"
    );
    assert_eq!(
        client.get_log(log).await.unwrap().next_offset,
        next,
        "part of a refused batch landed"
    );

    // Matching records: some without the optional amount.
    let matching: Vec<Record> = (0..120u64)
        .map(|i| {
            if i % 5 == 0 {
                Record::new(Bytes::from(format!(r#"{{"user":"u{}"}}"#, i % 3)))
            } else {
                good(i)
            }
        })
        .collect();
    client.append(log, matching, None).await.unwrap();
    client.seal(log).await.unwrap();
    cluster.compactors[0].start();
    wait_segments(&cluster, log, 2, "offloaded", offloaded).await;

    // A field added (the others keep their ids), a type change refused.
    let (ok, err) = set_schema(
        &cluster,
        dir.path(),
        "shop",
        r#"{"fields":[{"name":"amount","type":"double"}]}"#,
    );
    assert!(!ok && err.lines().count() == 1, "{err}");
    assert!(
        err.contains(r#"field "amount": its type is int64"#),
        "{err}"
    );
    let wider = r#"{"fields":[{"name":"user","type":"string","required":true},{"name":"amount","type":"int64"},{"name":"region","type":"string"}]}"#;
    let (ok, out) = set_schema(&cluster, dir.path(), "shop", wider);
    assert!(ok && out.contains("region string (id 1002)"), "{out}");
    let regional: Vec<Record> = (0..60u64)
        .map(|i| {
            let region = if i % 2 == 0 { "eu" } else { "us" };
            Record::new(Bytes::from(format!(
                r#"{{"user":"u{}","amount":{i},"region":"{region}"}}"#,
                i % 3
            )))
        })
        .collect();
    client.append(log, regional, None).await.unwrap();
    client.seal(log).await.unwrap();
    wait_segments(&cluster, log, 3, "offloaded", offloaded).await;

    let files = tempfile::tempdir().unwrap();
    assert_eq!(copy_files(&cluster, log, files.path()).await, 3);
    let read = dlog_read(&cluster, log);
    assert_eq!(read.lines().count(), 280);
    let read_file = dir.path().join("read.jsonl");
    std::fs::write(&read_file, &read).unwrap();
    let s3 = cluster.s3.as_ref().unwrap();
    let env: BTreeMap<String, String> = s3.env().into_iter().collect();
    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/check_typed.py"
        ))
        .args([
            catalog.sqlalchemy.clone(),
            s3.endpoint(),
            env["AWS_ACCESS_KEY_ID"].clone(),
            env["AWS_SECRET_ACCESS_KEY"].clone(),
            "shop.orders".to_owned(),
            read_file.display().to_string(),
            files.path().display().to_string(),
            "region".to_owned(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "typed queries differ from dlog read:\n{stdout}\n{}\ncompactor log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.compactors[0].log_text()
    );
    let found: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    println!("{found}");
    // Known from what was appended: 10 records not JSON and one null
    // payload have no user; u1 has 25 records before the schema (10 with
    // an amount that is no int64), 40 and 20 after.
    let groups = &found["duckdb"];
    assert_eq!(groups["None"], serde_json::json!([11, null]), "{found}");
    assert_eq!(groups["u1"][0], 25 + 40 + 20, "{found}");
    assert_eq!(
        found["ids"],
        serde_json::json!({"user": 1000, "amount": 1001, "region": 1002}),
        "{found}"
    );
    assert_eq!(found["optional"], 60, "{found}");
}
