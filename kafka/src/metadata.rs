//! `Metadata`: this node is the one broker, leader of every partition.
//!
//! Every node with a listener answers every partition: a produce is passed
//! to the log's owner by the node's dlog client, and a fetch is served by
//! the node's reader. (Naming each log's owner as its leader, so that a
//! produce takes no extra hop, is future work: docs/kafka.md.)

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::Gateway;
use crate::admin::create_partitions;
use crate::conn::Outcome;
use crate::topics;

pub(crate) async fn metadata(gateway: &Gateway, request: MetadataRequest, version: i16) -> Outcome {
    let options = &gateway.options;
    let node = BrokerId(options.node_id);
    let mut response = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = node;
    broker.host = StrBytes::from_string(options.advertised.ip().to_string());
    broker.port = i32::from(options.advertised.port());
    response.brokers = vec![broker];
    // Fields newer than the request's version must stay at their defaults.
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_string(options.cluster_id.clone()));
    }
    if version >= 1 {
        response.controller_id = node;
    }

    let known = match gateway
        .client
        .list_logs(&format!("{}/", options.namespace))
        .await
    {
        Ok(logs) => topics::topics_of(&options.namespace, &logs),
        Err(e) => {
            // No topic list: every asked topic gets a retryable error.
            tracing::warn!(error = %e, "kafka: metadata: listing the topics failed");
            let asked = request.topics.unwrap_or_default();
            response.topics = asked
                .into_iter()
                .filter_map(|t| t.name)
                .map(|name| topic_error(name, ResponseError::LeaderNotAvailable))
                .collect();
            return Outcome::Respond(Box::new(ResponseKind::Metadata(response)));
        }
    };
    // v0 knows no "all topics" null: an empty list means all there.
    let asked: Option<Vec<TopicName>> = match request.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(list.into_iter().filter_map(|t| t.name).collect()),
    };
    let auto_create = request.allow_auto_topic_creation || version < 4;
    let mut topics = Vec::new();
    match asked {
        None => {
            for (name, count) in &known {
                topics.push(topic(
                    node,
                    StrBytes::from_string(name.clone()).into(),
                    *count,
                ));
            }
        }
        Some(names) => {
            for name in names {
                let count = match known.get(name.as_str()) {
                    Some(count) => Some(*count),
                    None => auto_created(gateway, &name, auto_create).await,
                };
                topics.push(match count {
                    Some(count) => topic(node, name, count),
                    None => topic_error(
                        name.clone(),
                        if topics::check_topic(&name).is_ok() {
                            ResponseError::UnknownTopicOrPartition
                        } else {
                            ResponseError::InvalidTopicException
                        },
                    ),
                });
            }
        }
    }
    response.topics = topics;
    Outcome::Respond(Box::new(ResponseKind::Metadata(response)))
}

/// Creates a topic Kafka would auto-create (`auto.create.topics.enable`),
/// and returns its partition count.
async fn auto_created(gateway: &Gateway, name: &str, allowed: bool) -> Option<i32> {
    let partitions = gateway.options.auto_create_partitions;
    if !allowed || partitions <= 0 || topics::check_topic(name).is_err() {
        return None;
    }
    match create_partitions(gateway, name, partitions).await {
        Ok(()) => Some(partitions),
        // Created meanwhile by another client: ask again next time.
        Err(refusal) => {
            tracing::debug!(topic = name, %refusal, "kafka: auto-creation failed");
            None
        }
    }
}

fn topic(node: BrokerId, name: TopicName, partitions: i32) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(name);
    topic.partitions = (0..partitions)
        .map(|index| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = index;
            partition.leader_id = node;
            partition.replica_nodes = vec![node];
            partition.isr_nodes = vec![node];
            partition
        })
        .collect();
    topic
}

fn topic_error(name: TopicName, code: ResponseError) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(name);
    topic.error_code = code.code();
    topic
}
