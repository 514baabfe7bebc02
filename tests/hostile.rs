//! Hostile model replies through the real binary: nothing a reply writes may
//! get a command run on the host. Each reply plants what would run a command
//! through git (a `core.fsmonitor` in `.git/config`, hooks, a `.git` file
//! redirecting to a repository the reply builds), in every spelling a
//! case-folding file system would accept; afterwards the test runs real
//! `git status`, `git add -A` and `git commit` in the workspace, and the
//! marker file the planted command would create must not exist.

mod common;

use std::path::Path;
use std::process::Command;

/// The command every plant tries to get run: it creates `marker`.
fn payload(marker: &Path) -> String {
    format!("touch {}", marker.display())
}

fn git_config(marker: &Path) -> String {
    format!(
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tfsmonitor = \"{}; false\"\n\thooksPath = hooks\n",
        payload(marker)
    )
}

/// Replies that try to plant a repository or hook, one per spelling.
fn plants(marker: &Path) -> Vec<(&'static str, String)> {
    let config = git_config(marker);
    let hook = format!("#!/bin/sh\n{}\n", payload(marker));
    let repo = |dir: &str| {
        format!(
            "PATCH::{dir}/HEAD\nref: refs/heads/main\nENDPATCH\n\
             PATCH::{dir}/config\n{config}ENDPATCH\n\
             PATCH::{dir}/objects/.keep\nx\nENDPATCH\n\
             PATCH::{dir}/refs/heads/.keep\nx\nENDPATCH\n\
             PATCH::{dir}/hooks/pre-commit\n{hook}ENDPATCH\n\
             PATCH::{dir}/hooks/post-commit\n{hook}ENDPATCH\n"
        )
    };
    vec![
        ("plain .git", repo(".git")),
        ("upper case", repo(".GIT")),
        ("trailing dot", repo(".git.")),
        ("trailing space", repo(".git ")),
        ("HFS+ ignorable", repo(".g\u{200c}it")),
        ("NTFS short name", repo("GIT~1")),
        ("nested repo", repo("vendor/.git")),
        (
            ".git file redirect",
            format!(
                "PATCH::.git\ngitdir: elsewhere\nENDPATCH\n{}",
                repo("elsewhere")
            ),
        ),
        (
            "mercurial",
            "PATCH::.hg/hgrc\n[hooks]\nupdate = touch x\nENDPATCH\n".into(),
        ),
        (
            "autodev marker",
            "PATCH::.autodev-workspace\nmine now\nENDPATCH\n".into(),
        ),
    ]
}

fn git(ws: &Path, args: &[&str]) {
    // The user's own git, in the workspace, as they would run it; its exit
    // status does not matter, only what it executes.
    let _ = Command::new("git")
        .current_dir(ws)
        .args(args)
        .env("GIT_AUTHOR_NAME", "u")
        .env("GIT_AUTHOR_EMAIL", "u@x")
        .env("GIT_COMMITTER_NAME", "u")
        .env("GIT_COMMITTER_EMAIL", "u@x")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
}

#[ignore = "needs Docker: run with --include-ignored"]
#[test]
fn planted_vcs_metadata_never_runs_a_command_on_the_host() {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::docker());
    let label = common::test_label("hostile-git");
    for with_git in [false, true] {
        for (name, reply) in plants(Path::new("/nonexistent")) {
            let d = tempfile::tempdir().unwrap();
            let marker = d.path().join("pwned");
            let reply = reply.replace(&payload(Path::new("/nonexistent")), &payload(&marker));
            let reply = format!("{reply}PATCH::ok.txt\nfine\nENDPATCH\n");
            std::fs::write(
                d.path().join("replay.txt"),
                format!("=== REPLY ===\n{reply}"),
            )
            .unwrap();
            let mut cmd = Command::new(common::bin());
            cmd.current_dir(d.path())
                .args([
                    "run",
                    "-w",
                    "ws",
                    "--task",
                    "x",
                    "--runner",
                    "test -f ok.txt",
                ])
                .args(["--replay", "replay.txt", "--no-zip", "--quiet"])
                .args(["--transcript", "t.jsonl", "--image", &common::image()])
                .args(["--label", &format!("{}={}", label.0, label.1)]);
            if with_git {
                cmd.arg("--git");
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name} (git={with_git}): {stderr}"
            );

            // Every block but ok.txt was refused as a protected path.
            let patches = common::transcript(&d.path().join("t.jsonl"))
                .into_iter()
                .find(|e| e["event"] == "patches")
                .unwrap();
            let applied: Vec<&str> = patches["applied"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            // Ordinary files may land in `elsewhere/` once `.git` and a
            // git HEAD are refused: without a HEAD it is no repository.
            assert!(
                applied
                    .iter()
                    .all(|p| *p == "ok.txt" || p.starts_with("elsewhere/")),
                "{name}: {applied:?}"
            );
            assert!(applied.contains(&"ok.txt"), "{name}: {applied:?}");
            let refused = patches["refused"].as_array().unwrap();
            let protected = refused
                .iter()
                .filter(|r| r["reason"] == "protected_path")
                .count();
            assert!(protected >= 1, "{name}: {refused:?}");
            assert!(
                refused.iter().all(|r| r["reason"] == "protected_path"),
                "{name}: {refused:?}"
            );

            // The user then works in the workspace with their own git.
            let ws = d.path().join("ws");
            git(&ws, &["status"]);
            git(&ws, &["add", "-A"]);
            git(&ws, &["commit", "-qm", "user commit"]);
            git(&ws, &["status"]);
            // And in every folder the reply made (a planted bare repository
            // would be found there by git's discovery).
            for sub in ["elsewhere", "vendor"] {
                if ws.join(sub).is_dir() {
                    git(&ws.join(sub), &["status"]);
                    git(&ws.join(sub), &["log"]);
                }
            }
            assert!(
                !marker.exists(),
                "{name} (git={with_git}): a planted command ran on the host"
            );
        }
    }
    common::assert_no_leak(&label);
}

/// The same rule holds for a batch task's inline files.
#[ignore = "needs Docker: run with --include-ignored"]
#[test]
fn batch_inline_files_cannot_plant_vcs_metadata() {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::docker());
    let label = common::test_label("hostile-batch");
    let d = tempfile::tempdir().unwrap();
    let tasks = d.path().join("t.jsonl");
    let lines = [
        r#"{"id":"git","runner":"true","files":{".git/config":"[core]\n","a.py":"1"}}"#,
        r##"{"id":"upper","runner":"true","files":{"sub/.Git/hooks/x":"#!/bin/sh\n"}}"##,
        r#"{"id":"ok","runner":"test -f a.py","files":{"a.py":"1"}}"#,
    ];
    std::fs::write(&tasks, lines.join("\n")).unwrap();
    let out = Command::new(common::bin())
        .current_dir(d.path())
        .args([
            "batch",
            "t.jsonl",
            "--out",
            "r.jsonl",
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
    let results: Vec<serde_json::Value> = std::fs::read_to_string(d.path().join("r.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdict = |id: &str| {
        results
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| {
                (
                    r["verdict"].as_str().unwrap().to_string(),
                    r["error"].clone(),
                )
            })
            .unwrap()
    };
    for id in ["git", "upper"] {
        let (v, err) = verdict(id);
        assert_eq!(v, "invalid_task", "{id}");
        assert!(err.as_str().unwrap().contains("protected"), "{id}: {err}");
    }
    assert_eq!(verdict("ok").0, "passed");
    common::assert_no_leak(&label);
}
