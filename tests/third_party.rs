//! Input from a third party (a published tasks file, a cloned project, an
//! image, a copied folder) cannot reach the host: the QA round 3 findings,
//! end to end through the real binary and the real Docker engine.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use common::Sandboxed;
use serde_json::Value;

fn results(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a result line is JSON"))
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_published_tasks_file_cannot_send_host_folders_or_the_api_key_anywhere() {
    let _sb = require_docker!();
    let label = common::test_label("tp-tasks");
    let d = tempfile::tempdir().unwrap();
    let decoy = d.path().join("decoy/.ssh");
    std::fs::create_dir_all(&decoy).unwrap();
    std::fs::write(decoy.join("id_rsa"), "PRIVATE-KEY-DECOY\n").unwrap();
    let tasks_dir = d.path().join("bench");
    std::fs::create_dir_all(tasks_dir.join("ok")).unwrap();
    std::fs::write(tasks_dir.join("ok/t.txt"), "fine\n").unwrap();
    // A loopback "collector": nothing may ever connect to it.
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    collector.set_nonblocking(true).unwrap();
    let url = format!("http://{}/v1", collector.local_addr().unwrap());
    let lines = [
        serde_json::json!({"id": "exfil", "runner": "true", "task": "x",
            "workspace": decoy.display().to_string(),
            "model": {"provider": "openai", "base_url": url, "name": "m"}, "max_iters": 1}),
        serde_json::json!({"id": "url-only", "runner": "true", "task": "x",
            "model": {"base_url": url}}),
        serde_json::json!({"id": "abs-ws", "runner": "cat id_rsa", "workspace": decoy.display().to_string()}),
        serde_json::json!({"id": "up-ws", "runner": "cat id_rsa", "workspace": "../decoy/.ssh"}),
        serde_json::json!({"id": "etc", "runner": "cat hostname", "workspace": "/etc"}),
        serde_json::json!({"id": "replay", "runner": "true", "task": "x",
            "model": {"replay": "/etc/passwd"}}),
        serde_json::json!({"id": "iters", "runner": "true", "task": "x", "max_iters": 1000000,
            "model": {"replies": ["PATCH::a.py\nx = 1\nENDPATCH\n"]}}),
        serde_json::json!({"id": "ok", "runner": "cat t.txt", "workspace": "ok"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(tasks_dir.join("tasks.jsonl"), text).unwrap();
    let out = common::isolated(d.path())
        .env("OPENAI_API_KEY", "sk-operator-key")
        .args([
            "batch",
            "bench/tasks.jsonl",
            "--out",
            "r.jsonl",
            "--jobs",
            "2",
        ])
        .sandboxed(&label)
        .output()
        .unwrap();
    let rs = results(&d.path().join("r.jsonl"));
    assert_eq!(rs.len(), lines.len(), "{}", stderr(&out));
    for r in &rs {
        let id = r["id"].as_str().unwrap();
        let all = r.to_string();
        assert!(!all.contains("PRIVATE-KEY-DECOY"), "{id}: {all}");
        if id == "ok" {
            assert_eq!(r["verdict"], "passed", "{all}");
        } else {
            assert_eq!(r["verdict"], "invalid_task", "{id}: {all}");
            assert!(
                all.contains("--allow-task-overrides"),
                "{id}: the error says how to allow it: {all}"
            );
        }
    }
    assert!(
        collector.accept().is_err(),
        "a task line made autodev connect to its URL"
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn an_images_volumes_are_bounded_tmpfs_not_host_disk() {
    let _sb = require_docker!();
    let label = common::test_label("tp-volume");
    let tag = "autodev-test/volume:latest";
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("Dockerfile"),
        format!(
            "FROM {}\nUSER root\nRUN mkdir -p /data && chown 1000:1000 /data\nVOLUME /data\nUSER 1000:1000\n",
            common::image()
        ),
    )
    .unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let volumes_before = Command::new("docker")
        .args(["volume", "ls", "-q"])
        .output()
        .unwrap()
        .stdout;
    let ws = common::workspace(&[("a.txt", "x")]);
    let out = common::isolated(d.path())
        .args(["exec", "--json", "--tmp-size", "16m", "-w"])
        .arg(ws.path())
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .args(["--image", tag, "--"])
        .arg("grep ' /data ' /proc/mounts; dd if=/dev/zero of=/data/big bs=1M count=100 2>&1; du -sm /data")
        .output()
        .unwrap();
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    let text = v["stdout"]["text"].as_str().unwrap_or_default().to_string();
    assert!(text.contains(" /data tmpfs "), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    let used: u64 = text
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(used <= 16, "{used} MiB written to /data: {text}");
    let volumes_after = Command::new("docker")
        .args(["volume", "ls", "-q"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(volumes_before, volumes_after, "the run made a volume");

    // doctor checks storage too, and finds only memory-backed mounts.
    let doc = common::isolated(d.path())
        .args(["doctor", "--json", "--image", tag, "--timeout", "30s"])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .output()
        .unwrap();
    let v: Value =
        serde_json::from_slice(&doc.stdout).unwrap_or_else(|_| panic!("{}", stderr(&doc)));
    let storage = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "writable storage")
        .cloned()
        .unwrap_or_default();
    assert_eq!(storage["status"], "held", "{v}");
    let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
    common::assert_no_leak(&label);
}

fn run_in(dir: &Path, home: &Path, label: &(String, String), extra: &[&str]) -> Output {
    std::fs::write(dir.join("one.txt"), "PATCH::a.py\nx = 1\nENDPATCH\n").unwrap();
    common::isolated(dir)
        .env("HOME", home)
        .env_remove("XDG_STATE_HOME")
        .args([
            "run", "--task", "x", "--runner", "true", "--replay", "one.txt",
        ])
        .args(["--no-zip", "--no-transcript", "--quiet"])
        .sandboxed(label)
        .args(extra)
        .output()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=u", "-c", "user.email=u@localhost"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_or_copied_marker_never_gets_a_folder_deleted() {
    let _sb = require_docker!();
    let label = common::test_label("tp-marker");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // A clone that ships a marker, with history and uncommitted work.
    let clone = dir.join("clone");
    std::fs::create_dir_all(&clone).unwrap();
    git(&clone, &["init", "-q"]);
    std::fs::write(clone.join(".autodev-workspace"), "").unwrap();
    std::fs::write(clone.join("code.py"), "code\n").unwrap();
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-qm", "init"]);
    std::fs::write(clone.join("uncommitted.txt"), "wip\n").unwrap();
    // A plain folder with a forged marker.
    let forged = dir.join("forged");
    std::fs::create_dir_all(&forged).unwrap();
    std::fs::write(forged.join(".autodev-workspace"), "created by autodev\n").unwrap();
    std::fs::write(forged.join("thesis.txt"), "important\n").unwrap();
    for (ws, says) in [("clone", "git repository"), ("forged", "--force-reset")] {
        let out = run_in(dir, &home, &label, &["--reset", "-w", ws]);
        assert_eq!(out.status.code(), Some(2), "{ws}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{ws}: {}", stderr(&out));
    }
    assert!(clone.join(".git").is_dir() && clone.join("uncommitted.txt").exists());
    assert!(forged.join("thesis.txt").exists());

    // A workspace autodev made, then copied with `cp -r`: the copy is not its.
    let out = run_in(dir, &home, &label, &["-w", "made"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let cp = Command::new("cp")
        .args(["-r", "made", "copy"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::write(dir.join("copy/mine.txt"), "mine\n").unwrap();
    let out = run_in(dir, &home, &label, &["--reset", "-w", "copy"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(dir.join("copy/mine.txt").exists());
    // The original still resets, with the .git autodev made for it.
    let out = run_in(dir, &home, &label, &["-w", "made", "--git"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(dir.join("made/leftover"), "x").unwrap();
    let out = run_in(dir, &home, &label, &["--reset", "-w", "made"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!dir.join("made/leftover").exists());
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn git_never_commits_what_the_user_did_not() {
    let _sb = require_docker!();
    let label = common::test_label("tp-git");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("calc.py"), "x = 0\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "mine"]);
    std::fs::write(repo.join(".env"), "SECRET=1\n").unwrap();
    let before = git(&repo, &["rev-parse", "HEAD"]);
    let out = run_in(dir, dir, &label, &["-w", "repo", "--git"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(".env"), "{}", stderr(&out));
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), before);
    assert!(!repo.join("a.py").exists(), "the run went ahead");
    // Clean (the secret ignored): the run commits only its own work.
    std::fs::write(repo.join(".gitignore"), ".env\n").unwrap();
    git(&repo, &["add", ".gitignore"]);
    git(&repo, &["commit", "-qm", "ignore"]);
    let out = run_in(dir, dir, &label, &["-w", "repo", "--git"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert!(!files.contains(".env"), "{files}");
    assert!(files.contains("a.py"), "{files}");
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_workspace_and_zip_paths_work() {
    use std::os::unix::ffi::OsStrExt;
    let _sb = require_docker!();
    let label = common::test_label("tp-utf8");
    let d = tempfile::tempdir().unwrap();
    let ws = std::ffi::OsStr::from_bytes(b"ws_\xff");
    let zip = std::ffi::OsStr::from_bytes(b"z_\xff.zip");
    std::fs::write(d.path().join("one.txt"), "PATCH::a.py\nx = 1\nENDPATCH\n").unwrap();
    let out = common::isolated(d.path())
        .args([
            "run", "--task", "x", "--runner", "true", "--replay", "one.txt", "-w",
        ])
        .arg(ws)
        .arg("--zip")
        .arg(zip)
        .arg("--json")
        .sandboxed(&label)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["zip"].as_str().unwrap().starts_with("z_"), "{v}");
    assert!(d.path().join(zip).is_file());
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn batch_reads_stdin_and_its_output_errors_have_their_own_codes() {
    use std::io::Write;
    let _sb = require_docker!();
    let label = common::test_label("tp-batch-io");
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("adir")).unwrap();
    let tasks = "{\"id\":\"a\",\"runner\":\"true\"}\n";
    std::fs::write(d.path().join("t.jsonl"), tasks).unwrap();
    let batch = |out: &str, stdin: bool| {
        let mut c = common::isolated(d.path());
        c.args(["batch", if stdin { "-" } else { "t.jsonl" }, "--out", out])
            .sandboxed(&label)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(tasks.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = batch("r.jsonl", true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(results(&d.path().join("r.jsonl"))[0]["verdict"], "passed");
    let out = batch("/dev/full", false);
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    let out = batch("adir", false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("folder"), "{}", stderr(&out));
    let out = batch("t.jsonl", false);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(d.path().join("t.jsonl")).unwrap(),
        tasks
    );
    common::assert_no_leak(&label);
}
