//! A child process a test owns, with the fault controls the fault tests use (kill -9, SIGSTOP, SIGCONT, SIGINT).

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Spawns `command` with stdout and stderr appended to `log_file`.
    pub fn spawn(name: &str, mut command: Command, log_file: &Path) -> std::io::Result<Process> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command.spawn()?;
        Ok(Process {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` (`TERM`, `INT`, …) and returns without waiting.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} {} ({}) failed",
            self.pid(),
            self.name
        );
    }

    /// `kill -9`: the process dies without any cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `SIGTERM` and wait: a clean shutdown.
    pub fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.signal("TERM");
        self.child.wait()
    }

    /// `SIGINT` (Ctrl-C) and wait: a clean shutdown.
    pub fn interrupt(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.signal("INT");
        self.child.wait()
    }

    /// `SIGSTOP`: the process freezes (a long GC pause, a hung VM).
    pub fn stop(&self) {
        self.signal("STOP");
    }

    /// `SIGCONT`: the frozen process resumes, unaware time passed.
    pub fn cont(&self) {
        self.signal("CONT");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill();
        }
    }
}
