//! The `dlog` command against a cluster, where ingest nodes serve writes
//! and reader nodes serve reads: `dlog read` pointed at an ingest node
//! alone fails with one line that names `--read-endpoint`; with the reader
//! given (`DLOG_READ_ENDPOINT`) it reads. `dlog read --from-tail --follow`
//! delivers only records appended after it started.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cluster;

/// `dlog ARGS` with `env`, feeding `stdin`.
fn dlog(args: &[&str], env: &[(&str, String)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(args)
        .env_remove("DLOG_READ_ENDPOINT")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], env: &[(&str, String)], stdin: &[u8]) -> String {
    let output = dlog(args, env, stdin);
    assert!(
        output.status.success(),
        "dlog {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_the_reader_endpoint_and_follow_from_the_tail() {
    let Some(cluster) = Cluster::start_with(3, 1, 0, 1).await else {
        return;
    };
    let tls: Vec<(&str, String)> = cluster
        .cli_env()
        .into_iter()
        .map(|(_, ca)| ("DLOG_TLS__CA", ca))
        .collect();
    let mut ingest = vec![("DLOG_ENDPOINT", cluster.ingests[0].address())];
    ingest.extend(tls.iter().cloned());
    let mut both = vec![
        ("DLOG_ENDPOINT", cluster.ingests[0].address()),
        ("DLOG_READ_ENDPOINT", cluster.readers[0].address()),
    ];
    both.extend(tls.iter().cloned());
    let history: String = (1..=100).map(|i| format!("old-{i}\n")).collect();
    ok(&["logs", "create", "cli/tail"], &ingest, b"");
    ok(&["append", "cli/tail"], &ingest, history.as_bytes());

    // An ingest node serves no reads: one clear line, non-zero exit.
    let output = dlog(&["read", "cli/tail", "--limit", "100"], &ingest, b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "read from an ingest node worked");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("--read-endpoint"), "{stderr:?}");

    // With the reader named, the same command reads everything, in order.
    let read = ok(&["read", "cli/tail", "--limit", "100"], &both, b"");
    assert_eq!(read, history);

    // --from-tail --follow: start the follower, then append until it has
    // printed three records. Whenever it resolved the tail, it must print
    // only records appended after that: none of the history.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args([
            "read",
            "cli/tail",
            "--from-tail",
            "--follow",
            "--limit",
            "3",
        ])
        .envs(both.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while printed.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the follower printed {printed:?} in 60 s"
        );
        next += 1;
        ok(
            &["append", "cli/tail"],
            &ingest,
            format!("new-{next}\n").as_bytes(),
        );
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(300)) {
            printed.push(line);
        }
    }
    let status = follower.wait().unwrap();
    assert!(status.success(), "the follower failed");
    assert_eq!(printed.len(), 3, "--limit 3: {printed:?}");
    assert!(
        printed.iter().all(|line| line.starts_with("new-")),
        "--from-tail delivered history: {printed:?}"
    );
    // Consecutive records appended after the follower started.
    let numbers: Vec<u64> = printed
        .iter()
        .map(|line| line["new-".len()..].parse().unwrap())
        .collect();
    assert_eq!(numbers[1], numbers[0] + 1, "{printed:?}");
    assert_eq!(numbers[2], numbers[1] + 1, "{printed:?}");
}
