//! Thousands of open segments replicating to one cache node that stalls for
//! a moment (a busy node: one async worker, 10 000 logs) must not lose the
//! connection.
//!
//! Before the shared replication stream, every segment had an `AddEntries`
//! stream of its own, each sending its own small DATA frames. The h2 server
//! closes a connection whose unread small frames cost more than half its
//! connection window (GOAWAY `ENHANCE_YOUR_CALM`, "too_many_data_frames"),
//! so a cache node that fell behind for a moment dropped the connection and
//! every replica on it failed at once: the "broken pipe" seen with 10 000
//! logs and one async worker.
//!
//! The cache node here is a stand-in that holds every request stream unread
//! until released, then answers each add as durable. It is served by tonic
//! over loopback TCP with the windows `dlog serve` uses.

use std::sync::Arc;
use std::time::Duration;

use dlog_ingest::pool::CachePool;
use dlog_ingest::replicas::{ReplicaEvent, Replicas};
use dlog_meta::manifest::{Manifest, NodeInfo, Role};
use dlog_wire::pipeline::ResponseStream;
use dlog_wire::proto::cache_service_server::{CacheService, CacheServiceServer};
use dlog_wire::proto::{
    AddEntryRequest, AddEntryResponse, AddOutcome, DropSegmentRequest, DropSegmentResponse,
    FenceRequest, FenceResponse, ReadEntriesRequest, ReadEntriesResponse, ReadLacRequest,
    ReadLacResponse, SegmentRef,
};
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status, Streaming};

/// Segments written at once: well past the ~2 500 small frames that closed
/// a connection with hyper's default windows.
const SEGMENTS: u64 = 5_000;

/// A cache node that reads no request until `release` has a permit.
#[derive(Clone)]
struct StalledCache {
    release: Arc<Semaphore>,
}

impl StalledCache {
    /// Answers each request of `requests` with `answer`, once released.
    fn answer_later<T: Send + 'static>(
        &self,
        mut requests: Streaming<AddEntryRequest>,
        answer: fn(AddEntryRequest) -> T,
    ) -> ResponseStream<T> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let release = self.release.clone();
        tokio::spawn(async move {
            let _permit = release.acquire().await;
            while let Some(Ok(request)) = requests.next().await {
                if sender.send(Ok(answer(request))).is_err() {
                    return;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(
            receiver,
        ))
    }
}

#[tonic::async_trait]
impl CacheService for StalledCache {
    type AddEntriesStream = ResponseStream<AddEntryResponse>;
    type ReplicateStream = ResponseStream<AddOutcome>;
    type ReadEntriesStream = ResponseStream<ReadEntriesResponse>;

    async fn add_entries(
        &self,
        request: Request<Streaming<AddEntryRequest>>,
    ) -> Result<Response<Self::AddEntriesStream>, Status> {
        Ok(Response::new(self.answer_later(
            request.into_inner(),
            |add| AddEntryResponse {
                segment: add.segment,
                entry_id: add.lac.unwrap_or_default(),
            },
        )))
    }

    async fn replicate(
        &self,
        request: Request<Streaming<AddEntryRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        Ok(Response::new(self.answer_later(
            request.into_inner(),
            |add| AddOutcome {
                segment: add.segment,
                entry_id: add.lac.unwrap_or_default(),
                code: 0,
                message: String::new(),
            },
        )))
    }

    async fn read_entries(
        &self,
        _: Request<ReadEntriesRequest>,
    ) -> Result<Response<Self::ReadEntriesStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn read_lac(
        &self,
        _: Request<ReadLacRequest>,
    ) -> Result<Response<ReadLacResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn fence(&self, _: Request<FenceRequest>) -> Result<Response<FenceResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn drop_segment(
        &self,
        _: Request<DropSegmentRequest>,
    ) -> Result<Response<DropSegmentResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_cache_node_keeps_the_connection_of_thousands_of_segments() {
    let cache = StalledCache {
        release: Arc::new(Semaphore::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .initial_connection_window_size(dlog_wire::http2::CONNECTION_WINDOW)
        .initial_stream_window_size(dlog_wire::http2::STREAM_WINDOW)
        .add_service(CacheServiceServer::new(cache.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("embedded://{}", dir.path().join("meta").display());
    let (store, cluster) = dlog_meta::metastore::open(&url).await.unwrap();
    let lease = store.lease_grant(Duration::from_secs(600)).await.unwrap();
    let manifest = Manifest::new(store, &cluster);
    let node = NodeInfo {
        id: "cache-1".into(),
        address: format!("http://{address}"),
        zone: String::new(),
        capacity: 0,
        kafka: None,
    };
    manifest
        .register_node(Role::Cache, &node, lease)
        .await
        .unwrap();
    let pool = CachePool::new(manifest);

    // Every segment of its own log sends one LAC update, as an idle owner
    // does after each append, while the node reads nothing.
    let (events, mut heard) = mpsc::unbounded_channel();
    let mut segments = Vec::new();
    for log_id in 1..=SEGMENTS {
        let segment = SegmentRef {
            log: format!("ns/log-{log_id}"),
            log_id,
            segment_id: 1,
        };
        let mut replicas =
            Replicas::open(&pool, segment, 1, &["cache-1".to_owned()], events.clone()).await;
        replicas.send_lac(log_id, &events);
        segments.push(replicas);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cache.release.add_permits(1 << 20);

    let mut acked = 0;
    while acked < SEGMENTS {
        let event = tokio::time::timeout(Duration::from_secs(20), heard.recv())
            .await
            .expect("every update is answered within 20 s")
            .expect("the event channel stays open");
        match event {
            (_, ReplicaEvent::Acked { .. }) => acked += 1,
            (segment, ReplicaEvent::Failed { error, .. }) => panic!(
                "segment {segment}'s replica failed after {acked} answers: {}",
                dlog_wire::error::error_chain(&error)
            ),
        }
    }
    assert_eq!(
        segments.iter().map(Replicas::live).sum::<usize>(),
        SEGMENTS as usize
    );
}
