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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::attach::{Input, Output};
use super::policy::{self, Flavor};
use super::removal::Removal;
use crate::sandbox::RunSpec;

/// How long a container waits for its run before it is not used any more.
pub(super) const MAX_IDLE: Duration = Duration::from_secs(120);
/// The deadline the wrapper enforces on a waiting container: past
/// [`MAX_IDLE`], so this process never hands out one about to end.
pub(super) const IDLE_DEADLINE: Duration = Duration::from_secs(150);

/// Which containers can serve `spec`: those of the same definition.
pub(super) fn key(spec: &RunSpec, flavor: Flavor) -> String {
    let mut body = policy::container_body(spec, "", IDLE_DEADLINE, flavor);
    // `python` and `python:latest` are one image to the engine.
    body.image = Some(crate::sandbox::with_tag(&spec.image));
    // Through a JSON value: its maps are sorted, the definition's are not.
    serde_json::to_value(&body)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// A started container waiting for its run.
pub(super) struct Started {
    pub(super) removal: Removal,
    pub(super) output: Output,
    pub(super) input: Input,
    /// The wait for its exit status, registered before it started.
    pub(super) exit: super::attach::ExitWait,
    pub(super) since: Instant,
}

impl Started {
    /// Whether it still waits for its run: a waiting wrapper prints nothing,
    /// so output, an error or the end of the stream means it is gone.
    fn waiting(&mut self) -> bool {
        use futures_util::{FutureExt, StreamExt};
        self.output.next().now_or_never().is_none()
    }
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
                    // The newest: the one with the most time left. One that
                    // ended while it waited (its engine went away) is dropped
                    // here: no run was using it.
                    while let Some(mut s) = list.pop() {
                        if s.waiting() {
                            return Some(s);
                        }
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
        // Those that waited too long go now (and are removed): a long-lived
        // pool that nobody uses must not pile them up.
        let ready = inner.ready.get_mut(key).map_or(0, |l| {
            l.retain(|s| s.since.elapsed() < MAX_IDLE);
            l.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A container stand-in: `alive` ones wait, others have ended.
    fn started(alive: bool) -> Started {
        // No engine at this address: the removal a drop starts fails at once.
        let docker = bollard::Docker::connect_with_http(
            "http://127.0.0.1:9",
            1,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let output: Output = if alive {
            Box::pin(futures_util::stream::pending())
        } else {
            Box::pin(futures_util::stream::empty())
        };
        Started {
            removal: Removal::new(docker, "test".into()),
            output,
            input: Box::pin(tokio::io::sink()),
            exit: super::super::attach::ExitWait::never(),
            since: Instant::now(),
        }
    }

    #[tokio::test]
    async fn keeps_at_most_n_per_key_and_hands_each_out_once() {
        let set = WarmSet::new(1);
        assert!(set.want("k"));
        assert!(!set.want("k"), "one is coming");
        assert!(set.want("other"));
        set.arrived("k", Some(started(true)));
        assert!(!set.want("k"), "one is ready");
        assert_eq!(set.ready("k"), 1);
        assert!(set.take("k", Duration::ZERO).await.is_some());
        assert!(set.take("k", Duration::ZERO).await.is_none());
        // One that ended while waiting is not handed out.
        assert!(set.want("k"));
        set.arrived("k", Some(started(false)));
        assert!(set.take("k", Duration::ZERO).await.is_none());
        // Off: never asks for one.
        assert!(!WarmSet::new(0).want("k"));
    }

    #[tokio::test]
    async fn a_take_waits_for_one_that_is_coming() {
        let set = WarmSet::new(1);
        assert!(set.want("k"));
        let s2 = set.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s2.arrived("k", Some(started(true)));
        });
        assert!(set.take("k", Duration::from_secs(5)).await.is_some());
        // Nothing coming: no wait at all.
        let t = Instant::now();
        assert!(set.take("k", Duration::from_secs(5)).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(1));
        // A failed start ends the wait too.
        assert!(set.want("k"));
        let s3 = set.clone();
        tokio::spawn(async move { s3.arrived("k", None) });
        assert!(set.take("k", Duration::from_secs(5)).await.is_none());
    }

    #[test]
    fn an_image_named_with_or_without_its_default_tag_is_one_key() {
        let spec = |image: &str| RunSpec::new("/", "true", image);
        let key = |image: &str| key(&spec(image), Flavor::Docker);
        assert_eq!(key("autodev/python"), key("autodev/python:latest"));
        assert_ne!(key("autodev/python"), key("autodev/python:3"));
        assert_ne!(key("autodev/python"), key("autodev/node"));
    }

    #[tokio::test]
    async fn drain_stops_the_replacing() {
        let set = WarmSet::new(2);
        set.activate("k");
        assert!(set.active("k"));
        assert!(set.want("k"));
        set.arrived("k", Some(started(true)));
        assert_eq!(set.drain("k").len(), 1);
        assert!(!set.active("k"));
    }
}
