//! Read-path safety with real processes (etcd, S3, three cache nodes, an
//! ingest node, a reader node): a frozen (SIGSTOPped) cache node does not
//! hang reads or the tail: every request to a cache node has a deadline,
//! streams an idle deadline, and a fetch that does not answer in time is
//! hedged on the next replica.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Cluster;

use dlog_wire::names::LogName;
use dlog_wire::proto::read_service_client::ReadServiceClient;
use dlog_wire::proto::{self as pb, read_request};
use dlog_wire::record::Record;

/// Resumes a stopped process however the test ends.
struct Thaw<'a>(&'a dlog_testkit::Process);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.cont();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_cache_node_does_not_hang_reads_or_the_tail() {
    let Some(cluster) = Cluster::start_with(3, 1, 0, 1).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    let log = "frozen/replica";
    client.create_log(log).await.unwrap();
    let mut written = Vec::new();
    for batch in 0..20u64 {
        let records: Vec<Record> = (0..50)
            .map(|i| Record::new(Bytes::from(format!("r{}", batch * 50 + i))))
            .collect();
        written.extend(records.iter().map(|r| r.payload.clone()));
        client.append(log, records, None).await.unwrap();
    }
    // Freeze the replica every fetch of entry 0 and every LAC poll tries
    // first; the reader node has read nothing yet.
    let name: LogName = log.parse().unwrap();
    let (segments, _) = cluster.manifest.segments(&name).await.unwrap();
    let first = segments[0].ensemble[0].clone();
    let frozen = cluster
        .caches
        .iter()
        .find(|n| n.id == first)
        .expect("an ensemble member");
    frozen.process().stop();
    let _thaw = Thaw(frozen.process());

    let mut reader = ReadServiceClient::new(cluster.channel(&cluster.readers[0].address()).await);
    let started = Instant::now();
    let tail = tokio::time::timeout(
        Duration::from_secs(10),
        reader.check_tail(pb::CheckTailRequest {
            log: log.to_owned(),
        }),
    )
    .await
    .expect("CheckTail hung on the frozen replica")
    .unwrap()
    .into_inner();
    assert_eq!(tail.next_offset, written.len() as u64);

    let read = async {
        let mut stream = reader
            .read(pb::ReadRequest {
                log: log.to_owned(),
                start: Some(read_request::Start::Offset(0)),
                limit: None,
                follow: false,
                log_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        let mut payloads = Vec::new();
        while let Some(message) = stream.message().await.unwrap() {
            payloads.extend(message.records.into_iter().map(|r| r.payload));
        }
        payloads
    };
    let payloads = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the read hung on the frozen replica");
    assert_eq!(payloads, written);
    eprintln!(
        "tail and full read with {first} frozen: {:?}",
        started.elapsed()
    );
}
