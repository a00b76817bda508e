//! Loopback ports for servers the tests start.
//!
//! A port taken with `bind(127.0.0.1:0)` and released comes from the
//! kernel's ephemeral range, the same range every outgoing connection takes
//! its local port from. Between releasing it and the server binding it, a
//! client of another test (nextest runs tests as parallel processes) may
//! take it, and the server fails with "address already in use"; CI saw
//! exactly that for an etcd member.
//!
//! So a port handed out here is:
//! - outside the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`),
//!   where the kernel never picks a local port on its own;
//! - reserved for the life of this process by an exclusive lock on
//!   `$TMPDIR/dlog-test-ports/PORT`, which every test process honours and
//!   the kernel releases when the process exits, even on `kill -9`;
//! - free to bind at the moment it is handed out.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Mutex;

/// Reserved ports and the lock files that hold them, for the process's life.
static RESERVED: Mutex<Vec<(u16, File)>> = Mutex::new(Vec::new());

/// Lowest port handed out: below it sit well-known services.
const LOWEST: u16 = 10_000;

/// A loopback port that no other test process holds, that the kernel will
/// not give to an outgoing connection, and that was free a moment ago.
pub fn free_port() -> u16 {
    let range = candidate_range();
    let span = u32::from(range.end() - range.start()) + 1;
    let start = seed() % span;
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let taken: HashSet<u16> = reserved.iter().map(|(port, _)| *port).collect();
    for step in 0..span {
        let port = range.start() + ((start + step) % span) as u16;
        if taken.contains(&port) {
            continue;
        }
        let Some(lock) = try_reserve(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            reserved.push((port, lock));
            return port;
        }
    }
    panic!("no free loopback port in {range:?} outside the ephemeral range");
}

/// Ports outside the kernel's ephemeral range: below it when there is room
/// (Linux's default range starts at 32768), else above it.
fn candidate_range() -> RangeInclusive<u16> {
    let (low, high) = ephemeral_range();
    if low > LOWEST + 1_000 {
        LOWEST..=low - 1
    } else if high < u16::MAX - 1_000 {
        high + 1..=u16::MAX
    } else {
        panic!(
            "the ephemeral port range {low}-{high} leaves no room for test servers; \
             narrow net.ipv4.ip_local_port_range"
        )
    }
}

/// `/proc/sys/net/ipv4/ip_local_port_range`, or Linux's default.
fn ephemeral_range() -> (u16, u16) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut numbers = text.split_whitespace().filter_map(|n| n.parse().ok());
    match (numbers.next(), numbers.next()) {
        (Some(low), Some(high)) if low <= high => (low, high),
        _ => (32_768, 60_999),
    }
}

/// Holds `PORT`'s lock file, or `None` when another process holds it.
fn try_reserve(port: u16) -> Option<File> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("create the port lock directory {}: {e}", dir.display()));
    let path = dir.join(port.to_string());
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open the port lock {}: {e}", path.display()));
    file.try_lock().ok().map(|()| file)
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("dlog-test-ports")
}

/// Where this process starts looking, so that parallel test processes
/// mostly try different ports first.
fn seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::process::id().wrapping_mul(2_654_435_761) ^ nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_outside_the_ephemeral_range_and_locked() {
        let (low, high) = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            assert!(
                !(low..=high).contains(&port),
                "{port} is in the ephemeral range {low}-{high}"
            );
            // Another process would find the lock held.
            let other = OpenOptions::new()
                .write(true)
                .open(lock_dir().join(port.to_string()))
                .unwrap();
            assert!(other.try_lock().is_err(), "{port}'s lock is not held");
        }
    }
}
