//! Faults around the sandbox: signals in the middle of `exec` and `run`, and a
//! Docker daemon that stops answering mid-run.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autodev::sandbox::docker::DockerSandbox;
use autodev::sandbox::{NullSink, Sandbox, SandboxError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn wait_for_container(label: &(String, String)) {
    common::wait_until(
        "the run's container exists",
        Duration::from_secs(30),
        || !common::containers_with(label).is_empty(),
    );
    // Give the command a moment to really start inside.
    std::thread::sleep(Duration::from_millis(700));
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_exec_removes_the_container() {
    let _sb = require_docker!();
    let label = common::test_label("exec-term");
    let ws = common::workspace(&[("keep.txt", "data")]);
    let child = Command::new(common::bin())
        .args([
            "exec",
            "--image",
            &common::image(),
            "--label",
            &format!("{}={}", label.0, label.1),
        ])
        .arg("--workspace")
        .arg(ws.path())
        .args(["--", "sleep 600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_container(&label);
    common::signal(child.id(), libc::SIGTERM);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(15));
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::assert_no_leak(&label);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("keep.txt")).unwrap(),
        "data"
    );
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sigint_mid_run_keeps_transcript_and_workspace() {
    let _sb = require_docker!();
    let label = common::test_label("run-int");
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("replay.txt"),
        "=== REPLY ===\nPATCH::slow.sh\nsleep 600\nENDPATCH\n",
    )
    .unwrap();
    let child = Command::new(common::bin())
        .current_dir(d.path())
        .args([
            "run",
            "--workspace",
            "ws",
            "--task",
            "x",
            "--runner",
            "sh slow.sh",
            "--quiet",
        ])
        .args([
            "--replay",
            "replay.txt",
            "--transcript",
            "t.jsonl",
            "--image",
            &common::image(),
        ])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_container(&label);
    common::signal(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::assert_no_leak(&label);
    assert_eq!(
        std::fs::read_to_string(d.path().join("ws/slow.sh")).unwrap(),
        "sleep 600\n"
    );
    let events = common::transcript(&d.path().join("t.jsonl"));
    let last = events.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["kind"].as_str()),
        (Some("error"), Some("interrupted"))
    );
}

/// A unix-socket proxy in front of the Docker daemon that can be frozen: it
/// keeps every connection open but stops passing bytes, like a hung daemon.
struct FreezableProxy {
    path: std::path::PathBuf,
    frozen: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl FreezableProxy {
    fn start(upstream: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::UnixStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, f.clone()));
                tokio::spawn(pump(sr, cw, f.clone()));
            }
        });
        FreezableProxy {
            path,
            frozen,
            _dir: dir,
        }
    }
}

async fn pump(
    mut r: impl AsyncReadExt + Unpin,
    mut w: impl AsyncWriteExt + Unpin,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn daemon_that_stops_answering_is_a_sandbox_error_well_before_the_timeout() {
    let sb = require_docker!();
    let upstream = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let proxy = FreezableProxy::start(upstream);
    let through = DockerSandbox::connect_unix(proxy.path.to_str().unwrap())
        .await
        .unwrap();

    let label = common::test_label("daemon-lost");
    let ws = common::workspace(&[]);
    let mut spec = common::spec(ws.path(), "sleep 600", &label);
    spec.limits.timeout = Duration::from_secs(120);
    let frozen = proxy.frozen.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        frozen.store(true, Ordering::SeqCst);
    });
    let t = Instant::now();
    let err = through
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, SandboxError::LostHost { .. }), "{err}");
    assert!(err.to_string().contains("stopped answering"), "{err}");
    assert!(
        took < Duration::from_secs(40),
        "took {took:?} against a 120 s timeout"
    );

    // The tool could not remove the container through a hung daemon; once the
    // daemon answers again, `clean` does.
    assert_eq!(sb.clean(std::slice::from_ref(&label)).await.unwrap(), 1);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn two_quick_sigints_during_a_large_copy_in_leave_nothing() {
    let _sb = require_docker!();
    let label = common::test_label("double-int");
    let big: String = (0..60_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let ws = common::workspace(&[("big.txt", big.as_str())]);
    drop(big);
    for round in 0..6 {
        let child = Command::new(common::bin())
            .args(["exec", "--image", &common::image()])
            .args(["--label", &format!("{}={}", label.0, label.1)])
            .args([
                "--max-copy",
                "128m",
                "--workspace-size",
                "128m",
                "--memory",
                "512m",
            ])
            .arg("--workspace")
            .arg(ws.path())
            .args(["--", "sleep 600"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Somewhere between create and the end of the copy, then 10 ms apart.
        std::thread::sleep(Duration::from_millis(60 + 40 * round));
        common::signal(child.id(), libc::SIGINT);
        std::thread::sleep(Duration::from_millis(10));
        common::signal(child.id(), libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A create sent just before the signal is finished by the daemon a
        // moment later; the second signal's clean-up waits for it.
        std::thread::sleep(Duration::from_millis(200));
        common::assert_no_leak(&label);
    }
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sighup_cleans_up_like_sigint_and_exec_json_always_prints_json() {
    let _sb = require_docker!();
    for (signal, name) in [(libc::SIGHUP, "hup"), (libc::SIGINT, "int")] {
        let label = common::test_label(&format!("exec-{name}"));
        let ws = common::workspace(&[("keep.txt", "data")]);
        let t = Instant::now();
        let child = Command::new(common::bin())
            .args(["exec", "--json", "--timeout", "60s", "-w"])
            .arg(ws.path())
            .args(["--image", &common::image()])
            .args(["--label", &format!("{}={}", label.0, label.1)])
            .args(["--", "sleep 1000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_container(&label);
        common::signal(child.id(), signal);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{name}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!("{name}: no JSON: {}", String::from_utf8_lossy(&out.stdout))
        });
        assert_eq!(v["verdict"], "interrupted", "{v}");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{name}: the sandbox outlived the signal until {:?}",
            t.elapsed()
        );
        common::assert_no_leak(&label);
    }
}
