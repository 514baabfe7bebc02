//! The Kubernetes implementation of [`Sandbox`]: one bare Pod per run on a
//! cluster the user already has (`KUBECONFIG`, or in-cluster settings).
//!
//! Lifecycle: `prepare` walks the workspace and creates the pod (its one
//! container waits on stdin, as Docker's does); `start` waits until it runs,
//! attaches, streams the same workspace tar the Docker backend sends (padded
//! to whole 10 KiB records: a 1.20 server cannot half-close stdin over the
//! WebSocket, and GNU tar on a pipe waits for full records), captures the
//! output from the attach stream with the same bounds (never from the
//! node's logs), reads the verdict from the container's terminated state,
//! and deletes the pod on every path. A pod that cannot be scheduled or
//! pulled, or whose node is lost, is a [`SandboxError`], so a batch re-runs
//! it elsewhere: autodev, not the Job controller, owns retries.
//!
//! Only API that is stable from Kubernetes 1.20 on is used: Pods, attach,
//! delete, labels, Nodes (read, where allowed), server-side dry run.

mod client;
pub mod pod;
pub mod registry;
mod removal;
mod run;
pub mod setup;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use tokio_util::sync::CancellationToken;

use super::output::ReportAt;
use super::{
    walk, Junit, Outcome, OutputSink, RunClock, RunSpec, Sandbox, SandboxError, CONVENTIONAL_JUNIT,
};
use crate::workspace::Manifest;
pub use client::{KubeSettings, DEFAULT_NAMESPACE};
pub use pod::PullPolicy;
pub use registry::{EnvRoute, Registry};
use removal::PodRemoval;

/// A [`Sandbox`] on one Kubernetes cluster, in one namespace.
#[derive(Clone)]
pub struct KubeSandbox {
    client: kube::Client,
    pods: Api<Pod>,
    namespace: String,
    pull: PullPolicy,
    /// Where environments built on this host go for the nodes to pull.
    envs: Option<EnvRoute>,
    /// The cluster's address, for messages.
    cluster: String,
}

impl std::fmt::Debug for KubeSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSandbox")
            .field("cluster", &self.cluster)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// A created pod, not attached yet.
#[derive(Debug)]
pub struct KubePrepared {
    removal: PodRemoval,
    nonce: String,
    report: ReportAt,
    spec: RunSpec,
    manifest: Manifest,
    clock: RunClock,
}

impl KubeSandbox {
    /// The cluster's address and namespace, for messages.
    pub fn name(&self) -> String {
        format!("{} (namespace {})", self.cluster, self.namespace)
    }

    /// The namespace runs go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How environments reach the nodes, if a registry was given.
    pub fn environments(&self) -> Option<&EnvRoute> {
        self.envs.as_ref()
    }
}

impl super::run::Backend for KubeSandbox {
    type Handle = PodRemoval;
    const REMOVE_LOST: bool = true;
    type Io = ();

    async fn drive(
        &self,
        run: &mut super::run::Running<'_, PodRemoval>,
        (): (),
        manifest: Manifest,
    ) -> Result<Outcome, SandboxError> {
        self.drive_run(run, manifest).await
    }

    async fn remove(&self, handle: &mut PodRemoval) -> Result<(), String> {
        handle.now().await
    }

    fn left_behind(&self, handle: &PodRemoval, why: &str) -> String {
        format!(
            "could not delete pod {} in {}: {why}; run `autodev clean --backend kubernetes`",
            handle.name(),
            self.name()
        )
    }

    fn place(&self, facts: &super::run::RunFacts) -> String {
        match &facts.place {
            Some(node) => format!("{} node {node}", self.cluster),
            None => self.cluster.clone(),
        }
    }
}

impl Sandbox for KubeSandbox {
    type Prepared = KubePrepared;

    async fn prepare(&self, spec: &RunSpec) -> Result<KubePrepared, SandboxError> {
        let clock = RunClock::new();
        let manifest = walk(spec).await?;
        let run_id = super::new_run_id();
        let nonce = super::new_nonce();
        // A cluster has no API to read an image's labels: the report is
        // looked for where autodev's images put it.
        let report = match &spec.junit {
            Junit::At(p) => ReportAt::Declared(p.clone()),
            Junit::FromImage => ReportAt::Conventional(CONVENTIONAL_JUNIT.into()),
            Junit::Off => ReportAt::None,
        };
        let name = format!("autodev-{run_id}");
        let body = pod::pod_body(spec, &name, &run_id, &nonce, report.path(), self.pull)?;
        self.create(&body, false).await?;
        Ok(KubePrepared {
            removal: PodRemoval::new(self.pods.clone(), name),
            nonce,
            report,
            spec: spec.clone(),
            manifest,
            clock: clock.created(),
        })
    }

    async fn start(
        &self,
        p: KubePrepared,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        let prepared = super::run::Prepared {
            handle: p.removal,
            io: (),
            nonce: p.nonce,
            report: p.report,
            spec: p.spec,
            manifest: p.manifest,
            clock: p.clock,
            facts: super::run::RunFacts::default(),
        };
        super::run::start(self, prepared, sink, cancel).await
    }

    async fn abandon(&self, p: KubePrepared) {
        let mut removal = p.removal;
        let _ = removal.now().await;
    }

    async fn preflight(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        self.check_nodes(spec).await?;
        // The server checks every setting (runtime class, resources,
        // security context) against its admission rules without creating anything.
        let body = pod::pod_body(
            spec,
            &format!("autodev-{}", super::new_run_id()),
            "preflight",
            "preflight",
            None,
            self.pull,
        )?;
        self.create(&body, true).await
    }

    async fn clean(&self, labels: &[(String, String)]) -> Result<usize, SandboxError> {
        let mut selector = format!("{}=true", super::docker::MANAGED_LABEL);
        for (k, v) in labels {
            selector.push_str(&format!(",{k}={}", pod::label_value(v)));
        }
        let mut removed = 0;
        // A create sent just before its client died may still land; a second pass catches it.
        for pass in 0..2 {
            if pass > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let list = self
                .call(
                    "list pods",
                    self.pods.list(&ListParams::default().labels(&selector)),
                )
                .await?;
            for p in list.items {
                if let Some(name) = p.metadata.name {
                    if removal::delete(&self.pods, &name).await.is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

impl KubeSandbox {
    /// Creates `pod` (or, with `dry_run`, has the server check it).
    async fn create(&self, pod: &Pod, dry_run: bool) -> Result<(), SandboxError> {
        let pp = PostParams {
            dry_run,
            field_manager: Some("autodev".into()),
        };
        match tokio::time::timeout(client::CALL_TIMEOUT, self.pods.create(&pp, pod)).await {
            Err(_) => Err(self.lost(
                "create pod",
                format!("no answer within {}s", client::CALL_TIMEOUT.as_secs()),
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(kube::Error::Api(s))) => Err(match s.code {
                404 => self.no_namespace(),
                403 => SandboxError::Settings(format!(
                    "the cluster {} does not let these credentials create pods in namespace {}: {}",
                    self.cluster, self.namespace, s.message
                )),
                400 | 422 => SandboxError::Refused { detail: s.message },
                _ => SandboxError::CreateFailed {
                    engine: self.cluster.clone(),
                    detail: s.message,
                },
            }),
            Ok(Err(e)) => Err(self.lost("create pod", e.to_string())),
        }
    }
}
