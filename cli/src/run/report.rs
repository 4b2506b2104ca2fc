//! The run's report and its three renderings: JSON (complete), JUnit XML (one test case
//! per SLO, check and fault), Markdown (a summary fit for a CI step summary).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::checks::CheckResult;
use super::events::Event;
use super::timeline::FaultRecord;
use crate::experiment::{Experiment, LoadModel};
use crate::load::Summary;
use crate::load::stats::{ErrorKind, Percentiles, Stats};
use crate::slo::{self, BudgetLeft, Evaluation, Phase, Windows};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The load ran its whole duration.
    Completed,
    /// An abort guard tripped.
    Aborted,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// A fault could not be applied: the run was not the experiment the file describes.
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTotals {
    pub name: String,
    pub requests: u64,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub latency_ms: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadTotals {
    pub model: String,
    pub iterations: u64,
    pub requests: u64,
    /// Iterations that could not start (the in-flight bound was reached).
    pub dropped: u64,
    pub requests_per_s: f64,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// From the intended send time (the SLO figure).
    pub latency_ms: Percentiles,
    /// From the actual send time.
    pub service_time_ms: Percentiles,
    /// How late the generator sent (its own bottleneck when it grows).
    pub scheduler_lag_ms: Percentiles,
    pub steps: Vec<StepTotals>,
    /// Acknowledged values the steps recorded, by name: counts only (the values are in
    /// the checks when they matter).
    pub recorded: BTreeMap<String, usize>,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub t: usize,
    pub requests: u64,
    /// Answers below 500.
    pub ok: u64,
    /// 5xx answers and requests without an answer.
    pub errors: u64,
    pub dropped: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The SLIs of this second, by SLO name (absent without events).
    pub sli: BTreeMap<String, f64>,
}

/// An SLO's verdict with what it says about each fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloReport {
    #[serde(flatten)]
    pub evaluation: Evaluation,
    pub step: Option<String>,
    /// Per fault (by label): seconds from its start to the first breach, and from its
    /// heal until the SLI is back within objective for a settling window.
    pub faults: Vec<SloFault>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloFault {
    pub fault: String,
    pub time_to_detect_s: Option<usize>,
    pub time_to_recover_s: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub experiment: String,
    pub description: String,
    pub file: String,
    pub seed: u64,
    /// Unix milliseconds.
    pub started_ms: u64,
    pub planned_duration_s: f64,
    pub elapsed_s: f64,
    pub target: String,
    pub status: RunStatus,
    /// Why the hypothesis did not hold (empty when it did).
    pub failures: Vec<String>,
    pub passed: bool,
    pub load: LoadTotals,
    pub phases: Vec<Phase>,
    pub faults: Vec<FaultRecord>,
    pub slos: Vec<SloReport>,
    pub checks: Vec<CheckResult>,
    pub events: Vec<Event>,
    pub seconds: Vec<Second>,
}

impl StepTotals {
    fn of(name: &str, s: &Stats) -> Self {
        StepTotals {
            name: name.to_owned(),
            requests: s.requests(),
            statuses: statuses(s),
            errors: s.errors.clone(),
            latency_ms: Percentiles::of(&s.latency),
        }
    }
}

fn statuses(s: &Stats) -> BTreeMap<String, u64> {
    s.statuses
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect()
}

impl LoadTotals {
    /// What the load engine counted over the whole run.
    pub fn of(exp: &Experiment, summary: &Summary) -> Self {
        let secs = summary.elapsed.as_secs_f64().max(1e-9);
        let model = match &exp.load.model {
            LoadModel::Open { schedule, .. } => format!(
                "open, {:.0} iterations planned, {} connections",
                schedule.total(),
                exp.load.users
            ),
            LoadModel::Closed { think } => format!(
                "closed, {} users, think {}",
                exp.load.users,
                humantime::format_duration(*think)
            ),
        };
        let steps = exp.load.flows.steps.iter().zip(summary.steps.iter());
        LoadTotals {
            model,
            iterations: summary.iterations,
            requests: summary.stats.requests(),
            dropped: summary.dropped,
            requests_per_s: summary.stats.requests() as f64 / secs,
            statuses: statuses(&summary.stats),
            errors: summary.stats.errors.clone(),
            latency_ms: Percentiles::of(&summary.stats.latency),
            service_time_ms: Percentiles::of(&summary.stats.service),
            scheduler_lag_ms: Percentiles::of(&summary.stats.lag),
            steps: steps
                .map(|(step, s)| StepTotals::of(&step.name, s))
                .collect(),
            recorded: summary
                .history
                .iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect(),
        }
    }
}

impl Report {
    /// The report of a run that never started its load (the steady state did not hold
    /// before it): aborted, judged on nothing.
    pub fn not_started(
        exp: &Experiment,
        target: &str,
        started_ms: u64,
        failures: Vec<String>,
        checks: Vec<CheckResult>,
        windows: Windows,
    ) -> Report {
        let slos = exp
            .slos
            .iter()
            .map(|s| SloReport {
                evaluation: Evaluation {
                    name: s.name.clone(),
                    ..slo::evaluate(&s.objective, &[], &[], windows)
                },
                step: s.step.map(|i| exp.load.flows.steps[i].name.clone()),
                faults: Vec::new(),
            })
            .collect();
        Report {
            experiment: exp.name.clone(),
            description: exp.description.clone(),
            file: exp.file.clone(),
            seed: exp.seed,
            started_ms,
            planned_duration_s: exp.duration.as_secs_f64(),
            elapsed_s: 0.0,
            target: target.to_owned(),
            status: RunStatus::Aborted,
            passed: false,
            failures,
            load: LoadTotals::of(exp, &Summary::default()),
            phases: Vec::new(),
            faults: Vec::new(),
            slos,
            checks,
            events: Vec::new(),
            seconds: Vec::new(),
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }

    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
        let mut report = JReport::new(format!("faultline: {}", self.experiment));
        let mut suite = TestSuite::new(self.experiment.clone());
        suite.set_time(std::time::Duration::from_secs_f64(self.elapsed_s));
        let mut case = |name: String, ok: bool, message: String, kind: &str| {
            let status = if ok {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(message.clone());
                s.set_type(kind.to_owned());
                s
            };
            let mut c = TestCase::new(name, status);
            c.set_classname(format!("faultline.{}", self.experiment));
            c.set_system_out(message);
            suite.add_test_case(c);
        };
        if self.status != RunStatus::Completed {
            case(
                "run completed".into(),
                false,
                format!("{:?}: {}", self.status, self.failures.join("; ")),
                "run",
            );
        }
        for s in &self.slos {
            let e = &s.evaluation;
            let message = format!(
                "SLI {} against objective {}%; error budget left {:#}; max burn short {:.1}x long {:.1}x",
                e.sli
                    .map_or("none (no events)".into(), |v| format!("{:.4}%", v * 100.0)),
                e.objective * 100.0,
                BudgetLeft(e.budget_remaining),
                e.max_short_burn,
                e.max_long_burn
            );
            case(format!("slo: {}", e.name), e.met, message, "slo");
        }
        for c in &self.checks {
            case(
                format!("check: {}", c.name),
                c.passed,
                c.detail.clone(),
                "check",
            );
        }
        for f in &self.faults {
            let ok = f.error.is_none();
            let message = match (&f.error, f.applied_at_s, f.healed_at_s) {
                (Some(e), _, _) => e.clone(),
                (None, Some(a), Some(h)) => format!("applied at {a:.1} s, healed at {h:.1} s"),
                (None, Some(a), None) => format!("applied at {a:.1} s"),
                (None, None, _) => "not reached".into(),
            };
            case(format!("fault: {}", f.label), ok, message, "fault");
        }
        report.add_test_suite(suite);
        report.to_string().expect("JUnit serialises")
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let verdict = if self.passed {
            "PASSED: the hypothesis held"
        } else {
            "FAILED: the hypothesis did not hold"
        };
        let _ = writeln!(m, "## faultline: {} — {verdict}\n", self.experiment);
        if !self.description.is_empty() {
            let _ = writeln!(m, "{}\n", self.description);
        }
        let _ = writeln!(
            m,
            "Target {}, seed {}, {:.0} s of {:.0} s planned, status **{}**.\n",
            self.target,
            self.seed,
            self.elapsed_s,
            self.planned_duration_s,
            serde_json::to_value(self.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
        for f in &self.failures {
            let _ = writeln!(m, "- ❌ {f}");
        }
        if !self.failures.is_empty() {
            m.push('\n');
        }
        let l = &self.load;
        let _ = writeln!(
            m,
            "**Load** ({}): {} iterations, {} requests ({:.1}/s), {} dropped; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.\n",
            l.model,
            l.iterations,
            l.requests,
            l.requests_per_s,
            l.dropped,
            l.latency_ms.p50,
            l.latency_ms.p99,
            l.latency_ms.max
        );
        self.markdown_slos(&mut m);
        self.markdown_faults(&mut m);
        self.markdown_checks(&mut m);
        m
    }

    fn markdown_slos(&self, m: &mut String) {
        if self.slos.is_empty() {
            return;
        }
        m.push_str("### SLOs\n\n| SLO | objective | SLI | budget left | max burn (short / long) | verdict |\n|---|---|---|---|---|---|\n");
        for s in &self.slos {
            let e = &s.evaluation;
            let _ = writeln!(
                m,
                "| {} | {}% | {} | {:#} | {:.1}x / {:.1}x | {} |",
                e.name,
                e.objective * 100.0,
                e.sli.map_or("-".into(), |v| format!("{:.3}%", v * 100.0)),
                BudgetLeft(e.budget_remaining),
                e.max_short_burn,
                e.max_long_burn,
                if e.met { "✅ met" } else { "❌ missed" }
            );
        }
        m.push('\n');
        m.push_str("### Per phase\n\n| phase | from | to |");
        for s in &self.slos {
            let _ = write!(m, " {} |", s.evaluation.name);
        }
        m.push_str("\n|---|---|---|");
        for _ in &self.slos {
            m.push_str("---|");
        }
        m.push('\n');
        for (i, p) in self.phases.iter().enumerate() {
            let _ = write!(m, "| {} | {} s | {} s |", p.name, p.start_s, p.end_s);
            for s in &self.slos {
                let f = &s.evaluation.phases[i];
                let _ = write!(
                    m,
                    " {}{} |",
                    f.sli.map_or("-".into(), |v| format!("{:.2}%", v * 100.0)),
                    if f.met { "" } else { " ❌" }
                );
            }
            m.push('\n');
        }
        m.push('\n');
    }

    fn markdown_faults(&self, m: &mut String) {
        if self.faults.is_empty() {
            return;
        }
        m.push_str("### Faults\n\n| fault | planned | applied | healed | detect / recover |\n|---|---|---|---|---|\n");
        for f in &self.faults {
            let dr: Vec<String> = self
                .slos
                .iter()
                .filter_map(|s| {
                    let x = s.faults.iter().find(|x| x.fault == f.label)?;
                    Some(format!(
                        "{}: {} / {}",
                        s.evaluation.name,
                        x.time_to_detect_s.map_or("-".into(), |v| format!("{v} s")),
                        x.time_to_recover_s.map_or("-".into(), |v| format!("{v} s"))
                    ))
                })
                .collect();
            let _ = writeln!(
                m,
                "| {} | {:.0} s{} | {} | {} | {} |",
                f.label,
                f.planned_at_s,
                f.planned_duration_s
                    .map_or(String::new(), |d| format!(" for {d:.0} s")),
                f.applied_at_s
                    .map_or(f.error.clone().unwrap_or("-".into()), |v| format!(
                        "{v:.1} s"
                    )),
                f.healed_at_s.map_or("-".into(), |v| format!("{v:.1} s")),
                dr.join("; ")
            );
        }
        m.push('\n');
    }

    fn markdown_checks(&self, m: &mut String) {
        if self.checks.is_empty() {
            return;
        }
        m.push_str("### Checks\n\n| check | result | detail |\n|---|---|---|\n");
        for c in &self.checks {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                c.name,
                if c.passed { "✅ passed" } else { "❌ failed" },
                c.detail.replace('|', "\\|")
            );
        }
        m.push('\n');
    }
}
