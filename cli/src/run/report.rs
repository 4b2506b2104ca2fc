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
    /// The run stopped before its load: the steady state or a check before the load
    /// failed. Nothing was judged (exit code 2).
    NotStarted,
}

impl RunStatus {
    /// Whether the run ended before it could be the experiment the file describes: a
    /// setup problem (exit code 2), not a verdict on the hypothesis.
    pub fn is_setup_failure(self) -> bool {
        matches!(self, RunStatus::Error | RunStatus::NotStarted)
    }
}

/// An SLO's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// The run stopped before its load: there was nothing to judge.
    NotJudged,
}

impl Verdict {
    fn said(self) -> &'static str {
        match self {
            Verdict::Met => "✅ met",
            Verdict::Missed => "❌ missed",
            Verdict::NotJudged => "not judged",
        }
    }
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
    /// What each load worker made, when workers made the load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<crate::load::distributed::WorkerTotals>,
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
    /// `met` and `missed` follow `evaluation.met`; `not_judged` when the run stopped
    /// before its load (then `met` is false too).
    pub verdict: Verdict,
    pub step: Option<String>,
    /// Per fault (by label), within the fault's window (from its start until the next
    /// fault starts, or the run ends): seconds from its start to the first breach, and
    /// from its heal until the SLI is back within objective for a settling window.
    pub faults: Vec<SloFault>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloFault {
    pub fault: String,
    /// Whether the SLO broke within the fault's window; both times are `None` if not.
    #[serde(default)]
    pub breached: bool,
    pub time_to_detect_s: Option<usize>,
    /// `None` also when it broke and was not back before the window ended.
    pub time_to_recover_s: Option<usize>,
    /// The window's length from the heal: "not recovered within N s" says this N.
    #[serde(default)]
    pub recovery_window_s: usize,
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
            workers: summary.workers.clone(),
        }
    }
}

impl Report {
    /// The report of a run that never started its load (the steady state or a check
    /// before it failed): not started, its SLOs not judged.
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
                    met: false,
                    ..slo::evaluate(&s.objective, &[], &[], windows)
                },
                verdict: Verdict::NotJudged,
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
            status: RunStatus::NotStarted,
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
        let classname = format!("faultline.{}", self.experiment);
        let case = |name: String, ok: bool, message: String, kind: &str| {
            let status = if ok {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(message.clone());
                s.set_type(kind.to_owned());
                s
            };
            let mut c = TestCase::new(name, status);
            c.set_classname(classname.clone());
            c.set_system_out(message);
            c
        };
        if self.status != RunStatus::Completed {
            suite.add_test_case(case(
                "run completed".into(),
                false,
                format!("{}: {}", self.status_word(), self.failures.join("; ")),
                "run",
            ));
        }
        for s in &self.slos {
            let e = &s.evaluation;
            let name = format!("slo: {}", e.name);
            if s.verdict == Verdict::NotJudged {
                let mut status = TestCaseStatus::skipped();
                status.set_message("not judged: the run stopped before its load");
                let mut c = TestCase::new(name, status);
                c.set_classname(classname.clone());
                suite.add_test_case(c);
                continue;
            }
            let message = format!(
                "SLI {} against objective {}%; error budget left {:#}; max burn short {:.1}x long {:.1}x",
                e.sli
                    .map_or("none (no events)".into(), |v| format!("{:.4}%", v * 100.0)),
                e.objective * 100.0,
                BudgetLeft(e.budget_remaining),
                e.max_short_burn,
                e.max_long_burn
            );
            suite.add_test_case(case(name, e.met, message, "slo"));
        }
        for c in &self.checks {
            // A check that runs before and after the load is two cases, told apart by
            // when (the steady-state probes say it in their names already).
            let name = match &c.when {
                Some(w) if !c.name.starts_with("steady state") => {
                    format!("check {w}: {}", c.name)
                }
                _ => format!("check: {}", c.name),
            };
            let mut t = case(name, c.passed, c.detail.clone(), "check");
            t.set_time(std::time::Duration::from_secs_f64(c.duration_s.max(0.0)));
            if let Some(out) = &c.stdout {
                t.set_system_out(format!("{}\n--- stdout (tail) ---\n{out}", c.detail));
            }
            if let Some(err) = &c.stderr {
                t.set_system_err(err.clone());
            }
            suite.add_test_case(t);
        }
        for f in &self.faults {
            let ok = f.error.is_none();
            let message = match (&f.error, f.applied_at_s, f.healed_at_s) {
                (Some(e), _, _) => e.clone(),
                (None, Some(a), Some(h)) => format!("applied at {a:.1} s, healed at {h:.1} s"),
                (None, Some(a), None) => format!("applied at {a:.1} s"),
                (None, None, _) => "not reached".into(),
            };
            suite.add_test_case(case(format!("fault: {}", f.label), ok, message, "fault"));
        }
        report.add_test_suite(suite);
        report.to_string().expect("JUnit serialises")
    }

    /// The status as JSON writes it (`completed`, `not_started`, ...).
    fn status_word(&self) -> String {
        serde_json::to_value(self.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let verdict = if self.passed {
            "PASSED: the hypothesis held"
        } else if self.status == RunStatus::NotStarted {
            "NOT STARTED: the run stopped before its load, nothing was judged"
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
            self.status_word()
        );
        for f in &self.failures {
            let _ = writeln!(m, "- ❌ {}", inline(f));
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
        if !l.workers.is_empty() {
            let _ = writeln!(
                m,
                "| load worker | segment | iterations | requests | errors | dropped |"
            );
            let _ = writeln!(m, "|---|---|---|---|---|---|");
            for w in &l.workers {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {} | {} |",
                    cell(&w.url),
                    w.segment,
                    w.iterations,
                    w.requests,
                    w.errors,
                    w.dropped
                );
            }
            m.push('\n');
        }
        self.markdown_slos(&mut m);
        self.markdown_faults(&mut m);
        self.markdown_scalings(&mut m);
        self.markdown_checks(&mut m);
        m
    }

    /// The scalings of the run (`faultline scale`, the autoscaler), from its events.
    fn markdown_scalings(&self, m: &mut String) {
        let scalings: Vec<_> = self
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                super::events::EventKind::Scaled {
                    service,
                    from,
                    to,
                    by,
                } => Some((e.t_s, service, from, to, by)),
                _ => None,
            })
            .collect();
        if scalings.is_empty() {
            return;
        }
        m.push_str("### Scalings\n\n| at | service | from | to | by |\n|---|---|---|---|---|\n");
        for (t, service, from, to, by) in scalings {
            let _ = writeln!(
                m,
                "| {t:.1} s | {} | {from} | {to} | {} |",
                cell(service),
                cell(by)
            );
        }
        m.push('\n');
    }

    fn markdown_slos(&self, m: &mut String) {
        if self.slos.is_empty() {
            return;
        }
        m.push_str("### SLOs\n\n| SLO | objective | SLI | budget left | max burn (short / long) | verdict |\n|---|---|---|---|---|---|\n");
        for s in &self.slos {
            let e = &s.evaluation;
            if s.verdict == Verdict::NotJudged {
                let _ = writeln!(
                    m,
                    "| {} | {}% | - | - | - | {} |",
                    cell(&e.name),
                    e.objective * 100.0,
                    s.verdict.said()
                );
                continue;
            }
            let _ = writeln!(
                m,
                "| {} | {}% | {} | {:#} | {:.1}x / {:.1}x | {} |",
                cell(&e.name),
                e.objective * 100.0,
                e.sli.map_or("-".into(), |v| format!("{:.3}%", v * 100.0)),
                BudgetLeft(e.budget_remaining),
                e.max_short_burn,
                e.max_long_burn,
                s.verdict.said()
            );
        }
        m.push('\n');
        if self.phases.is_empty() {
            return;
        }
        m.push_str("### Per phase\n\n| phase | from | to |");
        for s in &self.slos {
            let _ = write!(m, " {} |", cell(&s.evaluation.name));
        }
        m.push_str("\n|---|---|---|");
        for _ in &self.slos {
            m.push_str("---|");
        }
        m.push('\n');
        for (i, p) in self.phases.iter().enumerate() {
            let _ = write!(m, "| {} | {} s | {} s |", cell(&p.name), p.start_s, p.end_s);
            for s in &self.slos {
                let Some(f) = s.evaluation.phases.get(i) else {
                    m.push_str(" - |");
                    continue;
                };
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
        for (i, f) in self.faults.iter().enumerate() {
            let dr: Vec<String> = self
                .slos
                .iter()
                .filter_map(|s| {
                    let x = s.faults.get(i).filter(|x| x.fault == f.label)?;
                    Some(format!("{}: {}", s.evaluation.name, detect_recover(x)))
                })
                .collect();
            let _ = writeln!(
                m,
                "| {} | {:.0} s{} | {} | {} | {} |",
                cell(&f.label),
                f.planned_at_s,
                f.planned_duration_s
                    .map_or(String::new(), |d| format!(" for {d:.0} s")),
                cell(
                    &f.applied_at_s
                        .map_or(f.error.clone().unwrap_or("-".into()), |v| format!(
                            "{v:.1} s"
                        ))
                ),
                f.healed_at_s.map_or("-".into(), |v| format!("{v:.1} s")),
                cell(&dr.join("; "))
            );
        }
        m.push('\n');
    }

    fn markdown_checks(&self, m: &mut String) {
        if self.checks.is_empty() {
            return;
        }
        m.push_str(
            "### Checks\n\n| check | when | result | time | detail |\n|---|---|---|---|---|\n",
        );
        for c in &self.checks {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {:.1} s | {} |",
                cell(&c.name),
                c.when.as_deref().unwrap_or("after"),
                if c.passed { "✅ passed" } else { "❌ failed" },
                c.duration_s,
                cell(&c.detail)
            );
        }
        m.push('\n');
        for c in self.checks.iter().filter(|c| !c.passed) {
            for (stream, text) in [("stdout", &c.stdout), ("stderr", &c.stderr)] {
                if let Some(text) = text {
                    let _ = writeln!(
                        m,
                        "`{}` {stream} (its end):\n",
                        inline(&c.name).replace('`', "'")
                    );
                    let _ = writeln!(m, "{}\n", fenced(text));
                }
            }
        }
    }
}

/// "detect 2 s / recover 5 s"; "-" for both when the SLO never broke within the fault's
/// window, "not within N s" when it broke and was not back before the window ended.
fn detect_recover(x: &SloFault) -> String {
    if !x.breached {
        return "- / -".into();
    }
    format!(
        "{} / {}",
        x.time_to_detect_s.map_or("-".into(), |v| format!("{v} s")),
        x.time_to_recover_s.map_or_else(
            || format!("not within {} s", x.recovery_window_s),
            |v| format!("{v} s")
        )
    )
}

/// Text as one Markdown table cell: a `|` cannot end the cell, a line break cannot end
/// the row, and HTML in it shows as text.
pub fn cell(text: &str) -> String {
    inline(text).replace('|', "\\|")
}

/// Text on one Markdown line: line breaks become `<br>`, `<`, `>` and `&` show as
/// themselves.
fn inline(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    escaped
        .replace("\r\n", "\n")
        .trim_end_matches('\n')
        .replace(['\n', '\r'], "<br>")
}

/// Text in a fenced code block whose fence no backtick run inside can close.
fn fenced(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}\n{}\n{fence}", text.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::experiment::{Overrides, parse};
    use crate::slo::{Phase, PhaseKind};

    fn experiment() -> Experiment {
        let text = "name = \"t\"\nduration = \"10s\"\n[target]\nurl = \"http://127.0.0.1:1\"\n[load]\nrate = 1\n[[load.flows]]\nname = \"f\"\nsteps = [{ name = \"s\", path = \"/\" }]\n[[slo]]\nname = \"a | b\"\nobjective = \"availability>=99\"\n";
        parse("t.toml", text, Path::new("."), &Overrides::default()).unwrap()
    }

    fn failed_check() -> CheckResult {
        CheckResult {
            when: Some("before".into()),
            stderr: Some("line 1\n``` not a fence end\n".into()),
            ..CheckResult::new(
                "GET /x | y".into(),
                false,
                "expected status 200, found status 503 with `<html>a|b\nc</html>`".into(),
            )
        }
    }

    #[test]
    fn a_run_stopped_before_its_load_judges_no_slo_in_any_format() {
        let exp = experiment();
        let w = Windows::scaled(exp.duration);
        let r = Report::not_started(
            &exp,
            "x",
            0,
            vec!["check `x`: no".into()],
            vec![failed_check()],
            w,
        );
        assert_eq!(r.status, RunStatus::NotStarted);
        assert!(r.status.is_setup_failure() && !r.passed);
        assert_eq!(r.slos[0].verdict, Verdict::NotJudged);
        assert!(!r.slos[0].evaluation.met);
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["status"], "not_started");
        assert_eq!(json["slos"][0]["verdict"], "not_judged");
        assert_eq!(json["slos"][0]["met"], false);
        let back: Report = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(back, r);
        let md = r.markdown();
        assert!(md.contains("NOT STARTED"), "{md}");
        assert!(
            md.contains("| a \\| b | 99% | - | - | - | not judged |"),
            "{md}"
        );
        assert!(!md.contains("met"), "{md}");
        let xml = r.junit();
        assert!(xml.contains(r#"<testcase name="slo: a | b""#), "{xml}");
        assert!(
            xml.contains("<skipped message=\"not judged: the run stopped before its load\""),
            "{xml}"
        );
        assert!(xml.contains("not_started: check `x`: no"), "{xml}");
    }

    /// Splits a Markdown table row into cells the way GitHub does: on `|` not escaped.
    fn cells(row: &str) -> usize {
        let mut n = 0;
        let mut escaped = false;
        for c in row.chars() {
            match c {
                '\\' if !escaped => escaped = true,
                '|' if !escaped => n += 1,
                _ => escaped = false,
            }
        }
        n - 1
    }

    #[test]
    fn labels_and_details_never_break_a_table() {
        let exp = experiment();
        let w = Windows::scaled(exp.duration);
        let mut r = Report::not_started(&exp, "x", 0, vec![], vec![failed_check()], w);
        r.phases = vec![Phase {
            name: "partition app | redis".into(),
            kind: PhaseKind::Fault,
            start_s: 0,
            end_s: 1,
        }];
        r.slos[0].verdict = Verdict::Met;
        r.slos[0].evaluation.phases =
            crate::slo::evaluate(&exp.slos[0].objective, &[], &r.phases, w).phases;
        r.faults = vec![FaultRecord {
            label: "partition app | redis".into(),
            kind: "partition".into(),
            target: "app".into(),
            planned_at_s: 0.0,
            planned_duration_s: Some(1.0),
            id: None,
            applied_at_s: None,
            healed_at_s: None,
            error: Some("cannot apply:\nno | such".into()),
        }];
        r.slos[0].faults = vec![SloFault {
            fault: "partition app | redis".into(),
            breached: false,
            time_to_detect_s: None,
            time_to_recover_s: None,
            recovery_window_s: 0,
        }];
        let md = r.markdown();
        let mut tables = 0;
        let mut width = None;
        for line in md.lines() {
            if line.starts_with('|') {
                let n = cells(line);
                assert_eq!(
                    *width.get_or_insert(n),
                    n,
                    "a row of another width: {line}\n{md}"
                );
            } else {
                if width.is_some() {
                    tables += 1;
                }
                width = None;
            }
        }
        assert_eq!(tables, 4, "SLOs, per phase, faults, checks:\n{md}");
        assert!(md.contains("&lt;html&gt;a\\|b<br>c&lt;/html&gt;"), "{md}");
        assert!(md.contains("| partition app \\| redis | 0 s for 1 s | cannot apply:<br>no \\| such | - | a \\| b: - / - |"), "{md}");
        // The stderr tail sits in a fence its own backticks cannot close.
        assert!(
            md.contains("````\nline 1\n``` not a fence end\n````"),
            "{md}"
        );
    }

    #[test]
    fn detect_and_recover_say_what_happened() {
        let f = |breached, d, r| SloFault {
            fault: "f".into(),
            breached,
            time_to_detect_s: d,
            time_to_recover_s: r,
            recovery_window_s: 12,
        };
        assert_eq!(detect_recover(&f(false, None, None)), "- / -");
        assert_eq!(detect_recover(&f(true, Some(2), Some(5))), "2 s / 5 s");
        assert_eq!(
            detect_recover(&f(true, Some(2), None)),
            "2 s / not within 12 s"
        );
    }
}
