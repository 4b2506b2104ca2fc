//! Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
//! Jitter"): the n-th wait is uniform in `[0, min(cap, base * 2^n)]`, which spreads
//! retrying clients out instead of having them retry in lock-step.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The ceiling of the wait before retry number `attempt` (0 for the first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A full-jitter wait before retry number `attempt`, drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos() as u64;
        Duration::from_nanos(rng.u64(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let ceilings: Vec<_> = (0..6).map(|a| b.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [10, 20, 40, 80, 100, 100]);
        assert_eq!(b.ceiling(500), Duration::from_millis(100), "no overflow");
    }

    #[test]
    fn delays_are_spread_over_the_whole_range() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<_> = (0..2000).map(|_| b.delay(0, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(100)));
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(25))
            .count();
        let high = delays
            .iter()
            .filter(|d| **d > Duration::from_millis(75))
            .count();
        // Full jitter is uniform: about a quarter of the draws land in each quarter.
        assert!((400..600).contains(&low), "low quarter: {low}");
        assert!((400..600).contains(&high), "high quarter: {high}");
    }
}
