//! How many containers a batch creates and starts at once: a limit of its
//! own, apart from how many tasks run.
//!
//! Creating and starting a container is the engine's work, and an engine
//! does it no faster for being asked many times at once: past a few, more
//! concurrent starts only queue inside the daemon (measured at `--jobs 64`
//! on 2 cores: a start took 4 s at the median and up to 12 s, against
//! 0.4 s at `--jobs 6`, for the same tasks per second), until its calls
//! time out. So the limit follows the start latency the way TCP Vegas
//! follows round-trip time: over each window of starts, a median latency
//! far above the batch's fastest start means the engine queues, and the
//! limit halves; otherwise it grows, doubling until the first queue and
//! by one after that. A start that fails as an overload (refused, timed
//! out) halves it too. The limit then saws around where a small queue
//! stands in the engine: it starts containers as fast as it can, and a
//! start waits a few times what it would alone. A host that gets slower
//! for good (busy with tests) looks like a queue only past 3x; there the
//! limit is lower, never under two.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::slots::Slots;

/// Starts at once before anything is measured.
const INITIAL: usize = 4;
/// A window's median over this many times the batch's fastest start: the
/// engine queues. Measured unqueued at `--jobs 6`: the median start was
/// 2× the fastest, and 9 in 10 were under 2.7×.
const QUEUED: f64 = 3.0;
/// Queueing alone never takes the limit below this: a start waits on the
/// engine's disk and CPU, not only on its queue, and two keep it busy.
const QUEUE_FLOOR: usize = 2;

/// The start limit's controller.
#[derive(Debug, Clone)]
pub(super) struct StartLimit {
    limit: usize,
    max: usize,
    /// Doubling until the engine first queues.
    slow_start: bool,
    /// The fastest start of the batch, the yardstick (TCP Vegas's base
    /// round trip). Not the fastest of the last few: under a standing queue
    /// those are all queued, and a yardstick that moves with the queue lets
    /// the limit creep up without end (it did, in the model below).
    fastest: Option<Duration>,
    window: Vec<Duration>,
    errors: usize,
}

impl StartLimit {
    /// A limit that never goes over `max` (more cannot be in flight).
    pub(super) fn new(max: usize) -> Self {
        let max = max.max(1);
        StartLimit {
            limit: INITIAL.min(max),
            max,
            slow_start: true,
            fastest: None,
            window: Vec::new(),
            errors: 0,
        }
    }

    /// Containers that may start at once now.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// A start took `latency`, or failed as an overload; returns the new
    /// limit when it changes. Decided once per window of `limit` starts:
    /// the starts in flight when the engine began to queue all queued, and
    /// one cause must not halve the limit once per start.
    pub(super) fn record(&mut self, latency: Duration, overload: bool) -> Option<usize> {
        if overload {
            self.errors += 1;
        } else {
            self.fastest = Some(self.fastest.map_or(latency, |f| f.min(latency)));
            self.window.push(latency);
        }
        if self.window.len() + self.errors < self.limit {
            return None;
        }
        let before = self.limit;
        let fastest = self.fastest.unwrap_or_default();
        self.window.sort();
        let median = self.window.get(self.window.len() / 2).copied();
        let queued = median.is_some_and(|m| m.as_secs_f64() > QUEUED * fastest.as_secs_f64());
        if self.errors > 0 {
            self.limit = (self.limit / 2).max(1);
            self.slow_start = false;
        } else if queued {
            self.limit = (self.limit / 2).max(QUEUE_FLOOR).min(self.limit);
            self.slow_start = false;
        } else if self.slow_start {
            self.limit = (self.limit * 2).min(self.max);
        } else {
            self.limit = (self.limit + 1).min(self.max);
        }
        self.window.clear();
        self.errors = 0;
        (self.limit != before).then_some(self.limit)
    }
}

/// Containers being created and started at once: slots whose number the
/// start latency sets ([`StartLimit`]).
pub(super) struct Starts {
    pub(super) slots: Arc<Slots>,
    control: Mutex<StartLimit>,
}

impl Starts {
    pub(super) fn new(most: usize) -> Arc<Self> {
        let control = StartLimit::new(most);
        Arc::new(Starts {
            slots: Slots::new(control.limit()),
            control: Mutex::new(control),
        })
    }

    pub(super) fn record(&self, latency: Duration, overload: bool) {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(limit) = control.record(latency, overload) {
            self.slots.set_limit(limit);
        }
    }

    pub(super) fn limit(&self) -> usize {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine that starts `rate` containers a second however many are
    /// asked at once, after `base` each: a start's latency is its queue
    /// plus `base`. Returns the limits the controller ran at.
    fn drive(mut s: StartLimit, starts: usize, base: f64, rate: f64) -> Vec<usize> {
        let mut seen = Vec::new();
        for _ in 0..starts {
            let queue = (s.limit() as f64 - base * rate).max(0.0) / rate;
            s.record(Duration::from_secs_f64(base + queue), false);
            seen.push(s.limit());
        }
        seen
    }

    #[test]
    fn an_engine_that_queues_keeps_a_bounded_queue() {
        // 10 starts a second at 0.2 s each: two at once keep it busy. At
        // the 64 that could be in flight, a start would wait 6.4 s (32x).
        let seen = drive(StartLimit::new(64), 600, 0.2, 10.0);
        let late = &seen[300..];
        assert!(late.iter().all(|l| (2..=20).contains(l)), "{seen:?}");
        // The queue it keeps: a start waits a few times its own length
        // (the limit saws between halving and growing by one).
        let wait = late
            .iter()
            .map(|l| 0.2 + (*l as f64 - 2.0).max(0.0) / 10.0)
            .sum::<f64>()
            / late.len() as f64;
        assert!(wait <= 8.0 * 0.2, "a start waited {wait:.2} s on average");
    }

    #[test]
    fn an_engine_that_never_queues_gets_the_whole_range() {
        let seen = drive(StartLimit::new(16), 100, 0.2, 1000.0);
        assert_eq!(seen.last(), Some(&16), "{seen:?}");
        // Doubling: from 4 to 16 within 4 + 8 starts.
        assert_eq!(seen[11], 16, "{seen:?}");
    }

    #[test]
    fn a_slower_host_is_not_a_queue() {
        // Every start twice as slow as before, none queued: under 3x the
        // batch's fastest start, a slower host is not taken for a queue.
        let mut s = StartLimit::new(32);
        for _ in 0..40 {
            s.record(Duration::from_millis(100), false);
        }
        let before = s.limit();
        for _ in 0..80 {
            s.record(Duration::from_millis(200), false);
        }
        assert!(s.limit() >= before, "{} < {before}", s.limit());
    }

    #[test]
    fn overload_halves_once_per_window_down_to_one() {
        let mut s = StartLimit::new(64);
        assert_eq!(s.limit(), INITIAL);
        // A whole window failing halves once, not once per failure.
        let changes: Vec<_> = (0..INITIAL)
            .filter_map(|_| s.record(Duration::ZERO, true))
            .collect();
        assert_eq!(changes, vec![INITIAL / 2]);
        for _ in 0..8 {
            s.record(Duration::ZERO, true);
        }
        assert_eq!(s.limit(), 1);
    }
}
