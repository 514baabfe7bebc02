//! Runs the service has accepted: each one's event log (numbered from 1, so
//! a client that reconnects asks for what follows the last number it saw),
//! its cancel token, and the task that carries it out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use autodev::events::ExecEvent;
use autodev::sandbox::OutputSink;

/// Finished runs kept at most (the oldest go first): with their events and
/// results (tens of KB each in memory), this bounds the service's memory.
const MAX_FINISHED: usize = 1_000;

#[derive(Debug, Default)]
struct Log {
    events: Vec<ExecEvent>,
    /// Output bytes streamed so far; past the run's cap, output is cut.
    streamed: u64,
    cut: bool,
    result: Option<Value>,
}

/// One accepted run.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) id: String,
    /// The key (tenant) that asked for it: no other key sees it.
    pub(crate) key: String,
    pub(crate) cancel: CancellationToken,
    /// Live output streamed at most (both streams).
    cap: u64,
    log: Mutex<Log>,
    /// The number of events so far; a change wakes the readers.
    seq: watch::Sender<u64>,
}

impl Run {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, e: ExecEvent) {
        let mut log = self.lock();
        if log.result.is_some() {
            return;
        }
        if let ExecEvent::Result { result } = &e {
            log.result = Some(result.clone());
        }
        log.events.push(e);
        let n = log.events.len() as u64;
        drop(log);
        self.seq.send_replace(n);
    }

    fn output(&self, stream: &'static str, bytes: &[u8]) {
        let mut log = self.lock();
        if log.cut || log.result.is_some() {
            return;
        }
        if log.streamed + bytes.len() as u64 > self.cap {
            log.cut = true;
            let streamed = log.streamed;
            drop(log);
            self.push(ExecEvent::OutputCut { bytes: streamed });
            return;
        }
        log.streamed += bytes.len() as u64;
        drop(log);
        self.push(ExecEvent::Output {
            stream,
            text: String::from_utf8_lossy(bytes).into_owned(),
        });
    }

    /// Events after number `after`, and whether the run has ended.
    pub(crate) fn events_after(&self, after: u64) -> (Vec<(u64, ExecEvent)>, bool) {
        let log = self.lock();
        let from = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(log.events.len());
        let events = log.events[from..]
            .iter()
            .enumerate()
            .map(|(i, e)| ((from + i + 1) as u64, e.clone()))
            .collect();
        (events, log.result.is_some())
    }

    /// `queued`, `running` or `done`.
    pub(crate) fn state(&self) -> &'static str {
        let log = self.lock();
        if log.result.is_some() {
            "done"
        } else if log
            .events
            .iter()
            .any(|e| matches!(e, ExecEvent::Started { .. }))
        {
            "running"
        } else {
            "queued"
        }
    }

    pub(crate) fn result(&self) -> Option<Value> {
        self.lock().result.clone()
    }

    /// Waits for the next event after `seen`.
    pub(crate) async fn changed(&self, seen: u64) {
        let mut rx = self.seq.subscribe();
        // A closed channel cannot happen while `self` lives; the bound only
        // guards against a spurious wake-up loop.
        let _ = rx.wait_for(|n| *n > seen).await;
    }

    /// The run's result, once it has one.
    pub(crate) async fn finished(&self) -> Value {
        loop {
            let n = *self.seq.borrow();
            if let Some(r) = self.result() {
                return r;
            }
            self.changed(n).await;
        }
    }
}

/// Live output of a run, into its log.
pub(crate) struct RunSink(pub(crate) Arc<Run>);

impl OutputSink for RunSink {
    fn stdout(&mut self, bytes: &[u8]) {
        self.0.output("stdout", bytes);
    }
    fn stderr(&mut self, bytes: &[u8]) {
        self.0.output("stderr", bytes);
    }
}

/// Every run still readable.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    /// How long a finished run's events and result stay readable.
    keep: Duration,
    map: Mutex<HashMap<String, Arc<Run>>>,
    finished: Mutex<VecDeque<(Instant, String)>>,
}

impl Runs {
    pub(crate) fn new(keep: Duration) -> Self {
        Runs {
            keep,
            ..Runs::default()
        }
    }

    pub(crate) fn add(&self, key: &str, cap: u64) -> Arc<Run> {
        self.prune();
        let run = Arc::new(Run {
            id: new_id(),
            key: key.to_string(),
            cancel: CancellationToken::new(),
            cap,
            log: Mutex::default(),
            seq: watch::channel(0).0,
        });
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run.id.clone(), run.clone());
        run
    }

    /// The run `id` if `key` owns it: another key's run is as missing as
    /// one that never was.
    pub(crate) fn get(&self, id: &str, key: &str) -> Option<Arc<Run>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).filter(|r| r.key == key).cloned()
    }

    /// Marks a run finished, so it is forgotten in time.
    pub(crate) fn finish(&self, id: &str) {
        self.finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((Instant::now(), id.to_string()));
    }

    /// Every run not finished yet.
    pub(crate) fn live(&self) -> Vec<Arc<Run>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|r| r.result().is_none())
            .cloned()
            .collect()
    }

    fn prune(&self) {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((at, id)) = finished.front() {
            if at.elapsed() < self.keep && finished.len() <= MAX_FINISHED {
                break;
            }
            map.remove(id);
            finished.pop_front();
        }
    }
}

/// A run id: unique, not secret (every route checks the caller's key, so
/// knowing another key's id gives nothing).
fn new_id() -> String {
    format!("run_{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_numbered_and_a_reader_resumes_after_the_last_it_saw() {
        let runs = Runs::new(Duration::from_secs(60));
        let run = runs.add("k", 10);
        run.push(ExecEvent::Started { queue_ms: 0 });
        RunSink(run.clone()).stdout(b"hello");
        RunSink(run.clone()).stdout(b"more than ten");
        RunSink(run.clone()).stdout(b"dropped");
        let (ev, done) = run.events_after(1);
        assert!(!done);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].0, 2);
        assert!(matches!(ev[1].1, ExecEvent::OutputCut { bytes: 5 }));
        let r = run.clone();
        let waiter = tokio::spawn(async move { r.finished().await });
        run.push(ExecEvent::Result {
            result: serde_json::json!({"verdict": "passed"}),
        });
        assert_eq!(waiter.await.unwrap()["verdict"], "passed");
        assert!(run.events_after(3).1);
        assert!(
            runs.get(&run.id, "other").is_none(),
            "another key sees nothing"
        );
        assert!(runs.get(&run.id, "k").is_some());
    }
}
