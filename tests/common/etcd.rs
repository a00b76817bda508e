//! A real etcd cluster of one or more members on loopback, whose members
//! the fault tests can kill and restart (a restarted member keeps its data
//! directory and rejoins).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dlog_meta::metastore::SharedMetaStore;
use dlog_meta::metastore::etcd::EtcdStore;
use dlog_testkit::{Process, free_port, require_binary, wait_for_port};

/// One member: its ports, directory and process (`None` while killed).
#[derive(Debug)]
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    peer_port: u16,
    pub process: Option<Process>,
    /// The group id the member runs under (see [`super::Node::gid`]).
    pub gid: Option<u32>,
}

/// The members, and the flags they were started with.
#[derive(Debug)]
pub struct EtcdCluster {
    binary: PathBuf,
    pub members: Vec<EtcdMember>,
    initial_cluster: String,
    dir: tempfile::TempDir,
    /// Clients must come over TLS with a client certificate.
    tls: Option<EtcdTlsFiles>,
    /// Members that trust another CA file than `tls.client.ca`.
    trusted_ca: std::collections::HashMap<usize, PathBuf>,
}

/// etcd's side of TLS: its certificate and key, and the CA of the client
/// certificates it accepts (the same CA signed both); and the client side.
#[derive(Debug, Clone)]
pub struct EtcdTlsFiles {
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client: dlog_meta::metastore::EtcdTls,
}

impl EtcdCluster {
    /// Starts `members` members and waits until they elected a leader, or
    /// returns `None` (skip) when etcd is not installed and this is not CI.
    pub fn start(members: usize, gids: impl Fn(usize) -> Option<u32>) -> Option<EtcdCluster> {
        Self::start_with_tls(members, gids, None)
    }

    /// [`EtcdCluster::start`], serving clients over TLS only and with
    /// client-certificate auth when `tls` is given.
    pub fn start_with_tls(
        members: usize,
        gids: impl Fn(usize) -> Option<u32>,
        tls: Option<EtcdTlsFiles>,
    ) -> Option<EtcdCluster> {
        let binary = require_binary(
            "etcd",
            &[],
            "run scripts/install-test-deps.sh or apt-get install etcd-server",
        )?;
        let members: Vec<EtcdMember> = (1..=members)
            .map(|i| EtcdMember {
                name: format!("etcd-{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
                gid: gids(i - 1),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            binary,
            members,
            initial_cluster,
            dir: tempfile::tempdir().unwrap(),
            tls,
            trusted_ca: Default::default(),
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.members.len() {
            cluster.wait_listening(i);
        }
        Some(cluster)
    }

    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let client = format!("{}://127.0.0.1:{}", self.scheme(), member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new(&self.binary);
        command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&member.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "warn"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(self.trusted_ca.get(&i).unwrap_or(&tls.client.ca))
                .arg("--client-cert-auth");
        }
        if let Some(gid) = member.gid {
            use std::os::unix::process::CommandExt;
            command.gid(gid);
        }
        let log = self.dir.path().join(format!("{}.log", member.name));
        let process = Process::spawn(&member.name, command, &log).unwrap();
        self.members[i].process = Some(process);
    }

    fn wait_listening(&mut self, i: usize) {
        let port = self.members[i].client_port;
        assert!(
            wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(15)),
            "{} is not listening: {}",
            self.members[i].name,
            std::fs::read_to_string(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name))
            )
            .unwrap_or_default()
        );
    }

    /// `kill -9` member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill();
        }
    }

    /// Restarts member `i` trusting the client CAs in `ca_file` (PEM).
    #[allow(dead_code)]
    pub fn restart_trusting(&mut self, i: usize, ca_file: PathBuf) {
        self.kill(i);
        self.trusted_ca.insert(i, ca_file);
        self.ensure_running(i);
    }

    /// Starts member `i` again on its data directory, if it is not running.
    pub fn ensure_running(&mut self, i: usize) {
        let running = self.members[i]
            .process
            .as_mut()
            .is_some_and(|p| p.is_running());
        if !running {
            self.spawn(i);
            self.wait_listening(i);
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `HOST:PORT,HOST:PORT,…`.
    fn hosts(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `--metastore` URL naming every member.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.hosts())
    }

    /// A connected store, retrying while the cluster elects a leader.
    pub async fn store(&self) -> SharedMetaStore {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect();
        let tls = self.tls.as_ref().map(|tls| &tls.client);
        for _ in 0..150 {
            if let Ok(store) = EtcdStore::connect(&endpoints, tls).await {
                use dlog_meta::metastore::MetaStore;
                if store.range("/", true).await.is_ok() {
                    return Arc::new(store);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd at {} does not answer", self.hosts());
    }
}
