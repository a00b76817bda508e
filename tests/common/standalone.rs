//! One `dlog standalone` process on free loopback ports, with its data and
//! its log in a temporary directory; killed when dropped.

use std::process::Command;
use std::time::Duration;

use dlog_testkit::{Process, free_port, wait_for_port};

/// A running `dlog standalone` (gRPC only: no Kafka listener).
pub struct Standalone {
    dir: tempfile::TempDir,
    pub port: u16,
    _process: Process,
}

impl Standalone {
    /// Starts it and waits until its gRPC port listens.
    pub fn start() -> Standalone {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dlog"));
        command
            .arg("standalone")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--kafka-listen", "off"])
            .env("RUST_LOG", "info");
        let log = dir.path().join("standalone.log");
        let process = Process::spawn("standalone", command, &log).unwrap();
        let standalone = Standalone {
            dir,
            port,
            _process: process,
        };
        assert!(
            wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20)),
            "standalone did not start: {}",
            standalone.log_text()
        );
        standalone
    }

    /// `http://127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("standalone.log")).unwrap_or_default()
    }
}
