//! Adversarial review of the read path (issue 22): event sequences that
//! broke a read guarantee, each a test that failed before its fix. Cache
//! nodes here are small in-process fakes serving the real `CacheService`
//! over loopback, with a settable LAC per node and a switch that makes a
//! node fail every request.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::{NodeInfo, Role};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::names::LogName;
use dlog_wire::proto::cache_service_server::{CacheService, CacheServiceServer};
use dlog_wire::proto::{
    AddEntryRequest, AddEntryResponse, AddOutcome, DropSegmentRequest, DropSegmentResponse,
    FenceRequest, FenceResponse, ReadEntriesRequest, ReadEntriesResponse, ReadLacRequest,
    ReadLacResponse,
};
use dlog_wire::record::Record;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{ReadItem, ReadSpec, ReaderOptions, Start};
use crate::testing::Fixture;

fn spec(log: &LogName, start: Start, follow: bool) -> ReadSpec {
    ReadSpec {
        log: log.clone(),
        start,
        limit: None,
        follow,
        log_id: None,
        client: None,
    }
}

fn payloads(count: usize) -> Vec<Bytes> {
    (0..count).map(|i| Bytes::from(vec![i as u8; 8])).collect()
}

/// One fake replica of one open segment: entries by id, its own LAC.
#[derive(Debug, Default)]
struct FakeNode {
    entries: Mutex<BTreeMap<u64, Bytes>>,
    lac: Mutex<Option<u64>>,
    down: AtomicBool,
}

impl FakeNode {
    fn check(&self) -> Result<(), Status> {
        if self.down.load(Ordering::SeqCst) {
            Err(Status::unavailable("fake node is down"))
        } else {
            Ok(())
        }
    }
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug, Clone)]
struct Fake(Arc<FakeNode>);

#[tonic::async_trait]
impl CacheService for Fake {
    type AddEntriesStream = Answers<AddEntryResponse>;
    type ReadEntriesStream = Answers<ReadEntriesResponse>;
    type ReplicateStream = Answers<AddOutcome>;

    async fn add_entries(
        &self,
        _: Request<Streaming<AddEntryRequest>>,
    ) -> Result<Response<Self::AddEntriesStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn replicate(
        &self,
        _: Request<Streaming<AddEntryRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn read_entries(
        &self,
        request: Request<ReadEntriesRequest>,
    ) -> Result<Response<Self::ReadEntriesStream>, Status> {
        self.0.check()?;
        let request = request.into_inner();
        // Like the real node: up to the sealed last entry, or to its own LAC.
        let limit = request
            .sealed_last_entry
            .or(*self.0.lac.lock().unwrap())
            .filter(|limit| request.from_entry <= *limit);
        let Some(limit) = limit else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        let entries = self.0.entries.lock().unwrap();
        let answers: Vec<_> = entries
            .range(request.from_entry..=limit)
            .take(request.max_entries.max(1) as usize)
            .map(|(_, bytes)| {
                Ok(ReadEntriesResponse {
                    entry: bytes.clone(),
                })
            })
            .collect();
        if answers.is_empty() {
            return Err(Status::not_found("entry not held"));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(answers))))
    }

    async fn read_lac(
        &self,
        request: Request<ReadLacRequest>,
    ) -> Result<Response<ReadLacResponse>, Status> {
        self.0.check()?;
        let request = request.into_inner();
        let lac = *self.0.lac.lock().unwrap();
        if request.after_entry.is_some() && lac <= request.after_entry {
            // A long-poll that sees no progress: wait (a little) first.
            let wait = Duration::from_millis(u64::from(request.timeout_ms).min(200));
            tokio::time::sleep(wait).await;
        }
        Ok(Response::new(ReadLacResponse {
            lac: *self.0.lac.lock().unwrap(),
            last_entry_id: self.0.entries.lock().unwrap().keys().last().copied(),
        }))
    }

    async fn fence(&self, _: Request<FenceRequest>) -> Result<Response<FenceResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn drop_segment(
        &self,
        _: Request<DropSegmentRequest>,
    ) -> Result<Response<DropSegmentResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves a fake node on loopback and registers it as cache node `id`.
async fn start_node(fixture: &Fixture, id: &str) -> Arc<FakeNode> {
    let node = Arc::new(FakeNode::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CacheServiceServer::new(Fake(node.clone())))
            .serve(address),
    );
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lease = fixture
        .manifest
        .store()
        .lease_grant(Duration::from_secs(600))
        .await
        .unwrap();
    let info = NodeInfo {
        id: id.to_owned(),
        address: format!("http://{address}"),
        zone: String::new(),
        capacity: 0,
        kafka: None,
    };
    fixture
        .manifest
        .register_node(Role::Cache, &info, lease)
        .await
        .unwrap();
    node
}

/// Entry `entry_id` of the open segment: one record at `start + entry_id`,
/// carrying the LAC the owner knew when it wrote it.
fn entry(log_id: u64, segment_id: u64, start: u64, entry_id: u64) -> Bytes {
    let header = EntryHeader {
        log_id,
        segment_id,
        entry_id,
        epoch: 1,
        first_offset: start + entry_id,
        lac: entry_id.checked_sub(1),
        record_count: 1,
    };
    let records = [EntryRecord {
        timestamp_ms: 1,
        record: Record::new(Bytes::from(vec![entry_id as u8; 4])),
    }];
    encode_entry(&header, &records)
}

/// Log `log` with an open segment from offset `start` on fake nodes
/// `ids` (W = 3, A = 2): the nodes, the log id and the segment id.
async fn open_on_fakes(
    fixture: &Fixture,
    log: &LogName,
    ids: &[&str],
    start: u64,
) -> (Vec<Arc<FakeNode>>, u64, u64) {
    use dlog_meta::manifest::SegmentMeta;
    let epoch = fixture.create_log(log).await;
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(start_node(fixture, id).await);
    }
    let template = SegmentMeta::open(
        epoch.epoch,
        ids.iter().map(|s| s.to_string()).collect(),
        3,
        2,
        start,
    );
    let segment = fixture
        .manifest
        .create_segment(log, epoch, template)
        .await
        .unwrap();
    let log_id = fixture.manifest.log(log).await.unwrap().log_id;
    (nodes, log_id, segment.segment_id)
}

/// A non-follow read stops at the tail. With every replica of the open
/// segment unreachable, `CheckTail` says `UNAVAILABLE` (the tail is
/// unknown), but a read from the start delivers the closed segments and
/// then ends cleanly, as if the log ended at the open segment's start:
/// `read_open` turns the unknown LAC into `None` and reports "caught up".
/// A client (the SDK ends a non-follow read on a clean end) takes the
/// acknowledged records of the open segment for absent.
#[tokio::test]
async fn a_non_follow_read_with_an_unknown_lac_does_not_end_cleanly() {
    let fixture = Fixture::new().await;
    let log: LogName = "review/unknown-lac-read".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    fixture
        .offloaded_segment(&log, epoch, 0, payloads(10))
        .await;
    fixture
        .open_segment(&log, epoch, 10, &["gone-1", "gone-2", "gone-3"])
        .await;
    let engine = fixture.engine(ReaderOptions::default());
    let tail = engine.check_tail(&log).await;
    assert_eq!(
        tail.expect_err("nobody can tell the tail").kind(),
        ErrorKind::Unavailable
    );

    let mut items = engine.read(spec(&log, Start::Earliest, false));
    let mut last = None;
    let end = loop {
        match items.recv().await {
            Some(Ok(ReadItem::Records(batch))) => last = batch.last().map(|r| r.offset),
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(err)) => break Ok(err),
            None => break Err(()),
        }
    };
    match end {
        Ok(err) => assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}"),
        Err(()) => panic!(
            "the read ended cleanly after offset {last:?} although the open segment's \
             LAC is unknown (CheckTail: UNAVAILABLE): false completeness"
        ),
    }
}

/// With an ensemble larger than the write quorum (E=5, W=3, A=2, which
/// `Replication::validate` accepts), the owner still sends every entry to
/// all five nodes and counts an ack from any two. `current_lac` asks for
/// W - A + 1 = 2 answers, but the nodes that acknowledged may be any two:
/// E - A + 1 = 4 answers are needed for one of them to hold the LAC (the
/// recovery protocol uses E - A + 1). Here n1 and n2 lag (nothing yet),
/// n3..n5 hold entries 0..=6 with LAC 5. Once n3..n5 stop answering, the
/// two laggards are taken as "enough", the LAC as "nothing confirmed",
/// and the tail as the start of the open segment: the very answer the
/// change meant to rule out (a `Start::Tail` read re-delivers the segment).
#[tokio::test]
async fn the_lac_quorum_counts_the_ensemble_not_the_write_quorum() {
    let fixture = Fixture::new().await;
    let log: LogName = "review/wide-ensemble".parse().unwrap();
    let start = 100;
    let ids = ["n1", "n2", "n3", "n4", "n5"];
    let (nodes, log_id, segment_id) = open_on_fakes(&fixture, &log, &ids, start).await;
    for node in &nodes[2..] {
        let mut entries = node.entries.lock().unwrap();
        for id in 0..=6 {
            entries.insert(id, entry(log_id, segment_id, start, id));
        }
        *node.lac.lock().unwrap() = Some(5);
    }
    let engine = fixture.engine(ReaderOptions::default());
    let first = engine.check_tail(&log).await.unwrap().next_offset;
    assert_eq!(first, start + 6);

    for node in &nodes[2..] {
        node.down.store(true, Ordering::SeqCst);
    }
    match engine.check_tail(&log).await {
        Ok(tail) => panic!(
            "with the three nodes that hold the LAC down, the tail was {} (it was {first}; \
             {start} is the start of the open segment)",
            tail.next_offset
        ),
        Err(err) => assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}"),
    }
}

/// A read that started on one incarnation of a log goes on into the next
/// one after a delete, purge and re-create, without an error. The log view
/// is a `watch` (only the latest value), so a read task that was held back
/// by a slow client (or by a burst of watch events coalesced into one
/// reload) never sees the `deleting` state in between; the loop re-plans
/// from the newest view and delivers the new log's records after the old
/// one's, in one stream, as if they were one log. Here: offsets 0..65 535
/// come from the deleted log (payload `i % 251`), later ones from the new
/// log (payload `0xEE 0xEE`).
#[tokio::test]
async fn a_read_does_not_go_on_into_a_re_created_log() {
    use object_store::ObjectStoreExt;
    let fixture = Fixture::new().await;
    let log: LogName = "review/recreated".parse().unwrap();
    let epoch = fixture.create_log(&log).await;
    let old = fixture
        .offloaded_segment(
            &log,
            epoch,
            0,
            payloads_of(70_000, |i| vec![(i % 251) as u8]),
        )
        .await;
    let old_log_id = fixture.manifest.log(&log).await.unwrap().log_id;
    let engine = fixture.engine(ReaderOptions::default());
    let mut items = engine.read(spec(&log, Start::Earliest, false));
    // The client takes one batch, then stalls: the read task is blocked
    // on its full channel, inside the first row group of the old object.
    let Some(Ok(ReadItem::Records(first))) = items.recv().await else {
        panic!("first batch");
    };
    assert_eq!(first[0].offset, 0);

    // Delete (the compactor removes the object, then the keys), re-create,
    // and the new log gets 100 000 records.
    fixture.manifest.delete_log(&log).await.unwrap();
    let key = old.object.as_ref().unwrap().key.clone();
    fixture
        .objects
        .store
        .delete(&key.as_str().into())
        .await
        .unwrap();
    fixture.manifest.purge_log(&log, old_log_id).await.unwrap();
    let epoch = fixture.create_log(&log).await;
    fixture
        .offloaded_segment(&log, epoch, 0, payloads_of(100_000, |_| vec![0xEE, 0xEE]))
        .await;
    let new_log_id = fixture.manifest.log(&log).await.unwrap().log_id;
    assert_ne!(old_log_id, new_log_id);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut from_old = first.len();
    let mut mixed = None;
    loop {
        match items.recv().await {
            Some(Ok(ReadItem::Records(batch))) => {
                for record in batch {
                    if record.record.payload.as_ref() == [0xEE, 0xEE] {
                        mixed.get_or_insert(record.offset);
                    } else {
                        from_old += 1;
                    }
                }
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    assert_eq!(
        mixed, None,
        "one read delivered {from_old} records of the deleted log (log id {old_log_id}) and then, \
         from offset {mixed:?}, records of the re-created one (log id {new_log_id})"
    );
}

fn payloads_of(count: usize, payload: impl Fn(usize) -> Vec<u8>) -> Vec<Bytes> {
    (0..count).map(|i| Bytes::from(payload(i))).collect()
}

/// E/W/A = 3/3/2. n1 heard LAC 6 (the owner's explicit LAC, say), n2 and
/// n3 still know 5 from the entries' piggybacked LACs; all hold 0..=6. The
/// tail is first answered from n1: the end of entry 6. Then n1 stops
/// answering: n2 and n3 are enough answers (E − A + 1 = 2), and their
/// LAC 5 put the tail one entry back, so a `Start::Tail` read started
/// there re-delivered entry 6. A reader node never reports a tail below
/// one it reported before for the same segment.
#[tokio::test]
async fn the_tail_never_steps_back_when_the_replica_with_the_newest_lac_stops() {
    let fixture = Fixture::new().await;
    let log: LogName = "review/tail-step-back".parse().unwrap();
    let start = 40;
    let ids = ["t1", "t2", "t3"];
    let (nodes, log_id, segment_id) = open_on_fakes(&fixture, &log, &ids, start).await;
    for (i, node) in nodes.iter().enumerate() {
        let mut entries = node.entries.lock().unwrap();
        for id in 0..=6 {
            entries.insert(id, entry(log_id, segment_id, start, id));
        }
        *node.lac.lock().unwrap() = Some(if i == 0 { 6 } else { 5 });
    }
    let engine = fixture.engine(ReaderOptions::default());
    let first = engine.check_tail(&log).await.unwrap().next_offset;
    assert_eq!(first, start + 7, "the end of entry 6");

    nodes[0].down.store(true, Ordering::SeqCst);
    let second = engine.check_tail(&log).await.unwrap().next_offset;
    assert!(
        second >= first,
        "the tail stepped back from {first} to {second} when t1 stopped answering"
    );
}
