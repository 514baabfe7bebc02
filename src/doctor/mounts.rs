//! The storage check: a run may write only to autodev's own bounded tmpfs
//! mounts. Anything else writable (an image's `VOLUME` turned into an
//! anonymous volume, a bind mount) is host disk outside every limit.

use super::{ended, Finding};
use crate::sandbox::{Outcome, SandboxError, Verdict};

pub(super) const CHECK: &str = "writable storage";

/// What the run reads: every mount, as the kernel lists them.
pub(super) const PROBE: &str = "cat /proc/mounts";

/// File systems that hold no data of the run's on the host's disk.
const VIRTUAL: &[&str] = &[
    "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs", "shm",
];

/// The mounts a run could write to that are not memory-backed.
fn writable_disk_mounts(mounts: &str) -> Vec<String> {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (point, fstype, opts) = (f.get(1)?, f.get(2)?, f.get(3)?);
            let rw = opts.split(',').any(|o| o == "rw");
            let system = ["/proc", "/sys", "/dev"]
                .iter()
                .any(|p| *point == *p || point.starts_with(&format!("{p}/")));
            (rw && !system && !VIRTUAL.contains(fstype)).then(|| format!("{point} ({fstype})"))
        })
        .collect()
}

pub(super) fn finding(r: &Result<Outcome, SandboxError>) -> Finding {
    let o = match r {
        Ok(o) if o.verdict == Verdict::Passed && o.stdout.text.contains(" / ") => o,
        other => return Finding::unknown(CHECK, ended(other)),
    };
    let found = writable_disk_mounts(&o.stdout.text);
    if found.is_empty() {
        Finding::held(
            CHECK,
            "only memory-backed mounts are writable (/workspace, /tmp and any image volume are size-limited tmpfs)",
        )
    } else {
        Finding::broken(
            CHECK,
            format!("writable disk mounts: {}", found.join(", ")),
            "report this: every writable path must be a size-limited tmpfs",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writable_disk_mounts_are_found() {
        let mounts = "overlay / overlay ro,relatime,lowerdir=x 0 0\n\
            proc /proc proc rw,nosuid 0 0\n\
            tmpfs /workspace tmpfs rw,nosuid,size=262144k 0 0\n\
            /dev/vda /etc/hosts ext4 ro,relatime 0 0\n\
            shm /dev/shm tmpfs rw 0 0\n\
            /dev/vda /data ext4 rw,relatime 0 0\n";
        assert_eq!(writable_disk_mounts(mounts), ["/data (ext4)"]);
        assert!(writable_disk_mounts(&mounts.replace("/data ext4 rw", "/data ext4 ro")).is_empty());
    }
}
