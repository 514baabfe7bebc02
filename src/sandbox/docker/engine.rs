//! Which Docker engines to use and how to reach them.
//!
//! An engine is named by a URL: `unix:///path/docker.sock`, or
//! `tcp://host:port` (plain, or mutual TLS when certificates are given), or
//! `podman`: Podman's API socket (rootful `/run/podman/podman.sock`, or the
//! user's own under `$XDG_RUNTIME_DIR` when not root).
//! `#slots=N` after it sets how many runs it takes at once (default: its CPU
//! count); `#tls=off` keeps one TCP engine plain when certificates are
//! given for the others (`#slots=2&tls=off` for both). Without `--engine`, `DOCKER_HOST` is honoured the way the docker
//! CLI does (with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`), then Podman's
//! `CONTAINER_HOST`, and without either, the local socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::{ClientVersion, Docker};

use super::Flavor;

/// The local engine's socket.
const LOCAL_SOCKET: &str = "/var/run/docker.sock";

use super::super::reach::{self, no_answer, Endpoint};
use super::super::SandboxError;

/// Limit of one API request: long enough for a slow create on a busy host,
/// short enough that a request lost to a cut link ends.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an engine that took the connection gets to answer the first
/// request (`reach` times taking it): a busy engine is slow, not gone.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Where an engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// This machine's default socket (`/var/run/docker.sock`).
    Local,
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
}

/// Certificate files for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the engine's certificate.
    pub ca: PathBuf,
    /// This client's certificate.
    pub cert: PathBuf,
    /// This client's key.
    pub key: PathBuf,
}

/// One engine to run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSpec {
    /// Where it listens.
    pub address: Address,
    /// Runs at once; `None` = the engine's CPU count.
    pub slots: Option<usize>,
    /// Mutual TLS (TCP only).
    pub tls: Option<TlsFiles>,
    /// Named as Podman's (for the hint when it does not answer).
    pub podman: bool,
}

impl EngineSpec {
    /// The local default engine.
    pub fn local() -> Self {
        EngineSpec {
            address: Address::Local,
            slots: None,
            tls: None,
            podman: false,
        }
    }

    /// The name used in messages.
    pub fn name(&self) -> String {
        match &self.address {
            Address::Local => "the local Docker engine".into(),
            Address::Unix(p) => format!("unix://{}", p.display()),
            Address::Tcp(hp) if self.tls.is_some() => format!("tcp://{hp} (TLS)"),
            Address::Tcp(hp) => format!("tcp://{hp}"),
        }
    }

    /// Connects, negotiating the API version from one `/version` answer,
    /// which also tells Docker from Podman; fails within [`reach::CONNECT_TIMEOUT`]
    /// if nobody takes the connection, and within [`ANSWER_TIMEOUT`] if the
    /// engine takes it but does not answer.
    pub(super) async fn connect(&self) -> Result<(Docker, Flavor), SandboxError> {
        let name = self.name();
        let hint = match (&self.address, self.podman) {
            (Address::Unix(p), true) => format!(
                "start Podman's API service: `podman system service --time=0 unix://{}` (or `systemctl start podman.socket`; as a user, `systemctl --user start podman.socket`)",
                p.display()
            ),
            _ => super::super::START_DOCKER.to_string(),
        };
        let tls = self.tls.is_some();
        let unreachable = |detail: String| SandboxError::Unreachable {
            engine: name.clone(),
            hint: cause_hint(&detail, tls).map_or_else(|| hint.clone(), str::to_string),
            detail,
        };
        if let (Address::Unix(p), true) = (&self.address, self.podman) {
            if !p.exists() {
                return Err(unreachable(format!("no socket at {}", p.display())));
            }
        }
        let docker = self.client(bollard::API_DEFAULT_VERSION)?;
        let endpoint = match &self.address {
            Address::Local => Endpoint::Unix(Path::new(LOCAL_SOCKET)),
            Address::Unix(p) => Endpoint::Unix(p),
            Address::Tcp(hp) => Endpoint::Tcp(hp),
        };
        reach::reach(endpoint).await.map_err(unreachable)?;
        let version = match tokio::time::timeout(ANSWER_TIMEOUT, docker.version()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(unreachable(causes(&e))),
            Err(_) => return Err(unreachable(no_answer(ANSWER_TIMEOUT))),
        };
        let flavor = if version
            .components
            .iter()
            .flatten()
            .any(|c| c.name.contains("Podman"))
        {
            Flavor::Podman
        } else {
            Flavor::Docker
        };
        // The older of the engine's API and this client's, as bollard's own
        // negotiation picks it, without asking the engine a second time.
        let server = version.api_version.as_deref().and_then(|v| {
            let (major, minor) = v.split_once('.')?;
            Some(ClientVersion {
                major_version: major.parse().ok()?,
                minor_version: minor.parse().ok()?,
            })
        });
        match server {
            Some(s) if s < *bollard::API_DEFAULT_VERSION => Ok((self.client(&s)?, flavor)),
            _ => Ok((docker, flavor)),
        }
    }

    /// A client for this engine speaking API version `v` (no I/O).
    fn client(&self, v: &ClientVersion) -> Result<Docker, SandboxError> {
        let name = self.name();
        let timeout = REQUEST_TIMEOUT.as_secs();
        match (&self.address, &self.tls) {
            (Address::Local, _) => Docker::connect_with_unix(LOCAL_SOCKET, timeout, v),
            (Address::Unix(p), _) => Docker::connect_with_unix(&p.to_string_lossy(), timeout, v),
            (Address::Tcp(hp), None) => Docker::connect_with_http(hp, timeout, v),
            (Address::Tcp(hp), Some(t)) => {
                for f in [&t.ca, &t.cert, &t.key] {
                    if !f.is_file() {
                        return Err(SandboxError::Settings(format!(
                            "TLS file {} for {name} not found: check --tls-ca/--tls-cert/--tls-key or DOCKER_CERT_PATH",
                            f.display()
                        )));
                    }
                }
                Docker::connect_with_ssl(hp, &t.key, &t.cert, &t.ca, timeout, v)
            }
        }
        .map_err(|e| match self.tls {
            Some(_) => SandboxError::Settings(format!("TLS set-up for {name} failed: {e}")),
            None => SandboxError::Unreachable {
                engine: name.clone(),
                detail: e.to_string(),
                hint: super::super::START_DOCKER.to_string(),
            },
        })
    }
}

/// An error with its causes, each once: the client's top message alone
/// ("client error (Connect)") does not say what went wrong.
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(c) = next {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = c.source();
    }
    parts.join(": ")
}

/// What to do, when the failure says what it is: a certificate, TLS
/// spoken to a plain engine or the other way round, a socket this user may
/// not use. `None`: the engine is simply not there.
fn cause_hint(detail: &str, tls: bool) -> Option<&'static str> {
    let d = detail.to_ascii_lowercase();
    if d.contains("permission denied") {
        Some("this user may not use the engine's socket: join its group (e.g. docker) or run as its owner")
    } else if d.contains("http request to an https server") {
        Some("the engine expects TLS: give its certificates with --tls-ca/--tls-cert/--tls-key, or DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH")
    } else if d.contains("certificate")
        || d.contains("unknownissuer")
        || d.contains("bad certificate")
    {
        Some("a certificate was refused: check that --tls-ca signed the engine's certificate, and that --tls-cert and --tls-key are the client's pair signed by the CA the engine trusts")
    } else if tls
        && (d.contains("tls")
            || d.contains("handshake")
            || d.contains("sendrequest")
            || d.contains("corrupt message")
            || d.contains("invalid content type"))
    {
        Some("the TLS handshake failed: check the engine speaks TLS on this port (--tls-*, or #tls=off for a plain one) and the certificates")
    } else {
        None
    }
}

/// TLS flags of the command line, applied to every TCP engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// `--tls-ca`.
    pub ca: Option<PathBuf>,
    /// `--tls-cert`.
    pub cert: Option<PathBuf>,
    /// `--tls-key`.
    pub key: Option<PathBuf>,
}

/// The engines the command line names, or else those `DOCKER_HOST` and its
/// companions name (`env` reads a variable), or else the local socket.
pub fn engines(
    urls: &[String],
    tls: &TlsFlags,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<EngineSpec>, SandboxError> {
    let tls = resolve_tls(tls, &env)?;
    let podman_socket = || match env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        // Not root: the user's own service.
        Some(dir) if not_root() => format!("unix://{dir}/podman/podman.sock"),
        _ => "unix:///run/podman/podman.sock".to_string(),
    };
    let read = |url: &str, podman: bool| {
        let (named, url) = match url.split_once('#') {
            Some(("podman", rest)) => (true, format!("{}#{rest}", podman_socket())),
            None if url == "podman" => (true, podman_socket()),
            _ => (false, url.to_string()),
        };
        parse(&url, tls.as_ref()).map(|e| EngineSpec {
            podman: podman || named,
            ..e
        })
    };
    if urls.is_empty() {
        if let Some(h) = env("DOCKER_HOST").filter(|h| !h.is_empty()) {
            return Ok(vec![read(&h, false)?]);
        }
        if let Some(h) = env("CONTAINER_HOST").filter(|h| !h.is_empty()) {
            return Ok(vec![read(&h, true)?]);
        }
        return Ok(vec![EngineSpec::local()]);
    }
    let specs: Vec<EngineSpec> = urls
        .iter()
        .map(|u| read(u, false))
        .collect::<Result<_, _>>()?;
    // The same engine twice would count its slots twice.
    for (i, a) in specs.iter().enumerate() {
        if specs[..i].iter().any(|b| b.address == a.address) {
            return Err(SandboxError::Settings(format!(
                "engine {} is given twice: give each engine once (#slots=N sets how many runs it takes)",
                a.name()
            )));
        }
    }
    Ok(specs)
}

/// Whether this process runs as a user other than root.
fn not_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() != 0 }
}

/// Certificates from the flags (all three, or none), else from
/// `DOCKER_TLS_VERIFY` + `DOCKER_CERT_PATH` (default `~/.docker`) as the
/// docker CLI reads them.
fn resolve_tls(
    flags: &TlsFlags,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<TlsFiles>, SandboxError> {
    match (&flags.ca, &flags.cert, &flags.key) {
        (Some(ca), Some(cert), Some(key)) => {
            return Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }))
        }
        (None, None, None) => {}
        _ => {
            return Err(SandboxError::Settings(
                "mutual TLS needs all three of --tls-ca, --tls-cert and --tls-key".into(),
            ))
        }
    }
    // As the docker CLI: any non-empty value turns TLS on, "0" included.
    let verify = env("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    if !verify {
        return Ok(None);
    }
    let dir = env("DOCKER_CERT_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".docker")))
        .ok_or_else(|| {
            SandboxError::Settings(
                "DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is".into(),
            )
        })?;
    Ok(Some(TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }))
}

/// Reads one engine URL (`unix:///path`, `tcp://host:port`, then
/// optionally `#slots=N`, `#tls=off` or both joined by `&`).
pub fn parse(url: &str, tls: Option<&TlsFiles>) -> Result<EngineSpec, SandboxError> {
    let bad = |why: &str| {
        SandboxError::Settings(format!(
            "invalid engine {url:?}: {why} (use unix:///path/docker.sock or tcp://host:port, optionally #slots=N, #tls=off or #slots=N&tls=off)"
        ))
    };
    let (addr, fragment) = match url.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (url, None),
    };
    let mut slots = None;
    let mut plain = false;
    for option in fragment.into_iter().flat_map(|f| f.split('&')) {
        match option.split_once('=') {
            Some(("slots", n)) => {
                slots = Some(
                    n.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| bad("slots must be #slots=N with N from 1 to 1024"))?,
                )
            }
            Some(("tls", "off")) => plain = true,
            _ => return Err(bad(&format!("unknown option {option:?}"))),
        }
    }
    let address = if let Some(path) = addr.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(bad("a unix socket path must be absolute"));
        }
        Address::Unix(PathBuf::from(path))
    } else if let Some(hp) = addr.strip_prefix("tcp://") {
        // One trailing slash, as the docker CLI takes it.
        let hp = hp.strip_suffix('/').unwrap_or(hp);
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| bad("a TCP engine needs a port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() || hp.contains('/') {
            return Err(bad("expected tcp://host:port"));
        }
        Address::Tcp(hp.to_string())
    } else {
        return Err(bad("unknown scheme"));
    };
    let tls = match address {
        Address::Tcp(_) if !plain => tls.cloned(),
        _ => None,
    };
    Ok(EngineSpec {
        address,
        slots,
        tls,
        podman: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_failure_says_what_it_is() {
        let perm = cause_hint("Permission denied (os error 13)", false).unwrap();
        assert!(perm.contains("group"), "{perm}");
        let plain = cause_hint("Client sent an HTTP request to an HTTPS server.", false).unwrap();
        assert!(plain.contains("expects TLS"), "{plain}");
        let ca = cause_hint(
            "client error (Connect): invalid peer certificate: UnknownIssuer",
            true,
        )
        .unwrap();
        assert!(ca.contains("certificate"), "{ca}");
        assert!(cause_hint("client error (SendRequest)", true).is_some());
        assert_eq!(cause_hint("Connection refused (os error 111)", false), None);
    }

    #[test]
    fn docker_tls_verify_is_on_for_any_value_as_in_the_docker_cli() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let env = |k: &str| match k {
            "DOCKER_TLS_VERIFY" => Some("0".to_string()),
            "DOCKER_CERT_PATH" => Some(d.clone()),
            _ => None,
        };
        // On: the certificates are looked for (and here missing).
        let r = resolve_tls(&TlsFlags::default(), &env);
        assert!(!matches!(r, Ok(None)), "{r:?}");
    }
    use crate::sandbox::reach::CONNECT_TIMEOUT;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn urls_and_slots_are_read() {
        let slash = parse("tcp://127.0.0.1:2375/", None).unwrap();
        assert_eq!(slash.address, Address::Tcp("127.0.0.1:2375".into()));
        let twice = engines(
            &[
                "unix:///run/a.sock".into(),
                "unix:///run/a.sock#slots=2".into(),
            ],
            &TlsFlags::default(),
            |_| None,
        )
        .unwrap_err();
        assert!(twice.to_string().contains("given twice"), "{twice}");
        let e = parse("tcp://10.0.0.1:2375#slots=3", None).unwrap();
        assert_eq!(e.address, Address::Tcp("10.0.0.1:2375".into()));
        assert_eq!(e.slots, Some(3));
        let u = parse("unix:///run/docker.sock", None).unwrap();
        assert_eq!(u.address, Address::Unix("/run/docker.sock".into()));
        for bad in [
            "docker.sock",
            "http://h:1",
            "tcp://h",
            "tcp://h:notaport",
            "tcp://:1",
            "unix://rel/path",
            "tcp://h:1#slots=0",
            "tcp://h:1#cpus=2",
            "ssh://h",
        ] {
            let e = parse(bad, None).unwrap_err();
            assert!(matches!(e, SandboxError::Settings(_)), "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn docker_host_is_honoured_when_no_engine_is_given() {
        let env = |k: &str| match k {
            "DOCKER_HOST" => Some("tcp://127.0.0.1:9".to_string()),
            _ => None,
        };
        let e = engines(&[], &TlsFlags::default(), env).unwrap();
        assert_eq!(e[0].address, Address::Tcp("127.0.0.1:9".into()));
        assert_eq!(
            engines(&[], &TlsFlags::default(), no_env).unwrap()[0],
            EngineSpec::local()
        );
        let given = engines(&["unix:///x.sock".into()], &TlsFlags::default(), env).unwrap();
        assert_eq!(given[0].address, Address::Unix("/x.sock".into()));
    }

    #[test]
    fn tls_comes_from_all_three_flags_or_the_docker_cli_variables() {
        let partial = TlsFlags {
            ca: Some("ca.pem".into()),
            ..TlsFlags::default()
        };
        assert!(engines(&["tcp://h:1".into()], &partial, no_env).is_err());
        let env = |k: &str| match k {
            "DOCKER_HOST" => Some("tcp://h:2376".to_string()),
            "DOCKER_TLS_VERIFY" => Some("1".to_string()),
            "DOCKER_CERT_PATH" => Some("/certs".to_string()),
            _ => None,
        };
        let e = engines(&[], &TlsFlags::default(), env).unwrap();
        assert_eq!(
            e[0].tls.as_ref().unwrap().cert,
            Path::new("/certs/cert.pem")
        );
        // Unix sockets never use TLS.
        let u = engines(&["unix:///s".into()], &TlsFlags::default(), env).unwrap();
        assert!(u[0].tls.is_none());
    }

    #[test]
    fn podman_is_named_by_keyword_or_container_host() {
        let e = engines(&["podman#slots=2".into()], &TlsFlags::default(), no_env).unwrap();
        assert!(e[0].podman);
        assert_eq!(e[0].slots, Some(2));
        assert!(matches!(&e[0].address, Address::Unix(p) if p.ends_with("podman/podman.sock")));
        let env = |k: &str| (k == "CONTAINER_HOST").then(|| "unix:///tmp/p.sock".to_string());
        let c = engines(&[], &TlsFlags::default(), env).unwrap();
        assert_eq!(
            (c[0].podman, &c[0].address),
            (true, &Address::Unix("/tmp/p.sock".into()))
        );
    }

    #[tokio::test]
    async fn a_missing_podman_socket_says_how_to_start_the_service() {
        let e = engines(&["podman".into()], &TlsFlags::default(), |k| {
            (k == "XDG_RUNTIME_DIR").then(|| "/nonexistent".to_string())
        })
        .unwrap();
        let err = e[0].connect().await.unwrap_err().to_string();
        assert!(err.contains("podman system service"), "{err}");
        assert!(!err.contains("systemctl start docker"), "{err}");
    }

    /// An engine on a unix socket in a folder of its own that answers
    /// `/version` after `delay`, or never (`None`).
    fn engine_that_answers(delay: Option<Duration>) -> (tempfile::TempDir, EngineSpec) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        crate::sandbox::slow_api::serve(
            std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s))),
            delay,
            r#"{"Version":"20.10.24","ApiVersion":"1.41"}"#,
        );
        let spec = EngineSpec {
            address: Address::Unix(path),
            ..EngineSpec::local()
        };
        (dir, spec)
    }

    #[tokio::test]
    async fn a_busy_engine_gets_longer_than_the_connect_limit_to_answer() {
        let (_dir, spec) = engine_that_answers(Some(CONNECT_TIMEOUT + Duration::from_secs(1)));
        let (_, flavor) = spec.connect().await.unwrap();
        assert_eq!(flavor, Flavor::Docker);
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_that_takes_the_connection_and_never_answers_is_unreachable() {
        let (_dir, spec) = engine_that_answers(None);
        let err = spec.connect().await.unwrap_err();
        assert!(matches!(err, SandboxError::Unreachable { .. }), "{err}");
        assert!(
            err.to_string().contains("gave no answer within 15s"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn nobody_listening_is_told_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        // A socket file whose listener is gone: refused, not waited on.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let spec = EngineSpec {
            address: Address::Unix(path),
            ..EngineSpec::local()
        };
        let t = std::time::Instant::now();
        let err = spec.connect().await.unwrap_err();
        assert!(t.elapsed() < CONNECT_TIMEOUT, "took {:?}", t.elapsed());
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[test]
    fn one_invocation_mixes_tls_and_plain_engines() {
        let all = TlsFlags {
            ca: Some("ca.pem".into()),
            cert: Some("cert.pem".into()),
            key: Some("key.pem".into()),
        };
        let urls = ["tcp://a:2376".into(), "tcp://b:2375#slots=2&tls=off".into()];
        let e = engines(&urls, &all, no_env).unwrap();
        assert!(e[0].tls.is_some());
        assert_eq!((e[1].tls.is_none(), e[1].slots), (true, Some(2)));
        assert_eq!(e[1].name(), "tcp://b:2375");
        assert!(parse("tcp://h:1#tls=on", None).is_err());
        assert!(parse("tcp://h:1#tls=off&slots=x", None).is_err());
    }

    #[tokio::test]
    async fn a_missing_tls_file_is_a_settings_error_before_any_connection() {
        let e = EngineSpec {
            podman: false,
            address: Address::Tcp("127.0.0.1:9".into()),
            slots: None,
            tls: Some(TlsFiles {
                ca: "/nonexistent/ca.pem".into(),
                cert: "/nonexistent/cert.pem".into(),
                key: "/nonexistent/key.pem".into(),
            }),
        };
        let err = e.connect().await.unwrap_err();
        assert!(matches!(err, SandboxError::Settings(_)), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }
}
