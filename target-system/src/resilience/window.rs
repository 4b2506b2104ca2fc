//! A time-bucketed sliding window of counters, the common core of the breaker and the
//! retry budget.

use std::time::Duration;

use tokio::time::Instant;

/// Counts events in `N` fixed buckets covering `window`; old buckets fall out as time
/// passes, so a burst of failures long ago cannot trip a breaker today.
#[derive(Debug, Clone)]
pub(crate) struct SlidingWindow<const K: usize> {
    bucket_len: Duration,
    /// Index of the bucket that `head_start` starts.
    head: usize,
    head_start: Instant,
    buckets: Vec<[u64; K]>,
}

impl<const K: usize> SlidingWindow<K> {
    pub(crate) fn new(window: Duration, buckets: usize, now: Instant) -> Self {
        let buckets = buckets.max(1);
        let bucket_len = (window / buckets as u32).max(Duration::from_millis(1));
        Self {
            bucket_len,
            head: 0,
            head_start: now,
            buckets: vec![[0; K]; buckets],
        }
    }

    /// Moves the head forward to the bucket containing `now`, clearing the buckets that
    /// fell out of the window on the way.
    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.head_start);
        let steps = (elapsed.as_nanos() / self.bucket_len.as_nanos()) as usize;
        if steps == 0 {
            return;
        }
        let n = self.buckets.len();
        for i in 1..=steps.min(n) {
            self.buckets[(self.head + i) % n] = [0; K];
        }
        self.head = (self.head + steps) % n;
        self.head_start += self.bucket_len * steps as u32;
    }

    pub(crate) fn add(&mut self, now: Instant, counter: usize, amount: u64) {
        self.advance(now);
        self.buckets[self.head][counter] += amount;
    }

    pub(crate) fn totals(&mut self, now: Instant) -> [u64; K] {
        self.advance(now);
        let mut out = [0; K];
        for b in &self.buckets {
            for (o, v) in out.iter_mut().zip(b) {
                *o += v;
            }
        }
        out
    }

    pub(crate) fn clear(&mut self, now: Instant) {
        self.advance(now);
        for b in &mut self.buckets {
            *b = [0; K];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_buckets_fall_out_of_the_window() {
        let mut w = SlidingWindow::<1>::new(Duration::from_secs(10), 10, Instant::now());
        w.add(Instant::now(), 0, 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        w.add(Instant::now(), 0, 3);
        assert_eq!(w.totals(Instant::now()), [8]);
        tokio::time::advance(Duration::from_millis(5_500)).await;
        assert_eq!(
            w.totals(Instant::now()),
            [3],
            "the first 5 are older than 10 s"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(w.totals(Instant::now()), [0]);
    }
}
