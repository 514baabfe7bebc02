//! What stands between the code and the host's kernel: a seccomp filter on
//! its processes, and no way to a host device through a node it makes.
//! Under gVisor both hold by another mechanism, and the findings say which
//! (its own kernel serves every system call; its device nodes are its own).

use super::{ended, Finding};
use crate::config::Limits;
use crate::sandbox::{Outcome, SandboxError, Verdict};

/// The filter mode of the probe's own process (2: a filter is on).
pub(super) const SECCOMP_PROBE: &str = "grep '^Seccomp:' /proc/self/status || echo no-seccomp-line";

/// A node for the host's memory device (char 1:1), then a read of it.
pub(super) const NODE_PROBE: &str = "mknod /tmp/autodev-node c 1 1 2>/dev/null && { echo made-node; head -c 1 /tmp/autodev-node >/dev/null 2>&1 && echo read-node; }; true";

pub(super) fn seccomp(l: &Limits, r: &Result<Outcome, SandboxError>) -> Finding {
    let Ok(o) = r else {
        return Finding::unknown("seccomp", ended(r));
    };
    let text = &o.stdout.text;
    if text.contains("Seccomp:\t2") {
        let how = if l.gvisor() {
            "a filter is on every process inside gVisor too (runsc --oci-seccomp)"
        } else {
            "a filter is on every process (the engine's seccomp profile)"
        };
        Finding::held("seccomp", how)
    } else if l.gvisor() {
        // Holds by gVisor's own mechanism: no call reaches the host's kernel
        // from the code; the sentry that serves them runs filtered.
        Finding::held(
            "seccomp",
            "no filter on the code inside gVisor: gVisor's kernel serves every system call, and it runs under its own seccomp filter on the host; give runsc --oci-seccomp (daemon.json runtimeArgs) to apply the engine's profile inside as well (it also refuses user namespaces, as under runc)",
        )
    } else if o.verdict == Verdict::Passed {
        Finding::broken(
            "seccomp",
            format!(
                "the run's processes have no seccomp filter ({})",
                text.trim()
            ),
            "the engine runs containers unconfined (seccomp=unconfined in its settings?): use its default profile",
        )
    } else {
        Finding::unknown("seccomp", ended(r))
    }
}

pub(super) fn device_nodes(l: &Limits, r: &Result<Outcome, SandboxError>) -> Finding {
    match r {
        Ok(o) if o.stdout.text.contains("read-node") => Finding::broken(
            "device nodes",
            "a node made in the sandbox read the host's memory device",
            "the engine gave the run CAP_MKNOD and device access: drop every capability and keep the devices cgroup",
        ),
        Ok(o) if o.stdout.text.contains("made-node") && l.gvisor() => Finding::held(
            "device nodes",
            "a node can be made in gVisor's own file system, and leads to no host device (reading one for the memory device failed)",
        ),
        Ok(o) if o.stdout.text.contains("made-node") => Finding::held(
            "device nodes",
            "a node could be made, but reading the memory device through it failed",
        ),
        Ok(o) if o.verdict == Verdict::Passed => {
            Finding::held("device nodes", "making a device node failed")
        }
        other => Finding::unknown("device nodes", ended(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn passed(text: &str) -> Result<Outcome, SandboxError> {
        let mut o = Outcome::from_error(&SandboxError::NotStarted);
        o.verdict = Verdict::Passed;
        o.stdout.text = text.into();
        Ok(o)
    }

    #[test]
    fn each_runtime_gets_the_finding_its_mechanism_earns() {
        let runc = Limits::default();
        let gvisor = Limits {
            runtime: Some("runsc".into()),
            ..Limits::default()
        };
        let s = |l: &Limits, t: &str| seccomp(l, &passed(t)).status;
        assert_eq!(s(&runc, "Seccomp:\t2\n"), Status::Held);
        assert_eq!(s(&runc, "Seccomp:\t0\n"), Status::Broken);
        assert_eq!(s(&gvisor, "Seccomp:\t0\n"), Status::Held);
        assert!(seccomp(&gvisor, &passed("Seccomp:\t0\n"))
            .detail
            .contains("--oci-seccomp"));
        let d = |l: &Limits, t: &str| device_nodes(l, &passed(t)).status;
        assert_eq!(d(&runc, ""), Status::Held);
        assert_eq!(d(&gvisor, "made-node\n"), Status::Held);
        assert_eq!(d(&runc, "made-node\nread-node\n"), Status::Broken);
        assert_eq!(d(&gvisor, "made-node\nread-node\n"), Status::Broken);
    }
}
