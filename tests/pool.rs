//! `autodev pool`: separate `exec` invocations served from containers
//! started ahead by a long-lived pool process, each container used once;
//! a client that goes away ends its run; the pool's containers go with the
//! pool, whether it is stopped or killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::Sandboxed;

/// A pool process of the test, killed (SIGKILL, by PID) if the test ends
/// without stopping it.
struct Pool {
    child: Child,
    socket: PathBuf,
}

impl Pool {
    /// Starts `autodev pool` with `size` containers ahead and waits until
    /// it answers and they are up.
    fn start(dir: &Path, label: &(String, String), size: usize) -> Pool {
        let socket = dir.join("pool.sock");
        let child = common::isolated(dir)
            .args(["pool", "--socket"])
            .arg(&socket)
            .args(["--warm", &size.to_string()])
            .sandboxed(label)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pool = Pool { child, socket };
        common::wait_until("the pool answers", Duration::from_secs(60), || {
            std::os::unix::net::UnixStream::connect(&pool.socket).is_ok()
        });
        common::wait_until("its containers are up", Duration::from_secs(60), || {
            running(label).len() >= size
        });
        pool
    }

    /// `autodev exec` through the pool, on `ws`, with `args`.
    fn exec(&self, ws: &Path, label: &(String, String), args: &[&str]) -> Command {
        let mut c = common::isolated(ws);
        c.arg("exec")
            .arg("--pool-socket")
            .arg(&self.socket)
            .sandboxed(label)
            .args(args);
        c
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running(label: &(String, String)) -> Vec<String> {
    common::docker_ps(None, "-q", &format!("label={}={}", label.0, label.1))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn separate_execs_each_get_a_fresh_started_container_and_nothing_crosses_over() {
    let _sb = require_docker!();
    let label = common::test_label("pool-serve");
    let d = tempfile::tempdir().unwrap();
    let mut pool = Pool::start(d.path(), &label, 1);
    let ws = common::workspace(&[("a.txt", "a")]);

    // The verdict is the exit code, as without a pool.
    let waiting = running(&label);
    assert_eq!(waiting.len(), 1);
    let first = pool
        .exec(ws.path(), &label, &["--env", "SECRET_FOO=s3cret", "--"])
        .arg("echo left > /tmp/left; echo left > /workspace/left; (sleep 300 &); echo $SECRET_FOO; exit 3")
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("s3cret"),
        "{}",
        text(&first)
    );
    // It ran in the container that waited for it, which is gone with it.
    assert!(
        !common::containers_with(&label).contains(&waiting[0]),
        "the waiting container outlived the run"
    );

    // Its successor was started while it ran; the next run takes that one.
    common::wait_until("a new container waits", Duration::from_secs(30), || {
        running(&label).len() == 1 && running(&label) != waiting
    });
    let waiting = running(&label);
    let second = pool
        .exec(ws.path(), &label, &["--json", "--"])
        .arg("ls -a /tmp /workspace; for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done; env")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let v: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(v["verdict"], "passed", "{v}");
    let out = v["stdout"]["text"].as_str().unwrap();
    for leftover in ["left", "sleep 300", "SECRET_FOO", "s3cret"] {
        assert!(!out.contains(leftover), "{leftover} crossed over: {out}");
    }
    assert!(out.contains("a.txt"), "{out}");
    // Already started: the run's create was taking it.
    let create_ms = v["durations"]["create_ms"].as_u64().unwrap();
    assert!(
        create_ms < 50,
        "not a started container: {}",
        v["durations"]
    );
    assert!(!common::containers_with(&label).contains(&waiting[0]));

    // A flood crosses the socket at full speed; the capture stays bounded.
    let flood = pool
        .exec(ws.path(), &label, &["--json", "--"])
        .arg("head -c 50000000 /dev/zero")
        .output()
        .unwrap();
    assert_eq!(flood.status.code(), Some(0), "{}", text(&flood));
    let v: serde_json::Value = serde_json::from_slice(&flood.stdout).unwrap();
    assert_eq!(
        v["stdout"]["total_bytes"], 50_000_000,
        "{}",
        v["stdout"]["total_bytes"]
    );
    assert!(v["stdout"]["dropped_bytes"].as_u64().unwrap() >= 50_000_000 - (1 << 20));
    assert!(v["stdout"]["text"].as_str().unwrap().len() < 2 << 20);

    // SIGTERM: the pool stops, removes what it started and its socket.
    common::signal(pool.child.id(), libc::SIGTERM);
    let status = pool.child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!pool.socket.exists(), "the socket outlived the pool");
    common::wait_until(
        "the pool's containers are gone",
        Duration::from_secs(30),
        || common::containers_with(&label).is_empty(),
    );
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_dies_ends_its_run_and_a_killed_pool_leaves_nothing() {
    let _sb = require_docker!();
    let label = common::test_label("pool-deadman");
    let d = tempfile::tempdir().unwrap();
    let mut pool = Pool::start(d.path(), &label, 1);
    let ws = common::workspace(&[("a.txt", "a")]);

    // A client killed mid-run (no handler runs in it): the pool ends the
    // run. Its settings (another label) are not the pool's own, so the pool
    // starts a container for them too, ahead of their next run.
    // (Its own label key: a second `autodev-test` label would replace the first.)
    let run = (
        "autodev-test-run".to_string(),
        common::test_label("pool-client").1,
    );
    let mut client = pool
        .exec(
            ws.path(),
            &label,
            &["--label", &format!("{}={}", run.0, run.1)],
        )
        .args(["--", "sleep 600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until(
        "the client's run and one for its settings are up",
        Duration::from_secs(60),
        || running(&run).len() == 2,
    );
    client.kill().unwrap();
    client.wait().unwrap();
    common::wait_until(
        "the dead client's container is gone",
        Duration::from_secs(20),
        || running(&run).len() == 1,
    );
    let all = common::docker_ps(
        None,
        "--format={{.ID}} {{.Labels}}",
        "label=autodev.managed=true",
    );
    assert_eq!(running(&label).len(), 2, "{all:#?}");

    // The pool killed: what waits in it ends by itself, with no command.
    pool.child.kill().unwrap();
    pool.child.wait().unwrap();
    common::wait_until(
        "the killed pool's containers are gone",
        Duration::from_secs(60),
        || common::containers_with(&label).is_empty(),
    );

    // Its socket is left; a client says what to do, with the sandbox's code.
    let out = pool
        .exec(ws.path(), &label, &["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing answers") && err.contains("autodev pool --socket"),
        "{err}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("autodev: ") && !l.contains("profile"))
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn a_socket_path_that_is_a_file_is_refused_and_kept() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    let out = common::isolated(d.path())
        .args(["pool", "--socket"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

#[ignore = "needs Docker: run with --include-ignored"]
#[tokio::test(flavor = "multi_thread")]
async fn another_users_client_is_told_whose_pool_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let _sb = require_docker!();
    let label = common::test_label("pool-owner");
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = d.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("a.txt"), "x").unwrap();
    let pool = Pool::start(d.path(), &label, 1);
    // As `nobody`, through setpriv (util-linux): the socket is 0600.
    let as_nobody = || {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::bin())
            .args(["exec", "--pool-socket"])
            .arg(&pool.socket)
            .arg("-w")
            .arg(&ws)
            .env("HOME", d.path())
            .args(["--", "true"]);
        c.output().unwrap()
    };
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("belongs to another user"),
        "{}",
        text(&out)
    );
    // Even with the socket opened to all, the pool refuses, and says why.
    std::fs::set_permissions(&pool.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("serves only it"), "{}", text(&out));
    drop(pool);
    common::wait_until(
        "the pool's containers are gone",
        Duration::from_secs(30),
        || common::containers_with(&label).is_empty(),
    );
}
