//! The copy-in protocol every backend shares: how the command is wrapped,
//! and how the wrapper's ready marker is told apart from the command's own
//! output.
//!
//! The container starts `/bin/sh -c WRAPPER autodev-wrapper NONCE MODE ...`.
//! The wrapper unpacks the tar stream on stdin into `/workspace`, prints
//! `NONCE:ready` on stderr, then `exec`s the command with stdin closed (a
//! test that reads input must not hang on the rest of the stream). The nonce
//! is random per run and never in the workspace, so nothing the code under
//! test prints can pass for the marker; and after the marker, every byte is
//! the command's.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What to run in `/workspace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// A command line for `/bin/sh -c`.
    Shell(String),
    /// A program and its arguments, run as given (no shell, quoting kept).
    Argv(Vec<String>),
}

impl Command {
    /// The command for what the user typed after `--`: one argument is a
    /// shell command line, several are an argv (as `docker run` takes them).
    pub fn from_args(args: &[String]) -> Self {
        match args {
            [one] => Command::Shell(one.clone()),
            many => Command::Argv(many.to_vec()),
        }
    }

    /// True when there is nothing to run.
    pub fn is_empty(&self) -> bool {
        match self {
            Command::Shell(s) => s.trim().is_empty(),
            Command::Argv(v) => v.first().is_none_or(|p| p.is_empty()),
        }
    }
}

impl From<&str> for Command {
    fn from(s: &str) -> Self {
        Command::Shell(s.to_string())
    }
}

impl From<String> for Command {
    fn from(s: String) -> Self {
        Command::Shell(s)
    }
}

impl PartialEq<&str> for Command {
    fn eq(&self, other: &&str) -> bool {
        matches!(self, Command::Shell(s) if s == other)
    }
}

/// A shell command line as given; an argv quoted so a shell would read it back.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Shell(s) => f.write_str(s),
            Command::Argv(v) => {
                let quoted: Vec<String> = v.iter().map(|a| shell_quote(a)).collect();
                f.write_str(&quoted.join(" "))
            }
        }
    }
}

fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// The wrapper script. `tar` and `head` are found through a fixed `PATH` so
/// `--env PATH=...` cannot break the copy; the command then runs with the
/// environment the user gave. Without a report to collect, the wrapper
/// becomes the command (`exec`); with one, it waits for the command, then
/// sends the report (a regular file, not a link, at most the cap) on stderr
/// between nonce markers and exits with the command's status.
const WRAPPER: &str = r#"P=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PATH=$P tar -x -f - -C /workspace --no-same-owner >/dev/null || { printf '\n%s:copy-failed\n' "$1" >&2; exit 1; }
printf '%s:ready\n' "$1" >&2
n=$1 j=$2
shift 2
if [ -z "$j" ]; then
  if [ "$1" = sh ]; then exec /bin/sh -c "$2" </dev/null; fi
  shift
  exec "$@" </dev/null
fi
if [ "$1" = sh ]; then /bin/sh -c "$2" </dev/null; else shift; "$@" </dev/null; fi
rc=$?
if [ -f "$j" ] && [ ! -L "$j" ]; then
  printf '\036%s:report-begin\n' "$n" >&2
  PATH=$P head -c REPORT_CAP "$j" >&2
  printf '\036%s:report-end\n' "$n" >&2
else
  printf '\036%s:report-none\n' "$n" >&2
fi
exit $rc"#;

/// The container's command line for `command`, announcing readiness with
/// `nonce`, and sending back the report at `report` (a path inside the
/// container) when one is asked for.
pub fn container_cmd(nonce: &str, report: Option<&str>, command: &Command) -> Vec<String> {
    // One byte over the cap tells a report that was cut from one that fits.
    let script = WRAPPER.replace(
        "REPORT_CAP",
        &(crate::report::junit::MAX_REPORT_BYTES + 1).to_string(),
    );
    let mut cmd: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        script,
        "autodev-wrapper".into(),
        nonce.into(),
        report.unwrap_or("").into(),
    ];
    match command {
        Command::Shell(s) => cmd.extend(["sh".to_string(), s.clone()]),
        Command::Argv(v) => {
            cmd.push("argv".into());
            cmd.extend(v.iter().cloned());
        }
    }
    cmd
}

/// Stderr kept while waiting for the ready marker (tar's complaints).
const SETUP_CAP: usize = 64 * 1024;

/// What a chunk of stderr turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Demuxed {
    /// Still the wrapper's own output; nothing for the user yet.
    Setup,
    /// The marker was seen: the workspace is in place. These bytes after it
    /// are the command's.
    Ready(Vec<u8>),
    /// The command's output.
    Command(Vec<u8>),
}

/// Splits the wrapper's stderr from the command's at the ready marker.
#[derive(Debug)]
pub struct ReadyDemux {
    nonce: String,
    marker: Vec<u8>,
    setup: Vec<u8>,
    ready: bool,
}

impl ReadyDemux {
    /// A demux waiting for `nonce`'s marker.
    pub fn new(nonce: &str) -> Self {
        ReadyDemux {
            nonce: nonce.to_string(),
            marker: format!("{nonce}:ready\n").into_bytes(),
            setup: Vec::new(),
            ready: false,
        }
    }

    /// Whether the marker has been seen.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Feeds one chunk of stderr.
    pub fn push(&mut self, chunk: &[u8]) -> Demuxed {
        if self.ready {
            return Demuxed::Command(chunk.to_vec());
        }
        self.setup.extend_from_slice(chunk);
        if let Some(pos) = find(&self.setup, &self.marker) {
            self.ready = true;
            let rest = self.setup.split_off(pos + self.marker.len());
            self.setup.clear();
            return Demuxed::Ready(rest);
        }
        if self.setup.len() > SETUP_CAP {
            // Keep the tail: a marker split across chunks must still be found.
            self.setup.drain(..self.setup.len() - SETUP_CAP);
        }
        Demuxed::Setup
    }

    /// Why the copy failed, from what the wrapper printed before it gave up,
    /// with a hint that matches the cause.
    pub fn copy_failure(&self) -> String {
        let text = String::from_utf8_lossy(&self.setup)
            .replace(&format!("{}:copy-failed", self.nonce), "");
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let said = lines.join("; ");
        let lower = said.to_ascii_lowercase();
        if said.is_empty() {
            "the container exited before the workspace was unpacked: the image needs /bin/sh and tar".into()
        } else if ["no space left", "wrote only", "cannot write"]
            .iter()
            .any(|m| lower.contains(m))
        {
            // GNU tar reports a full tmpfs as a short write.
            format!("{said} (raise --workspace-size)")
        } else if lower.contains("not found") || lower.contains("exec /bin/sh failed") {
            format!("{said} (the image needs /bin/sh and tar)")
        } else {
            said
        }
    }
}

/// What came of the report the wrapper sends after the command.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// The wrapper never got to it (the run was killed: timeout, memory).
    NotSent,
    /// There was no regular file at the report path.
    Absent,
    /// The report's bytes (possibly one over the cap: then it was cut).
    Received(Vec<u8>),
    /// The report began but never ended (the container died mid-report),
    /// or other output flooded it.
    Cut,
}

/// Starts every report marker: ASCII's record separator, which output
/// hardly ever ends with, so holding back a possible marker start almost
/// never delays a byte of live output (a newline would, at every line).
const RS: char = '\u{1e}';

/// After the ready marker, when a report is expected: splits the command's
/// stderr from the report the wrapper sends once the command has ended.
/// Bytes that could be the start of a marker are held back until the next
/// chunk shows whether they are.
#[derive(Debug)]
pub struct ReportDemux {
    begin: Vec<u8>,
    none: Vec<u8>,
    end: Vec<u8>,
    carry: Vec<u8>,
    report: Vec<u8>,
    state: ReportState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportState {
    Command,
    Report,
    Done(bool),
    Flooded,
}

impl ReportDemux {
    /// A demux for the report markers of `nonce`.
    pub fn new(nonce: &str) -> Self {
        ReportDemux {
            begin: format!("{RS}{nonce}:report-begin\n").into_bytes(),
            none: format!("{RS}{nonce}:report-none\n").into_bytes(),
            end: format!("{RS}{nonce}:report-end\n").into_bytes(),
            carry: Vec::new(),
            report: Vec::new(),
            state: ReportState::Command,
        }
    }

    /// Feeds a chunk of the command's stderr; returns what of it is the command's.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self.state {
            ReportState::Command => {}
            ReportState::Report => return self.feed_report(chunk),
            ReportState::Done(_) | ReportState::Flooded => return chunk.to_vec(),
        }
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let begin = find(&data, &self.begin);
        let none = find(&data, &self.none);
        match (begin, none) {
            (Some(b), n) if n.is_none_or(|n| b < n) => {
                let rest = data.split_off(b + self.begin.len());
                data.truncate(b);
                self.state = ReportState::Report;
                let mut after = self.feed_report(&rest);
                data.append(&mut after);
                data
            }
            (_, Some(n)) => {
                let rest = data.split_off(n + self.none.len());
                data.truncate(n);
                data.extend_from_slice(&rest);
                self.state = ReportState::Done(false);
                data
            }
            _ => {
                let keep = [&self.begin, &self.none]
                    .iter()
                    .map(|m| partial_suffix(&data, m))
                    .max()
                    .unwrap_or(0);
                self.carry = data.split_off(data.len() - keep);
                data
            }
        }
    }

    fn feed_report(&mut self, bytes: &[u8]) -> Vec<u8> {
        let from = self.report.len().saturating_sub(self.end.len());
        self.report.extend_from_slice(bytes);
        if let Some(pos) = find(&self.report[from..], &self.end).map(|p| p + from) {
            let after = self.report.split_off(pos + self.end.len());
            self.report.truncate(pos);
            self.state = ReportState::Done(true);
            return after;
        }
        // The wrapper sends at most the cap plus one byte; more means other
        // output is mixed in, and the report cannot be trusted.
        if self.report.len() > crate::report::junit::MAX_REPORT_BYTES + 64 * 1024 {
            self.report = Vec::new();
            self.state = ReportState::Flooded;
        }
        Vec::new()
    }

    /// At the end of the stream: the command's held-back bytes, and the report.
    pub fn finish(self) -> (Vec<u8>, Report) {
        let report = match self.state {
            ReportState::Command => Report::NotSent,
            ReportState::Report | ReportState::Flooded => Report::Cut,
            ReportState::Done(false) => Report::Absent,
            ReportState::Done(true) => Report::Received(self.report),
        };
        (self.carry, report)
    }
}

/// The length of the longest end of `data` that begins `marker` (without being all of it).
fn partial_suffix(data: &[u8], marker: &[u8]) -> usize {
    (1..marker.len().min(data.len() + 1))
        .rev()
        .find(|k| data.ends_with(&marker[..*k]))
        .unwrap_or(0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_markers_do_not_count_and_nothing_after_the_real_one_is_judged() {
        let mut d = ReadyDemux::new("autodev-abc");
        // Another run's nonce, a marker without its newline, a prefix of ours.
        assert_eq!(d.push(b"autodev-xyz:ready\n"), Demuxed::Setup);
        assert_eq!(d.push(b"autodev-ab:ready\n"), Demuxed::Setup);
        assert_eq!(d.push(b"autodev-abc:ready"), Demuxed::Setup);
        assert!(!d.is_ready());
        // The real marker, split across chunks, with the command's first bytes after it.
        let mut d = ReadyDemux::new("autodev-abc");
        assert_eq!(d.push(b"tar: warning\nautodev-a"), Demuxed::Setup);
        assert_eq!(
            d.push(b"bc:ready\nhello"),
            Demuxed::Ready(b"hello".to_vec())
        );
        assert!(d.is_ready());
        // The command printing a marker (forged or even the real one) is just output.
        assert_eq!(
            d.push(b"autodev-abc:ready\n"),
            Demuxed::Command(b"autodev-abc:ready\n".to_vec())
        );
        assert_eq!(
            d.push(b"autodev-abc:copy-failed\n"),
            Demuxed::Command(b"autodev-abc:copy-failed\n".to_vec())
        );
    }

    fn feed(d: &mut ReportDemux, stream: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in stream.chunks(step) {
            out.extend(d.push(c));
        }
        out
    }

    #[test]
    fn the_report_is_split_from_the_commands_output_at_every_chunk_boundary() {
        let stream =
            b"tests ran\nno newline at the end\x1en1:report-begin\n<testsuite/>\x1en1:report-end\n";
        for step in 1..stream.len() {
            let mut d = ReportDemux::new("n1");
            let mut out = feed(&mut d, stream, step);
            let (rest, report) = d.finish();
            out.extend(rest);
            assert_eq!(out, b"tests ran\nno newline at the end", "step {step}");
            assert_eq!(
                report,
                Report::Received(b"<testsuite/>".to_vec()),
                "step {step}"
            );
        }
    }

    #[test]
    fn a_line_of_output_is_never_held_back() {
        let mut d = ReportDemux::new("n1");
        assert_eq!(d.push(b"oops\n"), b"oops\n");
        assert_eq!(d.push(b"half a line"), b"half a line");
    }

    #[test]
    fn no_report_a_killed_run_and_a_forged_marker() {
        let mut d = ReportDemux::new("n1");
        let out = feed(&mut d, b"out\n\x1en1:report-none\n", 3);
        assert_eq!(out, b"out\n");
        assert_eq!(d.finish().1, Report::Absent);
        // Killed before the wrapper could send anything; held-back bytes come out.
        let mut d = ReportDemux::new("n1");
        let mut out = d.push(b"partial\n");
        let (rest, report) = d.finish();
        out.extend(rest);
        assert_eq!((out, report), (b"partial\n".to_vec(), Report::NotSent));
        // Another nonce is just output.
        let mut d = ReportDemux::new("n1");
        let out = feed(&mut d, b"\x1en2:report-begin\nx\n", 4);
        let (rest, report) = d.finish();
        assert_eq!([out, rest].concat(), b"\x1en2:report-begin\nx\n");
        assert_eq!(report, Report::NotSent);
        // Begun but never ended.
        let mut d = ReportDemux::new("n1");
        feed(&mut d, b"\x1en1:report-begin\n<testsu", 5);
        assert_eq!(d.finish().1, Report::Cut);
    }

    #[test]
    fn marker_is_found_after_a_flood_of_setup_output() {
        let mut d = ReadyDemux::new("n1");
        for _ in 0..100 {
            assert_eq!(d.push(&[b'x'; 4096]), Demuxed::Setup);
        }
        assert_eq!(d.push(b"n"), Demuxed::Setup);
        assert_eq!(d.push(b"1:ready\n"), Demuxed::Ready(Vec::new()));
    }

    #[test]
    fn copy_failures_get_the_hint_that_fits() {
        let fail = |text: &[u8]| {
            let mut d = ReadyDemux::new("n");
            d.push(text);
            d.copy_failure()
        };
        let full = fail(b"tar: big: Cannot write: No space left on device\n\nn:copy-failed\n");
        assert!(full.ends_with("(raise --workspace-size)"), "{full}");
        assert!(!full.contains("copy-failed"), "{full}");
        let short = fail(b"tar: big.txt: Wrote only 4608 of 10240 bytes\n");
        assert!(short.ends_with("(raise --workspace-size)"), "{short}");
        let no_tar = fail(b"autodev-wrapper: 1: tar: not found\n\nn:copy-failed\n");
        assert!(no_tar.contains("needs /bin/sh and tar"), "{no_tar}");
        assert!(!no_tar.contains("workspace-size"), "{no_tar}");
        assert!(fail(b"").contains("needs /bin/sh and tar"));
    }

    #[test]
    fn one_argument_is_a_shell_line_several_an_argv() {
        let one = Command::from_args(&["echo 'a b' | wc -c".into()]);
        assert_eq!(
            container_cmd("n", Some("/tmp/r.xml"), &one)[5],
            "/tmp/r.xml"
        );
        assert_eq!(one, Command::Shell("echo 'a b' | wc -c".into()));
        let many = Command::from_args(&["python3".into(), "-c".into(), "print(\"a b\")".into()]);
        assert_eq!(
            container_cmd("n", None, &many)[6..],
            ["argv", "python3", "-c", "print(\"a b\")"]
        );
        assert_eq!(many.to_string(), r#"python3 -c 'print("a b")'"#);
        assert_eq!(
            Command::Argv(vec!["echo".into(), "it's".into(), "".into()]).to_string(),
            r#"echo 'it'\''s' ''"#
        );
        assert_eq!(
            container_cmd("n", None, &one)[6..],
            ["sh", "echo 'a b' | wc -c"]
        );
    }

    #[test]
    fn commands_read_from_json_as_string_or_array() {
        let s: Command = serde_json::from_str(r#""pytest -q""#).unwrap();
        assert_eq!(s, Command::Shell("pytest -q".into()));
        let a: Command = serde_json::from_str(r#"["pytest","-q"]"#).unwrap();
        assert_eq!(a, Command::Argv(vec!["pytest".into(), "-q".into()]));
        assert!(Command::Argv(vec![]).is_empty());
        assert!(Command::Shell("  ".into()).is_empty());
    }
}
