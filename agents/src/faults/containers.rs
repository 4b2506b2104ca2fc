//! Faults on Docker containers (`container:NAME`): kill (a signal), stop, pause and
//! unpause, restart, through the Docker Engine API (bollard, the local socket or
//! `DOCKER_HOST`). The engine pauses with the cgroup freezer, so a pause stops the
//! container's every process at once.
//!
//! Network faults inside a container (loss, resets, bandwidth, latency, a partition from
//! other containers) are carried out in its network namespace by [`super::netns`]; a
//! partition from a network disconnects it here, and its heal connects it again with
//! the IPv4 address and aliases it had.
//!
//! bollard 0.21 sends request paths without an API version, which Docker 20.10 (API
//! 1.41) answers; the client is made when the first container fault needs it.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use bollard::Docker;
use bollard::models::{EndpointIpamConfig, EndpointSettings};
use bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{KillContainerOptions, StopContainerOptions};
use serde::{Deserialize, Serialize};

use super::FaultError;
use super::netns::{Mechanisms, Qdisc, Rule};

/// What the engine is asked to do to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// SIGKILL by the engine (`docker kill`).
    Kill,
    /// SIGTERM, then SIGKILL after the container's stop timeout (`docker stop`).
    Stop,
    Pause,
    Restart,
}

/// A container's attachment to a Docker network, as a heal puts it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub container: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// By (container, network): the attachment to restore and the faults holding the
/// container off the network.
type Held = (Link, BTreeSet<String>);

/// A running container: the process whose network namespace is the container's, and
/// its networks (with those that faults of this agent disconnected it from).
#[derive(Debug, Clone)]
pub struct Running {
    pub pid: u32,
    pub links: Vec<Link>,
}

impl Running {
    /// Its IPv4 addresses, on every network.
    pub fn addresses(&self) -> Vec<String> {
        self.links.iter().filter_map(|l| l.ipv4.clone()).collect()
    }
}

/// A network fault in containers, as the engine carries it out: rules to add (each in
/// the namespace of a process), root qdiscs to add with their parameters, networks to
/// disconnect from.
#[derive(Debug, Default)]
pub struct NetFault {
    pub rules: Vec<(u32, Rule)>,
    pub qdiscs: Vec<(u32, Qdisc, Vec<String>)>,
    pub disconnect: Vec<Link>,
}

/// The Docker client; who pauses which container, so overlapping pauses compose; who
/// holds each container off each network, so overlapping disconnects compose; which
/// fault owns each container's root qdiscs (one at a time); the mechanisms of network
/// faults, found once.
#[derive(Default)]
pub struct Containers {
    client: OnceLock<Result<Docker, String>>,
    pauses: tokio::sync::Mutex<HashMap<String, BTreeSet<String>>>,
    links: tokio::sync::Mutex<HashMap<(String, String), Held>>,
    /// By container: the fault whose qdiscs are its interfaces' roots.
    qdiscs: tokio::sync::Mutex<HashMap<String, String>>,
    mechanisms: tokio::sync::OnceCell<Mechanisms>,
}

/// A failure of the engine as a fault error: an unknown container is the target's
/// fault, a container in the wrong state a conflict.
fn engine_error(name: &str, e: bollard::errors::Error) -> FaultError {
    use bollard::errors::Error::DockerResponseServerError;
    match e {
        DockerResponseServerError {
            status_code: 404, ..
        } => FaultError::UnknownTarget(format!("no container `{name}` on this Docker engine")),
        DockerResponseServerError {
            status_code: 409 | 304,
            message,
        } => FaultError::Conflict(format!("container `{name}`: {message}")),
        e => FaultError::Failed(format!("the Docker engine, for container `{name}`: {e}")),
    }
}

impl Containers {
    fn docker(&self) -> Result<&Docker, FaultError> {
        self.client
            .get_or_init(|| Docker::connect_with_local_defaults().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| FaultError::Failed(format!("cannot reach the Docker engine: {e}")))
    }

    /// Carries out `op` on container `name`; a pause by fault `id` is recorded, and the
    /// engine asked only when no other fault pauses the container already.
    pub async fn apply(&self, id: &str, name: &str, op: Op) -> Result<(), FaultError> {
        let docker = self.docker()?;
        let err = |e| engine_error(name, e);
        match op {
            Op::Kill => {
                let kill = KillContainerOptions {
                    signal: "SIGKILL".into(),
                };
                docker.kill_container(name, Some(kill)).await.map_err(err)
            }
            Op::Stop => docker
                .stop_container(name, None::<StopContainerOptions>)
                .await
                .map_err(err),
            Op::Restart => docker.restart_container(name, None).await.map_err(err),
            Op::Pause => {
                // Held across the engine's answer, so a heal of another pause of the same
                // container cannot unpause it in between.
                let mut pauses = self.pauses.lock().await;
                if pauses.get(name).is_none_or(BTreeSet::is_empty) {
                    docker.pause_container(name).await.map_err(err)?;
                }
                pauses
                    .entry(name.to_owned())
                    .or_default()
                    .insert(id.to_owned());
                Ok(())
            }
        }
    }

    /// Undoes fault `id`'s pause of `name`: unpaused when no other fault pauses it.
    pub async fn unpause(&self, id: &str, name: &str) {
        let mut pauses = self.pauses.lock().await;
        let Some(by) = pauses.get_mut(name) else {
            return;
        };
        by.remove(id);
        if by.is_empty() {
            pauses.remove(name);
            if let Ok(docker) = self.docker()
                && let Err(e) = docker.unpause_container(name).await
            {
                tracing::warn!(container = name, error = %e, "cannot unpause a container");
            }
        }
    }

    /// Starts `name` again (the undo of a held kill or stop).
    pub async fn start(&self, name: &str) {
        if let Ok(docker) = self.docker()
            && let Err(e) = docker.start_container(name, None).await
        {
            tracing::warn!(container = name, error = %e, "cannot start a container again");
        }
    }

    /// What a dead agent left: unpause (or start) the container, whatever else may have
    /// paused it, since no fault of that agent is left to need it.
    pub async fn recover_unpause(&self, name: &str) {
        if let Ok(docker) = self.docker() {
            let _ = docker.unpause_container(name).await;
        }
    }

    /// The mechanisms of network faults, found the first time they are asked for (the
    /// agent asks at start).
    pub async fn mechanisms(&self) -> &Mechanisms {
        self.mechanisms.get_or_init(Mechanisms::detect).await
    }

    /// The mechanisms, if they were found already.
    pub fn detected(&self) -> Option<&Mechanisms> {
        self.mechanisms.get()
    }

    /// Container `name`, which must be running: network faults act in its network
    /// namespace.
    pub async fn running(&self, name: &str) -> Result<Running, FaultError> {
        let docker = self.docker()?;
        let c = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| engine_error(name, e))?;
        let state = c.state.unwrap_or_default();
        let pid = state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        if state.running != Some(true) || pid == 0 {
            let status = state
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "not running".into());
            return Err(FaultError::BadRequest(format!(
                "container `{name}` is {status}, not running: network faults act in a running container's network namespace (start it first)"
            )));
        }
        let mut links: Vec<Link> = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .map(|(network, ep)| Link {
                container: name.to_owned(),
                network,
                ipv4: ep.ip_address.filter(|ip| !ip.is_empty()),
                aliases: ep.aliases.unwrap_or_default(),
            })
            .collect();
        for ((container, network), (link, _)) in self.links.lock().await.iter() {
            if container == name && !links.iter().any(|l| &l.network == network) {
                links.push(link.clone());
            }
        }
        links.sort_by(|a, b| a.network.cmp(&b.network));
        Ok(Running { pid, links })
    }

    /// The process of container `name`'s network namespace, if it runs.
    async fn pid(&self, name: &str) -> Option<u32> {
        let docker = self.docker().ok()?;
        let state = docker.inspect_container(name, None).await.ok()?.state?;
        let pid = u32::try_from(state.pid?).ok()?;
        (state.running == Some(true) && pid > 0).then_some(pid)
    }

    /// Carries out network fault `id`: its rules, its qdiscs (refused while another
    /// fault's are on the container), its disconnects (the engine asked only when no
    /// other fault holds the container off that network already).
    pub async fn apply_net(&self, id: &str, net: &NetFault) -> Result<(), FaultError> {
        for (pid, rule) in &net.rules {
            rule.insert(*pid).await.map_err(FaultError::Failed)?;
        }
        if let Some((_, first, _)) = net.qdiscs.first() {
            let mut owners = self.qdiscs.lock().await;
            if let Some(other) = owners.get(&first.container) {
                return Err(FaultError::Conflict(format!(
                    "container `{}` has the qdiscs of fault {other} already (bandwidth and latency on a container take its interfaces' root qdisc, one fault at a time): heal it first",
                    first.container
                )));
            }
            owners.insert(first.container.clone(), id.to_owned());
            drop(owners);
            for (pid, q, params) in &net.qdiscs {
                q.add(*pid, params).await.map_err(|e| {
                    FaultError::Failed(format!("container `{}`, {}: {e}", q.container, q.dev))
                })?;
            }
        }
        for link in &net.disconnect {
            let key = (link.container.clone(), link.network.clone());
            let mut links = self.links.lock().await;
            if !links.contains_key(&key) {
                let docker = self.docker()?;
                let req = NetworkDisconnectRequest {
                    container: link.container.clone(),
                    force: Some(true),
                };
                docker
                    .disconnect_network(&link.network, req)
                    .await
                    .map_err(|e| engine_error(&link.container, e))?;
            }
            links
                .entry(key)
                .or_insert_with(|| (link.clone(), BTreeSet::new()))
                .1
                .insert(id.to_owned());
        }
        Ok(())
    }

    /// Undoes network fault `id`: deletes its rules and its qdiscs, and connects the
    /// container again to each network no other fault holds it off.
    pub async fn undo_net(&self, id: &str, rules: &[Rule], qdiscs: &[Qdisc], reconnect: &[Link]) {
        self.delete_rules(rules).await;
        if let Some(first) = qdiscs.first() {
            let mut owners = self.qdiscs.lock().await;
            if owners.get(&first.container).map(String::as_str) == Some(id) {
                owners.remove(&first.container);
                drop(owners);
                self.delete_qdiscs(qdiscs).await;
            }
        }
        for link in reconnect {
            let key = (link.container.clone(), link.network.clone());
            let mut links = self.links.lock().await;
            let last = match links.get_mut(&key) {
                Some((_, by)) => {
                    by.remove(id);
                    by.is_empty()
                }
                // Never disconnected by this agent (its apply failed first): connected
                // already, which the engine says.
                None => true,
            };
            if last {
                links.remove(&key);
                self.connect(link).await;
            }
        }
    }

    /// What a dead agent's network fault `id` left: its rules (only rules tagged with
    /// it), its qdiscs (only while they have the faults' handle), its disconnects.
    pub async fn recover_net(
        &self,
        id: &str,
        rules: &[Rule],
        qdiscs: &[Qdisc],
        reconnect: &[Link],
    ) {
        let own: Vec<Rule> = rules.iter().filter(|r| r.is_of(id)).cloned().collect();
        self.delete_rules(&own).await;
        self.delete_qdiscs(qdiscs).await;
        for link in reconnect {
            self.connect(link).await;
        }
    }

    async fn delete_rules(&self, rules: &[Rule]) {
        let mut pids: HashMap<&str, Option<u32>> = HashMap::new();
        for rule in rules {
            if !pids.contains_key(rule.container.as_str()) {
                let pid = self.pid(&rule.container).await;
                pids.insert(&rule.container, pid);
            }
            // A container that stopped took its namespace, and the rules, with it.
            let Some(pid) = pids[rule.container.as_str()] else {
                continue;
            };
            if let Err(e) = rule.delete(pid).await {
                tracing::debug!(
                    container = rule.container,
                    error = e,
                    "a fault's rule was not there"
                );
            }
        }
    }

    async fn delete_qdiscs(&self, qdiscs: &[Qdisc]) {
        for q in qdiscs {
            let Some(pid) = self.pid(&q.container).await else {
                continue;
            };
            if let Err(e) = q.delete(pid).await {
                tracing::debug!(
                    container = q.container,
                    dev = q.dev,
                    error = e,
                    "a fault's qdisc was not there"
                );
            }
        }
    }

    /// Connects a container to a network again with the address and aliases it had;
    /// where the engine refuses to pin them (the default bridge takes neither, a network
    /// without a configured subnet no address), with what it accepts, and says so.
    async fn connect(&self, link: &Link) {
        let Ok(docker) = self.docker() else {
            return;
        };
        let pinned = |ip: bool, aliases: bool| NetworkConnectRequest {
            container: link.container.clone(),
            endpoint_config: Some(EndpointSettings {
                ipam_config: link
                    .ipv4
                    .clone()
                    .filter(|_| ip)
                    .map(|a| EndpointIpamConfig {
                        ipv4_address: Some(a),
                        ..Default::default()
                    }),
                aliases: aliases
                    .then(|| link.aliases.clone())
                    .filter(|a| !a.is_empty()),
                ..Default::default()
            }),
        };
        let mut last = None;
        for (ip, aliases) in [(true, true), (false, true), (false, false)] {
            match docker
                .connect_network(&link.network, pinned(ip, aliases))
                .await
            {
                Ok(()) => {
                    if !ip && link.ipv4.is_some() {
                        tracing::warn!(
                            container = link.container,
                            network = link.network,
                            error = last.as_ref().map(ToString::to_string),
                            "reconnected without pinning its former address, which the engine refused to pin"
                        );
                    }
                    return;
                }
                // Connected already (by someone else, or never disconnected).
                Err(e) if e.to_string().contains("already exists") => return,
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            tracing::warn!(container = link.container, network = link.network, error = %e, "cannot connect a container to a network again");
        }
    }
}
