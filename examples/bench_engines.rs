//! Multi-engine benchmark, on engines in network namespaces made here
//! (`tests/fleet.sh`; needs root). Prints, in one run:
//!
//! 1. per-run overhead of `autodev exec -- true` on the local engine, over
//!    TCP, over mutual TLS and as a Kubernetes pod (median of R runs each,
//!    `total_ms` and wall);
//! 2. an N-task batch over 1 engine vs over 3 engines with the same total
//!    slots (the engines share this machine's cores, so the figure is the
//!    cost of spreading, not a speed-up);
//! 3. how long a batch takes to recover from an engine killed mid-batch,
//!    from a cut link, and from a Kubernetes node killed mid-batch: from
//!    the fault to the first re-run result.
//!
//! The Kubernetes rows need the binaries of `tests/kube/build.sh`
//! (`AUTODEV_KUBE_BIN`, default target/kube-1.20.2/bin); without them they
//! say so and are left out.
//!
//! Usage: cargo build --release && cargo run --release --example bench_engines -- [N] [R]
//! Env: AUTODEV_BIN (default target/release/autodev).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Fleet {
    tag: String,
    dir: PathBuf,
    net: String,
}

impl Fleet {
    fn sh(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet.sh");
        let ok = Command::new("bash")
            .arg(script)
            .arg(args[0])
            .args([
                &self.tag,
                &self.dir.to_string_lossy().into_owned(),
                &self.net,
            ])
            .args(&args[1..])
            .status()
            .expect("bash runs")
            .success();
        assert!(ok, "fleet.sh {args:?} failed");
    }
    fn url(&self, i: usize) -> String {
        format!("tcp://{}.{}:2375", self.net, 10 + i)
    }
    fn tls_url(&self, i: usize) -> String {
        format!("tcp://{}.{}:2376", self.net, 10 + i)
    }
    fn tls_args(&self) -> Vec<String> {
        let t = self.dir.join("tls");
        ["ca", "cert", "key"]
            .iter()
            .flat_map(|f| {
                [
                    format!("--tls-{f}"),
                    t.join(format!("{f}.pem")).display().to_string(),
                ]
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.sh(&["down"]);
    }
}

/// A two-node Kubernetes cluster (`tests/kube/cluster.sh`), named as a fleet is.
struct Cluster {
    tag: String,
    dir: PathBuf,
    net: String,
}

impl Cluster {
    fn sh(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube/cluster.sh");
        let f = self;
        let ok = Command::new("bash")
            .arg(script)
            .arg(args[0])
            .args([&f.tag, &f.dir.to_string_lossy().into_owned(), &f.net])
            .args(&args[1..])
            .stdout(Stdio::null())
            .status()
            .expect("bash runs")
            .success();
        assert!(ok, "cluster.sh {args:?} failed");
    }
    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.sh(&["down"]);
    }
}

const KUBE: [&str; 4] = ["--backend", "kubernetes", "--image-pull-policy", "never"];

/// The cluster, or why there is none.
fn cluster(bin: &Path) -> Result<Cluster, String> {
    let kbin = std::env::var("AUTODEV_KUBE_BIN").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kube-1.20.2/bin"),
        PathBuf::from,
    );
    if !kbin.join("kubelet").exists() {
        return Err(format!(
            "no Kubernetes binaries in {} (tests/kube/build.sh)",
            kbin.display()
        ));
    }
    let c = Cluster {
        tag: format!("kb{}", std::process::id() % 10_000),
        dir: std::env::temp_dir().join(format!("autodev-bench-cluster-{}", std::process::id())),
        net: "10.249.10".into(),
    };
    c.sh(&["up", &kbin.to_string_lossy(), "autodev/python:latest"]);
    let ok = Command::new(bin)
        .env("KUBECONFIG", c.kubeconfig())
        .args(["kube", "setup", "--image-pull-policy", "never"])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kube setup");
    Ok(c)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200);
    let reps = args.get(1).copied().unwrap_or(10);
    let bin = common::binary();
    let fleet = Fleet {
        tag: format!("ab{}", std::process::id() % 10_000),
        dir: std::env::temp_dir().join(format!("autodev-bench-fleet-{}", std::process::id())),
        net: "10.249.9".into(),
    };
    let t = Instant::now();
    fleet.sh(&["up", "4", "4"]);
    println!(
        "fleet: 3 plain engines + 1 mutual-TLS engine up in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 1..=4 {
            let (fleet, bin) = (&fleet, &bin);
            s.spawn(move || {
                let mut c = Command::new(bin);
                c.args(["images", "push", "python", "--engine"]);
                if i == 4 {
                    c.arg(fleet.tls_url(4)).args(fleet.tls_args());
                } else {
                    c.arg(fleet.url(i));
                }
                assert!(
                    c.stderr(Stdio::null()).status().unwrap().success(),
                    "push to {i}"
                );
            });
        }
    });
    println!(
        "image copied to 4 engines (images push, in parallel) in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let cluster = cluster(&bin);
    match &cluster {
        Ok(_) => println!(
            "Kubernetes 1.20.2, control plane + 2 nodes, up in {:.1}s",
            t.elapsed().as_secs_f64()
        ),
        Err(why) => println!("Kubernetes rows left out: {why}"),
    }
    let kubeconfig = cluster.as_ref().map(|c| c.kubeconfig()).ok();

    // 1. Per-run overhead.
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("a.py"), "print(1)\n").unwrap();
    let one = |engine: &[String]| -> (f64, f64) {
        let t = Instant::now();
        let mut c = Command::new(&bin);
        if let Some(k) = &kubeconfig {
            c.env("KUBECONFIG", k);
        }
        let out = c
            .args(["exec", "--json", "--workspace"])
            .arg(ws.path())
            .args(engine)
            .args(["--", "true"])
            .output()
            .unwrap();
        let wall = t.elapsed().as_secs_f64() * 1000.0;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("exec --json");
        (v["durations"]["total_ms"].as_f64().unwrap(), wall)
    };
    let mut cases: Vec<(&str, Vec<String>)> = vec![
        ("local unix socket", vec![]),
        ("TCP (netns)", vec!["--engine".into(), fleet.url(1)]),
        ("mutual TLS (netns)", {
            let mut a = vec!["--engine".into(), fleet.tls_url(4)];
            a.extend(fleet.tls_args());
            a
        }),
    ];
    if kubeconfig.is_some() {
        cases.push((
            "Kubernetes pod (netns)",
            KUBE.iter().map(|a| a.to_string()).collect(),
        ));
    }
    println!("\n| engine | run total_ms (median of {reps}) | wall ms incl. connect (median) |");
    println!("|---|---|---|");
    for (name, engine) in &cases {
        let (mut tot, mut wall) = (Vec::new(), Vec::new());
        one(engine);
        for _ in 0..reps {
            let (a, b) = one(engine);
            tot.push(a);
            wall.push(b);
        }
        println!(
            "| {name} | {:.0} | {:.0} |",
            common::median(tot),
            common::median(wall)
        );
    }

    // 2. Batch over 1 vs 3 engines, same total slots.
    let d = tempfile::tempdir().unwrap();
    let tasks: String = (0..n)
        .map(|i| format!("{{\"id\":\"t{i}\",\"runner\":\"python3 -c 'print({i})'\"}}\n"))
        .collect();
    std::fs::write(d.path().join("tasks.jsonl"), tasks).unwrap();
    let batch = |engines: &[String], out: &str| -> f64 {
        let _ = std::fs::remove_file(d.path().join(out));
        let t = Instant::now();
        let mut c = Command::new(&bin);
        c.current_dir(d.path()).args([
            "batch",
            "tasks.jsonl",
            "--out",
            out,
            "--jobs",
            "4",
            "--retries",
            "0",
        ]);
        for e in engines {
            c.args(["--engine", e]);
        }
        let ok = c.stderr(Stdio::null()).status().unwrap().success();
        assert!(ok, "batch failed");
        t.elapsed().as_secs_f64()
    };
    let single = vec![format!("{}#slots=4", fleet.url(1))];
    let three = vec![
        format!("{}#slots=2", fleet.url(1)),
        format!("{}#slots=1", fleet.url(2)),
        format!("{}#slots=1", fleet.url(3)),
    ];
    let (mut t1, mut t3) = (Vec::new(), Vec::new());
    for round in 0..3 {
        t1.push(batch(&single, &format!("r1-{round}.jsonl")));
        t3.push(batch(&three, &format!("r3-{round}.jsonl")));
    }
    let (m1, m3) = (common::median(t1.clone()), common::median(t3.clone()));
    println!("\n| {n} tasks, --jobs 4 | rounds (s) | median (s) |");
    println!("|---|---|---|");
    println!("| 1 engine, 4 slots | {t1:.1?} | {m1:.1} |");
    println!("| 3 engines, 2+1+1 slots | {t3:.1?} | {m3:.1} |");
    println!("distribution overhead: {:+.1} %", (m3 / m1 - 1.0) * 100.0);

    // 3. Recovery from a killed engine and from a cut link.
    let slow: String = (0..16)
        .map(|i| format!("{{\"id\":\"s{i}\",\"runner\":\"sleep 2\"}}\n"))
        .collect();
    std::fs::write(d.path().join("slow.jsonl"), slow).unwrap();
    println!("\n| fault on one of 2 hosts, mid-batch (16 × sleep 2, 4 at once) | fault → first re-run result (s) | batch total (s) |");
    println!("|---|---|---|");
    // Each fault on a host of its own: a killed host stays dead.
    let mut faults = vec![("kill engine", 2usize), ("cut engine link", 3)];
    if cluster.is_ok() {
        faults.push(("kill Kubernetes node", 2));
    }
    for (fault, victim) in faults {
        let victim_arg = victim.to_string();
        let out = d.path().join(format!("{}.jsonl", fault.replace(' ', "-")));
        let t0 = Instant::now();
        let mut c = Command::new(&bin);
        c.current_dir(d.path())
            .args(["batch", "slow.jsonl", "--out"])
            .arg(&out);
        match (&cluster, fault) {
            (Ok(k), "kill Kubernetes node") => {
                c.env("KUBECONFIG", k.kubeconfig()).args(KUBE).args([
                    "--cpus",
                    "0.5",
                    "--jobs",
                    "4",
                    "--retries",
                    "4",
                ]);
            }
            _ => {
                c.args(["--engine", &format!("{}#slots=2", fleet.url(1))])
                    .args(["--engine", &format!("{}#slots=2", fleet.url(victim))]);
            }
        }
        let mut child = c
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(5));
        match (&cluster, fault) {
            (Ok(k), "kill Kubernetes node") => k.sh(&["kill", &victim_arg]),
            (_, "kill engine") => fleet.sh(&["kill", &victim_arg]),
            _ => fleet.sh(&["cut", &victim_arg]),
        }
        let tf = Instant::now();
        let mut recovered = None;
        while child.try_wait().unwrap().is_none() && tf.elapsed() < Duration::from_secs(120) {
            if recovered.is_none() {
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                if text.lines().any(|l| !l.contains("\"attempts\":1,")) {
                    recovered = Some(tf.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        println!(
            "| {fault} | {} | {:.1} |",
            recovered.map_or("-".into(), |r| format!("{r:.1}")),
            t0.elapsed().as_secs_f64()
        );
        if fault == "cut engine link" {
            fleet.sh(&["mend", &victim_arg]);
        }
    }
}
