//! What every benchmark needs: the binary under test, the image, medians.
//! (A folder, not `examples/common.rs`: Cargo would take that for an example.)

#![allow(dead_code)] // each benchmark uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The release binary (`AUTODEV_BIN` overrides); panics with what to do
/// when it is not built.
pub fn binary() -> PathBuf {
    let bin = std::env::var("AUTODEV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/autodev"));
    assert!(
        bin.is_file(),
        "{} not found: cargo build --release first",
        bin.display()
    );
    bin
}

/// The image the tasks run in (`AUTODEV_BENCH_IMAGE` overrides).
pub fn image() -> String {
    std::env::var("AUTODEV_BENCH_IMAGE").unwrap_or_else(|_| "autodev/python:latest".into())
}

/// The middle value (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `autodev batch TASKS --jobs JOBS --image IMAGE --json` (results in
/// `dir/results.jsonl`, replaced): its wall time and the level of jobs it
/// ended at; panics on any sandbox error.
pub fn batch(bin: &Path, dir: &Path, tasks: &Path, jobs: &str, image: &str) -> (f64, usize) {
    let out = dir.join("results.jsonl");
    let _ = std::fs::remove_file(&out);
    let t = Instant::now();
    let o = Command::new(bin)
        .arg("batch")
        .arg(tasks)
        .arg("--out")
        .arg(&out)
        .args(["--jobs", jobs, "--image", image, "--json"])
        .stderr(Stdio::null())
        .output()
        .expect("autodev runs");
    let wall = t.elapsed().as_secs_f64();
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("summary");
    let errors = summary["verdicts"]["sandbox_error"].as_u64().unwrap_or(0);
    assert_eq!(errors, 0, "sandbox errors at --jobs {jobs}: {summary}");
    (wall, summary["jobs"].as_u64().unwrap_or(0) as usize)
}
