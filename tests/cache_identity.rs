//! A cache node's data directory has an identity (its cookie) registered
//! in the manifest: a node whose directory does not match its registration
//! refuses to serve, two processes cannot share one journal directory, and
//! a node re-initialised on purpose (`--reinit-cache`) never answers a
//! fence for a segment created before its new identity.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dlog_meta::manifest::{Manifest, Role, SegmentMeta};
use dlog_testkit::{EtcdServer, Process, free_port, wait_for_port};
use dlog_wire::ids::{Epoch, LogId};
use dlog_wire::names::LogName;
use dlog_wire::proto::cache_service_client::CacheServiceClient;
use dlog_wire::proto::{FenceRequest, SegmentRef};

const NODE: &str = "cache-1";

/// Starts `dlog serve --roles cache` without waiting for it.
fn spawn(etcd: &EtcdServer, dir: &Path, port: u16, extra: &[&str]) -> Process {
    std::fs::create_dir_all(dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
    command
        .args(["serve", "--roles", "cache", "--metastore", &etcd.url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .args(["--node-id", NODE])
        .args(extra)
        .env("DLOG_NODE__LEASE_TTL", "2s")
        // Identity re-checked (and segments reconciled) every second.
        .env("DLOG_CACHE__RECONCILE_INTERVAL", "1s");
    Process::spawn(NODE, command, &dir.join("node.log")).unwrap()
}

fn log_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
}

/// Starts a node and waits until it listens.
fn start(etcd: &EtcdServer, dir: &Path, port: u16, extra: &[&str]) -> Process {
    let process = spawn(etcd, dir, port, extra);
    assert!(
        wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20)),
        "cache node did not start: {}",
        log_text(dir)
    );
    process
}

/// Asserts that a started node exits on its own, non-zero, within 15 s,
/// and that its log says `why`.
async fn assert_refused(mut process: Process, dir: &Path, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while process.is_running() {
        assert!(
            Instant::now() < deadline,
            "the node serves although it must refuse ({why}): {}",
            log_text(dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = log_text(dir);
    assert!(
        text.contains(why),
        "the node exited without saying {why:?}: {text}"
    );
}

async fn wait_registered(manifest: &Manifest) {
    for _ in 0..100 {
        if !manifest.nodes(Role::Cache).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cache node never registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_wiped_directory_is_refused_until_reinitialised() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let manifest = Manifest::new(etcd.store().await, "default");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let port = free_port();
    let mut node = start(&etcd, &dir, port, &[]);
    wait_registered(&manifest).await;
    node.kill();

    // The disk is replaced: same id, empty directory.
    std::fs::remove_dir_all(&dir).unwrap();
    let node = spawn(&etcd, &dir, port, &[]);
    assert_refused(node, &dir, "--reinit-cache").await;

    // An operator re-initialises it on purpose: it serves again.
    let mut node = start(&etcd, &dir, port, &["--reinit-cache"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !log_text(&dir).contains("re-initialised") {
        assert!(node.is_running(), "{}", log_text(&dir));
        assert!(Instant::now() < deadline, "{}", log_text(&dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_registered(&manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_cannot_share_a_journal_directory_or_a_node_id() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let manifest = Manifest::new(etcd.store().await, "default");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let _first = start(&etcd, &dir, free_port(), &[]);
    wait_registered(&manifest).await;

    // Same directory: the journal lock keeps the second process out.
    let second = spawn(&etcd, &dir, free_port(), &[]);
    assert_refused(second, &dir, "locked by another process").await;

    // Same node id, another (empty) directory: its identity does not
    // match the registration.
    let other = root.path().join("other");
    let third = spawn(&etcd, &other, free_port(), &[]);
    assert_refused(third, &other, "--reinit-cache").await;
}

fn segment_template(ensemble: &[&str]) -> SegmentMeta {
    SegmentMeta::open(
        0,
        ensemble.iter().map(|n| (*n).to_owned()).collect(),
        1,
        1,
        0,
    )
}

async fn fence(port: u16, log: &str, log_id: u64, segment_id: u64) -> Result<(), tonic::Status> {
    let mut client = CacheServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    client
        .fence(FenceRequest {
            segment: Some(SegmentRef {
                log: log.to_owned(),
                log_id,
                segment_id,
            }),
            epoch: 5,
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinitialised_node_does_not_answer_fences_for_older_segments() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let manifest = Manifest::new(etcd.store().await, "default");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let port = free_port();
    let mut node = start(&etcd, &dir, port, &[]);
    wait_registered(&manifest).await;

    // A segment placed on the node while it had its data.
    let log: LogName = "ident/a".parse().unwrap();
    let meta = manifest.create_log(&log).await.unwrap();
    let epoch = manifest
        .bump_epoch(&log, LogId(meta.log_id), Epoch(0))
        .await
        .unwrap();
    let old = manifest
        .create_segment(&log, epoch, segment_template(&[NODE]))
        .await
        .unwrap();
    fence(port, "ident/a", meta.log_id, old.segment_id)
        .await
        .expect("the original node answers for its segment");

    node.kill();
    std::fs::remove_dir_all(&dir).unwrap();
    let _node = start(&etcd, &dir, port, &["--reinit-cache"]);

    // It lost whatever it held of the old segment: no answer counts.
    let status = fence(port, "ident/a", meta.log_id, old.segment_id)
        .await
        .expect_err("a re-initialised node must not answer for a segment it may have lost");
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");

    // A segment created after the re-initialisation is its own.
    let new = manifest
        .create_segment(&log, epoch, segment_template(&[NODE]))
        .await
        .unwrap();
    fence(port, "ident/a", meta.log_id, new.segment_id)
        .await
        .expect("a new segment is answered for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_id_is_reinitialised_elsewhere_stops() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let manifest = Manifest::new(etcd.store().await, "default");
    let root = tempfile::tempdir().unwrap();
    let old_dir = root.path().join("old");
    let old = start(&etcd, &old_dir, free_port(), &[]);
    wait_registered(&manifest).await;

    // An operator re-initialises the id on another machine while the old
    // process still runs: the old one must step aside.
    let new_dir = root.path().join("new");
    let _new = start(&etcd, &new_dir, free_port(), &["--reinit-cache"]);
    assert_refused(old, &old_dir, "another instance registered this cache node").await;
}
