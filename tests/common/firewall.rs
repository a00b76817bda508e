//! Network partitions between processes on loopback, with iptables.
//!
//! Every test process runs under a group id of its own
//! ([`super::Node::gid`]), and iptables' `owner` match sees the group of
//! the socket a packet leaves from. A cut from A to B drops every TCP
//! packet A sends to B's listening port: A's requests and its
//! acknowledgements of B's answers, so the connection stalls both ways
//! (B's listening port is shared by all its peers, which is why the rule
//! names A's group, not a port of A). Rules live in a chain of their own,
//! which is flushed by [`Firewall::heal`] and removed on drop; a chain left
//! behind by a test process that was killed (no drop ran) is removed by
//! the next [`Firewall::new`].

use std::process::Command;

/// The partitions one test has in place.
#[derive(Debug)]
pub struct Firewall {
    chain: String,
}

/// Whether this process may change iptables rules (root, iptables
/// installed); [`Firewall::new`] also checks the `owner` match.
pub fn available() -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    root && iptables(&["-L", "OUTPUT", "-n"]).is_ok()
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let output = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .map_err(|err| format!("run iptables: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Firewall {
    /// A chain of this process's own, jumped to from `OUTPUT` on loopback.
    pub fn new() -> Result<Firewall, String> {
        remove_chains_of_dead_processes();
        let chain = format!("{CHAIN_PREFIX}{}", std::process::id());
        iptables(&["-N", &chain])?;
        // From here on, drop removes whatever was set up.
        let firewall = Firewall { chain };
        iptables(&["-I", "OUTPUT", "-o", "lo", "-j", &firewall.chain])?;
        // The owner match must load: cut a port nothing listens on.
        firewall.try_cut(u32::MAX - 1, 1)?;
        firewall.heal();
        Ok(firewall)
    }

    fn try_cut(&self, from: u32, to: u16) -> Result<(), String> {
        let (from, to) = (from.to_string(), to.to_string());
        iptables(&[
            "-A",
            &self.chain,
            "-p",
            "tcp",
            "-m",
            "owner",
            "--gid-owner",
            &from,
            "--dport",
            &to,
            "-j",
            "DROP",
        ])
    }

    /// Drops what processes of group `from` send to port `to`.
    pub fn cut(&self, from: u32, to: u16) {
        self.try_cut(from, to).unwrap();
    }

    /// Removes every cut.
    pub fn heal(&self) {
        iptables(&["-F", &self.chain]).unwrap();
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain(&self.chain);
    }
}

const CHAIN_PREFIX: &str = "DLOG-TEST-";

fn remove_chain(chain: &str) {
    let _ = iptables(&["-D", "OUTPUT", "-o", "lo", "-j", chain]);
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

/// Chains of test processes that are gone (killed before their drop ran).
fn remove_chains_of_dead_processes() {
    let Ok(output) = Command::new("iptables").args(["-w", "5", "-S"]).output() else {
        return;
    };
    let rules = String::from_utf8_lossy(&output.stdout);
    for line in rules.lines() {
        let Some(chain) = line.strip_prefix("-N ") else {
            continue;
        };
        let Some(pid) = chain.strip_prefix(CHAIN_PREFIX) else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            remove_chain(chain);
        }
    }
}
