//! The checks that are one hostile workload and one judgement each, as a
//! table: what to run (from the limits), how long it may take, and what
//! its outcome means. `examine` runs them in order; the judgements are
//! plain functions, tested without an engine.

use std::time::Duration;

use super::{ended, kernel, lockdown_findings, mounts, Finding};
use crate::config::Limits;
use crate::sandbox::{Outcome, RunSpec, SandboxError, Verdict};

/// One check.
pub(super) struct Check {
    /// The shell command that tries to break the guarantee.
    pub(super) command: fn(&Limits) -> String,
    /// Its own wall clock, if not the user's.
    pub(super) timeout: Option<Duration>,
    /// What its outcome means.
    pub(super) judge: Judge,
}

/// How a check reads its outcome.
pub(super) enum Judge {
    /// One finding, from the limits.
    One(fn(&Limits, &Result<Outcome, SandboxError>) -> Finding),
    /// Several, from the whole run's settings.
    Many(fn(&RunSpec, &Result<Outcome, SandboxError>) -> Vec<Finding>),
}

impl Judge {
    pub(super) fn findings(
        &self,
        base: &RunSpec,
        r: &Result<Outcome, SandboxError>,
    ) -> Vec<Finding> {
        match self {
            Judge::One(f) => vec![f(&base.limits, r)],
            Judge::Many(f) => f(base, r),
        }
    }
}

/// The checks, in the order `doctor` reports them (after the image).
pub(super) const CHECKS: &[Check] = &[
    Check {
        // A string doubled until it is over the limit: fast in any runtime.
        command: |l| {
            format!(
                "awk 'BEGIN {{ s = \"x\"; while (length(s) < {}) s = s s; print length(s) }}'",
                balloon(l)
            )
        },
        timeout: Some(Duration::from_secs(60)),
        judge: Judge::One(memory),
    },
    Check {
        command: |l| {
            format!(
                "for i in $(seq 1 {}); do sleep 30 & done 2>/dev/null; echo spawned; ls -d /proc/[0-9]* | wc -l; kill -9 -1",
                spawn_count(l)
            )
        },
        timeout: Some(Duration::from_secs(60)),
        judge: Judge::One(processes),
    },
    Check {
        command: |_| "trap '' TERM; (trap '' TERM; sleep 1000) & sleep 1000".into(),
        timeout: Some(Duration::from_secs(3)),
        judge: Judge::One(wall_clock),
    },
    Check {
        command: |_| LOCKDOWN.into(),
        timeout: None,
        judge: Judge::Many(|base, r| {
            let given: Vec<&str> = base.env.iter().map(|(k, _)| k.as_str()).collect();
            lockdown_findings(r, &given)
        }),
    },
    Check {
        command: |_| mounts::PROBE.into(),
        timeout: None,
        judge: Judge::One(|_, r| mounts::finding(r)),
    },
    Check {
        command: |_| kernel::SECCOMP_PROBE.into(),
        timeout: None,
        judge: Judge::One(kernel::seccomp),
    },
    Check {
        command: |_| kernel::NODE_PROBE.into(),
        timeout: None,
        judge: Judge::One(kernel::device_nodes),
    },
    Check {
        command: |_| "unshare -U true 2>&1 && echo made-userns".into(),
        timeout: None,
        judge: Judge::One(user_namespaces),
    },
    Check {
        command: |l| format!("head -c {} /dev/zero | tr '\\0' y", l.output_limit * 4),
        timeout: None,
        judge: Judge::One(output),
    },
];

/// The lockdown probe: /var/tmp is world-writable, so only a read-only
/// root stops uid 1000 there; then the capabilities, the privilege flag,
/// the user and the environment.
/// gVisor's /proc shows no `NoNewPrivs` line: `setpriv` asks the kernel
/// (prctl), which every runtime answers.
const LOCKDOWN: &str = "touch /var/tmp/autodev-doctor 2>&1 && echo wrote-root; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; setpriv --dump 2>/dev/null | grep '^no_new_privs:'; id -u; env";

/// The image: `true` must copy in and pass.
pub(super) fn image(base: &RunSpec, o: &Outcome) -> Finding {
    if o.verdict == Verdict::Passed {
        Finding::held(
            "image",
            format!(
                "{} has /bin/sh and tar; a run copies in and passes",
                base.image
            ),
        )
    } else {
        Finding::broken(
            "image",
            format!("`true` ended {}", o.verdict),
            "use an image with /bin/sh and tar (images/README)",
        )
    }
}

/// A balloon a quarter over the memory limit.
fn balloon(l: &Limits) -> u64 {
    l.memory + l.memory / 4
}

/// Processes the process check tries to start: past the limit.
fn spawn_count(l: &Limits) -> u32 {
    l.pids + 50
}

fn memory(l: &Limits, r: &Result<Outcome, SandboxError>) -> Finding {
    let balloon = balloon(l);
    match r {
        Ok(o) if o.verdict == Verdict::OomKilled => Finding::held(
            "memory limit",
            format!(
                "a {balloon}-byte balloon under --memory {} was oom_killed",
                l.memory
            ),
        ),
        Ok(o) if o.verdict == Verdict::Passed => Finding::broken(
            "memory limit",
            format!("a process held {balloon} bytes under --memory {}", l.memory),
            "the engine or runtime does not enforce memory limits (cgroup memory controller?)",
        ),
        other => Finding::unknown("memory limit", ended(other)),
    }
}

fn processes(l: &Limits, r: &Result<Outcome, SandboxError>) -> Finding {
    match r {
        Ok(o) if o.stdout.text.starts_with("spawned") => {
            let n: u32 = o
                .stdout
                .text
                .lines()
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            if n > l.pids {
                Finding::broken(
                    "process limit",
                    format!("{n} processes ran under --pids {}", l.pids),
                    "the engine does not enforce a per-sandbox process limit (Kubernetes: the kubelet's --pod-max-pids)",
                )
            } else {
                Finding::held(
                    "process limit",
                    format!("{n} processes at most under --pids {}", l.pids),
                )
            }
        }
        Ok(o) if matches!(o.verdict, Verdict::Failed | Verdict::TimedOut) => Finding::held(
            "process limit",
            format!(
                "spawning {} processes under --pids {} failed ({})",
                spawn_count(l),
                l.pids,
                o.verdict
            ),
        ),
        other => Finding::unknown("process limit", ended(other)),
    }
}

/// A tree that ignores SIGTERM must still end, entirely.
fn wall_clock(_: &Limits, r: &Result<Outcome, SandboxError>) -> Finding {
    match r {
        Ok(o) if o.verdict == Verdict::TimedOut => Finding::held(
            "wall-clock limit",
            "a SIGTERM-ignoring process tree was killed at --timeout 3s",
        ),
        Ok(o) => Finding::broken(
            "wall-clock limit",
            format!(
                "a SIGTERM-ignoring tree under --timeout 3s ended {}",
                o.verdict
            ),
            "report this: the timeout must kill the whole sandbox",
        ),
        other => Finding::unknown("wall-clock limit", ended(other)),
    }
}

/// A new user namespace hands the code capabilities over kernel code that
/// is otherwise out of its reach (a common exploit path).
fn user_namespaces(l: &Limits, r: &Result<Outcome, SandboxError>) -> Finding {
    match r {
        Ok(o) if o.stdout.text.contains("made-userns") => {
            if l.gvisor() {
                Finding::held(
                    "user namespaces",
                    "created, but inside gVisor's own kernel, not the host's",
                )
            } else {
                Finding::broken(
                    "user namespaces",
                    "a run created a user namespace",
                    "the engine's seccomp profile allows unshare (Podman's default does): use Docker, or a profile that denies it",
                )
            }
        }
        Ok(o) if o.verdict == Verdict::Failed => {
            Finding::held("user namespaces", "creating a user namespace failed")
        }
        other => Finding::unknown("user namespaces", ended(other)),
    }
}

/// A flood four times the output limit is kept within the limit.
fn output(l: &Limits, r: &Result<Outcome, SandboxError>) -> Finding {
    let flood = l.output_limit * 4;
    match r {
        Ok(o)
            if o.stdout.total_bytes == flood
                && (o.stdout.text.len() as u64) <= l.output_limit + 1024 =>
        {
            Finding::held(
                "output limit",
                format!("{flood} bytes written, {} kept", o.stdout.text.len()),
            )
        }
        Ok(o) if o.stdout.total_bytes == flood => Finding::broken(
            "output limit",
            format!(
                "{} bytes kept of a {flood}-byte flood under --output-limit {}",
                o.stdout.text.len(),
                l.output_limit
            ),
            "report this: captures must stay within --output-limit",
        ),
        other => Finding::unknown("output limit", ended(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;
    use crate::sandbox::Captured;

    fn outcome(verdict: Verdict, stdout: &str) -> Result<Outcome, SandboxError> {
        let mut o = Outcome::new(verdict, Some(0), Captured::default(), Captured::default());
        o.stdout.text = stdout.into();
        o.stdout.total_bytes = stdout.len() as u64;
        Ok(o)
    }

    #[test]
    fn judgements_tell_held_from_broken_from_unknown() {
        let l = Limits::default();
        assert_eq!(
            memory(&l, &outcome(Verdict::OomKilled, "")).status,
            Status::Held
        );
        assert_eq!(
            memory(&l, &outcome(Verdict::Passed, "")).status,
            Status::Broken
        );
        assert_eq!(
            memory(&l, &outcome(Verdict::TimedOut, "")).status,
            Status::Unknown
        );
        let over = format!("spawned\n{}\n", l.pids + 10);
        assert_eq!(
            processes(&l, &outcome(Verdict::Passed, &over)).status,
            Status::Broken
        );
        let under = format!("spawned\n{}\n", l.pids);
        assert_eq!(
            processes(&l, &outcome(Verdict::Passed, &under)).status,
            Status::Held
        );
        assert_eq!(
            wall_clock(&l, &outcome(Verdict::Passed, "")).status,
            Status::Broken
        );
        let userns = outcome(Verdict::Passed, "made-userns\n");
        assert_eq!(user_namespaces(&l, &userns).status, Status::Broken);
        let gvisor = Limits {
            runtime: Some("runsc".into()),
            ..Limits::default()
        };
        assert_eq!(user_namespaces(&gvisor, &userns).status, Status::Held);
        let lost: Result<Outcome, SandboxError> = Err(SandboxError::CopyFailed("x".into()));
        assert_eq!(output(&l, &lost).status, Status::Unknown);
    }
}
