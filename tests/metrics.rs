//! Prometheus metrics of a running cluster (real etcd, real S3 server,
//! three cache nodes, an ingest node, a compactor and a reader, each with
//! `--metrics-listen`): the series move with the work done. N appended
//! records raise the ingest node's record counter by exactly N and its
//! latency histogram by one sample per append; the reader's served-records
//! counter grows by the records read; a sealed segment shows up as an
//! offload with Parquet bytes written; the gauges (owned logs, subscription
//! lag) follow what the cluster holds.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, Node};

use dlog_wire::proto::read_service_client::ReadServiceClient;
use dlog_wire::proto::{self as pb, read_request};
use dlog_wire::record::Record;

/// The node's metrics page, as served.
fn scrape_text(node: &Node) -> String {
    let (code, body) = common::http_get(node.metrics_port, "/metrics")
        .unwrap_or_else(|e| panic!("scrape {}'s metrics: {e}", node.id));
    assert_eq!(code, 200, "{}: {body}", node.id);
    body
}

/// Every sample of the page: `name{labels}` → value.
fn scrape(node: &Node) -> BTreeMap<String, f64> {
    let text = scrape_text(node);
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of a series over its labels (0 when absent).
fn total(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.as_str() == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, value)| value)
        .sum()
}

/// The sum over the nodes.
fn total_over(nodes: &[Node], name: &str) -> f64 {
    nodes.iter().map(|n| total(&scrape(n), name)).sum()
}

/// Waits until `check` holds on `node`'s page (gauges are sampled).
async fn eventually(node: &Node, what: &str, check: impl Fn(&BTreeMap<String, f64>) -> bool) {
    for _ in 0..150 {
        if check(&scrape(node)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: not seen on {} in 15 s:\n{}",
        node.id,
        scrape_text(node)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_with_the_work_done() {
    let Some(cluster) = Cluster::start_with(3, 1, 1, 1).await else {
        return;
    };
    let ingest = &cluster.ingests[0];
    let log = "metrics/work";
    let client = cluster.client(ingest.address());
    client.create_log(log).await.unwrap();

    let before = scrape(ingest);
    let cache_adds_before = total_over(&cluster.caches, "dlog_cache_add_duration_seconds_count");

    // N records in 25 appends of 20.
    let (appends, per_append) = (25u64, 20u64);
    for i in 0..appends {
        let records = (0..per_append)
            .map(|j| Record::new(Bytes::from(format!("r{i}-{j}"))))
            .collect();
        client.append(log, records, None).await.unwrap();
    }
    let n = appends * per_append;
    let page = scrape_text(ingest);
    assert!(
        page.contains("# TYPE dlog_ingest_append_duration_seconds histogram"),
        "latencies are histograms:\n{page}"
    );
    let after = scrape(ingest);
    let grew = |name: &str| total(&after, name) - total(&before, name);
    assert_eq!(grew("dlog_ingest_appended_records_total"), n as f64);
    assert_eq!(
        grew("dlog_ingest_append_duration_seconds_count"),
        appends as f64,
        "one latency sample per append"
    );
    assert!(grew("dlog_ingest_appended_bytes_total") >= (n * 4) as f64);
    let entries = grew("dlog_ingest_entry_records_count");
    assert!(
        entries >= 1.0 && entries <= appends as f64,
        "{entries} entries"
    );
    // Every entry is made durable on at least its ack quorum (2 of 3).
    let cache_adds =
        total_over(&cluster.caches, "dlog_cache_add_duration_seconds_count") - cache_adds_before;
    assert!(
        cache_adds >= 2.0 * entries,
        "{cache_adds} cache adds for {entries} entries"
    );
    assert!(
        total_over(
            &cluster.caches,
            "dlog_cache_fdatasync_duration_seconds_count"
        ) >= 1.0
    );
    eventually(ingest, "one owned log", |s| {
        total(s, "dlog_ingest_owned_logs") == 1.0
    })
    .await;
    eventually(&cluster.caches[0], "journal files and segments", |s| {
        total(s, "dlog_cache_journal_files") >= 1.0 && total(s, "dlog_cache_journal_bytes") > 0.0
    })
    .await;

    // Reads: the served-records counter grows by what was read.
    let reader = &cluster.readers[0];
    let served_before = total(&scrape(reader), "dlog_reader_served_records_total");
    let mut reads = ReadServiceClient::new(cluster.channel(&reader.address()).await);
    let mut stream = reads
        .read(pb::ReadRequest {
            log: log.to_owned(),
            start: Some(read_request::Start::Offset(0)),
            limit: None,
            follow: false,
            log_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut read = 0;
    while let Some(message) = stream.message().await.unwrap() {
        read += message.records.len() as u64;
    }
    assert_eq!(read, n);
    let served = total(&scrape(reader), "dlog_reader_served_records_total") - served_before;
    assert_eq!(served, n as f64);
    let lookups = total(&scrape(reader), "dlog_reader_cache_lookups_total");
    assert!(lookups >= 1.0, "{lookups} cache-tier lookups");

    // Subscription lag: committed at 100, the log ends at N.
    reads
        .commit_subscription(pb::CommitSubscriptionRequest {
            log: log.to_owned(),
            subscription: "billing".to_owned(),
            offset: 100,
        })
        .await
        .unwrap();
    let lag_series =
        format!("dlog_subscription_lag_records{{log=\"{log}\",subscription=\"billing\"}}");
    eventually(ingest, "the subscription's lag", |s| {
        s.get(&lag_series) == Some(&((n - 100) as f64))
    })
    .await;

    // Offload: a sealed segment is offloaded, and its Parquet bytes counted.
    client.seal(log).await.unwrap();
    let compactor = &cluster.compactors[0];
    eventually(compactor, "an offloaded segment", |s| {
        total(s, "dlog_compactor_offloaded_segments_total") >= 1.0
            && total(s, "dlog_compactor_parquet_written_bytes_total") > 0.0
            && total(s, "dlog_compactor_offload_duration_seconds_count") >= 1.0
    })
    .await;
    eventually(compactor, "no offload lag left", |s| {
        s.contains_key("dlog_compactor_offload_lag_segments")
            && total(s, "dlog_compactor_offload_lag_segments") == 0.0
    })
    .await;
}
