//! `autodev doctor`.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::ExitCode;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::cli::{exit, DoctorArgs};
use autodev::doctor::{self, Status, Targets};
use autodev::sandbox::AnySandbox;

pub(super) async fn doctor_cmd(args: DoctorArgs, cancel: &CancellationToken) -> Result<ExitCode> {
    let s = &args.sandbox;
    let dir = tempfile::tempdir()?;
    let spec = s.run_spec(dir.path(), "true", &[])?;
    let sandbox = super::connect(&s.engines).await?;
    sandbox.check_limits(&spec).await?;
    let Examined {
        name,
        version,
        findings: found,
    } = examine(&sandbox, &spec, cancel).await?;
    let broken = found.iter().any(|f| f.status == Status::Broken);
    if args.json {
        let v = serde_json::json!({
            "backend": name,
            "version": version,
            "image": spec.image,
            "findings": found,
            "broken": broken,
        });
        autodev::outln!("{v}");
    } else {
        autodev::outln!("autodev doctor: {name} ({version}), image {}", spec.image);
        for f in &found {
            let status = match f.status {
                Status::Held => "held   ",
                Status::Broken => "BROKEN ",
                Status::Unknown => "unknown",
            };
            match &f.fix {
                Some(fix) => autodev::outln!("  {status} {:<17} {}; fix: {fix}", f.check, f.detail),
                None => autodev::outln!("  {status} {:<17} {}", f.check, f.detail),
            }
        }
    }
    Ok(ExitCode::from(if broken { exit::FAILED } else { exit::OK }))
}

/// What `doctor` found on a backend.
pub(super) struct Examined {
    /// The backend's name.
    pub(super) name: String,
    /// Its version.
    pub(super) version: String,
    /// Each guarantee's finding.
    pub(super) findings: Vec<doctor::Finding>,
}

/// Runs every check on `sandbox` with `spec`'s image and limits (the MCP
/// server's `doctor` tool calls it too).
pub(super) async fn examine(
    sandbox: &AnySandbox,
    spec: &autodev::sandbox::RunSpec,
    cancel: &CancellationToken,
) -> Result<Examined> {
    // Something on the host that a run without network must not reach.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    let port = listener.local_addr()?.port();
    let accept = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let targets = targets(sandbox, port).await;
    let (name, version) = describe(sandbox).await;
    let found = tokio::select! {
        r = doctor::examine(sandbox, spec, &targets, cancel) => r,
        _ = cancel.cancelled() => Err(autodev::sandbox::SandboxError::Interrupted),
    };
    accept.abort();
    Ok(Examined {
        name,
        version,
        findings: found?,
    })
}

/// The backend's name and version, for the header.
async fn describe(sandbox: &AnySandbox) -> (String, String) {
    match sandbox {
        AnySandbox::Docker(p) => {
            let Some(e) = p.engines().next() else {
                return ("no engine".into(), "-".into());
            };
            let v = match e.client().version().await {
                Ok(v) => format!(
                    "Docker {}, API {}",
                    v.version.unwrap_or_default(),
                    v.api_version.unwrap_or_default()
                ),
                Err(e) => format!("version unknown: {e}"),
            };
            (e.name().to_string(), v)
        }
        AnySandbox::Kube(k) => (format!("Kubernetes {}", k.name()), k.version().await),
        AnySandbox::Socket(_) => ("an autodev pool".into(), "-".into()),
    }
}

/// Addresses a run with a network could reach: this host (its address
/// toward the default route, and the Docker bridge's gateway) on `port`,
/// and a cluster's API server.
async fn targets(sandbox: &AnySandbox, port: u16) -> Targets {
    let mut addrs = Vec::new();
    // No packet is sent: connecting a UDP socket only picks the route.
    let primary = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|u| u.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).map(|_| u))
        .and_then(|u| u.local_addr());
    if let Ok(a) = primary {
        addrs.push(format!("{}:{port}", a.ip()));
    }
    match sandbox {
        AnySandbox::Docker(p) => {
            if let Some(e) = p.engines().next() {
                let bridge = e
                    .client()
                    .inspect_network(
                        "bridge",
                        None::<bollard::query_parameters::InspectNetworkOptions>,
                    )
                    .await;
                let gateways = bridge
                    .ok()
                    .and_then(|n| n.ipam)
                    .and_then(|i| i.config)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.gateway)
                    .filter_map(|g| g.parse::<IpAddr>().ok());
                for g in gateways {
                    let a = format!("{g}:{port}");
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
            }
        }
        AnySandbox::Kube(k) => addrs.push(k.probe_target()),
        AnySandbox::Socket(_) => {}
    }
    Targets { addrs }
}
