//! The backend chosen at run time, as [`crate::model::AnyModel`] is for
//! models: the subcommands hold an [`AnySandbox`] and never name a backend.

use tokio_util::sync::CancellationToken;

use super::docker::pool::{DockerPool, PoolPrepared};
use super::{Outcome, OutputSink, RunSpec, Sandbox, SandboxError};

/// A sandbox backend.
#[derive(Debug, Clone)]
pub enum AnySandbox {
    /// One or more Docker engines.
    Docker(DockerPool),
}

/// A run prepared by some backend.
#[derive(Debug)]
pub enum AnyPrepared {
    /// On a Docker engine.
    Docker(PoolPrepared),
}

impl AnySandbox {
    /// The Docker pool, for what only Docker does (image builds and transfers).
    pub fn as_docker(&self) -> Option<&DockerPool> {
        match self {
            AnySandbox::Docker(p) => Some(p),
        }
    }
}

impl AnySandbox {
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
        }
    }

    /// Runs the hosts take at once, all together (the default `--jobs`).
    pub fn total_slots(&self) -> usize {
        match self {
            AnySandbox::Docker(p) => p.total_slots(),
        }
    }
}

impl Sandbox for AnySandbox {
    type Prepared = AnyPrepared;

    async fn prepare(&self, spec: &RunSpec) -> Result<AnyPrepared, SandboxError> {
        match self {
            AnySandbox::Docker(p) => p.prepare(spec).await.map(AnyPrepared::Docker),
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
        }
    }

    async fn abandon(&self, prepared: AnyPrepared) {
        match (self, prepared) {
            (AnySandbox::Docker(s), AnyPrepared::Docker(p)) => s.abandon(p).await,
        }
    }

    async fn preflight(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        match self {
            AnySandbox::Docker(p) => p.preflight(spec).await,
        }
    }

    async fn clean(&self, labels: &[(String, String)]) -> Result<usize, SandboxError> {
        match self {
            AnySandbox::Docker(p) => p.clean(labels).await,
        }
    }
}
