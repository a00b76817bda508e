//! `ListOffsets`: earliest (-2), latest (-1), and the first offset at or
//! after a time, through dlog's time positioning (a read from
//! `Start::Timestamp`). A time after the last record answers offset -1, as
//! Kafka does.

use distributedlog::{ReadOptions, Start};
use futures::StreamExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, ResponseKind};

use crate::conn::Outcome;
use crate::errors::{Refusal, refusal};
use crate::in_order;
use crate::{Gateway, topics};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub(crate) async fn list_offsets(gateway: &Gateway, request: ListOffsetsRequest) -> Outcome {
    let topics = in_order(request.topics.into_iter().map(|topic| async move {
        let name = topic.name.clone();
        let partitions = in_order(topic.partitions.into_iter().map(|partition| {
            let name = &name;
            async move {
                let mut answer = ListOffsetsPartitionResponse::default();
                answer.partition_index = partition.partition_index;
                match offset_for(
                    gateway,
                    name,
                    partition.partition_index,
                    partition.timestamp,
                )
                .await
                {
                    Ok((offset, timestamp)) => {
                        answer.offset = offset;
                        answer.timestamp = timestamp;
                    }
                    Err(refusal) => {
                        answer.error_code = refusal.code.code();
                        answer.offset = -1;
                        answer.timestamp = -1;
                    }
                }
                answer
            }
        }))
        .await;
        let mut answer = ListOffsetsTopicResponse::default();
        answer.name = name;
        answer.partitions = partitions;
        answer
    }))
    .await;
    let mut response = ListOffsetsResponse::default();
    response.topics = topics;
    Outcome::Respond(Box::new(ResponseKind::ListOffsets(response)))
}

/// `(offset, timestamp)` for a partition and a ListOffsets timestamp.
async fn offset_for(
    gateway: &Gateway,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<(i64, i64), Refusal> {
    if topics::check_topic(topic).is_err() || partition < 0 {
        return Err(Refusal::new(
            ResponseError::UnknownTopicOrPartition,
            "no such topic or partition",
        ));
    }
    let log = topics::log_name(&gateway.options.namespace, topic, partition);
    let tail = gateway
        .client
        .check_tail(&log)
        .await
        .map_err(|e| refusal(&e))?;
    match timestamp {
        LATEST => Ok((tail.next_offset as i64, -1)),
        EARLIEST => Ok((tail.first_offset as i64, -1)),
        ms if ms >= 0 => {
            let options = ReadOptions {
                limit: Some(1),
                follow: false,
                log_id: Some(tail.log_id),
            };
            let mut read = gateway.client.reader(&log, Start::Timestamp(ms), options);
            match read.next().await {
                Some(Ok(record)) => Ok((record.offset as i64, record.timestamp_ms)),
                None => Ok((-1, -1)),
                Some(Err(e)) => Err(refusal(&e)),
            }
        }
        other => Err(Refusal::new(
            ResponseError::UnsupportedVersion,
            format!("ListOffsets timestamp {other} is not supported"),
        )),
    }
}
