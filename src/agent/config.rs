//! What a repair loop is given (its settings and their defaults) and what
//! it hands back (its summary).

use std::path::PathBuf;

use serde::Serialize;

use crate::model::Usage;
use crate::patch::ApplyOptions;
use crate::sandbox::{Command, RunSpec, Verdict};

/// Test-and-repair rounds at most, unless told otherwise.
pub const DEFAULT_MAX_ITERS: u32 = 6;
/// Characters of file context sent to the model, unless told otherwise.
pub const DEFAULT_CONTEXT_CHARS: usize = 20_000;
/// Characters of failure output sent to the model, unless told otherwise.
pub const DEFAULT_FAILURE_CHARS: usize = 8_000;

/// Settings of one `autodev run`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// What to build or fix.
    pub task: String,
    /// Test command.
    pub runner: Command,
    /// The profile's note on the language's layout and test conventions,
    /// added to the rules of every request (empty: none).
    pub conventions: String,
    /// The workspace folder on the host.
    pub workspace: PathBuf,
    /// Test-and-repair rounds at most.
    pub max_iters: u32,
    /// Image, limits, env and copy options for every test run.
    pub sandbox: RunSpec,
    /// Characters of file context sent to the model.
    pub context_chars: usize,
    /// Characters of failure output sent to the model.
    pub failure_chars: usize,
    /// Commit after each applied patch set.
    pub git: bool,
    /// With `git`, commit only iterations strictly better than the last commit.
    pub git_only_improving: bool,
    /// At the end, restore the best iteration's files if the last is worse.
    pub keep_best: bool,
    /// Export the final workspace here.
    pub zip: Option<PathBuf>,
    /// Limits for applying patches.
    pub apply: ApplyOptions,
    /// What of the test infrastructure replies may not change.
    pub protection: super::protect::Protection,
    /// Tests the model never sees, which give the verdict.
    pub holdout: Option<super::holdout::Holdout>,
}

impl AgentConfig {
    /// A loop with the plain settings: the default context and failure
    /// budgets, no conventions, no git, no keep-best, no export.
    pub fn new(
        task: String,
        runner: Command,
        workspace: PathBuf,
        max_iters: u32,
        sandbox: RunSpec,
    ) -> Self {
        AgentConfig {
            task,
            runner,
            conventions: String::new(),
            workspace,
            max_iters,
            sandbox,
            context_chars: DEFAULT_CONTEXT_CHARS,
            failure_chars: DEFAULT_FAILURE_CHARS,
            git: false,
            git_only_improving: false,
            keep_best: false,
            zip: None,
            apply: ApplyOptions::default(),
            protection: super::protect::Protection::default(),
            holdout: None,
        }
    }
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The tests passed.
    Passed,
    /// The model's reply held no patch.
    NoPatch,
    /// `max_iters` rounds were used.
    MaxIters,
}

/// The result of a run that went to the end.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The final tests passed.
    pub passed: bool,
    /// Verdict of the final test run.
    pub verdict: Verdict,
    /// Exit code of the final test run.
    pub exit_code: Option<i64>,
    /// Per-test results of the final test run; `null` without a report.
    pub tests: Option<crate::sandbox::junit::TestReport>,
    /// Why the loop stopped.
    pub stop_reason: StopReason,
    /// Test runs inside the loop.
    pub iterations: u32,
    /// Model requests made.
    pub model_calls: u32,
    /// Tokens used, as reported by the server.
    pub tokens: Usage,
    /// Wall time of the whole run.
    pub elapsed_ms: u64,
    /// Where the workspace was exported.
    #[serde(serialize_with = "lossy_path")]
    pub zip: Option<PathBuf>,
    /// Where the transcript is.
    #[serde(serialize_with = "lossy_path")]
    pub transcript: Option<PathBuf>,
    /// With `keep_best`: the iteration whose files were restored, when the
    /// last one was worse.
    pub kept_iteration: Option<u32>,
}

/// A path as JSON text: paths need not be UTF-8, JSON strings must be.
fn lossy_path<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}
