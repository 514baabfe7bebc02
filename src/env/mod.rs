//! Environments: a project's dependencies, installed once by a set-up
//! phase and committed as an image every later test run starts from.
//!
//! ```text
//!  detect (manifests, install step) ─► key ─► cache hit? ──yes──► image
//!                                              │ no (lock per key)
//!                                              ▼
//!   probe the image's package tools ─► allowlist ─► egress proxy on an
//!   internal network ─► set-up container (a run's lockdown, writable
//!   root) ─► commit ─► image
//! ```
//!
//! The key hashes what determines the environment (the base image's ID,
//! the install step, the manifests' contents, [`FORMAT`]) and never the
//! source: editing code never rebuilds, changing a lockfile always does.
//! Builds of one key are serialized by a lock file, so concurrent runs
//! build it once; a build that fails or is interrupted commits nothing.

pub mod allow;
mod backends;
pub use backends::ensure_on;
mod build;
pub use build::{probe_egress, EgressProbe};
pub mod cache;
pub mod detect;
mod fence;
pub mod proxy;
mod publish;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::sandbox::docker::DockerSandbox;
pub use crate::sandbox::environment::{CacheUse, Connection, EnvRecord, ManifestHash, Refusal};
use crate::sandbox::{AnySandbox, Outcome, OutputSink, RunSpec, SandboxError};
pub use allow::{AllowEntry, Allowlist};

/// Bumped when what an environment holds, or where, changes: old ones are
/// then rebuilt rather than used.
pub const FORMAT: u32 = 1;

/// How long a set-up may take unless told otherwise.
/// Written as text once, for the flag's default and `config show` alike.
pub const DEFAULT_SETUP_TIMEOUT: &str = "15m";

/// Most a set-up may write outside `/workspace` and `/tmp` (its image
/// layer) unless told otherwise; written as text once.
pub const DEFAULT_SETUP_DISK: &str = "4g";

/// [`DEFAULT_SETUP_DISK`] in bytes.
pub fn default_setup_disk() -> u64 {
    crate::config::parse_size("--setup-disk", DEFAULT_SETUP_DISK).unwrap_or(4 << 30)
}

/// [`DEFAULT_SETUP_TIMEOUT`] as a duration.
pub fn default_setup_timeout() -> Duration {
    humantime::parse_duration(DEFAULT_SETUP_TIMEOUT).unwrap_or(Duration::from_secs(900))
}

/// The repository environment images are tagged in (`autodev-env/PROFILE:KEY`).
pub const IMAGE_REPO: &str = "autodev-env";

/// Labels on an environment image.
pub const KEY_LABEL: &str = "autodev.env.key";
/// The environment's record, hex-encoded JSON (see [`EnvRecord`]).
pub const RECORD_LABEL: &str = "autodev.env.record";

/// Whether and how a run gets a set-up phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SetupMode {
    /// The install step detected from the project's manifests, if any.
    #[default]
    Detect,
    /// No set-up: the profile's image as it is.
    Off,
    /// This command instead of the detected one.
    Command(String),
}

/// Everything a set-up takes from its caller's settings.
#[derive(Debug, Clone)]
pub struct SetupSettings {
    /// Detected, off, or a command.
    pub mode: SetupMode,
    /// Hosts allowed besides the image's package tools' own.
    pub allow: Vec<AllowEntry>,
    /// `--allow-host none`: no network, even in set-up.
    pub allow_none: bool,
    /// The set-up's own wall-clock limit.
    pub timeout: Duration,
    /// Most bytes the set-up may write to its image layer.
    pub disk: u64,
    /// A CA bundle to trust instead of the host's.
    pub ca: Option<PathBuf>,
    /// Variables passed to the set-up only (name, value).
    pub env: Vec<(String, String)>,
    /// Build even when the cache has it.
    pub rebuild: bool,
    /// An HTTP proxy allowed requests are sent through (the operator's).
    pub upstream: Option<SocketAddr>,
}

impl Default for SetupSettings {
    fn default() -> Self {
        SetupSettings {
            mode: SetupMode::Detect,
            allow: Vec::new(),
            allow_none: false,
            timeout: default_setup_timeout(),
            disk: default_setup_disk(),
            ca: None,
            env: Vec::new(),
            rebuild: false,
            upstream: None,
        }
    }
}

/// A set-up that could not give an environment.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The install step failed (or timed out, or was refused the network);
    /// the outcome holds its output.
    #[error("set-up failed: {reason}")]
    SetupFailed {
        /// One line: what failed and what to do.
        reason: String,
        /// The set-up run.
        outcome: Box<Outcome>,
    },
    /// The engine failed (not the project).
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A setting cannot be used (an unreadable CA bundle, say).
    #[error("{0}")]
    Usage(String),
    /// The backend cannot build environments yet.
    #[error("{0}")]
    Unsupported(String),
    /// The environment could not be copied to another engine.
    #[error(transparent)]
    Copy(#[from] crate::images::ImageError),
    /// The environment could not be pushed to the cluster's registry.
    #[error(
        "pushing the environment to {registry} failed: {message}; check that this host's \
         engine can push there (as `docker push` would) and that the nodes pull from that name"
    )]
    Publish {
        /// The registry.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// The cache folder could not be used.
    #[error("environment cache {path}: {source}; check that it is writable")]
    Cache {
        /// The folder or file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::Classify for EnvError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            // The project's install step failed: like a failing test, the
            // project's doing, reported as a verdict, not an engine fault.
            EnvError::SetupFailed { .. } => ErrorClass::Usage,
            EnvError::Sandbox(e) => e.class(),
            EnvError::Usage(_) | EnvError::Unsupported(_) => ErrorClass::Usage,
            EnvError::Copy(e) => e.class(),
            // Infrastructure, as the engine is: a batch retries it.
            EnvError::Cache { .. } | EnvError::Publish { .. } => ErrorClass::Sandbox,
        }
    }
}

/// What a project's environment is made from, before any engine is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The profile.
    pub profile: String,
    /// The install step.
    pub install: String,
    /// Manifests and their hashes.
    pub manifests: Vec<ManifestHash>,
}

/// The plan for `root` under `profile`, or `None` when there is nothing to
/// install (no set-up asked for, or none detected).
pub fn plan(root: &Path, profile: &str, mode: &SetupMode) -> Result<Option<Plan>, EnvError> {
    let lang = detect::lang(profile);
    let manifests = lang.map(|l| l.manifests(root)).unwrap_or_default();
    let install = match mode {
        SetupMode::Off => return Ok(None),
        SetupMode::Command(c) if c.trim().is_empty() => return Ok(None),
        SetupMode::Command(c) => c.clone(),
        SetupMode::Detect => match lang.and_then(|l| l.install_step(root, &manifests)) {
            Some(s) => s,
            None => return Ok(None),
        },
    };
    let mut hashed = Vec::new();
    for m in manifests {
        let path = root.join(&m);
        let bytes = std::fs::read(&path)
            .map_err(|e| EnvError::Usage(format!("reading manifest {}: {e}", path.display())))?;
        hashed.push(ManifestHash {
            path: m.to_string_lossy().into_owned(),
            sha256: sha256_hex(&bytes),
        });
    }
    Ok(Some(Plan {
        profile: profile.to_string(),
        install,
        manifests: hashed,
    }))
}

impl Plan {
    /// The cache key for this plan on a base image.
    pub fn key(&self, base_image_id: &str) -> String {
        let mut text = format!(
            "autodev-env {FORMAT}\nbase {base_image_id}\nprofile {}\nsetup {}\n",
            self.profile, self.install
        );
        for m in &self.manifests {
            text.push_str(&format!("manifest {} {}\n", m.path, m.sha256));
        }
        sha256_hex(text.as_bytes())
    }
}

/// The tag an environment of `profile` with `key` gets.
pub fn tag_for(profile: &str, key: &str) -> String {
    let repo: String = profile
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{IMAGE_REPO}/{repo}:{}", &key[..16.min(key.len())])
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    crate::workspace::hex(&Sha256::digest(bytes))
}

/// What an environment is wanted for: the run, the plan for its
/// project, and the set-up's settings.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// The run (its image is the environment's base; its limits the set-up's).
    pub spec: &'a RunSpec,
    /// The manifests and install step.
    pub plan: &'a Plan,
    /// The allowlist, limits and cache choices.
    pub settings: &'a SetupSettings,
}

/// Finds or builds the environment `want` describes on `docker`. The
/// set-up's output goes to `sink` as it comes.
pub async fn ensure(
    docker: &DockerSandbox,
    want: Want<'_>,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<EnvRecord, EnvError> {
    let Want {
        spec,
        plan,
        settings,
    } = want;
    let t0 = std::time::Instant::now();
    let base = docker
        .image_id(&spec.image)
        .await?
        .unwrap_or_else(|| spec.image.clone());
    let key = plan.key(&base);
    let tag = tag_for(&plan.profile, &key);
    let _lock = cache::lock(&key, settings.timeout + Duration::from_secs(60), cancel).await?;
    let found = match settings.rebuild {
        true => None,
        false => cache::find(docker, &tag, &key).await?,
    };
    let record = match found {
        Some(mut hit) => {
            // On a hit, what the set-up phase cost this run: the lookup.
            hit.setup_ms = t0.elapsed().as_millis() as u64;
            hit
        }
        None => {
            let b = build::Build {
                docker,
                spec,
                plan,
                base: &base,
                key: &key,
                tag: &tag,
                settings,
            };
            build::build(&b, sink, cancel).await?
        }
    };
    cache::touch(&key);
    Ok(record)
}

/// Which profile's environment a run gets, and how it is made.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The profile (its language's manifests and install step).
    pub profile: String,
    /// Detected, off or a command; the allowlist; the limits.
    pub settings: SetupSettings,
}

/// A backend that can give a run its dependency environment (the seam the
/// loop and batches use; [`AnySandbox`] is the real one).
pub trait Environments {
    /// The environment `spec`'s project needs, found or built.
    fn environment(
        &self,
        spec: &RunSpec,
        setup: &Setup,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> impl std::future::Future<Output = Result<Option<EnvRecord>, EnvError>> + Send;
}

impl Environments for AnySandbox {
    async fn environment(
        &self,
        spec: &RunSpec,
        setup: &Setup,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Option<EnvRecord>, EnvError> {
        ensure_on(self, spec, &setup.profile, &setup.settings, sink, cancel).await
    }
}

/// Tests of the loop and batches: a project with nothing to install.
#[cfg(test)]
impl Environments for crate::sandbox::fake::FakeSandbox {
    async fn environment(
        &self,
        _: &RunSpec,
        _: &Setup,
        _: &mut dyn OutputSink,
        _: &CancellationToken,
    ) -> Result<Option<EnvRecord>, EnvError> {
        Ok(None)
    }
}

/// What the set-up phase left a run with.
#[derive(Debug)]
pub enum Ready {
    /// Go on: `spec` points at this environment's image, or at the
    /// profile's when there is none to install.
    Env(Option<Box<EnvRecord>>),
    /// Go on without one: the project needs a set-up this backend cannot
    /// give (and none was asked for by name); says why.
    Skipped(String),
    /// The set-up failed: this is the run's outcome (`setup_failed`).
    Failed(Box<Outcome>),
}

/// Gives `spec` its environment: points it at the environment's image, or
/// says why the run goes on without one, or turns a failed set-up into the
/// run's outcome. `Err` is what decides nothing about the project (the
/// engine failed, a setting is unusable, Ctrl-C).
pub async fn prepare<S: Environments>(
    sandbox: &S,
    spec: &mut RunSpec,
    setup: &Setup,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<Ready, EnvError> {
    match sandbox.environment(spec, setup, sink, cancel).await {
        Ok(env) => {
            if let Some(r) = &env {
                spec.image = r.pulled_from.clone().unwrap_or_else(|| r.image_id.clone());
            }
            Ok(Ready::Env(env.map(Box::new)))
        }
        Err(EnvError::Unsupported(why)) if setup.settings.mode == SetupMode::Detect => {
            Ok(Ready::Skipped(why))
        }
        Err(EnvError::SetupFailed { reason, outcome }) => {
            let mut o = *outcome;
            o.verdict = crate::sandbox::Verdict::SetupFailed;
            o.error = Some(reason);
            Ok(Ready::Failed(Box::new(o)))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (p, t) in files {
            std::fs::write(root.join(p), t).unwrap();
        }
    }

    #[test]
    fn the_default_set_up_timeout_reads() {
        assert_eq!(default_setup_timeout(), Duration::from_secs(900));
        assert_eq!(default_setup_disk(), 4 << 30);
    }

    #[test]
    fn the_key_follows_manifests_and_the_step_but_never_the_source() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            &[("requirements.txt", "six==1.16.0\n"), ("app.py", "x = 1\n")],
        );
        let key = |d: &Path| {
            plan(d, "python", &SetupMode::Detect)
                .unwrap()
                .unwrap()
                .key("sha256:base")
        };
        let first = key(d.path());
        write(d.path(), &[("app.py", "x = 2\n"), ("test_app.py", "")]);
        assert_eq!(
            key(d.path()),
            first,
            "a source change must not change the key"
        );
        write(d.path(), &[("requirements.txt", "six==1.17.0\n")]);
        let second = key(d.path());
        assert_ne!(second, first, "a lockfile change must");
        let p = plan(d.path(), "python", &SetupMode::Detect)
            .unwrap()
            .unwrap();
        assert_ne!(p.key("sha256:other"), second, "so must the base image");
        let own = plan(
            d.path(),
            "python",
            &SetupMode::Command("pip install six".into()),
        )
        .unwrap()
        .unwrap();
        assert_ne!(own.key("sha256:base"), second, "and the install step");
        assert_eq!(plan(d.path(), "python", &SetupMode::Off).unwrap(), None);
        assert!(tag_for("python", &second).starts_with("autodev-env/python:"));
    }
}
