//! A fault campaign against real processes, in the manner of Jepsen: a real
//! etcd, an S3 server, three cache nodes, three ingest+reader nodes and a
//! compactor; one writer and one tailing reader per log; a nemesis that,
//! driven by a seed, kills (-9) owners, one or two cache nodes and the
//! compactor, and freezes owners past their lease. Segments roll every few
//! seconds, so they seal, offload and drop from the cache during the run.
//!
//! At the end the cluster heals, every log is sealed and read in full, and a
//! checker goes over the history: every acknowledged record is there once at
//! its offset, offsets are dense, no record is unknown or doubled, and the
//! tailing readers saw exactly what the final read sees. For each fault it
//! reports how long every log took to acknowledge an append again.
//!
//! CI runs a short campaign. Longer ones: `scripts/campaign.sh` (settings
//! through `DLOG_CAMPAIGN_SECS`, `DLOG_CAMPAIGN_SEED`, `DLOG_CAMPAIGN_LOGS`,
//! `DLOG_CAMPAIGN_REPORT`); a failing run prints the seed to repeat its
//! nemesis schedule (the processes' timing is not repeatable).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, ClusterSpec, LEASE_TTL_SECS, Node};
use distributedlog::{Client, ReadOptions, Start};
use dlog_meta::manifest::{NamespaceConfig, RollPolicy};
use dlog_wire::names::{LogName, Namespace};
use dlog_wire::record::Record;
use futures::StreamExt;

/// The campaign's knobs, from the environment.
#[derive(Debug, Clone, Copy)]
struct Settings {
    seed: u64,
    duration: Duration,
    logs: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Settings {
            seed: number("DLOG_CAMPAIGN_SEED").unwrap_or_else(|| fastrand::u64(..)),
            duration: Duration::from_secs(number("DLOG_CAMPAIGN_SECS").unwrap_or(75)),
            logs: number("DLOG_CAMPAIGN_LOGS").unwrap_or(4) as usize,
        }
    }
}

/// What the nemesis does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    /// kill -9 the owner of a log, restart it 0–3 s later.
    KillOwner,
    /// SIGSTOP the owner of a log past its lease, then SIGCONT.
    FreezeOwner,
    /// kill -9 one cache node, restart it 0–3 s later.
    KillCache,
    /// kill -9 two of the three cache nodes, restart both 0–3 s later.
    KillTwoCaches,
    /// kill -9 the compactor, restart it 1 s later.
    KillCompactor,
}

const FAULTS: [Fault; 5] = [
    Fault::KillOwner,
    Fault::FreezeOwner,
    Fault::KillCache,
    Fault::KillTwoCaches,
    Fault::KillCompactor,
];

/// One log's writer history.
#[derive(Debug, Default)]
struct Written {
    /// Acknowledged records by offset, with when the ack arrived.
    acked: BTreeMap<u64, (Bytes, Instant)>,
    /// Payloads whose append failed: they may or may not be in the log.
    in_doubt: Vec<Bytes>,
}

/// Appends one record at a time with `expected_offset` (a retry cannot
/// write twice) until `stop`.
async fn write(client: Client, log: String, stop: Arc<AtomicBool>) -> Written {
    let mut written = Written::default();
    let mut next = next_offset(&client, &log).await;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let payload = Bytes::from(format!("{log}#{i}"));
        i += 1;
        match client
            .append(&log, vec![Record::new(payload.clone())], Some(next))
            .await
        {
            Ok(appended) if appended.first_offset == next => {
                written.acked.insert(next, (payload, Instant::now()));
                next += 1;
            }
            Ok(appended) => panic!(
                "{log}: an append expected at {next} was acknowledged at {}",
                appended.first_offset
            ),
            Err(_) => {
                written.in_doubt.push(payload);
                next = next_offset(&client, &log).await;
            }
        }
    }
    written
}

async fn next_offset(client: &Client, log: &str) -> u64 {
    for _ in 0..300 {
        match client.get_log(log).await {
            Ok(info) => return info.next_offset,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("{log} never became available again");
}

/// What a tailing reader saw, and how its stream behaved.
#[derive(Debug, Default)]
struct Seen {
    records: BTreeMap<u64, Bytes>,
    /// Records that did not follow the previous one (gap or repeat).
    out_of_order: Vec<String>,
    /// Streams that ended with an error and were reopened.
    reopened: u32,
}

/// Follows `log` from the start, reopening after errors at the next offset.
async fn tail(client: Client, log: String, seen: Arc<Mutex<Seen>>) {
    let mut next = 0u64;
    loop {
        let options = ReadOptions {
            limit: None,
            follow: true,
        };
        let mut reader = client.reader(&log, Start::Offset(next), options);
        while let Some(item) = reader.next().await {
            let Ok(stored) = item else { break };
            let mut seen = seen.lock().unwrap();
            if stored.offset != next {
                seen.out_of_order
                    .push(format!("expected offset {next}, got {}", stored.offset));
            }
            seen.records.insert(stored.offset, stored.record.payload);
            next = stored.offset + 1;
        }
        seen.lock().unwrap().reopened += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Restarts `node` if it is not running (it may have stopped itself).
fn ensure_running(node: &mut Node, unexpected_exits: &mut Vec<String>) {
    let running = node.process.as_mut().is_some_and(|p| p.is_running());
    if !running {
        if node.process.is_some() {
            unexpected_exits.push(node.id.clone());
        }
        node.process = None;
        node.start();
    }
}

/// The nemesis: applies faults until `deadline`; returns when each began.
async fn nemesis(
    cluster: &mut Cluster,
    logs: &[String],
    rng: &mut fastrand::Rng,
    deadline: Instant,
) -> (Vec<(Fault, Instant)>, Vec<String>) {
    let mut faults = Vec::new();
    let mut unexpected_exits = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.u64(2_000..5_000))).await;
        let fault = FAULTS[rng.usize(..FAULTS.len())];
        let at = Instant::now();
        tracing::info!(?fault, "nemesis");
        match fault {
            Fault::KillOwner | Fault::FreezeOwner => {
                let log = &logs[rng.usize(..logs.len())];
                let Some(owner) = cluster.owner_of(log).await else {
                    continue;
                };
                let node = &mut cluster.ingests[owner];
                if fault == Fault::KillOwner {
                    node.kill();
                    tokio::time::sleep(Duration::from_millis(rng.u64(0..3_000))).await;
                } else {
                    node.process().stop();
                    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS + 1)).await;
                    node.process().cont();
                    // Its lease is gone: it stops itself (or carries on,
                    // fenced); a stopped one is restarted below.
                    node.wait_exit(Duration::from_secs(3)).await;
                }
            }
            Fault::KillCache => {
                let i = rng.usize(..cluster.caches.len());
                cluster.caches[i].kill();
                tokio::time::sleep(Duration::from_millis(rng.u64(0..3_000))).await;
            }
            Fault::KillTwoCaches => {
                let first = rng.usize(..cluster.caches.len());
                let second =
                    (first + 1 + rng.usize(..cluster.caches.len() - 1)) % cluster.caches.len();
                cluster.caches[first].kill();
                cluster.caches[second].kill();
                tokio::time::sleep(Duration::from_millis(rng.u64(0..3_000))).await;
            }
            Fault::KillCompactor => {
                cluster.compactors[0].kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        faults.push((fault, at));
        // Heal: whatever is down comes back (a node the fault stopped was
        // taken out of `process` by kill/wait_exit and is not "unexpected").
        for node in cluster
            .caches
            .iter_mut()
            .chain(cluster.ingests.iter_mut())
            .chain(cluster.compactors.iter_mut())
        {
            ensure_running(node, &mut unexpected_exits);
        }
    }
    (faults, unexpected_exits)
}

/// Every record of `log` through a non-following read.
async fn read_all(client: &Client, log: &str) -> Result<BTreeMap<u64, Bytes>, String> {
    let options = ReadOptions {
        limit: None,
        follow: false,
    };
    let mut reader = client.reader(log, Start::Earliest, options);
    let mut records = BTreeMap::new();
    while let Some(item) = reader.next().await {
        let stored = item.map_err(|err| format!("read {log}: {err}"))?;
        records.insert(stored.offset, stored.record.payload);
    }
    Ok(records)
}

/// The checker: anomalies of one log, as sentences.
fn check(log: &str, stored: &BTreeMap<u64, Bytes>, written: &Written, seen: &Seen) -> Vec<String> {
    let mut anomalies = Vec::new();
    for (expected, offset) in stored.keys().enumerate() {
        if *offset != expected as u64 {
            anomalies.push(format!(
                "{log}: offsets not dense: {offset} at position {expected}"
            ));
            break;
        }
    }
    for (offset, (payload, _)) in &written.acked {
        match stored.get(offset) {
            None => anomalies.push(format!("{log}: acknowledged offset {offset} lost")),
            Some(found) if found != payload => anomalies.push(format!(
                "{log}: offset {offset} holds {found:?}, acknowledged {payload:?}"
            )),
            Some(_) => {}
        }
    }
    let known: HashMap<&Bytes, ()> = written
        .acked
        .values()
        .map(|(payload, _)| (payload, ()))
        .chain(written.in_doubt.iter().map(|p| (p, ())))
        .collect();
    let mut copies: HashMap<&Bytes, u32> = HashMap::new();
    for (offset, payload) in stored {
        *copies.entry(payload).or_default() += 1;
        if !known.contains_key(payload) {
            anomalies.push(format!("{log}: unknown record {payload:?} at {offset}"));
        }
    }
    for (payload, count) in copies {
        if count > 1 {
            anomalies.push(format!("{log}: {payload:?} stored {count} times"));
        }
    }
    for (offset, payload) in &seen.records {
        if stored.get(offset) != Some(payload) {
            anomalies.push(format!(
                "{log}: a tailing reader saw {payload:?} at {offset}, the final read {:?}",
                stored.get(offset)
            ));
        }
    }
    anomalies.extend(
        seen.out_of_order
            .iter()
            .map(|s| format!("{log}: tailing reader: {s}")),
    );
    anomalies
}

/// For each fault, the longest any log took to acknowledge an append
/// after it began (`None`: some log acknowledged nothing after it).
fn recovery_times(
    faults: &[(Fault, Instant)],
    written: &[Written],
) -> Vec<(Fault, Option<Duration>)> {
    faults
        .iter()
        .map(|(fault, at)| {
            let worst = written
                .iter()
                .map(|w| {
                    w.acked
                        .values()
                        .map(|(_, when)| *when)
                        .filter(|when| when > at)
                        .min()
                        .map(|when| when - *at)
                })
                .try_fold(Duration::ZERO, |worst, time| time.map(|t| worst.max(t)));
            (*fault, worst)
        })
        .collect()
}

fn summary(times: &[(Fault, Option<Duration>)]) -> serde_json::Value {
    let mut by_kind: BTreeMap<String, Vec<Option<Duration>>> = BTreeMap::new();
    for (fault, time) in times {
        by_kind.entry(format!("{fault:?}")).or_default().push(*time);
    }
    let kinds: serde_json::Map<String, serde_json::Value> = by_kind
        .into_iter()
        .map(|(kind, times)| {
            let mut secs: Vec<f64> = times.iter().flatten().map(Duration::as_secs_f64).collect();
            secs.sort_by(f64::total_cmp);
            let value = serde_json::json!({
                "count": times.len(),
                "never_recovered": times.iter().filter(|t| t.is_none()).count(),
                "median_s": secs.get(secs.len() / 2),
                "max_s": secs.last(),
            });
            (kind, value)
        })
        .collect();
    serde_json::Value::Object(kinds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn campaign_loses_nothing_acknowledged() {
    let settings = Settings::from_env();
    eprintln!(
        "campaign: seed {} for {} s over {} logs (repeat: DLOG_CAMPAIGN_SEED={} scripts/campaign.sh)",
        settings.seed,
        settings.duration.as_secs(),
        settings.logs,
        settings.seed
    );
    let spec = ClusterSpec {
        caches: 3,
        ingests: 3,
        compactors: 1,
        readers: 0,
        ingest_roles: "ingest,reader",
    };
    let Some(mut cluster) = Cluster::start_spec(spec).await else {
        return;
    };
    // Short segments: they seal, offload and leave the cache during the run.
    let ns = Namespace::new("campaign").unwrap();
    let config = NamespaceConfig {
        roll: RollPolicy {
            max_bytes: 64 * 1024,
            max_records: 2_000,
            max_age_ms: 3_000,
        },
        ..NamespaceConfig::default()
    };
    cluster.manifest.put_namespace(&ns, &config).await.unwrap();
    let endpoints: Vec<String> = cluster.ingests.iter().map(Node::address).collect();
    let client = Client::new(endpoints.join(","));
    let logs: Vec<String> = (0..settings.logs)
        .map(|i| format!("campaign/log-{i}"))
        .collect();
    for log in &logs {
        client.create_log(log).await.unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = logs
        .iter()
        .map(|log| tokio::spawn(write(client.clone(), log.clone(), stop.clone())))
        .collect();
    let seen: Vec<Arc<Mutex<Seen>>> = logs.iter().map(|_| Arc::default()).collect();
    let tails: Vec<_> = logs
        .iter()
        .zip(&seen)
        .map(|(log, seen)| tokio::spawn(tail(client.clone(), log.clone(), seen.clone())))
        .collect();

    let mut rng = fastrand::Rng::with_seed(settings.seed);
    let started = Instant::now();
    let (faults, unexpected_exits) =
        nemesis(&mut cluster, &logs, &mut rng, started + settings.duration).await;

    // Healed: let every writer get acknowledgements again, then stop them.
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS + 3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await.unwrap());
    }
    let mut anomalies = Vec::new();
    let mut ends = Vec::new();
    for log in &logs {
        let mut sealed = client.seal(log).await;
        for _ in 0..20 {
            if sealed.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            sealed = client.seal(log).await;
        }
        if let Err(err) = sealed {
            anomalies.push(format!("{log}: seal failed after healing: {err}"));
        }
        ends.push(next_offset(&client, log).await);
    }
    // The tailing readers catch up to the end before they are compared.
    let catch_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < catch_up
        && seen
            .iter()
            .zip(&ends)
            .any(|(seen, end)| (seen.lock().unwrap().records.len() as u64) < *end)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for tail in tails {
        tail.abort();
    }

    let mut acknowledged = 0;
    let mut in_doubt = 0;
    for (i, log) in logs.iter().enumerate() {
        let stored = match read_all(&client, log).await {
            Ok(stored) => stored,
            Err(err) => {
                anomalies.push(err);
                continue;
            }
        };
        let name: LogName = log.parse().unwrap();
        let (segments, _) = cluster.manifest.segments(&name).await.unwrap();
        let seen = seen[i].lock().unwrap();
        if (seen.records.len() as u64) < ends[i] {
            anomalies.push(format!(
                "{log}: the tailing reader reached {} of {} records",
                seen.records.len(),
                ends[i]
            ));
        }
        anomalies.extend(check(log, &stored, &written[i], &seen));
        acknowledged += written[i].acked.len();
        in_doubt += written[i].in_doubt.len();
        eprintln!(
            "campaign: {log}: {} acknowledged, {} in doubt, {} stored, {} segments, tail reader reopened {} times",
            written[i].acked.len(),
            written[i].in_doubt.len(),
            stored.len(),
            segments.len(),
            seen.reopened
        );
    }

    let times = recovery_times(&faults, &written);
    let mut fault_counts: BTreeMap<String, usize> = BTreeMap::new();
    for (fault, _) in &faults {
        *fault_counts.entry(format!("{fault:?}")).or_default() += 1;
    }
    let report = serde_json::json!({
        "seed": settings.seed,
        "seconds": settings.duration.as_secs(),
        "logs": settings.logs,
        "faults": fault_counts,
        "acknowledged": acknowledged,
        "in_doubt": in_doubt,
        "anomalies": anomalies.len(),
        "unexpected_exits": unexpected_exits,
        "time_to_ack_after_fault": summary(&times),
    });
    eprintln!("campaign report: {report}");
    if let Ok(path) = std::env::var("DLOG_CAMPAIGN_REPORT") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "{report}").unwrap();
    }
    assert!(acknowledged > 0, "nothing was acknowledged");
    assert!(!faults.is_empty(), "the nemesis applied no fault");
    assert!(
        anomalies.is_empty(),
        "seed {}: {} anomalies:\n{}",
        settings.seed,
        anomalies.len(),
        anomalies.join("\n")
    );
}
