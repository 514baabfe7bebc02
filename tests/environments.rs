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

fn setup_networks() -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            "label=autodev.setup=true",
        ])
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
        setup_networks(),
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
        setup_networks(),
        Vec::<String>::new(),
        "set-up networks left"
    );
    let rules = Command::new("iptables")
        .args(["-S", "INPUT"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains("adsetup"),
        "the fence's rules were left"
    );
}
