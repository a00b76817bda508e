//! `dlog-sim`: a deterministic simulation of the write path. The real
//! ingest node (ownership, recovery, owners, replica streams), the real
//! cache node (gRPC service, store, journal, replay) and the embedded
//! metastore run in one process on one thread, under tokio's paused clock,
//! with every fault and delay drawn from one seeded RNG: the same seed
//! gives the same run (see ARCHITECTURE.md, "Deterministic simulation").
//!
//! | module | owns |
//! |---|---|
//! | [`rng`] | the run's one seeded random source |
//! | [`net`] | the simulated network: in-process transports with delays, errors, partitions, crashes |
//! | [`disk`] | the lazy disk under the cache journal: unsynced writes lost or torn on a crash, bit flips |
//! | [`meta`] | the manifest store as an ingest node sees it: delays, errors, cut-offs |
//! | [`cluster`] | cache and ingest nodes, their crashes, restarts and pauses |
//! | [`compactor`] | the real compactor offloading to Parquet, its crashes, and the Parquet check |
//! | [`workload`] | clients, readers, and the read-back after the run |
//! | [`nemesis`] | which fault when |
//! | [`check`] | the history and the checker |

pub mod check;
pub mod cluster;
pub mod compactor;
pub mod disk;
pub mod meta;
pub mod nemesis;
pub mod net;
pub mod rng;
pub mod workload;

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlog_meta::manifest::{NamespaceConfig, Replication, RollPolicy};
use dlog_wire::names::LogName;

use crate::check::History;
use crate::cluster::{Cluster, MetaFaults};
use crate::net::{Net, NetFaults};
use crate::rng::Rng;
use crate::workload::ClientSpec;

/// What a run is made of.
#[derive(Debug, Clone)]
pub struct Config {
    pub cache_nodes: usize,
    pub ingest_nodes: usize,
    /// Simulated time the workload and the nemesis run.
    pub duration: Duration,
    /// Faults on (off: the same workload on a quiet cluster).
    pub faults: bool,
    /// Bit flips may hit the newest journal file after a power loss too,
    /// where the journal cannot tell damage in the last synced batch from a
    /// torn write (`DLOG_SIM_FLIP_NEWEST=1`). After a kill -9 they always
    /// may.
    pub flip_newest: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_nodes: 4,
            ingest_nodes: 2,
            duration: Duration::from_secs(20),
            faults: true,
            flip_newest: std::env::var_os("DLOG_SIM_FLIP_NEWEST").is_some(),
        }
    }
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    /// Safety violations found by the checker.
    pub violations: Vec<String>,
    /// The logs could not be recovered or read back after the heal.
    pub stuck: Option<String>,
    /// A journal was damaged (bit flip) in the run. (Until recovery
    /// replaced nodes that cannot take its copies, a log could then stay
    /// unrecoverable and such runs were let pass; now every log must be
    /// recovered, damage or not.)
    pub damaged: bool,
    pub acked: usize,
    /// Parquet files whose rows the checker compared with the final read.
    pub parquet_files: usize,
    pub failed: usize,
    pub observed: usize,
    /// Hash of the trace (events in order, the final logs): equal for
    /// equal seeds.
    pub trace_hash: u64,
    pub trace: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.stuck.is_none()
    }

    /// The one-line command that runs this seed again.
    pub fn repro(&self) -> String {
        repro_command(self.seed)
    }
}

/// The one-line command that reruns `seed` (with the mutation features of
/// this build, if any).
pub fn repro_command(seed: u64) -> String {
    let mut features = Vec::new();
    if cfg!(feature = "mutation-ack-before-quorum") {
        features.push("mutation-ack-before-quorum");
    }
    if cfg!(feature = "mutation-failed-read-not-held") {
        features.push("mutation-failed-read-not-held");
    }
    if cfg!(feature = "mutation-recovery-stops-at-lac") {
        features.push("mutation-recovery-stops-at-lac");
    }
    if cfg!(feature = "mutation-ack-before-fsync") {
        features.push("mutation-ack-before-fsync");
    }
    let features = if features.is_empty() {
        String::new()
    } else {
        format!(" --features {}", features.join(","))
    };
    format!(
        "DLOG_SIM_SEED={seed} cargo nextest run -p dlog-sim --test sim{features} -E 'test(one_seed)' --no-capture"
    )
}

/// A scratch directory for a run, in memory when the machine has one.
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("dlog-sim-").tempdir_in(shm)
    {
        return dir;
    }
    tempfile::Builder::new()
        .prefix("dlog-sim-")
        .tempdir()
        .expect("temporary directory")
}

/// Runs one seed.
pub fn run(seed: u64, config: &Config) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let dir = scratch();
    let report = runtime.block_on(run_in(seed, config, dir.path()));
    // Dropping the runtime cancels every task still running (zombies).
    drop(runtime);
    report
}

async fn run_in(seed: u64, config: &Config, dir: &std::path::Path) -> Report {
    let rng = Arc::new(Rng::new(seed));
    let net_faults = if config.faults {
        NetFaults {
            max_delay: Duration::from_millis(rng.below(20) + 1),
            error_rate: [0.0, 0.002, 0.01, 0.03, 0.1][rng.pick(5)],
        }
    } else {
        NetFaults {
            max_delay: Duration::from_millis(1),
            error_rate: 0.0,
        }
    };
    let meta_faults = MetaFaults {
        max_delay: Duration::from_millis(rng.below(10) + 1),
        error_rate: if config.faults {
            [0.0, 0.005, 0.02][rng.pick(3)]
        } else {
            0.0
        },
    };
    let net = Net::new(rng.clone(), net_faults);
    let cluster = Arc::new(Cluster::new(
        dir,
        rng.clone(),
        net,
        config.cache_nodes,
        config.ingest_nodes,
        meta_faults,
    ));
    cluster.trace(format!("seed {seed}: {net_faults:?} {meta_faults:?}"));

    let namespace_config = NamespaceConfig {
        roll: RollPolicy {
            max_bytes: 64 * 1024,
            max_records: 5 + rng.below(60),
            max_age_ms: 1_000 + rng.below(10_000),
        },
        replication: Replication::DEFAULT,
        ..NamespaceConfig::default()
    };
    cluster
        .manifest
        .put_default_namespace(&namespace_config)
        .await
        .expect("namespace");
    let logs: Vec<LogName> = ["sim/a", "sim/b"]
        .iter()
        .map(|l| l.parse().expect("log name"))
        .collect();
    for log in &logs {
        cluster.manifest.create_log(log).await.expect("create log");
    }
    for i in 0..cluster.cache_count() {
        cluster.start_cache_waiting(i).await;
    }
    for i in 0..cluster.ingest_count() {
        cluster.start_ingest(i, config.faults).await;
    }
    cluster.start_compactor().await;

    let history = Arc::new(Mutex::new(History::default()));
    let until = tokio::time::Instant::now() + config.duration;
    let specs = [
        ClientSpec {
            log: logs[0].clone(),
            expected: true,
        },
        ClientSpec {
            log: logs[0].clone(),
            expected: false,
        },
        ClientSpec {
            log: logs[1].clone(),
            expected: false,
        },
        ClientSpec {
            log: logs[1].clone(),
            expected: true,
        },
    ];
    let mut tasks = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        tasks.push(tokio::spawn(workload::client(
            cluster.clone(),
            history.clone(),
            i,
            spec,
            until,
        )));
    }
    for i in 0..2 {
        tasks.push(tokio::spawn(workload::reader(
            cluster.clone(),
            history.clone(),
            i,
            logs.clone(),
            until,
        )));
    }
    if config.faults {
        tasks.push(tokio::spawn(nemesis::run(
            cluster.clone(),
            logs.clone(),
            until,
            config.flip_newest,
        )));
    }
    for task in tasks {
        task.await.expect("a simulation task panicked");
    }

    // Heal: every node back, no faults, a fresh owner for every log.
    nemesis::heal(&cluster).await;
    let final_slot = 0;
    for i in 0..cluster.ingest_count() {
        cluster.crash_ingest(i).await;
    }
    cluster.start_ingest(final_slot, false).await;
    compactor::restore_logs(&cluster, &logs).await;
    let read_back = workload::read_back(&cluster, &logs, final_slot).await;

    let mut history = std::mem::take(&mut *history.lock().unwrap());
    let mut stuck = None;
    let mut violations = Vec::new();
    let mut parquet_files = 0;
    match read_back {
        Ok(finals) => history.finals = finals,
        Err(err) if err.starts_with("lost:") => violations.push(err),
        Err(err) => stuck = Some(err),
    }
    if stuck.is_none() && violations.is_empty() {
        violations = check::check(&history);
        match compactor::offload_everything(&cluster, &logs).await {
            Ok(()) => {
                let (found, compared) = compactor::check_parquet(&cluster, &history.finals).await;
                violations.extend(found);
                parquet_files = compared;
            }
            Err(err) => stuck = Some(err),
        }
    }
    let trace = std::mem::take(&mut *cluster.trace.lock().unwrap());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    trace.hash(&mut hasher);
    for (log, segments) in &history.finals {
        log.hash(&mut hasher);
        for segment in segments {
            segment.entries.hash(&mut hasher);
        }
    }
    let acked = history
        .attempts
        .iter()
        .filter(|a| matches!(a.outcome, check::Outcome::Acked { .. }))
        .count();
    Report {
        seed,
        violations,
        stuck,
        damaged: cluster.damaged.load(std::sync::atomic::Ordering::SeqCst),
        acked,
        parquet_files,
        failed: history.attempts.len() - acked,
        observed: history.observations.len(),
        trace_hash: hasher.finish(),
        trace,
    }
}
