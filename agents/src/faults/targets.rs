//! What a fault's target names in a topology: replicas, edges, a queue or a process, or
//! why it names nothing. One resolver serves the agent, which acts on what it finds,
//! and `faultline check`, which only asks, so both say the same things about the same
//! mistakes. It reads the topology alone: replica names (`service-N`), their zones and
//! the edges between them follow from it.

use std::collections::BTreeSet;

use super::FaultError;
use super::kind::Target;
use super::spec::{self, FaultRequest, FaultSpec, QueueSide};
use crate::topology::{QueueUse, Topology};

/// What a target resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Replicas of the topology: a service's, one, or a zone's.
    Replicas(Vec<String>),
    /// Processes outside the topology (`pid:N`, `proc:PATTERN`), found when the fault
    /// is applied; `tree`: with their descendants.
    Process {
        target: spec::ProcessTarget,
        tree: bool,
    },
    /// Edges, by their proxy's name (`client->server-N`).
    Edges(Vec<String>),
    /// A queue, and the broker service that holds it.
    Queue { broker: String },
    /// A Docker container, by name or id (`container:NAME`).
    Container(String),
}

/// Resolves targets against a topology; `proxies` says whether its edges run through
/// fault proxies (network faults need them).
pub struct Resolver<'a> {
    topology: &'a Topology,
    proxies: bool,
    /// The proxies made at run time, by name: each is an edge of its own.
    runtime: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub fn new(topology: &'a Topology, proxies: bool) -> Self {
        Self {
            topology,
            proxies,
            runtime: Vec::new(),
        }
    }

    /// Knows the run-time proxies `names` too.
    pub fn with_proxies(mut self, names: Vec<String>) -> Self {
        self.runtime = names;
        self
    }

    /// The run-time proxies a comma-separated `target` names, if it names only such.
    fn runtime_edges(&self, target: &str) -> Option<Vec<String>> {
        let names: Vec<String> = target
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        (!names.is_empty() && names.iter().all(|n| self.runtime.contains(n))).then_some(names)
    }

    /// The edges a comma-separated `target` names by their exact names
    /// (`client->server-N`, `client->external`), if it names only such: a partition of
    /// these edges alone (the CLI's partition between hosts makes one per agent).
    fn listed_edges(&self, target: &str) -> Option<Vec<String>> {
        if !self.proxies {
            return None;
        }
        let known: BTreeSet<String> = self.edges().into_iter().map(|(_, _, n)| n).collect();
        let names: Vec<String> = target
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        (!names.is_empty() && names.iter().all(|n| known.contains(n))).then_some(names)
    }

    /// What `req`'s target names, for its kind.
    pub fn resolve(&self, req: &FaultRequest) -> Result<Resolved, FaultError> {
        let kind = req.spec.description();
        if kind.targets(Target::Container)
            && let Some(name) =
                spec::container_target(&req.target).map_err(FaultError::BadRequest)?
        {
            return Ok(Resolved::Container(name.to_owned()));
        }
        if kind.targets(Target::Pid)
            && let Some(target) =
                spec::process_target(&req.target).map_err(FaultError::BadRequest)?
        {
            return Ok(Resolved::Process {
                target,
                tree: req.tree != Some(false),
            });
        }
        match &req.spec {
            // A run-time proxy is an edge with no service at either end: cut whole.
            FaultSpec::Partition { with } if with.trim().is_empty() => self
                .runtime_edges(&req.target)
                .or_else(|| self.listed_edges(&req.target))
                .map(Resolved::Edges)
                .ok_or_else(|| {
                    FaultError::BadRequest(format!(
                        "name the services on the other side of the partition (only a proxy made at run time or a list of edges by their names, like 'client->server-1', is partitioned alone, and `{}` is neither)",
                        req.target
                    ))
                }),
            FaultSpec::Partition { with } => self.partition(&req.target, with).map(Resolved::Edges),
            FaultSpec::ZoneOutage => self.zone(&req.target).map(Resolved::Replicas),
            FaultSpec::Poison { .. } => {
                let (broker, _) = self.queue(&req.target)?;
                Ok(Resolved::Queue { broker })
            }
            FaultSpec::QueuePartition { side } => {
                self.queue_side(&req.target, *side).map(Resolved::Edges)
            }
            _ if kind.targets(Target::Edge) => match self.runtime_edges(&req.target) {
                Some(edges) => Ok(Resolved::Edges(edges)),
                None => self.edges_of(&req.target).map(Resolved::Edges),
            },
            _ => self.replicas_of(&req.target).map(Resolved::Replicas),
        }
    }

    fn service_names(&self) -> Vec<&str> {
        self.topology
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The service replica or service `name` belongs to.
    pub fn service_of(&self, name: &str) -> Option<&str> {
        self.topology.services.iter().find_map(|s| {
            (s.name == name || (1..=s.replicas).any(|i| s.replica_name(i) == name))
                .then_some(s.name.as_str())
        })
    }

    fn replicas_of_service(&self, service: &str) -> Vec<String> {
        self.topology
            .service(service)
            .map(|s| (1..=s.replicas).map(|i| s.replica_name(i)).collect())
            .unwrap_or_default()
    }

    /// `service` (every replica) or `service-N` (one).
    fn replicas_of(&self, target: &str) -> Result<Vec<String>, FaultError> {
        match self.service_of(target) {
            Some(s) if s == target => Ok(self.replicas_of_service(s)),
            Some(_) => Ok(vec![target.to_owned()]),
            None => Err(FaultError::UnknownTarget(format!(
                "no service or replica `{target}`; services are: {} (a replica is service-N)",
                self.service_names().join(", ")
            ))),
        }
    }

    /// The services (or externals) of a comma-separated list (a side of a partition),
    /// each checked.
    pub fn services(&self, list: &str) -> Result<BTreeSet<String>, FaultError> {
        let names = self.service_names();
        let externals: Vec<&str> = self
            .topology
            .externals
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        let also = if externals.is_empty() {
            String::new()
        } else {
            format!("; externals are: {}", externals.join(", "))
        };
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if names.contains(&s) || externals.contains(&s) {
                    Ok(s.to_owned())
                } else {
                    Err(FaultError::UnknownTarget(format!(
                        "no service `{s}`; services are: {}{also}",
                        names.join(", ")
                    )))
                }
            })
            .collect()
    }

    fn require_proxies(&self) -> Result<(), FaultError> {
        if self.proxies {
            Ok(())
        } else {
            Err(FaultError::BadRequest(
                "network faults need the fault proxies, which this run does not have (started with --no-proxies)".into(),
            ))
        }
    }

    /// Every edge of the topology: `(client service, server service, edge name)`; an
    /// external's edge is `(client service, external, client->external)`.
    fn edges(&self) -> Vec<(&str, &str, String)> {
        let mut out = Vec::new();
        for svc in &self.topology.services {
            for callee in &svc.calls {
                for r in self.replicas_of_service(callee) {
                    out.push((
                        svc.name.as_str(),
                        callee.as_str(),
                        format!("{}->{r}", svc.name),
                    ));
                }
            }
            for ext in &svc.externals {
                out.push((
                    svc.name.as_str(),
                    ext.as_str(),
                    format!("{}->{ext}", svc.name),
                ));
            }
        }
        out
    }

    /// `client->server` (every replica of server) or `client->server-N`.
    fn edges_of(&self, target: &str) -> Result<Vec<String>, FaultError> {
        let Some((client, server)) = target.split_once("->") else {
            // The example is one of this topology's own edges.
            let example = self
                .edges()
                .into_iter()
                .next()
                .map(|(c, s, one)| format!(", e.g. '{c}->{s}' or '{one}'"))
                .unwrap_or_default();
            let proxies = if self.runtime.is_empty() {
                String::new()
            } else {
                format!("; proxies made at run time: {}", self.runtime.join(", "))
            };
            return Err(FaultError::BadRequest(format!(
                "`{target}` is not an edge or a proxy: network faults target an edge, 'client->server' (every replica) or 'client->server-1' (quoted in a shell){example}, or a proxy made with `faultline proxy create`{proxies}"
            )));
        };
        let (client, server) = (client.trim(), server.trim());
        self.services(client)?;
        self.require_proxies()?;
        let edges: Vec<String> = self
            .edges()
            .into_iter()
            .filter(|(c, s, name)| {
                *c == client && (*s == server || name.ends_with(&format!("->{server}")))
            })
            .map(|(_, _, name)| name)
            .collect();
        if edges.is_empty() {
            let calls = &self
                .topology
                .service(client)
                .map(|s| {
                    s.calls
                        .iter()
                        .chain(&s.externals)
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            return Err(FaultError::UnknownTarget(format!(
                "no edge '{client}->{server}'; {client} calls: {}",
                if calls.is_empty() {
                    "nothing".to_owned()
                } else {
                    calls.join(", ")
                }
            )));
        }
        Ok(edges)
    }

    /// Every edge from a service of `a` to one of `b`, and from `b` to `a`.
    fn edges_between(&self, a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
        self.edges()
            .into_iter()
            .filter(|(c, s, _)| {
                (a.contains(*c) && b.contains(*s)) || (b.contains(*c) && a.contains(*s))
            })
            .map(|(_, _, name)| name)
            .collect()
    }

    fn partition(&self, target: &str, with: &str) -> Result<Vec<String>, FaultError> {
        let a = self.services(target)?;
        let b = self.services(with)?;
        if let Some(s) = a.intersection(&b).next() {
            return Err(FaultError::BadRequest(format!(
                "`{s}` is on both sides of the partition"
            )));
        }
        self.require_proxies()?;
        let edges = self.edges_between(&a, &b);
        if edges.is_empty() {
            return Err(FaultError::BadRequest(format!(
                "no edge joins {target} and {with}: neither side calls the other"
            )));
        }
        Ok(edges)
    }

    fn zone(&self, zone: &str) -> Result<Vec<String>, FaultError> {
        let mut zones = BTreeSet::new();
        let mut replicas = Vec::new();
        for s in &self.topology.services {
            for i in 1..=s.replicas {
                zones.insert(s.zone_of(i));
                if s.zone_of(i) == zone {
                    replicas.push(s.replica_name(i));
                }
            }
        }
        if replicas.is_empty() {
            return Err(FaultError::UnknownTarget(format!(
                "no zone `{zone}`; zones are: {}",
                zones.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(replicas)
    }

    /// The broker holding queue `name`, and who uses the queue.
    fn queue(&self, name: &str) -> Result<(String, QueueUse), FaultError> {
        let Some(m) = &self.topology.messaging else {
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

    /// The edges between the queue's consumers (or producers) and the broker.
    fn queue_side(&self, queue: &str, side: QueueSide) -> Result<Vec<String>, FaultError> {
        let (broker, usage) = self.queue(queue)?;
        let services: BTreeSet<String> = match side {
            QueueSide::Consumers => usage.consumers.iter().cloned().collect(),
            QueueSide::Producers => usage.producers.iter().cloned().collect(),
        };
        self.require_proxies()?;
        let edges = self.edges_between(&services, &BTreeSet::from([broker]));
        if edges.is_empty() {
            return Err(FaultError::BadRequest(format!(
                "queue {queue} has no {side:?} edge to the broker"
            )));
        }
        Ok(edges)
    }
}
