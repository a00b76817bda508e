//! The simulated network between ingest nodes (and the checker's readers)
//! and cache nodes: a [`Connector`] that hands out in-process transports to
//! the real cache node gRPC service, through a link that injects faults.
//!
//! Per call: a random delay (so calls overtake one another), a random
//! `UNAVAILABLE` error, and a refusal when the link is cut (a partition,
//! the caller or the node crashed). Streams already open break when their
//! link is cut: each body checks the link on every frame and at least once
//! a simulated second (as HTTP/2 keepalive pings would find a dead peer).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dlog_cache::service::CacheServer;
use dlog_meta::manifest::NodeInfo;
use dlog_meta::transport::{BoxError, Connector, Transport};
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame};
use tonic::body::Body;
use tower::Service;

use crate::rng::Rng;

/// Fault rates of the network.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    /// Longest delay of a call's start.
    pub max_delay: Duration,
    /// Probability that a call fails with `UNAVAILABLE`.
    pub error_rate: f64,
}

/// One party of the network: an ingest node, a reader, the checker.
pub type Party = String;

#[derive(Debug, Default)]
struct State {
    /// Running cache nodes: id → (life, server).
    nodes: std::collections::BTreeMap<String, (u64, CacheServer)>,
    /// Cut links (party, cache node).
    cut: BTreeSet<(Party, String)>,
    /// Parties cut from every node (crashed or paused).
    isolated: BTreeSet<Party>,
    /// Cache nodes whose reads fail with `DATA_LOSS` (a bad sector under
    /// their journal), while adds and fences work.
    bad_reads: BTreeSet<String>,
    /// Life of each party: bumped when it crashes.
    party_lives: std::collections::BTreeMap<Party, u64>,
}

/// The network.
#[derive(Debug)]
pub struct Net {
    state: Mutex<State>,
    rng: Arc<Rng>,
    pub faults: Mutex<NetFaults>,
}

impl Net {
    pub fn new(rng: Arc<Rng>, faults: NetFaults) -> Arc<Net> {
        Arc::new(Net {
            state: Mutex::default(),
            rng,
            faults: Mutex::new(faults),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn faults(&self) -> NetFaults {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cache node starts serving (a new life of it).
    pub fn up(&self, node: &str, life: u64, server: CacheServer) {
        self.lock().nodes.insert(node.to_owned(), (life, server));
    }

    /// A cache node stops: every link to it breaks.
    pub fn down(&self, node: &str) {
        self.lock().nodes.remove(node);
    }

    pub fn cut(&self, party: &str, node: &str) {
        self.lock().cut.insert((party.to_owned(), node.to_owned()));
    }

    /// Reads from `node` fail (`DATA_LOSS`) until [`Net::good_reads`].
    pub fn bad_reads(&self, node: &str) {
        self.lock().bad_reads.insert(node.to_owned());
    }

    pub fn good_reads(&self, node: &str) {
        self.lock().bad_reads.remove(node);
    }

    pub fn isolate(&self, party: &str) {
        self.lock().isolated.insert(party.to_owned());
    }

    /// A party crashed: its open links break for good.
    pub fn crash_party(&self, party: &str) {
        *self.lock().party_lives.entry(party.to_owned()).or_default() += 1;
    }

    pub fn heal(&self) {
        let mut state = self.lock();
        state.cut.clear();
        state.isolated.clear();
        state.bad_reads.clear();
    }

    pub fn heal_party(&self, party: &str) {
        let mut state = self.lock();
        state.cut.retain(|(p, _)| p != party);
        state.isolated.remove(party);
    }

    fn party_life(&self, party: &str) -> u64 {
        self.lock().party_lives.get(party).copied().unwrap_or(0)
    }

    /// Whether a link made at (`party_life`, `node_life`) still carries.
    fn open(&self, party: &str, party_life: u64, node: &str, node_life: u64) -> bool {
        let state = self.lock();
        state
            .nodes
            .get(node)
            .is_some_and(|(life, _)| *life == node_life)
            && state.party_lives.get(party).copied().unwrap_or(0) == party_life
            && !state.isolated.contains(party)
            && !state.cut.contains(&(party.to_owned(), node.to_owned()))
    }

    /// The connector of one party.
    pub fn connector(self: &Arc<Net>, party: &str) -> Arc<SimConnector> {
        Arc::new(SimConnector {
            net: self.clone(),
            party: party.to_owned(),
        })
    }
}

/// Connects one party to cache nodes over the simulated network.
#[derive(Debug)]
pub struct SimConnector {
    net: Arc<Net>,
    party: Party,
}

impl Connector for SimConnector {
    fn connect(
        &self,
        node: &NodeInfo,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Transport, String>> {
        let net = self.net.clone();
        let party = self.party.clone();
        let id = node.id.clone();
        Box::pin(async move {
            let delay = net.rng.delay(net.faults().max_delay);
            tokio::time::sleep(delay).await;
            let party_life = net.party_life(&party);
            let (node_life, server) = net
                .lock()
                .nodes
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("{id} is down (simulated)"))?;
            if !net.open(&party, party_life, &id, node_life) {
                return Err(format!("{party} cannot reach {id} (simulated partition)"));
            }
            drop(server);
            let link = Link {
                net,
                party,
                party_life,
                node: id,
                node_life,
            };
            Ok(Transport::InProcess(tower::util::BoxCloneSyncService::new(
                link,
            )))
        })
    }
}

/// One connection: party → cache node, for one life of each. It holds no
/// reference to the node's server (a crashed node's store must be freed
/// while clients still hold their connections to it): each call looks the
/// server up.
#[derive(Clone)]
struct Link {
    net: Arc<Net>,
    party: Party,
    party_life: u64,
    node: String,
    node_life: u64,
}

impl Link {
    /// The node's server, if this link still carries.
    fn server(&self) -> Option<CacheServer> {
        if !self.is_open() {
            return None;
        }
        let state = self.net.lock();
        let (life, server) = state.nodes.get(&self.node)?;
        (*life == self.node_life).then(|| server.clone())
    }

    fn is_open(&self) -> bool {
        self.net
            .open(&self.party, self.party_life, &self.node, self.node_life)
    }

    fn refusal(&self) -> tonic::Status {
        tonic::Status::unavailable(format!(
            "{} → {}: link cut (simulated)",
            self.party, self.node
        ))
    }
}

impl Service<http::Request<Body>> for Link {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let link = self.clone();
        Box::pin(async move {
            let faults = link.net.faults();
            tokio::time::sleep(link.net.rng.delay(faults.max_delay)).await;
            let Some(server) = link.server() else {
                return Ok(link.refusal().into_http());
            };
            let read = request.uri().path().ends_with("/ReadEntries");
            if read && link.net.lock().bad_reads.contains(&link.node) {
                return Ok(
                    tonic::Status::data_loss("bad sector under the journal (simulated)")
                        .into_http(),
                );
            }
            if link.net.rng.chance(faults.error_rate) {
                return Ok(tonic::Status::unavailable("injected RPC error (simulated)").into_http());
            }
            let (parts, body) = request.into_parts();
            let request = http::Request::from_parts(parts, Body::new(CutBody::new(body, &link)));
            let mut server = server.into_service();
            let response = match server.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(
                parts,
                Body::new(CutBody::new(body, &link)),
            ))
        })
    }
}

/// A body that fails once its link is cut.
struct CutBody {
    inner: Body,
    link: Link,
    keepalive: Pin<Box<tokio::time::Sleep>>,
    failed: bool,
}

const KEEPALIVE: Duration = Duration::from_secs(1);

impl CutBody {
    fn new(inner: Body, link: &Link) -> CutBody {
        CutBody {
            inner,
            link: link.clone(),
            keepalive: Box::pin(tokio::time::sleep(KEEPALIVE)),
            failed: false,
        }
    }
}

impl HttpBody for CutBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        if !self.link.is_open() {
            self.failed = true;
            return Poll::Ready(Some(Err(self.link.refusal())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame),
            Poll::Pending => {
                while self.keepalive.as_mut().poll(cx).is_ready() {
                    if !self.link.is_open() {
                        self.failed = true;
                        return Poll::Ready(Some(Err(self.link.refusal())));
                    }
                    let next = tokio::time::Instant::now() + KEEPALIVE;
                    self.keepalive.as_mut().reset(next);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
