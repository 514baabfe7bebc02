//! Shared helpers for the integration tests: Docker availability policy,
//! per-test labels and the leak check.
#![allow(dead_code)]

pub mod cluster;
pub mod fleet;
pub mod service;
pub mod swe;

use std::path::{Path, PathBuf};
use std::process::Command;

use autodev::config::Limits;
use autodev::sandbox::docker::DockerSandbox;
use autodev::sandbox::RunSpec;

/// Image the tests run in: the real default image, built by `.ci/run`.
pub fn image() -> String {
    std::env::var("AUTODEV_TEST_IMAGE")
        .unwrap_or_else(|_| autodev::profile::DEFAULT_IMAGE.to_string())
}

/// The OCI runtime the suites run under: `AUTODEV_TEST_RUNTIME` (CI's
/// second lane sets `runsc`), else the engine's default.
pub fn runtime() -> Option<String> {
    std::env::var("AUTODEV_TEST_RUNTIME")
        .ok()
        .filter(|r| !r.is_empty())
}

/// Whether the suites run under gVisor, where a few things differ (see README, "gVisor").
pub fn gvisor() -> bool {
    runtime().as_deref() == Some("runsc")
}

/// Connects to Docker and checks the test image; panics with the reason
/// otherwise. Tests that need Docker are `#[ignore = "needs Docker ..."]`, so
/// a plain `cargo test` lists them as ignored (visibly, never as passed) and
/// `cargo test -- --include-ignored` (CI) runs them and fails without Docker.
pub async fn docker() -> DockerSandbox {
    let sandbox = DockerSandbox::connect()
        .await
        .unwrap_or_else(|e| panic!("this test needs Docker: {e}"));
    match sandbox.has_image(&image()).await {
        Ok(true) => sandbox,
        other => panic!(
            "this test needs the image {}: run `autodev images build python` ({other:?})",
            image()
        ),
    }
}

/// The Docker sandbox, or a panic saying why there is none.
#[macro_export]
macro_rules! require_docker {
    () => {
        common::docker().await
    };
}

/// A unique label value for one test, so leak checks do not see other tests.
pub fn test_label(name: &str) -> (String, String) {
    (
        "autodev-test".to_string(),
        format!("{name}-{}-{:x}", std::process::id(), fastrand::u64(..)),
    )
}

/// A spec for `command` on `ws`, labelled for the leak check.
pub fn spec(ws: &Path, command: &str, label: &(String, String)) -> RunSpec {
    let mut s = RunSpec::new(ws, command, image());
    s.labels.push(label.clone());
    s.limits = Limits {
        timeout: std::time::Duration::from_secs(60),
        runtime: runtime(),
        ..Limits::default()
    };
    s
}

/// Containers on `engine` (the default one when `None`) that match the
/// `docker ps` filter `filter`, with `flags` (`-aq`: any state, `-q`: running).
pub fn docker_ps(engine: Option<&str>, flags: &str, filter: &str) -> Vec<String> {
    let mut c = Command::new("docker");
    if let Some(e) = engine {
        c.args(["-H", e]);
    }
    let out = c
        .args(["ps", flags, "--filter", filter])
        .output()
        .expect("docker ps runs");
    assert!(
        out.status.success(),
        "docker ps {engine:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Containers (any state) carrying this test label.
pub fn containers_with(label: &(String, String)) -> Vec<String> {
    docker_ps(None, "-aq", &format!("label={}={}", label.0, label.1))
}

/// Panics if a container of this test is still there.
pub fn assert_no_leak(label: &(String, String)) {
    let left = containers_with(label);
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// A temporary workspace with these files.
pub fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (p, c) in files {
        let path = d.path().join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, c).expect("write");
    }
    d
}

/// `--image` (the test image) and `--label` (this test's) for a command
/// of the binary, so its containers are the test's to find and count.
pub trait Sandboxed {
    /// Adds the test image and `label`.
    fn sandboxed(&mut self, label: &(String, String)) -> &mut Self;
}

impl Sandboxed for Command {
    fn sandboxed(&mut self, label: &(String, String)) -> &mut Self {
        self.args(["--image", &image()])
            .args(["--label", &format!("{}={}", label.0, label.1)]);
        if let Some(r) = runtime() {
            self.args(["--runtime", &r]);
        }
        self
    }
}

/// Writes `dir/tasks.jsonl` with `n` tasks that sleep `secs`, every fourth
/// failing (exit 1); returns the verdict each must get.
pub fn sleep_tasks(
    dir: &Path,
    n: usize,
    secs: f64,
) -> std::collections::HashMap<String, &'static str> {
    let mut want = std::collections::HashMap::new();
    let lines: String = (0..n)
        .map(|i| {
            let fails = i % 4 == 0;
            want.insert(format!("t{i}"), if fails { "failed" } else { "passed" });
            format!(
                "{}\n",
                serde_json::json!({"id": format!("t{i}"), "runner": format!("sleep {secs}; exit {}", u8::from(fails))})
            )
        })
        .collect();
    std::fs::write(dir.join("tasks.jsonl"), lines).expect("write tasks");
    want
}

/// Runs a test-host script (`fleet.sh`, `kube/cluster.sh`): `CMD TAG DIR NET EXTRA...`;
/// panics with its output if it fails.
pub fn host_script(script: &Path, cmd: &str, (tag, dir, net): (&str, &Path, &str), extra: &[&str]) {
    let out = Command::new("bash")
        .arg(script)
        .args([cmd, tag, &dir.to_string_lossy(), net])
        .args(extra)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{} {cmd} failed: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The built binary.
/// Runs `cmd` to its end and returns its stdout; fails the test with
/// both streams when it does not exit 0.
pub fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_autodev"))
}

/// The binary run in `dir` with no configuration of this machine's: the
/// user file is `dir/xdg/autodev/config.toml`, no `AUTODEV_*` variable and
/// no API key reach it.
pub fn isolated(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(dir).env("XDG_CONFIG_HOME", dir.join("xdg"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTODEV_") || k == "OPENAI_API_KEY" {
            c.env_remove(k);
        }
    }
    c
}

/// The events of a JSON Lines transcript; panics on a line that is not JSON.
pub fn transcript(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("transcript exists")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("transcript line {l:?}: {e}")))
        .collect()
}

/// Sends a signal to a child process of the test.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test spawned.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Polls `cond` every 50 ms; panics with `what` if it is still false after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The Python interpreter CI made from PyPI (`AUTODEV_TEST_PYTHON`, else
/// `python3`), checked to import `modules`; panics with what to do.
pub fn pypi_python(modules: &str) -> PathBuf {
    let py =
        PathBuf::from(std::env::var("AUTODEV_TEST_PYTHON").unwrap_or_else(|_| "python3".into()));
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs {} able to import {modules} from PyPI (set AUTODEV_TEST_PYTHON; .ci/run makes one)",
        py.display()
    );
    py
}
