//! The Docker implementation of [`Sandbox`] on one engine: one fresh,
//! locked-down container per run, driven through bollard over one shared
//! connection pool. [`pool::DockerPool`] spreads runs over several engines.
//!
//! Lifecycle: `prepare` walks the workspace and creates the container
//! (attached stdin/stdout/stderr, `none` log driver so output never lands on
//! the daemon's disk); `start` attaches, starts, streams the workspace tar
//! into stdin, where the wrapper ([`super::wrapper`]) unpacks it into the
//! size-limited `/workspace` tmpfs and announces readiness → output is
//! demultiplexed live → wait and inspect (exit code, OOM flag) → forced
//! removal, on every path. A prepared run that is dropped is removed in the
//! background (`Removal`).
//!
//! Why stdin and not the archive endpoint: with a read-only root filesystem
//! the daemon refuses archive uploads even into a tmpfs, and a volume would
//! live unbounded on the host disk.
//!
//! Not done here: image builds (see `images`), retries (see `batch`).

pub mod engine;
mod feed;
pub mod policy;
pub mod pool;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::demux::{Demuxed, ReadyDemux, Report, ReportDemux, Usage};
use super::Junit;
use super::{
    Capture, Durations, Outcome, OutputSink, RunRecord, RunSpec, Sandbox, SandboxError, TimeLimit,
    Verdict,
};
use crate::report::junit::{self, TestReport};
use crate::workspace::{self, Manifest};
pub use engine::EngineSpec;
use feed::ChannelWriter;
pub use policy::{MANAGED_LABEL, PID_LABEL, RUN_LABEL};

/// Bound on each clean-up call, so a wedged daemon cannot hang the tool past
/// the run's own timeout by much.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a create: a daemon that takes longer is not well, and a create
/// lost to a cut link must end.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// A run longer than this pings the daemon at this interval, so a daemon that
/// stops answering (or a cut link, which shows no error at all) is noticed
/// long before the run's own timeout.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long one heartbeat ping may take.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// A run that timed out having used less than this share of the CPU time
/// its wall clock and `--cpus` allowed was starved (by a busy host), not slow.
const STARVED_SHARE: f64 = 0.25;

/// A [`Sandbox`] on one Docker engine.
#[derive(Debug, Clone)]
pub struct DockerSandbox {
    docker: Docker,
    name: String,
    /// What runs need of each image, by image name.
    images: std::sync::Arc<std::sync::Mutex<HashMap<String, ImageFacts>>>,
}

#[derive(Debug, Clone)]
struct ImageFacts {
    id: Option<String>,
    junit: Option<String>,
}

/// A created container, not started yet.
#[derive(Debug)]
pub struct DockerPrepared {
    removal: Removal,
    nonce: String,
    report: Option<String>,
    image_id: Option<String>,
    spec: RunSpec,
    manifest: Manifest,
    t0: Instant,
    create_ms: u64,
}

impl DockerSandbox {
    /// Connects to the engine `DOCKER_HOST` names (the docker CLI's
    /// conventions, TLS included), or the local socket; fails within two
    /// seconds if nobody answers.
    pub async fn connect() -> Result<Self, SandboxError> {
        let specs = engine::engines(&[], &engine::TlsFlags::default(), |k| std::env::var(k).ok())?;
        Self::connect_to(&specs[0]).await
    }

    /// Connects to one engine.
    pub async fn connect_to(spec: &EngineSpec) -> Result<Self, SandboxError> {
        Ok(DockerSandbox {
            docker: spec.connect().await?,
            name: spec.name(),
            images: Default::default(),
        })
    }

    /// Connects to the daemon at a unix socket path.
    pub async fn connect_unix(path: &str) -> Result<Self, SandboxError> {
        Self::connect_to(&engine::parse(&format!("unix://{path}"), None)?).await
    }

    /// The engine's name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying client, for image builds and transfers.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn err(&self, op: &'static str, e: BollardError) -> SandboxError {
        match e {
            BollardError::SocketNotFoundError(_)
            | BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::RequestTimeoutError => self.lost(op, e.to_string()),
            other => SandboxError::Backend {
                engine: self.name.clone(),
                op,
                detail: other.to_string(),
            },
        }
    }

    fn lost(&self, op: &'static str, detail: String) -> SandboxError {
        SandboxError::LostHost {
            engine: self.name.clone(),
            op,
            detail,
        }
    }

    /// Whether the engine has `image`.
    pub async fn has_image(&self, image: &str) -> Result<bool, SandboxError> {
        match self
            .alive("inspect image", self.docker.inspect_image(image))
            .await?
        {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.err("inspect image", e)),
        }
    }

    /// The engine's CPU count, for a default number of slots.
    pub async fn cpus(&self) -> Result<usize, SandboxError> {
        let info = self
            .alive("info", self.docker.info())
            .await?
            .map_err(|e| self.err("info", e))?;
        Ok(info
            .ncpu
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1)
            .max(1))
    }

    /// Whether the engine answers a ping within the heartbeat's bound.
    pub async fn ping(&self) -> bool {
        matches!(
            tokio::time::timeout(HEARTBEAT_TIMEOUT, self.docker.ping()).await,
            Ok(Ok(_))
        )
    }

    /// Limits the engine's host cannot give are refused before a run:
    /// Docker itself refuses too many CPUs, but takes any memory limit.
    pub async fn check_host(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        let info = self
            .alive("info", self.docker.info())
            .await?
            .map_err(|e| self.err("info", e))?;
        let exceeds = |what, asked: String, has: String| SandboxError::ExceedsHost {
            engine: self.name.clone(),
            what,
            asked,
            has,
        };
        let mem = info.mem_total.and_then(|m| u64::try_from(m).ok());
        if let Some(total) = mem.filter(|t| spec.limits.memory > *t) {
            return Err(exceeds(
                "--memory",
                spec.limits.memory.to_string(),
                format!("{total} bytes"),
            ));
        }
        if let Some(n) = info.ncpu.filter(|n| spec.limits.cpus > *n as f64) {
            return Err(exceeds(
                "--cpus",
                spec.limits.cpus.to_string(),
                format!("{n} CPUs"),
            ));
        }
        Ok(())
    }

    /// Awaits an API call for as long as the engine answers pings: a call
    /// to an engine whose link was cut would otherwise wait for the client's
    /// two-minute timeout.
    async fn alive<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, SandboxError> {
        let lost = CancellationToken::new();
        let _watchdog = Watchdog::spawn(self.docker.clone(), lost.clone());
        tokio::select! {
            r = call => Ok(r),
            _ = lost.cancelled() => Err(self.lost(op, format!(
                "no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Awaits an API call, but gives up as soon as the engine stops
    /// answering pings (`lost` fires).
    async fn guarded<T>(
        &self,
        op: &'static str,
        lost: &CancellationToken,
        call: impl std::future::Future<Output = Result<T, BollardError>>,
    ) -> Result<T, SandboxError> {
        tokio::select! {
            r = call => r.map_err(|e| self.err(op, e)),
            _ = lost.cancelled() => Err(self.lost(op, format!(
                "no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// What a run needs to know of its image (its ID, for the record, and
    /// the report path its label declares), looked up once per image.
    async fn image_facts(&self, image: &str) -> Result<ImageFacts, SandboxError> {
        if let Some(hit) = self.images.lock().ok().and_then(|m| m.get(image).cloned()) {
            return Ok(hit);
        }
        let facts = match self
            .alive("inspect image", self.docker.inspect_image(image))
            .await?
        {
            Ok(info) => ImageFacts {
                junit: info
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(super::JUNIT_LABEL).cloned())
                    .filter(|p| p.starts_with('/')),
                id: info.id,
            },
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Err(SandboxError::image_missing(image, &self.name)),
            Err(BollardError::DockerResponseServerError {
                status_code: 400,
                message,
            }) => return Err(SandboxError::Refused { detail: message }),
            Err(e) => return Err(self.err("inspect image", e)),
        };
        if let Ok(mut m) = self.images.lock() {
            m.insert(image.to_string(), facts.clone());
        }
        Ok(facts)
    }

    async fn create(
        &self,
        spec: &RunSpec,
        run_id: &str,
        nonce: &str,
        report: Option<&str>,
    ) -> Result<String, SandboxError> {
        let body = policy::container_body(spec, run_id, nonce, report);
        let opts = CreateContainerOptions {
            name: Some(format!("autodev-{run_id}")),
            ..Default::default()
        };
        // A create on an engine that stops answering is given up when the
        // heartbeat notices (what it made then is for `autodev clean`).
        let lost = CancellationToken::new();
        let _watchdog = Watchdog::spawn(self.docker.clone(), lost.clone());
        let created = tokio::select! {
            r = tokio::time::timeout(CREATE_TIMEOUT, self.docker.create_container(Some(opts), body)) => {
                r.map_err(|_| {
                    self.lost(
                        "create container",
                        format!("no answer within {}s", CREATE_TIMEOUT.as_secs()),
                    )
                })?
            }
            _ = lost.cancelled() => {
                return Err(self.lost(
                    "create container",
                    format!("no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs()),
                ))
            }
        };
        match created {
            Ok(r) => Ok(r.id),
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) if message.to_ascii_lowercase().contains("image") => {
                Err(SandboxError::image_missing(&spec.image, &self.name))
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 400,
                message,
            }) => Err(SandboxError::Refused { detail: message }),
            Err(e) => Err(match self.err("create container", e) {
                SandboxError::Backend { detail, .. } => SandboxError::CreateFailed {
                    engine: self.name.clone(),
                    detail,
                },
                other => other,
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive(
        &self,
        (id, nonce, report_path): (&str, &str, Option<&str>),
        spec: &RunSpec,
        manifest: Manifest,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
        durations: &mut Durations,
        tree: &mut Option<String>,
    ) -> Result<Outcome, SandboxError> {
        // One heartbeat for the whole run, attach and start included: a cut
        // link shows no error, calls just hang.
        let lost = CancellationToken::new();
        let _watchdog = Watchdog::spawn(self.docker.clone(), lost.clone());
        let attach = self
            .guarded(
                "attach",
                &lost,
                self.docker.attach_container(
                    id,
                    Some(AttachContainerOptions {
                        stdin: true,
                        stdout: true,
                        stderr: true,
                        stream: true,
                        logs: false,
                        detach_keys: None,
                    }),
                ),
            )
            .await?;
        let mut output = attach.output;
        let mut input = attach.input;

        let started = Instant::now();
        self.guarded(
            "start container",
            &lost,
            self.docker.start_container(id, None),
        )
        .await?;

        // The tar is produced on a blocking thread and fed to the container's
        // stdin through a small channel: memory stays bounded whatever the size.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
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
        let mut trailer = ReportDemux::new(nonce, report_path.is_some());
        let mut ready_at: Option<Instant> = None;
        let mut timed_out = false;
        let mut stream_error = None;
        let deadline = tokio::time::sleep(limits.timeout);
        tokio::pin!(deadline);

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
                    return Err(self.lost("the run", format!("no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs())));
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
                        let bytes = trailer.push(&bytes);
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
        // The packer is done once the wrapper has unpacked everything (or
        // the copy failed); it is never waited for.
        let packed = if packer.is_finished() {
            packer.await.ok()
        } else {
            packer.abort();
            None
        };
        let packed_err = match packed {
            Some(Ok(hash)) => {
                *tree = Some(hash);
                None
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        let ready = ready_at.unwrap_or(ended);
        durations.copy_in_ms = ms(ready - started);
        durations.run_ms = ms(ended - ready);

        if timed_out {
            // Before the kill: how much CPU did the run get? Far less than
            // the wall clock allowed means the host was busy, not the code slow.
            let starved = self.cpu_ns(id).await.map(|used| {
                let allowed = spec.limits.timeout.as_nanos() as f64 * spec.limits.cpus;
                (used as f64) < allowed * STARVED_SHARE
            });
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
                Ok(Err(e)) => {
                    return Err(match self.err("kill at timeout", e) {
                        lost @ SandboxError::LostHost { .. } => lost,
                        other => SandboxError::KillFailed {
                            engine: self.name.clone(),
                            detail: other.to_string(),
                        },
                    })
                }
                Err(_) => {
                    return Err(self.lost(
                        "kill at timeout",
                        format!("no answer within {}s", CLEANUP_TIMEOUT.as_secs()),
                    ))
                }
            }
            let (tests, tests_note, _) = finish_report(trailer, report_path, &mut err, sink);
            return Ok(Outcome {
                timed_out_by: Some(TimeLimit::WallClock),
                starved,
                durations: *durations,
                tests,
                tests_note,
                ..Outcome::new(Verdict::TimedOut, None, out.finish(), err.finish())
            }
            .with_usage(None));
        }
        if let Some(e) = stream_error {
            return Err(self.lost("output streaming", e.to_string()));
        }
        if ready_at.is_none() {
            // The packer's own error says more than tar's complaint about a cut stream.
            if let Some(e) = packed_err {
                return Err(SandboxError::Workspace(e));
            }
            return Err(SandboxError::CopyFailed(demux.copy_failure()));
        }

        let (exit_code, oom) = self.exit_status(id, &lost).await?;
        let cpu_exceeded = trailer.cpu_exceeded();
        let (tests, tests_note, usage) = finish_report(trailer, report_path, &mut err, sink);
        // A child killed for memory while the parent still exits 0 must not
        // count as a pass: the OOM flag wins over the exit code. Nor does a
        // run whose report holds no test: nothing was tested.
        let verdict = if cpu_exceeded {
            Verdict::TimedOut
        } else if oom {
            Verdict::OomKilled
        } else if exit_code != 0 {
            Verdict::Failed
        } else if tests.as_ref().is_some_and(|t| t.total == 0) {
            Verdict::NoTests
        } else {
            Verdict::Passed
        };
        Ok(Outcome {
            timed_out_by: cpu_exceeded.then_some(TimeLimit::CpuTime),
            durations: *durations,
            tests,
            tests_note,
            ..Outcome::new(verdict, Some(exit_code), out.finish(), err.finish())
        }
        .with_usage(usage))
    }

    async fn wait(&self, id: &str) -> Result<i64, SandboxError> {
        let mut stream = self.docker.wait_container(
            id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        let lost = |detail: String| self.lost("wait", detail);
        match tokio::time::timeout(CLEANUP_TIMEOUT, stream.next()).await {
            Err(_) => Err(lost("no exit status within 15s".into())),
            Ok(None) => Err(lost("the wait stream ended without a status".into())),
            Ok(Some(Ok(r))) => Ok(r.status_code),
            // bollard turns a non-zero exit into an error; it is a status here.
            Ok(Some(Err(BollardError::DockerContainerWaitError { code, .. }))) => Ok(code),
            Ok(Some(Err(e))) => Err(self.err("wait", e)),
        }
    }

    /// The container's CPU time so far, in ns, from the engine's stats.
    async fn cpu_ns(&self, id: &str) -> Option<u64> {
        let opts = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stats = self.docker.stats(id, Some(opts));
        let first = tokio::time::timeout(HEARTBEAT_TIMEOUT, stats.next()).await;
        match first {
            Ok(Some(Ok(s))) => s.cpu_stats?.cpu_usage?.total_usage,
            _ => None,
        }
    }

    /// Exit code and OOM flag. One inspect usually suffices: the output
    /// stream closes when the container's process exits; the daemon may take
    /// a moment longer to record the exit, and then we wait for it.
    async fn exit_status(
        &self,
        id: &str,
        lost: &CancellationToken,
    ) -> Result<(i64, bool), SandboxError> {
        let mut waited = false;
        loop {
            // The output may have ended just before a link was cut: the
            // inspect must not hang on it either.
            let info = self
                .guarded(
                    "inspect container",
                    lost,
                    self.docker
                        .inspect_container(id, None::<InspectContainerOptions>),
                )
                .await?;
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
    type Prepared = DockerPrepared;

    async fn prepare(&self, spec: &RunSpec) -> Result<DockerPrepared, SandboxError> {
        let t0 = Instant::now();
        let root = spec.workspace.clone();
        let copy = spec.copy.clone();
        let cap = spec.limits.max_copy_bytes;
        let manifest = tokio::task::spawn_blocking(move || workspace::manifest(&root, &copy, cap))
            .await
            .map_err(|e| SandboxError::CopyFailed(format!("workspace walk panicked: {e}")))??;
        let run_id = new_run_id();
        let nonce = format!(
            "autodev-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let facts = self.image_facts(&spec.image).await?;
        let report = match &spec.junit {
            Junit::Off => None,
            Junit::At(p) => Some(p.clone()),
            Junit::FromImage => facts.junit.clone(),
        };
        // Not raced against cancellation: a create abandoned mid-request
        // would still be carried out by the daemon and leave a container.
        let id = self
            .create(spec, &run_id, &nonce, report.as_deref())
            .await?;
        Ok(DockerPrepared {
            removal: Removal::new(self.docker.clone(), id),
            nonce,
            report,
            image_id: facts.id,
            spec: spec.clone(),
            manifest,
            create_ms: ms(t0.elapsed()),
            t0,
        })
    }

    async fn start(
        &self,
        p: DockerPrepared,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        let DockerPrepared {
            mut removal,
            nonce,
            report,
            image_id,
            spec,
            manifest,
            t0,
            create_ms,
        } = p;
        // Time spent waiting between prepare and start (for a slot) is not the run's.
        let waited = t0
            .elapsed()
            .saturating_sub(Duration::from_millis(create_ms));
        let mut durations = Durations {
            create_ms,
            ..Durations::default()
        };
        let mut tree = None;
        let result = if cancel.is_cancelled() {
            Err(SandboxError::Interrupted)
        } else {
            let id = removal.id.clone();
            self.drive(
                (&id, &nonce, report.as_deref()),
                &spec,
                manifest,
                sink,
                cancel,
                &mut durations,
                &mut tree,
            )
            .await
        };
        let t_rm = Instant::now();
        // A lost engine will not answer a removal either: waiting for it
        // would only delay the retry elsewhere. The removal goes on in the
        // background (and `autodev clean` finds what it could not remove).
        let removed = match &result {
            Err(SandboxError::LostHost { .. }) => {
                drop(removal);
                return result;
            }
            _ => removal.now().await,
        };
        durations.remove_ms = ms(t_rm.elapsed());
        durations.total_ms = ms(t0.elapsed().saturating_sub(waited));
        if let Err(e) = &removed {
            crate::errln!(
                "autodev: warning: could not remove container {} on {}: {e}; run `autodev clean`",
                removal.id,
                self.name
            );
        }
        result.map(|mut o| {
            o.durations = durations;
            o.record = Some(RunRecord::new(&spec, image_id, tree, &self.name, &o));
            o
        })
    }

    async fn abandon(&self, p: DockerPrepared) {
        let mut removal = p.removal;
        let _ = removal.now().await;
    }

    async fn preflight(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        if !self.has_image(&spec.image).await? {
            return Err(SandboxError::image_missing(&spec.image, &self.name));
        }
        self.check_host(spec).await?;
        // A trial create, never started: the engine checks every setting
        // (runtime, CPUs, tmpfs options) the real runs will use.
        let id = self.create(spec, &new_run_id(), "preflight", None).await?;
        // The check is the create; a slow removal (seen on an engine busy
        // right after an image import) is not a reason to refuse the batch.
        // What it leaves, if anything, carries the labels `clean` looks for.
        let _ = remove(&self.docker, &id).await;
        Ok(())
    }

    async fn clean(&self, labels: &[(String, String)]) -> Result<usize, SandboxError> {
        let mut removed = 0;
        // A create request sent just before its client died is still being
        // carried out by the daemon; a second pass catches what it makes.
        for pass in 0..2 {
            if pass > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let ids = self
                .alive("list containers", list_managed(&self.docker, labels))
                .await?
                .map_err(|e| self.err("list containers", e))?;
            for id in ids {
                if remove(&self.docker, &id).await.is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Removes its container when told to, or, as a backstop, in the background
/// when dropped first (a caller that drops a prepared run, or a future
/// dropped mid-run, must not leave a container behind).
#[derive(Debug)]
struct Removal {
    docker: Docker,
    id: String,
    armed: bool,
}

impl Removal {
    fn new(docker: Docker, id: String) -> Self {
        Removal {
            docker,
            id,
            armed: true,
        }
    }

    async fn now(&mut self) -> Result<(), String> {
        self.armed = false;
        remove(&self.docker, &self.id).await
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let id = std::mem::take(&mut self.id);
            handle.spawn(async move {
                let _ = remove(&docker, &id).await;
            });
        }
    }
}

async fn list_managed(
    docker: &Docker,
    labels: &[(String, String)],
) -> Result<Vec<String>, BollardError> {
    let mut wanted = vec![format!("{MANAGED_LABEL}=true")];
    wanted.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    let filters = HashMap::from([("label".to_string(), wanted)]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Force-removes a container (killing it if needed), tolerating "already
/// gone"; bounded in time, so a wedged engine cannot hold the caller.
async fn remove(docker: &Docker, id: &str) -> Result<(), String> {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let mut last = String::new();
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
            Ok(Err(e)) => last = e.to_string(),
            // A daemon that did not answer will not answer a retry either.
            Err(_) => return Err(format!("no answer within {}s", CLEANUP_TIMEOUT.as_secs())),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// The per-test results of a run, or why there are none; the command's
/// held-back stderr goes where the rest of it went.
fn finish_report(
    trailer: ReportDemux,
    path: Option<&str>,
    err: &mut Capture,
    sink: &mut dyn OutputSink,
) -> (Option<TestReport>, Option<String>, Option<Usage>) {
    let (rest, report, usage) = trailer.finish();
    if !rest.is_empty() {
        err.push(&rest);
        sink.stderr(&rest);
    }
    let Some(path) = path else {
        return (None, None, usage);
    };
    let why = match report {
        Report::Received(bytes) => match junit::parse(&bytes) {
            Ok(r) => return (Some(r), None, usage),
            Err(why) => format!("report {path}: {why}"),
        },
        Report::Absent => {
            format!("no report at {path}: the test command wrote none (or not as a regular file)")
        }
        Report::NotSent => "the run ended before its report could be read".into(),
        Report::Cut => format!("report {path} was cut off before its end"),
    };
    (None, Some(why), usage)
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
