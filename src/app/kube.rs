//! `autodev kube setup`.

use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::cli::KubeCommand;
use autodev::sandbox::kube::setup::{Enforcement, POLICY};
use autodev::sandbox::kube::{KubeSandbox, KubeSettings};
use autodev::sandbox::{RunSpec, SandboxError};

pub(super) async fn kube_cmd(cmd: KubeCommand, cancel: &CancellationToken) -> Result<ExitCode> {
    let KubeCommand::Setup {
        namespace,
        image,
        image_pull_policy,
    } = cmd;
    let settings = KubeSettings {
        namespace: Some(namespace.clone()),
        pull: image_pull_policy,
        registry: None,
    };
    let k = KubeSandbox::connect(&settings, false).await?;
    let dir = tempfile::tempdir()?;
    let spec = RunSpec::new(dir.path(), "true", image);
    let report = tokio::select! {
        r = k.setup(&spec) => r?,
        _ = cancel.cancelled() => return Err(SandboxError::Interrupted.into()),
    };
    let said = |created| if created { "created" } else { "already there" };
    autodev::outln!("namespace {namespace}: {}", said(report.namespace_created));
    autodev::outln!("network policy {POLICY}: {}", said(report.policy_created));
    let target = &report.probe_target;
    match &report.enforcement {
        Enforcement::Enforced => autodev::outln!(
            "network denial: enforced (a probe pod reached {target}; one under the policy could not)"
        ),
        Enforcement::NotEnforced => autodev::outln!(
            "network denial: NOT enforced: a probe pod under the policy reached {target}; this cluster's network plugin ignores NetworkPolicy, so runs here have the network"
        ),
        Enforcement::Unknown(why) => {
            autodev::outln!("network denial: could not tell: {why}")
        }
    }
    Ok(ExitCode::SUCCESS)
}
