//! The SDK's exactly-once retries end to end, with real processes: a real
//! etcd, three cache nodes and one ingest node (`dlog serve`).
//!
//! `LogWriter` retries an append whose answer it did not get with the same
//! `expected_offset`, and takes an offset mismatch that reports
//! `expected + count` as "my batch landed". That is right only if the
//! mismatch reports acknowledged (durable) records: an owner that counted a
//! batch still in flight would have the writer acknowledge data that a crash
//! then loses.

mod common;

use std::time::Duration;

use common::Cluster;
use distributedlog::WriterOptions;
use dlog_wire::record::Record;

/// The cache tier stalls (`SIGSTOP`), so an append hangs in its owner; the
/// client's attempt times out and the writer retries it. The owner is then
/// killed, and so are the stalled cache nodes, before they journaled the
/// entry: that attempt is lost. `LogWriter::write` may fail, or succeed
/// once a retry wrote the record again (to the restarted cluster), but if
/// it returns `Ok(offset)` the log must hold the record there, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_write_stuck_in_flight_is_not_acknowledged() {
    let Some(mut cluster) = Cluster::start(3, 1).await else {
        return;
    };
    const LOG: &str = "safety/stalled";
    let client = cluster.client(cluster.ingests[0].address());
    client.create_log(LOG).await.unwrap();
    let writer = client.writer(LOG, WriterOptions::default());
    assert_eq!(writer.write(Record::new("durable")).await.unwrap(), 0);

    for cache in &cluster.caches {
        cache.process().stop();
    }
    let stalled = tokio::spawn(writer.write(Record::new("stalled")));
    // The first attempt times out after 5 s; the writer retries.
    tokio::time::sleep(Duration::from_secs(7)).await;

    cluster.ingests[0].kill();
    for cache in &mut cluster.caches {
        cache.kill();
    }
    for cache in &mut cluster.caches {
        cache.start();
    }
    cluster.ingests[0].start();

    let outcome = tokio::time::timeout(Duration::from_secs(60), stalled)
        .await
        .expect("the write ends")
        .unwrap();
    let client = cluster.client(cluster.ingests[0].address());
    let end = common::next_offset(&client, LOG, 150).await;
    common::seal(&client, LOG, 150).await;
    let stored = cluster.read_back(LOG).await;
    eprintln!("write outcome: {outcome:?}; log end {end}; stored {stored:?}");
    if let Ok(offset) = outcome {
        assert_eq!(
            stored.get(&offset).map(|payload| payload.as_ref()),
            Some(&b"stalled"[..]),
            "the write was acknowledged at offset {offset}, but the log does not hold it \
             (log end {end})"
        );
    }
    let copies = stored.values().filter(|p| p.as_ref() == b"stalled").count();
    assert!(copies <= 1, "the stalled record was written {copies} times");
}
