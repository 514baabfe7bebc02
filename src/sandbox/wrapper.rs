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

/// The wrapper script. `tar` is found through a fixed `PATH` so `--env
/// PATH=...` cannot break the copy; the command then runs with the
/// environment the user gave.
const WRAPPER: &str = r#"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin tar -x -f - -C /workspace --no-same-owner >/dev/null || { printf '\n%s:copy-failed\n' "$1" >&2; exit 1; }
printf '%s:ready\n' "$1" >&2
shift
if [ "$1" = sh ]; then exec /bin/sh -c "$2" </dev/null; fi
shift
exec "$@" </dev/null"#;

/// The container's command line for `command`, announcing readiness with `nonce`.
pub fn container_cmd(nonce: &str, command: &Command) -> Vec<String> {
    let mut cmd: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        WRAPPER.into(),
        "autodev-wrapper".into(),
        nonce.into(),
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
        assert_eq!(one, Command::Shell("echo 'a b' | wc -c".into()));
        let many = Command::from_args(&["python3".into(), "-c".into(), "print(\"a b\")".into()]);
        assert_eq!(
            container_cmd("n", &many)[5..],
            ["argv", "python3", "-c", "print(\"a b\")"]
        );
        assert_eq!(many.to_string(), r#"python3 -c 'print("a b")'"#);
        assert_eq!(
            Command::Argv(vec!["echo".into(), "it's".into(), "".into()]).to_string(),
            r#"echo 'it'\''s' ''"#
        );
        assert_eq!(container_cmd("n", &one)[5..], ["sh", "echo 'a b' | wc -c"]);
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
