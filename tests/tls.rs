//! TLS against real processes: three cache nodes, an ingest node and a
//! reader node serving TLS only, replicating to each other over mutual TLS,
//! on an etcd that takes TLS with client certificates only.
//!
//! - the whole write and read path works over TLS (append, replicate to
//!   the cache quorum, read through the reader);
//! - plaintext is refused, and so is a client that trusts another CA;
//! - the cache service answers nodes only: no certificate is
//!   `UNAUTHENTICATED`, a certificate without the node role
//!   `PERMISSION_DENIED`, a node certificate of another CA never gets
//!   through the handshake;
//! - etcd refuses a connection without a client certificate;
//! - certificate files rotated under a running node are used for the next
//!   connections, without a restart.

mod common;

use std::time::{Duration, Instant};

use common::pki::Ca;
use common::{Cluster, ClusterSpec};
use distributedlog::{Client, ErrorKind, ReadOptions, Record, Start};
use dlog_wire::proto::cache_service_client::CacheServiceClient;
use dlog_wire::proto::{ReadLacRequest, SegmentRef};
use futures::StreamExt;

fn tls_cluster(readers: usize) -> ClusterSpec {
    ClusterSpec {
        readers,
        tls: true,
        ..ClusterSpec::default()
    }
}

/// A client of the cluster that trusts `ca_pem`.
fn client_trusting(cluster: &Cluster, ca_pem: &str) -> Client {
    let client = Client::new(cluster.ingests[0].address()).with_tls(ca_pem);
    match cluster.readers.first() {
        Some(reader) => client.with_read_endpoints(reader.address()),
        None => client,
    }
}

/// `ReadLac` on a cache node over TLS trusting `ca`, presenting `identity`.
async fn read_lac(
    address: &str,
    ca: &str,
    identity: Option<&common::pki::Leaf>,
) -> Result<(), tonic::Status> {
    let channel = common::pki::tls_endpoint(address, ca, identity)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|err| tonic::Status::unavailable(format!("connect: {err:?}")))?;
    let request = ReadLacRequest {
        segment: Some(SegmentRef {
            log: "ns/none".into(),
            log_id: 0,
            segment_id: 0,
        }),
        after_entry: None,
        timeout_ms: 0,
    };
    CacheServiceClient::new(channel)
        .read_lac(request)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_everywhere_refuses_plaintext_strangers_and_non_nodes() {
    let Some(cluster) = Cluster::start_spec(tls_cluster(1)).await else {
        return;
    };
    let pki = cluster.pki.as_ref().unwrap();
    assert!(cluster.ingests[0].address().starts_with("https://"));

    // The whole path over TLS: append, replication to the cache quorum
    // (mutual TLS), and a read through the reader node.
    let client = client_trusting(&cluster, &pki.ca.pem);
    client.create_log("ns/tls").await.unwrap();
    for batch in 0..3 {
        let records = (0..10)
            .map(|i| Record::new(format!("{batch}-{i}")))
            .collect();
        client.append("ns/tls", records, None).await.unwrap();
    }
    let mut reader = client.reader("ns/tls", Start::Earliest, ReadOptions::default());
    let mut read = Vec::new();
    while let Some(item) = reader.next().await {
        read.push(item.unwrap().record.payload);
    }
    assert_eq!(read.len(), 30);
    assert_eq!(read[29].as_ref(), b"2-9");

    // Plaintext to a TLS port: refused, nothing created.
    let plaintext = Client::new(format!("http://127.0.0.1:{}", cluster.ingests[0].port));
    let refused = plaintext.create_log("ns/plain").await.unwrap_err();
    // The CLI says so in one line, with what to do.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_dlog"))
        .args([
            "--endpoint",
            &format!("http://127.0.0.1:{}", cluster.ingests[0].port),
        ])
        .args(["logs", "list"])
        .env_remove("DLOG_TLS__CA")
        .env_remove("DLOG_ENDPOINT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success(), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    // The server answers with an alert (read as a bad HTTP/2 frame) or
    // just closes: either way the line says what to try.
    assert!(stderr.contains("use https:// and --tls-ca"), "{stderr}");
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    // A client that trusts another CA: refused at the handshake.
    let stranger_ca = Ca::new("another CA");
    let refused = client_trusting(&cluster, &stranger_ca.pem)
        .create_log("ns/stranger")
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert_eq!(client.list_logs("").await.unwrap(), ["ns/tls"]);

    // The cache service serves nodes only.
    let cache = cluster.caches[0].address();
    let anonymous = read_lac(&cache, &pki.ca.pem, None).await.unwrap_err();
    assert_eq!(
        anonymous.code(),
        tonic::Code::Unauthenticated,
        "{anonymous:?}"
    );
    let user = pki.ca.leaf("someone", Some("dlog-client"));
    let denied = read_lac(&cache, &pki.ca.pem, Some(&user))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("no dlog-node role"), "{denied:?}");
    // A node certificate of another CA does not get through the handshake
    // (in TLS 1.3 the client learns it on its first request: the server's
    // alert, or the connection it closed), so the service never answers.
    let forged = stranger_ca.leaf("forged", Some("dlog-node"));
    let forged = read_lac(&cache, &pki.ca.pem, Some(&forged))
        .await
        .unwrap_err();
    // Statuses the service sends have no source; the transport's have.
    let transport =
        std::error::Error::source(&forged).is_some() || forged.message().starts_with("connect");
    assert!(transport, "{forged:?}");
    // A real node certificate passes the check: the store answers (for a
    // segment it does not have).
    let node = pki.ca.leaf("a-node", Some("dlog-node"));
    let passed = read_lac(&cache, &pki.ca.pem, Some(&node)).await;
    assert!(
        matches!(
            passed.as_ref().map_err(|status| status.code()),
            Ok(()) | Err(tonic::Code::NotFound)
        ),
        "{passed:?}"
    );

    // etcd takes no client without a certificate (and does with one).
    use dlog_meta::metastore::MetaStore;
    let etcd = format!("https://127.0.0.1:{}", cluster.etcd.members[0].client_port);
    let with_cert = dlog_meta::metastore::etcd::EtcdStore::connect(
        std::slice::from_ref(&etcd),
        Some(&pki.etcd_tls()),
    )
    .await
    .unwrap();
    assert!(with_cert.range("/", true).await.is_ok());
    let no_cert = dlog_meta::metastore::EtcdTls {
        cert: None,
        key: None,
        ..pki.etcd_tls()
    };
    let refused =
        match dlog_meta::metastore::etcd::EtcdStore::connect(&[etcd], Some(&no_cert)).await {
            Ok(store) => store.range("/", true).await.is_err(),
            Err(_) => true,
        };
    assert!(refused, "etcd answered a client without a certificate");
}

/// Waits until a fresh client trusting `ca_pem` reads the log, or fails
/// after 15 s; returns that client.
async fn served_by(cluster: &Cluster, ca_pem: &str, log: &str) -> Client {
    let started = Instant::now();
    loop {
        let client = client_trusting(cluster, ca_pem);
        match client.get_log(log).await {
            Ok(_) => return client,
            Err(err) => assert!(
                started.elapsed() < Duration::from_secs(15),
                "not served within 15 s: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() {
    let Some(mut cluster) = Cluster::start_spec(tls_cluster(0)).await else {
        return;
    };
    let pki = cluster.pki.take().unwrap();
    let log = "ns/rotate";
    let before = client_trusting(&cluster, &pki.ca.pem);
    before.create_log(log).await.unwrap();
    before
        .append(log, vec![Record::new("0")], None)
        .await
        .unwrap();
    // A client that trusts only the next CA is refused while the node
    // presents a certificate of the current one.
    let refused = client_trusting(&cluster, &pki.next_ca.pem)
        .get_log(log)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    let pid = cluster.ingests[0].process().pid();

    // A certificate without the node role is not taken: the node keeps
    // serving the one it has, and says why.
    pki.next_ca
        .leaf("ingest-1", None)
        .write(&pki.dir, "ingest-1");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster.ingests[0].log_text().contains("no OU=dlog-node") {
        assert!(
            Instant::now() < deadline,
            "the bad certificate was not refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    before
        .append(log, vec![Record::new("1")], None)
        .await
        .unwrap();

    // Rotate every node to the next CA, and trust only it from now on.
    for node in ["ingest-1", "cache-1", "cache-2", "cache-3"] {
        pki.next_ca
            .leaf(node, Some("dlog-node"))
            .write(&pki.dir, node);
    }
    std::fs::write(&pki.trusted, &pki.next_ca.pem).unwrap();
    let rotated_at = Instant::now();
    let after = served_by(&cluster, &pki.next_ca.pem, log).await;
    eprintln!(
        "rotated certificate served after {:?}",
        rotated_at.elapsed()
    );
    assert_eq!(
        cluster.ingests[0].process().pid(),
        pid,
        "the node restarted"
    );
    assert!(
        cluster.ingests[0]
            .log_text()
            .contains("TLS certificate files changed")
    );
    // A client of the old CA only is now refused.
    let refused = client_trusting(&cluster, &pki.ca.pem)
        .get_log(log)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");

    // The cache nodes restart on the new files: the ingest node, never
    // restarted, must dial them again with its rotated certificate and
    // check theirs against the rotated CA, or no append gets through.
    for cache in &mut cluster.caches {
        cache.kill();
    }
    for cache in &mut cluster.caches {
        cache.start();
    }
    for i in 2..7 {
        after
            .append(log, vec![Record::new(i.to_string())], None)
            .await
            .unwrap();
    }
    assert_eq!(after.get_log(log).await.unwrap().next_offset, 7);
    assert_eq!(
        cluster.ingests[0].process().pid(),
        pid,
        "the node restarted"
    );
}

/// Writes `text` to `path` the way a rotation does: whole, by a rename.
fn replace_file(path: &std::path::Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// A node's etcd connection takes rotated client certificate files, without
/// a restart, once the new set loses no member: a set etcd refuses, or one
/// member refuses, is not taken (the working one stays); a set every member
/// takes is, so that the store goes on answering after every member stops
/// trusting the old certificate's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_client_certificate_rotates_without_a_restart() {
    use common::etcd::{EtcdCluster, EtcdTlsFiles};
    use dlog_meta::metastore::MetaStore;
    use dlog_meta::metastore::etcd::EtcdStore;

    let dir = tempfile::tempdir().unwrap();
    let etcd_ca = Ca::new("etcd CA");
    let old_ca = Ca::new("client CA, old");
    let new_ca = Ca::new("client CA, new");
    let stranger_ca = Ca::new("a CA etcd never trusts");
    let bundle = |name: &str, cas: &[&Ca]| {
        let path = dir.path().join(name);
        let pem: String = cas.iter().map(|ca| ca.pem.as_str()).collect();
        std::fs::write(&path, pem).unwrap();
        path
    };
    // etcd trusts clients of both client CAs at first; the store trusts
    // etcd's CA (the same file: etcd's --trusted-ca-file and its roots).
    let trusted = bundle("trusted.pem", &[&etcd_ca, &old_ca, &new_ca]);
    let (server_cert, server_key) = etcd_ca.leaf("etcd", None).write(dir.path(), "server");
    let (cert, key) = old_ca.leaf("dlog", None).write(dir.path(), "client");
    let client = dlog_meta::metastore::EtcdTls {
        ca: trusted.clone(),
        cert: Some(cert.clone()),
        key: Some(key.clone()),
    };
    let files = EtcdTlsFiles {
        server_cert,
        server_key,
        client: client.clone(),
    };
    let Some(mut etcd) = EtcdCluster::start_with_tls(3, |_| None, Some(files)) else {
        return;
    };
    let endpoints: Vec<String> = etcd
        .members
        .iter()
        .map(|m| format!("https://127.0.0.1:{}", m.client_port))
        .collect();
    let interval = Duration::from_millis(200);
    let store = EtcdStore::connect_reloading(&endpoints, Some(&client), interval)
        .await
        .unwrap();
    let started = Instant::now();
    while let Err(err) = store
        .put("/rotation", bytes::Bytes::from_static(b"x"))
        .await
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "etcd does not answer: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A set etcd refuses is not taken: the store keeps answering.
    let refused = stranger_ca.leaf("dlog", None);
    replace_file(&key, &refused.key);
    replace_file(&cert, &refused.cert);
    tokio::time::sleep(interval * 10).await;
    store
        .range("/rotation", false)
        .await
        .expect("the store took a certificate etcd refuses");

    // Nor a set one member refuses: member 0 trusts only the old CA.
    etcd.restart_trusting(0, bundle("old-only.pem", &[&etcd_ca, &old_ca]));
    let rotated = new_ca.leaf("dlog", None);
    replace_file(&key, &rotated.key);
    replace_file(&cert, &rotated.cert);
    tokio::time::sleep(interval * 15).await;
    // Calls are spread over the members: thirty in a row would meet
    // member 0 if the new set were in use.
    for _ in 0..30 {
        store
            .range("/rotation", false)
            .await
            .expect("the store took a certificate one member refuses");
    }

    // Once member 0 takes the new CA too, the set is taken; then every
    // member stops trusting the old CA, one at a time.
    etcd.restart_trusting(0, bundle("all.pem", &[&etcd_ca, &old_ca, &new_ca]));
    let new_only = bundle("new-only.pem", &[&etcd_ca, &new_ca]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        etcd.restart_trusting(i, new_only.clone());
    }
    let started = Instant::now();
    loop {
        match store.range("/rotation", false).await {
            Ok(found) if !found.kvs.is_empty() => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(30),
                "the store did not move to the rotated certificate within 30 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // And a client of the old CA is indeed refused now.
    let (old_cert, old_key) = old_ca.leaf("dlog", None).write(dir.path(), "old");
    let old = dlog_meta::metastore::EtcdTls {
        ca: trusted.clone(),
        cert: Some(old_cert),
        key: Some(old_key),
    };
    let refused = match EtcdStore::connect(&endpoints, Some(&old)).await {
        Ok(store) => store.range("/rotation", false).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "etcd still answers a certificate of the old CA");
}
