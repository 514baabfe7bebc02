//! `autodev serve`: the engine behind an HTTP API, for programs. The same
//! run (`Sandbox::run` on a fresh container), the same request shape as a
//! batch task line (`batch::RunRequest`), the same result JSON as `exec
//! --json`; what this front end adds is who may ask (`keys.rs`), in which
//! order (`queue.rs`), what they used (`usage.rs`), what is running
//! (`runs.rs`), the routes (`http.rs`, `session_routes.rs`,
//! `batch_routes.rs`), sessions and batches (`sessions.rs`, `batches.rs`),
//! the counters (`metrics.rs`), and starting and stopping (`start.rs`).

mod batch_routes;
mod batches;
mod http;
mod keys;
mod mcp_route;
mod metrics;
mod queue;
mod runs;
mod session_routes;
mod sessions;
mod start;
mod tls;
mod usage;

pub(super) use start::serve_cmd;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use autodev::batch::RunRequest;
use autodev::env::Ready;
use autodev::error::{Classify, ErrorClass};
use autodev::events::ExecEvent;
use autodev::sandbox::demux::TreeBack;
use autodev::sandbox::{AnySandbox, Outcome, RunSpec, Sandbox, SandboxError};
use keys::{Key, KeyStore};
use queue::{Refused, Scheduler, Ticket};
use runs::{Run, RunSink, Runs};

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
    /// Each engine's answer to the last health check (name, up).
    engines: std::sync::Mutex<Vec<(String, bool)>>,
    tasks: TaskTracker,
    jobs: usize,
    max_queue: usize,
    /// With `--mcp`: the profile's test command, which the MCP tool
    /// `run_tests` runs (without it, `/mcp` answers 404).
    mcp_runner: Option<String>,
    /// Listening beyond loopback: an empty key file then serves nobody
    /// (never everyone, as it does on loopback).
    reachable: bool,
    /// Usage days kept (`--keep-usage-days`).
    keep_usage: Duration,
}

impl Service {
    /// Each engine's answer to the last health check (name, up).
    pub(crate) fn engine_health(&self) -> Vec<(String, bool)> {
        self.engines.lock().map(|e| e.clone()).unwrap_or_default()
    }

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
                // What the run is given: what it deletes of it, write-back deletes.
                let sent = if write_back {
                    sessions::sent(&req.spec).await
                } else {
                    Ok(Default::default())
                };
                let (mut result, tree) = self
                    .run_in_environment(&mut req, &mut sink, &run.cancel)
                    .await;
                if write_back {
                    result["write_back"] = match sent {
                        Ok(sent) => self.sessions.write_back(&s, tree, &sent),
                        Err(e) => {
                            json!({"error": format!("listing the session's files: {e}: nothing was written back")})
                        }
                    };
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

/// A JSON file of the state folder, if it is there and reads.
fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Replaces a JSON file of the state folder whole (a crash leaves the old
/// one or the new one, never half of either).
fn write_json<T: serde::Serialize>(path: &std::path::Path, v: &T) -> std::io::Result<()> {
    let text = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
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
