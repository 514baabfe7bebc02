//! The set-up phase's egress, checked as a user would fear it fails: an
//! allowed registry must be reachable through the proxy; a name off the
//! list, an allowed name that resolves to this host's loopback, and this
//! host itself past the proxy must not be. The proxy's own record decides
//! the first three; a listener of the doctor's decides the last.

use tokio_util::sync::CancellationToken;

use super::Finding;
use crate::env::{self, Connection, EgressProbe, Refusal};
use crate::sandbox::docker::DockerSandbox;
use crate::sandbox::RunSpec;

/// The name off the list the probe asks for: reserved, never resolves.
const OFF_LIST: &str = "autodev-doctor.invalid";
/// An allowed name that resolves to loopback: must be refused by address.
const INSIDE: &str = "localhost";

/// The probe, in the image's python3 (the checks are unknown without it).
fn script(allowed: Option<&str>, port: u16) -> String {
    let allowed = allowed.map_or(String::new(), |h| format!("try_get('https://{h}/')"));
    format!(
        r#"command -v python3 >/dev/null || {{ echo no-python3; exit 0; }}
python3 - <<'PY'
import os, socket, urllib.request, urllib.error
def try_get(url):
    try:
        urllib.request.urlopen(url, timeout=15)
    except Exception:
        pass
{allowed}
try_get('https://{OFF_LIST}/')
try_get('http://{INSIDE}:9/')
gw = os.environ['HTTP_PROXY'].split('//')[1].rsplit(':', 1)[0]
s = socket.socket()
s.settimeout(3)
try:
    s.connect((gw, {port}))
    print('host-reached')
except Exception:
    print('host-blocked')
PY"#
    )
}

/// The four findings of the set-up's egress on `docker` with `base`'s
/// image and limits.
pub(super) async fn check(
    docker: &DockerSandbox,
    base: &RunSpec,
    cancel: &CancellationToken,
) -> Vec<Finding> {
    let listener = match std::net::TcpListener::bind("0.0.0.0:0") {
        Ok(l) => l,
        Err(e) => {
            return vec![Finding::unknown(
                "set-up egress",
                format!("no listener for the probe: {e}"),
            )]
        }
    };
    let _ = listener.set_nonblocking(true);
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let probe = env::probe_egress(
        docker,
        base,
        INSIDE,
        |allowed| script(allowed, port),
        cancel,
    )
    .await;
    let reached_here = listener.accept().is_ok();
    match probe {
        Ok(p) => judge(&p, reached_here),
        Err(e) => vec![Finding::unknown("set-up egress", e.to_string())],
    }
}

fn judge(p: &EgressProbe, reached_here: bool) -> Vec<Finding> {
    if p.output.contains("no-python3") {
        return vec![Finding::unknown(
            "set-up egress",
            "the image has no python3 to probe with",
        )];
    }
    let asked =
        |host: &str| -> Option<&Connection> { p.connections.iter().find(|c| c.host == host) };
    let mut out = Vec::new();
    out.push(match &p.allowed {
        None => Finding::unknown("set-up: allowed", "the image's package tools name no host"),
        Some(h) => match asked(h) {
            Some(c) if c.allowed => Finding::held("set-up: allowed", format!("{h}:{} through the egress proxy", c.port)),
            Some(c) => Finding::broken(
                "set-up: allowed",
                format!("{h}:{} refused: {}", c.port, c.refused.as_ref().map_or(String::new(), Refusal::reason)),
                "check this host's DNS and route to the registry, or the --allow-host given",
            ),
            None => Finding::unknown("set-up: allowed", format!("the set-up never reached the proxy to ask for {h} (a runtime without network?)")),
        },
    });
    out.push(match asked(OFF_LIST) {
        Some(c) if c.refused == Some(Refusal::NotListed) => Finding::held(
            "set-up: off-list",
            format!("{OFF_LIST}: not on the allowlist"),
        ),
        Some(c) => Finding::broken(
            "set-up: off-list",
            format!("{OFF_LIST} was let through: {c:?}"),
            "report this: the proxy's allowlist did not hold",
        ),
        None => Finding::unknown("set-up: off-list", "the request never reached the proxy"),
    });
    out.push(match asked(INSIDE) {
        Some(Connection {
            refused: Some(Refusal::Address { addr, kind }),
            ..
        }) => Finding::held(
            "set-up: private",
            format!("{INSIDE} resolves to {addr}, {kind}: refused"),
        ),
        Some(c) if !c.allowed => Finding::unknown(
            "set-up: private",
            format!("{INSIDE} refused, but not by address: {c:?}"),
        ),
        Some(c) => Finding::broken(
            "set-up: private",
            format!("{INSIDE} was let through: {c:?}"),
            "report this: the proxy's address rules did not hold",
        ),
        None => Finding::unknown("set-up: private", "the request never reached the proxy"),
    });
    out.push(if reached_here || p.output.contains("host-reached") {
        Finding::broken(
            "set-up: fence",
            "the set-up reached a service of this host past the proxy",
            "run autodev as root with iptables, so the set-up's network is fenced",
        )
    } else if p.output.contains("host-blocked") {
        Finding::held(
            "set-up: fence",
            "a service of this host on all addresses was not reachable",
        )
    } else {
        Finding::unknown("set-up: fence", "the probe did not say")
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn conn(host: &str, refused: Option<Refusal>) -> Connection {
        Connection {
            host: host.into(),
            port: 443,
            allowed: refused.is_none(),
            refused,
        }
    }

    fn statuses(p: &EgressProbe, reached: bool) -> Vec<Status> {
        judge(p, reached).iter().map(|f| f.status).collect()
    }

    #[test]
    fn the_proxy_record_and_the_listener_decide_each_finding() {
        let inside = Refusal::Address {
            addr: "127.0.0.1".into(),
            kind: "a loopback address".into(),
        };
        let good = EgressProbe {
            allowed: Some("pkg.example.org".into()),
            connections: vec![
                conn("pkg.example.org", None),
                conn(OFF_LIST, Some(Refusal::NotListed)),
                conn(INSIDE, Some(inside)),
            ],
            output: "host-blocked\n".into(),
        };
        assert_eq!(statuses(&good, false), [Status::Held; 4]);
        // This host reached past the fence, by the listener or the probe's word.
        assert_eq!(statuses(&good, true)[3], Status::Broken);
        let leaky = EgressProbe {
            connections: vec![conn(OFF_LIST, None), conn(INSIDE, None)],
            output: "host-reached\n".into(),
            ..good
        };
        assert_eq!(
            statuses(&leaky, false),
            [
                Status::Unknown,
                Status::Broken,
                Status::Broken,
                Status::Broken
            ]
        );
        let silent = EgressProbe {
            allowed: None,
            connections: Vec::new(),
            output: String::new(),
        };
        assert_eq!(statuses(&silent, false), [Status::Unknown; 4]);
        let bare = EgressProbe {
            output: "no-python3\n".into(),
            ..silent
        };
        assert_eq!(statuses(&bare, false), [Status::Unknown]);
    }
}
