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
