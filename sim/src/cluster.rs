//! The simulated cluster: cache nodes (real [`CacheStore`] and
//! [`CacheServer`] on a lazy [`Disk`]), ingest nodes (real [`IngestNode`]:
//! ownership, recovery, owners, replicas) and the manifest (the embedded
//! metastore, seen by each ingest node through a [`FaultyStore`]), all on
//! one thread. Crashes, restarts, pauses and partitions are methods here;
//! the nemesis decides when.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlog_cache::service::CacheServer;
use dlog_cache::store::{CacheStore, StoreOptions};
use dlog_ingest::pool::CachePool;
use dlog_ingest::{IngestNode, IngestOptions};
use dlog_meta::manifest::{Manifest, NodeInfo, Role};
use dlog_meta::metastore::{LeaseId, SharedMetaStore};
use dlog_wire::names::LogName;
use tokio_util::sync::CancellationToken;

use crate::disk::Disk;
use crate::meta::FaultyStore;
use crate::net::Net;
use crate::rng::Rng;

const LEASE_TTL: Duration = Duration::from_secs(3600);

/// One cache node, across its lives.
#[derive(Debug)]
pub struct CacheNode {
    pub id: String,
    pub dir: PathBuf,
    pub disk: Arc<Disk>,
    pub life: u64,
    pub store: Option<Arc<CacheStore>>,
    pub lease: Option<LeaseId>,
}

/// One ingest node slot, across its lives.
#[derive(Debug)]
pub struct IngestSlot {
    pub id: String,
    pub node: Option<Arc<IngestNode>>,
    pub lost: CancellationToken,
    pub lease: Option<LeaseId>,
    pub store: Option<Arc<FaultyStore>>,
}

/// Fault rates of an ingest node's manifest calls.
#[derive(Debug, Clone, Copy)]
pub struct MetaFaults {
    pub max_delay: Duration,
    pub error_rate: f64,
}

#[derive(Debug)]
pub struct Cluster {
    pub rng: Arc<Rng>,
    pub net: Arc<Net>,
    pub meta: SharedMetaStore,
    /// The harness's own view of the manifest (no faults).
    pub manifest: Manifest,
    pub caches: Mutex<Vec<CacheNode>>,
    pub ingests: Mutex<Vec<IngestSlot>>,
    pub meta_faults: Mutex<MetaFaults>,
    pub trace: Mutex<Vec<String>>,
    /// A journal was damaged (a bit flipped) in this run.
    pub damaged: std::sync::atomic::AtomicBool,
    /// When the run started (trace times are relative to it).
    pub started: tokio::time::Instant,
    /// The object store the compactor offloads to (in memory).
    pub objects: dlog_storage::objstore::ObjectStoreHandle,
    pub compactor: Mutex<crate::compactor::CompactorSlot>,
}

pub(crate) fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    pub fn new(
        dir: &std::path::Path,
        rng: Arc<Rng>,
        net: Arc<Net>,
        caches: usize,
        ingests: usize,
        meta_faults: MetaFaults,
    ) -> Cluster {
        let store = dlog_meta::metastore::embedded::EmbeddedStore::open_inline(dir.join("meta"))
            .expect("open the embedded metastore");
        let meta: SharedMetaStore = Arc::new(store);
        let manifest = Manifest::new(meta.clone(), "default");
        let caches = (0..caches)
            .map(|i| {
                let dir = dir.join(format!("cache-{i}"));
                std::fs::create_dir_all(&dir).expect("cache dir");
                CacheNode {
                    id: format!("cache-{i}"),
                    dir,
                    disk: Arc::default(),
                    life: 0,
                    store: None,
                    lease: None,
                }
            })
            .collect();
        let ingests = (0..ingests)
            .map(|i| IngestSlot {
                id: format!("ingest-{i}"),
                node: None,
                lost: CancellationToken::new(),
                lease: None,
                store: None,
            })
            .collect();
        Cluster {
            rng,
            net,
            meta,
            manifest,
            caches: Mutex::new(caches),
            ingests: Mutex::new(ingests),
            meta_faults: Mutex::new(meta_faults),
            trace: Mutex::default(),
            damaged: Default::default(),
            started: tokio::time::Instant::now(),
            objects: dlog_storage::objstore::open("memory://").expect("in-memory object store"),
            compactor: Mutex::default(),
        }
    }

    pub fn trace(&self, event: String) {
        let at = self.started.elapsed().as_micros();
        let line = format!("{at:>10} {event}");
        if std::env::var_os("DLOG_SIM_VERBOSE").is_some() {
            eprintln!("{line}");
        }
        locked(&self.trace).push(line);
    }

    pub fn cache_count(&self) -> usize {
        locked(&self.caches).len()
    }

    pub fn cache_up(&self, i: usize) -> bool {
        locked(&self.caches)[i].store.is_some()
    }

    /// Starts cache node `i` (replays its journal). False if its last life
    /// still holds the journal directory (tasks not yet finished).
    pub async fn start_cache(&self, i: usize) -> bool {
        let (id, dir, layer, life) = {
            let caches = locked(&self.caches);
            let node = &caches[i];
            if node.store.is_some() {
                return true;
            }
            (
                node.id.clone(),
                node.dir.clone(),
                node.disk.layer(),
                node.life,
            )
        };
        let rng = self.rng.clone();
        let mut options = StoreOptions::new(&dir);
        options.journal.roll_bytes = 64 * 1024;
        let sync_delay = Box::new(move || rng.delay(Duration::from_millis(4)));
        let store = match CacheStore::open_sim(options, layer, sync_delay) {
            Ok(store) => Arc::new(store),
            Err(dlog_cache::error::Error::Locked { .. }) => return false,
            Err(err) => panic!("cache node {id} cannot open its store: {err:#}"),
        };
        self.net.up(&id, life, CacheServer::new(store.clone()));
        let lease = self.meta.lease_grant(LEASE_TTL).await.expect("lease");
        let info = NodeInfo {
            id: id.clone(),
            address: format!("sim://{id}"),
            zone: String::new(),
            capacity: 0,
            kafka: None,
        };
        self.manifest
            .register_node(Role::Cache, &info, lease)
            .await
            .expect("register");
        let mut caches = locked(&self.caches);
        caches[i].store = Some(store);
        caches[i].lease = Some(lease);
        drop(caches);
        self.trace(format!("{id} up (life {life})"));
        true
    }

    /// Starts cache node `i`, waiting for its last life to let go.
    pub async fn start_cache_waiting(&self, i: usize) {
        for _ in 0..100 {
            if self.start_cache(i).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("cache node {i} never let go of its journal directory");
    }

    /// Power loss of cache node `i`: unsynced writes lost or torn.
    /// Crashes cache node `i`: a power loss (`power_loss`, unsynced bytes
    /// lost or torn) or a kill -9 (every written byte kept).
    pub async fn crash_cache(&self, i: usize, power_loss: bool) {
        let (id, lease, disk) = {
            let mut caches = locked(&self.caches);
            let node = &mut caches[i];
            if node.store.take().is_none() {
                return;
            }
            node.life += 1;
            (node.id.clone(), node.lease.take(), node.disk.clone())
        };
        self.net.down(&id);
        let lost = disk.crash(&self.rng, power_loss);
        if let Some(lease) = lease {
            let _ = self.meta.lease_revoke(lease).await;
        }
        self.trace(format!("{id} crashed: {lost:?}"));
    }

    /// The next syncs of cache node `i` fail (its journal stops; it must be
    /// restarted).
    pub fn fail_syncs(&self, i: usize) {
        let caches = locked(&self.caches);
        caches[i].disk.fail_syncs();
        let id = caches[i].id.clone();
        drop(caches);
        self.trace(format!("{id}: fdatasync fails from now on"));
    }

    /// Flips a bit in a journal file of (stopped) cache node `i`.
    pub fn flip_bit(&self, i: usize, newest: bool) {
        let caches = locked(&self.caches);
        let node = &caches[i];
        if node.store.is_some() {
            return; // restarted meanwhile: bits are flipped on stopped nodes only
        }
        let done = node.disk.flip_bit(&node.dir, &self.rng, newest);
        if done.is_some() {
            self.damaged
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let id = node.id.clone();
        drop(caches);
        self.trace(format!("{id}: {done:?}"));
    }

    pub fn ingest_count(&self) -> usize {
        locked(&self.ingests).len()
    }

    pub fn ingest(&self, i: usize) -> Option<Arc<IngestNode>> {
        locked(&self.ingests)[i].node.clone()
    }

    pub fn ingest_by_id(&self, id: &str) -> Option<usize> {
        locked(&self.ingests).iter().position(|s| s.id == id)
    }

    /// Deletes `log` while it is written and read, waits (up to 60 s) for
    /// the compactor to purge it, then creates it again: a new incarnation
    /// under the same name. If the purge does not come, the log stays
    /// deleted until [`crate::compactor::restore_logs`] after the run.
    pub async fn recreate_log(&self, log: &LogName) {
        // As `DeleteLog` does: the manifest mark, then fencing the open
        // segments' replicas, through the simulated network.
        let pool = CachePool::with_connector(self.manifest.clone(), self.net.connector("admin"));
        match dlog_ingest::delete::delete_log(&self.manifest, &pool, log).await {
            Ok(meta) => self.trace(format!("{log}#{} deleted", meta.log_id)),
            Err(err @ dlog_ingest::error::Error::DeletedUnfenced { .. }) => {
                self.trace(format!("{log}: deleted, not fenced: {err}"))
            }
            Err(err) => return self.trace(format!("{log}: delete failed: {err}")),
        }
        self.recreate_after_purge(log).await;
    }

    /// Waits (up to 60 s) until deleted `log` is purged, then creates it
    /// again.
    pub async fn recreate_after_purge(&self, log: &LogName) {
        for _ in 0..600 {
            if matches!(
                self.manifest.log(log).await,
                Err(dlog_meta::manifest::Error::LogNotFound(_))
            ) {
                match self.manifest.create_log(log).await {
                    Ok(meta) => self.trace(format!("{log}#{} created", meta.log_id)),
                    Err(err) => self.trace(format!("{log}: create failed: {err}")),
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.trace(format!("{log}: not purged within 60 s"));
    }

    /// A party's own view of the manifest's store: delayed and failing
    /// by the run's manifest faults when `faulty`, quiet otherwise.
    pub fn manifest_store(&self, faulty: bool) -> Arc<FaultyStore> {
        let faults = *locked(&self.meta_faults);
        let (delay, rate) = if faulty {
            (faults.max_delay, faults.error_rate)
        } else {
            (Duration::ZERO, 0.0)
        };
        Arc::new(FaultyStore::new(
            self.meta.clone(),
            self.rng.clone(),
            delay,
            rate,
        ))
    }

    /// Starts ingest node `i` (a new life: new lease, new connections).
    pub async fn start_ingest(&self, i: usize, faulty: bool) {
        let id = {
            let ingests = locked(&self.ingests);
            if ingests[i].node.is_some() {
                return; // already running (another fault restarted it)
            }
            ingests[i].id.clone()
        };
        let store = self.manifest_store(faulty);
        let manifest = Manifest::new(store.clone(), "default");
        let lease = self.meta.lease_grant(LEASE_TTL).await.expect("lease");
        let me = NodeInfo {
            id: id.clone(),
            address: format!("sim://{id}"),
            zone: String::new(),
            capacity: 0,
            kafka: None,
        };
        // Registered as a real node is, so the placement rule spreads the
        // logs over the live ingest nodes and moves them by hand-over as
        // nodes crash, pause and come back.
        self.manifest
            .register_node(Role::Ingest, &me, lease)
            .await
            .expect("register");
        self.net.heal_party(&id);
        let pool = Arc::new(CachePool::with_connector(
            manifest.clone(),
            self.net.connector(&id),
        ));
        let lost = CancellationToken::new();
        let node = IngestNode::with_pool(
            manifest,
            me,
            lease,
            lost.clone(),
            IngestOptions::default(),
            pool,
        );
        let installed = {
            let mut ingests = locked(&self.ingests);
            let slot = &mut ingests[i];
            if slot.node.is_some() {
                false
            } else {
                slot.node = Some(node);
                slot.lost = lost.clone();
                slot.lease = Some(lease);
                slot.store = Some(store);
                true
            }
        };
        if !installed {
            // Started meanwhile by another fault: this life never ran.
            lost.cancel();
            let _ = self.meta.lease_revoke(lease).await;
            return;
        }
        self.trace(format!("{id} up"));
    }

    /// Kills ingest node `i`: its owners stop at once, its connections
    /// break, its lease (and owner keys) go.
    pub async fn crash_ingest(&self, i: usize) {
        let (id, lease) = {
            let mut ingests = locked(&self.ingests);
            let slot = &mut ingests[i];
            if slot.node.take().is_none() {
                return;
            }
            slot.lost.cancel();
            if let Some(store) = slot.store.take() {
                store.cut.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            (slot.id.clone(), slot.lease.take())
        };
        self.net.crash_party(&id);
        if let Some(lease) = lease {
            let _ = self.meta.lease_revoke(lease).await;
        }
        self.trace(format!("{id} crashed"));
    }

    /// Pauses ingest node `i` past its lease: cut from cache nodes and the
    /// manifest, its lease expires (owner keys go), it keeps running; after
    /// `pause` it is reachable again and still believes it owns its logs
    /// until it notices; then it is killed (its keep-alive would fail).
    pub async fn pause_ingest(&self, i: usize, pause: Duration, notice: Duration) {
        let (id, lease, store, node) = {
            let mut ingests = locked(&self.ingests);
            let slot = &mut ingests[i];
            let Some(node) = slot.node.clone() else {
                return;
            };
            (slot.id.clone(), slot.lease.take(), slot.store.clone(), node)
        };
        self.net.isolate(&id);
        if let Some(store) = &store {
            store.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(lease) = lease {
            let _ = self.meta.lease_revoke(lease).await;
        }
        self.trace(format!("{id} paused; its lease expired"));
        tokio::time::sleep(pause).await;
        self.net.heal_party(&id);
        if let Some(store) = &store {
            store.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        self.trace(format!("{id} resumed"));
        tokio::time::sleep(notice).await;
        // Still the same life? Then its keep-alive now fails: it stops.
        let same = locked(&self.ingests)[i]
            .node
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(n, &node));
        if same {
            self.crash_ingest(i).await;
        }
    }

    /// Cuts ingest node `i` from the manifest for a while.
    pub async fn cut_manifest(&self, i: usize, time: Duration) {
        let (id, store) = {
            let ingests = locked(&self.ingests);
            (ingests[i].id.clone(), ingests[i].store.clone())
        };
        let Some(store) = store else { return };
        store.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.trace(format!("{id} cut from the manifest"));
        tokio::time::sleep(time).await;
        store.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        self.trace(format!("{id} reaches the manifest again"));
    }
}
