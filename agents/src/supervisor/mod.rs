//! A generic process supervisor: starts every replica of a [`Topology`] with its
//! dependencies' addresses, waits for each to be healthy, restarts crashed replicas with
//! exponential backoff, captures their output to log files, and lets callers kill,
//! terminate, pause, resume, restart, hold down and release replicas.
//!
//! Each replica is driven by one task ([`replica`]) that alone owns its child process;
//! everything else talks to it over a command channel and reads its status from a
//! watch channel. A replica is its whole process tree ([`tree`]: a cgroup where the
//! kernel offers one), and no replica outlives the supervisor: see [`process`] and
//! [`crate::reaper`].

mod autoscale;
pub mod command;
pub mod docker;
mod ports;
pub mod probe;
mod process;
mod replica;
mod scale;
mod slots;
pub(crate) mod tree;

pub use autoscale::AutoscaleView;
pub use scale::{ScaleError, Scaled};

pub(crate) use process::wait_stopped;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::proxy::EdgeProxy;
use crate::rundir::{RunDir, tail};
use crate::topology::{Health, Piece, Runtime, Topology};

/// The variable that turns the drain of scaled-away replicas off.
pub const UNSAFE_NO_DRAIN_ENV: &str = "FAULTLINE_UNSAFE_NO_DRAIN";

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub run_dir: RunDir,
    /// Directories searched for a command's program before `PATH`.
    pub bin_path: Vec<PathBuf>,
    /// How long a replica has to exit after SIGTERM before it gets SIGKILL.
    pub stop_timeout: Duration,
    /// Interval of the health probe once a replica is up.
    pub health_interval: Duration,
    /// First wait before restarting a crashed replica; doubles per crash in a row.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Route every edge (client service -> server replica) through a fault proxy.
    pub proxies: bool,
    /// How long a replica being scaled away stays up after it has left its callers'
    /// upstream files, so that they notice before it stops (they re-read each second).
    pub drain_grace: Duration,
    /// `FAULTLINE_UNSAFE_NO_DRAIN=1`: a replica scaled away is SIGKILLed at once, still
    /// listed, with its requests in flight; only to show the drain tests catching it.
    pub unsafe_no_drain: bool,
}

impl SupervisorConfig {
    pub fn new(run_dir: RunDir) -> Self {
        Self {
            run_dir,
            bin_path: Vec::new(),
            stop_timeout: Duration::from_secs(5),
            health_interval: Duration::from_secs(1),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            proxies: true,
            drain_grace: Duration::from_secs(3),
            unsafe_no_drain: std::env::var_os(UNSAFE_NO_DRAIN_ENV).is_some_and(|v| v == "1"),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Started, not yet answering its health probe.
    Starting,
    Healthy,
    /// Was healthy, now fails its health probe.
    Unhealthy,
    /// Stopped with SIGSTOP.
    Paused,
    /// Crashed; waiting to be restarted.
    Backoff,
    /// Down and kept down until released.
    Held,
    Stopped,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::Healthy => "healthy",
            ReplicaState::Unhealthy => "unhealthy",
            ReplicaState::Paused => "paused",
            ReplicaState::Backoff => "restarting",
            ReplicaState::Held => "held down",
            ReplicaState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    /// `service-index`, as faults and commands name it.
    pub name: String,
    pub service: String,
    pub index: u32,
    pub zone: String,
    pub addr: SocketAddr,
    pub state: ReplicaState,
    pub pid: Option<u32>,
    /// Times the replica was started again after its first start.
    pub restarts: u32,
    /// Of `restarts`, those after it failed its liveness probe (killed as hung, not
    /// crashed).
    #[serde(default)]
    pub liveness_restarts: u32,
    pub last_exit: Option<String>,
    /// Why its last health probe failed (None once it passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_error: Option<String>,
    pub log: PathBuf,
    /// The container it runs in now (the docker runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL.
    Kill,
    /// SIGTERM.
    Terminate,
    /// SIGSTOP.
    Pause,
    /// SIGCONT.
    Resume,
    /// SIGTERM (SIGKILL after the stop timeout), then start again at once.
    Restart,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("program `{program}` of service `{service}` not found in {searched}")]
    ProgramNotFound {
        service: String,
        program: String,
        searched: String,
    },
    #[error("docker runtime: {0}")]
    Docker(String),
    #[error("cannot find free ports: {0}")]
    Ports(std::io::Error),
    #[error("replica {replica} did not become healthy: {reason}\nlast lines of {}:\n{tail}", log.display())]
    NotReady {
        replica: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no replica named `{0}`")]
    UnknownReplica(String),
    #[error("cannot signal replica {0}: {1}")]
    Signal(String, std::io::Error),
    #[error("replica {0} is held down by {1}; heal that first")]
    Held(String, String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}

/// Who asks for a replica to stay paused or held down: a fault id, or any name a
/// direct caller picks. A replica stays paused while any holder of a pause remains, and
/// down while any holder of a hold remains, so overlapping faults never undo each other.
pub type Holder = str;

pub(crate) enum Command {
    Control {
        action: Action,
        /// For kill and terminate: who holds the replica down afterwards (none: it
        /// restarts). For pause and resume: whose pause it is.
        by: Option<String>,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Release {
        by: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    Stop,
}

pub(crate) struct Replica {
    name: String,
    service: usize,
    index: u32,
    auto_port: bool,
    status: watch::Sender<ReplicaStatus>,
    commands: mpsc::Sender<Command>,
    /// Out of every upstream list: a new replica until it is healthy, or one being
    /// scaled away while it drains.
    unlisted: AtomicBool,
    /// Scaled away and stopped: no longer part of the run (its slot is kept).
    retired: AtomicBool,
}

impl Replica {
    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    fn is_unlisted(&self) -> bool {
        self.unlisted.load(Ordering::Acquire)
    }
}

pub(crate) struct Shared {
    /// The topology as written; what scaling changes is in `live`.
    topology: Topology,
    /// The topology with each service's replica count as it is now (scaling changes
    /// it), which faults are resolved against.
    live: RwLock<Arc<Topology>>,
    /// The fault proxy of every edge, when proxies are on, with what stops it.
    edges: RwLock<Vec<(Arc<EdgeProxy>, CancellationToken)>>,
    /// Where the proxies of new edges listen (the run network's gateway for docker).
    proxy_ip: Option<std::net::IpAddr>,
    config: SupervisorConfig,
    programs: Vec<PathBuf>,
    secrets: HashMap<String, String>,
    replicas: slots::Slots,
    /// The replicas' process trees and the reaper.
    trees: tree::Trees,
    /// Bumped on every status change, for the status file writer and waiters.
    changed: watch::Sender<u64>,
    /// The engine and the run's network, when a service runs on docker.
    docker: Option<docker::DockerRun>,
}

impl Shared {
    fn replica(&self, name: &str) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.name == name)
    }

    /// Every replica's status, in start order, a service's replicas together by
    /// number (replicas added by scaling sit with their service's).
    fn statuses(&self) -> Vec<ReplicaStatus> {
        let mut all: Vec<(usize, u32, ReplicaStatus)> = self
            .replicas
            .iter()
            .map(|r| (r.service, r.index, r.status.borrow().clone()))
            .collect();
        all.sort_by_key(|(s, i, _)| (*s, *i));
        all.into_iter().map(|(_, _, s)| s).collect()
    }

    /// Every edge's proxy, now.
    fn edge_list(&self) -> Vec<Arc<EdgeProxy>> {
        self.edges
            .read()
            .unwrap()
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// The addresses (`host:port`) a replica of `client` is given for `server`: the
    /// proxy of each edge to a replica of `server`, or the replicas themselves without
    /// proxies. For an external `server`, the proxy of the edge to it, or without
    /// proxies its address as written (a host name stays one).
    fn upstream_addrs(&self, client: &str, server: &str) -> Vec<String> {
        let edges = self.edges.read().unwrap();
        if let Some(ext) = self.topology.external(server) {
            let proxy = edges
                .iter()
                .find(|(e, _)| e.client == client && e.server == ext.name);
            return vec![proxy.map_or_else(|| ext.address.clone(), |(e, _)| e.listen.to_string())];
        }
        self.replicas
            .iter()
            .filter(|r| self.topology.services[r.service].name == server && !r.is_unlisted())
            .map(|r| {
                edges
                    .iter()
                    .find(|(e, _)| e.client == client && e.server == r.name)
                    .map_or_else(|| r.status.borrow().addr, |(e, _)| e.listen)
                    .to_string()
            })
            .collect()
    }

    /// Where the addresses of `server` as `client` calls it are kept, one `host:port`
    /// a line (`{upstream-file:NAME}`): the same file for every replica of `client`,
    /// rewritten whenever `server` is scaled.
    fn upstream_file(&self, client: &str, server: &str) -> PathBuf {
        self.config
            .run_dir
            .path()
            .join("upstreams")
            .join(client)
            .join(server)
    }

    /// Writes the upstream file of every edge of the call graph whose server is
    /// `server` (every one when `None`), atomically: a reader sees the old list or the
    /// new one, never part of either.
    fn write_upstream_files(&self, server: Option<&str>) -> std::io::Result<()> {
        for svc in &self.topology.services {
            for callee in svc.calls.iter().chain(&svc.externals) {
                if server.is_some_and(|s| s != callee) {
                    continue;
                }
                let path = self.upstream_file(&svc.name, callee);
                let dir = path.parent().expect("an upstream file has a directory");
                std::fs::create_dir_all(dir)?;
                let mut text = self.upstream_addrs(&svc.name, callee).join("\n");
                text.push('\n');
                let tmp = dir.join(format!(".{callee}.tmp"));
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, &path)?;
            }
        }
        Ok(())
    }

    /// A replica moved to `addr`: point the proxies of its edges there. The edges to
    /// externals never follow a replica (no external is named like one).
    pub(crate) fn retarget(&self, replica: &str, addr: SocketAddr) {
        let external = |e: &EdgeProxy| self.topology.external(&e.server).is_some();
        let edges = self.edge_list();
        for e in edges.iter().filter(|e| e.server == replica && !external(e)) {
            e.set_target(&addr.to_string());
        }
    }

    /// The value of one placeholder for replica `idx`.
    fn lookup(&self, idx: usize, p: &Piece) -> String {
        let r = &self.replicas[idx];
        let svc = &self.topology.services[r.service];
        let status = r.status.borrow();
        match p {
            Piece::Lit(s) => s.clone(),
            Piece::Listen => status.addr.to_string(),
            Piece::Host => status.addr.ip().to_string(),
            Piece::Port => status.addr.port().to_string(),
            Piece::Service => svc.name.clone(),
            Piece::Replica => r.name.clone(),
            Piece::Index => r.index.to_string(),
            Piece::Zone => status.zone.clone(),
            Piece::RunDir => self.config.run_dir.path().display().to_string(),
            Piece::TopologyDir => self.topology.base_dir.display().to_string(),
            Piece::Upstream(s) => self.upstream_addrs(&svc.name, s).join(","),
            // Validation keeps N within the replicas a service may have; past the ones
            // it has, the answer is empty and the program says what it makes of that.
            Piece::UpstreamAt(s, n) => self
                .upstream_addrs(&svc.name, s)
                .get(*n as usize - 1)
                .cloned()
                .unwrap_or_default(),
            Piece::UpstreamFile(s) => self.upstream_file(&svc.name, s).display().to_string(),
            Piece::File(f) => self.file_path(idx, f).display().to_string(),
            Piece::Secret(k) => self.secrets.get(k).cloned().unwrap_or_default(),
        }
    }

    /// Where replica `idx`'s copy of its service's file `name` is written.
    fn file_path(&self, idx: usize, name: &str) -> PathBuf {
        self.config
            .run_dir
            .path()
            .join("files")
            .join(&self.replicas[idx].name)
            .join(name)
    }

    /// How replica `idx` is started, every placeholder filled in.
    fn render(&self, idx: usize) -> Launch {
        let r = &self.replicas[idx];
        let svc = &self.topology.services[r.service];
        let lookup = |p: &Piece| self.lookup(idx, p);
        let args = svc.command[1..].iter().map(|t| t.render(&lookup)).collect();
        let mut env: Vec<(String, String)> = self
            .topology
            .env
            .iter()
            .chain(&svc.env)
            .map(|(k, t)| (k.clone(), t.render(&lookup)))
            .collect();
        env.push(("FAULTLINE_SERVICE".into(), svc.name.clone()));
        env.push(("FAULTLINE_REPLICA".into(), r.name.clone()));
        env.push(("FAULTLINE_ZONE".into(), r.status.borrow().zone.clone()));
        let files = svc
            .files
            .iter()
            .map(|f| (self.file_path(idx, &f.name), f.template.render(&lookup)))
            .collect();
        Launch {
            args,
            env,
            cwd: self.topology.base_dir.join(svc.cwd.render(&lookup)),
            files,
        }
    }

    /// Replica `idx`'s health probe, rendered.
    fn probe(&self, idx: usize) -> probe::Probe {
        let svc = &self.topology.services[self.replicas[idx].service];
        match &svc.health {
            Health::Http(path) => probe::Probe::Http(path.clone()),
            Health::Tcp => probe::Probe::Tcp,
            Health::None => probe::Probe::None,
            Health::Exec { argv, timeout } => {
                let launch = self.render(idx);
                probe::Probe::Exec {
                    argv: argv
                        .iter()
                        .map(|t| t.render(&|p| self.lookup(idx, p)))
                        .collect(),
                    env: launch.env,
                    cwd: launch.cwd,
                    timeout: *timeout,
                }
            }
        }
    }
}

/// A replica's start, rendered: arguments, environment, working directory, and the
/// files to write first.
pub(crate) struct Launch {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: PathBuf,
    pub(crate) files: Vec<(PathBuf, String)>,
}

/// A running topology. Dropping it kills every replica at once; [`Supervisor::shutdown`]
/// stops them gracefully.
pub struct Supervisor {
    shared: Arc<Shared>,
    /// Held by one scaling at a time (`faultline scale`, the autoscaler).
    scaling: tokio::sync::Mutex<()>,
    /// Every scaling so far, for the metrics and the status.
    scalings: Mutex<Vec<Scaled>>,
    /// The autoscaler's last look at each autoscaled service.
    autoscale_views: Mutex<std::collections::BTreeMap<String, AutoscaleView>>,
    /// The autoscaler's task, and what stops it (before the replicas stop).
    autoscaler: Mutex<Option<JoinHandle<()>>>,
    autoscaler_stop: CancellationToken,
    tasks: Mutex<Vec<Option<JoinHandle<()>>>>,
    proxy_tasks: Mutex<Vec<JoinHandle<()>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    cancel: CancellationToken,
}

impl Supervisor {
    /// Starts every replica, dependencies first, and returns once all are healthy. On
    /// failure everything already started is stopped again.
    pub async fn start(
        mut topology: Topology,
        config: SupervisorConfig,
    ) -> Result<Self, StartError> {
        // An adopted Compose project: its containers are the services.
        let adopted = match topology.docker_project.clone() {
            Some(project) => Some(docker::DockerRun::adopt(&project, &mut topology).await?),
            None => None,
        };
        let programs = topology
            .services
            .iter()
            .map(|s| match &s.runtime {
                // Looked up in the image, by the engine.
                Runtime::Docker { .. } | Runtime::Adopted { .. } => {
                    Ok(PathBuf::from(s.command[0].render(&|_| String::new())))
                }
                Runtime::Process => resolve_program(
                    &s.name,
                    &s.command[0].0,
                    &topology.base_dir,
                    &config.bin_path,
                ),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let secrets = make_secrets(&topology);
        let docker = match adopted {
            Some(d) => Some(d),
            None if topology.uses_docker() => {
                Some(docker::DockerRun::open(&topology, config.run_dir.path()).await?)
            }
            None => None,
        };
        // One proxy per edge, bound before anything starts, so clients are given the
        // proxies' addresses from their first start. Beside docker replicas they
        // listen on the run network's gateway, which containers reach too.
        let cancel = CancellationToken::new();
        let proxy_ip = docker.as_ref().map(|d| std::net::IpAddr::V4(d.gateway));
        let made = async {
            let (replicas, receivers) = make_replicas(&topology, &config, docker.as_ref())?;
            let (edges, tasks) = if config.proxies {
                bind_edges(&topology, &replicas, proxy_ip, &cancel).await?
            } else {
                (Vec::new(), Vec::new())
            };
            Ok((replicas, receivers, edges, tasks))
        };
        let (replicas, mut receivers, edges, proxy_tasks) = match made.await {
            Ok(m) => m,
            Err(e) => {
                // The network and the reaper go again; no replica started yet.
                if let Some(d) = &docker {
                    d.close().await;
                }
                return Err(e);
            }
        };
        let trees = tree::Trees::open(&config.bin_path);
        let shared = Arc::new(Shared {
            trees,
            live: RwLock::new(Arc::new(topology.clone())),
            topology,
            edges: RwLock::new(edges),
            proxy_ip,
            config,
            programs,
            secrets,
            replicas: slots::Slots::new(replicas),
            changed: watch::Sender::new(0),
            docker,
        });
        if let Err(e) = shared.write_upstream_files(None) {
            tracing::warn!(error = %e, "cannot write the upstream files");
        }
        let sup = Supervisor {
            scaling: tokio::sync::Mutex::new(()),
            scalings: Mutex::new(Vec::new()),
            autoscale_views: Mutex::new(Default::default()),
            autoscaler: Mutex::new(None),
            autoscaler_stop: cancel.child_token(),
            proxy_tasks: Mutex::new(proxy_tasks),
            tasks: Mutex::new((0..shared.replicas.len()).map(|_| None).collect()),
            writer: Mutex::new(Some(tokio::spawn(write_status(
                shared.clone(),
                cancel.clone(),
            )))),
            shared,
            cancel,
        };
        for level in sup.levels() {
            for &i in &level {
                let rx = receivers[i].take().expect("each replica starts once");
                let runner = replica::Runner::new(sup.shared.clone(), i, rx, sup.cancel.clone());
                sup.tasks.lock().unwrap()[i] = Some(tokio::spawn(runner.run()));
            }
            let waits = level.iter().map(|&i| sup.wait_ready(i));
            let results = futures::future::join_all(waits).await;
            if let Some(err) = results.into_iter().find_map(Result::err) {
                sup.shutdown().await;
                return Err(err);
            }
        }
        Ok(sup)
    }

    /// Replica indices grouped by depth in the call graph: level 0 calls nothing, level
    /// n calls only services of lower levels. Each level starts once the one before is
    /// healthy; replicas within a level start together.
    fn levels(&self) -> Vec<Vec<usize>> {
        let services = &self.shared.topology.services;
        let mut depth: HashMap<&str, usize> = HashMap::new();
        for s in services {
            // Services are in start order, so every callee's depth is known already.
            let d = s
                .calls
                .iter()
                .map(|c| depth[c.as_str()] + 1)
                .max()
                .unwrap_or(0);
            depth.insert(&s.name, d);
        }
        let max = depth.values().copied().max().unwrap_or(0);
        let mut levels = vec![Vec::new(); max + 1];
        for (i, r) in self.shared.replicas.indexed() {
            levels[depth[services[r.service].name.as_str()]].push(i);
        }
        levels
    }

    async fn wait_ready(&self, idx: usize) -> Result<(), StartError> {
        let r = &self.shared.replicas[idx];
        let timeout = self.shared.topology.services[r.service].startup_timeout;
        let mut rx = r.status.subscribe();
        let failed = |s: &ReplicaStatus, reason: String| StartError::NotReady {
            replica: s.name.clone(),
            reason,
            tail: tail(&s.log, 20),
            log: s.log.clone(),
        };
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    match s.state {
                        ReplicaState::Healthy => return Ok(()),
                        // Three failed starts in a row: this is not a slow start.
                        ReplicaState::Backoff if s.restarts >= 2 => {
                            let why = s.last_exit.clone().unwrap_or_default();
                            return Err(failed(
                                &s,
                                format!("it failed to start 3 times (last: {why})"),
                            ));
                        }
                        _ => {}
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(failed(
                        &r.status.borrow(),
                        "its supervisor task ended".into(),
                    ));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => {
                let s = r.status.borrow();
                let health = &self.shared.topology.services[r.service].health;
                let last = s
                    .probe_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!("; last: {e}"));
                Err(failed(
                    &s,
                    format!(
                        "its health probe ({}) did not pass within {}{last}",
                        health.describe(),
                        humantime::format_duration(timeout)
                    ),
                ))
            }
        }
    }

    /// The run's Docker network (`faultline-<run id>`), when a service runs on docker.
    pub fn docker_network(&self) -> Option<&str> {
        self.shared
            .docker
            .as_ref()
            .map(|d| d.network.as_str())
            .filter(|n| !n.is_empty())
    }

    /// The run id its containers and network are labelled with (`faultline.run`).
    pub fn docker_run_id(&self) -> Option<&str> {
        self.shared.docker.as_ref().map(|d| d.run_id.as_str())
    }

    /// Whether edges run through fault proxies.
    pub fn proxies(&self) -> bool {
        self.shared.config.proxies
    }

    /// The fault proxy of every edge (empty without proxies), as they are now.
    pub fn edges(&self) -> Vec<Arc<EdgeProxy>> {
        self.shared.edge_list()
    }

    /// The topology with each service's replica count as it is now.
    pub fn topology(&self) -> Arc<Topology> {
        self.shared.live.read().unwrap().clone()
    }

    pub fn run_dir(&self) -> &Path {
        self.shared.config.run_dir.path()
    }

    /// Every replica's status, in start order (a replica scaled away is gone).
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.shared.statuses()
    }

    pub fn replica_status(&self, name: &str) -> Option<ReplicaStatus> {
        self.shared.replica(name).map(|r| r.status.borrow().clone())
    }

    /// The address of the entrypoint service's first replica.
    pub fn entrypoint(&self) -> Option<SocketAddr> {
        let ep = self.shared.topology.entrypoint.as_deref()?;
        self.shared
            .replicas
            .iter()
            .find(|r| self.shared.topology.services[r.service].name == ep)
            .map(|r| r.status.borrow().addr)
    }

    /// Waits until replica `name` satisfies `pred`, for at most `timeout`; returns its
    /// status then. Driven by status changes, not polling.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&ReplicaStatus) -> bool,
    ) -> Option<ReplicaStatus> {
        let mut rx = self.shared.replica(name)?.status.subscribe();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Some(s.clone());
                    }
                }
                rx.changed().await.ok()?;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Applies `action` to replica `name` on behalf of `by` (see [`Command::Control`]).
    async fn control(
        &self,
        name: &str,
        action: Action,
        by: Option<&Holder>,
    ) -> Result<(), ControlError> {
        let r = self
            .shared
            .replica(name)
            .ok_or_else(|| ControlError::UnknownReplica(name.to_owned()))?;
        let (reply, rx) = oneshot::channel();
        r.commands
            .send(Command::Control {
                action,
                by: by.map(str::to_owned),
                reply,
            })
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        rx.await.map_err(|_| ControlError::ShuttingDown)?
    }

    /// SIGKILL. With `hold`, the replica stays down until that holder releases it (and
    /// every other holder has too); without, it restarts.
    pub async fn kill(&self, name: &str, hold: Option<&Holder>) -> Result<(), ControlError> {
        self.control(name, Action::Kill, hold).await
    }

    /// SIGTERM; `hold` as for [`Supervisor::kill`].
    pub async fn terminate(&self, name: &str, hold: Option<&Holder>) -> Result<(), ControlError> {
        self.control(name, Action::Terminate, hold).await
    }

    /// SIGSTOP on behalf of `by`. The replica stays stopped, across restarts too, until
    /// every holder of a pause has resumed it. A replica that is down is paused as soon
    /// as it starts again.
    pub async fn pause(&self, name: &str, by: &Holder) -> Result<(), ControlError> {
        self.control(name, Action::Pause, Some(by)).await
    }

    /// Ends `by`'s pause: SIGCONT once no other pause holds the replica.
    pub async fn resume(&self, name: &str, by: &Holder) -> Result<(), ControlError> {
        self.control(name, Action::Resume, Some(by)).await
    }

    /// SIGTERM (SIGKILL after the stop timeout) and start again. Refused for a replica
    /// held down: the hold is someone else's to end.
    pub async fn restart(&self, name: &str) -> Result<(), ControlError> {
        self.control(name, Action::Restart, None).await
    }

    /// Ends `by`'s hold: a held-down replica starts again once no other hold remains.
    pub async fn release(&self, name: &str, by: &Holder) -> Result<(), ControlError> {
        let r = self
            .shared
            .replica(name)
            .ok_or_else(|| ControlError::UnknownReplica(name.to_owned()))?;
        let (reply, rx) = oneshot::channel();
        r.commands
            .send(Command::Release {
                by: by.to_owned(),
                reply,
            })
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        rx.await.map_err(|_| ControlError::ShuttingDown)?
    }

    /// Starts the autoscaler, when a service has `autoscale`: it holds the supervisor
    /// weakly and ends with [`Supervisor::shutdown`] or the supervisor's drop.
    pub fn start_autoscaler(self: &Arc<Self>) {
        if !self
            .shared
            .topology
            .services
            .iter()
            .any(|s| s.autoscale.is_some())
        {
            return;
        }
        let task = autoscale::run(Arc::downgrade(self), self.autoscaler_stop.clone());
        *self.autoscaler.lock().unwrap() = Some(tokio::spawn(task));
    }

    /// What the autoscaler last saw of each autoscaled service.
    pub fn autoscale_views(&self) -> Vec<AutoscaleView> {
        self.autoscale_views
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }

    /// Stops every replica gracefully, callers before the services they call.
    pub async fn shutdown(&self) {
        self.autoscaler_stop.cancel();
        let autoscaler = self.autoscaler.lock().unwrap().take();
        if let Some(a) = autoscaler {
            let _ = a.await;
        }
        for level in self.levels().into_iter().rev() {
            let mut handles = Vec::new();
            for i in level {
                let _ = self.shared.replicas[i].commands.send(Command::Stop).await;
                if let Some(h) = self.tasks.lock().unwrap().get_mut(i).and_then(Option::take) {
                    handles.push(h);
                }
            }
            for h in handles {
                let _ = h.await;
            }
        }
        self.cancel.cancel();
        let proxies: Vec<_> = self.proxy_tasks.lock().unwrap().drain(..).collect();
        for p in proxies {
            let _ = p.await;
        }
        let writer = self.writer.lock().unwrap().take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        self.shared.trees.close().await;
        if let Some(d) = &self.shared.docker {
            d.close().await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Replica tasks kill their children at once on cancellation; `kill_on_drop`
        // covers a runtime that is going away too.
        self.cancel.cancel();
    }
}

fn resolve_program(
    service: &str,
    program: &[Piece],
    base_dir: &Path,
    bin_path: &[PathBuf],
) -> Result<PathBuf, StartError> {
    let program = match program {
        [Piece::Lit(p)] => p.clone(),
        _ => unreachable!("validation keeps placeholders out of the program"),
    };
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = base_dir.join(&program);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(StartError::ProgramNotFound {
                service: service.into(),
                program,
                searched: p.display().to_string(),
            })
        };
    }
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let dirs: Vec<&PathBuf> = bin_path.iter().chain(&path_dirs).collect();
    dirs.iter()
        .map(|d| d.join(&program))
        .find(|p| is_exec(p))
        .ok_or_else(|| StartError::ProgramNotFound {
            service: service.into(),
            program,
            searched: if bin_path.is_empty() {
                "PATH".into()
            } else {
                format!(
                    "{} or PATH",
                    bin_path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        })
}

/// The receiving end of each replica's command channel, taken by its task at start.
type Receivers = Vec<Option<mpsc::Receiver<Command>>>;

/// Every replica of the topology, in start order, with the receiving end of its
/// command channel.
fn make_replicas(
    topology: &Topology,
    config: &SupervisorConfig,
    docker: Option<&docker::DockerRun>,
) -> Result<(Vec<Replica>, Receivers), StartError> {
    let mut replicas = Vec::new();
    let mut receivers = Vec::new();
    for (si, svc) in topology.services.iter().enumerate() {
        let in_docker = !matches!(svc.runtime, Runtime::Process);
        let ports = if in_docker {
            vec![
                if svc.port == 0 {
                    docker::DEFAULT_PORT
                } else {
                    svc.port
                };
                svc.replicas as usize
            ]
        } else if svc.port == 0 {
            ports::free_ports(svc.host, svc.replicas as usize).map_err(StartError::Ports)?
        } else {
            vec![svc.port]
        };
        for index in 1..=svc.replicas {
            let (host, port) = match (&svc.runtime, docker) {
                (Runtime::Adopted { containers }, _) => {
                    let a = containers[index as usize - 1].addr;
                    (a.ip(), a.port())
                }
                (_, Some(d)) if in_docker => (
                    std::net::IpAddr::V4(d.address()?),
                    ports[index as usize - 1],
                ),
                _ => (svc.host, ports[index as usize - 1]),
            };
            let (replica, rx) =
                new_replica(topology, si, index, SocketAddr::new(host, port), config);
            replicas.push(replica);
            receivers.push(Some(rx));
        }
    }
    Ok((replicas, receivers))
}

/// Replica `index` of service `si` at `addr`, not started, and the receiving end of
/// its command channel.
fn new_replica(
    topology: &Topology,
    si: usize,
    index: u32,
    addr: SocketAddr,
    config: &SupervisorConfig,
) -> (Replica, mpsc::Receiver<Command>) {
    let svc = &topology.services[si];
    let name = svc.replica_name(index);
    let (tx, rx) = mpsc::channel(16);
    let status = ReplicaStatus {
        log: config.run_dir.log_path(&name),
        name: name.clone(),
        service: svc.name.clone(),
        index,
        zone: svc.zone_of(index).to_owned(),
        addr,
        state: ReplicaState::Stopped,
        pid: None,
        restarts: 0,
        liveness_restarts: 0,
        last_exit: None,
        probe_error: None,
        container: None,
    };
    let replica = Replica {
        name,
        service: si,
        index,
        auto_port: svc.port == 0 && matches!(svc.runtime, Runtime::Process),
        status: watch::Sender::new(status),
        commands: tx,
        unlisted: AtomicBool::new(false),
        retired: AtomicBool::new(false),
    };
    (replica, rx)
}

/// A fault proxy for every edge (client service -> server replica, and client
/// service -> external, named `client->NAME`), bound and running until `cancel`.
async fn bind_edges(
    topology: &Topology,
    replicas: &[Replica],
    proxy_ip: Option<std::net::IpAddr>,
    cancel: &CancellationToken,
) -> Result<
    (
        Vec<(Arc<EdgeProxy>, CancellationToken)>,
        Vec<JoinHandle<()>>,
    ),
    StartError,
> {
    let mut edges = Vec::new();
    let mut tasks = Vec::new();
    for svc in &topology.services {
        for callee in &svc.calls {
            for r in replicas
                .iter()
                .filter(|r| topology.services[r.service].name == *callee)
            {
                let (edge, task) = bind_edge(&svc.name, r, proxy_ip, cancel.child_token()).await?;
                tasks.push(task);
                edges.push(edge);
            }
        }
        for name in &svc.externals {
            let Some(ext) = topology.external(name) else {
                continue;
            };
            let ip = proxy_ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
            let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(StartError::Ports)?;
            let listen = listener.local_addr().map_err(StartError::Ports)?;
            let proxy = EdgeProxy::new(
                format!("{}->{name}", svc.name),
                &svc.name,
                name,
                listen,
                &ext.address,
            );
            let stop = cancel.child_token();
            tasks.push(tokio::spawn(proxy.clone().run(listener, stop.clone())));
            edges.push((proxy, stop));
        }
    }
    Ok((edges, tasks))
}

/// The proxy of edge `client -> r`, bound and running until `stop`.
async fn bind_edge(
    client: &str,
    r: &Replica,
    proxy_ip: Option<std::net::IpAddr>,
    stop: CancellationToken,
) -> Result<((Arc<EdgeProxy>, CancellationToken), JoinHandle<()>), StartError> {
    let target = r.status.borrow().addr;
    let listen = SocketAddr::new(proxy_ip.unwrap_or(target.ip()), 0);
    let (proxy, listener) = EdgeProxy::bind(client, &r.name, listen, target)
        .await
        .map_err(StartError::Ports)?;
    let task = tokio::spawn(proxy.clone().run(listener, stop.clone()));
    Ok(((proxy, stop), task))
}

/// One random value per `{secret:NAME}` used anywhere in the topology.
fn make_secrets(topology: &Topology) -> HashMap<String, String> {
    let templates = topology.env.iter().map(|(_, t)| t).chain(
        topology
            .services
            .iter()
            .flat_map(|s| s.command.iter().chain(s.env.iter().map(|(_, t)| t))),
    );
    let mut secrets = HashMap::new();
    for t in templates {
        for p in &t.0 {
            if let Piece::Secret(k) = p {
                secrets.entry(k.clone()).or_insert_with(random_hex);
            }
        }
    }
    secrets
}

fn random_hex() -> String {
    use std::io::Read;
    let mut buf = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        // Not reachable on Linux; fall back to a non-cryptographic generator rather
        // than refusing to start.
        let mut rng = fastrand::Rng::new();
        rng.fill(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps `status.json` in the run directory current.
async fn write_status(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut rx = shared.changed.subscribe();
    loop {
        let statuses = shared.statuses();
        let doc = serde_json::json!({
            "topology": shared.topology.name,
            "pid": std::process::id(),
            "replicas": statuses,
        });
        if let Err(e) = shared.config.run_dir.write_atomic(
            "status.json",
            serde_json::to_vec_pretty(&doc)
                .unwrap_or_default()
                .as_slice(),
        ) {
            tracing::warn!(error = %e, "cannot write status.json");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        // Coalesce bursts of changes (a whole level starting) into one write.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
