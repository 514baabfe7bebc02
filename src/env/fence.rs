//! The fence between a set-up container and the host it runs on.
//!
//! An internal Docker network has no route out, but its gateway address is
//! the host's own, and the host's input rules let a container reach every
//! service there that listens on all addresses. While a set-up runs, two
//! input rules on its bridge leave it one way in: the egress proxy's port.
//! They are removed when the set-up ends, on every path.

use std::net::SocketAddr;
use std::process::Command;

use super::EnvError;

/// Input rules that hold while this lives.
#[derive(Debug)]
pub(super) struct Fence {
    rules: Vec<Vec<String>>,
}

impl Fence {
    /// Lets `bridge` reach `proxy` on this host and nothing else here.
    pub(super) fn up(bridge: &str, proxy: SocketAddr) -> Result<Fence, EnvError> {
        let drop_all = vec!["INPUT", "-i", bridge, "-j", "DROP"];
        let port = proxy.port().to_string();
        let ip = proxy.ip().to_string();
        let allow_proxy = vec![
            "INPUT", "-i", bridge, "-p", "tcp", "-d", &ip, "--dport", &port, "-j", "ACCEPT",
        ];
        let mut fence = Fence { rules: Vec::new() };
        // Inserted in this order, the proxy's rule ends up first.
        for rule in [drop_all, allow_proxy] {
            let rule: Vec<String> = rule.into_iter().map(String::from).collect();
            iptables("-I", &rule).map_err(|why| {
                EnvError::Unsupported(format!(
                    "the set-up phase fences its network off this host with iptables, which failed ({why}); \
                     run as root with iptables installed, or pass --no-setup"
                ))
            })?;
            fence.rules.push(rule);
        }
        Ok(fence)
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        for rule in self.rules.drain(..).rev() {
            if let Err(why) = iptables("-D", &rule) {
                crate::errln!(
                    "autodev: warning: could not remove the input rule `iptables -D {}`: {why}",
                    rule.join(" ")
                );
            }
        }
    }
}

fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
