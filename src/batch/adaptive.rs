//! `--jobs auto`: how many tasks run at once, found while the batch runs.
//!
//! What limits a batch depends on the host, the daemon and the tasks (on a
//! small host the daemon's CPU, on a big one the tasks'), so no fixed number
//! is right everywhere. The controller climbs a hill: it measures completed
//! tasks per second over a window of completions, and moves the limit one
//! step at a time in the direction that raised the rate; a step that lowers
//! the rate is taken back and the climb turns round; a window with a
//! transient sandbox error (a daemon that refuses or times out: overload)
//! cuts the limit by a quarter. Where two levels do equally well (within
//! the noise), it keeps the higher one and probes upwards: a rate that does
//! not change with the limit is noise-driven otherwise, and a random walk
//! ends anywhere, down to one task at a time (measured). The climb stays
//! between a floor and a cap; only the overload cut goes below the floor.

use std::time::{Duration, Instant};

/// Relative change in rate that counts as better or worse: below it, the
/// difference is noise. Measured here: windows of the same level differ by
/// up to 10 %, and levels 3 to 8 by less than that.
const NOISE: f64 = 0.08;
/// Shortest window: task lengths vary, and a rate over a second is mostly
/// noise (each move on noise costs throughput).
const MIN_WINDOW: Duration = Duration::from_secs(2);
/// Windows spent at a level found best (or no worse) before probing a
/// neighbour again: probing costs throughput when the best is found.
const HOLD: usize = 4;

/// The controller.
#[derive(Debug, Clone)]
pub(super) struct Adaptive {
    limit: usize,
    floor: usize,
    max: usize,
    /// +1 climbing, -1 descending.
    direction: i64,
    /// The previous window's limit and rate.
    previous: Option<(usize, f64)>,
    window_start: Instant,
    done_in_window: usize,
    errors_in_window: usize,
    /// Windows left to stay at this level.
    hold: usize,
}

impl Adaptive {
    /// Starts at `start`, climbs within `range`.
    pub(super) fn new(start: usize, range: std::ops::RangeInclusive<usize>, now: Instant) -> Self {
        let max = (*range.end()).max(1);
        let floor = (*range.start()).clamp(1, max);
        Adaptive {
            limit: start.clamp(floor, max),
            floor,
            max,
            direction: 1,
            previous: None,
            window_start: now,
            done_in_window: 0,
            errors_in_window: 0,
            hold: 0,
        }
    }

    /// Tasks that may run at once now.
    #[cfg(test)]
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// Completions per window: enough to average over a round of the
    /// running tasks, twice.
    fn window(&self) -> usize {
        (2 * self.limit).max(8)
    }

    /// A task ended at `now`, with a transient sandbox error or not;
    /// returns the new limit when it changes.
    pub(super) fn record(&mut self, now: Instant, transient_error: bool) -> Option<usize> {
        self.done_in_window += 1;
        self.errors_in_window += usize::from(transient_error);
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.done_in_window < self.window() || elapsed < MIN_WINDOW {
            return None;
        }
        let rate = self.done_in_window as f64 / elapsed.as_secs_f64();
        let errors = self.errors_in_window;
        self.window_start = now;
        self.done_in_window = 0;
        self.errors_in_window = 0;
        let before = self.limit;
        if errors > 0 {
            // Overload: back off by a quarter, and climb again from there.
            self.limit = (self.limit * 3 / 4).max(1);
            self.direction = 1;
            self.previous = None;
            self.hold = 0;
        } else {
            match self.previous {
                None => {
                    self.previous = Some((self.limit, rate));
                    self.step();
                }
                // Staying: keep the rate here current; then probe.
                Some(_) if self.hold > 0 => {
                    self.previous = Some((self.limit, rate));
                    self.hold -= 1;
                    if self.hold == 0 {
                        self.step();
                    }
                }
                Some((_, previous)) if rate > previous * (1.0 + NOISE) => {
                    // Better: the same way again.
                    self.previous = Some((self.limit, rate));
                    self.step();
                }
                Some((limit, previous)) if rate < previous * (1.0 - NOISE) => {
                    // Worse: back to where it was better, stay there a
                    // while, then try the other way.
                    self.limit = limit;
                    self.previous = Some((limit, previous));
                    self.direction = -self.direction;
                    self.hold = HOLD;
                }
                // The same within noise: the higher of the two, a while,
                // then upwards.
                Some((limit, _)) => {
                    self.limit = self.limit.max(limit);
                    self.previous = Some((self.limit, rate));
                    self.direction = 1;
                    self.hold = HOLD;
                }
            }
        }
        (self.limit != before).then_some(self.limit)
    }

    fn step(&mut self) {
        let next = self.limit as i64 + self.direction;
        // Below the floor (after an overload cut) it may only climb.
        let lowest = self.floor.min(self.limit) as i64;
        if next < lowest || next as usize > self.max {
            self.direction = -self.direction;
            return;
        }
        self.limit = next as usize;
    }
}

/// Run slots whose number can change while tasks hold them: a lower limit
/// takes effect as running tasks end, a higher one at once.
#[derive(Debug)]
pub(super) struct Slots {
    /// Held, and the limit.
    state: std::sync::Mutex<(usize, usize)>,
    freed: tokio::sync::Notify,
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot(std::sync::Arc<Slots>);

impl Slots {
    /// `limit` slots.
    pub(super) fn new(limit: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Slots {
            state: std::sync::Mutex::new((0, limit.max(1))),
            freed: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, usize)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot.
    pub(super) async fn acquire(self: &std::sync::Arc<Self>) -> Slot {
        loop {
            // Registered before the check: a slot freed in between is not missed.
            let freed = self.freed.notified();
            {
                let mut s = self.lock();
                if s.0 < s.1 {
                    s.0 += 1;
                    return Slot(self.clone());
                }
            }
            freed.await;
        }
    }

    /// Changes the number of slots.
    pub(super) fn set_limit(&self, limit: usize) {
        self.lock().1 = limit.max(1);
        self.freed.notify_waiters();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().0 -= 1;
        self.0.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the controller against a host whose rate at each limit is
    /// `rate(limit)` tasks per second; returns the limits it ran at.
    fn drive(mut a: Adaptive, tasks: usize, rate: impl Fn(usize) -> f64) -> Vec<usize> {
        let mut now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..tasks {
            now += Duration::from_secs_f64(1.0 / rate(a.limit()));
            a.record(now, false);
            seen.push(a.limit());
        }
        seen
    }

    #[test]
    fn climbs_to_the_best_level_and_stays_near_it() {
        // Rises to 5, then falls: a daemon that saturates, then thrashes.
        let rate = |l: usize| {
            let l = l as f64;
            if l <= 5.0 {
                2.0 * l
            } else {
                10.0 - 1.5 * (l - 5.0)
            }
        };
        let seen = drive(Adaptive::new(2, 1..=64, Instant::now()), 400, rate);
        let late = &seen[seen.len() - 200..];
        let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
        assert!((4.0..=6.0).contains(&mean), "settled at {mean}: {seen:?}");
        // Its throughput over the late part is within 5 % of the best.
        let got = late.iter().map(|l| rate(*l)).sum::<f64>() / late.len() as f64;
        assert!(got >= 0.95 * rate(5), "{got} vs {}", rate(5));
    }

    #[test]
    fn a_flat_host_climbs_and_never_leaves_the_range() {
        let seen = drive(Adaptive::new(2, 2..=6, Instant::now()), 300, |_| 4.0);
        assert!(seen.iter().all(|l| (2..=6).contains(l)));
        assert_eq!(seen.last(), Some(&6), "{seen:?}");
        let seen = drive(Adaptive::new(8, 1..=4, Instant::now()), 10, |l| l as f64);
        assert!(seen.iter().all(|l| *l <= 4));
    }

    /// A flat host whose every task takes ±15 % of the mean (seeded): the
    /// noise must not walk the limit down to the floor.
    #[test]
    fn noise_on_a_flat_host_does_not_walk_the_limit_down() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut noise = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            0.85 + 0.3 * ((seed >> 33) as f64 / (1u64 << 31) as f64)
        };
        let mut a = Adaptive::new(3, 1..=8, Instant::now());
        let mut now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..600 {
            now += Duration::from_secs_f64(0.1 * noise());
            a.record(now, false);
            seen.push(a.limit());
        }
        let late = &seen[300..];
        let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
        assert!(mean >= 5.0, "drifted to {mean}: {seen:?}");
    }

    #[test]
    fn errors_cut_the_limit_by_a_quarter() {
        let mut a = Adaptive::new(8, 1..=64, Instant::now());
        let mut now = Instant::now();
        let mut changed = None;
        // One window: 16 completions over more than the shortest window.
        for _ in 0..16 {
            now += MIN_WINDOW / 10;
            changed = a.record(now, true).or(changed);
        }
        assert_eq!(changed, Some(6));
        assert_eq!(a.limit(), 6);
    }

    #[tokio::test]
    async fn slots_follow_the_limit_both_ways() {
        let slots = Slots::new(2);
        let a = slots.acquire().await;
        let _b = slots.acquire().await;
        let waiting = {
            let s = slots.clone();
            tokio::spawn(async move { s.acquire().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "two of two are held");
        slots.set_limit(3);
        let c = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a raised limit frees a slot at once")
            .unwrap();
        // Lowered to one: three are held, and none is given out until two end.
        slots.set_limit(1);
        drop(a);
        drop(c);
        let s = slots.clone();
        let next = tokio::spawn(async move { s.acquire().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!next.is_finished(), "one of one is held");
        drop(_b);
        tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .expect("freed")
            .unwrap();
    }
}
