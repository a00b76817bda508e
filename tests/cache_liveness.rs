//! Cache nodes free what the manifest no longer needs, come back into use
//! as soon as they are back, and nodes that lose their lease stop at once.
//!
//! * A node that was down while the compactor dropped an offloaded segment
//!   frees its copy after it restarts (reconciliation against the manifest).
//! * A node frees the open segment of a log deleted under it.
//! * Two of three cache nodes killed and restarted within seconds: appends
//!   resume right after they re-register, not after a fixed suspicion time.
//! * A node frozen past its lease (SIGSTOP) with an open `follow` read ends
//!   the stream with a retryable status and exits once it wakes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, LEASE_TTL_SECS};
use distributedlog::Client;
use dlog_meta::manifest::{Manifest, NamespaceConfig, Replication, SegmentState};
use dlog_wire::names::LogName;
use dlog_wire::proto::cache_service_client::CacheServiceClient;
use dlog_wire::proto::read_service_client::ReadServiceClient;
use dlog_wire::proto::{self as pb, ReadEntriesRequest, SegmentRef};
use dlog_wire::record::Record;

/// Logs of a cluster with one cache node replicate 1/1/1.
async fn one_replica(manifest: &Manifest) {
    let config = NamespaceConfig {
        replication: Replication::SINGLE,
        ..NamespaceConfig::default()
    };
    manifest.put_default_namespace(&config).await.unwrap();
}

fn endpoints(cluster: &Cluster) -> String {
    cluster
        .ingests
        .iter()
        .map(|n| n.address())
        .collect::<Vec<_>>()
        .join(",")
}

async fn append_some(client: &Client, log: &str, count: usize) {
    for i in 0..count {
        let mut tries = 0;
        while let Err(err) = client
            .append(log, vec![Record::new(format!("record {i}"))], None)
            .await
        {
            tries += 1;
            assert!(tries < 50, "append to {log} keeps failing: {err}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What a cache node says about a segment, read up to `last_entry`:
/// `Ok(entries)`, or the error status.
async fn cache_read(
    cluster: &Cluster,
    address: String,
    reference: &SegmentRef,
    last_entry: u64,
) -> Result<usize, tonic::Status> {
    let channel = cluster
        .try_channel(&address)
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let mut client = CacheServiceClient::new(channel);
    let mut stream = client
        .read_entries(ReadEntriesRequest {
            segment: Some(reference.clone()),
            from_entry: 0,
            max_entries: 0,
            fence_epoch: None,
            sealed_last_entry: Some(last_entry),
        })
        .await?
        .into_inner();
    let mut entries = 0;
    while stream.message().await?.is_some() {
        entries += 1;
    }
    Ok(entries)
}

/// Waits until the node answers that it dropped the segment.
async fn wait_dropped(
    cluster: &Cluster,
    address: String,
    reference: &SegmentRef,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        match cache_read(cluster, address.clone(), reference, 0).await {
            Err(status) if status.message().contains("dropped") => return,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "segment {}/{} still held after {within:?}: last answer {last:?}",
        reference.log_id, reference.segment_id
    );
}

async fn segment_ref(manifest: &Manifest, log: &str, segment_id: u64) -> SegmentRef {
    let name: LogName = log.parse().unwrap();
    SegmentRef {
        log: log.to_owned(),
        log_id: manifest.log(&name).await.unwrap().log_id,
        segment_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_during_the_cache_drop_frees_the_segment_after_it_restarts() {
    let Some(mut cluster) = Cluster::start_with(3, 1, 1, 0).await else {
        return;
    };
    let client = cluster.client(endpoints(&cluster));
    let log = "gc/down";
    client.create_log(log).await.unwrap();
    append_some(&client, log, 20).await;
    let name: LogName = log.parse().unwrap();
    let (segments, _) = cluster.manifest.segments(&name).await.unwrap();
    let first = segments[0].clone();
    assert!(first.ensemble.contains(&"cache-3".to_owned()));
    let reference = segment_ref(&cluster.manifest, log, first.segment_id).await;
    assert_eq!(
        cache_read(&cluster, cluster.caches[2].address(), &reference, 0)
            .await
            .unwrap(),
        1,
        "cache-3 holds the segment"
    );

    // cache-3 goes down past its lease; meanwhile the segment is sealed,
    // offloaded and dropped from the nodes that are up.
    cluster.caches[2].kill();
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS * 2 + 1)).await;
    client.seal(log).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let segment = cluster
            .manifest
            .segment(&name, first.segment_id)
            .await
            .unwrap()
            .value;
        if segment.state == SegmentState::Offloaded && segment.cache_dropped {
            break;
        }
        assert!(Instant::now() < deadline, "never dropped: {segment:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    cluster.caches[2].start();
    wait_dropped(
        &cluster,
        cluster.caches[2].address(),
        &reference,
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_deleted_while_its_segment_is_open_is_freed_on_the_cache_node() {
    let Some(mut cluster) = Cluster::start(1, 1).await else {
        return;
    };
    // Reconcile every second: the test checks the periodic pass, not the
    // one at start.
    cluster.caches[0].kill();
    cluster.caches[0].set_env("DLOG_CACHE__RECONCILE_INTERVAL", "1s");
    cluster.caches[0].start();
    one_replica(&cluster.manifest).await;
    let client = cluster.client(endpoints(&cluster));
    let log = "gc/deleted";
    client.create_log(log).await.unwrap();
    append_some(&client, log, 10).await;
    let name: LogName = log.parse().unwrap();
    let (segments, _) = cluster.manifest.segments(&name).await.unwrap();
    assert_eq!(segments.last().unwrap().state, SegmentState::Open);
    let reference = segment_ref(&cluster.manifest, log, segments.last().unwrap().segment_id).await;

    // Deleted behind its owner's back (through another node): nothing
    // seals, offloads or purges the open segment.
    cluster.manifest.delete_log(&name).await.unwrap();
    wait_dropped(
        &cluster,
        cluster.caches[0].address(),
        &reference,
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_cache_nodes_take_writes_again_at_once() {
    let Some(mut cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let client = Arc::new(cluster.client(endpoints(&cluster)));
    let log = "avail/a";
    client.create_log(log).await.unwrap();
    append_some(&client, log, 5).await;

    // A writer appends all along and notes when each append was answered.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if client
                    .append(log, vec![Record::new("r")], None)
                    .await
                    .is_ok()
                {
                    acked.push(Instant::now());
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killed = Instant::now();
    cluster.caches[0].kill();
    cluster.caches[1].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.caches[0].start();
    cluster.caches[1].start();
    let restarted = Instant::now();

    // Appends must resume soon after the nodes are back: well within the
    // old fixed 30 s of suspicion.
    let bound = Duration::from_secs(15);
    tokio::time::sleep(bound.saturating_sub(killed.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    let before = acked.iter().filter(|t| **t < killed).count();
    // (An append in flight when the writer stopped may be answered later.)
    let resumed = acked
        .iter()
        .find(|t| **t > restarted && **t - killed < bound);
    assert!(before > 0, "no appends before the kill");
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "no append acknowledged within {bound:?} of killing two cache nodes (back after {:?})",
            restarted - killed
        )
    });
    eprintln!(
        "appends resumed {:?} after the kill; nodes back after {:?}",
        *resumed - killed,
        restarted - killed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_loses_its_lease_ends_its_streams_and_exits() {
    let Some(mut cluster) = Cluster::start_with(1, 1, 0, 1).await else {
        return;
    };
    one_replica(&cluster.manifest).await;
    let client = cluster.client(endpoints(&cluster));
    let log = "avail/follow";
    client.create_log(log).await.unwrap();
    append_some(&client, log, 3).await;

    let mut reader = ReadServiceClient::new(cluster.channel(&cluster.readers[0].address()).await);
    let mut stream = reader
        .read(pb::ReadRequest {
            log: log.to_owned(),
            start: Some(pb::read_request::Start::Offset(0)),
            limit: None,
            follow: true,
            log_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("records");
    assert!(!first.records.is_empty());

    cluster.readers[0].process().stop();
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS * 2 + 2)).await;
    cluster.readers[0].process().cont();
    let woke = Instant::now();

    // The follow stream ends with a status the SDK retries elsewhere.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the follow stream stays open after the node lost its lease");
    let status = ended.expect("the stream ends with an error status, not a clean end");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let stream_ended = woke.elapsed();
    // It exits within about a second of noticing; 2 s leaves room for a
    // loaded machine.
    assert!(
        cluster.readers[0].wait_exit(Duration::from_secs(2)).await,
        "the node still runs {:?} after it woke without its lease: {}",
        woke.elapsed(),
        cluster.readers[0].log_text()
    );
    eprintln!(
        "after waking: stream ended in {stream_ended:?}, process gone in {:?}",
        woke.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_log_whose_owner_died_with_an_open_segment_is_purged() {
    let Some(mut cluster) = Cluster::start_with(1, 1, 1, 0).await else {
        return;
    };
    one_replica(&cluster.manifest).await;
    let client = cluster.client(endpoints(&cluster));
    let log = "gc/orphaned";
    client.create_log(log).await.unwrap();
    append_some(&client, log, 10).await;
    let name: LogName = log.parse().unwrap();
    let (segments, _) = cluster.manifest.segments(&name).await.unwrap();
    let reference = segment_ref(&cluster.manifest, log, segments.last().unwrap().segment_id).await;

    // The owner dies with the segment open; the log is deleted before
    // anyone recovers it, so no owner will ever seal it.
    cluster.ingests[0].kill();
    cluster.manifest.delete_log(&name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(LEASE_TTL_SECS * 2 + 15);
    while cluster
        .manifest
        .log_metas("gc/")
        .await
        .unwrap()
        .iter()
        .any(|(n, _)| *n == name)
    {
        assert!(
            Instant::now() < deadline,
            "the deleted log is never purged: {:?}",
            cluster.manifest.segments(&name).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_dropped(
        &cluster,
        cluster.caches[0].address(),
        &reference,
        Duration::from_secs(5),
    )
    .await;
}
