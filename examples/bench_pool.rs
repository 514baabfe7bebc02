//! Containers started ahead: what they take off a run's critical path, side
//! by side in one run.
//!
//! 1. Critical-path overhead of one test run (prepare + copy-in + exit →
//!    verdict, i.e. the wall time of `prepare` and `start` minus the
//!    command's own run), on a tiny and on a 5.8 MB workspace, with the
//!    container started ahead (`--warm 1`, warmed while "the model thinks")
//!    and without (`--warm 0`).
//! 2. A six-iteration `autodev run` with an instant (replay) model, per
//!    iteration, pool on and off, against one `docker run --rm` of the same
//!    image.
//! 3. One-shot `autodev exec` against `docker run --rm`, on its own and
//!    served by an `autodev pool` process (`exec --pool-socket`).
//!
//! Medians of R repetitions; the two sides alternate.
//!
//! Usage: cargo build --release && cargo run --release --example bench_pool -- [R]
//! Env: AUTODEV_BIN (default target/release/autodev), AUTODEV_BENCH_IMAGE.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autodev::sandbox::docker::DockerSandbox;
use autodev::sandbox::{NullSink, RunSpec, Sandbox};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let bin = common::binary();
    let image = common::image();
    println!("bench_pool: {reps} reps, image {image}");

    // 1. Critical path of one run.
    let tiny = tempfile::tempdir().unwrap();
    std::fs::write(tiny.path().join("a.py"), "print('ok')\n").unwrap();
    let big = tempfile::tempdir().unwrap();
    for i in 0..58 {
        // 100 kB of text each: 5.8 MB in all.
        let line = format!("# file {i}: {}\n", "x".repeat(90));
        std::fs::write(big.path().join(format!("f{i:02}.py")), line.repeat(1000)).unwrap();
    }
    let cold = DockerSandbox::connect().await.unwrap().with_warm(0);
    let warm = DockerSandbox::connect().await.unwrap().with_warm(1);
    println!("\n1. critical path of one run (ms: prepare + copy-in + exit to verdict)");
    println!("| workspace | pool off | pool on | on/off |");
    println!("|---|---|---|---|");
    for (name, dir) in [("tiny", tiny.path()), ("5.8 MB", big.path())] {
        let spec = {
            let mut s = RunSpec::new(dir, "true", image.clone());
            s.limits.max_copy_bytes = 64 << 20;
            s
        };
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            off.push(critical_path(&cold, &spec, false).await);
            on.push(critical_path(&warm, &spec, true).await);
        }
        warm.retire(&spec).await;
        let (off, on) = (common::median(off), common::median(on));
        println!("| {name} | {off:.0} | {on:.0} | {:.2} |", on / off);
    }

    // 2. Six iterations with an instant model, and 3. one-shot exec.
    let docker_run = common::median(
        (0..reps)
            .map(|_| {
                timed(Command::new("docker").args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    &image,
                    "true",
                ]))
            })
            .collect(),
    );
    let loop_dir = tempfile::tempdir().unwrap();
    let replay = loop_dir.path().join("replay.txt");
    let replies: String = (1..=6)
        .map(|i| format!("=== REPLY ===\nPATCH::step{i}.txt\n{i}\nENDPATCH\n"))
        .collect();
    std::fs::write(&replay, replies).unwrap();
    let (mut off, mut on, mut exec) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps.div_ceil(2) {
        for (pool, into) in [("0", &mut off), ("1", &mut on)] {
            let s = timed(
                Command::new(&bin)
                    .current_dir(loop_dir.path())
                    .args([
                        "run",
                        "--task",
                        "count to six",
                        "--runner",
                        "test -f step6.txt",
                    ])
                    .args(["-w", "ws", "--reset", "--no-zip", "--no-transcript", "-q"])
                    .arg("--replay")
                    .arg(&replay)
                    .args(["--max-iters", "6", "--image", &image, "--warm", pool]),
            );
            into.push(s / 6.0);
        }
    }
    // One-shot execs, without and with a pool process to share (the two
    // alternate, back to back as from a script).
    let socket = loop_dir.path().join("pool.sock");
    let mut pool = Command::new(&bin)
        .args(["pool", "--socket"])
        .arg(&socket)
        .args(["--image", &image, "--warm", "2"])
        .stderr(Stdio::null())
        .spawn()
        .expect("autodev pool starts");
    let via_pool = || {
        timed(
            Command::new(&bin)
                .current_dir(tiny.path())
                .args(["exec", "--image", &image, "--pool-socket"])
                .arg(&socket)
                .args(["--", "true"]),
        )
    };
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the pool did not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    via_pool();
    let mut pooled = Vec::new();
    for _ in 0..reps {
        exec.push(timed(
            Command::new(&bin)
                .current_dir(tiny.path())
                .args(["exec", "--image", &image, "--", "true"]),
        ));
        pooled.push(via_pool());
    }
    // SIGTERM: the pool removes its containers and exits.
    let _ = Command::new("kill").arg(pool.id().to_string()).status();
    let _ = pool.wait();
    let (off, on, exec, pooled) = (
        common::median(off),
        common::median(on),
        common::median(exec),
        common::median(pooled),
    );
    println!("\n2. six-iteration run, instant model (s per iteration) and 3. one-shot exec (s)");
    println!("| | s | × docker run --rm ({docker_run:.3} s) |");
    println!("|---|---|---|");
    println!("| run, pool off | {off:.3} | {:.2} |", off / docker_run);
    println!("| run, pool on | {on:.3} | {:.2} |", on / docker_run);
    println!("| exec | {exec:.3} | {:.2} |", exec / docker_run);
    println!(
        "| exec --pool-socket (an `autodev pool --pool 2` running) | {pooled:.3} | {:.2} |",
        pooled / docker_run
    );
}

/// Wall time of prepare + start minus the command's own run, in ms; with
/// `ahead`, the container is started first (as while a model thinks).
async fn critical_path(sb: &DockerSandbox, spec: &RunSpec, ahead: bool) -> f64 {
    if ahead {
        sb.warm(spec);
        for _ in 0..200 {
            if sb.waiting(spec) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let t = Instant::now();
    let o = sb
        .run(spec, &mut NullSink, &CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(o.verdict.as_str(), "passed");
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    // Removal is the engine's (not on the path) unless it is reported.
    wall - o.durations.run_ms as f64
}

fn timed(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert!(status.success(), "{cmd:?} failed");
    t.elapsed().as_secs_f64()
}
