//! The target of a run: brought up with an embedded agent (a topology, the bundled shop
//! by default) or found running (a URL, one agent or several). Either way the runner
//! gets the base URL the load goes to and the agents, each fault of the timeline routed
//! to the agent that owns its target ([`Target::plan`]).

use std::sync::Arc;
use std::time::Duration;

use faultline_agent::agent::{Agent, AgentError, AgentOptions};
use faultline_agent::client::{AgentClient, ClientError};
use faultline_agent::rundir::RunDir;
use faultline_agent::supervisor::StartError;
use faultline_agent::topology::Topology;

use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Options, RunError};
use crate::experiment::{AgentRef, Experiment, LoadModel, Planned, TargetSpec};
use crate::fleet::{self, Fleet, Part};
use crate::load::client::Endpoint;
use crate::load::{LoadSpec, Model, Work};
use crate::metrics::Metrics;

/// What the target is during a run.
pub struct Target {
    /// `http://host:port` the load goes to.
    pub base: String,
    /// The first agent (the only one, but in a run across several hosts): the one the
    /// checks ask for the topology's queues, audit endpoints and services.
    pub agent: Option<AgentClient>,
    /// Every agent of the run, by name.
    pub fleet: Fleet,
    /// The agent this run started, shut down (healing everything) at the end.
    pub embedded: Option<Agent>,
    /// The target in words, for the report.
    pub label: String,
}

impl Target {
    pub async fn bring_up(exp: &Experiment, opts: &Options) -> Result<Target, RunError> {
        match &exp.target {
            TargetSpec::Start { topology, bundled } => start(topology, *bundled, opts).await,
            // A system this run does not start, with proxies for it: an agent of the
            // run's own, with no topology, holds them.
            TargetSpec::Running {
                url: Some(url),
                agents,
            } if agents.is_empty() && !exp.proxies.is_empty() => start_bare(url, opts).await,
            TargetSpec::Running { url, agents } => running(url.as_deref(), agents, opts).await,
        }
    }

    /// Each fault of the timeline with the agents' parts of it: with several agents, each
    /// target is found on the agent that owns it (asked now, after the run's proxies are
    /// made); a target no agent or two agents own is a bad input at its place in the file.
    pub async fn plan(&self, exp: &Experiment) -> Result<Vec<(Planned, Vec<Part>)>, RunError> {
        if !self.fleet.is_several() {
            return Ok(exp
                .faults
                .iter()
                .map(|p| {
                    let part = Part {
                        agent: 0,
                        request: p.request.clone(),
                    };
                    (p.clone(), vec![part])
                })
                .collect());
        }
        let mut statuses = Vec::new();
        for (m, s) in self
            .fleet
            .members
            .iter()
            .zip(self.fleet.statuses(Duration::from_secs(10)).await)
        {
            statuses.push(s.map_err(|source| RunError::AgentUnreachable {
                url: format!("{} ({})", m.client.url(), m.name),
                source,
            })?);
        }
        let views: Vec<fleet::View<'_>> = self
            .fleet
            .members
            .iter()
            .zip(&statuses)
            .map(|(m, status)| fleet::View {
                name: &m.name,
                url: m.client.url(),
                status,
            })
            .collect();
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        for p in &exp.faults {
            match fleet::route(&views, &p.request) {
                Ok(parts) => out.push((p.clone(), parts)),
                Err(e) => {
                    let (line, column) = if e.on_with { p.with_at } else { p.target_at };
                    problems.push(format!("{}:{line}:{column}: {}", exp.file, e.message));
                }
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(RunError::Targets(problems.join("\nerror: ")))
        }
    }

    /// Makes the experiment's `[[proxies]]` on the agent; on a failure, deletes those
    /// it made and says which one failed. Returns the names made.
    pub async fn make_proxies(
        &self,
        exp: &Experiment,
        quiet: bool,
    ) -> Result<Vec<String>, RunError> {
        let Some(agent) = &self.agent else {
            return Ok(Vec::new());
        };
        let mut made = Vec::new();
        for p in &exp.proxies {
            match agent.create_proxy(p).await {
                Ok(v) => {
                    if !quiet {
                        eprintln!(
                            "proxy {} listens on {} for {}",
                            v.name, v.listen, v.upstream
                        );
                    }
                    made.push(v.name);
                }
                Err(source) => {
                    self.remove_proxies(&made).await;
                    return Err(RunError::Proxy {
                        name: p.name.clone(),
                        source,
                    });
                }
            }
        }
        Ok(made)
    }

    /// Deletes the proxies this run made (their faults heal with them).
    pub async fn remove_proxies(&self, names: &[String]) {
        if let Some(agent) = &self.agent {
            for n in names {
                if let Err(e) = agent.delete_proxy(n).await {
                    tracing::warn!(proxy = n, error = %e, "cannot delete the run's proxy");
                }
            }
        }
    }

    /// Serves the run's own `/metrics` (until the guard drops), in the Prometheus
    /// targets file beside the system's when this run started it.
    pub async fn serve_metrics(
        &self,
        opts: &Options,
    ) -> Result<(Arc<Metrics>, DropGuard), RunError> {
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let listen = opts
            .metrics_listen
            .unwrap_or_else(|| "127.0.0.1:0".parse().expect("an address"));
        let addr = metrics
            .clone()
            .serve(listen, stop.clone())
            .await
            .map_err(RunError::Metrics)?;
        match &self.embedded {
            Some(agent) => {
                let cli = serde_json::json!({
                    "targets": [addr.to_string()],
                    "labels": { "job": "faultline", "service": "faultline", "replica": "faultline-1", "zone": "" }
                });
                if let Ok(p) = agent.write_prometheus_targets(vec![cli])
                    && !opts.quiet
                {
                    eprintln!(
                        "metrics: http://{addr}/metrics (prometheus targets: {})",
                        p.display()
                    );
                }
            }
            None if !opts.quiet => eprintln!("metrics: http://{addr}/metrics"),
            None => {}
        }
        Ok((metrics, stop.drop_guard()))
    }

    /// Stops the embedded agent, if this run started one (every fault heals).
    pub async fn shut_down(self, quiet: bool) {
        if let Some(agent) = self.embedded {
            if !quiet {
                eprintln!("stopping the system...");
            }
            agent.shutdown().await;
        }
    }
}

/// Starts `topology` under an embedded agent in a new run directory.
async fn start(topology: &Topology, bundled: bool, opts: &Options) -> Result<Target, RunError> {
    let run_dir = RunDir::create_in_home().map_err(RunError::RunDir)?;
    run_dir.mark_latest().map_err(RunError::MarkLatest)?;
    let label = if bundled {
        "the bundled shop".to_owned()
    } else {
        format!("topology `{}`", topology.name)
    };
    if !opts.quiet {
        eprintln!("starting {label} ({} services)...", topology.services.len());
    }
    // The runner knows where the entrypoint is: a free port, never a fixed one (runs
    // side by side, and beside a `faultline up`, must not collide).
    let mut topology = topology.clone();
    if let Some(kind) = opts.runtime {
        topology.set_runtime(kind).map_err(RunError::Runtime)?;
    }
    if let Some(ep) = topology.entrypoint.clone()
        && let Some(svc) = topology.service_mut(&ep)
    {
        svc.port = 0;
    }
    let entrypoint = topology.entrypoint.clone();
    let agent = match Agent::start(AgentOptions::new(topology, run_dir)).await {
        Ok(a) => a,
        Err(AgentError::Start(e @ StartError::ProgramNotFound { .. })) => {
            return Err(RunError::ProgramNotFound(e));
        }
        Err(e) => return Err(RunError::Agent(e)),
    };
    let entry = agent
        .supervisor
        .status()
        .into_iter()
        .find(|r| Some(&r.service) == entrypoint.as_ref())
        .map(|r| r.addr)
        .ok_or(RunError::NoEntrypoint)?;
    if !opts.quiet {
        let docker = agent
            .supervisor
            .docker_network()
            .map_or_else(String::new, |n| format!(" docker={n}"));
        eprintln!(
            "{}{docker} (logs: {})",
            faultline_agent::report::ready_fields(
                entrypoint.as_deref().unwrap_or_default(),
                &format!("http://{entry}"),
                &agent.url
            ),
            agent.supervisor.run_dir().join("logs").display()
        );
    }
    let client = AgentClient::new(&agent.url, None);
    Ok(Target {
        base: format!("http://{entry}"),
        fleet: Fleet::one(client.clone()),
        agent: Some(client),
        embedded: Some(agent),
        label,
    })
}

/// A system this run does not start, at `url`, with an agent of the run's own and no
/// topology, for the experiment's proxies.
async fn start_bare(url: &str, opts: &Options) -> Result<Target, RunError> {
    let run_dir = RunDir::create_in_home().map_err(RunError::RunDir)?;
    run_dir.mark_latest().map_err(RunError::MarkLatest)?;
    let agent = Agent::start(AgentOptions::new(Topology::none(), run_dir))
        .await
        .map_err(RunError::Agent)?;
    if !opts.quiet {
        eprintln!("agent for the run's proxies: {}", agent.url);
    }
    let client = AgentClient::new(&agent.url, None);
    Ok(Target {
        base: url.to_owned(),
        fleet: Fleet::one(client.clone()),
        agent: Some(client),
        embedded: Some(agent),
        label: url.to_owned(),
    })
}

/// A running system: the load goes to `url`, or to the entrypoint the (first) agent
/// reports.
async fn running(
    url: Option<&str>,
    agents: &[AgentRef],
    opts: &Options,
) -> Result<Target, RunError> {
    let agents: Vec<AgentRef> = agents
        .iter()
        .map(|a| AgentRef {
            token: a.token.clone().or_else(|| opts.agent_token.clone()),
            ..a.clone()
        })
        .collect();
    let fleet = Fleet::new(&agents);
    let several = fleet.is_several();
    let unreachable = |m: &fleet::Member, source: ClientError| RunError::AgentUnreachable {
        url: if several {
            format!("{} ({})", m.client.url(), m.name)
        } else {
            m.client.url().to_owned()
        },
        source,
    };
    // Every agent reachable before anything starts: a wrong URL is a setup error.
    let mut first = None;
    for (m, s) in fleet
        .members
        .iter()
        .zip(fleet.statuses(Duration::from_secs(30)).await)
    {
        let s = s.map_err(|e| unreachable(m, e))?;
        first.get_or_insert(s);
    }
    let base = match (url, first) {
        (Some(u), _) => u.to_owned(),
        (None, Some(s)) => s.entrypoint.ok_or(RunError::AgentWithoutEntrypoint)?,
        (None, None) => return Err(RunError::NoTarget),
    };
    if !opts.quiet && several {
        eprintln!("agents: {}", fleet.names().join(", "));
    }
    Ok(Target {
        label: base.clone(),
        base,
        agent: fleet.first().cloned(),
        fleet,
        embedded: None,
    })
}

/// Where the load connects for `base`, with each request's `timeout`.
pub async fn endpoint(base: &str, timeout: Duration) -> Result<Endpoint, RunError> {
    let uri: hyper::Uri = base
        .parse()
        .map_err(|_| RunError::BadUrl(base.to_owned()))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(RunError::UrlWithPath(base.to_owned()));
    }
    let host = uri.host().ok_or(RunError::NoHost)?;
    let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let found = tokio::net::lookup_host(&authority)
        .await
        .map(|mut a| a.next());
    let addr = match found {
        Ok(addr) => addr,
        Err(source) => return Err(RunError::Resolve { authority, source }),
    };
    let addr = addr.ok_or_else(|| RunError::NoAddress(authority.clone()))?;
    Ok(Endpoint {
        addr,
        authority,
        timeout,
    })
}

/// The load engine's spec of the experiment's load.
pub fn load_spec(exp: &Experiment, endpoint: Endpoint) -> LoadSpec {
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
    LoadSpec {
        endpoint,
        work: Work::Flows(exp.load.flows.clone()),
        model,
        connections: exp.load.users,
        count: None,
        segment: crate::load::segment::Segment::WHOLE,
    }
}
