//! One `Replicate` stream per cache node, shared by every segment this
//! ingest node writes to that node (as BookKeeper's per-bookie channel).
//!
//! With a stream per segment, 10 000 open logs meant 10 000 HTTP/2 streams,
//! each sending its own small DATA frames. HTTP/2 servers bound the small
//! frames they buffer unread (h2 answers a flood of them with GOAWAY
//! `ENHANCE_YOUR_CALM`, "too_many_data_frames"), so a cache node that fell
//! behind for a moment closed the connection and every replica on it failed
//! at once. On one stream, the adds queued while the node is busy leave in
//! shared frames, and the node reads them in one place.
//!
//! Ordering: a segment's adds go out on one stream, in the order they were
//! queued, and the node applies and answers them in that order. A segment
//! never moves to another stream: when a stream breaks, every segment on it
//! hears `Failed` for that replica and stops using it (the owner rolls), and
//! the next segment to attach opens a new stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use dlog_wire::proto::{AddEntryRequest, AddOutcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::Error;
use crate::pool::CacheClient;
use crate::replicas::{EventSender, ReplicaEvent};

/// Longest wait for a stream to open (connection and response headers).
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed open, attaches to the node fail at once for this long
/// instead of each trying again in turn.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// A segment on a link: `(log_id, segment_id)`.
pub type SegmentKey = (u64, u64);

/// Where a segment's answers go.
#[derive(Debug)]
struct Route {
    replica: usize,
    events: EventSender,
    /// Tells this attachment from a later one of the same segment.
    token: u64,
}

/// The streams of one ingest node, by cache node id.
#[derive(Debug, Default)]
pub struct ReplicaLinks {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    tokens: AtomicU64,
}

/// The stream to one node, or why there is none.
#[derive(Debug, Default)]
enum Slot {
    #[default]
    Empty,
    Open(Arc<Link>),
    /// The last open failed at this time.
    Failed(Instant, tonic::Status),
}

/// One open `Replicate` stream to a cache node.
#[derive(Debug)]
pub struct Link {
    node: String,
    /// Unbounded: what it holds is bounded by the ingest node's in-flight
    /// byte budget (entries) and its open segments (LAC updates), and a full
    /// queue shared by every log must not fail them all at once. The cache
    /// node reads the stream as fast as it takes adds; beyond that, HTTP/2
    /// flow control holds the rest here.
    sender: mpsc::UnboundedSender<AddEntryRequest>,
    /// `None` once the stream broke: nothing attaches any more. Ordered, so
    /// a broken stream fails its segments in the same order every run (the
    /// simulation replays a seed exactly).
    routes: Mutex<Option<BTreeMap<SegmentKey, Route>>>,
}

/// A segment's use of a link; detaches when dropped.
#[derive(Debug)]
pub struct Attachment {
    link: Arc<Link>,
    key: SegmentKey,
    token: u64,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl ReplicaLinks {
    /// Routes the answers for `key` on the stream to `node` to `events`, as
    /// those of `replica`, opening the stream if there is none (or the last
    /// one broke). `connect` gives a client of the node (awaited only to
    /// open a stream).
    pub async fn attach(
        &self,
        node: &str,
        key: SegmentKey,
        replica: usize,
        events: EventSender,
        connect: impl Future<Output = Result<CacheClient, Error>>,
    ) -> Result<Attachment, Error> {
        let slot = locked(&self.slots)
            .entry(node.to_owned())
            .or_default()
            .clone();
        // One opener per node at a time; attaching to an open stream is
        // quick, and a failed open is shared for a moment instead of being
        // retried by every waiting segment in turn.
        let mut slot = slot.lock().await;
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let mut route = Route {
            replica,
            events,
            token,
        };
        let unavailable = |status: tonic::Status| Error::Cache {
            node: node.to_owned(),
            status,
        };
        match &*slot {
            Slot::Open(link) => match link.add_route(key, route) {
                Ok(()) => {
                    return Ok(Attachment {
                        link: link.clone(),
                        key,
                        token,
                    });
                }
                Err(AddRoute::Taken) => return Err(unavailable(already_attached())),
                Err(AddRoute::Broken(back)) => route = back,
            },
            Slot::Failed(at, status) if at.elapsed() < REOPEN_AFTER => {
                return Err(unavailable(status.clone()));
            }
            Slot::Failed(..) | Slot::Empty => {}
        }
        let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
            let client = connect.await?;
            Link::open(client, node).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(unavailable(tonic::Status::unavailable(format!(
                "the replication stream did not open within {OPEN_TIMEOUT:?}"
            ))))
        });
        let link = match opened {
            Ok(link) => link,
            Err(error) => {
                let status = match &error {
                    Error::Cache { status, .. } => status.clone(),
                    other => tonic::Status::unavailable(other.to_string()),
                };
                *slot = Slot::Failed(Instant::now(), status);
                return Err(error);
            }
        };
        *slot = Slot::Open(link.clone());
        match link.add_route(key, route) {
            Ok(()) => Ok(Attachment { link, key, token }),
            Err(AddRoute::Taken) => Err(unavailable(already_attached())),
            Err(AddRoute::Broken(_)) => Err(unavailable(tonic::Status::unavailable(
                "the replication stream broke as it opened",
            ))),
        }
    }
}

fn already_attached() -> tonic::Status {
    tonic::Status::internal("the segment is already attached to this cache node's stream")
}

/// Why a route was not added.
#[derive(Debug)]
enum AddRoute {
    /// The stream broke; the route comes back.
    Broken(Route),
    /// The segment has a route on this stream already (a node twice in one
    /// ensemble would count as one replica).
    Taken,
}

impl Link {
    async fn open(mut client: CacheClient, node: &str) -> Result<Arc<Link>, Error> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let response = client
            .replicate(UnboundedReceiverStream::new(receiver))
            .await
            .map_err(|status| Error::Cache {
                node: node.to_owned(),
                status,
            })?;
        let link = Arc::new(Link {
            node: node.to_owned(),
            sender,
            routes: Mutex::new(Some(BTreeMap::new())),
        });
        let answers = response.into_inner();
        tokio::spawn(link.clone().route_answers(answers));
        Ok(link)
    }

    /// Adds a route, unless the stream is broken or the segment has one.
    fn add_route(&self, key: SegmentKey, route: Route) -> Result<(), AddRoute> {
        match locked(&self.routes).as_mut() {
            Some(routes) if routes.contains_key(&key) => Err(AddRoute::Taken),
            Some(routes) => {
                routes.insert(key, route);
                Ok(())
            }
            None => Err(AddRoute::Broken(route)),
        }
    }

    /// Hands each answer to its segment's owner until the stream ends; then
    /// every segment still attached hears that its replica failed.
    async fn route_answers(self: Arc<Link>, mut answers: tonic::Streaming<AddOutcome>) {
        let status = loop {
            match answers.message().await {
                Ok(Some(outcome)) => {
                    if let Err(status) = self.route(outcome) {
                        break status;
                    }
                }
                Ok(None) => break tonic::Status::unavailable("the cache node ended the stream"),
                Err(status) => break status,
            }
        };
        let routes = locked(&self.routes).take().unwrap_or_default();
        for ((_, segment_id), route) in routes {
            let event = self.failed(route.replica, status.clone());
            let _ = route.events.send((segment_id, event));
        }
    }

    /// A replica on this stream failed with `status`.
    fn failed(&self, replica: usize, status: tonic::Status) -> ReplicaEvent {
        ReplicaEvent::Failed {
            replica,
            error: Error::Cache {
                node: self.node.clone(),
                status,
            },
        }
    }

    /// Hands one answer to its segment. An answer that names no segment
    /// cannot be placed, and its segment would wait for it forever: the
    /// stream is then treated as broken.
    fn route(&self, outcome: AddOutcome) -> Result<(), tonic::Status> {
        let Some(segment) = outcome.segment else {
            return Err(tonic::Status::internal(format!(
                "the cache node answered an add without naming its segment (code {}: {})",
                outcome.code, outcome.message
            )));
        };
        let key = (segment.log_id, segment.segment_id);
        let routes = locked(&self.routes);
        let Some(route) = routes.as_ref().and_then(|routes| routes.get(&key)) else {
            return Ok(()); // the segment was sealed or dropped meanwhile
        };
        let event = if outcome.code == 0 {
            ReplicaEvent::Acked {
                replica: route.replica,
                entry_id: outcome.entry_id,
            }
        } else {
            let status = tonic::Status::new(tonic::Code::from(outcome.code), outcome.message);
            self.failed(route.replica, status)
        };
        let _ = route.events.send((segment.segment_id, event));
        Ok(())
    }
}

impl Attachment {
    /// Queues an add (or LAC update) on the stream; an error if the stream
    /// is broken (the replica then counts as failed).
    pub fn send(&self, request: AddEntryRequest) -> Result<(), String> {
        self.link
            .sender
            .send(request)
            .map_err(|err| err.to_string())
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Some(routes) = locked(&self.link.routes).as_mut()
            && routes.get(&self.key).is_some_and(|r| r.token == self.token)
        {
            routes.remove(&self.key);
        }
    }
}
