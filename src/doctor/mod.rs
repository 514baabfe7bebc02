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
    let run = |command: String, tweak: &dyn Fn(&mut RunSpec)| {
        let mut s = base.clone();
        s.command = Command::Shell(command);
        tweak(&mut s);
        async move { sandbox.run(&s, &mut NullSink, cancel).await }
    };
    let mut found = Vec::new();

    // The image: everything else depends on the wrapper's /bin/sh and tar.
    sandbox.preflight(&base).await?;
    match run("true".into(), &|_| {}).await {
        Ok(o) if o.verdict == Verdict::Passed => found.push(Finding::held(
            "image",
            format!(
                "{} has /bin/sh and tar; a run copies in and passes",
                base.image
            ),
        )),
        Ok(o) => found.push(Finding::broken(
            "image",
            format!("`true` ended {}", o.verdict),
            "use an image with /bin/sh and tar (images/README)",
        )),
        Err(e) => return Err(e),
    }

    let l = &base.limits;
    // Memory: a balloon a quarter over the limit must be killed.
    let balloon = l.memory + l.memory / 4;
    let found_mem = match run(
        // A string doubled until it is over the limit: fast in any runtime.
        format!(
            "awk 'BEGIN {{ s = \"x\"; while (length(s) < {balloon}) s = s s; print length(s) }}'"
        ),
        &|s| s.limits.timeout = Duration::from_secs(60),
    )
    .await
    {
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
        other => Finding::unknown("memory limit", ended(&other)),
    };
    found.push(found_mem);

    // Processes: spawning past the limit must fail.
    let want = l.pids + 50;
    found.push(
        match run(
            format!(
                "for i in $(seq 1 {want}); do sleep 30 & done 2>/dev/null; echo spawned; ls -d /proc/[0-9]* | wc -l; kill -9 -1"
            ),
            &|s| s.limits.timeout = Duration::from_secs(60),
        )
        .await
        {
            Ok(o) if o.stdout.text.starts_with("spawned") => {
                let n: u32 = o.stdout.text.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
                if n > l.pids {
                    Finding::broken(
                        "process limit",
                        format!("{n} processes ran under --pids {}", l.pids),
                        "the engine does not enforce a per-sandbox process limit (Kubernetes: the kubelet's --pod-max-pids)",
                    )
                } else {
                    Finding::held("process limit", format!("{n} processes at most under --pids {}", l.pids))
                }
            }
            Ok(o) if matches!(o.verdict, Verdict::Failed | Verdict::TimedOut) => Finding::held(
                "process limit",
                format!("spawning {want} processes under --pids {} failed ({})", l.pids, o.verdict),
            ),
            other => Finding::unknown("process limit", ended(&other)),
        },
    );

    // Wall clock: a tree that ignores SIGTERM must still end, entirely.
    found.push(
        match run(
            "trap '' TERM; (trap '' TERM; sleep 1000) & sleep 1000".into(),
            &|s| s.limits.timeout = Duration::from_secs(3),
        )
        .await
        {
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
            other => Finding::unknown("wall-clock limit", ended(&other)),
        },
    );

    // Lockdown: read-only root, no capabilities, no privilege gain, no host environment.
    let lockdown = run(
        // /var/tmp is world-writable: only a read-only root stops uid 1000 there.
        "touch /var/tmp/autodev-doctor 2>&1 && echo wrote-root; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; id -u; env"
            .into(),
        &|_| {},
    )
    .await;
    let given: Vec<&str> = base.env.iter().map(|(k, _)| k.as_str()).collect();
    found.extend(lockdown_findings(&lockdown, &given));

    // Storage: nothing writable but autodev's bounded tmpfs mounts.
    found.push(mounts::finding(&run(mounts::PROBE.into(), &|_| {}).await));

    // Namespaces: a new user namespace hands the code capabilities over
    // kernel code that is otherwise out of its reach (a common exploit path).
    found.push(
        match run("unshare -U true 2>&1 && echo made-userns".into(), &|_| {}).await {
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
            other => Finding::unknown("user namespaces", ended(&other)),
        },
    );

    // Output: a flood four times the limit is kept within the limit.
    let flood = l.output_limit * 4;
    found.push(
        match run(format!("head -c {flood} /dev/zero | tr '\\0' y"), &|_| {}).await {
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
            other => Finding::unknown("output limit", ended(&other)),
        },
    );

    found.push(network(
        &run_network(&base, targets, sandbox, cancel).await,
        base.limits.network,
    ));

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
    // Some runtimes (gVisor) do not show the flag in /proc at all.
    let nnp = match (
        text.contains("NoNewPrivs:\t1"),
        text.contains("NoNewPrivs:"),
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
            "non-root, no capabilities; whether no-new-privileges is set is not visible from inside this runtime",
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
