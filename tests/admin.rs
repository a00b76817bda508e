//! Namespace and log settings through `AdminService`, against a real etcd
//! and three cache nodes: settings are created, changed and read back
//! through the API and the CLI; settings that cannot work are refused with
//! `INVALID_ARGUMENT` and the reason; a change reaches the running owner
//! of a log without a restart (its roll policy at once, its replication
//! from the next segment).

mod common;

use std::process::Command;
use std::time::Duration;

use common::Cluster;
use distributedlog::{Client, Record, SettingsChange};
use dlog_meta::manifest::SegmentMeta;
use dlog_wire::names::LogName;

fn invalid(result: distributedlog::client::Result<distributedlog::Settings>) -> String {
    let err = result.expect_err("invalid settings were accepted");
    assert_eq!(
        err.kind(),
        distributedlog::ErrorKind::InvalidArgument,
        "{err}"
    );
    err.to_string()
}

async fn segments(cluster: &Cluster, log: &str) -> Vec<SegmentMeta> {
    let name: LogName = log.parse().unwrap();
    cluster.manifest.segments(&name).await.unwrap().0
}

/// `appends` appends of 60 records each.
async fn append(client: &Client, log: &str, appends: usize) {
    for i in 0..appends {
        let records = (0..60).map(|j| Record::new(format!("r{i}-{j}"))).collect();
        client.append(log, records, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_and_reach_running_owners() {
    let Some(cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());

    let created = client
        .create_namespace(
            "adm",
            &SettingsChange {
                retention_ms: Some(3_600_000),
                ..SettingsChange::default()
            },
        )
        .await
        .unwrap();
    assert!(created.own);
    assert_eq!(created.retention_ms, Some(3_600_000));
    assert_eq!(
        (created.ensemble, created.write_quorum, created.ack_quorum),
        (3, 3, 2)
    );
    let again = client
        .create_namespace("adm", &SettingsChange::default())
        .await
        .expect_err("created twice");
    assert_eq!(
        again.kind(),
        distributedlog::ErrorKind::AlreadyExists,
        "{again}"
    );
    assert!(!client.namespace("other").await.unwrap().own);

    // Settings that cannot work: refused with the reason, nothing changed.
    let with = |change: SettingsChange| {
        let client = client.clone();
        async move { client.configure_namespace("adm", &change).await }
    };
    let err = invalid(
        with(SettingsChange {
            replication: Some((3, 2, 3)),
            ..SettingsChange::default()
        })
        .await,
    );
    assert!(err.contains("write quorum >= ack quorum"), "{err}");
    let err = invalid(
        with(SettingsChange {
            replication: Some((2, 3, 2)),
            ..SettingsChange::default()
        })
        .await,
    );
    assert!(err.contains("ensemble >= write quorum"), "{err}");
    let err = invalid(
        with(SettingsChange {
            replication: Some((4, 3, 2)),
            ..SettingsChange::default()
        })
        .await,
    );
    assert!(err.contains("larger than the 3 live cache nodes"), "{err}");
    let err = invalid(
        with(SettingsChange {
            retention_ms: Some(0),
            ..SettingsChange::default()
        })
        .await,
    );
    assert!(err.contains("retention_ms 0"), "{err}");
    assert_eq!(
        client.namespace("adm").await.unwrap().retention_ms,
        Some(3_600_000)
    );

    // The CLI: one line on stderr with the reason, non-zero exit.
    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["ns", "config", "adm", "--replication", "3/2/3"])
        .env("DLOG_ENDPOINT", cluster.ingests[0].address())
        .envs(cluster.cli_env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("write quorum >= ack quorum"), "{stderr:?}");
    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["ns", "info", "adm", "--json"])
        .env("DLOG_ENDPOINT", cluster.ingests[0].address())
        .envs(cluster.cli_env())
        .output()
        .unwrap();
    assert!(output.status.success());
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["retention_ms"], 3_600_000);
    assert_eq!(info["replication"], "3/3/2");

    // A running owner takes changes without a restart.
    let log = "adm/live";
    client.create_log(log).await.unwrap();
    append(&client, log, 1).await;
    assert_eq!(segments(&cluster, log).await.len(), 1, "one open segment");
    // The roll policy applies at once: a roll past 100 records.
    let settings = client
        .configure_log(
            log,
            &SettingsChange {
                roll_max_records: Some(100),
                ..SettingsChange::default()
            },
            false,
        )
        .await
        .unwrap();
    assert!(settings.own);
    assert_eq!(settings.retention_ms, Some(3_600_000), "from its namespace");
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&client, log, 6).await;
    let rolled = segments(&cluster, log).await;
    assert!(
        rolled.len() >= 3,
        "the log did not roll by its new policy: {} segments",
        rolled.len()
    );
    // Replication from the next segment: the namespace's change does not
    // reach a log with settings of its own until it inherits again.
    client
        .configure_namespace(
            "adm",
            &SettingsChange {
                replication: Some((2, 2, 2)),
                roll_max_records: Some(100),
                ..SettingsChange::default()
            },
        )
        .await
        .unwrap();
    let inherited = client
        .configure_log(log, &SettingsChange::default(), true)
        .await
        .unwrap();
    assert!(!inherited.own);
    assert_eq!(inherited.ensemble, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&client, log, 6).await;
    let last = segments(&cluster, log).await.pop().unwrap();
    assert_eq!(
        last.ensemble.len(),
        2,
        "the newest segment ignores the new replication: {last:?}"
    );
}

/// `ListLogs` in pages, and `dlog logs list` through them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_listings_page_through_a_large_namespace() {
    let Some(cluster) = Cluster::start(3, 1).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    let names: Vec<String> = (0..25).map(|i| format!("paged/log-{i:02}")).collect();
    for name in &names {
        client.create_log(name).await.unwrap();
    }
    client.create_log("other/log").await.unwrap();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client.list_logs_page("paged/", 10, &token).await.unwrap();
        assert!(page.logs.len() <= 10, "{page:?}");
        pages += 1;
        seen.extend(page.logs);
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!((pages, &seen), (3, &names));
    let output = Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args(["logs", "list", "paged/"])
        .env("DLOG_ENDPOINT", cluster.ingests[0].address())
        .envs(cluster.cli_env())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let listed: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(listed, names);
}
