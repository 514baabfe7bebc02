//! What every backend does with a run's two output streams, whatever
//! carries them (Docker's attach stream, a Kubernetes attach WebSocket):
//! split the wrapper's markers from the command's output, keep bounded
//! captures, forward live, and at the end turn the trailer into the test
//! report and resource use, and the exit status into a [`Verdict`].

use std::time::Instant;

use super::demux::{Demuxed, ReadyDemux, Report, ReportDemux, Usage};
use super::{Capture, Captured, OutputSink, Verdict};
use crate::report::junit::{self, TestReport};

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
        }
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
            trailer,
            report,
            ..
        } = self;
        let cpu_exceeded = trailer.cpu_exceeded();
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
            usage,
            cpu_exceeded,
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

/// The verdict of a run that ended by itself. A child killed for memory
/// while the parent still exits 0 must not count as a pass: the OOM flag
/// wins over the exit code. Nor does a run whose report holds no test:
/// nothing was tested.
pub fn verdict(exit_code: i64, oom: bool, f: &Finished) -> Verdict {
    if f.cpu_exceeded {
        Verdict::TimedOut
    } else if oom {
        Verdict::OomKilled
    } else if exit_code != 0 {
        Verdict::Failed
    } else if f.tests.as_ref().is_some_and(|t| t.total == 0) {
        Verdict::NoTests
    } else {
        Verdict::Passed
    }
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
        let f = run(ReportAt::None, &["N:ready\n"]);
        assert_eq!(verdict(0, true, &f), Verdict::OomKilled);
        assert_eq!(verdict(3, false, &f), Verdict::Failed);
        assert_eq!(verdict(0, false, &f), Verdict::Passed);
        let cpu = run(ReportAt::None, &["N:ready\n", "\u{1e}N:cpu-time\n"]);
        assert_eq!(verdict(0, true, &cpu), Verdict::TimedOut);
    }
}
