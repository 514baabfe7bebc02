//! Where an environment is made for each backend: on Docker engines (the
//! first builds, the others get a copy), for a cluster (built here, pushed
//! to its registry), and not for `autodev pool`.

use tokio_util::sync::CancellationToken;

use super::{ensure, plan, publish, EnvError, EnvRecord, Plan, SetupSettings, Want};
use crate::sandbox::docker::fleet::DockerFleet;
use crate::sandbox::kube::KubeSandbox;
use crate::sandbox::{AnySandbox, OutputSink, RunSpec};

/// The environment `spec`'s project needs under `profile`, found or built
/// for the backend that runs the tests; `None` when there is nothing to
/// install. Docker engines: built on the first and copied to the others.
/// Kubernetes: built on this host's engine and pushed to `--registry`.
/// Pool runs have no set-up phase: a project that needs one gets
/// [`EnvError::Unsupported`] (the caller may go on without it).
pub async fn ensure_on(
    sandbox: &AnySandbox,
    spec: &RunSpec,
    profile: &str,
    settings: &SetupSettings,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<Option<EnvRecord>, EnvError> {
    let Some(plan) = plan(&spec.workspace, profile, &settings.mode)? else {
        return Ok(None);
    };
    let want = Want {
        spec,
        plan: &plan,
        settings,
    };
    let record = match sandbox {
        AnySandbox::Docker(fleet) => on_engines(fleet, want, sink, cancel).await?,
        AnySandbox::Kube(k) => for_cluster(k, want, sink, cancel).await?,
        AnySandbox::Socket(_) => {
            return Err(unsupported(
                &plan,
                "sandboxes started ahead by `autodev pool` run the profile's image only",
            ))
        }
    };
    Ok(Some(record))
}

/// Built on the fleet's first engine, copied to the others.
async fn on_engines(
    fleet: &DockerFleet,
    want: Want<'_>,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<EnvRecord, EnvError> {
    let first = fleet.first();
    let record = ensure(first, want, sink, cancel).await?;
    for other in fleet.engines().skip(1) {
        if !other.has_image(&record.image_id).await? {
            crate::images::push(first, other, &record.image).await?;
        }
    }
    Ok(record)
}

/// Built on this host's engine (`DOCKER_HOST` or the local socket), pushed
/// to the cluster's registry; the record says which digest the nodes pull.
async fn for_cluster(
    cluster: &KubeSandbox,
    want: Want<'_>,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<EnvRecord, EnvError> {
    let Some(route) = cluster.environments() else {
        return Err(unsupported(
            want.plan,
            "a cluster cannot see an image built here: pass --registry HOST:PORT, \
             a registry this host's engine pushes to and the nodes pull from",
        ));
    };
    let builder = route.builder().await?;
    let mut record = ensure(builder, want, sink, cancel).await?;
    let t0 = std::time::Instant::now();
    // Pushed once per process: a batch's other tasks find the digest here.
    let pinned = match route.pushed(&record.image_id) {
        Some(pinned) => pinned,
        None => {
            let limit = want.settings.timeout;
            let registry = route.registry();
            let pinned = publish::publish(builder, &record, registry, limit, cancel).await?;
            route.remember(&record.image_id, &pinned);
            pinned
        }
    };
    // On a hit as on a miss, the push is part of what the set-up cost.
    record.setup_ms += t0.elapsed().as_millis() as u64;
    record.pulled_from = Some(pinned);
    Ok(record)
}

fn unsupported(plan: &Plan, why: &str) -> EnvError {
    EnvError::Unsupported(format!(
        "this project needs a set-up phase ({}), and {why}; \
         pass --no-setup to run its tests without it",
        plan.install
    ))
}
