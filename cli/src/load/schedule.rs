//! When each request of an open-model run is due: the arrival-rate schedule integrated,
//! so the n-th send has a computed instant, never "whenever the timer woke" (a tokio
//! timer is about a millisecond coarse, and a generator that sleeps between sends loses
//! its own lateness that way).

use std::time::Duration;

/// A stage: ramp (linearly) from the previous stage's rate to `target` per second over
/// `duration`. The first stage starts from `start_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    start_rate: f64,
    stages: Vec<Stage>,
}

impl Schedule {
    /// `rate` a second for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        Self {
            start_rate: rate,
            stages: vec![Stage {
                duration,
                target: rate,
            }],
        }
    }

    pub fn ramping(start_rate: f64, stages: Vec<Stage>) -> Self {
        Self { start_rate, stages }
    }

    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The rate the schedule asks for at `t` from the start (0 past the end).
    pub fn rate_at(&self, t: Duration) -> f64 {
        let mut left = t.as_secs_f64();
        let mut r0 = self.start_rate;
        for s in &self.stages {
            let d = s.duration.as_secs_f64();
            if left < d {
                return r0 + (s.target - r0) * left / d;
            }
            left -= d;
            r0 = s.target;
        }
        0.0
    }

    /// Sends due over the whole schedule.
    pub fn total(&self) -> f64 {
        let mut r0 = self.start_rate;
        let mut n = 0.0;
        for s in &self.stages {
            n += (r0 + s.target) / 2.0 * s.duration.as_secs_f64();
            r0 = s.target;
        }
        n
    }

    /// The offset from the start at which send number `n` (from 0) is due, or `None`
    /// past the end. Send `n` is due when the integral of the rate reaches `n`.
    pub fn due(&self, n: u64) -> Option<Duration> {
        let mut want = n as f64;
        let mut offset = 0.0;
        let mut r0 = self.start_rate;
        for s in &self.stages {
            let d = s.duration.as_secs_f64();
            let r1 = s.target;
            let in_stage = (r0 + r1) / 2.0 * d;
            if want < in_stage {
                // Solve r0 t + (r1 - r0) t^2 / (2 d) = want for t in [0, d].
                let a = (r1 - r0) / (2.0 * d);
                let t = if a.abs() < 1e-12 {
                    want / r0
                } else {
                    (-r0 + (r0 * r0 + 4.0 * a * want).max(0.0).sqrt()) / (2.0 * a)
                };
                return Some(Duration::from_secs_f64(offset + t.clamp(0.0, d)));
            }
            want -= in_stage;
            offset += d;
            r0 = r1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_rate_spaces_sends_evenly() {
        let s = Schedule::constant(1000.0, Duration::from_secs(2));
        assert_eq!(s.due(0), Some(Duration::ZERO));
        assert_eq!(s.due(1), Some(Duration::from_millis(1)));
        assert_eq!(s.due(1999), Some(Duration::from_millis(1999)));
        assert_eq!(s.due(2000), None);
        assert_eq!(s.total(), 2000.0);
    }

    #[test]
    fn a_ramp_sends_what_its_integral_says() {
        // 0 to 100/s over 10 s: 500 sends; half of them in the last 2.93 s.
        let s = Schedule::ramping(
            0.0,
            vec![Stage {
                duration: Duration::from_secs(10),
                target: 100.0,
            }],
        );
        assert_eq!(s.total(), 500.0);
        let t = s.due(250).unwrap().as_secs_f64();
        assert!((t - 7.0711).abs() < 0.001, "{t}");
        assert!(s.due(499).is_some() && s.due(500).is_none());
        // Then a hold at 100/s for 1 s: 100 more.
        let s = Schedule::ramping(
            0.0,
            vec![
                Stage {
                    duration: Duration::from_secs(10),
                    target: 100.0,
                },
                Stage {
                    duration: Duration::from_secs(1),
                    target: 100.0,
                },
            ],
        );
        assert_eq!(s.due(550), Some(Duration::from_millis(10_500)));
        assert_eq!(s.rate_at(Duration::from_secs(5)), 50.0);
        assert_eq!(s.rate_at(Duration::from_millis(10_500)), 100.0);
        assert_eq!(s.rate_at(Duration::from_secs(12)), 0.0);
    }
}
