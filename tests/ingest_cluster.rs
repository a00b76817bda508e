//! The write path end to end with real processes: a real etcd, three cache
//! nodes and two ingest nodes (`dlog serve`). Owner failover by `kill -9`,
//! a frozen owner (`SIGSTOP` past its lease) fenced out, a cache node killed
//! mid-stream, redirects, and bad inputs that change nothing.
//!
//! The checker reads each log back from the cache nodes and reports lost,
//! duplicated, reordered or unknown records: every acknowledged record must
//! be there exactly once, at its acknowledged offset, offsets dense.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, LEASE_TTL_SECS};
use distributedlog::Client;
use dlog_meta::manifest::{SegmentMeta, SegmentState};
use dlog_wire::ids::{Epoch, LogId};
use dlog_wire::names::LogName;
use dlog_wire::proto::cache_service_client::CacheServiceClient;
use dlog_wire::proto::log_service_client::LogServiceClient;
use dlog_wire::proto::{self as pb, FenceRequest, SegmentRef};
use dlog_wire::record::Record;

/// What a writer learned: acknowledged records by offset, and payloads
/// whose fate it does not know (the call failed; they may or may not be in).
#[derive(Debug, Default)]
struct Written {
    acked: BTreeMap<u64, Bytes>,
    in_doubt: Vec<Bytes>,
}

/// Shared with a running writer: `stop` ends it; `acked_end` is one past
/// the highest offset acknowledged so far.
#[derive(Debug, Clone, Default)]
struct Control {
    stop: Arc<AtomicBool>,
    acked_end: Arc<AtomicU64>,
}

/// Appends one record at a time with `expected_offset` (so client retries
/// cannot duplicate) until `control.stop`.
async fn write_until(
    client: Arc<Client>,
    log: &'static str,
    prefix: &'static str,
    control: Control,
) -> Written {
    let mut written = Written::default();
    let mut next = common::next_offset(&client, log, 100).await;
    let mut i = 0u64;
    while !control.stop.load(Ordering::Relaxed) {
        let payload = Bytes::from(format!("{prefix}-{i}"));
        i += 1;
        match client
            .append(log, vec![Record::new(payload.clone())], Some(next))
            .await
        {
            Ok(appended) => {
                assert_eq!(
                    appended.first_offset, next,
                    "an append lands where it was expected"
                );
                written.acked.insert(next, payload);
                next += 1;
                control.acked_end.fetch_max(next, Ordering::Relaxed);
            }
            Err(err) => {
                // Failed (maybe after landing): learn where the log is now.
                written.in_doubt.push(payload);
                tracing::debug!("append failed: {err}");
                next = common::next_offset(&client, log, 100).await;
            }
        }
    }
    written
}

/// Lost, duplicated, reordered, unknown: the checker.
fn check(stored: &BTreeMap<u64, Bytes>, writers: &[&Written]) {
    let offsets: Vec<u64> = stored.keys().copied().collect();
    assert_eq!(
        offsets,
        (0..stored.len() as u64).collect::<Vec<_>>(),
        "offsets are dense from 0"
    );
    let mut seen = HashSet::new();
    for payload in stored.values() {
        assert!(
            seen.insert(payload.clone()),
            "duplicated record {payload:?}"
        );
    }
    let mut known = HashSet::new();
    for written in writers {
        for (offset, payload) in &written.acked {
            assert_eq!(
                stored.get(offset),
                Some(payload),
                "acknowledged record lost or moved: offset {offset}"
            );
            known.insert(payload.clone());
        }
        known.extend(written.in_doubt.iter().cloned());
    }
    for (offset, payload) in stored {
        assert!(
            known.contains(payload),
            "record nobody wrote at {offset}: {payload:?}"
        );
    }
}

fn endpoints(cluster: &Cluster) -> String {
    cluster
        .ingests
        .iter()
        .map(|n| n.address())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_killed_mid_stream_loses_no_acknowledged_record() {
    let Some(mut cluster) = Cluster::start(3, 2).await else {
        return;
    };
    let client = Arc::new(cluster.client(endpoints(&cluster)));
    client.create_log("failover/a").await.unwrap();
    let control = Control::default();
    let writer = tokio::spawn(write_until(
        client.clone(),
        "failover/a",
        "w",
        control.clone(),
    ));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let owner = cluster
        .owner_of("failover/a")
        .await
        .expect("someone owns the log");
    let before_kill = cluster
        .manifest
        .epoch(&"failover/a".parse().unwrap())
        .await
        .unwrap();
    cluster.ingests[owner].kill();
    // The owner is dead: acknowledgements past this point (but for the one
    // append that may have been in flight, at `acked_at_kill` itself) come
    // from the new owner.
    let acked_at_kill = control.acked_end.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS * 2 + 3)).await;
    control.stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(
        acked_at_kill >= 10,
        "too few appends before the kill: {acked_at_kill}"
    );
    let acked_after_kill = written.acked.range(acked_at_kill + 1..).count();
    assert!(
        acked_after_kill > 0,
        "no append acknowledged past offset {acked_at_kill}, where the log was when its \
         owner was killed: writes did not continue after failover"
    );

    let new_owner = cluster
        .owner_of("failover/a")
        .await
        .expect("the survivor owns the log");
    assert_ne!(new_owner, owner);
    let after = cluster
        .manifest
        .epoch(&"failover/a".parse().unwrap())
        .await
        .unwrap();
    assert!(after > before_kill, "the new owner has a newer epoch");

    common::seal(&client, "failover/a", 50).await;
    let stored = cluster.read_back("failover/a").await;
    check(&stored, &[&written]);
    eprintln!(
        "failover: {} acknowledged ({acked_after_kill} past offset {acked_at_kill} at the \
         kill), {} in doubt, {} stored, epoch {before_kill} -> {after}",
        written.acked.len(),
        written.in_doubt.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_owner_past_its_lease_is_fenced_out() {
    let Some(mut cluster) = Cluster::start(3, 2).await else {
        return;
    };
    let client = Arc::new(cluster.client(endpoints(&cluster)));
    client.create_log("freeze/a").await.unwrap();
    let control = Control::default();
    let writer = tokio::spawn(write_until(
        client.clone(),
        "freeze/a",
        "w",
        control.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let frozen = cluster.owner_of("freeze/a").await.unwrap();
    let epoch_at_freeze = cluster
        .manifest
        .epoch(&"freeze/a".parse().unwrap())
        .await
        .unwrap();
    cluster.ingests[frozen].process().stop();
    let acked_at_freeze = control.acked_end.load(Ordering::Relaxed);
    // The client times out on the frozen node (5 s), moves to the other,
    // which takes over once the frozen node's lease expired.
    let mut survivor = None;
    for _ in 0..300 {
        survivor = cluster.owner_of("freeze/a").await.filter(|o| *o != frozen);
        if survivor.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let survivor = survivor.expect("another node took over");
    // Let the survivor write for a while before the frozen node wakes: at
    // least one acknowledged append past the freeze (the client first
    // times out on the frozen node, then finds the survivor), then 1 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while control.acked_end.load(Ordering::Relaxed) <= acked_at_freeze
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Wake the frozen owner and write to it directly, without redirects,
    // until it stops: a node that finds its lease lost shuts itself down.
    cluster.ingests[frozen].process().cont();
    // It may be gone before the first probe connects (it exits within a
    // second of finding its lease lost): then there is nothing to probe,
    // and the assertions below still require that it exited for that
    // reason and that nothing it was sent is in the log.
    let connected = cluster
        .try_channel(&cluster.ingests[frozen].address())
        .await
        .map(LogServiceClient::new)
        .map_err(|err| err.to_string());
    let mut probes = Vec::new();
    // What the woken node answered, in order: (code, message).
    let mut answers: Vec<(tonic::Code, String)> = Vec::new();
    let rounds = match &connected {
        Ok(_) => 20,
        Err(err) => {
            eprintln!("the woken node was gone before the first probe: {err}");
            0
        }
    };
    for i in 0..rounds {
        let Ok(mut direct) = connected.clone() else {
            break;
        };
        let payload = Bytes::from(format!("zombie-{i}"));
        probes.push(payload.clone());
        let status = direct
            .append(pb::AppendRequest {
                log: "freeze/a".into(),
                records: vec![Record::new(payload).into()],
                expected_offset: None,
                log_id: None,
            })
            .await
            .expect_err("the fenced owner acknowledged a write");
        answers.push((status.code(), status.message().to_owned()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    control.stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    eprintln!("freeze: the woken owner answered {answers:?}");
    assert!(
        cluster.ingests[frozen]
            .wait_exit(Duration::from_secs(20))
            .await,
        "the node that lost its lease keeps running"
    );
    assert!(
        cluster.ingests[frozen]
            .log_text()
            .contains("lost the node lease; stopping"),
        "the woken node stopped for another reason:\n{}",
        cluster.ingests[frozen].log_text()
    );
    // While it still answered, it refused with one of these; then its port
    // closed (connection refused), and never did it answer again.
    let fenced_out = format!("log freeze/a: the owner at epoch {epoch_at_freeze} is fenced out (");
    let refusals = [
        "the ingest node is shutting down".to_owned(),
        format!(
            "log freeze/a is owned by node {} at {}",
            cluster.ingests[survivor].id,
            cluster.ingests[survivor].address()
        ),
    ];
    // The node going away: its connection cut under a request (it cuts
    // connections 0.6 s after losing its lease; the client sees a transport
    // error, or an HTTP/2 protocol error when the cut lands mid-frame), then
    // refused.
    let gone = |message: &str| {
        message == "transport error"
            || message == "tcp connect error"
            || message.starts_with("h2 protocol error")
    };
    let answered = answers
        .iter()
        .take_while(|(_, message)| !gone(message))
        .count();
    for (code, message) in &answers[..answered] {
        assert!(
            *code == tonic::Code::Unavailable
                && (refusals.contains(message) || message.starts_with(&fenced_out)),
            "unexpected refusal: {code:?} {message:?}"
        );
    }
    for (code, message) in &answers[answered..] {
        assert!(
            gone(message),
            "the stopped node answered again: {code:?} {message:?}"
        );
    }
    let acked_after_freeze = written.acked.range(acked_at_freeze + 1..).count();
    assert!(
        acked_after_freeze > 0,
        "no append acknowledged past offset {acked_at_freeze}, where the log was when its \
         owner froze: writes did not continue on the survivor"
    );

    common::seal(&client, "freeze/a", 50).await;
    let stored = cluster.read_back("freeze/a").await;
    for probe in &probes {
        assert!(
            !stored.values().any(|p| p == probe),
            "a write of the fenced owner got in"
        );
    }
    check(&stored, &[&written]);
    eprintln!(
        "freeze: {} acknowledged ({acked_after_freeze} past offset {acked_at_freeze} at the \
         freeze), {} in doubt, {} stored",
        written.acked.len(),
        written.in_doubt.len(),
        stored.len()
    );
}

/// What a new owner does to the old one, without a new owner process: move
/// the log's epoch up in the manifest, then fence the open segment at that
/// epoch on every node of its ensemble. The old owner, still alive and
/// still registered as owner, must then fail the next append (its add is
/// refused by the cache nodes' fence, its seal by the manifest's), and
/// nothing it tried may be readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_fenced_on_its_ensemble_cannot_append() {
    let Some(cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let log = "fence/a";
    let name: LogName = log.parse().unwrap();
    let client = cluster.client(cluster.ingests[0].address());
    client.create_log(log).await.unwrap();
    let mut written = Written::default();
    for i in 0..10u64 {
        let payload = Bytes::from(format!("before-{i}"));
        client
            .append(log, vec![Record::new(payload.clone())], Some(i))
            .await
            .unwrap();
        written.acked.insert(i, payload);
    }

    let (segments, _) = cluster.manifest.segments(&name).await.unwrap();
    let open = segments.last().unwrap();
    assert_eq!(open.state, SegmentState::Open);
    let log_id = cluster.manifest.log(&name).await.unwrap().log_id;
    let epoch = cluster.manifest.epoch(&name).await.unwrap();
    let newer = cluster
        .manifest
        .bump_epoch(&name, LogId(log_id), Epoch(epoch))
        .await
        .unwrap()
        .epoch;
    let reference = SegmentRef {
        log: log.to_owned(),
        log_id,
        segment_id: open.segment_id,
    };
    for node in &open.ensemble {
        let cache = cluster.caches.iter().find(|c| &c.id == node).unwrap();
        let mut cache = CacheServiceClient::new(cluster.channel(&cache.address()).await);
        cache
            .fence(FenceRequest {
                segment: Some(reference.clone()),
                epoch: newer,
            })
            .await
            .unwrap_or_else(|err| panic!("fence {node}: {err}"));
    }

    // Straight to the owner: the SDK would retry, and a retry re-acquires
    // the log at a newer epoch, legitimately.
    let mut owner = LogServiceClient::new(cluster.channel(&cluster.ingests[0].address()).await);
    let status = owner
        .append(pb::AppendRequest {
            log: log.into(),
            records: vec![Record::new("zombie").into()],
            expected_offset: Some(10),
            log_id: None,
        })
        .await
        .expect_err("an owner fenced on every replica acknowledged an append");
    assert_eq!(
        (status.code(), status.message()),
        (
            tonic::Code::Unavailable,
            format!(
                "log {log}: the owner at epoch {epoch} is fenced out \
                 (epoch {epoch} of log {log} is stale: the current epoch is {newer}); retry"
            )
            .as_str()
        )
    );
    // The refusal came from the cache nodes' fence.
    let refused = format!(
        "segment {log_id}/{} is fenced at epoch {newer}: epoch {epoch} refused",
        open.segment_id
    );
    let node_log = cluster.ingests[0].log_text();
    assert!(
        node_log.contains(&refused),
        "the owner's log does not show the cache nodes refusing its add ({refused}):\n{node_log}"
    );

    // A new acquisition (the SDK's retry) recovers the log: the zombie
    // record is nowhere.
    common::seal(&client, log, 50).await;
    let stored = cluster.read_back(log).await;
    assert_eq!(stored, written.acked, "nothing new is readable");
    check(&stored, &[&written]);
    assert_eq!(client.get_log(log).await.unwrap().next_offset, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_node_killed_mid_stream_rolls_the_segment() {
    let Some(mut cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let client = Arc::new(cluster.client(endpoints(&cluster)));
    client.create_log("cachefail/a").await.unwrap();
    let control = Control::default();
    let writer = tokio::spawn(write_until(
        client.clone(),
        "cachefail/a",
        "w",
        control.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.caches[0].kill();
    let acked_at_kill = control.acked_end.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    control.stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();

    let info = client.get_log("cachefail/a").await.unwrap();
    let acked_after_kill = written.acked.range(acked_at_kill + 1..).count();
    assert!(
        acked_after_kill >= 10,
        "appends continued past offset {acked_at_kill}, where the log was when the cache \
         node was killed: {acked_after_kill} acknowledged"
    );
    assert!(
        info.segments.len() >= 2,
        "the segment rolled: {:?}",
        info.segments
    );
    assert_eq!(info.segments[0].state, distributedlog::SegmentState::Sealed);
    let last = info.segments.last().unwrap();
    assert!(
        !last.ensemble.contains(&"cache-1".to_owned()),
        "the new ensemble avoids the dead node"
    );

    common::seal(&client, "cachefail/a", 50).await;
    let stored = cluster.read_back("cachefail/a").await;
    check(&stored, &[&written]);
    eprintln!(
        "cache failure: {} acknowledged, {} segments, {} stored",
        written.acked.len(),
        info.segments.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_and_bad_inputs() {
    let Some(cluster) = Cluster::start(3, 2).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    client.create_log("r/a").await.unwrap();
    let first = client
        .append("r/a", vec![Record::new("x")], None)
        .await
        .unwrap();
    assert_eq!(first.first_offset, 0);
    let owner = cluster.owner_of("r/a").await.unwrap();
    let other = 1 - owner;

    // The other node redirects, with the owner's address in metadata.
    let mut raw_other =
        LogServiceClient::new(cluster.channel(&cluster.ingests[other].address()).await);
    let status = raw_other
        .append(pb::AppendRequest {
            log: "r/a".into(),
            records: vec![Record::new("y").into()],
            expected_offset: None,
            log_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get(dlog_wire::metadata::OWNER)
            .unwrap()
            .to_str()
            .unwrap(),
        cluster.ingests[owner].address()
    );
    // A client that only knows the other node follows the redirect.
    let via_other = cluster.client(cluster.ingests[other].address());
    let appended = via_other
        .append("r/a", vec![Record::new("z")], None)
        .await
        .unwrap();
    assert_eq!(appended.first_offset, 1);

    // Bad inputs: each refused with its precise error, nothing changed.
    let mut raw = LogServiceClient::new(cluster.channel(&cluster.ingests[owner].address()).await);
    let append = |log: &str, records: Vec<Record>, expected_offset| pb::AppendRequest {
        log: log.into(),
        records: records.into_iter().map(Into::into).collect(),
        expected_offset,
        log_id: None,
    };
    let with_txid = |txid| Record {
        txid: Some(txid),
        ..Record::new("t")
    };
    raw.append(append("r/a", vec![with_txid(10)], None))
        .await
        .unwrap();
    let next = 3;

    let cases: Vec<(pb::AppendRequest, tonic::Code, &str)> = vec![
        (
            append("r/missing", vec![Record::new("x")], None),
            tonic::Code::NotFound,
            "log r/missing not found",
        ),
        (
            append("no-slash", vec![Record::new("x")], None),
            tonic::Code::InvalidArgument,
            "invalid log name \"no-slash\": expected NS/LOG",
        ),
        (
            append("r/a", vec![Record::new(vec![0u8; 1024 * 1024 + 1])], None),
            tonic::Code::InvalidArgument,
            "record 0 is 1048577 bytes, more than the limit of 1048576",
        ),
        (
            append("r/a", vec![with_txid(9)], None),
            tonic::Code::InvalidArgument,
            "txid 9 is below txid 10 already in log r/a",
        ),
        (
            // Within the headers limit, but a name the entry format cannot
            // frame (it crashed the log's owner).
            append(
                "r/a",
                vec![Record {
                    headers: [("h".repeat(65_536), Bytes::new())].into(),
                    ..Record::new("x")
                }],
                None,
            ),
            tonic::Code::InvalidArgument,
            "header name 0 of record 0 is 65536 bytes, more than the limit of 65535",
        ),
        (
            // A null payload is empty.
            append(
                "r/a",
                vec![Record {
                    null_payload: true,
                    ..Record::new("x")
                }],
                None,
            ),
            tonic::Code::InvalidArgument,
            "record 0 has a null payload and 1 payload bytes: a null payload is empty",
        ),
        (
            append("r/a", vec![Record::new("x")], Some(1)),
            tonic::Code::FailedPrecondition,
            "expected offset 1 but the next offset of log r/a is 3",
        ),
    ];
    for (request, code, message) in cases {
        let status = raw.append(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
        assert_eq!(
            client.get_log("r/a").await.unwrap().next_offset,
            next,
            "nothing changed"
        );
    }
    let status = raw
        .append(append("r/a", vec![Record::new("x")], Some(1)))
        .await
        .unwrap_err();
    assert_eq!(
        status
            .metadata()
            .get(dlog_wire::metadata::NEXT_OFFSET)
            .unwrap()
            .to_str()
            .unwrap(),
        "3"
    );

    // End of stream: later appends refused, nothing changes.
    assert_eq!(client.mark_end_of_stream("r/a").await.unwrap(), next);
    let status = raw
        .append(append("r/a", vec![Record::new("late")], None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "log r/a ended at offset 3: appends are refused after end of stream"
    );
    let info = client.get_log("r/a").await.unwrap();
    assert!(info.end_of_stream);
    assert_eq!(info.next_offset, next);
}

/// Lease of the ingest nodes in the clean hand-over test.
const HANDOVER_LEASE_SECS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segments_roll_by_policy_and_a_clean_shutdown_hands_over() {
    let Some(mut cluster) = Cluster::start(3, 2).await else {
        return;
    };
    // Ingest nodes on a long lease: a hand-over that waited for the lease
    // would take 30 s, far past any scheduling delay of a busy machine.
    for node in &mut cluster.ingests {
        node.kill();
        node.start_with_env(&[("DLOG_NODE__LEASE_TTL", &format!("{HANDOVER_LEASE_SECS}s"))]);
    }
    let namespace = dlog_wire::names::Namespace::new("roll").unwrap();
    let mut config = dlog_meta::manifest::NamespaceConfig::default();
    config.roll.max_records = 50;
    cluster
        .manifest
        .put_namespace(&namespace, &config)
        .await
        .unwrap();
    let client = cluster.client(endpoints(&cluster));
    client.create_log("roll/a").await.unwrap();
    for batch in 0..20i64 {
        let records = (0..10)
            .map(|i| Record {
                txid: Some(batch * 10 + i),
                ..Record::new(format!("r{}", batch * 10 + i))
            })
            .collect();
        client.append("roll/a", records, None).await.unwrap();
    }
    let log: dlog_wire::names::LogName = "roll/a".parse().unwrap();
    let (segments, _) = cluster.manifest.segments(&log).await.unwrap();
    let sealed: Vec<_> = segments
        .iter()
        .filter(|s| s.state == dlog_meta::manifest::SegmentState::Sealed)
        .collect();
    assert!(sealed.len() >= 3, "rolled by record count: {segments:?}");
    for segment in &sealed {
        let records = segment.end_offset.unwrap() - segment.start_offset;
        assert_eq!(
            records, 50,
            "segment {} holds {records} records",
            segment.segment_id
        );
        let first_txid = segment.start_offset as i64;
        assert_eq!(
            (segment.min_txid, segment.max_txid),
            (Some(first_txid), Some(first_txid + 49))
        );
        assert!(segment.min_timestamp_ms.is_some() && segment.bytes > 0);
    }

    // SIGTERM: the owner seals and releases the log at once, no lease wait.
    let owner = cluster.owner_of("roll/a").await.unwrap();
    let status = cluster.ingests[owner]
        .process
        .take()
        .unwrap()
        .terminate()
        .unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(
        cluster.owner_of("roll/a").await,
        None,
        "ownership released on shutdown"
    );
    let (segments, _) = cluster.manifest.segments(&log).await.unwrap();
    assert!(
        segments
            .iter()
            .all(|s| s.state != dlog_meta::manifest::SegmentState::Open),
        "the open segment was sealed on shutdown"
    );
    let other = cluster.client(cluster.ingests[1 - owner].address());
    let started = std::time::Instant::now();
    let appended = other
        .append("roll/a", vec![Record::new("after")], None)
        .await
        .unwrap();
    assert_eq!(appended.first_offset, 200);
    assert!(
        started.elapsed() < Duration::from_secs(HANDOVER_LEASE_SECS / 2),
        "took {:?}: waited for the {HANDOVER_LEASE_SECS} s lease",
        started.elapsed()
    );
}

/// The services a node lists over gRPC reflection `$version` (`v1` or
/// `v1alpha`: the same messages, in two packages).
macro_rules! reflected_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let request = tonic_reflection::pb::$version::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new($channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match responses.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => panic!("expected a service list, got {other:?}"),
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_health_and_reflection() {
    let Some(cluster) = Cluster::start(1, 1).await else {
        return;
    };
    let address = cluster.ingests[0].address();
    let channel = cluster.channel(&address).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "dlog.v1.LogService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Reflection in both versions (tools that speak only v1alpha too).
    let listed = [
        ("v1", reflected_services!(v1, channel.clone())),
        ("v1alpha", reflected_services!(v1alpha, channel)),
    ];
    for (version, names) in listed {
        for service in [
            "dlog.v1.LogService",
            "dlog.v1.ReadService",
            "dlog.v1.CacheService",
        ] {
            assert!(
                names.contains(&service.to_owned()),
                "{service} missing from {names:?} (reflection {version})"
            );
        }
    }
}

/// Writes one sealed segment of `log` straight to the three cache nodes:
/// entries of two records each, as `copy(log_id, node, entry_id)` says
/// each node holds them, sealed at `end_offset`. No ingest node is involved.
async fn hand_written_segment(
    cluster: &Cluster,
    log: &str,
    entries: u64,
    end_offset: u64,
    copy: impl Fn(u64, usize, u64) -> Bytes,
) {
    let name: LogName = log.parse().unwrap();
    let log_id = cluster.manifest.create_log(&name).await.unwrap().log_id;
    let fence = cluster
        .manifest
        .bump_epoch(&name, LogId(log_id), Epoch(0))
        .await
        .unwrap();
    let epoch = fence.epoch;
    let ensemble: Vec<String> = cluster.caches.iter().map(|c| c.id.clone()).collect();
    let template = SegmentMeta::open(epoch, ensemble.clone(), 3, 3, 0);
    let segment = cluster
        .manifest
        .create_segment(&name, fence, template)
        .await
        .unwrap();
    assert_eq!(segment.segment_id, 1, "the log's first segment");
    let reference = SegmentRef {
        log: log.to_owned(),
        log_id,
        segment_id: segment.segment_id,
    };
    for (i, node) in cluster.caches.iter().enumerate() {
        let mut cache = CacheServiceClient::new(cluster.channel(&node.address()).await);
        let requests: Vec<pb::AddEntryRequest> = (0..entries)
            .map(|entry_id| pb::AddEntryRequest {
                segment: Some(reference.clone()),
                epoch,
                entry: copy(log_id, i, entry_id),
                lac: None,
            })
            .collect();
        let mut acks = cache
            .add_entries(futures::stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        for entry_id in 0..entries {
            let ack = acks.message().await.unwrap().expect("an ack per entry");
            assert_eq!(ack.entry_id, entry_id);
        }
    }
    let seal = dlog_meta::manifest::SealInfo {
        end_offset,
        last_entry_id: Some(entries - 1),
        ..Default::default()
    };
    cluster
        .manifest
        .seal_segment(&name, fence, segment.segment_id, &seal)
        .await
        .unwrap();
}

/// Entry `entry_id` of the first segment of the log with id `log_id`:
/// records `p<2k>` and `p<2k+1>`, the last byte of the second one's
/// payload replaced by `last`.
fn two_record_entry(log_id: u64, entry_id: u64, last: u8) -> Bytes {
    let record = |offset: u64| dlog_wire::codec::EntryRecord {
        timestamp_ms: 1_700_000_000_000,
        record: Record::new(Bytes::from(format!("p{offset}"))),
    };
    let first_offset = 2 * entry_id;
    let mut second = record(first_offset + 1);
    let mut payload = second.record.payload.to_vec();
    *payload.last_mut().unwrap() = last;
    second.record.payload = payload.into();
    dlog_wire::codec::encode_entry(
        &dlog_wire::codec::EntryHeader {
            log_id,
            segment_id: 1,
            entry_id,
            epoch: 1,
            first_offset,
            lac: entry_id.checked_sub(1),
            record_count: 2,
        },
        &[record(first_offset), second],
    )
}

/// The checker itself: `read_back` returns what every replica agrees on,
/// and fails on two valid copies of an entry that differ in one byte, and
/// on an entry that straddles the sealed end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_back_fails_on_diverging_replicas_and_straddled_seals() {
    use futures::FutureExt;
    let Some(cluster) = Cluster::start(3, 0).await else {
        return;
    };
    // The last byte of the second record of an entry, as written.
    let digit = |entry: u64| format!("p{}", 2 * entry + 1).into_bytes().pop().unwrap();
    let agreeing =
        |log_id: u64, _node: usize, entry: u64| two_record_entry(log_id, entry, digit(entry));
    hand_written_segment(&cluster, "check/agree", 3, 6, agreeing).await;
    hand_written_segment(&cluster, "check/diverge", 3, 6, |log_id, node, entry| {
        // cache-2's copy of entry 1: "p3" becomes "p4", CRC and all valid.
        let last = if (node, entry) == (1, 1) {
            b'4'
        } else {
            digit(entry)
        };
        two_record_entry(log_id, entry, last)
    })
    .await;
    // Three entries hold offsets 0..6, the seal says the log ends at 5.
    hand_written_segment(&cluster, "check/straddle", 3, 5, agreeing).await;

    let stored = cluster.read_back("check/agree").await;
    let expected: BTreeMap<u64, Bytes> = (0..6u64)
        .map(|o| (o, Bytes::from(format!("p{o}"))))
        .collect();
    assert_eq!(stored, expected, "agreeing replicas read back exactly");

    for (log, complaint) in [
        (
            "check/diverge",
            "replicas cache-1 and cache-2 hold different copies of entry 1",
        ),
        (
            "check/straddle",
            "entry 2 holds offsets 4..6, straddling the sealed end 5",
        ),
    ] {
        let outcome = std::panic::AssertUnwindSafe(cluster.read_back(log))
            .catch_unwind()
            .await;
        let message = match outcome {
            Ok(records) => panic!("read_back({log}) accepted it: {records:?}"),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default(),
        };
        assert!(
            message.contains(complaint),
            "read_back({log}) failed for another reason: {message}"
        );
        eprintln!("read_back({log}) refused: {message}");
    }
}

/// A node that starts draining (SIGTERM) reports `NOT_SERVING` for its
/// services and for itself at once, on the health watch clients and load
/// balancers follow, before it stops accepting work; then it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_as_soon_as_a_node_drains() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let Some(mut cluster) = Cluster::start(3, 1).await else {
        return;
    };
    // An owned log with an open segment: the drain has a seal to do.
    let client = cluster.client(cluster.ingests[0].address());
    client.create_log("drain/a").await.unwrap();
    client
        .append("drain/a", vec![Record::new("x")], None)
        .await
        .unwrap();
    let channel = cluster.channel(&cluster.ingests[0].address()).await;
    let mut health = HealthClient::new(channel);
    let mut watches = Vec::new();
    for service in ["dlog.v1.LogService", ""] {
        let mut watch = health
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().expect("a first status");
        assert_eq!(first.status, ServingStatus::Serving as i32, "{service:?}");
        watches.push((service, watch));
    }

    // `dlog status` asks every node's health.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["status", "--json"])
        .env("DLOG_ENDPOINT", cluster.ingests[0].address())
        .envs(cluster.cli_env())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4, "{status}");
    for node in nodes {
        assert_eq!(node["health"], "serving", "{node}");
    }
    // The HTTP health an NLB checks says the same.
    let metrics_port = cluster.ingests[0].metrics_port;
    let (code, body) = common::http_get(metrics_port, "/health").unwrap();
    assert_eq!((code, body.as_str()), (200, "SERVING\n"));

    cluster.ingests[0].process.as_ref().unwrap().signal("TERM");
    // While the node drains (it still serves its HTTP endpoint), /health
    // turns 503; the first answer that is not 200 must be that, not a
    // closed port.
    let started = std::time::Instant::now();
    let http_after_term = loop {
        match common::http_get(metrics_port, "/health") {
            Ok((200, _)) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            other => break other.map_err(|e| e.to_string()),
        }
    };
    assert_eq!(
        http_after_term,
        Ok((503, "NOT_SERVING\n".to_owned())),
        "HTTP health after SIGTERM"
    );
    for (service, watch) in &mut watches {
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .unwrap_or_else(|_| panic!("{service:?}: no status change 5 s after SIGTERM"))
            .unwrap_or_else(|status| panic!("{service:?}: watch failed first: {status}"))
            .unwrap_or_else(|| panic!("{service:?}: watch ended without NOT_SERVING"));
        assert_eq!(next.status, ServingStatus::NotServing as i32, "{service:?}");
    }
    assert!(
        cluster.ingests[0].wait_exit(Duration::from_secs(20)).await,
        "the draining node did not exit"
    );
}
