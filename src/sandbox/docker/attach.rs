//! A started container's streams: its attached output and stdin, and the
//! wait for its exit status. Shared by the containers started ahead
//! (`warm.rs`) and the run that uses one (`stream.rs`).

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use std::collections::HashMap;
use std::pin::Pin;

use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, WaitContainerOptions};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

use super::health::HEARTBEAT_TIMEOUT;
use super::removal::{Removal, CLEANUP_TIMEOUT};
use super::DockerSandbox;
use crate::sandbox::SandboxError;

/// The container's output, as the attach gives it.
pub(crate) type Output =
    Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
/// The container's stdin.
pub(crate) type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// The wait for a container's exit status, sent before the container
/// starts: the engine removes a container when it ends, and a wait sent
/// after that finds nothing.
#[derive(Debug)]
pub(crate) struct ExitWait {
    task: tokio::task::JoinHandle<Result<i64, BollardError>>,
    /// Docker answers once it has removed the container too.
    removes: bool,
    /// When it was registered (Unix seconds), for the events fallback.
    since: i64,
}

impl ExitWait {
    /// `removes`: whether the engine removes the container as it ends
    /// (Podman's Docker-compatible wait knows no "removed").
    pub(super) fn register(sandbox: &DockerSandbox, id: &str, removes: bool) -> Self {
        let condition = if removes { "removed" } else { "not-running" };
        let docker = sandbox.docker.clone();
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let mut stream = docker.wait_container(
                &id,
                Some(WaitContainerOptions {
                    condition: condition.into(),
                }),
            );
            match stream.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                // bollard turns a non-zero exit into an error; it is a status here.
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
                Some(Err(e)) => Err(e),
                None => Err(BollardError::DockerStreamError {
                    error: "the wait stream ended without a status".into(),
                }),
            }
        });
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        ExitWait {
            task,
            removes,
            since,
        }
    }

    /// The exit status, once the output has ended; the container is then
    /// removed by the engine (Docker) or ready to be.
    pub(super) async fn status(
        &mut self,
        sandbox: &DockerSandbox,
        id: &str,
        lost: &CancellationToken,
        removal: &mut Removal,
    ) -> Result<i64, SandboxError> {
        let got = tokio::select! {
            r = tokio::time::timeout(CLEANUP_TIMEOUT, &mut self.task) => r,
            _ = lost.cancelled() => return Err(sandbox.lost(
                "wait", format!("no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs()))),
        };
        let code = match got {
            Err(_) => {
                return Err(sandbox.lost(
                    "wait",
                    format!("no exit status within {}s", CLEANUP_TIMEOUT.as_secs()),
                ))
            }
            Ok(Err(join)) => return Err(sandbox.lost("wait", join.to_string())),
            Ok(Ok(Ok(code))) => code,
            // Gone before the wait took hold: the engine's event log still
            // has its exit.
            Ok(Ok(Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }))) => return sandbox.exit_from_events(id, self.since).await,
            Ok(Ok(Err(e))) => return Err(sandbox.err("wait", e)),
        };
        if self.removes {
            removal.gone();
        }
        Ok(code)
    }
}

#[cfg(test)]
impl ExitWait {
    /// A wait that never answers, for tests without an engine.
    pub(super) fn never() -> Self {
        ExitWait {
            task: tokio::spawn(std::future::pending()),
            removes: false,
            since: 0,
        }
    }
}

impl Drop for ExitWait {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The engine's own record of a container's end, for when the wait missed it.
impl DockerSandbox {
    /// A container's exit code from the engine's event log, for one that
    /// was removed before its wait took hold.
    async fn exit_from_events(&self, id: &str, since: i64) -> Result<i64, SandboxError> {
        let lost = |detail: String| self.lost("wait", detail);
        match self.first_event(id, since, "die").await {
            Some(e) => e
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("exitCode").and_then(|c| c.parse().ok()))
                .ok_or_else(|| lost("its exit event holds no exit code".into())),
            None => Err(lost(
                "the container was gone before its exit status was read".into(),
            )),
        }
    }

    /// Whether the engine saw the container's cgroup kill a process for
    /// memory: its event log where it removed the container on exit
    /// (Docker), else the container's state.
    pub(super) async fn oom_seen(&self, id: &str, exit: &ExitWait) -> bool {
        if exit.removes {
            return self.first_event(id, exit.since, "oom").await.is_some();
        }
        let inspect = tokio::time::timeout(
            CLEANUP_TIMEOUT,
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .await;
        matches!(inspect, Ok(Ok(c)) if c.state.as_ref().and_then(|s| s.oom_killed) == Some(true))
    }

    /// The container's first `kind` event since `since` (Unix seconds), from
    /// the engine's log of past events; `None` if there is none or the
    /// engine does not answer within the clean-up bound.
    async fn first_event(&self, id: &str, since: i64, kind: &str) -> Option<EventMessage> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let opts = EventsOptions {
            since: Some((since - 1).to_string()),
            until: Some((now + 1).to_string()),
            filters: Some(HashMap::from([
                ("container".to_string(), vec![id.to_string()]),
                ("event".to_string(), vec![kind.to_string()]),
            ])),
        };
        let mut events = self.docker.events(Some(opts));
        match tokio::time::timeout(CLEANUP_TIMEOUT, events.next()).await {
            Ok(Some(Ok(e))) => Some(e),
            _ => None,
        }
    }
}
