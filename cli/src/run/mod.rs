//! The gameday runner. A run follows its data flow:
//!
//! - [`target`]: bring the system up (the bundled shop under an embedded agent, any
//!   topology, or a running system and agent);
//! - [`timeline`]: apply, renew and heal the faults through the agent;
//! - [`observe`]: look at the system every second (replicas, faults, queues, breakers);
//! - [`collect`]: fold the load engine's snapshots into per-second SLO counts and rows
//!   (shared with `faultline load`), [`state`] the live view of it all, [`progress`]
//!   the plain lines when there is no live view, [`events`] what happened;
//! - [`checks`]: before the load, the steady state and the generic checks (a failure
//!   stops the run there); after it, drain the queues, the shop's invariants
//!   ([`crate::shop::invariants`]), the steady state and the generic checks again;
//!   [`check_http`] and [`check_command`] carry out one HTTP or command check;
//! - [`judge`]: abort guards while it runs, then each SLO per phase and per fault;
//! - [`report`]: the report and its JSON, JUnit and Markdown forms.
//!
//! This module wires them: it runs the load and the timeline together, watches the
//! abort guards and signals, heals everything on completion, abort, Ctrl-C or SIGTERM,
//! then checks and judges.

pub mod check_command;
pub mod check_http;
pub mod checks;
pub mod collect;
mod error;
pub mod events;
pub mod judge;
pub mod observe;
pub mod progress;
pub mod report;
pub mod state;
pub mod target;
pub mod timeline;

use std::sync::Arc;
use std::time::Duration;

use faultline_agent::report::StopSignals;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use self::error::RunError;

use self::checks::CheckResult;
use self::collect::Collector;
use self::events::{EventKind, Events};
use self::judge::Guards;
use self::observe::Observer;
use self::progress::Progress;
use self::report::{LoadTotals, Report, RunStatus};
use self::state::{RunState, Stage};
use self::target::Target;
use self::timeline::FaultRecord;
use crate::experiment::{Experiment, LoadModel, Planned};
use crate::fleet::Part;
use crate::load::client::Endpoint;
use crate::load::distributed::{Plan, Workers};
use crate::load::{Snapshot, Summary};
use crate::metrics::Metrics;
use crate::slo::Windows;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub agent_token: Option<String>,
    /// Print a progress line this often (stderr).
    pub progress_every: Option<Duration>,
    /// A live view renders the run: print nothing to stderr.
    pub quiet: bool,
    /// Where the run's state goes every second (the TUI).
    pub live: Option<tokio::sync::watch::Sender<RunState>>,
    /// Stops the run like Ctrl-C does (the TUI's q).
    pub interrupt: Option<CancellationToken>,
    /// Where the run's own `/metrics` listens (default 127.0.0.1, a free port).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Runs the system it starts on this runtime (`--runtime`).
    pub runtime: Option<faultline_agent::topology::RuntimeKind>,
    /// Bearer token of the load workers.
    pub worker_token: Option<String>,
    /// How long to wait for each load worker to answer before the run.
    pub workers_wait: Duration,
}

/// Runs the experiment. `Err` is a setup error (exit code 2): nothing was judged.
pub async fn execute(exp: &Experiment, opts: &Options) -> Result<Report, RunError> {
    let target = Target::bring_up(exp, opts).await?;
    let result = match target.make_proxies(exp, opts.quiet).await {
        Ok(made) => {
            let result = run_on(exp, opts, &target).await;
            target.remove_proxies(&made).await;
            result
        }
        Err(e) => Err(e),
    };
    target.shut_down(opts.quiet).await;
    result
}

async fn run_on(exp: &Experiment, opts: &Options, target: &Target) -> Result<Report, RunError> {
    invariants_supported(exp, target).await?;
    let plan = target.plan(exp).await?;
    let mut run = Run::set_up(exp, opts, target).await?;
    // Before the load: a system that is not healthy to begin with says nothing about
    // faults, so the run stops here, judging nothing.
    let mut checks = checks::before(exp, target, &run.http).await;
    let failures: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("check before the load `{}`: {}", c.name, c.detail))
        .collect();
    if !failures.is_empty() {
        let (started, windows) = (run.started_ms, run.windows);
        return Ok(Report::not_started(
            exp,
            &target.label,
            started,
            failures,
            checks,
            windows,
        ));
    }
    let mut driven = run.drive(plan).await?;
    if driven.status != RunStatus::Interrupted {
        let history = &driven.summary.history;
        checks.extend(checks::after(exp, target, &run.http, history, opts.quiet).await);
    }
    for c in &checks {
        if !c.passed && !driven.failures.iter().any(|f| f.starts_with(&c.name)) {
            driven.failures.push(format!("{}: {}", c.name, c.detail));
        }
    }
    Ok(run.judge(driven, checks).await)
}

/// `[checks] invariants` on a running agent: its topology must have what the shop's
/// checker reads (a topology the run starts was checked with the file), or nothing
/// starts.
async fn invariants_supported(exp: &Experiment, target: &Target) -> Result<(), RunError> {
    let (true, Some(agent), None) = (exp.checks.invariants, &target.agent, &target.embedded) else {
        return Ok(());
    };
    let status = agent
        .status()
        .await
        .map_err(|source| RunError::AgentUnreachable {
            url: agent.url().to_owned(),
            source,
        })?;
    let mut services: Vec<&str> = status.replicas.iter().map(|r| r.service.as_str()).collect();
    services.dedup();
    crate::shop::invariants::supported_by_parts(
        &status.topology,
        &services,
        status.messaging.is_some(),
    )
    .map_err(RunError::Unsupported)
}

/// What a run's parts share while it runs.
struct Run<'a> {
    exp: &'a Experiment,
    opts: &'a Options,
    target: &'a Target,
    http: reqwest::Client,
    endpoint: Endpoint,
    events: Events,
    observer: Observer,
    metrics: Arc<Metrics>,
    _stop_metrics: DropGuard,
    state: RunState,
    windows: Windows,
    started_ms: u64,
    /// The scalings already made events, by service and time.
    scalings_seen: std::collections::BTreeSet<(String, u64)>,
}

/// What the load and the timeline left behind.
struct Driven {
    summary: Summary,
    faults: Vec<FaultRecord>,
    status: RunStatus,
    failures: Vec<String>,
    collector: Collector,
    elapsed: Duration,
}

impl<'a> Run<'a> {
    async fn set_up(
        exp: &'a Experiment,
        opts: &'a Options,
        target: &'a Target,
    ) -> Result<Self, RunError> {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(RunError::HttpClient)?;
        let endpoint = target::endpoint(&target.base, exp.load.timeout).await?;
        let observer = Observer::spawn_fleet(target.fleet.clone(), http.clone());
        let (metrics, stop_metrics) = target.serve_metrics(opts).await?;
        let state = RunState {
            experiment: exp.name.clone(),
            seed: exp.seed,
            target: target.label.clone(),
            duration_s: exp.duration.as_secs_f64(),
            agent_url: target.agent.as_ref().map(|a| a.url().to_owned()),
            agents: target.fleet.several(),
            ..RunState::default()
        };
        let run = Run {
            exp,
            opts,
            target,
            http,
            endpoint,
            events: Events::new(opts.quiet),
            observer,
            metrics,
            _stop_metrics: stop_metrics,
            state,
            windows: Windows::scaled(exp.duration),
            started_ms,
            scalings_seen: Default::default(),
        };
        run.publish();
        Ok(run)
    }

    fn publish(&self) {
        if let Some(tx) = &self.opts.live {
            tx.send_replace(self.state.clone());
        }
    }

    fn say(&self, line: impl std::fmt::Display) {
        if !self.opts.quiet {
            eprintln!("{line}");
        }
    }

    /// Brings the live state up to date (the seconds are followed as they come) and
    /// publishes it.
    fn refresh(&mut self, t0: Instant) {
        let t = t0.elapsed();
        self.state.elapsed_s = t.as_secs_f64().min(self.exp.duration.as_secs_f64());
        self.state.target_rate = match &self.exp.load.model {
            LoadModel::Open { schedule, .. } => Some(schedule.rate_at(t)),
            LoadModel::Closed { .. } => None,
        };
        let observed = self.observer.latest();
        self.note_scalings(&observed, t.as_secs_f64());
        self.state.follow_events(self.events.snapshot());
        self.state.see(observed);
        self.metrics.set_faults(&self.state.faults);
        self.publish();
    }

    /// An event for every scaling the agents made since the run started that no event
    /// tells of yet (seen within a second of it).
    fn note_scalings(&mut self, observed: &observe::Observed, t_s: f64) {
        for s in &observed.scalings {
            let key = (s.service.clone(), s.at_ms);
            if s.at_ms < self.started_ms || !self.scalings_seen.insert(key) {
                continue;
            }
            let message = format!(
                "scaled {} from {} to {} replicas ({})",
                s.service, s.from, s.to, s.by
            );
            let kind = EventKind::Scaled {
                service: s.service.clone(),
                from: s.from,
                to: s.to,
                by: s.by.clone(),
            };
            self.events.push(t_s, kind, message);
        }
    }

    /// Runs the load and the fault timeline until the load ends, a guard trips, a fault
    /// cannot be applied or a signal comes; every fault is healed when it returns.
    async fn drive(&mut self, faults: Vec<(Planned, Vec<Part>)>) -> Result<Driven, RunError> {
        let exp = self.exp;
        let (stop, fault_failed) = (CancellationToken::new(), CancellationToken::new());
        // Caught from before the run is announced and before any fault can be applied:
        // a signal sent on reading the line below must heal and stop, not kill the runner.
        let signals = StopSignals::install().ok();
        self.say(format_args!(
            "running `{}` for {} (seed {}): {} faults, {} SLOs",
            exp.name,
            humantime::format_duration(exp.duration),
            exp.seed,
            exp.faults.len(),
            exp.slos.len()
        ));
        let (tx, rx) = mpsc::channel::<Snapshot>(1024);
        let spec = target::load_spec(exp, self.endpoint.clone());
        let workers = Workers {
            urls: exp.load.workers.clone(),
            token: self.opts.worker_token.clone(),
            wait: self.opts.workers_wait,
        };
        let tick = Duration::from_secs(1);
        // Every worker accepts its part before anything starts; the faults' clock starts
        // at the workers' common instant.
        let plan = Plan::prepare(spec, &workers, tick)
            .await
            .map_err(RunError::Workers)?;
        let (t0, load_task) = plan.start(tick, Some(tx), stop.clone());
        self.state.stage = Stage::Running;
        // Agents the run did not start are watched: one that stops answering ends it.
        let lost = self.target.embedded.is_none().then(timeline::Lost::default);
        let timeline = (!self.target.fleet.is_empty()).then(|| {
            let (fleet, events) = (self.target.fleet.clone(), self.events.clone());
            let (stop, failed, lost) = (stop.clone(), fault_failed.clone(), lost.clone());
            tokio::spawn(timeline::run(fleet, faults, t0, stop, failed, lost, events))
        });
        let (collector, status, mut failures) = self
            .watch(
                rx,
                t0,
                &stop,
                &fault_failed,
                lost.unwrap_or_default(),
                signals,
            )
            .await;
        let (summary, lost) = load_task.await.map_err(RunError::LoadEngine)?;
        let status = match lost {
            Some(e) => {
                let m = e.to_string();
                let worker = e.url().to_owned();
                let at = t0.elapsed().as_secs_f64();
                self.events
                    .push(at, EventKind::WorkerLost { worker }, m.clone());
                failures.push(m);
                // As a lost agent: the run ended before its time, a verdict (exit 1).
                RunStatus::Aborted
            }
            None => status,
        };
        // The load has ended: every fault of the timeline heals now, whatever its plan.
        stop.cancel();
        let faults = match timeline {
            Some(t) => t.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let elapsed = t0.elapsed();
        failures.extend(
            faults
                .iter()
                .filter_map(|f| Some(format!("fault {}: {}", f.label, f.error.as_ref()?))),
        );
        self.state.stage = Stage::Checking;
        self.refresh(t0);
        Ok(Driven {
            summary,
            faults,
            status,
            failures,
            collector,
            elapsed,
        })
    }

    /// Folds the snapshots until the load ends; stops it on a tripped guard, a failed
    /// fault or a signal.
    async fn watch(
        &mut self,
        mut rx: mpsc::Receiver<Snapshot>,
        t0: Instant,
        stop: &CancellationToken,
        fault_failed: &CancellationToken,
        lost: timeline::Lost,
        signals: Option<StopSignals>,
    ) -> (Collector, RunStatus, Vec<String>) {
        let exp = self.exp;
        let steps = exp
            .load
            .flows
            .steps
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let mut collector = Collector::new(exp.slos.clone(), self.windows, steps)
            .with_metrics(self.metrics.clone());
        let mut guards = Guards::new(exp);
        let every = self.opts.progress_every.unwrap_or(Duration::from_secs(5));
        let mut progress = Progress::new(every, Some(exp.duration));
        let (mut status, mut failures) = (RunStatus::Completed, Vec::new());
        let interrupt = self.opts.interrupt.clone().unwrap_or_default();
        let signal = async {
            tokio::select! {
                _ = async { match signals { Some(s) => s.wait().await, None => std::future::pending().await } } => {}
                _ = interrupt.cancelled() => {}
            }
        };
        tokio::pin!(signal);
        loop {
            tokio::select! {
                snap = rx.recv() => {
                    let Some(snap) = snap else { break };
                    collector.push(&snap);
                    self.state.follow(&collector);
                    self.refresh(t0);
                    if status == RunStatus::Completed
                        && let Some((slo, m)) = guards.check(exp, &collector, self.windows)
                    {
                        self.events.push(t0.elapsed().as_secs_f64(), EventKind::Abort { slo }, m.clone());
                        failures.push(m);
                        status = RunStatus::Aborted;
                        stop.cancel();
                    }
                    if let Some(line) = progress.push(&snap, &collector) {
                        self.say(line);
                    }
                }
                _ = &mut signal, if status == RunStatus::Completed => {
                    let m = "interrupted (Ctrl-C, SIGTERM or q): healing every fault and stopping";
                    self.events.push(t0.elapsed().as_secs_f64(), EventKind::Interrupted, m);
                    failures.push("the run was interrupted".into());
                    status = RunStatus::Interrupted;
                    stop.cancel();
                }
                reason = lost.wait(), if status == RunStatus::Completed => {
                    failures.push(reason);
                    status = RunStatus::Aborted;
                    stop.cancel();
                }
                _ = fault_failed.cancelled(), if status == RunStatus::Completed => {
                    failures.push("a fault could not be applied".into());
                    status = RunStatus::Error;
                    stop.cancel();
                }
            }
        }
        (collector, status, failures)
    }

    /// The verdict: SLOs per phase, with detection and recovery per fault.
    async fn judge(mut self, driven: Driven, checks: Vec<CheckResult>) -> Report {
        let exp = self.exp;
        let Driven {
            summary,
            faults,
            status,
            mut failures,
            collector,
            elapsed,
        } = driven;
        let phases = judge::phases(exp, collector.seconds().len());
        let slos = judge::slo_reports(exp, collector.series(), &phases, self.windows, &faults);
        failures.extend(judge::slo_failures(&slos));
        self.state.stage = Stage::Done;
        self.state.passed = Some(failures.is_empty());
        self.state.follow_events(self.events.snapshot());
        self.state.see(self.observer.latest());
        self.publish();
        self.observer.stop().await;
        Report {
            experiment: exp.name.clone(),
            description: exp.description.clone(),
            file: exp.file.clone(),
            seed: exp.seed,
            started_ms: self.started_ms,
            planned_duration_s: exp.duration.as_secs_f64(),
            elapsed_s: elapsed.as_secs_f64(),
            target: self.target.label.clone(),
            status,
            passed: failures.is_empty(),
            failures,
            load: LoadTotals::of(exp, &summary),
            phases,
            faults,
            slos,
            checks,
            events: self.events.take(),
            seconds: collector.into_seconds(),
        }
    }
}
