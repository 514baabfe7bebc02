//! Runtime benchmark (needs root, Docker, runsc, podman and catatonit; starts
//! its own engines). Prints, in one run, for runc (the local engine), gVisor
//! (`runsc`, on an engine of its own in a network namespace, `tests/fleet.sh`)
//! and Podman (a rootful API service of its own):
//!
//! 1. per-run overhead of `autodev exec -- true` on the same workspace
//!    (median of R runs: `total_ms` as autodev measures it, and the wall
//!    time of the whole command, connect included);
//! 2. what share of `autodev doctor`'s hostile checks each holds.
//!
//! Usage: cargo build --release && cargo run --release --example bench_runtimes -- [R]
//! Env: AUTODEV_BIN (default target/release/autodev).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A dockerd with runsc registered, in a network namespace.
struct GvisorEngine {
    dir: PathBuf,
}

impl GvisorEngine {
    const TAG: &'static str = "rb";
    const NET: &'static str = "10.249.11";

    fn sh(&self, cmd: &str, extra: &[&str]) -> bool {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet.sh"))
            .args([cmd, Self::TAG, &self.dir.to_string_lossy(), Self::NET])
            .args(extra)
            .env(
                "FLEET_DAEMON_JSON",
                r#"{"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=none"]}}}"#,
            )
            .status()
            .is_ok_and(|s| s.success())
    }
    fn url(&self) -> String {
        format!("unix://{}/h1/docker.sock", self.dir.display())
    }
}

impl Drop for GvisorEngine {
    fn drop(&mut self) {
        self.sh("down", &[]);
    }
}

/// A rootful Podman API service with storage of its own.
struct PodmanService {
    dir: PathBuf,
    child: Child,
}

impl PodmanService {
    fn start(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("podman")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}/podman.sock", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman runs");
        let t = Instant::now();
        while !dir.join("podman.sock").exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        PodmanService { dir, child }
    }
    fn url(&self) -> String {
        format!("unix://{}/podman.sock", self.dir.display())
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["rm", "-af"])
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let prefix = format!("{}/", self.dir.display());
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        under.sort_by(|a, b| b.cmp(a));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let bin = common::binary();
    let tmp = std::env::temp_dir();
    let pid = std::process::id();

    let gvisor = GvisorEngine {
        dir: tmp.join(format!("autodev-bench-gvisor-{pid}")),
    };
    assert!(gvisor.sh("up", &["1"]), "gVisor engine did not start");
    let podman = PodmanService::start(tmp.join(format!("autodev-bench-podman-{pid}")));
    for url in [gvisor.url(), podman.url()] {
        let ok = Command::new(&bin)
            .args(["images", "push", "python", "--engine", &url])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "images push to {url}");
    }

    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("a.py"), "print(1)\n").unwrap();
    let lanes: [(&str, Vec<String>); 3] = [
        ("runc (local engine)", vec![]),
        (
            "runsc (gVisor, own engine)",
            vec![
                "--engine".into(),
                gvisor.url(),
                "--runtime".into(),
                "runsc".into(),
            ],
        ),
        (
            "Podman 4.3 (rootful, runc)",
            vec!["--engine".into(), podman.url()],
        ),
    ];
    println!("\n| runtime | `exec -- true` total_ms (median of {reps}) | wall ms (median) | doctor: held / checks | broken |");
    println!("|---|---|---|---|---|");
    for (name, args) in &lanes {
        let one = || -> (f64, f64) {
            let t = Instant::now();
            let out = Command::new(&bin)
                .args(["exec", "--json", "--workspace"])
                .arg(ws.path())
                .args(args)
                .args(["--", "true"])
                .output()
                .unwrap();
            let wall = t.elapsed().as_secs_f64() * 1000.0;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("exec --json");
            assert_eq!(v["verdict"], "passed", "{name}: {v}");
            (v["durations"]["total_ms"].as_f64().unwrap(), wall)
        };
        one();
        let (mut tot, mut wall) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (a, b) = one();
            tot.push(a);
            wall.push(b);
        }
        let out = Command::new(&bin)
            .args(["doctor", "--json"])
            .args(args)
            .output()
            .unwrap();
        let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
        let findings = d["findings"].as_array().unwrap();
        let with = |s: &str| findings.iter().filter(|f| f["status"] == s).count();
        let broken: Vec<&str> = findings
            .iter()
            .filter(|f| f["status"] == "broken")
            .filter_map(|f| f["check"].as_str())
            .collect();
        println!(
            "| {name} | {:.0} | {:.0} | {} / {} ({} unknown) | {} |",
            common::median(tot),
            common::median(wall),
            with("held"),
            findings.len(),
            with("unknown"),
            if broken.is_empty() {
                "-".into()
            } else {
                broken.join(", ")
            }
        );
    }
}
