//! A real single-member etcd on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::{Process, free_port, require_binary, wait_for_port};
use dlog_meta::metastore::SharedMetaStore;
use dlog_meta::metastore::etcd::EtcdStore;

/// A running etcd; killed and its data removed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    process: Process,
    client_port: u16,
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd, or returns `None` (skip) when it is not installed and
    /// this is not CI.
    pub fn start() -> Option<EtcdServer> {
        let binary = require_binary(
            "etcd",
            &[],
            "run scripts/install-test-deps.sh or apt-get install etcd-server",
        )?;
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&binary) {
                Ok(server) => return Some(server),
                Err(err) => last_error = err,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    fn try_start(binary: &PathBuf) -> Result<EtcdServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let client_port = free_port();
        let peer_port = free_port();
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new(binary);
        command
            .arg("--name")
            .arg("n1")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n1={peer}")])
            .args(["--log-level", "warn"]);
        let log = dir.path().join("etcd.log");
        let mut process = Process::spawn("etcd", command, &log).map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], client_port).into();
        if !wait_for_port(addr, Duration::from_secs(15)) || !process.is_running() {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("not listening on {addr}: {output}"));
        }
        Ok(EtcdServer {
            process,
            client_port,
            dir,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`, the `--metastore` form.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    /// A connected [`EtcdStore`], retrying while etcd finishes starting.
    pub async fn store(&self) -> SharedMetaStore {
        let endpoints = vec![format!("http://{}", self.endpoint())];
        for _ in 0..100 {
            if let Ok(store) = EtcdStore::connect(&endpoints, None).await {
                use dlog_meta::metastore::MetaStore;
                if store.range("/", true).await.is_ok() {
                    return Arc::new(store);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd at {} does not answer", self.endpoint());
    }

    /// The process, for fault injection.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Directory of its data and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
