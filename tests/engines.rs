//! Several Docker engines, each in a network namespace this test makes
//! (`tests/fleet.sh`): a batch spread over them with exact verdicts, an
//! engine killed mid-batch, a link cut mid-batch, mutual TLS, and no
//! labelled container left on any engine. Needs root (namespaces, dockerd).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::fleet::Fleet;
use serde_json::Value;

/// The fleets share two cores: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn results(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each task exactly once, with exactly the verdict its exit code gives.
fn assert_exact(results: &[Value], want: &HashMap<String, &'static str>) {
    let mut seen = HashMap::new();
    for r in results {
        let id = r["id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone(), r).is_none(), "{id} appears twice");
        assert_eq!(r["verdict"], want[&id], "{id}: {r}");
    }
    assert_eq!(seen.len(), want.len(), "missing results");
}

fn batch(dir: &Path, label: &(String, String), engines: &[String], extra: &[&str]) -> Command {
    let mut c = Command::new(common::bin());
    c.current_dir(dir)
        .args([
            "batch",
            "tasks.jsonl",
            "--out",
            "results.jsonl",
            "--image",
            &common::image(),
        ])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args(["--timeout", "60s", "--retries", "3"]);
    for e in engines {
        c.args(["--engine", e]);
    }
    c.args(extra).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn start_fleet(n: usize, tls: &[usize]) -> Fleet {
    let f = Fleet::start(n, tls);
    std::thread::scope(|s| {
        for i in 1..=n {
            let f = &f;
            s.spawn(move || f.load_image(i, tls.contains(&i)));
        }
    });
    f
}

#[ignore = "needs Docker and root: run with --include-ignored"]
#[test]
fn a_batch_spreads_over_three_engines_and_survives_one_killed_mid_batch() {
    let _one = serial();
    let fleet = start_fleet(3, &[]);
    let label = common::test_label("fleet-kill");
    let d = tempfile::tempdir().unwrap();
    let want = common::sleep_tasks(d.path(), 30, 1.5);
    let engines: Vec<String> = (1..=3)
        .map(|i| format!("{}#slots=2", fleet.url(i)))
        .collect();
    let child = batch(d.path(), &label, &engines, &[]).spawn().unwrap();
    // Kill engine 2 while it is running tasks of ours.
    common::wait_until("engine 2 runs a task", Duration::from_secs(60), || {
        !fleet.running_with(2, &label).is_empty()
    });
    fleet.kill(2);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t.elapsed()
    );
    assert_exact(&results(d.path()), &want);
    let retried = results(d.path())
        .iter()
        .filter(|r| r["attempts"].as_u64().unwrap_or(1) > 1)
        .count();
    assert!(
        retried >= 1,
        "the killed engine's tasks were not re-run: {stderr}"
    );
    for i in [1, 3] {
        assert!(
            fleet.containers_with(i, &label).is_empty(),
            "left on engine {i}"
        );
    }
}

/// Repository tasks over two engines: killed with SIGKILL mid-evaluation,
/// resumed over the same engines, each instance exactly once, both engines
/// used, nothing left on either.
#[ignore = "needs Docker and root: run with --include-ignored"]
#[test]
fn repository_tasks_over_two_engines_resume_exactly_once() {
    let _one = serial();
    let fleet = start_fleet(2, &[]);
    let label = common::test_label("fleet-swe");
    let d = tempfile::tempdir().unwrap();
    let ids = common::swe::gold_set(d.path(), 10);
    let engines: Vec<String> = (1..=2)
        .flat_map(|i| ["--engine".to_string(), format!("{}#slots=2", fleet.url(i))])
        .collect();
    common::swe::kill_and_resume(d.path(), &ids, |extra| {
        let mut args: Vec<&str> = engines.iter().map(String::as_str).collect();
        args.extend(["-j", "2"]);
        args.extend(extra);
        common::swe::evaluation(d.path(), &label, &args)
    });
    let used: std::collections::BTreeSet<String> = results(d.path())
        .iter()
        .map(|r| {
            r["record"]["engine"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(used.len(), 2, "both engines ran instances: {used:?}");
    for i in 1..=2 {
        common::wait_until("no container left", Duration::from_secs(60), || {
            fleet.containers_with(i, &label).is_empty()
        });
    }
}

#[ignore = "needs Docker and root: run with --include-ignored"]
#[test]
fn a_cut_link_is_noticed_within_the_heartbeat_and_its_tasks_run_elsewhere() {
    let _one = serial();
    let fleet = start_fleet(2, &[]);
    let label = common::test_label("fleet-cut");
    let d = tempfile::tempdir().unwrap();
    let want = common::sleep_tasks(d.path(), 12, 3.0);
    let engines: Vec<String> = (1..=2)
        .map(|i| format!("{}#slots=2", fleet.url(i)))
        .collect();
    let child = batch(d.path(), &label, &engines, &[]).spawn().unwrap();
    common::wait_until("engine 2 runs a task", Duration::from_secs(60), || {
        !fleet.running_with(2, &label).is_empty()
    });
    fleet.cut(2);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    let elapsed = t.elapsed();
    fleet.mend(2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_exact(&results(d.path()), &want);
    // 12 tasks of 3 s on 2 slots would take 18 s even with no cut; the cut
    // engine's tasks are given up after the heartbeat (about 10 s), not
    // after the 60 s timeout or the client's 120 s request timeout.
    assert!(
        elapsed < Duration::from_secs(50),
        "finishing after the cut took {elapsed:?}"
    );
    // What the cut engine was running could not be removed then; `clean`
    // removes it now that the link is back, on every engine given.
    let clean = Command::new(common::bin())
        .args(["clean", "--label", &format!("{}={}", label.0, label.1)])
        .args(["--engine", &fleet.url(1), "--engine", &fleet.url(2)])
        .output()
        .unwrap();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    for i in 1..=2 {
        assert!(
            fleet.containers_with(i, &label).is_empty(),
            "left on engine {i}"
        );
    }
}

#[ignore = "needs Docker and root: run with --include-ignored"]
#[test]
fn a_tls_engine_takes_only_clients_with_its_certificates() {
    let _one = serial();
    let fleet = start_fleet(2, &[1]);
    let label = common::test_label("fleet-tls");
    let ws = common::workspace(&[("a.txt", "x\n")]);
    let exec = |extra: &[String]| {
        Command::new(common::bin())
            .args(["exec", "--workspace"])
            .arg(ws.path())
            .args(["--image", &common::image(), "--engine", &fleet.tls_url(1)])
            .args(["--label", &format!("{}={}", label.0, label.1)])
            .args(extra)
            .args(["--", "cat a.txt; id -u"])
            .output()
            .unwrap()
    };
    let ok = exec(&fleet.tls_args());
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "x\n1000\n");
    // No certificate: the engine refuses, and that is one line, exit 125.
    let t = Instant::now();
    let bare = exec(&[]);
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert_eq!(bare.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A certificate file that is not there: a usage error naming it.
    let mut missing = fleet.tls_args();
    missing[1] = "/nonexistent/ca.pem".into();
    let m = exec(&missing);
    let stderr = String::from_utf8_lossy(&m.stderr);
    assert_eq!(m.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
    // One batch over a TLS engine and a plain one (`#tls=off`), exact.
    let d = tempfile::tempdir().unwrap();
    let want = common::sleep_tasks(d.path(), 8, 0.5);
    let engines = [
        format!("{}#slots=1", fleet.tls_url(1)),
        format!("{}#slots=1&tls=off", fleet.url(2)),
    ];
    let tls = fleet.tls_args();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let out = batch(d.path(), &label, &engines, &tls).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = results(d.path());
    assert_exact(&got, &want);
    let on: std::collections::HashSet<&str> = got
        .iter()
        .map(|r| r["record"]["engine"].as_str().unwrap())
        .collect();
    assert_eq!(on.len(), 2, "both engines ran tasks: {on:?}");
    for i in [1, 2] {
        assert!(fleet.containers_with(i, &label).is_empty(), "left on {i}");
    }
}

#[test]
fn bad_engines_are_one_line_errors_before_anything_runs() {
    let ws = common::workspace(&[]);
    for (engine, code, says) in [
        ("docker.sock", 2, "invalid engine"),
        ("tcp://host", 2, "port"),
        ("tcp://h:1#slots=0", 2, "slots"),
        ("tcp://127.0.0.1:9", 125, "cannot reach"),
        ("unix:///nonexistent/docker.sock", 125, "cannot reach"),
    ] {
        let t = Instant::now();
        let out = Command::new(common::bin())
            .args(["exec", "--workspace"])
            .arg(ws.path())
            .args(["--engine", engine, "--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{engine}: {stderr}");
        assert!(stderr.contains(says), "{engine}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{engine}: {stderr}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{engine}: {:?}",
            t.elapsed()
        );
    }
    // DOCKER_HOST is honoured, not silently replaced by the local socket.
    let out = Command::new(common::bin())
        .env("DOCKER_HOST", "tcp://127.0.0.1:9")
        .args(["exec", "--workspace"])
        .arg(ws.path())
        .args(["--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("tcp://127.0.0.1:9"), "{stderr}");
}
