//! Are verdicts independent of load? The same HumanEval-style batch (small
//! Python functions with asserts: some right, some wrong, some CPU-heavy)
//! runs at `--jobs 1` and at `--jobs 8` on this host, and the verdicts are
//! compared task by task. At `--jobs 8` on 2 cores, a CPU-heavy task gets a
//! quarter of the CPU it gets alone; `--retry-starved` (on in both runs)
//! re-runs, alone, a task that timed out starved of CPU.
//!
//! Usage: cargo build --release && cargo run --release --example bench_jobs -- [N] [TIMEOUT_S] [BURN]
//! (BURN: loop iterations of the CPU-heavy tasks, default 30M, about 2 s alone).
//! Env: AUTODEV_BIN (default target/release/autodev).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(48) as usize;
    let timeout = args.get(1).copied().unwrap_or(6);
    let burn = args.get(2).copied().unwrap_or(30_000_000);
    let bin = common::binary();
    let d = tempfile::tempdir().unwrap();
    // Every fourth task is wrong; every third burns BURN loop iterations.
    let tasks: String = (0..n)
        .map(|i| {
            let body = if i % 4 == 0 { "return a - b" } else { "return a + b" };
            let burn = if i % 3 == 0 { burn } else { 1_000 };
            let src = format!(
                "def add(a, b):\n    {body}\n\ns = 0\nfor k in range({burn}):\n    s += k\nassert add(2, 3) == 5\nprint('ok')\n"
            );
            serde_json::json!({"id": format!("h{i}"), "runner": "python3 solution.py",
                               "files": {"solution.py": src}})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(d.path().join("tasks.jsonl"), tasks).unwrap();
    let mut verdicts: Vec<BTreeMap<String, String>> = Vec::new();
    println!("{n} tasks, --timeout {timeout}s, 1 engine (this host's 2 cores)\n");
    println!(
        "| --jobs | --retry-starved | wall (s) | passed | failed | timed_out | re-run starved |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (jobs, retry) in [(1, true), (8, true), (8, false)] {
        let out = format!("r{jobs}-{retry}.jsonl");
        let t = Instant::now();
        let mut c = Command::new(&bin);
        c.current_dir(d.path())
            .args(["batch", "tasks.jsonl", "--out", &out])
            .args([
                "--jobs",
                &jobs.to_string(),
                "--timeout",
                &format!("{timeout}s"),
            ]);
        if retry {
            c.arg("--retry-starved");
        }
        let ok = c
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "batch --jobs {jobs} failed");
        let wall = t.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(d.path().join(&out)).unwrap();
        let mut last = BTreeMap::new();
        let mut reruns = 0;
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            if last
                .insert(id, v["verdict"].as_str().unwrap().to_string())
                .is_some()
            {
                reruns += 1;
            }
        }
        let count = |w: &str| last.values().filter(|v| *v == w).count();
        println!(
            "| {jobs} | {} | {wall:.1} | {} | {} | {} | {reruns} |",
            if retry { "yes" } else { "no" },
            count("passed"),
            count("failed"),
            count("timed_out")
        );
        verdicts.push(last);
    }
    for (k, what) in [(1, "--jobs 8 --retry-starved"), (2, "--jobs 8 without it")] {
        let differ: Vec<&String> = verdicts[0]
            .iter()
            .filter(|(id, v)| verdicts[k].get(*id) != Some(v))
            .map(|(id, _)| id)
            .collect();
        println!(
            "\n{what} vs --jobs 1: identical verdicts {}/{n}{}",
            n - differ.len(),
            if differ.is_empty() {
                String::new()
            } else {
                format!(" (differ: {differ:?})")
            }
        );
    }
}
