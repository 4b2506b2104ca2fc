//! Plain progress lines on stderr, for runs without a live view (`faultline load` and
//! `faultline run` when stdout is not a terminal): every few seconds of snapshots, the
//! rate, errors, latency, drops and the SLIs so far.

use std::time::Duration;

use crate::load::Snapshot;
use crate::load::stats::{Percentiles, Stats};
use crate::run::collect::Collector;
use crate::slo;

pub struct Progress {
    every: Duration,
    /// The run's planned length, when it has one.
    planned: Option<Duration>,
    window: Stats,
    dropped: u64,
    /// Where the last line's window ended, in the load's time.
    last: Duration,
}

impl Progress {
    pub fn new(every: Duration, planned: Option<Duration>) -> Self {
        Progress {
            every,
            planned,
            window: Stats::default(),
            dropped: 0,
            last: Duration::ZERO,
        }
    }

    /// Takes one snapshot (already folded into `collector`); returns a line when one is
    /// due.
    pub fn push(&mut self, snap: &Snapshot, collector: &Collector) -> Option<String> {
        self.window.merge(&snap.stats);
        self.dropped += snap.dropped;
        let span = snap.elapsed.saturating_sub(self.last);
        if span < self.every {
            return None;
        }
        let line = self.line(snap, span, collector);
        self.window.clear();
        self.dropped = 0;
        self.last = snap.elapsed;
        Some(line)
    }

    fn line(&self, snap: &Snapshot, span: Duration, collector: &Collector) -> String {
        let w = &self.window;
        let p = Percentiles::of(&w.latency);
        let at = match self.planned {
            Some(d) => format!("{:>4.0}s/{}s", snap.elapsed.as_secs_f64(), d.as_secs()),
            None => format!("{:>4.0}s", snap.elapsed.as_secs_f64()),
        };
        let slis: Vec<String> = collector
            .slos()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let sli = collector.so_far(i).ratio();
                let sli = sli.map_or("-".into(), |r| format!("{:.2}%", r * 100.0));
                format!("{} {sli}", s.name)
            })
            .collect();
        let mut line = format!(
            "t={at}  {:>7.1} req/s  errors {}  p50 {:.1} ms  p99 {:.1} ms  dropped {}  in flight {}",
            w.requests() as f64 / span.as_secs_f64().max(1e-9),
            w.requests() - slo::good_answers(w),
            p.p50,
            p.p99,
            self.dropped,
            snap.in_flight,
        );
        if !slis.is_empty() {
            line.push_str("  |  ");
            line.push_str(&slis.join("  "));
        }
        line
    }
}
