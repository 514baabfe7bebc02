//! Set-up containers: the one kind that may write outside its tmpfs
//! mounts and reach a network, so that what a project's install step puts
//! under its environment folder can be committed as an image that later
//! test runs start from. Every other setting (user, capabilities,
//! seccomp, limits, the wrapper and its markers) is a test run's.
//!
//! The network is an internal one made for this set-up alone: it has no
//! route out, and its gateway is the host, where the egress proxy listens.
//! Nothing of the set-up's own settings reaches the committed image:
//! variables and the CA bundle come on stdin and in `/tmp` (a tmpfs, not
//! committed), and the image's command is reset.

use std::net::IpAddr;
use std::sync::Mutex;

use bollard::models::{ContainerConfig, ContainerCreateBody, NetworkCreateRequest};
use bollard::query_parameters::CommitContainerOptions;

use super::attach::{ExitWait, Input, Output};
use super::removal::Removal;
use super::DockerSandbox;
use crate::sandbox::output::ReportAt;
use crate::sandbox::run::{self, Backend, Prepared, RunFacts, Running};
use crate::sandbox::{new_nonce, Outcome, OutputSink, RunClock, RunSpec, SandboxError};
use crate::workspace::Manifest;

/// The label that marks set-up containers and networks.
pub const SETUP_LABEL: &str = "autodev.setup";

/// How a set-up container differs from a test run's.
#[derive(Debug, Clone)]
pub struct SetupShape {
    /// The internal network it is attached to.
    pub network: String,
    /// What it is committed as when its command succeeds (`None`: a probe,
    /// nothing is kept).
    pub commit: Option<Commit>,
    /// Most bytes its writable layer may hold: the engine has no size
    /// limit for it on most storage drivers, so the set-up is watched and
    /// killed past this.
    pub disk_limit: u64,
}

/// How often the writable layer's size is read.
const DISK_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// The image a successful set-up becomes.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Repository, e.g. `autodev-env/python`.
    pub repo: String,
    /// Tag (the cache key's short form).
    pub tag: String,
    /// Dockerfile instructions applied while committing (`LABEL`, `ENV`).
    pub changes: Vec<String>,
}

impl SetupShape {
    pub(super) fn apply(&self, body: &mut ContainerCreateBody) {
        if let Some(h) = body.host_config.as_mut() {
            h.readonly_rootfs = Some(false);
            h.auto_remove = Some(false);
            h.network_mode = Some(self.network.clone());
        }
        body.network_disabled = Some(false);
        if let Some(l) = body.labels.as_mut() {
            l.insert(SETUP_LABEL.into(), "true".into());
        }
    }
}

/// Drives a set-up like a run and commits the container once its command
/// has passed, before it is removed.
struct Committing<'a> {
    sandbox: &'a DockerSandbox,
    commit: Option<&'a Commit>,
    disk_limit: u64,
    image: Mutex<Result<Option<String>, String>>,
    /// The writable layer's size when it was found over the limit.
    over_disk: Mutex<Option<u64>>,
}

impl Backend for Committing<'_> {
    type Handle = Removal;
    type Io = (Output, Input, ExitWait);
    const REMOVE_LOST: bool = false;

    async fn drive(
        &self,
        run: &mut Running<'_, Removal>,
        io: Self::Io,
        manifest: Manifest,
    ) -> Result<Outcome, SandboxError> {
        let id = run.handle.id.clone();
        // The watch kills the container and then waits forever: the run
        // ends as a killed one would, and its outcome is read as usual.
        let mut outcome = tokio::select! {
            o = self.sandbox.drive_run(run, io, manifest) => o?,
            never = self.watch_disk(&id) => match never {},
        };
        // A write that ended between two reads is caught before any commit.
        let after = match outcome.exit_code {
            Some(0) => self.disk_size(&id).await.filter(|s| *s > self.disk_limit),
            _ => None,
        };
        if let Some(size) = after.or_else(|| self.over_disk.lock().ok().and_then(|s| *s)) {
            outcome.verdict = crate::sandbox::Verdict::Failed;
            outcome.exit_code = None;
            outcome.error = Some(format!(
                "the install step wrote {size} bytes outside /workspace and /tmp, over the \
                 set-up's disk limit of {} bytes; raise --setup-disk",
                self.disk_limit
            ));
            return Ok(outcome);
        }
        if let (Some(commit), Some(0)) = (self.commit, outcome.exit_code) {
            let committed = self.commit_now(commit, &run.handle.id).await;
            if let Ok(mut slot) = self.image.lock() {
                *slot = committed.map(Some);
            }
        }
        Ok(outcome)
    }

    async fn remove(&self, handle: &mut Removal) -> Result<(), String> {
        handle.now().await
    }

    fn left_behind(&self, handle: &Removal, why: &str) -> String {
        Backend::left_behind(self.sandbox, handle, why)
    }

    fn place(&self, facts: &RunFacts) -> String {
        Backend::place(self.sandbox, facts)
    }
}

impl Committing<'_> {
    /// The container's writable layer, in bytes, if the engine says.
    async fn disk_size(&self, id: &str) -> Option<u64> {
        self.sandbox
            .docker
            .inspect_container(
                id,
                Some(bollard::query_parameters::InspectContainerOptions { size: true }),
            )
            .await
            .ok()
            .and_then(|c| c.size_rw)
            .and_then(|s| u64::try_from(s).ok())
    }

    /// Reads the writable layer's size every [`DISK_POLL`]; past the limit,
    /// records it and kills the container. Never returns.
    async fn watch_disk(&self, id: &str) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(DISK_POLL).await;
            let size = self.disk_size(id).await;
            if let Some(size) = size.filter(|s| *s > self.disk_limit) {
                if let Ok(mut slot) = self.over_disk.lock() {
                    *slot = Some(size);
                }
                let _ = self
                    .sandbox
                    .docker
                    .kill_container(
                        id,
                        Some(bollard::query_parameters::KillContainerOptions {
                            signal: "SIGKILL".into(),
                        }),
                    )
                    .await;
                return std::future::pending().await;
            }
        }
    }

    async fn commit_now(&self, commit: &Commit, id: &str) -> Result<String, String> {
        let mut changes = vec![
            // The wrapper that ran the set-up is not what the image runs.
            r#"CMD ["/bin/sh"]"#.to_string(),
        ];
        changes.extend(commit.changes.iter().cloned());
        let opts = CommitContainerOptions {
            container: Some(id.to_string()),
            repo: Some(commit.repo.clone()),
            tag: Some(commit.tag.clone()),
            comment: Some("autodev environment".into()),
            author: None,
            pause: false,
            changes: Some(changes.join("\n")),
        };
        self.sandbox
            .docker
            .commit_container(opts, ContainerConfig::default())
            .await
            .map(|r| full_id(&r.id))
            .map_err(|e| e.to_string())
    }
}

/// An image ID as Docker writes it everywhere (`sha256:HEX`): Podman's
/// commit answers with the bare hex its inspect and list prefix.
fn full_id(id: &str) -> String {
    let bare = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    match bare {
        true => format!("sha256:{id}"),
        false => id.to_string(),
    }
}

impl DockerSandbox {
    /// Runs the set-up `spec` in a container shaped by `shape` and, when its
    /// command exits 0, commits it. Returns the outcome and, on success,
    /// the new image's ID; a failed commit is an error.
    pub async fn run_setup(
        &self,
        spec: &RunSpec,
        shape: &SetupShape,
        sink: &mut dyn OutputSink,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(Outcome, Option<String>), SandboxError> {
        let clock = RunClock::new();
        let manifest = crate::sandbox::walk(spec).await?;
        let facts = self.image_facts(&spec.image).await?;
        let started = self.launch_as(spec, Some(shape)).await?;
        let prepared = Prepared {
            handle: started.removal,
            io: (started.output, started.input, started.exit),
            nonce: new_nonce(),
            report: ReportAt::None,
            spec: spec.clone(),
            manifest,
            clock: clock.created(),
            facts: RunFacts {
                image_id: facts.id,
                ..Default::default()
            },
        };
        let backend = Committing {
            sandbox: self,
            commit: shape.commit.as_ref(),
            disk_limit: shape.disk_limit,
            image: Mutex::new(Ok(None)),
            over_disk: Mutex::new(None),
        };
        let outcome = run::start(&backend, prepared, sink, cancel).await?;
        let image = backend
            .image
            .into_inner()
            .unwrap_or(Ok(None))
            .map_err(|detail| SandboxError::Backend {
                engine: self.name.clone(),
                op: "commit the set-up container",
                detail,
            })?;
        Ok((outcome, image))
    }

    /// Makes an internal network (no route out) for one set-up, labelled
    /// as autodev's and with the run's `labels`, on a bridge named
    /// `bridge`; returns its ID and the host's address on it.
    pub async fn create_setup_network(
        &self,
        name: &str,
        bridge: &str,
        labels: &[(String, String)],
    ) -> Result<(String, IpAddr), SandboxError> {
        let mut all: std::collections::HashMap<String, String> = labels.iter().cloned().collect();
        all.extend([
            (super::MANAGED_LABEL.to_string(), "true".to_string()),
            (SETUP_LABEL.to_string(), "true".to_string()),
            (super::PID_LABEL.to_string(), std::process::id().to_string()),
            (
                super::policy::HOST_LABEL.to_string(),
                super::policy::host_name().to_string(),
            ),
        ]);
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            internal: Some(true),
            labels: Some(all),
            options: Some(std::collections::HashMap::from([(
                "com.docker.network.bridge.name".to_string(),
                bridge.to_string(),
            )])),
            ..Default::default()
        };
        let made = self
            .docker
            .create_network(req)
            .await
            .map_err(|e| self.err("create network", e))?;
        let id = made.id;
        let gateway = self
            .docker
            .inspect_network(
                &id,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .ok()
            .and_then(|n| n.ipam)
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.gateway))
            .and_then(|g| g.parse::<IpAddr>().ok());
        match gateway {
            Some(g) => Ok((id, g)),
            None => {
                let _ = self.docker.remove_network(&id).await;
                Err(SandboxError::Backend {
                    engine: self.name.clone(),
                    op: "create network",
                    detail: format!("the engine gave network {name} no gateway address"),
                })
            }
        }
    }

    /// Removes a set-up network (its container is gone by then).
    pub async fn remove_setup_network(&self, id: &str) -> Result<(), String> {
        tokio::time::timeout(
            super::removal::CLEANUP_TIMEOUT,
            self.docker.remove_network(id),
        )
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())
    }

    /// Removes the set-up networks no process of this host uses any more.
    pub(super) async fn clean_setup_networks(&self) -> usize {
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{SETUP_LABEL}=true")],
        )]);
        let Ok(list) = self
            .docker
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
        else {
            return 0;
        };
        let mut removed = 0;
        for n in list {
            let labels = n.labels.clone().unwrap_or_default();
            // Another host's set-up is that host's to clean.
            let ours = labels.get(super::policy::HOST_LABEL).map(String::as_str)
                == Some(super::policy::host_name());
            let owner = labels
                .get(super::PID_LABEL)
                .and_then(|p| p.parse::<i32>().ok());
            if !ours || owner.is_none_or(super::removal::alive) {
                continue;
            }
            if let Some(id) = n.id {
                if self.remove_setup_network(&id).await.is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_ids_are_written_one_way() {
        let hex = "8e6230fa5aae750cfcda761bfcacece0a7798fdb86fd2d0484fb8319f70b443a";
        assert_eq!(super::full_id(hex), format!("sha256:{hex}"));
        assert_eq!(
            super::full_id(&format!("sha256:{hex}")),
            format!("sha256:{hex}")
        );
        assert_eq!(super::full_id("abc"), "abc");
    }
}
