//! A user-namespace-free seccomp profile for Podman.
//!
//! Podman's default seccomp profile allows `unshare` and `clone` with
//! `CLONE_NEWUSER` to everyone (for nested rootless containers), so a run
//! could create a user namespace and, inside it, get capabilities over
//! kernel code otherwise out of its reach (a common exploit path). Docker's
//! default profile refuses both without `CAP_SYS_ADMIN`. Podman reads a
//! profile only from a file on its own host, so for a Podman service on
//! this machine (a unix socket) autodev writes Podman's own default profile
//! with these three changes, once, and names it on every container:
//! `unshare` falls to the profile's default (EPERM), `clone` is allowed only
//! without `CLONE_NEWUSER`, and `clone3` (whose flags seccomp cannot read)
//! answers ENOSYS so that the C library falls back to `clone`, as Docker's
//! profile does.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{json, Value};

/// Where Podman (containers-common) keeps its default profile.
const PODMAN_PROFILES: &[&str] = &[
    "/etc/containers/seccomp.json",
    "/usr/share/containers/seccomp.json",
];

/// `CLONE_NEWUSER`, from `<linux/sched.h>`.
const CLONE_NEWUSER: u64 = 0x1000_0000;
/// `ENOSYS`: "no such call", so the caller falls back.
const ENOSYS: u64 = 38;

/// Podman's profile without user namespaces, as written.
fn tightened(mut profile: Value) -> Option<Value> {
    let syscalls = profile.get_mut("syscalls")?.as_array_mut()?;
    for rule in syscalls.iter_mut() {
        if rule.get("action").and_then(Value::as_str) != Some("SCMP_ACT_ALLOW") {
            continue;
        }
        if let Some(names) = rule.get_mut("names").and_then(Value::as_array_mut) {
            names.retain(|n| !matches!(n.as_str(), Some("unshare" | "clone" | "clone3")));
        }
    }
    syscalls.insert(
        0,
        json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}),
    );
    syscalls.insert(
        0,
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
    );
    Some(profile)
}

/// The `seccomp=PATH` security option for a Podman service on this host,
/// or `None` when this host has no Podman profile to start from (then
/// `autodev doctor` reports user namespaces as it finds them).
pub(super) fn podman_option() -> Option<String> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(write_profile)
        .as_ref()
        .map(|p| format!("seccomp={}", p.display()))
}

fn write_profile() -> Option<PathBuf> {
    use sha2::Digest;
    let text = PODMAN_PROFILES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())?;
    let profile = tightened(serde_json::from_str(&text).ok()?)?;
    let out = serde_json::to_vec(&profile).ok()?;
    let hash = crate::workspace::hex(&sha2::Sha256::digest(&out));
    // Named by its content: every autodev process writes the same file, and
    // a file there already is this one (written whole, then renamed).
    let path = std::env::temp_dir().join(format!("autodev-seccomp-{}.json", &hash[..16]));
    if std::fs::read(&path).ok().as_deref() == Some(&out[..]) {
        return Some(path);
    }
    let tmp = tempfile::NamedTempFile::new_in(std::env::temp_dir()).ok()?;
    std::fs::write(tmp.path(), &out).ok()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).ok()?;
    tmp.persist(&path).ok()?;
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_namespaces_are_taken_out_of_an_allow_all_list() {
        let p = json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read", "unshare", "clone", "clone3", "setns"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["setns"], "action": "SCMP_ACT_ERRNO"}
        ]});
        let t = tightened(p).unwrap();
        let rules = t["syscalls"].as_array().unwrap();
        assert_eq!(rules[0]["names"], json!(["clone3"]));
        assert_eq!(rules[0]["errnoRet"], ENOSYS);
        assert_eq!(rules[1]["names"], json!(["clone"]));
        assert_eq!(rules[1]["args"][0]["value"], CLONE_NEWUSER);
        assert_eq!(rules[2]["names"], json!(["read", "setns"]));
        assert_eq!(rules[3]["names"], json!(["setns"]), "deny rules are kept");
        let all = t.to_string();
        assert!(!all.contains("unshare"), "{all}");
    }
}
