//! Throughput benchmark: autodev against plain `docker` CLI loops, in one run.
//!
//! 1. N small Python tasks (a few inline files each): `autodev batch --jobs J`
//!    vs `xargs -P J` running one `docker run --rm` per task on the same image.
//! 2. One run on a 5.8 MB workspace: `autodev exec` vs `docker create` +
//!    `docker cp` + `docker start -a` + `docker rm` (median of R runs each).
//!
//! Both parts alternate the two sides over several rounds and report the
//! median, because the daemon's own timing varies by ±15 % from run to run.
//!
//! Usage: cargo build --release && cargo run --release --example bench_throughput -- [N] [J] [R] [ROUNDS]
//! Env: AUTODEV_BIN (default target/release/autodev), AUTODEV_BENCH_IMAGE.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100);
    let jobs = args.get(1).copied().unwrap_or(4);
    let reps = args.get(2).copied().unwrap_or(10);
    let rounds = args.get(3).copied().unwrap_or(3).max(1);
    let bin = common::binary();
    let image = common::image();
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "bench: {n} tasks, --jobs {jobs}, {reps} reps, image {image}, binary {}",
        bin.display()
    );

    // Part 1: many small tasks.
    let tasks = dir.path().join("tasks.jsonl");
    let mut jsonl = String::new();
    for i in 0..n {
        let t = dir.path().join(format!("t{i}"));
        std::fs::create_dir_all(&t).unwrap();
        let files = [
            ("calc.py", format!("def add(a, b):\n    return a + b  # task {i}\n")),
            ("util.py", "def double(x):\n    return 2 * x\n".to_string()),
            (
                "test_calc.py",
                "from calc import add\nfrom util import double\nassert add(2, 3) == 5\nassert double(4) == 8\nprint('ok')\n"
                    .to_string(),
            ),
        ];
        let mut obj = serde_json::Map::new();
        for (name, body) in &files {
            std::fs::write(t.join(name), body).unwrap();
            obj.insert(name.to_string(), serde_json::Value::String(body.clone()));
        }
        let line = serde_json::json!({"id": format!("t{i}"), "files": obj, "runner": "python3 test_calc.py"});
        jsonl.push_str(&format!("{line}\n"));
    }
    std::fs::write(&tasks, jsonl).unwrap();

    // Warm both paths so neither pays for cold caches.
    docker_loop(dir.path(), jobs.min(n), &image, jobs);
    autodev_batch(&bin, dir.path(), &tasks, jobs, &image, "warm");

    let mut ratios = Vec::new();
    for round in 0..rounds {
        // Alternate which side goes first so drift in the daemon cancels out.
        let (docker_s, autodev_s) = if round % 2 == 0 {
            let d = docker_loop(dir.path(), n, &image, jobs);
            (
                d,
                autodev_batch(&bin, dir.path(), &tasks, jobs, &image, "measured"),
            )
        } else {
            let a = autodev_batch(&bin, dir.path(), &tasks, jobs, &image, "measured");
            (docker_loop(dir.path(), n, &image, jobs), a)
        };
        println!(
            "batch round {}: autodev {:.2}s ({:.3} s/task) vs xargs -P{jobs} docker run --rm {:.2}s ({:.3} s/task): {:.2}",
            round + 1,
            autodev_s,
            autodev_s / n as f64,
            docker_s,
            docker_s / n as f64,
            autodev_s / docker_s
        );
        ratios.push(autodev_s / docker_s);
    }
    let r1 = common::median(ratios);
    println!("RATIO batch = {r1:.2} (median of {rounds} rounds; target <= 0.70)");

    // Part 2: one task with a 5.8 MB workspace.
    let big = dir.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for f in 0..58 {
        let mut data = vec![0u8; 100 * 1024];
        for b in data.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        std::fs::write(big.join(format!("blob{f:02}.bin")), data).unwrap();
    }
    let cmd = "ls /workspace | wc -l";
    let _ = docker_cp_sequence(&big, &image, cmd);
    let _ = autodev_exec(&bin, &big, &image, cmd);
    let d_times: Vec<f64> = (0..reps)
        .map(|_| docker_cp_sequence(&big, &image, cmd))
        .collect();
    let a_times: Vec<f64> = (0..reps)
        .map(|_| autodev_exec(&bin, &big, &image, cmd))
        .collect();
    let (dm, am) = (common::median(d_times), common::median(a_times));
    println!(
        "exec 5.8 MB: autodev exec median {am:.3}s vs docker create+cp+start -a+rm median {dm:.3}s"
    );
    println!("RATIO exec = {:.2} (target <= 0.80)", am / dm);
}

fn timed(mut c: Command) -> f64 {
    let t = Instant::now();
    let out = c.stdin(Stdio::null()).output().expect("command runs");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn docker_loop(dir: &Path, n: usize, image: &str, jobs: usize) -> f64 {
    let list: String = (0..n)
        .map(|i| format!("{}\n", dir.join(format!("t{i}")).display()))
        .collect();
    let listfile = dir.join("dirs.txt");
    std::fs::write(&listfile, list).unwrap();
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "xargs -P{jobs} -I{{}} docker run --rm --network none -v {{}}:/w -w /w {image} python3 test_calc.py >/dev/null < {}",
        listfile.display()
    ));
    timed(c)
}

fn autodev_batch(bin: &Path, dir: &Path, tasks: &Path, jobs: usize, image: &str, tag: &str) -> f64 {
    let out = dir.join(format!("results-{tag}.jsonl"));
    let _ = std::fs::remove_file(&out);
    let mut c = Command::new(bin);
    c.args([
        "batch",
        "--jobs",
        &jobs.to_string(),
        "--image",
        image,
        "--out",
    ])
    .arg(&out)
    .arg(tasks);
    let secs = timed(c);
    let text = std::fs::read_to_string(&out).unwrap();
    let passed = text
        .lines()
        .filter(|l| l.contains("\"verdict\":\"passed\""))
        .count();
    assert_eq!(
        passed,
        text.lines().count(),
        "not every task passed: {text}"
    );
    secs
}

fn docker_cp_sequence(ws: &Path, image: &str, cmd: &str) -> f64 {
    let t = Instant::now();
    let out = Command::new("docker")
        .args(["create", "--network", "none", image, "sh", "-c", cmd])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let src = format!("{}/.", ws.display());
    let run = |args: &[&str]| {
        let o = Command::new("docker").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&["cp", &src, &format!("{id}:/workspace")]);
    run(&["start", "-a", &id]);
    run(&["rm", &id]);
    t.elapsed().as_secs_f64()
}

fn autodev_exec(bin: &Path, ws: &Path, image: &str, cmd: &str) -> f64 {
    let mut c = Command::new(bin);
    c.args(["exec", "--json", "--image", image, "--workspace"])
        .arg(ws)
        .args(["--", cmd]);
    let secs = timed(c);
    std::thread::sleep(Duration::from_millis(10));
    secs
}
