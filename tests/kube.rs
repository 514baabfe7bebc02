//! The Kubernetes backend against a real cluster: Kubernetes 1.20.2 built
//! from Debian's source (`tests/kube/build.sh`), a control plane and two
//! kubelets on their own Docker engines, each in a network namespace this
//! test makes (`tests/kube/cluster.sh`). Every verdict, the lockdown that a
//! pod can carry, a batch over both nodes with exact results, a node killed
//! mid-batch, bad settings, and no pod left in the API or on a node.
//! Needs root, Docker and the binaries.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::Sandboxed;
use serde_json::Value;

const NS: &str = "autodev";

fn autodev(cluster: &Cluster) -> Command {
    let mut c = Command::new(common::bin());
    c.env("KUBECONFIG", cluster.kubeconfig())
        .env_remove("DOCKER_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `autodev exec --json` on the cluster; the parsed result and the process's output.
fn exec(
    cluster: &Cluster,
    ws: &Path,
    label: &(String, String),
    extra: &[&str],
    cmd: &str,
) -> (Value, Output) {
    let mut c = autodev(cluster);
    c.args(["exec", "--json", "--backend", "kubernetes"]);
    // The test image is loaded on each node; environments come from the registry.
    if !extra.contains(&"--image-pull-policy") {
        c.args(["--image-pull-policy", "never"]);
    }
    c.arg("-w")
        .arg(ws)
        .args(["--label", &format!("{}={}", label.0, label.1)]);
    if !extra.contains(&"--image") {
        c.args(["--image", &common::image()]);
    }
    let out = c
        .args(extra)
        .args(["--", cmd])
        .output()
        .expect("autodev runs");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "exec --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

fn no_pod_left(cluster: &Cluster, label: &(String, String)) {
    let left = cluster.pods_with(NS, label);
    assert!(left.is_empty(), "pods left behind: {left:?}");
}

#[test]
#[ignore = "needs root, Docker and Kubernetes binaries (tests/kube/build.sh); CI runs it"]
fn kubernetes_backend_on_a_real_two_node_cluster() {
    let t0 = Instant::now();
    let cluster = Cluster::start();
    eprintln!("cluster up in {:?}", t0.elapsed());

    // Setup: namespace, policy, and an honest answer about enforcement
    // (this cluster has no network plugin: the policy is not enforced).
    let out = autodev(&cluster)
        .args([
            "kube",
            "setup",
            "--image",
            &common::image(),
            "--image-pull-policy",
            "never",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("namespace autodev: created"), "{said}");
    assert!(said.contains("network denial: NOT enforced"), "{said}");

    verdicts(&cluster);
    lockdown(&cluster);
    doctor(&cluster);
    bad_settings(&cluster);
    batch_over_both_nodes(&cluster);
    node_killed_mid_batch(&cluster);
    repository_tasks_resume(&cluster);
    environment_through_the_registry(&cluster);
    eprintln!("all in {:?}", t0.elapsed());
}

/// A project with a dependency: its environment built on this host's
/// engine (the set-up phase, through autodev's egress proxy), pushed to the
/// cluster's registry and pulled by a node by digest; the second run a
/// cache hit that pushes nothing new.
fn environment_through_the_registry(cluster: &Cluster) {
    let label = common::test_label("kube-env");
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let requirements = format!("# {nonce}\nsix==1.16.0\n");
    let ws = common::workspace(&[
        ("requirements.txt", &requirements),
        (
            "test_six.py",
            "import six\n\ndef test_six():\n    assert six.__version__ == '1.16.0'\n",
        ),
    ]);
    let test = "python3 -m pytest -q -p no:cacheprovider";

    // Without a registry, a set-up asked for by name is refused, by name.
    let out = autodev(cluster)
        .args([
            "exec",
            "--backend",
            "kubernetes",
            "--image",
            &common::image(),
        ])
        .args(["--setup", "pip install -r requirements.txt", "-w"])
        .arg(ws.path())
        .args(["--", test])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("--registry HOST:PORT"), "{said}");

    let registry = cluster.registry();
    let args = [
        "--registry",
        registry.as_str(),
        "--image-pull-policy",
        "if-not-present",
    ];
    let (first, _) = exec(cluster, ws.path(), &label, &args, test);
    assert_eq!(first["verdict"], "passed", "{first}");
    assert_eq!(first["tests"]["passed"], 1, "{first}");
    let env = &first["record"]["environment"];
    assert_eq!(env["cache"], "miss", "{env}");
    let pulled = env["pulled_from"]
        .as_str()
        .expect("pulled_from")
        .to_string();
    let repository = format!("{registry}/autodev-env/python");
    assert!(
        pulled.starts_with(&format!("{repository}@sha256:")),
        "{pulled}"
    );
    assert!(
        first["record"]["engine"]
            .as_str()
            .unwrap()
            .contains("node-"),
        "{first}"
    );
    // The node pulled it by digest from the registry: nodes got the test
    // image by `docker load`, which files no digest.
    let digest = &pulled[repository.len() + 1..];
    let log = cluster.registry_log();
    assert!(
        log.contains(&format!("GET /v2/autodev-env/python/manifests/{digest}")),
        "no pull by digest in the registry's log:\n{log}"
    );
    let on_node = (1..=2).any(|i| {
        Command::new("docker")
            .args(["-H", &cluster.engine(i), "image", "inspect", &pulled])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(on_node, "no node holds {pulled}");

    // Source edits never rebuild: a hit, the same digest, no connection.
    std::fs::write(
        ws.path().join("test_more.py"),
        "import six\n\ndef test_py3():\n    assert six.PY3\n",
    )
    .unwrap();
    let (second, _) = exec(cluster, ws.path(), &label, &args, test);
    assert_eq!(second["verdict"], "passed", "{second}");
    assert_eq!(second["tests"]["passed"], 2, "{second}");
    let env2 = &second["record"]["environment"];
    assert_eq!(env2["cache"], "hit", "{env2}");
    assert_eq!(env2["pulled_from"], pulled.as_str(), "{env2}");
    assert!(env2.get("connections").is_none(), "{env2}");
    eprintln!(
        "environment on the cluster: built and pushed in {} ms, found and pushed again in {} ms",
        env["setup_ms"], env2["setup_ms"]
    );
    // Six batch tasks with these manifests, four at once: one environment,
    // published by one run at a time (its push tag is shared), each task
    // on the same digest.
    let dir = tempfile::tempdir().unwrap();
    let files = serde_json::json!({"requirements.txt": requirements,
        "test_six.py": "import six\n\ndef test_six():\n    assert six.PY3\n"});
    let lines: Vec<String> = (0..6)
        .map(|i| {
            serde_json::json!({"id": format!("e{i}"), "files": files, "runner": test}).to_string()
        })
        .collect();
    std::fs::write(dir.path().join("tasks.jsonl"), lines.join("\n")).unwrap();
    let out = autodev(cluster)
        .current_dir(dir.path())
        .args([
            "batch",
            "tasks.jsonl",
            "--out",
            "results.jsonl",
            "--jobs",
            "4",
        ])
        .args(["--backend", "kubernetes"])
        .args(args)
        .sandboxed(&label)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(dir.path().join("results.jsonl")).unwrap_or_default();
    let results: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 6, "{}", String::from_utf8_lossy(&out.stderr));
    for r in &results {
        assert_eq!(r["verdict"], "passed", "{r}");
        assert_eq!(
            r["record"]["environment"]["pulled_from"],
            pulled.as_str(),
            "{r}"
        );
    }

    no_pod_left(cluster, &label);
    let tag = env["image"].as_str().unwrap();
    let pushed_tag = Command::new("docker")
        .args(["image", "inspect", &format!("{registry}/{tag}")])
        .output()
        .unwrap();
    assert!(
        !pushed_tag.status.success(),
        "the push's tag is left on this host's engine"
    );
    let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
}

fn verdicts(cluster: &Cluster) {
    let label = common::test_label("kube-verdicts");
    let ws = common::workspace(&[("test_a.py", "def test_ok():\n    assert 1 + 1 == 2\n")]);
    let cases: [(&str, &[&str], &str, &str, i32); 6] = [
        ("passed", &[], "python3 -m pytest -q", "passed", 0),
        ("failed", &[], "echo boom >&2; exit 3", "failed", 1),
        (
            "timed_out",
            &["--timeout", "3s"],
            "sleep 60",
            "timed_out",
            124,
        ),
        (
            "oom",
            &["--memory", "64m"],
            "python3 -c 'x = bytearray(256 * 1024 * 1024)'",
            "oom_killed",
            137,
        ),
        (
            "no_tests",
            &[],
            "rm test_a.py; python3 -m pytest -q || true",
            "no_tests",
            5,
        ),
        (
            "sandbox_error",
            &["--image", "autodev/nosuch:latest"],
            "true",
            "sandbox_error",
            125,
        ),
    ];
    for (name, extra, cmd, verdict, code) in cases {
        let (v, out) = exec(cluster, ws.path(), &label, extra, cmd);
        assert_eq!(v["verdict"], verdict, "{name}: {v}");
        assert_eq!(out.status.code(), Some(code), "{name}: {v}");
        if name == "passed" {
            assert_eq!(v["tests"]["passed"], 1, "the report is read: {v}");
            assert!(
                v["record"]["engine"].as_str().unwrap().contains("node-"),
                "{v}"
            );
        }
        if name == "failed" {
            assert_eq!(v["stderr"]["text"], "boom\n", "{v}");
            assert_eq!(v["exit_code"], 3);
        }
        if name == "sandbox_error" {
            assert!(
                v["error"].as_str().unwrap().contains("autodev/nosuch"),
                "{v}"
            );
        }
    }
    no_pod_left(cluster, &label);
}

fn lockdown(cluster: &Cluster) {
    let label = common::test_label("kube-lockdown");
    let ws = common::workspace(&[("f.txt", "x")]);
    let probe = "id -u; id -g; \
        grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
        touch /x 2>&1 || true; \
        cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
        echo secret=${AUTODEV_HOST_SECRET:-absent}; \
        head -c 300000 /dev/zero | tr '\\0' y";
    let out = autodev(cluster)
        .env("AUTODEV_HOST_SECRET", "leak")
        .args([
            "exec",
            "--json",
            "--backend",
            "kubernetes",
            "--image-pull-policy",
            "never",
        ])
        .arg("-w")
        .arg(ws.path())
        .sandboxed(&label)
        .args(["--memory", "200m", "--output-limit", "64KiB", "--", probe])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "passed", "{v}");
    let text = v["stdout"]["text"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "1000", "non-root: {text}");
    assert_eq!(lines[1], "1000", "{text}");
    assert!(
        text.contains("CapEff:\t0000000000000000"),
        "no capabilities: {text}"
    );
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "seccomp filter: {text}");
    assert!(
        text.contains("Read-only file system"),
        "read-only root: {text}"
    );
    assert!(
        text.contains(&format!("{}\n", 200 * 1024 * 1024)),
        "memory limit: {text}"
    );
    assert!(text.contains("secret=absent"), "host environment: {text}");
    assert!(
        v["stdout"]["total_bytes"].as_u64().unwrap() > 300_000,
        "{v}"
    );
    assert!(
        v["stdout"]["dropped_bytes"].as_u64().unwrap() > 200_000,
        "output bounded: {v}"
    );
    assert!(text.len() < 70 * 1024, "output bounded: {}", text.len());
    no_pod_left(cluster, &label);
}

/// The doctor tells this cluster's two gaps apart from what holds: no
/// per-pod process limit, no policy-enforcing network plugin.
fn doctor(cluster: &Cluster) {
    let out = autodev(cluster)
        .args([
            "doctor",
            "--json",
            "--backend",
            "kubernetes",
            "--image-pull-policy",
            "never",
        ])
        .args(["--image", &common::image()])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{v}");
    let status = |check: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check)
            .map(|f| f["status"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    for (check, want) in [
        ("process limit", "broken"),
        ("no network", "broken"),
        ("memory limit", "held"),
        ("wall-clock limit", "held"),
        ("read-only root", "held"),
        ("privileges", "held"),
        ("output limit", "held"),
        ("no leftovers", "held"),
    ] {
        assert_eq!(status(check), want, "{check}: {v}");
    }
}

fn bad_settings(cluster: &Cluster) {
    let ws = common::workspace(&[("f.txt", "x")]);
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let t = Instant::now();
        let mut c = autodev(cluster);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c
            .args(["exec", "--backend", "kubernetes", "-w"])
            .arg(ws.path())
            .args(extra)
            .args(["--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}: {err}",
            t.elapsed()
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        (out.status.code(), err)
    };
    let (code, err) = run(&[("KUBECONFIG", "/nonexistent/kubeconfig")], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("KUBECONFIG"), "{err}");
    let dead = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        dead.path(),
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n\
         current-context: c\n",
    )
    .unwrap();
    let (code, err) = run(&[("KUBECONFIG", dead.path().to_str().unwrap())], &[]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("cannot reach the Kubernetes cluster"), "{err}");
    let (code, err) = run(&[], &["--namespace", "nosuch"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("autodev kube setup --namespace nosuch"),
        "{err}"
    );
    let (code, err) = run(&[], &["--engine", "unix:///var/run/docker.sock"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run(&[], &["--cpus", "64"]);
    assert_eq!(code, Some(2), "more CPUs than any node: {err}");
}

fn batch(cluster: &Cluster, dir: &Path, label: &(String, String)) -> Command {
    let mut c = autodev(cluster);
    c.current_dir(dir)
        .args(["batch", "tasks.jsonl", "--out", "results.jsonl", "--json"])
        .args(["--backend", "kubernetes", "--image-pull-policy", "never"])
        .args([
            "--cpus",
            "0.5",
            "--jobs",
            "4",
            "--retries",
            "4",
            "--timeout",
            "60s",
        ])
        .sandboxed(label);
    c
}

/// Each task exactly once, with the verdict its exit code gives; the nodes it ran on.
fn exact(dir: &Path, want: &HashMap<String, &'static str>) -> (HashSet<String>, Vec<Value>) {
    let results: Vec<Value> = std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut seen = HashSet::new();
    let mut nodes = HashSet::new();
    for r in &results {
        let id = r["id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone()), "{id} appears twice");
        assert_eq!(r["verdict"], want[&id], "{id}: {r}");
        let engine = r["record"]["engine"].as_str().unwrap_or_default();
        nodes.insert(engine.rsplit(' ').next().unwrap_or_default().to_string());
    }
    assert_eq!(seen.len(), want.len(), "missing results");
    (nodes, results)
}

fn batch_over_both_nodes(cluster: &Cluster) {
    let label = common::test_label("kube-batch");
    let dir = tempfile::tempdir().unwrap();
    let want = common::sleep_tasks(dir.path(), 12, 1.0);
    let out = batch(cluster, dir.path(), &label).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (nodes, _) = exact(dir.path(), &want);
    assert_eq!(
        nodes,
        HashSet::from(["node-1".to_string(), "node-2".to_string()])
    );
    no_pod_left(cluster, &label);
}

/// SWE-bench-style repository tasks on the cluster: killed with SIGKILL
/// mid-evaluation and resumed, each instance exactly once and resolved,
/// no pod left.
fn repository_tasks_resume(cluster: &Cluster) {
    let label = common::test_label("kube-swe");
    let dir = tempfile::tempdir().unwrap();
    let ids = common::swe::gold_set(dir.path(), 6);
    let args = [
        "--backend",
        "kubernetes",
        "--image-pull-policy",
        "never",
        "--cpus",
        "0.5",
        "-j",
        "2",
    ];
    let on_cluster = |extra: &[&str]| {
        let mut all = args.to_vec();
        all.extend(extra);
        let mut c = common::swe::evaluation(dir.path(), &label, &all);
        c.env("KUBECONFIG", cluster.kubeconfig())
            .env_remove("DOCKER_HOST");
        c
    };
    common::swe::kill_and_resume(dir.path(), &ids, on_cluster);
    // The killed process's pods end by themselves (their stdin closed)
    // but stay as objects: `autodev clean` removes those of dead owners.
    let out = autodev(cluster)
        .args(["clean", "--backend", "kubernetes", "--label"])
        .arg(format!("{}={}", label.0, label.1))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_pod_left(cluster, &label);
}

fn node_killed_mid_batch(cluster: &Cluster) {
    let label = common::test_label("kube-node-kill");
    let dir = tempfile::tempdir().unwrap();
    let want = common::sleep_tasks(dir.path(), 16, 3.0);
    let mut child = batch(cluster, dir.path(), &label).spawn().unwrap();
    // Kill node 2 once it is running some of the batch's pods.
    common::wait_until("pods run on node-2", Duration::from_secs(90), || {
        cluster
            .pods_with(NS, &label)
            .iter()
            .any(|(_, node, phase)| node == "node-2" && phase == "Running")
    });
    let killed = Instant::now();
    cluster.kill(2);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            panic!("batch did not end within 240 s of the node kill");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("batch ended {:?} after the node kill", killed.elapsed());
    assert_eq!(status.code(), Some(0), "every task has a result");
    let (_, results) = exact(dir.path(), &want);
    assert!(
        results.iter().any(|r| r["attempts"].as_u64().unwrap() > 1),
        "the lost node's tasks were re-run: {results:?}"
    );
    no_pod_left(cluster, &label);
    // The surviving node's engine ends every container of the deleted pods.
    common::wait_until(
        "node-1 has no pod container",
        Duration::from_secs(60),
        || cluster.node_containers(1, NS).is_empty(),
    );
}
