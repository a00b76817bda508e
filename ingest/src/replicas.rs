//! The replicas of one open segment: its place on the replication stream
//! ([`crate::links`]) to each cache node of its ensemble. Acks and failures come back as
//! [`ReplicaEvent`]s on the owner's event channel, tagged with the segment,
//! so events of a segment that was already rolled are recognised and ignored.

use bytes::Bytes;
use dlog_wire::proto::{AddEntryRequest, SegmentRef};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::links::Attachment;
use crate::pool::CachePool;

/// What a replica says about the segment.
#[derive(Debug)]
pub enum ReplicaEvent {
    /// The replica made the entry durable.
    Acked { replica: usize, entry_id: u64 },
    /// The replica's stream broke or refused an add; nothing more will come
    /// from it.
    Failed { replica: usize, error: Error },
}

/// Events of a segment: `(segment_id, event)`.
pub type EventSender = mpsc::UnboundedSender<(u64, ReplicaEvent)>;

#[derive(Debug)]
struct Replica {
    node: String,
    /// Its place on the node's replication stream; `None` once failed.
    link: Option<Attachment>,
}

/// The replicas of one segment.
#[derive(Debug)]
pub struct Replicas {
    segment: SegmentRef,
    epoch: u64,
    replicas: Vec<Replica>,
}

impl Replicas {
    /// Attaches the segment to the stream of every node of the ensemble. A
    /// node that cannot be reached reports `Failed` at once (the owner then
    /// rolls).
    pub async fn open(
        pool: &CachePool,
        segment: SegmentRef,
        epoch: u64,
        ensemble: &[String],
        events: EventSender,
    ) -> Replicas {
        let key = (segment.log_id, segment.segment_id);
        // Attached concurrently: one node slow to open holds up no other.
        let links = futures::future::join_all(
            ensemble
                .iter()
                .enumerate()
                .map(|(index, node)| pool.attach(node, key, index, events.clone())),
        )
        .await;
        let mut replicas = Vec::with_capacity(ensemble.len());
        for ((index, node), link) in ensemble.iter().enumerate().zip(links) {
            let link = match link {
                Ok(link) => Some(link),
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
                link,
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
            let Some(link) = &replica.link else {
                continue;
            };
            if let Err(err) = link.send(request.clone()) {
                replica.link = None;
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
            r.link = None;
        }
    }

    /// Whether a replica is still up (not failed or closed).
    pub fn is_live(&self, replica: usize) -> bool {
        self.replicas.get(replica).is_some_and(|r| r.link.is_some())
    }

    /// Replicas still up.
    pub fn live(&self) -> usize {
        self.replicas.iter().filter(|r| r.link.is_some()).count()
    }
}
