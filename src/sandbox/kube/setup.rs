//! `autodev kube setup`: the namespace runs go to, and the NetworkPolicy
//! that denies the network to pods that should have none; then a probe that
//! tells whether the cluster enforces it (only some network plugins do, and
//! a policy nobody enforces is accepted without a word).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use super::pod::NETWORK_LABEL;
use super::KubeSandbox;
use crate::config::Network;
use crate::sandbox::{NullSink, RunSpec, Sandbox, SandboxError, Verdict};

/// The policy's name.
pub const POLICY: &str = "autodev-deny-network";

/// Whether the cluster keeps pods labelled `autodev.network=none` off the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// A pod outside the policy reached the probe address and one under it did not.
    Enforced,
    /// A pod under the policy reached it: the network plugin ignores policies.
    NotEnforced,
    /// The probe could not decide, and why.
    Unknown(String),
}

/// What setup did and found.
#[derive(Debug, Clone)]
pub struct SetupReport {
    /// Whether the namespace was created (false: it was there).
    pub namespace_created: bool,
    /// Whether the policy was created (false: it was there).
    pub policy_created: bool,
    /// What the probe found.
    pub enforcement: Enforcement,
    /// The address the probe pods tried to reach.
    pub probe_target: String,
}

impl KubeSandbox {
    /// Creates the namespace and the policy where missing, then probes
    /// enforcement with two pods of `spec` (its image needs `bash` and `timeout`).
    pub async fn setup(&self, spec: &RunSpec) -> Result<SetupReport, SandboxError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(self.namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let namespace_created = self
            .create_if_missing(
                "create namespace",
                namespaces.create(&PostParams::default(), &ns),
            )
            .await?;
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        let policy = NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(POLICY.into()),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        NETWORK_LABEL.to_string(),
                        "none".to_string(),
                    )])),
                    ..Default::default()
                }),
                // Both directions listed, no rule given: nothing in, nothing out.
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..Default::default()
            }),
        };
        let policy_created = self
            .create_if_missing(
                "create network policy",
                policies.create(&PostParams::default(), &policy),
            )
            .await?;
        let target = self.probe_target();
        let enforcement = self.probe(spec, &target).await;
        Ok(SetupReport {
            namespace_created,
            policy_created,
            enforcement,
            probe_target: target,
        })
    }

    async fn create_if_missing<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<bool, SandboxError> {
        match self.call(op, f).await {
            Ok(_) => Ok(true),
            Err(SandboxError::Backend { detail, .. }) if detail.contains("already exists") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The API server's address as host:port: reachable from pods of any
    /// cluster that has not denied it.
    pub fn probe_target(&self) -> String {
        let rest = self
            .cluster
            .split_once("://")
            .map_or(&*self.cluster, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        if has_port {
            authority.to_string()
        } else {
            format!("{authority}:443")
        }
    }

    async fn probe(&self, spec: &RunSpec, target: &str) -> Enforcement {
        let (host, port) = target.rsplit_once(':').unwrap_or((target, "443"));
        let connect = format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}'");
        let run = |network: Network| {
            let mut s = spec.clone();
            s.limits.network = network;
            s.command = connect.as_str().into();
            s.junit = crate::sandbox::Junit::Off;
            async move { self.run(&s, &mut NullSink, &CancellationToken::new()).await }
        };
        let open = match run(Network::Bridge).await {
            Ok(o) => o,
            Err(e) => return Enforcement::Unknown(format!("the probe pod failed: {e}")),
        };
        if open.verdict != Verdict::Passed {
            return Enforcement::Unknown(format!(
                "a pod outside the policy could not reach {target} either (exit {:?}: {})",
                open.exit_code,
                open.stderr.text.trim()
            ));
        }
        match run(Network::None).await {
            Ok(o) if o.verdict == Verdict::Passed => Enforcement::NotEnforced,
            Ok(o) if o.verdict == Verdict::Failed => Enforcement::Enforced,
            Ok(o) => {
                Enforcement::Unknown(format!("the probe under the policy ended {}", o.verdict))
            }
            Err(e) => Enforcement::Unknown(format!("the probe pod failed: {e}")),
        }
    }
}
