//! Why a sandbox could not carry out a run, in words that hold for every
//! backend; each backend turns its client's errors into these.

use thiserror::Error;

use crate::workspace::WorkspaceError;

/// Why the sandbox could not carry out a run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The engine did not answer.
    #[error("cannot reach the container engine {engine} ({detail}): {hint}")]
    Unreachable {
        /// Which engine.
        engine: String,
        /// What the connection attempt said.
        detail: String,
        /// What to do about it.
        hint: String,
    },
    /// The Kubernetes cluster did not answer.
    #[error("cannot reach the Kubernetes cluster {cluster} ({detail}): check that it is up and that KUBECONFIG points to it")]
    ClusterUnreachable {
        /// The cluster's address.
        cluster: String,
        /// What was seen.
        detail: String,
    },
    /// The engine settings cannot be used (a malformed URL, a missing TLS file).
    #[error("{0}")]
    Settings(String),
    /// The image is not on a host.
    #[error("image {image} not found on {engine}: {hint}")]
    ImageMissing {
        /// The image asked for.
        image: String,
        /// Which engine lacks it.
        engine: String,
        /// What to do about it.
        hint: String,
    },
    /// The workspace could not be read or packed.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The engine could not create the container, for a reason that may pass.
    #[error("creating the container on {engine} failed: {detail}")]
    CreateFailed {
        /// Which engine.
        engine: String,
        /// The engine's words.
        detail: String,
    },
    /// Unpacking the workspace inside the container failed.
    #[error("copying the workspace into the container failed: {0}")]
    CopyFailed(String),
    /// The container could not be killed at the timeout.
    #[error("killing the container at the timeout failed on {engine}: {detail}")]
    KillFailed {
        /// Which engine.
        engine: String,
        /// The engine's words.
        detail: String,
    },
    /// The engine stopped answering, or the link to it broke, mid-run.
    #[error("the container engine {engine} stopped answering during {op}: {detail}")]
    LostHost {
        /// Which engine.
        engine: String,
        /// What was under way.
        op: &'static str,
        /// What was seen.
        detail: String,
    },
    /// Another engine call failed.
    #[error("{op} on {engine} failed: {detail}")]
    Backend {
        /// Which engine.
        engine: String,
        /// The operation, e.g. "inspect container".
        op: &'static str,
        /// The engine's or the client's words.
        detail: String,
    },
    /// The engine refused the container's settings (a runtime it does not
    /// have, more CPUs than it has, a malformed image name): a usage error.
    #[error("the container engine refused these settings: {detail}")]
    Refused {
        /// The engine's words.
        detail: String,
    },
    /// The limits ask for more than an engine's host has.
    #[error("{what} {asked} is more than {engine}'s host has ({has}): lower it")]
    ExceedsHost {
        /// Which engine.
        engine: String,
        /// The flag.
        what: &'static str,
        /// What was asked.
        asked: String,
        /// What the host has.
        has: String,
    },
    /// The run was interrupted (Ctrl-C or SIGTERM); the container was removed.
    #[error("interrupted")]
    Interrupted,
    /// The run was stopped while waiting for a slot; nothing ran.
    #[error("stopped before it started")]
    NotStarted,
    /// The pool (`autodev pool`) that was to carry out the run reported an
    /// error; whether it is the user's or the host's came with it.
    #[error("the pool at {socket}: {message}")]
    Served {
        /// The pool's socket.
        socket: String,
        /// The pool's words.
        message: String,
        /// Whether it is in what the user asked for.
        usage: bool,
        /// Whether trying again may succeed.
        transient: bool,
    },
}

/// What to do about a Docker engine that does not answer.
pub const START_DOCKER: &str =
    "start it (e.g. `systemctl start docker`), or pick another with --engine or DOCKER_HOST";

impl crate::error::Classify for SandboxError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            SandboxError::Interrupted => ErrorClass::Interrupted,
            s if s.is_usage() => ErrorClass::Usage,
            _ => ErrorClass::Sandbox,
        }
    }
}

impl SandboxError {
    /// Whether the error is in what the user asked for (exit code 2), not
    /// in the infrastructure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SandboxError::Workspace(_)
                | SandboxError::Settings(_)
                | SandboxError::Refused { .. }
                | SandboxError::ExceedsHost { .. }
                | SandboxError::Served { usage: true, .. }
        )
    }

    /// Whether trying again (elsewhere, or later) may succeed: the host or
    /// the link failed, not the run's settings.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SandboxError::Unreachable { .. }
                | SandboxError::ClusterUnreachable { .. }
                | SandboxError::CreateFailed { .. }
                | SandboxError::CopyFailed(_)
                | SandboxError::KillFailed { .. }
                | SandboxError::LostHost { .. }
                | SandboxError::Backend { .. }
                | SandboxError::Served {
                    transient: true,
                    ..
                }
        )
    }

    /// Whether the error says the host itself is unwell (so a scheduler
    /// should stop sending it work for a while).
    pub fn is_host_failure(&self) -> bool {
        matches!(
            self,
            SandboxError::Unreachable { .. }
                | SandboxError::ClusterUnreachable { .. }
                | SandboxError::LostHost { .. }
        )
    }

    /// The error for an image absent from `engine`, with what to do.
    pub fn image_missing(image: &str, engine: &str) -> Self {
        // `autodev/python:latest` → `python`, the name `autodev images build` takes;
        // an image autodev does not define cannot be built by it.
        let hint = match image.strip_prefix("autodev/") {
            Some(rest) => format!(
                "build it with `autodev images build {}` (offline: see docs/configuration.md, \"Images\"; another engine: `autodev images push`)",
                rest.split(':').next().unwrap_or(rest)
            ),
            None => "pull or build it there, or pick another --image".to_string(),
        };
        SandboxError::ImageMissing {
            hint,
            engine: engine.to_string(),
            image: image.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_usage_transient_or_final_never_both() {
        let all = [
            SandboxError::Unreachable {
                engine: "e".into(),
                detail: "d".into(),
                hint: START_DOCKER.into(),
            },
            SandboxError::Settings("s".into()),
            SandboxError::image_missing("autodev/python:latest", "e"),
            SandboxError::CreateFailed {
                engine: "e".into(),
                detail: "d".into(),
            },
            SandboxError::CopyFailed("c".into()),
            SandboxError::KillFailed {
                engine: "e".into(),
                detail: "d".into(),
            },
            SandboxError::LostHost {
                engine: "e".into(),
                op: "o",
                detail: "d".into(),
            },
            SandboxError::Backend {
                engine: "e".into(),
                op: "o",
                detail: "d".into(),
            },
            SandboxError::Refused { detail: "d".into() },
            SandboxError::Interrupted,
        ];
        for e in &all {
            assert!(!(e.is_usage() && e.is_transient()), "{e}");
        }
        assert!(all[0].is_host_failure() && all[6].is_host_failure());
        assert!(
            !all[2].is_transient(),
            "a missing image does not appear by retrying"
        );
        assert!(all[2].to_string().contains("autodev images build python"));
        let other = SandboxError::image_missing("nosuch/img", "e");
        assert!(!other.to_string().contains("images build"), "{other}");
    }
}
