//! What a repair loop is given (its settings and their defaults) and what
//! it hands back (its summary).

use std::path::PathBuf;

use crate::patch::ApplyOptions;
use crate::sandbox::{Command, RunSpec};

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
    /// Where the front end records the run, named in the summary.
    pub transcript: Option<PathBuf>,
    /// The dependency environment each test run gets (none: the image as it is).
    pub setup: Option<crate::env::Setup>,
    /// How the model is asked to send changes.
    pub edit_format: super::EditFormat,
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
            transcript: None,
            setup: None,
            edit_format: super::EditFormat::default(),
        }
    }
}
