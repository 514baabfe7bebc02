//! Containers started ahead of their runs.
//!
//! Every container is created, attached and started before its run: the
//! wrapper inside waits on stdin for the run's settings and workspace
//! ([`crate::sandbox::wrapper::header`]). So a run's critical path is the
//! copy-in and the command, and a container whose owner dies ends by itself.
//!
//! A [`WarmSet`] keeps up to N such containers per set of create-time
//! settings (image, limits, user, runtime, labels: the container's whole
//! definition), made while nobody waits, e.g. while `autodev run` waits for
//! the model. Each is used by exactly one run and removed after it; one
//! that waited longer than [`MAX_IDLE`] is thrown away unused (its own
//! deadline, a little later, ends it even if this process is gone).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use futures_util::Stream;
use tokio::io::AsyncWrite;

use super::removal::Removal;

/// How long a container waits for its run before it is not used any more.
pub const MAX_IDLE: Duration = Duration::from_secs(120);
/// The deadline the wrapper enforces on a waiting container: past
/// [`MAX_IDLE`], so this process never hands out one about to end.
pub const IDLE_DEADLINE: Duration = Duration::from_secs(150);

/// The container's output, as the attach gives it.
pub(super) type Output =
    Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
/// The container's stdin.
pub(super) type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// A started container waiting for its run.
pub(super) struct Started {
    pub(super) removal: Removal,
    pub(super) output: Output,
    pub(super) input: Input,
    /// The wait for its exit status, registered before it started.
    pub(super) exit: super::stream::ExitWait,
    pub(super) since: Instant,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("id", &self.removal.id)
            .field("since", &self.since)
            .finish()
    }
}

/// Containers started ahead, by the key of their definition.
#[derive(Debug, Default)]
pub(super) struct WarmSet {
    /// How many to keep per key (0: none).
    size: usize,
    inner: Mutex<Inner>,
    /// Told when a container arrives.
    arrivals: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    ready: HashMap<String, Vec<Started>>,
    /// Being started now, per key.
    coming: HashMap<String, usize>,
    /// Keys warmed and not retired: each container taken is replaced.
    active: std::collections::HashSet<String>,
}

impl WarmSet {
    pub(super) fn new(size: usize) -> Arc<Self> {
        Arc::new(WarmSet {
            size,
            inner: Mutex::default(),
            arrivals: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A container for `key` that has not waited too long, if there is one
    /// or one is coming (it is waited for, up to `patience`: it is further
    /// along than a new one). Those that waited too long are dropped (and so
    /// removed).
    pub(super) async fn take(&self, key: &str, patience: Duration) -> Option<Started> {
        let until = Instant::now() + patience;
        loop {
            let arrived = self.arrivals.notified();
            {
                let mut inner = self.lock();
                if let Some(list) = inner.ready.get_mut(key) {
                    list.retain(|s| s.since.elapsed() < MAX_IDLE);
                    // The newest: the one with the most time left.
                    if let Some(s) = list.pop() {
                        return Some(s);
                    }
                }
                if inner.coming.get(key).is_none_or(|n| *n == 0) {
                    return None;
                }
            }
            if tokio::time::timeout_at(until.into(), arrived)
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Marks `key` warmed: from now on each container taken is replaced,
    /// until [`WarmSet::drain`].
    pub(super) fn activate(&self, key: &str) {
        self.lock().active.insert(key.to_string());
    }

    /// Whether `key` is warmed.
    pub(super) fn active(&self, key: &str) -> bool {
        self.size > 0 && self.lock().active.contains(key)
    }

    /// Whether another container for `key` should be started now; if so it
    /// is counted as coming until [`WarmSet::arrived`].
    pub(super) fn want(&self, key: &str) -> bool {
        let mut inner = self.lock();
        let ready = inner.ready.get(key).map_or(0, |l| {
            l.iter().filter(|s| s.since.elapsed() < MAX_IDLE).count()
        });
        let coming = inner.coming.entry(key.to_string()).or_default();
        if ready + *coming >= self.size {
            return false;
        }
        *coming += 1;
        true
    }

    /// A container asked for by [`WarmSet::want`] is started (or failed).
    pub(super) fn arrived(&self, key: &str, started: Option<Started>) {
        let mut inner = self.lock();
        if let Some(n) = inner.coming.get_mut(key) {
            *n = n.saturating_sub(1);
        }
        if let Some(s) = started {
            inner.ready.entry(key.to_string()).or_default().push(s);
        }
        drop(inner);
        self.arrivals.notify_waiters();
    }

    /// How many containers for `key` wait for a run.
    pub(super) fn ready(&self, key: &str) -> usize {
        self.lock().ready.get(key).map_or(0, Vec::len)
    }

    /// Whether a container for `key` is being started now.
    pub(super) fn coming(&self, key: &str) -> bool {
        self.lock().coming.get(key).is_some_and(|n| *n > 0)
    }

    /// Takes the containers waiting for `key` out, to remove them, and
    /// stops replacing those taken.
    pub(super) fn drain(&self, key: &str) -> Vec<Started> {
        let mut inner = self.lock();
        inner.active.remove(key);
        inner.ready.remove(key).unwrap_or_default()
    }
}
