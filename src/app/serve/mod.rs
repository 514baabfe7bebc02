//! `autodev serve`: the engine behind an HTTP API, for programs. The same
//! run (`Sandbox::run` on a fresh container), the same request shape as a
//! batch task line (`batch::RunRequest`), the same result JSON as `exec
//! --json`; what this front end adds is who may ask (`keys.rs`), in which
//! order (`queue.rs`), what they used (`usage.rs`), what is running
//! (`runs.rs`), the routes (`http.rs`) and the counters (`metrics.rs`).

mod batch_routes;
mod batches;
mod http;
mod keys;
mod metrics;
mod queue;
mod runs;
mod session_routes;
mod sessions;
mod usage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::UsageError;
use crate::cli::{KeysCommand, ServeArgs, ServeCommand};
use autodev::batch::RunRequest;
use autodev::env::Ready;
use autodev::error::{Classify, ErrorClass};
use autodev::events::ExecEvent;
use autodev::profile::Profile;
use autodev::sandbox::demux::TreeBack;
use autodev::sandbox::{AnySandbox, Outcome, RunSpec, Sandbox, SandboxError};
use keys::{Key, KeyError, KeyStore};
use queue::{Refused, Scheduler, Ticket};
use runs::{Run, RunSink, Runs};

/// How long, after the grace period, cancelled runs get to remove their containers.
const CANCEL_WAIT: Duration = Duration::from_secs(60);
/// How often the engine is asked whether it answers (for health and metrics).
const ENGINE_CHECK: Duration = Duration::from_secs(15);

/// Who is asking: a key's name and ceilings, or the one tenant of a
/// service that has no keys (loopback only).
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub(crate) name: String,
    pub(crate) key: Option<Key>,
}

/// A run on a session's files.
pub(crate) struct OnSession {
    pub(crate) session: Arc<sessions::Session>,
    /// Copy what the command changed back into the session.
    pub(crate) write_back: bool,
}

/// A request refused, with the status it maps to.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The request itself is wrong (400).
    Invalid(String),
    /// Over a quota or the queue is full (429 with Retry-After seconds).
    Busy(String, u64),
    /// The service is shutting down (503).
    Draining,
}

/// The service's shared state.
pub(crate) struct Service {
    sandbox: AnySandbox,
    defaults: RunSpec,
    /// The set-up phase runs get (a request's `setup` replaces its mode).
    setup: autodev::env::Setup,
    keys: KeyStore,
    sched: Arc<Scheduler>,
    runs: Runs,
    sessions: sessions::Sessions,
    batches: batches::Batches,
    usage: usage::Ledger,
    metrics: metrics::Metrics,
    draining: AtomicBool,
    engine_up: AtomicBool,
    tasks: TaskTracker,
    jobs: usize,
    max_queue: usize,
}

impl Service {
    /// The tenant named `name` now: its key as the key file holds it (none
    /// when it was revoked), or the one tenant of a service without keys.
    pub(crate) fn tenant_named(&self, name: &str) -> Option<Tenant> {
        let keys = self.keys.current().ok()?;
        if keys.is_empty() {
            return (name == "local").then(|| Tenant {
                name: name.into(),
                key: None,
            });
        }
        keys.iter().find(|k| k.name == name).map(|k| Tenant {
            name: k.name.clone(),
            key: Some(k.clone()),
        })
    }

    /// Reads a run request of `t`'s: a task line's shape, its limits
    /// within the key's ceilings.
    pub(crate) fn parse(&self, t: &Tenant, body: &[u8]) -> Result<RunRequest, Refusal> {
        let mut defaults = self.defaults.clone();
        if let Some(k) = &t.key {
            defaults.limits = k.ceiling(&self.defaults.limits).map_err(Refusal::Invalid)?;
        }
        let mut req = RunRequest::parse(body, &defaults).map_err(|e| {
            Refusal::Invalid(e.replace(
                "; pass --allow-task-overrides to let tasks loosen them",
                " (this key's ceiling)",
            ))
        })?;
        // The service's label marks its runs; a per-request one would keep
        // every run from the containers started ahead for the defaults.
        req.spec.labels.retain(|(k, _)| k != "autodev.task");
        Ok(req)
    }

    /// Accepts a run of `t`'s (or says why not) and starts carrying it
    /// out: on its own files, or on a session's workspace.
    pub(crate) fn submit(
        self: &Arc<Self>,
        t: &Tenant,
        req: RunRequest,
        session: Option<OnSession>,
    ) -> Result<Arc<Run>, Refusal> {
        if self.draining.load(Ordering::SeqCst) {
            self.metrics.refused("draining");
            return Err(Refusal::Draining);
        }
        if let Some(quota) = t.key.as_ref().and_then(|k| k.cpu_seconds_per_day) {
            let (used_ms, frees_at) = self.usage.last_day(&t.name);
            if used_ms >= quota.saturating_mul(1000) {
                self.metrics.refused("quota");
                return Err(Refusal::Busy(
                    format!(
                        "key {} used {:.1} of its {quota} CPU-seconds of the last 24 hours",
                        t.name,
                        used_ms as f64 / 1000.0
                    ),
                    frees_at.saturating_sub(usage::now()).max(1),
                ));
            }
        }
        let max = t
            .key
            .as_ref()
            .and_then(|k| k.max_concurrent)
            .unwrap_or(self.jobs);
        let ticket = self
            .sched
            .enqueue(&t.name, max, self.max_queue)
            .map_err(|r| match r {
                Refused::Draining => {
                    self.metrics.refused("draining");
                    Refusal::Draining
                }
                Refused::QueueFull => {
                    self.metrics.refused("queue_full");
                    Refusal::Busy(
                        format!(
                            "key {} has {} runs waiting, the most the service queues per key",
                            t.name, self.max_queue
                        ),
                        2,
                    )
                }
            })?;
        // Live output is bounded like the capture: head and tail of each stream.
        let run = self
            .runs
            .add(&t.name, req.spec.limits.output_limit.saturating_mul(2));
        run.push(ExecEvent::Queued {
            ahead: ticket.ahead,
        });
        self.tasks
            .spawn(self.clone().execute(run.clone(), req, ticket, session));
        Ok(run)
    }

    async fn execute(
        self: Arc<Self>,
        run: Arc<Run>,
        mut req: RunRequest,
        ticket: Ticket,
        session: Option<OnSession>,
    ) {
        let queued = Instant::now();
        let grant = tokio::select! {
            g = ticket.rx => g.ok(),
            () = run.cancel.cancelled() => None,
        };
        let Some(_grant) = grant else {
            let why = "cancelled before it started";
            let result = json!({"verdict": "interrupted", "error": why});
            self.finish(&run, result, Duration::ZERO, queued.elapsed());
            return;
        };
        let waited = queued.elapsed();
        self.metrics.queued(waited);
        run.push(ExecEvent::Started {
            queue_ms: ms(waited),
        });
        let started = Instant::now();
        let mut sink = RunSink(run.clone());
        let result = match session {
            Some(OnSession {
                session: s,
                write_back,
            }) => {
                // The workspace stays as it is from copy-in to the end.
                let _held = s.lock.lock().await;
                req.spec.workspace = s.ws();
                req.spec.write_back = write_back.then(|| self.sessions.tree_cap());
                let (mut result, tree) = self
                    .run_in_environment(&mut req, &mut sink, &run.cancel)
                    .await;
                if write_back {
                    result["write_back"] = self.sessions.write_back(&s, tree);
                }
                result
            }
            None => match req.materialize(None) {
                Err(e) => {
                    json!({"verdict": "sandbox_error", "error": format!("writing the request's files: {e}")})
                }
                Ok(dir) => {
                    let (r, _) = self
                        .run_in_environment(&mut req, &mut sink, &run.cancel)
                        .await;
                    drop(dir);
                    r
                }
            },
        };
        self.finish(&run, result, started.elapsed(), waited);
    }

    /// The run in its project's environment (built or found by the set-up
    /// phase, as `exec` does), as a result object, and the workspace the
    /// command left when the spec asked for it.
    async fn run_in_environment(
        &self,
        req: &mut RunRequest,
        sink: &mut RunSink,
        cancel: &CancellationToken,
    ) -> (Value, Option<TreeBack>) {
        let mut setup = self.setup.clone();
        if let Some(mode) = req.setup.clone() {
            setup.settings.mode = mode;
        }
        let env =
            match autodev::env::prepare(&self.sandbox, &mut req.spec, &setup, sink, cancel).await {
                Ok(Ready::Env(e)) => e.map(|b| *b),
                Ok(Ready::Skipped(_)) => None,
                Ok(Ready::Failed(o)) => return (result_json(Ok(*o)), None),
                Err(e) => {
                    let verdict = match autodev::classify::class_of(&e) {
                        Some(ErrorClass::Interrupted) => "interrupted",
                        Some(ErrorClass::Usage) => "invalid_task",
                        _ => "sandbox_error",
                    };
                    return (
                        json!({"verdict": verdict, "error": format!("set-up: {e}")}),
                        None,
                    );
                }
            };
        let mut r = self.sandbox.run(&req.spec, sink, cancel).await;
        let tree = r.as_mut().ok().and_then(|o| o.tree_back.take());
        if let Ok(Some(rec)) = r.as_mut().map(|o| o.record.as_mut()) {
            rec.environment = env;
        }
        (result_json(r), tree)
    }

    /// Records a run's end; the result gets the run's id and its time in
    /// the queue (what `exec` has no part of).
    fn finish(&self, run: &Run, mut result: Value, took: Duration, waited: Duration) {
        if let Some(obj) = result.as_object_mut() {
            obj.insert("id".into(), Value::from(run.id.clone()));
            obj.insert("queue_ms".into(), Value::from(ms(waited)));
        }
        let verdict = result["verdict"].as_str().unwrap_or("sandbox_error");
        let res = &result["resources"];
        self.usage.add(usage::Record {
            ts: usage::now(),
            key: run.key.clone(),
            verdict: verdict.to_string(),
            cpu_ms: res["cpu_ms"].as_u64().unwrap_or(0),
            peak_memory_bytes: res["peak_memory_bytes"].as_u64().unwrap_or(0),
            wall_ms: ms(took),
        });
        self.metrics.ended(verdict, took);
        run.push(ExecEvent::Result { result });
        self.runs.finish(&run.id);
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A run's result as `exec --json` prints it; a request the sandbox
/// refuses (too many files, say) is the caller's error, not the sandbox's.
fn result_json(r: Result<Outcome, SandboxError>) -> Value {
    match r {
        Ok(o) => serde_json::to_value(&o)
            .unwrap_or_else(|e| json!({"verdict": "sandbox_error", "error": e.to_string()})),
        Err(e @ SandboxError::Interrupted) => {
            json!({"verdict": "interrupted", "error": e.to_string()})
        }
        Err(e) if e.class() == ErrorClass::Usage => {
            json!({"verdict": "invalid_task", "error": e.to_string()})
        }
        Err(e) => serde_json::to_value(Outcome::from_error(&e))
            .unwrap_or_else(|_| json!({"verdict": "sandbox_error", "error": e.to_string()})),
    }
}

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
    Unix(tokio::net::UnixListener, PathBuf),
}

async fn listen(args: &ServeArgs) -> Result<Listener> {
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
    if !addr.ip().is_loopback() {
        return Err(UsageError(format!(
            "--listen {addr}: not a loopback address; serving beyond this host needs TLS, which autodev serve does not terminate: listen on loopback (or --socket) behind a TLS proxy that only forwards authenticated clients"
        ))
        .into());
    }
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| UsageError(format!("--listen {addr}: {e}")))?;
    Ok(Listener::Tcp(l))
}

/// `autodev serve`.
pub(super) async fn serve_cmd(
    args: ServeArgs,
    profile: &Profile,
    cancel: &CancellationToken,
    kill: &CancellationToken,
) -> Result<ExitCode> {
    let mut defaults = args.sandbox.run_spec("/", "true", &profile.exclude)?;
    if let Some(ServeCommand::Keys(cmd)) = args.keys {
        return keys_cmd(cmd, &defaults.limits);
    }
    let state = state_dir(args.state.as_deref())?;
    std::fs::create_dir_all(&state)
        .map_err(|e| UsageError(format!("--state {}: {e}", state.display())))?;
    let keys = KeyStore::open(&state).map_err(key_error)?;
    let usage = usage::Ledger::open(&state)
        .map_err(|e| UsageError(format!("--state {}: usage file: {e}", state.display())))?;
    let sessions = sessions::Sessions::open(
        state.join("sessions"),
        args.session_idle,
        defaults.limits.max_copy_bytes,
    )
    .map_err(|e| UsageError(format!("--state {}: sessions: {e}", state.display())))?;
    let batches = batches::Batches::open(state.join("batches"))
        .map_err(|e| UsageError(format!("--state {}: batches: {e}", state.display())))?;
    let listener = listen(&args).await?;
    let pool = args
        .pool_socket
        .as_deref()
        .map(super::pool::server::PoolSocket::bind)
        .transpose()?;
    let instance = format!("{}-{:08x}", std::process::id(), fastrand::u32(..));
    defaults
        .labels
        .push(("autodev.service".into(), instance.clone()));
    let sandbox = super::connect(&args.sandbox.engines).await?;
    sandbox.check_limits(&defaults).await?;
    sandbox.preflight(&defaults).await?;
    sandbox.warm(&defaults);
    let open = keys.current().map_err(key_error)?.is_empty();
    let setup = autodev::env::Setup {
        profile: profile.name.clone(),
        settings: args.setup.settings().map_err(UsageError)?,
    };
    let svc = Arc::new(Service {
        sandbox: sandbox.clone(),
        defaults: defaults.clone(),
        setup,
        keys,
        sched: Scheduler::new(usize::from(args.jobs)),
        runs: Runs::default(),
        sessions,
        batches,
        usage,
        metrics: metrics::Metrics::default(),
        draining: AtomicBool::new(false),
        engine_up: AtomicBool::new(true),
        tasks: TaskTracker::new(),
        jobs: usize::from(args.jobs),
        max_queue: args.max_queue,
    });
    svc.resume_batches();
    let app = http::router(svc.clone(), args.max_body, args.body_wait);
    let stop = CancellationToken::new();
    let where_ = match &listener {
        Listener::Tcp(l) => format!("http://{}", l.local_addr()?),
        Listener::Unix(_, p) => format!("unix:{}", p.display()),
    };
    autodev::errln!(
        "autodev serve: listening on {where_}; {} slot(s); {}; SIGTERM drains it",
        args.jobs,
        if open {
            "no keys: every caller on this host is served (`autodev serve keys add NAME` to require keys)"
        } else {
            "requests need a key"
        }
    );
    let server = {
        let stop = stop.clone();
        match listener {
            Listener::Tcp(l) => tokio::spawn(async move {
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
    };
    let checker = tokio::spawn(housekeeping(svc.clone()));
    // `exec --pool-socket` clients: the same engines, one daemon.
    let pool_stop = CancellationToken::new();
    let pool = pool.map(|socket| {
        let (sandbox, warm, stop) = (sandbox.clone(), defaults.clone(), pool_stop.clone());
        tokio::spawn(async move { super::pool::server::serve(sandbox, socket, &warm, &stop).await })
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
    autodev::errln!(
        "autodev serve: stopped{}",
        if left > 0 {
            format!("; removed {left} container(s) left by cancelled runs")
        } else {
            String::new()
        }
    );
    // A drain is how a service is meant to stop: not a failure.
    Ok(ExitCode::SUCCESS)
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

/// Checks the engine, and expires idle sessions, every [`ENGINE_CHECK`].
async fn housekeeping(svc: Arc<Service>) {
    loop {
        svc.sessions.expire();
        let up = tokio::time::timeout(Duration::from_secs(5), svc.sandbox.preflight(&svc.defaults))
            .await
            .is_ok_and(|r| r.is_ok());
        svc.engine_up.store(up, Ordering::SeqCst);
        tokio::time::sleep(ENGINE_CHECK).await;
    }
}
