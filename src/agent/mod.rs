//! The repair loop, generic over the model and the sandbox:
//!
//! 1. ask the model for an initial codebase (CODER rules) and apply it;
//! 2. up to `max_iters` times: run the tests in a fresh sandbox; stop when they
//!    pass; otherwise send the failure and the files (REVIEWER rules); stop if
//!    the reply holds no patch; apply it;
//! 3. export the workspace, run the tests a last time; the verdict of that run
//!    is the run's result.
//!
//! A sandbox error ends the loop: it says nothing about the code, so it is
//! never shown to the model as a test failure. Every step is appended to the
//! transcript as it happens.

use std::time::Instant;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

mod config;
mod guard;
pub mod holdout;
mod prompts;
pub mod protect;

pub use crate::events::{RunSummary, StopReason};
pub use config::{AgentConfig, DEFAULT_CONTEXT_CHARS, DEFAULT_FAILURE_CHARS, DEFAULT_MAX_ITERS};
use guard::{Change, Guard};
pub use prompts::{coder_rules, reviewer_rules, EditFormat, DEFAULT_WHOLE_FILE_LINES};

use crate::env::{self, CacheUse, EnvRecord, Environments, Ready};
use crate::events::{Observer, RunEvent, TestRun, TestStep};
use crate::model::{Message, ModelClient, ModelError, Usage};
use crate::patch::{self, ApplyReport, ParsedReply};
use crate::sandbox::NullSink;
use crate::sandbox::{Outcome, OutputSink, RunSpec, Sandbox, SandboxError, Verdict};
use crate::term::Stream;
use crate::workspace::{self, WorkspaceError};

/// Why a run could not go on.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The model could not be asked.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The sandbox failed (not the tests).
    #[error(transparent)]
    Sandbox(SandboxError),
    /// The workspace could not be read or written.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted; the workspace and the transcript are kept")]
    Interrupted,
    /// The dependency environment could not be decided (not a failed
    /// install step, which is a `setup_failed` test run).
    #[error(transparent)]
    Env(crate::env::EnvError),
    /// The test command itself cannot run (exit 127: not found): a fault of
    /// the set-up, which no reply of the model can repair.
    #[error("the test command was not found in the sandbox (exit 127: {0}): check --runner and that the image has it; the workspace and the transcript are kept")]
    Setup(String),
}

impl From<SandboxError> for AgentError {
    fn from(e: SandboxError) -> Self {
        match e {
            SandboxError::Interrupted | SandboxError::NotStarted => AgentError::Interrupted,
            other => AgentError::Sandbox(other),
        }
    }
}

impl From<crate::env::EnvError> for AgentError {
    fn from(e: crate::env::EnvError) -> Self {
        match e {
            crate::env::EnvError::Sandbox(s) => s.into(),
            other => AgentError::Env(other),
        }
    }
}

impl crate::error::Classify for AgentError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            AgentError::Model(m) => m.class(),
            AgentError::Sandbox(s) => s.class(),
            AgentError::Workspace(_) | AgentError::Setup(_) => ErrorClass::Usage,
            AgentError::Interrupted => ErrorClass::Interrupted,
            AgentError::Env(e) => e.class(),
        }
    }
}

/// The shell's exit status for a command it cannot find.
const NOT_FOUND: i64 = 127;

/// A test command the shell could not find is the set-up's fault: no
/// reply can repair it, so it is not sent to the model.
fn not_found(o: &Outcome) -> Result<(), AgentError> {
    if o.verdict == Verdict::Failed && o.exit_code == Some(NOT_FOUND) {
        let why = o.stderr.text.lines().last().unwrap_or("no message");
        return Err(AgentError::Setup(why.trim().to_string()));
    }
    Ok(())
}

/// How the repair loop ended, for the final steps.
struct Ended {
    /// The last tested outcome, if any.
    last: Option<Outcome>,
    /// Whether `last` is a held-out run of the files as they are.
    last_held_out: bool,
    /// Whether the files changed after `last` was tested.
    changed_since_test: bool,
    stop: StopReason,
    iterations: u32,
}

struct Loop<'a, M, S> {
    model: &'a M,
    sandbox: &'a S,
    cfg: &'a AgentConfig,
    obs: &'a mut dyn Observer,
    cancel: &'a CancellationToken,
    tokens: Usage,
    calls: u32,
    /// What replies may not write (the tests as they were before the first).
    protected: protect::TestGuard,
    /// The image of the last environment found, so containers started
    /// ahead (`warm`) are of the image the next run uses.
    env_image: Option<String>,
}

/// Runs the loop to its end; the workspace and transcript survive any error.
pub async fn run<M: ModelClient, S: Sandbox + Environments>(
    model: &M,
    sandbox: &S,
    cfg: &AgentConfig,
    obs: &mut dyn Observer,
    cancel: &CancellationToken,
) -> Result<RunSummary, AgentError> {
    let t0 = Instant::now();
    obs.on(&RunEvent::Start {
        task: cfg.task.clone(),
        runner: cfg.runner.to_string(),
        model: model.describe(),
        // Lossy: a path need not be UTF-8, and JSON text must be.
        workspace: cfg.workspace.to_string_lossy().into_owned(),
        max_iters: cfg.max_iters,
        image: cfg.sandbox.image.clone(),
        limits: cfg.sandbox.limits.clone(),
    });
    let mut l = Loop {
        model,
        sandbox,
        cfg,
        obs,
        cancel,
        tokens: Usage::default(),
        calls: 0,
        protected: protect::TestGuard::default(),
        env_image: None,
    };
    let result = l.drive(t0).await;
    // A container warmed for a test run that will not come.
    l.sandbox.retire(&l.spec()).await;
    if let Err(e) = &result {
        let kind = match e {
            AgentError::Model(_) => "model_error",
            AgentError::Sandbox(_) => "sandbox_error",
            AgentError::Workspace(_) => "workspace_error",
            AgentError::Interrupted => "interrupted",
            AgentError::Setup(_) => "setup_error",
            AgentError::Env(_) => "environment_error",
        };
        l.obs.on(&RunEvent::Error {
            kind,
            message: e.to_string(),
            elapsed_ms: ms(t0),
            tokens: l.tokens,
        });
    }
    result
}

impl<M: ModelClient, S: Sandbox + Environments> Loop<'_, M, S> {
    /// The run's steps: the start (up to the first reply), the repair
    /// loop, and the end (final verdict, export, summary).
    async fn drive(&mut self, t0: Instant) -> Result<RunSummary, AgentError> {
        let mut g = Guard::default();
        let reply = self.start(&mut g).await?;
        let ended = self.repair(&mut g, reply).await?;
        self.finish(t0, &mut g, ended).await
    }

    /// Everything before the loop: the workspace, what replies may not
    /// write, the baseline commit, iteration 0, and the first reply.
    async fn start(&mut self, g: &mut Guard) -> Result<ParsedReply, AgentError> {
        let cfg = self.cfg;
        std::fs::create_dir_all(&cfg.workspace).map_err(|source| WorkspaceError::Io {
            op: "creating",
            path: cfg.workspace.clone(),
            source,
        })?;
        self.protected = protect::TestGuard::scan(&cfg.workspace, &cfg.protection)?;
        let initial = prompts::initial(cfg)?;
        // The state before the model's first reply is its own commit, so the
        // model's changes can be diffed against it; this also finds out what
        // --git cannot do before a model call is paid for.
        self.commit(0, "autodev: baseline (before the model)")?;
        // A workspace that already holds tests is tested as it is, once:
        // the starting state is what a reply must not make worse, and a
        // candidate for --keep best.
        if self.protected.has_tests() {
            let o = self.test(0, TestStep::Start).await?;
            not_found(&o)?;
            self.after_test(0, &o, g)?;
        }
        self.ask(0, &coder_rules(self.cfg.edit_format), initial)
            .await
    }

    /// The loop: test each reply, and ask for a repair while calls are left.
    async fn repair(&mut self, g: &mut Guard, first: ParsedReply) -> Result<Ended, AgentError> {
        let cfg = self.cfg;
        // A reply without a single block is told to the model instead of
        // being tested: there is nothing of its to test (it may have asked
        // to read files: they go with the request).
        let mut no_patch = first.writes_nothing();
        let mut report = self.apply(0, first)?;
        g.pending = Some("autodev: initial generation".into());
        let mut e = Ended {
            last: None,
            last_held_out: false,
            changed_since_test: true,
            stop: StopReason::MaxIters,
            iterations: 0,
        };
        for i in 1..=cfg.max_iters {
            e.iterations = i;
            if std::mem::take(&mut no_patch) {
                if self.calls >= cfg.max_iters {
                    e.stop = StopReason::NoPatch;
                    break;
                }
                self.note(&match report.reads.len() {
                    0 => "the model's reply held no PATCH, EDIT or DIFF block; asking again (nothing to test)".to_string(),
                    n => format!("the model asked to read {n} file(s); sending them (nothing to test)"),
                });
                let prompt = prompts::no_patch(cfg, &report.reads)?;
                let reply = self.ask(i, &coder_rules(cfg.edit_format), prompt).await?;
                if reply.is_empty() {
                    self.note("the model returned no patch again; stopping");
                    e.stop = StopReason::NoPatch;
                    break;
                }
                no_patch = reply.writes_nothing();
                report = self.apply(i, reply)?;
                e.changed_since_test = true;
                g.pending = Some(format!("autodev: iteration {}", i + 1));
                continue;
            }
            let step = TestStep::Iteration {
                n: i,
                of: cfg.max_iters,
            };
            let mut outcome = self.test(i, step).await?;
            e.changed_since_test = false;
            self.after_test(i, &outcome, g)?;
            // The visible tests passed: with held-out tests at every check,
            // those decide; the model is told only how many of them failed.
            let mut held_out_failed = None;
            if outcome.verdict == Verdict::Passed {
                if cfg.holdout.as_ref().is_some_and(|h| !h.final_only) {
                    outcome = self.test_holdout(i).await?;
                    e.last_held_out = true;
                }
                if outcome.verdict == Verdict::Passed {
                    e.stop = StopReason::Passed;
                    e.last = Some(outcome);
                    break;
                }
                held_out_failed = Some(holdout::told(&outcome));
            }
            not_found(&outcome)?;
            e.last_held_out = held_out_failed.is_some();
            // --max-iters counts model calls: the first reply was one.
            if self.calls >= cfg.max_iters {
                e.last = Some(outcome);
                break;
            }
            let prompt = match &held_out_failed {
                Some(told) => prompts::holdout_failed(cfg, told)?,
                None => self.repair_prompt(&outcome, &report, g.change.as_ref())?,
            };
            e.last = Some(outcome);
            let reply = self
                .ask(i, &reviewer_rules(cfg.edit_format), prompt)
                .await?;
            if reply.is_empty() {
                self.note("the model returned no patch; stopping");
                e.stop = StopReason::NoPatch;
                break;
            }
            no_patch = reply.writes_nothing();
            report = self.apply(i, reply)?;
            e.changed_since_test = !report.applied.is_empty();
            if e.changed_since_test {
                g.pending = Some(format!("autodev: iteration {}", i + 1));
            }
        }
        Ok(e)
    }

    /// After the loop: the final verdict (a last test if the files changed
    /// since, `--keep best`, the held-out tests), the export, the summary.
    async fn finish(
        &mut self,
        t0: Instant,
        g: &mut Guard,
        e: Ended,
    ) -> Result<RunSummary, AgentError> {
        let cfg = self.cfg;
        // The original tool always ran the tests once more at the end; when
        // nothing changed since the last run that run's verdict stands.
        let fin = match e.last {
            Some(o) if !e.changed_since_test => o,
            _ => {
                let o = self.test(cfg.max_iters + 1, TestStep::Final).await?;
                self.after_test(cfg.max_iters + 1, &o, g)?;
                o
            }
        };
        let (mut fin, kept_iteration) = self.keep_best(g, fin)?;
        // With held-out tests, they give the final verdict, on the files
        // the run ends with.
        let fresh = !e.changed_since_test && kept_iteration.is_none() && e.last_held_out;
        if cfg.holdout.is_some() && !fresh {
            fin = self.test_holdout(e.iterations + 1).await?;
        }
        if let Some(zip) = &cfg.zip {
            let files = workspace::export_zip(&cfg.workspace, zip, &cfg.sandbox.copy)?;
            self.obs.on(&RunEvent::Export {
                zip: zip.to_string_lossy().into_owned(),
                files,
            });
        }
        let summary = RunSummary {
            passed: fin.verdict == Verdict::Passed,
            verdict: fin.verdict,
            exit_code: fin.exit_code,
            tests: fin.tests.clone(),
            stop_reason: e.stop,
            iterations: e.iterations,
            model_calls: self.calls,
            tokens: self.tokens,
            elapsed_ms: ms(t0),
            zip: cfg.zip.clone(),
            transcript: cfg.transcript.clone(),
            kept_iteration,
        };
        self.obs.on(&RunEvent::Final(summary.clone()));
        Ok(summary)
    }

    async fn ask(
        &mut self,
        iteration: u32,
        rules: &str,
        user: String,
    ) -> Result<ParsedReply, AgentError> {
        let system = if self.cfg.conventions.is_empty() {
            rules.to_string()
        } else {
            format!(
                "{rules}\n\nThis project's language and test conventions: {}",
                self.cfg.conventions
            )
        };
        let messages = [Message::system(&system), Message::user(user)];
        // The next test run's container starts while the model thinks.
        self.sandbox.warm(&self.spec());
        self.obs.on(&RunEvent::Prompt {
            iteration,
            chars: messages.iter().map(|m| m.content.len()).sum(),
            messages: messages.to_vec(),
        });
        let t = Instant::now();
        self.obs.on(&RunEvent::Thinking {
            model: self.model.describe(),
        });
        let result = tokio::select! {
            r = self.model.complete(&messages) => r,
            _ = self.cancel.cancelled() => Err(ModelError::Interrupted),
        };
        self.calls += 1;
        let completion = match result {
            Ok(c) => c,
            Err(ModelError::Interrupted) => return Err(AgentError::Interrupted),
            Err(e) => return Err(e.into()),
        };
        if let Some(u) = completion.usage {
            self.tokens += u;
        }
        self.obs.on(&RunEvent::Reply {
            iteration,
            text: completion.text.clone(),
            usage: completion.usage,
            attempts: completion.attempts,
            ms: ms(t),
        });
        // Parsed once, here: the loop asks whether it holds a block, and
        // applies the same blocks.
        Ok(patch::parse(&completion.text))
    }

    fn apply(
        &mut self,
        iteration: u32,
        mut parsed: ParsedReply,
    ) -> Result<ApplyReport, AgentError> {
        self.protected.filter(&mut parsed);
        let report = patch::apply(&self.cfg.workspace, &parsed, self.cfg.apply);
        self.obs.on(&RunEvent::Patches {
            iteration,
            applied: report.applied.clone(),
            refused: report.refused.clone(),
        });
        Ok(report)
    }

    fn commit(&mut self, iteration: u32, message: &str) -> Result<(), AgentError> {
        if !self.cfg.git {
            return Ok(());
        }
        let c = workspace::git_commit(&self.cfg.workspace, message)?;
        if iteration == 0 && !c.skipped_repos.is_empty() {
            self.note(&format!(
                "git: leaving nested repositories out of autodev's commits: {}",
                c.skipped_repos.join(", ")
            ));
        }
        if let Some(id) = c.id {
            self.obs.on(&RunEvent::Commit {
                iteration,
                commit: id,
                message: message.to_string(),
                skipped_repos: c.skipped_repos,
            });
        }
        Ok(())
    }

    /// What every test run of this loop runs.
    fn spec(&self) -> RunSpec {
        let mut spec = self.cfg.sandbox.clone();
        spec.workspace = self.cfg.workspace.clone();
        spec.command = self.cfg.runner.clone();
        if let Some(image) = &self.env_image {
            spec.image = image.clone();
        }
        spec
    }

    /// Points `spec` at its dependency environment (found, or built when
    /// the manifests changed); `Err(outcome)` when the set-up failed, which
    /// is then the test run's outcome (the model sees its output).
    pub(super) async fn environment(
        &mut self,
        spec: &mut RunSpec,
    ) -> Result<Result<Option<EnvRecord>, Outcome>, AgentError> {
        let Some(setup) = &self.cfg.setup else {
            return Ok(Ok(None));
        };
        // The base image: the environment is looked up from it every time.
        spec.image = self.cfg.sandbox.image.clone();
        let ready = env::prepare(
            self.sandbox,
            spec,
            setup,
            &mut Live(&mut *self.obs),
            self.cancel,
        )
        .await?;
        Ok(match ready {
            Ready::Env(e) => {
                self.env_image = e.as_ref().map(|r| r.image_id.clone());
                if let Some(r) = e.as_ref().filter(|r| r.cache == CacheUse::Miss) {
                    self.note(&format!(
                        "environment {} built in {:.1}s: {}",
                        r.image,
                        r.setup_ms as f64 / 1000.0,
                        r.setup
                    ));
                }
                Ok(e.map(|b| *b))
            }
            Ready::Skipped(why) => {
                self.note(&why);
                Ok(None)
            }
            Ready::Failed(o) => Err(*o),
        })
    }

    /// `spec` run in its environment, its output live to the observer or
    /// not at all; a failed set-up is the outcome.
    pub(super) async fn run_in_environment(
        &mut self,
        spec: &mut RunSpec,
        live: bool,
    ) -> Result<Outcome, AgentError> {
        let env = match self.environment(spec).await? {
            Ok(env) => env,
            Err(failed) => return Ok(failed),
        };
        let mut outcome = if live {
            let mut sink = Live(&mut *self.obs);
            self.sandbox.run(spec, &mut sink, self.cancel).await?
        } else {
            self.sandbox.run(spec, &mut NullSink, self.cancel).await?
        };
        if let Some(r) = outcome.record.as_mut() {
            r.environment = env;
        }
        Ok(outcome)
    }

    /// One test run of the workspace, its output streamed to the observer.
    async fn test(&mut self, iteration: u32, step: TestStep) -> Result<Outcome, AgentError> {
        let mut spec = self.spec();
        self.obs.on(&RunEvent::Testing {
            step,
            runner: self.cfg.runner.to_string(),
        });
        let mut outcome = self.run_in_environment(&mut spec, true).await?;
        // A pass over an empty workspace tested nothing the model wrote.
        if outcome.verdict == Verdict::Passed && !workspace::has_files(&self.cfg.workspace)? {
            outcome.verdict = Verdict::NoTests;
            outcome.tests_note = Some("the workspace holds no file: nothing was tested".into());
        }
        self.obs
            .on(&RunEvent::Test(TestRun::of(iteration, &outcome)));
        Ok(outcome)
    }

    /// A line for whoever watches; it changes nothing.
    fn note(&mut self, line: &str) {
        self.obs.on(&RunEvent::Note(line.to_string()));
    }

    fn repair_prompt(
        &self,
        o: &Outcome,
        report: &ApplyReport,
        change: Option<&Change>,
    ) -> Result<String, AgentError> {
        prompts::repair(self.cfg, o, report, change)
    }
}

/// The running test's output, passed on live to the observer.
struct Live<'a>(&'a mut dyn Observer);

impl OutputSink for Live<'_> {
    fn stdout(&mut self, bytes: &[u8]) {
        self.0.output(Stream::Out, bytes);
    }
    fn stderr(&mut self, bytes: &[u8]) {
        self.0.output(Stream::Err, bytes);
    }
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(super) mod tests;
