//! The Prometheus recorder of `dlog serve` / `dlog standalone`
//! (`--metrics-listen ADDR`, off unless given) and the sampler that keeps
//! the roles' gauges current.
//!
//! The roles record through the `metrics` facade (each crate's `series`
//! module names its series); this module installs the one recorder of the
//! process, which [`crate::http`] renders in the Prometheus text format on
//! `GET http://ADDR/metrics`.
//!
//! Latencies are histograms with fixed buckets (not summaries), so they can
//! be aggregated across nodes. Gauges are set by sampling (every
//! `node.metrics_sample_interval`), never incremented, so a gauge no longer sampled (a
//! subscription whose log moved to another owner) is dropped after
//! [`GAUGE_IDLE`] instead of reporting a stale value.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dlog_cache::CacheStore;
use dlog_ingest::IngestNode;
use dlog_reader::ReadEngine;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The shortest sampling period taken (`node.metrics_sample_interval`).
const MIN_SAMPLE_PERIOD: Duration = Duration::from_millis(10);
/// Subscription lag costs one manifest range per owned log: sampled every
/// this many periods.
const LAG_EVERY: u32 = 6;
/// A gauge not set for this long leaves the exposition.
const GAUGE_IDLE: Duration = Duration::from_secs(120);

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size buckets (records per entry or commit).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Binds `addr` for the node's HTTP endpoint and installs the process's
/// recorder. Fails when the address cannot be bound or a recorder is
/// already installed.
pub async fn install(addr: SocketAddr) -> anyhow::Result<(TcpListener, PrometheusHandle)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("serve metrics on {addr}"))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_records".into()), COUNT_BUCKETS))
        .context("configure the metrics buckets")?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()
        .context("install the metrics recorder")?;
    dlog_ingest::series::describe();
    dlog_cache::series::describe();
    dlog_compactor::series::describe();
    dlog_reader::series::describe();
    tracing::info!(%addr, "serving Prometheus metrics and health over HTTP");
    Ok((listener, handle))
}

/// What the gauge sampler looks at: the roles this process runs.
#[derive(Debug, Default)]
pub struct Sampled {
    pub ingest: Option<Arc<IngestNode>>,
    pub cache: Option<Arc<CacheStore>>,
    pub reader: Option<Arc<ReadEngine>>,
}

/// Samples the roles' gauges every `period` (at least 10 ms) until `stop`,
/// and keeps the recorder's buckets and idle gauges up to date.
pub async fn sample(
    roles: Sampled,
    recorder: PrometheusHandle,
    period: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(period.max(MIN_SAMPLE_PERIOD));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Some(ingest) = &roles.ingest {
            ingest.sample_gauges(round.is_multiple_of(LAG_EVERY)).await;
        }
        if let Some(cache) = &roles.cache {
            let cache = cache.clone();
            // Lists the journal directory: blocking I/O.
            let _ = tokio::task::spawn_blocking(move || cache.sample_gauges()).await;
        }
        if let Some(reader) = &roles.reader {
            reader.sample_gauges();
        }
        recorder.run_upkeep();
        round = round.wrapping_add(1);
    }
}
