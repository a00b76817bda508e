//! `dlog standalone` driven through the `dlog` command, the way the README
//! tells a newcomer: create a log, append 100 000 lines, read them back,
//! seal, see the segment offloaded to a Parquet file pyarrow reads; then
//! `kill -9` and Ctrl-C, and a restart on the same data directory that
//! finds every acknowledged record. Bad input through the CLI: non-zero
//! exit and one line on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dlog_testkit::{Process, free_port, require_python_module, stdout_of, wait_for_port};

struct Standalone {
    dir: tempfile::TempDir,
    port: u16,
    process: Option<Process>,
}

impl Standalone {
    fn start() -> Standalone {
        let mut standalone = Standalone {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            process: None,
        };
        standalone.restart();
        standalone
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn restart(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
        command
            .arg("standalone")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--kafka-listen", "off"])
            .env("RUST_LOG", "info");
        let log = self.dir.path().join("standalone.log");
        self.process = Some(Process::spawn("standalone", command, &log).unwrap());
        assert!(
            wait_for_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(20)),
            "standalone did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Runs `dlog ARGS` against this node with `stdin`.
    fn dlog(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dlog"))
            .args(args)
            .env("DLOG_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        output
    }

    /// `dlog ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let output = self.dlog(args, stdin);
        assert!(
            output.status.success(),
            "dlog {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `dlog ARGS`, which must fail with one line on stderr; that line.
    fn fails(&self, args: &[&str]) -> String {
        self.fails_with(args, b"")
    }

    fn fails_with(&self, args: &[&str], stdin: &[u8]) -> String {
        let output = self.dlog(args, stdin);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "dlog {args:?} succeeded");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "dlog {args:?}: one line on stderr, got {stderr:?}"
        );
        stderr.trim_end().to_owned()
    }
}

fn lines(n: u64) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

fn read_count(node: &Standalone, log: &str) -> usize {
    let out = node.ok(&["read", log, "--from", "0"], b"");
    let mut previous = 0u64;
    for line in out.lines() {
        let value: u64 = line.parse().unwrap();
        assert_eq!(value, previous + 1, "lines come back in order, once each");
        previous = value;
    }
    out.lines().count()
}

/// pyarrow reads the file; returns its rows as `offset payload` lines
/// (None: no pyarrow here).
fn pyarrow_rows(file: &Path) -> Option<String> {
    let python = require_python_module("pyarrow")?;
    let output = Command::new(python)
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq\n\
             t = pq.read_table(sys.argv[1], columns=['log_offset', 'payload'])\n\
             for o, p in zip(t.column('log_offset').to_pylist(), t.column('payload').to_pylist()):\n\
             \x20   print(o, p.decode())",
        ])
        .arg(file)
        .output()
        .unwrap();
    Some(stdout_of(output, "pyarrow"))
}

/// The README's Iceberg query (docs/examples/query_iceberg.py) on a
/// standalone node's table: pyiceberg through the node's SQLite catalog,
/// then DuckDB. Returns what it printed (None: no pyiceberg here).
fn query_iceberg(data_dir: &Path, table: &str) -> Option<String> {
    let python = require_python_module("pyiceberg.catalog.sql, duckdb")?;
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/examples/query_iceberg.py"
        ))
        .arg(data_dir)
        .arg(table)
        .output()
        .unwrap();
    Some(stdout_of(output, "docs/examples/query_iceberg.py"))
}

#[test]
fn the_readme_walkthrough_survives_kill_9_and_ctrl_c() {
    let mut node = Standalone::start();
    let log = "demo/events";
    node.ok(&["logs", "create", log], b"");
    let appended: serde_json::Value =
        serde_json::from_str(node.ok(&["append", log], &lines(100_000)).trim()).unwrap();
    assert_eq!(appended["count"], 100_000);
    assert_eq!(read_count(&node, log), 100_000);
    node.ok(&["seal", log], b"");

    // The compactor offloads the sealed segment to a Parquet file.
    let mut info = serde_json::Value::Null;
    for _ in 0..100 {
        info = serde_json::from_str(&node.ok(&["logs", "info", log, "--json"], b"")).unwrap();
        if info["segments"][0]["state"] == "offloaded" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(info["segments"][0]["state"], "offloaded", "{info}");
    let key = info["segments"][0]["object"].as_str().unwrap();
    let file = node.data_dir().join("objects").join(key);
    if let Some(rows) = pyarrow_rows(&file) {
        // Line i (from 1) of the input is the record at offset i - 1.
        let expected: String = (1..=100_000u64)
            .map(|i| format!("{} {i}\n", i - 1))
            .collect();
        assert!(
            rows == expected,
            "the Parquet file's rows differ from the lines appended ({} vs {} bytes)",
            rows.len(),
            expected.len()
        );
    }
    // The same rows through the log's Iceberg table, as the README queries it.
    if let Some(printed) = query_iceberg(&node.data_dir(), "demo.events") {
        assert!(
            printed.contains("[(100000, 0, 99999, "),
            "records, first and last offset of the table: {printed}"
        );
        assert!(
            printed.trim_end().ends_with(", 0)]"),
            "no tombstones: {printed}"
        );
    }

    // kill -9 in the middle of nothing special: every acknowledged record
    // is there after a restart, and the log takes appends again.
    node.ok(&["append", log], b"100001\n");
    node.process.take().unwrap().kill();
    node.restart();
    assert_eq!(read_count(&node, log), 100_001);
    node.ok(&["append", log], b"100002\n");
    assert_eq!(read_count(&node, log), 100_002);

    // Ctrl-C: a clean exit, and the same on the next start.
    let status = node.process.take().unwrap().interrupt().unwrap();
    assert!(status.success(), "Ctrl-C exits cleanly: {status:?}");
    node.restart();
    assert_eq!(read_count(&node, log), 100_002);
    let limited = node.ok(&["read", log, "--from", "99999", "--limit", "2"], b"");
    assert_eq!(limited, "100000\n100001\n");
}

/// Daily work through the CLI: records with keys, headers and txids go in
/// as JSON lines and come back out of `dlog read --json` (which can be fed
/// back in); subscriptions are listed, read, committed and deleted; a
/// namespace gets settings of its own.
#[test]
fn json_records_subscriptions_and_settings_through_the_cli() {
    let node = Standalone::start();
    node.ok(&["logs", "create", "daily/a"], b"");
    let input = concat!(
        // Headers in the older form (an object) are still taken.
        r#"{"payload":"one","key":"k1","headers":{"h":"v"},"txid":10}"#,
        "\n",
        r#"{"payload_b64":"/wA=","txid":11}"#,
        "\n",
        r#"{"payload":null,"key":"gone","producer_time":"2020-09-13T12:26:40.123Z","#,
        r#""headers":[{"name":"z","value":"1"},{"name":"a","value_b64":"/w=="},{"name":"z","value":"2"}]}"#,
        "\n",
    );
    let appended = node.ok(&["append", "daily/a", "--format", "json"], input.as_bytes());
    assert!(appended.contains(r#""count":3"#), "{appended}");
    // --header, repeated: every record gets the headers in that order.
    node.ok(
        &[
            "append", "daily/a", "--header", "t=1", "--header", "s=", "--header", "t=2",
        ],
        b"plain\n",
    );
    let out = node.ok(&["read", "daily/a", "--from", "0", "--json"], b"");
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4, "{out}");
    assert_eq!(records[0]["payload"], "one");
    assert_eq!(records[0]["key"], "k1");
    assert_eq!(
        records[0]["headers"],
        serde_json::json!([{"name": "h", "value": "v"}])
    );
    assert_eq!(records[0]["txid"], 10);
    assert_eq!(records[0]["producer_time"], serde_json::Value::Null);
    assert_eq!(records[1]["payload_b64"], "/wA=");
    assert!(records[1].get("headers").is_none(), "{}", records[1]);
    assert_eq!(records[2]["payload"], serde_json::Value::Null);
    assert!(records[2].get("payload_b64").is_none());
    assert_eq!(records[2]["producer_time"], "2020-09-13T12:26:40.123Z");
    assert_eq!(
        records[2]["headers"],
        serde_json::json!([
            {"name": "z", "value": "1"},
            {"name": "a", "value_b64": "/w=="},
            {"name": "z", "value": "2"},
        ])
    );
    assert_eq!(records[3]["payload"], "plain");
    assert_eq!(
        records[3]["headers"],
        serde_json::json!([
            {"name": "t", "value": "1"},
            {"name": "s", "value": ""},
            {"name": "t", "value": "2"},
        ])
    );
    // What `read --json` prints appends again, as the same records.
    node.ok(&["logs", "create", "daily/b"], b"");
    node.ok(&["append", "daily/b", "--format", "json"], out.as_bytes());
    let copy = node.ok(&["read", "daily/b", "--from", "0", "--json"], b"");
    let strip = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("timestamp");
                v
            })
            .collect()
    };
    assert_eq!(strip(&copy), strip(&out));
    let err = node.fails_with(
        &["append", "daily/a", "--format", "json"],
        b"{\"key\":\"no payload\"}\n",
    );
    assert!(err.contains("line 1: no \"payload\""), "{err}");

    // Subscriptions.
    node.ok(&["sub", "commit", "daily/a", "billing", "1"], b"");
    node.ok(&["sub", "commit", "daily/a", "audit", "2"], b"");
    assert_eq!(
        node.ok(&["sub", "get", "daily/a", "billing"], b"").trim(),
        "1"
    );
    // A commit never moves back.
    assert_eq!(
        node.ok(&["sub", "commit", "daily/a", "audit", "1"], b"")
            .trim(),
        "2"
    );
    let list = node.ok(&["sub", "list", "daily/a"], b"");
    assert_eq!(list, "audit\t2\nbilling\t1\n");
    node.ok(&["sub", "delete", "daily/a", "audit"], b"");
    assert_eq!(node.ok(&["sub", "list", "daily/a"], b""), "billing\t1\n");
    let err = node.fails(&["sub", "get", "daily/a", "audit"]);
    assert!(err.contains("no subscription"), "{err}");

    // Settings: standalone has one cache node, so 1/1/1 and no more.
    let info = node.ok(&["ns", "create", "daily", "--retention", "7d"], b"");
    assert!(info.contains("replication:        1/1/1"), "{info}");
    let err = node.fails(&["ns", "config", "daily", "--replication", "3/3/2"]);
    assert!(err.contains("larger than the 1 live cache nodes"), "{err}");
    let json = node.ok(&["ns", "info", "daily", "--json"], b"");
    let settings: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(settings["retention_ms"], 7 * 24 * 3600 * 1000u64);
    assert_eq!(node.ok(&["ns", "list"], b""), "daily\n");
}

#[test]
fn bad_input_through_the_cli_is_one_line_and_changes_nothing() {
    let node = Standalone::start();
    let log = "demo/strict";
    node.ok(&["logs", "create", log], b"");
    node.ok(&["append", log], &lines(10));

    let line = node.fails(&["logs", "create", "bad name/x"]);
    assert!(line.contains("bad name"), "{line}");
    let line = node.fails(&["logs", "create", log]);
    assert!(line.contains("exists"), "{line}");
    let line = node.fails(&["read", "demo/missing", "--from", "0"]);
    assert!(
        line.contains("not found") || line.contains("NotFound") || line.contains("does not exist"),
        "{line}"
    );
    let line = node.fails_with(&["append", "demo/missing"], b"x\n");
    assert!(line.contains("demo/missing"), "{line}");
    let line = node.fails_with(&["append", log, "--expected-offset", "3"], b"x\n");
    assert!(line.contains("10"), "names the actual next offset: {line}");
    let line = node.fails(&["read", log, "--from-time", "yesterday"]);
    assert!(!line.is_empty());
    let line = node.fails(&["trim", log, "--before", "11"]);
    assert!(line.contains("11"), "{line}");
    node.ok(&["trim", log, "--before", "4"], b"");
    let line = node.fails(&["read", log, "--from", "2"]);
    assert!(line.contains("first readable offset is 4"), "{line}");

    // Nothing acknowledged was lost or changed by the failures.
    let out = node.ok(&["read", log], b"");
    assert_eq!(out, "5\n6\n7\n8\n9\n10\n");
}

/// Endpoints no one listens on: `dlog` fails with one line naming each
/// endpoint once, however many retries went to it, with the role it
/// expected there and the cause.
#[test]
fn unreachable_endpoints_are_named_once_with_the_role_expected_there() {
    // Ports bound without listening, held for the whole test: connections
    // are refused, and no other test's server can take them.
    let held: Vec<tokio::net::TcpSocket> = (0..3)
        .map(|_| {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
            socket
        })
        .collect();
    let address = |i: usize| format!("http://{}", held[i].local_addr().unwrap());
    let [ingest_a, ingest_b, reader] = [0, 1, 2].map(address);
    let fails = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
            .args(args)
            .env_remove("DLOG_ENDPOINT")
            .env_remove("DLOG_READ_ENDPOINT")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "dlog {args:?} succeeded");
        assert_eq!(stderr.lines().count(), 1, "dlog {args:?}: {stderr:?}");
        stderr.trim_end().to_owned()
    };

    let endpoints = format!("{ingest_a},{ingest_b}");
    let line = fails(&["--endpoint", &endpoints, "logs", "list"]);
    let expected = format!("dlog: cannot reach the ingest endpoints {ingest_a}, {ingest_b} (");
    assert!(line.starts_with(&expected), "{line}");
    assert!(
        line.contains("tcp connect error") && line.contains("refused"),
        "{line}"
    );
    assert_eq!(line.matches(&ingest_a).count(), 1, "{line}");

    let args = ["--endpoint", &ingest_a, "--read-endpoint", &reader];
    let line = fails(&[&args[..], &["read", "ns/a", "--from", "0"]].concat());
    let expected = format!("dlog: read ns/a: cannot reach the reader endpoint {reader} (");
    assert!(line.starts_with(&expected), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_writer_and_a_following_reader_survive_a_kill_9() {
    use distributedlog::{Client, ReadOptions, Record, Start, WriterOptions};
    use futures::StreamExt;

    let mut node = Standalone::start();
    let client = Client::new(format!("http://127.0.0.1:{}", node.port));
    let log = "sdk/events";
    client.create_log(log).await.unwrap();
    let write = |from: u64| {
        let writer = client.writer(log, WriterOptions::default());
        let pending: Vec<_> = (from..from + 1_000)
            .map(|i| writer.write(Record::new(format!("r{i}"))))
            .collect();
        async move {
            let offsets = futures::future::try_join_all(pending).await.unwrap();
            writer.close().await.unwrap();
            offsets
        }
    };
    assert_eq!(
        write(0).await,
        (0..1_000).collect::<Vec<u64>>(),
        "offsets in write order"
    );

    let mut reader = client.reader(
        log,
        Start::Offset(0),
        ReadOptions {
            limit: None,
            follow: true,
            ..ReadOptions::default()
        },
    );
    let mut seen = Vec::new();
    while seen.len() < 1_000 {
        seen.push(reader.next().await.unwrap().unwrap());
    }

    // The node dies under the reader; it reconnects after the restart and
    // goes on at the next offset.
    node.process.take().unwrap().kill();
    node.restart();
    assert_eq!(write(1_000).await, (1_000..2_000).collect::<Vec<u64>>());
    while seen.len() < 2_000 {
        let next = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("the reader resumes after the restart");
        seen.push(next.unwrap().unwrap());
    }
    for (i, record) in seen.iter().enumerate() {
        assert_eq!(record.offset, i as u64);
        assert_eq!(record.record.payload, format!("r{i}").as_bytes());
    }
}

/// Long commands show progress on stderr when it is a terminal (here a
/// pseudo-terminal from `script`), and nothing when it is not.
#[test]
fn progress_shows_on_a_terminal_only() {
    let Some(script) = dlog_testkit::require_binary(
        "script",
        &[],
        "apt-get install bsdutils (Debian's `script`)",
    ) else {
        return;
    };
    let node = Standalone::start();
    node.ok(&["logs", "create", "tty/log"], b"");
    let input = node.dir.path().join("lines.txt");
    std::fs::write(&input, lines(300_000)).unwrap();

    // Not a terminal: stderr stays empty.
    let quiet = node.dlog(&["append", "tty/log"], &std::fs::read(&input).unwrap());
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&quiet.stderr)
    );

    // A terminal: the progress line, then the result.
    let command = format!(
        "{} append tty/log < {}",
        env!("CARGO_BIN_EXE_dlog"),
        input.display()
    );
    let output = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env("DLOG_ENDPOINT", format!("http://127.0.0.1:{}", node.port))
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    assert!(
        screen.contains("appended ") && screen.contains(" records/s"),
        "no progress line on the terminal: {screen:?}"
    );
    assert!(screen.contains("\"count\":300000"), "{screen:?}");
}
