//! What a result says about the tests, through the real binary and the real
//! image (whose pytest writes a JUnit report where its label says): counts
//! and failing names, no pass without a test, and reasons instead of
//! guesses when the report is missing or bad.

mod common;

use common::Sandboxed;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn exec_json(ws: &Path, label: &(String, String), cmd: &str) -> (Option<i32>, Value) {
    let out = Command::new(common::bin())
        .args(["exec", "--json", "--workspace"])
        .arg(ws)
        .args(["--image", &common::image(), "--timeout", "20s"])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args(["--", cmd])
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

const TESTS: &str = "def add(a, b):\n    return a - b\n\n\
def test_add():\n    assert add(2, 3) == 5\n\n\
def test_ok():\n    assert True\n\n\
def test_div():\n    1 / 0\n";

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn pytest_results_are_counted_and_failures_named() {
    let _sb = require_docker!();
    let label = common::test_label("junit");
    let ws = common::workspace(&[("test_calc.py", TESTS)]);
    let (code, v) = exec_json(ws.path(), &label, "python3 -m pytest -q");
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["verdict"], "failed");
    let t = &v["tests"];
    assert_eq!(
        (
            t["total"].as_u64(),
            t["passed"].as_u64(),
            t["failed"].as_u64()
        ),
        (Some(3), Some(1), Some(2)),
        "{t}"
    );
    let names: Vec<&str> = t["failing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["test_calc.test_add", "test_calc.test_div"]);
    assert!(
        t["failing"][0]["message"]
            .as_str()
            .unwrap()
            .contains("assert"),
        "{t}"
    );
    // The command's own stderr is whole, the report is not in it.
    assert!(
        !v["stderr"]["text"]
            .as_str()
            .unwrap()
            .contains("report-begin"),
        "{v}"
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn zero_tests_is_not_a_pass() {
    let _sb = require_docker!();
    let label = common::test_label("no-tests");
    let ws = common::workspace(&[("calc.py", "def add(a, b):\n    return a + b\n")]);
    // pytest collects nothing and exits 5; a wrapper that hides that exits 0.
    let (code, v) = exec_json(ws.path(), &label, "python3 -m pytest -q; true");
    assert_eq!(code, Some(5), "{v}");
    assert_eq!(v["verdict"], "no_tests");
    assert_eq!(v["tests"]["total"], 0);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_missing_report_leaves_the_verdict_and_says_why() {
    let _sb = require_docker!();
    let label = common::test_label("bad-junit");
    let ws = common::workspace(&[("a.txt", "x\n")]);
    let r = "/tmp/autodev-junit.xml";
    for (cmd, says) in [
        ("true".to_string(), "no report"),
        (format!("ln -s /etc/passwd {r}"), "no report"),
        (format!("mkfifo {r}"), "no report"),
        (
            format!("echo '<testsuite><testcase' > {r}"),
            "not valid XML",
        ),
        (
            format!("head -c 5000000 /dev/zero | tr '\\0' a > {r}"),
            "cap",
        ),
    ] {
        let (code, v) = exec_json(ws.path(), &label, &cmd);
        assert_eq!(code, Some(0), "{cmd}: {v}");
        assert_eq!(v["verdict"], "passed", "{cmd}");
        assert!(v["tests"].is_null(), "{cmd}: {v}");
        assert!(
            v["tests_note"].as_str().unwrap().contains(says),
            "{cmd}: {v}"
        );
    }
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_writes_nothing_never_passes_a_run() {
    let _sb = require_docker!();
    let label = common::test_label("empty-run");
    let d = tempfile::tempdir().unwrap();
    // The review's case: the model answers in prose, the workspace stays
    // empty, and `python3 -m unittest` finds 0 tests and exits 0.
    std::fs::write(
        d.path().join("replay.txt"),
        "=== REPLY ===\nI would write a calculator.\n=== REPLY ===\nStill thinking.\n",
    )
    .unwrap();
    let out = Command::new(common::bin())
        .current_dir(d.path())
        .args([
            "run",
            "-w",
            "ws",
            "--task",
            "write add",
            "--runner",
            "python3 -m unittest",
        ])
        .args([
            "--replay",
            "replay.txt",
            "--no-zip",
            "--transcript",
            "t.jsonl",
        ])
        .sandboxed(&label)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("PASSED"), "{stderr}");
    let events = common::transcript(&d.path().join("t.jsonl"));
    let prompts: Vec<&Value> = events.iter().filter(|e| e["event"] == "prompt").collect();
    assert!(
        prompts[1]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("held no PATCH, EDIT or DIFF block"),
        "the model was not told"
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn batch_results_carry_the_test_counts() {
    let _sb = require_docker!();
    let label = common::test_label("batch-junit");
    let d = tempfile::tempdir().unwrap();
    let lines = [
        serde_json::json!({"id": "some", "runner": "python3 -m pytest -q", "files": {"test_calc.py": TESTS}}),
        serde_json::json!({"id": "none", "runner": "python3 -m pytest -q; true", "files": {"calc.py": "x = 1\n"}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(d.path().join("t.jsonl"), text).unwrap();
    let out = Command::new(common::bin())
        .current_dir(d.path())
        .args([
            "batch",
            "t.jsonl",
            "--out",
            "r.jsonl",
            "--json",
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
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["pass_rate"], 0.0,
        "a no_tests result is judged, and not a pass"
    );
    let rs: Vec<Value> = std::fs::read_to_string(d.path().join("r.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |id: &str| rs.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by("some")["verdict"], "failed");
    assert_eq!(by("some")["tests"]["failed"], 2);
    assert_eq!(by("none")["verdict"], "no_tests");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_result_records_what_ran_and_reruns_the_same() {
    let _sb = require_docker!();
    let label = common::test_label("rerun");
    let ws = common::workspace(&[("a.py", "print(sum(range(10)))\n")]);
    let out = Command::new(common::bin())
        .env("GREETING", "hi")
        .args(["exec", "--json", "--workspace"])
        .arg(ws.path())
        .args([
            "--image",
            &common::image(),
            "--memory",
            "256m",
            "-e",
            "GREETING",
        ])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args(["--", "python3", "a.py"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["record"];
    assert!(
        r["image_id"].as_str().unwrap().starts_with("sha256:"),
        "{r}"
    );
    assert_eq!(
        r["env_names"],
        serde_json::json!(["GREETING"]),
        "names only, never values"
    );
    assert!(
        !r.to_string().contains("\"hi\""),
        "a variable's value in the record: {r}"
    );
    assert_eq!(r["command"], serde_json::json!(["python3", "a.py"]));
    assert_eq!(r["limits"]["memory"], 256 << 20);
    assert_eq!(r["workspace_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r["autodev_version"], env!("CARGO_PKG_VERSION"));
    let file = ws
        .path()
        .join("..")
        .join(format!("result-{}.json", label.1));
    std::fs::write(&file, &out.stdout).unwrap();

    let rerun = |ws: &Path| {
        Command::new(common::bin())
            .env("GREETING", "hi")
            .args(["exec", "--json", "--workspace"])
            .arg(ws)
            .args(["--label", &format!("{}={}", label.0, label.1)])
            .arg("--rerun")
            .arg(&file)
            .output()
            .unwrap()
    };
    let same = rerun(ws.path());
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let s: Value = serde_json::from_slice(&same.stdout).unwrap();
    assert_eq!(
        (&s["same_verdict"], &s["same_output"], &s["same_workspace"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(true)),
        "{s}"
    );
    // Another workspace: the rerun says so, and the output differs.
    std::fs::write(ws.path().join("a.py"), "print(46)\n").unwrap();
    let other = rerun(ws.path());
    assert_eq!(other.status.code(), Some(1));
    let o: Value = serde_json::from_slice(&other.stdout).unwrap();
    assert_eq!(
        (&o["same_verdict"], &o["same_output"], &o["same_workspace"]),
        (&Value::Bool(true), &Value::Bool(false), &Value::Bool(false)),
        "{o}"
    );
    let _ = std::fs::remove_file(&file);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn every_result_says_what_the_run_used() {
    let _sb = require_docker!();
    let label = common::test_label("usage");
    let ws = common::workspace(&[("a.txt", "x\n")]);
    // 60 MB held while spinning the CPU for half a second.
    let (code, v) = exec_json(
        ws.path(),
        &label,
        "python3 -c 'import time; x = bytearray(60 << 20); s = time.time()\nwhile time.time() - s < 0.5: pass\nprint(len(x))'",
    );
    assert_eq!(code, Some(0), "{v}");
    let r = &v["resources"];
    assert!(r["peak_memory_bytes"].as_u64().unwrap() >= 60 << 20, "{r}");
    assert!(r["cpu_ms"].as_u64().unwrap() >= 300, "{r}");
    assert_eq!(r["oom_kills"], 0, "{r}");
    assert_eq!(r["output_bytes"], 9, "{r}");
    // A child killed for memory while the main process exits 0.
    let out = Command::new(common::bin())
        .args(["exec", "--json", "--memory", "64m", "--workspace"])
        .arg(ws.path())
        .sandboxed(&label)
        .args(["--", "python3 -c 'x = bytearray(200 << 20)'; exit 0"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "oom_killed", "{v}");
    assert!(v["resources"]["oom_kills"].as_u64().unwrap() >= 1, "{v}");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn cpu_time_is_its_own_limit_and_starved_timeouts_are_told_and_retried() {
    let _sb = require_docker!();
    let label = common::test_label("cpu-time");
    let ws = common::workspace(&[("a.txt", "x\n")]);
    // A CPU-bound loop hits --cpu-time long before the wall clock.
    let out = Command::new(common::bin())
        .args([
            "exec",
            "--json",
            "--cpu-time",
            "1s",
            "--timeout",
            "60s",
            "--workspace",
        ])
        .arg(ws.path())
        .sandboxed(&label)
        .args(["--", "python3 -c 'while True: pass'"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(124), "{v}");
    assert_eq!(
        (&v["verdict"], &v["timed_out_by"]),
        (&Value::from("timed_out"), &Value::from("cpu_time")),
        "{v}"
    );
    // Sleeping past the wall clock uses no CPU: starved, not slow.
    let out = Command::new(common::bin())
        .args(["exec", "--json", "--timeout", "2s", "--workspace"])
        .arg(ws.path())
        .sandboxed(&label)
        .args(["--", "sleep 30"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "timed_out", "{v}");
    assert_eq!(v["starved"], true, "{v}");
    // A batch runs a starved timeout again, alone; the new line counts.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("t.jsonl"),
        "{\"id\":\"sleepy\",\"runner\":\"sleep 30\",\"limits\":{\"timeout\":\"2s\"}}\n",
    )
    .unwrap();
    let out = Command::new(common::bin())
        .current_dir(d.path())
        .args([
            "batch",
            "t.jsonl",
            "--out",
            "r.jsonl",
            "--json",
            "--retry-starved",
        ])
        .sandboxed(&label)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(d.path().join("r.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count(),
        2,
        "the starved task ran again: {lines}"
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["total"], 1, "one result per task: {s}");
    common::assert_no_leak(&label);
}
