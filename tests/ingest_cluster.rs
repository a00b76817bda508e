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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, LEASE_TTL_SECS};
use distributedlog::Client;
use dlog_infra::proto::log_service_client::LogServiceClient;
use dlog_infra::proto::{self as pb};
use dlog_infra::record::Record;

/// What a writer learned: acknowledged records by offset, and payloads
/// whose fate it does not know (the call failed; they may or may not be in).
#[derive(Debug, Default)]
struct Written {
    acked: BTreeMap<u64, Bytes>,
    in_doubt: Vec<Bytes>,
}

/// Appends one record at a time with `expected_offset` (so client retries
/// cannot duplicate) until `stop`.
async fn write_until(
    client: Arc<Client>,
    log: &'static str,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
) -> Written {
    let mut written = Written::default();
    let mut next = next_offset(&client, log).await;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
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
            }
            Err(err) => {
                // Failed (maybe after landing): learn where the log is now.
                written.in_doubt.push(payload);
                tracing::debug!("append failed: {err}");
                next = next_offset(&client, log).await;
            }
        }
    }
    written
}

async fn next_offset(client: &Client, log: &str) -> u64 {
    for _ in 0..100 {
        match client.get_log(log).await {
            Ok(info) => return info.next_offset,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("the log never became available again");
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

async fn seal(client: &Client, log: &str) {
    for _ in 0..50 {
        if client.seal(log).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("could not seal {log}");
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
    let client = Arc::new(Client::new(endpoints(&cluster)));
    client.create_log("failover/a").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(client.clone(), "failover/a", "w", stop.clone()));

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
    tokio::time::sleep(Duration::from_secs(LEASE_TTL_SECS * 2 + 3)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();

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
    let acked_after_kill = written
        .acked
        .keys()
        .filter(|o| **o >= written.acked.len() as u64 / 2)
        .count();
    assert!(
        written.acked.len() >= 20,
        "too few appends: {}",
        written.acked.len()
    );
    assert!(acked_after_kill > 0);

    seal(&client, "failover/a").await;
    let stored = cluster.read_back("failover/a").await;
    check(&stored, &[&written]);
    eprintln!(
        "failover: {} acknowledged, {} in doubt, {} stored, epoch {before_kill} -> {after}",
        written.acked.len(),
        written.in_doubt.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_owner_past_its_lease_is_fenced_out() {
    let Some(cluster) = Cluster::start(3, 2).await else {
        return;
    };
    let client = Arc::new(Client::new(endpoints(&cluster)));
    client.create_log("freeze/a").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(client.clone(), "freeze/a", "w", stop.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let frozen = cluster.owner_of("freeze/a").await.unwrap();
    cluster.ingests[frozen].process().stop();
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
    assert!(survivor.is_some(), "another node took over");
    // Let the survivor write for a while before the frozen node wakes.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Wake the frozen owner and write to it directly, without redirects.
    cluster.ingests[frozen].process().cont();
    let mut direct = LogServiceClient::connect(cluster.ingests[frozen].address())
        .await
        .ok();
    let mut probes = Vec::new();
    for i in 0..20 {
        let payload = Bytes::from(format!("zombie-{i}"));
        probes.push(payload.clone());
        if let Some(c) = direct.as_mut() {
            let result = c
                .append(pb::AppendRequest {
                    log: "freeze/a".into(),
                    records: vec![Record::new(payload).into()],
                    expected_offset: None,
                })
                .await;
            assert!(
                result.is_err(),
                "the fenced owner acknowledged a write: {result:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    seal(&client, "freeze/a").await;
    let stored = cluster.read_back("freeze/a").await;
    for probe in &probes {
        assert!(
            !stored.values().any(|p| p == probe),
            "a write of the fenced owner got in"
        );
    }
    check(&stored, &[&written]);
    eprintln!(
        "freeze: {} acknowledged, {} in doubt, {} stored",
        written.acked.len(),
        written.in_doubt.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_node_killed_mid_stream_rolls_the_segment() {
    let Some(mut cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let client = Arc::new(Client::new(endpoints(&cluster)));
    client.create_log("cachefail/a").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(
        client.clone(),
        "cachefail/a",
        "w",
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let acked_before = client.get_log("cachefail/a").await.unwrap().next_offset;
    cluster.caches[0].kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();

    let info = client.get_log("cachefail/a").await.unwrap();
    assert!(
        info.next_offset > acked_before + 10,
        "appends continued: {acked_before} -> {}",
        info.next_offset
    );
    assert!(
        info.segments.len() >= 2,
        "the segment rolled: {:?}",
        info.segments
    );
    assert_eq!(info.segments[0].state, pb::SegmentState::Sealed as i32);
    let last = info.segments.last().unwrap();
    assert!(
        !last.ensemble.contains(&"cache-1".to_owned()),
        "the new ensemble avoids the dead node"
    );

    seal(&client, "cachefail/a").await;
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
    let client = Client::new(cluster.ingests[0].address());
    client.create_log("r/a").await.unwrap();
    let first = client
        .append("r/a", vec![Record::new("x")], None)
        .await
        .unwrap();
    assert_eq!(first.first_offset, 0);
    let owner = cluster.owner_of("r/a").await.unwrap();
    let other = 1 - owner;

    // The other node redirects, with the owner's address in metadata.
    let mut raw_other = LogServiceClient::connect(cluster.ingests[other].address())
        .await
        .unwrap();
    let status = raw_other
        .append(pb::AppendRequest {
            log: "r/a".into(),
            records: vec![Record::new("y").into()],
            expected_offset: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get("dlog-owner")
            .unwrap()
            .to_str()
            .unwrap(),
        cluster.ingests[owner].address()
    );
    // A client that only knows the other node follows the redirect.
    let via_other = Client::new(cluster.ingests[other].address());
    let appended = via_other
        .append("r/a", vec![Record::new("z")], None)
        .await
        .unwrap();
    assert_eq!(appended.first_offset, 1);

    // Bad inputs: each refused with its precise error, nothing changed.
    let mut raw = LogServiceClient::connect(cluster.ingests[owner].address())
        .await
        .unwrap();
    let append = |log: &str, records: Vec<Record>, expected_offset| pb::AppendRequest {
        log: log.into(),
        records: records.into_iter().map(Into::into).collect(),
        expected_offset,
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
            .get("dlog-next-offset")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segments_roll_by_policy_and_a_clean_shutdown_hands_over() {
    let Some(mut cluster) = Cluster::start(3, 2).await else {
        return;
    };
    let namespace = dlog_infra::names::Namespace::new("roll").unwrap();
    let mut config = dlog_infra::manifest::NamespaceConfig::default();
    config.roll.max_records = 50;
    cluster
        .manifest
        .put_namespace(&namespace, &config)
        .await
        .unwrap();
    let client = Client::new(endpoints(&cluster));
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
    let log: dlog_infra::names::LogName = "roll/a".parse().unwrap();
    let (segments, _) = cluster.manifest.segments(&log).await.unwrap();
    let sealed: Vec<_> = segments
        .iter()
        .filter(|s| s.state == dlog_infra::manifest::SegmentState::Sealed)
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
            .all(|s| s.state != dlog_infra::manifest::SegmentState::Open),
        "the open segment was sealed on shutdown"
    );
    let other = Client::new(cluster.ingests[1 - owner].address());
    let started = std::time::Instant::now();
    let appended = other
        .append("roll/a", vec![Record::new("after")], None)
        .await
        .unwrap();
    assert_eq!(appended.first_offset, 200);
    assert!(
        started.elapsed() < Duration::from_secs(LEASE_TTL_SECS),
        "took over without waiting for a lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_health_and_reflection() {
    let Some(cluster) = Cluster::start(1, 1).await else {
        return;
    };
    let address = cluster.ingests[0].address();
    let channel = tonic::transport::Endpoint::from_shared(address)
        .unwrap()
        .connect()
        .await
        .unwrap();
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

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "dlog.v1.LogService",
        "dlog.v1.ReadService",
        "dlog.v1.CacheService",
    ] {
        assert!(
            names.contains(&service.to_owned()),
            "{service} missing from {names:?}"
        );
    }
}
