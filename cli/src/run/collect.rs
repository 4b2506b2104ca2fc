//! The collector: folds the load engine's per-second snapshots into what every consumer
//! reads, the same way for `faultline load` and `faultline run`: each SLO's good and
//! total counts per second, one [`Second`] row per snapshot, and the CLI's `/metrics`.
//! The SLO figures of live views, the abort guards and the verdict all come from its
//! series.

use std::sync::Arc;

use crate::experiment::Slo;
use crate::load::Snapshot;
use crate::load::stats::{Percentiles, Stats};
use crate::metrics::Metrics;
use crate::run::report::Second;
use crate::slo::{self, Counts, SloNow, Windows};

pub struct Collector {
    slos: Vec<Slo>,
    windows: Windows,
    /// The names requests are counted under in `/metrics`: the flows' steps, or one
    /// name for a fixed request.
    steps: Vec<String>,
    metrics: Option<Arc<Metrics>>,
    /// Per SLO, its counts of each second.
    series: Vec<Vec<Counts>>,
    seconds: Vec<Second>,
}

impl Collector {
    /// A collector of `slos`, whose live figures use `windows`. `steps` names the
    /// statistics of each step (a fixed request's snapshots have no steps: they count
    /// under the first name).
    pub fn new(slos: Vec<Slo>, windows: Windows, steps: Vec<String>) -> Self {
        Collector {
            series: vec![Vec::new(); slos.len()],
            slos,
            windows,
            steps,
            metrics: None,
            seconds: Vec::new(),
        }
    }

    /// Feeds every snapshot to `metrics` too.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Folds one snapshot in; returns its row.
    pub fn push(&mut self, snap: &Snapshot) -> &Second {
        let counts: Vec<Counts> = self
            .slos
            .iter()
            .map(|s| {
                let stats = match s.step {
                    Some(i) => snap.steps.get(i).unwrap_or(&snap.stats),
                    None => &snap.stats,
                };
                slo::counts(&s.objective.kind, stats, &s.also_bad)
            })
            .collect();
        for (series, c) in self.series.iter_mut().zip(&counts) {
            series.push(*c);
        }
        let row = second_row(&self.slos, self.seconds.len(), snap, &counts);
        self.seconds.push(row);
        if let Some(m) = &self.metrics {
            if snap.steps.is_empty() {
                let name = self.steps.first().map_or("load", String::as_str);
                m.observe(std::iter::once((name, &snap.stats)), snap.dropped);
            } else {
                let steps = self.steps.iter().map(String::as_str);
                m.observe(steps.zip(snap.steps.iter()), snap.dropped);
            }
            m.set_slos(&self.now());
        }
        self.seconds.last().expect("a row was pushed")
    }

    pub fn slos(&self) -> &[Slo] {
        &self.slos
    }

    /// Per SLO, its counts of each second so far.
    pub fn series(&self) -> &[Vec<Counts>] {
        &self.series
    }

    pub fn seconds(&self) -> &[Second] {
        &self.seconds
    }

    /// Every SLO as it stands after the seconds so far.
    pub fn now(&self) -> Vec<SloNow> {
        self.slos
            .iter()
            .zip(&self.series)
            .map(|(s, series)| slo::now(&s.name, s.objective.objective, series, self.windows))
            .collect()
    }

    /// SLO `i`'s counts over its last `len` seconds.
    pub fn recent(&self, i: usize, len: u64) -> Counts {
        let series = &self.series[i];
        let from = series.len().saturating_sub(len as usize);
        sum(&series[from..])
    }

    /// SLO `i`'s counts over the whole run so far.
    pub fn so_far(&self, i: usize) -> Counts {
        sum(&self.series[i])
    }

    pub fn into_seconds(self) -> Vec<Second> {
        self.seconds
    }
}

fn sum(seconds: &[Counts]) -> Counts {
    let mut c = Counts::default();
    for s in seconds {
        c.add(*s);
    }
    c
}

/// One second of the run for reports and live views.
fn second_row(slos: &[Slo], t: usize, snap: &Snapshot, counts: &[Counts]) -> Second {
    let s: &Stats = &snap.stats;
    let ok = slo::good_answers(s);
    let p = Percentiles::of(&s.latency);
    Second {
        t,
        requests: s.requests(),
        ok,
        errors: s.requests() - ok,
        dropped: snap.dropped,
        p50_ms: p.p50,
        p99_ms: p.p99,
        max_ms: p.max,
        sli: slos
            .iter()
            .zip(counts)
            .filter_map(|(s, c)| Some((s.name.clone(), c.ratio()?)))
            .collect(),
    }
}
