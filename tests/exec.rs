//! The executor against the real Docker daemon: each test fails if the
//! sandbox stops holding. Tests that need Docker are ignored by a plain
//! `cargo test`; `cargo test -- --include-ignored` runs them.

mod common;

use common::Sandboxed;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autodev::config::Limits;
use autodev::sandbox::docker::Flavor;
use autodev::sandbox::{NullSink, OutputSink, Sandbox, SandboxError, Verdict};
use tokio_util::sync::CancellationToken;

/// A chunk of output: when it arrived, whether stdout, the bytes.
type Chunk = (Instant, bool, Vec<u8>);

/// Records when each chunk arrived.
#[derive(Clone, Default)]
struct TimedSink(Arc<Mutex<Vec<Chunk>>>);

impl OutputSink for TimedSink {
    fn stdout(&mut self, b: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), true, b.to_vec()));
    }
    fn stderr(&mut self, b: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), false, b.to_vec()));
    }
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn output_is_streamed_live_and_captured_per_stream() {
    let sb = require_docker!();
    let label = common::test_label("stream");
    let ws = common::workspace(&[]);
    let spec = common::spec(
        ws.path(),
        "echo first; echo oops >&2; sleep 3; echo second",
        &label,
    );
    let sink = TimedSink::default();
    let mut s2 = sink.clone();
    let out = sb
        .run(&spec, &mut s2, &CancellationToken::new())
        .await
        .unwrap();
    let end = Instant::now();
    assert_eq!(out.verdict, Verdict::Passed);
    assert_eq!(out.stdout.text, "first\nsecond\n");
    assert_eq!(out.stderr.text, "oops\n");
    let chunks = sink.0.lock().unwrap().clone();
    let first = chunks
        .iter()
        .find(|(_, is_out, b)| *is_out && b.starts_with(b"first"))
        .expect("first chunk");
    assert!(
        end.duration_since(first.0) > Duration::from_millis(2000),
        "first line arrived only at the end: not streamed"
    );
    assert!(chunks
        .iter()
        .any(|(_, is_out, b)| !is_out && b == b"oops\n"));
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_map_to_verdicts() {
    let sb = require_docker!();
    let label = common::test_label("verdicts");
    let ws = common::workspace(&[("ok.sh", "exit 0\n"), ("bad.sh", "echo PASSED; exit 3\n")]);
    let cancel = CancellationToken::new();
    let ok = sb
        .run(
            &common::spec(ws.path(), "sh ok.sh", &label),
            &mut NullSink,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!((ok.verdict, ok.exit_code), (Verdict::Passed, Some(0)));
    // A fake success marker does not matter: the verdict follows the exit code.
    let bad = sb
        .run(
            &common::spec(ws.path(), "sh bad.sh", &label),
            &mut NullSink,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!((bad.verdict, bad.exit_code), (Verdict::Failed, Some(3)));
    assert!(bad.durations.total_ms >= bad.durations.run_ms);
    common::assert_no_leak(&label);
}

async fn timed(sb: &autodev::sandbox::docker::DockerSandbox, command: &str, name: &str) {
    let label = common::test_label(name);
    let ws = common::workspace(&[]);
    let mut spec = common::spec(ws.path(), command, &label);
    spec.limits.timeout = Duration::from_secs(3);
    let t = Instant::now();
    let out = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.verdict, Verdict::TimedOut, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sleep_is_killed_at_the_timeout() {
    let sb = require_docker!();
    timed(&sb, "sleep 600", "sleep").await;
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ignoring_tree_is_killed_at_the_timeout() {
    let sb = require_docker!();
    timed(
        &sb,
        "trap '' TERM; (trap '' TERM; sleep 600) & (trap '' TERM; while :; do :; done) & sleep 600",
        "sigterm",
    )
    .await;
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn memory_balloon_is_oom_killed() {
    let sb = require_docker!();
    let label = common::test_label("oom");
    let ws = common::workspace(&[]);
    let mut spec = common::spec(
        ws.path(),
        "python3 -c 'b = bytearray(1024 * 1024 * 1024); print(len(b))'",
        &label,
    );
    spec.limits.memory = 64 << 20;
    let out = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.verdict, Verdict::OomKilled, "{out:?}");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn process_limit_holds_and_fork_bomb_run_ends() {
    let sb = require_docker!();
    let label = common::test_label("pids");
    let ws = common::workspace(&[(
        "forks.py",
        "import os, time\nn = 0\ntry:\n    while n < 1000:\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n, flush=True)\nos._exit(0)\n",
    )]);
    let mut spec = common::spec(ws.path(), "python3 forks.py", &label);
    spec.limits.pids = 64;
    let out = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    // Under gVisor too a fork past the limit fails inside the sandbox (its
    // kernel holds --pids), and the code goes on.
    let n: u32 = out
        .stdout
        .text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{out:?}"));
    assert!(n < 64, "forked {n} processes under a limit of 64");

    // The bomb keeps forking in the background while the main process
    // (exec'd, so it needs no fork) outlives the wall clock: the pids limit
    // must hold the bomb, and the timeout must take the whole container
    // down, bomb included. The bomb starts in a subshell, forked before the
    // limit is reached: started from the main shell, a fork of its own that
    // lost the race to the bomb ended it ("Cannot fork", exit 2; seen once
    // under Podman).
    let mut bomb = common::spec(ws.path(), "(b() { b | b & }; b) & exec sleep 60", &label);
    bomb.limits.pids = 64;
    bomb.limits.timeout = Duration::from_secs(5);
    let t = Instant::now();
    let out = sb
        .run(&bomb, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    // Under gVisor a sustained bomb costs its kernel host threads faster
    // than processes (docs/backends.md, "gVisor"): the host's backstop may
    // end the sandbox first, which holds the bomb as surely.
    let held = out.verdict == Verdict::TimedOut
        || (common::gvisor() && out.verdict == Verdict::Failed && out.exit_code == Some(2));
    assert!(
        held,
        "a fork bomb under --pids 64 must be held until the 5s wall clock kills the container: {out:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5 + 15),
        "the kill at the 5s timeout took until {:?}: the bomb slowed the kill or the removal",
        t.elapsed()
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn no_network_under_none() {
    let sb = require_docker!();
    let label = common::test_label("net");
    // No packet can leave: the container has no interface but loopback and
    // no route. Checked by reading the kernel's tables, never by sending a
    // packet: a regression must fail this test, not reach another host.
    let ws = common::workspace(&[(
        "net.py",
        "import os\n\
         def table(p):\n    return open(p).read().splitlines() if os.path.exists(p) else []\n\
         ifaces = sorted(l.split(':')[0].strip() for l in table('/proc/net/dev')[2:])\n\
         routes = [l for l in table('/proc/net/route')[1:] if l.strip()]\n\
         v6 = [l for l in table('/proc/net/ipv6_route') if not l.rstrip().endswith(' lo')]\n\
         print('interfaces', ifaces); print('routes', routes); print('v6 routes', v6)\n\
         raise SystemExit(0 if ifaces == ['lo'] and not routes and not v6 else 1)\n",
    )]);
    let out = sb
        .run(
            &common::spec(ws.path(), "python3 net.py", &label),
            &mut NullSink,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        out.verdict,
        Verdict::Passed,
        "the sandbox has an interface or a route besides loopback: {}",
        out.stdout.text
    );
    assert!(
        out.stdout.text.contains("interfaces ['lo']"),
        "{}",
        out.stdout.text
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn root_is_read_only_workspace_and_tmp_are_writable() {
    let sb = require_docker!();
    let label = common::test_label("fs");
    let ws = common::workspace(&[("run.sh", "echo ran\n")]);
    std::fs::set_permissions(
        ws.path().join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cmd = "if touch /x 2>/dev/null || touch /etc/x 2>/dev/null || touch /usr/x 2>/dev/null; then echo ROOT-WRITABLE; exit 1; fi; \
               echo a > /workspace/new && echo b > /tmp/new && ./run.sh && id -u";
    let out = sb
        .run(
            &common::spec(ws.path(), cmd, &label),
            &mut NullSink,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(out.verdict, Verdict::Passed, "{out:?}");
    assert_eq!(out.stdout.text, "ran\n1000\n", "mode kept, non-root user");
    // The host copy is never touched by what runs inside.
    assert!(!ws.path().join("new").exists());
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn file_size_limit_stops_a_write_past_it() {
    let sb = require_docker!();
    let label = common::test_label("fsize");
    let ws = common::workspace(&[]);
    let mut spec = common::spec(
        ws.path(),
        "head -c 100000 /dev/zero > /tmp/big; echo rc=$?; wc -c < /tmp/big; head -c 1000 /dev/zero > /tmp/small && echo small-ok",
        &label,
    );
    spec.limits.file_size = Some(64 * 1024);
    let out = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.verdict, Verdict::Passed, "{out:?}");
    let lines: Vec<&str> = out.stdout.text.lines().collect();
    // The writer is stopped at the limit (SIGXFSZ, 128 + 25, or EFBIG).
    assert_ne!(lines.first(), Some(&"rc=0"), "{out:?}");
    assert_eq!(lines.get(1).map(|l| l.trim()), Some("65536"), "{out:?}");
    assert_eq!(lines.get(2), Some(&"small-ok"), "{out:?}");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn host_environment_does_not_leak_but_env_flag_passes() {
    let _sb = require_docker!();
    let label = common::test_label("env");
    let ws = common::workspace(&[]);
    let out = Command::new(common::bin())
        .env("AUTODEV_HOST_SECRET", "hunter2")
        .env("GIVEN", "yes")
        .args([
            "exec",
            "--json",
            "--image",
            &common::image(),
            "-e",
            "GIVEN",
            "-e",
            "B=2",
        ])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .arg("--workspace")
        .arg(ws.path())
        .args(["--", "env; cat /proc/1/environ | tr '\\0' '\\n'"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v["stdout"]["text"].as_str().unwrap();
    assert!(!text.contains("hunter2"), "host variable leaked: {text}");
    assert!(text.contains("GIVEN=yes") && text.contains("B=2"), "{text}");
    common::assert_no_leak(&label);
}

#[tokio::test(flavor = "multi_thread")]
// The child is reaped by wait4 (for its own rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
async fn output_flood_is_truncated_with_head_and_tail_and_bounded_memory() {
    let _sb = require_docker!();
    let label = common::test_label("flood");
    let ws = common::workspace(&[(
        "flood.py",
        "import sys\nw = sys.stdout.buffer\nw.write(b'BEGIN\\n')\nline = b'x' * 1023 + b'\\n'\nfor _ in range(200 * 1024):\n    w.write(line)\nw.write(b'END\\n')\nw.flush()\nsys.stderr.write('done\\n')\n",
    )]);
    let run = |cmd: &str| {
        let mut child = Command::new(common::bin())
            .args([
                "exec",
                "--json",
                "--output-limit",
                "64KiB",
                "--timeout",
                "120s",
            ])
            .sandboxed(&label)
            .arg("--workspace")
            .arg(ws.path())
            .args(["--", cmd])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = Vec::new();
        std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let (code, rss_kib) = wait_with_rusage(child.id());
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&stdout));
        (stdout, rss_kib)
    };
    let (_, quiet_rss) = run("echo hi");
    let (stdout, rss_kib) = run("python3 flood.py");
    eprintln!("autodev peak RSS: {rss_kib} KiB with a 200 MB flood, {quiet_rss} KiB for `echo hi`");
    let v: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let text = v["stdout"]["text"].as_str().unwrap();
    assert!(text.starts_with("BEGIN\n"), "head lost");
    assert!(text.ends_with("END\n"), "tail lost");
    assert!(text.len() < 70 * 1024);
    assert_eq!(v["stdout"]["total_bytes"], 200 * 1024 * 1024 + 10);
    assert!(v["stdout"]["dropped_bytes"].as_u64().unwrap() > 200 * 1024 * 1024 - 70 * 1024);
    assert_eq!(v["stderr"]["text"], "done\n");
    assert!(
        rss_kib < quiet_rss + 8 * 1024,
        "autodev peaked at {rss_kib} KiB for a 200 MB flood, {quiet_rss} KiB for a quiet run"
    );
    common::assert_no_leak(&label);
}

/// Waits for one child and returns its exit code and its own peak RSS in KiB
/// (wait4 reports that child alone, not every child of the test process).
fn wait_with_rusage(pid: u32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: wait4 writes only into the status and rusage we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut ru) };
    assert_eq!(r, pid as i32, "wait4 failed");
    (libc::WEXITSTATUS(status), ru.ru_maxrss)
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn symlink_to_host_file_does_not_bring_it_in() {
    let sb = require_docker!();
    let label = common::test_label("symlink");
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(secret_dir.path().join("secret.txt"), "TOP-SECRET-HOST-DATA").unwrap();
    let ws = common::workspace(&[("a.txt", "fine\n")]);
    std::os::unix::fs::symlink(secret_dir.path().join("secret.txt"), ws.path().join("leak"))
        .unwrap();
    std::os::unix::fs::symlink(secret_dir.path(), ws.path().join("leakdir")).unwrap();
    let out = sb
        .run(
            &common::spec(
                ws.path(),
                // readlink, not `ls -l`: Debian's gVisor rejects coreutils' statx.
                "cat leak leakdir/secret.txt 2>&1; echo \"leak -> $(readlink leak)\"; cat a.txt",
                &label,
            ),
            &mut NullSink,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(
        !out.stdout.text.contains("TOP-SECRET"),
        "{}",
        out.stdout.text
    );
    assert!(
        out.stdout.text.contains("leak ->"),
        "link not kept as a link: {}",
        out.stdout.text
    );
    assert!(out.stdout.text.ends_with("fine\n"));
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn cancellation_removes_the_container() {
    let sb = require_docker!();
    let label = common::test_label("cancel");
    let ws = common::workspace(&[]);
    let spec = common::spec(ws.path(), "sleep 600", &label);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        c2.cancel();
    });
    let err = sb.run(&spec, &mut NullSink, &cancel).await.unwrap_err();
    assert!(matches!(err, SandboxError::Interrupted), "{err}");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn missing_image_is_a_sandbox_error_with_a_hint() {
    let sb = require_docker!();
    let label = common::test_label("noimage");
    let ws = common::workspace(&[]);
    let mut spec = common::spec(ws.path(), "true", &label);
    spec.image = "autodev/does-not-exist:latest".into();
    let err = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::ImageMissing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("autodev images build does-not-exist"),
        "{err}"
    );

    let out = Command::new(common::bin())
        .args([
            "exec",
            "--image",
            "autodev/does-not-exist:latest",
            "--workspace",
        ])
        .arg(ws.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn workspace_larger_than_its_tmpfs_is_a_sandbox_error() {
    let sb = require_docker!();
    let label = common::test_label("copyin");
    let big: String = (0..3_000_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let ws = common::workspace(&[("big.txt", &big)]);
    let mut spec = common::spec(ws.path(), "echo SHOULD-NOT-RUN", &label);
    spec.limits.workspace_size = 1 << 20;
    let err = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::CopyFailed(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("big.txt") && text.contains("--workspace-size"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    common::assert_no_leak(&label);
}

#[test]
fn missing_daemon_is_reported_within_two_seconds() {
    let ws = common::workspace(&[]);
    let t = Instant::now();
    let out = Command::new(common::bin())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["exec", "--workspace"])
        .arg(ws.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the container engine"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn bad_flag_value_is_a_usage_error() {
    let out = Command::new(common::bin())
        .args(["exec", "--memory", "lots", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory"));
    let out = Command::new(common::bin())
        .args(["exec", "--workspace", "/nonexistent/ws", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a folder"));
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn limits_are_applied_to_the_container() {
    let sb = require_docker!();
    let label = common::test_label("limits");
    let ws = common::workspace(&[]);
    let mut spec = common::spec(
        ws.path(),
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; df -k /tmp | tail -1",
        &label,
    );
    spec.limits = Limits {
        memory: 100 << 20,
        tmp_size: 8 << 20,
        ..spec.limits
    };
    let out = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    let t = &out.stdout.text;
    assert!(t.contains("CapEff:\t0000000000000000"), "{t}");
    if !common::gvisor() {
        // gVisor shows neither the host's cgroup files nor the flag: the
        // host-side check below is the proof there.
        assert!(t.contains(&(100u64 << 20).to_string()), "{t}");
        assert!(t.contains("NoNewPrivs:\t1"), "{t}");
        assert!(t.contains(" 8192 "), "tmp size: {t}");
    }
    common::assert_no_leak(&label);

    // From the host: what the engine applied to the running container.
    spec.command = "sleep 30".into();
    let running = {
        let sb = sb.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            sb.run(&spec, &mut NullSink, &CancellationToken::new())
                .await
        })
    };
    // A container listed may be gone by the time it is inspected (one
    // still being removed is listed too): look until one answers.
    let mut info = None;
    for _ in 0..200 {
        if let Some(id) = common::containers_with(&label).into_iter().next() {
            let inspected = sb
                .client()
                .inspect_container(
                    &id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await;
            if let Ok(i) = inspected {
                info = Some(i);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = info.expect("the run's container appears");
    running.abort();
    let h = info.host_config.unwrap();
    assert_eq!(h.memory, Some(100 << 20));
    assert_eq!(h.memory_swap, Some(100 << 20));
    // Podman lists every capability it would have granted instead of ALL.
    let dropped = h.cap_drop.unwrap_or_default();
    match sb.flavor() {
        Flavor::Docker => assert_eq!(dropped, ["ALL"]),
        Flavor::Podman => assert!(dropped.iter().any(|c| c == "SETUID"), "{dropped:?}"),
    }
    assert_eq!(h.readonly_rootfs, Some(true));
    assert!(h
        .security_opt
        .unwrap()
        .contains(&"no-new-privileges".to_string()));
    assert_eq!(h.network_mode.as_deref(), Some("none"));
    assert!(h.tmpfs.unwrap()["/tmp"].contains(&format!("size={}", 8 << 20)));
    assert_eq!(h.runtime, common::runtime().or(h.runtime.clone()));
    let _ = sb.clean(std::slice::from_ref(&label)).await;
    common::assert_no_leak(&label);
}

/// `autodev exec` through the binary, labelled for the leak check.
fn exec_bin(ws: &std::path::Path, label: &(String, String), args: &[&str]) -> Command {
    let mut c = Command::new(common::bin());
    c.args(["exec", "--workspace"]).arg(ws);
    if !args.contains(&"--image") {
        c.args(["--image", &common::image()]);
    }
    if !args.contains(&"--timeout") {
        c.args(["--timeout", "60s"]);
    }
    c.args(["--label", &format!("{}={}", label.0, label.1)]);
    if let (Some(r), false) = (common::runtime(), args.contains(&"--runtime")) {
        c.args(["--runtime", &r]);
    }
    c.args(args);
    c
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_exactly_what_was_typed() {
    let _sb = require_docker!();
    let label = common::test_label("argv");
    let ws = common::workspace(&[("a.txt", "x")]);
    let code = |args: &[&str]| {
        let out = exec_bin(ws.path(), &label, args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Several arguments: an argv, no shell, quoting kept.
    assert_eq!(code(&["--", "sh", "-c", "exit 7"]).0, Some(1));
    assert_eq!(
        code(&["--", "python3", "-c", "print(\"a b\")"]),
        (Some(0), "a b\n".into())
    );
    assert_eq!(
        code(&["--", "echo", "a   b", "$HOME"]),
        (Some(0), "a   b $HOME\n".into())
    );
    // One argument: a shell command line, as documented.
    assert_eq!(
        code(&["--", "echo $((6 * 7)) | cat"]),
        (Some(0), "42\n".into())
    );
    // PATH from --env does not break the copy-in; /tmp runs helpers.
    assert_eq!(
        code(&[
            "-e",
            "PATH=/nothing",
            "--",
            "printf '#!/bin/sh\\necho ran\\n' > /tmp/s.sh; /bin/chmod +x /tmp/s.sh; /tmp/s.sh"
        ]),
        (Some(0), "ran\n".into())
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn closed_pipes_are_quiet_and_full_disks_are_errors() {
    let _sb = require_docker!();
    let label = common::test_label("pipes");
    let ws = common::workspace(&[]);
    // A reader that goes away: no panic, the verdict's exit code.
    let mut child = exec_bin(ws.path(), &label, &["--json", "--", "seq 1 100000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // A full disk on stdout or stderr: one line (where it can be written) and exit 74.
    for (stream, json) in [("stdout", true), ("stdout", false), ("stderr", false)] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut c = exec_bin(
            ws.path(),
            &label,
            if json {
                &["--json", "--", "seq 1 10"]
            } else {
                &["--", "seq 1 10"]
            },
        );
        if stream == "stdout" {
            c.stdout(full);
        } else {
            c.stderr(full);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(74),
            "{stream} json={json}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        if stream == "stdout" {
            assert!(stderr.contains("No space left"), "{stderr}");
        }
    }
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn settings_the_engine_cannot_honour_are_usage_errors_on_one_line() {
    let _sb = require_docker!();
    let label = common::test_label("usage");
    let ws = common::workspace(&[]);
    let cpus = (std::thread::available_parallelism().unwrap().get() * 2).to_string();
    for (args, says) in [
        (vec!["--cpus", cpus.as_str()], "CPUs"),
        (vec!["--memory", "1024t"], "--memory"),
        (vec!["--runtime", "no-such-runtime"], "it has: "),
        (vec!["--image", "BAD IMAGE"], "invalid reference format"),
        (vec!["--user", "1000:0"], "root"),
        (vec!["--timeout", "1e30"], "--timeout"),
        (vec!["--memory", "9000000t"], "--memory"),
        (vec!["-e", "A B=1"], "A B"),
        (vec!["--cpus", "-1"], "--cpus"),
    ] {
        let mut all = args.clone();
        all.extend(["--", "true"]);
        let out = exec_bin(ws.path(), &label, &all).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    // An image autodev does not define is not sent to `autodev images build`.
    let out = exec_bin(
        ws.path(),
        &label,
        &["--image", "nosuch/image", "--", "true"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(!stderr.contains("images build"), "{stderr}");
    common::assert_no_leak(&label);
}
