//! A two-node Kubernetes 1.20 cluster for the Kubernetes tests, in network
//! namespaces this test makes (`tests/kube/cluster.sh`), from the binaries
//! `tests/kube/build.sh` builds (`AUTODEV_KUBE_BIN`, default
//! `target/kube-1.20.2/bin`). Torn down on drop, by PID and namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A running cluster.
pub struct Cluster {
    tag: String,
    dir: PathBuf,
    net: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube/cluster.sh")
}

/// Where the Kubernetes binaries are; panics with how to build them.
pub fn binaries() -> PathBuf {
    let dir = std::env::var_os("AUTODEV_KUBE_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kube-1.20.2/bin"),
        PathBuf::from,
    );
    assert!(
        dir.join("kubelet").exists(),
        "this test needs Kubernetes binaries in {}: run `tests/kube/build.sh target/kube-1.20.2`",
        dir.display()
    );
    dir
}

impl Cluster {
    /// Starts the control plane and two nodes, with the test image on each node.
    pub fn start() -> Cluster {
        let bin = binaries();
        let pid = std::process::id();
        let tag = format!("k{}", pid % 100_000);
        let net = format!("10.{}.250", 200 + (pid % 50));
        let dir = std::env::temp_dir().join(format!("autodev-cluster-{tag}"));
        let c = Cluster { tag, dir, net };
        c.script("up", &[&bin.to_string_lossy(), &super::image()]);
        c
    }

    fn script(&self, cmd: &str, extra: &[&str]) {
        super::host_script(&script(), cmd, (&self.tag, &self.dir, &self.net), extra);
    }

    /// The kubeconfig that reaches the cluster (namespace `autodev`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The test registry, `HOST:PORT` (HTTPS; every engine here trusts it).
    pub fn registry(&self) -> String {
        format!("{}.13:5000", self.net)
    }

    /// The registry's log, access lines included.
    pub fn registry_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("k8s/registry.log")).unwrap_or_default()
    }

    /// Kills node `i` (1 or 2): kubelet, engine and pods, with -9.
    pub fn kill(&self, i: usize) {
        self.script("kill", &[&i.to_string()]);
    }

    /// The unix socket of node `i`'s Docker engine.
    pub fn engine(&self, i: usize) -> String {
        format!("unix://{}/h{i}/docker.sock", self.dir.display())
    }

    /// Pods in `namespace` carrying `label`, as (name, node, phase).
    pub fn pods_with(
        &self,
        namespace: &str,
        label: &(String, String),
    ) -> Vec<(String, String, String)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let kc = Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
            let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .expect("config");
            let client = kube::Client::try_from(cfg).expect("client");
            let pods: Api<Pod> = Api::namespaced(client, namespace);
            let selector = format!("{}={}", label.0, label.1);
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .expect("list pods");
            list.items
                .into_iter()
                .map(|p| {
                    (
                        p.metadata.name.unwrap_or_default(),
                        p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                        p.status.and_then(|s| s.phase).unwrap_or_default(),
                    )
                })
                .collect()
        })
    }

    /// Containers of pods in `namespace` still on node `i`'s engine.
    pub fn node_containers(&self, i: usize, namespace: &str) -> Vec<String> {
        super::docker_ps(
            Some(&self.engine(i)),
            "-aq",
            &format!("label=io.kubernetes.pod.namespace={namespace}"),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.tag, &self.dir.to_string_lossy(), &self.net])
            .output();
    }
}
