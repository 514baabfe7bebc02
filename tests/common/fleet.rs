//! Several Docker engines for the multi-engine tests, each in a network
//! namespace this test makes (see `tests/fleet.sh`), with the test image
//! copied into each through `autodev images push`. Torn down on drop, by
//! PID and namespace, whatever the test did.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A set of engines in network namespaces.
pub struct Fleet {
    tag: String,
    dir: PathBuf,
    net: String,
    /// Number of engines.
    pub n: usize,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet.sh")
}

impl Fleet {
    /// Starts `n` engines; those in `tls` (1-based) take mutual TLS only.
    pub fn start(n: usize, tls: &[usize]) -> Fleet {
        // Unique per process and per fleet, so leftovers of a crashed run or
        // a parallel test never collide; the subnet is private to the fleet.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("a{}{k}", pid % 100_000);
        let net = format!("10.{}.{}", 200 + (pid % 50), 10 + (k % 200));
        let dir = std::env::temp_dir().join(format!("autodev-fleet-{tag}"));
        let fleet = Fleet { tag, dir, net, n };
        let tls: Vec<String> = tls.iter().map(|i| i.to_string()).collect();
        fleet.script("up", &[&n.to_string(), &tls.join(" ")]);
        fleet
    }

    fn script(&self, cmd: &str, extra: &[&str]) {
        super::host_script(&script(), cmd, (&self.tag, &self.dir, &self.net), extra);
    }

    /// `tcp://` URL of engine `i` (1-based).
    pub fn url(&self, i: usize) -> String {
        format!("tcp://{}.{}:2375", self.net, 10 + i)
    }

    /// `tcp://` URL of TLS engine `i`.
    pub fn tls_url(&self, i: usize) -> String {
        format!("tcp://{}.{}:2376", self.net, 10 + i)
    }

    /// The unix socket of engine `i`.
    pub fn socket(&self, i: usize) -> String {
        format!("unix://{}/h{i}/docker.sock", self.dir.display())
    }

    /// `--tls-ca/--tls-cert/--tls-key` for the client certificate.
    pub fn tls_args(&self) -> Vec<String> {
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

    /// Copies the test image into engine `i` through `autodev images push`.
    pub fn load_image(&self, i: usize, tls: bool) {
        let name = super::image();
        let short = name
            .strip_prefix("autodev/")
            .and_then(|n| n.split(':').next())
            .expect("the test image is an autodev/ image");
        let mut c = Command::new(super::bin());
        c.args(["images", "push", short, "--engine"]);
        if tls {
            c.arg(self.tls_url(i)).args(self.tls_args());
        } else {
            c.arg(self.url(i));
        }
        let out = c.output().expect("autodev runs");
        assert!(
            out.status.success(),
            "images push to engine {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills engine `i` (-9), its shims and its containers.
    pub fn kill(&self, i: usize) {
        self.script("kill", &[&i.to_string()]);
    }

    /// Cuts engine `i`'s link (no error reaches the client: calls just hang).
    pub fn cut(&self, i: usize) {
        self.script("cut", &[&i.to_string()]);
    }

    /// Restores engine `i`'s link.
    pub fn mend(&self, i: usize) {
        self.script("mend", &[&i.to_string()]);
    }

    /// Containers labelled `label` on engine `i`, running or not.
    pub fn containers_with(&self, i: usize, label: &(String, String)) -> Vec<String> {
        self.ps(i, label, "-aq")
    }

    /// Running containers labelled `label` on engine `i` (a batch's trial
    /// create before the first task is never started, so it is not one).
    pub fn running_with(&self, i: usize, label: &(String, String)) -> Vec<String> {
        self.ps(i, label, "-q")
    }

    fn ps(&self, i: usize, label: &(String, String), flags: &str) -> Vec<String> {
        super::docker_ps(
            Some(&self.socket(i)),
            flags,
            &format!("label={}={}", label.0, label.1),
        )
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.tag, &self.dir.to_string_lossy(), &self.net])
            .output();
    }
}
