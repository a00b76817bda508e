//! The workload and the nemesis of a run: clients appending through the
//! ingest nodes (with and without `expected_offset`), readers reading
//! committed entries from cache nodes, and the nemesis injecting faults;
//! then the heal and the read-back of every log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlog_ingest::error::Error as IngestError;
use dlog_meta::cache_clients::CacheClients;
use dlog_meta::manifest::{LogState, SegmentMeta, SegmentState};
use dlog_wire::codec;
use dlog_wire::names::LogName;
use dlog_wire::proto::{ReadEntriesRequest, SegmentRef};
use dlog_wire::record::{Append, Record};
use tokio::time::Instant;

use crate::check::{Attempt, FinalSegment, History, Observation, Outcome};
use crate::cluster::Cluster;

/// A client: which log, and whether it appends with `expected_offset`.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub log: LogName,
    pub expected: bool,
}

fn payload_of(entry_records: &[codec::EntryRecord]) -> Vec<String> {
    entry_records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.record.payload).into_owned())
        .collect()
}

/// The key of one incarnation of a log in the history: its name and log
/// id (a log deleted and created again is another log).
pub fn incarnation(log: &LogName, log_id: u64) -> String {
    format!("{log}#{log_id}")
}

/// The live incarnation's log id, as the harness's quiet view of the
/// manifest has it; `None` while the log is deleted (or being deleted).
async fn live_log_id(cluster: &Cluster, log: &LogName) -> Option<u64> {
    let meta = cluster.manifest.log(log).await.ok()?;
    (meta.state == LogState::Active).then_some(meta.log_id)
}

/// One client's loop until `until`. It names the log id it appends to
/// (`expected_log_id`), so every acknowledgement belongs to a known
/// incarnation; it moves to the new one when the log is re-created.
pub async fn client(
    cluster: Arc<Cluster>,
    history: Arc<Mutex<History>>,
    index: usize,
    spec: ClientSpec,
    until: Instant,
) {
    let mut next_expected = 0u64;
    let mut preferred: Option<usize> = None;
    let mut seq = 0u64;
    let mut log_id = None;
    while Instant::now() < until {
        let id = match log_id {
            Some(id) => id,
            None => match live_log_id(&cluster, &spec.log).await {
                Some(id) => {
                    log_id = Some(id);
                    next_expected = 0;
                    id
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = preferred
            .take()
            .unwrap_or_else(|| cluster.rng.pick(cluster.ingest_count()));
        let Some(node) = cluster.ingest(slot) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let payload = format!("c{index}-{seq}");
        seq += 1;
        let expected = spec.expected.then_some(next_expected);
        let append = Append {
            log: spec.log.clone(),
            records: vec![Record::new(payload.clone())],
            expected_offset: expected,
            expected_log_id: Some(id),
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), node.append(append)).await;
        let outcome = match answer {
            Ok(Ok(ack)) => {
                next_expected = ack.last_offset + 1;
                preferred = Some(slot);
                Outcome::Acked {
                    first: ack.first_offset,
                    last: ack.last_offset,
                }
            }
            Ok(Err(err)) => {
                match &err {
                    IngestError::ExpectedOffset { actual, .. } => next_expected = *actual,
                    IngestError::NotOwner { .. } | IngestError::Elsewhere { .. } => {
                        preferred = err
                            .owner()
                            .and_then(|owner| cluster.ingest_by_id(&owner.id));
                    }
                    _ => {}
                }
                if live_log_id(&cluster, &spec.log).await != Some(id) {
                    log_id = None; // deleted: on to the next incarnation
                }
                Outcome::Failed(err.to_string())
            }
            Err(_) => Outcome::Failed("no answer within 10 s".into()),
        };
        let short = match &outcome {
            Outcome::Acked { first, .. } => format!("acked at {first}"),
            Outcome::Failed(reason) => {
                format!("failed: {}", reason.split(':').next().unwrap_or(""))
            }
        };
        cluster.trace(format!("client {index} {payload} -> {short}"));
        let failed = matches!(outcome, Outcome::Failed(_));
        history.lock().unwrap().attempts.push(Attempt {
            client: index,
            log: incarnation(&spec.log, id),
            payload,
            expected,
            outcome,
        });
        let pause = if failed { 200 } else { 20 };
        tokio::time::sleep(cluster.rng.delay(Duration::from_millis(pause))).await;
    }
}

/// Reads entries `from..` of a segment from one node: committed ones (up
/// to the node's LAC) of an open segment, up to the sealed end otherwise.
async fn read_entries(
    clients: &CacheClients,
    node: &str,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
    from: u64,
) -> Result<Vec<codec::Entry>, String> {
    let mut client = clients.client(node).await.map_err(|e| e.to_string())?;
    let sealed_last_entry = match segment.state {
        SegmentState::Open => None,
        _ => Some(segment.last_entry_id.ok_or("sealed empty")?),
    };
    let request = ReadEntriesRequest {
        segment: Some(SegmentRef {
            log: log.to_string(),
            log_id,
            segment_id: segment.segment_id,
        }),
        from_entry: from,
        max_entries: 64,
        fence_epoch: None,
        sealed_last_entry,
    };
    let read = dlog_meta::cache_clients::read_all_entries(&mut client, request);
    let entries = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "read timed out".to_owned())?
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
    entries
        .into_iter()
        .map(|bytes| codec::decode_entry(bytes).map_err(|e| e.to_string()))
        .collect()
}

/// One reader's loop until `until`: reads a random stretch of a random
/// recent segment of a random log from a random node of its ensemble.
pub async fn reader(
    cluster: Arc<Cluster>,
    history: Arc<Mutex<History>>,
    index: usize,
    logs: Vec<LogName>,
    until: Instant,
) {
    let party = format!("reader-{index}");
    let clients =
        CacheClients::with_connector(cluster.manifest.clone(), cluster.net.connector(&party));
    while Instant::now() < until {
        tokio::time::sleep(cluster.rng.delay(Duration::from_millis(300))).await;
        let log = &logs[cluster.rng.pick(logs.len())];
        let Ok(meta) = cluster.manifest.log(log).await else {
            continue;
        };
        let Ok((segments, _)) = cluster.manifest.segments(log).await else {
            continue;
        };
        if segments.is_empty() || meta.state != LogState::Active {
            continue;
        }
        let recent = segments.len().min(2);
        let segment = &segments[segments.len() - 1 - cluster.rng.pick(recent)];
        if segment.state != SegmentState::Open && segment.last_entry_id.is_none() {
            continue;
        }
        let node = &segment.ensemble[cluster.rng.pick(segment.ensemble.len())];
        let from = cluster.rng.below(segment.last_entry_id.unwrap_or(32) + 1);
        let Ok(entries) = read_entries(&clients, node, log, meta.log_id, segment, from).await
        else {
            continue;
        };
        let mut history = history.lock().unwrap();
        for entry in entries {
            for (i, payload) in payload_of(&entry.records).into_iter().enumerate() {
                history.observations.push(Observation {
                    reader: index,
                    log: incarnation(log, meta.log_id),
                    offset: entry.header.first_offset + i as u64,
                    payload,
                });
            }
        }
    }
}

/// After the run: a fresh owner recovers and seals every log, then each
/// log is read back in full. `Err` if a log could not be recovered or read
/// (a liveness failure, reported apart from safety violations).
pub async fn read_back(
    cluster: &Cluster,
    logs: &[LogName],
    final_slot: usize,
) -> Result<std::collections::BTreeMap<String, Vec<FinalSegment>>, String> {
    let node = cluster.ingest(final_slot).ok_or("no final owner")?;
    let clients =
        CacheClients::with_connector(cluster.manifest.clone(), cluster.net.connector("checker"));
    let mut finals = std::collections::BTreeMap::new();
    for log in logs {
        let mut sealed = Err(String::new());
        for _ in 0..30 {
            sealed = node.seal(log).await.map_err(|e| e.to_string());
            if sealed.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        sealed.map_err(|e| format!("{log}: the final owner cannot recover it: {e}"))?;
        let meta = cluster.manifest.log(log).await.map_err(|e| e.to_string())?;
        let (segments, _) = cluster
            .manifest
            .segments(log)
            .await
            .map_err(|e| e.to_string())?;
        let mut read = Vec::new();
        for segment in segments {
            if segment.state == SegmentState::Open {
                return Err(format!("{log}: segment {} still open", segment.segment_id));
            }
            let mut entries = Vec::new();
            if let Some(last) = segment.last_entry_id {
                let mut next = 0u64;
                while next <= last {
                    let mut page = None;
                    let mut errors = Vec::new();
                    for node in &segment.ensemble {
                        match read_entries(&clients, node, log, meta.log_id, &segment, next).await {
                            Ok(got) if !got.is_empty() => {
                                page = Some(got);
                                break;
                            }
                            Ok(_) => errors.push(format!("{node}: nothing")),
                            Err(e) => errors.push(format!("{node}: {e}")),
                        }
                    }
                    let page = page.ok_or_else(|| {
                        format!(
                            "lost: {log}: entry {next} of sealed segment {} is on no node: {errors:?}",
                            segment.segment_id
                        )
                    })?;
                    for entry in page {
                        if entry.header.entry_id != next {
                            return Err(format!(
                                "{log}: entry {} where {next} was due",
                                entry.header.entry_id
                            ));
                        }
                        entries.push((entry.header.first_offset, payload_of(&entry.records)));
                        next += 1;
                    }
                }
            }
            read.push(FinalSegment {
                segment_id: segment.segment_id,
                start_offset: segment.start_offset,
                end_offset: segment.end_offset.unwrap_or(segment.start_offset),
                entries,
            });
        }
        finals.insert(incarnation(log, meta.log_id), read);
    }
    Ok(finals)
}
