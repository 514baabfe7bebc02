//! Dependency environments against the real Docker engine and the package
//! index these machines reach: a project's requirements are installed once
//! by the set-up phase, through autodev's egress proxy, and every later run
//! is a cache hit with no registry connection. The egress checks send
//! packets only to loopback, to names that never resolve (`*.invalid`) and
//! to this host's own bridge address (which the fence must close).

mod common;

use std::path::Path;
use std::process::Command;

use common::Sandboxed;
use serde_json::Value;

/// `autodev exec --json` on `ws` with `args` and `command`, its own cache
/// folder; returns the exit code and the JSON result.
fn exec(
    ws: &Path,
    cache: &Path,
    label: &(String, String),
    args: &[&str],
    command: &str,
) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_autodev"))
        .arg("exec")
        .sandboxed(label)
        .env("XDG_CACHE_HOME", cache)
        .args(["-w", ws.to_str().unwrap(), "--json"])
        .args(args)
        .args(["--", command])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or_else(|e| {
            panic!(
                "no JSON ({e}): {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.code().unwrap_or(-1), v)
}

/// This test's set-up networks still there (they carry its label).
fn setup_networks(label: &(String, String)) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            "label=autodev.setup=true",
        ])
        .args(["--filter", &format!("label={}={}", label.0, label.1)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn remove_image(tag: &str) {
    let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
}

#[ignore = "needs Docker and the package index: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn requirements_are_installed_once_and_every_later_run_is_a_cache_hit() {
    let _sb = require_docker!();
    let label = common::test_label("env-cache");
    let cache = tempfile::tempdir().unwrap();
    let ws = common::workspace(&[
        ("requirements.txt", "six==1.16.0\n"),
        (
            "test_six.py",
            "import six\n\ndef test_version():\n    assert six.__version__ == '1.16.0'\n",
        ),
    ]);
    let test = "python3 -m pytest -q -p no:cacheprovider";

    // Without the set-up, the import fails: the image has no six.
    let (code, v) = exec(ws.path(), cache.path(), &label, &["--no-setup"], test);
    assert_eq!((code, v["verdict"].as_str()), (1, Some("failed")), "{v}");

    let (code, first) = exec(ws.path(), cache.path(), &label, &[], test);
    assert_eq!(
        (code, first["verdict"].as_str()),
        (0, Some("passed")),
        "{first}"
    );
    let env = &first["record"]["environment"];
    assert_eq!(env["cache"], "miss", "{env}");
    assert_eq!(env["setup"], "pip install -r 'requirements.txt'");
    assert_eq!(env["manifests"][0]["path"], "requirements.txt");
    let conns = env["connections"].as_array().expect("the proxy's record");
    assert!(
        !conns.is_empty() && conns.iter().all(|c| c["allowed"] == true),
        "{env}"
    );
    let key = env["key"].clone();

    // A source change: same environment, from the cache, no registry connection.
    std::fs::write(
        ws.path().join("test_six.py"),
        "import six\n\ndef test_moves():\n    assert six.moves is not None\n",
    )
    .unwrap();
    let (code, second) = exec(ws.path(), cache.path(), &label, &[], test);
    assert_eq!(
        (code, second["verdict"].as_str()),
        (0, Some("passed")),
        "{second}"
    );
    let env2 = &second["record"]["environment"];
    assert_eq!(
        (env2["cache"].as_str(), &env2["key"]),
        (Some("hit"), &key),
        "{env2}"
    );
    assert!(
        env2.get("connections").is_none(),
        "a hit makes no connection: {env2}"
    );
    assert_eq!(second["record"]["image_id"], env["image_id"]);

    // A lockfile change: a new environment.
    std::fs::write(ws.path().join("requirements.txt"), "six==1.16.0\nsix\n").unwrap();
    let (code, third) = exec(ws.path(), cache.path(), &label, &[], test);
    assert_eq!(code, 0, "{third}");
    let env3 = &third["record"]["environment"];
    assert_eq!(env3["cache"], "miss", "{env3}");
    assert_ne!(env3["key"], key);

    for e in [env, env3] {
        remove_image(e["image"].as_str().unwrap());
    }
    common::assert_no_leak(&label);
    assert_eq!(
        setup_networks(&label),
        Vec::<String>::new(),
        "set-up networks left"
    );
}

/// A set-up step whose script tries `url` through the proxy it is given.
fn fetch(url: &str) -> String {
    format!("python3 -c \"import urllib.request; urllib.request.urlopen('{url}', timeout=10)\"")
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_set_up_reaches_nothing_off_its_allowlist() {
    let _sb = require_docker!();
    let label = common::test_label("env-egress");
    let cache = tempfile::tempdir().unwrap();
    let ws = common::workspace(&[("test_x.py", "def test_x():\n    pass\n")]);

    // A name off the list: refused, and the result says what to add.
    let (code, v) = exec(
        ws.path(),
        cache.path(),
        &label,
        &[
            "--setup",
            &fetch("https://registry.blocked.invalid/simple/"),
        ],
        "true",
    );
    assert_eq!(
        (code, v["verdict"].as_str()),
        (7, Some("setup_failed")),
        "{v}"
    );
    assert_eq!(
        v["error"],
        "set-up could not reach registry.blocked.invalid:443: not on the allowlist; \
         add --allow-host registry.blocked.invalid",
        "{v}"
    );

    // A listed name that resolves to this host: refused by address.
    let (code, v) = exec(
        ws.path(),
        cache.path(),
        &label,
        &[
            "--allow-host",
            "localhost",
            "--setup",
            &fetch("http://localhost:9/"),
        ],
        "true",
    );
    assert_eq!(code, 7, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("localhost:9: it resolves to")
            && v["error"].as_str().unwrap().contains("a loopback address"),
        "{v}"
    );

    // The engine's host, past the proxy: a service of this test listening
    // on all addresses gets no connection through the set-up's gateway.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let direct = format!(
        "python3 -c \"import os, socket; gw = os.environ['HTTP_PROXY'].split('//')[1].split(':')[0]; \
         s = socket.socket(); s.settimeout(3); s.connect((gw, {port}))\""
    );
    let (code, v) = exec(
        ws.path(),
        cache.path(),
        &label,
        &["--setup", &direct],
        "true",
    );
    assert_eq!(code, 7, "{v}");
    assert!(
        v["stderr"]["text"].as_str().unwrap().contains("timed out"),
        "{v}"
    );
    assert!(
        listener.accept().is_err(),
        "the set-up reached this host past the fence"
    );

    // `--allow-host none`: the set-up has no interface but loopback and no route.
    let look = "ls /sys/class/net; cat /proc/net/route; exit 3";
    let (code, v) = exec(
        ws.path(),
        cache.path(),
        &label,
        &["--allow-host", "none", "--setup", look],
        "true",
    );
    assert_eq!(code, 7, "{v}");
    let seen = v["stdout"]["text"].as_str().unwrap();
    assert_eq!(seen.lines().next(), Some("lo"), "{seen}");
    assert_eq!(
        seen.lines().filter(|l| !l.starts_with("Iface")).count(),
        1,
        "{seen}"
    );

    common::assert_no_leak(&label);
    assert_eq!(
        setup_networks(&label),
        Vec::<String>::new(),
        "set-up networks left"
    );
    let rules = Command::new("iptables")
        .args(["-S", "INPUT"])
        .output()
        .unwrap();
    // Another test's set-up may be running: a rule left behind is one
    // whose bridge is gone.
    let rules = String::from_utf8_lossy(&rules.stdout).to_string();
    let orphans: Vec<&str> = rules
        .split_whitespace()
        .filter(|w| w.starts_with("adsetup"))
        .filter(|b| !Path::new("/sys/class/net").join(b).exists())
        .collect();
    assert!(
        orphans.is_empty(),
        "the fence's rules were left: {orphans:?}"
    );
}

/// A project whose tests need a package from the index, with a nonce in
/// its requirements so its environment is this test's alone.
fn needs_six(nonce: &str) -> Vec<(String, String)> {
    vec![
        (
            "requirements.txt".into(),
            format!("# {nonce}\nsix==1.16.0\n"),
        ),
        (
            "test_six.py".into(),
            "import six\n\ndef test_six():\n    assert six.PY3\n".into(),
        ),
    ]
}

#[ignore = "needs Docker and the package index: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn sixteen_concurrent_tasks_with_the_same_manifests_build_one_environment() {
    let _sb = require_docker!();
    let label = common::test_label("env-batch");
    let cache = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let nonce = format!("{:x}", fastrand::u64(..));
    let files: serde_json::Map<String, Value> = needs_six(&nonce)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut lines: Vec<String> = (0..16)
        .map(|i| {
            serde_json::json!({"id": format!("t{i}"), "files": files,
                "runner": "python3 -m pytest -q -p no:cacheprovider"})
            .to_string()
        })
        .collect();
    // A task may turn its set-up off: the import then fails.
    lines.push(
        serde_json::json!({"id": "bare", "files": files, "setup": false,
            "runner": "python3 -m pytest -q -p no:cacheprovider"})
        .to_string(),
    );
    std::fs::write(d.path().join("tasks.jsonl"), lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autodev"))
        .arg("batch")
        .sandboxed(&label)
        .env("XDG_CACHE_HOME", cache.path())
        .current_dir(d.path())
        .args([
            "tasks.jsonl",
            "--out",
            "results.jsonl",
            "--jobs",
            "8",
            "--prefetch",
            "9",
        ])
        .output()
        .unwrap();
    let text = std::fs::read_to_string(d.path().join("results.jsonl")).unwrap_or_default();
    let results: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        results.len(),
        17,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (bare, built): (Vec<&Value>, Vec<&Value>) = results.iter().partition(|r| r["id"] == "bare");
    assert_eq!(bare[0]["verdict"], "failed", "{}", bare[0]);
    assert!(
        bare[0]["record"].get("environment").is_none(),
        "{}",
        bare[0]
    );
    let envs: Vec<&Value> = built.iter().map(|r| &r["record"]["environment"]).collect();
    assert!(built.iter().all(|r| r["verdict"] == "passed"), "{text}");
    let misses = envs.iter().filter(|e| e["cache"] == "miss").count();
    assert_eq!(misses, 1, "one build for 16 tasks: {text}");
    assert!(envs.iter().all(|e| e["key"] == envs[0]["key"]), "{text}");
    remove_image(envs[0]["image"].as_str().unwrap());
    common::assert_no_leak(&label);
    assert_eq!(
        setup_networks(&label),
        Vec::<String>::new(),
        "set-up networks left"
    );
}

#[ignore = "needs Docker and the package index: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn the_repair_loop_runs_a_project_with_dependencies_until_it_passes() {
    let _sb = require_docker!();
    let label = common::test_label("env-run");
    let cache = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let nonce = format!("{:x}", fastrand::u64(..));
    let mut files = needs_six(&nonce);
    files.push((
        "calc.py".into(),
        "def add(a, b):\n    return a - b\n".into(),
    ));
    files.push((
        "test_calc.py".into(),
        "import six\nfrom calc import add\n\ndef test_add():\n    assert six.PY3 and add(2, 3) == 5\n"
            .into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let seed = common::workspace(&refs);
    let replay = d.path().join("replay.txt");
    std::fs::write(
        &replay,
        "=== REPLY ===\nPATCH::notes.txt\nlooking\nENDPATCH\n\
         === REPLY ===\nPATCH::calc.py\ndef add(a, b):\n    return a + b\nENDPATCH\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autodev"))
        .arg("run")
        .sandboxed(&label)
        .env("XDG_CACHE_HOME", cache.path())
        .current_dir(d.path())
        .args(["--workspace", "ws", "--seed", seed.path().to_str().unwrap()])
        .args(["--task", "fix add", "--replay", replay.to_str().unwrap()])
        .args([
            "--runner",
            "python3 -m pytest -q -p no:cacheprovider",
            "--no-zip",
        ])
        .args(["--transcript", "t.jsonl", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = common::transcript(&d.path().join("t.jsonl"));
    let tests: Vec<&Value> = events.iter().filter(|e| e["event"] == "test").collect();
    let verdicts: Vec<&str> = tests
        .iter()
        .map(|t| t["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts.first(), Some(&"failed"), "{verdicts:?}");
    assert_eq!(verdicts.last(), Some(&"passed"), "{verdicts:?}");
    // Every test run ran in the environment; only the first built it.
    let envs: Vec<&Value> = tests.iter().map(|t| &t["record"]["environment"]).collect();
    assert!(envs.iter().all(|e| e["key"] == envs[0]["key"]), "{envs:?}");
    let misses = envs.iter().filter(|e| e["cache"] == "miss").count();
    assert_eq!(misses, 1, "built once, then found: {envs:?}");
    let tag = envs[0]["image"].as_str().unwrap().to_string();
    remove_image(&tag);
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker and the package index: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn env_build_list_and_show_describe_the_same_environment() {
    let _sb = require_docker!();
    let label = common::test_label("env-cli");
    let cache = tempfile::tempdir().unwrap();
    let nonce = format!("{:x}", fastrand::u64(..));
    let files = needs_six(&nonce);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let ws = common::workspace(&refs);
    let autodev = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_autodev"))
            .args(args)
            .env("XDG_CACHE_HOME", cache.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut build = Command::new(env!("CARGO_BIN_EXE_autodev"));
    let out = build
        .args(["env", "build"])
        .sandboxed(&label)
        .env("XDG_CACHE_HOME", cache.path())
        .args(["-w", ws.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(built["cache"], "miss", "{built}");
    let key = built["key"].as_str().unwrap();

    let listed: Vec<Value> = autodev(&["env", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mine: Vec<&Value> = listed
        .iter()
        .filter(|l| l["record"]["key"] == key)
        .collect();
    assert_eq!(mine.len(), 1, "{listed:?}");
    assert_eq!(mine[0]["record"]["image_id"], built["image_id"]);
    // Its own size is what the install added, not the shared base.
    let own = mine[0]["size_bytes"].as_u64().unwrap();
    let whole = mine[0]["image_bytes"].as_u64().unwrap();
    assert!(own > 0 && own < whole / 2, "{}", mine[0]);

    let shown: Value = serde_json::from_str(&autodev(&["env", "show", &key[..12]])).unwrap();
    assert_eq!(shown["image"], built["image"]);
    assert_eq!(
        shown["record"]["setup"],
        "pip install -r 'requirements.txt'"
    );

    remove_image(built["image"].as_str().unwrap());
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker and the package index: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_project_file_may_name_the_install_step_but_not_widen_the_allowlist() {
    let _sb = require_docker!();
    let label = common::test_label("env-project");
    let cache = tempfile::tempdir().unwrap();
    let nonce = format!("{:x}", fastrand::u64(..));
    let step = format!("pip install six==1.16.0 # {nonce}");
    let toml = format!("[setup]\ncommand = \"{step}\"\n");
    let ws = common::workspace(&[
        ("autodev.toml", toml.as_str()),
        (
            "test_six.py",
            "import six\n\ndef test_six():\n    assert six.PY3\n",
        ),
    ]);
    let test = "python3 -m pytest -q -p no:cacheprovider";
    let (code, v) = exec(ws.path(), cache.path(), &label, &[], test);
    assert_eq!((code, v["verdict"].as_str()), (0, Some("passed")), "{v}");
    assert_eq!(v["record"]["environment"]["setup"], step.as_str());
    remove_image(v["record"]["environment"]["image"].as_str().unwrap());

    std::fs::write(
        ws.path().join("autodev.toml"),
        format!("{toml}allow_host = [\"registry.elsewhere.invalid\"]\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autodev"))
        .args(["exec", "-w", ws.path().to_str().unwrap(), "--", test])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("setup.allow_host cannot be set in a project file"),
        "{err}"
    );
    common::assert_no_leak(&label);
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_set_up_that_fills_the_disk_is_stopped_and_nothing_is_cached() {
    let _sb = require_docker!();
    let label = common::test_label("env-disk");
    let cache = tempfile::tempdir().unwrap();
    let ws = common::workspace(&[("test_x.py", "def test_x():\n    pass\n")]);
    let limit = [
        "--allow-host",
        "none",
        "--setup-disk",
        "64m",
        "--setup-timeout",
        "60s",
    ];
    // All at once (caught before the commit), then without end (killed).
    for fill in [
        "dd if=/dev/zero of=/opt/autodev-env/fill bs=1M count=100 2>/dev/null",
        "i=0; while :; do dd if=/dev/zero of=/opt/autodev-env/f$i bs=1M count=16 2>/dev/null; i=$((i+1)); done",
    ] {
        let mut args = limit.to_vec();
        args.extend(["--setup", fill]);
        let t0 = std::time::Instant::now();
        let (code, v) = exec(ws.path(), cache.path(), &label, &args, "true");
        assert_eq!((code, v["verdict"].as_str()), (7, Some("setup_failed")), "{v}");
        let err = v["error"].as_str().unwrap();
        assert!(err.contains("over the set-up's disk limit of 67108864 bytes"), "{err}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(50), "not stopped in time");
    }
    // Neither set-up left an environment (their steps would be listed).
    let listed = Command::new(env!("CARGO_BIN_EXE_autodev"))
        .args(["env", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !listed.contains("/opt/autodev-env/f"),
        "a filled environment was cached: {listed}"
    );
    common::assert_no_leak(&label);
    assert_eq!(setup_networks(&label), Vec::<String>::new());
}
