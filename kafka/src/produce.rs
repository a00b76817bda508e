//! `Produce`: each partition's batches become one dlog append, atomic and
//! in order, acknowledged only after the cache quorum fsynced it (whatever
//! `acks` asked: docs/kafka.md). Partitions of one request are appended
//! concurrently; `acks=0` gets no response, as in Kafka.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use dlog_wire::limits::Limits;

use crate::conn::Outcome;
use crate::errors::{Refusal, refusal};
use crate::in_order;
use crate::{Gateway, codec, idempotence, topics};

pub(crate) async fn produce(gateway: &Gateway, request: ProduceRequest, version: i16) -> Outcome {
    let acks = request.acks;
    let transactional = request.transactional_id.is_some();
    let topics = in_order(
        request
            .topic_data
            .into_iter()
            .map(|topic| produce_topic(gateway, topic, acks, transactional, version)),
    )
    .await;
    if acks == 0 {
        let failed = topics
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
    response.responses = topics;
    Outcome::Respond(Box::new(ResponseKind::Produce(response)))
}

async fn produce_topic(
    gateway: &Gateway,
    topic: TopicProduceData,
    acks: i16,
    transactional: bool,
    version: i16,
) -> TopicProduceResponse {
    let name = topic.name.clone();
    let partitions = in_order(topic.partition_data.into_iter().map(|partition| {
        let name = &name;
        async move {
            let index = partition.index;
            let mut response = PartitionProduceResponse::default();
            response.index = index;
            response.log_start_offset = -1;
            match append(gateway, name, partition, acks, transactional).await {
                Ok((first_offset, timestamp_ms)) => {
                    response.base_offset = first_offset as i64;
                    response.log_append_time_ms = timestamp_ms;
                }
                Err(refusal) => {
                    tracing::debug!(topic = %name.as_str(), partition = index, %refusal, "kafka: produce refused");
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
    }))
    .await;
    let mut response = TopicProduceResponse::default();
    response.name = name;
    response.partition_responses = partitions;
    response
}

async fn append(
    gateway: &Gateway,
    topic: &str,
    partition: PartitionProduceData,
    acks: i16,
    transactional: bool,
) -> Result<(u64, i64), Refusal> {
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
    match produced.producer {
        Some(producer) => {
            let written = idempotence::append(gateway, &log, producer, produced.records).await?;
            Ok((written.first_offset, written.timestamp_ms))
        }
        None => {
            check_limits(&produced.records)?;
            gateway
                .client
                .append(&log, produced.records, None)
                .await
                .map(|appended| (appended.first_offset, appended.timestamp_ms))
                .map_err(|e| refusal(&e))
        }
    }
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
