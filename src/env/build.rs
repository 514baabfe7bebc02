//! Building one environment: the allowlist (the image's package tools'
//! own hosts plus the user's), an internal network with the egress proxy
//! on its gateway, the set-up container, and its commit.

use std::path::PathBuf;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::allow::{AllowEntry, Allowlist, Refusal};
use super::detect::{self, Lang};
use super::proxy::{Connection, EgressProxy, ProxyConfig};
use super::{cache, CacheUse, EnvError, EnvRecord, Plan, SetupSettings, KEY_LABEL, RECORD_LABEL};
use crate::sandbox::docker::setup::{Commit, SetupShape};
use crate::sandbox::docker::DockerSandbox;
use crate::sandbox::{Command, Junit, NullSink, Outcome, OutputSink, RunSpec, Sandbox, Verdict};

/// Where the CA bundle lands in the workspace copy; the set-up moves it to
/// `/tmp` (a tmpfs: never committed) before anything else runs.
const CA_IN_WORKSPACE: &str = ".autodev-setup-ca.pem";
const CA_PATH: &str = "/tmp/autodev-ca.pem";

/// The host's CA bundle: what `SSL_CERT_FILE` names, else the system's.
fn host_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        )
        .find(|p| p.is_file())
}

/// One environment to build: the plan, on which base, under which key and
/// tag, with which settings, on which engine, for which test run.
pub(super) struct Build<'a> {
    pub(super) docker: &'a DockerSandbox,
    /// The test run the environment is for (workspace, image, limits, copy, labels).
    pub(super) spec: &'a RunSpec,
    pub(super) plan: &'a Plan,
    pub(super) base: &'a str,
    pub(super) key: &'a str,
    pub(super) tag: &'a str,
    pub(super) settings: &'a SetupSettings,
}

/// Builds the environment `b` describes: allowlist, CA bundle, the
/// set-up's network and proxy, the set-up itself and its commit.
pub(super) async fn build(
    b: &Build<'_>,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<EnvRecord, EnvError> {
    let lang = detect::lang(&b.plan.profile);
    let allow = allowlist(b, lang, cancel).await?;
    let ca = ca_bundle(b.settings)?;
    let mut egress = Egress::open(b.docker, &allow, b.settings, &b.spec.labels).await?;
    let result = set_up(b, lang, &allow, &mut egress, ca, sink, cancel).await;
    egress.close().await;
    result
}

/// The image's package tools' own hosts plus the user's; none with
/// `--allow-host none`.
async fn allowlist(
    b: &Build<'_>,
    lang: Option<&Lang>,
    cancel: &CancellationToken,
) -> Result<Allowlist, EnvError> {
    if b.settings.allow_none {
        return Ok(Allowlist::default());
    }
    let mut entries = match lang {
        Some(l) => probe(b.docker, b.spec, l, cancel).await?,
        None => Vec::new(),
    };
    entries.extend(b.settings.allow.iter().cloned());
    Ok(Allowlist::new(entries))
}

/// The CA bundle the set-up trusts: `--setup-ca`, else this host's.
fn ca_bundle(settings: &SetupSettings) -> Result<Option<Vec<u8>>, EnvError> {
    let Some(path) = settings.ca.clone().or_else(host_ca_bundle) else {
        return Ok(None);
    };
    std::fs::read(&path).map(Some).map_err(|e| {
        EnvError::Usage(format!(
            "reading the CA bundle {}: {e}; name one with --setup-ca FILE",
            path.display()
        ))
    })
}

/// Runs the set-up through `egress` and commits it; the record says what
/// was built, how long it took and every connection it asked for.
async fn set_up(
    b: &Build<'_>,
    lang: Option<&Lang>,
    allow: &Allowlist,
    egress: &mut Egress,
    ca: Option<Vec<u8>>,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<EnvRecord, EnvError> {
    let setup = setup_spec(b.spec, b.plan, lang, b.settings, egress.proxy_addr(), ca);
    let mut record = EnvRecord {
        key: b.key.to_string(),
        image: b.tag.to_string(),
        image_id: String::new(),
        base_image_id: b.base.to_string(),
        profile: b.plan.profile.clone(),
        setup: b.plan.install.clone(),
        manifests: b.plan.manifests.clone(),
        allow: allow.entries.iter().map(ToString::to_string).collect(),
        setup_ms: 0,
        cache: CacheUse::Miss,
        connections: Vec::new(),
        pulled_from: None,
    };
    let (repo, tag) = b.tag.rsplit_once(':').unwrap_or((b.tag, "latest"));
    let shape = SetupShape {
        network: egress.network(),
        disk_limit: b.settings.disk,
        // The record rides on the image (what a later hit reports); its
        // duration is this run's, filled in below.
        commit: Some(Commit {
            repo: repo.to_string(),
            tag: tag.to_string(),
            changes: vec![
                format!("LABEL {KEY_LABEL}={}", b.key),
                format!("LABEL {RECORD_LABEL}={}", cache::encode(&record)),
            ],
        }),
    };
    let t0 = Instant::now();
    let ran = b.docker.run_setup(&setup, &shape, sink, cancel).await;
    record.setup_ms = t0.elapsed().as_millis() as u64;
    record.connections = egress.stop_proxy();
    let (outcome, image) = ran?;
    match image {
        Some(id) if outcome.verdict == Verdict::Passed => {
            record.image_id = id;
            Ok(record)
        }
        _ => Err(EnvError::SetupFailed {
            reason: failure_reason(&outcome, &record.connections, b.settings),
            outcome: Box::new(outcome),
        }),
    }
}

/// The set-up's way out: its own internal network, the egress proxy on
/// the network's gateway and the fence that leaves the host reachable on
/// the proxy's port only; nothing at all with `--allow-host none`.
/// Removed on every path: [`Egress::close`], or in the background when
/// dropped first (a cancelled build).
struct Egress {
    docker: DockerSandbox,
    network: Option<String>,
    proxy: Option<(EgressProxy, super::fence::Fence)>,
}

impl Egress {
    async fn open(
        docker: &DockerSandbox,
        allow: &Allowlist,
        settings: &SetupSettings,
        labels: &[(String, String)],
    ) -> Result<Egress, EnvError> {
        let mut egress = Egress {
            docker: docker.clone(),
            network: None,
            proxy: None,
        };
        if settings.allow_none {
            return Ok(egress);
        }
        let suffix = format!("{:08x}", fastrand::u32(..));
        let bridge = format!("adsetup{suffix}");
        let (id, gateway) = docker
            .create_setup_network(&format!("autodev-setup-{suffix}"), &bridge, labels)
            .await?;
        egress.network = Some(id);
        // Docker makes the bridge with the network; Podman's network
        // backend when the first container joins. A Docker bridge that is
        // not here means an engine elsewhere, which the proxy cannot serve.
        let early = docker.flavor() != crate::sandbox::docker::Flavor::Docker;
        if !early
            && !std::path::Path::new("/sys/class/net")
                .join(&bridge)
                .exists()
        {
            egress.close().await;
            return Err(EnvError::Unsupported(format!(
                "the set-up's network is not on this host: {} runs elsewhere (or in another \
                 network namespace), and the set-up's egress proxy must listen on that \
                 network's gateway; build environments on an engine of this host",
                docker.name()
            )));
        }
        let cfg = ProxyConfig {
            allow: allow.clone(),
            upstream: settings.upstream,
        };
        let proxy = match EgressProxy::start(gateway, cfg, early).await {
            Ok(p) => p,
            Err(e) => {
                egress.close().await;
                return Err(EnvError::Usage(format!(
                    "starting the egress proxy on {gateway}: {e}"
                )));
            }
        };
        // The gateway is this host: without the fence, the set-up could
        // reach any service here that listens on all addresses.
        match super::fence::Fence::up(&bridge, proxy.addr()) {
            Ok(fence) => egress.proxy = Some((proxy, fence)),
            Err(e) => {
                drop(proxy);
                egress.close().await;
                return Err(e);
            }
        }
        Ok(egress)
    }

    /// The network the set-up container joins (`none` for no network).
    fn network(&self) -> String {
        self.network.clone().unwrap_or_else(|| "none".into())
    }

    fn proxy_addr(&self) -> Option<std::net::SocketAddr> {
        self.proxy.as_ref().map(|(p, _)| p.addr())
    }

    /// Stops the proxy and lifts the fence; returns the proxy's record.
    fn stop_proxy(&mut self) -> Vec<Connection> {
        self.proxy
            .take()
            .map(|(p, _fence)| p.stop())
            .unwrap_or_default()
    }

    async fn close(mut self) {
        self.stop_proxy();
        if let Some(id) = self.network.take() {
            if let Err(e) = self.docker.remove_setup_network(&id).await {
                crate::errln!(
                    "autodev: warning: could not remove set-up network {id}: {e}; run `autodev clean`"
                );
            }
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        if let (Some(id), Ok(h)) = (self.network.take(), tokio::runtime::Handle::try_current()) {
            let docker = self.docker.clone();
            h.spawn(async move {
                let _ = docker.remove_setup_network(&id).await;
            });
        }
    }
}

/// What [`probe_egress`] saw.
#[derive(Debug)]
pub struct EgressProbe {
    /// The allowed host the probe was given to reach, if the image names one.
    pub allowed: Option<String>,
    /// Every request the proxy answered.
    pub connections: Vec<Connection>,
    /// What the probe printed.
    pub output: String,
}

/// Runs `script` (given the first host the image's python package tools
/// name, if any) in a set-up container with the set-up's network, proxy and
/// fence, `inside` added to the allowlist; commits nothing. For `doctor`.
pub async fn probe_egress(
    docker: &DockerSandbox,
    base: &RunSpec,
    inside: &str,
    script: impl FnOnce(Option<&str>) -> String,
    cancel: &CancellationToken,
) -> Result<EgressProbe, EnvError> {
    let lang = detect::lang("python");
    let mut entries = match lang {
        Some(l) => probe(docker, base, l, cancel).await?,
        None => Vec::new(),
    };
    let allowed = entries
        .iter()
        .find(|e| !e.host.starts_with("*."))
        .map(|e| e.host.clone());
    entries.push(AllowEntry::parse(inside).map_err(EnvError::Usage)?);
    let allow = Allowlist::new(entries);
    let settings = SetupSettings::default();
    let ca = ca_bundle(&settings)?;
    let mut egress = Egress::open(docker, &allow, &settings, &base.labels).await?;
    let empty = tempfile::tempdir().map_err(|source| EnvError::Cache {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut run = base.clone();
    run.workspace = empty.path().to_path_buf();
    let plan = Plan {
        profile: "python".into(),
        install: script(allowed.as_deref()),
        manifests: Vec::new(),
    };
    let spec = setup_spec(&run, &plan, None, &settings, egress.proxy_addr(), ca);
    let shape = SetupShape {
        network: egress.network(),
        commit: None,
        disk_limit: settings.disk,
    };
    let ran = docker.run_setup(&spec, &shape, &mut NullSink, cancel).await;
    let connections = egress.stop_proxy();
    egress.close().await;
    let (outcome, _) = ran?;
    Ok(EgressProbe {
        allowed,
        connections,
        output: outcome.stdout.text,
    })
}

/// The set-up run: the project copied in as for a test run, the install
/// step between the language's before and after, the proxy and the CA in
/// its variables (stdin, never the image), a run's limits with the set-up's
/// own time limit.
fn setup_spec(
    spec: &RunSpec,
    plan: &Plan,
    lang: Option<&Lang>,
    settings: &SetupSettings,
    proxy: Option<std::net::SocketAddr>,
    ca: Option<Vec<u8>>,
) -> RunSpec {
    let (before, after) = lang.map_or(("", ""), |l| (l.before, l.after));
    let script = format!(
        "if [ -f {CA_IN_WORKSPACE} ]; then cp {CA_IN_WORKSPACE} {CA_PATH}; rm -f {CA_IN_WORKSPACE}; fi\n\
         set -e\n{before}\n{install}\n{after}\n",
        install = plan.install
    );
    let mut s = RunSpec::new(
        spec.workspace.clone(),
        Command::Shell(script),
        spec.image.clone(),
    );
    s.copy = spec.copy.clone();
    s.labels = spec.labels.clone();
    s.limits = spec.limits.clone();
    s.limits.timeout = settings.timeout;
    s.junit = Junit::Off;
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(proxy) = proxy {
        let url = format!("http://{proxy}");
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push((k.to_string(), url.clone()));
        }
        env.push(("NO_PROXY".into(), String::new()));
        env.push(("no_proxy".into(), String::new()));
    }
    if let Some(bytes) = ca {
        for k in [
            "SSL_CERT_FILE",
            "PIP_CERT",
            "REQUESTS_CA_BUNDLE",
            "CARGO_HTTP_CAINFO",
            "NODE_EXTRA_CA_CERTS",
            "NPM_CONFIG_CAFILE",
            "GIT_SSL_CAINFO",
            "CURL_CA_BUNDLE",
        ] {
            env.push((k.into(), CA_PATH.into()));
        }
        s.added.push((PathBuf::from(CA_IN_WORKSPACE), bytes));
    }
    if let Some(l) = lang {
        env.extend(
            l.setup_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
    }
    env.extend(settings.env.iter().cloned());
    s.env = env;
    s
}

/// One line saying why the set-up failed and what to do; a refused host
/// comes first, as it is the likeliest cause.
fn failure_reason(o: &Outcome, conns: &[Connection], settings: &SetupSettings) -> String {
    let refused: Vec<&Connection> = conns.iter().filter(|c| !c.allowed).collect();
    if let Some(c) = refused.first() {
        let more = match refused.len() {
            1 => String::new(),
            n => format!(" ({} refused connections in all)", n),
        };
        let hint = match &c.refused {
            Some(Refusal::NotListed) if settings.allow_none => {
                " (--allow-host none: no network in set-up)".to_string()
            }
            Some(Refusal::NotListed) => format!("; add --allow-host {}", c.host),
            _ => String::new(),
        };
        let why = c.refused.as_ref().map_or_else(String::new, Refusal::reason);
        return format!(
            "set-up could not reach {}:{}: {why}{hint}{more}",
            c.host, c.port
        );
    }
    match o.verdict {
        Verdict::TimedOut => format!(
            "the install step ran past the set-up time limit ({}s); raise --setup-timeout",
            settings.timeout.as_secs()
        ),
        Verdict::OomKilled => "the install step ran out of memory; raise --memory".into(),
        Verdict::Passed => "the set-up container could not be committed".into(),
        _ => match (o.exit_code, &o.error) {
            (_, Some(e)) => e.clone(),
            (Some(c), None) => format!("the install step exited {c} (its output is above)"),
            (None, None) => "the install step did not finish".into(),
        },
    }
}

/// The hosts the image's package tools are configured to reach, asked of
/// the image itself in a run with no network.
async fn probe(
    docker: &DockerSandbox,
    run: &RunSpec,
    lang: &Lang,
    cancel: &CancellationToken,
) -> Result<Vec<AllowEntry>, EnvError> {
    let empty = tempfile::tempdir().map_err(|source| EnvError::Cache {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut spec = RunSpec::new(
        empty.path(),
        Command::Shell(lang.probe.to_string()),
        run.image.clone(),
    );
    spec.junit = Junit::Off;
    spec.labels = run.labels.clone();
    spec.limits.runtime = run.limits.runtime.clone();
    let outcome = docker.run(&spec, &mut NullSink, cancel).await?;
    Ok(hosts_of(&outcome.stdout.text, lang.profile == "rust"))
}

/// Host entries of the URLs in `text`, one a line. `siblings`: the index
/// names where its files are served from only once fetched (cargo's
/// `dl`), in practice a sibling name; its parent domain's names are allowed.
fn hosts_of(text: &str, siblings: bool) -> Vec<AllowEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.split_once("://").map(|(_, r)| r) else {
            continue;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let Ok(entry) = AllowEntry::parse(authority) else {
            continue;
        };
        if siblings {
            if let Some((_, parent)) = entry.host.split_once('.') {
                if parent.contains('.') {
                    out.push(AllowEntry {
                        host: format!("*.{parent}"),
                        port: entry.port,
                    });
                }
            }
        }
        out.push(entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_becomes_host_entries() {
        let got = hosts_of(
            "https://pkg.example.org/simple\nhttps://files.example.net/\nhttp://mirror.test:8080/x\nnot a url\nhttps://10.0.0.1/\n",
            false,
        );
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            ["pkg.example.org", "files.example.net", "mirror.test:8080"]
        );
        let got = hosts_of("https://index.example.io/\n", true);
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["*.example.io", "index.example.io"]);
    }

    #[test]
    fn a_refused_host_is_the_reason_given_with_what_to_add() {
        let o = Outcome::new(
            Verdict::Failed,
            Some(1),
            Default::default(),
            Default::default(),
        );
        let conns = vec![
            Connection {
                host: "pkg.example.org".into(),
                port: 443,
                allowed: true,
                refused: None,
            },
            Connection {
                host: "evil.invalid".into(),
                port: 443,
                allowed: false,
                refused: Some(Refusal::NotListed),
            },
        ];
        let s = SetupSettings::default();
        assert_eq!(
            failure_reason(&o, &conns, &s),
            "set-up could not reach evil.invalid:443: not on the allowlist; add --allow-host evil.invalid"
        );
        assert_eq!(
            failure_reason(&o, &conns[..1], &s),
            "the install step exited 1 (its output is above)"
        );
    }
}
