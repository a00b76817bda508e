//! One settings file for every tunable, through the `dlog` command: the
//! layers (defaults, `--config` file, `DLOG_*` environment, flags) as
//! `--print-config` shows them; a bad key refused in one line naming it
//! and the file; and a setting from the file in force in a running node.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use dlog_testkit::{Process, free_port, wait_for_port};
use dlog_wire::proto as pb;
use dlog_wire::proto::read_service_client::ReadServiceClient;

fn dlog(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
    command.args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn print_config_shows_defaults_file_environment_and_flags_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "node.toml",
        r#"
        roles = ["ingest"]
        listen = "127.0.0.1:1"
        [ingest]
        linger = "3ms"
        max_in_flight_bytes = 1000000
        [reader]
        max_reads_per_client = 2
        "#,
    );
    let output = dlog(
        &[
            "serve",
            "--config",
            &file,
            "--listen",
            "127.0.0.1:3",
            "--print-config",
        ],
        &[
            ("DLOG_INGEST__LINGER", "7ms"),
            ("DLOG_LISTEN", "127.0.0.1:2"),
            ("DLOG_ENDPOINT", "http://not-a-setting"),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: toml::Table = String::from_utf8(output.stdout).unwrap().parse().unwrap();
    let get = |section: &str, key: &str| printed[section][key].clone();
    // Flag over environment over file.
    assert_eq!(printed["listen"].as_str(), Some("127.0.0.1:3"));
    // Environment over file; durations as text.
    assert_eq!(get("ingest", "linger").as_str(), Some("7ms"));
    // File over defaults.
    assert_eq!(
        get("ingest", "max_in_flight_bytes").as_integer(),
        Some(1_000_000)
    );
    assert_eq!(get("reader", "max_reads_per_client").as_integer(), Some(2));
    // Defaults where nothing is said.
    assert_eq!(get("node", "lease_ttl").as_str(), Some("10s"));
    assert_eq!(
        get("cache", "hot_cache_bytes").as_integer(),
        Some(256 << 20)
    );
    assert_eq!(printed["roles"].as_array().unwrap().len(), 1);
}

#[test]
fn a_bad_setting_stops_the_node_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "typo.toml",
        "[compactor]\npoll_intervall = \"1s\"\n",
    );
    let output = dlog(&["serve", "--config", &file, "--print-config"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("poll_intervall"), "{stderr}");
    assert!(stderr.contains("typo.toml"), "{stderr}");

    let output = dlog(
        &["serve", "--print-config"],
        &[("DLOG_READER__MAX_READS", "0")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("reader.max_reads must be more than 0"),
        "{stderr}"
    );

    // Standalone chooses its own metastore.
    let file = write(
        dir.path(),
        "meta.toml",
        "metastore = \"etcd://127.0.0.1:1\"\n",
    );
    let output = dlog(&["standalone", "--config", &file, "--print-config"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sets roles, metastore"), "{stderr}");
}

/// `[reader] max_reads_per_client = 1` from the file: a second read from
/// the same client is refused while the first (tailing) is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_from_the_file_is_in_force_in_the_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "standalone.toml",
        "[reader]\nmax_reads_per_client = 1\n[node]\nshutdown_drain = \"1s\"\n",
    );
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
    command
        .args(["standalone", "--config", &file])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--kafka-listen", "off"])
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let log = dir.path().join("standalone.log");
    let _node = Process::spawn("standalone", command, &log).unwrap();
    assert!(
        wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20)),
        "standalone did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let address = format!("http://127.0.0.1:{port}");
    let client = distributedlog::Client::new(&address);
    client.create_log("cfg/log").await.unwrap();
    let mut reads = ReadServiceClient::connect(address).await.unwrap();
    let tail = || pb::ReadRequest {
        log: "cfg/log".into(),
        start: Some(pb::read_request::Start::Tail(pb::Tail {})),
        follow: true,
        ..pb::ReadRequest::default()
    };
    let _first = reads.read(tail()).await.expect("the first read");
    // Refused at once, or as the stream's first message.
    let second = match reads.read(tail()).await {
        Err(status) => status,
        Ok(stream) => {
            let first = tokio::time::timeout(Duration::from_secs(5), stream.into_inner().message())
                .await
                .expect("an answer to the second read");
            first.expect_err("a second read from this client was admitted")
        }
    };
    assert_eq!(second.code(), tonic::Code::ResourceExhausted, "{second:?}");
}
