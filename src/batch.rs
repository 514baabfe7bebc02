//! `autodev batch`: many tasks, bounded concurrency, one result line each.
//!
//! Tasks come as JSON Lines. Each runs in its own fresh container, from its own
//! scratch copy of its workspace, with the same limits and verdicts as `exec`.
//! A result line is appended and flushed as soon as its task ends, so a crash
//! loses at most the tasks that were running; `--resume` skips tasks whose
//! `(id, sample)` is already in the results file. `sandbox_error` results are
//! retried and, if they persist, counted apart from failures.
//!
//! Not done here: scheduling across hosts, or result de-duplication beyond
//! `(id, sample)`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentConfig, AgentError};
use crate::config::Limits;
use crate::model::{ModelSettings, Usage};
use crate::patch::{self, ApplyOptions};
use crate::report::{cut_middle, Transcript, Ui, UiMode};
use crate::sandbox::{Command, NullSink, Outcome, RunSpec, Sandbox, SandboxError, Verdict};
use crate::workspace::CopyOptions;

/// Characters of each output stream kept in a result line.
const RESULT_TAIL_CHARS: usize = 2000;

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
    /// Tasks prepared ahead of a free slot.
    pub prefetch: usize,
    /// Skip tasks already in the results file.
    pub resume: bool,
    /// Defaults every task starts from.
    pub defaults: RunSpec,
    /// Where scratch workspaces go (system temp if `None`).
    pub scratch: Option<PathBuf>,
}

/// A batch that could not run at all.
#[derive(Debug, Error)]
pub enum BatchError {
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

/// How a task ended, as written in the results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskVerdict {
    /// Tests passed.
    Passed,
    /// Tests failed.
    Failed,
    /// Wall clock ran out.
    TimedOut,
    /// Memory limit hit.
    OomKilled,
    /// Infrastructure failed after all retries; not a failure of the code.
    SandboxError,
    /// The model API failed (loop tasks).
    ModelError,
    /// The task line could not be used.
    InvalidTask,
}

impl From<Verdict> for TaskVerdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Passed => TaskVerdict::Passed,
            Verdict::Failed => TaskVerdict::Failed,
            Verdict::TimedOut => TaskVerdict::TimedOut,
            Verdict::OomKilled => TaskVerdict::OomKilled,
            Verdict::SandboxError => TaskVerdict::SandboxError,
        }
    }
}

impl TaskVerdict {
    /// Whether the result judges the code (and so counts towards pass rates).
    pub fn is_judgement(self) -> bool {
        matches!(
            self,
            TaskVerdict::Passed
                | TaskVerdict::Failed
                | TaskVerdict::TimedOut
                | TaskVerdict::OomKilled
        )
    }
}

/// One line of the results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Task id (absent for a line that had none).
    pub id: Option<String>,
    /// Sample number (0 unless given).
    #[serde(default)]
    pub sample: u32,
    /// 1-based line in the tasks file.
    pub line: usize,
    /// How it ended.
    pub verdict: TaskVerdict,
    /// Exit code of the (last) test run.
    pub exit_code: Option<i64>,
    /// Repair iterations (loop tasks).
    #[serde(default)]
    pub iterations: u32,
    /// Attempts made (more than 1 after sandbox errors).
    pub attempts: u32,
    /// Phase times of the last test run.
    #[serde(default)]
    pub durations: crate::sandbox::Durations,
    /// Wall time of the task, scratch set-up and retries included.
    pub elapsed_ms: u64,
    /// Tokens used (loop tasks).
    #[serde(default)]
    pub tokens: Usage,
    /// Tail of stdout.
    #[serde(default)]
    pub stdout_tail: String,
    /// Tail of stderr.
    #[serde(default)]
    pub stderr_tail: String,
    /// Bytes of output dropped by the capture limit (both streams).
    #[serde(default)]
    pub output_dropped_bytes: u64,
    /// Patch blocks refused (solution tasks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// What went wrong, for errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TaskResult {
    fn key(&self) -> String {
        match &self.id {
            Some(id) => task_key(id, self.sample),
            None => format!("line:{}", self.line),
        }
    }

    fn invalid(line: usize, id: Option<String>, sample: u32, error: String) -> Self {
        TaskResult {
            verdict: TaskVerdict::InvalidTask,
            error: Some(error),
            ..TaskResult::pending(line, id, sample)
        }
    }

    /// A blank result for a task about to run; the run fills it in.
    fn pending(line: usize, id: Option<String>, sample: u32) -> Self {
        TaskResult {
            id,
            sample,
            line,
            // Overwritten by every path that ends the task.
            verdict: TaskVerdict::SandboxError,
            exit_code: None,
            iterations: 0,
            attempts: 0,
            durations: Default::default(),
            elapsed_ms: 0,
            tokens: Usage::default(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            output_dropped_bytes: 0,
            refused: Vec::new(),
            error: None,
        }
    }
}

fn task_key(id: &str, sample: u32) -> String {
    format!("{id}\u{1f}{sample}")
}

/// A task line as written by the user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: String,
    #[serde(default)]
    sample: u32,
    #[serde(default)]
    workspace: Option<RawWorkspace>,
    #[serde(default)]
    files: Option<BTreeMap<String, String>>,
    runner: Command,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    limits: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    solution: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    model: Option<ModelSettings>,
    #[serde(default)]
    max_iters: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawWorkspace {
    Folder(PathBuf),
    Inline { files: BTreeMap<String, String> },
}

/// Where a task's files come from.
#[derive(Debug, Clone)]
enum Source {
    Folder(PathBuf),
    Inline(BTreeMap<String, String>),
    Empty,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Apply this reply, run the tests once.
    Solution(String),
    /// Run the repair loop.
    Loop {
        task: String,
        model: ModelSettings,
        max_iters: u32,
    },
    /// Just run the tests on the workspace.
    Check,
}

/// A validated task.
#[derive(Debug, Clone)]
struct Task {
    line: usize,
    id: String,
    sample: u32,
    source: Source,
    spec: RunSpec,
    kind: Kind,
}

fn parse_task(
    text: &str,
    line: usize,
    base: &Path,
    defaults: &RunSpec,
) -> Result<Task, (Option<String>, u32, String)> {
    let raw: RawTask = serde_json::from_str(text).map_err(|e| {
        // Salvage the id so the error line can be matched to its task.
        let v: Option<serde_json::Value> = serde_json::from_str(text).ok();
        let id = v
            .as_ref()
            .and_then(|v| v.get("id"))
            .and_then(|i| i.as_str())
            .map(str::to_string);
        let sample = v
            .as_ref()
            .and_then(|v| v.get("sample"))
            .and_then(|s| s.as_u64())
            .unwrap_or(0) as u32;
        (id, sample, format!("line {line}: {e}"))
    })?;
    let bad = |msg: String| {
        (
            Some(raw.id.clone()),
            raw.sample,
            format!("line {line}: {msg}"),
        )
    };
    if raw.id.is_empty() {
        return Err(bad("id is empty".into()));
    }
    if raw.runner.is_empty() {
        return Err(bad("runner is empty".into()));
    }
    let source = match (raw.workspace, raw.files) {
        (Some(_), Some(_)) => return Err(bad("give either workspace or files, not both".into())),
        (Some(RawWorkspace::Folder(p)), None) => {
            let p = if p.is_absolute() { p } else { base.join(p) };
            if !p.is_dir() {
                return Err(bad(format!("workspace {} is not a folder", p.display())));
            }
            Source::Folder(p)
        }
        (Some(RawWorkspace::Inline { files }), None) | (None, Some(files)) => {
            for path in files.keys() {
                patch::apply::confine(path)
                    .map_err(|(_, why)| bad(format!("file {path:?}: {why}")))?;
            }
            Source::Inline(files)
        }
        (None, None) => Source::Empty,
    };
    let kind = match (raw.solution, raw.task) {
        (Some(_), Some(_)) => return Err(bad("give either solution or task, not both".into())),
        (Some(s), None) => Kind::Solution(s),
        (None, Some(t)) => {
            let mut model = raw.model.unwrap_or_default();
            if let Some(r) = model.replay.take() {
                model.replay = Some(if r.is_absolute() { r } else { base.join(r) });
            }
            Kind::Loop {
                task: t,
                model,
                max_iters: raw.max_iters.unwrap_or(6),
            }
        }
        (None, None) => Kind::Check,
    };
    let mut spec = defaults.clone();
    spec.command = raw.runner;
    if let Some(img) = raw.image {
        spec.image = img;
    }
    if let Some(over) = raw.limits {
        // Task limits overlay the command line's: serialise, patch, read back.
        let mut v = serde_json::to_value(&spec.limits).map_err(|e| bad(e.to_string()))?;
        if let Some(obj) = v.as_object_mut() {
            obj.extend(over);
        }
        spec.limits =
            serde_json::from_value::<Limits>(v).map_err(|e| bad(format!("limits: {e}")))?;
        spec.limits.validate().map_err(|e| bad(e.to_string()))?;
    }
    spec.env.extend(raw.env);
    spec.labels.push(("autodev.task".into(), raw.id.clone()));
    Ok(Task {
        line,
        id: raw.id,
        sample: raw.sample,
        source,
        spec,
        kind,
    })
}

/// Counts and rates over a results file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Result lines.
    pub total: usize,
    /// Results per verdict.
    pub verdicts: BTreeMap<TaskVerdict, usize>,
    /// Passed over judged results (sandbox, model and task errors left out).
    pub pass_rate: Option<f64>,
    /// pass@k by k, when some id has several samples.
    pub pass_at_k: BTreeMap<u32, f64>,
    /// Tasks run by this invocation.
    pub ran: usize,
    /// Tasks skipped because the results file had them.
    pub skipped: usize,
    /// Wall time of this invocation.
    pub wall_seconds: f64,
    /// Tasks run per second by this invocation.
    pub tasks_per_second: f64,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
}

/// Unbiased pass@k for one problem with `n` samples of which `c` passed
/// (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), computed as a product.
pub fn pass_at_k(n: u32, c: u32, k: u32) -> f64 {
    if k == 0 || k > n {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    let mut prod = 1.0;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - f64::from(k) / f64::from(i);
    }
    1.0 - prod
}

/// Computes verdict counts, pass rate and pass@k from result lines.
pub fn summarize(results: &[TaskResult]) -> Summary {
    let mut s = Summary {
        total: results.len(),
        ..Summary::default()
    };
    let mut per_id: HashMap<&str, (u32, u32)> = HashMap::new();
    let (mut judged, mut passed) = (0usize, 0usize);
    for r in results {
        *s.verdicts.entry(r.verdict).or_default() += 1;
        if r.verdict.is_judgement() {
            judged += 1;
            let ok = r.verdict == TaskVerdict::Passed;
            passed += usize::from(ok);
            if let Some(id) = &r.id {
                let e = per_id.entry(id).or_default();
                e.0 += 1;
                e.1 += u32::from(ok);
            }
        }
    }
    s.pass_rate = (judged > 0).then(|| passed as f64 / judged as f64);
    let min_n = per_id.values().map(|(n, _)| *n).min().unwrap_or(0);
    if per_id.values().any(|(n, _)| *n > 1) {
        for k in [1, 2, 5, 10, 20, 50, 100]
            .into_iter()
            .chain([min_n])
            .filter(|k| *k >= 1 && *k <= min_n)
        {
            let mean = per_id
                .values()
                .map(|(n, c)| pass_at_k(*n, *c, k))
                .sum::<f64>()
                / per_id.len() as f64;
            s.pass_at_k.insert(k, mean);
        }
    }
    s
}

/// Reads the result lines of a results file, dropping a torn last line.
pub fn read_results(path: &Path) -> Result<Vec<TaskResult>, BatchError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BatchError::Io {
                op: "reading",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    Ok(BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

/// Cuts a results file back to its last complete line (a `kill -9` can tear
/// the line being written), so appended lines start on a line of their own.
fn repair_tail(path: &Path) -> Result<(), BatchError> {
    let io = |op| {
        move |source| BatchError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let Ok(data) = std::fs::read(path) else {
        return Ok(());
    };
    if data.is_empty() || data.ends_with(b"\n") {
        return Ok(());
    }
    let keep = data.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("opening"))?;
    f.set_len(keep as u64).map_err(io("truncating"))
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
pub async fn run<S: Sandbox + Clone + 'static>(
    sandbox: S,
    cfg: &BatchConfig,
    progress: &mut dyn Progress,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> Result<Summary, BatchError> {
    let t0 = Instant::now();
    let text = std::fs::read_to_string(&cfg.tasks).map_err(|source| BatchError::Io {
        op: "reading tasks file",
        path: cfg.tasks.clone(),
        source,
    })?;
    let base = cfg
        .tasks
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));

    let mut done: HashSet<String> = HashSet::new();
    if cfg.resume {
        repair_tail(&cfg.out)?;
        done.extend(read_results(&cfg.out)?.iter().map(TaskResult::key));
    } else if cfg.out.exists()
        && std::fs::metadata(&cfg.out)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    {
        // Appending a second run's lines to a first run's would double-count.
        return Err(BatchError::Io {
            op: "refusing to overwrite",
            path: cfg.out.clone(),
            source: std::io::Error::other(
                "the results file exists: pass --resume to continue it, or remove it",
            ),
        });
    }
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.out)
        .map_err(|source| BatchError::Io {
            op: "opening results file",
            path: cfg.out.clone(),
            source,
        })?;

    let mut counts: BTreeMap<TaskVerdict, usize> = BTreeMap::new();
    let mut tasks = Vec::new();
    let mut invalid = Vec::new();
    let mut seen = HashSet::new();
    let mut skipped = 0;
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let result = match parse_task(l, line, &base, &cfg.defaults) {
            Ok(t) if !seen.insert(task_key(&t.id, t.sample)) => Err((
                Some(t.id.clone()),
                t.sample,
                format!(
                    "line {line}: duplicate id {:?} with sample {}",
                    t.id, t.sample
                ),
            )),
            other => other,
        };
        match result {
            Ok(t) if done.contains(&task_key(&t.id, t.sample)) => skipped += 1,
            Ok(t) => tasks.push(t),
            Err((id, sample, msg)) => {
                let r = TaskResult::invalid(line, id, sample, msg);
                if done.contains(&r.key()) {
                    skipped += 1;
                } else {
                    invalid.push(r);
                }
            }
        }
    }
    progress.start(tasks.len() + invalid.len());
    for r in invalid {
        write_result(&mut out, &cfg.out, &r)?;
        *counts.entry(r.verdict).or_default() += 1;
        progress.task_done(&r, &counts);
    }

    let jobs = cfg.jobs.max(1);
    // `prefetch` more tasks are in flight than may run: they prepare (scratch
    // folder, container create) while the others run, and start the moment a
    // slot frees up.
    let gate = Gate {
        slots: Arc::new(tokio::sync::Semaphore::new(jobs)),
        stop: stop.clone(),
    };
    let mut pending = tasks.into_iter();
    let mut set: JoinSet<Option<TaskResult>> = JoinSet::new();
    let mut ran = 0;
    let mut draining = false;
    loop {
        while !stop.is_cancelled() && set.len() < jobs + cfg.prefetch {
            let Some(task) = pending.next() else { break };
            let sandbox = sandbox.clone();
            let kill = kill.clone();
            let retries = cfg.retries;
            let scratch = cfg.scratch.clone();
            let gate = gate.clone();
            set.spawn(async move {
                run_task(&sandbox, task, retries, scratch.as_deref(), &kill, &gate).await
            });
        }
        if set.is_empty() {
            break;
        }
        tokio::select! {
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                // A panicking task loses only its own result; the batch goes on.
                if let Ok(Some(r)) = joined {
                    write_result(&mut out, &cfg.out, &r)?;
                    ran += 1;
                    *counts.entry(r.verdict).or_default() += 1;
                    progress.task_done(&r, &counts);
                }
            }
            _ = stop.cancelled(), if !draining => {
                draining = true;
                progress.draining(set.len());
            }
        }
    }
    progress.finish();
    let wall = t0.elapsed().as_secs_f64();
    let mut summary = summarize(&read_results(&cfg.out)?);
    summary.ran = ran;
    summary.skipped = skipped;
    summary.wall_seconds = wall;
    summary.tasks_per_second = if wall > 0.0 { ran as f64 / wall } else { 0.0 };
    summary.interrupted = stop.is_cancelled();
    Ok(summary)
}

fn write_result(out: &mut File, path: &Path, r: &TaskResult) -> Result<(), BatchError> {
    let mut line = serde_json::to_string(r).unwrap_or_default();
    line.push('\n');
    // One write per line, flushed: a crash loses whole lines, never halves.
    out.write_all(line.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|source| BatchError::Io {
            op: "writing results",
            path: path.to_path_buf(),
            source,
        })
}

/// Runs one task to a result; `None` if it was interrupted.
/// Run slots shared by a batch's tasks, and the token that stops new starts.
#[derive(Clone)]
struct Gate {
    slots: Arc<tokio::sync::Semaphore>,
    stop: CancellationToken,
}

async fn run_task<S: Sandbox>(
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
        match attempt_task(sandbox, &task, scratch, kill, gate, &mut result).await {
            Ok(()) => {
                // An earlier attempt's sandbox error does not describe this result.
                result.error = None;
                break;
            }
            Err(AgentError::Interrupted) => return None,
            // Retrying cannot conjure a missing image or fix a bad workspace.
            Err(AgentError::Sandbox(e))
                if attempt <= retries
                    && !matches!(
                        e,
                        SandboxError::Workspace(_) | SandboxError::ImageMissing { .. }
                    ) =>
            {
                result.error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => {
                result.verdict = match e {
                    AgentError::Model(_) => TaskVerdict::ModelError,
                    AgentError::Workspace(_) => TaskVerdict::InvalidTask,
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

async fn attempt_task<S: Sandbox>(
    sandbox: &S,
    task: &Task,
    scratch: Option<&Path>,
    kill: &CancellationToken,
    gate: &Gate,
    result: &mut TaskResult,
) -> Result<(), AgentError> {
    // A folder workspace is only copied when something will write into it.
    let writes = !matches!(task.kind, Kind::Check);
    let (_guard, root) = prepare(&task.source, writes, scratch)?;
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
            let outcome = sandbox
                .run_in_slot(&spec, &mut NullSink, kill, &gate.slots, &gate.stop)
                .await?;
            fill(result, &outcome);
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
                p = gate.slots.acquire() => p.map_err(|_| AgentError::Interrupted)?,
                _ = gate.stop.cancelled() => return Err(AgentError::Interrupted),
            };
            let cfg = AgentConfig {
                task: text.clone(),
                runner: spec.command.clone(),
                workspace: root.clone(),
                max_iters: *max_iters,
                sandbox: spec.clone(),
                context_chars: 20_000,
                failure_chars: 8_000,
                git: false,
                zip: None,
                apply: ApplyOptions::default(),
            };
            let mut ui = Ui::new(UiMode::Json);
            let summary = agent::run(
                &model,
                sandbox,
                &cfg,
                &mut ui,
                &mut Transcript::disabled(),
                kill,
            )
            .await?;
            result.verdict = summary.verdict.into();
            result.exit_code = summary.exit_code;
            result.iterations = summary.iterations;
            result.tokens = summary.tokens;
        }
    }
    Ok(())
}

fn fill(result: &mut TaskResult, o: &Outcome) {
    result.verdict = o.verdict.into();
    result.exit_code = o.exit_code;
    result.durations = o.durations;
    result.stdout_tail = tail(&o.stdout.text);
    result.stderr_tail = tail(&o.stderr.text);
    result.output_dropped_bytes = o.stdout.dropped_bytes + o.stderr.dropped_bytes;
    result.error = None;
}

fn tail(text: &str) -> String {
    let n = text.chars().count();
    if n <= RESULT_TAIL_CHARS {
        text.to_string()
    } else {
        cut_middle(text, RESULT_TAIL_CHARS)
    }
}

/// Scratch copy of a task's files; the guard deletes it when dropped.
fn prepare(
    source: &Source,
    writes: bool,
    scratch: Option<&Path>,
) -> Result<(Option<tempfile::TempDir>, PathBuf), AgentError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| {
            AgentError::Workspace(crate::workspace::WorkspaceError::Io {
                op,
                path: path.clone(),
                source,
            })
        }
    };
    if let (Source::Folder(p), false) = (source, writes) {
        return Ok((None, p.clone()));
    }
    let dir = match scratch {
        Some(s) => tempfile::Builder::new()
            .prefix("autodev-task-")
            .tempdir_in(s),
        None => tempfile::Builder::new().prefix("autodev-task-").tempdir(),
    }
    .map_err(io(
        "creating scratch folder",
        scratch.unwrap_or(Path::new("/tmp")),
    ))?;
    let root = dir.path().to_path_buf();
    match source {
        Source::Empty => {}
        Source::Inline(files) => {
            for (rel, content) in files {
                let rel = patch::apply::confine(rel).map_err(|(_, why)| {
                    AgentError::Workspace(crate::workspace::WorkspaceError::Walk {
                        path: PathBuf::from(rel),
                        detail: why,
                    })
                })?;
                let path = root.join(&rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                }
                std::fs::write(&path, content).map_err(io("writing", &path))?;
            }
        }
        Source::Folder(src) => {
            crate::workspace::copy_tree(src, &root, &CopyOptions::default())?;
        }
    }
    Ok((Some(dir), root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::fake::{outcome, FakeSandbox};

    fn defaults() -> RunSpec {
        RunSpec::new("", "", "img")
    }

    #[test]
    fn pass_at_k_matches_the_closed_form() {
        assert_eq!(pass_at_k(10, 0, 1), 0.0);
        assert_eq!(pass_at_k(10, 10, 5), 1.0);
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        // 1 - C(7,2)/C(10,2) = 1 - 21/45
        assert!((pass_at_k(10, 3, 2) - (1.0 - 21.0 / 45.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 2, 3), 1.0);
        assert!(pass_at_k(2, 1, 3).is_nan());
    }

    #[test]
    fn task_lines_are_validated_with_line_numbers() {
        let base = Path::new("/nonexistent");
        let d = defaults();
        let err = |l: &str| parse_task(l, 7, base, &d).unwrap_err().2;
        assert!(err("{").starts_with("line 7:"));
        assert!(err(r#"{"id":"a","runner":""}"#).contains("runner is empty"));
        assert!(err(r#"{"id":"a","runner":"x","files":{"../e":"x"}}"#).contains("../e"));
        assert!(err(r#"{"id":"a","runner":"x","workspace":"nope"}"#).contains("not a folder"));
        assert!(err(r#"{"id":"a","runner":"x","limits":{"memory":5}}"#).contains("--memory"));
        assert!(err(r#"{"id":"a","runner":"x","bogus":1}"#).contains("bogus"));
        let (id, _, _) = parse_task(r#"{"id":"keep","runner":5}"#, 1, base, &d).unwrap_err();
        assert_eq!(id.as_deref(), Some("keep"));
        let t = parse_task(
            r#"{"id":"a","runner":"pytest","files":{"a.py":"x"},"limits":{"timeout":"5s"},"env":{"K":"V"}}"#,
            1,
            base,
            &d,
        )
        .unwrap();
        assert_eq!(t.spec.limits.timeout, Duration::from_secs(5));
        assert_eq!(t.spec.limits.memory, Limits::default().memory);
        assert_eq!(t.spec.env, [("K".to_string(), "V".to_string())]);
    }

    #[test]
    fn summary_leaves_sandbox_errors_out_of_rates() {
        let mk = |id: &str, v| TaskResult {
            verdict: v,
            ..TaskResult::invalid(1, Some(id.into()), 0, String::new())
        };
        let s = summarize(&[
            mk("a", TaskVerdict::Passed),
            mk("a", TaskVerdict::Failed),
            mk("b", TaskVerdict::Passed),
            mk("b", TaskVerdict::Passed),
            mk("c", TaskVerdict::SandboxError),
        ]);
        assert_eq!(s.pass_rate, Some(0.75));
        assert_eq!(s.verdicts[&TaskVerdict::SandboxError], 1);
        // a: n=2,c=1 → pass@1 0.5, pass@2 1; b: 1, 1.
        assert!((s.pass_at_k[&1] - 0.75).abs() < 1e-12);
        assert!((s.pass_at_k[&2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn torn_last_line_is_cut_on_resume() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"id\":\"x\",\"li").unwrap();
        repair_tail(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
    }

    #[tokio::test]
    async fn sandbox_errors_are_retried_then_reported_apart() {
        let d = tempfile::tempdir().unwrap();
        let tasks = d.path().join("t.jsonl");
        std::fs::write(
            &tasks,
            "{\"id\":\"flaky\",\"runner\":\"x\"}\n{\"id\":\"broken\",\"runner\":\"y\"}\nnot json\n",
        )
        .unwrap();
        let sb = FakeSandbox::new(|spec, n| {
            if spec.command == "y" || n == 0 {
                Err(SandboxError::CopyIn("daemon hiccup".into()))
            } else {
                Ok(outcome(Verdict::Passed, 0, "ok"))
            }
        });
        let cfg = BatchConfig {
            tasks: tasks.clone(),
            out: d.path().join("r.jsonl"),
            jobs: 1,
            retries: 2,
            prefetch: 1,
            resume: false,
            defaults: defaults(),
            scratch: None,
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
        assert_eq!(by_id[""].verdict, TaskVerdict::InvalidTask);
        assert_eq!(by_id[""].line, 3);
        assert_eq!(s.pass_rate, Some(1.0));
        assert_eq!(sb.calls().len(), 5);

        // Resume: everything is there, nothing runs again.
        let again = BatchConfig {
            resume: true,
            ..cfg.clone()
        };
        let s2 = run(sb.clone(), &again, &mut NoProgress, &c, &c.child_token())
            .await
            .unwrap();
        assert_eq!((s2.ran, s2.skipped, s2.total), (0, 3, 3));
        assert_eq!(sb.calls().len(), 5);
        // Without --resume an existing results file is not appended to.
        assert!(run(sb, &cfg, &mut NoProgress, &c, &c.child_token())
            .await
            .is_err());
    }
}
