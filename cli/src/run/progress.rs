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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Slo;
    use crate::slo::{Objective, Windows};

    fn second(t: u64, good: u64, bad: u64) -> Snapshot {
        let mut stats = Stats::default();
        stats.statuses.insert(404, good);
        stats.statuses.insert(500, bad);
        Snapshot {
            elapsed: Duration::from_secs(t),
            stats,
            steps: Vec::new(),
            dropped: 1,
            in_flight: 2,
        }
    }

    #[test]
    fn a_line_every_few_seconds_of_load_with_the_rows_the_collector_keeps() {
        let objective: Objective = "availability>=99".parse().unwrap();
        let windows = Windows::scaled(Duration::from_secs(12));
        let mut c = Collector::new(vec![Slo::of(&objective)], windows, vec!["load".into()]);
        let mut p = Progress::new(Duration::from_secs(5), Some(Duration::from_secs(12)));
        let mut lines = Vec::new();
        for t in 1..=10 {
            let snap = second(t, 90, 10);
            c.push(&snap);
            lines.extend(p.push(&snap, &c));
        }
        // A 404 is the client's fault: good; a 500 is not.
        let row = &c.seconds()[0];
        assert_eq!((row.t, row.requests, row.ok, row.errors), (0, 100, 90, 10));
        let name = &c.slos()[0].name;
        assert_eq!(row.sli[name], 0.9);
        assert_eq!(c.so_far(0).total, 1000);
        assert_eq!(c.recent(0, 3).total, 300);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("t=   5s/12s    100.0 req/s  errors 50  "),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].ends_with(&format!("dropped 5  in flight 2  |  {name} 90.00%")),
            "{}",
            lines[0]
        );
    }
}
