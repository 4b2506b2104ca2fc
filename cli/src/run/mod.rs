//! The gameday runner: brings up the target (the bundled shop with an embedded agent, or
//! a running system and agent), checks the steady state, runs the load and the fault
//! timeline together, watches the abort guards, heals everything on completion, abort,
//! Ctrl-C or SIGTERM, drains the queues, runs the checks, and judges the SLOs per phase.
//!
//! - [`timeline`]: faults applied, renewed and healed through the agent.
//! - [`checks`]: drain, the shop's invariants, steady-state probes.
//! - [`report`]: the report and its JSON, JUnit and Markdown forms.

pub mod checks;
pub mod report;
pub mod state;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use faultline_agent::agent::{Agent, AgentError, AgentOptions};
use faultline_agent::client::AgentClient;
use faultline_agent::rundir::RunDir;
use faultline_agent::supervisor::StartError;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::experiment::{Experiment, LoadModel, TargetSpec};
use crate::load::client::Endpoint;
use crate::load::stats::{Percentiles, Stats};
use crate::load::{self, LoadSpec, Model, Snapshot, Work};
use crate::slo::{self, Counts, Phase, Windows};

use self::checks::CheckResult;
use self::report::{LoadTotals, Report, RunStatus, Second, SloFault, SloReport, StepTotals};
use self::state::{QueueNow, RunState, Stage};

/// Something that happened during the run, seconds from the start of the load.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub t_s: f64,
    pub kind: String,
    pub message: String,
}

/// The run's event log, shared by its parts; every event is also printed to stderr
/// unless a live view shows them.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>, bool);

impl Events {
    pub fn new(quiet: bool) -> Self {
        Events(Arc::default(), quiet)
    }

    pub fn push(&self, t_s: f64, kind: &str, message: &str) {
        if !self.1 {
            eprintln!("[{t_s:>6.1}s] {message}");
        }
        self.0.lock().unwrap().push(Event {
            t_s,
            kind: kind.to_owned(),
            message: message.to_owned(),
        });
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn snapshot(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

/// What the target is during a run.
struct Live {
    /// `http://host:port` the load goes to.
    base: String,
    agent: Option<AgentClient>,
    /// The agent this run started, shut down (healing everything) at the end.
    embedded: Option<Agent>,
    label: String,
}

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
}

/// What the observer last saw of the system.
#[derive(Default)]
pub(crate) struct Observed {
    pub replicas: Vec<faultline_agent::supervisor::ReplicaStatus>,
    pub faults: Vec<faultline_agent::faults::FaultInfo>,
    pub queues: Vec<QueueNow>,
    /// Per replica, its circuit breakers that are not closed: `upstream open`.
    pub breakers: BTreeMap<String, Vec<String>>,
}

/// The breakers of one replica that are not closed, from its `/metrics`
/// (`shop_upstream_breaker_state`: 0 closed, 1 open, 2 half-open).
async fn breakers(http: &reqwest::Client, addr: std::net::SocketAddr) -> Vec<String> {
    let Ok(resp) = http
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
    else {
        return Vec::new();
    };
    let Ok(text) = resp.text().await else {
        return Vec::new();
    };
    let Ok(scrape) = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) else {
        return Vec::new();
    };
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == "shop_upstream_breaker_state")
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let upstream = s.labels.get("upstream").unwrap_or("?");
            match v as u8 {
                1 => Some(format!("{upstream} open")),
                2 => Some(format!("{upstream} half-open")),
                _ => None,
            }
        })
        .collect()
}

/// One look at the system: the agent's status and the broker's queues (when the
/// topology has a broker). `None` when the agent does not answer.
pub(crate) async fn observe_once(client: &AgentClient, http: &reqwest::Client) -> Option<Observed> {
    let status = client.status().await.ok()?;
    let broker = status
        .replicas
        .iter()
        .find(|r| r.service == "broker")
        .map(|r| r.addr);
    let queues = match broker {
        Some(addr) => match http
            .get(format!("http://{addr}/v1/queues"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
        {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| serde_json::from_value(v["queues"].clone()).ok())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        None => Vec::new(),
    };
    let scrapes = status
        .replicas
        .iter()
        .filter(|r| r.state == faultline_agent::supervisor::ReplicaState::Healthy)
        .map(|r| async move { (r.name.clone(), breakers(http, r.addr).await) });
    let breakers = futures::future::join_all(scrapes)
        .await
        .into_iter()
        .filter(|(_, b)| !b.is_empty())
        .collect();
    Some(Observed {
        replicas: status.replicas,
        faults: status.faults,
        queues,
        breakers,
    })
}

/// Polls the system every second until `stop`.
async fn observe(
    client: AgentClient,
    http: reqwest::Client,
    into: Arc<Mutex<Observed>>,
    stop: CancellationToken,
) {
    loop {
        if let Some(o) = observe_once(&client, &http).await {
            let mut into = into.lock().unwrap();
            into.replicas = o.replicas;
            into.faults = o.faults;
            into.breakers = o.breakers;
            // A broker that did not answer keeps its last figures.
            if !o.queues.is_empty() || into.queues.is_empty() {
                into.queues = o.queues;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn bring_up(exp: &Experiment, opts: &Options) -> anyhow::Result<Live> {
    match &exp.target {
        TargetSpec::Start { topology, bundled } => {
            let run_dir = RunDir::create_in_home().context("cannot create the run directory")?;
            run_dir
                .mark_latest()
                .context("cannot record the run as the latest")?;
            if !opts.quiet {
                eprintln!(
                    "starting {} ({} services)...",
                    if *bundled {
                        "the bundled shop".to_owned()
                    } else {
                        format!("topology `{}`", topology.name)
                    },
                    topology.services.len()
                );
            }
            // The runner knows where the entrypoint is: a free port, never a fixed one
            // (runs side by side, and beside a `faultline up`, must not collide).
            let mut topology = (**topology).clone();
            if let Some(ep) = topology.entrypoint.clone()
                && let Some(svc) = topology.service_mut(&ep)
            {
                svc.port = 0;
            }
            let agent = match Agent::start(AgentOptions::new(topology.clone(), run_dir)).await {
                Ok(a) => a,
                Err(AgentError::Start(e @ StartError::ProgramNotFound { .. })) => bail!(
                    "{e}\nhint: build every binary of the workspace first: cargo build --release --workspace"
                ),
                Err(e) => return Err(e.into()),
            };
            let entry = agent
                .supervisor
                .status()
                .into_iter()
                .find(|r| Some(&r.service) == topology.entrypoint.as_ref())
                .map(|r| r.addr)
                .context("the topology's entrypoint has no replica")?;
            if !opts.quiet {
                eprintln!(
                    "ready: gateway=http://{entry} agent={} (logs: {})",
                    agent.url,
                    agent.supervisor.run_dir().join("logs").display()
                );
            }
            Ok(Live {
                base: format!("http://{entry}"),
                agent: Some(AgentClient::new(&agent.url, None)),
                embedded: Some(agent),
                label: if *bundled {
                    "the bundled shop".into()
                } else {
                    format!("topology `{}`", topology.name)
                },
            })
        }
        TargetSpec::Running { url, agent } => {
            let client = agent
                .as_ref()
                .map(|a| AgentClient::new(a, opts.agent_token.clone()));
            let base = match (url, &client) {
                (Some(u), _) => u.clone(),
                (None, Some(c)) => c
                    .status()
                    .await
                    .with_context(|| format!("cannot use the agent at {}", c.url()))?
                    .entrypoint
                    .context("the agent's topology has no entrypoint: set `url` under [target]")?,
                (None, None) => bail!("the experiment names neither a url nor an agent"),
            };
            if let Some(c) = &client {
                // Reachable before anything starts: a wrong URL is a setup error.
                c.status()
                    .await
                    .with_context(|| format!("cannot use the agent at {}", c.url()))?;
            }
            Ok(Live {
                label: base.clone(),
                base,
                agent: client,
                embedded: None,
            })
        }
    }
}

async fn endpoint(base: &str, timeout: Duration) -> anyhow::Result<Endpoint> {
    let uri: hyper::Uri = base
        .parse()
        .with_context(|| format!("`{base}` is not a URL"))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        bail!("the target URL `{base}` has a path; write the base URL only (steps give paths)");
    }
    let host = uri.host().context("the target URL has no host")?;
    let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let addr = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    Ok(Endpoint {
        addr,
        authority,
        timeout,
    })
}

/// Phases of the run in whole seconds: baseline, each lasting fault, recovery.
fn phases(exp: &Experiment, seconds: usize) -> Vec<Phase> {
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

fn slo_counts(exp: &Experiment, snap: &Snapshot) -> Vec<Counts> {
    exp.slos
        .iter()
        .map(|s| {
            let stats = match s.step {
                Some(i) => snap.steps.get(i).unwrap_or(&snap.stats),
                None => &snap.stats,
            };
            slo::counts(&s.objective.kind, stats, &s.also_bad)
        })
        .collect()
}

/// One second of the run for reports and live views; `names` are the SLOs' names.
pub(crate) fn second_row<'a>(
    names: impl Iterator<Item = &'a str>,
    t: usize,
    snap: &Snapshot,
    counts: &[Counts],
) -> Second {
    let s = &snap.stats;
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
        sli: names
            .zip(counts)
            .filter_map(|(name, c)| Some((name.to_owned(), c.ratio()?)))
            .collect(),
    }
}

fn totals(exp: &Experiment, summary: &load::Summary) -> LoadTotals {
    let statuses = |s: &Stats| {
        s.statuses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<_, _>>()
    };
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    LoadTotals {
        model: match &exp.load.model {
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
        },
        iterations: summary.iterations,
        requests: summary.stats.requests(),
        dropped: summary.dropped,
        requests_per_s: summary.stats.requests() as f64 / secs,
        statuses: statuses(&summary.stats),
        errors: summary.stats.errors.clone(),
        latency_ms: Percentiles::of(&summary.stats.latency),
        service_time_ms: Percentiles::of(&summary.stats.service),
        scheduler_lag_ms: Percentiles::of(&summary.stats.lag),
        steps: exp
            .load
            .flows
            .steps
            .iter()
            .zip(summary.steps.iter())
            .map(|(step, s)| StepTotals {
                name: step.name.clone(),
                requests: s.requests(),
                statuses: statuses(s),
                errors: s.errors.clone(),
                latency_ms: Percentiles::of(&s.latency),
            })
            .collect(),
        recorded: summary
            .history
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect(),
    }
}

/// Brings the live state up to date with the seconds counted so far.
#[allow(clippy::too_many_arguments)]
fn update(
    state: &mut RunState,
    exp: &Experiment,
    per_slo: &[Vec<Counts>],
    windows: Windows,
    t0: Instant,
    events: &Events,
    observed: &Mutex<Observed>,
) {
    let t = t0.elapsed();
    state.elapsed_s = t.as_secs_f64().min(exp.duration.as_secs_f64());
    state.target_rate = match &exp.load.model {
        LoadModel::Open { schedule, .. } => Some(schedule.rate_at(t)),
        LoadModel::Closed { .. } => None,
    };
    state.slos = exp
        .slos
        .iter()
        .zip(per_slo)
        .map(|(s, series)| slo::now(&s.name, s.objective.objective, series, windows))
        .collect();
    state.events = events.snapshot();
    // Fault windows from the events: applied opens one, healed closes it.
    let mut windows_now: Vec<(String, f64, Option<f64>)> = Vec::new();
    for e in &state.events {
        let label = e
            .message
            .split_once(": ")
            .map_or(e.message.as_str(), |(_, l)| l);
        match e.kind.as_str() {
            "fault_applied" => windows_now.push((label.to_owned(), e.t_s, None)),
            "fault_healed" => {
                if let Some(w) = windows_now
                    .iter_mut()
                    .find(|w| w.0 == label && w.2.is_none())
                {
                    w.2 = Some(e.t_s);
                }
            }
            _ => {}
        }
    }
    let active: Vec<String> = windows_now
        .iter()
        .filter(|w| w.2.is_none())
        .map(|w| w.0.split(" (").next().unwrap_or(&w.0).to_owned())
        .collect();
    state.phase = if !active.is_empty() {
        active.join(", ")
    } else if windows_now.is_empty() {
        "baseline".into()
    } else {
        "recovery".into()
    };
    state.windows = windows_now;
    let o = observed.lock().unwrap();
    state.replicas = o.replicas.clone();
    state.faults = o.faults.clone();
    state.breakers = o.breakers.clone();
    state.queues = o.queues.clone();
}

/// Runs the experiment. `Err` is a setup error (exit code 2): nothing was judged.
pub async fn execute(exp: &Experiment, opts: &Options) -> anyhow::Result<Report> {
    let live = bring_up(exp, opts).await?;
    let result = run_on(exp, opts, &live).await;
    if let Some(agent) = live.embedded {
        if !opts.quiet {
            eprintln!("stopping the system...");
        }
        agent.shutdown().await;
    }
    result
}

async fn run_on(exp: &Experiment, opts: &Options, live: &Live) -> anyhow::Result<Report> {
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("an HTTP client")?;
    let endpoint = endpoint(&live.base, exp.load.timeout).await?;
    let events = Events::new(opts.quiet);
    let observed = Arc::new(Mutex::new(Observed::default()));
    let observing = CancellationToken::new();
    if let Some(client) = &live.agent {
        tokio::spawn(observe(
            client.clone(),
            http.clone(),
            observed.clone(),
            observing.clone(),
        ));
    }
    // The run's own /metrics, in the Prometheus targets file beside the system's.
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let metrics_stop = CancellationToken::new();
    let metrics_addr = metrics
        .clone()
        .serve(
            opts.metrics_listen
                .unwrap_or_else(|| "127.0.0.1:0".parse().expect("an address")),
            metrics_stop.clone(),
        )
        .await
        .context("cannot serve the run's metrics")?;
    let _stop_metrics = metrics_stop.drop_guard();
    if let Some(agent) = &live.embedded {
        let cli = serde_json::json!({
            "targets": [metrics_addr.to_string()],
            "labels": { "job": "faultline", "service": "faultline", "replica": "faultline-1", "zone": "" }
        });
        if let Ok(p) = agent.write_prometheus_targets(vec![cli])
            && !opts.quiet
        {
            eprintln!(
                "metrics: http://{metrics_addr}/metrics (prometheus targets: {})",
                p.display()
            );
        }
    } else if !opts.quiet {
        eprintln!("metrics: http://{metrics_addr}/metrics");
    }
    let mut state = RunState {
        experiment: exp.name.clone(),
        seed: exp.seed,
        target: live.label.clone(),
        duration_s: exp.duration.as_secs_f64(),
        agent_url: live.agent.as_ref().map(|a| a.url().to_owned()),
        ..RunState::default()
    };
    let publish = |state: &RunState| {
        if let Some(tx) = &opts.live {
            tx.send_replace(state.clone());
        }
    };
    publish(&state);
    let mut checks: Vec<CheckResult> = Vec::new();
    let mut failures = Vec::new();

    // Steady state before: a system that is not healthy to begin with says nothing
    // about faults, so the run stops here.
    for p in &exp.steady_state {
        let c = checks::probe(&http, &live.base, &p.path, p.status, "before").await;
        if !c.passed {
            failures.push(format!("{}: {}", c.name, c.detail));
        }
        checks.push(c);
    }
    let windows = Windows::scaled(exp.duration);
    if !failures.is_empty() {
        return Ok(empty_report(
            exp, live, started_ms, failures, checks, windows,
        ));
    }

    let stop = CancellationToken::new();
    let fault_failed = CancellationToken::new();
    let model = match &exp.load.model {
        LoadModel::Open {
            schedule,
            max_in_flight,
        } => Model::Open {
            schedule: schedule.clone(),
            max_in_flight: *max_in_flight,
        },
        LoadModel::Closed { think } => Model::Closed {
            users: exp.load.users,
            duration: Some(exp.duration),
            think: *think,
        },
    };
    let spec = LoadSpec {
        endpoint,
        work: Work::Flows(exp.load.flows.clone()),
        model,
        connections: exp.load.users,
        count: None,
    };
    // Caught from before the run is announced and before any fault can be applied: a
    // signal sent on reading the line below must heal and stop, not kill the runner.
    let signals = faultline_agent::report::StopSignals::install().ok();
    if !opts.quiet {
        eprintln!(
            "running `{}` for {} (seed {}): {} faults, {} SLOs",
            exp.name,
            humantime::format_duration(exp.duration),
            exp.seed,
            exp.faults.len(),
            exp.slos.len()
        );
    }
    let t0 = Instant::now();
    state.stage = Stage::Running;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Snapshot>(1024);
    let load_task = tokio::spawn(load::run(
        spec,
        Duration::from_secs(1),
        Some(tx),
        stop.clone(),
    ));
    let timeline = live.agent.clone().map(|client| {
        tokio::spawn(timeline::run(
            client,
            exp.faults.clone(),
            t0,
            stop.clone(),
            fault_failed.clone(),
            events.clone(),
        ))
    });

    // Watch: per-second counts, abort guards, progress, signals, fault failures.
    let mut per_slo: Vec<Vec<Counts>> = vec![Vec::new(); exp.slos.len()];
    let mut above: Vec<usize> = vec![0; exp.aborts.len()];
    let mut status = RunStatus::Completed;
    let progress_every = opts.progress_every.unwrap_or(Duration::from_secs(5));
    let mut window = Stats::default();
    let mut window_dropped = 0;
    let mut last_progress = Instant::now();
    let interrupt = opts.interrupt.clone().unwrap_or_default();
    let signal = async {
        let signalled = async {
            match signals {
                Some(s) => s.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signalled => {}
            _ = interrupt.cancelled() => {}
        }
    };
    tokio::pin!(signal);
    loop {
        tokio::select! {
            snap = rx.recv() => {
                let Some(snap) = snap else { break };
                let t = state.seconds.len();
                let counts = slo_counts(exp, &snap);
                for (series, c) in per_slo.iter_mut().zip(&counts) {
                    series.push(*c);
                }
                state.seconds.push(second_row(exp.slos.iter().map(|s| s.name.as_str()), t, &snap, &counts));
                update(&mut state, exp, &per_slo, windows, t0, &events, &observed);
                publish(&state);
                metrics.observe(
                    exp.load.flows.steps.iter().map(|s| s.name.as_str()).zip(snap.steps.iter()),
                    snap.dropped,
                );
                metrics.set_slos(&state.slos);
                metrics.set_faults(&state.faults);
                window.merge(&snap.stats);
                window_dropped += snap.dropped;
                // Abort guards: the SLO's short-window burn rate above the limit for
                // the sustained time.
                for (i, rule) in exp.aborts.iter().enumerate() {
                    let series = &per_slo[rule.slo];
                    let from = series.len().saturating_sub(windows.short_s as usize);
                    let mut c = Counts::default();
                    for x in &series[from..] {
                        c.add(*x);
                    }
                    let burn = slo::burn(c, exp.slos[rule.slo].objective.objective);
                    above[i] = if burn > rule.burn_rate { above[i] + 1 } else { 0 };
                    if above[i] as u64 >= rule.sustained.as_secs().max(1) && status == RunStatus::Completed {
                        let m = format!(
                            "abort: SLO `{}` burned its budget at {:.1}x (limit {}x) for {} s",
                            exp.slos[rule.slo].name, burn, rule.burn_rate, above[i]
                        );
                        events.push(t0.elapsed().as_secs_f64(), "abort", &m);
                        failures.push(m);
                        status = RunStatus::Aborted;
                        stop.cancel();
                    }
                }
                if !opts.quiet && last_progress.elapsed() >= progress_every {
                    let span = last_progress.elapsed().as_secs_f64();
                    let p = Percentiles::of(&window.latency);
                    let errs = window.requests() - slo::good_answers(&window);
                    let slis: Vec<String> = exp.slos.iter().zip(&per_slo).map(|(s, series)| {
                        let mut c = Counts::default();
                        for x in series { c.add(*x); }
                        format!("{} {}", s.name, c.ratio().map_or("-".into(), |r| format!("{:.2}%", r * 100.0)))
                    }).collect();
                    eprintln!(
                        "t={:>4.0}s/{}s  {:>7.1} req/s  errors {}  p50 {:.1} ms  p99 {:.1} ms  dropped {}  in flight {}  |  {}",
                        snap.elapsed.as_secs_f64(),
                        exp.duration.as_secs(),
                        window.requests() as f64 / span,
                        errs,
                        p.p50,
                        p.p99,
                        window_dropped,
                        snap.in_flight,
                        slis.join("  ")
                    );
                    window.clear();
                    window_dropped = 0;
                    last_progress = Instant::now();
                }
            }
            _ = &mut signal, if status == RunStatus::Completed => {
                let m = "interrupted (Ctrl-C, SIGTERM or q): healing every fault and stopping";
                events.push(t0.elapsed().as_secs_f64(), "interrupted", m);
                failures.push("the run was interrupted".into());
                status = RunStatus::Interrupted;
                stop.cancel();
            }
            _ = fault_failed.cancelled(), if status == RunStatus::Completed => {
                failures.push("a fault could not be applied".into());
                status = RunStatus::Error;
                stop.cancel();
            }
        }
    }
    let summary = load_task.await.context("the load engine failed")?;
    // The load has ended: every fault of the timeline heals now, whatever its plan.
    stop.cancel();
    let faults = match timeline {
        Some(t) => t.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let elapsed = t0.elapsed();
    for f in &faults {
        if let Some(e) = &f.error {
            failures.push(format!("fault {}: {e}", f.label));
        }
    }

    state.stage = Stage::Checking;
    update(&mut state, exp, &per_slo, windows, t0, &events, &observed);
    publish(&state);

    // After: drain, invariants, steady state (the system may need a moment to settle).
    if status != RunStatus::Interrupted {
        if let (true, Some(client)) = (exp.checks.invariants, &live.agent) {
            if !opts.quiet {
                eprintln!(
                    "draining the queues (at most {})...",
                    humantime::format_duration(exp.checks.drain_timeout)
                );
            }
            let drained = checks::drain(client, &http, exp.checks.drain_timeout).await;
            let acknowledged: BTreeSet<String> = summary
                .history
                .get("order_id")
                .map(|v| v.iter().cloned().collect())
                .unwrap_or_default();
            checks.push(drained);
            checks.extend(
                checks::invariants(client, &http, &acknowledged, Duration::from_secs(10)).await,
            );
        }
        for p in &exp.steady_state {
            let deadline = Instant::now() + Duration::from_secs(10);
            let c = loop {
                let c = checks::probe(&http, &live.base, &p.path, p.status, "after").await;
                if c.passed || Instant::now() >= deadline {
                    break c;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            checks.push(c);
        }
    }
    for c in &checks {
        if !c.passed && !failures.iter().any(|f| f.starts_with(&c.name)) {
            failures.push(format!("{}: {}", c.name, c.detail));
        }
    }

    // SLOs, per phase, with detection and recovery per fault.
    let seconds = state.seconds.len();
    let phases = phases(exp, seconds);
    let settle = (windows.short_s as usize).max(3);
    let slos: Vec<SloReport> = exp
        .slos
        .iter()
        .zip(&per_slo)
        .map(|(s, series)| {
            let mut evaluation = slo::evaluate(&s.objective, series, &phases, windows);
            evaluation.name = s.name.clone();
            let per_fault = faults
                .iter()
                .filter_map(|f| {
                    let applied = f.applied_at_s? as usize;
                    Some(SloFault {
                        fault: f.label.clone(),
                        time_to_detect_s: slo::time_to_detect(
                            series,
                            s.objective.objective,
                            applied,
                            windows.short_s,
                        ),
                        time_to_recover_s: f.healed_at_s.and_then(|h| {
                            slo::time_to_recover(
                                series,
                                s.objective.objective,
                                (h.ceil() as usize).min(seconds),
                                settle,
                            )
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
        .collect();
    for s in &slos {
        if !s.evaluation.met {
            failures.push(format!(
                "SLO `{}` missed: {} against {}%",
                s.evaluation.name,
                s.evaluation
                    .sli
                    .map_or("-".into(), |v| format!("{:.3}%", v * 100.0)),
                s.evaluation.objective * 100.0
            ));
        }
    }
    observing.cancel();
    state.stage = Stage::Done;
    state.passed = Some(failures.is_empty());
    update(&mut state, exp, &per_slo, windows, t0, &events, &observed);
    publish(&state);
    Ok(Report {
        experiment: exp.name.clone(),
        description: exp.description.clone(),
        file: exp.file.clone(),
        seed: exp.seed,
        started_ms,
        planned_duration_s: exp.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        target: live.label.clone(),
        status,
        passed: failures.is_empty(),
        failures,
        load: totals(exp, &summary),
        phases,
        faults,
        slos,
        checks,
        events: events.take(),
        seconds: std::mem::take(&mut state.seconds),
    })
}

fn empty_report(
    exp: &Experiment,
    live: &Live,
    started_ms: u64,
    failures: Vec<String>,
    checks: Vec<CheckResult>,
    windows: Windows,
) -> Report {
    let summary = load::Summary {
        elapsed: Duration::ZERO,
        stats: Stats::default(),
        steps: Vec::new(),
        dropped: 0,
        iterations: 0,
        history: BTreeMap::new(),
    };
    Report {
        experiment: exp.name.clone(),
        description: exp.description.clone(),
        file: exp.file.clone(),
        seed: exp.seed,
        started_ms,
        planned_duration_s: exp.duration.as_secs_f64(),
        elapsed_s: 0.0,
        target: live.label.clone(),
        status: RunStatus::Aborted,
        passed: false,
        failures,
        load: totals(exp, &summary),
        phases: Vec::new(),
        faults: Vec::new(),
        slos: exp
            .slos
            .iter()
            .map(|s| SloReport {
                evaluation: slo::Evaluation {
                    name: s.name.clone(),
                    ..slo::evaluate(&s.objective, &[], &[], windows)
                },
                step: s.step.map(|i| exp.load.flows.steps[i].name.clone()),
                faults: Vec::new(),
            })
            .collect(),
        checks,
        events: Vec::new(),
        seconds: Vec::new(),
    }
}
