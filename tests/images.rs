//! `autodev images` through the real binary, from a folder with no
//! `images/`: an installed binary builds from the definitions built into it.

mod common;

use std::process::Command;

#[test]
#[ignore = "needs Docker and the offline base image: run with --include-ignored"]
fn an_installed_binary_builds_its_images_without_a_source_tree() {
    let away = tempfile::tempdir().unwrap();
    let list = Command::new(common::bin())
        .current_dir(away.path())
        .args(["images", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let names: Vec<&str> = text.lines().filter_map(|l| l.split('\t').next()).collect();
    assert_eq!(names, ["go", "java", "node", "python", "rust"], "{text}");
    let base =
        std::env::var("AUTODEV_BASE_IMAGE").unwrap_or_else(|_| "autodev/base:bookworm".into());
    let build = Command::new(common::bin())
        .current_dir(away.path())
        .args(["images", "build", "node", "--quiet", "--base", &base])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "{err}");
    assert!(
        err.contains("from the Dockerfile built into autodev"),
        "{err}"
    );
    assert!(err.contains("built autodev/node:latest"), "{err}");
    let unknown = Command::new(common::bin())
        .current_dir(away.path())
        .args(["images", "build", "cobol"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(2), "{err}");
    assert!(
        err.contains("available: go, java, node, python, rust"),
        "{err}"
    );
}

#[test]
#[ignore = "needs Docker: run with --include-ignored"]
fn push_to_the_engine_it_copies_from_is_refused_with_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let sock = "unix:///var/run/docker.sock";
    let out = common::isolated(d.path())
        .env("DOCKER_HOST", sock)
        .args(["images", "push", "python", "--engine", sock])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("same engine") && err.contains("--from"),
        "{err}"
    );
}
