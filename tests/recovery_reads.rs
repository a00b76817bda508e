//! Segment recovery (`dlog_ingest::recovery`) against cache nodes that fail
//! reads, are down, were wiped, or are slow, with the segment larger than
//! one read call: in-process cache services over real gRPC on loopback and
//! the embedded metastore.
//!
//! Each cache node runs behind a fault switch ([`Faulty`]) that passes
//! every call to the real `CacheServer`, except that it can fail reads with
//! `DATA_LOSS` (a damaged frame on that node), fail every call with
//! `UNAVAILABLE` (the node is down), or make reads cost time per entry
//! returned (a cold disk).
//!
//! The properties: recovery never seals a segment short of an acknowledged
//! entry, because a read that failed is "unknown", not "not held"; it never
//! seals below the highest LAC a fence answer reported; and it reads a large
//! segment in bounded pages, each with its own deadline.

use dlog_wire::ids::{Epoch, LogId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dlog_cache::SegmentKey;
use dlog_cache::service::CacheServer;
use dlog_cache::store::{CacheStore, StoreOptions};
use dlog_ingest::pool::CachePool;
use dlog_ingest::recovery::recover_segment;
use dlog_meta::manifest::{Manifest, NodeInfo, Role, SegmentMeta, SegmentState};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::names::LogName;
use dlog_wire::proto::cache_service_server::{CacheService, CacheServiceServer};
use dlog_wire::proto::{
    AddEntryRequest, AddEntryResponse, AddOutcome, DropSegmentRequest, DropSegmentResponse,
    FenceRequest, FenceResponse, ReadEntriesRequest, ReadEntriesResponse, ReadLacRequest,
    ReadLacResponse,
};
use dlog_wire::record::Record;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// Fault modes of a [`Faulty`] node.
const NORMAL: u8 = 0;
/// Reads answer `DATA_LOSS`; fences and adds work (a damaged frame).
const READS_FAIL: u8 = 1;
/// Every call answers `UNAVAILABLE` (the node is down).
const DOWN: u8 = 2;
/// Every call answers `DATA_LOSS` (its journal was damaged: the node
/// serves, fences and takes nothing until it is wiped).
const DAMAGED: u8 = 3;
/// Fences and recovery reads answer `DATA_LOSS`, adds work: a node wiped
/// and re-initialised (`--reinit-cache`) answers so for every segment
/// created before its re-initialisation.
const REINITIALISED: u8 = 4;

/// A cache node's service behind a fault switch.
#[derive(Clone)]
struct Faulty {
    inner: CacheServer,
    mode: Arc<AtomicU8>,
    /// Time a read takes per entry it returns.
    read_cost: Duration,
}

impl Faulty {
    fn check(&self, read: bool) -> Result<(), Status> {
        self.check_call(read, false)
    }

    /// `fencing`: a fence, or a read that fences (recovery).
    fn check_call(&self, read: bool, fencing: bool) -> Result<(), Status> {
        match self.mode.load(Ordering::SeqCst) {
            REINITIALISED if fencing => Err(Status::data_loss(
                "this node was re-initialised after the segment was created (test fault)",
            )),
            DOWN => Err(Status::unavailable("node down (test fault)")),
            DAMAGED => Err(Status::data_loss(
                "journal damaged on this node (test fault)",
            )),
            READS_FAIL if read => Err(Status::data_loss(
                "segment damaged on this node (test fault): read it from another replica",
            )),
            _ => Ok(()),
        }
    }
}

type Answers<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl CacheService for Faulty {
    type AddEntriesStream = Answers<AddEntryResponse>;
    type ReadEntriesStream = Answers<ReadEntriesResponse>;
    type ReplicateStream = Answers<AddOutcome>;

    async fn add_entries(
        &self,
        request: Request<Streaming<AddEntryRequest>>,
    ) -> Result<Response<Self::AddEntriesStream>, Status> {
        self.check(false)?;
        self.inner.add_entries(request).await
    }

    async fn replicate(
        &self,
        request: Request<Streaming<AddEntryRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        self.check(false)?;
        self.inner.replicate(request).await
    }

    async fn read_entries(
        &self,
        request: Request<ReadEntriesRequest>,
    ) -> Result<Response<Self::ReadEntriesStream>, Status> {
        self.check_call(true, request.get_ref().fence_epoch.is_some())?;
        let mut answers = self.inner.read_entries(request).await?.into_inner();
        let mut entries = Vec::new();
        while let Some(answer) = answers.next().await {
            entries.push(answer);
        }
        let count = u32::try_from(entries.len()).expect("few entries");
        tokio::time::sleep(self.read_cost * count).await;
        Ok(Response::new(Box::pin(futures::stream::iter(entries))))
    }

    async fn read_lac(
        &self,
        request: Request<ReadLacRequest>,
    ) -> Result<Response<ReadLacResponse>, Status> {
        self.check(true)?;
        self.inner.read_lac(request).await
    }

    async fn fence(
        &self,
        request: Request<FenceRequest>,
    ) -> Result<Response<FenceResponse>, Status> {
        self.check_call(false, true)?;
        self.inner.fence(request).await
    }

    async fn drop_segment(
        &self,
        request: Request<DropSegmentRequest>,
    ) -> Result<Response<DropSegmentResponse>, Status> {
        self.check(false)?;
        self.inner.drop_segment(request).await
    }
}

/// One in-process cache node.
struct Node {
    store: Arc<CacheStore>,
    mode: Arc<AtomicU8>,
}

impl Node {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// The embedded metastore, a log with one open segment on `n1..n3` (or
/// on the first nodes only, [`Setup::start_with`]), and the three cache
/// nodes serving on loopback.
struct Setup {
    manifest: Manifest,
    pool: CachePool,
    log: LogName,
    log_id: u64,
    epoch: u64,
    segment: SegmentMeta,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

const NODE_IDS: [&str; 3] = ["n1", "n2", "n3"];

impl Setup {
    /// `read_cost`: per entry returned, on every node.
    async fn start(read_cost: Duration) -> Setup {
        Setup::start_with(read_cost, 3).await
    }

    /// The segment's ensemble is the first `ensemble` nodes (W = E, A = 2);
    /// the others are live cache nodes outside it.
    async fn start_with(read_cost: Duration, ensemble: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("embedded://{}", dir.path().join("meta").display());
        let (store, cluster) = dlog_meta::metastore::open(&url).await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(600)).await.unwrap();
        let manifest = Manifest::new(store, &cluster);
        let mut nodes = Vec::new();
        for id in NODE_IDS {
            let journal = dir.path().join(id);
            let cache = tokio::task::spawn_blocking(move || {
                CacheStore::open(StoreOptions::new(journal)).unwrap()
            })
            .await
            .unwrap();
            let cache = Arc::new(cache);
            let mode = Arc::new(AtomicU8::new(NORMAL));
            let service = Faulty {
                inner: CacheServer::new(cache.clone()),
                mode: mode.clone(),
                read_cost,
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(CacheServiceServer::new(service))
                    .serve_with_incoming(TcpListenerStream::new(listener)),
            );
            let info = NodeInfo {
                id: id.to_owned(),
                address,
                zone: String::new(),
                capacity: 0,
                kafka: None,
            };
            manifest
                .register_node(Role::Cache, &info, lease)
                .await
                .unwrap();
            nodes.push(Node { store: cache, mode });
        }
        let log: LogName = "ns/recovered".parse().unwrap();
        let meta = manifest.create_log(&log).await.unwrap();
        let fence = manifest
            .bump_epoch(&log, LogId(meta.log_id), Epoch(0))
            .await
            .unwrap();
        let epoch = fence.epoch;
        let template = SegmentMeta::open(
            epoch,
            NODE_IDS[..ensemble]
                .iter()
                .map(|id| (*id).to_owned())
                .collect(),
            ensemble as u32,
            2,
            0,
        );
        let segment = manifest
            .create_segment(&log, fence, template)
            .await
            .unwrap();
        Setup {
            pool: CachePool::new(manifest.clone()),
            manifest,
            log,
            log_id: meta.log_id,
            epoch,
            segment,
            nodes,
            _dir: dir,
        }
    }

    /// Entry `id` (one record at offset `id`) as the owner at `self.epoch`
    /// sends it, piggybacking `lac`.
    fn entry(&self, id: u64, lac: Option<u64>) -> Bytes {
        let header = EntryHeader {
            log_id: self.log_id,
            segment_id: self.segment.segment_id,
            entry_id: id,
            epoch: self.epoch,
            first_offset: id,
            lac,
            record_count: 1,
        };
        let record = EntryRecord {
            timestamp_ms: 1_000 + i64::try_from(id).unwrap(),
            record: Record::new(format!("record {id}")),
        };
        encode_entry(&header, &[record])
    }

    /// Stores entries `ids` on `node` (pipelined, then waits until durable),
    /// each piggybacking the LAC an owner acknowledging in order would send:
    /// the entry before it.
    async fn store(&self, node: usize, ids: std::ops::Range<u64>) {
        let key = self.key();
        let store = &self.nodes[node].store;
        let durable: Vec<_> = ids
            .map(|id| {
                store
                    .add(key, Epoch(self.epoch), self.entry(id, id.checked_sub(1)))
                    .unwrap()
            })
            .collect();
        for add in futures::future::join_all(durable).await {
            add.unwrap();
        }
    }

    /// Runs recovery as a new owner (the next epoch).
    async fn recover(&mut self) -> dlog_ingest::error::Result<SegmentMeta> {
        let epoch = self.manifest.epoch(&self.log).await.unwrap();
        let epoch = self
            .manifest
            .bump_epoch(&self.log, LogId(self.log_id), Epoch(epoch))
            .await
            .unwrap()
            .epoch;
        recover_segment(
            &self.pool,
            &self.manifest,
            &self.log,
            self.log_id,
            epoch,
            &self.segment,
        )
        .await
    }

    fn key(&self) -> SegmentKey {
        SegmentKey {
            log_id: self.log_id,
            segment_id: self.segment.segment_id,
        }
    }

    /// Entries `0..count` as [`Setup::store`] sends them.
    fn entries(&self, count: u64) -> Vec<Bytes> {
        (0..count)
            .map(|id| self.entry(id, id.checked_sub(1)))
            .collect()
    }

    /// What `node` serves of the segment sealed at `last_entry`.
    async fn sealed_copy(&self, node: usize, last_entry: u64) -> Vec<Bytes> {
        let read = dlog_cache::ReadMode::Sealed { last_entry };
        self.nodes[node]
            .store
            .read(self.key(), 0, 1_000, read)
            .await
            .unwrap_or_else(|err| panic!("{} serves the sealed segment: {err}", NODE_IDS[node]))
    }

    async fn state(&self) -> SegmentMeta {
        self.manifest
            .segment(&self.log, self.segment.segment_id)
            .await
            .unwrap()
            .value
    }
}

/// E/W/A = 3/3/2. Entries 0..=2 are on every node; entry 3 reached only
/// n1 and n2, so the owner acknowledged it. n2 is down; n1 still answers
/// the fence, but every read from it fails (a damaged frame). Recovery must
/// not seal before entry 3: it cannot tell whether n1 holds it, so it fails
/// and leaves the segment open. Once n2 is back, recovery keeps entry 3.
#[tokio::test]
async fn a_node_whose_reads_fail_does_not_make_recovery_seal_short() {
    let mut setup = Setup::start(Duration::ZERO).await;
    for node in 0..3 {
        setup.store(node, 0..3).await;
    }
    setup.store(0, 3..4).await;
    setup.store(1, 3..4).await;
    setup.nodes[0].set(READS_FAIL);
    setup.nodes[1].set(DOWN);

    let result = setup.recover().await;
    let state = setup.state().await;
    assert!(
        result.is_err(),
        "recovery sealed although no node could say whether it holds entry 3: {:?}",
        result.map(|s| (s.end_offset, s.last_entry_id))
    );
    assert_eq!(state.state, SegmentState::Open, "the segment stays open");

    setup.nodes[1].set(NORMAL);
    let sealed = setup.recover().await.expect("recovery with n2 back");
    assert_eq!(sealed.state, SegmentState::Sealed);
    assert_eq!(sealed.last_entry_id, Some(3), "entry 3 is kept");
    assert_eq!(sealed.end_offset, Some(4));
}

/// n1 holds entries 0..=3 and reported LAC 2 on its fence answer, but its
/// reads fail; n2 and n3 came back empty under the same ids (wiped disks),
/// so they answer "not held" from entry 0. Two "not held" answers would
/// let recovery stop, but entries up to the LAC are acknowledged: recovery
/// must fail rather than seal below the LAC.
#[tokio::test]
async fn recovery_never_seals_below_a_reported_lac() {
    let mut setup = Setup::start(Duration::ZERO).await;
    setup.store(0, 0..4).await;
    setup.nodes[0].set(READS_FAIL);

    let result = setup.recover().await;
    let state = setup.state().await;
    assert!(
        result.is_err(),
        "recovery sealed below the reported LAC 2: {:?}",
        result.map(|s| (s.end_offset, s.last_entry_id))
    );
    assert_eq!(state.state, SegmentState::Open, "the segment stays open");
}

/// 600 entries on every node, and reads cost 10 ms per entry returned (a
/// cold disk): one call for the whole segment takes 6 s, longer than a
/// node's deadline. Recovery reads in bounded pages, each with its own
/// deadline, and keeps every entry.
#[tokio::test]
async fn a_segment_too_large_for_one_read_call_is_recovered_whole() {
    const ENTRIES: u64 = 600;
    let mut setup = Setup::start(Duration::from_millis(10)).await;
    for node in 0..3 {
        setup.store(node, 0..ENTRIES).await;
    }
    let sealed = setup.recover().await.expect("recovery");
    assert_eq!(sealed.state, SegmentState::Sealed);
    assert_eq!(
        sealed.last_entry_id,
        Some(ENTRIES - 1),
        "every entry is kept"
    );
    assert_eq!(sealed.end_offset, Some(ENTRIES));
}

/// E/W/A = 3/3/2. Entries 3 and 4 reached n2 and n3 (acknowledged: n3's
/// fence answer reports LAC 3, piggybacked on entry 4) but not n1 (its adds
/// were still on the wire when the owner died). Then n2 loses its disk and
/// comes back empty under the same id: one failure, within E − A = 1, and
/// every acknowledged entry is still on n3, which answers.
///
/// Recovery reads entries 0..=2 from n1, then asks n1 and n2 for entry 3:
/// both say "not held", recovery would stop at 3 <= LAC 3, so the LAC guard
/// fails it. Every later attempt asks the nodes in the same order and fails
/// the same way: the log could never be written again, although n3 holds
/// every entry. Below a reported LAC recovery asks every node, so n3
/// serves entries 3 and 4.
///
/// (A wiped node that answers "not held" for an entry *past* every reported
/// LAC is kept out by the cache node's identity: it refuses to start on an
/// empty directory, and once re-initialised answers `DATA_LOSS` for every
/// segment older than itself; `tests/cache_identity.rs`.)
#[tokio::test]
async fn one_wiped_node_does_not_keep_a_log_from_recovering_forever() {
    let mut setup = Setup::start(Duration::ZERO).await;
    setup.store(0, 0..3).await;
    setup.store(2, 0..5).await;

    let mut errors = Vec::new();
    for _ in 0..3 {
        match setup.recover().await {
            Ok(sealed) => {
                assert_eq!(
                    sealed.last_entry_id,
                    Some(4),
                    "every entry n3 holds is kept"
                );
                return;
            }
            Err(err) => errors.push(err.to_string()),
        }
    }
    panic!(
        "three recoveries failed although n3 holds every acknowledged entry:\n{}",
        errors.join("\n")
    );
}

/// E = W = A = 2 on n1 and n2 (a segment opened while only two cache nodes
/// were up); n3 is live outside the ensemble. Entries 0..=3 were
/// acknowledged on both, entry 4 reached only n1. Then n2's journal is
/// damaged: it answers every call with `DATA_LOSS` until it is wiped. No
/// copy of entry 4 can reach two nodes of the ensemble, so recovery used to
/// fail for good and the log stayed unwritable. Now n2 is replaced by n3,
/// which first gets the whole segment, and the seal records [n1, n3].
#[tokio::test]
async fn a_damaged_node_of_a_two_node_ensemble_is_replaced() {
    let mut setup = Setup::start_with(Duration::ZERO, 2).await;
    setup.store(0, 0..5).await;
    setup.store(1, 0..4).await;
    setup.nodes[1].set(DAMAGED);

    let sealed = setup.recover().await.expect("recovery replaces n2");
    assert_eq!(
        sealed.last_entry_id,
        Some(4),
        "every entry n1 holds is kept"
    );
    assert_eq!(sealed.ensemble, ["n1", "n3"], "n2 replaced in place by n3");
    assert_eq!(
        setup.state().await.ensemble,
        ["n1", "n3"],
        "as the manifest says"
    );
    assert_eq!(
        setup.sealed_copy(2, 4).await,
        setup.entries(5),
        "n3 holds the whole segment, byte for byte"
    );
}

/// E/W/A = 3/3/2. n1 and n2 hold entries 0..=9 (entry 9 carries LAC 8);
/// n3's stream broke after entry 4, so it never received 5..=8, and no
/// owner will send them again. Recovery copies each node what it lacks,
/// from the end its fence answer reported, so the sealed ensemble names
/// only nodes that hold the whole segment (before: n3 was given entry 9
/// only, and kept as a full copy with a hole at 5..=8).
#[tokio::test]
async fn a_node_short_of_the_lac_is_given_the_entries_it_lacks() {
    let mut setup = Setup::start(Duration::ZERO).await;
    setup.store(0, 0..10).await;
    setup.store(1, 0..10).await;
    setup.store(2, 0..5).await;

    let sealed = setup.recover().await.expect("recovery");
    assert_eq!(sealed.last_entry_id, Some(9));
    assert_eq!(sealed.ensemble, ["n1", "n2", "n3"]);
    for (node, id) in NODE_IDS.iter().enumerate() {
        let held = setup.sealed_copy(node, 9).await;
        let ids: Vec<u64> = held
            .iter()
            .map(|e| {
                dlog_wire::codec::decode_entry(e.clone())
                    .unwrap()
                    .header
                    .entry_id
            })
            .collect();
        assert_eq!(ids, (0..10).collect::<Vec<_>>(), "{id} holds every entry");
        assert_eq!(held, setup.entries(10), "{id}: byte for byte");
    }
}

/// E = 2 of three nodes. n1 answers the fence but its reads answer
/// `DATA_LOSS` (damage found only when the entry is read); n2 is healthy;
/// nothing lies past the LAC, so no copy tells recovery about n1. The
/// read's `DATA_LOSS` marks n1 damaged: it is replaced by n3, which gets
/// the whole segment, instead of being sealed as a full copy.
#[tokio::test]
async fn a_node_whose_recovery_read_answers_data_loss_is_replaced() {
    let mut setup = Setup::start_with(Duration::ZERO, 2).await;
    setup.store(0, 0..6).await;
    setup.store(1, 0..6).await;
    // Entry 5's LAC covers only 4; LAC 5 comes with an explicit advance.
    for node in &setup.nodes[..2] {
        node.store
            .advance_lac(setup.key(), Epoch(setup.epoch), 5)
            .expect("advance the LAC");
    }
    setup.nodes[0].set(READS_FAIL);

    let sealed = setup.recover().await.expect("recovery replaces n1");
    assert_eq!(sealed.last_entry_id, Some(5), "every entry is kept");
    assert_eq!(sealed.ensemble, ["n3", "n2"], "n1 replaced in place by n3");
    assert_eq!(
        setup.sealed_copy(2, 5).await,
        setup.entries(6),
        "n3 holds the whole segment"
    );
}

/// A log deleted while its owner (on some node that missed the deletion,
/// say its etcd watch was down) still streams to the open segment: once
/// `delete_log` returns, no cache node of the segment takes another add
/// from that owner, so no append can be acknowledged into the deleted log
/// (and the log re-created under its name never misses one it was sent).
#[tokio::test]
async fn deleting_a_log_fences_its_open_segment_on_the_cache_nodes() {
    let setup = Setup::start(Duration::ZERO).await;
    for node in 0..3 {
        setup.store(node, 0..3).await;
    }
    dlog_ingest::delete::delete_log(&setup.manifest, &setup.pool, &setup.log)
        .await
        .expect("delete");
    let key = setup.key();
    let mut accepted = Vec::new();
    for (node, id) in setup.nodes.iter().zip(NODE_IDS) {
        let add = node
            .store
            .add(key, Epoch(setup.epoch), setup.entry(3, Some(2)));
        if let Ok(durable) = add
            && durable.await.is_ok()
        {
            accepted.push(id);
        }
    }
    assert!(
        accepted.len() < 2,
        "the deleted log's old owner still reaches an ack quorum: {accepted:?} took its add"
    );
}

/// E = A = 2 and no spare that works (n3 is down): n2 was wiped and
/// re-initialised, so it answers fences and recovery reads of this older
/// segment with `DATA_LOSS` and holds none of it, while n1 holds entries
/// 0..=5 (LAC 4). The copy of entry 5 reaches n1 only (n2 refuses an entry
/// that would leave a hole): the quorum is missed, no spare can be filled,
/// so n2 itself is given the whole segment in place, and the log recovers
/// with both members holding every entry.
#[tokio::test]
async fn a_wiped_member_with_no_spare_is_filled_in_place() {
    let mut setup = Setup::start_with(Duration::ZERO, 2).await;
    setup.store(0, 0..6).await;
    setup.nodes[1].set(REINITIALISED);
    setup.nodes[2].set(DOWN);

    let sealed = setup.recover().await.expect("recovery fills n2 in place");
    assert_eq!(sealed.last_entry_id, Some(5));
    assert_eq!(sealed.ensemble, ["n1", "n2"]);
    assert_eq!(
        setup.sealed_copy(1, 5).await,
        setup.entries(6),
        "n2 holds the whole segment, byte for byte"
    );
}
