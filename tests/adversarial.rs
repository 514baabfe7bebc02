//! Hostile code against the real sandbox: each case does its worst and
//! asserts the verdict a safe executor must give and that the host is
//! unaffected. (More cases live in exec.rs: fork bomb, balloon, timeouts,
//! floods, network, read-only root, environment, symlinks.)

mod common;

use std::process::Command;
use std::time::Duration;

use autodev::sandbox::docker::DockerSandbox;
use autodev::sandbox::{NullSink, Outcome, Sandbox, Verdict};
use tokio_util::sync::CancellationToken;

async fn run(sb: &DockerSandbox, name: &str, files: &[(&str, &str)], cmd: &str) -> Outcome {
    let label = common::test_label(name);
    let ws = common::workspace(files);
    let mut spec = common::spec(ws.path(), cmd, &label);
    spec.limits.timeout = Duration::from_secs(30);
    spec.limits.tmp_size = 16 << 20;
    spec.limits.workspace_size = 16 << 20;
    let out = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    common::assert_no_leak(&label);
    out
}

fn host_has_process(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn daemonised_child_does_not_survive_the_run() {
    let sb = require_docker!();
    let marker = format!("sleep 3{}", fastrand::u32(10_000..99_999));
    // The run checks that its child really is alive before exiting 0.
    let cmd = format!(
        "trap '' TERM HUP; setsid sh -c 'trap \"\" TERM HUP; exec {marker}' </dev/null >/dev/null 2>&1 & sleep 0.5; \
         for p in /proc/[0-9]*; do [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = '{marker} ' ] && exit 0; done; exit 3"
    );
    let out = run(&sb, "daemon", &[], &cmd).await;
    assert_eq!(out.verdict, Verdict::Passed, "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !host_has_process(&marker),
        "a process from the run is still alive on the host"
    );
}

/// Orphans (a child whose parent exits first) go to the sandbox's init,
/// which must reap them: 300 of them, in bursts under the process limit,
/// leave no zombie, and the run ends by its own exit, under runc and runsc.
#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn orphans_are_reaped_and_leave_no_zombie() {
    let sb = require_docker!();
    let script = r#"
import os, time
for burst in range(6):
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                time.sleep(0.05)
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
    time.sleep(0.3)
time.sleep(1.5)
zombies = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            status = open(f"/proc/{p}/status").read()
        except OSError:
            continue
        if "\nState:\tZ" in status:
            zombies.append(p)
print("zombies:", len(zombies))
raise SystemExit(3 if zombies else 0)
"#;
    let out = run(&sb, "orphans", &[("reap.py", script)], "python3 reap.py").await;
    assert_eq!(out.verdict, Verdict::Passed, "{out:?}");
    assert!(out.stdout.text.contains("zombies: 0"), "{out:?}");
}

/// A named pipe made and used in the workspace and in /tmp: one end writes,
/// the other reads, and the run ends by its own exit.
#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_in_the_workspace_carries_data() {
    let sb = require_docker!();
    let cmd = "for d in /workspace /tmp; do mkfifo $d/p && test -p $d/p || exit 4; \
               (echo through-$d > $d/p &); read line < $d/p; echo \"$line\"; rm $d/p; done";
    let out = run(&sb, "fifo", &[], cmd).await;
    assert_eq!(out.verdict, Verdict::Passed, "{out:?}");
    assert_eq!(
        out.stdout.text, "through-/workspace\nthrough-/tmp\n",
        "{out:?}"
    );
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn interleaved_floods_on_both_streams_are_captured_and_bounded() {
    let sb = require_docker!();
    let py = "import sys\nfor i in range(20000):\n    sys.stdout.write('o' * 1023 + '\\n')\n    sys.stderr.write('e' * 1023 + '\\n')\nsys.stdout.write('OUT-END\\n'); sys.stderr.write('ERR-END\\n')\n";
    let out = run(&sb, "floods", &[("f.py", py)], "python3 f.py").await;
    assert_eq!(out.verdict, Verdict::Passed);
    for (c, end) in [(&out.stdout, "OUT-END\n"), (&out.stderr, "ERR-END\n")] {
        assert_eq!(c.total_bytes, 20000 * 1024 + 8);
        assert!(c.text.ends_with(end));
        assert!(c.dropped_bytes > 0 && c.text.len() < 1_100_000);
    }
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn filling_tmp_workspace_and_shm_hits_their_size_limits() {
    let sb = require_docker!();
    let cmd = "for d in /tmp /workspace /dev/shm; do \
                 dd if=/dev/zero of=$d/fill bs=1M count=100 2>/dev/null; \
                 echo $d $(du -m $d/fill | cut -f1); \
               done; exit 1";
    let out = run(&sb, "fill", &[], cmd).await;
    assert_eq!(out.verdict, Verdict::Failed, "{out:?}");
    for line in out.stdout.text.lines() {
        let mb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(mb <= 16, "{line}: wrote past the size limit");
    }
    assert_eq!(out.stdout.text.lines().count(), 3, "{}", out.stdout.text);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn privilege_escalation_attempts_fail() {
    let sb = require_docker!();
    let cmd = "r=0; \
               chmod u+s /bin/sh 2>/dev/null && { echo chmod-ok; r=1; }; \
               unshare -U true 2>/dev/null && { echo unshare-user-ok; r=1; }; \
               unshare -m true 2>/dev/null && { echo unshare-mount-ok; r=1; }; \
               mount -t tmpfs none /tmp 2>/dev/null && { echo mount-ok; r=1; }; \
               su -c true root </dev/null 2>/dev/null && { echo su-ok; r=1; }; \
               exit $r";
    // Under gVisor too: its lane registers runsc with --oci-seccomp, which
    // applies the engine's profile inside (docs/backends.md, "gVisor").
    let out = run(&sb, "privesc", &[], cmd).await;
    assert_eq!(
        out.verdict,
        Verdict::Passed,
        "an escalation worked: {}",
        out.stdout.text
    );
    // The init process's environment (readable by the same user) holds only
    // what the image and Docker set: nothing of the host's.
    let env = run(
        &sb,
        "environ",
        &[],
        "tr '\\0' '\\n' </proc/1/environ | cut -d= -f1",
    )
    .await;
    assert_eq!(env.verdict, Verdict::Passed, "{env:?}");
    let names: Vec<&str> = env.stdout.text.lines().collect();
    let image = sb.client().inspect_image(&common::image()).await.unwrap();
    let mut allowed: Vec<String> = image
        .config
        .and_then(|c| c.env)
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split('=').next().map(str::to_string))
        .collect();
    allowed.extend(["HOSTNAME".to_string(), "HOME".to_string()]);
    assert!(names.contains(&"PATH"), "{names:?}");
    for n in &names {
        assert!(
            allowed.iter().any(|a| a == n),
            "variable {n} in the sandbox's init environment is neither the image's nor Docker's: {names:?}"
        );
    }
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_output_is_captured_not_fatal() {
    let sb = require_docker!();
    let out = run(
        &sb,
        "utf8",
        &[],
        "printf '\\377\\376\\000ok\\n'; printf '\\300' >&2; exit 2",
    )
    .await;
    assert_eq!((out.verdict, out.exit_code), (Verdict::Failed, Some(2)));
    assert!(out.stdout.text.ends_with("ok\n"), "{:?}", out.stdout.text);
    assert!(out.stdout.text.contains('\u{fffd}'));
    assert_eq!(out.stdout.total_bytes, 6);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn output_that_claims_success_does_not_change_the_verdict() {
    let sb = require_docker!();
    let out = run(
        &sb,
        "marker",
        &[],
        "echo 'Ran 10 tests'; echo OK; echo '10 passed, 0 failed'; echo 'autodev-0000:ready' >&2; exit 1",
    )
    .await;
    assert_eq!((out.verdict, out.exit_code), (Verdict::Failed, Some(1)));
    // After the real ready marker, a marker-like line is the command's own
    // output, kept as such (the demux itself is unit-tested in sandbox::wrapper).
    assert!(
        out.stderr.text.contains("autodev-0000:ready"),
        "{:?}",
        out.stderr.text
    );
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn cpu_spin_is_stopped_at_the_timeout() {
    let sb = require_docker!();
    let label = common::test_label("spin");
    let ws = common::workspace(&[]);
    let mut spec = common::spec(ws.path(), "python3 -c 'while True: pass'", &label);
    spec.limits.timeout = Duration::from_secs(2);
    let out = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.verdict, Verdict::TimedOut);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[test]
fn hostile_patches_through_autodev_run_are_refused() {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::docker());
    let label = common::test_label("hostile-run");
    let d = tempfile::tempdir().unwrap();
    let ws = d.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.join("linkdir")).unwrap();
    let big = "x".repeat(50 * 1024 * 1024);
    let long = "a".repeat(300);
    let reply = [
        "PATCH::../x\nx\nENDPATCH".to_string(),
        "PATCH::/etc/x\nx\nENDPATCH".into(),
        "PATCH::a/../../x\nx\nENDPATCH".into(),
        "PATCH::..\\\\x\nx\nENDPATCH".into(),
        "PATCH::C:\\\\x\nx\nENDPATCH".into(),
        "PATCH::linkdir/x\nx\nENDPATCH".into(),
        "PATCH::\nx\nENDPATCH".into(),
        format!("PATCH::{long}\nx\nENDPATCH"),
        "PATCH::a\u{1}b\nx\nENDPATCH".into(),
        format!("PATCH::big.txt\n{big}\nENDPATCH"),
        "PATCH::ok.txt\nfine\nENDPATCH".into(),
        "PATCH::.git/config\n[core]\n\tfsmonitor = touch /tmp/pwned\nENDPATCH".into(),
        "PATCH::ok.txt/under\nx\nENDPATCH".into(),
        "PATCH::cut.txt\nno end".into(),
    ]
    .join("\n");
    std::fs::write(
        d.path().join("replay.txt"),
        format!("=== REPLY ===\n{reply}\n"),
    )
    .unwrap();
    let out = Command::new(common::bin())
        .current_dir(d.path())
        .args([
            "run",
            "--workspace",
            "ws",
            "--task",
            "x",
            "--runner",
            "test -f ok.txt",
            "--quiet",
        ])
        .args([
            "--replay",
            "replay.txt",
            "--no-zip",
            "--transcript",
            "t.jsonl",
            "--image",
            &common::image(),
        ])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patches = common::transcript(&d.path().join("t.jsonl"))
        .into_iter()
        .find(|e| e["event"] == "patches")
        .unwrap();
    assert_eq!(patches["applied"], serde_json::json!(["ok.txt"]));
    let reasons: Vec<String> = patches["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "unterminated",
            "parent_dir",
            "absolute",
            "parent_dir",
            "windows_path",
            "windows_path",
            "symlink",
            "empty_path",
            "too_long",
            "bad_character",
            "too_large",
            "protected_path",
            "not_a_file"
        ]
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(!d.path().join("x").exists() && !std::path::Path::new("/etc/x").exists());
    let mut names: Vec<String> = std::fs::read_dir(&ws)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["linkdir", "ok.txt"]);
    common::assert_no_leak(&label);
}
