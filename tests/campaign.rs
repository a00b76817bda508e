//! A fault campaign against real processes, in the manner of Jepsen: a real
//! etcd, an S3 server, three cache nodes, three ingest+reader nodes and two
//! compactors; one writer and one tailing reader per log; a nemesis that,
//! driven by a seed, kills (-9) owners, one or two cache nodes and a
//! compactor, freezes owners past their lease and cache nodes for 1–4 s, and
//! deletes logs under load and creates them again. Segments roll every few
//! seconds, so they seal, offload and drop from the cache during the run.
//!
//! Each incarnation of a log (each log id) is its own history: writers
//! append with the log id as a condition, readers pin it, and every payload
//! carries it. At the end the cluster heals, every log is sealed and read in
//! full, and a checker goes over the history: every acknowledged record of
//! the live incarnation is there once at its offset, offsets are dense, no
//! record is unknown or doubled, the tailing readers saw exactly what the
//! final read sees, and what they saw of deleted incarnations is what was
//! written to those (never a record of another incarnation). For each fault
//! it reports how long every log took to acknowledge an append again.
//!
//! CI runs a short campaign. Longer ones: `scripts/campaign.sh` (settings
//! through `DLOG_CAMPAIGN_SECS`, `DLOG_CAMPAIGN_SEED`, `DLOG_CAMPAIGN_LOGS`,
//! `DLOG_CAMPAIGN_REPORT`); a failing run prints the seed to repeat its
//! nemesis schedule (the processes' timing is not repeatable).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::firewall::{self, Firewall};
use common::{Cluster, ClusterSpec, LEASE_TTL_SECS, Node};
use distributedlog::{AppendIf, Client, ClientError, ErrorKind, ReadOptions, Start};
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
            duration: Duration::from_secs(number("DLOG_CAMPAIGN_SECS").unwrap_or(100)),
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
    /// SIGSTOP one cache node for 1–4 s (past its lease at times), then
    /// SIGCONT: reads and appends that try it first must not hang.
    FreezeCache,
    /// kill -9 one of the two compactors, restart it 1 s later.
    KillCompactor,
    /// Delete a log while it is written and read, and create it again
    /// once a compactor purged it (0–2 s later at the earliest).
    RecreateLog,
    /// kill -9 one of the three etcd members, restart it 0–3 s later.
    KillEtcd,
    /// Cut the owner of a log from one cache node for 1–4 s.
    PartitionOwnerFromCache,
    /// Cut the owner of a log from every etcd member past its lease.
    PartitionOwnerFromEtcd,
    /// Cut one cache node from every ingest node for 1–4 s.
    IsolateCache,
    /// kill -9 the cache node with the bad disk, flip one bit of its
    /// journal, restart it.
    CorruptJournal,
    /// kill -9 the cache node with the bad disk, replace its disk (an
    /// empty data directory), restart it re-initialised.
    WipeCache,
}

/// The faults the nemesis picks from. Disk faults (corruption, a wiped
/// disk) hit one cache node only, the one "with the bad disk": with an ack
/// quorum of two, every acknowledged entry survives one bad disk, and none
/// is promised to survive two.
const FAULTS: [Fault; 13] = [
    Fault::KillOwner,
    Fault::FreezeOwner,
    Fault::KillCache,
    Fault::KillTwoCaches,
    Fault::FreezeCache,
    Fault::KillCompactor,
    Fault::RecreateLog,
    Fault::KillEtcd,
    Fault::PartitionOwnerFromCache,
    Fault::PartitionOwnerFromEtcd,
    Fault::IsolateCache,
    Fault::CorruptJournal,
    Fault::WipeCache,
];

/// The cache node whose disk the nemesis corrupts and replaces.
const BAD_DISK: usize = 0;

impl Fault {
    fn cuts_the_network(self) -> bool {
        matches!(
            self,
            Fault::PartitionOwnerFromCache | Fault::PartitionOwnerFromEtcd | Fault::IsolateCache
        )
    }
}

/// What the writer of one incarnation of a log (one log id) sent.
#[derive(Debug, Default)]
struct Written {
    /// Acknowledged records by offset, with when the ack arrived.
    acked: BTreeMap<u64, (Bytes, Instant)>,
    /// Payloads whose append failed: they may or may not be in the log.
    in_doubt: Vec<Bytes>,
}

/// One log name's writer history, by incarnation (log id): the nemesis
/// deletes and re-creates logs, and each incarnation is its own log.
type History = BTreeMap<u64, Written>;

/// The payload tag of incarnation `log_id` of `log`: every record written
/// to it starts with this, so a record of another incarnation is seen as one.
fn tag(log: &str, log_id: u64) -> String {
    format!("{log}@{log_id}#")
}

/// Appends one record at a time with `expected_offset` (a retry cannot
/// write twice) and the log id (a writer of a deleted log cannot write
/// into its re-created namesake) until `stop`.
async fn write(client: Client, log: String, stop: Arc<AtomicBool>) -> History {
    let mut history = History::new();
    let (mut log_id, mut next) = resolve(&client, &log).await;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let payload = Bytes::from(format!("{}{i}", tag(&log, log_id)));
        i += 1;
        let condition = AppendIf {
            next_offset: Some(next),
            log_id: Some(log_id),
        };
        let written = history.entry(log_id).or_default();
        match client
            .append_if(&log, vec![Record::new(payload.clone())], condition)
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
                // Even NOT_FOUND (the log was deleted) leaves it in doubt:
                // an earlier attempt of the SDK's retries may have landed.
                written.in_doubt.push(payload);
                (log_id, next) = resolve(&client, &log).await;
            }
        }
    }
    history
}

/// The log's id and next offset, once it exists (again).
async fn resolve(client: &Client, log: &str) -> (u64, u64) {
    for _ in 0..300 {
        match client.get_log(log).await {
            Ok(info) => return (info.log_id, info.next_offset),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("{log} never became available again");
}

/// What the tailing readers of one incarnation saw.
#[derive(Debug, Default)]
struct Seen {
    records: BTreeMap<u64, Bytes>,
    /// Records that did not follow the previous one (gap or repeat), or
    /// that belong to another incarnation.
    misdelivered: Vec<String>,
    /// Streams that ended with an error and were reopened.
    reopened: u32,
}

/// Follows `log` from the start of each incarnation, reopening after
/// errors at the next offset; each read is pinned to the log id it began
/// on, so a deleted log ends it.
async fn tail(client: Client, log: String, seen: Arc<Mutex<BTreeMap<u64, Seen>>>) {
    let mut log_id = 0;
    let mut next = 0u64;
    loop {
        let (current, _) = resolve(&client, &log).await;
        if current != log_id {
            log_id = current;
            next = 0;
        }
        let options = ReadOptions {
            limit: None,
            follow: true,
            log_id: Some(log_id),
        };
        let tag = tag(&log, log_id);
        let mut reader = client.reader(&log, Start::Offset(next), options);
        while let Some(item) = reader.next().await {
            let stored = match item {
                Ok(stored) => stored,
                Err(err) => {
                    note_read_error(&seen, log_id, &err);
                    break;
                }
            };
            let mut seen = seen.lock().unwrap();
            let seen = seen.entry(log_id).or_default();
            let payload = stored.record.payload;
            if stored.offset != next {
                seen.misdelivered
                    .push(format!("expected offset {next}, got {}", stored.offset));
            }
            if !payload.starts_with(tag.as_bytes()) {
                seen.misdelivered.push(format!(
                    "a read of log id {log_id} got {payload:?} at {}",
                    stored.offset
                ));
            }
            seen.records.insert(stored.offset, payload);
            next = stored.offset + 1;
        }
        seen.lock().unwrap().entry(log_id).or_default().reopened += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A read that ended with an error a fault explains (the log was deleted,
/// a node or the network failed past the SDK's retries) is reopened; any
/// other (a gap the SDK detected, damaged data, a trimmed start) is an
/// anomaly.
fn note_read_error(seen: &Mutex<BTreeMap<u64, Seen>>, log_id: u64, err: &ClientError) {
    let explained = matches!(
        err.kind(),
        ErrorKind::NotFound | ErrorKind::Unavailable | ErrorKind::ResourceExhausted
    );
    if !explained {
        let mut seen = seen.lock().unwrap();
        let seen = seen.entry(log_id).or_default();
        seen.misdelivered.push(format!("the read failed: {err}"));
    }
}

/// The log id in a payload's tag (see [`tag`]).
fn tag_id(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let (_, rest) = text.split_once('@')?;
    rest.split_once('#')?.0.parse().ok()
}

/// Follows `log` the way most applications do: from an offset, with no
/// log id. The SDK pins the read to the log it started on, so one read
/// never delivers records of two incarnations; after `NOT_FOUND` (the log
/// was deleted) it starts over at 0. What it saw is filed under the log id
/// in each record's tag.
async fn tail_unpinned(client: Client, log: String, seen: Arc<Mutex<BTreeMap<u64, Seen>>>) {
    // The incarnation and next offset of the last record delivered.
    let mut position: Option<(u64, u64)> = None;
    loop {
        let options = ReadOptions {
            limit: None,
            follow: true,
            log_id: None,
        };
        let start = position.map_or(0, |(_, next)| next);
        let mut reader = client.reader(&log, Start::Offset(start), options);
        let mut stream_id: Option<u64> = None;
        while let Some(item) = reader.next().await {
            let stored = match item {
                Ok(stored) => stored,
                Err(err) => {
                    let log_id = position.map_or(0, |(id, _)| id);
                    note_read_error(&seen, log_id, &err);
                    if err.kind() == ErrorKind::NotFound {
                        position = None;
                    }
                    break;
                }
            };
            let payload = stored.record.payload;
            let mut seen = seen.lock().unwrap();
            let Some(log_id) = tag_id(&payload) else {
                let seen = seen.entry(0).or_default();
                seen.misdelivered
                    .push(format!("a record nobody wrote: {payload:?}"));
                continue;
            };
            let seen_id = seen.entry(log_id).or_default();
            match stream_id {
                Some(first) if first != log_id => seen_id.misdelivered.push(format!(
                    "one read delivered records of log ids {first} and {log_id}"
                )),
                _ => stream_id = Some(log_id),
            }
            if let Some((id, next)) = position
                && id == log_id
                && stored.offset != next
            {
                seen_id
                    .misdelivered
                    .push(format!("expected offset {next}, got {}", stored.offset));
            }
            seen_id.records.insert(stored.offset, payload);
            position = Some((log_id, stored.offset + 1));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes `log` under load and creates it again once a compactor purged
/// it; `Err` if it could not be re-created within a minute.
async fn recreate(client: &Client, log: &str, pause: Duration) -> Result<(), String> {
    for _ in 0..50 {
        match client.delete_log(log).await {
            Ok(()) => break,
            // An earlier attempt of the SDK's retries deleted it.
            Err(err) if err.kind() == ErrorKind::NotFound => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    tokio::time::sleep(pause).await;
    let mut last = String::new();
    for _ in 0..300 {
        // Refused while the old incarnation is still being purged.
        match client.create_log(log).await {
            Ok(_) => return Ok(()),
            // An earlier attempt of the SDK's retries created it.
            Err(err) if err.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{log}: not re-created within a minute: {last}"))
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

/// Flips one bit at a random byte of a random journal file in `dir`;
/// answers which file and byte.
fn flip_a_bit(dir: &std::path::Path, rng: &mut fastrand::Rng) -> Option<String> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("journal-") && name.ends_with(".log"))
        })
        .collect();
    files.sort();
    let path = files.get(rng.usize(..files.len().max(1)))?;
    let mut bytes = std::fs::read(path).ok()?;
    if bytes.is_empty() {
        return None;
    }
    let at = rng.usize(..bytes.len());
    bytes[at] ^= 1 << rng.u8(..8);
    std::fs::write(path, &bytes).ok()?;
    Some(format!("{} byte {at}", path.display()))
}

/// What the nemesis did, and what went wrong outside the logs' histories.
#[derive(Debug, Default)]
struct NemesisLog {
    /// Each fault, with when it began.
    faults: Vec<(Fault, Instant)>,
    /// Nodes that stopped without the nemesis stopping them.
    unexpected_exits: Vec<String>,
    /// Logs the nemesis could not re-create (an anomaly).
    failures: Vec<String>,
}

/// The nemesis: applies faults until `deadline`.
async fn nemesis(
    cluster: &mut Cluster,
    firewall: Option<&Firewall>,
    client: &Client,
    logs: &[String],
    rng: &mut fastrand::Rng,
    deadline: Instant,
) -> NemesisLog {
    let mut done = NemesisLog::default();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.u64(2_000..5_000))).await;
        let fault = FAULTS[rng.usize(..FAULTS.len())];
        if fault.cuts_the_network() && firewall.is_none() {
            continue;
        }
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
            Fault::FreezeCache => {
                let i = rng.usize(..cluster.caches.len());
                let node = &mut cluster.caches[i];
                node.process().stop();
                let frozen = rng.u64(1_000..(LEASE_TTL_SECS * 1_000 + 2_000));
                tokio::time::sleep(Duration::from_millis(frozen)).await;
                node.process().cont();
                // Past its lease it stops itself; it is restarted below.
                node.wait_exit(Duration::from_secs(2)).await;
            }
            Fault::KillCompactor => {
                let i = rng.usize(..cluster.compactors.len());
                cluster.compactors[i].kill();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Fault::RecreateLog => {
                let log = &logs[rng.usize(..logs.len())];
                let pause = Duration::from_millis(rng.u64(0..2_000));
                if let Err(err) = recreate(client, log, pause).await {
                    done.failures.push(err);
                }
            }
            Fault::KillEtcd => {
                let i = rng.usize(..cluster.etcd.members.len());
                cluster.etcd.kill(i);
                tokio::time::sleep(Duration::from_millis(rng.u64(0..3_000))).await;
                cluster.etcd.ensure_running(i);
            }
            Fault::PartitionOwnerFromCache
            | Fault::PartitionOwnerFromEtcd
            | Fault::IsolateCache => {
                let Some(firewall) = firewall else { continue };
                let mut cuts: Vec<(u32, u32, u16, u16)> = Vec::new(); // (gid a, gid b, port a, port b)
                let owner = match fault {
                    Fault::IsolateCache => None,
                    _ => {
                        let log = &logs[rng.usize(..logs.len())];
                        let Some(owner) = cluster.owner_of(log).await else {
                            continue;
                        };
                        Some(&cluster.ingests[owner])
                    }
                };
                let cache = &cluster.caches[rng.usize(..cluster.caches.len())];
                match (fault, owner) {
                    (Fault::PartitionOwnerFromCache, Some(owner)) => {
                        cuts.push((
                            owner.gid.unwrap(),
                            cache.gid.unwrap(),
                            owner.port,
                            cache.port,
                        ));
                    }
                    (Fault::PartitionOwnerFromEtcd, Some(owner)) => {
                        for member in &cluster.etcd.members {
                            let gid = member.gid.unwrap();
                            cuts.push((owner.gid.unwrap(), gid, owner.port, member.client_port));
                        }
                    }
                    _ => {
                        for ingest in &cluster.ingests {
                            cuts.push((
                                ingest.gid.unwrap(),
                                cache.gid.unwrap(),
                                ingest.port,
                                cache.port,
                            ));
                        }
                    }
                }
                for (a, b, port_a, port_b) in cuts {
                    firewall.cut(a, port_b);
                    firewall.cut(b, port_a);
                }
                let held = if fault == Fault::PartitionOwnerFromEtcd {
                    rng.u64(LEASE_TTL_SECS * 1_000 + 500..LEASE_TTL_SECS * 1_000 + 3_000)
                } else {
                    rng.u64(1_000..4_000)
                };
                tokio::time::sleep(Duration::from_millis(held)).await;
                firewall.heal();
            }
            Fault::CorruptJournal => {
                let node = &mut cluster.caches[BAD_DISK];
                node.kill();
                if let Some(flipped) = flip_a_bit(&node.journal_dir(), rng) {
                    tracing::info!(flipped, "nemesis: journal bit flipped");
                }
                // A journal whose damage leaves nothing to trust (e.g. a
                // file header) is refused; the operator replaces the disk.
                if !node.try_start(Duration::from_secs(20)) {
                    eprintln!(
                        "campaign: {} refused its damaged journal; re-initialised",
                        node.id
                    );
                    node.kill();
                    node.wipe_data();
                    node.start_with_args(&["--reinit-cache"]);
                }
            }
            Fault::WipeCache => {
                let node = &mut cluster.caches[BAD_DISK];
                node.kill();
                node.wipe_data();
                node.start_with_args(&["--reinit-cache"]);
            }
        }
        done.faults.push((fault, at));
        // Heal: whatever is down comes back (a node the fault stopped was
        // taken out of `process` by kill/wait_exit and is not "unexpected").
        for node in cluster
            .caches
            .iter_mut()
            .chain(cluster.ingests.iter_mut())
            .chain(cluster.compactors.iter_mut())
        {
            ensure_running(node, &mut done.unexpected_exits);
        }
        for i in 0..cluster.etcd.members.len() {
            cluster.etcd.ensure_running(i);
        }
    }
    done
}

/// Every record of incarnation `log_id` of `log` through a non-following read.
async fn read_all(client: &Client, log: &str, log_id: u64) -> Result<BTreeMap<u64, Bytes>, String> {
    let options = ReadOptions {
        limit: None,
        follow: false,
        log_id: Some(log_id),
    };
    let mut reader = client.reader(log, Start::Earliest, options);
    let mut records = BTreeMap::new();
    while let Some(item) = reader.next().await {
        let stored = item.map_err(|err| format!("read {log}: {err}"))?;
        records.insert(stored.offset, stored.record.payload);
    }
    Ok(records)
}

/// The checker: anomalies of the live incarnation of one log, as
/// sentences, from the final read of it.
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
    anomalies.extend(unknown_or_doubled(log, stored, written));
    anomalies.extend(seen_against_final(log, "a tailing reader", seen, stored));
    anomalies
}

/// What `reader` saw of the live incarnation that the final read does not
/// hold at the same offset, and its misdelivered records.
fn seen_against_final(
    log: &str,
    reader: &str,
    seen: &Seen,
    stored: &BTreeMap<u64, Bytes>,
) -> Vec<String> {
    let mut anomalies = Vec::new();
    for (offset, payload) in &seen.records {
        if stored.get(offset) != Some(payload) {
            anomalies.push(format!(
                "{log}: {reader} saw {payload:?} at {offset}, the final read {:?}",
                stored.get(offset)
            ));
        }
    }
    anomalies.extend(misdelivered(log, seen));
    anomalies
}

/// The checker for a deleted incarnation, which can no longer be read:
/// what its tailing readers saw must be what its writer sent, in place.
fn check_deleted(log: &str, log_id: u64, written: &Written, seen: &Seen) -> Vec<String> {
    let mut anomalies = Vec::new();
    for (offset, payload) in &seen.records {
        if let Some((acked, _)) = written.acked.get(offset)
            && acked != payload
        {
            anomalies.push(format!(
                "{log} (id {log_id}, deleted): a tailing reader saw {payload:?} at {offset}, acknowledged {acked:?}"
            ));
        }
    }
    anomalies.extend(unknown_or_doubled(log, &seen.records, written));
    anomalies.extend(misdelivered(log, seen));
    anomalies
}

/// Records nobody wrote to this incarnation, and records stored twice.
fn unknown_or_doubled(log: &str, records: &BTreeMap<u64, Bytes>, written: &Written) -> Vec<String> {
    let mut anomalies = Vec::new();
    let known: HashSet<&Bytes> = written
        .acked
        .values()
        .map(|(payload, _)| payload)
        .chain(&written.in_doubt)
        .collect();
    let mut copies: HashMap<&Bytes, u32> = HashMap::new();
    for (offset, payload) in records {
        *copies.entry(payload).or_default() += 1;
        if !known.contains(payload) {
            anomalies.push(format!("{log}: unknown record {payload:?} at {offset}"));
        }
    }
    for (payload, count) in copies {
        if count > 1 {
            anomalies.push(format!("{log}: {payload:?} stored {count} times"));
        }
    }
    anomalies
}

fn misdelivered(log: &str, seen: &Seen) -> impl Iterator<Item = String> {
    seen.misdelivered
        .iter()
        .map(move |s| format!("{log}: tailing reader: {s}"))
}

/// For each fault, the longest any log took to acknowledge an append
/// after it began (`None`: some log acknowledged nothing after it).
fn recovery_times(
    faults: &[(Fault, Instant)],
    histories: &[History],
) -> Vec<(Fault, Option<Duration>)> {
    faults
        .iter()
        .map(|(fault, at)| {
            let worst = histories
                .iter()
                .map(|history| {
                    history
                        .values()
                        .flat_map(|w| w.acked.values())
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
        compactors: 2,
        etcd_members: 3,
        readers: 0,
        ingest_roles: "ingest,reader",
        ..ClusterSpec::default()
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
    let client = cluster.client(endpoints.join(","));
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
    let seen: Vec<Arc<Mutex<BTreeMap<u64, Seen>>>> = logs.iter().map(|_| Arc::default()).collect();
    let tails: Vec<_> = logs
        .iter()
        .zip(&seen)
        .map(|(log, seen)| tokio::spawn(tail(client.clone(), log.clone(), seen.clone())))
        .collect();
    let seen_unpinned: Vec<Arc<Mutex<BTreeMap<u64, Seen>>>> =
        logs.iter().map(|_| Arc::default()).collect();
    let unpinned_tails: Vec<_> = logs
        .iter()
        .zip(&seen_unpinned)
        .map(|(log, seen)| tokio::spawn(tail_unpinned(client.clone(), log.clone(), seen.clone())))
        .collect();

    let firewall = if firewall::available() {
        Some(Firewall::new().expect("set up the campaign's iptables chain"))
    } else if dlog_testkit::is_ci() {
        panic!(
            "the campaign's partitions need root and iptables: run scripts/install-test-deps.sh"
        );
    } else {
        eprintln!("campaign: no partitions (they need root and iptables)");
        None
    };
    let mut rng = fastrand::Rng::with_seed(settings.seed);
    let started = Instant::now();
    let NemesisLog {
        faults,
        unexpected_exits,
        failures,
    } = nemesis(
        &mut cluster,
        firewall.as_ref(),
        &client,
        &logs,
        &mut rng,
        started + settings.duration,
    )
    .await;

    // Healed: let every writer get acknowledgements again, then stop them.
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS + 3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut histories = Vec::new();
    for writer in writers {
        histories.push(writer.await.unwrap());
    }
    let mut anomalies = failures;
    let mut ends = Vec::new();
    let mut live_ids = Vec::new();
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
        let (log_id, end) = resolve(&client, log).await;
        live_ids.push(log_id);
        ends.push(end);
    }
    let caught_up = |i: usize| {
        let seen = seen[i].lock().unwrap();
        seen.get(&live_ids[i])
            .map_or(0, |seen| seen.records.len() as u64)
            >= ends[i]
    };
    // The tailing readers catch up to the end before they are compared.
    let catch_up = Instant::now() + Duration::from_secs(60);
    while Instant::now() < catch_up && !(0..logs.len()).all(caught_up) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for tail in tails.into_iter().chain(unpinned_tails) {
        tail.abort();
    }

    let mut acknowledged = 0;
    let mut in_doubt = 0;
    let mut incarnations = 0;
    let empty = Written::default();
    for (i, log) in logs.iter().enumerate() {
        let live_id = live_ids[i];
        // Copied out: the guard must not be held across the reads below.
        let seen = std::mem::take(&mut *seen[i].lock().unwrap());
        let history = &histories[i];
        acknowledged += history.values().map(|w| w.acked.len()).sum::<usize>();
        in_doubt += history.values().map(|w| w.in_doubt.len()).sum::<usize>();
        incarnations += history.len();
        for (log_id, seen) in seen.iter().filter(|(id, _)| **id != live_id) {
            let written = history.get(log_id).unwrap_or(&empty);
            anomalies.extend(check_deleted(log, *log_id, written, seen));
        }
        let stored = match read_all(&client, log, live_id).await {
            Ok(stored) => stored,
            Err(err) => {
                anomalies.push(err);
                continue;
            }
        };
        let written = history.get(&live_id).unwrap_or(&empty);
        if stored.len() as u64 != ends[i] {
            anomalies.push(format!(
                "{log}: the final read has {} records, the log's end is {}",
                stored.len(),
                ends[i]
            ));
        }
        let unpinned = std::mem::take(&mut *seen_unpinned[i].lock().unwrap());
        for (log_id, seen) in &unpinned {
            if *log_id == live_id {
                anomalies.extend(seen_against_final(log, "an unpinned reader", seen, &stored));
            } else {
                let written = history.get(log_id).unwrap_or(&empty);
                anomalies.extend(check_deleted(log, *log_id, written, seen));
            }
        }
        let live_seen = seen.get(&live_id);
        let seen_records = live_seen.map_or(0, |s| s.records.len());
        if (seen_records as u64) < ends[i] {
            anomalies.push(format!(
                "{log}: the tailing reader reached {seen_records} of {} records",
                ends[i]
            ));
        }
        anomalies.extend(check(
            log,
            &stored,
            written,
            live_seen.unwrap_or(&Seen::default()),
        ));
        let name: LogName = log.parse().unwrap();
        let (segments, _) = common::retry_etcd(&format!("reading the segments of {log}"), || {
            cluster.manifest.segments(&name)
        })
        .await;
        eprintln!(
            "campaign: {log}: {} incarnations; the live one (id {live_id}): {} acknowledged, {} in doubt, {} stored, {} segments, tail reader reopened {} times",
            history.len().max(1),
            written.acked.len(),
            written.in_doubt.len(),
            stored.len(),
            segments.len(),
            live_seen.map_or(0, |s| s.reopened)
        );
    }

    let times = recovery_times(&faults, &histories);
    let mut fault_counts: BTreeMap<String, usize> = BTreeMap::new();
    for (fault, _) in &faults {
        *fault_counts.entry(format!("{fault:?}")).or_default() += 1;
    }
    let report = serde_json::json!({
        "seed": settings.seed,
        "seconds": settings.duration.as_secs(),
        "logs": settings.logs,
        "faults": fault_counts,
        "incarnations": incarnations,
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
