//! The SLO engine: service level indicators over a run's per-second counts, error budgets,
//! burn rates over a short and a long window (the SRE workbook's method, windows scaled
//! to the run), figures per phase, time to detect and time to recover. It performs no
//! I/O and reads no clock: it is arithmetic over what the load engine counted.

pub mod rules;
pub mod spec;

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::load::stats::Stats;

pub use spec::{Objective, SliKind};

/// Good and total events of one SLI in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub good: u64,
    pub total: u64,
}

impl Counts {
    pub fn bad(&self) -> u64 {
        self.total - self.good
    }

    pub fn add(&mut self, other: Counts) {
        self.good += other.good;
        self.total += other.total;
    }

    /// The SLI: the good share, or `None` without events.
    pub fn ratio(&self) -> Option<f64> {
        (self.total > 0).then(|| self.good as f64 / self.total as f64)
    }
}

/// Whether an HTTP answer is good for availability: any answer below 500 (a 4xx is the
/// client's fault, not the system's). The one statement of the rule; requests without
/// an answer (errors, timeouts) are never good.
pub fn good_status(status: u16) -> bool {
    status < 500
}

/// The same rule as a PromQL regex over the `status` label: the statuses it counts bad.
pub const BAD_STATUS_PATTERN: &str = "5..";

/// Answers in `stats` that [`good_status`] calls good.
pub fn good_answers(stats: &Stats) -> u64 {
    stats
        .statuses
        .iter()
        .filter(|(s, _)| good_status(**s))
        .map(|(_, n)| n)
        .sum()
}

/// The counts an SLI takes from one interval's statistics. Availability: good is a
/// [`good_status`] answer that is not in `also_bad` (errors and timeouts are bad).
/// Latency: good is a request answered within the threshold (measured from its intended
/// send time).
pub fn counts(kind: &SliKind, stats: &Stats, also_bad: &[u16]) -> Counts {
    match kind {
        SliKind::Availability => {
            let total = stats.requests();
            let good = stats
                .statuses
                .iter()
                .filter(|(s, _)| good_status(**s) && !also_bad.contains(s))
                .map(|(_, n)| n)
                .sum();
            Counts { good, total }
        }
        SliKind::Latency { threshold } => {
            let total = stats.latency.len();
            // A threshold is at most a day (`limits::MAX_DURATION`), far within a u64.
            let us = u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX);
            let good = if total == 0 {
                0
            } else {
                stats.latency.count_between(0, us)
            };
            Counts { good, total }
        }
    }
}

/// Share of the error budget left after `all`: 1 untouched, 0 spent, negative when
/// overspent. An objective of 100% allows no bad event: its budget is whole without
/// one and minus infinity with any.
pub fn budget_remaining(all: Counts, objective: f64) -> f64 {
    let allowed_bad = (1.0 - objective) * all.total as f64;
    if allowed_bad > 0.0 {
        1.0 - all.bad() as f64 / allowed_bad
    } else if all.bad() == 0 {
        1.0
    } else {
        f64::NEG_INFINITY
    }
}

/// An error budget left, as every view writes it: `42%`, or `none` when the objective
/// allows no error and one happened. The alternate form (`{:#}`) says why:
/// `none (no errors allowed)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetLeft(pub f64);

impl std::fmt::Display for BudgetLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.is_finite(), f.alternate()) {
            (true, _) => f.pad(&format!("{:.0}%", self.0 * 100.0)),
            (false, false) => f.pad("none"),
            (false, true) => f.pad("none (no errors allowed)"),
        }
    }
}

/// The short and long windows of the burn-rate alerts. The SRE workbook pages on 14.4x
/// over 1 h and 5 min for a 30-day budget; a run of minutes keeps the 12:1 ratio with
/// windows scaled to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    pub short_s: u64,
    pub long_s: u64,
}

impl Windows {
    /// The long window is a sixth of the run (at least 12 s, at most 1 h); the short one
    /// a twelfth of that (at least 1 s).
    pub fn scaled(run: Duration) -> Self {
        let long = (run.as_secs() / 6).clamp(12, 3600);
        Windows {
            short_s: (long / 12).max(1),
            long_s: long,
        }
    }
}

/// A named stretch of the run, in seconds from its start: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub kind: PhaseKind,
    pub start_s: usize,
    pub end_s: usize,
}

/// What a phase is: before the first fault, while faults are in effect, or after them
/// until the next fault or the end of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    Baseline,
    Fault,
    Recovery,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseFigures {
    pub name: String,
    pub sli: Option<f64>,
    pub good: u64,
    pub total: u64,
    pub met: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub name: String,
    pub objective: f64,
    pub sli: Option<f64>,
    pub good: u64,
    pub total: u64,
    /// Share of the error budget left at the end (negative when overspent; minus
    /// infinity, `null` in JSON, when the objective allowed no error and one happened).
    #[serde(deserialize_with = "null_as_neg_infinity")]
    pub budget_remaining: f64,
    pub windows: Windows,
    /// Infinite (`null` in JSON) when the objective allows no error and one happened.
    #[serde(deserialize_with = "null_as_infinity")]
    pub max_short_burn: f64,
    #[serde(deserialize_with = "null_as_infinity")]
    pub max_long_burn: f64,
    /// Seconds where both windows burned faster than `page_burn` (the workbook's
    /// multi-window alert).
    pub alert_seconds: Vec<usize>,
    pub phases: Vec<PhaseFigures>,
    pub met: bool,
}

/// JSON has no infinities: serde_json writes them as `null`, and these read them back.
fn null_as_infinity<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

fn null_as_neg_infinity<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

/// The burn-rate factor of the fast page (14.4x: 2% of a 30-day budget in an hour).
pub const PAGE_BURN: f64 = 14.4;

fn window_sum(seconds: &[Counts], end: usize, len: u64) -> Counts {
    let start = (end + 1).saturating_sub(len as usize);
    let mut c = Counts::default();
    for s in &seconds[start..=end] {
        c.add(*s);
    }
    c
}

/// Burn rate of a window: its bad share over the allowed bad share.
pub fn burn(c: Counts, objective: f64) -> f64 {
    let allowed = 1.0 - objective;
    match c.ratio() {
        Some(r) if allowed > 0.0 => (1.0 - r) / allowed,
        Some(r) if r < 1.0 => f64::INFINITY,
        _ => 0.0,
    }
}

/// Evaluates one objective over a run's per-second counts.
pub fn evaluate(
    obj: &Objective,
    seconds: &[Counts],
    phases: &[Phase],
    windows: Windows,
) -> Evaluation {
    let mut all = Counts::default();
    for s in seconds {
        all.add(*s);
    }
    let budget_remaining = budget_remaining(all, obj.objective);
    let (mut max_short, mut max_long) = (0.0f64, 0.0f64);
    let mut alert_seconds = Vec::new();
    for t in 0..seconds.len() {
        let short = burn(window_sum(seconds, t, windows.short_s), obj.objective);
        let long = burn(window_sum(seconds, t, windows.long_s), obj.objective);
        max_short = max_short.max(short);
        max_long = max_long.max(long);
        if short > PAGE_BURN && long > PAGE_BURN {
            alert_seconds.push(t);
        }
    }
    let phases = phases
        .iter()
        .map(|p| {
            let mut c = Counts::default();
            for s in seconds
                .iter()
                .take(p.end_s.min(seconds.len()))
                .skip(p.start_s)
            {
                c.add(*s);
            }
            PhaseFigures {
                name: p.name.clone(),
                sli: c.ratio(),
                good: c.good,
                total: c.total,
                met: c.ratio().is_none_or(|r| r >= obj.objective),
            }
        })
        .collect();
    let sli = all.ratio();
    Evaluation {
        name: obj.name.clone(),
        objective: obj.objective,
        sli,
        good: all.good,
        total: all.total,
        budget_remaining,
        windows,
        max_short_burn: max_short,
        max_long_burn: max_long,
        alert_seconds,
        phases,
        met: sli.is_none_or(|s| s >= obj.objective),
    }
}

/// An objective as it stands after the seconds so far: what live views show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloNow {
    pub name: String,
    pub objective: f64,
    pub sli: Option<f64>,
    /// Share of the error budget left (negative when overspent).
    pub budget_remaining: f64,
    /// Burn rates over the last short and long windows.
    pub short_burn: f64,
    pub long_burn: f64,
    /// Both windows above the page factor (the workbook's multi-window alert).
    pub alerting: bool,
    /// The objective holds over the run so far.
    pub met: bool,
}

/// The state of an objective after `seconds`.
pub fn now(name: &str, objective: f64, seconds: &[Counts], windows: Windows) -> SloNow {
    let mut all = Counts::default();
    for s in seconds {
        all.add(*s);
    }
    let (short_burn, long_burn) = match seconds.len() {
        0 => (0.0, 0.0),
        n => (
            burn(window_sum(seconds, n - 1, windows.short_s), objective),
            burn(window_sum(seconds, n - 1, windows.long_s), objective),
        ),
    };
    let budget_remaining = budget_remaining(all, objective);
    SloNow {
        name: name.to_owned(),
        objective,
        sli: all.ratio(),
        budget_remaining,
        short_burn,
        long_burn,
        alerting: short_burn > PAGE_BURN && long_burn > PAGE_BURN,
        met: all.ratio().is_none_or(|r| r >= objective),
    }
}

/// What an SLO saw of one fault, within the fault's window: from its start until the
/// next fault starts (or the run ends), so that no fault is credited with another's
/// damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultEffect {
    /// The short-window SLI fell below the objective within the window.
    pub breached: bool,
    /// Seconds from the fault's start to the first second whose short window (counting
    /// only seconds of the window) is below the objective.
    pub time_to_detect_s: Option<usize>,
    /// Seconds from the heal until the per-second SLI is back within the objective and
    /// stays there for the settling time, within the window; `None` when it breached
    /// and did not recover before the window ended.
    pub time_to_recover_s: Option<usize>,
    /// Seconds of the window left from the heal.
    pub recovery_window_s: usize,
}

/// Time to detect and to recover from a fault applied at second `start`, healed at
/// `heal`, whose window ends at `end` (exclusive: the next fault's start, or the run's
/// end). `short` is the detection window, `settle` how long the SLI must stay within
/// the objective to count as recovered. Seconds without events count as within.
pub fn fault_effect(
    seconds: &[Counts],
    objective: f64,
    start: usize,
    heal: usize,
    end: usize,
    short: u64,
    settle: usize,
) -> FaultEffect {
    let end = end.min(seconds.len());
    let heal = heal.max(start);
    let mut effect = FaultEffect {
        breached: false,
        time_to_detect_s: None,
        time_to_recover_s: None,
        recovery_window_s: end.saturating_sub(heal),
    };
    let short = usize::try_from(short).unwrap_or(usize::MAX).max(1);
    let detected = (start..end).find(|&t| {
        let from = start.max((t + 1).saturating_sub(short));
        let mut c = Counts::default();
        for s in &seconds[from..=t] {
            c.add(*s);
        }
        c.ratio().is_some_and(|r| r < objective)
    });
    let Some(detected) = detected else {
        return effect;
    };
    effect.breached = true;
    effect.time_to_detect_s = Some(detected - start);
    let ok = |t: usize| seconds[t].ratio().is_none_or(|r| r >= objective);
    let settle = settle.max(1);
    effect.time_to_recover_s = (heal.max(detected)..end)
        .find(|&t| t + settle <= end && (t..t + settle).all(ok))
        .map(|t| t - heal);
    effect
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(objective: f64) -> Objective {
        Objective {
            name: "availability".into(),
            kind: SliKind::Availability,
            objective,
        }
    }

    #[test]
    fn budget_and_verdict() {
        // 10,000 requests at 99.9%: 10 bad allowed; 5 bad leaves half the budget.
        let mut s = vec![
            Counts {
                good: 1000,
                total: 1000
            };
            10
        ];
        s[3] = Counts {
            good: 995,
            total: 1000,
        };
        let e = evaluate(
            &obj(0.999),
            &s,
            &[],
            Windows {
                short_s: 1,
                long_s: 12,
            },
        );
        assert_eq!(e.total, 10_000);
        assert!(
            (e.budget_remaining - 0.5).abs() < 1e-9,
            "{}",
            e.budget_remaining
        );
        assert!(e.met);
        assert!((e.sli.unwrap() - 0.9995).abs() < 1e-12);
        // 20 bad overspends it.
        s[4] = Counts {
            good: 985,
            total: 1000,
        };
        let e = evaluate(
            &obj(0.999),
            &s,
            &[],
            Windows {
                short_s: 1,
                long_s: 12,
            },
        );
        assert!(
            (e.budget_remaining + 1.0).abs() < 1e-9,
            "{}",
            e.budget_remaining
        );
        assert!(!e.met);
    }

    #[test]
    fn burn_rates_over_both_windows_and_the_multi_window_alert() {
        // 60 good seconds, then seconds at 50% errors, against 99%: a burn of 50x.
        let good = Counts {
            good: 100,
            total: 100,
        };
        let bad = Counts {
            good: 50,
            total: 100,
        };
        let w = Windows {
            short_s: 2,
            long_s: 24,
        };
        let mut s = vec![good; 60];
        s.extend(vec![bad; 5]);
        let e = evaluate(&obj(0.99), &s, &[], w);
        assert!(
            (e.max_short_burn - 50.0).abs() < 1e-9,
            "{}",
            e.max_short_burn
        );
        // The long window at the end holds 5 bad seconds: 250 bad of 2400, 10.4x.
        assert!(
            (e.max_long_burn - 250.0 / 2400.0 / 0.01).abs() < 1e-9,
            "{}",
            e.max_long_burn
        );
        assert!(
            e.alert_seconds.is_empty(),
            "a 5 s blip does not page: the long window stays under 14.4x"
        );
        // Ten bad seconds: the long window passes 14.4x once it holds seven of them.
        s.extend(vec![bad; 5]);
        let e = evaluate(&obj(0.99), &s, &[], w);
        assert_eq!(e.alert_seconds, vec![66, 67, 68, 69]);
    }

    #[test]
    fn phases_detect_and_recover() {
        // Baseline 10 s, a fault from 10 to 20 (30% errors), recovery from 20 with two
        // bad seconds before it settles.
        let mut s = vec![
            Counts {
                good: 100,
                total: 100
            };
            10
        ];
        s.extend(vec![
            Counts {
                good: 70,
                total: 100
            };
            10
        ]);
        s.extend([
            Counts {
                good: 80,
                total: 100,
            },
            Counts {
                good: 95,
                total: 100,
            },
        ]);
        s.extend(vec![
            Counts {
                good: 100,
                total: 100
            };
            10
        ]);
        let phases = vec![
            Phase {
                name: "baseline".into(),
                kind: PhaseKind::Baseline,
                start_s: 0,
                end_s: 10,
            },
            Phase {
                name: "fault".into(),
                kind: PhaseKind::Fault,
                start_s: 10,
                end_s: 20,
            },
            Phase {
                name: "recovery".into(),
                kind: PhaseKind::Recovery,
                start_s: 20,
                end_s: 32,
            },
        ];
        let e = evaluate(
            &obj(0.99),
            &s,
            &phases,
            Windows {
                short_s: 1,
                long_s: 12,
            },
        );
        assert_eq!(e.phases[0].sli, Some(1.0));
        assert!(e.phases[0].met);
        assert!((e.phases[1].sli.unwrap() - 0.7).abs() < 1e-12);
        assert!(!e.phases[1].met);
        assert!(
            !e.phases[2].met,
            "the recovery phase holds the two bad seconds"
        );
        let effect = |start, heal, end, short, settle| {
            let e = fault_effect(&s, 0.99, start, heal, end, short, settle);
            (e.breached, e.time_to_detect_s, e.time_to_recover_s)
        };
        assert_eq!(effect(10, 20, 32, 1, 5), (true, Some(0), Some(2)));
        assert_eq!(
            effect(10, 20, 32, 5, 5),
            (true, Some(0), Some(2)),
            "any bad second breaks a window of good ones"
        );
        assert_eq!(
            effect(0, 5, 10, 1, 3),
            (false, None, None),
            "never broken within its window: nothing to detect or recover"
        );
        assert_eq!(
            effect(10, 20, 23, 1, 5),
            (true, Some(0), None),
            "not settled before the window ends"
        );
        assert_eq!(
            fault_effect(&s, 0.99, 10, 20, 23, 1, 5).recovery_window_s,
            3
        );
    }

    #[test]
    fn a_fault_is_judged_only_within_its_window() {
        let good = Counts {
            good: 100,
            total: 100,
        };
        let bad = Counts {
            good: 50,
            total: 100,
        };
        // A fault at 10 s healed at 15 s that does no harm, then another at 20 s that
        // does (bad from 22 to 25 s), in a run of 40 s.
        let mut s = vec![good; 40];
        for x in &mut s[22..25] {
            *x = bad;
        }
        // The first fault's window ends where the second starts: it broke nothing,
        // whatever came later (this used to read "detect 12 s / recover 10 s").
        let first = fault_effect(&s, 0.99, 10, 15, 20, 5, 3);
        assert!(!first.breached);
        assert_eq!(
            (first.time_to_detect_s, first.time_to_recover_s),
            (None, None)
        );
        let second = fault_effect(&s, 0.99, 20, 26, 40, 5, 3);
        assert_eq!(
            (
                second.breached,
                second.time_to_detect_s,
                second.time_to_recover_s
            ),
            (true, Some(2), Some(0))
        );
        // The short window counts only the fault's own seconds: damage just before the
        // fault (a previous fault's) is not detected at its first second.
        let mut s = vec![good; 30];
        s[9] = bad;
        let e = fault_effect(&s, 0.99, 10, 15, 30, 5, 3);
        assert!(!e.breached, "{e:?}");
        // Recovery is looked for after the breach: a breach after the heal is not
        // "recovered" before it happened.
        let mut s = vec![good; 30];
        for x in &mut s[18..21] {
            *x = bad;
        }
        let e = fault_effect(&s, 0.99, 10, 12, 30, 1, 3);
        assert_eq!(
            (e.time_to_detect_s, e.time_to_recover_s),
            (Some(8), Some(9))
        );
    }

    #[test]
    fn an_evaluation_reads_back_from_json_with_its_infinities() {
        // 100% allows no error: one spends an infinite budget at an infinite burn rate,
        // which JSON can only write as null.
        let s = [Counts { good: 9, total: 10 }];
        let w = Windows {
            short_s: 1,
            long_s: 12,
        };
        let e = evaluate(&obj(1.0), &s, &[], w);
        assert_eq!(e.budget_remaining, f64::NEG_INFINITY);
        assert_eq!(e.max_short_burn, f64::INFINITY);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""budget_remaining":null"#), "{json}");
        assert_eq!(serde_json::from_str::<Evaluation>(&json).unwrap(), e);
        assert_eq!(format!("{}", BudgetLeft(e.budget_remaining)), "none");
        assert_eq!(
            format!("{:#}", BudgetLeft(e.budget_remaining)),
            "none (no errors allowed)"
        );
        assert_eq!(format!("{:>5}", BudgetLeft(0.5)), "  50%");
    }

    #[test]
    fn windows_scale_with_the_run() {
        assert_eq!(
            Windows::scaled(Duration::from_secs(60)),
            Windows {
                short_s: 1,
                long_s: 12
            }
        );
        assert_eq!(
            Windows::scaled(Duration::from_secs(600)),
            Windows {
                short_s: 8,
                long_s: 100
            }
        );
        assert_eq!(
            Windows::scaled(Duration::from_secs(30 * 86400)),
            Windows {
                short_s: 300,
                long_s: 3600
            }
        );
    }

    #[test]
    fn latency_counts_come_from_the_histogram() {
        let mut st = Stats::default();
        for ms in [10u64, 20, 30, 250, 400] {
            st.latency.record(ms * 1000).unwrap();
            *st.statuses.entry(200).or_default() += 1;
        }
        let c = counts(
            &SliKind::Latency {
                threshold: Duration::from_millis(200),
            },
            &st,
            &[],
        );
        assert_eq!(c, Counts { good: 3, total: 5 });
        *st.statuses.entry(503).or_default() += 1;
        *st.errors
            .entry(crate::load::stats::ErrorKind::Timeout)
            .or_default() += 1;
        assert_eq!(
            counts(&SliKind::Availability, &st, &[]),
            Counts { good: 5, total: 7 }
        );
        // Being rate limited can count as an outage too.
        *st.statuses.entry(429).or_default() += 2;
        assert_eq!(
            counts(&SliKind::Availability, &st, &[429]),
            Counts { good: 5, total: 9 }
        );
    }
}
