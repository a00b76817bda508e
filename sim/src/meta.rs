//! The manifest's store as one party sees it: the embedded metastore
//! behind random delays and, for an ingest node, random `Unavailable`
//! errors and a switch that cuts it off (a partition from etcd).
//!
//! An injected error is returned before the operation is applied, or after
//! it (the caller cannot tell which, as with a timed-out etcd call). While
//! cut off, watch events already under way wait until the cut heals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dlog_meta::metastore::{
    Error, LeaseId, MetaStore, RangeResponse, Result, Revision, SharedMetaStore, Txn, TxnResponse,
    WatchStream,
};
use futures::StreamExt;

use crate::rng::Rng;

/// A party's view of the metastore.
#[derive(Debug)]
pub struct FaultyStore {
    inner: SharedMetaStore,
    rng: Arc<Rng>,
    max_delay: Duration,
    error_rate: f64,
    /// Every call fails while set, and watch events wait.
    pub cut: Arc<AtomicBool>,
}

impl FaultyStore {
    pub fn new(
        inner: SharedMetaStore,
        rng: Arc<Rng>,
        max_delay: Duration,
        error_rate: f64,
    ) -> FaultyStore {
        FaultyStore {
            inner,
            rng,
            max_delay,
            error_rate,
            cut: Arc::default(),
        }
    }

    /// Delay, then maybe fail instead of calling.
    async fn before(&self) -> Result<()> {
        tokio::time::sleep(self.rng.delay(self.max_delay)).await;
        if self.cut.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "metastore unreachable (simulated)".into(),
            ));
        }
        if self.rng.chance(self.error_rate / 2.0) {
            return Err(Error::Unavailable(
                "injected error before apply (simulated)".into(),
            ));
        }
        Ok(())
    }

    /// Maybe fail although the call was applied.
    fn after<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_ok() && self.rng.chance(self.error_rate / 2.0) {
            return Err(Error::Unavailable(
                "injected error after apply (simulated)".into(),
            ));
        }
        result
    }
}

#[async_trait]
impl MetaStore for FaultyStore {
    async fn range(&self, key: &str, prefix: bool) -> Result<RangeResponse> {
        self.before().await?;
        self.inner.range(key, prefix).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.before().await?;
        let result = self.inner.txn(txn).await;
        self.after(result)
    }

    async fn watch(&self, prefix: &str, start_revision: Option<Revision>) -> Result<WatchStream> {
        self.before().await?;
        let events = self.inner.watch(prefix, start_revision).await?;
        // A cut-off party hears of changes only once it is back.
        let cut = self.cut.clone();
        Ok(events
            .then(move |event| {
                let cut = cut.clone();
                async move {
                    while cut.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    event
                }
            })
            .boxed())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        self.before().await?;
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.before().await?;
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.before().await?;
        self.inner.lease_revoke(lease).await
    }
}
