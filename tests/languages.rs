//! Each language's demo through the real binary, images and loop: the
//! profile is detected from the project (no --runner, --image or
//! --profile), the tests fail on iteration 1 and pass on iteration 2.

mod common;

use std::path::Path;
use std::process::Output;

fn example(lang: &str, p: &str) -> String {
    let dir = if lang == "python" {
        "buggy_add".to_string()
    } else {
        format!("buggy_add_{lang}")
    };
    format!("{}/examples/{dir}/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn demo(lang: &str, dir: &Path, label: &(String, String)) -> Output {
    common::isolated(dir)
        .args(["run", "--workspace", "ws", "--no-zip"])
        .args(["--seed", &example(lang, "project")])
        .args(["--task", &format!("@{}", example(lang, "task.md"))])
        .args(["--replay", &example(lang, "replay.txt")])
        .args(["--transcript", "t.jsonl", "--timeout", "120s"])
        .args(["--label", &format!("{}={}", label.0, label.1)])
        .output()
        .expect("autodev runs")
}

#[ignore = "needs Docker and the five language images: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn every_language_demo_fails_then_passes_with_its_detected_profile() {
    let _sb = require_docker!();
    for (lang, evidence) in [
        ("python", "2 .py files"),
        ("node", "package.json"),
        ("go", "go.mod"),
        ("rust", "Cargo.toml"),
        ("java", "2 .java files"),
    ] {
        let label = common::test_label(&format!("lang-{lang}"));
        let d = tempfile::tempdir().unwrap();
        let out = demo(lang, d.path(), &label);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{lang}: {stderr}");
        assert!(
            stderr.contains(&format!("autodev: profile {lang} ({evidence})")),
            "{lang}: {stderr}"
        );
        let ev = common::transcript(&d.path().join("t.jsonl"));
        let start = ev.iter().find(|e| e["event"] == "start").unwrap();
        assert_eq!(
            start["image"]
                .as_str()
                .or(start["sandbox"]["image"].as_str()),
            Some(format!("autodev/{lang}:latest").as_str()),
            "{lang}: {start}"
        );
        let verdicts: Vec<&str> = ev
            .iter()
            .filter(|e| e["event"] == "test")
            .map(|e| e["verdict"].as_str().unwrap())
            .collect();
        // A seed with test files has them run first (iteration 0, the bug
        // still in); Rust's demo keeps its tests inside src/lib.rs, which is
        // no test file. Then the model's first reply fails and its fix passes.
        if lang == "rust" {
            assert_eq!(verdicts, ["failed", "passed"], "{lang}");
        } else {
            assert_eq!(verdicts, ["failed", "failed", "passed"], "{lang}");
            let first = ev.iter().find(|e| e["event"] == "test").unwrap();
            assert_eq!(first["iteration"], 0, "{lang}");
        }
        // The model was told the language's conventions.
        let prompt = ev.iter().find(|e| e["event"] == "prompt").unwrap();
        let system = prompt["messages"][0]["content"].as_str().unwrap();
        assert!(
            system.contains("This project's language and test conventions"),
            "{lang}: {system}"
        );
        common::assert_no_leak(&label);
    }
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_profile_whose_image_is_missing_says_how_to_build_it() {
    let _sb = require_docker!();
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("xdg/autodev")).unwrap();
    std::fs::write(
        d.path().join("xdg/autodev/config.toml"),
        "[profiles.zig]\nimage = \"autodev/zig:latest\"\nrunner = \"zig build test\"\nmarkers = [\"build.zig\"]\n",
    )
    .unwrap();
    std::fs::write(d.path().join("build.zig"), "").unwrap();
    let out = common::isolated(d.path())
        .args(["exec", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The image is the sandbox's to have: exit 125, as for any missing image.
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("autodev: profile zig (build.zig)"),
        "{stderr}"
    );
    assert!(stderr.contains("autodev images build zig"), "{stderr}");
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
}
