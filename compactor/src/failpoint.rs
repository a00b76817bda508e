//! Crash points for tests: `DLOG_FAILPOINTS=name[,name..]` makes the process
//! abort (as abruptly as `kill -9`, no cleanup) when it reaches a named
//! point. Each crash-critical step of the compactor names one, so tests can
//! kill it between every pair of steps and check what the next run does.
//! Unset (always, outside tests) a point costs one lookup in an empty set.

use std::collections::HashSet;
use std::sync::OnceLock;

fn armed() -> &'static HashSet<String> {
    static ARMED: OnceLock<HashSet<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("DLOG_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// Aborts the process here if the point `name` is armed.
pub fn hit(name: &str) {
    if armed().contains(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
