//! SWE-bench-style instances for tests: a small git repository at a base
//! commit (and the same tree as a tarball), its test patch, predictions
//! that resolve, do not, or do not apply.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

pub const BASE_CALC: &str =
    "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n";
pub const BASE_TEST: &str =
    "from calc import sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n";
/// The benchmark's test patch: adds the test the fix must make pass.
pub const TEST_PATCH: &str = "diff --git a/tests/test_calc.py b/tests/test_calc.py\n--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n@@ -1,5 +1,9 @@\n-from calc import sub\n+from calc import add, sub\n \n \n def test_sub():\n     assert sub(5, 3) == 2\n+\n+\n+def test_add():\n+    assert add(2, 3) == 5\n";
pub const GOLD: &str = "diff --git a/calc.py b/calc.py\nindex 1111111..2222222 100644\n--- a/calc.py\n+++ b/calc.py\n@@ -1,5 +1,5 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n \n \n def sub(a, b):\n";
/// Applies, breaks `sub` (a PASS_TO_PASS test) and leaves `add` wrong.
pub const WRONG: &str = "--- a/calc.py\n+++ b/calc.py\n@@ -5,2 +5,2 @@\n def sub(a, b):\n-    return a - b\n+    return b - a\n";
pub const STALE: &str = "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a * b\n+    return a + b\n";
/// Would make every test pass by hooking pytest.
pub const HOOK: &str = "--- /dev/null\n+++ b/conftest.py\n@@ -0,0 +1,3 @@\n+import pytest\n+def pytest_runtest_call(item):\n+    pass\n";

pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `repos/acme__calc`: a git repository whose first commit is the base;
/// a later commit and an uncommitted change the evaluation must not see.
/// Returns the base commit.
pub fn make_repo(repos: &Path) -> String {
    let r = repos.join("acme__calc");
    std::fs::create_dir_all(r.join("tests")).unwrap();
    std::fs::write(r.join("calc.py"), BASE_CALC).unwrap();
    std::fs::write(r.join("tests/test_calc.py"), BASE_TEST).unwrap();
    git(&r, &["init", "-q"]);
    git(&r, &["add", "."]);
    git(&r, &["commit", "-qm", "base"]);
    let base = String::from_utf8(
        Command::new("git")
            .current_dir(&r)
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    std::fs::write(r.join("calc.py"), "later = True\n").unwrap();
    git(&r, &["commit", "-qam", "later"]);
    std::fs::write(r.join("calc.py"), "uncommitted = True\n").unwrap();
    // The same tree as a tarball with one top-level folder (`git archive`).
    let out = Command::new("git")
        .current_dir(&r)
        .args(["archive", "--format=tar.gz", "--prefix=calc-base/", "-o"])
        .arg(repos.join("acme__calc-tarball.tar.gz"))
        .arg(&base)
        .output()
        .unwrap();
    assert!(out.status.success());
    base
}

pub fn instance(id: &str, base: &str) -> Value {
    json!({
        "instance_id": id,
        "repo": "acme/calc",
        "base_commit": base,
        "test_patch": TEST_PATCH,
        // As the published dataset stores them: JSON-encoded strings.
        "FAIL_TO_PASS": "[\"tests/test_calc.py::test_add\"]",
        "PASS_TO_PASS": "[\"tests/test_calc.py::test_sub\"]",
        "language": "python",
        "test_cmd": "python3 -m pytest -rA -p no:cacheprovider --junitxml=test-results.xml tests/test_calc.py",
    })
}

pub fn write_lines(path: &Path, values: &[Value]) {
    let text: String = values.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(path, text).unwrap();
}

pub fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `repos/`, `instances.jsonl` and `preds.jsonl` in `dir` for `n`
/// instances of the repository, every prediction the gold patch; returns
/// the ids, sorted.
pub fn gold_set(dir: &Path, n: usize) -> Vec<String> {
    let base = make_repo(&dir.join("repos"));
    let ids: Vec<String> = (0..n).map(|i| format!("acme__calc-{i:02}")).collect();
    write_lines(
        &dir.join("instances.jsonl"),
        &ids.iter().map(|id| instance(id, &base)).collect::<Vec<_>>(),
    );
    write_lines(
        &dir.join("preds.jsonl"),
        &ids.iter()
            .map(|id| json!({"instance_id": id, "model_patch": GOLD}))
            .collect::<Vec<_>>(),
    );
    ids
}

/// `autodev batch --swebench` on what [`gold_set`] wrote in `dir`.
pub fn evaluation(dir: &Path, label: &(String, String), extra: &[&str]) -> Command {
    let mut c = Command::new(super::bin());
    c.current_dir(dir)
        .args([
            "batch",
            "--swebench",
            "instances.jsonl",
            "--predictions",
            "preds.jsonl",
            "--repos",
            "repos",
            "--out",
            "results.jsonl",
            "--no-setup",
            "--image",
        ])
        .arg(super::image())
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args(extra);
    c
}

/// Starts the evaluation `make(&[])` builds, kills it (SIGKILL) once it
/// has two results, runs `make(&["--resume"])` to its end, and checks that
/// each of `ids` was resolved exactly once.
pub fn kill_and_resume(dir: &Path, ids: &[String], make: impl Fn(&[&str]) -> Command) {
    let child = make(&[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let before = kill_after_two(dir, child);
    assert!(before < ids.len(), "the kill came after the end");
    // What the killed run left running is the backend's to remove; the
    // resumed run must not depend on it.
    let again = make(&["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{err}");
    assert_all_resolved_once(dir, ids);
}

/// Kills `child` (SIGKILL) once `results.jsonl` in `dir` has two lines;
/// returns how many it had then.
fn kill_after_two(dir: &Path, mut child: std::process::Child) -> usize {
    let out = dir.join("results.jsonl");
    super::wait_until("two results", std::time::Duration::from_secs(300), || {
        results(&out).len() >= 2
    });
    super::signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
    results(&out).len()
}

/// Each id exactly once, each resolved, and the report says so.
pub fn assert_all_resolved_once(dir: &Path, ids: &[String]) {
    let all = results(&dir.join("results.jsonl"));
    let mut seen: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, ids, "each instance exactly once");
    assert!(all.iter().all(|r| r["verdict"] == "resolved"), "{all:#?}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.report.json")).unwrap())
            .unwrap();
    assert_eq!(report["resolved_instances"], ids.len());
}
