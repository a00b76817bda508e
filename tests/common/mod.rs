//! A local cluster of real processes for end-to-end tests: one etcd, cache
//! nodes and ingest nodes (`dlog serve`), each killable, stoppable and
//! restartable; plus a checker that reads a log back straight from the
//! cache nodes (segment by segment, up to each sealed end).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use dlog_infra::codec::decode_entry;
use dlog_infra::manifest::{Manifest, SegmentState};
use dlog_infra::names::LogName;
use dlog_infra::proto::cache_service_client::CacheServiceClient;
use dlog_infra::proto::{ReadEntriesRequest, SegmentRef};
use dlog_infra::testkit::{EtcdServer, Process, S3Server, free_port, wait_for_port};

/// Lease TTL of the test nodes: short, so failover tests are quick.
pub const LEASE_TTL_SECS: u64 = 2;

/// One `dlog serve` process and how to start it again.
pub struct Node {
    pub id: String,
    pub role: &'static str,
    pub port: u16,
    pub process: Option<Process>,
    dir: std::path::PathBuf,
    metastore: String,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Node {
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

    /// Starts with `DLOG_FAILPOINTS=point`, not waiting for the port: it
    /// may abort before it listens. See [`Node::wait_exit`].
    pub fn start_to_crash_at(&mut self, point: &str) {
        self.spawn(&[("DLOG_FAILPOINTS", point)]);
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
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
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--node-id", &self.id])
            .args(&self.extra_args)
            .env("DLOG_NODE_LEASE_TTL_SECS", LEASE_TTL_SECS.to_string())
            .env("RUST_LOG", "info");
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

pub struct Cluster {
    pub etcd: EtcdServer,
    pub s3: Option<S3Server>,
    pub caches: Vec<Node>,
    pub ingests: Vec<Node>,
    pub compactors: Vec<Node>,
    pub readers: Vec<Node>,
    pub manifest: Manifest,
    _dir: tempfile::TempDir,
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
    /// `compactors` compactor nodes (`DLOG_CACHE_DROP_GRACE_SECS` is 1) and
    /// `readers` reader nodes.
    pub async fn start_with(
        caches: usize,
        ingests: usize,
        compactors: usize,
        readers: usize,
    ) -> Option<Cluster> {
        let etcd = EtcdServer::start()?;
        let s3 = if compactors + readers > 0 {
            Some(S3Server::start()?)
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap();
        let node = |role: &'static str, i: usize| Node {
            id: format!("{role}-{i}"),
            role,
            port: free_port(),
            process: None,
            dir: dir.path().join(format!("{role}-{i}")),
            metastore: etcd.url(),
            extra_args: Vec::new(),
            env: Vec::new(),
        };
        let mut caches: Vec<Node> = (1..=caches).map(|i| node("cache", i)).collect();
        let mut ingests: Vec<Node> = (1..=ingests).map(|i| node("ingest", i)).collect();
        let mut compactors: Vec<Node> = (1..=compactors).map(|i| node("compactor", i)).collect();
        let mut readers: Vec<Node> = (1..=readers).map(|i| node("reader", i)).collect();
        for n in compactors.iter_mut().chain(readers.iter_mut()) {
            let s3 = s3.as_ref().expect("started with compactors or readers");
            n.extra_args = vec![
                "--object-store".into(),
                format!("s3://{}/{OBJECT_PREFIX}", S3Server::BUCKET),
            ];
            n.env = s3.env();
            n.env
                .push(("DLOG_CACHE_DROP_GRACE_SECS".into(), "1".into()));
        }
        for n in caches
            .iter_mut()
            .chain(ingests.iter_mut())
            .chain(compactors.iter_mut())
            .chain(readers.iter_mut())
        {
            n.start();
        }
        let manifest = Manifest::new(etcd.store().await, "default");
        // Wait until every node registered.
        for _ in 0..100 {
            let registered = manifest
                .nodes(dlog_infra::manifest::Role::Cache)
                .await
                .unwrap()
                .len()
                + manifest
                    .nodes(dlog_infra::manifest::Role::Ingest)
                    .await
                    .unwrap()
                    .len();
            if registered == caches.len() + ingests.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Cluster {
            etcd,
            s3,
            caches,
            ingests,
            compactors,
            readers,
            manifest,
            _dir: dir,
        })
    }

    /// The ingest node that owns `log` now, by index.
    pub async fn owner_of(&self, log: &str) -> Option<usize> {
        let log: LogName = log.parse().unwrap();
        let owner = self.manifest.owner(&log).await.unwrap()?;
        self.ingests.iter().position(|n| n.id == owner.id)
    }

    fn cache_address(&self, id: &str) -> Option<String> {
        self.caches.iter().find(|n| n.id == id).map(Node::address)
    }

    /// Every record of the log as stored: offset → payload, read from the
    /// cache nodes segment by segment up to each sealed segment's end.
    /// Panics on a gap, an overlap or an open segment.
    pub async fn read_back(&self, log: &str) -> BTreeMap<u64, Bytes> {
        let name: LogName = log.parse().unwrap();
        let meta = self.manifest.log(&name).await.unwrap();
        let (segments, _) = self.manifest.segments(&name).await.unwrap();
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
            if end == segment.start_offset {
                continue;
            }
            let reference = SegmentRef {
                log: log.to_owned(),
                log_id: meta.log_id,
                segment_id: segment.segment_id,
            };
            let mut next_offset = segment.start_offset;
            let mut next_entry = 0;
            'entries: while next_offset < end {
                let mut progressed = false;
                for node in &segment.ensemble {
                    let Some(address) = self.cache_address(node) else {
                        continue;
                    };
                    let Ok(mut client) = CacheServiceClient::connect(address).await else {
                        continue;
                    };
                    let request = ReadEntriesRequest {
                        segment: Some(reference.clone()),
                        from_entry: next_entry,
                        max_entries: 0,
                        fence_epoch: None,
                        // A sealed segment reads up to its sealed last entry.
                        sealed_last_entry: segment.last_entry_id,
                    };
                    let Ok(response) = client.read_entries(request).await else {
                        continue;
                    };
                    let mut stream = response.into_inner();
                    while let Ok(Some(message)) = stream.message().await {
                        let entry = decode_entry(message.entry).unwrap();
                        if entry.header.entry_id != next_entry || next_offset >= end {
                            break;
                        }
                        assert_eq!(
                            entry.header.first_offset, next_offset,
                            "entry offsets are dense"
                        );
                        for record in entry.records {
                            if next_offset < end {
                                records.insert(next_offset, record.record.payload);
                            }
                            next_offset += 1;
                        }
                        next_entry += 1;
                        progressed = true;
                    }
                    if progressed {
                        continue 'entries;
                    }
                }
                panic!(
                    "segment {} of {log}: no replica has entry {next_entry}",
                    segment.segment_id
                );
            }
        }
        records
    }
}
