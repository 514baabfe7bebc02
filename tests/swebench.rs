//! SWE-bench-style evaluation against the real daemon: a repository at a
//! commit (a git repository and a tarball), predictions that resolve, do
//! not, are empty, do not apply or hook the test runner; the harness's
//! report; the user's repository untouched; kill -9 and `--resume` run
//! each instance exactly once; no container left.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

const BASE_CALC: &str = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n";
const BASE_TEST: &str = "from calc import sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n";
/// The benchmark's test patch: adds the test the fix must make pass.
const TEST_PATCH: &str = "diff --git a/tests/test_calc.py b/tests/test_calc.py\n--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n@@ -1,5 +1,9 @@\n-from calc import sub\n+from calc import add, sub\n \n \n def test_sub():\n     assert sub(5, 3) == 2\n+\n+\n+def test_add():\n+    assert add(2, 3) == 5\n";
const GOLD: &str = "diff --git a/calc.py b/calc.py\nindex 1111111..2222222 100644\n--- a/calc.py\n+++ b/calc.py\n@@ -1,5 +1,5 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n \n \n def sub(a, b):\n";
/// Applies, breaks `sub` (a PASS_TO_PASS test) and leaves `add` wrong.
const WRONG: &str = "--- a/calc.py\n+++ b/calc.py\n@@ -5,2 +5,2 @@\n def sub(a, b):\n-    return a - b\n+    return b - a\n";
const STALE: &str = "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a * b\n+    return a + b\n";
/// Would make every test pass by hooking pytest.
const HOOK: &str = "--- /dev/null\n+++ b/conftest.py\n@@ -0,0 +1,3 @@\n+import pytest\n+def pytest_runtest_call(item):\n+    pass\n";

fn git(dir: &Path, args: &[&str]) {
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
fn make_repo(repos: &Path) -> String {
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

fn instance(id: &str, base: &str) -> Value {
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

fn write_lines(path: &Path, values: &[Value]) {
    let text: String = values.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn evaluate(dir: &Path, label: &(String, String), extra: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .current_dir(dir)
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
            &common::image(),
            "-j",
            "2",
        ])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args(extra)
        .output()
        .unwrap()
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn predictions_are_judged_by_their_named_tests() {
    let _sb = require_docker!();
    let label = common::test_label("swebench");
    let d = tempfile::tempdir().unwrap();
    let repos = d.path().join("repos");
    let base = make_repo(&repos);
    let cases = [
        ("acme__calc-gold", GOLD),
        ("acme__calc-tarball", GOLD),
        ("acme__calc-wrong", WRONG),
        ("acme__calc-empty", ""),
        ("acme__calc-stale", STALE),
        ("acme__calc-hook", HOOK),
    ];
    let mut instances: Vec<Value> = cases.iter().map(|(id, _)| instance(id, &base)).collect();
    instances.push(instance("acme__calc-unpredicted", &base));
    write_lines(&d.path().join("instances.jsonl"), &instances);
    let preds: Vec<Value> = cases
        .iter()
        .map(|(id, p)| json!({"instance_id": id, "model_name_or_path": "m", "model_patch": p}))
        .collect();
    write_lines(&d.path().join("preds.jsonl"), &preds);

    let out = evaluate(d.path(), &label, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let by_id: std::collections::HashMap<String, Value> = results(&d.path().join("results.jsonl"))
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    let verdict = |id: &str| by_id[id]["verdict"].as_str().unwrap().to_string();
    assert_eq!(
        verdict("acme__calc-gold"),
        "resolved",
        "{:#}",
        by_id["acme__calc-gold"]
    );
    assert_eq!(verdict("acme__calc-tarball"), "resolved");
    assert_eq!(verdict("acme__calc-wrong"), "unresolved");
    let named = &by_id["acme__calc-wrong"]["named_tests"];
    assert_eq!(
        named["fail_to_pass"]["failure"],
        json!(["tests/test_calc.py::test_add"])
    );
    assert_eq!(
        named["pass_to_pass"]["failure"],
        json!(["tests/test_calc.py::test_sub"])
    );
    assert_eq!(
        by_id["acme__calc-gold"]["named_tests"]["pass_to_pass"]["success"],
        json!(["tests/test_calc.py::test_sub"])
    );
    assert_eq!(verdict("acme__calc-empty"), "empty_patch");
    assert_eq!(verdict("acme__calc-stale"), "patch_failed");
    let stale = by_id["acme__calc-stale"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{:#}", by_id["acme__calc-stale"]));
    assert!(
        stale.contains("calc.py: hunk 1") && stale.contains("return a * b"),
        "{stale}"
    );
    assert_eq!(verdict("acme__calc-hook"), "patch_failed");
    assert!(by_id["acme__calc-hook"]["error"]
        .as_str()
        .unwrap()
        .contains("conftest.py"));

    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("results.report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["total_instances"], 7);
    assert_eq!(report["submitted_instances"], 6);
    assert_eq!(
        report["resolved_ids"],
        json!(["acme__calc-gold", "acme__calc-tarball"])
    );
    assert_eq!(report["unresolved_ids"], json!(["acme__calc-wrong"]));
    assert_eq!(report["empty_patch_ids"], json!(["acme__calc-empty"]));
    assert_eq!(
        report["error_ids"],
        json!(["acme__calc-hook", "acme__calc-stale"])
    );
    assert_eq!(report["schema_version"], 2);
    assert!(err.contains("2 of 6 submitted resolved"), "{err}");
    // The user's repository: its work tree and history as they were.
    let calc = std::fs::read_to_string(repos.join("acme__calc/calc.py")).unwrap();
    assert_eq!(calc, "uncommitted = True\n");
    let status = Command::new("git")
        .current_dir(repos.join("acme__calc"))
        .args(["status", "--porcelain"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), " M calc.py\n");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_evaluation_resumes_running_each_instance_once() {
    let _sb = require_docker!();
    let label = common::test_label("swebench-resume");
    let d = tempfile::tempdir().unwrap();
    let repos = d.path().join("repos");
    let base = make_repo(&repos);
    let ids: Vec<String> = (0..8).map(|i| format!("acme__calc-{i}")).collect();
    write_lines(
        &d.path().join("instances.jsonl"),
        &ids.iter().map(|id| instance(id, &base)).collect::<Vec<_>>(),
    );
    write_lines(
        &d.path().join("preds.jsonl"),
        &ids.iter()
            .map(|id| json!({"instance_id": id, "model_patch": GOLD}))
            .collect::<Vec<_>>(),
    );
    let mut child = Command::new(common::bin())
        .current_dir(d.path())
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
            "-j",
            "1",
            "--image",
        ])
        .arg(common::image())
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = d.path().join("results.jsonl");
    common::wait_until("two results", std::time::Duration::from_secs(180), || {
        results(&out).len() >= 2
    });
    common::signal(child.id(), libc::SIGKILL);
    let _ = child.wait();
    let before = results(&out).len();
    assert!(before < ids.len(), "the kill came after the end");
    // What the killed run left running is the engine's to remove; the
    // resumed run must not depend on it.
    let again = evaluate(d.path(), &label, &["--resume"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let all = results(&out);
    let mut seen: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(seen, want, "each instance exactly once");
    assert!(all.iter().all(|r| r["verdict"] == "resolved"), "{all:#?}");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("results.report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["resolved_instances"], 8);
    common::wait_until(
        "the killed run's containers to go",
        std::time::Duration::from_secs(60),
        || common::containers_with(&label).is_empty(),
    );
}
