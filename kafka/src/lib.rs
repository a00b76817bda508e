//! The Kafka-protocol listener: Kafka producers, consumers and tools read
//! and write dlog logs unchanged (docs/kafka.md).
//!
//! The listener runs inside a node (`kafka.listen`; on by default in
//! standalone) and turns each Kafka request into calls of the node's own
//! services: appends through the owner, so a produced record is
//! acknowledged only after the cache quorum fsynced it, whatever `acks`
//! asked; reads through the reader service, so fetches are tiered and long
//! polls are woken by the LAC. Calls go through the SDK to the node's own
//! gRPC address, except plain appends on a node with the ingest role, which
//! go to its ingest service in process ([`Ingest`]).
//!
//! This module owns the listener's accept loop; [`conn`] one connection,
//! [`frame`] the framing, [`codec`] the record batches, [`topics`] the
//! topic ↔ log mapping, [`routing`] which node leads a partition,
//! [`versions`] what `ApiVersions` advertises, and one module per group of
//! APIs.

mod admin;
mod appender;
mod codec;
mod commits;
mod conn;
mod errors;
mod fetch;
mod frame;
mod groups;
mod idempotence;
mod metadata;
mod offsets;
mod produce;
mod routing;
mod topics;
mod versions;

use std::net::SocketAddr;
use std::sync::Arc;

use distributedlog::{Appended, Client, ClientError, Record};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest Produce request frame (Kafka clients send at most 1 MB by
/// default: `max.request.size`, librdkafka's `message.max.bytes`): a longer
/// one closes the connection.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Largest frame of every other request: none needs more, and a decoded
/// request takes many times its frame in memory.
pub const MAX_OTHER_REQUEST_BYTES: usize = 1024 * 1024;

/// Bytes of requests the listener holds at once, over all connections
/// (Kafka's `queued.max.request.bytes`): a request waits for room before
/// its body is read.
pub const MAX_QUEUED_REQUEST_BYTES: usize = 256 * 1024 * 1024;

/// Bytes of decoded Produce records the listener holds at once, waiting
/// for their appends (a compressed batch inflates past its frame): a
/// request's next batch waits for room before it is queued.
pub const MAX_QUEUED_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// Takes room for `bytes` from `room` (a bound counted in KiB), waiting
/// until there is; fails only when the semaphore was closed.
pub(crate) async fn take_room(
    room: &Arc<tokio::sync::Semaphore>,
    bytes: usize,
) -> Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError> {
    let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
    room.clone().acquire_many_owned(kib).await
}

/// Calls of one request (its partitions) run at once at most.
const CONCURRENT_CALLS: usize = 16;

/// Runs `calls` with at most [`CONCURRENT_CALLS`] at a time; the outputs
/// in the calls' order.
pub(crate) async fn in_order<F: std::future::Future>(
    calls: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    use futures::StreamExt;
    // Collected first: a stream over a closure's futures trips the
    // compiler's Send check of the connection task.
    let calls: Vec<F> = calls.into_iter().collect();
    futures::stream::iter(calls)
        .buffered(CONCURRENT_CALLS)
        .collect()
        .await
}

/// What the listener serves and how it names itself.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// The dlog namespace that holds the topics' logs.
    pub namespace: String,
    /// The address Metadata gives clients for this node.
    pub advertised: SocketAddr,
    /// The node's id (its broker id is [`broker_id`] of it).
    pub node: String,
    /// The cluster id Metadata reports.
    pub cluster_id: String,
    /// Largest request frame.
    pub max_request_bytes: usize,
    /// Partitions of a topic created by a Metadata or Produce request for
    /// a topic that does not exist (Kafka's `num.partitions`); 0 turns
    /// auto-creation off.
    pub auto_create_partitions: i32,
}

/// Where the partitions' owners are: the brokers Metadata lists, and the
/// leader it names for each partition.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Node ids and Kafka addresses of the nodes that serve Kafka clients.
    async fn brokers(&self) -> anyhow::Result<Vec<(String, SocketAddr)>>;
    /// The node that owns `log` (its id, and its Kafka address if it serves
    /// one), if the log has an owner now.
    async fn owner(&self, log: &str) -> anyhow::Result<Option<(String, Option<SocketAddr>)>>;
}

/// The node's own ingest service, called in process: a plain append then
/// skips the gRPC hop (encoding, HTTP/2 and decoding on the same cores)
/// that the listener's client would make to its own node.
#[async_trait::async_trait]
pub trait Ingest: Send + Sync + std::fmt::Debug {
    /// Appends `records` to `log`, with no condition, as the node's
    /// `Append` call does (the same checks, the same acknowledgement after
    /// the quorum fsync); failures as that call would answer them.
    async fn append(&self, log: &str, records: Vec<Record>) -> Result<Appended, ClientError>;
}

/// A node's Kafka broker id: a hash of its node id (stable across restarts,
/// distinct between nodes with overwhelming odds), so that every node
/// computes every other's, and clients never see one id move between
/// addresses.
pub fn broker_id(node: &str) -> i32 {
    // FNV-1a: fixed, unlike the standard library's seeded hasher.
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash & 0x7fff_ffff) as i32
}

/// The listener's shared state: its options and its dlog client.
#[derive(Debug)]
pub struct Gateway {
    options: KafkaOptions,
    client: Client,
    /// Partition owners; `None`: this node leads every partition
    /// (standalone, tests).
    directory: Option<Arc<dyn Directory>>,
    /// The node's ingest service, if the node has one; `None`: plain
    /// appends go through `client` too.
    ingest: Option<Arc<dyn Ingest>>,
    /// Owners looked up in the last [`routing::OWNER_TTL`].
    owners: routing::Owners,
    groups: Arc<groups::Groups>,
    producers: idempotence::Producers,
    appenders: appender::Appenders,
    /// Room for request bytes, in KiB ([`MAX_QUEUED_REQUEST_BYTES`]).
    queued: Arc<tokio::sync::Semaphore>,
    /// Room for decoded records waiting for their appends, in KiB
    /// ([`MAX_QUEUED_RECORD_BYTES`]). Apart from `queued`: a request holds
    /// its frame's room while it waits for this one, which only appends
    /// (never a reader) give back, so the two cannot wait on each other.
    queued_records: Arc<tokio::sync::Semaphore>,
}

impl Gateway {
    /// Names each partition's owner as its leader, from `directory`.
    pub fn with_directory(mut self, directory: Arc<dyn Directory>) -> Gateway {
        self.directory = Some(directory);
        self
    }

    /// Makes plain appends through `ingest`, in process.
    pub fn with_ingest(mut self, ingest: Arc<dyn Ingest>) -> Gateway {
        self.ingest = Some(ingest);
        self
    }

    /// A gateway that serves `options` through `client` (a client of the
    /// node the listener runs in).
    pub fn new(options: KafkaOptions, client: Client) -> Gateway {
        Gateway {
            options,
            client,
            directory: None,
            ingest: None,
            owners: routing::Owners::default(),
            groups: Arc::default(),
            producers: idempotence::Producers::default(),
            appenders: appender::Appenders::default(),
            queued: Arc::new(tokio::sync::Semaphore::new(MAX_QUEUED_REQUEST_BYTES / 1024)),
            queued_records: Arc::new(tokio::sync::Semaphore::new(MAX_QUEUED_RECORD_BYTES / 1024)),
        }
    }
}

/// Accepts Kafka connections on `listener` until `stop` is cancelled; each
/// connection is served by its own task.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, stop: CancellationToken) {
    tokio::spawn(gateway.groups.clone().reap(stop.clone()));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(conn::serve(stream, peer, gateway.clone(), stop.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "kafka: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn broker_ids_are_stable_and_positive() {
        assert_eq!(super::broker_id("ingest-1"), super::broker_id("ingest-1"));
        assert_ne!(super::broker_id("ingest-1"), super::broker_id("ingest-2"));
        assert!(super::broker_id("standalone") >= 0);
    }
}
