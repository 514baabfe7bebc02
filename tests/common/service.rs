//! A real `autodev serve` process for a test: started on loopback with
//! the test's labels, its keys, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Sandboxed;

/// A service process of the test, killed by PID if the test ends without
/// stopping it.
pub struct Service {
    pub child: Child,
    pub url: String,
    /// Every line it wrote to stderr.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Service {
    pub fn start(dir: &Path, label: &(String, String), extra: &[&str]) -> Service {
        Service::start_on(dir, label, "127.0.0.1:0", extra)
    }

    /// A service listening on `listen` (its URL is the one it says).
    pub fn start_on(dir: &Path, label: &(String, String), listen: &str, extra: &[&str]) -> Service {
        let mut child = super::isolated(dir)
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .args(["serve", "--listen", listen, "--state"])
            .arg(dir.join("state"))
            .sandboxed(label)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split(';').next().unwrap_or("").to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the service did not start: {:?}", log.lock().unwrap()));
        Service { child, url, log }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the service did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops the service (SIGTERM): it must exit 0 and leave no container.
pub fn stop_clean(mut svc: Service, label: &(String, String)) {
    assert!(svc.stop().success(), "a drained service exits 0");
    super::assert_no_leak(label);
}

/// `autodev serve keys add NAME ARGS…`: the token.
pub fn add_key(dir: &Path, name: &str, args: &[&str]) -> String {
    super::succeeds(
        super::isolated(dir)
            .args(["serve", "keys", "add", name, "--state"])
            .arg(dir.join("state"))
            .args(args),
    )
    .trim()
    .to_string()
}
