//! The merge of small files: which runs are taken ([`crate::merge::plan`]),
//! and a compactor's passes on an embedded metastore, the in-memory object
//! store and a SQLite catalog: files merged once into the table and the
//! manifest, a late append of a merged file refused, a merge the table no
//! longer allows undone, and merged objects deleted by the segment that
//! ends them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::{
    Manifest, MergeIntent, ObjectInfo, OffsetRange, SealInfo, SegmentMeta, SegmentState,
};
use dlog_meta::metastore::MetaStore;
use dlog_meta::metastore::embedded::EmbeddedStore;
use dlog_storage::objstore::{self, ObjectStoreHandle};
use dlog_storage::segment_file::{self, FileInfo};
use dlog_wire::ids::{Epoch, LogId, Offset};
use dlog_wire::names::LogName;
use dlog_wire::record::{Record, StoredRecord};
use object_store::{ObjectStoreExt, PutPayload};

use crate::compactor::{Compactor, CompactorOptions};
use crate::merge::{MAX_RUN_SEGMENTS, plan};
use crate::table::{Appended, LogTables, TableFile};

/// A segment of the plan's view: `start..end`, in `state`, with an object
/// of `size` bytes when offloaded.
fn segment(id: u64, start: u64, end: u64, size: Option<u64>) -> SegmentMeta {
    let mut segment = SegmentMeta::open(1, Vec::new(), 1, 1, start);
    segment.segment_id = id;
    segment.end_offset = Some(end);
    segment.state = SegmentState::Sealed;
    if let Some(size) = size {
        segment.state = SegmentState::Offloaded;
        segment.object = Some(ObjectInfo {
            key: format!("k{id}"),
            size,
            crc32c: 0,
            offloaded_at_ms: 0,
            merged: None,
        });
    }
    segment
}

#[test]
fn a_run_is_merged_once_complete() {
    // 40 + 30 + 20 fit in 100; the fourth (20) would pass it: the first
    // three are a complete run, and the fourth waits for more.
    let segments = vec![
        segment(1, 0, 10, Some(40)),
        segment(2, 10, 20, Some(30)),
        segment(3, 20, 30, Some(20)),
        segment(4, 30, 40, Some(20)),
    ];
    assert_eq!(plan(&segments, 0, 100), vec![vec![1, 2, 3]]);
    // Not complete while the next segment is only sealed: it may fit.
    assert!(plan(&segments[..3], 0, 100).is_empty());
    let mut sealed = segments[..3].to_vec();
    sealed.push(segment(4, 30, 40, None));
    assert!(plan(&sealed, 0, 100).is_empty());
    // A file of the target size or more closes the run before it.
    let big = vec![
        segment(1, 0, 10, Some(10)),
        segment(2, 10, 20, Some(10)),
        segment(3, 20, 30, Some(100)),
    ];
    assert_eq!(plan(&big, 0, 100), vec![vec![1, 2]]);
    // Nothing at or below the trim point's segment, nothing across a gap.
    assert!(plan(&segments, 5, 100).is_empty());
    let gap = vec![
        segment(1, 0, 10, Some(10)),
        segment(3, 20, 30, Some(10)),
        segment(4, 30, 40, Some(100)),
    ];
    assert!(plan(&gap, 0, 100).is_empty());
    // Long runs stop at the most segments one transaction takes.
    let many: Vec<SegmentMeta> = (0..MAX_RUN_SEGMENTS as u64 + 5)
        .map(|i| segment(i + 1, i * 10, i * 10 + 10, Some(1)))
        .collect();
    let runs = plan(&many, 0, 1 << 30);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].len(), MAX_RUN_SEGMENTS);
}

#[test]
fn merges_in_progress_are_resumed_first() {
    let mut segments = vec![
        segment(1, 0, 10, Some(10)),
        segment(2, 10, 20, Some(10)),
        segment(3, 20, 30, Some(10)),
        segment(4, 30, 40, Some(10)),
        segment(5, 40, 50, Some(100)),
    ];
    let intent = MergeIntent {
        key: "m".to_owned(),
        range: OffsetRange {
            start_offset: 20,
            end_offset: 40,
        },
        uploaded: None,
    };
    segments[2].merging_into = Some(intent.clone());
    segments[3].merging_into = Some(intent);
    // 3 and 4 resume; 1 and 2 are complete (3 is taken) but 3 is not
    // mergeable while it carries the intent: they wait.
    assert_eq!(plan(&segments, 0, 1000), vec![vec![3, 4]]);
}

/// A compactor with tables on an embedded metastore, the in-memory object
/// store and a SQLite catalog, merging up to `target` bytes.
struct Setup {
    _dir: tempfile::TempDir,
    manifest: Manifest,
    objects: ObjectStoreHandle,
    tables: Arc<LogTables>,
    compactor: Compactor,
    log: LogName,
}

async fn setup(target: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let manifest = Manifest::new(store.clone(), "default");
    let objects = objstore::open("memory://").unwrap();
    let uri = format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display());
    let tables = Arc::new(LogTables::open(&uri, objects.clone()).await.unwrap());
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let options = CompactorOptions {
        merge_target_bytes: target,
        table_file_grace: Duration::from_millis(200),
        ..CompactorOptions::default()
    };
    let compactor = Compactor::new(
        manifest.clone(),
        objects.clone(),
        "compactor-1".to_owned(),
        lease,
        options,
    )
    .with_tables(tables.clone());
    let log: LogName = "lake/small".parse().unwrap();
    manifest.create_log(&log).await.unwrap();
    Setup {
        _dir: dir,
        manifest,
        objects,
        tables,
        compactor,
        log,
    }
}

/// Offloads `count` segments of 10 records each as an offload would:
/// file uploaded, appended to the table, segment marked offloaded.
async fn offload_segments(setup: &Setup, count: u64) {
    let Setup {
        manifest,
        objects,
        tables,
        log,
        ..
    } = setup;
    let meta = manifest.log(log).await.unwrap();
    let fence = manifest
        .bump_epoch(log, LogId(meta.log_id), Epoch(0))
        .await
        .unwrap();
    let (existing, _) = manifest.segments(log).await.unwrap();
    let mut start = existing.last().and_then(|s| s.end_offset).unwrap_or(0);
    for _ in 0..count {
        let template = SegmentMeta::open(fence.epoch, Vec::new(), 1, 1, start);
        let segment = manifest.create_segment(log, fence, template).await.unwrap();
        let end = start + 10;
        let seal = SealInfo {
            end_offset: end,
            last_entry_id: Some(0),
            bytes: 100,
            min_timestamp_ms: Some(1_000),
            max_timestamp_ms: Some(1_000),
            min_txid: None,
            max_txid: None,
        };
        manifest
            .seal_segment(log, fence, segment.segment_id, &seal)
            .await
            .unwrap();
        let records: Vec<StoredRecord> = (start..end)
            .map(|offset| StoredRecord {
                offset,
                timestamp_ms: 1_000,
                record: Record::new(Bytes::from(format!("record {offset}"))),
            })
            .collect();
        let info = FileInfo {
            log,
            segment_id: segment.segment_id,
            start_offset: start,
            end_offset: end,
            payload_schema: None,
        };
        let file = segment_file::encode_records(&records, &info).unwrap();
        let key = segment_file::object_key(&objects.prefix, log, meta.log_id, start, end);
        (objects.store)
            .put(&key, PutPayload::from(file.bytes.clone()))
            .await
            .unwrap();
        let entry = TableFile {
            key: &key,
            file: &file,
            segment_id: segment.segment_id,
            start_offset: start,
            end_offset: end,
            time_range_ms: file.time_range_ms,
        };
        let appended = tables.append(log, meta.log_id, 0, &entry).await.unwrap();
        assert_eq!(appended, Appended::Committed);
        let object = ObjectInfo {
            key: key.to_string(),
            size: file.bytes.len() as u64,
            crc32c: file.crc32c,
            offloaded_at_ms: 1,
            merged: None,
        };
        manifest
            .mark_offloaded(log, meta.log_id, segment.segment_id, object)
            .await
            .unwrap();
        start = end;
    }
}

/// The offsets of every row of the table's live files, in order.
async fn table_offsets(setup: &Setup) -> Vec<u64> {
    let mut offsets = Vec::new();
    for location in setup.tables.data_files(&setup.log).await.unwrap() {
        let key = location.strip_prefix("memory://").unwrap();
        let bytes = (setup.objects.store.get(&key.into()).await.unwrap())
            .bytes()
            .await
            .unwrap();
        offsets.extend(
            segment_file::decode_file(bytes)
                .unwrap()
                .iter()
                .map(|r| r.offset),
        );
    }
    offsets.sort_unstable();
    offsets
}

async fn segments(setup: &Setup) -> Vec<SegmentMeta> {
    setup.manifest.segments(&setup.log).await.unwrap().0
}

async fn exists(objects: &ObjectStoreHandle, key: &str) -> bool {
    objects.store.head(&key.into()).await.is_ok()
}

/// The size of one test segment's file.
async fn file_size() -> u64 {
    let setup = setup(0).await;
    offload_segments(&setup, 1).await;
    segments(&setup).await[0].object.as_ref().unwrap().size
}

#[tokio::test]
async fn adjacent_small_files_become_one_in_the_table_and_the_manifest() {
    let size = file_size().await;
    // Three files fit, four do not.
    let setup = setup(size * 3 + size / 2).await;
    offload_segments(&setup, 4).await;
    let report = setup.compactor.pass().await.unwrap();
    assert_eq!(report.merged_segments, 3, "{report:?}");
    let after = segments(&setup).await;
    let merged = after[0].object.clone().unwrap();
    let range = merged.merged.expect("segment 1 on the merged object");
    assert_eq!((range.start_offset, range.end_offset), (0, 30));
    for segment in &after[..3] {
        assert_eq!(segment.object.as_ref().unwrap().key, merged.key);
        assert!(segment.retired_object.is_some() && segment.merging_into.is_none());
    }
    assert!(after[3].object.as_ref().unwrap().merged.is_none());
    // The table: the merged file and the fourth segment's, each row once.
    assert_eq!(setup.tables.data_files(&setup.log).await.unwrap().len(), 2);
    assert_eq!(table_offsets(&setup).await, (0..40).collect::<Vec<_>>());

    // A compactor paused past its lease that appends segment 2's own file
    // now adds nothing: the merged file holds its rows.
    let log_id = setup.manifest.log(&setup.log).await.unwrap().log_id;
    let own = after[1].retired_object.clone().unwrap().object;
    let bytes = (setup
        .objects
        .store
        .get(&own.key.as_str().into())
        .await
        .unwrap())
    .bytes()
    .await
    .unwrap();
    let file = segment_file::SegmentFile {
        crc32c: own.crc32c,
        rows: 10,
        time_range_ms: Some((1_000, 1_000)),
        bytes,
    };
    let late = TableFile {
        key: &own.key.as_str().into(),
        file: &file,
        segment_id: 2,
        start_offset: 10,
        end_offset: 20,
        time_range_ms: file.time_range_ms,
    };
    let appended = setup
        .tables
        .append(&setup.log, log_id, 0, &late)
        .await
        .unwrap();
    assert_eq!(appended, Appended::AlreadyThere);

    // After the grace, the segments' own objects go; the merged one stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    setup.compactor.pass().await.unwrap();
    for segment in &segments(&setup).await[..3] {
        assert!(segment.retired_object.is_none(), "{segment:?}");
    }
    for segment in &after[..3] {
        let own = &segment.retired_object.as_ref().unwrap().object.key;
        assert!(
            !exists(&setup.objects, own).await,
            "{own} outlived its grace"
        );
    }
    assert!(exists(&setup.objects, &merged.key).await);

    // A trim inside the merged file, at the boundary of two of its
    // segments: the table holds the rows from there on (a copy of the
    // merged file cut there), the object stays.
    let trim = 10;
    (setup.manifest)
        .trim_log_id(&setup.log, LogId(log_id), Offset(trim))
        .await
        .unwrap();
    setup.compactor.pass().await.unwrap();
    assert_eq!(table_offsets(&setup).await, (10..40).collect::<Vec<_>>());
    assert!(exists(&setup.objects, &merged.key).await);

    // Past segments 1 and 2: the merged object stays for segment 3.
    (setup.manifest)
        .trim_log_id(&setup.log, LogId(log_id), Offset(25))
        .await
        .unwrap();
    for _ in 0..3 {
        setup.compactor.pass().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let left: Vec<u64> = segments(&setup)
        .await
        .iter()
        .map(|s| s.segment_id)
        .collect();
    assert_eq!(left, [3, 4]);
    assert!(exists(&setup.objects, &merged.key).await);
    assert_eq!(table_offsets(&setup).await, (25..40).collect::<Vec<_>>());

    // Past segment 3: the merged object and its copies go with it.
    (setup.manifest)
        .trim_log_id(&setup.log, LogId(log_id), Offset(30))
        .await
        .unwrap();
    for _ in 0..3 {
        setup.compactor.pass().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let left: Vec<u64> = segments(&setup)
        .await
        .iter()
        .map(|s| s.segment_id)
        .collect();
    assert_eq!(left, [4]);
    assert!(!exists(&setup.objects, &merged.key).await);
    let folder = segment_file::log_folder(&setup.objects.prefix, &setup.log, log_id);
    let listed: Vec<_> = futures::TryStreamExt::try_collect(object_store::ObjectStore::list(
        &*setup.objects.store,
        Some(&folder),
    ))
    .await
    .unwrap();
    let data: Vec<String> = (listed.iter())
        .map(|o| o.location.to_string())
        .filter(|at| !at.contains("/metadata/"))
        .collect();
    assert_eq!(data.len(), 1, "only segment 4's object is left: {data:?}");
    assert_eq!(table_offsets(&setup).await, (30..40).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_merge_the_table_no_longer_allows_is_undone() {
    let size = file_size().await;
    let setup = setup(size * 3 + size / 2).await;
    offload_segments(&setup, 4).await;
    let log_id = setup.manifest.log(&setup.log).await.unwrap().log_id;
    // A merge recorded (a compactor died right after step 1), then a trim
    // past segment 1 takes its file out of the table.
    let run: Vec<_> = {
        let mut run = Vec::new();
        for id in 1..=3 {
            run.push(setup.manifest.segment(&setup.log, id).await.unwrap());
        }
        run
    };
    let key = segment_file::log_folder(&setup.objects.prefix, &setup.log, log_id)
        .join("00000000000000000000-00000000000000000030-m1-1.parquet");
    let intent = MergeIntent {
        key: key.to_string(),
        range: OffsetRange {
            start_offset: 0,
            end_offset: 30,
        },
        uploaded: None,
    };
    let changes: Vec<_> = (run.iter())
        .map(|read| {
            let changed = SegmentMeta {
                merging_into: Some(intent.clone()),
                ..read.value.clone()
            };
            (read.clone(), changed)
        })
        .collect();
    assert!(
        (setup.manifest)
            .rewrite_segments(&setup.log, LogId(log_id), &changes)
            .await
            .unwrap()
    );
    setup
        .tables
        .remove_below(&setup.log, log_id, 10)
        .await
        .unwrap();

    // The merge is given up: intents cleared, own files kept; the merged
    // object it uploaded is left to the sweep, which deletes it since
    // nothing names it and the table does not hold it.
    setup.compactor.pass().await.unwrap();
    let after = segments(&setup).await;
    for segment in &after {
        assert!(segment.merging_into.is_none(), "{segment:?}");
        assert!(
            segment.object.as_ref().unwrap().merged.is_none(),
            "{segment:?}"
        );
    }
    assert!(exists(&setup.objects, key.as_ref()).await);
    let to = crate::merge::MergeIn {
        manifest: &setup.manifest,
        objects: &setup.objects,
        tables: Some(&setup.tables),
        encode_inline: true,
        nonce: 1,
    };
    let later = dlog_wire::now_ms() + 1_000;
    let swept = crate::merge::sweep_leftovers(to, &setup.log, log_id, later).await;
    assert_eq!(swept.unwrap(), 1);
    assert!(!exists(&setup.objects, key.as_ref()).await);
    assert_eq!(table_offsets(&setup).await, (10..40).collect::<Vec<_>>());
}

#[tokio::test]
async fn merged_objects_nothing_names_are_swept() {
    let size = file_size().await;
    let setup = setup(size * 3 + size / 2).await;
    offload_segments(&setup, 4).await;
    setup.compactor.pass().await.unwrap();
    let log_id = setup.manifest.log(&setup.log).await.unwrap().log_id;
    let merged = segments(&setup).await[0].object.clone().unwrap().key;
    // What a compactor paused past its lease uploads after another one
    // finished (or undid) its merge.
    let folder = segment_file::log_folder(&setup.objects.prefix, &setup.log, log_id);
    let stray = folder.join("00000000000000000000-00000000000000000030-m5-7.parquet");
    (setup.objects.store)
        .put(&stray, PutPayload::from_static(b"late"))
        .await
        .unwrap();
    let to = crate::merge::MergeIn {
        manifest: &setup.manifest,
        objects: &setup.objects,
        tables: Some(&setup.tables),
        encode_inline: true,
        nonce: 1,
    };
    let now = dlog_wire::now_ms();
    // Too young: kept.
    let swept = crate::merge::sweep_leftovers(to, &setup.log, log_id, now - 60_000).await;
    assert_eq!(swept.unwrap(), 0);
    let swept = crate::merge::sweep_leftovers(to, &setup.log, log_id, now + 1_000).await;
    assert_eq!(swept.unwrap(), 1);
    assert!(!exists(&setup.objects, stray.as_ref()).await);
    // What the manifest names stays: the merged object, the segments' own.
    assert!(exists(&setup.objects, &merged).await);
    for segment in segments(&setup).await {
        assert!(exists(&setup.objects, &segment.object.unwrap().key).await);
    }
    assert_eq!(table_offsets(&setup).await, (0..40).collect::<Vec<_>>());
}
