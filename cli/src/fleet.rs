//! Several agents at once: their names, which agent owns a fault's target, and the
//! partition between hosts. A run, `status`, `fault`, `heal` and the dashboard hold one
//! client per agent ([`Fleet`]); a target is found on whichever agent owns it, or
//! qualified with the agent's name (`host-a/orders-2`) where two own the same name.
//!
//! Naming: `NAME=URL` names an agent; a bare URL is named by its `host:port`
//! (`10.0.0.2:7400`), which is what a qualified target then starts with. A partition
//! between hosts is written `partition` of `host:NAME` with `host:NAME[,host:NAME...]`:
//! it cuts every edge whose client lives on one side and whose server address (a
//! replica's, a proxy's or the entrypoint of an agent) is served by the other, on each
//! agent that has such an edge, as one fault. This module does no I/O except in
//! [`Fleet`]'s methods; routing reads the agents' statuses.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use faultline_agent::api::Status;
use faultline_agent::client::{AgentClient, ClientError};
use faultline_agent::faults::{FaultRequest, FaultSpec};

/// The prefix of a side of a partition between hosts: `host:NAME`.
pub const HOST_PREFIX: &str = "host:";

/// An agent as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRef {
    pub name: String,
    pub url: String,
    pub token: Option<String>,
}

/// An agent's name: 1 to 64 of `A-Z a-z 0-9 _ . - :` (`:` for the `host:port` names
/// of bare URLs); never `/` or `=`, which qualify targets and name agents.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "agent name `{name}`: use 1 to 64 letters, digits, `_`, `.`, `-` or `:`"
        ))
    }
}

/// The name of an agent given by its URL alone: its `host:port`.
pub fn name_of_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    authority.replace(['[', ']'], "")
}

/// `--agent URL` or `--agent NAME=URL`.
pub fn parse_arg(s: &str, token: Option<&str>) -> Result<AgentRef, String> {
    let (name, url) = match s.split_once('=') {
        Some((n, u)) if !n.contains("://") => (n.trim().to_owned(), u.trim().to_owned()),
        _ => (name_of_url(s.trim()), s.trim().to_owned()),
    };
    check_name(&name).map_err(|m| format!("--agent {s}: {m}"))?;
    Ok(AgentRef {
        name,
        url,
        token: token.map(str::to_owned),
    })
}

/// Agents given on the command line: every name once.
pub fn parse_args(args: &[String], token: Option<&str>) -> Result<Vec<AgentRef>, String> {
    let mut out: Vec<AgentRef> = Vec::new();
    for a in args {
        let r = parse_arg(a, token)?;
        if out.iter().any(|o| o.name == r.name) {
            return Err(format!(
                "--agent {a}: two agents are named `{}`; name them with NAME=URL",
                r.name
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// One agent of a fleet.
#[derive(Clone)]
pub struct Member {
    pub name: String,
    pub client: AgentClient,
    /// How it was given (its token included), to hand the fleet on.
    pub given: AgentRef,
}

/// The agents a run or a command talks to, in the order given.
#[derive(Clone, Default)]
pub struct Fleet {
    pub members: Vec<Member>,
}

impl Fleet {
    pub fn new(agents: &[AgentRef]) -> Fleet {
        Fleet {
            members: agents
                .iter()
                .map(|a| Member {
                    name: a.name.clone(),
                    client: AgentClient::new(&a.url, a.token.clone()),
                    given: a.clone(),
                })
                .collect(),
        }
    }

    /// A fleet of one agent, named by its URL.
    pub fn one(client: AgentClient) -> Fleet {
        let name = name_of_url(client.url());
        Fleet {
            members: vec![Member {
                given: AgentRef {
                    name: name.clone(),
                    url: client.url().to_owned(),
                    token: None,
                },
                name,
                client,
            }],
        }
    }

    /// The agents as given, when there are several (what a run's state carries for
    /// the dashboard); empty with one.
    pub fn several(&self) -> Vec<AgentRef> {
        if self.is_several() {
            self.members.iter().map(|m| m.given.clone()).collect()
        } else {
            Vec::new()
        }
    }

    /// More than one agent: names are qualified in listings.
    pub fn is_several(&self) -> bool {
        self.members.len() > 1
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn first(&self) -> Option<&AgentClient> {
        self.members.first().map(|m| &m.client)
    }

    pub fn find(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.name.as_str()).collect()
    }

    /// Every agent's status, asked at once, each answered within `within`.
    pub async fn statuses(&self, within: Duration) -> Vec<Result<Status, ClientError>> {
        let asks = self.members.iter().map(|m| async move {
            match tokio::time::timeout(within, m.client.status()).await {
                Ok(r) => r,
                Err(_) => Err(ClientError::Unreachable {
                    url: m.client.url().to_owned(),
                    reason: format!("no answer within {}", humantime::format_duration(within)),
                }),
            }
        });
        futures::future::join_all(asks).await
    }

    /// The name a listing shows for `item` of agent `i`: qualified when there are
    /// several agents.
    pub fn qualify(&self, i: usize, item: &str) -> String {
        if self.is_several() {
            format!("{}/{item}", self.members[i].name)
        } else {
            item.to_owned()
        }
    }

    /// Where `id` (`NAME/ID` or a bare fault id) lives: the agent and the bare id.
    pub fn split_qualified<'a>(&self, s: &'a str) -> Option<(usize, &'a str)> {
        let (name, rest) = s.split_once('/')?;
        let i = self.members.iter().position(|m| m.name == name)?;
        Some((i, rest))
    }
}

impl Fleet {
    /// The agent fault `id` is on: `NAME/ID` names it; a bare id is looked for on every
    /// agent. With one agent, that one.
    pub async fn owner_of_fault(&self, id: &str) -> anyhow::Result<(usize, String)> {
        if let Some((i, bare)) = self.split_qualified(id) {
            return Ok((i, bare.to_owned()));
        }
        if !self.is_several() {
            return Ok((0, id.to_owned()));
        }
        let mut on = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            let faults = m
                .client
                .faults()
                .await
                .map_err(|e| anyhow::anyhow!("agent {}: {e}", m.name))?;
            if faults.iter().any(|f| f.id == id) {
                on.push(i);
            }
        }
        match on.as_slice() {
            [i] => Ok((*i, id.to_owned())),
            [] => anyhow::bail!(
                "no fault `{id}` on any agent ({}); `faultline fault list` lists them",
                self.names().join(", ")
            ),
            _ => anyhow::bail!("fault `{id}` is on several agents: qualify it, like NAME/{id}"),
        }
    }

    /// The agent that runs service `service` (`NAME/service`, or a bare name found on
    /// exactly one agent), and the bare name.
    pub async fn owner_of_service(&self, service: &str) -> anyhow::Result<(usize, String)> {
        if let Some((i, bare)) = self.split_qualified(service) {
            return Ok((i, bare.to_owned()));
        }
        if !self.is_several() {
            return Ok((0, service.to_owned()));
        }
        let mut on = Vec::new();
        for ((i, m), s) in self
            .members
            .iter()
            .enumerate()
            .zip(self.statuses(Duration::from_secs(10)).await)
        {
            let s = s.map_err(|e| anyhow::anyhow!("agent {}: {e}", m.name))?;
            if s.replicas.iter().any(|r| r.service == service) {
                on.push(i);
            }
        }
        match on.as_slice() {
            [i] => Ok((*i, service.to_owned())),
            [] => anyhow::bail!(
                "no service `{service}` on any agent ({}); `faultline status` lists them",
                self.names().join(", ")
            ),
            _ => anyhow::bail!(
                "service `{service}` runs on several agents: qualify it, like NAME/{service}"
            ),
        }
    }

    /// Routes `req` over every agent's status now (see [`route`]).
    pub async fn route_now(&self, req: &FaultRequest) -> anyhow::Result<Vec<Part>> {
        if !self.is_several() {
            return Ok(vec![Part {
                agent: 0,
                request: req.clone(),
            }]);
        }
        let mut statuses = Vec::new();
        for (m, s) in self
            .members
            .iter()
            .zip(self.statuses(Duration::from_secs(10)).await)
        {
            statuses.push(s.map_err(|e| anyhow::anyhow!("agent {}: {e}", m.name))?);
        }
        let views: Vec<View<'_>> = self
            .members
            .iter()
            .zip(&statuses)
            .map(|(m, status)| View {
                name: &m.name,
                url: m.client.url(),
                status,
            })
            .collect();
        route(&views, req).map_err(|e| anyhow::anyhow!(e.message))
    }
}

/// A fault request for one agent.
#[derive(Debug, Clone)]
pub struct Part {
    /// Index into the fleet.
    pub agent: usize,
    pub request: FaultRequest,
}

/// Why a target could not be routed; `on_with`: the problem is in a partition's `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misroute {
    pub on_with: bool,
    pub message: String,
}

fn misroute(message: impl Into<String>) -> Misroute {
    Misroute {
        on_with: false,
        message: message.into(),
    }
}

/// An agent's name and what it reported.
pub struct View<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub status: &'a Status,
}

/// Whether `item` (one name of a target) is something agent `s` has, for a fault of
/// `spec`: a replica, a service, an edge `client->server`, a proxy made at run time, an
/// external, a queue or a zone.
fn owns(s: &Status, spec: &FaultSpec, item: &str) -> bool {
    if let Some((client, server)) = item.split_once("->") {
        let (client, server) = (client.trim(), server.trim());
        return s.edges.iter().any(|e| {
            e.client == client
                && (e.server == server
                    || e.name == item
                    || s.replicas
                        .iter()
                        .any(|r| r.name == e.server && r.service == server))
        });
    }
    match spec {
        FaultSpec::Poison { .. } | FaultSpec::QueuePartition { .. } => s
            .messaging
            .as_ref()
            .is_some_and(|m| m.queues.contains_key(item)),
        FaultSpec::ZoneOutage => s.replicas.iter().any(|r| r.zone == item),
        _ => {
            s.replicas
                .iter()
                .any(|r| r.name == item || r.service == item)
                || s.proxies.iter().any(|p| p.name == item)
                || s.edges.iter().any(|e| e.server == item)
        }
    }
}

fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Targets that name processes or containers of a machine, not of a topology.
fn names_a_machine(target: &str) -> bool {
    ["pid:", "proc:", "container:"]
        .iter()
        .any(|p| target.starts_with(p))
}

/// What can be checked of `req` knowing only the agents' names: a qualifier names one
/// of them, and a partition between hosts names agents on both sides (and there are
/// several). What the rest of the target names is checked on the agents.
pub fn check_names(names: &[&str], req: &FaultRequest) -> Result<(), Misroute> {
    if let FaultSpec::Partition { with } = &req.spec
        && (req.target.starts_with(HOST_PREFIX) || with.trim_start().starts_with(HOST_PREFIX))
    {
        let side = |list: &str, on_with| -> Result<(), Misroute> {
            for item in items(list) {
                let name = item.strip_prefix(HOST_PREFIX).ok_or_else(|| Misroute {
                    on_with,
                    message: format!(
                        "`{item}`: both sides of a partition between hosts are host:NAME, like host:{}",
                        names.first().unwrap_or(&"a")
                    ),
                })?;
                if !names.contains(&name) {
                    return Err(Misroute {
                        on_with,
                        message: format!(
                            "no agent named `{name}`; agents are: {}",
                            names.join(", ")
                        ),
                    });
                }
            }
            Ok(())
        };
        side(&req.target, false)?;
        side(with, true)?;
        if names.len() < 2 {
            return Err(misroute(
                "a partition between hosts needs several agents ([[target.agents]])",
            ));
        }
        return Ok(());
    }
    if names.len() > 1
        && !names_a_machine(&req.target)
        && let Some((agent, _)) = req.target.split_once('/')
        && !names.contains(&agent)
    {
        return Err(misroute(format!(
            "no agent named `{agent}`; agents are: {}",
            names.join(", ")
        )));
    }
    Ok(())
}

/// Which agents' faults `req` makes: itself on the one agent that owns its target, or
/// (a partition between hosts) a partition of edges on each agent that has edges to
/// the other side. With one agent, the request goes there unchanged (the agent says
/// what is wrong with it).
pub fn route(views: &[View<'_>], req: &FaultRequest) -> Result<Vec<Part>, Misroute> {
    if let FaultSpec::Partition { with } = &req.spec
        && (req.target.starts_with(HOST_PREFIX) || with.trim_start().starts_with(HOST_PREFIX))
    {
        return between_hosts(views, &req.target, with, req);
    }
    let names: Vec<&str> = views.iter().map(|v| v.name).collect();
    // `NAME/target`: that agent's, with the qualifier taken off (a partition's `with`
    // may repeat it).
    if let Some((agent, rest)) = req.target.split_once('/')
        && let Some(i) = names.iter().position(|n| *n == agent)
    {
        let mut request = req.clone();
        request.target = rest.to_owned();
        if let FaultSpec::Partition { with } = &mut request.spec {
            *with = unqualified(with, agent, &names)?;
        }
        return Ok(vec![Part { agent: i, request }]);
    }
    if views.len() == 1 {
        return Ok(vec![Part {
            agent: 0,
            request: req.clone(),
        }]);
    }
    if req.target.contains('/') && !names_a_machine(&req.target) {
        let agent = req.target.split('/').next().unwrap_or_default();
        return Err(misroute(format!(
            "no agent named `{agent}`; agents are: {}",
            names.join(", ")
        )));
    }
    if names_a_machine(&req.target) {
        return Err(misroute(format!(
            "`{}` names processes or containers of a machine, and this run has several: qualify it with the agent's name, like {}/{}",
            req.target, names[0], req.target
        )));
    }
    let mut owners = owners_of(views, &req.spec, &req.target);
    if let FaultSpec::Partition { with } = &req.spec {
        let other = owners_of(views, &req.spec, with);
        if owners.len() == 1 && other.len() == 1 && owners != other {
            return Err(misroute(format!(
                "`{}` is on agent {} and `{with}` on agent {}: a partition of services is within one agent; between agents, partition host:{} with host:{}",
                req.target,
                views[owners[0]].name,
                views[other[0]].name,
                views[owners[0]].name,
                views[other[0]].name
            )));
        }
        if owners.is_empty() {
            owners = other;
        }
    }
    match owners.as_slice() {
        [i] => Ok(vec![Part {
            agent: *i,
            request: req.clone(),
        }]),
        [] => Err(misroute(format!(
            "no agent has `{}`; agents are: {}",
            req.target,
            views
                .iter()
                .map(|v| format!("{} (services: {})", v.name, services(v.status)))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        several => {
            let on: Vec<&str> = several.iter().map(|i| views[*i].name).collect();
            Err(misroute(format!(
                "`{t}` is on agents {}: qualify it, like {}/{t}",
                on.join(" and "),
                on[0],
                t = req.target
            )))
        }
    }
}

/// The agents that own every name of `list`.
fn owners_of(views: &[View<'_>], spec: &FaultSpec, list: &str) -> Vec<usize> {
    (0..views.len())
        .filter(|i| {
            let mut names = items(list).peekable();
            names.peek().is_some() && names.all(|n| owns(views[*i].status, spec, n))
        })
        .collect()
}

fn services(s: &Status) -> String {
    let mut names: Vec<&str> = s.replicas.iter().map(|r| r.service.as_str()).collect();
    names.dedup();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A partition's `with` on agent `agent`: its items without the `agent/` qualifier; an
/// item qualified with another agent is an error.
fn unqualified(with: &str, agent: &str, names: &[&str]) -> Result<String, Misroute> {
    let mut out = Vec::new();
    for item in items(with) {
        match item.split_once('/') {
            Some((a, rest)) if a == agent => out.push(rest),
            Some((a, _)) if names.contains(&a) => {
                return Err(Misroute {
                    on_with: true,
                    message: format!(
                        "`{item}` is on agent {a}, the target on agent {agent}: a partition of services is within one agent; between agents, partition host:{agent} with host:{a}"
                    ),
                });
            }
            _ => out.push(item),
        }
    }
    Ok(out.join(","))
}

/// The agents a side of a partition between hosts names (`host:a,host:b`).
fn hosts(views: &[View<'_>], list: &str, on_with: bool) -> Result<BTreeSet<usize>, Misroute> {
    let names: Vec<&str> = views.iter().map(|v| v.name).collect();
    let mut out = BTreeSet::new();
    for item in items(list) {
        let Some(name) = item.strip_prefix(HOST_PREFIX) else {
            return Err(Misroute {
                on_with,
                message: format!(
                    "`{item}`: both sides of a partition between hosts are host:NAME, like host:{}",
                    names[0]
                ),
            });
        };
        match names.iter().position(|n| *n == name) {
            Some(i) => {
                out.insert(i);
            }
            None => {
                return Err(Misroute {
                    on_with,
                    message: format!("no agent named `{name}`; agents are: {}", names.join(", ")),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Misroute {
            on_with,
            message: "name the hosts of this side: host:NAME".into(),
        });
    }
    Ok(out)
}

/// The addresses agent `v` serves to other hosts: its replicas', its proxies' (edges
/// and proxies made at run time) and its entrypoint's. One listening on every address is
/// reached at the agent's own host; a loopback address is no other host's way in (on
/// another host it is that host's own).
fn served(v: &View<'_>) -> BTreeSet<String> {
    let host = name_of_url(v.url)
        .rsplit_once(':')
        .map(|(h, _)| h.to_owned())
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut add = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            out.insert(format!("{host}:{}", a.port()));
        } else if !a.ip().is_loopback() {
            out.insert(a.to_string());
        }
    };
    for r in &v.status.replicas {
        add(r.addr);
    }
    for e in &v.status.edges {
        add(e.listen);
    }
    for p in &v.status.proxies {
        if let Ok(a) = p.listen.parse() {
            add(a);
        }
    }
    if let Some(ep) = &v.status.entrypoint
        && !name_of_url(ep).starts_with("127.")
    {
        out.insert(name_of_url(ep));
    }
    out
}

/// A partition between hosts: on each agent of either side, a partition of the edges
/// whose server address the other side serves.
fn between_hosts(
    views: &[View<'_>],
    target: &str,
    with: &str,
    req: &FaultRequest,
) -> Result<Vec<Part>, Misroute> {
    let a = hosts(views, target, false)?;
    let b = hosts(views, with, true)?;
    if let Some(i) = a.intersection(&b).next() {
        return Err(Misroute {
            on_with: true,
            message: format!("host:{} is on both sides of the partition", views[*i].name),
        });
    }
    let mut parts = Vec::new();
    for (from, to) in [(&a, &b), (&b, &a)] {
        let far: BTreeSet<String> = to.iter().flat_map(|i| served(&views[*i])).collect();
        for i in from {
            let edges: Vec<&str> = views[*i]
                .status
                .edges
                .iter()
                .filter(|e| far.contains(&e.target))
                .map(|e| e.name.as_str())
                .collect();
            if !edges.is_empty() {
                let mut request = req.clone();
                request.target = edges.join(",");
                request.spec = FaultSpec::Partition {
                    with: String::new(),
                };
                parts.push(Part { agent: *i, request });
            }
        }
    }
    if parts.is_empty() {
        return Err(misroute(format!(
            "no edge joins {target} and {with}: no service of one calls an address the other serves"
        )));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_agent::api::EdgeView;
    use faultline_agent::supervisor::{ReplicaState, ReplicaStatus};

    fn replica(name: &str, service: &str, addr: &str) -> ReplicaStatus {
        ReplicaStatus {
            name: name.into(),
            service: service.into(),
            index: 1,
            zone: "z".into(),
            addr: addr.parse().unwrap(),
            state: ReplicaState::Healthy,
            pid: None,
            restarts: 0,
            liveness_restarts: 0,
            last_exit: None,
            probe_error: None,
            log: "x".into(),
            container: None,
        }
    }

    fn status(replicas: Vec<ReplicaStatus>, edges: Vec<EdgeView>) -> Status {
        Status {
            topology: "t".into(),
            entrypoint: None,
            run_dir: "/".into(),
            replicas,
            faults: Vec::new(),
            edges,
            messaging: None,
            metrics: Default::default(),
            proxies: Vec::new(),
            mechanisms: None,
            docker: None,
            scalings: Vec::new(),
        }
    }

    fn edge(client: &str, server: &str, target: &str) -> EdgeView {
        EdgeView {
            name: format!("{client}->{server}"),
            client: client.into(),
            server: server.into(),
            listen: "127.0.0.1:5000".parse().unwrap(),
            target: target.into(),
            toxics: 0,
        }
    }

    fn request(kind: &str, target: &str, with: Option<&str>) -> FaultRequest {
        let mut v = serde_json::json!({ "kind": kind, "target": target });
        if let Some(w) = with {
            v["with"] = w.into();
        }
        FaultRequest::from_json(v.to_string().as_bytes()).unwrap()
    }

    fn two() -> (Status, Status) {
        let a = status(
            vec![
                replica("web-1", "web", "10.0.0.2:80"),
                replica("orders-1", "orders", "10.0.0.2:81"),
            ],
            vec![edge("web", "b-api", "10.0.0.3:90")],
        );
        let b = status(
            vec![
                replica("api-1", "api", "10.0.0.3:90"),
                replica("orders-1", "orders", "10.0.0.3:91"),
            ],
            Vec::new(),
        );
        (a, b)
    }

    fn views<'a>(a: &'a Status, b: &'a Status) -> Vec<View<'a>> {
        vec![
            View {
                name: "host-a",
                url: "http://10.0.0.2:7400",
                status: a,
            },
            View {
                name: "host-b",
                url: "http://10.0.0.3:7400",
                status: b,
            },
        ]
    }

    #[test]
    fn names_come_from_the_flag_or_the_host_and_port() {
        assert_eq!(
            parse_arg("http://10.0.0.2:7400", None).unwrap().name,
            "10.0.0.2:7400"
        );
        let r = parse_arg("a=http://10.0.0.2:7400/", Some("t")).unwrap();
        assert_eq!(
            (r.name.as_str(), r.url.as_str()),
            ("a", "http://10.0.0.2:7400/")
        );
        assert_eq!(r.token.as_deref(), Some("t"));
        assert!(parse_arg("a/b=http://x:1", None).is_err());
        let dup = parse_args(&["a=http://x:1".into(), "a=http://y:1".into()], None);
        assert!(dup.unwrap_err().contains("two agents are named `a`"));
    }

    #[test]
    fn a_target_goes_to_the_agent_that_owns_it() {
        let (a, b) = two();
        let v = views(&a, &b);
        let parts = route(&v, &request("kill", "api-1", None)).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].agent, 1);
        let parts = route(&v, &request("blackhole", "web->b-api", None)).unwrap();
        assert_eq!(parts[0].agent, 0);
        let parts = route(&v, &request("pause", "web", None)).unwrap();
        assert_eq!(parts[0].agent, 0);
    }

    #[test]
    fn a_name_two_agents_own_must_be_qualified() {
        let (a, b) = two();
        let v = views(&a, &b);
        let e = route(&v, &request("kill", "orders-1", None)).unwrap_err();
        assert_eq!(
            e.message,
            "`orders-1` is on agents host-a and host-b: qualify it, like host-a/orders-1"
        );
        let parts = route(&v, &request("kill", "host-b/orders-1", None)).unwrap();
        assert_eq!(
            (parts[0].agent, parts[0].request.target.as_str()),
            (1, "orders-1")
        );
        let e = route(&v, &request("kill", "host-c/orders-1", None)).unwrap_err();
        assert!(
            e.message.starts_with("no agent named `host-c`"),
            "{}",
            e.message
        );
        let e = route(&v, &request("kill", "nope", None)).unwrap_err();
        assert!(
            e.message.starts_with("no agent has `nope`"),
            "{}",
            e.message
        );
        let e = route(&v, &request("pause", "proc:nginx", None)).unwrap_err();
        assert!(e.message.contains("host-a/proc:nginx"), "{}", e.message);
    }

    #[test]
    fn a_partition_between_hosts_is_a_part_on_each_agent_with_edges_that_cross() {
        // b calls back into a's entrypoint, and a calls b's replica listening on every
        // address (reached at b's host); a's call to its own loopback (where b's edge
        // proxies listen too, on b) and to its own replica stay.
        let mut a = status(
            vec![replica("web-1", "web", "10.0.0.2:80")],
            vec![
                edge("web", "b-api", "10.0.0.3:90"),
                edge("web", "own-proxy", "127.0.0.1:5000"),
                edge("web", "local", "10.0.0.2:81"),
            ],
        );
        a.entrypoint = Some("http://10.0.0.2:80".into());
        let b = status(
            vec![replica("api-1", "api", "0.0.0.0:90")],
            vec![edge("api", "a-web", "10.0.0.2:80")],
        );
        let v = views(&a, &b);
        let parts = route(
            &v,
            &request("partition", "host:host-b", Some("host:host-a")),
        )
        .unwrap();
        let got: Vec<(usize, &str)> = parts
            .iter()
            .map(|p| (p.agent, p.request.target.as_str()))
            .collect();
        assert_eq!(got, [(1, "api->a-web"), (0, "web->b-api")]);
    }

    #[test]
    fn a_partition_between_hosts_cuts_the_edges_that_cross() {
        let (a, b) = two();
        let v = views(&a, &b);
        let parts = route(
            &v,
            &request("partition", "host:host-a", Some("host:host-b")),
        )
        .unwrap();
        assert_eq!(parts.len(), 1, "{parts:?}");
        assert_eq!(parts[0].agent, 0);
        assert_eq!(parts[0].request.target, "web->b-api");
        assert!(matches!(&parts[0].request.spec, FaultSpec::Partition { with } if with.is_empty()));
        let e = route(
            &v,
            &request("partition", "host:host-a", Some("host:host-a")),
        )
        .unwrap_err();
        assert!(e.on_with && e.message.contains("both sides"), "{e:?}");
        let e = route(&v, &request("partition", "host:host-b", Some("host:x"))).unwrap_err();
        assert!(
            e.on_with && e.message.starts_with("no agent named `x`"),
            "{e:?}"
        );
        let e = route(&v, &request("partition", "web", Some("api"))).unwrap_err();
        assert!(
            e.message.contains("partition host:host-a with host:host-b"),
            "{e:?}"
        );
    }
}
