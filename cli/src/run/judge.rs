//! Judging a run: its phases (baseline, each fault, the recovery after it: every second
//! in exactly one), the abort guards while it runs, and after it each SLO per phase with
//! the time to detect and to recover from each fault, within that fault's window.
//! Arithmetic over the collector's series; no I/O.

use crate::experiment::Experiment;
use crate::run::collect::Collector;
use crate::run::report::{SloFault, SloReport, Verdict};
use crate::run::timeline::FaultRecord;
use crate::slo::{self, Counts, Phase, PhaseKind, Windows};

/// Phases of the run in whole seconds, so that every second of `[0, seconds)` is in
/// exactly one: the baseline before the first fault; each fault from its planned start
/// to its planned end (an instant fault lasts its second), faults that overlap making
/// one phase named by all of them (`kill app-2 + poison payments`); and a `recovery`
/// after each, until the next fault starts or the run ends. Phases the run did not
/// reach are left out.
pub fn phases(exp: &Experiment, seconds: usize) -> Vec<Phase> {
    let spans = exp.faults.iter().map(|f| {
        let start = f.at.as_secs() as usize;
        let end = match f.duration {
            Some(d) => ((f.at.saturating_add(d)).as_secs_f64().ceil() as usize).max(start + 1),
            None => start + 1,
        };
        (start, end, f.label.as_str())
    });
    partition(spans, seconds)
}

/// [`phases`] from each fault's `[start, end)` and label, in order of start.
fn partition<'a>(
    spans: impl Iterator<Item = (usize, usize, &'a str)>,
    seconds: usize,
) -> Vec<Phase> {
    // Overlapping faults are one group.
    let mut groups: Vec<(usize, usize, Vec<&str>)> = Vec::new();
    for (start, end, label) in spans {
        match groups.last_mut() {
            Some((_, group_end, labels)) if start < *group_end => {
                *group_end = (*group_end).max(end);
                labels.push(label);
            }
            _ => groups.push((start, end, vec![label])),
        }
    }
    let mut out = Vec::new();
    let mut push = |name: String, kind: PhaseKind, start: usize, end: usize| {
        let (start, end) = (start.min(seconds), end.min(seconds));
        if start < end {
            out.push(Phase {
                name,
                kind,
                start_s: start,
                end_s: end,
            });
        }
    };
    let first = groups.first().map_or(seconds, |g| g.0);
    push("baseline".into(), PhaseKind::Baseline, 0, first);
    for (i, (start, end, labels)) in groups.iter().enumerate() {
        push(labels.join(" + "), PhaseKind::Fault, *start, *end);
        let next = groups.get(i + 1).map_or(seconds, |g| g.0);
        push("recovery".into(), PhaseKind::Recovery, *end, next);
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

/// Each SLO's verdict over the run, per phase, with what it says about each fault
/// (one entry per fault, in the timeline's order), judged within the fault's window:
/// from its start until the next fault starts, or the run ends.
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
                .map(|f| {
                    let effect = fault_window(f, faults, seconds).map(|(start, heal, end)| {
                        slo::fault_effect(
                            series,
                            objective,
                            start,
                            heal,
                            end,
                            windows.short_s,
                            settle,
                        )
                    });
                    SloFault {
                        fault: f.label.clone(),
                        breached: effect.is_some_and(|e| e.breached),
                        time_to_detect_s: effect.and_then(|e| e.time_to_detect_s),
                        time_to_recover_s: effect.and_then(|e| e.time_to_recover_s),
                        recovery_window_s: effect.map_or(0, |e| e.recovery_window_s),
                    }
                })
                .collect();
            SloReport {
                verdict: if evaluation.met {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                evaluation,
                step: s.step.map(|i| exp.load.flows.steps[i].name.clone()),
                faults: per_fault,
            }
        })
        .collect()
}

/// A fault's window in whole seconds: its start (when applied), its heal, and the end
/// (exclusive): the planned start of the next fault that starts later, or the run's
/// end. `None` for a fault never applied.
pub fn fault_window(
    f: &FaultRecord,
    all: &[FaultRecord],
    seconds: usize,
) -> Option<(usize, usize, usize)> {
    let start = f.applied_at_s? as usize;
    let planned = f.planned_at_s as usize;
    let heal = f
        .healed_at_s
        .map_or(seconds, |h| (h.ceil() as usize).min(seconds));
    let end = all
        .iter()
        .map(|g| g.planned_at_s as usize)
        .filter(|&s| s > planned)
        .min()
        .unwrap_or(seconds)
        .min(seconds);
    Some((start, heal, end))
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
        // A run cut short ends every phase with it, and leaves out what it never reached.
        assert_eq!(
            names(phases(&exp, 12)),
            [("baseline".into(), 0, 10), ("pause x".into(), 10, 12)]
        );
    }

    /// Every second of `[0, seconds)` is in exactly one phase, in order.
    fn assert_partition(p: &[Phase], seconds: usize) {
        let mut at = 0;
        for phase in p {
            assert_eq!(phase.start_s, at, "{p:?}");
            assert!(phase.end_s > phase.start_s, "{p:?}");
            at = phase.end_s;
        }
        assert_eq!(at, seconds, "{p:?}");
    }

    #[test]
    fn every_second_is_in_exactly_one_phase() {
        let exp = experiment(
            "[[faults]]\nat = \"5s\"\nduration = \"5s\"\nkind = \"pause\"\ntarget = \"a\"\n\
             [[faults]]\nat = \"8s\"\nkind = \"kill\"\ntarget = \"b\"\n\
             [[faults]]\nat = \"20s\"\nduration = \"2500ms\"\nkind = \"pause\"\ntarget = \"c\"\n\
             [[faults]]\nat = \"23s\"\nduration = \"1s\"\nkind = \"pause\"\ntarget = \"d\"\n",
        );
        let p = phases(&exp, 40);
        let named: Vec<(&str, PhaseKind, usize, usize)> = p
            .iter()
            .map(|p| (p.name.as_str(), p.kind, p.start_s, p.end_s))
            .collect();
        assert_eq!(
            named,
            [
                ("baseline", PhaseKind::Baseline, 0, 5),
                // The kill falls inside the pause: one phase for both.
                ("pause a + kill b", PhaseKind::Fault, 5, 10),
                // The gap between faults is the first one's recovery.
                ("recovery", PhaseKind::Recovery, 10, 20),
                // 20 s to 22.5 s takes its last second whole.
                ("pause c", PhaseKind::Fault, 20, 23),
                ("pause d", PhaseKind::Fault, 23, 24),
                ("recovery", PhaseKind::Recovery, 24, 40),
            ]
        );
        for seconds in 0..45 {
            assert_partition(&phases(&exp, seconds), seconds);
        }
        // Arbitrary timelines, overlapping or not, starting at 0 or not.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let mut spans: Vec<(usize, usize, &str)> = (0..rng.usize(0..6))
                .map(|_| {
                    let start = rng.usize(0..50);
                    (start, start + rng.usize(1..20), "f")
                })
                .collect();
            spans.sort_by_key(|s| s.0);
            let seconds = rng.usize(0..80);
            assert_partition(&partition(spans.into_iter(), seconds), seconds);
        }
    }

    fn record(label: &str, planned: f64, applied: f64, healed: f64) -> FaultRecord {
        FaultRecord {
            label: label.into(),
            kind: "pause".into(),
            target: "x".into(),
            planned_at_s: planned,
            planned_duration_s: Some(healed - planned),
            id: Some("f".into()),
            applied_at_s: Some(applied),
            healed_at_s: Some(healed),
            error: None,
        }
    }

    #[test]
    fn detection_and_recovery_stay_within_each_faults_window() {
        let exp = experiment(
            "[[faults]]\nat = \"10s\"\nduration = \"5s\"\nkind = \"pause\"\ntarget = \"a\"\n\
             [[faults]]\nat = \"25s\"\nduration = \"5s\"\nkind = \"pause\"\ntarget = \"b\"\n",
        );
        // The pause harms nothing; the kill breaks availability from 26 to 29 s.
        let mut series = vec![
            Counts {
                good: 100,
                total: 100
            };
            45
        ];
        for s in &mut series[26..29] {
            *s = Counts {
                good: 40,
                total: 100,
            };
        }
        let faults = [
            record("pause a", 10.0, 10.1, 15.1),
            record("kill b", 25.0, 25.1, 30.1),
        ];
        let w = Windows {
            short_s: 2,
            long_s: 24,
        };
        let p = phases(&exp, series.len());
        let r = slo_reports(&exp, &[series], &p, w, &faults);
        let f = &r[0].faults;
        assert_eq!(f.len(), 2);
        assert!(
            !f[0].breached,
            "the pause's window ends where the kill starts: {f:?}"
        );
        assert_eq!(
            (f[0].time_to_detect_s, f[0].time_to_recover_s),
            (None, None)
        );
        assert!(f[1].breached);
        assert_eq!(f[1].time_to_detect_s, Some(1));
        assert_eq!(
            f[1].time_to_recover_s,
            Some(0),
            "back within objective at the heal"
        );
        assert_eq!(fault_window(&faults[0], &faults, 45), Some((10, 16, 25)));
        assert_eq!(fault_window(&faults[1], &faults, 45), Some((25, 31, 45)));
        assert_eq!(r[0].verdict, Verdict::Missed);
    }
}
