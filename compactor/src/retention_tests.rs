//! Retention arithmetic at its limits, on an embedded metastore and an
//! in-memory object store: a retention age near `u64::MAX` keeps
//! everything (it used to wrap into a cutoff in the future and delete
//! every segment), and such a configuration is refused when written; the
//! sweep of objects no live log owns.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::{Manifest, NamespaceConfig, ObjectInfo, SealInfo, SegmentMeta};
use dlog_meta::metastore::MetaStore;
use dlog_meta::metastore::embedded::EmbeddedStore;
use dlog_storage::objstore;
use dlog_wire::ids::{Epoch, LogId, SegmentId};
use dlog_wire::names::{LogName, Namespace};
use object_store::{ObjectStoreExt, PutPayload};

use crate::compactor::{Compactor, CompactorOptions};

/// A compactor on an embedded metastore (in the returned directory) and an
/// in-memory object store.
async fn compactor_on_memory() -> (
    tempfile::TempDir,
    Arc<dyn MetaStore>,
    Manifest,
    objstore::ObjectStoreHandle,
    Compactor,
) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let manifest = Manifest::new(store.clone(), "default");
    let objects = objstore::open("memory://").unwrap();
    let compactor = compactor_on(
        &store,
        &manifest,
        &objects,
        "compactor-1",
        CompactorOptions::default(),
    )
    .await;
    (dir, store, manifest, objects, compactor)
}

/// A compactor named `node_id` on these stores, on a lease of its own.
async fn compactor_on(
    store: &Arc<dyn MetaStore>,
    manifest: &Manifest,
    objects: &objstore::ObjectStoreHandle,
    node_id: &str,
    options: CompactorOptions,
) -> Compactor {
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    Compactor::new(
        manifest.clone(),
        objects.clone(),
        node_id.to_owned(),
        lease,
        options,
    )
}

/// A log with one offloaded, cache-dropped segment whose newest record is
/// a second old.
async fn one_old_segment(
    manifest: &Manifest,
    objects: &objstore::ObjectStoreHandle,
    log: &LogName,
) {
    let meta = manifest.create_log(log).await.unwrap();
    let fence = manifest
        .bump_epoch(log, LogId(meta.log_id), Epoch(0))
        .await
        .unwrap();
    let template = SegmentMeta::open(fence.epoch, Vec::new(), 1, 1, 0);
    let segment = manifest.create_segment(log, fence, template).await.unwrap();
    let old = dlog_wire::now_ms() - 1000;
    let seal = SealInfo {
        end_offset: 10,
        last_entry_id: Some(0),
        bytes: 100,
        min_timestamp_ms: Some(old),
        max_timestamp_ms: Some(old),
        min_txid: None,
        max_txid: None,
    };
    manifest
        .seal_segment(log, fence, segment.segment_id, &seal)
        .await
        .unwrap();
    let key = format!("{}/{}.parquet", log, segment.segment_id);
    objects
        .store
        .put(
            &key.as_str().into(),
            PutPayload::from(Bytes::from_static(b"x")),
        )
        .await
        .unwrap();
    let object = ObjectInfo {
        key,
        size: 1,
        crc32c: 0,
        offloaded_at_ms: old,
        merged: None,
    };
    manifest
        .mark_offloaded(log, fence.log_id, segment.segment_id, object)
        .await
        .unwrap();
    manifest
        .mark_cache_dropped(log, LogId(fence.log_id), SegmentId(segment.segment_id))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_huge_retention_age_keeps_everything_and_is_refused() {
    let (_dir, store, manifest, objects, compactor) = compactor_on_memory().await;
    let ns = Namespace::new("keep").unwrap();
    let log: LogName = "keep/all".parse().unwrap();
    one_old_segment(&manifest, &objects, &log).await;

    // Refused when written...
    let config = NamespaceConfig {
        retention_ms: Some(u64::MAX),
        ..NamespaceConfig::default()
    };
    let err = manifest.put_namespace(&ns, &config).await.unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");
    // ...and harmless when already stored (written before the check existed).
    store
        .put(
            &format!("{}ns/keep", manifest.root()),
            Bytes::from(format!("{{\"retention_ms\":{}}}", u64::MAX)),
        )
        .await
        .unwrap();
    assert_eq!(
        manifest.namespace(&ns).await.unwrap().retention_ms,
        Some(u64::MAX)
    );
    compactor.pass().await.unwrap();
    assert_eq!(
        manifest.trim_point(&log).await.unwrap(),
        0,
        "nothing is trimmed"
    );
    assert_eq!(
        manifest.segments(&log).await.unwrap().0.len(),
        1,
        "the segment is kept"
    );

    // The fixture can fail: a short retention does delete the segment.
    let short = NamespaceConfig {
        retention_ms: Some(10),
        ..NamespaceConfig::default()
    };
    manifest.put_namespace(&ns, &short).await.unwrap();
    compactor.pass().await.unwrap();
    assert_eq!(manifest.trim_point(&log).await.unwrap(), 10);
    assert!(manifest.segments(&log).await.unwrap().0.is_empty());
}

/// A compactor paused past its lease uploads a segment file of a log that
/// was deleted and purged meanwhile (and created again under its name): no
/// manifest key names that object, so no purge or retention pass ever
/// deleted it. The orphan sweep does, from the purge's record, and keeps
/// every object of the live incarnation, of a log being deleted (its purge
/// owns those) and of a folder the manifest does not know (after an etcd
/// restore, or another cluster's on the same prefix). Once its record is
/// dropped, a purged folder is no longer swept.
#[tokio::test]
async fn the_orphan_sweep_deletes_late_objects_of_purged_logs_only() {
    use dlog_storage::segment_file::log_folder;
    use futures::TryStreamExt;
    use object_store::ObjectStore;

    let (_dir, store, manifest, objects, compactor) = compactor_on_memory().await;
    let put = |log: LogName, log_id: u64| {
        let objects = objects.clone();
        async move {
            let path = log_folder(&objects.prefix, &log, log_id).join("0-10.parquet");
            objects
                .store
                .put(&path, PutPayload::from(Bytes::from_static(b"x")))
                .await
                .unwrap();
        }
    };
    let recreated: LogName = "sweep/recreated".parse().unwrap();
    let old = manifest.create_log(&recreated).await.unwrap().log_id;
    manifest.delete_log(&recreated).await.unwrap();
    assert!(manifest.purge_log(&recreated, old).await.unwrap());
    let live = manifest.create_log(&recreated).await.unwrap().log_id;
    let gone: LogName = "sweep/gone".parse().unwrap();
    let gone_id = manifest.create_log(&gone).await.unwrap().log_id;
    manifest.delete_log(&gone).await.unwrap();
    assert!(manifest.purge_log(&gone, gone_id).await.unwrap());
    let deleting: LogName = "sweep/deleting".parse().unwrap();
    let deleting_id = manifest.create_log(&deleting).await.unwrap().log_id;
    manifest.delete_log(&deleting).await.unwrap();
    // The late uploads, and the objects that must stay.
    put(recreated.clone(), old).await;
    put(gone.clone(), gone_id).await;
    put(recreated.clone(), live).await;
    put(deleting.clone(), deleting_id).await;
    let unknown: LogName = "sweep/unknown".parse().unwrap();
    put(unknown.clone(), 1_000).await;

    assert_eq!(compactor.sweep_orphans().await.unwrap(), 2);
    let mut left: Vec<String> = objects
        .store
        .list(Some(&objects.prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    left.sort();
    let expected = |log: &LogName, id: u64| {
        log_folder(&objects.prefix, log, id)
            .join("0-10.parquet")
            .to_string()
    };
    let mut want = vec![
        expected(&recreated, live),
        expected(&deleting, deleting_id),
        expected(&unknown, 1_000),
    ];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(compactor.sweep_orphans().await.unwrap(), 0, "nothing left");

    // Another late upload within the records' time is swept too.
    put(gone.clone(), gone_id).await;
    assert_eq!(compactor.sweep_orphans().await.unwrap(), 1);
    let ids = |purged: Vec<dlog_meta::manifest::Purged>| {
        purged.iter().map(|p| p.log_id).collect::<Vec<_>>()
    };
    assert_eq!(ids(manifest.purged_logs().await.unwrap()), [old, gone_id]);

    // Records past their time are dropped after a last sweep.
    let forgetful = compactor_on(
        &store,
        &manifest,
        &objects,
        "compactor-2",
        CompactorOptions {
            keep_purge_records: Duration::ZERO,
            ..CompactorOptions::default()
        },
    )
    .await;
    put(gone.clone(), gone_id).await;
    assert_eq!(forgetful.sweep_orphans().await.unwrap(), 1);
    assert!(manifest.purged_logs().await.unwrap().is_empty());

    // A record naming a live log's id (an id handed out again, as after a
    // counter set back by hand) never sweeps it.
    store
        .put(
            &format!("{}purged/{live:020}", manifest.root()),
            Bytes::from(format!(
                "{{\"log\":\"sweep/recreated\",\"log_id\":{live},\"purged_at_ms\":0}}"
            )),
        )
        .await
        .unwrap();
    assert_eq!(ids(manifest.purged_logs().await.unwrap()), [live]);
    assert_eq!(forgetful.sweep_orphans().await.unwrap(), 0);
    let kept: Vec<String> = objects
        .store
        .list(Some(&log_folder(&objects.prefix, &recreated, live)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(kept, [expected(&recreated, live)]);
}

/// With the Glue catalog, a log whose name Glue cannot hold (an upper-case
/// letter) gets no table and is purged as without a catalog; neither its
/// purge nor its purge record's sweep holds up the other logs'.
#[tokio::test]
async fn a_log_name_the_catalog_cannot_hold_gets_no_table_and_holds_up_nothing() {
    use dlog_storage::segment_file::log_folder;
    use dlog_testkit::MotoServer;

    use crate::table::LogTables;

    let Some(moto) = MotoServer::start() else {
        return;
    };
    let (_dir, store, manifest, objects, _) = compactor_on_memory().await;
    let credentials = aws_sdk_glue::config::Credentials::new(
        MotoServer::ACCESS_KEY,
        MotoServer::SECRET_KEY,
        None,
        None,
        "dlog-tests",
    );
    let tables = LogTables::open_with(&moto.glue_uri(), objects.clone(), Some(credentials))
        .await
        .unwrap();
    let compactor = compactor_on(
        &store,
        &manifest,
        &objects,
        "compactor-1",
        CompactorOptions::default(),
    )
    .await
    .with_tables(Arc::new(tables));
    let put = |log: LogName, log_id: u64| {
        let objects = objects.clone();
        async move {
            let path = log_folder(&objects.prefix, &log, log_id).join("0-10.parquet");
            objects
                .store
                .put(&path, PutPayload::from(Bytes::from_static(b"x")))
                .await
                .unwrap();
        }
    };

    // A deleted log of each kind: both purged in one pass.
    let mixed: LogName = "lake/Mixed".parse().unwrap();
    let lower: LogName = "lake/lower".parse().unwrap();
    one_old_segment(&manifest, &objects, &mixed).await;
    one_old_segment(&manifest, &objects, &lower).await;
    let mixed_id = manifest.log(&mixed).await.unwrap().log_id;
    let lower_id = manifest.log(&lower).await.unwrap().log_id;
    manifest.delete_log(&mixed).await.unwrap();
    manifest.delete_log(&lower).await.unwrap();
    let report = compactor.pass().await.unwrap();
    assert_eq!((report.purged_logs, report.failures), (2, 0), "{report:?}");

    // Late uploads into both purged folders: the mixed-case record (the
    // first) does not stop the sweep of the other.
    put(mixed.clone(), mixed_id).await;
    put(lower.clone(), lower_id).await;
    assert_eq!(compactor.sweep_orphans().await.unwrap(), 2);
}
