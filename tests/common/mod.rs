//! A local cluster of real processes for end-to-end tests: etcd (one
//! member or more), cache nodes and ingest nodes (`dlog serve`), each
//! killable, stoppable and restartable, each under a group id of its own so
//! [`firewall`] can cut the network between them; plus a checker that reads
//! a log back straight from the cache nodes (segment by segment, up to each
//! sealed end); and a `dlog standalone` node ([`standalone`]).

#![allow(dead_code)]

pub mod etcd;
pub mod firewall;
pub mod pki;
pub mod standalone;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::manifest::{Manifest, SegmentMeta, SegmentState};
use dlog_testkit::{Process, S3Server, free_port, wait_for_port};
use dlog_wire::codec::decode_entry;
use dlog_wire::names::LogName;
use dlog_wire::proto::cache_service_client::CacheServiceClient;
use dlog_wire::proto::{ReadEntriesRequest, SegmentRef};
use etcd::EtcdCluster;

/// Lease TTL of the test nodes: short, so failover tests are quick.
pub const LEASE_TTL_SECS: u64 = 2;

/// One `dlog serve` process and how to start it again.
pub struct Node {
    pub id: String,
    pub role: &'static str,
    pub port: u16,
    /// Where the node serves Prometheus metrics (every test node does).
    pub metrics_port: u16,
    pub process: Option<Process>,
    /// The group id the process runs under, when the test runs as root:
    /// one per process, for [`firewall::Firewall::cut`].
    pub gid: Option<u32>,
    dir: std::path::PathBuf,
    metastore: String,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    /// The node serves TLS (its address is `https://`).
    tls: bool,
}

/// A group id no other process of this test uses, when running as root.
pub fn next_gid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    // Apart per test process, so two tests' rules never match each other's.
    let base = 40_000 + (std::process::id() % 10_000) * 64;
    root.then(|| base + NEXT.fetch_add(1, Ordering::Relaxed) % 64)
}

impl Node {
    pub fn address(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts with extra environment variables and waits for its port.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        self.spawn(env);
        assert!(
            wait_for_port(([127, 0, 0, 1], self.port).into(), Duration::from_secs(20)),
            "{} did not start: {}",
            self.id,
            self.log_text()
        );
    }

    /// Starts and waits for its port; `false` if the process exited first
    /// (e.g. it refused its data directory) or did not listen in `timeout`.
    pub fn try_start(&mut self, timeout: Duration) -> bool {
        self.spawn(&[]);
        let deadline = std::time::Instant::now() + timeout;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        while std::time::Instant::now() < deadline {
            if !self.process.as_mut().is_some_and(|p| p.is_running()) {
                self.process = None;
                return false;
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Starts with `DLOG_COMPACTOR__FAILPOINTS=point`, not waiting for the port: it
    /// may abort before it listens. See [`Node::wait_exit`].
    pub fn start_to_crash_at(&mut self, point: &str) {
        self.spawn(&[("DLOG_COMPACTOR__FAILPOINTS", point)]);
    }

    /// Removes everything in the node's data directory but its log file
    /// (a replaced disk); the process must not be running.
    pub fn wipe_data(&mut self) {
        assert!(self.process.is_none(), "{} is running", self.id);
        let keep = format!("{}.log", self.id);
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|name| name == keep.as_str()) {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }

    /// The directory of the node's cache journal.
    pub fn journal_dir(&self) -> std::path::PathBuf {
        self.dir.join("cache")
    }

    /// The node's `--data-dir`.
    #[allow(dead_code)]
    pub fn data_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Starts once with extra arguments (e.g. `--reinit-cache`).
    pub fn start_with_args(&mut self, args: &[&str]) {
        let saved = self.extra_args.clone();
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self.start();
        self.extra_args = saved;
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
        // Defaults first: the node's and the call's environment override them.
        command
            .env("DLOG_NODE__LEASE_TTL", format!("{LEASE_TTL_SECS}s"))
            .env("DLOG_NODE__METRICS_SAMPLE_INTERVAL", "200ms")
            .env("RUST_LOG", "info");
        for (key, value) in self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(env.iter().copied())
        {
            command.env(key, value);
        }
        command
            .args([
                "serve",
                "--roles",
                self.role,
                "--metastore",
                &self.metastore,
            ])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--node-id", &self.id])
            .args(&self.extra_args);
        if let Some(gid) = self.gid {
            use std::os::unix::process::CommandExt;
            command.gid(gid);
        }
        let log = self.dir.join(format!("{}.log", self.id));
        std::fs::create_dir_all(&self.dir).unwrap();
        self.process = Some(Process::spawn(&self.id, command, &log).unwrap());
    }

    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    pub fn process(&self) -> &Process {
        self.process.as_ref().expect("running")
    }

    /// Waits until the process exits on its own (e.g. at a failpoint).
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let running = self.process.as_mut().is_some_and(|p| p.is_running());
            if !running {
                self.process = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// An environment variable for the node's next starts.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.id))).unwrap_or_default()
    }
}

/// `GET path` on a node's HTTP endpoint (`--metrics-listen`): the status
/// code and the body.
#[allow(dead_code)]
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_owned()))
}

pub struct Cluster {
    pub etcd: EtcdCluster,
    pub s3: Option<S3Server>,
    pub caches: Vec<Node>,
    pub ingests: Vec<Node>,
    pub compactors: Vec<Node>,
    pub readers: Vec<Node>,
    pub manifest: Manifest,
    /// The certificates, when the cluster runs with TLS.
    pub pki: Option<pki::ClusterPki>,
    _dir: tempfile::TempDir,
}

/// What [`Cluster::start_spec`] starts.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSpec {
    pub caches: usize,
    pub ingests: usize,
    pub compactors: usize,
    pub readers: usize,
    /// `--roles` of the ingest nodes: `"ingest"`, or e.g. `"ingest,reader"`
    /// (then they also get the object store).
    pub ingest_roles: &'static str,
    /// Members of the etcd cluster.
    pub etcd_members: usize,
    /// Every node requires client tokens (`auth.tokens`).
    pub auth_tokens: bool,
    /// TLS everywhere: nodes serve and connect over TLS with node
    /// certificates, and etcd takes TLS with client certificates only.
    pub tls: bool,
    /// The `--zone` of each node, by role (`"cache"`, `"ingest"`,
    /// `"compactor"`, `"reader"`) and number from 1; none if unset.
    pub zones: Option<fn(&str, usize) -> &'static str>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            caches: 3,
            ingests: 1,
            compactors: 0,
            readers: 0,
            ingest_roles: "ingest",
            etcd_members: 1,
            auth_tokens: false,
            // Test clusters run with TLS on unless DLOG_TEST_TLS=0.
            tls: std::env::var("DLOG_TEST_TLS").map_or(true, |v| v != "0"),
            zones: None,
        }
    }
}

/// Key prefix of the test cluster's objects in the S3 bucket.
pub const OBJECT_PREFIX: &str = "cluster";

impl Cluster {
    /// Starts etcd, `caches` cache nodes and `ingests` ingest nodes, or
    /// `None` (skip) when etcd is not installed outside CI.
    pub async fn start(caches: usize, ingests: usize) -> Option<Cluster> {
        Self::start_with(caches, ingests, 0, 0).await
    }

    /// Also starts an S3 server (when there are compactors or readers),
    /// `compactors` compactor nodes (`compactor.cache_drop_grace` is 1 s) and
    /// `readers` reader nodes.
    pub async fn start_with(
        caches: usize,
        ingests: usize,
        compactors: usize,
        readers: usize,
    ) -> Option<Cluster> {
        Self::start_spec(ClusterSpec {
            caches,
            ingests,
            compactors,
            readers,
            ..ClusterSpec::default()
        })
        .await
    }

    /// Starts the cluster `spec` describes.
    pub async fn start_spec(spec: ClusterSpec) -> Option<Cluster> {
        let ClusterSpec {
            caches,
            ingests,
            compactors,
            readers,
            ingest_roles,
            etcd_members,
            auth_tokens,
            tls,
            zones,
        } = spec;
        let ingests_read = ingest_roles.contains("reader");
        let dir = tempfile::tempdir().unwrap();
        let pki = tls.then(|| pki::ClusterPki::new(&dir.path().join("pki")));
        let etcd_tls = pki.as_ref().map(|pki| etcd::EtcdTlsFiles {
            server_cert: pki.etcd_server.0.clone(),
            server_key: pki.etcd_server.1.clone(),
            client: pki.etcd_tls(),
        });
        let etcd = EtcdCluster::start_with_tls(etcd_members, |_| next_gid(), etcd_tls)?;
        let s3 = if compactors + readers > 0 || ingests_read {
            Some(S3Server::start()?)
        } else {
            None
        };
        let node = |role: &'static str, i: usize| Node {
            id: format!("{role}-{i}"),
            role,
            port: free_port(),
            metrics_port: free_port(),
            process: None,
            gid: next_gid(),
            dir: dir.path().join(format!("{role}-{i}")),
            metastore: etcd.url(),
            extra_args: zones.map_or_else(Vec::new, |zone_of| {
                vec!["--zone".to_owned(), zone_of(role, i).to_owned()]
            }),
            env: pki
                .as_ref()
                .map_or_else(Vec::new, |pki| pki.node_env(&format!("{role}-{i}"))),
            tls,
        };
        let mut caches: Vec<Node> = (1..=caches).map(|i| node("cache", i)).collect();
        let mut ingests: Vec<Node> = (1..=ingests)
            .map(|i| Node {
                role: ingest_roles,
                ..node("ingest", i)
            })
            .collect();
        let mut compactors: Vec<Node> = (1..=compactors).map(|i| node("compactor", i)).collect();
        let mut readers: Vec<Node> = (1..=readers).map(|i| node("reader", i)).collect();
        let object_store_users = compactors
            .iter_mut()
            .chain(readers.iter_mut())
            .chain(ingests.iter_mut().filter(|_| ingests_read));
        for n in object_store_users {
            let s3 = s3.as_ref().expect("started with compactors or readers");
            n.extra_args.extend([
                "--object-store".into(),
                format!("s3://{}/{OBJECT_PREFIX}", S3Server::BUCKET),
            ]);
            n.env.extend(s3.env());
            n.env
                .push(("DLOG_COMPACTOR__CACHE_DROP_GRACE".into(), "1s".into()));
            n.env
                .push(("DLOG_COMPACTOR__ORPHAN_SWEEP_INTERVAL".into(), "1s".into()));
        }
        for n in caches
            .iter_mut()
            .chain(ingests.iter_mut())
            .chain(compactors.iter_mut())
            .chain(readers.iter_mut())
        {
            if auth_tokens {
                n.env.push(("DLOG_AUTH__TOKENS".into(), "true".into()));
            }
            n.start();
        }
        let manifest = Manifest::new(etcd.store().await, "default");
        // Wait until every node registered (processes start slowly on a
        // loaded 2-core machine: up to 30 s).
        for attempt in 0..300 {
            let registered = manifest
                .nodes(dlog_meta::manifest::Role::Cache)
                .await
                .unwrap()
                .len()
                + manifest
                    .nodes(dlog_meta::manifest::Role::Ingest)
                    .await
                    .unwrap()
                    .len();
            if registered == caches.len() + ingests.len() {
                break;
            }
            assert!(
                attempt < 299,
                "{registered} of {} nodes registered in 30 s",
                caches.len() + ingests.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cluster = Cluster {
            etcd,
            s3,
            caches,
            ingests,
            compactors,
            readers,
            manifest,
            pki,
            _dir: dir,
        };
        cluster.wait_placement_views().await;
        Some(cluster)
    }

    /// Waits until every running ingest node's placement view lists every
    /// running ingest node: before that, a node may take a log the rule
    /// gives to a node it has not seen yet, and hand it over a moment later
    /// (balanced ownership), which tests pinning owners would take for a
    /// change of owner.
    pub async fn wait_placement_views(&self) {
        let running: Vec<&Node> = (self.ingests.iter())
            .filter(|n| n.process.is_some())
            .collect();
        for node in &running {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let listed = match self.try_channel(&node.address()).await {
                    Ok(channel) => {
                        let mut client =
                            dlog_wire::proto::log_service_client::LogServiceClient::new(channel);
                        let request = dlog_wire::proto::ListIngestNodesRequest {};
                        match client.list_ingest_nodes(request).await {
                            Ok(listed) => listed.into_inner().nodes.len(),
                            // Tokens required: not ours to check.
                            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                                return;
                            }
                            Err(_) => 0,
                        }
                    }
                    Err(_) => 0,
                };
                if listed == running.len() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} lists {listed} of {} ingest nodes after 30 s",
                    node.id,
                    running.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Starts one more ingest node, set up like the first (zone, TLS,
    /// tokens), and waits until it registered; returns its index.
    #[allow(dead_code)]
    pub async fn add_ingest(&mut self) -> usize {
        let first = &self.ingests[0];
        let id = format!("ingest-{}", self.ingests.len() + 1);
        let mut env = (self.pki.as_ref()).map_or_else(Vec::new, |pki| pki.node_env(&id));
        env.extend(
            (first.env.iter())
                .filter(|(key, _)| !key.starts_with("DLOG_TLS__"))
                .cloned(),
        );
        let mut node = Node {
            id: id.clone(),
            role: first.role,
            port: free_port(),
            metrics_port: free_port(),
            process: None,
            gid: next_gid(),
            dir: first.dir.with_file_name(&id),
            metastore: first.metastore.clone(),
            extra_args: first.extra_args.clone(),
            env,
            tls: first.tls,
        };
        node.start();
        self.ingests.push(node);
        for _ in 0..300 {
            let registered = retry_etcd("read the ingest nodes", || {
                self.manifest.nodes(dlog_meta::manifest::Role::Ingest)
            })
            .await;
            if registered.iter().any(|n| n.id == id) {
                self.wait_placement_views().await;
                return self.ingests.len() - 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{id} did not register in 30 s");
    }

    /// Moves `log` to ingest node `index` by hand (`MoveLog`) and waits
    /// until that node owns it: each `SealLog` (which appends nothing) is
    /// taken by the node the placement rule names as the answering node
    /// sees it, so once every node has the move, ingest `index` claims it.
    #[allow(dead_code)]
    pub async fn place(&self, client: &distributedlog::Client, log: &str, index: usize) {
        let node = &self.ingests[index].id;
        client.move_log(log, Some(node)).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.owner_of(log).await != Some(index) {
            assert!(
                std::time::Instant::now() < deadline,
                "{log} not owned by {node} 30 s after its move"
            );
            let _ = client.seal(log).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client of `endpoints` of this cluster, trusting its CA when it
    /// runs TLS.
    #[allow(dead_code)]
    pub fn client(&self, endpoints: impl AsRef<str>) -> distributedlog::Client {
        let client = distributedlog::Client::new(endpoints);
        match &self.pki {
            Some(pki) => client.with_tls(&pki.ca.pem),
            None => client,
        }
    }

    /// A gRPC channel to the node at `address`; with TLS, the test
    /// presents a node certificate (it stands in for a node).
    #[allow(dead_code)]
    pub async fn channel(&self, address: &str) -> tonic::transport::Channel {
        self.try_channel(address).await.unwrap()
    }

    /// [`Cluster::channel`], or why it could not connect.
    #[allow(dead_code)]
    pub async fn try_channel(
        &self,
        address: &str,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let endpoint = match &self.pki {
            Some(pki) => pki::tls_endpoint(address, &pki.ca.pem, Some(&pki.test_node))?,
            None => tonic::transport::Endpoint::from_shared(address.to_owned())?,
        };
        endpoint.connect().await
    }

    /// The environment a `dlog` command needs to reach this cluster's
    /// nodes (the CA, when it runs TLS).
    #[allow(dead_code)]
    /// Waits until the closed segments of `log` are `ready` (checked every
    /// 100 ms for `timeout`); returns them. Panics with the manifest's
    /// segments and the first compactor's log on a timeout.
    #[allow(dead_code)]
    pub async fn wait_closed_segments(
        &self,
        log: &str,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&[SegmentMeta]) -> bool,
    ) -> Vec<SegmentMeta> {
        let name: LogName = log.parse().unwrap();
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            let (segments, _) = self.manifest.segments(&name).await.unwrap();
            let closed: Vec<SegmentMeta> = (segments.into_iter())
                .filter(|s| s.state != SegmentState::Open)
                .collect();
            if ready(&closed) {
                return closed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (segments, _) = self.manifest.segments(&name).await.unwrap();
        panic!(
            "segments of {log} not {what} in {timeout:?}: {segments:?}\ncompactor log:\n{}",
            self.compactors[0].log_text()
        );
    }

    pub fn cli_env(&self) -> Vec<(String, String)> {
        self.pki.as_ref().map_or_else(Vec::new, |pki| {
            vec![("DLOG_TLS__CA".to_owned(), pki.ca_file.display().to_string())]
        })
    }

    /// The ingest node that owns `log` now, by index. Retries for up to
    /// 10 s while etcd does not answer (a member was killed, an election).
    pub async fn owner_of(&self, log: &str) -> Option<usize> {
        let log: LogName = log.parse().unwrap();
        let owner = retry_etcd(&format!("reading the owner of {log}"), || {
            self.manifest.owner(&log)
        })
        .await?;
        self.ingests.iter().position(|n| n.id == owner.id)
    }

    /// Every record of the log as stored: offset → payload, read from the
    /// cache nodes segment by segment up to each sealed segment's end.
    /// Every live replica of a segment is read, and the copies of each
    /// entry must be byte-equal. Panics on a gap, an overlap, an open
    /// segment, an entry no live replica holds, replicas that disagree, or
    /// an entry that straddles the sealed end.
    pub async fn read_back(&self, log: &str) -> BTreeMap<u64, Bytes> {
        let name: LogName = log.parse().unwrap();
        let meta = retry_etcd(&format!("reading {log}"), || self.manifest.log(&name)).await;
        let (segments, _) = retry_etcd(&format!("reading the segments of {log}"), || {
            self.manifest.segments(&name)
        })
        .await;
        let mut records = BTreeMap::new();
        let mut expected_start = 0;
        for segment in segments {
            assert_ne!(
                segment.state,
                SegmentState::Open,
                "seal {log} before reading it back"
            );
            assert_eq!(
                segment.start_offset, expected_start,
                "segments of {log} leave a gap or overlap"
            );
            let end = segment.end_offset.unwrap();
            expected_start = end;
            let Some(last_entry) = segment.last_entry_id else {
                assert_eq!(
                    end, segment.start_offset,
                    "segment {} of {log} has records but no last entry",
                    segment.segment_id
                );
                continue;
            };
            let reference = SegmentRef {
                log: log.to_owned(),
                log_id: meta.log_id,
                segment_id: segment.segment_id,
            };
            // entry id → (node, bytes) of the first copy read.
            let mut copies: BTreeMap<u64, (String, Bytes)> = BTreeMap::new();
            for node in &segment.ensemble {
                let Some(address) = self.live_cache_address(node) else {
                    continue;
                };
                for (entry_id, bytes) in read_replica(self, &address, &reference, last_entry).await
                {
                    match copies.get(&entry_id) {
                        None => {
                            copies.insert(entry_id, (node.clone(), bytes));
                        }
                        Some((first, held)) => assert!(
                            *held == bytes,
                            "segment {} of {log}: replicas {first} and {node} hold different \
                             copies of entry {entry_id} ({} and {} bytes)",
                            segment.segment_id,
                            held.len(),
                            bytes.len()
                        ),
                    }
                }
            }
            let mut next_offset = segment.start_offset;
            for entry_id in 0..=last_entry {
                let Some((_, bytes)) = copies.get(&entry_id) else {
                    panic!(
                        "segment {} of {log}: no live replica has entry {entry_id}",
                        segment.segment_id
                    );
                };
                let entry = decode_entry(bytes.clone()).unwrap();
                assert_eq!(
                    entry.header.first_offset, next_offset,
                    "segment {} of {log}: entry {entry_id} breaks dense offsets",
                    segment.segment_id
                );
                let entry_end = next_offset + entry.records.len() as u64;
                assert!(
                    entry_end <= end,
                    "segment {} of {log}: entry {entry_id} holds offsets {next_offset}..{entry_end}, \
                     straddling the sealed end {end}",
                    segment.segment_id
                );
                for record in entry.records {
                    records.insert(next_offset, record.record.payload);
                    next_offset += 1;
                }
            }
            assert_eq!(
                next_offset, end,
                "segment {} of {log}: entries up to the last ({last_entry}) end at offset \
                 {next_offset}, the seal says {end}",
                segment.segment_id
            );
        }
        records
    }

    /// The address of a cache node whose process is running.
    fn live_cache_address(&self, id: &str) -> Option<String> {
        self.caches
            .iter()
            .find(|n| n.id == id && n.process.is_some())
            .map(Node::address)
    }
}

/// Every entry up to `last_entry` that the replica at `address` holds, by
/// id. A replica may lack some (it was closed before they reached it) or the
/// whole segment; any other refusal fails the test.
async fn read_replica(
    cluster: &Cluster,
    address: &str,
    segment: &SegmentRef,
    last_entry: u64,
) -> BTreeMap<u64, Bytes> {
    let channel = cluster
        .try_channel(address)
        .await
        .unwrap_or_else(|err| panic!("connect to live cache node {address}: {err}"));
    let mut client = CacheServiceClient::new(channel);
    let mut held = BTreeMap::new();
    let mut from = 0;
    while from <= last_entry {
        let request = ReadEntriesRequest {
            segment: Some(segment.clone()),
            from_entry: from,
            max_entries: 0,
            fence_epoch: None,
            // A sealed segment reads up to its sealed last entry.
            sealed_last_entry: Some(last_entry),
        };
        let mut stream = match client.read_entries(request).await {
            Ok(response) => response.into_inner(),
            // Not there: this entry (skip it), or the whole segment.
            Err(status) if status.code() == tonic::Code::NotFound => {
                if status.message().starts_with("segment ") {
                    return held;
                }
                from += 1;
                continue;
            }
            Err(status) => panic!("read segment {segment:?} from {address}: {status}"),
        };
        let before = held.len();
        while let Some(message) = stream
            .message()
            .await
            .unwrap_or_else(|err| panic!("read segment {segment:?} from {address}: {err}"))
        {
            let entry = decode_entry(message.entry.clone()).unwrap();
            held.insert(entry.header.entry_id, message.entry);
            from = entry.header.entry_id + 1;
        }
        if held.len() == before {
            break;
        }
    }
    held
}

/// A manifest read by the harness, retried for up to 10 s while etcd does
/// not answer (a member was killed, an election, a connection broken by a
/// restarted member); panics after that, naming `what`.
pub async fn retry_etcd<T, E, F, Fut>(what: &str, mut call: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempts = 0;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(err) if attempts < 100 => {
                attempts += 1;
                tracing::debug!("{what}: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{what}: {err}"),
        }
    }
}

/// The log's next offset, asked up to `tries` times 200 ms apart while no
/// node answers for it (an owner failing over).
pub async fn next_offset(client: &distributedlog::Client, log: &str, tries: usize) -> u64 {
    for _ in 0..tries {
        match client.get_log(log).await {
            Ok(info) => return info.next_offset,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("{log} never became available again");
}

/// Seals the log's open segment, tried up to `tries` times 200 ms apart.
pub async fn seal(client: &distributedlog::Client, log: &str, tries: usize) {
    for _ in 0..tries {
        if client.seal(log).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("could not seal {log}");
}
