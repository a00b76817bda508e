//! Retention arithmetic at its limits, on an embedded metastore and an
//! in-memory object store: a retention age near `u64::MAX` keeps
//! everything (it used to wrap into a cutoff in the future and delete
//! every segment), and such a configuration is refused when written.

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
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let manifest = Manifest::new(store.clone(), "default");
    let objects = objstore::open("memory://").unwrap();
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let compactor = Compactor::new(
        manifest.clone(),
        objects.clone(),
        "compactor-1".to_owned(),
        lease,
        CompactorOptions::default(),
    );
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
