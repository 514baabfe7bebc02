//! The network check: whether a run can reach addresses the host (or the
//! cluster) listens on, judged against a control run that has a network,
//! so that "unreachable anyway" never passes for "held".

use tokio_util::sync::CancellationToken;

use super::{ended, Finding, Targets};
use crate::config::Network;
use crate::sandbox::{AnySandbox, Command, NullSink, RunSpec, Sandbox, Verdict};

/// Whether a run with the given network could reach each target, and
/// whether one with `bridge` could (the control).
pub(super) struct Reach {
    control: Vec<(String, bool)>,
    under_test: Vec<(String, bool)>,
    error: Option<String>,
}

pub(super) async fn run_network(
    base: &RunSpec,
    targets: &Targets,
    sandbox: &AnySandbox,
    cancel: &CancellationToken,
) -> Reach {
    let probe = |addrs: &[String]| {
        addrs
            .iter()
            .map(|a| {
                let (h, p) = a.rsplit_once(':').unwrap_or((a, "0"));
                format!("if timeout 3 bash -c 'exec 3<>/dev/tcp/{h}/{p}' 2>/dev/null; then echo 'open {a}'; else echo 'shut {a}'; fi")
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut reach = Reach {
        control: Vec::new(),
        under_test: Vec::new(),
        error: None,
    };
    if targets.addrs.is_empty() {
        reach.error = Some("no address to probe".into());
        return reach;
    }
    for (network, into) in [(Network::Bridge, 0), (base.limits.network, 1)] {
        let mut s = base.clone();
        s.limits.network = network;
        s.command = Command::Shell(probe(&targets.addrs));
        match sandbox.run(&s, &mut NullSink, cancel).await {
            Ok(o) if o.verdict == Verdict::Passed => {
                let seen: Vec<(String, bool)> = o
                    .stdout
                    .text
                    .lines()
                    .filter_map(|l| {
                        l.strip_prefix("open ")
                            .map(|a| (a.to_string(), true))
                            .or_else(|| l.strip_prefix("shut ").map(|a| (a.to_string(), false)))
                    })
                    .collect();
                if into == 0 {
                    reach.control = seen;
                } else {
                    reach.under_test = seen;
                }
            }
            other => {
                reach.error = Some(format!("the probe {}", ended(&other)));
                return reach;
            }
        }
    }
    reach
}

pub(super) fn network(r: &Reach, network: Network) -> Finding {
    const CHECK: &str = "no network";
    if let Some(e) = &r.error {
        return Finding::unknown(CHECK, e.clone());
    }
    if let Some((a, _)) = r.under_test.iter().find(|(_, open)| *open) {
        let fix = match network {
            Network::Bridge => "--network bridge gives runs the network: drop it".to_string(),
            Network::None => "the backend does not isolate the network (Kubernetes: a network plugin that enforces NetworkPolicy, see `autodev kube setup`)".to_string(),
        };
        return Finding::broken(CHECK, format!("a run reached {a}"), fix);
    }
    let reachable: Vec<&str> = r
        .control
        .iter()
        .filter(|(_, open)| *open)
        .map(|(a, _)| a.as_str())
        .collect();
    if reachable.is_empty() {
        Finding::unknown(
            CHECK,
            "even a run with --network bridge reached none of the probe addresses",
        )
    } else {
        Finding::held(
            CHECK,
            format!(
                "{} reachable with a network, not from a run",
                reachable.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    fn reach(control: &[bool], under: &[bool]) -> Reach {
        let pairs = |v: &[bool]| {
            v.iter()
                .enumerate()
                .map(|(i, o)| (format!("h:{i}"), *o))
                .collect()
        };
        Reach {
            control: pairs(control),
            under_test: pairs(under),
            error: None,
        }
    }

    #[test]
    fn the_network_check_needs_a_control_to_call_it_held() {
        assert_eq!(
            network(&reach(&[true], &[false]), Network::None).status,
            Status::Held
        );
        assert_eq!(
            network(&reach(&[true], &[true]), Network::None).status,
            Status::Broken
        );
        assert_eq!(
            network(&reach(&[false], &[false]), Network::None).status,
            Status::Unknown
        );
        let b = network(&reach(&[true], &[true]), Network::Bridge);
        assert!(b.fix.unwrap().contains("--network bridge"));
    }
}
