//! A real Glue-compatible server on loopback: moto's server (`moto_server`,
//! from the project venv), which speaks the AWS Glue API. It accepts any
//! credentials and, unlike AWS Glue, ignores UpdateTable's `VersionId`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use super::{Process, free_port, project_venv, require_binary, wait_for_port};

/// A running moto server; killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    _process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl MotoServer {
    /// Access key of the tests' requests (moto takes any).
    pub const ACCESS_KEY: &'static str = "dlogtestaccess";
    /// Secret key of the tests' requests.
    pub const SECRET_KEY: &'static str = "dlogtestsecret0123456789";
    /// The region of the tests' requests.
    pub const REGION: &'static str = "us-east-1";

    /// Starts moto's server, or `None` (skip) when it is not installed and
    /// this is not CI.
    pub fn start() -> Option<MotoServer> {
        let binary = require_binary(
            "moto_server",
            &[project_venv().join("bin")],
            "run scripts/install-test-deps.sh (PyPI moto[server,glue] in the project venv)",
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut command = Command::new(binary);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let log = dir.path().join("moto.log");
        let mut process = Process::spawn("moto_server", command, &log).expect("spawn moto_server");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if !wait_for_port(addr, Duration::from_secs(30)) || !process.is_running() {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("moto_server not listening on {addr}: {output}");
        }
        Some(MotoServer {
            _process: process,
            port,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `glue://` catalog URI of this server.
    pub fn glue_uri(&self) -> String {
        format!(
            "glue://?region={}&endpoint={}",
            Self::REGION,
            self.endpoint()
        )
    }

    /// The `AWS_*` variables a process needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), Self::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), Self::SECRET_KEY.into()),
            ("AWS_REGION".into(), Self::REGION.into()),
        ]
    }
}
