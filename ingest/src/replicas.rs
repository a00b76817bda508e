//! The replica streams of one open segment: one pipelined `AddEntries`
//! stream per cache node of its ensemble. Acks and failures come back as
//! [`ReplicaEvent`]s on the owner's event channel, tagged with the segment,
//! so events of a segment that was already rolled are recognised and ignored.

use bytes::Bytes;
use dlog_wire::proto::{AddEntryRequest, SegmentRef};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::Error;
use crate::pool::CachePool;

/// Adds one replica stream may have queued.
const STREAM_DEPTH: usize = 8192;

/// What a replica says about the segment.
#[derive(Debug)]
pub enum ReplicaEvent {
    /// The replica made the entry durable.
    Acked { replica: usize, entry_id: u64 },
    /// The replica's stream broke; nothing more will come from it.
    Failed { replica: usize, error: Error },
}

/// Events of a segment: `(segment_id, event)`.
pub type EventSender = mpsc::UnboundedSender<(u64, ReplicaEvent)>;

#[derive(Debug)]
struct Replica {
    node: String,
    sender: Option<mpsc::Sender<AddEntryRequest>>,
}

/// The open streams of one segment.
#[derive(Debug)]
pub struct Replicas {
    segment: SegmentRef,
    epoch: u64,
    replicas: Vec<Replica>,
}

impl Replicas {
    /// Opens a stream to every node of the ensemble. A node that cannot be
    /// reached reports `Failed` at once (the owner then rolls).
    pub async fn open(
        pool: &CachePool,
        segment: SegmentRef,
        epoch: u64,
        ensemble: &[String],
        events: EventSender,
    ) -> Replicas {
        let mut replicas = Vec::with_capacity(ensemble.len());
        for (index, node) in ensemble.iter().enumerate() {
            let sender =
                match open_stream(pool, node, index, segment.segment_id, events.clone()).await {
                    Ok(sender) => Some(sender),
                    Err(error) => {
                        let _ = events.send((
                            segment.segment_id,
                            ReplicaEvent::Failed {
                                replica: index,
                                error,
                            },
                        ));
                        None
                    }
                };
            replicas.push(Replica {
                node: node.clone(),
                sender,
            });
        }
        Replicas {
            segment,
            epoch,
            replicas,
        }
    }

    /// Sends an entry to every replica still up. A full or closed stream
    /// counts as a failure of that replica.
    pub fn send(&mut self, entry: &Bytes, events: &EventSender) {
        self.send_request(
            AddEntryRequest {
                segment: Some(self.segment.clone()),
                epoch: self.epoch,
                entry: entry.clone(),
                lac: None,
            },
            events,
        );
    }

    /// Tells every replica the LAC explicitly (the log went idle).
    pub fn send_lac(&mut self, lac: u64, events: &EventSender) {
        self.send_request(
            AddEntryRequest {
                segment: Some(self.segment.clone()),
                epoch: self.epoch,
                entry: Bytes::new(),
                lac: Some(lac),
            },
            events,
        );
    }

    fn send_request(&mut self, request: AddEntryRequest, events: &EventSender) {
        let segment_id = self.segment.segment_id;
        for (index, replica) in self.replicas.iter_mut().enumerate() {
            let Some(sender) = &replica.sender else {
                continue;
            };
            if let Err(err) = sender.try_send(request.clone()) {
                replica.sender = None;
                let error = Error::Cache {
                    node: replica.node.clone(),
                    status: tonic::Status::unavailable(format!("replica stream stopped: {err}")),
                };
                let _ = events.send((
                    segment_id,
                    ReplicaEvent::Failed {
                        replica: index,
                        error,
                    },
                ));
            }
        }
    }

    /// Node id of a replica.
    pub fn node(&self, replica: usize) -> &str {
        &self.replicas[replica].node
    }

    /// Marks a replica failed: nothing more is sent to it.
    pub fn close(&mut self, replica: usize) {
        if let Some(r) = self.replicas.get_mut(replica) {
            r.sender = None;
        }
    }

    /// Replicas still up.
    pub fn live(&self) -> usize {
        self.replicas.iter().filter(|r| r.sender.is_some()).count()
    }
}

async fn open_stream(
    pool: &CachePool,
    node: &str,
    index: usize,
    segment_id: u64,
    events: EventSender,
) -> Result<mpsc::Sender<AddEntryRequest>, Error> {
    let mut client = pool.client(node).await?;
    let (sender, receiver) = mpsc::channel(STREAM_DEPTH);
    let response = client
        .add_entries(ReceiverStream::new(receiver))
        .await
        .map_err(|status| Error::Cache {
            node: node.to_owned(),
            status,
        })?;
    let mut acks = response.into_inner();
    let node = node.to_owned();
    tokio::spawn(async move {
        loop {
            match acks.message().await {
                Ok(Some(ack)) => {
                    let event = ReplicaEvent::Acked {
                        replica: index,
                        entry_id: ack.entry_id,
                    };
                    if events.send((segment_id, event)).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    let error = Error::Cache {
                        node: node.clone(),
                        status,
                    };
                    let _ = events.send((
                        segment_id,
                        ReplicaEvent::Failed {
                            replica: index,
                            error,
                        },
                    ));
                    return;
                }
            }
        }
    });
    Ok(sender)
}
