//! `ApiVersions`, `CreateTopics`, `DeleteTopics`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::conn::Outcome;
use crate::errors::{Refusal, refusal};
use crate::in_order;
use crate::topics::{self, MAX_PARTITIONS};
use crate::{Gateway, versions};

/// The advertised ranges.
pub(crate) fn api_versions() -> Vec<ApiVersion> {
    versions::SUPPORTED
        .iter()
        .map(|(api, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = *api as i16;
            version.min_version = *min;
            version.max_version = *max;
            version
        })
        .collect()
}

pub(crate) fn api_versions_response() -> ResponseKind {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = api_versions();
    ResponseKind::ApiVersions(response)
}

pub(crate) async fn create_topics(
    gateway: &Gateway,
    request: CreateTopicsRequest,
    version: i16,
) -> Outcome {
    let validate_only = request.validate_only;
    let results = in_order(
        request
            .topics
            .into_iter()
            .map(|topic| create_one(gateway, topic, validate_only, version)),
    )
    .await;
    let mut response = CreateTopicsResponse::default();
    response.topics = results;
    Outcome::Respond(Box::new(ResponseKind::CreateTopics(response)))
}

async fn create_one(
    gateway: &Gateway,
    topic: CreatableTopic,
    validate_only: bool,
    version: i16,
) -> CreatableTopicResult {
    let mut result = CreatableTopicResult::default();
    result.name = topic.name.clone();
    // -1: the broker's default, which is one partition here as in Kafka.
    let partitions = if topic.num_partitions == -1 {
        1
    } else {
        topic.num_partitions
    };
    // These fields exist from v5 on.
    if version >= 5 {
        result.num_partitions = partitions;
        result.replication_factor = topic.replication_factor;
    }
    let outcome = async {
        topics::check_topic(&topic.name)
            .map_err(|why| Refusal::new(ResponseError::InvalidTopicException, why))?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(Refusal::new(
                ResponseError::InvalidPartitions,
                format!("a topic has 1 to {MAX_PARTITIONS} partitions, not {partitions}"),
            ));
        }
        if !topic.assignments.is_empty() {
            return Err(Refusal::new(
                ResponseError::InvalidReplicaAssignment,
                "replica assignments are not supported: dlog places replicas itself",
            ));
        }
        if validate_only {
            return Ok(());
        }
        create_partitions(gateway, &topic.name, partitions).await
    }
    .await;
    if let Err(refusal) = outcome {
        result.error_code = refusal.code.code();
        result.error_message = Some(StrBytes::from_string(refusal.message));
    }
    result
}

/// Creates the logs of `topic` from the last partition down to 0 (module
/// doc of [`topics`]): the topic exists once partition 0 does.
pub(crate) async fn create_partitions(
    gateway: &Gateway,
    topic: &str,
    partitions: i32,
) -> Result<(), Refusal> {
    let namespace = &gateway.options.namespace;
    let first = topics::log_name(namespace, topic, 0);
    if gateway.client.get_log(&first).await.is_ok() {
        return Err(Refusal::new(
            ResponseError::TopicAlreadyExists,
            format!("topic {topic} exists"),
        ));
    }
    for partition in (0..partitions).rev() {
        let log = topics::log_name(namespace, topic, partition);
        match gateway.client.create_log(&log).await {
            Ok(_) => {}
            // A retry after a crash half-way: the partition is there, and
            // empty. One with records was left by a delete cut short: the
            // new topic must not inherit them.
            Err(e) if e.kind() == distributedlog::ErrorKind::AlreadyExists && partition > 0 => {
                let tail = gateway
                    .client
                    .check_tail(&log)
                    .await
                    .map_err(|e| refusal(&e))?;
                if tail.next_offset > 0 {
                    return Err(Refusal::new(
                        ResponseError::TopicAlreadyExists,
                        format!("the log {log} exists and holds records: delete the topic first"),
                    ));
                }
            }
            // A log of the name is still being deleted (Kafka: "marked
            // for deletion").
            Err(e) if e.kind() == distributedlog::ErrorKind::FailedPrecondition => {
                return Err(Refusal::new(
                    ResponseError::TopicAlreadyExists,
                    format!("{log} is still being deleted: retry shortly ({e})"),
                ));
            }
            Err(e) => return Err(refusal(&e)),
        }
    }
    tracing::info!(topic, partitions, "kafka: topic created");
    Ok(())
}

pub(crate) async fn delete_topics(
    gateway: &Gateway,
    request: DeleteTopicsRequest,
    version: i16,
) -> Outcome {
    // v6 names topics in `topics`, earlier versions in `topic_names`.
    let names: Vec<TopicName> = if version >= 6 {
        request.topics.into_iter().filter_map(|t| t.name).collect()
    } else {
        request.topic_names
    };
    let results = in_order(names.into_iter().map(|name| async move {
        let mut result = DeletableTopicResult::default();
        if let Err(refusal) = delete_one(gateway, &name).await {
            result.error_code = refusal.code.code();
            // The message field exists from v5 on.
            if version >= 5 {
                result.error_message = Some(StrBytes::from_string(refusal.message));
            }
        }
        result.name = Some(name);
        result
    }))
    .await;
    let mut response = DeleteTopicsResponse::default();
    response.responses = results;
    Outcome::Respond(Box::new(ResponseKind::DeleteTopics(response)))
}

async fn delete_one(gateway: &Gateway, topic: &str) -> Result<(), Refusal> {
    topics::check_topic(topic)
        .map_err(|why| Refusal::new(ResponseError::UnknownTopicOrPartition, why))?;
    let namespace = &gateway.options.namespace;
    let prefix = format!("{namespace}/{topic}.");
    let logs = gateway
        .client
        .list_logs(&prefix)
        .await
        .map_err(|e| refusal(&e))?;
    // Every partition log, also those left by a delete cut short (partition
    // 0 goes first, so the topic is gone at once).
    let partitions = topics::partitions_of(namespace, topic, &logs);
    if partitions.is_empty() {
        return Err(Refusal::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic {topic} does not exist"),
        ));
    }
    let count = partitions.len();
    for partition in partitions {
        let log = topics::log_name(namespace, topic, partition);
        match gateway.client.delete_log(&log).await {
            Ok(()) => {}
            Err(e) if e.kind() == distributedlog::ErrorKind::NotFound => {}
            Err(e) => return Err(refusal(&e)),
        }
    }
    tracing::info!(topic, partitions = count, "kafka: topic deleted");
    Ok(())
}
