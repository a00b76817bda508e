//! `dlog bench`: a load generator with latency histograms, for distributedlog
//! and, with the same loop and the same durability, for its peers.
//!
//! * **Open loop** (`--rate R`): appends are scheduled at fixed intended
//!   times and latency is measured from the intended time (less up to 1 ms
//!   of the timer's own lateness), so a stall shows up in the histogram
//!   instead of slowing the load down (no coordinated omission).
//! * **Closed loop** (no `--rate`): `--concurrency` appends in flight per
//!   log, each sent when the previous one returned.
//!
//! Workloads: `write` (append latency and throughput), `tail` (writes plus
//! `--readers` tailing readers per log; end-to-end latency from the send
//! time stamped in each payload to its delivery), `mixed` (writes plus
//! readers that start from the earliest record and catch up), `read`
//! (reads every record of the logs once; throughput). Targets: `dlog`
//! (the `--endpoint`), `redis://HOST:PORT` (XADD, server with `appendfsync
//! always`), `nats://HOST:PORT` (JetStream publish, file storage, server
//! with `sync_interval: always`), `etcd://HOST:PORT` (put).

pub mod nats;
pub mod redis;
mod report;
mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;

use distributedlog::{Client, ReadOptions, Start};
use report::{Histogram, Progress};
pub use report::{Latency, Report};
use target::Target;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Write,
    Tail,
    Mixed,
    Read,
    /// The machine's limits: 4 KiB write+fdatasync latency, then sequential
    /// 1 MiB writes with an fdatasync each (MB/s), in `--dir`.
    Disk,
}

/// `dlog bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// write | tail | mixed | read.
    #[arg(long, value_enum, default_value = "write")]
    pub workload: Workload,
    /// dlog (the --endpoint), redis://HOST:PORT, nats://HOST:PORT or etcd://HOST:PORT.
    #[arg(long, default_value = "dlog")]
    pub target: String,
    /// Number of logs (streams) written, spread evenly.
    #[arg(long, default_value_t = 1)]
    pub logs: usize,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Records per append (a pipeline of this many for the peers).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Open loop: appends per second over all logs, latency from the intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop (no --rate): appends in flight per log.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Tailing (tail) or catching-up (mixed) readers per log.
    #[arg(long, default_value_t = 1)]
    pub readers: usize,
    /// Namespace of the logs (bench logs are NS/l0, NS/l1, ...).
    #[arg(long, default_value = "bench")]
    pub namespace: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Name printed with the result (scenario tables).
    #[arg(long)]
    pub label: Option<String>,
    /// Async worker threads of the load generator (its own CPU competes
    /// with the servers' on a small machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Directory for the disk workload's scratch file.
    #[arg(long, default_value = ".")]
    pub dir: std::path::PathBuf,
}

/// Runs a benchmark (through `client` for the dlog target) and prints it.
pub async fn run(client: Client, args: BenchArgs) -> anyhow::Result<()> {
    if args.logs == 0 || args.batch == 0 || args.concurrency == 0 {
        bail!("--logs, --batch and --concurrency must be at least 1");
    }
    if args.record_size < 8 && matches!(args.workload, Workload::Tail | Workload::Mixed) {
        bail!(
            "--record-size must be at least 8 for tail and mixed (the send time rides in the payload)"
        );
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be positive");
    }
    if args.workload == Workload::Disk {
        let report = disk(&args).await?;
        return print(&args, report);
    }
    let target = Target::connect(&args.target, &client, &args).await?;
    let durability = target.durability().await?;
    let report = match args.workload {
        Workload::Read => read(&client, &args).await?,
        _ => write(&client, Arc::new(target), &args).await?,
    };
    print(
        &args,
        Report {
            durability,
            ..report
        },
    )
}

fn print(args: &BenchArgs, report: Report) -> anyhow::Result<()> {
    let report = Report {
        label: args.label.clone(),
        ..report
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print_table();
    }
    Ok(())
}

/// The disk's own limits, for the ratios: 4 KiB write+fdatasync latency
/// for half the time, then sequential 1 MiB writes with an fdatasync each.
async fn disk(args: &BenchArgs) -> anyhow::Result<Report> {
    use std::io::Write;
    let path = args
        .dir
        .join(format!(".dlog-bench-disk-{}", std::process::id()));
    let half = Duration::from_secs_f64(args.duration / 2.0);
    let latency = Histogram::new();
    let recorder = latency.clone();
    let (written, secs) = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, f64)> {
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
        let block = vec![7u8; 4096];
        let started = Instant::now();
        while started.elapsed() < half {
            let t = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            recorder.record(t.elapsed());
        }
        let chunk = vec![9u8; 1 << 20];
        let started = Instant::now();
        let mut written = 0u64;
        while started.elapsed() < half {
            file.write_all(&chunk)?;
            file.sync_data()?;
            written += chunk.len() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        drop(file);
        let _ = std::fs::remove_file(&path);
        Ok((written, secs))
    })
    .await??;
    let summary = latency.summary();
    Ok(Report {
        label: None,
        workload: Workload::Disk,
        target: args.dir.display().to_string(),
        durability: "write + fdatasync".to_owned(),
        logs: 0,
        record_size: 4096,
        batch: 1,
        rate: None,
        concurrency: Some(1),
        readers: None,
        duration_s: args.duration,
        appends: summary.count,
        records: summary.count,
        records_per_s: summary.count as f64 / half.as_secs_f64(),
        mb_per_s: written as f64 / secs / 1e6,
        errors: 0,
        latency_ms: summary,
        e2e_ms: None,
        delivered: 0,
    })
}

fn log_name(args: &BenchArgs, i: usize) -> String {
    format!("{}/l{i}", args.namespace)
}

/// Microseconds since the Unix epoch, the send stamp of tail payloads.
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn payload(size: usize, seq: u64) -> Bytes {
    let mut bytes = vec![b'x'; size];
    if size >= 8 {
        bytes[..8].copy_from_slice(&now_micros().to_le_bytes());
    }
    // Vary the rest a little so nothing compresses to nothing.
    for (i, b) in seq.to_le_bytes().iter().enumerate() {
        if let Some(slot) = bytes.get_mut(8 + i) {
            *slot = b'a' + b % 26;
        }
    }
    Bytes::from(bytes)
}

/// Shared counters and histograms of a write run.
struct Meter {
    measure_from: Instant,
    until: Instant,
    latency: Histogram,
    e2e: Histogram,
    appends: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    delivered: AtomicU64,
}

impl Meter {
    fn measuring(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.until
    }

    fn acked(&self, intended: Instant, done: Instant, records: usize, bytes: usize) {
        if self.measuring(intended) {
            self.latency.record(done - intended);
            self.appends.fetch_add(1, Ordering::Relaxed);
            self.records.fetch_add(records as u64, Ordering::Relaxed);
            self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

async fn write(client: &Client, target: Arc<Target>, args: &BenchArgs) -> anyhow::Result<Report> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    prime(&target, args).await?;
    let start = Instant::now();
    let meter = Arc::new(Meter {
        measure_from: start + warmup,
        until: start + warmup + duration,
        latency: Histogram::new(),
        e2e: Histogram::new(),
        appends: AtomicU64::new(0),
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
    });
    let readers = match args.workload {
        Workload::Tail => spawn_readers(client, args, Start::Tail, &meter).await?,
        Workload::Mixed => spawn_readers(client, args, Start::Earliest, &meter).await?,
        _ => Vec::new(),
    };
    let progress = Progress::start(meter.clone(), start, warmup + duration, args.json);
    match args.rate {
        Some(rate) => open_loop(target, args, rate, &meter).await,
        None => closed_loop(target, args, &meter).await,
    }
    progress.stop().await;
    for reader in readers {
        reader.abort();
    }
    let secs = duration.as_secs_f64();
    let records = meter.records.load(Ordering::Relaxed);
    Ok(Report {
        workload: args.workload,
        target: args.target.clone(),
        logs: args.logs,
        record_size: args.record_size,
        batch: args.batch,
        rate: args.rate,
        concurrency: args.rate.is_none().then_some(args.concurrency),
        readers: matches!(args.workload, Workload::Tail | Workload::Mixed)
            .then_some(args.readers * args.logs),
        duration_s: secs,
        appends: meter.appends.load(Ordering::Relaxed),
        records,
        records_per_s: records as f64 / secs,
        mb_per_s: meter.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        errors: meter.errors.load(Ordering::Relaxed),
        latency_ms: meter.latency.summary(),
        e2e_ms: matches!(args.workload, Workload::Tail | Workload::Mixed)
            .then(|| meter.e2e.summary()),
        delivered: meter.delivered.load(Ordering::Relaxed),
        durability: String::new(),
        label: None,
    })
}

/// One append to every log before the clock starts, so the run measures
/// logs that are written, not logs being opened (ownership, a first
/// segment): the steady state of "N logs written concurrently".
async fn prime(target: &Arc<Target>, args: &BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.logs)
        .map(|log| {
            let target = target.clone();
            let payload = payload(args.record_size, 0);
            async move { target.append(log, vec![payload]).await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    if let Some(Err(err)) = results.into_iter().find(Result::is_err) {
        return Err(err.context("first append to a log"));
    }
    if !args.json || args.logs > 100 {
        eprintln!(
            "dlog bench: {} logs primed in {:.1} s",
            args.logs,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// One append of `args.batch` records to log `log`, measured from `intended`.
async fn append_once(
    target: &Target,
    meter: &Meter,
    args: &BenchArgs,
    log: usize,
    seq: u64,
    intended: Instant,
) {
    let payloads: Vec<Bytes> = (0..args.batch as u64)
        .map(|i| payload(args.record_size, seq * args.batch as u64 + i))
        .collect();
    match target.append(log, payloads).await {
        Ok(()) => meter.acked(
            intended,
            Instant::now(),
            args.batch,
            args.batch * args.record_size,
        ),
        Err(err) => {
            if meter.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("dlog bench: append failed: {err:#}");
            }
        }
    }
}

async fn closed_loop(target: Arc<Target>, args: &BenchArgs, meter: &Arc<Meter>) {
    let mut tasks = Vec::new();
    for log in 0..args.logs {
        for worker in 0..args.concurrency {
            let (target, meter, args) = (target.clone(), meter.clone(), args.clone());
            tasks.push(tokio::spawn(async move {
                let mut seq = worker as u64;
                while Instant::now() < meter.until {
                    append_once(&target, &meter, &args, log, seq, Instant::now()).await;
                    seq += args.concurrency as u64;
                }
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// How late the open loop's timer may wake before the delay counts as
/// latency (tokio's timer has millisecond resolution).
const TIMER_SLACK: Duration = Duration::from_millis(1);

async fn open_loop(target: Arc<Target>, args: &BenchArgs, rate: f64, meter: &Arc<Meter>) {
    // Far more than any healthy run keeps in flight; beyond it the
    // schedule still runs and the waiting counts as latency.
    let in_flight = Arc::new(Semaphore::new(1 << 16));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let first = Instant::now();
    let mut seq = 0u64;
    loop {
        let intended = first + interval.mul_f64(seq as f64);
        if intended >= meter.until {
            break;
        }
        tokio::time::sleep_until(intended.into()).await;
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        // Tokio's timer wakes up to a millisecond late: forgive that much of
        // the generator's own lateness, charge anything beyond it.
        let charged_from = Instant::now().min(intended + TIMER_SLACK);
        let (target, meter, args) = (target.clone(), meter.clone(), args.clone());
        let log = (seq % args.logs as u64) as usize;
        tokio::spawn(async move {
            append_once(&target, &meter, &args, log, seq, charged_from).await;
            drop(permit);
        });
        seq += 1;
    }
    // Wait for the stragglers.
    let _ = in_flight.acquire_many(1 << 16).await;
}

async fn spawn_readers(
    client: &Client,
    args: &BenchArgs,
    start: Start,
    meter: &Arc<Meter>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    if args.target != "dlog" {
        bail!("tail and mixed workloads read with dlog readers: use --target dlog");
    }
    let mut tasks = Vec::new();
    for log in 0..args.logs {
        for _ in 0..args.readers {
            let options = ReadOptions {
                limit: None,
                follow: true,
                ..ReadOptions::default()
            };
            let mut reader = client.reader(&log_name(args, log), start, options);
            let meter = meter.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(record)) = reader.next().await {
                    let payload = &record.record.payload;
                    if payload.len() >= 8 {
                        let sent = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                        let now = now_micros();
                        if meter.measuring(Instant::now()) {
                            meter
                                .e2e
                                .record(Duration::from_micros(now.saturating_sub(sent)));
                            meter.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }
    // Let the readers reach the tail before the load starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(tasks)
}

/// Reads every record of the logs once, all logs concurrently.
async fn read(client: &Client, args: &BenchArgs) -> anyhow::Result<Report> {
    let records = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let first_record = Histogram::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for log in 0..args.logs {
        let name = log_name(args, log);
        let mut reader = client.reader(&name, Start::Earliest, ReadOptions::default());
        let (records, bytes, first_record) = (records.clone(), bytes.clone(), first_record.clone());
        tasks.push(tokio::spawn(async move {
            let mut first = true;
            while let Some(record) = reader.next().await {
                let record = record.with_context(|| format!("read {name}"))?;
                if first {
                    first_record.record(started.elapsed());
                    first = false;
                }
                records.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(record.record.payload.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("reader task")??;
    }
    let secs = started.elapsed().as_secs_f64();
    let records = records.load(Ordering::Relaxed);
    Ok(Report {
        workload: Workload::Read,
        target: args.target.clone(),
        logs: args.logs,
        record_size: args.record_size,
        batch: 0,
        rate: None,
        concurrency: None,
        readers: Some(args.logs),
        duration_s: secs,
        appends: 0,
        records,
        records_per_s: records as f64 / secs,
        mb_per_s: bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        errors: 0,
        latency_ms: first_record.summary(),
        e2e_ms: None,
        delivered: records,
        durability: String::new(),
        label: None,
    })
}
