//! `autodev run` end to end: the real binary, the real Docker daemon, the
//! replay provider (and a loopback HTTP server for the OpenAI client).

mod common;

use common::Sandboxed;

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

    // The transcript tells the whole story, in order: the seed's tests run
    // as they are first (iteration 0), then each reply is tested.
    let ev = events(d.path());
    assert_eq!(
        kinds(&ev),
        [
            "start", "git", "test", "prompt", "reply", "patches", "test", "git", "prompt", "reply",
            "patches", "test", "git", "export", "final"
        ]
    );
    let tests: Vec<&Value> = ev.iter().filter(|e| e["event"] == "test").collect();
    assert_eq!(tests[0]["iteration"], 0);
    assert_eq!(tests[0]["verdict"], "failed");
    let tests = &tests[1..];
    assert_eq!(tests[0]["verdict"], "failed");
    assert_eq!(tests[1]["verdict"], "passed");
    assert!(tests[0]["durations"]["total_ms"].as_u64().unwrap() > 0);
    assert!(tests[0]["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("AssertionError"));
    let repair = &ev[8]["messages"][1]["content"].as_str().unwrap();
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
    let log = String::from_utf8_lossy(&log.stdout);
    let subjects: Vec<&str> = log.lines().collect();
    assert_eq!(subjects.len(), 3, "{log}");
    // Each commit holds what was tested, with the result in its message.
    assert!(
        subjects[0].starts_with("autodev: iteration 2 (passed"),
        "{log}"
    );
    assert!(
        subjects[1].starts_with("autodev: initial generation (failed"),
        "{log}"
    );
    assert_eq!(subjects[2], "autodev: baseline (before the model)");
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
        2,
        "the empty first reply is told to the model, not tested: 1 tested round + final check"
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

/// `autodev run` with a one-reply replay in `dir`, HOME pointed at `home`.
fn run_in(dir: &Path, home: &Path, label: &(String, String), extra: &[&str]) -> Output {
    std::fs::write(dir.join("one.txt"), "PATCH::a.py\nx = 1\nENDPATCH\n").unwrap();
    let mut c = Command::new(common::bin());
    c.current_dir(dir)
        .env("HOME", home)
        .args([
            "run", "--task", "x", "--runner", "true", "--replay", "one.txt",
        ])
        .args(["--no-zip", "--no-transcript", "--quiet"]);
    if !extra.contains(&"--image") {
        c.args(["--image", &common::image()]);
    }
    c.args(["--label", &format!("{}={}", label.0, label.1)])
        .args(extra)
        .output()
        .expect("autodev runs")
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn reset_deletes_only_what_autodev_made() {
    let _sb = require_docker!();
    let label = common::test_label("reset");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let home = dir.join("homes/alice");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("notes"), "mine").unwrap();
    // A user's repository with uncommitted work.
    std::fs::create_dir_all(dir.join("myrepo/.git")).unwrap();
    std::fs::write(dir.join("myrepo/draft.txt"), "draft").unwrap();
    // A plain folder of the user's, and a link to it.
    std::fs::create_dir_all(dir.join("target_dir")).unwrap();
    std::fs::write(dir.join("target_dir/keep"), "keep").unwrap();
    std::os::unix::fs::symlink(dir.join("target_dir"), dir.join("wslink")).unwrap();
    let refused = |ws: &str, extra: &[&str], says: &str| {
        let mut args = vec!["--reset", "-w", ws];
        args.extend_from_slice(extra);
        let out = run_in(dir, &home, &label, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{ws} {extra:?}: {stderr}");
        assert!(stderr.contains(says), "{ws} {extra:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    };
    refused("myrepo", &[], "git repository");
    refused("myrepo", &["--force-reset"], "git repository");
    refused("target_dir", &[], "--force-reset");
    refused("wslink", &["--force-reset"], "symlink");
    refused("homes", &["--force-reset"], "home");
    // `.` is both the current folder and an ancestor of $HOME here.
    refused(".", &["--force-reset"], "never deleted");
    assert!(dir.join("myrepo/draft.txt").exists());
    assert!(dir.join("target_dir/keep").exists());
    assert!(home.join("notes").exists());

    // A folder autodev made is reset; then a fresh run marks it again.
    let out = run_in(dir, &home, &label, &["-w", "ws"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("ws/leftover"), "x").unwrap();
    let out = run_in(dir, &home, &label, &["--reset", "-w", "ws"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("ws/leftover").exists());
    assert!(dir.join("ws/a.py").exists());

    // A seed inside the workspace, a missing image: refused before anything is deleted.
    std::fs::create_dir_all(dir.join("ws/seed")).unwrap();
    std::fs::write(dir.join("ws/seed/s.py"), "s").unwrap();
    refused("ws", &["--seed", "ws/seed"], "inside the workspace");
    let out = run_in(
        dir,
        &home,
        &label,
        &["--reset", "-w", "ws", "--image", "nosuch/img"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        dir.join("ws/seed/s.py").exists(),
        "deleted before the image check"
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn model_settings_are_checked_before_anything_runs() {
    let _sb = require_docker!();
    let label = common::test_label("settings");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join("bad.txt"), b"\xff\xfe").unwrap();
    std::fs::write(dir.join("empty.txt"), "\n").unwrap();
    std::fs::write(dir.join("one.txt"), "PATCH::a.py\nx = 1\nENDPATCH\n").unwrap();
    for (args, says) in [
        (vec!["--replay", "/nonexistent/r.txt"], "replay file"),
        (vec!["--replay", "bad.txt"], "UTF-8"),
        (vec!["--replay", "empty.txt"], "holds no reply"),
        (
            vec![
                "--provider",
                "replay",
                "--replay",
                "one.txt",
                "--base-url",
                "http://127.0.0.1:9",
            ],
            "base URL",
        ),
        (
            vec!["--provider", "openai", "--replay", "one.txt"],
            "replay",
        ),
        (
            vec!["--provider", "openai", "--base-url", "notaurl"],
            "notaurl",
        ),
        (
            vec!["--model-timeout", "0", "--replay", "one.txt"],
            "--model-timeout",
        ),
        (
            vec!["--seed", "nonexist", "--replay", "one.txt"],
            "--seed nonexist",
        ),
    ] {
        let mut all = vec!["-w", "ws"];
        all.extend_from_slice(&args);
        // run_in adds `--replay one.txt`; a second --replay is refused by clap,
        // so these cases spell the flags themselves.
        let out = Command::new(common::bin())
            .current_dir(dir)
            .args([
                "run",
                "--task",
                "x",
                "--runner",
                "true",
                "--no-zip",
                "--no-transcript",
            ])
            .sandboxed(&label)
            .args(&all)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            !dir.join("ws").exists(),
            "{args:?}: the workspace was made before the check"
        );
    }
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn git_skips_nested_repositories_and_commits_a_baseline_first() {
    let _sb = require_docker!();
    let label = common::test_label("git-nested");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let ws = dir.join("p");
    std::fs::create_dir_all(ws.join("vendor")).unwrap();
    std::fs::write(ws.join("main.py"), "print(1)\n").unwrap();
    let init = Command::new("git")
        .args(["init", "-q"])
        .current_dir(ws.join("vendor"))
        .status()
        .unwrap();
    assert!(init.success());
    std::fs::write(ws.join("vendor/lib.py"), "x = 1\n").unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = run_in(dir, &home, &label, &["-w", "p", "--git"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let log = Command::new("git")
        .args(["log", "--format=%s"])
        .current_dir(&ws)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    let subjects: Vec<&str> = log.lines().collect();
    assert_eq!(subjects.len(), 2, "{log}");
    assert!(
        subjects[0].starts_with("autodev: initial generation ("),
        "{log}"
    );
    assert_eq!(subjects[1], "autodev: baseline (before the model)");
    let files = Command::new("git")
        .args(["ls-tree", "-r", "--name-only", "HEAD"])
        .current_dir(&ws)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&files.stdout), "a.py\nmain.py\n");
    common::assert_no_leak(&label);
}

/// A real 2,600-line file (the host Python's own `argparse.py`, CPython's)
/// with one line broken: the first reply's EDIT block does not match and
/// is refused with the nearest lines; the second fixes the one line, and
/// the file ends byte for byte as CPython has it.
#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_block_fixes_one_line_of_a_long_real_file_after_a_precise_refusal() {
    let _sb = require_docker!();
    let label = common::test_label("run-edit-block");
    let d = tempfile::tempdir().unwrap();
    let src = Command::new("python3")
        .args(["-c", "import argparse; print(argparse.__file__)"])
        .output()
        .unwrap();
    let original = std::fs::read_to_string(String::from_utf8_lossy(&src.stdout).trim()).unwrap();
    assert!(original.lines().count() > 1500);
    assert_eq!(original.matches("            const=True,\n").count(), 1);
    let broken = original.replace("            const=True,\n", "            const=None,\n");
    let seed = d.path().join("seed");
    std::fs::create_dir(&seed).unwrap();
    std::fs::write(seed.join("argparse_copy.py"), &broken).unwrap();
    std::fs::write(
        seed.join("test_store_true.py"),
        "import unittest\nimport argparse_copy\n\n\nclass T(unittest.TestCase):\n    def test_store_true(self):\n        p = argparse_copy.ArgumentParser()\n        p.add_argument('--v', action='store_true')\n        self.assertIs(p.parse_args(['--v']).v, True)\n",
    )
    .unwrap();
    let context = "        super(_StoreTrueAction, self).__init__(\n            option_strings=option_strings,\n            dest=dest,\n";
    let line = broken[..broken.find(context).unwrap()]
        .matches('\n')
        .count()
        + 1;
    let wrong = format!(
        "EDIT::argparse_copy.py\n<<<<<<< SEARCH\n{context}            const=False,\n=======\n{context}            const=True,\n>>>>>>> REPLACE\nENDEDIT"
    );
    let right = format!(
        "EDIT::argparse_copy.py\n<<<<<<< SEARCH\n{context}            const=None,\n=======\n{context}            const=True,\n>>>>>>> REPLACE\nENDEDIT"
    );
    let replay = write_replay(d.path(), &[&wrong, &right]);
    let out = autodev_run(
        d.path(),
        &label,
        &[
            "--seed",
            seed.to_str().unwrap(),
            "--task",
            "fix store_true",
            "--replay",
            &replay,
            "--no-zip",
            "--edit-format",
            "blocks",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let fixed = std::fs::read_to_string(d.path().join("ws/argparse_copy.py")).unwrap();
    assert!(
        fixed == original,
        "the file is CPython's again, and nothing else changed"
    );
    let text = std::fs::read_to_string(d.path().join("t.jsonl")).unwrap();
    let want = format!(
        "SEARCH is not in the file; the nearest lines are at line {line} (3 of 4 lines the same)"
    );
    assert!(
        text.contains(&want),
        "the refusal names the nearest lines: {text}"
    );
    common::assert_no_leak(&label);
}
