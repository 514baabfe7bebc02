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
/// environment the user gave, stdin closed. When it has ended, the wrapper
/// reads the container's cgroup (v1 or v2: peak memory, CPU time, OOM
/// kills) and, when asked, the test report (a regular file, not a link, at
/// most the cap), sends them on stderr after nonce markers, and exits with
/// the command's status.
const WRAPPER: &str = r#"P=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PATH=$P tar -x -f - -C /workspace --no-same-owner >/dev/null || { printf '\n%s:copy-failed\n' "$1" >&2; exit 1; }
printf '%s:ready\n' "$1" >&2
n=$1 j=$2 l=$3
shift 3
g=/sys/fs/cgroup
# Whole-container CPU time, in ns: cgroup v1 or v2.
cpu() {
  u=-
  [ -r $g/cpuacct/cpuacct.usage ] && read -r u < $g/cpuacct/cpuacct.usage
  if [ -r $g/cpu.stat ]; then while read -r k v; do [ "$k" = usage_usec ] && u=$((v * 1000)); done < $g/cpu.stat; fi
}
if [ -n "$l" ]; then
  (
    while PATH=$P sleep 0.2; do
      cpu
      if [ "$u" != - ] && [ "$u" -gt "$l" ]; then
        printf '\036%s:cpu-time\n' "$n" >&2
        kill -KILL -1
        exit 0
      fi
    done
  ) &
  w=$!
fi
if [ "$1" = sh ]; then /bin/sh -c "$2" </dev/null; else shift; "$@" </dev/null; fi
rc=$?
[ -n "$l" ] && kill "$w" 2>/dev/null
m=- o=-
[ -r $g/memory/memory.max_usage_in_bytes ] && read -r m < $g/memory/memory.max_usage_in_bytes
[ -r $g/memory.peak ] && read -r m < $g/memory.peak
cpu
c=$u
for f in $g/memory/memory.oom_control $g/memory.events; do
  if [ -r "$f" ]; then while read -r k v; do [ "$k" = oom_kill ] && o=$v; done < "$f"; fi
done
printf '\036%s:usage %s %s %s\n' "$n" "$m" "$c" "$o" >&2
if [ -n "$j" ]; then
  if [ -f "$j" ] && [ ! -L "$j" ]; then
    printf '\036%s:report-begin\n' "$n" >&2
    PATH=$P head -c REPORT_CAP "$j" >&2
    printf '\036%s:report-end\n' "$n" >&2
  else
    printf '\036%s:report-none\n' "$n" >&2
  fi
fi
exit $rc"#;

/// The container's command line for `command`, announcing readiness with
/// `nonce`, sending back the report at `report` (a path inside the
/// container) when one is asked for, and killing everything once the
/// container has used `cpu_limit_ns` of CPU time.
pub fn container_cmd(
    nonce: &str,
    report: Option<&str>,
    cpu_limit_ns: Option<u64>,
    command: &Command,
) -> Vec<String> {
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
        cpu_limit_ns.map(|n| n.to_string()).unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_argument_is_a_shell_line_several_an_argv() {
        let one = Command::from_args(&["echo 'a b' | wc -c".into()]);
        assert_eq!(
            container_cmd("n", Some("/tmp/r.xml"), None, &one)[5],
            "/tmp/r.xml"
        );
        assert_eq!(one, Command::Shell("echo 'a b' | wc -c".into()));
        let many = Command::from_args(&["python3".into(), "-c".into(), "print(\"a b\")".into()]);
        assert_eq!(
            container_cmd("n", None, Some(1000), &many)[6..],
            ["1000", "argv", "python3", "-c", "print(\"a b\")"]
        );
        assert_eq!(many.to_string(), r#"python3 -c 'print("a b")'"#);
        assert_eq!(
            Command::Argv(vec!["echo".into(), "it's".into(), "".into()]).to_string(),
            r#"echo 'it'\''s' ''"#
        );
        assert_eq!(
            container_cmd("n", None, None, &one)[6..],
            ["", "sh", "echo 'a b' | wc -c"]
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
