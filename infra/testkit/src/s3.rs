//! A real S3-compatible server (s3s-fs) on loopback, with signature checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{Process, free_port, require_binary, wait_for_port};
use dlog_storage::objstore::{self, ObjectStoreHandle};

const ACCESS_KEY: &str = "dlogtestaccess";
const SECRET_KEY: &str = "dlogtestsecret0123456789";

/// A running s3s-fs; killed and its data removed on drop.
#[derive(Debug)]
pub struct S3Server {
    process: Process,
    port: u16,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs with one bucket, or `None` (skip) when it is not
    /// installed and this is not CI.
    pub fn start() -> Option<S3Server> {
        let cargo_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|home| home.join("bin"))
            .into_iter()
            .collect::<Vec<_>>();
        let binary = require_binary(
            "s3s-fs",
            &cargo_bin,
            "run scripts/install-test-deps.sh or cargo install s3s-fs --locked --version 0.14.1 --features binary",
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(Self::BUCKET)).expect("create bucket directory");
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root);
        let log = dir.path().join("s3s-fs.log");
        let mut process = Process::spawn("s3s-fs", command, &log).expect("spawn s3s-fs");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if !wait_for_port(addr, Duration::from_secs(15)) || !process.is_running() {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("s3s-fs not listening on {addr}: {output}");
        }
        Some(S3Server { process, port, dir })
    }

    /// The bucket created at start.
    pub const BUCKET: &'static str = "dlog-test";

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `AWS_*` variables a `dlog` process needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// An object store on this server's bucket under `prefix`.
    pub fn object_store(&self, prefix: &str) -> ObjectStoreHandle {
        let options = self
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v));
        objstore::open_with(&format!("s3://{}/{prefix}", Self::BUCKET), options)
            .expect("object store on the test S3 server")
    }

    /// The process, for fault injection.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Directory the bucket lives in (`root/<bucket>`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
