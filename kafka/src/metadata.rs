//! `Metadata`: the brokers are the nodes serving Kafka clients, and each
//! partition's leader is its log's owner ([`crate::routing`]). Fetches may
//! go to any of them: every node's reader serves every log.

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
use crate::in_order;
use crate::topics;

pub(crate) async fn metadata(gateway: &Gateway, request: MetadataRequest, version: i16) -> Outcome {
    let options = &gateway.options;
    let node = BrokerId(crate::broker_id(&options.node));
    let mut response = MetadataResponse::default();
    // Fields newer than the request's version must stay at their defaults.
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_string(options.cluster_id.clone()));
    }
    if version >= 1 {
        response.controller_id = node;
    }

    let mut brokers = crate::routing::brokers(gateway).await;
    response.brokers = broker_entries(&brokers);
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
                let name = StrBytes::from_string(name.clone()).into();
                topics.push(topic(gateway, &mut brokers, name, *count).await);
            }
        }
        Some(names) => {
            for name in names {
                let count = match known.get(name.as_str()) {
                    Some(count) => Some(*count),
                    None => auto_created(gateway, &name, auto_create).await,
                };
                topics.push(match count {
                    Some(count) => topic(gateway, &mut brokers, name, count).await,
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
    response.brokers = broker_entries(&brokers);
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

/// A topic's entry: each partition led by its log's owner, whose broker is
/// added to `brokers` if missing.
async fn topic(
    gateway: &Gateway,
    brokers: &mut Vec<(i32, std::net::SocketAddr)>,
    name: TopicName,
    partitions: i32,
) -> MetadataResponseTopic {
    let namespace = &gateway.options.namespace;
    let leaders = in_order((0..partitions).map(|index| {
        let log = topics::log_name(namespace, &name, index);
        async move { crate::routing::leader(gateway, &log).await }
    }))
    .await;
    let mut topic = MetadataResponseTopic::default();
    topic.partitions = leaders
        .into_iter()
        .enumerate()
        .map(|(index, (leader, addr))| {
            if !brokers.iter().any(|(id, _)| *id == leader) {
                brokers.push((leader, addr));
            }
            let leader = BrokerId(leader);
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = index as i32;
            partition.leader_id = leader;
            partition.replica_nodes = vec![leader];
            partition.isr_nodes = vec![leader];
            partition
        })
        .collect();
    topic.name = Some(name);
    topic
}

fn topic_error(name: TopicName, code: ResponseError) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(name);
    topic.error_code = code.code();
    topic
}

fn broker_entries(brokers: &[(i32, std::net::SocketAddr)]) -> Vec<MetadataResponseBroker> {
    brokers
        .iter()
        .map(|(id, addr)| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(*id);
            broker.host = StrBytes::from_string(addr.ip().to_string());
            broker.port = i32::from(addr.port());
            broker
        })
        .collect()
}
