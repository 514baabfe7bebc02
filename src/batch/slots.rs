//! Run slots whose number can change while tasks hold them: the batch's
//! tasks at once, and the containers started at once (`starts.rs`, which
//! moves its own limit with the engine's start latency).

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
    use std::time::Duration;

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
