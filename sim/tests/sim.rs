//! The deterministic simulation as tests: a batch of seeds in CI, one
//! chosen seed (`DLOG_SIM_SEED`), and the same seed twice giving the same
//! run. More seeds: `DLOG_SIM_SEEDS=N` (or `scripts/sim.sh N`).

use std::time::Duration;

use dlog_sim::{Config, Report};

/// Longest wall-clock time one seed may take. A task that spins without
/// ever letting simulated time advance would otherwise hang the test (the
/// owner did, before its linger fix: seed 0).
const WATCHDOG: Duration = Duration::from_secs(120);

/// Runs a seed on its own thread under the watchdog.
fn run(seed: u64, config: &Config) -> Report {
    let config = config.clone();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(dlog_sim::run(seed, &config));
    });
    match receiver.recv_timeout(WATCHDOG) {
        Ok(report) => report,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
            "seed {seed} did not finish within {WATCHDOG:?} of wall time: a task spins \
             without letting simulated time advance\nreproduce: {}",
            dlog_sim::repro_command(seed)
        ),
        Err(err) => panic!(
            "seed {seed} panicked ({err}); reproduce: {}",
            dlog_sim::repro_command(seed)
        ),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

fn assert_ok(report: &Report) {
    if !report.ok() {
        for line in report.trace.iter().rev().take(60).rev() {
            eprintln!("  {line}");
        }
        panic!(
            "seed {} failed: stuck: {:?}; violations: {:#?}\nreproduce: {}",
            report.seed,
            report.stuck,
            report.violations,
            report.repro()
        );
    }
}

/// Runs seeds `from..from + count` (offset by `DLOG_SIM_BASE`).
fn seeds(from: u64, count: u64) {
    let base = env_u64("DLOG_SIM_BASE").unwrap_or(0);
    let config = Config::default();
    let mut acked = 0;
    for seed in base + from..base + from + count {
        let report = run(seed, &config);
        acked += report.acked;
        assert_ok(&report);
    }
    assert!(acked > 0, "the runs acknowledged nothing");
    println!(
        "seeds {}..{}: {acked} appends acknowledged, 0 violations",
        base + from,
        base + from + count
    );
}

/// CI's batch, in four tests so they run in parallel.
const PER_TEST: u64 = 15;

#[test]
fn seeds_batch_0() {
    seeds(0, env_u64("DLOG_SIM_SEEDS").unwrap_or(PER_TEST));
}

#[test]
fn seeds_batch_1() {
    seeds(1_000_000, PER_TEST);
}

#[test]
fn seeds_batch_2() {
    seeds(2_000_000, PER_TEST);
}

#[test]
fn seeds_batch_3() {
    seeds(3_000_000, PER_TEST);
}

/// Seeds that ended with a log nobody could recover (a damaged journal
/// on one node of a two-node ensemble: recovery's copies could not reach
/// an ack quorum) before recovery replaced such nodes: every log must now
/// be recovered and read back whole, its Parquet files included.
#[test]
fn damaged_copies_are_replaced_not_stuck() {
    for seed in [8, 32, 10320, 20018, 20051, 20079, 100101] {
        assert_ok(&run(seed, &Config::default()));
    }
}

/// `DLOG_SIM_SEED=N`: one seed, with its trace printed.
#[test]
fn one_seed() {
    let seed = env_u64("DLOG_SIM_SEED").unwrap_or(42);
    let report = run(seed, &Config::default());
    if std::env::var_os("DLOG_SIM_SEED").is_some() {
        for line in &report.trace {
            println!("{line}");
        }
    }
    println!(
        "seed {seed}: {} acked, {} failed, {} reads, trace {:016x}",
        report.acked, report.failed, report.observed, report.trace_hash
    );
    assert_ok(&report);
}

/// The same seed twice gives the same run: the same trace, event for event.
#[test]
fn the_same_seed_gives_the_same_run() {
    let config = Config::default();
    for seed in [7, 1234] {
        let first = run(seed, &config);
        let second = run(seed, &config);
        assert!(first.acked > 0, "seed {seed} acknowledged nothing");
        if first.trace != second.trace {
            let at = first
                .trace
                .iter()
                .zip(&second.trace)
                .position(|(a, b)| a != b)
                .unwrap_or(first.trace.len().min(second.trace.len()));
            panic!(
                "seed {seed} ran differently at event {at}: {:?} vs {:?}",
                first.trace.get(at),
                second.trace.get(at)
            );
        }
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed}: final logs differ"
        );
    }
}
