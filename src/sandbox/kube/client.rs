//! Connecting to a cluster, and what autodev asks of it besides pods: its
//! nodes' capacity, readiness and images (where the credentials may read
//! nodes; a user allowed only pods gets fewer checks, not an error).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams};

use super::{KubeSandbox, PullPolicy, Registry};
use crate::sandbox::reach::{self, no_answer, Endpoint, CONNECT_TIMEOUT};
use crate::sandbox::{RunSpec, SandboxError};

/// The namespace runs go to unless `--namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "autodev";
/// Bound on one API call: a cluster that takes longer is not well, and a
/// call lost to a cut link must end.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how runs go on a cluster.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// The namespace (default [`DEFAULT_NAMESPACE`]).
    pub namespace: Option<String>,
    /// When nodes pull the image.
    pub pull: PullPolicy,
    /// Where environments go for the nodes to pull (`--registry`).
    pub registry: Option<Registry>,
}

impl KubeSandbox {
    /// Connects to the cluster `KUBECONFIG` (or `~/.kube/config`, or the
    /// in-cluster settings) names, and checks that it answers and, unless
    /// `need_namespace` is false, that the namespace exists. Nobody
    /// listening is told within 2 s; a server that took the connection gets
    /// 15 s per answer.
    pub async fn connect(s: &KubeSettings, need_namespace: bool) -> Result<Self, SandboxError> {
        let config = kube::Config::infer().await.map_err(|e| {
            SandboxError::Settings(format!(
                "no usable Kubernetes configuration ({e}): set KUBECONFIG to a kubeconfig file, or run inside a cluster"
            ))
        })?;
        Self::connect_to(config, s, need_namespace).await
    }

    async fn connect_to(
        config: kube::Config,
        s: &KubeSettings,
        need_namespace: bool,
    ) -> Result<Self, SandboxError> {
        if s.registry.is_some() && s.pull == PullPolicy::Never {
            return Err(SandboxError::Settings(
                "--registry has the nodes pull environments, which --image-pull-policy never forbids: drop one of them".into(),
            ));
        }
        // No proxy to go through: kube's `http-proxy` feature is off, and
        // a kubeconfig that names one is refused below as a settings error.
        let url = &config.cluster_url;
        let address = socket_address(url.scheme_str(), url.host(), url.port_u16());
        let cluster = config.cluster_url.to_string();
        let cluster = cluster.trim_end_matches('/').to_string();
        let client = kube::Client::try_from(config).map_err(|e| {
            SandboxError::Settings(format!(
                "the Kubernetes configuration for {cluster} cannot be used: {e}"
            ))
        })?;
        let namespace = s
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        let me = KubeSandbox {
            pods: Api::namespaced(client.clone(), &namespace),
            client,
            namespace,
            pull: s.pull,
            envs: s.registry.clone().map(super::EnvRoute::new),
            cluster,
        };
        let unreachable = |detail: String| SandboxError::ClusterUnreachable {
            cluster: me.cluster.clone(),
            detail,
        };
        // Taking the connection is timed apart from the answers: a busy
        // API server gets CALL_TIMEOUT for each.
        reach::reach(Endpoint::Tcp(&address))
            .await
            .map_err(unreachable)?;
        let no_answer = || unreachable(no_answer(CALL_TIMEOUT));
        match tokio::time::timeout(CALL_TIMEOUT, me.client.apiserver_version()).await {
            Err(_) => return Err(no_answer()),
            Ok(Err(kube::Error::Api(st))) if st.code == 401 => {
                return Err(SandboxError::Settings(format!(
                    "the cluster {} refused these credentials: check the user in KUBECONFIG",
                    me.cluster
                )))
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(_)) => {}
        }
        if need_namespace {
            let namespaces: Api<Namespace> = Api::all(me.client.clone());
            match tokio::time::timeout(CALL_TIMEOUT, namespaces.get_opt(&me.namespace)).await {
                Err(_) => return Err(no_answer()),
                Ok(Ok(None)) => return Err(me.no_namespace()),
                // Credentials that may not read namespaces learn of a
                // missing one at the first create, which says so too.
                Ok(Ok(Some(_))) | Ok(Err(kube::Error::Api(_))) => {}
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
            }
        }
        Ok(me)
    }

    /// The API server's version, for messages.
    pub async fn version(&self) -> String {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.client.apiserver_version()).await {
            Ok(Ok(v)) => format!("API server {}", v.git_version),
            _ => "API server version unknown".into(),
        }
    }

    pub(super) fn no_namespace(&self) -> SandboxError {
        SandboxError::Settings(format!(
            "namespace {ns} does not exist on {c}: create it with `autodev kube setup --namespace {ns}`",
            ns = self.namespace,
            c = self.cluster
        ))
    }

    pub(super) fn lost(&self, op: &'static str, detail: String) -> SandboxError {
        SandboxError::LostHost {
            engine: self.cluster.clone(),
            op,
            detail,
        }
    }

    /// One API call, bounded in time; failures other than the server's
    /// refusals mean the cluster is out of reach.
    pub(super) async fn call<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, SandboxError> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Err(_) => Err(self.lost(op, format!("no answer within {}s", CALL_TIMEOUT.as_secs()))),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(s))) => Err(SandboxError::Backend {
                engine: self.cluster.clone(),
                op,
                detail: s.message,
            }),
            Ok(Err(e)) => Err(self.lost(op, e.to_string())),
        }
    }

    /// The pod named `name`, if it still exists.
    pub(super) async fn pod(&self, name: &str) -> Result<Option<Pod>, SandboxError> {
        self.call("read pod", self.pods.get_opt(name)).await
    }

    /// The cluster's nodes that are Ready; `None` when these credentials
    /// may not list nodes.
    async fn ready_nodes(&self) -> Result<Option<Vec<Node>>, SandboxError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        match tokio::time::timeout(CALL_TIMEOUT, nodes.list(&ListParams::default())).await {
            Err(_) => Err(self.lost(
                "list nodes",
                format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            )),
            Ok(Ok(list)) => Ok(Some(
                list.items
                    .into_iter()
                    .filter(|n| is_ready(n) == Some(true))
                    .collect(),
            )),
            Ok(Err(kube::Error::Api(_))) => Ok(None),
            Ok(Err(e)) => Err(self.lost("list nodes", e.to_string())),
        }
    }

    /// Whether node `name` is Ready; `None` when unknown (the node cannot be
    /// read, or has not said yet).
    pub(super) async fn node_ready(&self, name: &str) -> Option<bool> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        match tokio::time::timeout(CALL_TIMEOUT, nodes.get_opt(name)).await {
            Ok(Ok(Some(n))) => is_ready(&n),
            Ok(Ok(None)) => Some(false),
            _ => None,
        }
    }

    /// Runs the cluster takes at once at these limits: one per whole
    /// allocatable CPU of every Ready node (4 when nodes cannot be read).
    pub async fn total_slots(&self) -> usize {
        match self.ready_nodes().await {
            Ok(Some(nodes)) => nodes
                .iter()
                .map(|n| allocatable(n, "cpu").map_or(1, |c| (c as usize).max(1)))
                .sum::<usize>()
                .max(1),
            _ => 4,
        }
    }

    /// Refuses limits no Ready node can give: such a pod would wait
    /// unschedulable forever.
    pub async fn check_limits(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        match self.ready_nodes().await? {
            Some(nodes) => self.limits_on(&nodes, spec),
            None => Ok(()),
        }
    }

    /// Everything a run needs of the nodes, from one listing: the limits
    /// fit some Ready node and, with `--image-pull-policy Never`, every
    /// Ready node holds the image.
    pub(super) async fn check_nodes(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        let Some(nodes) = self.ready_nodes().await? else {
            return Ok(());
        };
        self.limits_on(&nodes, spec)?;
        self.image_on(&nodes, spec)
    }

    fn limits_on(&self, nodes: &[Node], spec: &RunSpec) -> Result<(), SandboxError> {
        if nodes.is_empty() {
            return Err(SandboxError::ClusterUnreachable {
                cluster: self.cluster.clone(),
                detail: "no node is Ready".into(),
            });
        }
        let most = |what| {
            nodes
                .iter()
                .filter_map(|n| allocatable(n, what))
                .fold(0.0_f64, f64::max)
        };
        let exceeds = |what, asked: String, has: String| SandboxError::ExceedsHost {
            engine: format!("every node of {}", self.cluster),
            what,
            asked,
            has,
        };
        let (cpu, mem) = (most("cpu"), most("memory"));
        if cpu > 0.0 && spec.limits.cpus > cpu {
            return Err(exceeds(
                "--cpus",
                spec.limits.cpus.to_string(),
                format!("at most {cpu} CPUs"),
            ));
        }
        if mem > 0.0 && spec.limits.memory as f64 > mem {
            return Err(exceeds(
                "--memory",
                spec.limits.memory.to_string(),
                format!("at most {mem} bytes"),
            ));
        }
        Ok(())
    }

    /// With `--image-pull-policy Never`, every Ready node must hold the image
    /// (a pod may land on any; nodes list their images); the error names
    /// the nodes that lack it.
    fn image_on(&self, nodes: &[Node], spec: &RunSpec) -> Result<(), SandboxError> {
        if self.pull != PullPolicy::Never {
            return Ok(());
        }
        let wanted = [spec.image.clone(), format!("docker.io/{}", spec.image)];
        let lacking: Vec<String> = nodes
            .iter()
            .filter(|n| {
                !n.status
                    .as_ref()
                    .and_then(|s| s.images.as_ref())
                    .is_some_and(|imgs| {
                        imgs.iter().any(|i| {
                            i.names
                                .iter()
                                .flatten()
                                .any(|name| wanted.iter().any(|w| w == name))
                        })
                    })
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        if !lacking.is_empty() {
            return Err(SandboxError::ImageMissing {
                image: spec.image.clone(),
                engine: format!("nodes {}", lacking.join(", ")),
                hint: "load it onto the nodes (e.g. `autodev images push --engine` to each node's engine), or allow pulls with --image-pull-policy IfNotPresent".into(),
            });
        }
        Ok(())
    }
}

fn is_ready(n: &Node) -> Option<bool> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status == "True")
}

fn allocatable(n: &Node, what: &str) -> Option<f64> {
    let q = n.status.as_ref()?.allocatable.as_ref()?.get(what)?;
    quantity(&q.0)
}

/// A Kubernetes quantity (`2`, `1500m`, `24Gi`, `123456Ki`, `1e3`) as a number.
pub(super) fn quantity(q: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (s, f) in SUFFIXES {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|n| n * f);
        }
    }
    q.strip_suffix('E')
        .and_then(|n| n.parse::<f64>().ok().map(|n| n * 1e18))
        .or_else(|| q.parse().ok())
}

/// The API server's `host:port` (the scheme's port when none is given).
fn socket_address(scheme: Option<&str>, host: Option<&str>, port: Option<u16>) -> String {
    let port = port.unwrap_or(if scheme == Some("http") { 80 } else { 443 });
    // An IPv6 literal keeps its brackets in a URI's host.
    format!("{}:{port}", host.unwrap_or("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server on loopback that answers `/version` after `delay`, or
    /// never (`None`).
    fn server_that_answers(delay: Option<Duration>) -> kube::Config {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        crate::sandbox::slow_api::serve(
            std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s))),
            delay,
            r#"{"major":"1","minor":"20","gitVersion":"v1.20.2","gitCommit":"x","gitTreeState":"clean","buildDate":"2021-01-13T00:00:00Z","goVersion":"go1.15","compiler":"gc","platform":"linux/amd64"}"#,
        );
        kube::Config::new(url.parse().unwrap())
    }

    #[tokio::test]
    async fn a_busy_api_server_gets_longer_than_the_connect_limit_to_answer() {
        let config = server_that_answers(Some(CONNECT_TIMEOUT + Duration::from_secs(1)));
        let k = KubeSandbox::connect_to(config, &KubeSettings::default(), false).await;
        assert!(k.is_ok(), "{:?}", k.err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_server_that_takes_the_connection_and_never_answers_is_unreachable() {
        let config = server_that_answers(None);
        let Err(err) = KubeSandbox::connect_to(config, &KubeSettings::default(), false).await
        else {
            panic!("connected to a server that never answers");
        };
        assert!(
            matches!(err, SandboxError::ClusterUnreachable { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("gave no answer within 15s"),
            "{err}"
        );
    }

    /// A port on loopback that was just free.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn nobody_listening_is_told_at_once() {
        // Refused, not waited on.
        let port = closed_port();
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let t = std::time::Instant::now();
        let Err(err) = KubeSandbox::connect_to(config, &KubeSettings::default(), false).await
        else {
            panic!("connected to a closed port");
        };
        assert!(t.elapsed() < CONNECT_TIMEOUT, "took {:?}", t.elapsed());
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[test]
    fn the_api_servers_port_defaults_to_its_schemes() {
        assert_eq!(socket_address(Some("https"), Some("k8s"), None), "k8s:443");
        assert_eq!(socket_address(Some("http"), Some("k8s"), None), "k8s:80");
        assert_eq!(
            socket_address(Some("https"), Some("[::1]"), Some(6443)),
            "[::1]:6443"
        );
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("1500m"), Some(1.5));
        assert_eq!(quantity("24Gi"), Some(24.0 * 1073741824.0));
        assert_eq!(quantity("123456Ki"), Some(123456.0 * 1024.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("2E"), Some(2e18));
        assert_eq!(quantity("x"), None);
    }
}
