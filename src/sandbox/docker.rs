//! The Docker implementation of [`Sandbox`]: one fresh, locked-down container
//! per run, driven through bollard over one shared connection pool.
//!
//! Lifecycle: create (attached stdin/stdout/stderr, `none` log driver so
//! output never lands on the daemon's disk) → attach → start → stream the
//! workspace tar into stdin, where a tiny wrapper unpacks it into the
//! size-limited `/workspace` tmpfs → the wrapper prints a per-run nonce on
//! stderr and `exec`s the command → output is demultiplexed live → wait and
//! inspect (exit code, OOM flag) → forced removal, on every path.
//!
//! Why stdin and not the archive endpoint: with a read-only root filesystem
//! the daemon refuses archive uploads even into a tmpfs, and a volume would
//! live unbounded on the host disk.
//!
//! Not done here: image builds (see `images`), retries (see `batch`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
type Bytes = Vec<u8>;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::wrapper::{self, Demuxed, ReadyDemux};
use super::{Capture, Durations, Outcome, OutputSink, RunSpec, Sandbox, SandboxError, Verdict};
use crate::workspace::{self, Manifest};

/// Label carried by every container this tool creates.
pub const MANAGED_LABEL: &str = "autodev.managed";
/// Label holding the run id of a container.
pub const RUN_LABEL: &str = "autodev.run";
/// Label holding the pid of the process that created a container.
pub const PID_LABEL: &str = "autodev.pid";

/// How long the daemon gets to answer the first ping: a missing daemon must be
/// reported quickly, not after a client default of minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on each clean-up call, so a wedged daemon cannot hang the tool past
/// the run's own timeout by much.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A run longer than this pings the daemon at this interval, so a daemon that
/// stops answering is noticed long before the run's own timeout.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long one heartbeat ping may take.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// Files per tmpfs: without a cap, millions of empty files cost kernel memory
/// that the size limit does not see.
const TMPFS_INODES: u32 = 65_536;
/// Chunk size of the tar stream into the container.
const TAR_CHUNK: usize = 256 * 1024;

/// A [`Sandbox`] backed by the local Docker daemon.
#[derive(Debug, Clone)]
pub struct DockerSandbox {
    docker: Docker,
}

impl DockerSandbox {
    /// Connects to the daemon named by `DOCKER_HOST` (or the local socket),
    /// negotiating the API version; fails within two seconds if nobody answers.
    pub async fn connect() -> Result<Self, SandboxError> {
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| SandboxError::DaemonUnavailable {
                detail: e.to_string(),
            })?;
        Self::negotiate(docker).await
    }

    /// Connects to the daemon at a unix socket path.
    pub async fn connect_unix(path: &str) -> Result<Self, SandboxError> {
        let docker =
            Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION).map_err(|e| {
                SandboxError::DaemonUnavailable {
                    detail: e.to_string(),
                }
            })?;
        Self::negotiate(docker).await
    }

    async fn negotiate(docker: Docker) -> Result<Self, SandboxError> {
        let unavailable = |detail: String| SandboxError::DaemonUnavailable { detail };
        let docker = docker.with_timeout(Duration::from_secs(120));
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unavailable(e.to_string())),
            Err(_) => return Err(unavailable("no answer within 2s".into())),
        };
        Ok(DockerSandbox { docker })
    }

    /// The underlying client, for image builds and clean-up.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Whether `image` exists locally.
    pub async fn has_image(&self, image: &str) -> Result<bool, SandboxError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(docker_err("inspect image", e)),
        }
    }

    /// Removes every container labelled as ours (leftovers of a crash) that
    /// also carries all of `labels`; returns how many were removed.
    pub async fn clean(&self, labels: &[(String, String)]) -> Result<usize, SandboxError> {
        let mut removed = 0;
        // A create request sent just before its client died is still being
        // carried out by the daemon; a second pass catches what it makes.
        for pass in 0..2 {
            if pass > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            for id in list_managed(&self.docker, labels).await? {
                if remove(&self.docker, &id).await.is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    async fn create(
        &self,
        spec: &RunSpec,
        run_id: &str,
        nonce: &str,
    ) -> Result<String, SandboxError> {
        let body = container_body(spec, run_id, nonce)?;
        let opts = CreateContainerOptions {
            name: Some(format!("autodev-{run_id}")),
            ..Default::default()
        };
        match self.docker.create_container(Some(opts), body).await {
            Ok(r) => Ok(r.id),
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) if message.to_ascii_lowercase().contains("image") => {
                Err(SandboxError::image_missing(&spec.image))
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 400,
                message,
            }) => Err(SandboxError::Refused { detail: message }),
            Err(e) => Err(docker_err("create container", e)),
        }
    }

    /// Limits the engine's host cannot give are refused before a run:
    /// Docker itself refuses too many CPUs, but takes any memory limit.
    pub async fn check_host(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| docker_err("info", e))?;
        let mem = info.mem_total.and_then(|m| u64::try_from(m).ok());
        if let Some(total) = mem.filter(|t| spec.limits.memory > *t) {
            return Err(SandboxError::ExceedsHost {
                what: "--memory",
                asked: spec.limits.memory.to_string(),
                has: format!("{total} bytes"),
            });
        }
        if let Some(n) = info.ncpu.filter(|n| spec.limits.cpus > *n as f64) {
            return Err(SandboxError::ExceedsHost {
                what: "--cpus",
                asked: spec.limits.cpus.to_string(),
                has: format!("{n} CPUs"),
            });
        }
        Ok(())
    }

    async fn drive(
        &self,
        (id, nonce): (&str, &str),
        spec: &RunSpec,
        manifest: Manifest,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
        durations: &mut Durations,
    ) -> Result<Outcome, SandboxError> {
        let attach = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await
            .map_err(|e| docker_err("attach", e))?;
        let mut output = attach.output;
        let mut input = attach.input;

        let started = Instant::now();
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| docker_err("start container", e))?;

        // The tar is produced on a blocking thread and fed to the container's
        // stdin through a small channel: memory stays bounded whatever the size.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let packer = tokio::task::spawn_blocking(move || {
            workspace::write_tar(&manifest, ChannelWriter::new(tx))
        });
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                input.write_all(&chunk).await?;
            }
            input.shutdown().await
        });

        let limits = &spec.limits;
        let mut out = Capture::new(limits.output_limit);
        let mut err = Capture::new(limits.output_limit);
        let mut demux = ReadyDemux::new(nonce);
        let mut ready_at: Option<Instant> = None;
        let mut timed_out = false;
        let mut stream_error = None;
        let deadline = tokio::time::sleep(limits.timeout);
        tokio::pin!(deadline);
        let lost = CancellationToken::new();
        let _watchdog = Watchdog::spawn(self.docker.clone(), lost.clone());

        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    feeder.abort();
                    return Err(SandboxError::Interrupted);
                }
                _ = &mut deadline => {
                    timed_out = true;
                    break;
                }
                _ = lost.cancelled() => {
                    feeder.abort();
                    return Err(SandboxError::DaemonLost {
                        op: "the run",
                        detail: format!("no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs()),
                    });
                }
                item = output.next() => match item {
                    None => break,
                    Some(Ok(bollard::container::LogOutput::StdOut { message })) => {
                        out.push(&message);
                        sink.stdout(&message);
                    }
                    Some(Ok(bollard::container::LogOutput::StdErr { message })) => {
                        let bytes = match demux.push(&message) {
                            Demuxed::Setup => continue,
                            Demuxed::Ready(rest) => {
                                ready_at = Some(Instant::now());
                                rest
                            }
                            Demuxed::Command(bytes) => bytes,
                        };
                        if !bytes.is_empty() {
                            err.push(&bytes);
                            sink.stderr(&bytes);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        stream_error = Some(e);
                        break;
                    }
                }
            }
        }
        let ended = Instant::now();
        feeder.abort();
        let ready = ready_at.unwrap_or(ended);
        durations.copy_in_ms = ms(ready - started);
        durations.run_ms = ms(ended - ready);

        if timed_out {
            // Kill now so the clock stops; removal (forced) follows in `run`.
            // If the daemon cannot kill it, the verdict is the daemon's fault.
            let kill = tokio::time::timeout(
                CLEANUP_TIMEOUT,
                self.docker.kill_container(
                    id,
                    Some(KillContainerOptions {
                        signal: "SIGKILL".into(),
                    }),
                ),
            )
            .await;
            match kill {
                Ok(Ok(()))
                | Ok(Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                })) => {}
                Ok(Err(e)) => return Err(docker_err("kill at timeout", e)),
                Err(_) => {
                    return Err(SandboxError::DaemonLost {
                        op: "kill at timeout",
                        detail: format!("no answer within {}s", CLEANUP_TIMEOUT.as_secs()),
                    })
                }
            }
            return Ok(Outcome {
                verdict: Verdict::TimedOut,
                exit_code: None,
                stdout: out.finish(),
                stderr: err.finish(),
                durations: *durations,
                error: None,
            });
        }
        if let Some(e) = stream_error {
            return Err(SandboxError::DaemonLost {
                op: "output streaming",
                detail: e.to_string(),
            });
        }
        if ready_at.is_none() {
            // The packer's own error says more than tar's complaint about a cut stream.
            if let Ok(Err(e)) = packer.await {
                return Err(SandboxError::Workspace(e));
            }
            return Err(SandboxError::CopyIn(demux.copy_failure()));
        }

        let (exit_code, oom) = self.exit_status(id).await?;
        // A child killed for memory while the parent still exits 0 must not
        // count as a pass: the OOM flag wins over the exit code.
        let verdict = if oom {
            Verdict::OomKilled
        } else if exit_code == 0 {
            Verdict::Passed
        } else {
            Verdict::Failed
        };
        Ok(Outcome {
            verdict,
            exit_code: Some(exit_code),
            stdout: out.finish(),
            stderr: err.finish(),
            durations: *durations,
            error: None,
        })
    }

    async fn wait(&self, id: &str) -> Result<i64, SandboxError> {
        let mut stream = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        let lost = |detail: String| SandboxError::DaemonLost { op: "wait", detail };
        match tokio::time::timeout(CLEANUP_TIMEOUT, stream.next()).await {
            Err(_) => Err(lost("no exit status within 15s".into())),
            Ok(None) => Err(lost("the wait stream ended without a status".into())),
            Ok(Some(Ok(r))) => Ok(r.status_code),
            // bollard turns a non-zero exit into an error; it is a status here.
            Ok(Some(Err(BollardError::DockerContainerWaitError { code, .. }))) => Ok(code),
            Ok(Some(Err(e))) => Err(docker_err("wait", e)),
        }
    }

    /// Exit code and OOM flag. One inspect usually suffices: the output
    /// stream closes when the container's process exits; the daemon may take
    /// a moment longer to record the exit, and then we wait for it.
    async fn exit_status(&self, id: &str) -> Result<(i64, bool), SandboxError> {
        let mut waited = false;
        loop {
            let info = self
                .docker
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
                .map_err(|e| docker_err("inspect container", e))?;
            let state = info.state.unwrap_or_default();
            if state.running != Some(true) || waited {
                let code = match state.exit_code {
                    Some(c) => c,
                    None => self.wait(id).await?,
                };
                return Ok((code, state.oom_killed.unwrap_or(false)));
            }
            self.wait(id).await?;
            waited = true;
        }
    }
}

impl Sandbox for DockerSandbox {
    async fn preflight(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        if !self.has_image(&spec.image).await? {
            return Err(SandboxError::image_missing(&spec.image));
        }
        self.check_host(spec).await?;
        // A trial create, never started: the engine checks every setting
        // (runtime, CPUs, tmpfs options) the real runs will use.
        let id = self.create(spec, &new_run_id(), "preflight").await?;
        remove(&self.docker, &id).await
    }

    async fn run(
        &self,
        spec: &RunSpec,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        self.run_gated(spec, sink, cancel, None).await
    }

    async fn run_in_slot(
        &self,
        spec: &RunSpec,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
        slots: &tokio::sync::Semaphore,
        stop: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        self.run_gated(spec, sink, cancel, Some((slots, stop)))
            .await
    }
}

impl DockerSandbox {
    /// The whole run. With a gate, the container is created first and started
    /// only once a slot is free; the slot is released before removal.
    async fn run_gated(
        &self,
        spec: &RunSpec,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
        gate: Option<(&tokio::sync::Semaphore, &CancellationToken)>,
    ) -> Result<Outcome, SandboxError> {
        let t0 = Instant::now();
        let root = spec.workspace.clone();
        let copy = spec.copy.clone();
        let cap = spec.limits.max_copy_bytes;
        let manifest = tokio::task::spawn_blocking(move || workspace::manifest(&root, &copy, cap))
            .await
            .map_err(|e| SandboxError::CopyIn(format!("workspace walk panicked: {e}")))??;

        let run_id = new_run_id();
        let nonce = format!(
            "autodev-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let mut durations = Durations::default();
        // Not raced against `cancel`: a create abandoned mid-request would
        // still be carried out by the daemon and leave a container behind.
        let id = self.create(spec, &run_id, &nonce).await?;
        durations.create_ms = ms(t0.elapsed());

        let mut waited = Duration::ZERO;
        let result = async {
            if cancel.is_cancelled() {
                return Err(SandboxError::Interrupted);
            }
            let _permit = match gate {
                None => None,
                Some((slots, stop)) => {
                    let t = Instant::now();
                    let permit = tokio::select! {
                        p = slots.acquire() => p.map_err(|_| SandboxError::NotStarted)?,
                        _ = stop.cancelled() => return Err(SandboxError::NotStarted),
                        _ = cancel.cancelled() => return Err(SandboxError::Interrupted),
                    };
                    waited = t.elapsed();
                    Some(permit)
                }
            };
            self.drive((&id, &nonce), spec, manifest, sink, cancel, &mut durations)
                .await
        }
        .await;

        let t_rm = Instant::now();
        let removed = remove(&self.docker, &id).await;
        durations.remove_ms = ms(t_rm.elapsed());
        durations.total_ms = ms(t0.elapsed().saturating_sub(waited));
        if let Err(e) = &removed {
            crate::errln!(
                "autodev: warning: could not remove container {id}: {e}; run `autodev clean`"
            );
        }
        result.map(|mut o| {
            o.durations = durations;
            o
        })
    }
}

/// Builds the container definition: every isolation setting lives here.
fn container_body(
    spec: &RunSpec,
    run_id: &str,
    nonce: &str,
) -> Result<ContainerCreateBody, SandboxError> {
    let l = &spec.limits;
    let (uid, gid) = l.user.split_once(':').unwrap_or((&l.user, &l.user));
    let tmpfs = HashMap::from([
        (
            "/workspace".to_string(),
            format!(
                "rw,nosuid,nodev,exec,size={},nr_inodes={TMPFS_INODES},uid={uid},gid={gid},mode=0755",
                l.workspace_size
            ),
        ),
        (
            "/tmp".to_string(),
            // `exec`: test suites run helpers they write to a temp folder, and
            // /workspace is executable anyway.
            format!("rw,nosuid,nodev,exec,size={},nr_inodes={TMPFS_INODES},mode=1777", l.tmp_size),
        ),
    ]);
    let mut labels = HashMap::from([
        (MANAGED_LABEL.to_string(), "true".to_string()),
        (RUN_LABEL.to_string(), run_id.to_string()),
        (PID_LABEL.to_string(), std::process::id().to_string()),
    ]);
    labels.extend(spec.labels.iter().cloned());
    let memory = i64::try_from(l.memory).unwrap_or(i64::MAX);
    let host_config = HostConfig {
        memory: Some(memory),
        // Equal to memory: no swap on top of the limit.
        memory_swap: Some(memory),
        nano_cpus: Some((l.cpus * 1e9) as i64),
        pids_limit: Some(i64::from(l.pids)),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(tmpfs),
        // /dev/shm stays writable even with a read-only root; keep it small.
        shm_size: Some(16 * 1024 * 1024),
        init: Some(true),
        network_mode: Some(l.network.as_docker().into()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        runtime: l.runtime.clone(),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(wrapper::container_cmd(nonce, &spec.command)),
        // The image's entrypoint must not get between us and the wrapper.
        entrypoint: Some(vec![]),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
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
        network_disabled: Some(l.network == crate::config::Network::None),
        host_config: Some(host_config),
        ..Default::default()
    })
}

async fn list_managed(
    docker: &Docker,
    labels: &[(String, String)],
) -> Result<Vec<String>, SandboxError> {
    let mut wanted = vec![format!("{MANAGED_LABEL}=true")];
    wanted.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    let filters = HashMap::from([("label".to_string(), wanted)]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| docker_err("list containers", e))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Force-removes a container (killing it if needed), tolerating "already gone".
async fn remove(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let mut last = None;
    // One retry: removal can race with the daemon still tearing down the exit.
    for _ in 0..2 {
        match tokio::time::timeout(
            CLEANUP_TIMEOUT,
            docker.remove_container(id, Some(opts.clone())),
        )
        .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            })) => return Ok(()),
            Ok(Err(e)) => last = Some(docker_err("remove container", e)),
            // A daemon that did not answer will not answer a retry either.
            Err(_) => {
                return Err(SandboxError::DaemonLost {
                    op: "remove container",
                    detail: format!("no answer within {}s", CLEANUP_TIMEOUT.as_secs()),
                })
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.unwrap_or(SandboxError::Interrupted))
}

fn docker_err(op: &'static str, e: BollardError) -> SandboxError {
    match e {
        BollardError::SocketNotFoundError(_)
        | BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::RequestTimeoutError => SandboxError::DaemonLost {
            op,
            detail: e.to_string(),
        },
        source => SandboxError::Docker { op, source },
    }
}

fn new_run_id() -> String {
    format!("{:08x}{:08x}", std::process::id(), fastrand::u32(..))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Pings the daemon every [`HEARTBEAT`] while a run lasts and fires `lost`
/// when a ping fails or goes unanswered; stops when dropped.
struct Watchdog(tokio::task::JoinHandle<()>);

impl Watchdog {
    fn spawn(docker: Docker, lost: CancellationToken) -> Self {
        Watchdog(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                match tokio::time::timeout(HEARTBEAT_TIMEOUT, docker.ping()).await {
                    Ok(Ok(_)) => {}
                    _ => {
                        lost.cancel();
                        return;
                    }
                }
            }
        }))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A blocking `Write` that hands fixed-size chunks to an async channel.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(TAR_CHUNK),
        }
    }
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(TAR_CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "container stopped reading the workspace",
            )
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(TAR_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == TAR_CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_locked_down_by_default() {
        let spec = RunSpec::new("/tmp", "true", "img");
        let b = container_body(&spec, "r1", "n").unwrap();
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
    }
}
