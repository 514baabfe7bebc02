//! The copy-in protocol every backend shares: how the command is wrapped,
//! and how the wrapper's ready marker is told apart from the command's own
//! output.
//!
//! The container starts `/bin/sh -c WRAPPER autodev-wrapper NONCE REPORT
//! CPU MODE ...` ([`container_cmd`], Kubernetes), or `... stdin IDLE`
//! ([`waiting_cmd`], Docker: started before its run, it reads those same
//! settings, the environment and a deadline from stdin first, see
//! [`header`]). The wrapper unpacks the tar stream on stdin into
//! `/workspace`, prints `NONCE:ready` on stderr, then runs the command with
//! stdin closed (a test that reads input must not hang on the rest of the
//! stream). The nonce is random per run and never in the workspace, so
//! nothing the code under test prints can pass for the marker; and after
//! the marker, every byte is the command's.

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
x=
dec() { case $1 in *\\*) v=$(printf '%bx' "$1"); v=${v%x} ;; *) v=$1 ;; esac; }
if [ "$1" = stdin ]; then
  # Started ahead of its run: the run's settings come first on stdin. An
  # owner that dies closes stdin (read fails: exit); one that hangs is
  # outlived by the idle deadline. Either way the container ends, and the
  # engine removes it.
  (trap 'kill $s; exit 0' TERM; PATH=$P sleep "$2" & s=$!; wait $s && kill -KILL -1) </dev/null >/dev/null 2>&1 &
  d=$!
  IFS= read -r n && IFS= read -r j && IFS= read -r l && IFS= read -r b && IFS= read -r t && IFS= read -r c && IFS= read -r e || exit 0
  kill $d
  # The run's own deadline, past the owner's wall clock: a run whose owner
  # died still ends.
  (PATH=$P sleep "$t"; kill -KILL -1) </dev/null >/dev/null 2>&1 &
  dec "$j"
  set -- "$n" "$v" "$l" "$b"
  while [ "$c" -gt 0 ]; do IFS= read -r a || exit 0; dec "$a"; set -- "$@" "$v"; c=$((c - 1)); done
  while [ "$e" -gt 0 ]; do IFS= read -r a || exit 0; x="$x$a
"; e=$((e - 1)); done
fi
PATH=$P tar -x -f - -C /workspace --no-same-owner >/dev/null || { printf '\n%s:copy-failed\n' "$1" >&2; exit 1; }
printf '%s:ready\n' "$1" >&2
n=$1 j=$2 l=$3 b=$4
shift 4
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
(
  # The run's environment (started ahead: from stdin), for the command only.
  while IFS= read -r a; do [ -n "$a" ] && dec "$a" && export "$v"; done <<EOF
$x
EOF
  if [ "$1" = sh ]; then exec /bin/sh -c "$2"; else shift; exec "$@"; fi
) </dev/null
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
if [ -n "$b" ]; then
  # The workspace as the command ended it, at most $b bytes of tar: nothing
  # of the command may still be running and writing.
  kill -KILL -1 2>/dev/null
  # tar skips what it cannot read, and a file missing from the tree reads
  # as deleted: the command's own files are made readable first.
  (cd /workspace && PATH=$P chmod -R u+rX . 2>/dev/null)
  printf '\036%s:tree-begin\n' "$n" >&2
  (cd /workspace && PATH=$P tar -c -f - . 2>/dev/null | PATH=$P head -c "$b") >&2
  printf '\036%s:tree-end\n' "$n" >&2
fi
exit $rc"#;

fn script() -> String {
    // One byte over the cap tells a report that was cut from one that fits.
    WRAPPER.replace(
        "REPORT_CAP",
        &(crate::sandbox::junit::MAX_REPORT_BYTES + 1).to_string(),
    )
}

/// The command line of a container started before its run is known: it
/// waits for [`header`] on stdin, then the workspace tar, and ends by itself
/// if neither comes within `idle` (or stdin closes: its owner is gone).
pub fn waiting_cmd(idle: std::time::Duration) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        script(),
        "autodev-wrapper".into(),
        "stdin".into(),
        idle.as_secs().max(1).to_string(),
    ]
}

/// What a waiting container reads first on stdin: the marker nonce, the
/// report path, the CPU-time limit, the cap of the workspace's tar sent
/// back after the command (none: nothing is sent back), the deadline after
/// which it kills everything (seconds), then the command and its environment. Kept out of
/// the container's definition, so neither an inspect nor `/proc/1/cmdline`
/// shows the nonce, and one container serves any run of the same limits.
pub fn header(
    nonce: &str,
    report: Option<&str>,
    cpu_limit_ns: Option<u64>,
    write_back: Option<u64>,
    deadline: std::time::Duration,
    env: &[(String, String)],
    command: &Command,
) -> Vec<u8> {
    let items: Vec<&str> = match command {
        Command::Shell(s) => vec!["sh", s.as_str()],
        Command::Argv(v) => std::iter::once("argv")
            .chain(v.iter().map(String::as_str))
            .collect(),
    };
    let mut lines = vec![
        escape(nonce),
        escape(report.unwrap_or("")),
        cpu_limit_ns.map(|n| n.to_string()).unwrap_or_default(),
        write_back.map(|n| n.to_string()).unwrap_or_default(),
        deadline.as_secs().max(1).to_string(),
        items.len().to_string(),
        env.len().to_string(),
    ];
    lines.extend(items.into_iter().map(escape));
    lines.extend(env.iter().map(|(k, v)| escape(&format!("{k}={v}"))));
    let mut out = lines.join("\n");
    out.push('\n');
    out.into_bytes()
}

/// One value per line for the wrapper's `dec` (`printf %b`): backslash,
/// newline and other control characters escaped, everything else as is.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\0{:03o}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

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
    let mut cmd: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        script(),
        "autodev-wrapper".into(),
        nonce.into(),
        report.unwrap_or("").into(),
        cpu_limit_ns.map(|n| n.to_string()).unwrap_or_default(),
        // Nothing is sent back after the command (the service's write-back
        // runs on Docker engines).
        String::new(),
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
            ["1000", "", "argv", "python3", "-c", "print(\"a b\")"]
        );
        assert_eq!(many.to_string(), r#"python3 -c 'print("a b")'"#);
        assert_eq!(
            Command::Argv(vec!["echo".into(), "it's".into(), "".into()]).to_string(),
            r#"echo 'it'\''s' ''"#
        );
        assert_eq!(
            container_cmd("n", None, None, &one)[6..],
            ["", "", "sh", "echo 'a b' | wc -c"]
        );
    }

    /// The header, fed to the real wrapper under this host's `/bin/sh`
    /// (no tar: the copy fails after the settings are read), comes back
    /// intact: every value, whatever bytes it holds.
    #[test]
    fn the_header_survives_the_shell() {
        let odd = "a\\b\nc d\t'\"$(x)`y`*\u{e9}\\n\\";
        let h = header(
            "n0nce",
            Some("/tmp/r.xml"),
            Some(7),
            Some(99),
            std::time::Duration::from_secs(9),
            &[("A".into(), odd.into()), ("B".into(), "".into())],
            &Command::Argv(vec!["printf".into(), odd.into(), "".into()]),
        );
        // The wrapper up to the copy, then print what it holds. Its
        // deadlines kill every process the user may signal: harmless in a
        // container, fatal to this host, so they are defused here.
        let upto = WRAPPER
            .split("PATH=$P tar")
            .next()
            .unwrap()
            .replace("kill -KILL -1", "true");
        assert!(!upto.contains("KILL -1") && upto.matches("true)").count() == 2);
        let probe = format!(
            "{upto}\nprintf '%s|' \"$@\"; printf '\\n'; while IFS= read -r a; do [ -n \"$a\" ] && dec \"$a\" && printf '[%s]' \"$v\"; done <<EOF\n$x\nEOF\n"
        );
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &probe, "autodev-wrapper", "stdin", "5"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &h).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            text,
            format!("n0nce|/tmp/r.xml|7|99|argv|printf|{odd}||\n[A={odd}][B=]")
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
