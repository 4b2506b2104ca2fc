//! The active health-check state machine of one endpoint (HAProxy's rise / fall): an
//! endpoint turns unhealthy after `fall` failed checks in a row and healthy again after
//! `rise` passed checks in a row, so one lost probe does not flap it.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HealthState {
    healthy: bool,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl HealthState {
    /// Endpoints start healthy: traffic flows from the first request, and passive
    /// ejection covers an endpoint that is in fact down before its first probe.
    pub fn new(config: &HealthConfig) -> Self {
        Self {
            healthy: true,
            streak: 0,
            rise: config.rise.max(1),
            fall: config.fall.max(1),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Feeds one probe result; returns true when the endpoint changed state.
    pub fn observe(&mut self, passed: bool) -> bool {
        if passed == self.healthy {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak >= needed {
            self.healthy = passed;
            self.streak = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rise: u32, fall: u32, probes: &str, expected: &str) {
        let config = HealthConfig {
            rise,
            fall,
            ..HealthConfig::default()
        };
        let mut h = HealthState::new(&config);
        let seen: String = probes
            .chars()
            .map(|c| {
                h.observe(c == '+');
                if h.is_healthy() { 'H' } else { 'U' }
            })
            .collect();
        assert_eq!(seen, expected, "probes {probes}");
    }

    #[test]
    fn falls_after_consecutive_failures_and_rises_after_consecutive_passes() {
        check(2, 2, "-+-+--", "HHHHHU");
        check(2, 3, "---++", "HHUUH");
        check(3, 1, "-++-+++", "UUUUUUH");
        check(1, 1, "-+-+", "UHUH");
    }
}
