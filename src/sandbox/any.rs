//! The backend chosen at run time, as `model::AnyModel` is for
//! models: the subcommands hold an [`AnySandbox`] and never name a backend.

use tokio_util::sync::CancellationToken;

use super::docker::fleet::{DockerFleet, FleetPrepared};
use super::kube::{KubePrepared, KubeSandbox};
use super::socket::{SocketPrepared, SocketSandbox};
use super::{Outcome, OutputSink, RunSpec, Sandbox, SandboxError};

/// A sandbox backend.
#[derive(Debug, Clone)]
pub enum AnySandbox {
    /// One or more Docker engines.
    Docker(DockerFleet),
    /// A Kubernetes cluster.
    Kube(Box<KubeSandbox>),
    /// An `autodev pool` on this machine, over its Unix socket.
    Socket(SocketSandbox),
}

/// A run prepared by some backend.
#[derive(Debug)]
pub enum AnyPrepared {
    /// On a Docker engine.
    Docker(FleetPrepared),
    /// A pod.
    Kube(KubePrepared),
    /// By a pool.
    Socket(SocketPrepared),
}

impl AnySandbox {
    /// The Docker pool, for what only Docker does (image builds and transfers).
    pub fn as_docker(&self) -> Option<&DockerFleet> {
        match self {
            AnySandbox::Docker(p) => Some(p),
            AnySandbox::Kube(_) | AnySandbox::Socket(_) => None,
        }
    }

    /// Refuses limits a host cannot give (more memory or CPUs than it has),
    /// without creating anything: the cheap check before a single run.
    pub async fn check_limits(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        match self {
            AnySandbox::Docker(p) => {
                for e in p.engines() {
                    e.check_host(spec).await?;
                }
                Ok(())
            }
            AnySandbox::Kube(k) => k.check_limits(spec).await,
            // The pool checks the limits against its own hosts.
            AnySandbox::Socket(_) => Ok(()),
        }
    }

    /// Runs the hosts take at once, all together (the default `--jobs`).
    pub async fn total_slots(&self) -> usize {
        match self {
            AnySandbox::Docker(p) => p.total_slots(),
            AnySandbox::Kube(k) => k.total_slots().await,
            // The pool shares its engines among its clients.
            AnySandbox::Socket(_) => 1,
        }
    }
}

impl Sandbox for AnySandbox {
    type Prepared = AnyPrepared;

    async fn prepare(&self, spec: &RunSpec) -> Result<AnyPrepared, SandboxError> {
        match self {
            AnySandbox::Docker(p) => p.prepare(spec).await.map(AnyPrepared::Docker),
            AnySandbox::Kube(k) => k.prepare(spec).await.map(AnyPrepared::Kube),
            AnySandbox::Socket(s) => s.prepare(spec).await.map(AnyPrepared::Socket),
        }
    }

    async fn start(
        &self,
        prepared: AnyPrepared,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        match (self, prepared) {
            (AnySandbox::Docker(s), AnyPrepared::Docker(p)) => s.start(p, sink, cancel).await,
            (AnySandbox::Kube(s), AnyPrepared::Kube(p)) => s.start(p, sink, cancel).await,
            (AnySandbox::Socket(s), AnyPrepared::Socket(p)) => s.start(p, sink, cancel).await,
            // A run is only ever started by the backend that prepared it.
            (s, p) => {
                s.abandon(p).await;
                Err(SandboxError::Settings(
                    "a run prepared by one backend was started on another".into(),
                ))
            }
        }
    }

    async fn abandon(&self, prepared: AnyPrepared) {
        match (self, prepared) {
            (AnySandbox::Docker(s), AnyPrepared::Docker(p)) => s.abandon(p).await,
            (AnySandbox::Kube(s), AnyPrepared::Kube(p)) => s.abandon(p).await,
            (AnySandbox::Socket(s), AnyPrepared::Socket(p)) => s.abandon(p).await,
            // Dropped: each prepared run removes itself in the background.
            (_, p) => drop(p),
        }
    }

    async fn preflight(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        match self {
            AnySandbox::Docker(p) => p.preflight(spec).await,
            AnySandbox::Kube(k) => k.preflight(spec).await,
            AnySandbox::Socket(k) => k.preflight(spec).await,
        }
    }

    fn warm(&self, spec: &RunSpec) {
        match self {
            AnySandbox::Docker(p) => p.warm(spec),
            AnySandbox::Kube(k) => k.warm(spec),
            AnySandbox::Socket(k) => k.warm(spec),
        }
    }

    async fn retire(&self, spec: &RunSpec) {
        match self {
            AnySandbox::Docker(p) => p.retire(spec).await,
            AnySandbox::Kube(k) => k.retire(spec).await,
            AnySandbox::Socket(k) => k.retire(spec).await,
        }
    }

    async fn clean(&self, labels: &[(String, String)]) -> Result<usize, SandboxError> {
        match self {
            AnySandbox::Docker(p) => p.clean(labels).await,
            AnySandbox::Kube(k) => k.clean(labels).await,
            AnySandbox::Socket(k) => k.clean(labels).await,
        }
    }
}
