//! Cache store benchmark: durable adds (fdatasync before the add completes)
//! at 1, 16 and 256 concurrently written segments, 100 B and 4 KiB entries,
//! beside the disk's own 4 KiB write+fdatasync latency measured in the same
//! run. Closed loop: each segment has one add in flight, so latency is the
//! time to durability and throughput comes from group commit.
//!
//!     cargo bench -p dlog-cache --bench journal [-- --seconds N --dir DIR]
//!
//! Prints a Markdown table (BENCHMARKS.md keeps the results).

use dlog_wire::ids::Epoch;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_cache::{CacheStore, SegmentKey, StoreOptions};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::record::Record;
use hdrhistogram::Histogram;

struct Args {
    seconds: u64,
    dir: Option<std::path::PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 3,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => args.seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(3),
            "--dir" => args.dir = it.next().map(Into::into),
            _ => {} // cargo passes --bench
        }
    }
    args
}

fn entry(segment: SegmentKey, entry_id: u64, payload: &Bytes) -> Bytes {
    encode_entry(
        &EntryHeader {
            log_id: segment.log_id,
            segment_id: segment.segment_id,
            entry_id,
            epoch: 1,
            first_offset: entry_id,
            lac: entry_id.checked_sub(1),
            record_count: 1,
        },
        &[EntryRecord {
            timestamp_ms: 0,
            record: Record::new(payload.clone()),
        }],
    )
}

/// The disk's own latency for 4 KiB write + fdatasync.
fn disk_fdatasync(dir: &std::path::Path, seconds: u64) -> Histogram<u64> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fdatasync.probe"))
        .unwrap();
    let block = vec![7u8; 4096];
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        let start = Instant::now();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        histogram
            .record(start.elapsed().as_micros() as u64)
            .unwrap();
    }
    histogram
}

struct Outcome {
    adds: u64,
    bytes: u64,
    fsyncs: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

async fn run(dir: &std::path::Path, segments: u64, entry_bytes: usize, seconds: u64) -> Outcome {
    let store = Arc::new(CacheStore::open(StoreOptions::new(dir)).unwrap());
    let payload = Bytes::from(vec![42u8; entry_bytes]);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for s in 0..segments {
        let store = store.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let segment = SegmentKey {
                log_id: 1,
                segment_id: s,
            };
            let mut histogram = Histogram::<u64>::new(3).unwrap();
            let mut bytes = 0u64;
            let mut id = 0;
            while Instant::now() < end {
                let e = entry(segment, id, &payload);
                bytes += e.len() as u64;
                let t = Instant::now();
                store.add(segment, Epoch(1), e).unwrap().await.unwrap();
                histogram.record(t.elapsed().as_micros() as u64).unwrap();
                id += 1;
            }
            (id, bytes, histogram)
        }));
    }
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let (mut adds, mut bytes) = (0, 0);
    for task in tasks {
        let (n, b, h) = task.await.unwrap();
        adds += n;
        bytes += b;
        latency.add(h).unwrap();
    }
    let elapsed = start.elapsed();
    let fsyncs = store.journal_stats().fsyncs.load(Ordering::Relaxed);
    store.shutdown();
    Outcome {
        adds,
        bytes,
        fsyncs,
        elapsed,
        latency,
    }
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn main() {
    let args = parse_args();
    let base = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let disk = disk_fdatasync(base.path(), args.seconds.min(3));
    println!(
        "disk 4 KiB write+fdatasync: p50 {} ms, p99 {} ms, max {} ms ({} samples)\n",
        ms(disk.value_at_quantile(0.5)),
        ms(disk.value_at_quantile(0.99)),
        ms(disk.max()),
        disk.len()
    );
    println!(
        "| entry | segments | adds/s | MB/s | fsyncs/s | adds/fsync | p50 ms | p99 ms | p99 / disk p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for entry_bytes in [100usize, 4096] {
        for segments in [1u64, 16, 256] {
            let dir = base.path().join(format!("{entry_bytes}-{segments}"));
            let outcome = runtime.block_on(run(&dir, segments, entry_bytes, args.seconds));
            let secs = outcome.elapsed.as_secs_f64();
            println!(
                "| {} B | {} | {:.0} | {:.1} | {:.0} | {:.1} | {} | {} | {:.2} |",
                entry_bytes,
                segments,
                outcome.adds as f64 / secs,
                outcome.bytes as f64 / secs / 1e6,
                outcome.fsyncs as f64 / secs,
                outcome.adds as f64 / outcome.fsyncs.max(1) as f64,
                ms(outcome.latency.value_at_quantile(0.5)),
                ms(outcome.latency.value_at_quantile(0.99)),
                outcome.latency.value_at_quantile(0.99) as f64
                    / disk.value_at_quantile(0.99).max(1) as f64,
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
