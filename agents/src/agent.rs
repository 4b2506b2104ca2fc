//! An agent: a supervised topology with its fault proxies, the fault engine, its leases
//! and the control API, started and stopped as one. `faultline up` embeds one; the
//! `faultline-agent` binary runs one alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::http_server::Limits;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::faults::{Faults, Journal, journal};
use crate::rundir::RunDir;
use crate::supervisor::{StartError, Supervisor, SupervisorConfig};
use crate::topology::Topology;

/// The directory of the running binary: where the workspace's other binaries (the shop)
/// are found first.
pub fn beside_current_exe() -> Vec<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .into_iter()
        .collect()
}

/// An agent's limits as command-line flags, for the binaries that run one.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// The most faults in effect at once; more are refused with 429.
    #[arg(long, value_name = "N", default_value_t = crate::faults::DEFAULT_MAX_FAULTS as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_faults: u32,
    /// Open connections to the control API at most; more get a 503 and are closed.
    #[arg(long = "api-max-connections", value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// How long a connection to the control API may take to send a request's headers,
    /// counted from its start or, on a keep-alive connection, from the last answer.
    #[arg(long = "api-header-timeout", value_name = "DURATION", default_value = "10s",
          value_parser = bounded_duration)]
    pub header_read: Duration,
}

impl LimitArgs {
    pub fn api_limits(&self) -> Limits {
        Limits {
            header_read: self.header_read,
            max_connections: self.max_connections as usize,
            ..Limits::default()
        }
    }
}

/// A duration from 1 ms to 1 hour.
fn bounded_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(3600) {
        return Err(format!("must be from 1ms to 1h, not {s}"));
    }
    Ok(d)
}

pub struct AgentOptions {
    pub topology: Topology,
    pub run_dir: RunDir,
    /// Directories searched for programs before `PATH`.
    pub bin_path: Vec<PathBuf>,
    /// Route every edge through a fault proxy.
    pub proxies: bool,
    /// Where the control API listens (port 0 picks one).
    pub listen: SocketAddr,
    /// Bearer token the API requires; mandatory off loopback.
    pub token: Option<String>,
    /// The most faults in effect at once.
    pub max_faults: usize,
    /// The bounds on the API's connections.
    pub api_limits: Limits,
    /// The flag that sets the token, for messages (`--token`, `--agent-token`).
    pub token_flag: &'static str,
    /// Toxiproxy's API, if it is to be served.
    pub toxiproxy: crate::toxiproxy::ToxiproxyArgs,
}

impl AgentOptions {
    /// An agent for `topology` in `run_dir`: programs found beside this binary first,
    /// proxies on, the API on a free loopback port without a token, default limits.
    pub fn new(topology: Topology, run_dir: RunDir) -> Self {
        Self {
            topology,
            run_dir,
            bin_path: beside_current_exe(),
            proxies: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            max_faults: crate::faults::DEFAULT_MAX_FAULTS,
            api_limits: Limits::default(),
            token_flag: "--token",
            toxiproxy: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Unprotected(#[from] api::UnprotectedBind),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen for the agent API on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot listen for the Toxiproxy API on {0}: {1}")]
    ToxiproxyListen(SocketAddr, std::io::Error),
    #[error("{0}")]
    Toxiproxy(String),
    #[error("cannot read or write the fault journal {}: {error}", path.display())]
    Journal {
        path: PathBuf,
        error: std::io::Error,
    },
}

pub struct Agent {
    pub supervisor: Arc<Supervisor>,
    pub faults: Arc<Faults>,
    /// `http://ADDR` of the control API.
    pub url: String,
    /// `http://ADDR` of the Toxiproxy API, when it is served.
    pub toxiproxy_url: Option<String>,
    /// What was wrong with the journal it started on (`PATH:LINE: what`), for the user:
    /// damaged records it skipped and a torn tail it cut.
    pub journal_problems: Vec<String>,
    cancel: CancellationToken,
    api: JoinHandle<std::io::Result<()>>,
    toxiproxy: Option<JoinHandle<std::io::Result<()>>>,
    leases: JoinHandle<()>,
}

impl Agent {
    /// Checks the options, heals what a previous agent left in the run directory, starts
    /// the topology and then the API. Nothing starts if the options are refused.
    pub async fn start(opts: AgentOptions) -> Result<Agent, AgentError> {
        api::check_bind(opts.listen, opts.token.as_deref(), opts.token_flag)?;
        opts.toxiproxy.check().map_err(AgentError::Toxiproxy)?;
        let journal_error = |error| AgentError::Journal {
            path: opts.run_dir.path().join("faults.jsonl"),
            error,
        };
        let (journal, contents) = Journal::open(opts.run_dir.path()).map_err(journal_error)?;
        let journal_problems = contents.problems(journal.path());
        for p in &journal_problems {
            tracing::warn!(problem = p, "the fault journal was damaged");
        }
        let containers = crate::faults::containers::Containers::default();
        let healed = journal::recover(&journal, &contents, &containers)
            .await
            .map_err(journal_error)?;
        if !healed.is_empty() {
            tracing::warn!(
                count = healed.len(),
                "healed faults left by a previous agent on this run directory"
            );
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| AgentError::Listen(opts.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| AgentError::Listen(opts.listen, e))?;
        let toxiproxy_listener = match opts.toxiproxy.toxiproxy_listen {
            Some(at) => {
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| AgentError::ToxiproxyListen(at, e))?;
                let bound = l
                    .local_addr()
                    .map_err(|e| AgentError::ToxiproxyListen(at, e))?;
                Some((l, bound))
            }
            None => None,
        };
        let mut config = SupervisorConfig::new(opts.run_dir.clone());
        config.bin_path = opts.bin_path;
        config.proxies = opts.proxies;
        let supervisor = Arc::new(Supervisor::start(opts.topology, config).await?);
        supervisor.start_autoscaler();
        let faults = Faults::new(supervisor.clone(), journal, opts.max_faults);
        // Found once, so the status says what network faults on containers can use and
        // a fault missing one is refused by name.
        faults.detect_mechanisms().await;
        let cancel = CancellationToken::new();
        let api = tokio::spawn(api::serve(
            listener,
            faults.clone(),
            opts.token,
            opts.api_limits,
            cancel.clone(),
        ));
        let leases = tokio::spawn(faults.clone().run_leases(cancel.clone()));
        let (toxiproxy, toxiproxy_url) = match toxiproxy_listener {
            Some((l, bound)) => (
                Some(tokio::spawn(crate::toxiproxy::serve(
                    l,
                    faults.clone(),
                    opts.toxiproxy.toxiproxy_ttl,
                    cancel.clone(),
                ))),
                Some(format!("http://{bound}")),
            ),
            None => (None, None),
        };
        let url = format!("http://{addr}");
        let record = serde_json::json!({ "url": url, "pid": std::process::id() });
        let _ = opts
            .run_dir
            .write_atomic("agent.json", record.to_string().as_bytes());
        let agent = Agent {
            supervisor,
            faults,
            url,
            toxiproxy_url,
            journal_problems,
            cancel,
            api,
            toxiproxy,
            leases,
        };
        let _ = agent.write_prometheus_targets(Vec::new());
        Ok(agent)
    }

    /// Writes `prometheus-targets.json` in the run directory: a Prometheus file_sd file
    /// naming every replica's metrics address (labels `job`, `service`, `replica`,
    /// `zone`), the agent's own, and `extra` entries (the CLI's endpoint during a run).
    /// A replica keeps its address across restarts, so the file stays true for the run.
    pub fn write_prometheus_targets(
        &self,
        extra: Vec<serde_json::Value>,
    ) -> std::io::Result<std::path::PathBuf> {
        let mut groups: Vec<serde_json::Value> = self
            .supervisor
            .status()
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "targets": [r.addr.to_string()],
                    "labels": {
                        "job": self.supervisor.topology().name,
                        "service": r.service,
                        "replica": r.name,
                        "zone": r.zone,
                    }
                })
            })
            .collect();
        groups.push(serde_json::json!({
            "targets": [self.url.trim_start_matches("http://")],
            "labels": { "job": "faultline-agent", "service": "faultline-agent", "replica": "faultline-agent-1", "zone": "" }
        }));
        groups.extend(extra);
        let text = serde_json::to_string_pretty(&groups).expect("targets serialise");
        let run_dir = self.supervisor.run_dir();
        let path = run_dir.join("prometheus-targets.json");
        let tmp = run_dir.join(".prometheus-targets.json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// The ready line: `ready: [ENTRYPOINT=URL] agent=URL [toxiproxy=URL]`.
    pub fn ready_line(&self) -> String {
        let mut line = crate::report::ready_line(&self.supervisor, &self.url);
        if let Some(network) = self.supervisor.docker_network() {
            line.push_str(&format!(" docker={network}"));
        }
        if let Some(t) = &self.toxiproxy_url {
            line.push_str(&format!(" toxiproxy={t}"));
        }
        line
    }

    /// Heals every fault, stops the APIs and the run-time proxies, then stops the
    /// topology gracefully.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.leases.await;
        let _ = self.api.await;
        if let Some(t) = self.toxiproxy {
            let _ = t.await;
        }
        self.supervisor.shutdown().await;
    }
}
