//! The fault engine: resolves a fault's target, applies it through the supervisor, the
//! fault proxies or the broker, keeps it as a lease that heals when it runs out, and
//! records everything in the journal first.
//!
//! # Layout
//!
//! - [`spec`]: fault kinds and requests, as the API and CLI speak them.
//! - [`journal`]: the append-only record that makes healing survive an agent crash.

pub mod journal;
pub mod spec;

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

use crate::proxy::{EdgeProxy, HttpMatch, Toxic, ToxicKind};
use crate::supervisor::Supervisor;
pub use journal::{Journal, Undo};
pub use spec::{Directions, FaultRequest, FaultSpec, QueueSide};

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

    fn info(id: &str, a: &Active, now: Instant) -> FaultInfo {
        let remaining = a.expires.saturating_duration_since(now);
        let target = match &a.request.spec {
            FaultSpec::Partition { with } => format!("{}<->{with}", a.request.target),
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
        let plan = self.plan(id, &request)?;
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

    pub async fn heal(&self, id: &str, reason: &str) -> Result<FaultInfo, FaultError> {
        let a = self
            .active
            .lock()
            .unwrap()
            .remove(id)
            .ok_or_else(|| FaultError::NotFound(id.to_owned()))?;
        let mut info = Self::info(id, &a, Instant::now());
        self.undo(id, &a.undo).await;
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
                kind: a.request.spec.kind().into(),
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
                .filter(|(_, a)| a.expires <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                let _ = self.heal(&id, "expired").await;
            }
        }
        self.heal_all("shutdown").await;
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
                for e in self.sup.edges().iter().filter(|e| edges.contains(&e.name)) {
                    e.remove(id);
                }
            }
        }
    }

    /// Resolves a request into the actions to take and their undo, without acting.
    fn plan(&self, id: &str, req: &FaultRequest) -> Result<Plan, FaultError> {
        let seed = req.seed.unwrap_or_else(|| fastrand::u64(..));
        let toxics = |kind: ToxicKind, dirs: Directions, toxicity: f64| -> Vec<Toxic> {
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
        };
        let on_edges = |target: &str, toxics: Vec<Toxic>| -> Result<Plan, FaultError> {
            Ok(Plan::on_edges(self.edges_of(target)?, toxics))
        };
        let ms = Duration::from_millis;
        match &req.spec {
            FaultSpec::Kill { hold } | FaultSpec::Terminate { hold } => {
                let signal = if matches!(req.spec, FaultSpec::Kill { .. }) {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                if let Some(pid) = self.signallable_pid(&req.target)? {
                    return Ok(Plan {
                        undo: Undo::Nothing,
                        action: Action::SignalPid(pid, signal),
                    });
                }
                let replicas = self.replicas_of(&req.target)?;
                Ok(Plan {
                    undo: if *hold {
                        Undo::Release {
                            replicas: replicas.clone(),
                        }
                    } else {
                        Undo::Nothing
                    },
                    action: Action::Stop(replicas, signal, *hold),
                })
            }
            FaultSpec::Pause => {
                if let Some(pid) = self.signallable_pid(&req.target)? {
                    return Ok(Plan {
                        undo: Undo::ResumePids {
                            pids: vec![pid as u32],
                        },
                        action: Action::PausePid(pid),
                    });
                }
                let replicas = self.replicas_of(&req.target)?;
                Ok(Plan {
                    undo: Undo::Resume {
                        replicas: replicas.clone(),
                    },
                    action: Action::Pause(replicas),
                })
            }
            FaultSpec::Restart => Ok(Plan {
                undo: Undo::Nothing,
                action: Action::Restart(self.replicas_of(&req.target)?),
            }),
            FaultSpec::Latency {
                delay_ms,
                jitter_ms,
                direction,
                toxicity,
            } => on_edges(
                &req.target,
                toxics(
                    ToxicKind::Latency {
                        latency: ms(*delay_ms),
                        jitter: ms(*jitter_ms),
                    },
                    *direction,
                    *toxicity,
                ),
            ),
            FaultSpec::Bandwidth {
                rate,
                direction,
                toxicity,
            } => on_edges(
                &req.target,
                toxics(ToxicKind::Bandwidth { rate: *rate }, *direction, *toxicity),
            ),
            FaultSpec::Blackhole {
                close_after_ms,
                direction,
                toxicity,
            } => on_edges(
                &req.target,
                toxics(
                    ToxicKind::Timeout {
                        close_after: close_after_ms.map(ms),
                    },
                    *direction,
                    *toxicity,
                ),
            ),
            FaultSpec::Reset {
                after_ms,
                direction,
                toxicity,
            } => on_edges(
                &req.target,
                toxics(
                    ToxicKind::Reset {
                        after: ms(*after_ms),
                    },
                    *direction,
                    *toxicity,
                ),
            ),
            FaultSpec::Slicer {
                average_size,
                size_variation,
                delay_us,
                direction,
                toxicity,
            } => on_edges(
                &req.target,
                toxics(
                    ToxicKind::Slicer {
                        average_size: *average_size,
                        size_variation: *size_variation,
                        delay: Duration::from_micros(*delay_us),
                    },
                    *direction,
                    *toxicity,
                ),
            ),
            FaultSpec::SlowClose {
                delay_ms,
                direction,
                toxicity,
            } => on_edges(
                &req.target,
                toxics(
                    ToxicKind::SlowClose {
                        delay: ms(*delay_ms),
                    },
                    *direction,
                    *toxicity,
                ),
            ),
            FaultSpec::LimitData {
                bytes,
                direction,
                toxicity,
            } => on_edges(
                &req.target,
                toxics(
                    ToxicKind::LimitData { bytes: *bytes },
                    *direction,
                    *toxicity,
                ),
            ),
            FaultSpec::HttpAbort {
                status,
                percent,
                method,
                path,
            } => on_edges(
                &req.target,
                toxics(
                    ToxicKind::HttpAbort {
                        status: *status,
                        percent: *percent,
                        matcher: HttpMatch {
                            method: method.clone(),
                            path_prefix: path.clone(),
                        },
                    },
                    Directions::Upstream,
                    1.0,
                ),
            ),
            FaultSpec::HttpDelay {
                delay_ms,
                percent,
                method,
                path,
            } => on_edges(
                &req.target,
                toxics(
                    ToxicKind::HttpDelay {
                        delay: ms(*delay_ms),
                        percent: *percent,
                        matcher: HttpMatch {
                            method: method.clone(),
                            path_prefix: path.clone(),
                        },
                    },
                    Directions::Upstream,
                    1.0,
                ),
            ),
            FaultSpec::Partition { with } => {
                let a = self.services_of(&req.target)?;
                let b = self.services_of(with)?;
                if let Some(s) = a.intersection(&b).next() {
                    return Err(FaultError::BadRequest(format!(
                        "`{s}` is on both sides of the partition"
                    )));
                }
                let edges = self.edges_between(&a, &b)?;
                if edges.is_empty() {
                    return Err(FaultError::BadRequest(format!(
                        "no edge joins {} and {with}: neither side calls the other",
                        req.target
                    )));
                }
                Ok(Plan::on_edges(
                    edges,
                    toxics(
                        ToxicKind::Timeout { close_after: None },
                        Directions::Both,
                        1.0,
                    ),
                ))
            }
            FaultSpec::ZoneOutage => {
                let replicas: Vec<String> = self
                    .sup
                    .status()
                    .into_iter()
                    .filter(|r| r.zone == req.target)
                    .map(|r| r.name)
                    .collect();
                if replicas.is_empty() {
                    let zones: BTreeSet<String> =
                        self.sup.status().into_iter().map(|r| r.zone).collect();
                    return Err(FaultError::UnknownTarget(format!(
                        "no zone `{}`; zones are: {}",
                        req.target,
                        zones.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
                Ok(Plan {
                    undo: Undo::Release {
                        replicas: replicas.clone(),
                    },
                    action: Action::Stop(replicas, Signal::SIGKILL, true),
                })
            }
            FaultSpec::Poison { count } => {
                let (broker, _) = self.queue(&req.target)?;
                let addrs: Vec<_> = self
                    .sup
                    .status()
                    .into_iter()
                    .filter(|r| r.service == broker)
                    .map(|r| r.addr)
                    .collect();
                Ok(Plan {
                    undo: Undo::Nothing,
                    action: Action::Poison(addrs, req.target.clone(), *count),
                })
            }
            FaultSpec::QueuePartition { side } => {
                let (broker, usage) = self.queue(&req.target)?;
                let services: BTreeSet<String> = match side {
                    QueueSide::Consumers => usage.consumers.iter().cloned().collect(),
                    QueueSide::Producers => usage.producers.iter().cloned().collect(),
                };
                let edges = self.edges_between(&services, &BTreeSet::from([broker]))?;
                if edges.is_empty() {
                    return Err(FaultError::BadRequest(format!(
                        "queue {} has no {side:?} edge to the broker",
                        req.target
                    )));
                }
                Ok(Plan::on_edges(
                    edges,
                    toxics(
                        ToxicKind::Timeout { close_after: None },
                        Directions::Both,
                        1.0,
                    ),
                ))
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
            Action::SignalPid(pid, signal) => {
                nix::sys::signal::kill(Pid::from_raw(*pid), *signal)
                    .map_err(|e| FaultError::Failed(format!("cannot signal pid {pid}: {e}")))?;
            }
            Action::PausePid(pid) => {
                // Under the lock, so a heal of another pause of the same process cannot
                // slip its SIGCONT in after this SIGSTOP.
                let mut pauses = self.pid_pauses.lock().unwrap();
                let by = pauses.entry(*pid).or_default();
                if by.is_empty() {
                    nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGSTOP)
                        .map_err(|e| FaultError::Failed(format!("cannot signal pid {pid}: {e}")))?;
                }
                by.insert(id.to_owned());
            }
            Action::Toxics(edges, toxics) => {
                for e in edges {
                    e.add(toxics);
                }
            }
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

    /// The process a `pid:N` target names, once it is known to exist and to be one
    /// this agent may signal; `None` for any other target.
    fn signallable_pid(&self, target: &str) -> Result<Option<i32>, FaultError> {
        let Some(pid) = spec::pid_target(target).map_err(FaultError::BadRequest)? else {
            return Ok(None);
        };
        if pid as u32 == std::process::id() {
            return Err(FaultError::BadRequest(format!(
                "pid:{pid} is this agent itself"
            )));
        }
        match nix::sys::signal::kill(Pid::from_raw(pid), None) {
            Ok(()) => Ok(Some(pid)),
            Err(nix::errno::Errno::ESRCH) => Err(FaultError::UnknownTarget(format!(
                "no process {pid} on this machine"
            ))),
            Err(e) => Err(FaultError::BadRequest(format!(
                "this agent may not signal process {pid}: {e}"
            ))),
        }
    }

    fn service_names(&self) -> Vec<String> {
        self.sup
            .topology()
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// `service` (every replica) or `service-N` (one).
    fn replicas_of(&self, target: &str) -> Result<Vec<String>, FaultError> {
        let status = self.sup.status();
        if status.iter().any(|r| r.name == target) {
            return Ok(vec![target.to_owned()]);
        }
        let of_service: Vec<String> = status
            .iter()
            .filter(|r| r.service == target)
            .map(|r| r.name.clone())
            .collect();
        if !of_service.is_empty() {
            return Ok(of_service);
        }
        Err(FaultError::UnknownTarget(format!(
            "no service or replica `{target}`; services are: {} (a replica is service-N)",
            self.service_names().join(", ")
        )))
    }

    /// A comma-separated list of services.
    fn services_of(&self, list: &str) -> Result<BTreeSet<String>, FaultError> {
        let names = self.service_names();
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if names.iter().any(|n| n == s) {
                    Ok(s.to_owned())
                } else {
                    Err(FaultError::UnknownTarget(format!(
                        "no service `{s}`; services are: {}",
                        names.join(", ")
                    )))
                }
            })
            .collect()
    }

    fn require_proxies(&self) -> Result<(), FaultError> {
        if !self.sup.proxies() {
            return Err(FaultError::BadRequest(
                "network faults need the fault proxies, which this run does not have (started with --no-proxies)".into(),
            ));
        }
        Ok(())
    }

    fn service_of_replica(&self, replica: &str) -> Option<String> {
        self.sup.replica_status(replica).map(|r| r.service)
    }

    /// `client->server` (every replica of server) or `client->server-N`.
    fn edges_of(&self, target: &str) -> Result<Vec<Arc<EdgeProxy>>, FaultError> {
        let Some((client, server)) = target.split_once("->") else {
            return Err(FaultError::BadRequest(format!(
                "`{target}` is not an edge: network faults target an edge such as orders->broker or orders->broker-1"
            )));
        };
        self.require_proxies()?;
        let (client, server) = (client.trim(), server.trim());
        self.services_of(client)?;
        let edges: Vec<Arc<EdgeProxy>> = self
            .sup
            .edges()
            .iter()
            .filter(|e| {
                e.client == client
                    && (e.server == server
                        || self.service_of_replica(&e.server).as_deref() == Some(server))
            })
            .cloned()
            .collect();
        if edges.is_empty() {
            let calls: BTreeSet<String> = self
                .sup
                .edges()
                .iter()
                .filter(|e| e.client == client)
                .filter_map(|e| self.service_of_replica(&e.server))
                .collect();
            return Err(FaultError::UnknownTarget(format!(
                "no edge `{client}->{server}`; {client} calls: {}",
                if calls.is_empty() {
                    "nothing".to_owned()
                } else {
                    calls.into_iter().collect::<Vec<_>>().join(", ")
                }
            )));
        }
        Ok(edges)
    }

    /// Every edge from a service of `a` to one of `b`, and from `b` to `a`.
    fn edges_between(
        &self,
        a: &BTreeSet<String>,
        b: &BTreeSet<String>,
    ) -> Result<Vec<Arc<EdgeProxy>>, FaultError> {
        self.require_proxies()?;
        Ok(self
            .sup
            .edges()
            .iter()
            .filter(|e| {
                let server = self.service_of_replica(&e.server).unwrap_or_default();
                (a.contains(&e.client) && b.contains(&server))
                    || (b.contains(&e.client) && a.contains(&server))
            })
            .cloned()
            .collect())
    }

    fn queue(&self, name: &str) -> Result<(String, crate::topology::QueueUse), FaultError> {
        let Some(m) = &self.sup.topology().messaging else {
            return Err(FaultError::BadRequest(
                "queue faults need a [messaging] table in the topology naming the broker and the queues".into(),
            ));
        };
        match m.queues.get(name) {
            Some(u) => Ok((m.broker.clone(), u.clone())),
            None => Err(FaultError::UnknownTarget(format!(
                "no queue `{name}`; queues are: {}",
                m.queues.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

struct Plan {
    undo: Undo,
    action: Action,
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

enum Action {
    Stop(Vec<String>, Signal, bool),
    Pause(Vec<String>),
    Restart(Vec<String>),
    SignalPid(i32, Signal),
    PausePid(i32),
    Toxics(Vec<Arc<EdgeProxy>>, Vec<Toxic>),
    Poison(Vec<std::net::SocketAddr>, String, usize),
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
