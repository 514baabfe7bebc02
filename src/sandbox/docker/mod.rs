//! The Docker implementation of [`Sandbox`] on one engine: one fresh,
//! locked-down container per run, driven through bollard over one shared
//! connection pool. [`fleet::DockerFleet`] spreads runs over several engines.
//!
//! Lifecycle: `prepare` walks the workspace and takes a container started
//! ahead (`warm.rs`), or creates, attaches and starts one (`none` log driver
//! so output never lands on the daemon's disk; removed by the engine when it
//! ends); the wrapper inside waits on stdin. `start` sends the run's
//! settings and the workspace tar into stdin, where the wrapper
//! ([`super::wrapper`]) unpacks it into the size-limited `/workspace` tmpfs
//! and announces readiness → output is demultiplexed live → the exit status
//! from a wait registered when the container started → the engine's own
//! removal, or a forced one on every other path. A prepared run that is
//! dropped is removed in the background (`Removal`).
//!
//! Why stdin and not the archive endpoint: with a read-only root filesystem
//! the daemon refuses archive uploads even into a tmpfs, and a volume would
//! live unbounded on the host disk.
//!
//! Not done here: image builds (see `images`), retries (see `batch`).

mod attach;
pub mod engine;
pub mod fleet;
mod health;
pub mod policy;
mod removal;
mod seccomp;
pub mod setup;
mod stream;
mod warm;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::CreateContainerOptions;
use bollard::Docker;
use tokio_util::sync::CancellationToken;

use super::output::ReportAt;
use super::Junit;
use super::{ms, new_run_id, RunClock};
use super::{Outcome, OutputSink, RunSpec, Sandbox, SandboxError};
use crate::workspace::Manifest;
pub use engine::EngineSpec;
use health::{Watchdog, HEARTBEAT_TIMEOUT};
pub use policy::{Flavor, MANAGED_LABEL, PID_LABEL, RUN_LABEL};
use removal::{list_managed, remove, Removal};
use warm::{Started, WarmSet, IDLE_DEADLINE};

/// Bound on a create: a daemon that takes longer is not well, and a create
/// lost to a cut link must end.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`Sandbox`] on one Docker engine.
#[derive(Debug, Clone)]
pub struct DockerSandbox {
    docker: Docker,
    name: String,
    /// What runs need of each image, by image name.
    images: std::sync::Arc<std::sync::Mutex<HashMap<String, ImageFacts>>>,
    /// The engine host's CPU count and memory, asked once.
    host: std::sync::Arc<tokio::sync::OnceCell<HostFacts>>,
    /// Docker or Podman.
    flavor: Flavor,
    /// Containers started ahead of their runs.
    warm: std::sync::Arc<WarmSet>,
    /// A security option every container gets besides the policy's (a
    /// Podman service on this host: its profile without user namespaces).
    seccomp: Option<String>,
}

#[derive(Debug, Clone)]
struct HostFacts {
    cpus: Option<i64>,
    memory: Option<u64>,
    /// The OCI runtimes the engine has (empty if it did not say).
    runtimes: Vec<String>,
}

#[derive(Debug, Clone)]
struct ImageFacts {
    id: Option<String>,
    junit: Option<String>,
    /// The paths the image declares as volumes (see `policy::cover_volumes`).
    volumes: Vec<String>,
}

/// A started container waiting for its run.
#[derive(Debug)]
pub struct DockerPrepared {
    started: Started,
    nonce: String,
    report: ReportAt,
    image_id: Option<String>,
    spec: RunSpec,
    manifest: Manifest,
    clock: RunClock,
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
        let (docker, flavor) = spec.connect().await?;
        // In the background: nothing waits for it (a short command may end
        // first; the next start sweeps again).
        let sweeper = docker.clone();
        tokio::spawn(async move { removal::sweep_orphans(&sweeper).await });
        Ok(DockerSandbox {
            docker,
            name: spec.name(),
            images: Default::default(),
            host: Default::default(),
            flavor,
            warm: WarmSet::new(1),
            // Podman reads a profile only from its own host's files.
            seccomp: (flavor == Flavor::Podman
                && matches!(
                    spec.address,
                    engine::Address::Local | engine::Address::Unix(_)
                ))
            .then(seccomp::podman_option)
            .flatten(),
        })
    }

    /// Keeps up to `n` containers started ahead per set of settings when
    /// asked to warm ([`Sandbox::warm`]); 0 turns it off.
    pub fn with_warm(mut self, n: usize) -> Self {
        self.warm = WarmSet::new(n);
        self
    }

    /// Docker or Podman.
    pub fn flavor(&self) -> Flavor {
        self.flavor
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

    /// The host's CPU count and memory: one `info` call per engine, shared
    /// by the slot default and every limits check.
    async fn host(&self) -> Result<HostFacts, SandboxError> {
        self.host
            .get_or_try_init(|| async {
                let info = self
                    .alive("info", self.docker.info())
                    .await?
                    .map_err(|e| self.err("info", e))?;
                let mut runtimes: Vec<String> =
                    info.runtimes.unwrap_or_default().into_keys().collect();
                runtimes.sort();
                Ok(HostFacts {
                    cpus: info.ncpu,
                    memory: info.mem_total.and_then(|m| u64::try_from(m).ok()),
                    runtimes,
                })
            })
            .await
            .cloned()
    }

    /// The engine's CPU count, for a default number of slots.
    pub async fn cpus(&self) -> Result<usize, SandboxError> {
        Ok(self
            .host()
            .await?
            .cpus
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
        let host = self.host().await?;
        let exceeds = |what, asked: String, has: String| SandboxError::ExceedsHost {
            engine: self.name.clone(),
            what,
            asked,
            has,
        };
        if let Some(total) = host.memory.filter(|t| spec.limits.memory > *t) {
            return Err(exceeds(
                "--memory",
                spec.limits.memory.to_string(),
                format!("{total} bytes"),
            ));
        }
        if let Some(r) = &spec.limits.runtime {
            if !host.runtimes.is_empty() && !host.runtimes.contains(r) {
                return Err(SandboxError::Refused {
                    detail: format!(
                        "runtime {r} is not registered with {} (it has: {}); add it to the daemon's \"runtimes\" in daemon.json and reload the daemon",
                        self.name,
                        host.runtimes.join(", ")
                    ),
                });
            }
        }
        if let Some(n) = host.cpus.filter(|n| spec.limits.cpus > *n as f64) {
            return Err(exceeds(
                "--cpus",
                spec.limits.cpus.to_string(),
                format!("{n} CPUs"),
            ));
        }
        Ok(())
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
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(super::JUNIT_LABEL).cloned())
                    .filter(|p| p.starts_with('/')),
                volumes: info.config.and_then(|c| c.volumes).unwrap_or_default(),
                id: info.id,
            },
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Err(SandboxError::image_missing(image, &self.name)),
            Err(BollardError::DockerResponseServerError {
                status_code: 400,
                message,
            }) => return Err(SandboxError::Refused { detail: message }),
            // Podman answers a malformed name with a server error.
            Err(BollardError::DockerResponseServerError { message, .. })
                if message.contains("invalid reference format") =>
            {
                return Err(SandboxError::Refused { detail: message })
            }
            Err(e) => return Err(self.err("inspect image", e)),
        };
        if let Ok(mut m) = self.images.lock() {
            m.insert(image.to_string(), facts.clone());
        }
        Ok(facts)
    }

    /// The ID of `image` on this engine, when the engine gives one.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, SandboxError> {
        Ok(self.image_facts(image).await?.id)
    }

    /// How many started containers wait for a run of `spec`'s settings.
    pub fn waiting(&self, spec: &RunSpec) -> usize {
        self.warm.ready(&self.warm_key(spec))
    }

    /// Which containers can serve `spec`: those of the same definition.
    fn warm_key(&self, spec: &RunSpec) -> String {
        warm::key(spec, self.flavor)
    }

    /// Creates, attaches and starts a container for a run of `spec`, and
    /// registers the wait that will give its exit status before anything is
    /// sent, so the container cannot end (and be removed) unseen.
    async fn launch(&self, spec: &RunSpec) -> Result<Started, SandboxError> {
        self.launch_as(spec, None).await
    }

    /// [`Self::launch`], of a set-up container when `setup` says so.
    async fn launch_as(
        &self,
        spec: &RunSpec,
        setup: Option<&setup::SetupShape>,
    ) -> Result<Started, SandboxError> {
        let id = self.create_as(spec, &new_run_id(), setup).await?;
        // A set-up container outlives its exit until it is committed.
        let removes = setup.is_none() && self.flavor.auto_removes();
        let removal = Removal::new(self.docker.clone(), id.clone());
        let lost = CancellationToken::new();
        let _watchdog = Watchdog::spawn(self.docker.clone(), lost.clone());
        let attach = self
            .guarded(
                "attach",
                &lost,
                self.docker.attach_container(
                    &id,
                    Some(bollard::query_parameters::AttachContainerOptions {
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
        // Before the start where the engine removes the container as it
        // ends (a later wait would find nothing); after it elsewhere (see
        // `Flavor::auto_removes`).
        let early = removes.then(|| attach::ExitWait::register(self, &id, removes));
        self.guarded(
            "start container",
            &lost,
            self.docker.start_container(&id, None),
        )
        .await?;
        let exit = early.unwrap_or_else(|| attach::ExitWait::register(self, &id, removes));
        Ok(Started {
            removal,
            output: attach.output,
            input: attach.input,
            exit,
            since: Instant::now(),
        })
    }

    async fn create(&self, spec: &RunSpec, run_id: &str) -> Result<String, SandboxError> {
        self.create_as(spec, run_id, None).await
    }

    async fn create_as(
        &self,
        spec: &RunSpec,
        run_id: &str,
        setup: Option<&setup::SetupShape>,
    ) -> Result<String, SandboxError> {
        let mut body = policy::container_body(spec, run_id, IDLE_DEADLINE, self.flavor);
        if let Some(shape) = setup {
            shape.apply(&mut body);
        }
        let facts = self.image_facts(&spec.image).await?;
        policy::cover_volumes(&mut body, &facts.volumes, &spec.limits, self.flavor);
        if let (Some(opt), Some(host)) = (&self.seccomp, body.host_config.as_mut()) {
            host.security_opt
                .get_or_insert_with(Vec::new)
                .push(opt.clone());
        }
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
            // Podman without its init (runs use one, as with Docker's --init).
            Err(BollardError::DockerResponseServerError { message, .. })
                if message.contains("container-init binary not found") =>
            {
                Err(SandboxError::Refused {
                    detail: format!("{message} (install Podman's init: the catatonit package)"),
                })
            }
            Err(e) => Err(match self.err("create container", e) {
                SandboxError::Backend { detail, .. } => SandboxError::CreateFailed {
                    engine: self.name.clone(),
                    detail,
                },
                other => other,
            }),
        }
    }
}

impl Sandbox for DockerSandbox {
    type Prepared = DockerPrepared;

    async fn prepare(&self, spec: &RunSpec) -> Result<DockerPrepared, SandboxError> {
        let clock = RunClock::new();
        let manifest = super::walk(spec).await?;
        let nonce = super::new_nonce();
        let facts = self.image_facts(&spec.image).await?;
        let report = match (&spec.junit, &facts.junit) {
            (Junit::At(p), _) | (Junit::FromImage, Some(p)) => ReportAt::Declared(p.clone()),
            (Junit::Off, _) | (Junit::FromImage, None) => ReportAt::None,
        };
        // Not raced against cancellation: a create abandoned mid-request
        // would still be carried out by the daemon and leave a container.
        let key = self.warm_key(spec);
        let started = match self.warm.take(&key, CREATE_TIMEOUT).await {
            Some(s) => s,
            None => self.launch(spec).await?,
        };
        // While this run goes on, the next one's container starts.
        if self.warm.active(&key) {
            Sandbox::warm(self, spec);
        }
        Ok(DockerPrepared {
            started,
            nonce,
            report,
            image_id: facts.id,
            spec: spec.clone(),
            manifest,
            clock: clock.created(),
        })
    }

    async fn start(
        &self,
        p: DockerPrepared,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        let DockerPrepared {
            started,
            nonce,
            report,
            image_id,
            spec,
            manifest,
            clock,
        } = p;
        // Prepared long ago (a batch's prefetched run waiting for a slot): its
        // container nears the end of its wait and is replaced by a fresh one.
        let started = if started.since.elapsed() < warm::MAX_IDLE {
            started
        } else {
            drop(started);
            self.launch(&spec).await?
        };
        let Started {
            removal,
            output,
            input,
            exit,
            ..
        } = started;
        let prepared = super::run::Prepared {
            handle: removal,
            io: (output, input, exit),
            nonce,
            report,
            spec,
            manifest,
            clock,
            facts: super::run::RunFacts {
                image_id,
                ..Default::default()
            },
        };
        super::run::start(self, prepared, sink, cancel).await
    }

    async fn abandon(&self, p: DockerPrepared) {
        let mut removal = p.started.removal;
        let _ = removal.now().await;
    }

    fn warm(&self, spec: &RunSpec) {
        let key = self.warm_key(spec);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.warm.activate(&key);
        if !self.warm.want(&key) {
            return;
        }
        let this = self.clone();
        let spec = spec.clone();
        handle.spawn(async move {
            let started = this.launch(&spec).await.ok();
            this.warm.arrived(&key, started);
        });
    }

    async fn retire(&self, spec: &RunSpec) {
        let key = self.warm_key(spec);
        // One still being started is waited for (a start is bounded by the
        // create's timeout and the heartbeat), so none arrives after this.
        let t0 = Instant::now();
        while self.warm.coming(&key) && t0.elapsed() < CREATE_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for mut s in self.warm.drain(&key) {
            let _ = s.removal.now().await;
        }
    }

    async fn preflight(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        if !self.has_image(&spec.image).await? {
            return Err(SandboxError::image_missing(&spec.image, &self.name));
        }
        self.check_host(spec).await?;
        // A trial create, never started: the engine checks every setting
        // (runtime, CPUs, tmpfs options) the real runs will use.
        let id = self.create(spec, &new_run_id()).await?;
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
        Ok(removed + self.clean_setup_networks().await)
    }
}
