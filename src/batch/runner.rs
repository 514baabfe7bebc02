//! One task to one result: its scratch workspace, its container (started
//! within the batch's start and run limits), its retries, and for a repair
//! loop the model's iterations.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::grade;
use super::repo::{self, RepoCheck, Unapplied};
use super::results::{fill, TaskResult, TaskVerdict};
use super::scratch::prepare;
use super::slots::Slots;
use super::starts::Starts;
use super::task::{Kind, Task};
use super::BatchConfig;
use crate::agent::{self, AgentConfig, AgentError};
use crate::env::{self, Environments, Ready};
use crate::events::NullObserver;
use crate::patch::{self, diff, ApplyOptions};
use crate::sandbox::{NullSink, RunSpec, Sandbox, SandboxError};

/// Prepares the run (creates its container) before waiting for a slot, so
/// preparation overlaps other runs; the command starts only with a slot.
async fn run_gated<S: Sandbox>(
    sandbox: &S,
    spec: &RunSpec,
    kill: &CancellationToken,
    gate: &Gate,
) -> Result<crate::sandbox::Outcome, SandboxError> {
    let prepared = {
        let _start = tokio::select! {
            p = gate.starts.slots.acquire() => p,
            _ = gate.stop.cancelled() => return Err(SandboxError::NotStarted),
            _ = kill.cancelled() => return Err(SandboxError::Interrupted),
        };
        let t = Instant::now();
        let prepared = sandbox.prepare(spec).await;
        let overload = prepared.as_ref().is_err_and(|e| e.is_transient());
        gate.starts.record(t.elapsed(), overload);
        prepared?
    };
    let _permit = tokio::select! {
        p = gate.slots.acquire() => p,
        _ = gate.stop.cancelled() => {
            sandbox.abandon(prepared).await;
            return Err(SandboxError::NotStarted);
        }
        _ = kill.cancelled() => {
            sandbox.abandon(prepared).await;
            return Err(SandboxError::Interrupted);
        }
    };
    sandbox.start(prepared, &mut NullSink, kill).await
}

/// What a batch's tasks share: run slots, start slots, the token that
/// stops new starts, and what the model is told.
#[derive(Clone)]
pub(super) struct Gate {
    pub(super) slots: Arc<Slots>,
    pub(super) starts: Arc<Starts>,
    pub(super) stop: CancellationToken,
    /// The profile's conventions, told to the model of every repair loop.
    pub(super) conventions: Arc<str>,
    /// The set-up phase of every task (its install step may be the task's).
    pub(super) setup: Option<Arc<env::Setup>>,
}

impl Gate {
    /// The gate of a batch starting at `jobs` tasks at once. `prefetch`
    /// more tasks are in flight than may run: they prepare (scratch
    /// folder, container start) while the others run, and start the
    /// moment a slot frees up. Starting containers has its own limit:
    /// past a few at once the engine only queues them (`starts`).
    pub(super) fn new(cfg: &BatchConfig, jobs: usize, stop: &CancellationToken) -> Self {
        let most = jobs + cfg.prefetch;
        Gate {
            slots: Slots::new(jobs),
            starts: Starts::new(most),
            stop: stop.clone(),
            conventions: Arc::from(cfg.conventions.as_str()),
            setup: cfg.setup.clone().map(Arc::new),
        }
    }
}

/// The batch's set-up settings with the task's own install step, if any.
fn task_setup(gate: &Gate, task: &Task) -> Option<env::Setup> {
    let mut setup = env::Setup::clone(gate.setup.as_ref()?);
    if let Some(mode) = &task.setup {
        setup.settings.mode = mode.clone();
    }
    if let Some(p) = &task.profile {
        setup.profile = p.clone();
    }
    Some(setup)
}

/// Points `spec` at the task's environment (tasks with the same manifests
/// share one, built once); `Err(outcome)` when its set-up failed.
async fn environment<S: Environments>(
    sandbox: &S,
    spec: &mut RunSpec,
    task: &Task,
    gate: &Gate,
    kill: &CancellationToken,
) -> Result<Result<Option<env::EnvRecord>, crate::sandbox::Outcome>, AgentError> {
    let Some(setup) = task_setup(gate, task) else {
        return Ok(Ok(None));
    };
    Ok(
        match env::prepare(sandbox, spec, &setup, &mut NullSink, kill).await? {
            Ready::Env(e) => Ok(e.map(|b| *b)),
            Ready::Skipped(_) => Ok(None),
            Ready::Failed(o) => Err(*o),
        },
    )
}

/// The task's environment, then its test run: the run's outcome (with the
/// environment in its record), or the failed set-up's.
async fn set_up_and_run<S: Sandbox + Environments>(
    sandbox: &S,
    spec: &mut RunSpec,
    task: &Task,
    kill: &CancellationToken,
    gate: &Gate,
) -> Result<crate::sandbox::Outcome, AgentError> {
    Ok(match environment(sandbox, spec, task, gate, kill).await? {
        Err(failed) => failed,
        Ok(environment) => {
            let mut o = run_gated(sandbox, spec, kill, gate).await?;
            if let Some(r) = o.record.as_mut() {
                r.environment = environment;
            }
            o
        }
    })
}

/// A repository task on its checkout at `root`: the candidate and the
/// test patch applied, the set-up, the run, the named tests judged.
#[allow(clippy::too_many_arguments)]
async fn repo_task<S: Sandbox + Environments>(
    sandbox: &S,
    task: &Task,
    check: &RepoCheck,
    root: &Path,
    mut spec: RunSpec,
    kill: &CancellationToken,
    gate: &Gate,
    result: &mut TaskResult,
) -> Result<(), AgentError> {
    if let Err(e) = repo::apply_patches(root, check) {
        result.verdict = TaskVerdict::PatchFailed;
        result.error = Some(match e {
            Unapplied::Candidate(d) => format!("the candidate patch does not apply: {d}"),
            Unapplied::Hook(path, why) => format!(
                "the candidate patch changes {path}, which a candidate may not change ({why}): it would decide how its own tests are judged"
            ),
            Unapplied::TestPatch(d) => {
                format!("the test patch does not apply after the candidate: {d}")
            }
        });
        return Ok(());
    }
    let outcome = set_up_and_run(sandbox, &mut spec, task, kill, gate).await?;
    fill(result, &outcome);
    let (verdict, named) = grade::grade(result.verdict, outcome.tests.as_ref(), check);
    result.verdict = verdict;
    result.named_tests = Some(named);
    Ok(())
}

/// Runs one task to a result; `None` if it was interrupted.
pub(super) async fn run_task<S: Sandbox + Environments>(
    sandbox: &S,
    task: Task,
    retries: u32,
    scratch: Option<&Path>,
    kill: &CancellationToken,
    gate: &Gate,
) -> Option<TaskResult> {
    let t0 = Instant::now();
    let mut result = TaskResult::pending(task.line, Some(task.id.clone()), task.sample);
    let mut attempt = 0;
    loop {
        attempt += 1;
        result.attempts = attempt;
        // An earlier attempt's sandbox error does not describe this one.
        result.error = None;
        match attempt_task(sandbox, &task, scratch, kill, gate, &mut result).await {
            Ok(()) => break,
            Err(AgentError::Interrupted) => return None,
            // Retrying cannot conjure a missing image or fix a bad workspace.
            Err(AgentError::Sandbox(e))
                // Retried on the hosts still in rotation: a lost engine's
                // in-flight tasks are re-queued, never counted as failures.
                if attempt <= retries && e.is_transient() =>
            {
                result.error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => {
                result.verdict = match &e {
                    AgentError::Model(m) if m.is_usage() => TaskVerdict::InvalidTask,
                    AgentError::Model(_) => TaskVerdict::ModelError,
                    AgentError::Workspace(_) | AgentError::Setup(_) => TaskVerdict::InvalidTask,
                    // The task's workspace, image or limits, not the infrastructure.
                    AgentError::Sandbox(s) if s.is_usage() => TaskVerdict::InvalidTask,
                    _ => TaskVerdict::SandboxError,
                };
                result.error = Some(e.to_string());
                break;
            }
        }
    }
    result.elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    Some(result)
}

async fn attempt_task<S: Sandbox + Environments>(
    sandbox: &S,
    task: &Task,
    scratch: Option<&Path>,
    kill: &CancellationToken,
    gate: &Gate,
    result: &mut TaskResult,
) -> Result<(), AgentError> {
    if let Kind::Repo(check) = &task.kind {
        // Nothing to check out for no candidate (SWE-bench's `empty_patch`).
        if diff::is_empty_diff(&check.patch) {
            result.verdict = TaskVerdict::EmptyPatch;
            result.error = Some("the prediction has no patch".into());
            return Ok(());
        }
    }
    // A folder workspace is only copied when something will write into it.
    // Held-out tests are laid over the copy, never over a task's folder.
    let writes = !matches!(task.kind, Kind::Check) || task.holdout.is_some();
    let (_guard, root) = prepare(&task.source, writes, scratch)?;
    let held = task
        .holdout
        .as_ref()
        .map(|h| prepare(h, false, scratch))
        .transpose()?;
    let mut spec = task.spec.clone();
    spec.workspace = root.clone();
    match &task.kind {
        Kind::Check | Kind::Solution(_) => {
            if let Kind::Solution(reply) = &task.kind {
                let report = patch::apply(&root, &patch::parse(reply), ApplyOptions::default());
                result.refused = report
                    .refused
                    .iter()
                    .map(|r| format!("{}: {}", r.path, r.detail))
                    .collect();
            }
            if let Some((_, dir)) = &held {
                let plain = crate::workspace::CopyOptions {
                    excludes: Vec::new(),
                    include_git: false,
                };
                crate::workspace::copy_tree(dir, &root, &plain)?;
            }
            let outcome = set_up_and_run(sandbox, &mut spec, task, kill, gate).await?;
            fill(result, &outcome);
        }
        Kind::Repo(check) => {
            repo_task(sandbox, task, check, &root, spec, kill, gate, result).await?;
        }
        Kind::Loop {
            task: text,
            model,
            max_iters,
        } => {
            let model = model.build()?;
            // A repair loop holds its slot throughout: its test runs come one
            // after another, between model calls.
            let _permit = tokio::select! {
                p = gate.slots.acquire() => p,
                _ = gate.stop.cancelled() => return Err(AgentError::Interrupted),
            };
            let cfg = AgentConfig {
                conventions: gate.conventions.to_string(),
                setup: task_setup(gate, task),
                holdout: held.as_ref().map(|(_, dir)| agent::holdout::Holdout {
                    dir: dir.clone(),
                    final_only: false,
                }),
                ..AgentConfig::new(
                    text.clone(),
                    spec.command.clone(),
                    root.clone(),
                    *max_iters,
                    spec.clone(),
                )
            };
            let summary = agent::run(&model, sandbox, &cfg, &mut NullObserver, kill).await?;
            result.verdict = summary.verdict.into();
            result.exit_code = summary.exit_code;
            result.tests = summary.tests;
            result.iterations = summary.iterations;
            result.tokens = summary.tokens;
        }
    }
    Ok(())
}
