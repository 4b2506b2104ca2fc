//! The fault engine: resolves a fault's target, applies it through the supervisor, the
//! fault proxies or the broker, keeps it as a lease that heals when it runs out, and
//! records everything in the journal first.
//!
//! # Layout
//!
//! - [`kind`]: how a fault kind is described (targets, parameters, bounds, help).
//! - [`kinds`]: every kind's description, the one list the API, CLI, files, schema and
//!   README read.
//! - [`spec`]: fault requests, typed, as the engine executes them.
//! - [`journal`]: the append-only record that makes healing survive an agent crash.
//! - [`containers`]: faults on Docker containers through the engine's API;
//!   [`netns`]: network faults inside a container's network namespace, and the
//!   mechanisms this machine has for them.

pub mod containers;
pub mod journal;
pub mod kind;
pub mod kinds;
pub mod netns;
pub mod procs;
pub mod spec;
pub mod targets;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::proxy::runtime::{ProxyError, ProxyView, RuntimeProxies};
use crate::proxy::{EdgeProxy, HttpMatch, Toxic, ToxicKind};
use crate::supervisor::Supervisor;
pub use journal::{Journal, Undo};
pub use spec::{Directions, FaultRequest, FaultSpec, QueueSide};
use targets::{Resolved, Resolver};

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnknownTarget(String),
    #[error("no active fault {0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
    /// The fault conflicts with one in effect (a restart of a replica a fault holds down).
    #[error("{0}")]
    Conflict(String),
    /// The cap on active faults is reached.
    #[error("too many active faults: the limit is {0} (--max-faults); heal some first")]
    TooMany(usize),
}

/// A fault as the API reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FaultInfo {
    pub id: String,
    pub kind: String,
    pub target: String,
    pub request: FaultRequest,
    pub applied_ms: u64,
    pub expires_ms: u64,
    pub remaining_ms: u64,
    /// Set once healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed_ms: Option<u64>,
}

struct Active {
    request: FaultRequest,
    undo: Undo,
    applied_ms: u64,
    expires: Instant,
    /// Its undo is under way: it stays listed (so "no faults" means everything is
    /// undone) but can be neither renewed nor healed again.
    healing: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealLabels {
    pub kind: String,
    pub reason: String,
}

/// Counters of the engine (`faultline_agent_faults_*`).
#[derive(Clone, Default)]
pub struct FaultMetrics {
    pub injected: Family<KindLabels, Counter>,
    pub healed: Family<HealLabels, Counter>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The most faults in effect at once, unless configured otherwise.
pub const DEFAULT_MAX_FAULTS: usize = 1000;

pub struct Faults {
    sup: Arc<Supervisor>,
    journal: Journal,
    active: Mutex<HashMap<String, Active>>,
    /// Ids drawn for faults being applied, not yet active: no two faults share an id.
    pending: Mutex<HashSet<String>>,
    /// For each process outside the topology, the faults that pause it: it gets
    /// SIGCONT only when the last of them heals.
    pid_pauses: Mutex<HashMap<i32, BTreeSet<String>>>,
    max_faults: usize,
    changed: Notify,
    http: reqwest::Client,
    /// The proxies made at run time; they stop with the engine's `shutdown`.
    proxies: Arc<RuntimeProxies>,
    /// The Docker engine, for `container:NAME` targets, and who pauses which container.
    containers: containers::Containers,
    pub metrics: FaultMetrics,
}

impl Faults {
    /// The engine over `sup`, journalling into `journal` (see [`Journal::open`]), with
    /// at most `max_faults` faults in effect at once.
    pub fn new(sup: Arc<Supervisor>, journal: Journal, max_faults: usize) -> Arc<Self> {
        Arc::new(Self {
            sup,
            journal,
            active: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashSet::new()),
            pid_pauses: Mutex::new(HashMap::new()),
            max_faults,
            changed: Notify::new(),
            proxies: RuntimeProxies::new(),
            containers: containers::Containers::default(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            metrics: FaultMetrics::default(),
        })
    }

    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.sup
    }

    pub fn proxies(&self) -> &Arc<RuntimeProxies> {
        &self.proxies
    }

    /// Every fault proxy: the topology's edges, then the proxies made at run time.
    pub fn edges(&self) -> Vec<Arc<EdgeProxy>> {
        let mut all = self.sup.edges().to_vec();
        all.extend(self.proxies.edges());
        all
    }

    /// Makes a proxy at run time (see [`RuntimeProxies::create`]); its name may not be
    /// one the topology uses for a service, replica or external.
    pub async fn create_proxy(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
        enabled: bool,
    ) -> Result<ProxyView, ProxyError> {
        let topology = self.sup.topology();
        let resolver = Resolver::new(&topology, self.sup.proxies());
        if resolver.service_of(name).is_some() || topology.external(name).is_some() {
            return Err(ProxyError::Invalid(format!(
                "`{name}` names a service, replica or external of topology `{}`; give the proxy another name",
                topology.name
            )));
        }
        self.proxies.create(name, listen, upstream, enabled).await
    }

    /// Deletes a run-time proxy, healing first every fault that acts on it.
    pub async fn delete_proxy(&self, name: &str) -> Result<(), ProxyError> {
        if self.proxies.get(name).is_none() {
            return Err(ProxyError::NotFound(name.to_owned()));
        }
        let on_it: Vec<String> = self
            .active
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, a)| matches!(&a.undo, Undo::Toxics { edges } if edges.iter().any(|e| e == name)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in on_it {
            let _ = self.heal(&id, "proxy deleted").await;
        }
        self.proxies.delete(name).await
    }

    /// Whether fault `id` is in effect.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.lock().unwrap().contains_key(id)
    }

    fn info(id: &str, a: &Active, now: Instant) -> FaultInfo {
        let remaining = a.expires.saturating_duration_since(now);
        let target = match &a.request.spec {
            FaultSpec::Partition { with } if !with.trim().is_empty() => {
                format!("{}<->{with}", a.request.target)
            }
            _ => a.request.target.clone(),
        };
        FaultInfo {
            id: id.to_owned(),
            kind: a.request.spec.kind().to_owned(),
            target,
            request: a.request.clone(),
            applied_ms: a.applied_ms,
            expires_ms: now_ms() + remaining.as_millis() as u64,
            remaining_ms: remaining.as_millis() as u64,
            healed_ms: None,
        }
    }

    pub fn list(&self) -> Vec<FaultInfo> {
        let now = Instant::now();
        let mut v: Vec<FaultInfo> = self
            .active
            .lock()
            .unwrap()
            .iter()
            .map(|(id, a)| Self::info(id, a, now))
            .collect();
        v.sort_by_key(|f| f.applied_ms);
        v
    }

    /// Applies a fault; it is recorded in the journal before it takes effect.
    pub async fn apply(&self, request: FaultRequest) -> Result<FaultInfo, FaultError> {
        request.validate().map_err(FaultError::BadRequest)?;
        let id = self.reserve_id()?;
        let result = self.apply_as(&id, request).await;
        self.pending.lock().unwrap().remove(&id);
        let (info, instant) = result?;
        if instant {
            // Nothing to undo (a kill the supervisor recovers from, injected messages, a
            // restart): the fault is over as soon as it took effect.
            return self.heal(&id, "done").await;
        }
        self.changed.notify_one();
        Ok(info)
    }

    /// A fresh id of 64 random bits, held until the fault is active or refused; refused
    /// when the cap on faults in effect is reached.
    fn reserve_id(&self) -> Result<String, FaultError> {
        let active = self.active.lock().unwrap();
        let mut pending = self.pending.lock().unwrap();
        if active.len() + pending.len() >= self.max_faults {
            return Err(FaultError::TooMany(self.max_faults));
        }
        loop {
            let id = format!("f{:016x}", fastrand::u64(..));
            if !active.contains_key(&id) && pending.insert(id.clone()) {
                return Ok(id);
            }
        }
    }

    /// Plans, journals and executes `request` as fault `id`; on success it is active.
    /// Returns its info and whether it is instant (nothing to undo).
    async fn apply_as(
        &self,
        id: &str,
        request: FaultRequest,
    ) -> Result<(FaultInfo, bool), FaultError> {
        let plan = self.plan(id, &request).await?;
        let ttl = request.ttl();
        let applied_ms = now_ms();
        self.journal
            .append(&journal::Entry::Applied {
                id: id.to_owned(),
                request: request.clone(),
                undo: plan.undo.clone(),
                applied_ms,
                expires_ms: applied_ms + ttl.as_millis() as u64,
            })
            .map_err(|e| FaultError::Failed(format!("cannot write the fault journal: {e}")))?;
        if let Err(e) = self.execute(id, &plan).await {
            self.undo(id, &plan.undo).await;
            let _ = self.journal.append(&journal::Entry::Healed {
                id: id.to_owned(),
                healed_ms: now_ms(),
                reason: "failed".into(),
            });
            return Err(e);
        }
        self.metrics
            .injected
            .get_or_create(&KindLabels {
                kind: request.spec.kind().into(),
            })
            .inc();
        tracing::info!(
            fault = id,
            kind = request.spec.kind(),
            target = request.target,
            "fault applied"
        );
        let active = Active {
            request,
            undo: plan.undo,
            applied_ms,
            expires: Instant::now() + ttl,
            healing: false,
        };
        let instant = active.undo == Undo::Nothing;
        let info = Self::info(id, &active, Instant::now());
        self.active.lock().unwrap().insert(id.to_owned(), active);
        Ok((info, instant))
    }

    /// Extends a fault's lease by `ttl` (its own TTL when `None`) from now.
    pub fn renew(&self, id: &str, ttl: Option<Duration>) -> Result<FaultInfo, FaultError> {
        let mut active = self.active.lock().unwrap();
        let a = active
            .get_mut(id)
            .filter(|a| !a.healing)
            .ok_or_else(|| FaultError::NotFound(id.to_owned()))?;
        let ttl = ttl.unwrap_or_else(|| a.request.ttl());
        if ttl.is_zero() || ttl > spec::MAX_TTL {
            return Err(FaultError::BadRequest(
                "`ttl_ms` must be from 1 ms to 24 hours".into(),
            ));
        }
        a.expires = Instant::now() + ttl;
        let _ = self.journal.append(&journal::Entry::Renewed {
            id: id.to_owned(),
            expires_ms: now_ms() + ttl.as_millis() as u64,
        });
        let info = Self::info(id, a, Instant::now());
        drop(active);
        self.changed.notify_one();
        Ok(info)
    }

    /// Undoes fault `id`. It stays in the listing until its undo is done, so a caller
    /// that sees no fault listed knows that every fault's effect is gone.
    pub async fn heal(&self, id: &str, reason: &str) -> Result<FaultInfo, FaultError> {
        let (mut info, undo, kind) = {
            let mut active = self.active.lock().unwrap();
            let a = active
                .get_mut(id)
                .filter(|a| !a.healing)
                .ok_or_else(|| FaultError::NotFound(id.to_owned()))?;
            a.healing = true;
            let info = Self::info(id, a, Instant::now());
            (info, a.undo.clone(), a.request.spec.kind())
        };
        self.undo(id, &undo).await;
        self.active.lock().unwrap().remove(id);
        let healed_ms = now_ms();
        info.healed_ms = Some(healed_ms);
        if let Err(e) = self.journal.append(&journal::Entry::Healed {
            id: id.to_owned(),
            healed_ms,
            reason: reason.to_owned(),
        }) {
            tracing::error!(fault = id, error = %e, "cannot record a heal in the journal");
        }
        self.metrics
            .healed
            .get_or_create(&HealLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
        tracing::info!(fault = id, reason, "fault healed");
        self.changed.notify_one();
        Ok(info)
    }

    pub async fn heal_all(&self, reason: &str) -> Vec<FaultInfo> {
        let ids: Vec<String> = self.active.lock().unwrap().keys().cloned().collect();
        let mut healed = Vec::new();
        for id in ids {
            if let Ok(f) = self.heal(&id, reason).await {
                healed.push(f);
            }
        }
        healed
    }

    /// Heals faults whose lease ran out, until `shutdown`; then heals everything.
    pub async fn run_leases(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self
                .active
                .lock()
                .unwrap()
                .values()
                .filter(|a| !a.healing)
                .map(|a| a.expires)
                .min();
            let changed = self.changed.notified();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed => continue,
                _ = sleep_until_opt(next) => {}
            }
            let now = Instant::now();
            let expired: Vec<String> = self
                .active
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, a)| a.expires <= now && !a.healing)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                let _ = self.heal(&id, "expired").await;
            }
        }
        self.heal_all("shutdown").await;
        self.proxies.shutdown().await;
    }

    /// Undoes what fault `id` did, except what another fault in effect still needs: a
    /// replica or process stays paused, and a replica held down, while any fault pauses
    /// or holds it (the supervisor and `pid_pauses` keep who holds what).
    async fn undo(&self, id: &str, undo: &Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Release { replicas } => {
                for r in replicas {
                    let _ = self.sup.release(r, id).await;
                }
            }
            Undo::Resume { replicas } => {
                for r in replicas {
                    let _ = self.sup.resume(r, id).await;
                }
            }
            Undo::ResumePids { pids } => {
                let mut pauses = self.pid_pauses.lock().unwrap();
                for pid in pids {
                    let Some(by) = pauses.get_mut(&(*pid as i32)) else {
                        continue;
                    };
                    by.remove(id);
                    if by.is_empty() {
                        pauses.remove(&(*pid as i32));
                        let _ = nix::sys::signal::kill(Pid::from_raw(*pid as i32), Signal::SIGCONT);
                    }
                }
            }
            Undo::Toxics { edges } => {
                for e in self.edges().iter().filter(|e| edges.contains(&e.name)) {
                    e.remove(id);
                }
            }
            Undo::UnpauseContainers { containers } => {
                for c in containers {
                    self.containers.unpause(id, c).await;
                }
            }
            Undo::StartContainers { containers } => {
                for c in containers {
                    self.containers.start(c).await;
                }
            }
            Undo::ContainerNetwork {
                rules,
                qdiscs,
                reconnect,
            } => self.containers.undo_net(id, rules, qdiscs, reconnect).await,
        }
    }

    /// A network fault inside container `name`: refused when a mechanism it needs is
    /// missing or the container is not running; otherwise its rules, qdiscs and
    /// disconnects, all in its undo before anything is done.
    async fn plan_container_network(
        &self,
        id: &str,
        name: String,
        spec: &FaultSpec,
    ) -> Result<Plan, FaultError> {
        use netns::Need::{Iptables, Netem, Nsenter, Tbf, Tc};
        let peers = match spec {
            FaultSpec::Partition { with } => with
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let needs: &[netns::Need] = match spec {
            FaultSpec::Loss { .. } | FaultSpec::Reset { .. } => &[Nsenter, Iptables],
            FaultSpec::Bandwidth { .. } => &[Nsenter, Tc, Tbf],
            FaultSpec::Latency { .. } => &[Nsenter, Tc, Netem],
            _ if peers.iter().any(|p| p.starts_with("container:")) => &[Nsenter, Iptables],
            // Disconnects go through the engine alone.
            _ => &[],
        };
        self.containers
            .mechanisms()
            .await
            .require(spec.kind(), needs)
            .map_err(FaultError::BadRequest)?;
        let me = self.containers.running(&name).await?;
        let mut net = containers::NetFault::default();
        let rules = |pid: u32, rules: Vec<netns::Rule>| rules.into_iter().map(move |r| (pid, r));
        match spec {
            FaultSpec::Loss { percent, direction } => net
                .rules
                .extend(rules(me.pid, netns::loss(id, &name, *percent, *direction))),
            FaultSpec::Reset { direction, .. } => net.rules.extend(rules(
                me.pid,
                netns::reset(id, &name, direction.on_container()),
            )),
            FaultSpec::Bandwidth { rate, .. } => {
                net.qdiscs = qdiscs(&name, me.pid, &netns::tbf(*rate))?;
            }
            FaultSpec::Latency {
                delay_ms,
                jitter_ms,
                ..
            } => net.qdiscs = qdiscs(&name, me.pid, &netns::netem(*delay_ms, *jitter_ms))?,
            FaultSpec::Partition { .. } if peers.is_empty() => {
                if me.links.is_empty() {
                    return Err(FaultError::BadRequest(format!(
                        "container `{name}` is on no network: there is nothing to partition it from"
                    )));
                }
                net.disconnect = me.links.clone();
            }
            FaultSpec::Partition { .. } => {
                for peer in &peers {
                    if let Some(network) = peer.strip_prefix("network:") {
                        let link = me.links.iter().find(|l| l.network == network).ok_or_else(|| {
                            FaultError::BadRequest(format!(
                                "container `{name}` is not on network `{network}`; it is on: {}",
                                networks_of(&me)
                            ))
                        })?;
                        net.disconnect.push(link.clone());
                        continue;
                    }
                    let other = peer.trim_start_matches("container:");
                    let them = self.containers.running(other).await?;
                    let (mine, theirs) = (me.addresses(), them.addresses());
                    if mine.is_empty() || theirs.is_empty() {
                        let empty = if mine.is_empty() { &name } else { other };
                        return Err(FaultError::BadRequest(format!(
                            "container `{empty}` has no IPv4 address: there is nothing to cut (partition it from its networks instead)"
                        )));
                    }
                    net.rules
                        .extend(rules(me.pid, netns::cut(id, &name, &theirs)));
                    net.rules
                        .extend(rules(them.pid, netns::cut(id, other, &mine)));
                }
            }
            _ => unreachable!("only network kinds reach a container's namespace"),
        }
        Ok(Plan {
            undo: Undo::ContainerNetwork {
                rules: net.rules.iter().map(|(_, r)| r.clone()).collect(),
                qdiscs: net.qdiscs.iter().map(|(_, q, _)| q.clone()).collect(),
                reconnect: net.disconnect.clone(),
            },
            action: Action::ContainerNet(net),
        })
    }

    /// Finds the mechanisms of network faults on containers (once; the agent does it
    /// at start, so its status reports them).
    pub async fn detect_mechanisms(&self) -> &netns::Mechanisms {
        self.containers.mechanisms().await
    }

    /// The mechanisms of network faults on containers, once found.
    pub fn mechanisms(&self) -> Option<netns::Mechanisms> {
        self.containers.detected().cloned()
    }

    /// Resolves a request into the actions to take and their undo, without acting
    /// (a container is looked at: its namespace, its networks).
    async fn plan(&self, id: &str, req: &FaultRequest) -> Result<Plan, FaultError> {
        let resolved = Resolver::new(&self.sup.topology(), self.sup.proxies())
            .with_proxies(self.proxies.names())
            .resolve(req)?;
        match resolved {
            Resolved::Process { target, tree } => {
                let pids = procs::find(&target, tree, &req.target)?;
                Ok(plan_processes(pids, &req.spec))
            }
            Resolved::Replicas(replicas) => Ok(plan_replicas(replicas, &req.spec)),
            Resolved::Container(name) => match &req.spec {
                FaultSpec::Kill { .. }
                | FaultSpec::Terminate { .. }
                | FaultSpec::Pause
                | FaultSpec::Restart => Ok(plan_container(name, &req.spec)),
                spec => self.plan_container_network(id, name, spec).await,
            },
            Resolved::Edges(names) => {
                let edges: Vec<Arc<EdgeProxy>> = self
                    .edges()
                    .into_iter()
                    .filter(|e| names.contains(&e.name))
                    .collect();
                let seed = req.seed.unwrap_or_else(|| fastrand::u64(..));
                Ok(Plan::on_edges(edges, toxics(id, seed, &req.spec)))
            }
            Resolved::Queue { broker } => {
                let FaultSpec::Poison { count } = req.spec else {
                    unreachable!("only poison resolves to a queue")
                };
                let addrs = self
                    .sup
                    .status()
                    .into_iter()
                    .filter(|r| r.service == broker)
                    .map(|r| r.addr)
                    .collect();
                Ok(Plan {
                    undo: Undo::Nothing,
                    action: Action::Poison(addrs, req.target.clone(), count),
                })
            }
        }
    }

    async fn execute(&self, id: &str, plan: &Plan) -> Result<(), FaultError> {
        let failed = |e: crate::supervisor::ControlError| match e {
            crate::supervisor::ControlError::Held(..) => FaultError::Conflict(e.to_string()),
            e => FaultError::Failed(e.to_string()),
        };
        match &plan.action {
            Action::Stop(replicas, signal, hold) => {
                let hold = hold.then_some(id);
                // Together: a zone outage takes every replica down at once.
                let calls = replicas.iter().map(|r| async move {
                    if *signal == Signal::SIGKILL {
                        self.sup.kill(r, hold).await
                    } else {
                        self.sup.terminate(r, hold).await
                    }
                });
                for r in futures::future::join_all(calls).await {
                    r.map_err(failed)?;
                }
            }
            Action::Pause(replicas) => {
                let calls = replicas.iter().map(|r| self.sup.pause(r, id));
                for r in futures::future::join_all(calls).await {
                    r.map_err(failed)?;
                }
            }
            Action::Restart(replicas) => {
                for r in
                    futures::future::join_all(replicas.iter().map(|r| self.sup.restart(r))).await
                {
                    r.map_err(failed)?;
                }
            }
            Action::SignalPids(pids, signal) => {
                // Parents first: a parent stopped or gone starts no new child. A process
                // of the tree that ended meanwhile is no failure; the first one is.
                for (i, pid) in pids.iter().enumerate() {
                    match nix::sys::signal::kill(Pid::from_raw(*pid), *signal) {
                        Ok(()) => {}
                        Err(nix::errno::Errno::ESRCH) if i > 0 => {}
                        Err(e) => {
                            return Err(FaultError::Failed(format!(
                                "cannot signal pid {pid}: {e}"
                            )));
                        }
                    }
                }
            }
            Action::PausePids(pids) => {
                // Under the lock, so a heal of another pause of the same process cannot
                // slip its SIGCONT in after this SIGSTOP. Parents first, as above.
                let mut stopping = Vec::new();
                {
                    let mut pauses = self.pid_pauses.lock().unwrap();
                    for (i, pid) in pids.iter().enumerate() {
                        let by = pauses.entry(*pid).or_default();
                        if by.is_empty() {
                            match nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGSTOP) {
                                Ok(()) => stopping.push(*pid),
                                Err(nix::errno::Errno::ESRCH) if i > 0 => {}
                                Err(e) => {
                                    return Err(FaultError::Failed(format!(
                                        "cannot signal pid {pid}: {e}"
                                    )));
                                }
                            }
                        }
                        by.insert(id.to_owned());
                    }
                }
                // SIGSTOP lands asynchronously: the pause is in effect when the call
                // answers, as for replicas.
                for pid in stopping {
                    crate::supervisor::wait_stopped(pid as u32, std::time::Duration::from_secs(1))
                        .await;
                }
            }
            Action::Toxics(edges, toxics) => {
                for e in edges {
                    e.add(toxics);
                }
            }
            Action::Container(name, op) => self.containers.apply(id, name, *op).await?,
            Action::ContainerNet(net) => self.containers.apply_net(id, net).await?,
            Action::Poison(addrs, queue, count) => {
                let addr = addrs
                    .first()
                    .ok_or_else(|| FaultError::Failed("the broker has no replica".into()))?;
                let resp = self
                    .http
                    .post(format!("http://{addr}/v1/admin/queues/{queue}/poison"))
                    .json(&serde_json::json!({ "count": count }))
                    .send()
                    .await
                    .map_err(|e| FaultError::Failed(format!("cannot reach the broker: {e}")))?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(FaultError::Failed(format!(
                        "the broker refused the poison: {status} {body}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A signal to every one of `pids` (processes outside the topology, parents first); a
/// pause is undone by SIGCONT to each, journalled before any is stopped.
fn plan_processes(pids: Vec<i32>, spec: &FaultSpec) -> Plan {
    match spec {
        FaultSpec::Pause => Plan {
            undo: Undo::ResumePids {
                pids: pids.iter().map(|p| *p as u32).collect(),
            },
            action: Action::PausePids(pids),
        },
        FaultSpec::Terminate { .. } => Plan {
            undo: Undo::Nothing,
            action: Action::SignalPids(pids, Signal::SIGTERM),
        },
        _ => Plan {
            undo: Undo::Nothing,
            action: Action::SignalPids(pids, Signal::SIGKILL),
        },
    }
}

struct Plan {
    undo: Undo,
    action: Action,
}

/// The engine's side of a fault on a container: kill or stop (started again on heal
/// when held), pause (unpaused on heal), restart.
fn plan_container(name: String, spec: &FaultSpec) -> Plan {
    use containers::Op;
    let held = |name: &String| Undo::StartContainers {
        containers: vec![name.clone()],
    };
    let (op, undo) = match spec {
        FaultSpec::Kill { hold } => (Op::Kill, if *hold { held(&name) } else { Undo::Nothing }),
        FaultSpec::Terminate { hold } => {
            (Op::Stop, if *hold { held(&name) } else { Undo::Nothing })
        }
        FaultSpec::Pause => (
            Op::Pause,
            Undo::UnpauseContainers {
                containers: vec![name.clone()],
            },
        ),
        _ => (Op::Restart, Undo::Nothing),
    };
    Plan {
        undo,
        action: Action::Container(name, op),
    }
}

/// A root qdisc of `params` on every interface of container `name` but loopback.
fn qdiscs(
    name: &str,
    pid: u32,
    params: &[String],
) -> Result<Vec<(u32, netns::Qdisc, Vec<String>)>, FaultError> {
    let devs = netns::interfaces(pid).map_err(FaultError::Failed)?;
    if devs.is_empty() {
        return Err(FaultError::BadRequest(format!(
            "container `{name}` has no network interface but loopback"
        )));
    }
    Ok(devs
        .into_iter()
        .map(|dev| {
            let q = netns::Qdisc {
                container: name.to_owned(),
                dev,
            };
            (pid, q, params.to_vec())
        })
        .collect())
}

/// A container's networks, for messages.
fn networks_of(c: &containers::Running) -> String {
    if c.links.is_empty() {
        return "none".into();
    }
    c.links
        .iter()
        .map(|l| l.network.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Plan {
    /// `toxics` on every one of `edges`, removed again on heal.
    fn on_edges(edges: Vec<Arc<EdgeProxy>>, toxics: Vec<Toxic>) -> Plan {
        Plan {
            undo: Undo::Toxics {
                edges: edges.iter().map(|e| e.name.clone()).collect(),
            },
            action: Action::Toxics(edges, toxics),
        }
    }
}

/// The supervisor's side of a fault on replicas.
fn plan_replicas(replicas: Vec<String>, spec: &FaultSpec) -> Plan {
    let stop = |signal, hold: bool| Plan {
        undo: if hold {
            Undo::Release {
                replicas: replicas.clone(),
            }
        } else {
            Undo::Nothing
        },
        action: Action::Stop(replicas.clone(), signal, hold),
    };
    match spec {
        FaultSpec::Kill { hold } => stop(Signal::SIGKILL, *hold),
        FaultSpec::Terminate { hold } => stop(Signal::SIGTERM, *hold),
        // Every replica of the zone killed and held down.
        FaultSpec::ZoneOutage => stop(Signal::SIGKILL, true),
        FaultSpec::Pause => Plan {
            undo: Undo::Resume {
                replicas: replicas.clone(),
            },
            action: Action::Pause(replicas),
        },
        _ => Plan {
            undo: Undo::Nothing,
            action: Action::Restart(replicas),
        },
    }
}

/// The toxics of a network fault, one per direction it acts on.
fn toxics(id: &str, seed: u64, spec: &FaultSpec) -> Vec<Toxic> {
    let (dirs, toxicity) = match spec {
        FaultSpec::Latency {
            direction,
            toxicity,
            ..
        }
        | FaultSpec::Bandwidth {
            direction,
            toxicity,
            ..
        }
        | FaultSpec::Blackhole {
            direction,
            toxicity,
            ..
        }
        | FaultSpec::Reset {
            direction,
            toxicity,
            ..
        }
        | FaultSpec::Slicer {
            direction,
            toxicity,
            ..
        }
        | FaultSpec::SlowClose {
            direction,
            toxicity,
            ..
        }
        | FaultSpec::LimitData {
            direction,
            toxicity,
            ..
        } => (*direction, *toxicity),
        // HTTP faults act on requests; partitions cut both ways.
        FaultSpec::HttpAbort { .. } | FaultSpec::HttpDelay { .. } => (Directions::Upstream, 1.0),
        _ => (Directions::Both, 1.0),
    };
    let kind = toxic_kind(spec);
    dirs.list()
        .iter()
        .map(|d| Toxic {
            id: id.to_owned(),
            direction: *d,
            kind: kind.clone(),
            toxicity,
            seed,
        })
        .collect()
}

/// What a network fault does to the bytes of an edge, as the proxy's toxic.
fn toxic_kind(spec: &FaultSpec) -> ToxicKind {
    let ms = Duration::from_millis;
    let http = |method: &Option<String>, path: &Option<String>| HttpMatch {
        method: method.clone(),
        path_prefix: path.clone(),
    };
    match spec {
        FaultSpec::Latency {
            delay_ms,
            jitter_ms,
            ..
        } => ToxicKind::Latency {
            latency: ms(*delay_ms),
            jitter: ms(*jitter_ms),
        },
        FaultSpec::Bandwidth { rate, .. } => ToxicKind::Bandwidth { rate: *rate },
        FaultSpec::Blackhole { close_after_ms, .. } => ToxicKind::Timeout {
            close_after: close_after_ms.map(ms),
        },
        FaultSpec::Reset { after_ms, .. } => ToxicKind::Reset {
            after: ms(*after_ms),
        },
        FaultSpec::Slicer {
            average_size,
            size_variation,
            delay_us,
            ..
        } => ToxicKind::Slicer {
            average_size: *average_size,
            size_variation: *size_variation,
            delay: Duration::from_micros(*delay_us),
        },
        FaultSpec::SlowClose { delay_ms, .. } => ToxicKind::SlowClose {
            delay: ms(*delay_ms),
        },
        FaultSpec::LimitData { bytes, .. } => ToxicKind::LimitData { bytes: *bytes },
        FaultSpec::HttpAbort {
            status,
            percent,
            method,
            path,
        } => ToxicKind::HttpAbort {
            status: *status,
            percent: *percent,
            matcher: http(method, path),
        },
        FaultSpec::HttpDelay {
            delay_ms,
            percent,
            method,
            path,
        } => ToxicKind::HttpDelay {
            delay: ms(*delay_ms),
            percent: *percent,
            matcher: http(method, path),
        },
        // A partition (of services or of a queue) holds every byte both ways.
        _ => ToxicKind::Timeout { close_after: None },
    }
}

enum Action {
    Stop(Vec<String>, Signal, bool),
    Pause(Vec<String>),
    Restart(Vec<String>),
    /// Processes outside the topology, parents before children.
    SignalPids(Vec<i32>, Signal),
    PausePids(Vec<i32>),
    Toxics(Vec<Arc<EdgeProxy>>, Vec<Toxic>),
    Container(String, containers::Op),
    ContainerNet(containers::NetFault),
    Poison(Vec<std::net::SocketAddr>, String, usize),
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
