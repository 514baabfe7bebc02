//! Starting and stopping the service: its state folder, its listener,
//! the drain on SIGTERM; and `autodev serve keys`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autodev::sandbox::AnySandbox;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::keys::{Key, KeyError, KeyStore};
use super::queue::Scheduler;
use super::runs::Runs;
use super::{batches, http, metrics, sessions, usage, Service};
use crate::app::UsageError;
use crate::cli::{KeysCommand, ServeArgs, ServeCommand};
use autodev::profile::Profile;
use autodev::sandbox::{RunSpec, Sandbox};

/// How long, after the grace period, cancelled runs get to remove their containers.
const CANCEL_WAIT: Duration = Duration::from_secs(60);
/// How often the engine is asked whether it answers (for health and metrics).
const ENGINE_CHECK: Duration = Duration::from_secs(15);

/// The service's state folder: `--state`, else autodev's under `$XDG_STATE_HOME`.
fn state_dir(given: Option<&Path>) -> Result<PathBuf, UsageError> {
    given
        .map(Path::to_path_buf)
        .or_else(|| autodev::dirs::autodev_dir(autodev::dirs::Base::State).map(|d| d.join("serve")))
        .ok_or_else(|| UsageError("no state folder: pass --state, or set HOME".into()))
}

fn key_error(e: KeyError) -> anyhow::Error {
    match e {
        KeyError::Usage(m) => UsageError(m).into(),
        e => e.into(),
    }
}

/// `autodev serve keys …`.
fn keys_cmd(cmd: KeysCommand, operator: &autodev::config::Limits) -> Result<ExitCode> {
    match cmd {
        KeysCommand::Add {
            name,
            max_concurrent,
            cpu_seconds_per_day,
            max_memory,
            max_timeout,
            state,
        } => {
            let store = KeyStore::open(&state_dir(state.as_deref())?).map_err(key_error)?;
            let mut limits = serde_json::Map::new();
            if let Some(m) = max_memory {
                limits.insert("memory".into(), Value::from(m));
            }
            if let Some(t) = max_timeout {
                limits.insert("timeout".into(), Value::from(t));
            }
            let key = Key {
                name: name.clone(),
                hash: String::new(),
                max_concurrent,
                cpu_seconds_per_day,
                limits,
            };
            let token = store.add(key, operator).map_err(key_error)?;
            autodev::outln!("{token}");
            autodev::errln!(
                "autodev: key {name:?} added; its token is above and is not shown again (send it as `Authorization: Bearer TOKEN`)"
            );
        }
        KeysCommand::List { state } => {
            let store = KeyStore::open(&state_dir(state.as_deref())?).map_err(key_error)?;
            for k in store.current().map_err(key_error)?.iter() {
                autodev::outln!(
                    "{}\tmax_concurrent={}\tcpu_seconds_per_day={}\tlimits={}",
                    k.name,
                    k.max_concurrent.map_or("-".into(), |n| n.to_string()),
                    k.cpu_seconds_per_day.map_or("-".into(), |n| n.to_string()),
                    Value::Object(k.limits.clone())
                );
            }
        }
        KeysCommand::Revoke { name, state } => {
            let store = KeyStore::open(&state_dir(state.as_deref())?).map_err(key_error)?;
            store.revoke(&name).map_err(key_error)?;
            autodev::errln!("autodev: key {name:?} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the service listens.
enum Listener {
    Tcp(tokio::net::TcpListener),
    Tls(super::tls::TlsListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Whether callers may come from beyond this host (what it is bound to
    /// is not loopback: a wildcard address included).
    fn beyond_loopback(&self) -> bool {
        let addr = match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Tls(l) => axum::serve::Listener::local_addr(l).ok(),
            Listener::Unix(..) => return false,
        };
        addr.is_some_and(|a| !a.ip().is_loopback())
    }
}

/// Binds the service's address. Beyond loopback a caller's token crosses
/// a network, so it needs TLS and keys (an open service there would serve
/// anyone who can reach it).
async fn listen(args: &ServeArgs, has_keys: bool) -> Result<Listener> {
    if let Some(path) = &args.socket {
        let bad = |why: String| UsageError(format!("--socket {}: {why}", path.display()));
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(bad("exists; remove it or pick another path".into()).into());
        }
        let l = tokio::net::UnixListener::bind(path).map_err(|e| bad(e.to_string()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| bad(e.to_string()))?;
        return Ok(Listener::Unix(l, path.clone()));
    }
    let addr: SocketAddr = args.listen.parse().map_err(|_| {
        UsageError(format!(
            "--listen {:?}: give an IP address and port, e.g. 127.0.0.1:8844",
            args.listen
        ))
    })?;
    let tls = match (&args.https_cert, &args.https_key) {
        (Some(cert), Some(key)) => Some(super::tls::server_config(cert, key).map_err(UsageError)?),
        _ => None,
    };
    if !addr.ip().is_loopback() {
        if tls.is_none() {
            return Err(UsageError(format!(
                "--listen {addr}: not a loopback address; beyond this host tokens cross a network: give --https-cert and --https-key"
            ))
            .into());
        }
        if !has_keys {
            return Err(UsageError(format!(
                "--listen {addr}: not a loopback address, and the service has no keys (it would serve anyone): add one with `autodev serve keys add NAME`"
            ))
            .into());
        }
    }
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| UsageError(format!("--listen {addr}: {e}")))?;
    match tls {
        Some(config) => Ok(Listener::Tls(super::tls::TlsListener::new(l, config)?)),
        None => Ok(Listener::Tcp(l)),
    }
}

/// What the service keeps in its state folder.
struct Stored {
    keys: KeyStore,
    usage: usage::Ledger,
    sessions: sessions::Sessions,
    batches: batches::Batches,
}

fn open_state(args: &ServeArgs, defaults: &RunSpec) -> Result<Stored> {
    let state = state_dir(args.state.as_deref())?;
    let bad = |what: &str, e: std::io::Error| {
        UsageError(format!("--state {}: {what}{e}", state.display()))
    };
    std::fs::create_dir_all(&state).map_err(|e| bad("", e))?;
    Ok(Stored {
        keys: KeyStore::open(&state).map_err(key_error)?,
        usage: usage::Ledger::open(&state).map_err(|e| bad("usage file: ", e))?,
        sessions: sessions::Sessions::open(
            state.join("sessions"),
            args.session_idle,
            defaults.limits.max_copy_bytes,
            args.max_sessions as usize,
        )
        .map_err(|e| bad("sessions: ", e))?,
        batches: batches::Batches::open(state.join("batches"), args.keep_batches)
            .map_err(|e| bad("batches: ", e))?,
    })
}

/// Serves `app` on `listener` until `stop`, then lets open requests end.
fn spawn_server(
    listener: Listener,
    app: axum::Router,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    match listener {
        Listener::Tcp(l) => tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }),
        Listener::Tls(l) => tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }),
        Listener::Unix(l, _) => tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }),
    }
}

/// `autodev serve`.
pub(crate) async fn serve_cmd(
    args: ServeArgs,
    profile: &Profile,
    cancel: &CancellationToken,
    kill: &CancellationToken,
) -> Result<ExitCode> {
    let mut defaults = args.sandbox.run_spec("/", "true", &profile.exclude)?;
    if let Some(ServeCommand::Keys(cmd)) = args.keys {
        return keys_cmd(cmd, &defaults.limits);
    }
    let stored = open_state(&args, &defaults)?;
    let has_keys = !stored.keys.current().map_err(key_error)?.is_empty();
    let listener = listen(&args, has_keys).await?;
    let pool = args
        .pool_socket
        .as_deref()
        .map(crate::app::pool::server::PoolSocket::bind)
        .transpose()?;
    let instance = format!("{}-{:08x}", std::process::id(), fastrand::u32(..));
    defaults
        .labels
        .push(("autodev.service".into(), instance.clone()));
    let sandbox = crate::app::connect(&args.sandbox.engines).await?;
    sandbox.check_limits(&defaults).await?;
    sandbox.preflight(&defaults).await?;
    sandbox.warm(&defaults);
    let open = stored.keys.current().map_err(key_error)?.is_empty();
    let setup = autodev::env::Setup {
        profile: profile.name.clone(),
        settings: args.setup.settings().map_err(UsageError)?,
    };
    let mut svc = Service::new(&args, sandbox.clone(), &defaults, setup, stored);
    svc.mcp_runner = args.mcp.then(|| profile.runner.clone());
    svc.reachable = listener.beyond_loopback();
    let svc = Arc::new(svc);
    svc.resume_batches();
    let app = http::router(svc.clone(), args.max_body, args.body_wait);
    let stop = CancellationToken::new();
    let where_ = match &listener {
        Listener::Tcp(l) => format!("http://{}", l.local_addr()?),
        Listener::Tls(l) => format!("https://{}", axum::serve::Listener::local_addr(l)?),
        Listener::Unix(_, p) => format!("unix:{}", p.display()),
    };
    autodev::errln!(
        "autodev serve: listening on {where_}; {}{} slot(s); {}; SIGTERM drains it",
        if args.mcp { "MCP at /mcp; " } else { "" },
        args.jobs,
        if open {
            "no keys: every caller on this host is served (`autodev serve keys add NAME` to require keys)"
        } else {
            "requests need a key"
        }
    );
    let server = spawn_server(listener, app, stop.clone());
    let checker = tokio::spawn(housekeeping(svc.clone()));
    // `exec --pool-socket` clients: the same engines, one daemon.
    let pool_stop = CancellationToken::new();
    let pool = pool.map(|socket| {
        let (sandbox, warm, stop) = (sandbox.clone(), defaults.clone(), pool_stop.clone());
        tokio::spawn(
            async move { crate::app::pool::server::serve(sandbox, socket, &warm, &stop).await },
        )
    });
    cancel.cancelled().await;
    drain(&svc, args.grace, kill).await;
    pool_stop.cancel();
    if let Some(p) = pool {
        let _ = p.await;
    }
    checker.abort();
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    if let Some(p) = &args.socket {
        let _ = std::fs::remove_file(p);
    }
    sandbox.retire(&defaults).await;
    let left = sandbox
        .clean(&[("autodev.service".into(), instance)])
        .await
        .unwrap_or(0);
    if left > 0 {
        autodev::errln!("autodev serve: removed {left} container(s) left by cancelled runs");
    }
    autodev::errln!("autodev serve: stopped");
    // A drain is how a service is meant to stop: not a failure.
    Ok(ExitCode::SUCCESS)
}

impl Service {
    fn new(
        args: &ServeArgs,
        sandbox: autodev::sandbox::AnySandbox,
        defaults: &RunSpec,
        setup: autodev::env::Setup,
        stored: Stored,
    ) -> Self {
        Service {
            sandbox,
            defaults: defaults.clone(),
            setup,
            keys: stored.keys,
            sched: Scheduler::new(usize::from(args.jobs)),
            runs: Runs::new(args.keep_finished),
            sessions: stored.sessions,
            batches: stored.batches,
            usage: stored.usage,
            metrics: metrics::Metrics::default(),
            draining: AtomicBool::new(false),
            engine_up: AtomicBool::new(true),
            engines: std::sync::Mutex::new(Vec::new()),
            tasks: TaskTracker::new(),
            jobs: usize::from(args.jobs),
            max_queue: args.max_queue,
            mcp_runner: None,
            reachable: false,
            keep_usage: Duration::from_secs(u64::from(args.keep_usage_days) * 24 * 3600),
        }
    }
}

/// Refuses new runs, lets the ones under way finish within `grace` (or
/// until a second signal), then cancels the rest and waits for their
/// containers to go.
async fn drain(svc: &Service, grace: Duration, kill: &CancellationToken) {
    svc.draining.store(true, Ordering::SeqCst);
    svc.sched.drain();
    svc.tasks.close();
    let (running, _) = svc.sched.counts();
    autodev::errln!(
        "autodev serve: draining: new runs get 503; {running} run(s) under way get {} to finish",
        humantime::format_duration(grace)
    );
    tokio::select! {
        () = svc.tasks.wait() => return,
        () = tokio::time::sleep(grace) => {}
        () = kill.cancelled() => {}
    }
    let live = svc.runs.live();
    autodev::errln!(
        "autodev serve: cancelling {} run(s) still under way",
        live.len()
    );
    for r in live {
        r.cancel.cancel();
    }
    let _ = tokio::time::timeout(CANCEL_WAIT, svc.tasks.wait()).await;
}

/// Each Docker engine's answer to a ping (its URL, up); a cluster or a
/// pool is one entry whose answer is the preflight's (`up`).
async fn engine_health(sandbox: &AnySandbox, up: bool) -> Vec<(String, bool)> {
    match sandbox {
        AnySandbox::Docker(fleet) => {
            let mut out = Vec::new();
            for e in fleet.engines() {
                let ok = tokio::time::timeout(Duration::from_secs(5), e.ping())
                    .await
                    .unwrap_or(false);
                out.push((e.name().to_string(), ok));
            }
            out
        }
        AnySandbox::Kube(k) => vec![(format!("kubernetes {}", k.name()), up)],
        AnySandbox::Socket(_) => vec![("autodev pool".to_string(), up)],
    }
}

/// Checks the engine, and expires idle sessions, every [`ENGINE_CHECK`].
async fn housekeeping(svc: Arc<Service>) {
    loop {
        svc.sessions.expire();
        svc.batches.expire();
        svc.usage.expire(svc.keep_usage);
        let up = tokio::time::timeout(Duration::from_secs(5), svc.sandbox.preflight(&svc.defaults))
            .await
            .is_ok_and(|r| r.is_ok());
        svc.engine_up.store(up, Ordering::SeqCst);
        let each = engine_health(&svc.sandbox, up).await;
        if let Ok(mut e) = svc.engines.lock() {
            *e = each;
        }
        tokio::time::sleep(ENGINE_CHECK).await;
    }
}
