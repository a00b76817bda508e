//! Runs many seeds of the simulation and reports seeds per second.
//!
//! ```text
//! dlog-sim [--seeds N] [--from SEED] [--jobs J] [--until-failure]
//! ```
//! Prints every failing seed with its reproduction command; exits 1 if any
//! failed. With `--until-failure` it stops at the first failing seed and
//! prints how many seeds that took (the mutation check).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use dlog_sim::{Config, run};

/// Refuses the command line: one line on stderr, exit code 2.
fn usage(problem: &str) -> ! {
    eprintln!(
        "dlog-sim: {problem} (usage: dlog-sim [--seeds N] [--from SEED] [--jobs J] [--until-failure])"
    );
    std::process::exit(2)
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        // Only a binary installs a subscriber (the library crates emit).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut seeds = 1000u64;
    let mut from = 0u64;
    let mut jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut until_failure = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| usage(&format!("{arg} needs a number")))
        };
        match arg.as_str() {
            "--seeds" => seeds = value(),
            "--from" => from = value(),
            "--jobs" => jobs = value() as usize,
            "--until-failure" => until_failure = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let next = Arc::new(AtomicU64::new(from));
    let done = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let parquet = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let damaged = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (next, done, acked, parquet, stop, failures, damaged) = (
                next.clone(),
                done.clone(),
                acked.clone(),
                parquet.clone(),
                stop.clone(),
                failures.clone(),
                damaged.clone(),
            );
            std::thread::spawn(move || {
                let config = Config::default();
                while !stop.load(Ordering::SeqCst) {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= from + seeds {
                        return;
                    }
                    let report = run(seed, &config);
                    acked.fetch_add(report.acked as u64, Ordering::Relaxed);
                    parquet.fetch_add(report.parquet_files as u64, Ordering::Relaxed);
                    let count = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if report.damaged {
                        damaged.fetch_add(1, Ordering::Relaxed);
                    }
                    if !report.ok() {
                        println!(
                            "FAILED seed {seed} (after {count} seeds): stuck: {:?}; violations: {:?}\n  reproduce: {}",
                            report.stuck,
                            report.violations.iter().take(3).collect::<Vec<_>>(),
                            report.repro()
                        );
                        failures.lock().unwrap().push((seed, count));
                        if until_failure {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    if count % 100 == 0 {
                        let secs = started.elapsed().as_secs_f64();
                        println!("{count} seeds, {:.1} seeds/s", count as f64 / secs);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker panicked");
    }
    let secs = started.elapsed().as_secs_f64();
    let count = done.load(Ordering::SeqCst);
    let failures = failures.lock().unwrap();
    println!(
        "ran {count} seeds from {from} in {secs:.1} s ({:.2} seeds/s, {jobs} jobs): {} appends acknowledged, {} Parquet files checked, {} failing seeds, {} runs with a damaged journal",
        count as f64 / secs,
        acked.load(Ordering::Relaxed),
        parquet.load(Ordering::Relaxed),
        failures.len(),
        damaged.load(Ordering::Relaxed)
    );
    if let Some((seed, after)) = failures.iter().min_by_key(|(_, after)| *after) {
        println!("first failure: seed {seed}, found after {after} seeds");
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
