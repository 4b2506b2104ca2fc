//! Judging a run: its phases (baseline, each fault, recovery), the abort guards while it
//! runs, and after it each SLO per phase with the time to detect and to recover from
//! each fault. Arithmetic over the collector's series; no I/O.

use crate::experiment::Experiment;
use crate::run::collect::Collector;
use crate::run::report::{SloFault, SloReport};
use crate::run::timeline::FaultRecord;
use crate::slo::{self, Counts, Phase, Windows};

/// Phases of the run in whole seconds: baseline, each lasting fault, recovery.
pub fn phases(exp: &Experiment, seconds: usize) -> Vec<Phase> {
    let mut out = Vec::new();
    let first = exp
        .faults
        .first()
        .map_or(seconds, |f| f.at.as_secs() as usize);
    out.push(Phase {
        name: "baseline".into(),
        start_s: 0,
        end_s: first.min(seconds),
    });
    let mut last_end = 0;
    for f in &exp.faults {
        let start = f.at.as_secs() as usize;
        let end = match f.duration {
            Some(d) => (f.at + d).as_secs_f64().ceil() as usize,
            None => start + 1,
        };
        last_end = last_end.max(end);
        out.push(Phase {
            name: f.label.clone(),
            start_s: start,
            end_s: end.min(seconds.max(start)),
        });
    }
    if !exp.faults.is_empty() {
        out.push(Phase {
            name: "recovery".into(),
            start_s: last_end.min(seconds),
            end_s: seconds,
        });
    }
    out
}

/// The abort guards: each SLO's short-window burn rate above its limit for the
/// sustained time stops the run.
pub struct Guards {
    /// Per rule, the seconds in a row its burn rate has been above the limit.
    above: Vec<usize>,
}

impl Guards {
    pub fn new(exp: &Experiment) -> Self {
        Guards {
            above: vec![0; exp.aborts.len()],
        }
    }

    /// Takes the newest second into account; returns the SLO and why the run must stop,
    /// if a guard tripped (the first, when several do).
    pub fn check(
        &mut self,
        exp: &Experiment,
        collector: &Collector,
        windows: Windows,
    ) -> Option<(String, String)> {
        let mut tripped = None;
        for (rule, above) in exp.aborts.iter().zip(&mut self.above) {
            let slo = &exp.slos[rule.slo];
            let burn = slo::burn(
                collector.recent(rule.slo, windows.short_s),
                slo.objective.objective,
            );
            *above = if burn > rule.burn_rate { *above + 1 } else { 0 };
            if tripped.is_none() && *above as u64 >= rule.sustained.as_secs().max(1) {
                let m = format!(
                    "abort: SLO `{}` burned its budget at {:.1}x (limit {}x) for {} s",
                    slo.name, burn, rule.burn_rate, above
                );
                tripped = Some((slo.name.clone(), m));
            }
        }
        tripped
    }
}

/// Each SLO's verdict over the run, per phase, with what it says about each fault.
pub fn slo_reports(
    exp: &Experiment,
    series: &[Vec<Counts>],
    phases: &[Phase],
    windows: Windows,
    faults: &[FaultRecord],
) -> Vec<SloReport> {
    let seconds = series.first().map_or(0, Vec::len);
    let settle = (windows.short_s as usize).max(3);
    exp.slos
        .iter()
        .zip(series)
        .map(|(s, series)| {
            let mut evaluation = slo::evaluate(&s.objective, series, phases, windows);
            evaluation.name = s.name.clone();
            let objective = s.objective.objective;
            let per_fault = faults
                .iter()
                .filter_map(|f| {
                    let applied = f.applied_at_s? as usize;
                    Some(SloFault {
                        fault: f.label.clone(),
                        time_to_detect_s: slo::time_to_detect(
                            series,
                            objective,
                            applied,
                            windows.short_s,
                        ),
                        time_to_recover_s: f.healed_at_s.and_then(|h| {
                            let healed = (h.ceil() as usize).min(seconds);
                            slo::time_to_recover(series, objective, healed, settle)
                        }),
                    })
                })
                .collect();
            SloReport {
                evaluation,
                step: s.step.map(|i| exp.load.flows.steps[i].name.clone()),
                faults: per_fault,
            }
        })
        .collect()
}

/// Why the hypothesis did not hold, from the SLOs: one line per missed objective.
pub fn slo_failures(slos: &[SloReport]) -> impl Iterator<Item = String> + '_ {
    slos.iter().filter(|s| !s.evaluation.met).map(|s| {
        format!(
            "SLO `{}` missed: {} against {}%",
            s.evaluation.name,
            s.evaluation
                .sli
                .map_or("-".into(), |v| format!("{:.3}%", v * 100.0)),
            s.evaluation.objective * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::experiment::{Overrides, parse};
    use crate::load::Snapshot;
    use crate::load::stats::Stats;

    /// An experiment against a running system (nothing to start), with one guard.
    fn experiment(faults: &str) -> Experiment {
        let text = format!(
            "name = \"t\"\nduration = \"60s\"\n[target]\nurl = \"http://127.0.0.1:1\"\nagent = \"http://127.0.0.1:2\"\n[load]\nrate = 10\n[[load.flows]]\nname = \"f\"\nsteps = [{{ name = \"s\", path = \"/\" }}]\n[[slo]]\nname = \"availability\"\nobjective = \"availability>=99\"\n[[abort]]\nslo = \"availability\"\nburn_rate = 10\nfor = \"2s\"\n{faults}"
        );
        parse("t.toml", &text, Path::new("."), &Overrides::default()).unwrap()
    }

    fn second(good: u64, bad: u64) -> Snapshot {
        let mut stats = Stats::default();
        stats.statuses.insert(200, good);
        stats.statuses.insert(503, bad);
        Snapshot {
            elapsed: Duration::ZERO,
            stats,
            steps: Vec::new(),
            dropped: 0,
            in_flight: 0,
        }
    }

    #[test]
    fn a_guard_trips_once_the_burn_rate_stays_above_its_limit_for_long_enough() {
        let exp = experiment("");
        let w = Windows {
            short_s: 1,
            long_s: 12,
        };
        let mut c = Collector::new(exp.slos.clone(), w, vec!["s".into()]);
        let mut guards = Guards::new(&exp);
        let mut push = |good, bad| {
            c.push(&second(good, bad));
            guards.check(&exp, &c, w)
        };
        // 50% errors against 99% burn at 50x: above 10x, but for one second only.
        assert_eq!(push(100, 0), None);
        assert_eq!(push(50, 50), None);
        assert_eq!(push(100, 0), None, "a good second resets the count");
        assert_eq!(push(50, 50), None);
        let (slo, why) = push(50, 50).expect("two seconds above the limit trip it");
        assert_eq!(slo, "availability");
        assert_eq!(
            why,
            "abort: SLO `availability` burned its budget at 50.0x (limit 10x) for 2 s"
        );
    }

    #[test]
    fn phases_run_from_the_baseline_through_each_fault_to_the_recovery() {
        let exp = experiment(
            "[[faults]]\nat = \"10s\"\nduration = \"5s\"\nkind = \"pause\"\ntarget = \"x\"\n",
        );
        let names = |p: Vec<Phase>| -> Vec<(String, usize, usize)> {
            p.into_iter()
                .map(|p| (p.name, p.start_s, p.end_s))
                .collect()
        };
        assert_eq!(
            names(phases(&exp, 30)),
            [
                ("baseline".into(), 0, 10),
                ("pause x".into(), 10, 15),
                ("recovery".into(), 15, 30)
            ]
        );
        // A run cut short ends every phase with it.
        assert_eq!(
            names(phases(&exp, 12)),
            [
                ("baseline".into(), 0, 10),
                ("pause x".into(), 10, 12),
                ("recovery".into(), 12, 12)
            ]
        );
    }
}
