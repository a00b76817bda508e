//! Offload end to end with real processes: a real etcd, a real S3 server
//! (s3s-fs), three cache nodes, an ingest node and a compactor (`dlog
//! serve`). Sealed segments must arrive on S3 as Parquet files holding
//! exactly the records appended, readable in place by pyarrow; a compactor
//! killed between any two steps of an offload must leave one object with
//! exactly those rows once the next one finishes; trim and retention remove
//! whole segments, manifest first.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, OBJECT_PREFIX};
use distributedlog::Client;
use dlog_meta::manifest::{NamespaceConfig, SegmentMeta, SegmentState};
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_storage::segment_file::decode_file;
use dlog_testkit::{S3Server, require_python_module};
use dlog_wire::names::LogName;
use dlog_wire::proto::cache_service_client::CacheServiceClient;
use dlog_wire::proto::{ReadEntriesRequest, SegmentRef};
use dlog_wire::record::{Record, StoredRecord};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

/// A record with everything a record can carry, varied by `i`: headers
/// out of name order with a repeated name, null payloads, producer times.
fn rich_record(i: u64) -> Record {
    let mut record = if i % 13 == 5 {
        Record::null()
    } else {
        Record::new(Bytes::from(format!(
            "payload-{i}-{}",
            "x".repeat((i % 50) as usize)
        )))
    };
    if i.is_multiple_of(2) {
        record.key = Some(Bytes::from(format!("key-{}", i % 7)));
    }
    if i.is_multiple_of(3) {
        record.headers.push("trace", format!("t{i}"));
        record
            .headers
            .push("bin", Bytes::from_static(b"\x00\x01\xff"));
        record.headers.push("trace", "again");
    }
    if !i.is_multiple_of(4) {
        record.txid = Some(1_000 + i as i64);
    }
    if i.is_multiple_of(5) {
        record.producer_time_ms = Some(1_600_000_000_000 + i as i64);
    }
    record
}

/// Appends `batches` batches of `per_batch` records; returns what the log
/// must hold, by offset.
async fn append_rich(
    client: &Client,
    log: &str,
    first: u64,
    batches: u64,
    per_batch: u64,
) -> BTreeMap<u64, StoredRecord> {
    let mut expected = BTreeMap::new();
    for b in 0..batches {
        let records: Vec<Record> = (0..per_batch)
            .map(|i| rich_record(first + b * per_batch + i))
            .collect();
        let appended = client.append(log, records.clone(), None).await.unwrap();
        for (i, record) in records.into_iter().enumerate() {
            let offset = appended.first_offset + i as u64;
            expected.insert(
                offset,
                StoredRecord {
                    offset,
                    timestamp_ms: appended.timestamp_ms,
                    record,
                },
            );
        }
    }
    expected
}

/// The first entry of a sealed segment as `node` serves it (None: none).
async fn read_first_entry(
    cluster: &Cluster,
    log: &str,
    segment: &SegmentMeta,
    node: &str,
) -> Result<Option<Bytes>, tonic::Status> {
    let name: LogName = log.parse().unwrap();
    let log_id = cluster.manifest.log(&name).await.unwrap().log_id;
    let cache = cluster.caches.iter().find(|c| c.id == node).unwrap();
    let mut cache = CacheServiceClient::new(cluster.channel(&cache.address()).await);
    let mut entries = cache
        .read_entries(ReadEntriesRequest {
            segment: Some(SegmentRef {
                log: log.to_owned(),
                log_id,
                segment_id: segment.segment_id,
            }),
            from_entry: 0,
            max_entries: 1,
            fence_epoch: None,
            sealed_last_entry: segment.last_entry_id,
        })
        .await?
        .into_inner();
    Ok(entries.message().await?.map(|m| m.entry))
}

/// Waits until every closed segment of `log` satisfies `done`; returns them.
async fn wait_segments(
    cluster: &Cluster,
    log: &str,
    what: &str,
    done: impl Fn(&SegmentMeta) -> bool,
) -> Vec<SegmentMeta> {
    let ready = |closed: &[SegmentMeta]| !closed.is_empty() && closed.iter().all(&done);
    (cluster.wait_closed_segments(log, what, Duration::from_secs(30), ready)).await
}

/// Creates `log` with `segments` sealed segments of `batches` × 25
/// records and waits until all are offloaded.
async fn offloaded_segments(
    cluster: &Cluster,
    client: &Client,
    log: &str,
    segments: u64,
    batches: u64,
) -> Vec<SegmentMeta> {
    client.create_log(log).await.unwrap();
    for s in 0..segments {
        append_rich(client, log, s * 100, batches, 25).await;
        client.seal(log).await.unwrap();
    }
    wait_segments(cluster, log, "offloaded", |s| {
        s.state == SegmentState::Offloaded
    })
    .await
}

fn offloaded_and_dropped(segment: &SegmentMeta) -> bool {
    segment.state == SegmentState::Offloaded && segment.cache_dropped
}

/// Every record in the objects of `segments`, checked against their
/// manifest entries (size, checksum, offset range).
async fn read_objects(
    objects: &ObjectStoreHandle,
    segments: &[SegmentMeta],
) -> BTreeMap<u64, StoredRecord> {
    let mut records = BTreeMap::new();
    for segment in segments {
        let object = segment
            .object
            .as_ref()
            .expect("offloaded segments name their object");
        let bytes = objects
            .store
            .get(&object.key.as_str().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, object.size, "size of {}", object.key);
        assert_eq!(
            crc32c::crc32c(&bytes),
            object.crc32c,
            "checksum of {}",
            object.key
        );
        let rows = decode_file(bytes).unwrap();
        let offsets: Vec<u64> = rows.iter().map(|r| r.offset).collect();
        let range: Vec<u64> = (segment.start_offset..segment.end_offset.unwrap()).collect();
        assert_eq!(
            offsets, range,
            "rows of {} are its offsets, in order",
            object.key
        );
        records.extend(rows.into_iter().map(|r| (r.offset, r)));
    }
    records
}

/// The object keys under a log's folder.
async fn object_keys(objects: &ObjectStoreHandle, log: &str) -> Vec<String> {
    let name: LogName = log.parse().unwrap();
    let folder = objects
        .prefix
        .clone()
        .join(format!("ns={}", name.namespace()))
        .join(format!("log={}", name.log()));
    let mut keys: Vec<String> = objects
        .store
        .list(Some(&folder))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// pyarrow reads the files in place on the S3 server: row count and
/// min/max(offset) per file match the manifest.
fn check_with_pyarrow(s3: &S3Server, log: &str, log_id: u64, segments: &[SegmentMeta]) {
    let Some(python) = require_python_module("pyarrow") else {
        return;
    };
    let name: LogName = log.parse().unwrap();
    let files: Vec<serde_json::Value> = segments
        .iter()
        .map(|s| {
            let end = s.end_offset.unwrap();
            serde_json::json!({
                "key": s.object.as_ref().unwrap().key,
                "rows": end - s.start_offset,
                "min": s.start_offset,
                "max": end - 1,
            })
        })
        .collect();
    let expected = serde_json::json!({
        "dataset": format!("{}/{OBJECT_PREFIX}/ns={}/log={}", S3Server::BUCKET, name.namespace(), name.log()),
        "log_id": log_id,
        "files": files,
    });
    let env: BTreeMap<String, String> = s3.env().into_iter().collect();
    let output = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/check_parquet.py"
        ))
        .args([
            s3.endpoint(),
            S3Server::BUCKET.to_owned(),
            env["AWS_ACCESS_KEY_ID"].clone(),
            env["AWS_SECRET_ACCESS_KEY"].clone(),
            expected.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pyarrow check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        found["files"], expected["files"],
        "pyarrow saw what the manifest says"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offloaded_files_hold_exactly_the_records_appended() {
    let Some(cluster) = Cluster::start_with(3, 1, 1, 0).await else {
        return;
    };
    let s3 = cluster.s3.as_ref().unwrap();
    let client = cluster.client(cluster.ingests[0].address());
    let log = "analytics/clicks";
    client.create_log(log).await.unwrap();
    let mut expected = append_rich(&client, log, 0, 20, 50).await;
    client.seal(log).await.unwrap();
    expected.extend(append_rich(&client, log, 1_000, 3, 200).await);
    client.seal(log).await.unwrap();
    // Positive control, at once (the drop comes at the earliest a grace
    // period after the offload): every replica serves the segment just
    // sealed.
    let name: LogName = log.parse().unwrap();
    let (sealed, _) = cluster.manifest.segments(&name).await.unwrap();
    let last = sealed
        .iter()
        .rfind(|s| s.state != SegmentState::Open)
        .unwrap();
    for node in &last.ensemble {
        let entry = read_first_entry(&cluster, log, last, node)
            .await
            .unwrap_or_else(|status| panic!("{node} does not serve a sealed segment: {status}"));
        assert!(
            entry.is_some(),
            "{node} serves no entry of a sealed segment"
        );
    }

    let segments = wait_segments(&cluster, log, "offloaded", |s| {
        s.state == SegmentState::Offloaded
    })
    .await;
    assert_eq!(segments.len(), 2, "two sealed segments, two files");
    let objects = s3.object_store(OBJECT_PREFIX);
    let stored = read_objects(&objects, &segments).await;
    assert_eq!(stored.len(), 1_600);
    assert_eq!(
        stored, expected,
        "the files hold exactly the records appended"
    );
    assert_eq!(object_keys(&objects, log).await.len(), 2);
    let log_id = cluster
        .manifest
        .log(&log.parse().unwrap())
        .await
        .unwrap()
        .log_id;
    for segment in &segments {
        let key = &segment.object.as_ref().unwrap().key;
        assert!(
            key.contains(&format!("/log=clicks/id={log_id}/")),
            "objects live under the log id's folder: {key}"
        );
    }
    check_with_pyarrow(s3, log, log_id, &segments);

    // A late upload into a purged log's folder (a compactor that resumed
    // after the purge) is swept from the S3 server. A folder the manifest
    // does not know (as after an etcd restore) is kept, and so are the
    // live log's files.
    let gone = "analytics/gone";
    let gone_id = client.create_log(gone).await.unwrap().log_id;
    client.delete_log(gone).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cluster
        .manifest
        .purged_logs()
        .await
        .unwrap()
        .iter()
        .any(|purged| purged.log_id == gone_id)
    {
        assert!(tokio::time::Instant::now() < deadline, "{gone} not purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stray_in = |folder_of: &str, id: u64| {
        let name: LogName = folder_of.parse().unwrap();
        dlog_storage::segment_file::log_folder(&objects.prefix, &name, id).join("0-9.parquet")
    };
    let late = stray_in(gone, gone_id);
    let unknown = stray_in(log, log_id + 1_000_000);
    for stray in [&late, &unknown] {
        objects
            .store
            .put(stray, Bytes::from_static(b"late").into())
            .await
            .unwrap();
    }
    while !object_keys(&objects, gone).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late object is still there after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Two more sweeps (one a second) leave the others.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let keys = object_keys(&objects, log).await;
    assert!(keys.contains(&unknown.to_string()), "{keys:?}");
    assert_eq!(keys.len(), 3, "the live files stay: {keys:?}");
    assert_eq!(read_objects(&objects, &segments).await, expected);

    // After the grace period the cache nodes let go of the segments.
    let segments = wait_segments(&cluster, log, "dropped from cache", offloaded_and_dropped).await;
    let log_id = cluster.manifest.log(&name).await.unwrap().log_id;
    for segment in &segments {
        for node in &segment.ensemble {
            let status = read_first_entry(&cluster, log, segment, node)
                .await
                .expect_err("a cache node still serves a dropped segment");
            assert_eq!(
                (status.code(), status.message()),
                (
                    tonic::Code::FailedPrecondition,
                    format!(
                        "segment {log_id}/{} was dropped from this node",
                        segment.segment_id
                    )
                    .as_str()
                ),
                "{node}"
            );
        }
    }

    // `dlog status` shows no offload lag left.
    let status = client.status().await.unwrap();
    assert_eq!(status.sealed_segments, 0);
    assert_eq!(status.offload_lag_bytes, 0);
    assert!(status.offloaded_segments >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compactor_killed_between_steps_leaves_one_object_with_exact_rows() {
    let Some(mut cluster) = Cluster::start_with(3, 1, 1, 0).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    let objects = cluster.s3.as_ref().unwrap().object_store(OBJECT_PREFIX);
    let points = [
        "offload.after_read",
        "offload.after_upload",
        "offload.after_verify",
        "offload.after_manifest",
        "offload.after_cache_drop",
    ];
    for (i, point) in points.iter().enumerate() {
        cluster.compactors[0].kill();
        let log = format!("crash/at-{i}");
        client.create_log(&log).await.unwrap();
        let expected = append_rich(&client, &log, 0, 10, 30).await;
        client.seal(&log).await.unwrap();

        cluster.compactors[0].start_to_crash_at(point);
        assert!(
            cluster.compactors[0]
                .wait_exit(Duration::from_secs(30))
                .await,
            "the compactor did not reach {point}:\n{}",
            cluster.compactors[0].log_text()
        );
        assert!(
            cluster.compactors[0]
                .log_text()
                .contains(&format!("failpoint {point}")),
            "the compactor died elsewhere than {point}"
        );

        cluster.compactors[0].start();
        let segments = wait_segments(
            &cluster,
            &log,
            "offloaded and dropped",
            offloaded_and_dropped,
        )
        .await;
        assert_eq!(
            object_keys(&objects, &log).await.len(),
            segments.len(),
            "one object per segment after a crash at {point}"
        );
        let stored = read_objects(&objects, &segments).await;
        assert_eq!(stored, expected, "exact rows after a crash at {point}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trim_and_retention_remove_whole_segments_manifest_first() {
    let Some(mut cluster) = Cluster::start_with(3, 1, 1, 0).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    let objects = cluster.s3.as_ref().unwrap().object_store(OBJECT_PREFIX);

    // Explicit trim at a segment boundary: the two older segments go.
    let log = "retain/trimmed";
    let segments = offloaded_segments(&cluster, &client, log, 3, 4).await;
    assert_eq!(segments.len(), 3);
    let boundary = segments[1].end_offset.unwrap();
    assert_eq!(client.trim(log, boundary).await.unwrap(), boundary);
    let segments = wait_segments(&cluster, log, "trimmed", |s| s.start_offset >= boundary).await;
    assert_eq!(
        segments.len(),
        1,
        "only the segment above the trim point is left"
    );
    for _ in 0..100 {
        if object_keys(&objects, log).await.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        object_keys(&objects, log).await,
        vec![segments[0].object.as_ref().unwrap().key.clone()],
        "objects below the trim point are deleted"
    );
    let kept = read_objects(&objects, &segments).await;
    assert_eq!(kept.keys().next(), Some(&boundary));

    // Trimming past the end of the log is refused and changes nothing.
    let err = client.trim(log, 1_000_000).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let name: LogName = log.parse().unwrap();
    assert_eq!(cluster.manifest.trim_point(&name).await.unwrap(), boundary);

    // Retention by size: the namespace keeps about one segment's bytes.
    let log = "small/sized";
    let segments = offloaded_segments(&cluster, &client, log, 3, 4).await;
    let newest = segments.last().unwrap().clone();
    let ns = dlog_wire::names::Namespace::new("small").unwrap();
    let mut config: NamespaceConfig = cluster.manifest.namespace(&ns).await.unwrap();
    config.retention_bytes = Some(newest.bytes);
    cluster.manifest.put_namespace(&ns, &config).await.unwrap();
    let segments = wait_segments(&cluster, log, "cut to size", |s| {
        s.segment_id == newest.segment_id
    })
    .await;
    assert_eq!(segments.len(), 1);
    let name: LogName = log.parse().unwrap();
    assert_eq!(
        cluster.manifest.trim_point(&name).await.unwrap(),
        newest.start_offset,
        "retention moves the trim point to the oldest segment kept"
    );

    // Retention by age: everything older than 1 ms goes (the open segment
    // holds nothing, so nothing is left).
    config.retention_bytes = None;
    config.retention_ms = Some(1);
    cluster.manifest.put_namespace(&ns, &config).await.unwrap();
    for _ in 0..300 {
        let (segments, _) = cluster.manifest.segments(&name).await.unwrap();
        if segments.iter().all(|s| s.state == SegmentState::Open) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (segments, _) = cluster.manifest.segments(&name).await.unwrap();
    assert!(
        segments.iter().all(|s| s.state == SegmentState::Open),
        "retention by age left {segments:?}"
    );
    assert!(object_keys(&objects, log).await.is_empty());
    assert_eq!(
        cluster.manifest.trim_point(&name).await.unwrap(),
        newest.end_offset.unwrap()
    );

    // A crash right after moving the trim point, or after deleting an
    // object, is finished by the next compactor.
    for (i, point) in [
        "retention.after_trim_point",
        "retention.after_object_delete",
    ]
    .iter()
    .enumerate()
    {
        let log = format!("retain/crash-{i}");
        let segments = offloaded_segments(&cluster, &client, &log, 2, 2).await;
        cluster.compactors[0].kill();
        let boundary = segments[0].end_offset.unwrap();
        client.trim(&log, boundary).await.unwrap();
        cluster.compactors[0].start_to_crash_at(point);
        assert!(
            cluster.compactors[0]
                .wait_exit(Duration::from_secs(30))
                .await,
            "the compactor did not reach {point}:\n{}",
            cluster.compactors[0].log_text()
        );
        assert!(
            cluster.compactors[0]
                .log_text()
                .contains(&format!("failpoint {point}: aborting")),
            "the compactor died elsewhere than {point}:\n{}",
            cluster.compactors[0].log_text()
        );
        cluster.compactors[0].start();
        let left = wait_segments(&cluster, &log, "trimmed", |s| s.start_offset >= boundary).await;
        assert_eq!(left.len(), 1);
        assert_eq!(
            object_keys(&objects, &log).await.len(),
            1,
            "after a crash at {point}"
        );
    }
}
