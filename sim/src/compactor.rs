//! The compactor in the simulation: the real `dlog-compactor` offloading
//! the run's sealed segments to Parquet in an in-memory object store,
//! through the simulated network and a faulty view of the manifest, killed
//! mid-pass and restarted by the nemesis; after the run, a last offload of
//! every segment and the check that each Parquet file holds exactly the
//! records the final read found in that segment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dlog_compactor::{Compactor, CompactorOptions};
use dlog_meta::cache_clients::CacheClients;
use dlog_meta::manifest::{LogState, Manifest, SegmentState};
use dlog_storage::segment_file;
use dlog_wire::names::LogName;
use object_store::ObjectStoreExt;

use crate::check::FinalSegment;
use crate::cluster::{Cluster, locked};

/// The compactor's lease: longer than any run, so only a crash ends it.
const COMPACTOR_LEASE_TTL: Duration = Duration::from_secs(3_600);

/// The running compactor, if any.
#[derive(Debug, Default)]
pub struct CompactorSlot {
    task: Option<tokio::task::JoinHandle<()>>,
    lease: Option<dlog_meta::metastore::LeaseId>,
}

/// A compactor for the cluster, its manifest calls delayed and failing as
/// an ingest node's are (`faulty`), keeping cache copies for longer than a
/// run so the final read still finds every segment on the cache nodes.
async fn compactor(cluster: &Cluster, faulty: bool) -> (Compactor, dlog_meta::metastore::LeaseId) {
    let manifest = Manifest::new(cluster.manifest_store(faulty), "default");
    let lease = cluster
        .meta
        .lease_grant(COMPACTOR_LEASE_TTL)
        .await
        .expect("compactor lease");
    let caches = Arc::new(CacheClients::with_connector(
        manifest.clone(),
        cluster.net.connector("compactor"),
    ));
    let options = CompactorOptions {
        poll_interval: Duration::from_millis(500),
        cache_drop_grace: Duration::from_secs(3_600),
        encode_inline: true,
        // Often, and records kept short, so that a sweep that took a
        // live log's objects for dead ones shows as a lost record in the
        // final read, also when a log id's record outlives it.
        orphan_sweep_interval: Some(Duration::from_secs(5)),
        keep_purge_records: Duration::from_secs(30),
        ..CompactorOptions::default()
    };
    let compactor = Compactor::new(
        manifest,
        cluster.objects.clone(),
        "compactor".into(),
        lease,
        options,
    )
    .with_cache_clients(caches);
    (compactor, lease)
}

impl Cluster {
    /// Starts the compactor's pass loop (if it is not running).
    pub async fn start_compactor(&self) {
        if locked(&self.compactor).task.is_some() {
            return;
        }
        let (compactor, lease) = compactor(self, true).await;
        let task = tokio::spawn(compactor.run(tokio_util::sync::CancellationToken::new()));
        let mut slot = locked(&self.compactor);
        if slot.task.is_some() {
            task.abort();
            return;
        }
        *slot = CompactorSlot {
            task: Some(task),
            lease: Some(lease),
        };
        drop(slot);
        self.trace("compactor up".into());
    }

    /// Kills the compactor wherever it is in its pass; its claims go with
    /// its lease.
    pub async fn crash_compactor(&self) {
        let slot = std::mem::take(&mut *locked(&self.compactor));
        let Some(task) = slot.task else { return };
        task.abort();
        if let Some(lease) = slot.lease {
            let _ = self.meta.lease_revoke(lease).await;
        }
        self.trace("compactor killed".into());
    }
}

/// After the run: every log the nemesis deleted and did not create again
/// is purged by a quiet compactor pass and created again, so that the
/// read-back finds every log.
pub async fn restore_logs(cluster: &Cluster, logs: &[LogName]) {
    let (compactor, lease) = compactor(cluster, false).await;
    for log in logs {
        let live =
            matches!(cluster.manifest.log(log).await, Ok(meta) if meta.state == LogState::Active);
        if !live {
            let _ = compactor.pass().await;
            cluster.recreate_after_purge(log).await;
        }
    }
    let _ = cluster.meta.lease_revoke(lease).await;
}

/// After the read-back: stops the run's compactor, then a quiet one passes
/// until every sealed segment with entries of `logs` is offloaded. `Err`
/// (a liveness failure) if some segment is still not offloaded after the
/// passes.
pub async fn offload_everything(cluster: &Cluster, logs: &[LogName]) -> Result<(), String> {
    cluster.crash_compactor().await;
    let (compactor, lease) = compactor(cluster, false).await;
    let mut waiting = Vec::new();
    for _ in 0..10 {
        let report = compactor.pass().await.map_err(|e| e.to_string());
        waiting.clear();
        for log in logs {
            let (segments, _) = cluster
                .manifest
                .segments(log)
                .await
                .map_err(|e| e.to_string())?;
            waiting.extend(
                segments
                    .iter()
                    .filter(|s| s.state != SegmentState::Offloaded && s.last_entry_id.is_some())
                    .map(|s| format!("{log} segment {} ({:?})", s.segment_id, s.state)),
            );
        }
        if waiting.is_empty() {
            let _ = cluster.meta.lease_revoke(lease).await;
            return Ok(());
        }
        cluster.trace(format!("offload pass {report:?}, waiting for {waiting:?}"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!("segments never offloaded: {waiting:?}"))
}

/// Every offloaded segment's Parquet rows, `(offset, payload)` in row
/// order, against the records the final read found in that segment.
/// Returns the violations and how many files were compared.
pub async fn check_parquet(
    cluster: &Cluster,
    finals: &BTreeMap<String, Vec<FinalSegment>>,
) -> (Vec<String>, usize) {
    let mut violations = Vec::new();
    let mut compared = 0;
    for (log, segments) in finals {
        // `name#log_id`: the final read is of the live incarnation.
        let name: LogName = log
            .split('#')
            .next()
            .and_then(|name| name.parse().ok())
            .expect("a log name of the run");
        let Ok((metas, _)) = cluster.manifest.segments(&name).await else {
            violations.push(format!("parquet: {log}: segments unreadable"));
            continue;
        };
        for segment in segments {
            let read: Vec<(u64, String)> = segment
                .entries
                .iter()
                .flat_map(|(first, payloads)| {
                    payloads
                        .iter()
                        .enumerate()
                        .map(move |(i, p)| (first + i as u64, p.clone()))
                })
                .collect();
            let meta = metas.iter().find(|m| m.segment_id == segment.segment_id);
            let object = meta.and_then(|m| m.object.clone());
            // A merged object holds its neighbours' rows too.
            let own = meta.map_or(0..u64::MAX, |m| {
                m.start_offset..m.end_offset.unwrap_or(u64::MAX)
            });
            let Some(object) = object else {
                if !read.is_empty() {
                    violations.push(format!(
                        "parquet: {log} segment {}: not offloaded",
                        segment.segment_id
                    ));
                }
                continue;
            };
            let path = object_store::path::Path::from(object.key.as_str());
            let rows = match cluster.objects.store.get(&path).await {
                Ok(got) => match got.bytes().await {
                    Ok(bytes) => segment_file::decode_file(bytes).map_err(|e| e.to_string()),
                    Err(err) => Err(err.to_string()),
                },
                Err(err) => Err(err.to_string()),
            };
            let rows: Vec<(u64, String)> = match rows {
                Ok(rows) => rows
                    .into_iter()
                    .filter(|r| own.contains(&r.offset))
                    .map(|r| {
                        let payload = String::from_utf8_lossy(&r.record.payload).into_owned();
                        (r.offset, payload)
                    })
                    .collect(),
                Err(err) => {
                    violations.push(format!(
                        "parquet: {log} segment {}: {}: {err}",
                        segment.segment_id, object.key
                    ));
                    continue;
                }
            };
            compared += 1;
            if rows != read {
                violations.push(format!(
                    "parquet: {log} segment {}: the file's {} rows differ from the {} records \
                     read from the cache nodes (first difference at row {})",
                    segment.segment_id,
                    rows.len(),
                    read.len(),
                    rows.iter().zip(&read).take_while(|(a, b)| a == b).count()
                ));
            }
        }
    }
    (violations, compared)
}
