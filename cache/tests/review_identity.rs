//! Review test of reconciliation: it frees the copy of a segment whose log
//! was deleted and purged while the node missed the compactor's
//! `DropSegment` (it was down), also when that log had the highest log id
//! handed out so far (the last log created, or the only one). A copy that
//! is never freed holds every later journal file.

use dlog_wire::ids::{Epoch, LogId};
use std::sync::Arc;

use dlog_cache::{CacheStore, SegmentKey, StoreOptions, identity, reconcile};
use dlog_meta::manifest::{Manifest, SegmentMeta};
use dlog_meta::metastore::embedded::EmbeddedStore;
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::names::LogName;
use dlog_wire::record::Record;

/// A re-initialisation's wait, in tests that re-initialise no node.
const NO_WAIT: std::time::Duration = std::time::Duration::ZERO;

fn template() -> SegmentMeta {
    SegmentMeta::open(0, vec!["cache-1".into()], 1, 1, 0)
}

/// Creates `log` with one open segment on `cache-1`; returns the log id
/// and the segment.
async fn log_with_open_segment(manifest: &Manifest, log: &LogName) -> (u64, SegmentMeta) {
    let meta = manifest.create_log(log).await.unwrap();
    let fence = manifest
        .bump_epoch(log, LogId(meta.log_id), Epoch(0))
        .await
        .unwrap();
    let segment = manifest
        .create_segment(log, fence, template())
        .await
        .unwrap();
    (meta.log_id, segment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_log_with_the_highest_id_is_freed_by_reconciliation() {
    let dir = tempfile::tempdir().unwrap();
    let metastore = EmbeddedStore::open(dir.path().join("meta")).await.unwrap();
    let manifest = Manifest::new(Arc::new(metastore), "default");
    let store = CacheStore::open(StoreOptions::new(dir.path().join("cache"))).unwrap();

    // The only log; its open segment is on this node.
    let log: LogName = "review/only".parse().unwrap();
    let (log_id, segment) = log_with_open_segment(&manifest, &log).await;
    let key = SegmentKey {
        log_id,
        segment_id: segment.segment_id,
    };
    let entry = encode_entry(
        &EntryHeader {
            log_id: key.log_id,
            segment_id: key.segment_id,
            entry_id: 0,
            epoch: segment.epoch,
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
        .add(key, Epoch(segment.epoch), entry)
        .unwrap()
        .await
        .unwrap();

    // Deleted and purged while this node was down (no DropSegment came).
    manifest.delete_log(&log).await.unwrap();
    assert!(manifest.purge_log(&log, log_id).await.unwrap());

    let report = reconcile::pass(&store, &manifest).await.unwrap();
    assert_eq!(
        report.dropped, 1,
        "the copy of a purged log must be freed ({report:?}); it is kept because no log \
         with a higher id exists, and stays until one is created"
    );
}

/// A node id that served before cookies existed, started on this version
/// with an empty directory (its disk was wiped or replaced during the
/// upgrade): segments the manifest placed on it may have had acknowledged
/// entries there, so it must not answer for them (before: it was trusted
/// for every segment). A segment created after its start is answered for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_directory_of_an_id_with_segments_is_not_trusted_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let metastore = EmbeddedStore::open(dir.path().join("meta")).await.unwrap();
    let manifest = Manifest::new(Arc::new(metastore), "default");
    let old: LogName = "review/upgraded".parse().unwrap();
    let (old_id, old_segment) = log_with_open_segment(&manifest, &old).await;

    let wiped = identity::establish(&manifest, &dir.path().join("c1"), "cache-1", false, NO_WAIT)
        .await
        .expect("starts");
    let trust = dlog_cache::trust::Trust::new(manifest.clone(), &wiped.cookie);
    let older = SegmentKey {
        log_id: old_id,
        segment_id: old_segment.segment_id,
    };
    assert!(
        trust.check(&old.to_string(), older).await.is_err(),
        "an empty directory of an id with segments is trusted for them: {:?}",
        wiped.cookie
    );
    let new: LogName = "review/after".parse().unwrap();
    let (new_id, new_segment) = log_with_open_segment(&manifest, &new).await;
    let newer = SegmentKey {
        log_id: new_id,
        segment_id: new_segment.segment_id,
    };
    trust
        .check(&new.to_string(), newer)
        .await
        .expect("a segment created after the start is answered for");
}

/// A node id re-initialised while its old process still runs: the new
/// instance replaces the registration first, so the old process's next
/// check fails and its confirmation (renewed only by checks) runs out; the
/// new instance takes the revision it serves from only after its wait, so
/// every add the old process could still acknowledge belongs to a segment
/// the new instance does not answer for. And the old process refuses adds
/// once its last confirmation is older than the validity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_re_initialised_while_its_old_process_runs() {
    use dlog_cache::confirm::{Confirmation, keep_confirming};
    use dlog_wire::proto::AddEntryRequest;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let metastore = EmbeddedStore::open(dir.path().join("meta")).await.unwrap();
    let manifest = Manifest::new(Arc::new(metastore), "default");
    let old = identity::establish(
        &manifest,
        &dir.path().join("old"),
        "cache-1",
        false,
        NO_WAIT,
    )
    .await
    .unwrap();
    let store = CacheStore::open(StoreOptions::new(dir.path().join("old-journal"))).unwrap();
    let validity = Duration::from_millis(400);
    let confirmation = Arc::new(Confirmation::new(validity));
    let (stop, replaced) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(keep_confirming(
        manifest.clone(),
        old.cookie.clone(),
        confirmation.clone(),
        stop.clone(),
        replaced.clone(),
    ));
    let key = SegmentKey {
        log_id: 1,
        segment_id: 1,
    };
    let add = |id: u64| AddEntryRequest {
        segment: Some(dlog_wire::proto::SegmentRef {
            log: "review/any".into(),
            log_id: key.log_id,
            segment_id: key.segment_id,
        }),
        epoch: 1,
        entry: encode_entry(
            &EntryHeader {
                log_id: key.log_id,
                segment_id: key.segment_id,
                entry_id: id,
                epoch: 1,
                first_offset: id,
                lac: None,
                record_count: 1,
            },
            &[EntryRecord {
                timestamp_ms: 1,
                record: Record::new("x"),
            }],
        ),
        lac: None,
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = dlog_cache::service::submit_add(&store, Some(&confirmation), add(0));
    first.await.expect("a confirmed node takes adds");

    // The re-initialisation, elsewhere, with a wait longer than the validity.
    let revision_before = manifest.store().range("/", true).await.unwrap().revision;
    let reinit = {
        let manifest = manifest.clone();
        let dir = dir.path().join("new");
        tokio::spawn(async move {
            identity::establish(&manifest, &dir, "cache-1", true, Duration::from_millis(600)).await
        })
    };
    tokio::time::timeout(Duration::from_secs(5), replaced.cancelled())
        .await
        .expect("the old process learns it was replaced");
    let new = reinit.await.unwrap().expect("re-initialised");
    assert!(new.reinitialised);
    assert!(
        new.cookie.serves_from_revision > revision_before
            && new.cookie.serves_from_revision != identity::PENDING,
        "serves from a revision taken after the wait: {:?}",
        new.cookie
    );
    // By the time the new instance serves, the old one refuses adds.
    let late = dlog_cache::service::submit_add(&store, Some(&confirmation), add(1)).await;
    assert_eq!(
        late.expect_err("a replaced node refuses adds").code(),
        tonic::Code::Unavailable
    );
    stop.cancel();
}
