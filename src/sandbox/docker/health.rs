//! Engine health during a call or a run: a cut link shows no error at all
//! (calls just hang), so every call races a heartbeat that pings the
//! engine and gives up when a ping goes unanswered.

use bollard::errors::Error as BollardError;
use bollard::Docker;
use tokio_util::sync::CancellationToken;

use super::super::SandboxError;
use super::DockerSandbox;

/// A run longer than this pings the daemon at this interval, so a daemon that
/// stops answering (or a cut link, which shows no error at all) is noticed
/// long before the run's own timeout.
pub(super) const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one heartbeat ping may take.
pub(super) const HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl DockerSandbox {
    /// Awaits `call` until `lost` fires (the heartbeat went unanswered).
    pub(super) async fn watched<T>(
        &self,
        op: &'static str,
        lost: &CancellationToken,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, SandboxError> {
        tokio::select! {
            r = call => Ok(r),
            _ = lost.cancelled() => Err(self.lost(op, format!(
                "no answer to a ping within {}s", HEARTBEAT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Awaits an API call for as long as the engine answers pings: a call
    /// to an engine whose link was cut would otherwise wait for the client's
    /// two-minute timeout.
    pub(super) async fn alive<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, SandboxError> {
        let lost = CancellationToken::new();
        let _watchdog = Watchdog::spawn(self.docker.clone(), lost.clone());
        self.watched(op, &lost, call).await
    }

    /// Awaits an API call under a run's heartbeat (`lost`), turning the
    /// client's error into ours.
    pub(super) async fn guarded<T>(
        &self,
        op: &'static str,
        lost: &CancellationToken,
        call: impl std::future::Future<Output = Result<T, BollardError>>,
    ) -> Result<T, SandboxError> {
        self.watched(op, lost, call)
            .await?
            .map_err(|e| self.err(op, e))
    }
}

/// Pings the daemon every [`HEARTBEAT`] while a run lasts and fires `lost`
/// when a ping fails or goes unanswered; stops when dropped.
pub(super) struct Watchdog(tokio::task::JoinHandle<()>);

impl Watchdog {
    pub(super) fn spawn(docker: Docker, lost: CancellationToken) -> Self {
        Watchdog(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                match tokio::time::timeout(HEARTBEAT_TIMEOUT, docker.ping()).await {
                    Ok(Ok(_)) => {}
                    _ => {
                        lost.cancel();
                        return;
                    }
                }
            }
        }))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}
