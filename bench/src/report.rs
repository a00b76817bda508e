//! Histograms, the progress line and the result of a `dlog bench` run.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Meter, Workload};

/// A latency histogram in microseconds (1 µs to 1 min, 3 significant
/// digits), shared by the tasks that record into it.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Mutex<hdrhistogram::Histogram<u64>>>);

impl Histogram {
    pub fn new() -> Histogram {
        let histogram =
            hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Histogram(Arc::new(Mutex::new(histogram)))
    }

    pub fn record(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(micros);
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .value_at_quantile(q) as f64
            / 1000.0
    }

    pub fn summary(&self) -> Latency {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |micros: u64| micros as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The result of a run (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: Option<String>,
    pub workload: Workload,
    pub target: String,
    pub durability: String,
    pub logs: usize,
    pub record_size: usize,
    pub batch: usize,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub readers: Option<usize>,
    pub duration_s: f64,
    pub appends: u64,
    pub records: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub errors: u64,
    /// Append latency (read: time to the first record).
    pub latency_ms: Latency,
    /// Append → delivery to a tailing reader.
    pub e2e_ms: Option<Latency>,
    pub delivered: u64,
}

impl Report {
    pub fn print_table(&self) {
        if let Some(label) = &self.label {
            println!("{label}");
        }
        println!(
            "{:?} on {} ({}): {} logs, {} B records, {} per append, {}",
            self.workload,
            self.target,
            self.durability,
            self.logs,
            self.record_size,
            self.batch,
            match (self.rate, self.concurrency) {
                (Some(rate), _) => format!("open loop at {rate} appends/s"),
                (None, Some(c)) => format!("closed loop, {c} in flight per log"),
                _ => "one pass".to_owned(),
            }
        );
        println!(
            "  {:.0} records/s, {:.2} MB/s, {} appends, {} errors in {:.1} s",
            self.records_per_s, self.mb_per_s, self.appends, self.errors, self.duration_s
        );
        let row = |name: &str, l: &Latency| {
            println!(
                "  {name:<8} p50 {:.3} ms  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
                l.p50, l.p90, l.p99, l.p999, l.max, l.count
            );
        };
        let name = if self.workload == Workload::Read {
            "first"
        } else {
            "append"
        };
        row(name, &self.latency_ms);
        if let Some(e2e) = &self.e2e_ms {
            row("e2e", e2e);
        }
    }
}

/// A progress line on stderr once a second.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(meter: Arc<Meter>, start: Instant, total: Duration, quiet: bool) -> Progress {
        let task = tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let records = meter.records.load(Ordering::Relaxed);
                if !quiet {
                    eprint!(
                        "\r[{:>4.0}/{:.0} s] {:>9} records/s  p99 {:.3} ms  errors {}   ",
                        start.elapsed().as_secs_f64(),
                        total.as_secs_f64(),
                        records - last,
                        meter.latency.quantile_ms(0.99),
                        meter.errors.load(Ordering::Relaxed)
                    );
                }
                last = records;
            }
        });
        Progress { task }
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        eprintln!();
    }
}
