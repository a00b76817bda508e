//! `OffsetCommit` and `OffsetFetch`: a group's committed offset in a
//! partition is the dlog subscription named after the group on the
//! partition's log (`dlog sub list kafka/T.p` shows it).
//!
//! One difference from Kafka: a subscription only moves forward (dlog
//! keeps the highest offset committed), so a commit below the stored
//! offset is answered without error but leaves it. A consumer that wants
//! to go back seeks instead of committing.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::conn::Outcome;
use crate::errors::refusal;
use crate::groups::check_group;
use crate::in_order;
use crate::{Gateway, topics};

pub(crate) async fn commit(gateway: &Gateway, request: OffsetCommitRequest) -> Outcome {
    let group = request.group_id.to_string();
    // A member of a group commits with its generation; a consumer that
    // assigns partitions itself, with -1 and no member id.
    let checked = match check_group(&group) {
        Err(code) => Err(code),
        Ok(()) if !crate::routing::coordinates(gateway, &group).await => {
            Err(ResponseError::NotCoordinator)
        }
        // Without a generation: only while the group has no members (as
        // Kafka), so that no tool moves an active group's offsets.
        Ok(()) if request.generation_id_or_member_epoch < 0 => {
            if gateway.groups.has_members(&group) {
                Err(ResponseError::UnknownMemberId)
            } else {
                Ok(())
            }
        }
        Ok(()) => gateway.groups.check_member(
            &group,
            &request.member_id,
            request.generation_id_or_member_epoch,
        ),
    };
    let namespace = &gateway.options.namespace;
    let topics = in_order(request.topics.into_iter().map(|topic| {
        let group = &group;
        let checked = &checked;
        async move {
            let partitions = in_order(topic.partitions.into_iter().map(|partition| {
                let topic = &topic.name;
                async move {
                    let mut answer = OffsetCommitResponsePartition::default();
                    answer.partition_index = partition.partition_index;
                    let code = match checked {
                        Err(code) => Some(*code),
                        Ok(()) if topics::check_topic(topic).is_err() => {
                            Some(ResponseError::UnknownTopicOrPartition)
                        }
                        // Nothing to store: Kafka's "no offset".
                        Ok(()) if partition.committed_offset < 0 => None,
                        Ok(()) => {
                            let log = topics::log_name(namespace, topic, partition.partition_index);
                            let offset = partition.committed_offset as u64;
                            match gateway
                                .client
                                .commit_subscription(&log, group, offset)
                                .await
                            {
                                Ok(()) => None,
                                Err(e) => Some(refusal(&e).code),
                            }
                        }
                    };
                    if let Some(code) = code {
                        answer.error_code = code.code();
                    }
                    answer
                }
            }))
            .await;
            let mut answer = OffsetCommitResponseTopic::default();
            answer.name = topic.name;
            answer.partitions = partitions;
            answer
        }
    }))
    .await;
    let mut response = OffsetCommitResponse::default();
    response.topics = topics;
    Outcome::Respond(Box::new(ResponseKind::OffsetCommit(response)))
}

pub(crate) async fn fetch(gateway: &Gateway, request: OffsetFetchRequest, version: i16) -> Outcome {
    let mut response = OffsetFetchResponse::default();
    let group = request.group_id.to_string();
    let refused = match check_group(&group) {
        Err(code) => Some(code),
        Ok(()) if !crate::routing::coordinates(gateway, &group).await => {
            Some(ResponseError::NotCoordinator)
        }
        Ok(()) => None,
    };
    if let Some(code) = refused {
        // The top-level code exists from v2 on; before, each partition's.
        if version >= 2 {
            response.error_code = code.code();
        }
        return Outcome::Respond(Box::new(ResponseKind::OffsetFetch(response)));
    }
    let namespace = &gateway.options.namespace;
    // Null topics (v2+): every partition the group committed in.
    let all = request.topics.is_none();
    let asked: Vec<(TopicName, Vec<i32>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect(),
        None => match gateway.client.list_logs(&format!("{namespace}/")).await {
            Ok(logs) => topics::topics_of(namespace, &logs)
                .into_iter()
                .map(|(name, count)| (TopicName(StrBytes::from_string(name)), (0..count).collect()))
                .collect(),
            Err(e) => {
                if version >= 2 {
                    response.error_code = refusal(&e).code.code();
                }
                return Outcome::Respond(Box::new(ResponseKind::OffsetFetch(response)));
            }
        },
    };
    let topics = in_order(asked.into_iter().map(|(name, partitions)| {
        let group = &group;
        async move {
            let partitions = in_order(partitions.into_iter().map(|index| {
                let name = &name;
                async move {
                    let mut answer = OffsetFetchResponsePartition::default();
                    answer.partition_index = index;
                    answer.committed_offset = -1;
                    answer.metadata = Some(StrBytes::default());
                    if topics::check_topic(name).is_ok() && index >= 0 {
                        let log = topics::log_name(namespace, name, index);
                        match gateway.client.subscription(&log, group).await {
                            Ok(Some(offset)) => answer.committed_offset = offset as i64,
                            Ok(None) => {}
                            Err(e) if e.kind() == distributedlog::ErrorKind::NotFound => {}
                            Err(e) => answer.error_code = refusal(&e).code.code(),
                        }
                    }
                    answer
                }
            }))
            .await;
            let mut answer = OffsetFetchResponseTopic::default();
            answer.name = name;
            answer.partitions = partitions;
            answer
        }
    }))
    .await;
    response.topics = topics;
    if all {
        for topic in &mut response.topics {
            topic
                .partitions
                .retain(|p| p.committed_offset >= 0 || p.error_code != 0);
        }
        response.topics.retain(|t| !t.partitions.is_empty());
    }
    Outcome::Respond(Box::new(ResponseKind::OffsetFetch(response)))
}
