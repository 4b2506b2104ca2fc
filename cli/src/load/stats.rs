//! What a load run measures, per step: counts by status and error kind, and three HDR
//! histograms (microseconds): latency from the intended send time (the figure that
//! cannot hide a stall), service time from the actual send, and the scheduler's lag.
//! Workers keep their own and the run merges them exactly, once per tick.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 1 h at 3 significant figures: a few tens of kilobytes, whatever the run.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    Other,
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub latency: Histogram<u64>,
    pub service: Histogram<u64>,
    pub lag: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub bytes: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: histogram(),
            service: histogram(),
            lag: histogram(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            bytes: 0,
        }
    }
}

impl Stats {
    pub fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    /// Folds `other` in; merging is exact (histograms add bucket by bucket).
    pub fn merge(&mut self, other: &Stats) {
        self.latency.add(&other.latency).expect("same bounds");
        self.service.add(&other.service).expect("same bounds");
        self.lag.add(&other.lag).expect("same bounds");
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        self.bytes += other.bytes;
    }

    pub fn clear(&mut self) {
        self.latency.reset();
        self.service.reset();
        self.lag.reset();
        self.statuses.clear();
        self.errors.clear();
        self.bytes = 0;
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_is_exact() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        let mut all = histogram();
        for i in 1..=1000u64 {
            let h = if i % 3 == 0 {
                &mut a.latency
            } else {
                &mut b.latency
            };
            h.record(i * 100).unwrap();
            all.record(i * 100).unwrap();
        }
        *a.statuses.entry(200).or_default() += 2;
        *b.statuses.entry(200).or_default() += 3;
        *b.errors.entry(ErrorKind::Timeout).or_default() += 1;
        a.merge(&b);
        assert_eq!(a.latency, all);
        assert_eq!(a.statuses[&200], 5);
        assert_eq!(a.requests(), 6);
        assert_eq!(Percentiles::of(&a.latency).p50, Percentiles::of(&all).p50);
    }
}
