//! Passive outlier detection (Envoy's consecutive-failure ejection): an endpoint that
//! fails `consecutive_failures` real requests in a row is taken out of the rotation for
//! `base_ejection * times ejected` (capped), without waiting for the next health probe.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Outlier {
    failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl Outlier {
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Feeds one request outcome; returns true when this outcome ejected the endpoint.
    /// `may_eject` is false when ejecting it would leave too few endpoints.
    pub fn observe(
        &mut self,
        success: bool,
        config: &OutlierConfig,
        may_eject: bool,
        now: Instant,
    ) -> bool {
        if success {
            self.failures = 0;
            // An endpoint that serves well again is forgiven one earlier ejection.
            if !self.is_ejected(now) {
                self.ejections = self.ejections.saturating_sub(1);
            }
            return false;
        }
        self.failures += 1;
        if self.failures < config.consecutive_failures || self.is_ejected(now) || !may_eject {
            return false;
        }
        self.failures = 0;
        self.ejections += 1;
        let time = config
            .base_ejection
            .saturating_mul(self.ejections)
            .min(config.max_ejection);
        self.ejected_until = Some(now + time);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_for_a_growing_time() {
        let config = OutlierConfig::default();
        let mut o = Outlier::default();
        let now = Instant::now();
        for _ in 0..4 {
            assert!(!o.observe(false, &config, true, now));
        }
        assert!(
            !o.observe(true, &config, true, now),
            "a success resets the count"
        );
        for _ in 0..4 {
            o.observe(false, &config, true, now);
        }
        assert!(o.observe(false, &config, true, now));
        assert!(o.is_ejected(now));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!o.is_ejected(Instant::now()));

        let now = Instant::now();
        for _ in 0..5 {
            o.observe(false, &config, true, now);
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(o.is_ejected(Instant::now()), "second ejection lasts 10 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!o.is_ejected(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn never_ejects_when_not_allowed() {
        let config = OutlierConfig::default();
        let mut o = Outlier::default();
        for _ in 0..20 {
            assert!(!o.observe(false, &config, false, Instant::now()));
        }
        assert!(!o.is_ejected(Instant::now()));
    }
}
