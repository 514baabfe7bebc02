//! The container definition: every isolation setting lives here, in one
//! place for review.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};

use super::super::wrapper;
use super::super::RunSpec;
use crate::config::Network;

/// Label carried by every container this tool creates.
pub const MANAGED_LABEL: &str = "autodev.managed";
/// Label holding the run id of a container.
pub const RUN_LABEL: &str = "autodev.run";
/// Label holding the pid of the process that created a container.
pub const PID_LABEL: &str = "autodev.pid";
/// Label holding the name of the host that process ran on.
pub const HOST_LABEL: &str = "autodev.host";

/// This host's name, as the kernel has it.
pub fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}
use super::super::MAX_FILES as TMPFS_INODES;
/// Open files per process under Podman.
pub const PODMAN_NOFILE: i64 = 4096;
/// Processes per user under Podman (a host-wide count per uid, so far above
/// one run's `--pids`, which the cgroup enforces).
pub const PODMAN_NPROC: i64 = 16384;

/// Host threads gVisor's sentry takes under runsc whatever runs inside
/// (measured on runsc 20221219, ptrace platform: 38 for a container
/// running one `sleep`, 75 for a waiting wrapper, 104 with `--cpu-time`'s
/// watcher).
pub const GVISOR_PIDS_HEADROOM: u32 = 128;
/// Host threads allowed per process inside gVisor. A steady process
/// costs about 5 (343 for 64 sleeping children); churn costs far more on
/// the ptrace platform (a fork bomb held at 64 processes by `RLIMIT_NPROC`
/// climbed to 5,469 and stayed; held at 256, past 14,000 until its sentry
/// gave up). The host's cgroup must bound that for the host's sake: its
/// process IDs are shared by every sandbox (`kernel.pid_max` is 32,768
/// here), and 8 per process keeps several sandboxes at the default
/// `--pids` well under it while leaving ordinary runs half again what they
/// take; a sustained bomb meets it and ends its own sandbox, never the host.
pub const GVISOR_THREADS_PER_PROCESS: u32 = 8;

/// The resource limits set per process: the largest file a process may
/// write (`--file-size`), and under Podman the ones it would raise.
fn ulimits(l: &crate::config::Limits, flavor: Flavor) -> Option<Vec<ResourcesUlimits>> {
    let limit = |name: &str, n: i64| ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(n),
        hard: Some(n),
    };
    let mut u = Vec::new();
    // Rootful Podman raises open files and processes to 1048576 and
    // 4194304 unless told otherwise, which fails where root may not
    // raise limits (no CAP_SYS_RESOURCE); Docker passes on its own.
    if flavor == Flavor::Podman {
        u.push(limit("nofile", PODMAN_NOFILE));
        if !l.gvisor() {
            u.push(limit("nproc", PODMAN_NPROC));
        }
    }
    // Under gVisor the process limit is gVisor's own: its kernel counts the
    // sandbox's tasks per user (all of them are one user's) and a fork past
    // `--pids` fails inside with EAGAIN, as under runc's cgroup. The host's
    // cgroup counts gVisor's threads instead, so there it is a backstop
    // (`pids_limit`), sized never to be met first: met, it kills the whole
    // sandbox. Under runc the host counts processes per uid across every
    // container, so this limit stays the cgroup's alone.
    if l.gvisor() {
        u.push(limit("nproc", i64::from(l.pids)));
    }
    if let Some(n) = l.file_size {
        u.push(limit("fsize", i64::try_from(n).unwrap_or(i64::MAX)));
    }
    (!u.is_empty()).then_some(u)
}

/// The cgroup's process limit for `limits`: `--pids`; under gVisor, room
/// for the sentry's threads for `--pids` processes (see [`ulimits`]).
fn pids_limit(l: &crate::config::Limits) -> i64 {
    if l.gvisor() {
        i64::from(GVISOR_PIDS_HEADROOM) + i64::from(l.pids) * i64::from(GVISOR_THREADS_PER_PROCESS)
    } else {
        i64::from(l.pids)
    }
}

/// Which implementation of the Docker Engine API answers: they differ in
/// the container options they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// Docker Engine.
    #[default]
    Docker,
    /// Podman's Docker-compatible service (`podman system service`).
    Podman,
}

impl Flavor {
    /// Whether the engine removes a container as it ends (`AutoRemove`):
    /// Docker, so one whose owner died leaves nothing. Podman's wait then
    /// answers -1 instead of the exit status, and its wait on a container
    /// not yet started answers at once: there the owner removes it after
    /// a wait sent once it runs, and the next start sweeps those of dead
    /// owners.
    pub fn auto_removes(self) -> bool {
        self == Flavor::Docker
    }
}

/// Docker's name for a network mode.
fn network_mode(n: Network) -> &'static str {
    match n {
        Network::None => "none",
        Network::Bridge => "bridge",
    }
}

/// The tmpfs options that give a mount to the run's user, with the file cap.
fn owned_by_the_run(l: &crate::config::Limits, flavor: Flavor) -> String {
    let (uid, gid) = l.user.split_once(':').unwrap_or((&l.user, &l.user));
    match flavor {
        Flavor::Docker => format!(",nr_inodes={TMPFS_INODES},uid={uid},gid={gid},mode=0755"),
        // Podman 4 takes neither a file cap nor uid/gid for a tmpfs; `U`
        // gives it to the container's user instead. The size still holds.
        Flavor::Podman => ",mode=0755,U".to_string(),
    }
}

/// Builds the container definition: every isolation setting lives here.
/// Nothing of one run is in it (command, environment, marker nonce come on
/// stdin, see [`wrapper::header`]): the container is started before its run
/// and waits at most `idle` for it, and any run of the same settings can use
/// it. The engine removes it when it ends, so a container whose owner died
/// is gone after its deadline, with nobody left to remove it.
pub(super) fn container_body(
    spec: &RunSpec,
    run_id: &str,
    idle: Duration,
    flavor: Flavor,
) -> ContainerCreateBody {
    let l = &spec.limits;
    let workspace_owner = owned_by_the_run(l, flavor);
    let tmp_inodes = match flavor {
        Flavor::Docker => format!(",nr_inodes={TMPFS_INODES}"),
        Flavor::Podman => String::new(),
    };
    let mut tmpfs = HashMap::from([
        (
            "/workspace".to_string(),
            format!(
                "rw,nosuid,nodev,exec,size={}{workspace_owner}",
                l.workspace_size
            ),
        ),
        (
            "/tmp".to_string(),
            // `exec`: test suites run helpers they write to a temp folder, and
            // /workspace is executable anyway.
            format!(
                "rw,nosuid,nodev,exec,size={}{tmp_inodes},mode=1777",
                l.tmp_size
            ),
        ),
    ]);
    if flavor == Flavor::Podman {
        // With a read-only root, Podman mounts writable tmpfs of its own
        // size on /var/tmp and /run; a read-only one takes the place of the
        // first (the second holds Podman's init, which must stay reachable),
        // and the memory limit bounds what is written to /run.
        tmpfs.insert("/var/tmp".into(), "ro,nosuid,nodev,noexec,size=4k".into());
    }
    let mut labels = HashMap::from([
        (MANAGED_LABEL.to_string(), "true".to_string()),
        (RUN_LABEL.to_string(), run_id.to_string()),
        (PID_LABEL.to_string(), std::process::id().to_string()),
        (HOST_LABEL.to_string(), host_name().to_string()),
    ]);
    labels.extend(spec.labels.iter().cloned());
    let memory = i64::try_from(l.memory).unwrap_or(i64::MAX);
    let host_config = HostConfig {
        memory: Some(memory),
        // Equal to memory: no swap on top of the limit.
        memory_swap: Some(memory),
        nano_cpus: Some((l.cpus * 1e9) as i64),
        pids_limit: Some(pids_limit(l)),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(tmpfs),
        // /dev/shm stays writable even with a read-only root; keep it small.
        shm_size: Some(16 * 1024 * 1024),
        init: Some(true),
        auto_remove: Some(flavor.auto_removes()),
        network_mode: Some(network_mode(l.network).into()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        runtime: l.runtime.clone(),
        // Rootful Podman raises open files and processes to 1048576 and
        // 4194304 unless told otherwise, which fails where root may not
        // raise limits (no CAP_SYS_RESOURCE); Docker passes on its own.
        ulimits: ulimits(l, flavor),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(wrapper::waiting_cmd(idle)),
        // The image's entrypoint must not get between us and the wrapper.
        entrypoint: Some(vec![]),
        env: Some(Vec::new()),
        user: Some(l.user.clone()),
        working_dir: Some("/workspace".into()),
        hostname: Some("sandbox".into()),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(l.network == Network::None),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Puts a size-limited tmpfs over every path the image declares as a
/// volume. Left alone, the engine would mount an anonymous volume there: a
/// writable folder on its own disk, outside every limit, even under a
/// read-only root. A tmpfs at the same path takes the volume's place (the
/// engine creates no volume for a path that already has a mount), and its
/// pages count against the memory limit like those of `/tmp`.
pub(super) fn cover_volumes(
    body: &mut ContainerCreateBody,
    volumes: &[String],
    l: &crate::config::Limits,
    flavor: Flavor,
) {
    let Some(host) = body.host_config.as_mut() else {
        return;
    };
    let tmpfs = host.tmpfs.get_or_insert_with(HashMap::new);
    // /tmp's size; the run's user owns it, as the image's folder was
    // meant to be written by the image's program.
    let opts = format!(
        "rw,nosuid,nodev,exec,size={}{}",
        l.tmp_size,
        owned_by_the_run(l, flavor)
    );
    for v in volumes {
        let path = clean_mount_path(v);
        if path == "/" || tmpfs.contains_key(&path) {
            continue;
        }
        tmpfs.insert(path, opts.clone());
    }
}

/// A mount path as the engine compares them: absolute, no `.`, no `..`,
/// no trailing or doubled `/`.
fn clean_mount_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_locked_down_by_default() {
        let spec = RunSpec::new("/tmp", "true", "img");
        let idle = Duration::from_secs(60);
        let b = container_body(&spec, "r1", idle, Flavor::Docker);
        let h = b.host_config.unwrap();
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(h.memory, h.memory_swap);
        assert_eq!(h.init, Some(true));
        assert_eq!(h.log_config.unwrap().typ.as_deref(), Some("none"));
        assert!(h.tmpfs.unwrap()["/tmp"].contains("size="));
        assert_eq!(b.labels.unwrap()[MANAGED_LABEL], "true");
        assert_eq!(b.env, Some(vec![]));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(h.auto_remove, Some(true));
        assert_eq!(b.cmd.unwrap()[4..], ["stdin", "60"]);
        assert_eq!(h.pids_limit, Some(256));
        let mut gvisor = spec.clone();
        gvisor.limits.runtime = Some("runsc".into());
        let g = container_body(&gvisor, "r1", idle, Flavor::Docker)
            .host_config
            .unwrap();
        assert_eq!(
            g.pids_limit,
            Some(i64::from(
                GVISOR_PIDS_HEADROOM + 256 * GVISOR_THREADS_PER_PROCESS
            ))
        );
        let nproc = g
            .ulimits
            .unwrap()
            .into_iter()
            .find(|u| u.name.as_deref() == Some("nproc"));
        assert_eq!(
            nproc.and_then(|u| u.hard),
            Some(256),
            "gVisor's kernel holds --pids"
        );
        let p = container_body(&spec, "r1", idle, Flavor::Podman);
        let ph = p.host_config.unwrap();
        assert_eq!(ph.auto_remove, Some(false));
        let t = ph.tmpfs.unwrap();
        assert!(!t["/workspace"].contains("nr_inodes") && t["/workspace"].contains("size="));
        assert!(t["/var/tmp"].starts_with("ro,"));
    }

    #[test]
    fn image_volumes_get_a_bounded_tmpfs() {
        let spec = RunSpec::new("/tmp", "true", "img");
        let mut b = container_body(&spec, "r1", Duration::from_secs(60), Flavor::Docker);
        let vols = [
            "/data".to_string(),
            "/var/lib/db/".into(),
            "/workspace".into(),
            "/".into(),
        ];
        cover_volumes(&mut b, &vols, &spec.limits, Flavor::Docker);
        let t = b.host_config.unwrap().tmpfs.unwrap();
        assert!(t["/data"].contains(&format!("size={}", spec.limits.tmp_size)));
        assert!(t["/data"].contains("uid=1000"));
        assert!(t["/var/lib/db"].contains("size="));
        assert!(
            t["/workspace"].contains("uid="),
            "the workspace's own tmpfs stays"
        );
        assert!(!t.contains_key("/"));
        assert_eq!(clean_mount_path("//a/./b/../c/"), "/a/c");
    }

    #[test]
    fn file_size_becomes_an_fsize_ulimit_and_nothing_else_does() {
        let mut spec = RunSpec::new("/tmp", "true", "img");
        let h = container_body(&spec, "r", Duration::from_secs(1), Flavor::Docker)
            .host_config
            .unwrap();
        assert_eq!(h.ulimits, None);
        spec.limits.file_size = Some(4096);
        let h = container_body(&spec, "r", Duration::from_secs(1), Flavor::Docker)
            .host_config
            .unwrap();
        let u = h.ulimits.unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].name.as_deref(), Some("fsize"));
        assert_eq!((u[0].soft, u[0].hard), (Some(4096), Some(4096)));
    }
}
