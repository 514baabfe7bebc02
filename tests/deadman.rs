//! Containers that outlive autodev end by themselves: `kill -9` the process
//! (no signal handler runs, nothing is cleaned) and, with no second
//! command, every container it made is gone within its deadline. Also: a
//! container started ahead serves exactly one run, and nothing of one run
//! reaches the next.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autodev::sandbox::docker::DockerSandbox;
use autodev::sandbox::{Command as Cmd, NullSink, Sandbox};
use tokio_util::sync::CancellationToken;

/// Containers of this label that are running.
fn running(label: &(String, String)) -> Vec<String> {
    common::docker_ps(None, "-q", &format!("label={}={}", label.0, label.1))
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_batch_leaves_no_container_after_the_deadline() {
    let _sb = require_docker!();
    let label = common::test_label("deadman-batch");
    let d = tempfile::tempdir().unwrap();
    let tasks: String = (0..6)
        .map(|i| format!("{{\"id\":\"t{i}\",\"runner\":\"sleep 600\"}}\n"))
        .collect();
    std::fs::write(d.path().join("tasks.jsonl"), tasks).unwrap();
    let timeout = 5;
    let mut child = Command::new(common::bin())
        .current_dir(d.path())
        .args(["batch", "tasks.jsonl", "--out", "r.jsonl", "--jobs", "2"])
        .args(["--prefetch", "1", "--timeout", &format!("{timeout}s")])
        .sandboxed(&label)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Two runs in their command, one prepared (started, waiting for its run).
    common::wait_until("three containers are up", Duration::from_secs(60), || {
        running(&label).len() >= 3
    });
    child.kill().unwrap(); // SIGKILL: no handler, no clean-up
    child.wait().unwrap();
    let killed = Instant::now();
    // Nothing removed them: the running ones are still there a moment later.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        running(&label).len() >= 2,
        "the runs ended with their owner, not by their deadline"
    );
    // Their deadline: the timeout (counted from their start, before the
    // kill) plus the grace, then the engine's removal.
    common::wait_until(
        "every container of the killed batch is gone",
        Duration::from_secs(timeout + 15 + 15),
        || common::containers_with(&label).is_empty(),
    );
    eprintln!("gone {:.1}s after kill -9", killed.elapsed().as_secs_f64());
}

/// `autodev run` against a model that accepts the request and never
/// answers, once the next test's container is started while it waits.
fn run_while_the_model_thinks(
    label: &(String, String),
) -> (std::process::Child, tempfile::TempDir) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Holds the connection open (no answer) until the test process ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { break };
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read(&mut buf);
            held.push(s);
        }
    });
    let d = tempfile::tempdir().unwrap();
    let child = Command::new(common::bin())
        .current_dir(d.path())
        .args([
            "run", "--task", "x", "--runner", "true", "-w", "ws", "--no-zip",
        ])
        .args(["--provider", "openai", "--base-url"])
        .arg(format!("http://127.0.0.1:{port}/v1"))
        .args(["--model-timeout", "300s", "--model-attempts", "1"])
        .env("OPENAI_API_KEY", "sk-test")
        .sandboxed(label)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_until(
        "the next test's container is started while the model thinks",
        Duration::from_secs(60),
        || running(label).len() == 1,
    );
    (child, d)
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_the_model_thinks_ends_the_warm_container() {
    let _sb = require_docker!();
    let label = common::test_label("deadman-warm");
    let (mut child, _d) = run_while_the_model_thinks(&label);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    // Its stdin closes with its owner's connection: it ends and the engine
    // removes it (at the latest, its idle deadline).
    common::wait_until(
        "the warm container is gone",
        Duration::from_secs(60),
        || common::containers_with(&label).is_empty(),
    );
    eprintln!(
        "warm container gone {:.1}s after kill -9",
        killed.elapsed().as_secs_f64()
    );
}

/// SIGTERM and Ctrl-C are not `kill -9`: autodev removes what it started
/// ahead itself, before it exits.
#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_or_sigint_while_the_model_thinks_removes_the_warm_container() {
    let _sb = require_docker!();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let label = common::test_label("deadman-term");
        let (child, _d) = run_while_the_model_thinks(&label);
        common::signal(child.id(), signal);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        common::assert_no_leak(&label);
    }
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_container_serves_one_run_and_nothing_crosses_to_the_next() {
    let sb = require_docker!().with_warm(1);
    let label = common::test_label("warm-isolation");
    let ws = common::workspace(&[("a.txt", "a")]);
    let cancel = CancellationToken::new();
    let mut first = common::spec(
        ws.path(),
        "echo left > /tmp/left; echo left > /workspace/left; (sleep 300 &)",
        &label,
    );
    first.env = vec![("SECRET_FOO".into(), "s3cret".into())];
    // Warmed: the first run takes the warm one, and its successor starts.
    sb.warm(&first);
    let a = sb.run(&first, &mut NullSink, &cancel).await.unwrap();
    assert_eq!(a.verdict.as_str(), "passed", "{}", a.stderr.text);
    let mut second = first.clone();
    second.env = Vec::new();
    second.command = Cmd::Shell(
        "ls -a /tmp /workspace; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done; env"
            .into(),
    );
    // The first run's successor was started while it ran.
    common::wait_until("a container waits", Duration::from_secs(30), || {
        sb.waiting(&second) == 1
    });
    let t = Instant::now();
    let b = sb.run(&second, &mut NullSink, &cancel).await.unwrap();
    let took = t.elapsed();
    assert_eq!(b.verdict.as_str(), "passed", "{}", b.stderr.text);
    let out = &b.stdout.text;
    for leftover in ["left", "sleep 300", "SECRET_FOO", "s3cret"] {
        assert!(!out.contains(leftover), "{leftover} crossed over: {out}");
    }
    assert!(out.contains("a.txt"), "{out}");
    // Another container (the first one's files are not there), already started.
    assert!(
        b.durations.create_ms < 50,
        "the second run did not get a started container: {:?} ({took:?})",
        b.durations
    );
    sb.retire(&second).await;
    common::assert_no_leak(&label);
}

/// A warm container that ended while it waited (killed, or its engine
/// restarted) is dropped, not handed to a run: the run gets a new one and
/// passes.
#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_warm_container_that_died_is_dropped_not_used() {
    let sb = require_docker!().with_warm(1);
    let label = common::test_label("warm-dead");
    let ws = common::workspace(&[("a.txt", "a")]);
    let spec = common::spec(ws.path(), "cat a.txt", &label);
    sb.warm(&spec);
    common::wait_until("a container waits", Duration::from_secs(30), || {
        sb.waiting(&spec) == 1
    });
    let warm = running(&label);
    assert_eq!(warm.len(), 1);
    let killed = Command::new("docker")
        .args(["kill", &warm[0]])
        .output()
        .unwrap();
    assert!(killed.status.success());
    common::wait_until(
        "the killed container is gone",
        Duration::from_secs(30),
        || common::containers_with(&label).is_empty(),
    );
    let out = sb
        .run(&spec, &mut NullSink, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (out.verdict.as_str(), out.stdout.text.as_str()),
        ("passed", "a"),
        "{}",
        out.stderr.text
    );
    sb.retire(&spec).await;
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_start_sweeps_containers_a_dead_owner_never_started() {
    let _sb = require_docker!();
    let label = common::test_label("deadman-orphan");
    // A pid that no longer exists: a child that has been reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let made = Command::new("docker")
        .args(["create", "--label", "autodev.managed=true"])
        .args(["--label", &format!("autodev.pid={pid}")])
        .args(["--label", &format!("autodev.host={}", host.trim())])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args([&common::image(), "true"])
        .output()
        .unwrap();
    assert!(made.status.success());
    // A live owner's never-started container is left alone.
    let mine = Command::new("docker")
        .args(["create", "--label", "autodev.managed=true"])
        .args(["--label", &format!("autodev.pid={}", std::process::id())])
        .args(["--label", &format!("autodev.host={}", host.trim())])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args([&common::image(), "true"])
        .output()
        .unwrap();
    let mine = String::from_utf8_lossy(&mine.stdout).trim().to_string();
    let _other = DockerSandbox::connect().await.unwrap();
    common::wait_until("the orphan is swept", Duration::from_secs(20), || {
        common::containers_with(&label).len() == 1
    });
    assert!(common::containers_with(&label)[0].starts_with(&mine[..12]));
    let _ = Command::new("docker").args(["rm", "-f", &mine]).output();
    common::assert_no_leak(&label);
}

use common::Sandboxed;
