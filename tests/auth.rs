//! Client tokens with scopes against a real etcd, three cache nodes, an
//! ingest node and a reader node, all with `auth.tokens` on: no token is
//! `UNAUTHENTICATED`; a token for `ns-a/` cannot read `ns-b/x`, append, or
//! administer; listings show only what a token reaches; a revoked token is
//! refused by every node within 5 s; the CLI says so in one line.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, ClusterSpec};
use distributedlog::{ErrorKind, Record};

/// The file a node wrote the root token to.
fn root_token_file(cluster: &Cluster) -> std::path::PathBuf {
    cluster
        .caches
        .iter()
        .chain(&cluster.ingests)
        .chain(&cluster.readers)
        .map(|node| node.data_dir().join("root-token"))
        .find(|path| path.exists())
        .expect("a node wrote the root token")
}

fn root_token(cluster: &Cluster) -> String {
    let file = root_token_file(cluster);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "root token file mode {mode:o}");
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

fn dlog(cluster: &Cluster, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
    command
        .args(args)
        .env("DLOG_ENDPOINT", cluster.ingests[0].address())
        .env("DLOG_READ_ENDPOINT", cluster.readers[0].address())
        .env_remove("DLOG_TOKEN")
        .envs(cluster.cli_env());
    if let Some(token) = token {
        command.env("DLOG_TOKEN", token);
    }
    command.output().unwrap()
}

fn one_line_failure(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reach_their_scope_and_stop_when_revoked() {
    let spec = ClusterSpec {
        readers: 1,
        auth_tokens: true,
        ..ClusterSpec::default()
    };
    let Some(mut cluster) = Cluster::start_spec(spec).await else {
        return;
    };
    let ingest = cluster.ingests[0].address();
    let reader = cluster.readers[0].address();
    let anonymous = cluster.client(&ingest).with_read_endpoints(&reader);
    let err = anonymous.create_log("ns-a/x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");

    let root = root_token(&cluster);
    let admin = cluster
        .client(&ingest)
        .with_read_endpoints(&reader)
        .with_token(&root)
        .unwrap();
    for log in ["ns-a/x", "ns-b/x"] {
        admin.create_log(log).await.unwrap();
        admin
            .append(log, vec![Record::new(format!("in {log}"))], None)
            .await
            .unwrap();
    }
    let (token, info) = admin
        .create_token("ns-a/", &["read"], "reads ns-a")
        .await
        .unwrap();
    assert_eq!(
        (info.prefix.as_str(), info.ops.as_slice()),
        ("ns-a/", &["read".to_owned()][..])
    );
    assert!(
        admin
            .list_tokens()
            .await
            .unwrap()
            .iter()
            .any(|t| t.id == info.id)
    );

    let scoped = cluster
        .client(&ingest)
        .with_read_endpoints(&reader)
        .with_token(&token)
        .unwrap();
    // A new token reaches the other nodes through their watch, within
    // moments (the node it was created through knows it at once).
    let started = Instant::now();
    while let Err(err) = scoped.check_tail("ns-a/x").await {
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the reader never learnt the token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // In scope: reads on the reader node, log info on the ingest node.
    assert_eq!(scoped.check_tail("ns-a/x").await.unwrap().next_offset, 1);
    assert_eq!(scoped.get_log("ns-a/x").await.unwrap().next_offset, 1);
    assert_eq!(scoped.list_logs("").await.unwrap(), ["ns-a/x"]);
    // Out of scope: another namespace, another operation, administration.
    let denied = |err: distributedlog::ClientError| {
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
        err.to_string()
    };
    let text = denied(scoped.check_tail("ns-b/x").await.unwrap_err());
    assert!(text.contains("does not reach ns-b/x"), "{text}");
    denied(scoped.get_log("ns-b/x").await.unwrap_err());
    denied(
        scoped
            .append("ns-a/x", vec![Record::new("no")], None)
            .await
            .unwrap_err(),
    );
    denied(scoped.create_log("ns-a/y").await.unwrap_err());
    denied(
        scoped
            .create_token("", &["admin"], "escalate")
            .await
            .unwrap_err(),
    );

    // An append session checks each append: refused, and the stream ends.
    let channel = cluster.channel(&ingest).await;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut sessions = dlog_wire::proto::log_service_client::LogServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            Ok(request)
        },
    );
    let append = dlog_wire::proto::AppendRequest {
        log: "ns-a/x".into(),
        records: vec![dlog_wire::proto::Record {
            payload: b"no".to_vec().into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut answers = sessions
        .append_session(futures::stream::iter(vec![append.clone(), append]))
        .await
        .unwrap()
        .into_inner();
    let refused = answers.message().await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(admin.get_log("ns-a/x").await.unwrap().next_offset, 1);

    // The CLI: one line, non-zero.
    let line = one_line_failure(&dlog(
        &cluster,
        Some(&token),
        &["read", "ns-b/x", "--from", "0"],
    ));
    assert!(line.contains("does not reach ns-b/x"), "{line}");
    let line = one_line_failure(&dlog(&cluster, None, &["logs", "list"]));
    assert!(line.contains("no token"), "{line}");
    let root_file = root_token_file(&cluster);
    let from_file = dlog(
        &cluster,
        None,
        &["--token-file", root_file.to_str().unwrap(), "token", "list"],
    );
    assert!(from_file.status.success(), "{from_file:?}");
    let listed = dlog(&cluster, Some(&root), &["token", "list"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(&info.id) && !listed.contains(&token),
        "{listed}"
    );

    // Revoked: refused by the reader node and the ingest node within 5 s.
    let revoked = dlog(&cluster, Some(&root), &["token", "revoke", &info.id]);
    assert!(revoked.status.success(), "{revoked:?}");
    let started = Instant::now();
    let mut refused = [false, false];
    while !(refused[0] && refused[1]) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the revoked token still works after 5 s: reader refused {}, ingest refused {}",
            refused[0],
            refused[1]
        );
        if let Err(err) = scoped.check_tail("ns-a/x").await {
            assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
            refused[0] = true;
        }
        if let Err(err) = scoped.get_log("ns-a/x").await {
            assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
            refused[1] = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "revoked token refused everywhere after {:?}",
        started.elapsed()
    );
    // The root token still works.
    admin.get_log("ns-b/x").await.unwrap();

    // An append-only token writes through a LogWriter (which learns the
    // log's end first).
    let (appender, _) = admin.create_token("ns-a/", &["append"], "").await.unwrap();
    let writing = cluster.client(&ingest).with_token(&appender).unwrap();
    let writer = writing.writer("ns-a/x", distributedlog::WriterOptions::default());
    for i in 0..10 {
        drop(writer.write(Record::new(format!("w{i}"))));
    }
    writer.flush().await.expect("an append-only token writes");
    writer.close().await.unwrap();
    assert_eq!(admin.get_log("ns-a/x").await.unwrap().next_offset, 11);

    // A namespace administrator: its namespace only, and tokens within
    // what it holds.
    let (ns_admin, _) = admin
        .create_token("ns-a/", &["admin", "read"], "ns-a admin")
        .await
        .unwrap();
    let ns_admin = cluster.client(&ingest).with_token(&ns_admin).unwrap();
    let change = distributedlog::SettingsChange {
        retention_ms: Some(3_600_000),
        ..Default::default()
    };
    ns_admin.configure_namespace("ns-a", &change).await.unwrap();
    denied(
        ns_admin
            .configure_namespace("ns-b", &change)
            .await
            .unwrap_err(),
    );
    assert_eq!(ns_admin.list_namespaces().await.unwrap(), ["ns-a"]);
    ns_admin
        .create_token("ns-a/", &["read"], "delegated")
        .await
        .unwrap();
    denied(
        ns_admin
            .create_token("ns-a/", &["append"], "")
            .await
            .unwrap_err(),
    );
    denied(ns_admin.create_token("", &["read"], "").await.unwrap_err());
    denied(ns_admin.status().await.unwrap_err());

    // The last token with admin over the whole cluster cannot be revoked.
    let last = admin.revoke_token("root").await.unwrap_err();
    assert_eq!(last.kind(), ErrorKind::FailedPrecondition, "{last}");

    // A node of this cluster cannot start without checking tokens.
    let node = &mut cluster.ingests[0];
    node.kill();
    node.set_env("DLOG_AUTH__TOKENS", "false");
    // It may bind its port before it checks; it must exit all the same.
    node.try_start(Duration::from_secs(10));
    assert!(
        node.wait_exit(Duration::from_secs(10)).await,
        "a node started without token checks in a cluster with tokens"
    );
    assert!(
        node.log_text()
            .contains("start this node with --auth-tokens"),
        "{}",
        node.log_text()
    );
}
