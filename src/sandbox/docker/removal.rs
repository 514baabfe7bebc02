//! Removing containers: on every path of a run, as a backstop when a
//! prepared run is dropped, and for `autodev clean`.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

use super::MANAGED_LABEL;

/// Bound on each clean-up call, so a wedged daemon cannot hang the tool past
/// the run's own timeout by much.
pub(super) const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Removes its container when told to, or, as a backstop, in the background
/// when dropped first (a caller that drops a prepared run, or a future
/// dropped mid-run, must not leave a container behind).
#[derive(Debug)]
pub(super) struct Removal {
    docker: Docker,
    /// The container.
    pub(super) id: String,
    armed: bool,
}

impl Removal {
    pub(super) fn new(docker: Docker, id: String) -> Self {
        Removal {
            docker,
            id,
            armed: true,
        }
    }

    pub(super) async fn now(&mut self) -> Result<(), String> {
        self.armed = false;
        remove(&self.docker, &self.id).await
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let id = std::mem::take(&mut self.id);
            handle.spawn(async move {
                let _ = remove(&docker, &id).await;
            });
        }
    }
}

pub(super) async fn list_managed(
    docker: &Docker,
    labels: &[(String, String)],
) -> Result<Vec<String>, BollardError> {
    let mut wanted = vec![format!("{MANAGED_LABEL}=true")];
    wanted.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    let filters = HashMap::from([("label".to_string(), wanted)]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Force-removes a container (killing it if needed), tolerating "already
/// gone"; bounded in time, so a wedged engine cannot hold the caller.
pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), String> {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let mut last = String::new();
    // One retry: removal can race with the daemon still tearing down the exit.
    for _ in 0..2 {
        match tokio::time::timeout(
            CLEANUP_TIMEOUT,
            docker.remove_container(id, Some(opts.clone())),
        )
        .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            })) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            // A daemon that did not answer will not answer a retry either.
            Err(_) => return Err(format!("no answer within {}s", CLEANUP_TIMEOUT.as_secs())),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}
