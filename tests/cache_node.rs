//! A real cache node process (`dlog serve --roles cache`, registered in a
//! real etcd): `kill -9` during concurrent pipelined adds loses no
//! acknowledged entry, and fencing holds across the restart.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::{Manifest, Role};
use dlog_testkit::{EtcdServer, Process, free_port, wait_for_port};
use dlog_wire::codec::{EntryHeader, EntryRecord, encode_entry};
use dlog_wire::proto::cache_service_client::CacheServiceClient;
use dlog_wire::proto::{AddEntryRequest, ReadEntriesRequest, SegmentRef};
use dlog_wire::record::Record;
use tokio_stream::wrappers::ReceiverStream;

const WRITERS: u64 = 8;

fn segment(writer: u64) -> SegmentRef {
    SegmentRef {
        log: format!("crash/log{writer}"),
        log_id: 100 + writer,
        segment_id: 1,
    }
}

fn entry(writer: u64, entry_id: u64) -> Bytes {
    let payload = format!("writer {writer} entry {entry_id} ").repeat(8);
    encode_entry(
        &EntryHeader {
            log_id: 100 + writer,
            segment_id: 1,
            entry_id,
            epoch: 1,
            first_offset: entry_id,
            lac: entry_id.checked_sub(1),
            record_count: 1,
        },
        &[EntryRecord {
            timestamp_ms: 1_700_000_000_000,
            record: Record::new(payload),
        }],
    )
}

fn start_node(etcd: &EtcdServer, dir: &std::path::Path, port: u16) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
    command
        .args(["serve", "--roles", "cache", "--metastore", &etcd.url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .args(["--node-id", "cache-1"]);
    let process = Process::spawn("cache", command, &dir.join("node.log")).unwrap();
    assert!(
        wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20)),
        "cache node did not start: {}",
        std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
    );
    process
}

/// Writes entries to one segment over one pipelined stream until the
/// stream breaks; returns the ids acknowledged.
async fn write_until_killed(endpoint: String, writer: u64) -> Vec<u64> {
    let mut client = CacheServiceClient::connect(endpoint).await.unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        for entry_id in 0.. {
            let request = AddEntryRequest {
                segment: Some(segment(writer)),
                epoch: 1,
                entry: entry(writer, entry_id),
                lac: None,
            };
            if sender.send(request).await.is_err() {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    let Ok(response) = client.add_entries(ReceiverStream::new(receiver)).await else {
        return acked;
    };
    let mut responses = response.into_inner();
    while let Ok(Some(ack)) = responses.message().await {
        acked.push(ack.entry_id);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_adds_loses_no_acknowledged_entry() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut node = start_node(&etcd, dir.path(), port);

    let manifest = Manifest::new(etcd.store().await, "default");
    let mut nodes = Vec::new();
    for _ in 0..100 {
        nodes = manifest.nodes(Role::Cache).await.unwrap();
        if !nodes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nodes.len(), 1, "the node registers itself");
    assert_eq!(
        (nodes[0].id.as_str(), nodes[0].address.as_str()),
        ("cache-1", endpoint.as_str())
    );

    let acked: Arc<Mutex<HashMap<u64, Vec<u64>>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let endpoint = endpoint.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let ids = write_until_killed(endpoint, writer).await;
            acked.lock().unwrap().insert(writer, ids);
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("writers notice the node died")
            .unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(
        total >= 100,
        "too few adds before the kill to prove anything: {total}"
    );

    let _node = start_node(&etcd, dir.path(), port);
    let mut client = CacheServiceClient::connect(endpoint).await.unwrap();
    for writer in 0..WRITERS {
        let ids = &acked[&writer];
        assert_eq!(
            *ids,
            (0..ids.len() as u64).collect::<Vec<_>>(),
            "acks come in order"
        );
        // Recovery reads (fencing at epoch 2) see everything held.
        let mut held = Vec::new();
        loop {
            let mut stream = client
                .read_entries(ReadEntriesRequest {
                    segment: Some(segment(writer)),
                    from_entry: held.len() as u64,
                    max_entries: 0,
                    fence_epoch: Some(2),
                    sealed_last_entry: None,
                })
                .await
                .unwrap()
                .into_inner();
            let before = held.len();
            while let Some(message) = stream.message().await.unwrap() {
                held.push(message.entry);
            }
            if held.len() == before {
                break;
            }
        }
        assert!(
            held.len() >= ids.len(),
            "writer {writer}: {} acknowledged, {} survived",
            ids.len(),
            held.len()
        );
        for (entry_id, bytes) in held.iter().enumerate() {
            assert_eq!(
                *bytes,
                entry(writer, entry_id as u64),
                "writer {writer} entry {entry_id} byte-exact"
            );
        }

        // The old writer's epoch is fenced now, over the wire too.
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        sender
            .send(AddEntryRequest {
                segment: Some(segment(writer)),
                epoch: 1,
                entry: entry(writer, held.len() as u64),
                lac: None,
            })
            .await
            .unwrap();
        drop(sender);
        let mut responses = client
            .add_entries(ReceiverStream::new(receiver))
            .await
            .unwrap()
            .into_inner();
        let status = responses.message().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("fenced at epoch 2"),
            "{}",
            status.message()
        );
    }
    eprintln!("acknowledged before kill -9: {total} entries over {WRITERS} segments; all survived");
}
