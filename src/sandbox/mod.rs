//! Running a command on a workspace inside an isolated, throw-away environment.
//!
//! [`Sandbox`] is the seam: [`docker::DockerSandbox`] is the real one (a fresh
//! locked-down container per run), `fake::FakeSandbox` (tests only) serves scripted
//! outcomes to unit tests of the loop and batch code. A sandbox never reports
//! its own failure as a test failure: infrastructure problems are
//! [`SandboxError`]s, and become the `sandbox_error` verdict only at the edge.

pub mod any;
pub mod capture;
pub mod demux;
pub mod docker;
pub mod environment;
mod error;
#[cfg(test)]
pub mod fake;
mod feed;
mod gotest;
pub mod junit;
pub mod kube;
pub mod output;
mod reach;
mod run;
#[cfg(test)]
mod slow_api;
pub mod socket;
pub mod wrapper;

use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::sandbox::junit::TestReport;
pub use any::AnySandbox;
pub use capture::{Capture, Captured};
pub use error::{SandboxError, START_DOCKER};
pub use wrapper::Command;

use crate::config::Limits;
use crate::workspace::CopyOptions;
use run::RunClock;

/// How a run ended. Exactly one applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The command exited 0.
    Passed,
    /// The command exited non-zero.
    Failed,
    /// The wall-clock limit passed; the whole container was killed.
    TimedOut,
    /// The kernel killed a process for exceeding the memory limit.
    OomKilled,
    /// The infrastructure failed (daemon, image, copy); says nothing about the code.
    SandboxError,
    /// The command exited 0 (or pytest's "no tests collected", 5), but its
    /// test report holds no test that ran: nothing was tested.
    NoTests,
    /// The command exited 0, but the test report its runner is made to
    /// write (pytest's, in an image that declares one) never came: the
    /// run's own claim is all there is, and a pass needs evidence.
    Unverified,
    /// The set-up phase (installing the project's dependencies) failed:
    /// the tests never ran.
    SetupFailed,
}

impl Verdict {
    /// Name used in JSON and on the terminal.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::TimedOut => "timed_out",
            Verdict::OomKilled => "oom_killed",
            Verdict::SandboxError => "sandbox_error",
            Verdict::NoTests => "no_tests",
            Verdict::Unverified => "unverified",
            Verdict::SetupFailed => "setup_failed",
        }
    }

    /// Exit code of `autodev exec` for this verdict (documented in README).
    pub fn exit_code(self) -> u8 {
        use crate::exit;
        match self {
            Verdict::Passed => exit::OK,
            Verdict::Failed => exit::FAILED,
            Verdict::TimedOut => exit::TIMED_OUT,
            Verdict::SandboxError => exit::SANDBOX,
            Verdict::OomKilled => exit::OOM,
            Verdict::NoTests => exit::NO_TESTS,
            Verdict::Unverified => exit::UNVERIFIED,
            Verdict::SetupFailed => exit::SETUP_FAILED,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed for one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// Host folder copied into `/workspace`.
    pub workspace: PathBuf,
    /// What runs in `/workspace`.
    pub command: Command,
    /// Image to run in.
    pub image: String,
    /// Limits enforced on the run.
    pub limits: Limits,
    /// The only environment variables the command sees besides the image's.
    pub env: Vec<(String, String)>,
    /// What to copy from the workspace.
    pub copy: CopyOptions,
    /// Extra labels for the container (e.g. the batch task id).
    pub labels: Vec<(String, String)>,
    /// Where the test command writes a JUnit XML report, if anywhere.
    pub junit: Junit,
    /// Files put into `/workspace` besides the host folder's (by path
    /// inside it), for a set-up's CA bundle; kept to this process.
    #[serde(skip)]
    pub added: Vec<(PathBuf, Vec<u8>)>,
    /// Send the workspace back after the command, as a tar of at most this
    /// many bytes ([`Outcome::tree_back`]); Docker engines only.
    #[serde(default)]
    pub write_back: Option<u64>,
}

/// Where to find the JUnit XML report of a run (a path inside the sandbox).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Junit {
    /// Where the image's `autodev.junit` label says (none if it has none).
    #[default]
    FromImage,
    /// At this path.
    At(String),
    /// Do not look for one.
    Off,
}

/// Where autodev's images have their test tools write the JUnit report;
/// a backend that cannot read image labels looks there.
pub const CONVENTIONAL_JUNIT: &str = "/tmp/autodev-junit.xml";

/// The label by which an image names the report path its test tools write
/// to (the python image sets pytest's `--junitxml` to it through `PYTEST_ADDOPTS`).
pub const JUNIT_LABEL: &str = "autodev.junit";

impl RunSpec {
    /// A spec with default limits and copy options.
    pub fn new(
        workspace: impl Into<PathBuf>,
        command: impl Into<Command>,
        image: impl Into<String>,
    ) -> Self {
        RunSpec {
            workspace: workspace.into(),
            command: command.into(),
            image: image.into(),
            limits: Limits::default(),
            env: Vec::new(),
            copy: CopyOptions::default(),
            labels: Vec::new(),
            junit: Junit::FromImage,
            added: Vec::new(),
            write_back: None,
        }
    }
}

/// Milliseconds spent in each phase of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    /// Creating the container (and attaching to it).
    pub create_ms: u64,
    /// Starting it and unpacking the workspace inside.
    pub copy_in_ms: u64,
    /// The command itself.
    pub run_ms: u64,
    /// Removing the container.
    pub remove_ms: u64,
    /// The whole run, end to end.
    pub total_ms: u64,
}

/// The result of a run that the sandbox carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// How it ended.
    pub verdict: Verdict,
    /// The command's exit code, when it exited by itself.
    pub exit_code: Option<i64>,
    /// Captured standard output.
    pub stdout: Captured,
    /// Captured standard error.
    pub stderr: Captured,
    /// Time per phase.
    pub durations: Durations,
    /// Why the run counts as a sandbox error, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per-test results from the JUnit report; `null` when there is none.
    #[serde(default)]
    pub tests: Option<TestReport>,
    /// Why `tests` is null, when a report was looked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_note: Option<String>,
    /// Exactly what ran, to reproduce and compare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RunRecord>,
    /// What the run used.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// For `timed_out`: which limit ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out_by: Option<TimeLimit>,
    /// For a wall-clock timeout: whether the run got far less CPU than the
    /// wall clock allowed (a busy host, not slow code); `null` if unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starved: Option<bool>,
    /// The workspace as the command left it, when the spec asked for it
    /// (`RunSpec::write_back`); kept to this process.
    #[serde(skip)]
    pub tree_back: Option<demux::TreeBack>,
}

/// The limit that ended a `timed_out` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeLimit {
    /// `--timeout`, the wall clock.
    WallClock,
    /// `--cpu-time`, CPU seconds of all processes together.
    CpuTime,
}

/// What a run used, read from the container's cgroup once the command had
/// ended; a value the cgroup did not give (or a run killed first) is `null`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Peak memory of the container, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time, user and system, in milliseconds.
    pub cpu_ms: Option<u64>,
    /// Processes killed for memory inside the container (a child killed
    /// while the main process lives counts too).
    pub oom_kills: Option<u64>,
    /// Bytes the command wrote, both streams, kept or not.
    pub output_bytes: u64,
}

impl Outcome {
    /// Fills `resources` from the cgroup's figures and the captures.
    pub fn with_usage(mut self, usage: Option<demux::Usage>) -> Self {
        let u = usage.unwrap_or_default();
        self.resources = Some(Resources {
            peak_memory_bytes: u.peak_memory_bytes,
            cpu_ms: u.cpu_ns.map(|n| n / 1_000_000),
            oom_kills: u.oom_kills,
            output_bytes: self.stdout.total_bytes + self.stderr.total_bytes,
        });
        self
    }
}

/// Exactly what ran: enough to run it again and tell whether the result
/// is the same (`autodev exec --rerun`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The image as named.
    pub image: String,
    /// The image's ID (its content digest), when the engine gave one.
    pub image_id: Option<String>,
    /// Limits and isolation settings, the runtime among them.
    pub limits: Limits,
    /// What ran.
    pub command: Command,
    /// Names of the environment variables passed in (never their values).
    pub env_names: Vec<String>,
    /// Hash of the workspace tree as copied in (see `workspace::write_tar`).
    pub workspace_sha256: Option<String>,
    /// Hash of the captured stdout and stderr.
    pub output_sha256: String,
    /// The autodev that ran it.
    pub autodev_version: String,
    /// The engine it ran on.
    pub engine: String,
    /// The dependency environment it ran in, when a set-up made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<environment::EnvRecord>,
}

impl RunRecord {
    /// The record of `outcome`, a run of `spec`.
    pub fn new(
        spec: &RunSpec,
        image_id: Option<String>,
        workspace_sha256: Option<String>,
        engine: &str,
        outcome: &Outcome,
    ) -> Self {
        RunRecord {
            image: spec.image.clone(),
            image_id,
            limits: spec.limits.clone(),
            command: spec.command.clone(),
            env_names: spec.env.iter().map(|(k, _)| k.clone()).collect(),
            workspace_sha256,
            output_sha256: output_hash(outcome),
            autodev_version: env!("CARGO_PKG_VERSION").to_string(),
            engine: engine.to_string(),
            environment: None,
        }
    }
}

/// Hash of a run's captured output: stdout, a NUL, stderr.
pub fn output_hash(o: &Outcome) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(o.stdout.text.as_bytes());
    h.update([0]);
    h.update(o.stderr.text.as_bytes());
    crate::workspace::hex(&h.finalize())
}

impl Outcome {
    /// An outcome with this verdict, exit code and output, and nothing else known yet.
    pub fn new(
        verdict: Verdict,
        exit_code: Option<i64>,
        stdout: Captured,
        stderr: Captured,
    ) -> Self {
        Outcome {
            verdict,
            exit_code,
            stdout,
            stderr,
            durations: Durations::default(),
            error: None,
            tests: None,
            tests_note: None,
            record: None,
            resources: None,
            timed_out_by: None,
            starved: None,
            tree_back: None,
        }
    }

    /// The outcome reported for a run the sandbox could not carry out.
    pub fn from_error(err: &SandboxError) -> Self {
        Outcome {
            error: Some(err.to_string()),
            ..Outcome::new(
                Verdict::SandboxError,
                None,
                Captured::default(),
                Captured::default(),
            )
        }
    }
}

/// Receives output live, as the command writes it.
pub trait OutputSink: Send {
    /// A chunk of standard output.
    fn stdout(&mut self, bytes: &[u8]);
    /// A chunk of standard error.
    fn stderr(&mut self, bytes: &[u8]);
}

/// Discards live output (the capture still keeps it).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl OutputSink for NullSink {
    fn stdout(&mut self, _: &[u8]) {}
    fn stderr(&mut self, _: &[u8]) {}
}

/// Forwards live output to this process's stdout and stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdioSink;

impl OutputSink for StdioSink {
    // A closed pipe or a full disk must not abort the run (the capture still
    // has the output); a full disk is reported when the run ends.
    fn stdout(&mut self, bytes: &[u8]) {
        crate::term::write(crate::term::Stream::Out, bytes);
    }
    fn stderr(&mut self, bytes: &[u8]) {
        crate::term::write(crate::term::Stream::Err, bytes);
    }
}

/// Runs commands on workspaces in isolation, in two phases so a caller can
/// prepare a run (pick a host, create the container) before it may start.
///
/// Every backend keeps the same promise: nothing a run created outlives it.
/// A [`Sandbox::Prepared`] that is dropped without being started removes
/// what it holds in the background; [`Sandbox::abandon`] does it and waits.
pub trait Sandbox: Send + Sync {
    /// A run ready to start: its container exists, the workspace is not in yet.
    type Prepared: Send;

    /// Everything that can happen before the command may start: walk the
    /// workspace, pick a host, create the container.
    fn prepare(
        &self,
        spec: &RunSpec,
    ) -> impl Future<Output = Result<Self::Prepared, SandboxError>> + Send;

    /// Streams the workspace in, runs the command, captures its output, gives
    /// the verdict and removes the container, whatever happens.
    fn start(
        &self,
        prepared: Self::Prepared,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Outcome, SandboxError>> + Send;

    /// Removes a prepared run that will not start, and waits for it.
    fn abandon(&self, prepared: Self::Prepared) -> impl Future<Output = ()> + Send;

    /// Prepares and starts `spec`, streaming output to `sink`, until it ends,
    /// times out or `cancel` fires.
    fn run(
        &self,
        spec: &RunSpec,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<Outcome, SandboxError>> + Send {
        async move {
            let prepared = self.prepare(spec).await?;
            if cancel.is_cancelled() {
                self.abandon(prepared).await;
                return Err(SandboxError::Interrupted);
            }
            self.start(prepared, sink, cancel).await
        }
    }

    /// Checks, once and before any run, what does not depend on one run:
    /// that the hosts answer, have `spec.image`, and accept `spec`'s
    /// settings. Creates nothing that outlives the call.
    fn preflight(&self, spec: &RunSpec) -> impl Future<Output = Result<(), SandboxError>> + Send;

    /// Removes every labelled leftover (a crashed run's) that also carries
    /// all of `labels`, on every host; returns how many were removed.
    fn clean(
        &self,
        labels: &[(String, String)],
    ) -> impl Future<Output = Result<usize, SandboxError>> + Send;

    /// A hint that a run of `spec` will come soon (`run` gives it while the
    /// model thinks): a backend that can start its container ahead does so
    /// in the background, so the run's critical path is the copy-in and the
    /// command. Never waits, never fails; the default does nothing.
    fn warm(&self, spec: &RunSpec) {
        let _ = spec;
    }

    /// Removes what [`Sandbox::warm`] started for runs of `spec` and no run
    /// took, and waits.
    fn retire(&self, spec: &RunSpec) -> impl Future<Output = ()> + Send {
        let _ = spec;
        async {}
    }
}

/// An image reference with the tag engines assume when none is given, so
/// that `python` and `python:latest` compare equal.
pub fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// Walks the workspace a run copies in, off the async threads.
async fn walk(spec: &RunSpec) -> Result<crate::workspace::Manifest, SandboxError> {
    let root = spec.workspace.clone();
    let copy = spec.copy.clone();
    let cap = spec.limits.max_copy_bytes;
    let m = tokio::task::spawn_blocking(move || crate::workspace::manifest(&root, &copy, cap))
        .await
        .map_err(|e| SandboxError::CopyFailed(format!("workspace walk panicked: {e}")))?
        .map_err(SandboxError::from)?;
    let mut m = m;
    m.added = spec.added.clone();
    // Known before anything starts: a copy that cannot fit is refused here,
    // not by tar inside the container with one error per file.
    if m.entries.len() >= MAX_FILES as usize {
        return Err(crate::workspace::WorkspaceError::TooManyFiles {
            path: spec.workspace.clone(),
            count: m.entries.len(),
            limit: MAX_FILES,
        }
        .into());
    }
    Ok(m)
}

/// Files and folders a sandbox's `/workspace` (and `/tmp`) hold at most:
/// without a cap, millions of empty files cost kernel memory that the size
/// limit does not see.
pub const MAX_FILES: u32 = 65_536;

/// A run's id: this process's pid and a random part, unique across hosts.
fn new_run_id() -> String {
    format!("{:08x}{:08x}", std::process::id(), fastrand::u32(..))
}

/// The secret the wrapper's markers carry, new for every run.
fn new_nonce() -> String {
    format!(
        "autodev-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_workspace_with_more_files_than_the_sandbox_holds_is_refused_before_any_run() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..MAX_FILES {
            std::fs::write(d.path().join(format!("f{i}")), "").unwrap();
        }
        let e = walk(&RunSpec::new(d.path(), "true", "img"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("65536 files and folders"), "{e}");
        assert!(e.contains("--exclude") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn an_image_gets_the_default_tag_only_when_it_has_none() {
        assert_eq!(with_tag("autodev/python"), "autodev/python:latest");
        assert_eq!(with_tag("localhost:5000/img"), "localhost:5000/img:latest");
        assert_eq!(with_tag("img:3"), "img:3");
        assert_eq!(with_tag("img@sha256:ab"), "img@sha256:ab");
        assert_eq!(with_tag("sha256:ab"), "sha256:ab");
    }

    #[test]
    fn verdict_exit_codes_are_distinct() {
        let all = [
            Verdict::Passed,
            Verdict::Failed,
            Verdict::TimedOut,
            Verdict::OomKilled,
            Verdict::SandboxError,
            Verdict::NoTests,
            Verdict::Unverified,
            Verdict::SetupFailed,
        ];
        let mut codes: Vec<u8> = all.iter().map(|v| v.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert_eq!(
            serde_json::to_string(&Verdict::OomKilled).unwrap(),
            "\"oom_killed\""
        );
    }
}
