//! The nemesis: every few hundred simulated milliseconds it picks a fault
//! (by the seed) and applies it, each undone after a random while on its
//! own task, so faults overlap. Its fault model keeps every acknowledged
//! entry recoverable: cache nodes lose only what they had not synced, and
//! at most one node's journal is damaged by a bit flip in a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use dlog_wire::names::LogName;

use crate::cluster::Cluster;

/// Runs faults until `until`.
pub async fn run(cluster: Arc<Cluster>, logs: Vec<LogName>, until: Instant, flip_newest: bool) {
    let flipped = Arc::new(AtomicBool::new(false));
    let rng = cluster.rng.clone();
    let mut faults = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100) + rng.delay(Duration::from_millis(1500)))
            .await;
        let cluster = cluster.clone();
        let rng = rng.clone();
        let flipped = flipped.clone();
        let fault = rng.pick(10);
        let logs = logs.clone();
        faults.push(tokio::spawn(async move {
            match fault {
                // A cache node loses power, or is killed, and comes back,
                // maybe with a flipped bit (in its newest file too after a
                // kill, which keeps the opener behind its last batch).
                0 | 1 => {
                    let i = rng.pick(cluster.cache_count());
                    let power_loss = rng.chance(0.5);
                    cluster.crash_cache(i, power_loss).await;
                    tokio::time::sleep(rng.delay(Duration::from_secs(4))).await;
                    if rng.chance(0.3) && !flipped.swap(true, Ordering::SeqCst) {
                        cluster.flip_bit(i, flip_newest || !power_loss);
                    }
                    cluster.start_cache_waiting(i).await;
                }
                // A cache node's disk starts failing its syncs; it is
                // restarted a while later.
                2 => {
                    let i = rng.pick(cluster.cache_count());
                    if cluster.cache_up(i) {
                        cluster.fail_syncs(i);
                        tokio::time::sleep(rng.delay(Duration::from_secs(3))).await;
                        cluster.crash_cache(i, true).await;
                        cluster.start_cache_waiting(i).await;
                    }
                }
                // An ingest node dies and restarts.
                3 => {
                    let i = rng.pick(cluster.ingest_count());
                    cluster.crash_ingest(i).await;
                    tokio::time::sleep(rng.delay(Duration::from_secs(3))).await;
                    cluster.start_ingest(i, true).await;
                }
                // An ingest node pauses past its lease, wakes up, then stops.
                4 => {
                    let i = rng.pick(cluster.ingest_count());
                    let pause = rng.delay(Duration::from_secs(5));
                    let notice = rng.delay(Duration::from_secs(2));
                    cluster.pause_ingest(i, pause, notice).await;
                    if cluster.ingest(i).is_none() {
                        cluster.start_ingest(i, true).await;
                    }
                }
                // A partition between an ingest node and some cache nodes.
                5 => {
                    let i = rng.pick(cluster.ingest_count());
                    let party = format!("ingest-{i}");
                    for node in 0..cluster.cache_count() {
                        if rng.chance(0.5) {
                            cluster.net.cut(&party, &format!("cache-{node}"));
                        }
                    }
                    cluster.trace(format!("partition around {party}"));
                    tokio::time::sleep(rng.delay(Duration::from_secs(4))).await;
                    cluster.net.heal_party(&party);
                    cluster.trace(format!("partition around {party} healed"));
                }
                // An ingest node cannot reach the manifest for a while.
                6 => {
                    let i = rng.pick(cluster.ingest_count());
                    cluster
                        .cut_manifest(i, rng.delay(Duration::from_secs(3)))
                        .await;
                }
                // The compactor dies wherever it is in its pass, and comes
                // back a while later.
                7 => {
                    cluster.crash_compactor().await;
                    tokio::time::sleep(rng.delay(Duration::from_secs(3))).await;
                    cluster.start_compactor().await;
                }
                // Reads from a cache node fail for a while (bad sectors).
                8 => {
                    let i = rng.pick(cluster.cache_count());
                    let node = format!("cache-{i}");
                    cluster.net.bad_reads(&node);
                    cluster.trace(format!("{node}: reads fail"));
                    tokio::time::sleep(rng.delay(Duration::from_secs(5))).await;
                    cluster.net.good_reads(&node);
                    cluster.trace(format!("{node}: reads work again"));
                }
                // A log is deleted while it is written and read, and
                // created again once the compactor purged it.
                9 => {
                    if rng.chance(0.4) {
                        let log = &logs[rng.pick(logs.len())];
                        cluster.recreate_log(log).await;
                    }
                }
                // A burst of slow calls.
                _ => {
                    let before = *cluster.net.faults.lock().unwrap();
                    let mut slow = before;
                    // Sometimes past the 5 s deadlines of recovery's calls.
                    slow.max_delay = if rng.chance(0.25) {
                        Duration::from_millis(3_000 + rng.below(6_000))
                    } else {
                        Duration::from_millis(200 + rng.below(800))
                    };
                    *cluster.net.faults.lock().unwrap() = slow;
                    cluster.trace(format!("slow network: {slow:?}"));
                    tokio::time::sleep(rng.delay(Duration::from_secs(2))).await;
                    *cluster.net.faults.lock().unwrap() = before;
                }
            }
        }));
    }
    for fault in faults {
        fault.await.expect("a fault task panicked");
    }
}

/// Undoes every fault: all cache nodes up, the network whole and quiet.
pub async fn heal(cluster: &Cluster) {
    cluster.net.heal();
    {
        let mut faults = cluster.net.faults.lock().unwrap();
        faults.error_rate = 0.0;
        faults.max_delay = Duration::from_millis(1);
    }
    for i in 0..cluster.cache_count() {
        cluster.start_cache_waiting(i).await;
    }
    cluster.trace("healed".into());
}
