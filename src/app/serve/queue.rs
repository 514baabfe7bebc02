//! Fair queueing of runs across keys: a fixed number of slots; when one
//! frees, it goes to the waiting key with the fewest runs under way (ties
//! in turn), never past a key's own concurrency. So a key with thousands of
//! runs queued delays another key's first run by at most the one slot that
//! frees next.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Why a run was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The key has as many runs waiting as the service allows.
    QueueFull,
    /// The service is shutting down.
    Draining,
}

#[derive(Debug, Default)]
struct Lane {
    running: usize,
    max: usize,
    waiting: VecDeque<oneshot::Sender<Grant>>,
}

#[derive(Debug)]
struct Inner {
    free: usize,
    lanes: HashMap<String, Lane>,
    /// Keys in the order ties are broken: the last served goes to the back.
    turn: VecDeque<String>,
    draining: bool,
}

/// Slots, and the runs waiting for one.
#[derive(Debug)]
pub(crate) struct Scheduler {
    inner: Mutex<Inner>,
}

/// A slot held by one run; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Grant {
    sched: Arc<Scheduler>,
    key: String,
    armed: bool,
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.armed {
            self.sched.release(&self.key);
        }
    }
}

/// A queued run: resolves to its slot. Dropping it leaves the queue.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) rx: oneshot::Receiver<Grant>,
    /// Runs of the same key ahead of this one when it was queued.
    pub(crate) ahead: usize,
}

impl Scheduler {
    pub(crate) fn new(slots: usize) -> Arc<Self> {
        Arc::new(Scheduler {
            inner: Mutex::new(Inner {
                free: slots,
                lanes: HashMap::new(),
                turn: VecDeque::new(),
                draining: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing under the lock can panic half-way through a change, so a
        // poisoned lock still holds consistent counts.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a run of `key`, which may have `max` runs at once and
    /// `max_queue` waiting.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        key: &str,
        max: usize,
        max_queue: usize,
    ) -> Result<Ticket, Refused> {
        let mut inner = self.lock();
        if inner.draining {
            return Err(Refused::Draining);
        }
        let free = inner.free;
        let lane = inner.lanes.entry(key.to_string()).or_default();
        lane.max = max.max(1);
        // Callers that gave up hold no place.
        lane.waiting.retain(|tx| !tx.is_closed());
        let starts_now = lane.waiting.is_empty() && lane.running < lane.max && free > 0;
        if lane.waiting.len() >= max_queue && !starts_now {
            return Err(Refused::QueueFull);
        }
        let (tx, rx) = oneshot::channel();
        let ahead = lane.waiting.len();
        lane.waiting.push_back(tx);
        if !inner.turn.iter().any(|k| k == key) {
            inner.turn.push_back(key.to_string());
        }
        self.dispatch(&mut inner);
        Ok(Ticket { rx, ahead })
    }

    /// Hands free slots to waiting runs, fewest-running key first.
    fn dispatch(self: &Arc<Self>, inner: &mut Inner) {
        while inner.free > 0 {
            let pick = inner
                .turn
                .iter()
                .enumerate()
                .filter_map(|(i, k)| inner.lanes.get(k).map(|l| (i, l)))
                .filter(|(_, l)| l.running < l.max && !l.waiting.is_empty())
                .min_by_key(|(i, l)| (l.running, *i))
                .map(|(i, _)| i);
            let Some(i) = pick else { return };
            let Some(key) = inner.turn.remove(i) else {
                return;
            };
            let Some(lane) = inner.lanes.get_mut(&key) else {
                return;
            };
            let Some(tx) = lane.waiting.pop_front() else {
                inner.turn.push_back(key);
                continue;
            };
            let grant = Grant {
                sched: self.clone(),
                key: key.clone(),
                armed: true,
            };
            match tx.send(grant) {
                Ok(()) => {
                    lane.running += 1;
                    inner.free -= 1;
                }
                // The caller left: its grant must not free a slot it never took.
                Err(mut g) => g.armed = false,
            }
            inner.turn.push_back(key);
        }
    }

    fn release(self: &Arc<Self>, key: &str) {
        let mut inner = self.lock();
        inner.free += 1;
        if let Some(lane) = inner.lanes.get_mut(key) {
            lane.running = lane.running.saturating_sub(1);
            if lane.running == 0 && lane.waiting.is_empty() {
                inner.lanes.remove(key);
                inner.turn.retain(|k| k != key);
            }
        }
        self.dispatch(&mut inner);
    }

    /// Refuses new runs and drops every waiting one (their tickets fail).
    pub(crate) fn drain(&self) {
        let mut inner = self.lock();
        inner.draining = true;
        for lane in inner.lanes.values_mut() {
            lane.waiting.clear();
        }
    }

    /// Runs under way and waiting, over all keys.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        inner.lanes.values().fold((0, 0), |(r, w), l| {
            (
                r + l.running,
                w + l.waiting.iter().filter(|t| !t.is_closed()).count(),
            )
        })
    }

    /// Runs of `key` under way.
    #[cfg(test)]
    pub(crate) fn running(&self, key: &str) -> usize {
        self.lock().lanes.get(key).map_or(0, |l| l.running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(t: &mut Ticket) -> Option<Grant> {
        t.rx.try_recv().ok()
    }

    #[test]
    fn a_flooding_key_does_not_delay_another_keys_first_run_past_one_slot() {
        let s = Scheduler::new(2);
        let mut flood: Vec<Ticket> = (0..100)
            .map(|_| s.enqueue("flood", 10, 1000).unwrap())
            .collect();
        let mut held: Vec<Grant> = flood.iter_mut().filter_map(granted).collect();
        assert_eq!(held.len(), 2, "both slots go to the only key waiting");
        let mut other = s.enqueue("other", 10, 1000).unwrap();
        assert!(granted(&mut other).is_none(), "no slot is free yet");
        held.pop();
        assert!(
            granted(&mut other).is_some(),
            "the next slot goes to the key with fewer runs"
        );
        assert_eq!(s.counts(), (2, 97));
    }

    #[test]
    fn a_key_never_runs_more_than_its_own_limit_and_its_queue_is_bounded() {
        let s = Scheduler::new(100);
        let mut t: Vec<Ticket> = (0..10).map(|_| s.enqueue("k", 10, 1).unwrap()).collect();
        let held: Vec<Grant> = t.iter_mut().filter_map(granted).collect();
        assert_eq!(held.len(), 10);
        let mut eleventh = s.enqueue("k", 10, 1).unwrap();
        assert!(granted(&mut eleventh).is_none(), "the 11th waits");
        assert_eq!(s.enqueue("k", 10, 1).unwrap_err(), Refused::QueueFull);
        assert_eq!(s.running("k"), 10);
        drop(held);
        assert!(granted(&mut eleventh).is_some());
    }

    #[test]
    fn a_caller_that_left_frees_its_place_and_draining_refuses_new_runs() {
        let s = Scheduler::new(1);
        let mut first = s.enqueue("k", 5, 10).unwrap();
        let g = granted(&mut first).unwrap();
        let gone = s.enqueue("k", 5, 10).unwrap();
        let mut next = s.enqueue("k", 5, 10).unwrap();
        drop(gone);
        drop(g);
        assert!(
            granted(&mut next).is_some(),
            "the slot skips the caller that left"
        );
        s.drain();
        assert_eq!(s.enqueue("k", 5, 10).unwrap_err(), Refused::Draining);
    }
}
