//! Suspicion "mixed views": a log view must come from one revision of the
//! manifest. A store that lets a delete, purge and re-create of the log
//! happen between the reads of one `load` shows whether the view can hold
//! the old incarnation's segments under the new incarnation's metadata.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dlog_meta::manifest::Manifest;
use dlog_meta::metastore::{
    LeaseId, MetaStore, RangeResponse, Result, Revision, SharedMetaStore, Txn, TxnResponse,
    WatchStream,
};
use dlog_wire::names::LogName;
use futures::future::BoxFuture;

use crate::testing::Fixture;

/// Delegates to `inner`; runs `hook` once, right before its second range.
#[derive(Debug)]
struct Interleaving {
    inner: SharedMetaStore,
    ranges: AtomicUsize,
    hook: Mutex<Option<HookFuture>>,
}

struct HookFuture(BoxFuture<'static, ()>);

impl std::fmt::Debug for HookFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookFuture")
    }
}

#[async_trait]
impl MetaStore for Interleaving {
    async fn range(&self, key: &str, prefix: bool) -> Result<RangeResponse> {
        if self.ranges.fetch_add(1, Ordering::SeqCst) == 1 {
            let hook = self.hook.lock().unwrap().take();
            if let Some(HookFuture(hook)) = hook {
                hook.await;
            }
        }
        self.inner.range(key, prefix).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str, start: Option<Revision>) -> Result<WatchStream> {
        self.inner.watch(prefix, start).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }
}

#[tokio::test]
async fn a_view_never_mixes_two_incarnations_of_a_log() {
    let fixture = Fixture::new().await;
    let log: LogName = "mixed/view".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    fixture
        .offloaded_segment(&log, epoch, 0, vec![bytes::Bytes::from_static(b"old"); 10])
        .await;
    let old_id = fixture.manifest.log(&log).await.unwrap().log_id;

    // Between the view's reads: the log is deleted, purged and re-created.
    let manifest = fixture.manifest.clone();
    let recreate = {
        let log = log.clone();
        async move {
            manifest.delete_log(&log).await.unwrap();
            manifest.purge_log(&log, old_id).await.unwrap();
            manifest.create_log(&log).await.unwrap();
        }
    };
    let store = Interleaving {
        inner: fixture.manifest.store().clone(),
        ranges: AtomicUsize::new(0),
        hook: Mutex::new(Some(HookFuture(Box::pin(recreate)))),
    };
    let interleaved = Manifest::new(std::sync::Arc::new(store), "default");
    let view = crate::log_view::load(&interleaved, &log).await.unwrap();

    let id = view.meta.as_ref().map(|m| m.log_id);
    let segments: Vec<u64> = view.segments.iter().map(|s| s.segment_id).collect();
    let consistent =
        (id == Some(old_id) && segments == [1]) || (id != Some(old_id) && segments.is_empty());
    assert!(
        consistent,
        "one view holds log id {id:?} (the old one was {old_id}) with segments {segments:?}"
    );
}
