//! `autodev run` end to end: the real binary, the real Docker daemon, the
//! replay provider (and a loopback HTTP server for the OpenAI client).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn example(p: &str) -> String {
    format!("{}/examples/buggy_add/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn autodev_run(dir: &Path, label: &(String, String), extra: &[&str]) -> Output {
    Command::new(common::bin())
        .current_dir(dir)
        .args([
            "run",
            "--workspace",
            "ws",
            "--runner",
            "python3 -m unittest -v",
            "--quiet",
        ])
        .args([
            "--image",
            &common::image(),
            "--timeout",
            "60s",
            "--transcript",
            "t.jsonl",
        ])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args(extra)
        .output()
        .expect("autodev runs")
}

fn events(dir: &Path) -> Vec<Value> {
    common::transcript(&dir.join("t.jsonl"))
}

fn kinds(ev: &[Value]) -> Vec<String> {
    ev.iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

/// `autodev run` on the seeded buggy_add project, the model replaying `replies`.
fn run_replay(dir: &Path, label: &(String, String), replies: &[&str], extra: &[&str]) -> Output {
    let replay = write_replay(dir, replies);
    let mut args = vec![
        "--seed",
        &*EXAMPLE_PROJECT,
        "--task",
        "fix add",
        "--replay",
        &replay,
        "--no-zip",
    ];
    args.extend_from_slice(extra);
    autodev_run(dir, label, &args)
}

static EXAMPLE_PROJECT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| example("project"));

fn write_replay(dir: &Path, replies: &[&str]) -> String {
    let text: String = replies
        .iter()
        .map(|r| format!("=== REPLY ===\n{r}\n"))
        .collect();
    let p = dir.join("replay.txt");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn buggy_add_fails_gets_patched_and_passes() {
    let _sb = require_docker!();
    let label = common::test_label("run-e2e");
    let d = tempfile::tempdir().unwrap();
    let out = autodev_run(
        d.path(),
        &label,
        &[
            "--seed",
            &example("project"),
            "--task",
            &format!("@{}", example("task.md")),
            "--replay",
            &example("replay.txt"),
            "--zip",
            "out.zip",
            "--git",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The zip holds the fixed project.
    let mut z =
        zip::ZipArchive::new(std::fs::File::open(d.path().join("out.zip")).unwrap()).unwrap();
    let mut names: Vec<String> = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["calc.py", "test_calc.py", "test_negative.py"]);
    let mut calc = String::new();
    std::io::Read::read_to_string(&mut z.by_name("calc.py").unwrap(), &mut calc).unwrap();
    assert!(calc.contains("return a + b"));

    // The transcript tells the whole story, in order.
    let ev = events(d.path());
    assert_eq!(
        kinds(&ev),
        [
            "start", "git", "prompt", "reply", "patches", "git", "test", "prompt", "reply",
            "patches", "git", "test", "export", "final"
        ]
    );
    let tests: Vec<&Value> = ev.iter().filter(|e| e["event"] == "test").collect();
    assert_eq!(tests[0]["verdict"], "failed");
    assert_eq!(tests[1]["verdict"], "passed");
    assert!(tests[0]["durations"]["total_ms"].as_u64().unwrap() > 0);
    assert!(tests[0]["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("AssertionError"));
    let repair = &ev[7]["messages"][1]["content"].as_str().unwrap();
    assert!(
        repair.contains("AssertionError: -1 != 5"),
        "failure not fed back"
    );
    assert!(repair.contains("=== calc.py ==="), "files not fed back");
    let fin = ev.last().unwrap();
    assert_eq!(fin["passed"], true);
    assert_eq!(fin["iterations"], 2);

    // --git: the seed as a baseline, then one commit per applied patch set.
    let log = Command::new("git")
        .args(["-C", "ws", "log", "--format=%s"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log.stdout),
        "autodev: iteration 1\nautodev: initial generation\nautodev: baseline (before the model)\n"
    );
    // The baseline holds exactly the seed; autodev's marker is never committed.
    let files = Command::new("git")
        .args(["-C", "ws", "ls-tree", "-r", "--name-only", "HEAD~2"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&files.stdout),
        "calc.py\ntest_calc.py\n"
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn reply_without_patch_stops_with_exit_1() {
    let _sb = require_docker!();
    let label = common::test_label("run-nopatch");
    let d = tempfile::tempdir().unwrap();
    let out = run_replay(d.path(), &label, &["", "Looks fine to me."], &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fin = events(d.path()).pop().unwrap();
    assert_eq!(fin["event"], "final");
    assert_eq!(fin["stop_reason"], "no_patch");
    assert_eq!(fin["iterations"], 1);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn max_iters_exhausted_exits_1() {
    let _sb = require_docker!();
    let label = common::test_label("run-maxiters");
    let d = tempfile::tempdir().unwrap();
    let still_broken = "PATCH::calc.py\ndef add(a, b):\n    return a * b\nENDPATCH";
    let out = run_replay(
        d.path(),
        &label,
        &["", still_broken, still_broken],
        &["--max-iters", "2"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(d.path());
    let fin = ev.last().unwrap();
    assert_eq!(fin["stop_reason"], "max_iters");
    assert_eq!(fin["iterations"], 2);
    assert_eq!(
        ev.iter().filter(|e| e["event"] == "test").count(),
        3,
        "2 rounds + final check"
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn hostile_patch_is_refused_and_host_files_untouched() {
    let _sb = require_docker!();
    let label = common::test_label("run-hostile");
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim.txt");
    std::fs::write(&victim, "original").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("ws")).unwrap();
    std::os::unix::fs::symlink(outside.path(), d.path().join("ws/escape")).unwrap();
    let abs = format!("PATCH::{}\npwned\nENDPATCH", victim.display());
    let hostile = format!(
        "PATCH::../victim.txt\npwned\nENDPATCH\n{abs}\nPATCH::escape/evil.py\npwned\nENDPATCH\nPATCH::a/../../victim.txt\npwned\nENDPATCH\nPATCH::calc.py\ndef add(a, b):\n    return a + b\nENDPATCH"
    );
    let out = run_replay(d.path(), &label, &[&hostile], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    let ev = events(d.path());
    let patches = ev.iter().find(|e| e["event"] == "patches").unwrap();
    assert_eq!(patches["applied"], serde_json::json!(["calc.py"]));
    let reasons: Vec<&str> = patches["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["parent_dir", "absolute", "symlink", "parent_dir"]);
    common::assert_no_leak(&label);
}

#[test]
fn missing_api_key_is_a_model_error_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(common::bin())
        .current_dir(d.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("USE_OLLAMA")
        .args(["run", "--task", "x", "--runner", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn model_api_refusal_stops_with_exit_3_and_keeps_transcript_and_workspace() {
    let _sb = require_docker!();
    use wiremock::{matchers::method, Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401).set_body_string("{\"error\":{\"message\":\"bad key\"}}"),
        )
        .mount(&server)
        .await;
    let label = common::test_label("run-401");
    let d = tempfile::tempdir().unwrap();
    let base = server.uri();
    let out = tokio::task::spawn_blocking({
        let dir = d.path().to_path_buf();
        let label = label.clone();
        move || {
            Command::new(common::bin())
                .current_dir(&dir)
                .env("OPENAI_API_KEY", "sk-wrong")
                .args([
                    "run",
                    "--workspace",
                    "ws",
                    "--runner",
                    "true",
                    "--quiet",
                    "--task",
                    "x",
                ])
                .args([
                    "--seed",
                    &example("project"),
                    "--base-url",
                    &base,
                    "--transcript",
                    "t.jsonl",
                ])
                .args([
                    "--image",
                    &common::image(),
                    "--label",
                    &format!("{}={}", label.0, label.1),
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad key"));
    let ev = events(d.path());
    assert_eq!(ev.last().unwrap()["kind"], "model_error");
    assert!(d.path().join("ws/calc.py").exists(), "workspace lost");
    common::assert_no_leak(&label);
}
