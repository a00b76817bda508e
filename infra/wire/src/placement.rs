//! Which ingest node should own a log: the rule every node and client
//! computes the same way (ARCHITECTURE.md, "Balanced ownership").
//!
//! Rendezvous (highest random weight) hashing: each live ingest node gets a
//! score for the log, the 64-bit XXH3 hash of the node id, a zero byte and
//! the log's full name (`ns/log`); the node with the highest score is the
//! log's preferred owner, the smaller id on a tie. A node that joins takes
//! over exactly the logs it now scores highest on (about 1/n of them), and
//! a node that leaves gives away only its own: no other log moves.
//!
//! The rule is a preference, not a lock: the owner key in the manifest
//! decides who owns a log, and the epoch fences every write. Nodes that
//! briefly disagree on the live set redirect a request once more.

use xxhash_rust::xxh3::xxh3_64;

/// The score of `node` for `log` (the higher, the more preferred).
pub fn score(node: &str, log: &str) -> u64 {
    let mut key = Vec::with_capacity(node.len() + 1 + log.len());
    key.extend_from_slice(node.as_bytes());
    key.push(0);
    key.extend_from_slice(log.as_bytes());
    xxh3_64(&key)
}

/// The preferred owner of `log` (full name, `ns/log`) among `nodes`
/// (ids); `None` when there is none.
pub fn preferred<'a>(log: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .into_iter()
        .map(|node| (score(node, log), node))
        // Highest score; on a tie the smaller id (compared reversed).
        .max_by(|(a, x), (b, y)| a.cmp(b).then_with(|| y.cmp(x)))
        .map(|(_, node)| node)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn logs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("ns/log-{i}")).collect()
    }

    /// The scores are a fixed function of the bytes: clients in any
    /// language compute the same owner (the value is XXH3-64 of
    /// "ingest-1\0ns/log-0").
    #[test]
    fn scores_are_stable() {
        assert_eq!(
            score("ingest-1", "ns/log-0"),
            xxh3_64(b"ingest-1\0ns/log-0")
        );
        assert_ne!(score("ingest-1", "ns/log-0"), score("ingest-2", "ns/log-0"));
        // The separator keeps ("a", "b/c") and ("a\0b", "c")-like splits apart.
        assert_ne!(score("ab", "c/d"), score("a", "bc/d"));
    }

    #[test]
    fn no_nodes_no_owner_and_order_does_not_matter() {
        assert_eq!(preferred("ns/a", []), None);
        let nodes = ["ingest-1", "ingest-2", "ingest-3"];
        let reversed = ["ingest-3", "ingest-2", "ingest-1"];
        for log in logs(100) {
            assert_eq!(preferred(&log, nodes), preferred(&log, reversed), "{log}");
        }
    }

    /// 1 000 logs over 4 nodes: each gets 250 ± 15 %.
    #[test]
    fn logs_spread_evenly() {
        let nodes = ["ingest-1", "ingest-2", "ingest-3", "ingest-4"];
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for log in logs(1_000) {
            *counts.entry(preferred(&log, nodes).unwrap()).or_default() += 1;
        }
        for node in nodes {
            let count = counts.get(node).copied().unwrap_or(0);
            assert!(
                (213..=287).contains(&count),
                "{node}: {count} of 1000 ({counts:?})"
            );
        }
    }

    /// A fifth node takes only logs from the others to itself (about a
    /// fifth); its leaving moves them back and nothing else.
    #[test]
    fn a_joining_node_takes_only_its_share() {
        let four = ["ingest-1", "ingest-2", "ingest-3", "ingest-4"];
        let five = ["ingest-1", "ingest-2", "ingest-3", "ingest-4", "ingest-5"];
        let mut moved = 0;
        for log in logs(1_000) {
            let (before, after) = (preferred(&log, four), preferred(&log, five));
            if before != after {
                assert_eq!(after, Some("ingest-5"), "{log} moved between old nodes");
                moved += 1;
            }
        }
        assert!((150..=250).contains(&moved), "{moved} of 1000 moved");
    }
}
