//! Zones end to end with real processes (real etcd, real S3 server for the
//! reader), each node given its zone by `--zone` (ARCHITECTURE.md, "Replica
//! placement"):
//!
//! * **Zone loss**: three zones of one ingest node and one or two cache
//!   nodes each. Every segment's ensemble spans the three zones; every
//!   process of the zone holding the most replicas of the open segment
//!   (the owner's zone on a tie) is killed with `kill -9`; appends go on
//!   after a lease TTL and every acknowledged record reads back.
//! * **Local reads**: a tailing reader in zone a fetches entries only from
//!   the cache node of zone a while it is up (no cross-zone bytes), and
//!   from the other zones once that node is killed.
//! * **Uneven zones**: four cache nodes in two zones and E = 3: each
//!   ensemble still spans both zones, and the relaxed rule is counted.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, ClusterSpec, LEASE_TTL_SECS, Node};
use distributedlog::Client;
use dlog_meta::manifest::{Role, SegmentMeta, SegmentState};
use dlog_wire::names::LogName;
use dlog_wire::proto::read_service_client::ReadServiceClient;
use dlog_wire::proto::{self as pb, read_request};
use dlog_wire::record::Record;

const ZONES: [&str; 3] = ["a", "b", "c"];

/// One node of each role per zone, in order: node i is in zone a, b, c.
fn one_per_zone(_role: &str, i: usize) -> &'static str {
    ZONES[(i - 1) % 3]
}

/// Cache nodes two per zone, neighbours together (cache-1 and cache-2 in
/// a, ...): a placement blind to zones, taking nodes in id order, puts two
/// replicas in one zone. Other roles one per zone.
fn two_caches_per_zone(role: &str, i: usize) -> &'static str {
    match role {
        "cache" => ZONES[(i - 1) / 2 % 3],
        _ => ZONES[(i - 1) % 3],
    }
}

/// Three cache nodes in zone a and one in b; everything else in a.
fn uneven(role: &str, i: usize) -> &'static str {
    if role == "cache" && i == 4 { "b" } else { "a" }
}

/// The value of one series on a node's metrics page (0 when absent);
/// `series` is `name{labels}` as printed.
fn sample(node: &Node, series: &str) -> f64 {
    let (code, body) = common::http_get(node.metrics_port, "/metrics")
        .unwrap_or_else(|e| panic!("scrape {}'s metrics: {e}", node.id));
    assert_eq!(code, 200, "{}: {body}", node.id);
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(name, _)| *name == series)
        .map(|(_, value)| value.parse::<f64>().unwrap())
        // An empty sum is -0.
        .fold(0.0, |sum, value| sum + value)
}

/// The zone each registered cache node gave (`--zone`), by id.
async fn cache_zones(cluster: &Cluster) -> BTreeMap<String, String> {
    let nodes = common::retry_etcd("read the cache nodes", || {
        cluster.manifest.nodes(Role::Cache)
    })
    .await;
    nodes.into_iter().map(|n| (n.id, n.zone)).collect()
}

async fn segments(cluster: &Cluster, log: &str) -> Vec<SegmentMeta> {
    let name: LogName = log.parse().unwrap();
    common::retry_etcd("read the segments", || cluster.manifest.segments(&name))
        .await
        .0
}

/// Checks that `segment` recorded the registered zone of each replica.
fn assert_zones_recorded(segment: &SegmentMeta, registered: &BTreeMap<String, String>) {
    assert_eq!(
        segment.zones.len(),
        segment.ensemble.len(),
        "segment {} records a zone per replica: {segment:?}",
        segment.segment_id
    );
    for (node, zone) in segment.ensemble.iter().zip(&segment.zones) {
        assert_eq!(
            registered.get(node),
            Some(zone),
            "segment {}: {node}'s zone",
            segment.segment_id
        );
    }
}

fn distinct(zones: &[String]) -> BTreeSet<&str> {
    zones.iter().map(String::as_str).collect()
}

/// What a writer learned: acknowledged records by offset, and payloads
/// whose fate it does not know (the call failed).
#[derive(Debug, Default)]
struct Written {
    acked: BTreeMap<u64, Bytes>,
    in_doubt: Vec<Bytes>,
}

#[derive(Debug, Clone, Default)]
struct Control {
    stop: Arc<AtomicBool>,
    /// One past the highest offset acknowledged.
    acked_end: Arc<AtomicU64>,
}

/// Appends one record at a time at its expected offset until stopped.
async fn write_until(client: Arc<Client>, log: &'static str, control: Control) -> Written {
    let mut written = Written::default();
    let mut next = common::next_offset(&client, log, 150).await;
    let mut i = 0u64;
    while !control.stop.load(Ordering::Relaxed) {
        let payload = Bytes::from(format!("z-{i}"));
        i += 1;
        match client
            .append(log, vec![Record::new(payload.clone())], Some(next))
            .await
        {
            Ok(appended) => {
                assert_eq!(appended.first_offset, next);
                written.acked.insert(next, payload);
                next += 1;
                control.acked_end.fetch_max(next, Ordering::Relaxed);
            }
            Err(_) => {
                written.in_doubt.push(payload);
                tokio::time::sleep(Duration::from_millis(50)).await;
                next = common::next_offset(&client, log, 150).await;
            }
        }
    }
    written
}

/// Every acknowledged record at its offset, offsets dense, nothing twice,
/// nothing nobody wrote.
fn check(stored: &BTreeMap<u64, Bytes>, written: &Written) {
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (0..stored.len() as u64).collect::<Vec<_>>(),
        "offsets are dense from 0"
    );
    let mut seen = HashSet::new();
    for payload in stored.values() {
        assert!(seen.insert(payload.clone()), "duplicated {payload:?}");
    }
    for (offset, payload) in &written.acked {
        assert_eq!(
            stored.get(offset),
            Some(payload),
            "acknowledged record lost or moved: offset {offset}"
        );
    }
    let known: HashSet<&Bytes> = written.acked.values().chain(&written.in_doubt).collect();
    for (offset, payload) in stored {
        assert!(known.contains(payload), "unknown record at {offset}");
    }
}

/// Zone loss with `caches_per_zone` cache nodes in each of three zones.
async fn zone_loss(caches_per_zone: usize, zones: fn(&str, usize) -> &'static str) {
    let spec = ClusterSpec {
        caches: 3 * caches_per_zone,
        ingests: 3,
        zones: Some(zones),
        ..ClusterSpec::default()
    };
    let Some(mut cluster) = Cluster::start_spec(spec).await else {
        return;
    };
    let registered = cache_zones(&cluster).await;
    assert_eq!(
        distinct(&registered.values().cloned().collect::<Vec<_>>()).len(),
        3,
        "the cache nodes registered their zones: {registered:?}"
    );
    let endpoints: Vec<String> = cluster.ingests.iter().map(Node::address).collect();
    let client = Arc::new(cluster.client(endpoints.join(",")));
    let log = "zones/loss";
    client.create_log(log).await.unwrap();
    let control = Control::default();
    let writer = tokio::spawn(write_until(client.clone(), log, control.clone()));
    // Roll twice on the way, so more than one ensemble is placed.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        common::seal(&client, log, 100).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = segments(&cluster, log).await;
    assert!(before.len() >= 3, "{before:?}");
    for segment in &before {
        assert_eq!(segment.ensemble.len(), 3);
        assert_zones_recorded(segment, &registered);
        assert_eq!(
            distinct(&segment.zones).len(),
            3,
            "segment {} spans every zone: {:?}",
            segment.segment_id,
            segment.zones
        );
    }
    // The zone to lose: the one with the most replicas of the open
    // segment, the owner's on a tie.
    let open = before
        .iter()
        .find(|s| s.state == SegmentState::Open)
        .expect("an open segment");
    let owner = cluster.owner_of(log).await.expect("an owner");
    let owner_zone = zones("ingest", owner + 1);
    let mut lost = owner_zone;
    let held = |zone: &str| open.zones.iter().filter(|z| z.as_str() == zone).count();
    for zone in ZONES {
        if held(zone) > held(lost) {
            lost = zone;
        }
    }
    let acked_at_kill = control.acked_end.load(Ordering::Relaxed);
    assert!(acked_at_kill >= 10, "too few appends before the kill");
    let killed = Instant::now();
    for (i, node) in cluster.caches.iter_mut().enumerate() {
        if zones("cache", i + 1) == lost {
            node.kill();
        }
    }
    for (i, node) in cluster.ingests.iter_mut().enumerate() {
        if zones("ingest", i + 1) == lost {
            node.kill();
        }
    }
    // Until their leases expire the dead nodes are still registered (and
    // may be placed, then given up); they go with their leases.
    let lost_caches: Vec<String> = (1..=cluster.caches.len())
        .filter(|&i| zones("cache", i) == lost)
        .map(|i| format!("cache-{i}"))
        .collect();
    while cache_zones(&cluster)
        .await
        .keys()
        .any(|id| lost_caches.contains(id))
    {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the lost zone's cache nodes are still registered after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Appends go on: the first acknowledgement past the kill (an append
    // in flight at the kill may still land at `acked_at_kill`).
    let resumed = loop {
        if control.acked_end.load(Ordering::Relaxed) > acked_at_kill + 1 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no append acknowledged in 60 s after zone {lost} was lost"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        resumed < Duration::from_secs(20),
        "appends resumed only {resumed:?} after zone {lost} was lost"
    );
    // Then some more, on ensembles placed (after this roll) among the
    // surviving zones only.
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS + 1)).await;
    let placed_before: Vec<u64> = segments(&cluster, log)
        .await
        .iter()
        .map(|s| s.segment_id)
        .collect();
    common::seal(&client, log, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    control.stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    let acked_after = written.acked.range(acked_at_kill + 1..).count();
    assert!(acked_after > 0, "nothing acknowledged after the loss");

    common::seal(&client, log, 100).await;
    let after = segments(&cluster, log).await;
    let placed_after: Vec<&SegmentMeta> = after
        .iter()
        .filter(|s| !placed_before.contains(&s.segment_id))
        .filter(|s| !s.ensemble.is_empty())
        .collect();
    assert!(!placed_after.is_empty(), "no segment opened after the loss");
    for segment in &placed_after {
        assert_zones_recorded(segment, &registered);
        assert!(
            !segment.zones.iter().any(|z| z == lost),
            "segment {} placed in the lost zone {lost}: {:?}",
            segment.segment_id,
            segment.zones
        );
        assert_eq!(
            distinct(&segment.zones).len(),
            2,
            "segment {} spans both surviving zones: {:?}",
            segment.segment_id,
            segment.zones
        );
    }
    // The new owner said which rule gave way.
    let new_owner = cluster.owner_of(log).await.expect("a new owner");
    let rule = if caches_per_zone == 1 {
        "ensemble_size"
    } else {
        "distinct_zones"
    };
    let relaxed = sample(
        &cluster.ingests[new_owner],
        &format!("dlog_ingest_placement_relaxed_total{{rule=\"{rule}\"}}"),
    );
    assert!(
        relaxed >= 1.0,
        "the new owner counted no relaxed {rule}: {relaxed}"
    );
    assert!(
        cluster.ingests[new_owner]
            .log_text()
            .contains(&format!("rule {rule} gave way")),
        "the new owner's log names the rule"
    );

    let stored = cluster.read_back(log).await;
    check(&stored, &written);
    eprintln!(
        "zone loss ({caches_per_zone} cache nodes per zone): lost zone {lost}, first append \
         acknowledged {resumed:?} after the kill; {} acknowledged ({acked_after} after), {} \
         stored, {} segments after the loss, {relaxed} relaxed {rule}",
        written.acked.len(),
        stored.len(),
        placed_after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_zone_of_one_cache_node_loses_no_acknowledged_record() {
    zone_loss(1, one_per_zone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_zone_of_two_cache_nodes_loses_no_acknowledged_record() {
    zone_loss(2, two_caches_per_zone).await;
}

/// Reads `count` records from `stream`; their payloads.
async fn receive(stream: &mut tonic::Streaming<pb::ReadResponse>, count: usize) -> Vec<Bytes> {
    let mut got = Vec::new();
    while got.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} records in 30 s", got.len()))
            .unwrap()
            .expect("the tailing read goes on");
        got.extend(message.records.into_iter().map(|r| r.payload));
    }
    got
}

async fn tail(cluster: &Cluster, log: &str, from: u64) -> tonic::Streaming<pb::ReadResponse> {
    let mut reads = ReadServiceClient::new(cluster.channel(&cluster.readers[0].address()).await);
    reads
        .read(pb::ReadRequest {
            log: log.to_owned(),
            start: Some(read_request::Start::Offset(from)),
            limit: None,
            follow: true,
            log_id: None,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn append_batches(client: &Client, log: &str, prefix: &str, count: usize) -> Vec<Bytes> {
    let mut payloads = Vec::new();
    for i in 0..count {
        let payload = Bytes::from(format!("{prefix}-{i}"));
        let mut tries = 0;
        while let Err(err) = client
            .append(log, vec![Record::new(payload.clone())], None)
            .await
        {
            tries += 1;
            assert!(tries < 100, "append to {log} keeps failing: {err}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        payloads.push(payload);
    }
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_reads_from_its_own_zone_and_falls_back_across_zones() {
    let spec = ClusterSpec {
        caches: 3,
        ingests: 1,
        readers: 1,
        zones: Some(one_per_zone),
        ..ClusterSpec::default()
    };
    let Some(mut cluster) = Cluster::start_spec(spec).await else {
        return;
    };
    let same = "dlog_reader_cache_fetched_bytes_total{zone=\"same\"}";
    let cross = "dlog_reader_cache_fetched_bytes_total{zone=\"cross\"}";
    let client = cluster.client(cluster.ingests[0].address());
    let log = "zones/local";
    client.create_log(log).await.unwrap();
    let registered = cache_zones(&cluster).await;
    assert_eq!(registered.get("cache-1").map(String::as_str), Some("a"));

    // Zone a's cache node up: a tailing read in zone a fetches from it only.
    let mut stream = tail(&cluster, log, 0).await;
    let first = append_batches(&client, log, "up", 60).await;
    assert_eq!(receive(&mut stream, first.len()).await, first);
    let open = segments(&cluster, log).await;
    assert_eq!(open.len(), 1);
    assert_zones_recorded(&open[0], &registered);
    assert!(open[0].ensemble.contains(&"cache-1".to_owned()));
    let same_up = sample(&cluster.readers[0], same);
    let cross_up = sample(&cluster.readers[0], cross);
    assert!(same_up > 0.0, "no bytes fetched in the reader's zone");
    assert_eq!(
        cross_up, 0.0,
        "bytes fetched across zones while zone a's cache node was up ({same_up} in zone)"
    );
    drop(stream);

    // Records nobody read yet (not in the reader's entry cache), then zone
    // a's cache node dies: reading them falls back to zones b and c, and
    // so does the tail after it.
    let unread = append_batches(&client, log, "unread", 30).await;
    cluster.caches[0].kill();
    let mut stream = tail(&cluster, log, first.len() as u64).await;
    assert_eq!(receive(&mut stream, unread.len()).await, unread);
    let later = append_batches(&client, log, "down", 30).await;
    assert_eq!(receive(&mut stream, later.len()).await, later);
    let cross_down = sample(&cluster.readers[0], cross);
    assert!(
        cross_down > 0.0,
        "no bytes fetched across zones after zone a's cache node died"
    );
    eprintln!(
        "local reads: {same_up} bytes in zone and {cross_up} across while up; {cross_down} \
         across after the kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uneven_zones_still_spread_and_count_the_relaxed_rule() {
    let spec = ClusterSpec {
        caches: 4,
        ingests: 1,
        zones: Some(uneven),
        ..ClusterSpec::default()
    };
    let Some(cluster) = Cluster::start_spec(spec).await else {
        return;
    };
    let registered = cache_zones(&cluster).await;
    let ingest = &cluster.ingests[0];
    let client = cluster.client(ingest.address());
    // Several logs: the seeds (log ids) rotate the zones and nodes.
    let logs: Vec<String> = (1..=8).map(|i| format!("uneven/{i}")).collect();
    let mut placed = 0;
    let mut nodes_used = BTreeSet::new();
    for log in &logs {
        client.create_log(log).await.unwrap();
        append_batches(&client, log, log, 3).await;
        for segment in segments(&cluster, log).await {
            assert_eq!(segment.ensemble.len(), 3, "{segment:?}");
            assert_zones_recorded(&segment, &registered);
            assert_eq!(
                distinct(&segment.zones),
                BTreeSet::from(["a", "b"]),
                "{log}: segment {} spans both zones",
                segment.segment_id
            );
            nodes_used.extend(segment.ensemble.clone());
            placed += 1;
        }
    }
    // Zone a's three nodes take turns for the two slots left.
    assert_eq!(nodes_used.len(), 4, "{nodes_used:?}");
    let relaxed = sample(
        ingest,
        "dlog_ingest_placement_relaxed_total{rule=\"distinct_zones\"}",
    );
    assert_eq!(
        relaxed, placed as f64,
        "each segment placed relaxed the distinct-zones rule once"
    );
    assert_eq!(
        sample(
            ingest,
            "dlog_ingest_placement_relaxed_total{rule=\"ensemble_size\"}"
        ),
        0.0
    );
    assert!(
        ingest
            .log_text()
            .contains("rule distinct_zones gave way: 3 replicas over 2 live zones"),
        "the owner's log names the rule"
    );
}
