//! When each request of an open-model run is due: the arrival-rate schedule integrated,
//! so the n-th send has a computed instant, never "whenever the timer woke" (a tokio
//! timer is about a millisecond coarse, and a generator that sleeps between sends loses
//! its own lateness that way).

use std::time::Duration;

/// A stage: ramp (linearly) from the previous stage's rate to `target` per second over
/// `duration`. The first stage starts from `start_rate`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stage {
    pub duration: Duration,
    pub target: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

    /// The schedule's length (saturating: the checked inputs are at most a day, and a
    /// sum past `Duration::MAX` must not panic in the middle of a run).
    pub fn duration(&self) -> Duration {
        self.stages
            .iter()
            .fold(Duration::ZERO, |sum, s| sum.saturating_add(s.duration))
    }

    /// Whether every rate it names is a number from 0 to `max` (a schedule read from
    /// the wire, by a load worker, has not been through the file's checks).
    pub fn rates_within(&self, max: f64) -> bool {
        std::iter::once(self.start_rate)
            .chain(self.stages.iter().map(|s| s.target))
            .all(|r| (0.0..=max).contains(&r))
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
                let t = time_to(r0, (r1 - r0) / (2.0 * d), want).clamp(0.0, d);
                // Finite and at most the schedule's length, so this does not fail; a
                // send past the representable end would be past the end of the run.
                return Duration::try_from_secs_f64(offset + t).ok();
            }
            want -= in_stage;
            offset += d;
            r0 = r1;
        }
        None
    }
}

/// The `t` at which `r0 t + a t^2` reaches `want` (> 0 for every send but the first),
/// as `2 want / (r0 + sqrt(r0^2 + 4 a want))`: the root of the quadratic in the form
/// that stays exact when `a` is tiny or zero (a constant rate: `want / r0`) and when
/// `r0` is zero (a ramp from nothing: `sqrt(want / a)`), where the textbook form
/// divides by `a` or yields 0/0.
fn time_to(r0: f64, a: f64, want: f64) -> f64 {
    if want <= 0.0 {
        return 0.0;
    }
    if a == 0.0 && r0 > 0.0 {
        return want / r0;
    }
    let denominator = r0 + (r0 * r0 + 4.0 * a * want).max(0.0).sqrt();
    if denominator > 0.0 {
        2.0 * want / denominator
    } else {
        // No rate at all in this stage (which then holds no sends): never due.
        f64::INFINITY
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

    #[test]
    fn ramps_from_nothing_and_near_constant_rates_are_solved_exactly() {
        // From zero to a rate too small for the textbook root (which gave 0/0 here, and
        // a panic converting NaN seconds): the first send is due at once.
        let s = Schedule::ramping(
            0.0,
            vec![Stage {
                duration: Duration::from_secs(10),
                target: 1e-12,
            }],
        );
        assert_eq!(s.due(0), Some(Duration::ZERO));
        assert_eq!(s.due(1), None);
        // A ramp so slight it is all but constant: 100/s, sends 10 ms apart.
        let s = Schedule::ramping(
            100.0,
            vec![Stage {
                duration: Duration::from_secs(10),
                target: 100.0 + 1e-9,
            }],
        );
        let t = s.due(500).unwrap().as_secs_f64();
        assert!((t - 5.0).abs() < 1e-6, "{t}");
        // A day at the highest rate: every count exact, the last send within the day.
        let s = Schedule::constant(1e6, Duration::from_secs(86_400));
        assert_eq!(s.total(), 86_400_000_000.0);
        let last = s.due(86_399_999_999).unwrap();
        assert!(last < Duration::from_secs(86_400), "{last:?}");
        assert_eq!(s.due(86_400_000_000), None);
        // Lengths add up without overflow however long the stages.
        let s = Schedule::ramping(
            1.0,
            vec![
                Stage {
                    duration: Duration::MAX,
                    target: 1.0,
                },
                Stage {
                    duration: Duration::MAX,
                    target: 1.0,
                },
            ],
        );
        assert_eq!(s.duration(), Duration::MAX);
    }
}
