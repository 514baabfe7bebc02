//! Reading what the wrapper ([`super::wrapper`]) says on the container's
//! stderr, apart from what the command says: the ready marker before the
//! command, and after it the run's resource use and its test report. Every
//! marker holds the run's nonce, which the code under test never sees.

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
    /// The wrapper never got to it (the run was killed: timeout, memory),
    /// or none was asked for.
    NotSent,
    /// There was no regular file at the report path.
    Absent,
    /// The report's bytes (possibly one over the cap: then it was cut).
    Received(Vec<u8>),
    /// The report began but never ended (the container died mid-report),
    /// or other output flooded it.
    Cut,
}

/// What came of the workspace's tar the wrapper sends back after the
/// command, when asked (`RunSpec::write_back`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeBack {
    /// The wrapper never got to it (the run was killed: timeout, memory).
    NotSent,
    /// The tar, whole.
    Received(Vec<u8>),
    /// Over the cap (the wrapper cut it), broken off, or flooded by other
    /// output: not to be used.
    Cut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TreeState {
    Waiting,
    In,
    Done,
    Cut,
}

/// What the container's cgroup said once the command had ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Peak memory of the container, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time (user and system) of the container, in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Processes the kernel killed for memory inside the container.
    pub oom_kills: Option<u64>,
}

impl Usage {
    /// Reads `PEAK CPU OOM` (each a number or `-`).
    fn parse(line: &[u8]) -> Option<Usage> {
        let text = std::str::from_utf8(line).ok()?;
        let mut f = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        let u = Usage {
            peak_memory_bytes: f.next()?,
            cpu_ns: f.next()?,
            oom_kills: f.next()?,
        };
        f.next().is_none().then_some(u)
    }
}

/// Starts every trailer marker: ASCII's record separator, which output
/// hardly ever ends with, so holding back a possible marker start almost
/// never delays a byte of live output (a newline would, at every line).
const RS: char = '\u{1e}';

/// After the ready marker: splits the command's stderr from the trailer the
/// wrapper sends once the command has ended (its resource use, then the
/// test report when one is asked for). Bytes that could be the start of a
/// marker are held back until the next chunk shows whether they are.
#[derive(Debug)]
pub struct ReportDemux {
    cpu_mark: Vec<u8>,
    cpu_exceeded: bool,
    usage_mark: Vec<u8>,
    begin: Vec<u8>,
    none: Vec<u8>,
    end: Vec<u8>,
    expect_report: bool,
    usage: Option<Usage>,
    carry: Vec<u8>,
    report: Vec<u8>,
    state: ReportState,
    tree_begin: Vec<u8>,
    tree_end: Vec<u8>,
    /// The cap of the tar sent back (`None`: none is asked for).
    tree_cap: Option<u64>,
    tree: TreeState,
    tree_carry: Vec<u8>,
    tree_bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportState {
    Command,
    Report,
    Done(bool),
    Flooded,
}

impl ReportDemux {
    /// A demux for the trailer markers of `nonce`.
    pub fn new(nonce: &str, expect_report: bool) -> Self {
        ReportDemux {
            cpu_mark: format!("{RS}{nonce}:cpu-time\n").into_bytes(),
            cpu_exceeded: false,
            usage_mark: format!("{RS}{nonce}:usage ").into_bytes(),
            begin: format!("{RS}{nonce}:report-begin\n").into_bytes(),
            none: format!("{RS}{nonce}:report-none\n").into_bytes(),
            end: format!("{RS}{nonce}:report-end\n").into_bytes(),
            expect_report,
            usage: None,
            carry: Vec::new(),
            report: Vec::new(),
            state: ReportState::Command,
            tree_begin: format!("{RS}{nonce}:tree-begin\n").into_bytes(),
            tree_end: format!("{RS}{nonce}:tree-end\n").into_bytes(),
            tree_cap: None,
            tree: TreeState::Waiting,
            tree_carry: Vec::new(),
            tree_bytes: Vec::new(),
        }
    }

    /// Expects the workspace's tar (at most `cap` bytes) after the report.
    pub fn with_tree(mut self, cap: Option<u64>) -> Self {
        self.tree_cap = cap;
        self
    }

    /// What follows the report: the workspace's tar when one is expected,
    /// the command's (late) output around it.
    fn after_trailer(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        if self.tree_cap.is_none() {
            return bytes;
        }
        match self.tree {
            TreeState::Waiting => {
                let mut data = std::mem::take(&mut self.tree_carry);
                data.extend_from_slice(&bytes);
                if let Some(p) = find(&data, &self.tree_begin) {
                    let rest = data.split_off(p + self.tree_begin.len());
                    data.truncate(p);
                    self.tree = TreeState::In;
                    let mut after = self.feed_tree(&rest);
                    data.append(&mut after);
                    data
                } else {
                    let keep = partial_suffix(&data, &self.tree_begin);
                    self.tree_carry = data.split_off(data.len() - keep);
                    data
                }
            }
            TreeState::In => self.feed_tree(&bytes),
            TreeState::Done | TreeState::Cut => bytes,
        }
    }

    fn feed_tree(&mut self, bytes: &[u8]) -> Vec<u8> {
        let from = self.tree_bytes.len().saturating_sub(self.tree_end.len());
        self.tree_bytes.extend_from_slice(bytes);
        if let Some(pos) = find(&self.tree_bytes[from..], &self.tree_end).map(|p| p + from) {
            let after = self.tree_bytes.split_off(pos + self.tree_end.len());
            self.tree_bytes.truncate(pos);
            self.tree = TreeState::Done;
            return after;
        }
        // The wrapper sends at most the cap: more is other output mixed in.
        let cap = self.tree_cap.unwrap_or(0);
        if self.tree_bytes.len() as u64 > cap.saturating_add(64 * 1024) {
            self.tree_bytes = Vec::new();
            self.tree = TreeState::Cut;
        }
        Vec::new()
    }

    /// The workspace's tar, when one was asked for (taken: a second call
    /// gets `None`).
    pub fn take_tree(&mut self) -> Option<TreeBack> {
        let cap = self.tree_cap.take()?;
        Some(match self.tree {
            TreeState::Waiting => TreeBack::NotSent,
            TreeState::In | TreeState::Cut => TreeBack::Cut,
            // Exactly the cap: the wrapper's `head` may have cut it.
            TreeState::Done if self.tree_bytes.len() as u64 >= cap => TreeBack::Cut,
            TreeState::Done => TreeBack::Received(std::mem::take(&mut self.tree_bytes)),
        })
    }

    /// Feeds a chunk of the command's stderr; returns what of it is the command's.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self.state {
            ReportState::Command => {}
            ReportState::Report => {
                let after = self.feed_report(chunk);
                return self.after_trailer(after);
            }
            ReportState::Done(_) | ReportState::Flooded => {
                return self.after_trailer(chunk.to_vec())
            }
        }
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        // The CPU-time watchdog's word comes while the command runs.
        if let Some(p) = find(&data, &self.cpu_mark) {
            data.drain(p..p + self.cpu_mark.len());
            self.cpu_exceeded = true;
        }
        let mut out = Vec::new();
        loop {
            let usage = if self.usage.is_none() {
                find(&data, &self.usage_mark)
            } else {
                None
            };
            let begin = find(&data, &self.begin);
            let none = find(&data, &self.none);
            let first = [usage, begin, none].into_iter().flatten().min();
            match first {
                Some(p) if Some(p) == usage => {
                    let from = p + self.usage_mark.len();
                    let Some(nl) = data[from..].iter().position(|b| *b == b'\n') else {
                        // The usage line is not whole yet.
                        self.carry = data.split_off(p);
                        out.append(&mut data);
                        return out;
                    };
                    self.usage = Some(Usage::parse(&data[from..from + nl]).unwrap_or_default());
                    let rest = data.split_off(from + nl + 1);
                    data.truncate(p);
                    out.append(&mut data);
                    data = rest;
                    if !self.expect_report {
                        self.state = ReportState::Done(false);
                        out.append(&mut self.after_trailer(data));
                        return out;
                    }
                }
                Some(p) if Some(p) == begin => {
                    let rest = data.split_off(p + self.begin.len());
                    data.truncate(p);
                    out.append(&mut data);
                    self.state = ReportState::Report;
                    let after = self.feed_report(&rest);
                    out.append(&mut self.after_trailer(after));
                    return out;
                }
                Some(p) => {
                    let rest = data.split_off(p + self.none.len());
                    data.truncate(p);
                    out.append(&mut data);
                    self.state = ReportState::Done(false);
                    out.append(&mut self.after_trailer(rest));
                    return out;
                }
                None => {
                    let keep = [&self.cpu_mark, &self.usage_mark, &self.begin, &self.none]
                        .iter()
                        .map(|m| partial_suffix(&data, m))
                        .max()
                        .unwrap_or(0);
                    self.carry = data.split_off(data.len() - keep);
                    out.append(&mut data);
                    return out;
                }
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
        if self.report.len() > crate::sandbox::junit::MAX_REPORT_BYTES + 64 * 1024 {
            self.report = Vec::new();
            self.state = ReportState::Flooded;
        }
        Vec::new()
    }

    /// Whether the CPU-time watchdog killed the run.
    pub fn cpu_exceeded(&self) -> bool {
        self.cpu_exceeded
    }

    /// At the end of the stream: the command's held-back bytes, the report,
    /// and the resource use (`None` when the wrapper never got to say it).
    pub fn finish(self) -> (Vec<u8>, Report, Option<Usage>) {
        let report = match self.state {
            ReportState::Command => Report::NotSent,
            ReportState::Report | ReportState::Flooded => Report::Cut,
            ReportState::Done(false) if !self.expect_report => Report::NotSent,
            ReportState::Done(false) => Report::Absent,
            ReportState::Done(true) => Report::Received(self.report),
        };
        let mut rest = self.carry;
        rest.extend_from_slice(&self.tree_carry);
        (rest, report, self.usage)
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
            b"tests ran\nno newline at the end\x1en1:usage 5087232 29616102 1\n\x1en1:report-begin\n<testsuite/>\x1en1:report-end\n";
        for step in 1..stream.len() {
            let mut d = ReportDemux::new("n1", true);
            let mut out = feed(&mut d, stream, step);
            let (rest, report, usage) = d.finish();
            out.extend(rest);
            assert_eq!(out, b"tests ran\nno newline at the end", "step {step}");
            assert_eq!(
                usage,
                Some(Usage {
                    peak_memory_bytes: Some(5087232),
                    cpu_ns: Some(29616102),
                    oom_kills: Some(1)
                }),
                "step {step}"
            );
            assert_eq!(
                report,
                Report::Received(b"<testsuite/>".to_vec()),
                "step {step}"
            );
        }
    }

    #[test]
    fn the_cpu_time_watchdog_is_heard_and_cut_out() {
        let mut d = ReportDemux::new("n1", false);
        let out = feed(&mut d, b"busy\n\x1en1:cpu-time\n", 3);
        assert!(d.cpu_exceeded());
        let (rest, _, usage) = d.finish();
        assert_eq!([out, rest].concat(), b"busy\n");
        assert_eq!(usage, None);
    }

    #[test]
    fn a_line_of_output_is_never_held_back() {
        let mut d = ReportDemux::new("n1", true);
        assert_eq!(d.push(b"oops\n"), b"oops\n");
        assert_eq!(d.push(b"half a line"), b"half a line");
    }

    #[test]
    fn no_report_a_killed_run_and_a_forged_marker() {
        let mut d = ReportDemux::new("n1", true);
        let out = feed(&mut d, b"out\n\x1en1:report-none\n", 3);
        assert_eq!(out, b"out\n");
        assert_eq!(d.finish().1, Report::Absent);
        // Without a report asked for: the usage line alone, with unknown values.
        let mut d = ReportDemux::new("n1", false);
        let out = feed(&mut d, b"out\n\x1en1:usage - 12 -\nlate", 2);
        let (rest, report, usage) = d.finish();
        assert_eq!([out, rest].concat(), b"out\nlate");
        assert_eq!(report, Report::NotSent);
        assert_eq!(
            usage,
            Some(Usage {
                peak_memory_bytes: None,
                cpu_ns: Some(12),
                oom_kills: None
            })
        );
        // Killed before the wrapper could send anything; held-back bytes come out.
        let mut d = ReportDemux::new("n1", true);
        let mut out = d.push(b"partial\n");
        let (rest, report, usage) = d.finish();
        out.extend(rest);
        assert_eq!((out, report), (b"partial\n".to_vec(), Report::NotSent));
        assert_eq!(usage, None);
        // Another nonce is just output.
        let mut d = ReportDemux::new("n1", true);
        let out = feed(&mut d, b"\x1en2:report-begin\nx\n", 4);
        let (rest, report, _) = d.finish();
        assert_eq!([out, rest].concat(), b"\x1en2:report-begin\nx\n");
        assert_eq!(report, Report::NotSent);
        // Begun but never ended.
        let mut d = ReportDemux::new("n1", true);
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
    fn the_workspace_tar_after_the_report_is_taken_out_whole_and_only_when_asked() {
        let trailer = "\u{1e}n1:usage 1 2 0\n\u{1e}n1:report-none\n";
        let tar = b"TAR\x00\x1e\x01bytes\n\x1en2:tree-end\n".to_vec();
        let mut stream = trailer.as_bytes().to_vec();
        stream.extend_from_slice(b"\x1en1:tree-begin\n");
        stream.extend_from_slice(&tar);
        stream.extend_from_slice(b"\x1en1:tree-end\n");
        // Fed a byte at a time: every marker is split across chunks.
        let mut d = ReportDemux::new("n1", true).with_tree(Some(1000));
        let out: Vec<u8> = stream.iter().flat_map(|b| d.push(&[*b])).collect();
        assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
        assert_eq!(d.take_tree(), Some(TreeBack::Received(tar.clone())));
        assert_eq!(d.finish().1, Report::Absent);
        // Not asked: whatever follows is the command's.
        let mut d = ReportDemux::new("n1", true);
        let out = d.push(&stream);
        assert!(out.starts_with(b"\x1en1:tree-begin"));
        assert_eq!(d.take_tree(), None);
        // Over the cap, or never ended: cut; the run killed first: not sent.
        let mut d = ReportDemux::new("n1", true).with_tree(Some(tar.len() as u64));
        d.push(&stream);
        assert_eq!(d.take_tree(), Some(TreeBack::Cut));
        let mut d = ReportDemux::new("n1", true).with_tree(Some(1000));
        d.push(&stream[..stream.len() - 5]);
        assert_eq!(d.take_tree(), Some(TreeBack::Cut));
        let mut d = ReportDemux::new("n1", true).with_tree(Some(1000));
        d.push(b"output\n");
        assert_eq!(d.take_tree(), Some(TreeBack::NotSent));
    }
}
