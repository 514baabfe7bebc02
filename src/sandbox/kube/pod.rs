//! The Pod definition: every isolation setting of the Kubernetes backend
//! lives here, in one place for review. Only fields that are stable from
//! Kubernetes 1.20 on are used.
//!
//! What a Pod cannot have that a Docker container has: `network none`
//! (egress is denied by the NetworkPolicy `autodev kube setup` creates, for
//! pods labelled `autodev.network=none`, where the cluster's network plugin
//! enforces policies), a per-pod process limit (the kubelet's
//! `--pod-max-pids` applies node-wide), and a hard tmpfs size (a memory
//! `emptyDir`'s size limit is enforced by eviction; its pages count against
//! the memory limit in any case).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::docker::policy::{MANAGED_LABEL, PID_LABEL, RUN_LABEL};
use super::super::{wrapper, RunSpec, SandboxError};
use crate::config::Network;

/// Label saying whether a pod may use the network: the deny-all
/// NetworkPolicy selects `none`.
pub const NETWORK_LABEL: &str = "autodev.network";
/// The one container's name.
pub const CONTAINER: &str = "run";
/// Added to the wall-clock limit for `activeDeadlineSeconds`, the cluster's
/// backstop should autodev itself die: the pod's clock starts before the
/// workspace is in, autodev's after.
const DEADLINE_GRACE_SECS: i64 = 60;

/// When a node pulls the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PullPolicy {
    /// Only when the node lacks it.
    #[default]
    IfNotPresent,
    /// Never: the image must be on the node (offline clusters).
    Never,
    /// Every time.
    Always,
}

impl PullPolicy {
    fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
            PullPolicy::Always => "Always",
        }
    }
}

/// A label value Kubernetes accepts (at most 63 characters of
/// `[A-Za-z0-9._-]`, alphanumeric at both ends); the original goes in an
/// annotation of the same name.
pub fn label_value(v: &str) -> String {
    let mut s: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    while s.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        s.pop();
    }
    while s.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        s.remove(0);
    }
    s
}

/// `user` as numeric uid and gid: `runAsNonRoot` needs numbers.
fn ids(user: &str) -> Result<(i64, i64), SandboxError> {
    let (u, g) = user.split_once(':').unwrap_or((user, user));
    match (u.parse::<i64>(), g.parse::<i64>()) {
        (Ok(u), Ok(g)) if u > 0 && g >= 0 => Ok((u, g)),
        _ => Err(SandboxError::Refused {
            detail: format!(
                "Kubernetes pods run as a numeric non-root user: --user {user} is not one (e.g. 1000:1000)"
            ),
        }),
    }
}

/// The pod for one run.
pub(super) fn pod_body(
    spec: &RunSpec,
    name: &str,
    run_id: &str,
    nonce: &str,
    report: Option<&str>,
    pull: PullPolicy,
) -> Result<Pod, SandboxError> {
    let l = &spec.limits;
    if l.file_size.is_some() {
        // A pod has no per-process resource limits to set it with.
        return Err(SandboxError::Settings(
            "--file-size is enforced by Docker engines only: a Kubernetes pod has no per-process file-size limit; leave it unset with --backend kubernetes".into(),
        ));
    }
    let (uid, gid) = ids(&l.user)?;
    let (labels, annotations) = labels(spec, l.network, run_id);
    let container = container(spec, nonce, report, pull);
    let memory_dir = |name: &str, size: u64| Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity(size.to_string())),
        }),
        ..Default::default()
    };
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            // autodev, not a controller, owns retries: verdicts stay exact.
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            active_deadline_seconds: Some(
                i64::try_from(l.timeout.as_secs())
                    .unwrap_or(i64::MAX / 2)
                    .saturating_add(DEADLINE_GRACE_SECS),
            ),
            termination_grace_period_seconds: Some(0),
            runtime_class_name: l.runtime.clone(),
            hostname: Some("sandbox".into()),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(uid),
                run_as_group: Some(gid),
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            volumes: Some(vec![
                memory_dir("workspace", l.workspace_size),
                memory_dir("tmp", l.tmp_size),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The pod's labels (autodev's, and the run's own, made valid label
/// values) and annotations (the run's labels as given).
fn labels(
    spec: &RunSpec,
    network: Network,
    run_id: &str,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = BTreeMap::from([
        (MANAGED_LABEL.to_string(), "true".to_string()),
        (RUN_LABEL.to_string(), run_id.to_string()),
        (PID_LABEL.to_string(), std::process::id().to_string()),
        (
            NETWORK_LABEL.to_string(),
            match network {
                Network::None => "none",
                Network::Bridge => "bridge",
            }
            .to_string(),
        ),
    ]);
    let mut annotations = BTreeMap::new();
    for (k, v) in &spec.labels {
        labels.insert(k.clone(), label_value(v));
        annotations.insert(k.clone(), v.clone());
    }
    (labels, annotations)
}

/// The one container: the wrapper, the limits as requests and limits,
/// and no privilege of any kind.
fn container(spec: &RunSpec, nonce: &str, report: Option<&str>, pull: PullPolicy) -> Container {
    let l = &spec.limits;
    // Requests equal to limits: the pod is scheduled where the limits fit.
    let millicpus = ((l.cpus * 1000.0).ceil() as i64).max(1);
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(format!("{millicpus}m"))),
        ("memory".to_string(), Quantity(l.memory.to_string())),
    ]);
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        ..Default::default()
    };
    Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(pull.as_str().into()),
        command: Some(wrapper::container_cmd(
            nonce,
            report,
            l.cpu_time
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            &spec.command,
        )),
        env: Some(
            spec.env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    value_from: None,
                })
                .collect(),
        ),
        working_dir: Some("/workspace".into()),
        // The workspace arrives as a tar on stdin, over attach.
        stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        resources: Some(ResourceRequirements {
            limits: Some(resources.clone()),
            requests: Some(resources),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![mount("workspace", "/workspace"), mount("tmp", "/tmp")]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_is_locked_down_by_default() {
        let mut spec = RunSpec::new("/tmp", "true", "img");
        spec.labels = vec![("autodev.task".into(), "a/b c".into())];
        let pod = pod_body(&spec, "autodev-r1", "r1", "n", None, PullPolicy::Never).unwrap();
        let p = pod.spec.unwrap();
        let c = &p.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        let psc = p.security_context.unwrap();
        assert_eq!(
            (psc.run_as_user, psc.run_as_group),
            (Some(1000), Some(1000))
        );
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(p.restart_policy.as_deref(), Some("Never"));
        assert_eq!(p.automount_service_account_token, Some(false));
        assert_eq!(p.enable_service_links, Some(false));
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.limits, r.requests);
        assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "1000m");
        assert_eq!(c.env, Some(vec![]));
        assert!(p.volumes.unwrap().iter().all(|v| {
            let d = v.empty_dir.as_ref().unwrap();
            d.medium.as_deref() == Some("Memory") && d.size_limit.is_some()
        }));
        let meta = pod.metadata;
        let labels = meta.labels.unwrap();
        assert_eq!(labels[MANAGED_LABEL], "true");
        assert_eq!(labels[NETWORK_LABEL], "none");
        assert_eq!(labels["autodev.task"], "a_b_c");
        assert_eq!(meta.annotations.unwrap()["autodev.task"], "a/b c");
    }

    #[test]
    fn label_values_are_cut_to_what_kubernetes_takes() {
        assert_eq!(label_value("-x/y-"), "x_y");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
        assert_eq!(label_value("t-1.2_3"), "t-1.2_3");
    }

    #[test]
    fn a_user_must_be_numeric_and_not_root() {
        assert_eq!(ids("1000").unwrap(), (1000, 1000));
        assert_eq!(ids("1000:2000").unwrap(), (1000, 2000));
        assert!(ids("nobody").is_err());
        assert!(ids("0:0").unwrap_err().is_usage());
    }
}
