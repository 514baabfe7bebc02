//! Runs spread over several Docker engines.
//!
//! Each engine has a number of slots; a run goes to the healthy engine with
//! the lowest load per slot (so with idle engines, `exec` and `run` use the
//! first). An engine that fails as a host (it stops answering, its link is
//! cut: the per-run heartbeat notices within seconds) is taken out of
//! rotation for a while and tried again afterwards; a `prepare` that meets a
//! dead engine moves on to the next at once. What was in flight on a lost
//! engine ends as a transient `sandbox_error`, which `batch` retries, on the
//! engines still in rotation.
//!
//! Not done here: moving images between engines (see `images push`).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::engine::EngineSpec;
use super::{DockerPrepared, DockerSandbox};
use crate::sandbox::{Outcome, OutputSink, RunSpec, Sandbox, SandboxError};

/// How long an engine that failed as a host is left alone.
const OUT_OF_ROTATION: Duration = Duration::from_secs(10);
/// Failures in a row (of any transient kind) that take an engine out.
const MAX_FAILURES: u32 = 3;

#[derive(Debug)]
struct Member {
    sandbox: DockerSandbox,
    slots: usize,
    load: AtomicUsize,
    failures: AtomicU32,
    out_until: Mutex<Option<Instant>>,
}

impl Member {
    fn in_rotation(&self, now: Instant) -> bool {
        let out = self.out_until.lock().unwrap_or_else(|p| p.into_inner());
        out.is_none_or(|until| now >= until)
    }

    /// An engine coming back into rotation must answer a ping first: a cut
    /// link costs a ping's timeout then, not a whole run's heartbeat.
    async fn ready(&self) -> bool {
        let was_out = self
            .out_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !was_out {
            return true;
        }
        let alive = self.sandbox.ping().await;
        *self.out_until.lock().unwrap_or_else(|p| p.into_inner()) =
            (!alive).then(|| Instant::now() + OUT_OF_ROTATION);
        alive
    }
}

/// Several Docker engines used as one sandbox.
#[derive(Debug, Clone)]
pub struct DockerFleet {
    members: Arc<Vec<Member>>,
}

/// A run prepared on one engine of the pool.
#[derive(Debug)]
pub struct FleetPrepared {
    inner: DockerPrepared,
    load: Load,
}

/// Counts a run against its engine's load while it lives.
#[derive(Debug)]
struct Load {
    members: Arc<Vec<Member>>,
    index: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.members[self.index].load.fetch_sub(1, Ordering::SeqCst);
    }
}

impl DockerFleet {
    /// Connects to every engine at once; any engine that does not answer
    /// within two seconds, or has bad settings, is an error naming it.
    pub async fn connect(specs: &[EngineSpec]) -> Result<Self, SandboxError> {
        let connected = join_all(specs.iter().map(|spec| async move {
            let sandbox = DockerSandbox::connect_to(spec).await?;
            let slots = match spec.slots {
                Some(n) => n,
                None => sandbox.cpus().await?,
            };
            Ok::<_, SandboxError>(Member {
                sandbox,
                slots,
                load: AtomicUsize::new(0),
                failures: AtomicU32::new(0),
                out_until: Mutex::new(None),
            })
        }))
        .await;
        let members = connected.into_iter().collect::<Result<Vec<_>, _>>()?;
        if members.is_empty() {
            return Err(SandboxError::Settings("no engine to run on".into()));
        }
        Ok(DockerFleet {
            members: Arc::new(members),
        })
    }

    /// A pool of one connected engine.
    pub fn single(sandbox: DockerSandbox, slots: usize) -> Self {
        DockerFleet {
            members: Arc::new(vec![Member {
                sandbox,
                slots: slots.max(1),
                load: AtomicUsize::new(0),
                failures: AtomicU32::new(0),
                out_until: Mutex::new(None),
            }]),
        }
    }

    /// The engines, in the order given.
    pub fn engines(&self) -> impl Iterator<Item = &DockerSandbox> {
        self.members.iter().map(|m| &m.sandbox)
    }

    /// The first engine (where `images` builds by default).
    pub fn first(&self) -> &DockerSandbox {
        &self.members[0].sandbox
    }

    /// Keeps up to `n` containers started ahead per set of limits on each
    /// engine (see [`Sandbox::warm`]); call right after connecting.
    pub fn with_warm(mut self, n: usize) -> Self {
        if let Some(members) = Arc::get_mut(&mut self.members) {
            for m in members.iter_mut() {
                m.sandbox = m.sandbox.clone().with_warm(n);
            }
        }
        self
    }

    /// Runs the engines take at once, all together.
    pub fn total_slots(&self) -> usize {
        self.members.iter().map(|m| m.slots).sum()
    }

    /// The engine for the next run: in rotation, lowest load per slot, the
    /// earlier one on a tie; `skip` lists engines already tried.
    fn pick(&self, skip: &[usize]) -> Option<usize> {
        let now = Instant::now();
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| !skip.contains(i) && m.in_rotation(now))
            .min_by(|(_, a), (_, b)| {
                let la = a.load.load(Ordering::SeqCst) as f64 / a.slots as f64;
                let lb = b.load.load(Ordering::SeqCst) as f64 / b.slots as f64;
                la.total_cmp(&lb)
            })
            .map(|(i, _)| i)
    }

    fn record(&self, index: usize, result: Result<(), &SandboxError>) {
        let m = &self.members[index];
        match result {
            Ok(()) => m.failures.store(0, Ordering::SeqCst),
            Err(e) if e.is_transient() => {
                let n = m.failures.fetch_add(1, Ordering::SeqCst) + 1;
                if e.is_host_failure() || n >= MAX_FAILURES {
                    *m.out_until.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now() + OUT_OF_ROTATION);
                    m.failures.store(0, Ordering::SeqCst);
                }
            }
            Err(_) => {}
        }
    }
}

impl Sandbox for DockerFleet {
    type Prepared = FleetPrepared;

    async fn prepare(&self, spec: &RunSpec) -> Result<FleetPrepared, SandboxError> {
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(index) = self.pick(&tried) {
            tried.push(index);
            if !self.members[index].ready().await {
                continue;
            }
            self.members[index].load.fetch_add(1, Ordering::SeqCst);
            let load = Load {
                members: self.members.clone(),
                index,
            };
            match self.members[index].sandbox.prepare(spec).await {
                Ok(inner) => return Ok(FleetPrepared { inner, load }),
                Err(e) => {
                    self.record(index, Err(&e));
                    // A dead engine is skipped at once; any other error is the run's.
                    if !e.is_host_failure() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| SandboxError::Unreachable {
            engine: "every engine".into(),
            detail: format!(
                "all are out of rotation after failures; they are tried again {}s after failing",
                OUT_OF_ROTATION.as_secs()
            ),
            hint: "wait, or pick other engines with --engine".into(),
        }))
    }

    async fn start(
        &self,
        p: FleetPrepared,
        sink: &mut dyn OutputSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SandboxError> {
        let index = p.load.index;
        let result = self.members[index]
            .sandbox
            .start(p.inner, sink, cancel)
            .await;
        self.record(index, result.as_ref().map(|_| ()));
        drop(p.load);
        result
    }

    async fn abandon(&self, p: FleetPrepared) {
        self.members[p.load.index].sandbox.abandon(p.inner).await;
    }

    /// Every engine must have the image and accept the settings; the error
    /// names the engine that does not.
    /// Warms the engine the next run would go to.
    fn warm(&self, spec: &RunSpec) {
        if let Some(index) = self.pick(&[]) {
            self.members[index].sandbox.warm(spec);
        }
    }

    async fn retire(&self, spec: &RunSpec) {
        join_all(self.members.iter().map(|m| m.sandbox.retire(spec))).await;
    }

    async fn preflight(&self, spec: &RunSpec) -> Result<(), SandboxError> {
        let results = join_all(self.members.iter().map(|m| m.sandbox.preflight(spec))).await;
        results.into_iter().collect()
    }

    /// Cleans every engine, even when one fails; the first failure is returned.
    async fn clean(&self, labels: &[(String, String)]) -> Result<usize, SandboxError> {
        let results = join_all(self.members.iter().map(|m| m.sandbox.clean(labels))).await;
        let mut removed = 0;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(n) => removed += n,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }
}
