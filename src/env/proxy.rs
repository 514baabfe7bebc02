//! The egress proxy the set-up phase reaches the package registries
//! through: the set-up container's only way out.
//!
//! It speaks HTTP `CONNECT` (for TLS) and plain HTTP with an absolute URI,
//! decides each request with [`allow::decide`](super::allow::decide), connects to the
//! exact address it checked, and records every request, allowed or not. It
//! never follows a redirect: a client that is redirected makes a new
//! request, which is decided again. With an upstream (an operator's own
//! forward proxy, or a test's stand-in for a registry) allowed requests go
//! there instead, unresolved: the upstream resolves and reaches the name.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::allow::{decide, Allowlist};
pub use crate::sandbox::environment::{Connection, Refusal};

/// Longest request head read before the request is refused.
const MAX_HEAD: usize = 16 * 1024;
/// Bound on reading a request head and on connecting onward.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the proxy lets through, and where it sends it.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// The hosts allowed.
    pub allow: Allowlist,
    /// Send allowed requests to this HTTP proxy instead of the host itself.
    pub upstream: Option<SocketAddr>,
}

/// A running egress proxy; it stops, and every tunnel through it closes,
/// when [`EgressProxy::stop`] is called or it is dropped.
#[derive(Debug)]
pub struct EgressProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Connection>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A listener on `bind`; with `early`, made before `bind` is this host's
/// (Podman's network backend gives a network's bridge its gateway address
/// only when the first container joins, and the proxy must listen first).
fn listen(bind: IpAddr, early: bool) -> std::io::Result<TcpListener> {
    if !early {
        let std = std::net::TcpListener::bind((bind, 0))?;
        std.set_nonblocking(true)?;
        return TcpListener::from_std(std);
    }
    use std::os::fd::AsRawFd;
    let (socket, level, option) = match bind {
        IpAddr::V4(_) => (
            tokio::net::TcpSocket::new_v4()?,
            libc::SOL_IP,
            libc::IP_FREEBIND,
        ),
        IpAddr::V6(_) => (
            tokio::net::TcpSocket::new_v6()?,
            libc::SOL_IPV6,
            libc::IPV6_FREEBIND,
        ),
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor owned by `socket`, and an option
    // value that lives across the call with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::new(bind, 0))?;
    socket.listen(1024)
}

impl EgressProxy {
    /// Listens on `bind` (a port the system picks) and serves until
    /// stopped; with `early`, even before `bind` is an address of this host.
    pub async fn start(bind: IpAddr, cfg: ProxyConfig, early: bool) -> std::io::Result<Self> {
        let listener = listen(bind, early)?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let cfg = Arc::new(cfg);
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(serve(stream, cfg.clone(), log2.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(EgressProxy { addr, log, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far.
    pub fn record(&self) -> Vec<Connection> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stops listening and closes every tunnel.
    pub fn stop(self) -> Vec<Connection> {
        self.task.abort();
        self.record()
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection: one request (tunnels and plain requests are
/// closed after their exchange; package tools reconnect).
async fn serve(stream: TcpStream, cfg: Arc<ProxyConfig>, log: Arc<Mutex<Vec<Connection>>>) {
    let mut client = BufReader::new(stream);
    let head = match tokio::time::timeout(STEP_TIMEOUT, read_head(&mut client)).await {
        Ok(Some(h)) => h,
        _ => {
            let _ = refuse(client.get_mut(), "-", &Refusal::BadRequest).await;
            return;
        }
    };
    let Some(req) = Request::parse(&head) else {
        let _ = refuse(client.get_mut(), "-", &Refusal::BadRequest).await;
        return;
    };
    let target = format!("{}:{}", req.host, req.port);
    let outcome = connect_onward(&cfg, &req).await;
    let entry = Connection {
        host: req.host.clone(),
        port: req.port,
        allowed: outcome.is_ok(),
        refused: outcome.as_ref().err().cloned(),
    };
    if let Ok(mut l) = log.lock() {
        l.push(entry);
    }
    let mut upstream = match outcome {
        Ok(s) => s,
        Err(r) => {
            let _ = refuse(client.get_mut(), &target, &r).await;
            return;
        }
    };
    // Whatever the client sent past the head goes on unchanged.
    let early = client.buffer().to_vec();
    let mut client = client.into_inner();
    // Bytes an upstream sent past its answer to our CONNECT are the tunnel's.
    let mut from_upstream = Vec::new();
    if req.connect && cfg.upstream.is_some() {
        match tunnel_through_upstream(&mut upstream, &target).await {
            Ok(rest) => from_upstream = rest,
            Err(()) => {
                let _ = refuse(&mut client, &target, &Refusal::NoAddress).await;
                return;
            }
        }
    }
    let forwarded = if req.connect {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
    } else {
        let head = if cfg.upstream.is_some() {
            req.head_as_is(&head)
        } else {
            req.origin_form_head(&head)
        };
        upstream.write_all(head.as_bytes()).await
    };
    if forwarded.is_err() || client.write_all(&from_upstream).await.is_err() {
        return;
    }
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

async fn tunnel_through_upstream(up: &mut TcpStream, target: &str) -> Result<Vec<u8>, ()> {
    let ask = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    up.write_all(ask.as_bytes()).await.map_err(|_| ())?;
    let mut r = BufReader::new(&mut *up);
    let head = tokio::time::timeout(STEP_TIMEOUT, read_head(&mut r))
        .await
        .ok()
        .flatten()
        .ok_or(())?;
    let ok = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .is_some_and(|c| c == "200");
    if ok {
        Ok(r.buffer().to_vec())
    } else {
        Err(())
    }
}

/// Decides `req` and opens the onward connection it may have.
async fn connect_onward(cfg: &ProxyConfig, req: &Request) -> Result<TcpStream, Refusal> {
    if !cfg.allow.allows(&req.host, req.port) {
        return Err(Refusal::NotListed);
    }
    let addr = match cfg.upstream {
        Some(up) => up,
        None => {
            let addrs: Vec<IpAddr> = match req.host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => tokio::time::timeout(
                    STEP_TIMEOUT,
                    tokio::net::lookup_host((req.host.as_str(), req.port)),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|it| it.map(|a| a.ip()).collect())
                .unwrap_or_default(),
            };
            SocketAddr::new(decide(&cfg.allow, &req.host, req.port, &addrs)?, req.port)
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr))
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or(Refusal::NoAddress)
}

async fn refuse<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    target: &str,
    r: &Refusal,
) -> std::io::Result<()> {
    let body = format!("autodev: set-up may not reach {target}: {}\n", r.reason());
    let head = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body.as_bytes()).await?;
    w.shutdown().await
}

/// Reads up to and including the blank line that ends a request head.
async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<String> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut *r)
            .take((MAX_HEAD - head.len()) as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return String::from_utf8(head).ok();
        }
    }
}

/// The parts of a proxy request the decision needs.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    connect: bool,
    host: String,
    port: u16,
    /// For plain requests: method, path and version of the first line.
    method: String,
    path: String,
    version: String,
}

impl Request {
    fn parse(head: &str) -> Option<Request> {
        let first = head.lines().next()?;
        let mut parts = first.split_whitespace();
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !version.starts_with("HTTP/1.") {
            return None;
        }
        if method.eq_ignore_ascii_case("CONNECT") {
            let (host, port) = split_host_port(target, None)?;
            return Some(Request {
                connect: true,
                host,
                port,
                method: method.into(),
                path: String::new(),
                version: version.into(),
            });
        }
        let rest = target.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return None;
        }
        let (host, port) = split_host_port(authority, Some(80))?;
        Some(Request {
            connect: false,
            host,
            port,
            method: method.into(),
            path: path.into(),
            version: version.into(),
        })
    }

    /// The head sent to an origin server: path-only first line, the
    /// client's headers without the proxy's own, one request per connection.
    fn origin_form_head(&self, head: &str) -> String {
        let first = format!("{} {} {}", self.method, self.path, self.version);
        rewrite_head(&first, head, HOP_HEADERS)
    }

    /// The head sent to an upstream proxy: as the client sent it (the
    /// absolute URI kept), one request per connection, and no credentials
    /// of the set-up's for the operator's proxy.
    fn head_as_is(&self, head: &str) -> String {
        let first = head.lines().next().unwrap_or_default();
        rewrite_head(first, head, HOP_HEADERS)
    }
}

/// Headers for this hop only (lower-case prefixes), never passed on.
const HOP_HEADERS: &[&str] = &["proxy-", "connection:", "keep-alive:"];

/// `first`, then the headers of `head` whose lower-case form starts with
/// none of `dropped`, then `Connection: close`.
fn rewrite_head(first: &str, head: &str, dropped: &[&str]) -> String {
    let mut out = format!("{first}\r\n");
    for line in head.lines().skip(1) {
        let lower = line.to_ascii_lowercase();
        if line.is_empty() || dropped.iter().any(|d| lower.starts_with(d)) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn split_host_port(s: &str, default: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default?,
    };
    if host.is_empty() {
        return None;
    }
    Some((host.trim_end_matches('.').to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::allow::AllowEntry;

    #[test]
    fn requests_parse_in_both_forms_and_odd_ones_are_refused() {
        let r = Request::parse("CONNECT Pkg.Example.org:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(r.connect && r.host == "pkg.example.org" && r.port == 443);
        let r = Request::parse("GET http://mirror.test:8080/a/b?c HTTP/1.1\r\n\r\n").unwrap();
        assert!(!r.connect && r.host == "mirror.test" && r.port == 8080 && r.path == "/a/b?c");
        let r = Request::parse("GET http://mirror.test HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.port, r.path.as_str()), (80, "/"));
        for bad in [
            "CONNECT host HTTP/1.1",
            "GET /relative HTTP/1.1",
            "GET https://x/ HTTP/1.1",
            "GET http://user@x/ HTTP/1.1",
            "CONNECT x:0 HTTP/1.1",
            "GET http://x/ SPDY/3",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_origin_head_drops_proxy_headers_and_closes() {
        let head = "GET http://m.test/p HTTP/1.1\r\nHost: m.test\r\nProxy-Authorization: x\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n";
        let r = Request::parse(head).unwrap();
        assert_eq!(
            r.origin_form_head(head),
            "GET /p HTTP/1.1\r\nHost: m.test\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    async fn ask(proxy: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    /// Against a loopback server standing in for an upstream: allowed names
    /// reach it (unresolved), others are refused and recorded.
    #[tokio::test]
    async fn an_early_listener_waits_for_its_address_and_a_plain_one_refuses_it() {
        // An address of no interface here (documentation range): binding
        // sends nothing anywhere.
        let absent: IpAddr = "192.0.2.77".parse().unwrap();
        assert!(listen(absent, false).is_err());
        let early = listen(absent, true).expect("a free bind");
        assert_eq!(early.local_addr().unwrap().ip(), absent);
    }

    #[tokio::test]
    async fn allowed_requests_go_through_and_the_rest_are_refused_and_recorded() {
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = origin.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((mut s, _)) = origin.accept().await else {
                    return;
                };
                let mut r = BufReader::new(&mut s);
                let head = read_head(&mut r).await.unwrap_or_default();
                let first = head.lines().next().unwrap_or_default().to_string();
                let reply = if first.starts_with("CONNECT") {
                    "HTTP/1.1 200 OK\r\n\r\ntunnelled".to_string()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{first}",
                        first.len()
                    )
                };
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        let cfg = ProxyConfig {
            allow: Allowlist::new(vec![AllowEntry::parse("modules.test").unwrap()]),
            upstream: Some(origin_addr),
        };
        let proxy = EgressProxy::start("127.0.0.1".parse().unwrap(), cfg, false)
            .await
            .unwrap();
        let got = ask(
            proxy.addr(),
            "GET http://modules.test/x/@v/list HTTP/1.1\r\nHost: modules.test\r\n\r\n",
        )
        .await;
        assert!(
            got.contains("GET http://modules.test/x/@v/list HTTP/1.1"),
            "{got}"
        );
        let got = ask(proxy.addr(), "CONNECT modules.test:443 HTTP/1.1\r\n\r\n").await;
        assert!(
            got.starts_with("HTTP/1.1 200 Connection established") && got.ends_with("tunnelled"),
            "{got}"
        );
        let got = ask(
            proxy.addr(),
            "CONNECT off-list.invalid:443 HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 403")
                && got.contains("off-list.invalid:443: not on the allowlist"),
            "{got}"
        );
        let got = ask(proxy.addr(), "garbage\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 403"), "{got}");
        let log = proxy.stop();
        let seen: Vec<(&str, bool)> = log.iter().map(|c| (c.host.as_str(), c.allowed)).collect();
        assert_eq!(
            seen,
            [
                ("modules.test", true),
                ("modules.test", true),
                ("off-list.invalid", false)
            ]
        );
    }

    /// Without an upstream the proxy resolves names itself: a listed name
    /// that resolves to loopback is refused, and no connection is made.
    #[tokio::test]
    async fn a_listed_name_resolving_to_loopback_is_refused() {
        let cfg = ProxyConfig {
            allow: Allowlist::new(vec![AllowEntry::parse("localhost").unwrap()]),
            upstream: None,
        };
        let proxy = EgressProxy::start("127.0.0.1".parse().unwrap(), cfg, false)
            .await
            .unwrap();
        let got = ask(proxy.addr(), "CONNECT localhost:9 HTTP/1.1\r\n\r\n").await;
        assert!(got.contains("a loopback address"), "{got}");
        let got = ask(proxy.addr(), "GET http://127.0.0.1:9/ HTTP/1.1\r\n\r\n").await;
        assert!(got.contains("not on the allowlist"), "{got}");
        assert!(proxy.record().iter().all(|c| !c.allowed));
    }
}
