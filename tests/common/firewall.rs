//! Network partitions between processes on loopback, with iptables.
//!
//! Every test process runs under a group id of its own
//! ([`super::Node::gid`]), and iptables' `owner` match sees the group of
//! the socket a packet leaves from. A cut from A to B drops every TCP
//! packet A sends to B's listening port: A's requests and its
//! acknowledgements of B's answers, so the connection stalls both ways
//! (B's listening port is shared by all its peers, which is why the rule
//! names A's group, not a port of A). Rules live in a chain of their own,
//! which is flushed by [`Firewall::heal`] and removed on drop.

use std::process::Command;

/// The partitions one test has in place.
#[derive(Debug)]
pub struct Firewall {
    chain: String,
}

/// Whether this process may change iptables rules (root, iptables
/// installed, the `owner` match available).
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
        let firewall = Firewall {
            chain: format!("DLOG-TEST-{}", std::process::id()),
        };
        iptables(&["-N", &firewall.chain])?;
        iptables(&["-I", "OUTPUT", "-o", "lo", "-j", &firewall.chain])?;
        Ok(firewall)
    }

    /// Drops what processes of group `from` send to port `to`.
    pub fn cut(&self, from: u32, to: u16) {
        let (from, to) = (from.to_string(), to.to_string());
        let rule = [
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
        ];
        iptables(&rule).unwrap();
    }

    /// Removes every cut.
    pub fn heal(&self) {
        iptables(&["-F", &self.chain]).unwrap();
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = iptables(&["-D", "OUTPUT", "-o", "lo", "-j", &self.chain]);
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}
