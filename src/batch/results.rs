//! What a batch writes: one [`TaskResult`] line per task, and the
//! [`Summary`] computed from a results file.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BatchError;
use crate::model::Usage;
use crate::sandbox::{Outcome, Verdict};
use crate::text::cut_middle;

/// Characters of each output stream kept in a result line.
const RESULT_TAIL_CHARS: usize = 2000;

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
    /// The tests exited 0 but the report holds no test: judged, not passed.
    NoTests,
    /// The tests exited 0 but their expected report never came: not passed.
    Unverified,
    /// The set-up phase could not install the project's dependencies.
    SetupFailed,
    /// The model API failed (loop tasks).
    ModelError,
    /// The task line could not be used.
    InvalidTask,
    /// Repository task: every named test passed.
    Resolved,
    /// Repository task: a named test failed, erred, was skipped or is missing.
    Unresolved,
    /// Repository task: the candidate patch does not apply (or may not be).
    PatchFailed,
    /// Repository task: there is no candidate patch.
    EmptyPatch,
}

impl From<Verdict> for TaskVerdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Passed => TaskVerdict::Passed,
            Verdict::Failed => TaskVerdict::Failed,
            Verdict::TimedOut => TaskVerdict::TimedOut,
            Verdict::OomKilled => TaskVerdict::OomKilled,
            Verdict::SandboxError => TaskVerdict::SandboxError,
            Verdict::NoTests => TaskVerdict::NoTests,
            Verdict::Unverified => TaskVerdict::Unverified,
            Verdict::SetupFailed => TaskVerdict::SetupFailed,
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
                | TaskVerdict::NoTests
                | TaskVerdict::Unverified
                | TaskVerdict::Resolved
                | TaskVerdict::Unresolved
                | TaskVerdict::PatchFailed
                | TaskVerdict::EmptyPatch
        )
    }

    /// Whether the result counts as a pass (pass rates, pass@k).
    pub fn is_success(self) -> bool {
        matches!(self, TaskVerdict::Passed | TaskVerdict::Resolved)
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
    /// Per-test results of the (last) test run; `null` without a report.
    #[serde(default)]
    pub tests: Option<crate::sandbox::junit::TestReport>,
    /// Why `tests` is null, when a report was looked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_note: Option<String>,
    /// Exactly what the (last) test run ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::sandbox::RunRecord>,
    /// What the (last) test run used; `null` when it never ran.
    #[serde(default)]
    pub resources: Option<crate::sandbox::Resources>,
    /// For `timed_out`: the limit that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out_by: Option<crate::sandbox::TimeLimit>,
    /// For a wall-clock timeout: whether the run was starved of CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starved: Option<bool>,
    /// Repository tasks: how each named test ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_tests: Option<super::grade::NamedTests>,
}

impl TaskResult {
    pub(super) fn key(&self) -> String {
        match &self.id {
            Some(id) => task_key(id, self.sample),
            None => format!("line:{}", self.line),
        }
    }

    pub(super) fn invalid(line: usize, id: Option<String>, sample: u32, error: String) -> Self {
        TaskResult {
            verdict: TaskVerdict::InvalidTask,
            error: Some(error),
            ..TaskResult::pending(line, id, sample)
        }
    }

    /// A blank result for a task about to run; the run fills it in.
    pub(super) fn pending(line: usize, id: Option<String>, sample: u32) -> Self {
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
            tests: None,
            tests_note: None,
            record: None,
            resources: None,
            timed_out_by: None,
            starved: None,
            named_tests: None,
        }
    }
}

pub(super) fn task_key(id: &str, sample: u32) -> String {
    format!("{id}\u{1f}{sample}")
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
    /// Results per verdict of the tasks this invocation ran.
    pub this_run: BTreeMap<TaskVerdict, usize>,
    /// Why pass@k stops at a smaller k than some ids' sample count allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_at_k_note: Option<String>,
    /// CPU time of all test runs, in milliseconds.
    pub cpu_ms_total: u64,
    /// The task that took longest (id, ms).
    pub slowest: Option<(String, u64)>,
    /// The task with the highest peak memory (id, bytes).
    pub hungriest: Option<(String, u64)>,
    /// Tasks that ran at once at the end (`--jobs auto` moves it).
    pub jobs: usize,
    /// Containers that could start at once at the end (the start latency
    /// moves it).
    pub starts: usize,
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
        let id = || r.id.clone().unwrap_or_else(|| format!("line {}", r.line));
        if s.slowest.as_ref().is_none_or(|(_, ms)| r.elapsed_ms > *ms) && r.attempts > 0 {
            s.slowest = Some((id(), r.elapsed_ms));
        }
        if let Some(u) = r.resources {
            s.cpu_ms_total += u.cpu_ms.unwrap_or(0);
            if let Some(peak) = u.peak_memory_bytes {
                if s.hungriest.as_ref().is_none_or(|(_, b)| peak > *b) {
                    s.hungriest = Some((id(), peak));
                }
            }
        }
        if r.verdict.is_judgement() {
            judged += 1;
            let ok = r.verdict.is_success();
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
    let max_n = per_id.values().map(|(n, _)| *n).max().unwrap_or(0);
    if max_n > 1 && min_n < max_n {
        let mut short: Vec<&str> = per_id
            .iter()
            .filter(|(_, (n, _))| *n == min_n)
            .map(|(id, _)| *id)
            .collect();
        short.sort();
        let more = if short.len() > 3 {
            format!(" and {} more", short.len() - 3)
        } else {
            String::new()
        };
        short.truncate(3);
        s.pass_at_k_note = Some(format!(
            "pass@k stops at k={min_n}: id {}{more} has only {min_n} judged sample(s), others up to {max_n}",
            short.join(", ")
        ));
    }
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

/// Reads the result lines of a results file, dropping a torn last line. A
/// task run again by `--resume` has several lines; the last one counts.
pub fn read_results(path: &Path) -> Result<Vec<TaskResult>, BatchError> {
    let all = read_all_results(path)?;
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, r) in all.iter().enumerate() {
        last.insert(r.key(), i);
    }
    Ok(all
        .into_iter()
        .enumerate()
        .filter(|(i, r)| last.get(&r.key()) == Some(i))
        .map(|(_, r)| r)
        .collect())
}

fn read_all_results(path: &Path) -> Result<Vec<TaskResult>, BatchError> {
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
pub(super) fn repair_tail(path: &Path) -> Result<(), BatchError> {
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

pub(super) fn write_result(out: &mut File, path: &Path, r: &TaskResult) -> Result<(), BatchError> {
    let mut line = serde_json::to_string(r).unwrap_or_default();
    line.push('\n');
    // One write per line, flushed: a crash loses whole lines, never halves.
    out.write_all(line.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|source| BatchError::Output {
            path: path.to_path_buf(),
            source,
        })
}

pub(super) fn fill(result: &mut TaskResult, o: &Outcome) {
    result.verdict = o.verdict.into();
    result.exit_code = o.exit_code;
    result.durations = o.durations;
    result.stdout_tail = tail(&o.stdout.text);
    result.stderr_tail = tail(&o.stderr.text);
    result.output_dropped_bytes = o.stdout.dropped_bytes + o.stderr.dropped_bytes;
    result.error = o.error.clone();
    result.tests = o.tests.clone();
    result.tests_note = o.tests_note.clone();
    result.record = o.record.clone();
    result.resources = o.resources;
    result.timed_out_by = o.timed_out_by;
    result.starved = o.starved;
}

fn tail(text: &str) -> String {
    let n = text.chars().count();
    if n <= RESULT_TAIL_CHARS {
        text.to_string()
    } else {
        cut_middle(text, RESULT_TAIL_CHARS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn result(id: &str, v: TaskVerdict) -> TaskResult {
        TaskResult {
            verdict: v,
            ..TaskResult::invalid(1, Some(id.into()), 0, String::new())
        }
    }

    #[test]
    fn summary_leaves_sandbox_errors_out_of_rates() {
        let s = summarize(&[
            result("a", TaskVerdict::Passed),
            result("a", TaskVerdict::Failed),
            result("b", TaskVerdict::Passed),
            result("b", TaskVerdict::Passed),
            result("c", TaskVerdict::SandboxError),
        ]);
        assert_eq!(s.pass_rate, Some(0.75));
        assert_eq!(s.verdicts[&TaskVerdict::SandboxError], 1);
        // a: n=2,c=1 → pass@1 0.5, pass@2 1; b: 1, 1.
        assert!((s.pass_at_k[&1] - 0.75).abs() < 1e-12);
        assert!((s.pass_at_k[&2] - 1.0).abs() < 1e-12);
    }

    /// A result line's fields are an interface (evaluation hosts parse them):
    /// changing them must be a decision, made here.
    #[test]
    fn the_result_line_schema_is_pinned() {
        let mut r = TaskResult::invalid(3, Some("a".into()), 1, "why".into());
        r.refused = vec!["x".into()];
        r.tests = Some(crate::sandbox::junit::TestReport::default());
        r.tests_note = Some("n".into());
        let o = crate::sandbox::fake::outcome(Verdict::Passed, 0, "ok");
        let spec = crate::sandbox::RunSpec::new("/w", "true", "img");
        r.record = Some(crate::sandbox::RunRecord::new(&spec, None, None, "e", &o));
        let v = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "attempts",
                "durations",
                "elapsed_ms",
                "error",
                "exit_code",
                "id",
                "iterations",
                "line",
                "output_dropped_bytes",
                "record",
                "refused",
                "resources",
                "sample",
                "stderr_tail",
                "stdout_tail",
                "tests",
                "tests_note",
                "tokens",
                "verdict"
            ]
        );
        let mut record: Vec<&str> = v["record"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        record.sort();
        assert_eq!(
            record,
            [
                "autodev_version",
                "command",
                "engine",
                "env_names",
                "image",
                "image_id",
                "limits",
                "output_sha256",
                "workspace_sha256"
            ]
        );
        let tests: Vec<&str> = v["tests"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tests,
            ["errors", "failed", "failing", "passed", "skipped", "total"]
        );
        // A line written by this version reads back as itself.
        let back: TaskResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn torn_last_line_is_cut_on_resume() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"id\":\"x\",\"li").unwrap();
        repair_tail(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
    }

    #[test]
    fn pass_at_k_says_when_k_was_cut() {
        let s = summarize(&[
            result("a", TaskVerdict::Passed),
            result("a", TaskVerdict::Failed),
            result("a", TaskVerdict::Failed),
            result("b", TaskVerdict::Passed),
        ]);
        assert_eq!(s.pass_at_k.keys().copied().collect::<Vec<_>>(), [1]);
        let note = s.pass_at_k_note.unwrap();
        assert!(
            note.contains("k=1") && note.contains("b") && note.contains("up to 3"),
            "{note}"
        );
    }
}
