//! Balanced ownership end to end with real processes (ARCHITECTURE.md,
//! "Balanced ownership"): 1 000 logs over four ingest nodes follow the
//! placement rule, 250 ± 15 % each; a fifth node takes only its share, each
//! log by hand-over (sealed and released, never recovered), while writers
//! appending at expected offsets see no error at all (the SDK follows the
//! redirects); `dlog placement` shows the spread and moves a log by hand.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, ClusterSpec, Node};
use distributedlog::{Client, Record};
use dlog_wire::names::LogName;
use futures::StreamExt;

const LOGS: usize = 1_000;
/// Logs written continuously while the fifth node joins.
const WRITTEN: usize = 96;
const WRITERS: usize = 8;

fn log_name(i: usize) -> String {
    format!("bal/log-{i}")
}

/// The value of one series on a node's metrics page (0 when absent).
fn sample(node: &Node, series: &str) -> f64 {
    let (code, body) = common::http_get(node.metrics_port, "/metrics")
        .unwrap_or_else(|e| panic!("scrape {}'s metrics: {e}", node.id));
    assert_eq!(code, 200, "{}: {body}", node.id);
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(name, _)| *name == series)
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .fold(0.0, |sum, value| sum + value)
}

/// The owner of every log that has one, by log name.
async fn owners(cluster: &Cluster) -> HashMap<String, String> {
    common::retry_etcd("read the owner keys", || cluster.manifest.owners())
        .await
        .into_iter()
        .map(|(log, node)| (log.to_string(), node.id))
        .collect()
}

/// Appends one record to each of the logs, 32 at a time; every append
/// must succeed (redirects are followed by the client).
async fn touch_all(client: &Client, what: &str) {
    let failures: Vec<String> = futures::stream::iter(0..LOGS)
        .map(|i| async move {
            let log = log_name(i);
            // The written logs get their records from the writers only.
            if i < WRITTEN {
                return None;
            }
            (client
                .append(&log, vec![Record::new(what.to_owned())], None)
                .await)
                .err()
                .map(|err| format!("{log}: {err}"))
        })
        .buffer_unordered(32)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{what}: {} appends failed: {failures:?}",
        failures.len()
    );
}

/// Appends at expected offsets, one log after the other, until stopped:
/// the acknowledged payloads by log and offset, and every error seen.
async fn write(
    client: Arc<Client>,
    logs: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<String, BTreeMap<u64, Bytes>>, Vec<String>) {
    let mut acked: BTreeMap<String, BTreeMap<u64, Bytes>> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut next: HashMap<String, u64> = HashMap::new();
    for log in &logs {
        next.insert(log.clone(), common::next_offset(&client, log, 50).await);
    }
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for log in &logs {
            let offset = next[log];
            let payload = Bytes::from(format!("{log}@{offset}/{round}"));
            match client
                .append(log, vec![Record::new(payload.clone())], Some(offset))
                .await
            {
                Ok(appended) => {
                    assert_eq!(appended.first_offset, offset, "{log}");
                    acked
                        .entry(log.clone())
                        .or_default()
                        .insert(offset, payload);
                    *next.get_mut(log).unwrap() += 1;
                }
                Err(err) => {
                    errors.push(format!("{log} at {offset}: {err}"));
                    // Where the log really is, to go on.
                    if let Some(actual) = err.next_offset() {
                        *next.get_mut(log).unwrap() = actual;
                    }
                }
            }
        }
        round += 1;
    }
    (acked, errors)
}

/// Writers at expected offsets over the written logs, until `stop`.
type Writers = Vec<tokio::task::JoinHandle<(BTreeMap<String, BTreeMap<u64, Bytes>>, Vec<String>)>>;

fn start_writers(client: &Arc<Client>, stop: &Arc<AtomicBool>) -> Writers {
    (0..WRITERS)
        .map(|w| {
            let logs: Vec<String> = (0..WRITTEN)
                .filter(|i| i % WRITERS == w)
                .map(log_name)
                .collect();
            tokio::spawn(write(client.clone(), logs, stop.clone()))
        })
        .collect()
}

/// Stops the writers; adds what they acknowledged to `acked`, and fails on
/// any error they met.
async fn stop_writers(
    writers: Writers,
    stop: &AtomicBool,
    acked: &mut BTreeMap<String, BTreeMap<u64, Bytes>>,
    phase: &str,
) {
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    let mut count = 0;
    for writer in writers {
        let (their_acked, their_errors) = writer.await.unwrap();
        for (log, records) in their_acked {
            count += records.len();
            acked.entry(log).or_default().extend(records);
        }
        errors.extend(their_errors);
    }
    assert!(
        errors.is_empty(),
        "{phase}: {} appends failed: {errors:#?}",
        errors.len()
    );
    assert!(
        count > WRITTEN,
        "{phase}: the writers wrote only {count} records"
    );
}

/// Every acknowledged record is in its log, once, at its offset, and
/// nothing else is (each log sealed first, then read from the replicas).
async fn check_written(
    cluster: &Cluster,
    client: &Client,
    acked: &BTreeMap<String, BTreeMap<u64, Bytes>>,
) {
    for (log, records) in acked {
        common::seal(client, log, 50).await;
        let stored = cluster.read_back(log).await;
        let mut expected = records.clone();
        expected.insert(0, Bytes::from(format!("{log}@start")));
        assert_eq!(stored, expected, "{log}");
    }
}

/// Waits until every ingest node owns only logs the rule gives it
/// (hand-overs done) and the cluster shows `nodes` live ingest nodes.
async fn wait_settled(client: &Client, nodes: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let placement = client.placement().await.unwrap();
        let misplaced: u64 = placement.nodes.iter().map(|n| n.misplaced).sum();
        if placement.nodes.len() == nodes && misplaced == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not settled in 60 s: {placement:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn dlog(args: &[&str], env: &[(String, String)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_spread_over_ingest_nodes_and_a_new_node_takes_its_share_by_hand_over() {
    let Some(mut cluster) = Cluster::start_spec(ClusterSpec {
        caches: 3,
        ingests: 4,
        ..ClusterSpec::default()
    })
    .await
    else {
        return;
    };
    let client = Arc::new(cluster.client(cluster.ingests[0].address()));
    let created: Vec<String> = futures::stream::iter(0..LOGS)
        .map(|i| {
            let client = client.clone();
            async move { client.create_log(&log_name(i)).await.map(|info| info.log) }
        })
        .buffer_unordered(32)
        .map(|created| created.unwrap())
        .collect()
        .await;
    assert_eq!(created.len(), LOGS);
    touch_all(&client, "first").await;
    for i in 0..WRITTEN {
        let log = log_name(i);
        client
            .append(&log, vec![Record::new(format!("{log}@start"))], Some(0))
            .await
            .unwrap();
    }

    // Four nodes: 250 ± 15 % each, every log where the rule puts it.
    let four: Vec<String> = cluster.ingests.iter().map(|n| n.id.clone()).collect();
    let before = owners(&cluster).await;
    assert_eq!(before.len(), LOGS, "every log has an owner");
    let placement = client.placement().await.unwrap();
    assert_eq!(placement.nodes.len(), 4, "{placement:?}");
    for node in &placement.nodes {
        assert!(
            (213..=287).contains(&node.owned),
            "{} owns {} of {LOGS} logs: {placement:?}",
            node.id,
            node.owned
        );
        assert_eq!(node.misplaced, 0, "{placement:?}");
    }
    for (log, owner) in &before {
        let preferred = dlog_wire::placement::preferred(log, four.iter().map(String::as_str));
        assert_eq!(Some(owner.as_str()), preferred, "{log}");
    }

    // Writers at expected offsets while a fifth node joins.
    let mut acked = BTreeMap::new();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&client, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fifth = cluster.add_ingest().await;
    wait_settled(&client, 5).await;
    // The moved logs are unowned until their next append.
    touch_all(&client, "second").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_writers(writers, &stop, &mut acked, "a node joining").await;

    // Only the fifth node's share moved, each log by hand-over.
    let five: Vec<String> = cluster.ingests.iter().map(|n| n.id.clone()).collect();
    let after = owners(&cluster).await;
    assert_eq!(after.len(), LOGS, "every log has an owner again");
    let mut moved = 0;
    for (log, owner) in &after {
        let preferred = dlog_wire::placement::preferred(log, five.iter().map(String::as_str));
        assert_eq!(Some(owner.as_str()), preferred, "{log}");
        if before[log] != *owner {
            assert_eq!(owner, &five[fifth], "{log} moved between old nodes");
            moved += 1;
        }
    }
    assert!(
        (LOGS / 10..=LOGS / 4).contains(&moved),
        "{moved} of {LOGS} logs moved to the fifth node (about 1/5 expected)"
    );
    let handed_over: f64 = cluster.ingests[..4]
        .iter()
        .map(|n| {
            sample(
                n,
                r#"dlog_ingest_ownership_changes_total{change="handed_over"}"#,
            )
        })
        .sum();
    assert_eq!(handed_over as usize, moved, "every move was a hand-over");
    assert_eq!(
        sample(
            &cluster.ingests[fifth],
            "dlog_ingest_segment_recoveries_total"
        ),
        0.0,
        "the new owner recovered a segment: a move was a failover"
    );

    check_written(&cluster, &client, &acked).await;

    // By hand: `dlog placement move` and `show`.
    let mut env = cluster.cli_env();
    env.push(("DLOG_ENDPOINT".to_owned(), cluster.ingests[0].address()));
    let log = log_name(WRITTEN);
    let from = after[&log].clone();
    let to = five.iter().find(|n| **n != from).unwrap().clone();
    let output = dlog(&["placement", "move", &log, &to], &env);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client
            .append(&log, vec![Record::new("moved")], None)
            .await
            .unwrap();
        if cluster
            .manifest
            .owner(&log.parse::<LogName>().unwrap())
            .await
            .unwrap()
            .map(|n| n.id)
            == Some(to.clone())
        {
            break;
        }
        assert!(Instant::now() < deadline, "{log} never moved to {to}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = dlog(&["placement", "show", "--json"], &env);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let nodes = shown["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5, "{shown}");
    let total: u64 = nodes.iter().map(|n| n["owned"].as_u64().unwrap()).sum();
    assert_eq!(total, LOGS as u64, "{shown}");
    assert_eq!(
        shown["moved"],
        serde_json::json!([{"log": log, "node": to, "owner": to}]),
        "{shown}"
    );
    // A node that does not exist: one line on stderr, non-zero exit.
    let output = dlog(&["placement", "move", &log, "ingest-99"], &env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no live ingest node \"ingest-99\""),
        "{stderr}"
    );
    // Back to the rule.
    let output = dlog(&["placement", "move", &log, "--auto"], &env);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client
            .append(&log, vec![Record::new("back")], None)
            .await
            .unwrap();
        let owner = cluster
            .manifest
            .owner(&log.parse::<LogName>().unwrap())
            .await
            .unwrap();
        if owner.map(|n| n.id) == Some(from.clone()) {
            break;
        }
        assert!(Instant::now() < deadline, "{log} never went back to {from}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A clean shutdown (SIGTERM) hands the node's logs over to their
    // preferred nodes among the others: the writers see no error, and no
    // log is recovered (every segment was sealed).
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&client, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leaving = cluster.ingests[fifth].process.as_mut().unwrap();
    let exited = tokio::task::block_in_place(|| leaving.terminate()).unwrap();
    assert!(exited.success(), "{exited:?}");
    wait_settled(&client, 4).await;
    touch_all(&client, "third").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_writers(writers, &stop, &mut acked, "a node shutting down").await;
    check_written(&cluster, &client, &acked).await;
    let last = owners(&cluster).await;
    for (log, owner) in &last {
        let preferred = dlog_wire::placement::preferred(log, four.iter().map(String::as_str));
        assert_eq!(Some(owner.as_str()), preferred, "{log} after the shutdown");
    }
    let recovered: f64 = cluster.ingests[..4]
        .iter()
        .map(|n| sample(n, "dlog_ingest_segment_recoveries_total"))
        .sum();
    assert_eq!(
        recovered, 0.0,
        "a log was recovered: a hand-over was a failover"
    );

    // One hop: a client computes the rule over the ingest nodes it listed,
    // so a log's first request goes straight to its owner. With its only
    // endpoint killed, it still appends to logs the rule gives elsewhere.
    let direct = cluster.client(cluster.ingests[0].address());
    let (warm, cold) = {
        let mut others = (WRITTEN + 1..LOGS)
            .map(log_name)
            .filter(|log| last[log] != four[0]);
        (others.next().unwrap(), others.next().unwrap())
    };
    direct
        .append(&warm, vec![Record::new("warm")], None)
        .await
        .unwrap();
    cluster.ingests[0].kill();
    let started = Instant::now();
    let appended = direct
        .append(&cold, vec![Record::new("one hop")], None)
        .await;
    assert!(
        appended.is_ok(),
        "{cold} (owned by {}) through a client whose endpoint is dead: {appended:?}",
        last[&cold]
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
