//! Review test of reconciliation: it frees the copy of a segment whose log
//! was deleted and purged while the node missed the compactor's
//! `DropSegment` (it was down), also when that log had the highest log id
//! handed out so far (the last log created, or the only one). A copy that
//! is never freed holds every later journal file.

use dlog_wire::ids::{Epoch, LogId};
use std::sync::Arc;

use dlog_cache::{CacheStore, SegmentKey, StoreOptions, reconcile};
use dlog_meta::manifest::{Manifest, SegmentMeta};
use dlog_meta::metastore::embedded::EmbeddedStore;
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::names::LogName;
use dlog_wire::record::Record;

fn template() -> SegmentMeta {
    SegmentMeta::open(0, vec!["cache-1".into()], 1, 1, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_log_with_the_highest_id_is_freed_by_reconciliation() {
    let dir = tempfile::tempdir().unwrap();
    let metastore = EmbeddedStore::open(dir.path().join("meta")).await.unwrap();
    let manifest = Manifest::new(Arc::new(metastore), "default");
    let store = CacheStore::open(StoreOptions::new(dir.path().join("cache"))).unwrap();

    // The only log; its open segment is on this node.
    let log: LogName = "review/only".parse().unwrap();
    let meta = manifest.create_log(&log).await.unwrap();
    let fence = manifest
        .bump_epoch(&log, LogId(meta.log_id), Epoch(0))
        .await
        .unwrap();
    let segment = manifest
        .create_segment(&log, fence, template())
        .await
        .unwrap();
    let key = SegmentKey {
        log_id: meta.log_id,
        segment_id: segment.segment_id,
    };
    let entry = encode_entry(
        &EntryHeader {
            log_id: key.log_id,
            segment_id: key.segment_id,
            entry_id: 0,
            epoch: fence.epoch,
            first_offset: 0,
            lac: None,
            record_count: 1,
        },
        &[EntryRecord {
            timestamp_ms: 1,
            record: Record::new("x"),
        }],
    );
    store
        .add(key, Epoch(fence.epoch), entry)
        .unwrap()
        .await
        .unwrap();

    // Deleted and purged while this node was down (no DropSegment came).
    manifest.delete_log(&log).await.unwrap();
    assert!(manifest.purge_log(&log, meta.log_id).await.unwrap());

    let report = reconcile::pass(&store, &manifest).await.unwrap();
    assert_eq!(
        report.dropped, 1,
        "the copy of a purged log must be freed ({report:?}); it is kept because no log \
         with a higher id exists, and stays until one is created"
    );
}
