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

/// Builds the environment for `plan` on `docker`, committed as `tag`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn build(
    docker: &DockerSandbox,
    spec: &RunSpec,
    plan: &Plan,
    base: &str,
    key: &str,
    tag: &str,
    settings: &SetupSettings,
    sink: &mut dyn OutputSink,
    cancel: &CancellationToken,
) -> Result<EnvRecord, EnvError> {
    let lang = detect::lang(&plan.profile);
    let allow = if settings.allow_none {
        Allowlist::default()
    } else {
        let mut entries = match lang {
            Some(l) => probe(docker, spec, l, cancel).await?,
            None => Vec::new(),
        };
        entries.extend(settings.allow.iter().cloned());
        Allowlist::new(entries)
    };
    let ca = match &settings.ca {
        Some(p) => Some(p.clone()),
        None => host_ca_bundle(),
    };
    let ca_bytes = match &ca {
        Some(p) => Some(std::fs::read(p).map_err(|e| {
            EnvError::Usage(format!(
                "reading the CA bundle {}: {e}; name one with --setup-ca FILE",
                p.display()
            ))
        })?),
        None => None,
    };

    // `--allow-host none`: no network at all, not even the proxy's.
    let net = match settings.allow_none {
        true => NetworkGuard {
            docker: docker.clone(),
            id: None,
            plumbing: None,
        },
        false => {
            let suffix = format!("{:08x}", fastrand::u32(..));
            let bridge = format!("adsetup{suffix}");
            let (id, gateway) = docker
                .create_setup_network(&format!("autodev-setup-{suffix}"), &bridge)
                .await?;
            NetworkGuard {
                docker: docker.clone(),
                id: Some(id),
                plumbing: None,
            }
            .with(bridge, gateway)
        }
    };
    let result = async {
        let proxy = match &net.plumbing {
            None => None,
            Some((bridge, gateway)) => {
                let proxy = EgressProxy::start(
                    *gateway,
                    ProxyConfig {
                        allow: allow.clone(),
                        upstream: settings.upstream,
                    },
                )
                .await
                .map_err(|e| {
                    EnvError::Usage(format!("starting the egress proxy on {gateway}: {e}"))
                })?;
                // The gateway is this host: without the fence, the set-up
                // could reach any service here that listens on all addresses.
                let fence = super::fence::Fence::up(bridge, proxy.addr())?;
                Some((proxy, fence))
            }
        };
        let setup_spec = setup_spec(
            spec,
            plan,
            lang,
            settings,
            proxy.as_ref().map(|(p, _)| p.addr()),
            ca_bytes,
        );
        let shape = SetupShape {
            network: net.id.clone().unwrap_or_else(|| "none".into()),
            commit: Commit {
                repo: tag.split(':').next().unwrap_or(tag).to_string(),
                tag: tag.rsplit(':').next().unwrap_or("latest").to_string(),
                changes: Vec::new(),
            },
        };
        let t0 = Instant::now();
        let mut record = EnvRecord {
            key: key.to_string(),
            image: tag.to_string(),
            image_id: String::new(),
            base_image_id: base.to_string(),
            profile: plan.profile.clone(),
            setup: plan.install.clone(),
            manifests: plan.manifests.clone(),
            allow: allow.entries.iter().map(ToString::to_string).collect(),
            setup_ms: 0,
            cache: CacheUse::Miss,
            connections: Vec::new(),
        };
        // The record rides on the image; its duration is known only after
        // the run, so the label gives the set-up's limit-free facts.
        let shape = SetupShape {
            commit: Commit {
                changes: vec![
                    format!("LABEL {KEY_LABEL}={key}"),
                    format!("LABEL {RECORD_LABEL}={}", cache::encode(&record)),
                ],
                ..shape.commit
            },
            ..shape
        };
        let ran = docker.run_setup(&setup_spec, &shape, sink, cancel).await;
        let connections = proxy.map(|(p, _fence)| p.stop()).unwrap_or_default();
        record.setup_ms = t0.elapsed().as_millis() as u64;
        record.connections = connections;
        let (outcome, image) = ran?;
        match image {
            Some(id) if outcome.verdict == Verdict::Passed => {
                record.image_id = id;
                Ok(record)
            }
            _ => Err(EnvError::SetupFailed {
                reason: failure_reason(&outcome, &record.connections, settings),
                outcome: Box::new(outcome),
            }),
        }
    }
    .await;
    net.remove().await;
    result
}

/// Removes the set-up network on every path: now when asked, in the
/// background when dropped first (a cancelled build).
struct NetworkGuard {
    docker: DockerSandbox,
    id: Option<String>,
    /// The bridge's name and the host's address on it.
    plumbing: Option<(String, std::net::IpAddr)>,
}

impl NetworkGuard {
    fn with(mut self, bridge: String, gateway: std::net::IpAddr) -> Self {
        self.plumbing = Some((bridge, gateway));
        self
    }

    async fn remove(mut self) {
        if let Some(id) = self.id.take() {
            if let Err(e) = self.docker.remove_setup_network(&id).await {
                crate::errln!("autodev: warning: could not remove set-up network {id}: {e}; run `autodev clean`");
            }
        }
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        if let (Some(id), Ok(h)) = (self.id.take(), tokio::runtime::Handle::try_current()) {
            let docker = self.docker.clone();
            h.spawn(async move {
                let _ = docker.remove_setup_network(&id).await;
            });
        }
    }
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
