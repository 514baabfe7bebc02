//! What every backend does with a run's two output streams, whatever
//! carries them (Docker's attach stream, a Kubernetes attach WebSocket):
//! split the wrapper's markers from the command's output, keep bounded
//! captures, forward live, and at the end turn the trailer into the test
//! report and resource use, and the exit status into a [`Verdict`].

use std::time::Instant;

use super::demux::{Demuxed, ReadyDemux, Report, ReportDemux, TreeBack, Usage};
use super::{Capture, Captured, OutputSink, Verdict};
use crate::sandbox::junit::{self, TestReport};

/// Where the run's test report is looked for, and whether its absence is news.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportAt {
    /// Nowhere.
    None,
    /// At this path, as the user or the image declared: its absence is noted.
    Declared(String),
    /// At the conventional path, where a backend that cannot read image
    /// labels looks: its absence is not worth a note.
    Conventional(String),
}

impl ReportAt {
    /// The path inside the sandbox, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            ReportAt::None => None,
            ReportAt::Declared(p) | ReportAt::Conventional(p) => Some(p),
        }
    }
}

/// The output of one run as it arrives.
#[derive(Debug)]
pub struct RunOutput {
    out: Capture,
    err: Capture,
    ready: ReadyDemux,
    trailer: ReportDemux,
    ready_at: Option<Instant>,
    report: ReportAt,
    expect_report: bool,
    expect_summary: bool,
}

/// The output of a run that has ended.
#[derive(Debug)]
pub struct Finished {
    /// Captured standard output.
    pub stdout: Captured,
    /// Captured standard error (the command's only).
    pub stderr: Captured,
    /// Per-test results, when a report came.
    pub tests: Option<TestReport>,
    /// Why `tests` is `None`, when that is worth saying.
    pub tests_note: Option<String>,
    /// What the cgroup said once the command had ended.
    pub usage: Option<Usage>,
    /// Whether the wrapper killed the run for using up its CPU time.
    pub cpu_exceeded: bool,
    /// Whether the command's runner is made to write the report (see
    /// [`RunOutput::expect_report`]), so that its absence is news.
    pub report_expected: bool,
    /// Whether the command runs unittest, whose printed summary is then
    /// the evidence of a pass.
    pub summary_expected: bool,
    /// The workspace as the command left it, when it was asked for.
    pub tree: Option<TreeBack>,
}

impl RunOutput {
    /// Output of the run whose wrapper got `nonce`, each stream kept up to `limit` bytes.
    pub fn new(nonce: &str, limit: u64, report: ReportAt) -> Self {
        RunOutput {
            out: Capture::new(limit),
            err: Capture::new(limit),
            ready: ReadyDemux::new(nonce),
            trailer: ReportDemux::new(nonce, report.path().is_some()),
            ready_at: None,
            report,
            expect_report: false,
            expect_summary: false,
        }
    }

    /// Says whether the command's runner is made to write the declared
    /// report (pytest under an image that declares one): then an exit 0
    /// without a report is not a pass (see [`judge`]).
    pub fn expect_report(mut self, command: &super::Command) -> Self {
        self.expect_report = matches!(self.report, ReportAt::Declared(_)) && runs_pytest(command);
        self.expect_summary = runs_unittest(command);
        self
    }

    /// Expects the workspace's tar after the command (at most `cap` bytes).
    pub fn write_back(mut self, cap: Option<u64>) -> Self {
        self.trailer = self.trailer.with_tree(cap);
        self
    }

    /// A chunk of the container's standard output.
    pub fn stdout(&mut self, bytes: &[u8], sink: &mut dyn OutputSink) {
        self.out.push(bytes);
        sink.stdout(bytes);
    }

    /// A chunk of the container's standard error: the wrapper's until the
    /// ready marker, then the command's, then the trailer's.
    pub fn stderr(&mut self, bytes: &[u8], sink: &mut dyn OutputSink) {
        let bytes = match self.ready.push(bytes) {
            Demuxed::Setup => return,
            Demuxed::Ready(rest) => {
                self.ready_at = Some(Instant::now());
                rest
            }
            Demuxed::Command(bytes) => bytes,
        };
        let bytes = self.trailer.push(&bytes);
        if !bytes.is_empty() {
            self.err.push(&bytes);
            sink.stderr(&bytes);
        }
    }

    /// When the workspace was in place, if it ever was.
    pub fn ready_at(&self) -> Option<Instant> {
        self.ready_at
    }

    /// Why the copy failed, from what the wrapper said before it gave up.
    pub fn copy_failure(&self) -> String {
        self.ready.copy_failure()
    }

    /// Ends the run's output: the held-back stderr goes where the rest went.
    pub fn finish(self, sink: &mut dyn OutputSink) -> Finished {
        let RunOutput {
            out,
            mut err,
            mut trailer,
            report,
            expect_report,
            expect_summary,
            ..
        } = self;
        let cpu_exceeded = trailer.cpu_exceeded();
        let tree = trailer.take_tree();
        let (rest, received, usage) = trailer.finish();
        if !rest.is_empty() {
            err.push(&rest);
            sink.stderr(&rest);
        }
        let (tests, tests_note) = read_report(&report, received);
        Finished {
            stdout: out.finish(),
            stderr: err.finish(),
            tests,
            tests_note,
            report_expected: expect_report,
            summary_expected: expect_summary,
            usage,
            cpu_exceeded,
            tree,
        }
    }
}

/// The per-test results of a run, or why there are none.
fn read_report(at: &ReportAt, report: Report) -> (Option<TestReport>, Option<String>) {
    let path = match at {
        ReportAt::None => return (None, None),
        ReportAt::Conventional(_) if report == Report::Absent => return (None, None),
        ReportAt::Declared(p) | ReportAt::Conventional(p) => p,
    };
    let why = match report {
        Report::Received(bytes) => match junit::parse(&bytes) {
            Ok(r) => return (Some(r), None),
            Err(why) => format!("report {path}: {why}"),
        },
        Report::Absent => {
            format!("no report at {path}: the test command wrote none (or not as a regular file)")
        }
        Report::NotSent => "the run ended before its report could be read".into(),
        Report::Cut => format!("report {path} was cut off before its end"),
    };
    (None, Some(why))
}

/// pytest's exit status for "no tests collected".
const PYTEST_NO_TESTS: i64 = 5;

/// The verdict of a run that ended by itself, and a note on it when the
/// exit code alone would have said otherwise.
///
/// A pass is evidence, not the command's word: a child killed for memory
/// while the parent exits 0 is not one (the OOM flag wins), nor is a run
/// whose report holds a failure or an error whatever its exit code (a hook
/// can rewrite pytest's exit status, not the report it already wrote), nor
/// one whose report holds no test that ran (exit 0, or pytest's 5), nor an
/// exit 0 of a runner that is made to write a report and wrote none.
pub fn judge(exit_code: i64, oom: bool, f: &Finished) -> (Verdict, Option<String>) {
    if f.cpu_exceeded {
        return (Verdict::TimedOut, None);
    }
    if oom {
        return (Verdict::OomKilled, None);
    }
    if let Some(t) = &f.tests {
        let bad = t.failed + t.errors;
        return if t.total == 0 && (exit_code == 0 || exit_code == PYTEST_NO_TESTS) {
            (Verdict::NoTests, Some("the report holds no test".into()))
        } else if bad > 0 && exit_code == 0 {
            (
                Verdict::Failed,
                Some(format!(
                    "exit 0 but the report holds {bad} failing or erroring test(s)"
                )),
            )
        } else if exit_code != 0 {
            (Verdict::Failed, None)
        } else if t.passed == 0 {
            (
                Verdict::NoTests,
                Some(format!("no test ran: all {} were skipped", t.total)),
            )
        } else {
            (Verdict::Passed, None)
        };
    }
    if exit_code != 0 {
        (Verdict::Failed, None)
    } else if f.report_expected {
        (
            Verdict::Unverified,
            Some("exit 0, but the test report the runner is made to write never came".into()),
        )
    } else if f.summary_expected {
        unittest_summary(&f.stderr.text)
    } else {
        (Verdict::Passed, None)
    }
}

/// The verdict of an exit 0 of Python's unittest, from the summary it
/// prints last on stderr (`Ran N tests`, then `OK` or `OK (skipped=K)`):
/// without one the run ended before the tests did; with no test, or only
/// skipped ones, nothing was tested. Code under test can print a forged
/// summary: pytest's report is the stronger evidence.
fn unittest_summary(stderr: &str) -> (Verdict, Option<String>) {
    let ran = stderr.lines().rev().find_map(|l| {
        l.strip_prefix("Ran ")?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
    let skipped = stderr
        .lines()
        .rev()
        .find_map(|l| {
            let rest = l.strip_prefix("OK (")?;
            rest.split([',', ')'])
                .find_map(|part| part.trim().strip_prefix("skipped=")?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    match ran {
        None if stderr.lines().any(|l| l.trim() == "NO TESTS RAN") => {
            (Verdict::NoTests, Some("unittest ran 0 tests".into()))
        }
        None => (
            Verdict::Unverified,
            Some("exit 0, but unittest printed no summary (Ran N tests): the run ended before the tests did".into()),
        ),
        Some(0) => (Verdict::NoTests, Some("unittest ran 0 tests".into())),
        Some(n) if skipped >= n => (
            Verdict::NoTests,
            Some(format!("no test ran: all {n} were skipped")),
        ),
        Some(_) => (Verdict::Passed, None),
    }
}

/// Whether a test command runs Python's unittest, whose summary line is
/// then the evidence of a pass.
pub fn runs_unittest(command: &super::Command) -> bool {
    let text = command.to_string();
    text.contains("-m unittest") || text.contains("unittest.main")
}

/// Whether a test command runs pytest, which the images that declare a
/// report make write one (through `PYTEST_ADDOPTS`).
pub fn runs_pytest(command: &super::Command) -> bool {
    command
        .to_string()
        .split(|c: char| c.is_whitespace() || c == '/' || c == ';' || c == '&' || c == '|')
        .any(|w| w == "pytest" || w == "py.test")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::NullSink;

    fn run(report: ReportAt, stderr: &[&str]) -> Finished {
        let mut o = RunOutput::new("N", 1 << 20, report);
        for s in stderr {
            o.stderr(s.as_bytes(), &mut NullSink);
        }
        o.finish(&mut NullSink)
    }

    #[test]
    fn an_absent_conventional_report_is_no_news_a_declared_one_is() {
        let lines = ["N:ready\n", "boom\n", "\u{1e}N:report-none\n"];
        let conv = run(ReportAt::Conventional("/tmp/r.xml".into()), &lines);
        assert_eq!((conv.tests.is_none(), conv.tests_note), (true, None));
        let decl = run(ReportAt::Declared("/tmp/r.xml".into()), &lines);
        assert!(decl.tests_note.unwrap().contains("no report at /tmp/r.xml"));
        assert_eq!(decl.stderr.text, "boom\n");
    }

    #[test]
    fn oom_wins_over_exit_zero_and_cpu_time_over_both() {
        let verdict = |code, oom, f: &Finished| judge(code, oom, f).0;
        let f = run(ReportAt::None, &["N:ready\n"]);
        assert_eq!(verdict(0, true, &f), Verdict::OomKilled);
        assert_eq!(verdict(3, false, &f), Verdict::Failed);
        assert_eq!(verdict(0, false, &f), Verdict::Passed);
        let cpu = run(ReportAt::None, &["N:ready\n", "\u{1e}N:cpu-time\n"]);
        assert_eq!(verdict(0, true, &cpu), Verdict::TimedOut);
    }

    fn with_report(total: u32, passed: u32, failed: u32, errors: u32) -> Finished {
        let mut f = run(ReportAt::None, &["N:ready\n"]);
        f.tests = Some(TestReport {
            total,
            passed,
            failed,
            errors,
            skipped: total - passed - failed - errors,
            failing: Vec::new(),
            names: Default::default(),
            outcomes: Default::default(),
        });
        f
    }

    #[test]
    fn a_pass_needs_a_report_without_failures_and_with_a_test_that_ran() {
        // A hook that sets pytest's exit status to 0 does not change the report.
        let (v, note) = judge(0, false, &with_report(2, 1, 1, 0));
        assert_eq!(v, Verdict::Failed);
        assert!(note.unwrap().contains("exit 0 but the report holds 1"));
        assert_eq!(judge(0, false, &with_report(2, 1, 0, 1)).0, Verdict::Failed);
        // No test collected: pytest's 5 and a plain 0 alike.
        assert_eq!(
            judge(5, false, &with_report(0, 0, 0, 0)).0,
            Verdict::NoTests
        );
        assert_eq!(
            judge(0, false, &with_report(0, 0, 0, 0)).0,
            Verdict::NoTests
        );
        // Every test skipped: nothing ran.
        assert_eq!(
            judge(0, false, &with_report(3, 0, 0, 0)).0,
            Verdict::NoTests
        );
        assert_eq!(judge(1, false, &with_report(2, 2, 0, 0)).0, Verdict::Failed);
        assert_eq!(judge(0, false, &with_report(2, 2, 0, 0)).0, Verdict::Passed);
    }

    #[test]
    fn unittest_running_nothing_and_a_missing_expected_report_are_not_passes() {
        let ran0 = run(
            ReportAt::None,
            &["N:ready\n", "\n----------------------------------------------------------------------\nRan 0 tests in 0.000s\n\nOK\n"],
        );
        assert_eq!(
            judge(0, false, &ran0).0,
            Verdict::Passed,
            "not a unittest command"
        );
        let unittest = |lines: &[&str]| {
            let mut f = run(ReportAt::None, lines);
            f.summary_expected = true;
            judge(0, false, &f).0
        };
        let mut lines = vec!["N:ready\n"];
        assert_eq!(unittest(&lines), Verdict::Unverified, "no summary at all");
        lines.push("Ran 0 tests in 0.000s\n\nOK\n");
        assert_eq!(unittest(&lines), Verdict::NoTests);
        assert_eq!(
            unittest(&["N:ready\n", "Ran 2 tests in 0.1s\n\nOK (skipped=2)\n"]),
            Verdict::NoTests
        );
        assert_eq!(
            unittest(&["N:ready\n", "Ran 3 tests in 0.1s\n\nOK (skipped=2)\n"]),
            Verdict::Passed
        );
        assert_eq!(unittest(&["N:ready\n", "NO TESTS RAN\n"]), Verdict::NoTests);
        assert!(runs_unittest(&"python3 -m unittest -v".into()));
        let mut silent = run(ReportAt::None, &["N:ready\n"]);
        silent.report_expected = true;
        assert_eq!(judge(0, false, &silent).0, Verdict::Unverified);
        assert_eq!(judge(1, false, &silent).0, Verdict::Failed);
        assert!(runs_pytest(&"python3 -m pytest -q".into()));
        assert!(runs_pytest(&"cd x && /usr/bin/pytest".into()));
        assert!(!runs_pytest(&"python3 -m unittest -v".into()));
        let declared = RunOutput::new("N", 1, ReportAt::Declared("/tmp/r".into()));
        assert!(declared.expect_report(&"pytest -q".into()).expect_report);
        let conv = RunOutput::new("N", 1, ReportAt::Conventional("/tmp/r".into()));
        assert!(!conv.expect_report(&"pytest -q".into()).expect_report);
    }
}
