//! A token bucket: `rate` tokens a second up to `burst`; a request takes one token or is
//! told how long until one is available (the `Retry-After` of a 429).

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
    }

    /// Takes one token, or returns how long until one will be there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// True when the bucket is full again, so its entry can be forgotten.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let mut b = TokenBucket::new(10.0, 5.0, Instant::now());
        for _ in 0..5 {
            b.try_take(Instant::now()).unwrap();
        }
        let wait = b.try_take(Instant::now()).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(b.try_take(Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        b.try_take(Instant::now()).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn admits_the_rate_over_a_long_period() {
        let mut b = TokenBucket::new(100.0, 10.0, Instant::now());
        let mut admitted = 0;
        for _ in 0..10_000 {
            if b.try_take(Instant::now()).is_ok() {
                admitted += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // 10 s at 100/s plus the initial burst of 10.
        assert!((1005..=1011).contains(&admitted), "admitted {admitted}");
    }

    #[tokio::test(start_paused = true)]
    async fn refills_no_further_than_the_burst() {
        let mut b = TokenBucket::new(1.0, 3.0, Instant::now());
        b.try_take(Instant::now()).unwrap();
        assert!(!b.is_full(Instant::now()));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(b.is_full(Instant::now()));
        for _ in 0..3 {
            b.try_take(Instant::now()).unwrap();
        }
        assert!(b.try_take(Instant::now()).is_err());
    }
}
