//! Scaling a running service: replicas added (each with the edge proxies of its
//! callers, listed in their upstream files once healthy) and removed (taken out of
//! every list first, given time to drain, then stopped with SIGTERM).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{
    Command, ReplicaState, StartError, Supervisor, bind_edge, new_replica, ports, replica, slots,
};
use crate::topology::{MAX_REPLICAS, Runtime};

/// One scaling of a service, as the API answers it and the metrics count it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Scaled {
    pub service: String,
    /// Replicas before and after.
    pub from: u32,
    pub to: u32,
    /// Replicas started and stopped, by name.
    #[serde(default)]
    pub added: Vec<String>,
    #[serde(default)]
    pub removed: Vec<String>,
    /// Who asked: `api` (`faultline scale`, the dashboard) or `autoscaler`.
    #[serde(default)]
    pub by: String,
    /// When it finished, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("no service named `{0}`; services: {1}")]
    UnknownService(String, String),
    #[error("replicas must be from 1 to {MAX_REPLICAS}, not {0}")]
    BadCount(u64),
    #[error("service `{0}` runs as {1}; only services run as processes can be scaled")]
    NotProcess(String, &'static str),
    #[error(
        "service `{0}` listens on the fixed port {1}, which several replicas cannot share; give it port = 0 to scale it"
    )]
    FixedPort(String, u16),
    #[error(
        "this run has started {} replicas, the most one run may",
        slots::CAPACITY
    )]
    Exhausted,
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}

impl Supervisor {
    /// Sets service `service` to `n` replicas and returns once every new replica is
    /// healthy and listed, or every removed one has drained and stopped. Scalings are
    /// done one at a time. `by` says who asks, for the record.
    pub async fn scale(&self, service: &str, n: u64, by: &str) -> Result<Scaled, ScaleError> {
        let _one_at_a_time = self.scaling.lock().await;
        if self.cancel.is_cancelled() {
            return Err(ScaleError::ShuttingDown);
        }
        let topology = &self.shared.topology;
        let Some(si) = topology.services.iter().position(|s| s.name == service) else {
            let names: Vec<&str> = topology.services.iter().map(|s| s.name.as_str()).collect();
            return Err(ScaleError::UnknownService(
                service.to_owned(),
                names.join(", "),
            ));
        };
        if !(1..=MAX_REPLICAS as u64).contains(&n) {
            return Err(ScaleError::BadCount(n));
        }
        let svc = &topology.services[si];
        match svc.runtime {
            Runtime::Process => {}
            Runtime::Docker { .. } => {
                return Err(ScaleError::NotProcess(svc.name.clone(), "containers"));
            }
            Runtime::Adopted { .. } => {
                return Err(ScaleError::NotProcess(
                    svc.name.clone(),
                    "adopted containers",
                ));
            }
        }
        if svc.port != 0 && n > 1 {
            return Err(ScaleError::FixedPort(svc.name.clone(), svc.port));
        }
        let n = n as u32;
        let from = self.live_indices(si).len() as u32;
        let mut scaled = Scaled {
            service: service.to_owned(),
            from,
            to: n,
            added: Vec::new(),
            removed: Vec::new(),
            by: by.to_owned(),
            at_ms: 0,
        };
        if n > from {
            // Together, so that a step of many replicas takes one start's time.
            let first = self
                .live_indices(si)
                .iter()
                .map(|&i| self.shared.replicas[i].index)
                .max()
                .unwrap_or(0)
                + 1;
            let adds = (0..n - from).map(|k| self.add_replica(si, first + k));
            let mut failed = None;
            for result in futures::future::join_all(adds).await {
                match result {
                    Ok(name) => scaled.added.push(name),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                // All or nothing: the ones that did start go again.
                let started = self.live_indices(si).split_off(from as usize);
                self.retire(&started).await;
                self.list(service);
                return Err(e);
            }
            self.set_live_count(si, n);
        } else if n < from {
            scaled.removed = self.remove_replicas(si, (from - n) as usize).await;
        }
        scaled.at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if from != n {
            tracing::info!(service, from, to = n, by, "scaled");
            self.scalings.lock().unwrap().push(scaled.clone());
            self.shared.notify();
        }
        Ok(scaled)
    }

    /// Every scaling so far, oldest first.
    pub fn scalings(&self) -> Vec<Scaled> {
        self.scalings.lock().unwrap().clone()
    }

    /// The slot indices of service `si`'s replicas in the run, by replica index.
    fn live_indices(&self, si: usize) -> Vec<usize> {
        let mut v: Vec<(u32, usize)> = self
            .shared
            .replicas
            .indexed()
            .filter(|(_, r)| r.service == si)
            .map(|(i, r)| (r.index, i))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// The live topology says service `si` has `n` replicas (so faults can name them:
    /// replicas are always numbered 1..=n, since scaling in removes the highest).
    fn set_live_count(&self, si: usize, n: u32) {
        let mut live = self.shared.live.write().unwrap();
        let mut t = (**live).clone();
        t.services[si].replicas = n;
        *live = Arc::new(t);
    }

    /// Starts replica `index` of service `si`, with the proxies of the edges to it,
    /// and lists it in its callers' upstream files once it is healthy.
    async fn add_replica(&self, si: usize, index: u32) -> Result<String, ScaleError> {
        let shared = &self.shared;
        let svc = &shared.topology.services[si];
        let port = if svc.port == 0 {
            ports::free_ports(svc.host, 1).map_err(StartError::Ports)?[0]
        } else {
            svc.port
        };
        let addr = std::net::SocketAddr::new(svc.host, port);
        let (replica, rx) = new_replica(&shared.topology, si, index, addr, &shared.config);
        // Unlisted until healthy: no caller is sent to a replica still starting.
        replica.unlisted.store(true, Ordering::Release);
        let idx = shared
            .replicas
            .push(replica)
            .map_err(|_| ScaleError::Exhausted)?;
        let r = &shared.replicas[idx];
        let name = r.name.clone();
        if shared.config.proxies {
            let callers = shared
                .topology
                .services
                .iter()
                .filter(|c| c.calls.contains(&svc.name));
            for caller in callers {
                let bound =
                    bind_edge(&caller.name, r, shared.proxy_ip, self.cancel.child_token()).await;
                let (edge, task) = match bound {
                    Ok(b) => b,
                    Err(e) => {
                        self.retire(&[idx]).await;
                        return Err(e.into());
                    }
                };
                self.proxy_tasks.lock().unwrap().push(task);
                shared.edges.write().unwrap().push(edge);
            }
        }
        let runner = replica::Runner::new(shared.clone(), idx, rx, self.cancel.clone());
        {
            let mut tasks = self.tasks.lock().unwrap();
            if tasks.len() <= idx {
                tasks.resize_with(idx + 1, || None);
            }
            tasks[idx] = Some(tokio::spawn(runner.run()));
        }
        if let Err(e) = self.wait_ready(idx).await {
            self.retire(&[idx]).await;
            return Err(e.into());
        }
        r.unlisted.store(false, Ordering::Release);
        self.list(&svc.name);
        Ok(name)
    }

    /// Removes the `count` highest-numbered replicas of service `si`: out of every
    /// upstream file at once, then, after the drain grace, stopped together (SIGTERM,
    /// so in-flight requests finish; SIGKILL past the stop timeout).
    async fn remove_replicas(&self, si: usize, count: usize) -> Vec<String> {
        let shared = &self.shared;
        let mut live = self.live_indices(si);
        let gone = live.split_off(live.len() - count);
        if shared.config.unsafe_no_drain {
            tracing::warn!("UNSAFE: replicas scaled away are killed without a drain");
            for &i in &gone {
                let _ = self.kill(&shared.replicas[i].name, Some("scale")).await;
            }
            self.retire(&gone).await;
            self.set_live_count(si, live.len() as u32);
            self.list(&shared.topology.services[si].name);
            return gone
                .iter()
                .map(|&i| shared.replicas[i].name.clone())
                .collect();
        }
        for &i in &gone {
            shared.replicas[i].unlisted.store(true, Ordering::Release);
        }
        self.set_live_count(si, live.len() as u32);
        self.list(&shared.topology.services[si].name);
        tokio::select! {
            _ = tokio::time::sleep(shared.config.drain_grace) => {}
            _ = self.cancel.cancelled() => {}
        }
        self.retire(&gone).await;
        gone.iter()
            .map(|&i| shared.replicas[i].name.clone())
            .collect()
    }

    /// Rewrites the upstream files of `service`'s callers.
    fn list(&self, service: &str) {
        if let Err(e) = self.shared.write_upstream_files(Some(service)) {
            tracing::warn!(service, error = %e, "cannot write the upstream files");
        }
    }

    /// Stops replicas `idxs` (their tasks end with them), closes the proxies of the
    /// edges to them, and drops them from the run. Faults holding or pausing them end
    /// with them: their heals find no replica and do nothing.
    async fn retire(&self, idxs: &[usize]) {
        let shared = &self.shared;
        let mut handles = Vec::new();
        for &i in idxs {
            let r = &shared.replicas[i];
            r.unlisted.store(true, Ordering::Release);
            let _ = r.commands.send(Command::Stop).await;
            if let Some(h) = self.tasks.lock().unwrap().get_mut(i).and_then(Option::take) {
                handles.push(h);
            }
        }
        for h in handles {
            let _ = h.await;
        }
        let names: Vec<&str> = idxs
            .iter()
            .map(|&i| shared.replicas[i].name.as_str())
            .collect();
        shared.edges.write().unwrap().retain(|(e, stop)| {
            let gone = names.contains(&e.server.as_str());
            if gone {
                stop.cancel();
            }
            !gone
        });
        for &i in idxs {
            let r = &shared.replicas[i];
            r.status.send_modify(|s| s.state = ReplicaState::Stopped);
            r.retired.store(true, Ordering::Release);
        }
        shared.notify();
    }
}
