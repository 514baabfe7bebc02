//! Throughput of a batch through `autodev serve` (`POST /v1/batches`) against
//! `autodev batch` on the same engine: N HumanEval-sized tasks (a small
//! Python function and its asserts, a quarter wrong), the same `--jobs`,
//! rounds alternating which goes first, medians printed. Loopback only.
//!
//! Usage: cargo build --release && cargo run --release --example bench_serve_batch -- [N] [ROUNDS] [JOBS]
//! Env: AUTODEV_BIN (default target/release/autodev), AUTODEV_BENCH_IMAGE.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(164);
    let rounds = args.get(1).copied().unwrap_or(3).max(1);
    let jobs = args.get(2).copied().unwrap_or(6).to_string();
    let bin = common::binary();
    let image = common::image();
    let d = tempfile::tempdir().unwrap();
    let jsonl: String = (0..n)
        .map(|i| {
            let body = if i % 4 == 0 { "a - b" } else { "a + b" };
            let src = format!(
                "def add(a, b):\n    \"\"\"Task {i}.\"\"\"\n    return {body}\n\n\
                 assert add(2, 3) == 5\nassert add(-1, 1) == 0\nassert add(10, {i}) == {}\n",
                10 + i
            );
            format!(
                "{}\n",
                serde_json::json!({"id": format!("t{i}"), "files": {"test_add.py": src},
                                   "runner": "python3 test_add.py"})
            )
        })
        .collect();
    let tasks = d.path().join("tasks.jsonl");
    std::fs::write(&tasks, &jsonl).unwrap();
    println!("bench_serve_batch: {n} tasks, {rounds} round(s), --jobs {jobs}, image {image}");
    let (mut cli, mut served) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut one = |first: bool| {
            if first {
                cli.push(common::batch(&bin, d.path(), &tasks, &jobs, &image).0);
            } else {
                served.push(serve(&bin, d.path(), &tasks, &jobs, &image, n));
            }
        };
        one(round % 2 == 0);
        one(round % 2 != 0);
        println!(
            "round {round}: autodev batch {:.1} s, through the service {:.1} s",
            cli[round], served[round]
        );
    }
    let (c, s) = (common::median(cli), common::median(served));
    println!(
        "median: autodev batch {c:.1} s ({:.1} tasks/s), through the service {s:.1} s ({:.1} tasks/s): throughput {:.2}x",
        n as f64 / c,
        n as f64 / s,
        c / s
    );
}

/// The same tasks through a service started for the round (its start is
/// not timed: a service is started once and serves many batches).
fn serve(bin: &Path, dir: &Path, tasks: &Path, jobs: &str, image: &str, n: usize) -> f64 {
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jobs",
            jobs,
            "--image",
            image,
            "--no-setup",
        ])
        .arg("--state")
        .arg(&state)
        .stderr(Stdio::piped())
        .spawn()
        .expect("autodev serve runs");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the service says where it listens")
            .unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split(';').next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let t = Instant::now();
    let created = curl(&[
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", tasks.display()),
        &format!("{url}/v1/batches"),
    ]);
    let id = created["id"].as_str().expect("a batch id").to_string();
    let wall = loop {
        let s = curl(&[&format!("{url}/v1/batches/{id}")]);
        if s["state"] == "done" {
            assert_eq!(s["done"].as_u64(), Some(n as u64), "{s}");
            assert_eq!(s["by_verdict"].get("sandbox_error"), None, "{s}");
            break t.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) on our own child's PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    wall
}

fn curl(args: &[&str]) -> serde_json::Value {
    let o = Command::new("curl")
        .arg("-sS")
        .args(args)
        .output()
        .expect("curl runs");
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}
