//! `autodev batch` against the real daemon: exact verdicts, pass@k, crash and
//! resume, interruption, no leaked containers.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad result line {l:?}: {e}")))
        .collect()
}

fn write_tasks(path: &Path, tasks: &[Value]) {
    let text: String = tasks.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn batch(dir: &Path, label: &(String, String), extra: &[&str]) -> Command {
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
        .args(extra);
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn add_files(correct: bool) -> Value {
    json!({
        "calc.py": if correct { "def add(a, b):\n    return a + b\n" } else { "def add(a, b):\n    return a - b\n" },
        "test_calc.py": "from calc import add\nassert add(2, 3) == 5, add(2, 3)\nprint('ok')\n",
    })
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn mixed_batch_gives_exact_verdicts() {
    let _sb = require_docker!();
    let label = common::test_label("batch-mixed");
    let d = tempfile::tempdir().unwrap();
    let folder = d.path().join("proj");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("t.sh"), "echo from-folder; exit 0\n").unwrap();
    write_tasks(
        &d.path().join("tasks.jsonl"),
        &[
            json!({"id": "pass", "files": add_files(true), "runner": "python3 test_calc.py"}),
            json!({"id": "fail", "files": add_files(false), "runner": "python3 test_calc.py"}),
            json!({"id": "timeout", "runner": "sleep 600", "limits": {"timeout": "2s"}}),
            json!({"id": "oom", "runner": "python3 -c 'b = bytearray(1 << 30)'", "limits": {"memory": 67108864}}),
            json!({"id": "folder", "workspace": "proj", "runner": "sh t.sh"}),
            json!({"id": "inline-ws", "workspace": {"files": {"a.txt": "x"}}, "runner": "test -f a.txt"}),
            json!({"id": "solution", "files": add_files(false), "runner": "python3 test_calc.py",
                   "solution": "PATCH::calc.py\ndef add(a, b):\n    return a + b\nENDPATCH"}),
            json!({"id": "env", "runner": "test \"$K\" = v", "env": {"K": "v"}}),
            // A repair loop: the model's first fix is wrong, its second right.
            json!({"id": "loop", "files": add_files(false), "runner": "python3 test_calc.py",
                   "task": "make add work", "max_iters": 3, "model": {"replies": [
                       "PATCH::calc.py\ndef add(a, b):\n    return a * b\nENDPATCH",
                       "PATCH::calc.py\ndef add(a, b):\n    return a + b\nENDPATCH"]}}),
        ],
    );
    // A line that is not JSON, in the middle of the file.
    let mut text = std::fs::read_to_string(d.path().join("tasks.jsonl")).unwrap();
    text.insert_str(0, "{not json\n");
    std::fs::write(d.path().join("tasks.jsonl"), text).unwrap();

    let out = run(batch(d.path(), &label, &["--jobs", "4", "--json"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = lines(&d.path().join("results.jsonl"));
    let by_id: HashMap<String, &Value> = results
        .iter()
        .map(|r| (r["id"].as_str().unwrap_or("<none>").to_string(), r))
        .collect();
    let verdict = |id: &str| by_id[id]["verdict"].as_str().unwrap().to_string();
    assert_eq!(verdict("pass"), "passed");
    assert_eq!(verdict("fail"), "failed");
    assert_eq!(by_id["fail"]["exit_code"], 1);
    assert!(by_id["fail"]["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("AssertionError"));
    assert_eq!(verdict("timeout"), "timed_out");
    assert_eq!(verdict("oom"), "oom_killed");
    assert_eq!(verdict("folder"), "passed");
    assert_eq!(by_id["folder"]["stdout_tail"], "from-folder\n");
    assert_eq!(verdict("inline-ws"), "passed");
    assert_eq!(verdict("solution"), "passed");
    assert_eq!(verdict("env"), "passed");
    assert_eq!(verdict("loop"), "passed");
    assert_eq!(by_id["loop"]["iterations"], 2, "{}", by_id["loop"]);
    assert_eq!(verdict("<none>"), "invalid_task");
    assert_eq!(by_id["<none>"]["line"], 1);
    assert_eq!(results.len(), 10);
    // The folder workspace is never written to.
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 1);

    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["total"], 10);
    assert_eq!(summary["verdicts"]["passed"], 6);
    assert_eq!(summary["ran"], 9);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn pass_at_k_on_a_known_case() {
    let _sb = require_docker!();
    let label = common::test_label("batch-passk");
    let d = tempfile::tempdir().unwrap();
    let mut tasks = Vec::new();
    // p: 2 of 4 samples pass; q: 0 of 4.
    for (id, passing) in [("p", 2), ("q", 0)] {
        for s in 0..4 {
            tasks.push(json!({"id": id, "sample": s, "runner": if s < passing { "exit 0" } else { "exit 1" }}));
        }
    }
    write_tasks(&d.path().join("tasks.jsonl"), &tasks);
    let out = run(batch(d.path(), &label, &["--jobs", "4", "--json"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    let at = |k: &str| s["pass_at_k"][k].as_f64().unwrap();
    assert!((at("1") - 0.25).abs() < 1e-9, "{s}");
    // p: 1 - C(2,2)/C(4,2) = 5/6; q: 0 → mean 5/12.
    assert!((at("2") - 5.0 / 12.0).abs() < 1e-9, "{s}");
    // p: 1 - C(2,4)/C(4,4) = 1 (fewer failures than k); q: 0 → mean 0.5.
    assert!((at("4") - 0.5).abs() < 1e-9, "{s}");
    assert_eq!(s["pass_rate"], 0.25);
    common::assert_no_leak(&label);
}

fn slow_tasks(path: &Path, n: usize) {
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "runner": "sleep 1; echo done"}))
        .collect();
    write_tasks(path, &tasks);
}

fn assert_each_once(results: &[Value], n: usize) {
    let mut ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        results.iter().all(|r| r["verdict"] == "passed"),
        "{results:?}"
    );
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_then_resume_runs_every_task_exactly_once() {
    let _sb = require_docker!();
    let label = common::test_label("batch-kill9");
    let d = tempfile::tempdir().unwrap();
    let n = 12;
    slow_tasks(&d.path().join("tasks.jsonl"), n);
    // Inline files, so every task has a scratch folder a kill can leave behind.
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "runner": "sleep 1; echo done", "files": {"a.txt": "a"}}))
        .collect();
    write_tasks(&d.path().join("tasks.jsonl"), &tasks);
    let scratch = d.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch_arg = scratch.display().to_string();
    let mut child = batch(
        d.path(),
        &label,
        &["--jobs", "2", "--scratch", &scratch_arg],
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let results = d.path().join("results.jsonl");
    common::wait_until("3 results are written", Duration::from_secs(60), || {
        lines(&results).len() >= 3
    });
    child.kill().unwrap(); // SIGKILL: no clean-up at all.
    child.wait().unwrap();
    let partial = lines(&results).len();
    assert!(
        partial >= 3 && partial < n,
        "killed after {partial} results"
    );

    // The killed run's containers and scratch folders are still there;
    // `clean` finds the containers by label and the folders by dead owner.
    let left = std::fs::read_dir(&scratch).unwrap().count();
    assert!(left > 0, "a kill -9 mid-task leaves scratch folders");
    let clean = Command::new(common::bin())
        .args(["clean", "--label", &format!("{}={}", label.0, label.1)])
        .args(["--scratch", &scratch_arg])
        .output()
        .unwrap();
    assert!(clean.status.success());
    common::assert_no_leak(&label);
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);

    let out = run(batch(
        d.path(),
        &label,
        &["--jobs", "4", "--resume", "--json"],
    ));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["skipped"].as_u64().unwrap() as usize, partial);
    assert_each_once(&lines(&results), n);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sigint_drains_running_tasks_and_resume_completes() {
    let _sb = require_docker!();
    let label = common::test_label("batch-sigint");
    let d = tempfile::tempdir().unwrap();
    let n = 10;
    slow_tasks(&d.path().join("tasks.jsonl"), n);
    let child = batch(d.path(), &label, &["--jobs", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let results = d.path().join("results.jsonl");
    common::wait_until("a result is written", Duration::from_secs(60), || {
        !lines(&results).is_empty()
    });
    common::signal(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let partial = lines(&results);
    assert!(partial.len() < n, "did not stop starting tasks");
    assert!(
        partial.iter().all(|r| r["verdict"] == "passed"),
        "a drained task was cut short"
    );
    common::assert_no_leak(&label);

    let out = run(batch(d.path(), &label, &["--resume"]));
    assert_eq!(out.status.code(), Some(0));
    assert_each_once(&lines(&results), n);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn second_signal_kills_running_tasks_cleanly_and_resume_completes() {
    let _sb = require_docker!();
    let label = common::test_label("batch-twice");
    let d = tempfile::tempdir().unwrap();
    let tasks: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("t{i}"), "runner": if i < 2 { "echo quick" } else { "sleep 600" }}))
        .collect();
    write_tasks(&d.path().join("tasks.jsonl"), &tasks);
    let child = batch(d.path(), &label, &["--jobs", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both slots hold a sleeping task.
    common::wait_until(
        "both slots hold a sleeping task",
        Duration::from_secs(60),
        || {
            common::containers_with(&label).len() >= 2
                && lines(&d.path().join("results.jsonl")).len() >= 2
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    common::signal(child.id(), libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    common::signal(child.id(), libc::SIGINT);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "running tasks were not killed"
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::assert_no_leak(&label);
    let results = lines(&d.path().join("results.jsonl"));
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.len(),
        2,
        "killed tasks must not be written as results: {ids:?}"
    );
    assert!(results.iter().all(|r| r["verdict"] == "passed"));

    // The killed and never-started tasks remain for --resume.
    let mut quick: Vec<Value> = tasks.clone();
    for t in quick.iter_mut() {
        t["runner"] = json!("echo resumed");
    }
    write_tasks(&d.path().join("tasks.jsonl"), &quick);
    let out = run(batch(d.path(), &label, &["--resume", "--json"]));
    assert_eq!(out.status.code(), Some(0));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            s["skipped"].as_u64(),
            s["ran"].as_u64(),
            s["total"].as_u64()
        ),
        (Some(2), Some(4), Some(6))
    );
    // The default is `--jobs auto`: twice the local engine's slots (its cores).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(s["jobs"].as_u64(), Some(2 * cores), "{s}");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn host_problems_fail_the_batch_before_any_task() {
    let _sb = require_docker!();
    let label = common::test_label("batch-host");
    let d = tempfile::tempdir().unwrap();
    let tasks: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("t{i}"), "runner": "true", "files": {"a.py": "1"}}))
        .collect();
    write_tasks(&d.path().join("tasks.jsonl"), &tasks);
    // More CPUs than the host has: the engine refuses it once, up front.
    let cpus = (std::thread::available_parallelism().unwrap().get() * 2).to_string();
    for (extra, code, says) in [
        (vec!["--cpus", cpus.as_str()], 2, "CPUs"),
        (vec!["--scratch", "/nonexistent/scratch"], 2, "scratch"),
        (vec!["--runtime", "no-such-runtime"], 2, "runtime"),
    ] {
        let out = run(batch(d.path(), &label, &extra));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {stderr}");
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            lines(&d.path().join("results.jsonl")).is_empty(),
            "{extra:?}: tasks were judged by a broken host"
        );
    }
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn task_lines_may_tighten_but_not_loosen_and_argv_runners_keep_quoting() {
    let _sb = require_docker!();
    let label = common::test_label("batch-floor");
    let d = tempfile::tempdir().unwrap();
    write_tasks(
        &d.path().join("tasks.jsonl"),
        &[
            json!({"id": "net", "runner": "true", "limits": {"network": "bridge"}}),
            json!({"id": "rt", "runner": "true", "limits": {"runtime": "runc"}}),
            json!({"id": "mem", "runner": "true", "limits": {"memory": "1g"}}),
            json!({"id": "tight", "runner": "true", "limits": {"memory": "128m", "cpus": "0.5", "timeout": "30s"}}),
            json!({"id": "argv7", "runner": ["sh", "-c", "exit 7"]}),
            json!({"id": "quote", "runner": ["python3", "-c", "import sys; sys.exit(0 if sys.argv[1] == 'a  b' else 1)", "a  b"]}),
            json!({"id": "home", "runner": ["test", "$HOME", "=", "$HOME"], "limits": {"timeout": 5}}),
        ],
    );
    let out = run(batch(d.path(), &label, &["--memory", "512m"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_id: HashMap<String, Value> = lines(&d.path().join("results.jsonl"))
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    for id in ["net", "rt", "mem"] {
        assert_eq!(by_id[id]["verdict"], "invalid_task", "{id}: {}", by_id[id]);
        assert!(
            by_id[id]["error"]
                .as_str()
                .unwrap()
                .contains("--allow-task-overrides"),
            "{}",
            by_id[id]
        );
    }
    assert_eq!(by_id["tight"]["verdict"], "passed", "{}", by_id["tight"]);
    assert_eq!(by_id["argv7"]["verdict"], "failed");
    assert_eq!(by_id["argv7"]["exit_code"], 7);
    assert_eq!(by_id["quote"]["verdict"], "passed", "{}", by_id["quote"]);
    // No shell: `$HOME` reaches `test` as the literal word, twice.
    assert_eq!(by_id["home"]["verdict"], "passed", "{}", by_id["home"]);

    // With the operator's consent, the same loosening runs.
    let d2 = tempfile::tempdir().unwrap();
    write_tasks(
        &d2.path().join("tasks.jsonl"),
        &[json!({"id": "mem", "runner": "true", "limits": {"memory": "1g"}})],
    );
    let out = run(batch(
        d2.path(),
        &label,
        &["--memory", "512m", "--allow-task-overrides"],
    ));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&d2.path().join("results.jsonl"))[0]["verdict"],
        "passed"
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_judges_nothing_exits_non_zero_and_bad_bytes_are_one_bad_line() {
    let _sb = require_docker!();
    let label = common::test_label("batch-none");
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("tasks.jsonl"),
        b"{\"id\":\"x\",\"runner\":\"true\",\"limits\":{\"timeout\":1e30}}\n\xff\xfe\n",
    )
    .unwrap();
    let out = run(batch(d.path(), &label, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("no task was judged"), "{stderr}");
    let r = lines(&d.path().join("results.jsonl"));
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r["verdict"] == "invalid_task"));
    assert!(r
        .iter()
        .any(|r| r["line"] == 2 && r["error"].as_str().unwrap().contains("UTF-8")));
    common::assert_no_leak(&label);
}
