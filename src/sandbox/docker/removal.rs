//! Removing containers: on every path of a run, as a backstop when a
//! prepared run is dropped, and for `autodev clean`.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

use super::policy::{host_name, HOST_LABEL, PID_LABEL};
use super::MANAGED_LABEL;

/// Bound on each clean-up call, so a wedged daemon cannot hang the tool past
/// the run's own timeout by much.
pub(super) const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Removes its container when told to, or, as a backstop, in the background
/// when dropped first (a caller that drops a prepared run, or a future
/// dropped mid-run, must not leave a container behind).
#[derive(Debug)]
pub(crate) struct Removal {
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

    /// The engine removed the container itself (it was made to): nothing
    /// is left to do.
    pub(super) fn gone(&mut self) {
        self.armed = false;
    }

    /// Removes the container, unless that is done already.
    pub(super) async fn now(&mut self) -> Result<(), String> {
        if !self.armed {
            return Ok(());
        }
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

/// Removes the containers that a dead autodev process of this host left:
/// created and never started (it died between the two calls: nothing
/// inside will end it), or ended and not removed (Podman, which does not
/// remove them by itself). Every other container ends by itself and Docker
/// removes it. Returns how many were removed.
pub(super) async fn sweep_orphans(docker: &Docker) -> usize {
    let filters = HashMap::from([
        (
            "label".to_string(),
            vec![
                format!("{MANAGED_LABEL}=true"),
                format!("{HOST_LABEL}={}", host_name()),
            ],
        ),
        (
            "status".to_string(),
            vec!["created".to_string(), "exited".to_string()],
        ),
    ]);
    let listed = docker.list_containers(Some(ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    }));
    let Ok(Ok(list)) = tokio::time::timeout(CLEANUP_TIMEOUT, listed).await else {
        return 0;
    };
    let mut removed = 0;
    for c in list {
        let owner = c
            .labels
            .as_ref()
            .and_then(|l| l.get(PID_LABEL))
            .and_then(|p| p.parse::<i32>().ok());
        if let (Some(id), Some(pid)) = (c.id, owner) {
            if !alive(pid) && remove(docker, &id).await.is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Whether a process `pid` exists on this host (a pid taken over by
/// another process counts: the container is then left alone).
pub(super) fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_live_process_is_alive_and_a_reaped_one_is_not() {
        assert!(super::alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!super::alive(pid));
    }
}
