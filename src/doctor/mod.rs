//! `autodev doctor`: proves, from the host side, that the sandbox as
//! configured keeps each of its guarantees on this host, by running small
//! hostile workloads through the real backend and reading their verdicts.
//! A check that cannot decide says so; it never passes by default.

use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::sandbox::{
    AnySandbox, Command, Junit, NullSink, Outcome, RunSpec, Sandbox, SandboxError, Verdict,
};

/// How a guarantee fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A hostile workload tried and the sandbox stopped it.
    Held,
    /// A hostile workload got through.
    Broken,
    /// The check could not decide.
    Unknown,
}

/// One guarantee's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What is guaranteed.
    pub check: &'static str,
    /// How it fared.
    pub status: Status,
    /// What was seen.
    pub detail: String,
    /// What to do, when it did not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn held(check: &'static str, detail: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Held,
            detail: detail.into(),
            fix: None,
        }
    }
    fn broken(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Broken,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn unknown(check: &'static str, detail: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Unknown,
            detail: detail.into(),
            fix: None,
        }
    }
}

/// Label on every doctor run, so the leftover check finds only its own.
pub const DOCTOR_LABEL: &str = "autodev.doctor";

/// Where the network probes aim: addresses the host (or cluster) listens
/// on, which a run without network must not reach.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// `host:port` pairs.
    pub addrs: Vec<String>,
}

mod checks;
mod egress;
mod kernel;
mod mounts;
mod network;

use network::{network, run_network};

/// Runs every check against `sandbox` with the settings of `base` (image,
/// limits, network, runtime as the user gave them).
pub async fn examine(
    sandbox: &AnySandbox,
    base: &RunSpec,
    targets: &Targets,
    cancel: &CancellationToken,
) -> Result<Vec<Finding>, SandboxError> {
    let run_id = format!("{}-{:x}", std::process::id(), fastrand::u32(..));
    let mut base = base.clone();
    base.junit = Junit::Off;
    base.labels.push((DOCTOR_LABEL.into(), run_id.clone()));
    let run = |command: String, timeout: Option<Duration>| {
        let mut s = base.clone();
        s.command = Command::Shell(command);
        if let Some(t) = timeout {
            s.limits.timeout = t;
        }
        async move { sandbox.run(&s, &mut NullSink, cancel).await }
    };

    // The image: everything else depends on the wrapper's /bin/sh and tar.
    sandbox.preflight(&base).await?;
    let image = run("true".into(), None).await?;
    let mut found = vec![checks::image(&base, &image)];
    for check in checks::CHECKS {
        let outcome = run((check.command)(&base.limits), check.timeout).await;
        found.extend(check.judge.findings(&base, &outcome));
    }
    found.push(network(
        &run_network(&base, targets, sandbox, cancel).await,
        base.limits.network,
    ));
    // The set-up phase's own network, where the set-up phase runs.
    if let Some(docker) = sandbox.as_docker().and_then(|f| f.engines().next()) {
        found.extend(egress::check(docker, &base, cancel).await);
    }
    // Nothing of any run above may be left.
    found.push(
        match sandbox.clean(&[(DOCTOR_LABEL.into(), run_id)]).await {
            Ok(0) => Finding::held("no leftovers", "every sandbox of these checks was removed"),
            Ok(n) => Finding::broken(
                "no leftovers",
                format!("{n} sandbox(es) of these checks were still there"),
                "report this: every sandbox must be removed on every path",
            ),
            Err(e) => Finding::unknown("no leftovers", e.to_string()),
        },
    );
    Ok(found)
}

fn ended(r: &Result<Outcome, SandboxError>) -> String {
    match r {
        Ok(o) => format!("ended {} (exit {:?})", o.verdict, o.exit_code),
        Err(e) => format!("could not run: {e}"),
    }
}

/// The lockdown probe's findings; `given` are the variables passed on
/// purpose (`--env`), which are not leaks.
fn lockdown_findings(r: &Result<Outcome, SandboxError>, given: &[&str]) -> Vec<Finding> {
    let o = match r {
        Ok(o) if o.verdict == Verdict::Passed => o,
        other => {
            return ["read-only root", "privileges", "host environment"]
                .into_iter()
                .map(|c| Finding::unknown(c, ended(other)))
                .collect()
        }
    };
    let text = &o.stdout.text;
    let mut f = Vec::new();
    f.push(if text.contains("wrote-root") {
        Finding::broken(
            "read-only root",
            "a run wrote to /var/tmp on the root filesystem",
            "the engine ignored the read-only root filesystem",
        )
    } else if text.contains("Read-only file system") {
        Finding::held(
            "read-only root",
            "writing to /var/tmp failed: read-only file system",
        )
    } else {
        Finding::unknown(
            "read-only root",
            format!(
                "the write failed, but not for a read-only file system: {}",
                text.lines().next().unwrap_or("no message")
            ),
        )
    });
    let caps_none = text.contains("CapEff:\t0000000000000000");
    // Some runtimes (gVisor) do not show the flag in /proc at all; the
    // kernel's own answer (prctl, through `setpriv`) is then the word.
    let nnp = match (
        text.contains("NoNewPrivs:\t1") || text.contains("no_new_privs: 1"),
        text.contains("NoNewPrivs:") || text.contains("no_new_privs:"),
    ) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    };
    let root = text.lines().any(|l| l.trim() == "0");
    f.push(match (caps_none && !root, nnp) {
        (true, Some(true)) => {
            Finding::held("privileges", "non-root, no capabilities, no-new-privileges")
        }
        (true, None) => Finding::unknown(
            "privileges",
            "non-root, no capabilities; whether no-new-privileges is set is not visible from inside this runtime (neither /proc nor setpriv tells)",
        ),
        _ => Finding::broken(
            "privileges",
            format!("capabilities dropped: {caps_none}, no-new-privileges: {nnp:?}, root: {root}"),
            "the engine or runtime did not apply the security settings",
        ),
    });
    // Variables that images set to the same values as hosts do are not leaks.
    const COMMON: [&str; 8] = [
        "PATH", "HOME", "LANG", "HOSTNAME", "PWD", "SHLVL", "TERM", "_",
    ];
    let leaked: Vec<String> = std::env::vars()
        .filter(|(k, v)| {
            !COMMON.contains(&k.as_str())
                && !given.contains(&k.as_str())
                && !k.starts_with("LC_")
                && v.len() >= 4
        })
        .filter(|(k, v)| text.lines().any(|l| l == format!("{k}={v}")))
        .map(|(k, _)| k)
        .collect();
    f.push(if leaked.is_empty() {
        Finding::held(
            "host environment",
            "no variable of this process reached the run",
        )
    } else {
        Finding::broken(
            "host environment",
            format!("these reached the run: {}", leaked.join(", ")),
            "report this: only --env may pass variables",
        )
    });
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_output(text: String) -> Result<Outcome, SandboxError> {
        use crate::sandbox::Captured;
        let stdout = Captured {
            total_bytes: text.len() as u64,
            text,
            dropped_bytes: 0,
        };
        Ok(Outcome::new(
            Verdict::Passed,
            Some(0),
            stdout,
            Captured::default(),
        ))
    }

    #[test]
    fn a_host_variable_in_the_run_is_a_leak_unless_passed_on_purpose() {
        let (k, v) = std::env::vars()
            .find(|(k, v)| v.len() >= 4 && !v.contains('\n') && k.starts_with("CARGO"))
            .expect("cargo sets CARGO_* variables for tests");
        let text = format!("touch: Read-only file system\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n1000\n{k}={v}\n");
        let hidden = lockdown_findings(
            &probe_output("Read-only file system\nCapEff:\t0000000000000000\n1000\n".into()),
            &[],
        );
        assert_eq!(hidden[1].status, Status::Unknown, "{:?}", hidden[1]);
        let f = lockdown_findings(&probe_output(text.clone()), &[]);
        assert_eq!(f[0].status, Status::Held);
        assert_eq!(f[1].status, Status::Held);
        assert_eq!(f[2].status, Status::Broken, "{:?}", f[2]);
        assert!(f[2].detail.contains(&k));
        let passed = lockdown_findings(&probe_output(text), &[k.as_str()]);
        assert_eq!(passed[2].status, Status::Held);
        let root = lockdown_findings(&probe_output("wrote-root\nNoNewPrivs:\t0\n0\n".into()), &[]);
        assert_eq!(
            (root[0].status, root[1].status),
            (Status::Broken, Status::Broken)
        );
    }
}
