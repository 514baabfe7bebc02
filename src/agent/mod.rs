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

use serde_json::json;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

mod config;
mod guard;
pub mod holdout;
mod prompts;
pub mod protect;

pub use config::{
    AgentConfig, RunSummary, StopReason, DEFAULT_CONTEXT_CHARS, DEFAULT_FAILURE_CHARS,
    DEFAULT_MAX_ITERS,
};
use guard::{Change, Guard};
pub use prompts::{CODER_RULES, REVIEWER_RULES};

use crate::model::{Message, ModelClient, ModelError, Usage};
use crate::patch::{self, ApplyReport, Refusal};
use crate::report::{Transcript, Ui};
use crate::sandbox::{Outcome, RunSpec, Sandbox, SandboxError, Verdict};
use crate::text::cut_middle;
use crate::workspace::{self, WorkspaceError};

/// Characters of each captured stream kept in a transcript event.
const TRANSCRIPT_OUTPUT_CHARS: usize = 4000;

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

impl crate::error::Classify for AgentError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            AgentError::Model(m) => m.class(),
            AgentError::Sandbox(s) => s.class(),
            AgentError::Workspace(_) | AgentError::Setup(_) => ErrorClass::Usage,
            AgentError::Interrupted => ErrorClass::Interrupted,
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
    ui: &'a mut Ui,
    tr: &'a mut Transcript,
    cancel: &'a CancellationToken,
    tokens: Usage,
    calls: u32,
    /// What replies may not write (the tests as they were before the first).
    protected: protect::TestGuard,
}

/// Runs the loop to its end; the workspace and transcript survive any error.
pub async fn run<M: ModelClient, S: Sandbox>(
    model: &M,
    sandbox: &S,
    cfg: &AgentConfig,
    ui: &mut Ui,
    tr: &mut Transcript,
    cancel: &CancellationToken,
) -> Result<RunSummary, AgentError> {
    let t0 = Instant::now();
    tr.event(
        "start",
        json!({
            "task": cfg.task, "runner": cfg.runner, "model": model.describe(),
            // Lossy: a path need not be UTF-8, and JSON text must be.
            "workspace": cfg.workspace.to_string_lossy(), "max_iters": cfg.max_iters,
            "image": cfg.sandbox.image, "limits": cfg.sandbox.limits,
        }),
    );
    let mut l = Loop {
        model,
        sandbox,
        cfg,
        ui,
        tr,
        cancel,
        tokens: Usage::default(),
        calls: 0,
        protected: protect::TestGuard::default(),
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
        };
        l.tr.event(
            "error",
            json!({"kind": kind, "message": e.to_string(), "elapsed_ms": ms(t0), "tokens": l.tokens}),
        );
    }
    result
}

impl<M: ModelClient, S: Sandbox> Loop<'_, M, S> {
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
    async fn start(&mut self, g: &mut Guard) -> Result<String, AgentError> {
        let cfg = self.cfg;
        std::fs::create_dir_all(&cfg.workspace).map_err(|source| WorkspaceError::Io {
            op: "creating",
            path: cfg.workspace.clone(),
            source,
        })?;
        self.protected = protect::TestGuard::scan(&cfg.workspace, &cfg.protection)?;
        let context =
            workspace::file_context(&cfg.workspace, &cfg.sandbox.copy, cfg.context_chars)?;
        let initial = format!(
            "Task:\n{}\n\nTest command (run in the project root): {}\n\nCurrent files:\n{}",
            cfg.task,
            cfg.runner,
            if context.is_empty() {
                "(none yet)\n"
            } else {
                &context
            }
        );
        // The state before the model's first reply is its own commit, so the
        // model's changes can be diffed against it; this also finds out what
        // --git cannot do before a model call is paid for.
        self.commit(0, "autodev: baseline (before the model)")?;
        // A workspace that already holds tests is tested as it is, once:
        // the starting state is what a reply must not make worse, and a
        // candidate for --keep best.
        if self.protected.has_tests() {
            self.ui.say(&format!(
                "\n── iteration 0 (the starting state) ── running: {}",
                cfg.runner
            ));
            let o = self.test(0).await?;
            not_found(&o)?;
            self.after_test(0, &o, g)?;
        }
        self.ask(0, CODER_RULES, initial).await
    }

    /// The loop: test each reply, and ask for a repair while calls are left.
    async fn repair(&mut self, g: &mut Guard, first: String) -> Result<Ended, AgentError> {
        let cfg = self.cfg;
        let mut report = self.apply(0, &first)?;
        g.pending = Some("autodev: initial generation".into());
        // A first reply without a single PATCH block is told to the model
        // instead of being tested: there is nothing of its to test.
        let mut no_patch = patch::parse(&first).is_empty();
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
                self.ui
                    .say("the model's reply held no PATCH block; asking again (nothing to test)");
                let prompt = prompts::no_patch(cfg)?;
                let reply = self.ask(i, CODER_RULES, prompt).await?;
                if patch::parse(&reply).is_empty() {
                    self.ui.say("the model returned no patch again; stopping");
                    e.stop = StopReason::NoPatch;
                    break;
                }
                report = self.apply(i, &reply)?;
                e.changed_since_test = true;
                g.pending = Some(format!("autodev: iteration {}", i + 1));
                continue;
            }
            self.ui.say(&format!(
                "\n── iteration {i}/{} ── running: {}",
                cfg.max_iters, cfg.runner
            ));
            let mut outcome = self.test(i).await?;
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
                None => self.repair_prompt(&outcome, &report.refused, g.change.as_ref())?,
            };
            e.last = Some(outcome);
            let reply = self.ask(i, REVIEWER_RULES, prompt).await?;
            if patch::parse(&reply).is_empty() {
                self.ui.say("the model returned no patch; stopping");
                e.stop = StopReason::NoPatch;
                break;
            }
            report = self.apply(i, &reply)?;
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
                self.ui
                    .say(&format!("\n── final check ── running: {}", cfg.runner));
                let o = self.test(cfg.max_iters + 1).await?;
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
            self.tr.event(
                "export",
                json!({"zip": zip.to_string_lossy(), "files": files}),
            );
            self.ui
                .say(&format!("exported {files} files to {}", zip.display()));
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
            transcript: self.tr.path().map(|p| p.to_path_buf()),
            kept_iteration,
        };
        self.tr
            .event("final", serde_json::to_value(&summary).unwrap_or_default());
        Ok(summary)
    }

    async fn ask(
        &mut self,
        iteration: u32,
        rules: &str,
        user: String,
    ) -> Result<String, AgentError> {
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
        self.tr.event(
            "prompt",
            json!({"iteration": iteration, "messages": messages,
                   "chars": messages.iter().map(|m| m.content.len()).sum::<usize>()}),
        );
        let t = Instant::now();
        self.ui
            .thinking(&format!("asking {}", self.model.describe()));
        let result = tokio::select! {
            r = self.model.complete(&messages) => r,
            _ = self.cancel.cancelled() => Err(ModelError::Interrupted),
        };
        self.ui.done_thinking();
        self.calls += 1;
        let completion = match result {
            Ok(c) => c,
            Err(ModelError::Interrupted) => return Err(AgentError::Interrupted),
            Err(e) => return Err(e.into()),
        };
        if let Some(u) = completion.usage {
            self.tokens += u;
        }
        self.tr.event(
            "reply",
            json!({"iteration": iteration, "text": completion.text, "usage": completion.usage,
                   "attempts": completion.attempts, "ms": ms(t)}),
        );
        Ok(completion.text)
    }

    fn apply(&mut self, iteration: u32, reply: &str) -> Result<ApplyReport, AgentError> {
        let mut parsed = patch::parse(reply);
        self.protected.filter(&mut parsed);
        let report = patch::apply(&self.cfg.workspace, &parsed, self.cfg.apply);
        self.tr.event(
            "patches",
            json!({"iteration": iteration, "applied": report.applied, "refused": report.refused}),
        );
        for p in &report.applied {
            self.ui.say(&format!("  wrote {p}"));
        }
        for r in &report.refused {
            self.ui
                .say(&format!("  refused {:?}: {}", r.path, r.detail));
        }
        Ok(report)
    }

    fn commit(&mut self, iteration: u32, message: &str) -> Result<(), AgentError> {
        if !self.cfg.git {
            return Ok(());
        }
        let c = workspace::git_commit(&self.cfg.workspace, message)?;
        if iteration == 0 && !c.skipped_repos.is_empty() {
            self.ui.say(&format!(
                "git: leaving nested repositories out of autodev's commits: {}",
                c.skipped_repos.join(", ")
            ));
        }
        if let Some(id) = c.id {
            self.tr.event(
                "git",
                json!({"iteration": iteration, "commit": id, "message": message,
                       "skipped_repos": c.skipped_repos}),
            );
        }
        Ok(())
    }

    /// What every test run of this loop runs.
    fn spec(&self) -> RunSpec {
        let mut spec = self.cfg.sandbox.clone();
        spec.workspace = self.cfg.workspace.clone();
        spec.command = self.cfg.runner.clone();
        spec
    }

    async fn test(&mut self, iteration: u32) -> Result<Outcome, AgentError> {
        let spec = self.spec();
        let mut sink = self.ui.sink();
        let result = self.sandbox.run(&spec, sink.as_mut(), self.cancel).await;
        let mut outcome = match result {
            Ok(o) => o,
            Err(e) => return Err(e.into()),
        };
        // A pass over an empty workspace tested nothing the model wrote.
        if outcome.verdict == Verdict::Passed && !workspace::has_files(&self.cfg.workspace)? {
            outcome.verdict = Verdict::NoTests;
            outcome.tests_note = Some("the workspace holds no file: nothing was tested".into());
        }
        self.tr.event(
            "test",
            json!({
                "iteration": iteration, "verdict": outcome.verdict, "exit_code": outcome.exit_code,
                "durations": outcome.durations, "tests": outcome.tests, "tests_note": outcome.tests_note,
                "record": outcome.record, "resources": outcome.resources,
                "stdout_tail": cut_middle(&outcome.stdout.text, TRANSCRIPT_OUTPUT_CHARS),
                "stderr_tail": cut_middle(&outcome.stderr.text, TRANSCRIPT_OUTPUT_CHARS),
                "stdout_bytes": outcome.stdout.total_bytes, "stdout_dropped": outcome.stdout.dropped_bytes,
                "stderr_bytes": outcome.stderr.total_bytes, "stderr_dropped": outcome.stderr.dropped_bytes,
            }),
        );
        self.ui.say(&crate::report::outcome_line(&outcome));
        Ok(outcome)
    }

    fn repair_prompt(
        &self,
        o: &Outcome,
        refused: &[Refusal],
        change: Option<&Change>,
    ) -> Result<String, AgentError> {
        prompts::repair(self.cfg, o, refused, change)
    }
}

fn ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(super) mod tests;
