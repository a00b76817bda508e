//! Topics and partitions as dlog logs.
//!
//! Partition `p` of topic `T` is the log `N/T.p`, where `N` is the
//! namespace the listener serves (`kafka.namespace`, default `kafka`). A
//! topic has the partitions `0..n` whose logs exist without a gap from 0:
//! a log made with `dlog logs create kafka/orders.0` is topic `orders` with
//! one partition, and a topic made through Kafka is listed by `dlog logs
//! list kafka/`.
//!
//! Creating a topic creates its logs from the last partition down to 0, so
//! the topic appears (with every partition) when partition 0 does; a crash
//! half-way leaves no visible topic, and a retry completes it. Deleting
//! removes partition 0 first, so the topic disappears at once.

use std::collections::BTreeMap;

use dlog_wire::names::{MAX_NAME_PART_LEN as MAX_PART, Namespace};

/// Most partitions of one topic.
pub(crate) const MAX_PARTITIONS: i32 = 1000;

/// Longest topic name: the log name `T.999` must fit a name part.
pub(crate) const MAX_TOPIC_LEN: usize = MAX_PART - ".999".len();

/// Why a topic name is refused (`INVALID_TOPIC_EXCEPTION`): the rules of
/// a dlog name part (Kafka's own charset), shorter by the partition suffix.
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    if topic.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "topic name {topic:?} is longer than {MAX_TOPIC_LEN} bytes"
        ));
    }
    Namespace::new(topic)
        .map(|_| ())
        .map_err(|e| format!("topic name {topic:?}: {}", e.reason))
}

/// The log of partition `partition` of `topic`.
pub(crate) fn log_name(namespace: &str, topic: &str, partition: i32) -> String {
    format!("{namespace}/{topic}.{partition}")
}

/// Topics and their partition counts, from the names of the namespace's
/// logs (`N/…`, as `list_logs` returns them).
pub(crate) fn topics_of(namespace: &str, logs: &[String]) -> BTreeMap<String, i32> {
    let prefix = format!("{namespace}/");
    let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for log in logs {
        let Some(name) = log.strip_prefix(&prefix) else {
            continue;
        };
        let Some((topic, partition)) = name.rsplit_once('.') else {
            continue;
        };
        let Ok(partition) = partition.parse::<i32>() else {
            continue;
        };
        // `T.01` is not partition 1: only the canonical spelling counts.
        if partition.to_string() != name[topic.len() + 1..] || check_topic(topic).is_err() {
            continue;
        }
        partitions
            .entry(topic.to_owned())
            .or_default()
            .push(partition);
    }
    partitions
        .into_iter()
        .filter_map(|(topic, mut found)| {
            found.sort_unstable();
            let count = found
                .iter()
                .enumerate()
                .take_while(|(i, p)| *i as i32 == **p)
                .count() as i32;
            (count > 0).then_some((topic, count))
        })
        .collect()
}

/// Every partition index of `topic` with a log, gaps included (`logs` as
/// `list_logs` returns them), ascending.
pub(crate) fn partitions_of(namespace: &str, topic: &str, logs: &[String]) -> Vec<i32> {
    let prefix = format!("{namespace}/{topic}.");
    let mut found: Vec<i32> = logs
        .iter()
        .filter_map(|log| log.strip_prefix(&prefix))
        .filter_map(|index| index.parse::<i32>().ok().filter(|p| p.to_string() == index))
        .collect();
    found.sort_unstable();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_count_from_zero_without_a_gap() {
        let logs: Vec<String> = [
            "kafka/orders.0",
            "kafka/orders.1",
            "kafka/orders.2",
            "kafka/a.b.0",
            "kafka/gap.0",
            "kafka/gap.2",
            "kafka/nozero.1",
            "kafka/plain",
            "kafka/padded.00",
            "other/x.0",
        ]
        .map(String::from)
        .to_vec();
        let topics = topics_of("kafka", &logs);
        assert_eq!(topics.get("orders"), Some(&3));
        assert_eq!(topics.get("a.b"), Some(&1));
        assert_eq!(topics.get("gap"), Some(&1));
        assert_eq!(topics.get("nozero"), None);
        assert_eq!(topics.get("plain"), None);
        assert_eq!(topics.get("padded"), None);
        assert_eq!(topics.get("x"), None);
        assert_eq!(topics.len(), 3);
        assert_eq!(partitions_of("kafka", "gap", &logs), vec![0, 2]);
        assert_eq!(partitions_of("kafka", "nozero", &logs), vec![1]);
        assert_eq!(partitions_of("kafka", "a", &logs), Vec::<i32>::new());
    }

    #[test]
    fn topic_names_follow_kafka_and_fit_a_log_name() {
        assert!(check_topic("orders-2026_v1.raw").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("..").is_err());
        assert!(check_topic("a/b").is_err());
        assert!(check_topic(&"x".repeat(MAX_TOPIC_LEN)).is_ok());
        assert!(check_topic(&"x".repeat(MAX_TOPIC_LEN + 1)).is_err());
        assert_eq!(log_name("kafka", "t", 7), "kafka/t.7");
    }
}
