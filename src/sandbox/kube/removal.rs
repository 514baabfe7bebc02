//! Deleting pods: on every path of a run, as a backstop when a prepared run
//! is dropped, and for `autodev clean`. Deletion is immediate (grace period
//! 0): a run's processes have nothing to save, and a pod on a lost node is
//! then gone from the API at once instead of lingering as `Terminating`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};

/// Bound on each delete, so a wedged cluster cannot hold the caller.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// Deletes its pod when told to, or, as a backstop, in the background when
/// dropped first.
#[derive(Debug)]
pub(crate) struct PodRemoval {
    pods: Api<Pod>,
    name: String,
    armed: bool,
}

impl PodRemoval {
    pub(super) fn new(pods: Api<Pod>, name: String) -> Self {
        PodRemoval {
            pods,
            name,
            armed: true,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) async fn now(&mut self) -> Result<(), String> {
        self.armed = false;
        delete(&self.pods, &self.name).await
    }
}

impl Drop for PodRemoval {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let pods = self.pods.clone();
            let name = std::mem::take(&mut self.name);
            handle.spawn(async move {
                let _ = delete(&pods, &name).await;
            });
        }
    }
}

/// Deletes a pod at once, tolerating "already gone"; bounded in time.
pub(super) async fn delete(pods: &Api<Pod>, name: &str) -> Result<(), String> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    match tokio::time::timeout(DELETE_TIMEOUT, pods.delete(name, &dp)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", DELETE_TIMEOUT.as_secs())),
    }
}
