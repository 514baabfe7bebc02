//! The one vocabulary of what happens in a run, and the [`Observer`] seam
//! every front end listens on.
//!
//! The repair loop says what happened as [`RunEvent`]s and nothing else: it
//! neither prints nor writes files. The terminal (`report::Ui`), the JSON
//! Lines transcript (`report::Transcript`), a batch (which listens to
//! nothing, [`NullObserver`]) and, later, a service's event stream are
//! observers of the same events; the test output passes live through
//! [`Observer::output`]. Serialized, an event is `{"event": kind,
//! ...fields}`, the transcript's line format.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Limits;
use crate::model::{Message, Usage};
use crate::patch::Refusal;
use crate::sandbox::junit::TestReport;
use crate::sandbox::{Durations, Outcome, Resources, RunRecord, Verdict};
use crate::term::Stream;
use crate::text::cut_middle;

/// Characters of each output stream an event carries (head and tail).
pub const OUTPUT_CHARS: usize = 4000;

/// One thing that happened in a run, in the order it happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run begins.
    Start {
        /// The task text.
        task: String,
        /// The test command.
        runner: String,
        /// Which model answers.
        model: String,
        /// The workspace folder (lossy: JSON text must be UTF-8).
        workspace: String,
        /// Model calls allowed.
        max_iters: u32,
        /// The sandbox image.
        image: String,
        /// The sandbox limits.
        limits: Limits,
    },
    /// A request to the model is about to be sent.
    Prompt {
        /// The loop iteration asking.
        iteration: u32,
        /// What is sent.
        messages: Vec<Message>,
        /// Characters sent.
        chars: usize,
    },
    /// The model is being asked and has not answered yet.
    #[serde(skip)]
    Thinking {
        /// Which model.
        model: String,
    },
    /// The model answered.
    Reply {
        /// The loop iteration asking.
        iteration: u32,
        /// The reply text.
        text: String,
        /// Tokens, as the server reports them.
        usage: Option<Usage>,
        /// Requests it took (retries included).
        attempts: u32,
        /// How long it took.
        ms: u64,
    },
    /// A reply's blocks were applied to the workspace.
    Patches {
        /// The loop iteration.
        iteration: u32,
        /// Paths written.
        applied: Vec<String>,
        /// Blocks refused, and why.
        refused: Vec<Refusal>,
    },
    /// A test run starts.
    #[serde(skip)]
    Testing {
        /// Which run this is.
        step: TestStep,
        /// The test command.
        runner: String,
    },
    /// A test run ended.
    Test(TestRun),
    /// The held-out tests ran.
    Holdout(TestRun),
    /// What changed between two test runs.
    Progress {
        /// The loop iteration.
        iteration: u32,
        /// Tests that failed before and pass now.
        fixed: Vec<String>,
        /// Tests that passed before and fail now.
        broke: Vec<String>,
        /// Tests of the last run missing from this one.
        missing: Vec<String>,
        /// Whether this run is worse than the last.
        regression: bool,
    },
    /// The workspace was committed to git.
    #[serde(rename = "git")]
    Commit {
        /// The loop iteration.
        iteration: u32,
        /// The commit id.
        commit: String,
        /// Its message.
        message: String,
        /// Nested repositories left out.
        skipped_repos: Vec<String>,
    },
    /// `--keep best` put an earlier iteration's files back.
    KeepBest {
        /// The iteration restored.
        iteration: u32,
        /// Its counts.
        best: String,
        /// The last iteration's counts.
        last: String,
    },
    /// The workspace was exported to a zip.
    Export {
        /// Where (lossy).
        zip: String,
        /// How many files.
        files: usize,
    },
    /// Something the reader should know that changes nothing (a repeated
    /// reply without patches, a commit skipped).
    #[serde(skip)]
    Note(String),
    /// The run ended.
    Final(RunSummary),
    /// The run stopped on an error.
    Error {
        /// What failed: `model_error`, `sandbox_error`, `workspace_error`,
        /// `interrupted`, `setup_error`.
        kind: &'static str,
        /// The error's message.
        message: String,
        /// Time since the start.
        elapsed_ms: u64,
        /// Tokens used so far.
        tokens: Usage,
    },
}

/// Which test run of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStep {
    /// The workspace as it was, before the first reply.
    Start,
    /// Iteration `n` of at most `of`.
    Iteration {
        /// This one.
        n: u32,
        /// At most.
        of: u32,
    },
    /// The run after the last reply.
    Final,
    /// The held-out tests, on a scratch copy.
    Holdout,
}

/// A test run's result as events carry it: the outcome with its output cut
/// to head and tail.
#[derive(Debug, Clone, Serialize)]
pub struct TestRun {
    /// The loop iteration.
    pub iteration: u32,
    /// The verdict.
    pub verdict: Verdict,
    /// The command's exit code.
    pub exit_code: Option<i64>,
    /// Time spent in each phase.
    pub durations: Durations,
    /// Per-test results.
    pub tests: Option<TestReport>,
    /// Why there are no per-test results, or what the verdict rests on.
    pub tests_note: Option<String>,
    /// What ran, for a re-run.
    pub record: Option<RunRecord>,
    /// Resources used.
    pub resources: Option<Resources>,
    /// The head and tail of standard output.
    pub stdout_tail: String,
    /// The head and tail of standard error.
    pub stderr_tail: String,
    /// Bytes of standard output written.
    pub stdout_bytes: u64,
    /// Bytes of it not kept.
    pub stdout_dropped: u64,
    /// Bytes of standard error written.
    pub stderr_bytes: u64,
    /// Bytes of it not kept.
    pub stderr_dropped: u64,
}

impl TestRun {
    /// The event for `outcome`, run at `iteration`.
    pub fn of(iteration: u32, o: &Outcome) -> Self {
        TestRun {
            iteration,
            verdict: o.verdict,
            exit_code: o.exit_code,
            durations: o.durations,
            tests: o.tests.clone(),
            tests_note: o.tests_note.clone(),
            record: o.record.clone(),
            resources: o.resources,
            stdout_tail: cut_middle(&o.stdout.text, OUTPUT_CHARS),
            stderr_tail: cut_middle(&o.stderr.text, OUTPUT_CHARS),
            stdout_bytes: o.stdout.total_bytes,
            stdout_dropped: o.stdout.dropped_bytes,
            stderr_bytes: o.stderr.total_bytes,
            stderr_dropped: o.stderr.dropped_bytes,
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
    pub tests: Option<TestReport>,
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

impl RunEvent {
    /// Whether the event is part of the run's record (the transcript, a
    /// service's event log), not only of its live view.
    pub fn recorded(&self) -> bool {
        !matches!(
            self,
            RunEvent::Thinking { .. } | RunEvent::Testing { .. } | RunEvent::Note(_)
        )
    }
}

/// Something that listens to a run's events: the terminal, the transcript,
/// a service's stream.
pub trait Observer: Send {
    /// One event, in order. An observer cannot stop the run; one that
    /// fails (a full disk) says so itself, once.
    fn on(&mut self, event: &RunEvent);

    /// A chunk of the running test's output, live, as it comes. Not an
    /// event: it is no part of the record (the test event carries the
    /// output's head and tail), and passing bytes on must cost nothing
    /// where nobody watches. Ignored unless an observer wants it.
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        let _ = (stream, bytes);
    }
}

/// What a caller watching one sandbox run sees (the service's event
/// stream): where the run is, its output as it comes, and its result.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecEvent {
    /// Accepted; this many runs of the same caller are ahead of it.
    Queued {
        /// Runs ahead.
        ahead: usize,
    },
    /// A slot is free: the container is being made.
    Started {
        /// Time spent waiting for the slot.
        queue_ms: u64,
    },
    /// A chunk of output (lossy: JSON text must be UTF-8).
    Output {
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The chunk.
        text: String,
    },
    /// Output past this many bytes is not streamed live (the result still
    /// holds its head and tail): a stream's memory is bounded.
    OutputCut {
        /// Bytes streamed.
        bytes: u64,
    },
    /// The run ended: the same object `exec --json` prints.
    Result {
        /// The result.
        result: serde_json::Value,
    },
}

/// Listens to nothing (a batch's tasks, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullObserver;

impl Observer for NullObserver {
    fn on(&mut self, _: &RunEvent) {}
}

/// Several observers, each told every event in turn.
pub struct Observers<'a>(pub Vec<&'a mut dyn Observer>);

impl Observer for Observers<'_> {
    fn on(&mut self, event: &RunEvent) {
        for o in &mut self.0 {
            o.on(event);
        }
    }

    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        for o in &mut self.0 {
            o.output(stream, bytes);
        }
    }
}

/// Keeps every event (tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Recorder(pub(crate) Vec<RunEvent>);

#[cfg(test)]
impl Recorder {
    /// The recorded events as transcript lines (without timestamps).
    pub(crate) fn lines(&self) -> String {
        self.0
            .iter()
            .filter(|e| e.recorded())
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|l| l + "\n")
            .collect()
    }
}

#[cfg(test)]
impl Observer for Recorder {
    fn on(&mut self, event: &RunEvent) {
        self.0.push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_transcript_lines() {
        let e = RunEvent::Commit {
            iteration: 2,
            commit: "abc".into(),
            message: "m".into(),
            skipped_repos: vec![],
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "git");
        assert_eq!(v["commit"], "abc");
        let e = RunEvent::KeepBest {
            iteration: 1,
            best: "2 passed".into(),
            last: "1 passed".into(),
        };
        assert_eq!(serde_json::to_value(&e).unwrap()["event"], "keep_best");
        assert!(e.recorded());
        assert!(!RunEvent::Note("x".into()).recorded());
    }
}
