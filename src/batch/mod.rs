//! `autodev batch`: many tasks, bounded concurrency, one result line each.
//!
//! Tasks come as JSON Lines. Each runs in its own fresh container, from its own
//! scratch copy of its workspace, with the same limits and verdicts as `exec`.
//! A result line is appended and flushed as soon as its task ends, so a crash
//! loses at most the tasks that were running; `--resume` skips tasks whose
//! `(id, sample)` is already in the results file. `sandbox_error` results are
//! retried and, if they persist, counted apart from failures.
//!
//! Task lines are read in `task.rs`, each task run to its result in
//! `runner.rs`, results written and summed up in `results.rs`, scratch
//! folders made and cleaned in `scratch.rs`; the limits on running and on
//! starting containers moves in `starts.rs` (over `slots.rs`).
//!
//! Not done here: scheduling across hosts.

mod grade;
mod inputs;
mod repo;
mod request;
mod results;
mod runner;
mod scratch;
mod slots;
mod starts;
pub mod swebench;
mod task;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use grade::{NamedTests, Tally};
pub use request::RunRequest;
pub use results::{pass_at_k, read_results, summarize, Summary, TaskResult, TaskVerdict};
pub use scratch::{clean_scratch, SCRATCH_PREFIX};

use crate::env::Environments;
use crate::sandbox::{RunSpec, Sandbox, SandboxError};
use inputs::Inputs;
use results::{task_key, write_result};
use runner::{run_task, Gate};
use scratch::scratch_dir;
use task::{read_tasks, Kind, Listed, Source, Task};

/// Everything about a batch that is not per task.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The tasks file.
    pub tasks: PathBuf,
    /// The results file (appended).
    pub out: PathBuf,
    /// Tasks running at once.
    pub jobs: usize,
    /// Extra attempts for a task that ends in `sandbox_error`.
    pub retries: u32,
    /// Run again, one at a time, tasks that timed out starved of CPU.
    pub retry_starved: bool,
    /// Tasks prepared ahead of a free slot.
    pub prefetch: usize,
    /// Skip tasks already in the results file.
    pub resume: bool,
    /// Defaults every task starts from.
    pub defaults: RunSpec,
    /// Where scratch workspaces go (system temp if `None`).
    pub scratch: Option<PathBuf>,
    /// Let task lines loosen the command line's limits.
    pub allow_task_overrides: bool,
    /// Verdicts whose results `resume` runs again (besides `sandbox_error`).
    pub rerun: Vec<TaskVerdict>,
    /// What the model is told of the language's conventions (a repair loop's tasks).
    pub conventions: String,
    /// The set-up phase every task gets (a task line's `setup` replaces
    /// the install step); `None`: tasks run in their image as it is.
    pub setup: Option<crate::env::Setup>,
    /// The profiles a task may name (`"profile"`): its image and set-up.
    pub profiles: crate::profile::Profiles,
    /// The folder the tasks' paths are relative to and confined in
    /// (`None`: the tasks file's).
    pub base: Option<PathBuf>,
}

/// A batch that could not run at all.
#[derive(Debug, Error)]
pub enum BatchError {
    /// The scratch folder cannot hold task workspaces.
    #[error("scratch folder {path} cannot be used: {source}")]
    Scratch {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The sandbox cannot run this batch's tasks at all (daemon, image,
    /// limits the engine refuses): found before the first task.
    #[error("before the first task: {0}")]
    Sandbox(#[source] SandboxError),
    /// The results file could not be written (a full disk, say): the
    /// output failed, not the batch's input.
    #[error("writing results to {path}: {source}")]
    Output {
        /// The results file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The results file holds a run's results already: appending a second
    /// run's would count tasks twice.
    #[error("refusing to overwrite {0}: the results file exists: pass --resume to continue it, or remove it")]
    ResultsExist(PathBuf),
    /// The tasks or results file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::Classify for BatchError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            BatchError::Sandbox(s) => s.class(),
            BatchError::Output { .. } => ErrorClass::Output,
            BatchError::Scratch { .. } | BatchError::Io { .. } | BatchError::ResultsExist(_) => {
                ErrorClass::Usage
            }
        }
    }
}

/// Progress callbacks, so the CLI can draw bars and tests can stay quiet.
pub trait Progress: Send {
    /// The batch starts with this many tasks to run.
    fn start(&mut self, to_run: usize);
    /// A task ended.
    fn task_done(&mut self, result: &TaskResult, counts: &BTreeMap<TaskVerdict, usize>);
    /// Ctrl-C was pressed once.
    fn draining(&mut self, running: usize);
    /// The batch ended.
    fn finish(&mut self);
}

/// Progress that shows nothing.
#[derive(Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: usize) {}
    fn task_done(&mut self, _: &TaskResult, _: &BTreeMap<TaskVerdict, usize>) {}
    fn draining(&mut self, _: usize) {}
    fn finish(&mut self) {}
}

/// Runs the batch. `stop` (first Ctrl-C) stops starting tasks; `kill` (second)
/// interrupts running ones, whose results are then not written (a resume
/// runs them again).
pub async fn run<S: Sandbox + Environments + Clone + 'static>(
    sandbox: S,
    cfg: &BatchConfig,
    progress: &mut dyn Progress,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> Result<Summary, BatchError> {
    let t0 = Instant::now();
    let Inputs {
        bytes,
        base,
        done,
        mut out,
    } = inputs::open(cfg)?;

    let Listed {
        tasks,
        invalid,
        skipped,
    } = read_tasks(&bytes, &base, cfg, &done);
    if !tasks.is_empty() {
        preflight(&sandbox, cfg, &tasks).await?;
    }
    progress.start(tasks.len() + invalid.len());
    let mut book = Book::new(&mut out, &cfg.out);
    for r in invalid {
        book.record(&r, false, progress)?;
    }

    let jobs = cfg.jobs.max(1);
    let gate = Gate::new(cfg, jobs, stop);
    // The tasks a starved result would run again.
    let by_key: HashMap<String, Task> = tasks
        .iter()
        .filter(|_| cfg.retry_starved)
        .map(|t| (task_key(&t.id, t.sample), t.clone()))
        .collect();
    let mut starved = Vec::new();
    let spawner = Spawner {
        sandbox: &sandbox,
        cfg,
        gate: &gate,
        kill,
    };
    let mut pending = tasks.into_iter();
    let mut set: JoinSet<Option<TaskResult>> = JoinSet::new();
    let mut draining = false;
    loop {
        if !stop.is_cancelled() {
            spawner.fill(&mut set, &mut pending, jobs + cfg.prefetch);
        }
        if set.is_empty() {
            break;
        }
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                // A panicking task loses only its own result; the batch goes on.
                if let Ok(Some(r)) = joined {
                    starved.extend(by_key.get(&r.key()).filter(|_| r.starved == Some(true)).cloned());
                    book.record(&r, true, progress)?;
                }
            }
            _ = stop.cancelled(), if !draining => {
                draining = true;
                progress.draining(set.len());
            }
        }
    }
    if !stop.is_cancelled() && !starved.is_empty() {
        rerun_starved(&sandbox, cfg, starved, &gate, kill, &mut book, progress).await?;
    }
    progress.finish();
    let mut summary = summarize(&read_results(&cfg.out)?);
    let wall = t0.elapsed().as_secs_f64();
    summary.ran = book.ran;
    summary.skipped = skipped;
    summary.wall_seconds = wall;
    summary.tasks_per_second = if wall > 0.0 {
        book.ran as f64 / wall
    } else {
        0.0
    };
    summary.interrupted = stop.is_cancelled();
    summary.starts = gate.starts.limit();
    summary.this_run = book.counts;
    summary.jobs = jobs;
    Ok(summary)
}

/// What starting a task needs.
struct Spawner<'a, S> {
    sandbox: &'a S,
    cfg: &'a BatchConfig,
    gate: &'a Gate,
    kill: &'a CancellationToken,
}

impl<S: Sandbox + Environments + Clone + 'static> Spawner<'_, S> {
    /// Starts tasks from `pending` until `limit` are in flight.
    fn fill(
        &self,
        set: &mut JoinSet<Option<TaskResult>>,
        pending: &mut impl Iterator<Item = Task>,
        limit: usize,
    ) {
        while set.len() < limit {
            let Some(task) = pending.next() else { break };
            let sandbox = self.sandbox.clone();
            let kill = self.kill.clone();
            let retries = self.cfg.retries;
            let scratch = self.cfg.scratch.clone();
            let gate = self.gate.clone();
            set.spawn(async move {
                run_task(&sandbox, task, retries, scratch.as_deref(), &kill, &gate).await
            });
        }
    }
}

/// What is not about any one task is checked once: a scratch folder can be
/// made, and the sandbox accepts the batch's limits with the first task's
/// image. A failure here fails the batch instead of every task.
async fn preflight<S: Sandbox>(
    sandbox: &S,
    cfg: &BatchConfig,
    tasks: &[Task],
) -> Result<(), BatchError> {
    if tasks
        .iter()
        .any(|t| !matches!(t.source, Source::Folder(_)) || !matches!(t.kind, Kind::Check))
    {
        let dir = scratch_dir(cfg.scratch.as_deref()).map_err(|source| BatchError::Scratch {
            path: cfg.scratch.clone().unwrap_or_else(std::env::temp_dir),
            source,
        })?;
        drop(dir);
    }
    let mut spec = cfg.defaults.clone();
    if let Some(t) = tasks.first() {
        spec.image = t.spec.image.clone();
    }
    sandbox.preflight(&spec).await.map_err(BatchError::Sandbox)
}

/// The results file and the counts of this run's lines.
struct Book<'a> {
    out: &'a mut std::fs::File,
    path: &'a std::path::Path,
    counts: BTreeMap<TaskVerdict, usize>,
    /// Tasks run (not invalid lines).
    ran: usize,
}

impl<'a> Book<'a> {
    fn new(out: &'a mut std::fs::File, path: &'a std::path::Path) -> Self {
        Book {
            out,
            path,
            counts: BTreeMap::new(),
            ran: 0,
        }
    }

    /// Writes one result and counts it; `ran`: a task that ran.
    fn record(
        &mut self,
        r: &TaskResult,
        ran: bool,
        progress: &mut dyn Progress,
    ) -> Result<(), BatchError> {
        write_result(self.out, self.path, r)?;
        self.ran += usize::from(ran);
        *self.counts.entry(r.verdict).or_default() += 1;
        progress.task_done(r, &self.counts);
        Ok(())
    }
}

/// Runs again, one at a time, the tasks that timed out starved of CPU.
async fn rerun_starved<S: Sandbox + Environments>(
    sandbox: &S,
    cfg: &BatchConfig,
    starved: Vec<Task>,
    gate: &Gate,
    kill: &CancellationToken,
    book: &mut Book<'_>,
    progress: &mut dyn Progress,
) -> Result<(), BatchError> {
    // Tasks that timed out starved of CPU say nothing about their code:
    // run them again alone, where nothing competes with them. The new line
    // supersedes the old one.
    let alone = Gate {
        slots: slots::Slots::new(1),
        starts: starts::Starts::new(1),
        stop: gate.stop.clone(),
        conventions: gate.conventions.clone(),
        setup: gate.setup.clone(),
    };
    for task in starved {
        let r = run_task(
            sandbox,
            task,
            cfg.retries,
            cfg.scratch.as_deref(),
            kill,
            &alone,
        )
        .await;
        if let Some(r) = r {
            book.record(&r, true, progress)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::fake::{outcome, FakeSandbox};
    use crate::sandbox::Verdict;
    use std::collections::HashMap;

    fn defaults() -> RunSpec {
        RunSpec::new("", "", "img")
    }

    /// One task at a time, no retries, nothing ahead.
    fn plain(tasks: PathBuf, out: PathBuf) -> BatchConfig {
        BatchConfig {
            tasks,
            out,
            jobs: 1,
            retries: 0,
            prefetch: 0,
            resume: false,
            retry_starved: false,
            defaults: defaults(),
            scratch: None,
            allow_task_overrides: false,
            rerun: Vec::new(),
            conventions: String::new(),
            setup: None,
            profiles: Default::default(),
            base: None,
        }
    }

    #[tokio::test]
    async fn sandbox_errors_are_retried_then_reported_apart() {
        let d = tempfile::tempdir().unwrap();
        let tasks = d.path().join("t.jsonl");
        std::fs::write(
            &tasks,
            b"{\"id\":\"flaky\",\"runner\":\"x\"}\n{\"id\":\"broken\",\"runner\":\"y\"}\nnot json\n\xff\n",
        )
        .unwrap();
        let sb = FakeSandbox::new(|spec, n| {
            if spec.command == "y" || n == 0 {
                Err(SandboxError::CopyFailed("daemon hiccup".into()))
            } else {
                Ok(outcome(Verdict::Passed, 0, "ok"))
            }
        });
        let cfg = BatchConfig {
            retries: 2,
            prefetch: 1,
            ..plain(tasks.clone(), d.path().join("r.jsonl"))
        };
        let c = CancellationToken::new();
        let s = run(sb.clone(), &cfg, &mut NoProgress, &c, &c.child_token())
            .await
            .unwrap();
        let rs = read_results(&cfg.out).unwrap();
        let by_id: HashMap<_, _> = rs
            .iter()
            .map(|r| (r.id.clone().unwrap_or_default(), r))
            .collect();
        assert_eq!(by_id["flaky"].verdict, TaskVerdict::Passed);
        assert_eq!(by_id["flaky"].attempts, 2);
        assert_eq!(
            by_id["flaky"].error, None,
            "a stale error from the failed attempt"
        );
        assert_eq!(by_id["broken"].verdict, TaskVerdict::SandboxError);
        assert_eq!(by_id["broken"].attempts, 3);
        let mut bad: Vec<_> = rs
            .iter()
            .filter(|r| r.id.is_none())
            .map(|r| (r.line, r.verdict, r.error.clone().unwrap_or_default()))
            .collect();
        bad.sort_by_key(|b| b.0);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!((bad[0].0, bad[0].1), (3, TaskVerdict::InvalidTask));
        assert_eq!(bad[1].0, 4);
        assert!(bad[1].2.contains("UTF-8"), "{bad:?}");
        assert_eq!(s.pass_rate, Some(1.0));
        assert_eq!(sb.calls().len(), 5);

        // Resume: only the sandbox error runs again, and its new line counts.
        let again = BatchConfig {
            resume: true,
            ..cfg.clone()
        };
        let s2 = run(sb.clone(), &again, &mut NoProgress, &c, &c.child_token())
            .await
            .unwrap();
        assert_eq!((s2.ran, s2.skipped, s2.total), (1, 3, 4));
        assert_eq!(sb.calls().len(), 8);
        // --rerun failed-like verdicts: passed ones too, when asked.
        let rerun = BatchConfig {
            resume: true,
            rerun: vec![TaskVerdict::Passed],
            ..cfg.clone()
        };
        let s3 = run(sb.clone(), &rerun, &mut NoProgress, &c, &c.child_token())
            .await
            .unwrap();
        assert_eq!((s3.ran, s3.total), (2, 4));
        // Without --resume an existing results file is not appended to.
        assert!(run(sb, &cfg, &mut NoProgress, &c, &c.child_token())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn an_unusable_scratch_folder_fails_the_batch_not_the_tasks() {
        let d = tempfile::tempdir().unwrap();
        let tasks = d.path().join("t.jsonl");
        std::fs::write(
            &tasks,
            "{\"id\":\"a\",\"runner\":\"x\",\"files\":{\"a.py\":\"1\"}}\n",
        )
        .unwrap();
        let sb = FakeSandbox::new(|_, _| Ok(outcome(Verdict::Passed, 0, "ok")));
        let cfg = BatchConfig {
            scratch: Some(d.path().join("nonexistent")),
            ..plain(tasks, d.path().join("r.jsonl"))
        };
        let c = CancellationToken::new();
        let e = run(sb.clone(), &cfg, &mut NoProgress, &c, &c.child_token())
            .await
            .unwrap_err();
        assert!(matches!(e, BatchError::Scratch { .. }), "{e}");
        assert!(sb.calls().is_empty());
        assert!(read_results(&cfg.out).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_duplicate_line_is_counted_once_beside_the_first() {
        let d = tempfile::tempdir().unwrap();
        let tasks = d.path().join("t.jsonl");
        std::fs::write(
            &tasks,
            "{\"id\":\"a\",\"runner\":\"x\"}\n{\"id\":\"a\",\"runner\":\"y\"}\n",
        )
        .unwrap();
        let sb = FakeSandbox::new(|_, _| Ok(outcome(Verdict::Passed, 0, "ok")));
        let cfg = plain(tasks, d.path().join("r.jsonl"));
        let c = CancellationToken::new();
        let s = run(sb, &cfg, &mut NoProgress, &c, &c.child_token())
            .await
            .unwrap();
        let rs = read_results(&cfg.out).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(
            s.total, 2,
            "the summary counts both lines, as the progress did"
        );
        let dup = rs
            .iter()
            .find(|r| r.verdict == TaskVerdict::InvalidTask)
            .unwrap();
        assert!(dup.error.as_deref().unwrap_or("").contains("duplicate id"));
    }

    #[tokio::test]
    async fn results_never_go_into_the_tasks_file() {
        let d = tempfile::tempdir().unwrap();
        let tasks = d.path().join("t.jsonl");
        let line = "{\"id\":\"a\",\"runner\":\"x\"}\n";
        std::fs::write(&tasks, line).unwrap();
        std::os::unix::fs::symlink(&tasks, d.path().join("link.jsonl")).unwrap();
        let sb = FakeSandbox::new(|_, _| Ok(outcome(Verdict::Passed, 0, "ok")));
        for out in [tasks.clone(), d.path().join("link.jsonl")] {
            let cfg = BatchConfig {
                resume: true,
                ..plain(tasks.clone(), out)
            };
            let c = CancellationToken::new();
            let e = run(sb.clone(), &cfg, &mut NoProgress, &c, &c.child_token())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("it is the tasks file"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&tasks).unwrap(), line);
        assert!(sb.calls().is_empty());
    }
}
