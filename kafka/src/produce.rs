//! `Produce`: each partition's batches are appended atomically, in the
//! order the requests came in (appender.rs), and acknowledged only after
//! the cache quorum fsynced them (whatever `acks` asked: docs/kafka.md).
//! Partitions of one request are appended concurrently; `acks=0` gets no
//! response, as in Kafka.

use distributedlog::Record;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use dlog_wire::limits::Limits;

use crate::appender::{Appenders, Placed};
use crate::conn::Outcome;
use crate::errors::Refusal;
use crate::{Gateway, codec, topics};

/// Takes a Produce request in: every partition's batch is checked and
/// queued behind the batches taken in before it (appender.rs) before this
/// returns, so that the connection may read its next request; the future
/// returned waits for the appends and makes the response.
pub(crate) async fn take_in(
    gateway: &Arc<Gateway>,
    request: ProduceRequest,
    version: i16,
) -> impl Future<Output = Outcome> + Send + 'static {
    let acks = request.acks;
    let transactional = request.transactional_id.is_some();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let index = partition.index;
            let queued = queue(gateway, &topic.name, partition, acks, transactional).await;
            partitions.push((index, queued));
        }
        topics.push((topic.name, partitions));
    }
    answer(topics, acks, version)
}

/// A partition's batch, queued for its append (with the room its records
/// take until then) or refused.
type Queued = Result<(oneshot::Receiver<Placed>, OwnedSemaphorePermit), Refusal>;

/// The response once every queued batch was appended.
async fn answer(topics: Vec<(TopicName, Vec<(i32, Queued)>)>, acks: i16, version: i16) -> Outcome {
    let mut responses = Vec::with_capacity(topics.len());
    for (name, partitions) in topics {
        let mut topic = TopicProduceResponse::default();
        for (index, queued) in partitions {
            let placed = match queued {
                Ok((waiting, _room)) => waiting.await.unwrap_or_else(|_| {
                    Err(Refusal::new(
                        ResponseError::UnknownServerError,
                        "the append was not answered",
                    ))
                }),
                Err(refusal) => Err(refusal),
            };
            topic
                .partition_responses
                .push(partition_response(&name, index, placed, version));
        }
        topic.name = name;
        responses.push(topic);
    }
    if acks == 0 {
        let failed = responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .find(|p| p.error_code != 0);
        return match failed {
            Some(p) => Outcome::Close(format!(
                "a Produce with acks=0 failed (error {} in partition {})",
                p.error_code, p.index
            )),
            None => Outcome::Silent,
        };
    }
    let mut response = ProduceResponse::default();
    response.responses = responses;
    Outcome::Respond(Box::new(ResponseKind::Produce(response)))
}

fn partition_response(
    topic: &TopicName,
    index: i32,
    placed: Placed,
    version: i16,
) -> PartitionProduceResponse {
    let mut response = PartitionProduceResponse::default();
    response.index = index;
    response.log_start_offset = -1;
    match placed {
        Ok((first_offset, _append_time_ms)) => {
            response.base_offset = first_offset as i64;
            // -1, as a broker answers for CreateTime topics: consumers get
            // the producer's time (docs/kafka.md, "Records"), and so does
            // the producer's own record metadata.
            response.log_append_time_ms = -1;
        }
        Err(refusal) => {
            tracing::debug!(topic = %topic.as_str(), partition = index, %refusal, "kafka: produce refused");
            response.error_code = refusal.code.code();
            response.base_offset = -1;
            response.log_append_time_ms = -1;
            // The message field exists from v8 on.
            if version >= 8 {
                response.error_message = Some(StrBytes::from_string(refusal.message));
            }
        }
    }
    response
}

/// Checks one partition's batch and queues it for its appender.
async fn queue(
    gateway: &Arc<Gateway>,
    topic: &str,
    partition: PartitionProduceData,
    acks: i16,
    transactional: bool,
) -> Queued {
    if !(-1..=1).contains(&acks) {
        return Err(Refusal::new(
            ResponseError::InvalidRequiredAcks,
            format!("acks={acks}: use -1, 0 or 1"),
        ));
    }
    if transactional {
        return Err(Refusal::new(
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactional producers are not supported",
        ));
    }
    topics::check_topic(topic)
        .map_err(|why| Refusal::new(ResponseError::InvalidTopicException, why))?;
    if partition.index < 0 {
        return Err(Refusal::new(
            ResponseError::UnknownTopicOrPartition,
            format!("no partition {}", partition.index),
        ));
    }
    let records = partition
        .records
        .ok_or_else(|| Refusal::new(ResponseError::InvalidRecord, "no records"))?;
    let produced = codec::produced_records(records, &Limits::DEFAULT)?;
    let log = topics::log_name(&gateway.options.namespace, topic, partition.index);
    if crate::routing::led_elsewhere(gateway, &log).await {
        return Err(Refusal::new(
            ResponseError::NotLeaderOrFollower,
            format!("{log} is owned by another node: refresh the metadata"),
        ));
    }
    // An idempotent batch is checked with its producer header in place
    // (idempotence.rs); a plain one here, so that one bad batch never
    // fails the batches appended together with it.
    if produced.producer.is_none() {
        check_limits(&produced.records)?;
    }
    let bytes: usize = produced.records.iter().map(Record::size).sum();
    let room = crate::take_room(&gateway.queued_records, bytes)
        .await
        .map_err(|_| {
            Refusal::new(
                ResponseError::UnknownServerError,
                "the listener is stopping",
            )
        })?;
    let placed = Appenders::submit(gateway, &log, produced.records, bytes, produced.producer);
    Ok((placed, room))
}

/// The node's record limits, with Kafka's codes: one record over a limit is
/// `MESSAGE_TOO_LARGE`, the whole append over one `RECORD_LIST_TOO_LARGE`.
pub(crate) fn check_limits(records: &[distributedlog::Record]) -> Result<(), Refusal> {
    use dlog_wire::record::RecordError as E;
    dlog_wire::record::check_append(records, &Limits::DEFAULT).map_err(|e| {
        let code = match e {
            E::TooManyRecords { .. } | E::AppendTooLarge { .. } => {
                ResponseError::RecordListTooLarge
            }
            E::RecordTooLarge { .. }
            | E::KeyTooLarge { .. }
            | E::HeadersTooLarge { .. }
            | E::HeaderNameTooLarge { .. } => ResponseError::MessageTooLarge,
            _ => ResponseError::InvalidRecord,
        };
        Refusal::new(code, e.to_string())
    })
}
