//! Crash points for tests: once [`arm`]ed with names (the `dlog` binary
//! takes them from its `compactor.failpoints` setting), the process aborts
//! (as abruptly as `kill -9`, no cleanup) when it reaches a named point.
//! Each crash-critical step of the compactor names one, so tests can kill
//! it between every pair of steps and check what the next run does. Unarmed
//! (always, outside tests) a point costs one lookup in an empty set.

use std::collections::HashSet;
use std::sync::OnceLock;

static ARMED: OnceLock<HashSet<String>> = OnceLock::new();

fn armed() -> &'static HashSet<String> {
    ARMED.get_or_init(HashSet::new)
}

/// Arms the points `names` for the rest of the process; only the first
/// call counts (a process arms once, at start).
pub fn arm(names: &[String]) {
    let names = names
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let _ = ARMED.set(names);
}

/// Aborts the process here if the point `name` is armed.
pub fn hit(name: &str) {
    if armed().contains(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
