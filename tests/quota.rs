//! Append quotas against a real etcd and three cache nodes: an append over
//! a log's quota is refused with `RESOURCE_EXHAUSTED` and a retry-after
//! hint; a `LogWriter` waits the hints out and loses nothing; and a noisy
//! namespace held to its quota leaves a quiet log's latency where it is
//! without the noise (I/O isolation between tenants).

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use distributedlog::{Client, Record, SettingsChange, WriterOptions};
use dlog_wire::metadata;
use dlog_wire::proto as pb;
use dlog_wire::proto::log_service_client::LogServiceClient;

/// The open-loop p99 target of BENCHMARKS.md ("open loop at 80 % of the
/// maximum, p99 ≤ 20 ms"): the bound a quiet log's p99 must stay under
/// while another tenant is noisy, unless it is already above it alone on a
/// loaded machine.
const P99_TARGET: Duration = Duration::from_millis(20);

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

/// Appends one 100-byte record at a time to `log` for `period`; the
/// latency of each.
async fn quiet_appends(client: &Client, log: &str, period: Duration) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let end = Instant::now() + period;
    while Instant::now() < end {
        let started = Instant::now();
        client
            .append(log, vec![Record::new(vec![b'q'; 100])], None)
            .await
            .expect("quiet append");
        latencies.push(started.elapsed());
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_over_its_quota_is_told_when_to_retry_and_a_writer_waits_it_out() {
    let Some(cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    client
        .create_namespace(
            "metered",
            &SettingsChange {
                max_append_bytes_per_sec: Some(64 * 1024),
                max_append_records_per_sec: Some(1_000),
                ..SettingsChange::default()
            },
        )
        .await
        .unwrap();
    client.create_log("metered/a").await.unwrap();

    // Straight on the wire: 48 KiB at a time against 64 KiB/s. The full
    // bucket lets appends through while it holds anything (the second goes
    // into debt); the next is refused.
    let mut raw = LogServiceClient::new(cluster.channel(&cluster.ingests[0].address()).await);
    let request = || pb::AppendRequest {
        log: "metered/a".into(),
        records: (0..12)
            .map(|_| pb::Record {
                payload: vec![7; 4096].into(),
                ..pb::Record::default()
            })
            .collect(),
        ..pb::AppendRequest::default()
    };
    let mut accepted = 0;
    let refused = loop {
        match raw.append(request()).await {
            Ok(_) => accepted += 1,
            Err(status) => break status,
        }
        assert!(accepted < 4, "4 appends of 48 KiB within a 64 KiB/s quota");
    };
    assert_eq!(accepted, 2);
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("over its log quota of 65536 bytes/s"),
        "{}",
        refused.message()
    );
    let hint = metadata::read_u64(&refused, metadata::RETRY_AFTER_MS).expect("a retry-after hint");
    assert!((1..=1000).contains(&hint), "retry after {hint} ms");
    // Nothing of the refused append is in the log.
    let info = client.get_log("metered/a").await.unwrap();
    assert_eq!(info.next_offset, 24);

    // A writer at twice the quota is slowed down to it and loses nothing.
    // Batches of 16 KiB stay under a second of the quota.
    let options = WriterOptions {
        max_batch_bytes: 16 * 1024,
        ..WriterOptions::default()
    };
    let writer = client.writer("metered/a", options);
    let started = Instant::now();
    let total = 32; // 32 × 4 KiB = 128 KiB: about two seconds at 64 KiB/s
    for i in 0..total {
        drop(writer.write(Record::new(vec![i as u8; 4096])));
    }
    writer
        .flush()
        .await
        .expect("a throttled writer does not fail");
    writer.close().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1200),
        "128 KiB at 64 KiB/s took only {took:?}"
    );
    let info = client.get_log("metered/a").await.unwrap();
    assert_eq!(info.next_offset, 24 + total);

    // Records per second count too: 600 records three times against
    // 1 000/s. The bucket holds one second, so the third append passes only
    // once 1 200 records are at most a second ahead of the clock: no sooner
    // than 200 ms after the first was charged, however fast or slow the
    // machine. (Timing the third append alone depends on how long the first
    // two took.)
    client.create_log("metered/b").await.unwrap();
    let small = |n: usize| (0..n).map(|_| Record::new("x")).collect::<Vec<_>>();
    let started = Instant::now();
    client.append("metered/b", small(600), None).await.unwrap();
    client.append("metered/b", small(600), None).await.unwrap();
    client.append("metered/b", small(600), None).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "three appends of 600 records at 1 000/s took only {took:?}"
    );
    assert_eq!(client.get_log("metered/b").await.unwrap().next_offset, 1800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_namespace_held_to_its_quota_leaves_a_quiet_log_alone() {
    let Some(cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    client
        .create_namespace(
            "noisy",
            &SettingsChange {
                namespace_max_append_bytes_per_sec: Some(256 * 1024),
                ..SettingsChange::default()
            },
        )
        .await
        .unwrap();
    let quiet = "quiet/log";
    client.create_log(quiet).await.unwrap();
    let noisy: Vec<String> = (0..4).map(|i| format!("noisy/log-{i}")).collect();
    for log in &noisy {
        client.create_log(log).await.unwrap();
    }
    // Warm up, then the quiet log alone.
    quiet_appends(&client, quiet, Duration::from_millis(300)).await;
    let alone = p99(quiet_appends(&client, quiet, Duration::from_secs(2)).await);

    // Four writers as fast as they can, 256 KiB per append.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = Vec::new();
    for log in noisy.clone() {
        let (client, stop) = (client.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            while !stop.is_cancelled() {
                let records = (0..64).map(|_| Record::new(vec![1; 4096])).collect();
                client
                    .append(&log, records, None)
                    .await
                    .expect("noisy append");
                bytes += 64 * 4096;
            }
            bytes
        }));
    }
    // A loaded machine can spoil one window of a shared CI runner; a broken
    // quota spoils all of them. So up to three windows, and the best counts.
    let period = Duration::from_secs(3);
    let bound = P99_TARGET.max(alone * 2);
    let noisy_started = Instant::now();
    let mut with_noise = Duration::MAX;
    for _ in 0..3 {
        with_noise = with_noise.min(p99(quiet_appends(&client, quiet, period).await));
        if with_noise <= bound {
            break;
        }
    }
    let noisy_period = noisy_started.elapsed();
    stop.cancel();
    let mut noisy_bytes = 0;
    for writer in writers {
        noisy_bytes += writer.await.unwrap();
    }
    let noisy_rate = noisy_bytes as f64 / noisy_started.elapsed().as_secs_f64();
    eprintln!(
        "quiet p99 alone {alone:?}, with the noisy namespace {with_noise:?}; \
         noisy namespace {:.0} KiB/s",
        noisy_rate / 1024.0
    );
    // The namespace was held to its quota: one second's burst, then
    // 256 KiB/s, and one append of each writer into debt.
    let allowed = 256.0 * 1024.0 * (noisy_period.as_secs_f64() + 1.0) + 4.0 * 64.0 * 4096.0;
    assert!(
        noisy_bytes as f64 <= allowed,
        "the noisy namespace wrote {noisy_bytes} bytes, more than its quota allows ({allowed})"
    );
    // And the quiet log did not notice.
    assert!(
        with_noise <= bound,
        "quiet p99 {with_noise:?} with a noisy neighbour, over {bound:?} (alone {alone:?})"
    );
}
