//! `dlog-testkit`, test support: real etcd, S3-compatible and Glue-compatible
//! (moto) servers, and child processes with kill / stop / continue controls
//! for fault tests.
//!
//! Servers bind free loopback ports and keep their data in a temporary
//! directory; dropping the handle kills the process and removes the data.
//!
//! Binaries are found on `PATH` (and in `$CARGO_HOME/bin` for `s3s-fs`, in
//! the project venv for `moto_server`);
//! `scripts/install-test-deps.sh` installs them. When one is missing, a
//! test is skipped with a message on stderr, except under `CI=true`, where a
//! missing server is a failure.

mod etcd;
mod moto;
mod ports;
mod process;
mod s3;

pub use etcd::EtcdServer;
pub use moto::MotoServer;
pub use ports::free_port;
pub use process::Process;
pub use s3::S3Server;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Whether we run under CI (`CI=true`, or `CI=1`, as `scripts/lib.sh`
/// reads it too), where nothing may be skipped.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The project's Python venv (pyarrow, nats-server, the Terraform checks),
/// resolved as `scripts/lib.sh` resolves it: `$DLOG_VENV`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/distributedlog/venv`.
pub fn project_venv() -> PathBuf {
    if let Some(venv) = std::env::var_os("DLOG_VENV").filter(|v| !v.is_empty()) {
        return PathBuf::from(venv);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_default();
    cache.join("distributedlog/venv")
}

/// The venv's python when it can import `module`. Missing: `None` (skip,
/// with a message) locally, a panic under CI.
pub fn require_python_module(module: &str) -> Option<PathBuf> {
    let python = project_venv().join("bin/python");
    let imports = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|output| output.status.success());
    match imports {
        true => Some(python),
        false if is_ci() => panic!(
            "{} cannot import {module} and CI=true: a missing tool is a failure \
             (run scripts/install-test-deps.sh)",
            python.display()
        ),
        false => {
            eprintln!(
                "SKIPPED: {} cannot import {module} (run scripts/install-test-deps.sh)",
                python.display()
            );
            None
        }
    }
}

/// The standard output of a command that must have succeeded; `what`
/// names it in the panic, which carries its standard error.
pub fn stdout_of(output: std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Finds an executable on `PATH` or in the extra directories.
pub fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Finds a server binary a test needs. Missing: `None` (skip) locally, a
/// panic under CI.
pub fn require_binary(name: &str, extra_dirs: &[PathBuf], install_hint: &str) -> Option<PathBuf> {
    match find_binary(name, extra_dirs) {
        Some(path) => Some(path),
        None if is_ci() => {
            panic!("{name} not found and CI=true: a missing server is a failure ({install_hint})")
        }
        None => {
            eprintln!("SKIPPED: {name} not found ({install_hint})");
            None
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A unique name for keys, buckets and logs of one test.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{}-{n}",
        std::process::id(),
        dlog_wire::now_ms()
    )
}
