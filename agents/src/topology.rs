//! Topology files: which services to run, how, how many replicas, where, and which
//! service calls which.
//!
//! Parsing is two-phase: the TOML is read into raw, span-carrying types, then validated
//! into a [`Topology`] that the supervisor trusts. Every problem is reported with its
//! `file:line:column`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::diag::SourceError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    name: Option<Spanned<String>>,
    entrypoint: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, RawService>,
    /// Outside dependencies: `[external.NAME] address = "host:port"`.
    #[serde(default)]
    external: BTreeMap<Spanned<String>, RawExternal>,
    messaging: Option<RawMessaging>,
    /// `"process"` (the default) or `"docker"`, for every service that does not say.
    runtime: Option<Spanned<String>>,
    /// The image of every docker service that does not name its own.
    image: Option<Spanned<String>>,
    /// `[docker] project = "NAME"`: adopt a running Compose project.
    docker: Option<RawDocker>,
    /// Variables of faultline's own environment that containers get too: names, or
    /// prefixes ending in `*`.
    #[serde(default)]
    pass_env: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    project: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    address: Spanned<String>,
}

/// A dependency outside the topology (`[external.NAME]`): not started or supervised,
/// but callable, so its edges get fault proxies like any other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct External {
    pub name: String,
    /// `host:port`; a host name is resolved at each connect.
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessaging {
    broker: Spanned<String>,
    #[serde(default)]
    queues: BTreeMap<Spanned<String>, RawQueueUse>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueueUse {
    #[serde(default)]
    consumers: Vec<Spanned<String>>,
    #[serde(default)]
    producers: Vec<Spanned<String>>,
}

/// Which service hosts the queues and which services use each queue: what queue
/// faults (poison, partitions of consumers or producers) act on, and where the cli's
/// observer and checks find the queues.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Messaging {
    pub broker: String,
    pub queues: BTreeMap<String, QueueUse>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueUse {
    pub consumers: Vec<String>,
    pub producers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    command: Spanned<Vec<Spanned<String>>>,
    replicas: Option<Spanned<i64>>,
    port: Option<Spanned<i64>>,
    host: Option<Spanned<String>>,
    zones: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    calls: Vec<Spanned<String>>,
    /// `"/path" | "tcp" | "none"`, or `{ exec = [...], timeout = "2s" }`: read as a
    /// value, since span-carrying types cannot sit in an untagged enum.
    health: Option<Spanned<toml::Value>>,
    startup_timeout: Option<Spanned<String>>,
    liveness: Option<Spanned<RawLiveness>>,
    metrics: Option<Spanned<String>>,
    cwd: Option<Spanned<String>>,
    #[serde(default)]
    files: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    runtime: Option<Spanned<String>>,
    image: Option<Spanned<String>>,
    /// `{ min, max, target }`: read as a value, checked by `autoscale_of`.
    autoscale: Option<Spanned<toml::Value>>,
}

/// An auto-scaling group: the supervisor keeps a service between `min` and `max`
/// replicas, aiming at `target` requests a second per replica, as counted by the edge
/// proxies into its replicas (so it works on any system whose service has callers).
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Requests a second per replica.
    pub target: f64,
    /// How long the load must stay low before replicas are removed: the largest
    /// replica count wanted during this window is kept (default 30 s).
    pub scale_in_window: Duration,
    /// The least time between two scale-outs (default 3 s), so a scale-out is
    /// measured before the next.
    pub scale_out_cooldown: Duration,
}

/// `liveness = { failures = 3, period = "1s", timeout = "1s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLiveness {
    failures: Spanned<i64>,
    period: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

/// When a replica that stopped answering its health probe is killed and started again
/// (Kubernetes' liveness probe): after `failures` failed probes in a row, one every
/// `period`, each given `timeout` to answer. Not while a pause fault holds it (a paused
/// replica is not probed at all), and only once it has been healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub failures: u32,
    /// None: the supervisor's health interval.
    pub period: Option<Duration>,
    pub timeout: Duration,
}

/// How a service's replicas run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// A process of this machine, per replica.
    Process,
    /// A container of `image` per replica, on the run's own Docker network.
    Docker { image: String },
    /// Containers that run already (a Compose project's), one per replica: faulted,
    /// never created or removed.
    Adopted { containers: Vec<AdoptedContainer> },
}

/// A running container taken as a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedContainer {
    pub name: String,
    /// Its address on its first network, and its first exposed port (0 if none).
    pub addr: std::net::SocketAddr,
}

/// The runtimes `runtime =` and `--runtime` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Process,
    Docker,
}

/// How the supervisor decides that a replica is up and stays healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `GET path` answers 2xx (the default, `/health`).
    Http(String),
    /// A TCP connection to the replica's address is accepted.
    Tcp,
    /// The command exits 0 within `timeout`; its arguments may hold placeholders.
    Exec {
        argv: Vec<Template>,
        timeout: Duration,
    },
    /// Healthy once started (and for as long as the process runs).
    None,
}

impl Health {
    /// How the probe is written, for messages: `GET /health`, `tcp`, `exec redis-cli`.
    pub fn describe(&self) -> String {
        match self {
            Health::Http(path) => format!("GET {path}"),
            Health::Tcp => "tcp connect".to_owned(),
            Health::Exec { argv, .. } => {
                let words: Vec<String> = argv
                    .iter()
                    .map(|t| t.render(&|p| format!("{{{}}}", p.name())))
                    .collect();
                format!("exec `{}`", words.join(" "))
            }
            Health::None => "none".to_owned(),
        }
    }
}

/// One piece of a command argument or environment value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    /// `{listen}`: `host:port` of this replica.
    Listen,
    /// `{host}`.
    Host,
    /// `{port}`.
    Port,
    /// `{service}`.
    Service,
    /// `{replica}`: the replica's name, `orders-2`.
    Replica,
    /// `{index}`: the replica's number, from 1.
    Index,
    /// `{zone}`.
    Zone,
    /// `{run_dir}`: the run directory, for files a service keeps.
    RunDir,
    /// `{topology_dir}`: the directory of the topology file, absolute.
    TopologyDir,
    /// `{upstream:NAME}`: comma-separated `host:port` of every replica of NAME (or of
    /// the proxies in front of them).
    Upstream(String),
    /// `{upstream:NAME:N}`: the `host:port` of the N-th (from 1) of those.
    UpstreamAt(String, u32),
    /// `{upstream-file:NAME}`: the path of a file listing those addresses, one a line,
    /// rewritten (atomically) whenever NAME is scaled; callers re-read it.
    UpstreamFile(String),
    /// `{file:NAME}`: the path of this replica's copy of the service's file NAME,
    /// rendered from its template (`files`).
    File(String),
    /// `{secret:NAME}`: a random value made once per run, the same wherever NAME is used.
    Secret(String),
}

/// A string with placeholders, filled in per replica when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

pub const PLACEHOLDERS: &str = "{listen}, {host}, {port}, {service}, {replica}, {index}, {zone}, {run_dir}, {topology_dir}, {upstream:NAME}, {upstream:NAME:N}, {upstream-file:NAME}, {file:NAME}, {secret:NAME}";

impl Piece {
    /// The placeholder's name as written between braces (`upstream:db`).
    pub fn name(&self) -> String {
        match self {
            Piece::Lit(s) => s.clone(),
            Piece::Listen => "listen".into(),
            Piece::Host => "host".into(),
            Piece::Port => "port".into(),
            Piece::Service => "service".into(),
            Piece::Replica => "replica".into(),
            Piece::Index => "index".into(),
            Piece::Zone => "zone".into(),
            Piece::RunDir => "run_dir".into(),
            Piece::TopologyDir => "topology_dir".into(),
            Piece::Upstream(s) => format!("upstream:{s}"),
            Piece::UpstreamAt(s, n) => format!("upstream:{s}:{n}"),
            Piece::UpstreamFile(s) => format!("upstream-file:{s}"),
            Piece::File(s) => format!("file:{s}"),
            Piece::Secret(s) => format!("secret:{s}"),
        }
    }

    fn from_name(name: &str) -> Option<Piece> {
        Some(match name.split_once(':') {
            None => match name {
                "listen" => Piece::Listen,
                "host" => Piece::Host,
                "port" => Piece::Port,
                "service" => Piece::Service,
                "replica" => Piece::Replica,
                "index" => Piece::Index,
                "zone" => Piece::Zone,
                "run_dir" => Piece::RunDir,
                "topology_dir" => Piece::TopologyDir,
                _ => return None,
            },
            Some(("upstream", rest)) => match rest.split_once(':') {
                None if !rest.is_empty() => Piece::Upstream(rest.to_owned()),
                Some((svc, n)) if !svc.is_empty() => {
                    let n: u32 = n.parse().ok().filter(|n| (1..=64).contains(n))?;
                    Piece::UpstreamAt(svc.to_owned(), n)
                }
                _ => return None,
            },
            Some(("upstream-file", s)) if !s.is_empty() && !s.contains(':') => {
                Piece::UpstreamFile(s.to_owned())
            }
            Some(("file", f)) if !f.is_empty() => Piece::File(f.to_owned()),
            Some(("secret", key)) if !key.is_empty() => Piece::Secret(key.to_owned()),
            _ => return None,
        })
    }
}

impl Template {
    fn parse(s: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(open) = rest.find(['{', '}']) {
            lit.push_str(&rest[..open]);
            let c = rest.as_bytes()[open];
            rest = &rest[open + 1..];
            // `{{` and `}}` stand for literal braces.
            if rest.as_bytes().first() == Some(&c) {
                lit.push(c as char);
                rest = &rest[1..];
                continue;
            }
            if c == b'}' {
                return Err("unmatched `}` (write `}}` for a literal brace)".into());
            }
            let close = rest
                .find('}')
                .ok_or("unclosed `{` (write `{{` for a literal brace)")?;
            let name = &rest[..close];
            rest = &rest[close + 1..];
            let piece = Piece::from_name(name).ok_or_else(|| {
                format!("unknown placeholder `{{{name}}}`; expected one of {PLACEHOLDERS}")
            })?;
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template(pieces))
    }

    /// Parses a file template: placeholders are written `{{name}}` (so that the braces
    /// of nginx, JSON or YAML files stay literal); an error carries its byte offset.
    pub fn parse_file(s: &str) -> Result<Self, (usize, String)> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut at = 0;
        while let Some(open) = s[at..].find("{{") {
            let open = at + open;
            lit.push_str(&s[at..open]);
            let close = s[open + 2..].find("}}").ok_or((
                open,
                "unclosed `{{`: file templates write placeholders as {{name}}".to_owned(),
            ))?;
            let name = s[open + 2..open + 2 + close].trim();
            let piece = Piece::from_name(name).ok_or_else(|| {
                (
                    open,
                    format!("unknown placeholder `{{{{{name}}}}}`; expected one of {PLACEHOLDERS}, written with double braces"),
                )
            })?;
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
            at = open + 2 + close + 2;
        }
        lit.push_str(&s[at..]);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template(pieces))
    }

    /// Fills the placeholders; `lookup` answers the ones that need the running system.
    pub fn render(&self, lookup: &dyn Fn(&Piece) -> String) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Lit(s) => s.clone(),
                other => lookup(other),
            })
            .collect()
    }

    fn upstreams(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Piece::Upstream(s) | Piece::UpstreamAt(s, _) | Piece::UpstreamFile(s) => {
                Some(s.as_str())
            }
            _ => None,
        })
    }

    fn files(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Piece::File(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// A validated service.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub command: Vec<Template>,
    pub replicas: u32,
    /// 0 picks a free port for each replica.
    pub port: u16,
    pub host: IpAddr,
    pub zones: Vec<String>,
    /// The services this one calls: the edges of the topology.
    pub calls: Vec<String>,
    /// The outside dependencies (`[external.NAME]`) it calls, listed in `calls` too
    /// in the file: edges as well, but no part of the start order.
    pub externals: Vec<String>,
    pub health: Health,
    pub startup_timeout: Duration,
    /// Restart a replica that fails its probe this many periods in a row; None: never.
    pub liveness: Option<Liveness>,
    /// Its auto-scaling group (`autoscale = { min, max, target }`), if it has one.
    pub autoscale: Option<Autoscale>,
    /// The path of its Prometheus metrics (`metrics = "/metrics"`); None: not scraped.
    pub metrics: Option<String>,
    /// The working directory of its replicas (absolute when the topology was loaded
    /// from a file: the file's directory unless `cwd` says otherwise).
    pub cwd: Template,
    /// Files rendered for each replica before it starts: the name `{file:NAME}` refers
    /// to, and the template's text (read from `files = { NAME = "template path" }`).
    pub files: Vec<ServiceFile>,
    pub env: Vec<(String, Template)>,
    pub runtime: Runtime,
}

/// A config file a service's replicas get, rendered from a template per replica.
#[derive(Debug, Clone)]
pub struct ServiceFile {
    pub name: String,
    /// Where the template was read from, for messages.
    pub source: PathBuf,
    pub template: Template,
}

impl Service {
    /// The zone of replica `index` (from 1): zones are dealt out in turn.
    pub fn zone_of(&self, index: u32) -> &str {
        &self.zones[(index as usize - 1) % self.zones.len()]
    }

    pub fn replica_name(&self, index: u32) -> String {
        format!("{}-{index}", self.name)
    }
}

/// A validated topology. `services` is in start order: every service after the ones
/// it calls.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    pub entrypoint: Option<String>,
    pub env: Vec<(String, Template)>,
    pub services: Vec<Service>,
    /// The outside dependencies, by name.
    pub externals: Vec<External>,
    pub messaging: Option<Messaging>,
    /// The topology file's directory (absolute when loaded from a file): relative
    /// program paths, templates and `cwd` are resolved against it.
    pub base_dir: PathBuf,
    /// The image docker services run when they name none (`image` at the top).
    pub image: Option<String>,
    /// The Compose project whose containers are the services (`[docker] project`,
    /// `--docker-project`), found when the topology starts.
    pub docker_project: Option<String>,
    /// Which of faultline's environment variables containers get (`pass_env`): a
    /// name, or a prefix ending in `*`. Processes inherit all of it anyway.
    pub pass_env: Vec<String>,
}

pub(crate) const MAX_REPLICAS: i64 = 64;

impl Topology {
    pub fn load(path: &Path) -> Result<Self, SourceError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            SourceError::whole_file(&shown, format!("cannot read the topology file: {e}"))
        })?;
        Self::parse(&shown, &text, Self::dir_of(path))
    }

    /// The directory relative paths in the topology file at `path` mean: the file's
    /// own directory, absolute, wherever faultline was started from.
    pub fn dir_of(path: &Path) -> PathBuf {
        path.canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .or_else(|| path.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    }

    /// Parses and validates `text`, naming it `file` in errors.
    pub fn parse(file: &str, text: &str, base_dir: PathBuf) -> Result<Self, SourceError> {
        let raw: RawTopology =
            toml::from_str(text).map_err(|e| SourceError::from_toml(file, text, &e))?;
        let err =
            |span: std::ops::Range<usize>, msg: String| SourceError::at(file, text, span, msg);

        let docker_project = docker_project_of(&raw, &err)?;
        let pass_env = pass_env_of(&raw, &err)?;
        if raw.services.is_empty() && docker_project.is_none() {
            return Err(SourceError::whole_file(
                file,
                "the topology has no services; add a [services.NAME] table with a command",
            ));
        }
        let names: BTreeSet<&str> = raw.services.keys().map(|k| k.get_ref().as_str()).collect();
        let externals = externals_of(&raw, &names, &err)?;
        let known = Known {
            services: names.clone(),
            externals: externals.iter().map(|e| e.name.as_str()).collect(),
        };
        let name_list = || names.iter().copied().collect::<Vec<_>>().join(", ");

        let env = parse_env(&raw.env, &err)?;
        let defaults = RuntimeDefaults {
            runtime: runtime_kind(raw.runtime.as_ref(), &err)?,
            image: image_of(raw.image.as_ref(), &err)?,
        };
        let mut services = Vec::new();
        for (name, svc) in &raw.services {
            let mut s = validate_service(name, svc, &known, &base_dir, &err)?;
            s.runtime = runtime_of(name, svc, &defaults, &s.health, &err)?;
            services.push(s);
        }
        let entrypoint = match &raw.entrypoint {
            // Checked against the project's services when they are found.
            Some(e) if docker_project.is_some() => Some(e.get_ref().clone()),
            Some(e) if !names.contains(e.get_ref().as_str()) => {
                return Err(err(
                    e.span(),
                    format!(
                        "entrypoint `{}` is not a service; services are: {}",
                        e.get_ref(),
                        name_list()
                    ),
                ));
            }
            Some(e) => Some(e.get_ref().clone()),
            None => None,
        };
        let services = check_autoscaled(start_order(services, &raw, &err)?, &raw, &err)?;
        let messaging = match &raw.messaging {
            None => None,
            Some(m) => {
                let known = |s: &Spanned<String>| -> Result<String, SourceError> {
                    if names.contains(s.get_ref().as_str()) {
                        Ok(s.get_ref().clone())
                    } else if known.externals.contains(s.get_ref().as_str()) {
                        Err(err(
                            s.span(),
                            format!(
                                "`{}` is an external; messaging names services, which are: {}",
                                s.get_ref(),
                                name_list()
                            ),
                        ))
                    } else {
                        Err(err(
                            s.span(),
                            format!(
                                "`{}` is not a service; services are: {}",
                                s.get_ref(),
                                name_list()
                            ),
                        ))
                    }
                };
                let broker = known(&m.broker)?;
                let mut queues = BTreeMap::new();
                for (q, u) in &m.queues {
                    queues.insert(
                        q.get_ref().clone(),
                        QueueUse {
                            consumers: u.consumers.iter().map(known).collect::<Result<_, _>>()?,
                            producers: u.producers.iter().map(known).collect::<Result<_, _>>()?,
                        },
                    );
                }
                Some(Messaging { broker, queues })
            }
        };
        Ok(Topology {
            name: raw
                .name
                .map_or_else(|| "topology".to_owned(), Spanned::into_inner),
            entrypoint,
            env,
            services,
            externals,
            messaging,
            base_dir,
            image: defaults.image,
            docker_project,
            pass_env,
        })
    }

    /// No topology: nothing supervised, no edges; an agent on it has only proxies made
    /// at run time and faults on processes.
    pub fn none() -> Self {
        Topology {
            name: "none".into(),
            entrypoint: None,
            env: Vec::new(),
            services: Vec::new(),
            externals: Vec::new(),
            messaging: None,
            base_dir: std::env::current_dir().unwrap_or_default(),
            image: None,
            docker_project: None,
            pass_env: Vec::new(),
        }
    }

    /// A topology that adopts the running Compose project `project`
    /// (`--docker-project`): its services are the project's.
    pub fn adopt(project: &str) -> Self {
        Topology {
            name: project.to_owned(),
            docker_project: Some(project.to_owned()),
            ..Topology::none()
        }
    }

    /// Runs every service on `kind` (`--runtime`): docker services keep their image,
    /// and the others take the topology's `image`; an error names a service that
    /// cannot run there.
    pub fn set_runtime(&mut self, kind: RuntimeKind) -> Result<(), String> {
        for svc in &mut self.services {
            svc.runtime = match (kind, &svc.runtime) {
                (_, Runtime::Adopted { .. }) => {
                    return Err("an adopted Compose project runs as it is".into());
                }
                (RuntimeKind::Process, _) => Runtime::Process,
                (RuntimeKind::Docker, Runtime::Docker { image }) => Runtime::Docker {
                    image: image.clone(),
                },
                (RuntimeKind::Docker, Runtime::Process) => {
                    let Some(image) = &self.image else {
                        return Err(format!(
                            "service `{}` has no image to run on docker; set `image` at the top of the topology or in [services.{}]",
                            svc.name, svc.name
                        ));
                    };
                    docker_can_run(&svc.name, &svc.health)?;
                    Runtime::Docker {
                        image: image.clone(),
                    }
                }
            };
        }
        Ok(())
    }

    /// Whether any service runs on docker.
    pub fn uses_docker(&self) -> bool {
        self.services
            .iter()
            .any(|s| matches!(s.runtime, Runtime::Docker { .. }))
            || self.docker_project.is_some()
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn service_mut(&mut self, name: &str) -> Option<&mut Service> {
        self.services.iter_mut().find(|s| s.name == name)
    }

    pub fn external(&self, name: &str) -> Option<&External> {
        self.externals.iter().find(|e| e.name == name)
    }
}

/// The names a service may call: the topology's services and its externals.
struct Known<'a> {
    services: BTreeSet<&'a str>,
    externals: BTreeSet<&'a str>,
}

impl Known<'_> {
    /// `services are: a, b` (and `; externals are: x` when there are any).
    fn list(&self) -> String {
        let join = |s: &BTreeSet<&str>| s.iter().copied().collect::<Vec<_>>().join(", ");
        if self.externals.is_empty() {
            format!("services are: {}", join(&self.services))
        } else {
            format!(
                "services are: {}; externals are: {}",
                join(&self.services),
                join(&self.externals)
            )
        }
    }
}

/// The `[external.NAME]` tables, by name: each named like a service but not as one,
/// its address `host:port`.
fn externals_of(
    raw: &RawTopology,
    services: &BTreeSet<&str>,
    err: &ErrFn<'_>,
) -> Result<Vec<External>, SourceError> {
    let mut out = Vec::new();
    for (name, ext) in &raw.external {
        let n = name.get_ref();
        valid_name("external", n).map_err(|m| err(name.span(), m))?;
        if services.contains(n.as_str()) {
            return Err(err(
                name.span(),
                format!("external `{n}` has the name of a service; rename one of them"),
            ));
        }
        crate::proxy::runtime::check_address("address", ext.address.get_ref())
            .map_err(|e| err(ext.address.span(), format!("external `{n}`: {e}")))?;
        out.push(External {
            name: n.clone(),
            address: ext.address.get_ref().clone(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

type ErrFn<'a> = dyn Fn(std::ops::Range<usize>, String) -> SourceError + 'a;

fn parse_env(
    raw: &BTreeMap<Spanned<String>, Spanned<String>>,
    err: &ErrFn<'_>,
) -> Result<Vec<(String, Template)>, SourceError> {
    raw.iter()
        .map(|(k, v)| {
            if k.get_ref().is_empty() || k.get_ref().contains(['=', '\0']) {
                return Err(err(
                    k.span(),
                    format!("`{}` is not a valid environment variable name", k.get_ref()),
                ));
            }
            let t = Template::parse(v.get_ref()).map_err(|m| err(v.span(), m))?;
            Ok((k.get_ref().clone(), t))
        })
        .collect()
}

fn valid_name(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!(
            "{what} name `{name}` must start with a lowercase letter and hold only lowercase letters, digits, `-` and `_`"
        ));
    }
    if let Some((_, tail)) = name.rsplit_once('-')
        && !tail.is_empty()
        && tail.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!(
            "{what} name `{name}` ends in `-{tail}`, which reads as a replica number; rename it"
        ));
    }
    Ok(())
}

/// The command's templates; the program (its first word) holds no placeholder.
fn command_of(raw: &RawService, n: &str, err: &ErrFn<'_>) -> Result<Vec<Template>, SourceError> {
    if raw.command.get_ref().is_empty() {
        return Err(err(
            raw.command.span(),
            format!("service `{n}` has an empty command; give the program and its arguments"),
        ));
    }
    let mut command = Vec::new();
    for arg in raw.command.get_ref() {
        command.push(Template::parse(arg.get_ref()).map_err(|m| err(arg.span(), m))?);
    }
    if command[0].0.iter().any(|p| !matches!(p, Piece::Lit(_))) {
        return Err(err(
            raw.command.get_ref()[0].span(),
            "the program (first word of the command) cannot hold placeholders".into(),
        ));
    }
    Ok(command)
}

/// How many replicas, and their port (0: a free one each).
fn replicas_and_port(
    raw: &RawService,
    n: &str,
    err: &ErrFn<'_>,
) -> Result<(u32, u16), SourceError> {
    let replicas = match &raw.replicas {
        Some(r) if !(1..=MAX_REPLICAS).contains(r.get_ref()) => {
            return Err(err(
                r.span(),
                format!(
                    "replicas must be from 1 to {MAX_REPLICAS}, not {}",
                    r.get_ref()
                ),
            ));
        }
        Some(r) => *r.get_ref() as u32,
        None => 1,
    };
    let port = match &raw.port {
        Some(p) if !(0..=65535).contains(p.get_ref()) => {
            return Err(err(
                p.span(),
                format!("port must be from 0 to 65535, not {}", p.get_ref()),
            ));
        }
        Some(p) if *p.get_ref() != 0 && replicas > 1 => {
            return Err(err(
                p.span(),
                format!(
                    "service `{n}` has {replicas} replicas, so they cannot share port {}; use port = 0",
                    p.get_ref()
                ),
            ));
        }
        Some(p) => *p.get_ref() as u16,
        None => 0,
    };
    Ok((replicas, port))
}

fn zones_of(raw: &RawService, err: &ErrFn<'_>) -> Result<Vec<String>, SourceError> {
    match &raw.zones {
        Some(z) if z.get_ref().is_empty() => Err(err(
            z.span(),
            "zones cannot be empty; leave it out for a single zone".into(),
        )),
        Some(z) => {
            for zone in z.get_ref() {
                if zone.get_ref().is_empty() || zone.get_ref().contains(char::is_whitespace) {
                    return Err(err(
                        zone.span(),
                        format!("zone `{}` must be a non-empty word", zone.get_ref()),
                    ));
                }
            }
            Ok(z.get_ref().iter().map(|s| s.get_ref().clone()).collect())
        }
        None => Ok(vec!["default".to_owned()]),
    }
}

/// The services and the externals it calls: known ones, each once, never itself.
fn calls_of(
    raw: &RawService,
    n: &str,
    known: &Known<'_>,
    err: &ErrFn<'_>,
) -> Result<(Vec<String>, Vec<String>), SourceError> {
    let mut calls = Vec::new();
    let mut externals = Vec::new();
    for c in &raw.calls {
        let callee = c.get_ref();
        let external = known.externals.contains(callee.as_str());
        if !external && !known.services.contains(callee.as_str()) {
            return Err(err(
                c.span(),
                format!("`{n}` calls unknown service `{callee}`; {}", known.list()),
            ));
        }
        if callee == n {
            return Err(err(c.span(), format!("`{n}` cannot call itself")));
        }
        if calls.contains(callee) || externals.contains(callee) {
            return Err(err(
                c.span(),
                format!("`{n}` lists `{callee}` twice in calls"),
            ));
        }
        if external {
            externals.push(callee.clone());
        } else {
            calls.push(callee.clone());
        }
    }
    Ok((calls, externals))
}

/// The longest a replica may take to answer its first health probe.
pub const MAX_STARTUP_TIMEOUT: Duration = Duration::from_secs(3600);

fn startup_timeout_of(raw: &RawService, err: &ErrFn<'_>) -> Result<Duration, SourceError> {
    let Some(t) = &raw.startup_timeout else {
        return Ok(Duration::from_secs(20));
    };
    let d = humantime::parse_duration(t.get_ref()).map_err(|e| {
        err(
            t.span(),
            format!("startup_timeout: {e} (write durations like 500ms, 10s)"),
        )
    })?;
    if d > MAX_STARTUP_TIMEOUT {
        return Err(err(
            t.span(),
            format!("startup_timeout must be at most 1h, not `{}`", t.get_ref()),
        ));
    }
    Ok(d)
}

fn validate_service(
    name: &Spanned<String>,
    raw: &RawService,
    known: &Known<'_>,
    base_dir: &Path,
    err: &ErrFn<'_>,
) -> Result<Service, SourceError> {
    let n = name.get_ref().as_str();
    valid_name("service", n).map_err(|m| err(name.span(), m))?;
    let command = command_of(raw, n, err)?;
    let (replicas, port) = replicas_and_port(raw, n, err)?;
    let host = match &raw.host {
        Some(h) => h.get_ref().parse::<IpAddr>().map_err(|_| {
            err(
                h.span(),
                format!(
                    "host must be an IP address such as 127.0.0.1, not `{}`",
                    h.get_ref()
                ),
            )
        })?,
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let zones = zones_of(raw, err)?;
    let (calls, externals) = calls_of(raw, n, known, err)?;
    let files = files_of(raw, base_dir, err)?;
    let health = health_of(raw, err)?;
    let startup_timeout = startup_timeout_of(raw, err)?;
    let liveness = liveness_of(raw, err)?;
    let env = parse_env(&raw.env, err)?;
    let metrics = metrics_of(raw, err)?;
    let cwd = cwd_of(raw, err)?;
    let autoscale = autoscale_of(raw, n, replicas, port, err)?;
    // Without `replicas`, an auto-scaling group starts at its minimum.
    let replicas = match (&raw.replicas, &autoscale) {
        (None, Some(a)) => a.min,
        _ => replicas,
    };
    check_references(
        &Declared {
            name,
            raw,
            command: &command,
            env: &env,
            calls: &calls,
            externals: &externals,
            files: &files,
        },
        err,
    )?;

    Ok(Service {
        name: n.to_owned(),
        command,
        replicas,
        port,
        host,
        zones,
        calls,
        externals,
        health,
        startup_timeout,
        liveness,
        autoscale,
        metrics,
        cwd,
        files,
        env,
        runtime: Runtime::Process,
    })
}

/// An autoscaled service is measured through the edge proxies of its callers, so it
/// needs some, and its replicas run as processes.
fn check_autoscaled(
    services: Vec<Service>,
    raw: &RawTopology,
    err: &ErrFn<'_>,
) -> Result<Vec<Service>, SourceError> {
    for svc in services.iter().filter(|s| s.autoscale.is_some()) {
        let span = raw
            .services
            .get_key_value(svc.name.as_str())
            .and_then(|(_, r)| r.autoscale.as_ref())
            .map(Spanned::span)
            .unwrap_or_default();
        if !services.iter().any(|c| c.calls.contains(&svc.name)) {
            return Err(err(
                span,
                format!(
                    "service `{}` is called by no service, so its load cannot be measured: autoscale counts the requests of its callers through their edge proxies",
                    svc.name
                ),
            ));
        }
        if !matches!(svc.runtime, Runtime::Process) {
            return Err(err(
                span,
                format!(
                    "service `{}` runs in containers; only services run as processes can be autoscaled",
                    svc.name
                ),
            ));
        }
    }
    Ok(services)
}

/// `autoscale = { min = 1, max = 6, target = 50 }`, and the optional
/// `scale_in_window` and `scale_out_cooldown` durations.
fn autoscale_of(
    raw: &RawService,
    n: &str,
    replicas: u32,
    port: u16,
    err: &ErrFn<'_>,
) -> Result<Option<Autoscale>, SourceError> {
    let Some(v) = &raw.autoscale else {
        return Ok(None);
    };
    let span = v.span();
    let bad = |m: String| err(span.clone(), m);
    let table = v.get_ref().as_table().ok_or_else(|| {
        bad("autoscale must be a table: { min = 1, max = 4, target = 50 }".into())
    })?;
    const KEYS: [&str; 5] = [
        "min",
        "max",
        "target",
        "scale_in_window",
        "scale_out_cooldown",
    ];
    if let Some(k) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown autoscale key `{k}`; expected one of {}",
            KEYS.join(", ")
        )));
    }
    let count = |key: &str| -> Result<u32, SourceError> {
        match table.get(key) {
            Some(toml::Value::Integer(i)) if (1..=MAX_REPLICAS).contains(i) => Ok(*i as u32),
            Some(other) => Err(bad(format!(
                "autoscale {key} must be from 1 to {MAX_REPLICAS}, not {other}"
            ))),
            None => Err(bad(format!("autoscale needs {key}"))),
        }
    };
    let (min, max) = (count("min")?, count("max")?);
    if min > max {
        return Err(bad(format!(
            "autoscale min ({min}) is above its max ({max})"
        )));
    }
    let target = match table.get("target") {
        Some(toml::Value::Integer(i)) if (1..=1_000_000).contains(i) => *i as f64,
        Some(toml::Value::Float(f)) if (0.001..=1e6).contains(f) => *f,
        Some(other) => {
            return Err(bad(format!(
                "autoscale target (requests a second per replica) must be from 0.001 to 1000000, not {other}"
            )));
        }
        None => {
            return Err(bad(
                "autoscale needs target (requests a second per replica)".into(),
            ));
        }
    };
    let duration = |key: &str, default: u64| -> Result<Duration, SourceError> {
        match table.get(key) {
            None => Ok(Duration::from_secs(default)),
            Some(toml::Value::String(s)) => humantime::parse_duration(s)
                .ok()
                .filter(|d| *d <= Duration::from_secs(3600))
                .ok_or_else(|| {
                    bad(format!(
                        "autoscale {key} must be a duration of at most 1h such as \"30s\", not `{s}`"
                    ))
                }),
            Some(other) => Err(bad(format!(
                "autoscale {key} must be a duration such as \"30s\", not {other}"
            ))),
        }
    };
    if raw.replicas.is_some() && !(min..=max).contains(&replicas) {
        return Err(bad(format!(
            "service `{n}` starts with {replicas} replicas, outside its autoscale range {min}..={max}"
        )));
    }
    if port != 0 && max > 1 {
        return Err(bad(format!(
            "service `{n}` listens on the fixed port {port}, which several replicas cannot share; use port = 0 to autoscale it"
        )));
    }
    Ok(Some(Autoscale {
        min,
        max,
        target,
        scale_in_window: duration("scale_in_window", 30)?,
        scale_out_cooldown: duration("scale_out_cooldown", 3)?,
    }))
}

/// `pass_env`: names, or prefixes ending in `*`.
fn pass_env_of(raw: &RawTopology, err: &ErrFn<'_>) -> Result<Vec<String>, SourceError> {
    raw.pass_env
        .iter()
        .map(|p| {
            let name = p.get_ref();
            let stem = name.strip_suffix('*').unwrap_or(name);
            if stem.is_empty() || stem.contains(['=', '*', '\0']) {
                return Err(err(
                    p.span(),
                    format!("pass_env takes variable names, or prefixes ending in `*` such as \"SHOP_*\", not `{name}`"),
                ));
            }
            Ok(name.clone())
        })
        .collect()
}

impl Topology {
    /// The variables of this process's environment that `pass_env` names.
    pub fn passed_env(&self) -> Vec<(String, String)> {
        std::env::vars()
            .filter(|(k, _)| {
                self.pass_env.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => k.starts_with(prefix),
                    None => k == p,
                })
            })
            .collect()
    }
}

/// `[docker] project`, which stands instead of `[services]`.
fn docker_project_of(raw: &RawTopology, err: &ErrFn<'_>) -> Result<Option<String>, SourceError> {
    match &raw.docker {
        Some(d) if !raw.services.is_empty() => Err(err(
            d.project.span(),
            "a topology that adopts a Compose project takes its services from the project's containers; leave [services] out".into(),
        )),
        Some(d) if d.project.get_ref().trim().is_empty() => Err(err(
            d.project.span(),
            "the project name cannot be empty".into(),
        )),
        Some(d) => Ok(Some(d.project.get_ref().clone())),
        None => Ok(None),
    }
}

/// The topology-wide `runtime` and `image`.
struct RuntimeDefaults {
    runtime: RuntimeKind,
    image: Option<String>,
}

fn runtime_kind(
    raw: Option<&Spanned<String>>,
    err: &ErrFn<'_>,
) -> Result<RuntimeKind, SourceError> {
    match raw.map(|r| (r, r.get_ref().as_str())) {
        None | Some((_, "process")) => Ok(RuntimeKind::Process),
        Some((_, "docker")) => Ok(RuntimeKind::Docker),
        Some((r, other)) => Err(err(
            r.span(),
            format!("runtime must be \"process\" or \"docker\", not `{other}`"),
        )),
    }
}

fn image_of(raw: Option<&Spanned<String>>, err: &ErrFn<'_>) -> Result<Option<String>, SourceError> {
    match raw {
        Some(i) if i.get_ref().trim().is_empty() || i.get_ref().contains(char::is_whitespace) => {
            Err(err(
                i.span(),
                format!(
                    "image must be an image reference such as \"faultline/shop:latest\", not `{}`",
                    i.get_ref()
                ),
            ))
        }
        Some(i) => Ok(Some(i.get_ref().clone())),
        None => Ok(None),
    }
}

/// What the Docker runtime cannot do for a service.
fn docker_can_run(name: &str, health: &Health) -> Result<(), String> {
    if let Health::Exec { .. } = health {
        return Err(format!(
            "service `{name}` has an exec health probe, which the docker runtime does not run (the image may lack the program); use an HTTP path, \"tcp\" or \"none\""
        ));
    }
    Ok(())
}

/// A service's runtime: its own `runtime` and `image`, else the topology's.
fn runtime_of(
    name: &Spanned<String>,
    raw: &RawService,
    defaults: &RuntimeDefaults,
    health: &Health,
    err: &ErrFn<'_>,
) -> Result<Runtime, SourceError> {
    let n = name.get_ref();
    let kind = match &raw.runtime {
        Some(r) => runtime_kind(Some(r), err)?,
        None => defaults.runtime,
    };
    let image = image_of(raw.image.as_ref(), err)?.or_else(|| defaults.image.clone());
    let at = raw
        .runtime
        .as_ref()
        .map_or_else(|| name.span(), Spanned::span);
    match kind {
        RuntimeKind::Process => Ok(Runtime::Process),
        RuntimeKind::Docker => {
            let Some(image) = image else {
                return Err(err(
                    at,
                    format!(
                        "service `{n}` runs on docker but names no image; set image = \"...\" in [services.{n}] or at the top"
                    ),
                ));
            };
            if let Some(h) = &raw.host {
                return Err(err(
                    h.span(),
                    format!(
                        "service `{n}` runs on docker, where each replica has an address of its own on the run's network; leave host out"
                    ),
                ));
            }
            docker_can_run(n, health).map_err(|m| err(at, m))?;
            Ok(Runtime::Docker { image })
        }
    }
}

/// What a service's templates may refer to, to check that they refer to nothing else.
struct Declared<'a> {
    name: &'a Spanned<String>,
    raw: &'a RawService,
    command: &'a [Template],
    env: &'a [(String, Template)],
    calls: &'a [String],
    externals: &'a [String],
    files: &'a [ServiceFile],
}

/// Every `{upstream:NAME}` names a service or an external in `calls`; every
/// `{file:NAME}` a file in `files`.
fn check_references(d: &Declared<'_>, err: &ErrFn<'_>) -> Result<(), SourceError> {
    let n = d.name.get_ref();
    let uncalled = |t: &Template| {
        t.upstreams()
            .find(|u| !d.calls.iter().chain(d.externals).any(|c| c == u))
            .map(str::to_owned)
    };
    for f in d.files {
        if let Some(up) = uncalled(&f.template) {
            let span = d
                .raw
                .files
                .get_key_value(f.name.as_str())
                .map_or(d.name.span(), |(_, v)| v.span());
            return Err(err(
                span,
                format!(
                    "the template `{}` uses `{{{{upstream:{up}}}}}`, which needs `{up}` in the calls of `{n}`",
                    f.source.display()
                ),
            ));
        }
    }
    let command = d
        .raw
        .command
        .get_ref()
        .iter()
        .map(Spanned::span)
        .zip(d.command);
    let env = d
        .raw
        .env
        .values()
        .map(Spanned::span)
        .zip(d.env.iter().map(|(_, t)| t));
    for (span, t) in command.chain(env) {
        if let Some(up) = uncalled(t) {
            return Err(err(
                span,
                format!(
                    "`{{upstream:{up}}}` needs `{up}` in the calls of `{n}` (calls = [{}])",
                    d.calls
                        .iter()
                        .chain(d.externals)
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(f) = t.files().find(|f| !d.files.iter().any(|sf| sf.name == *f)) {
            let declared: Vec<&str> = d.files.iter().map(|f| f.name.as_str()).collect();
            return Err(err(
                span,
                format!(
                    "`{{file:{f}}}` needs `{f}` in the files of `{n}` (files = [{}]); add files = {{ \"{f}\" = \"TEMPLATE\" }}",
                    declared.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn metrics_of(raw: &RawService, err: &ErrFn<'_>) -> Result<Option<String>, SourceError> {
    match &raw.metrics {
        Some(m) if !m.get_ref().starts_with('/') => Err(err(
            m.span(),
            format!(
                "metrics must be an HTTP path starting with `/`, such as \"/metrics\", not `{}`",
                m.get_ref()
            ),
        )),
        Some(m) => Ok(Some(m.get_ref().clone())),
        None => Ok(None),
    }
}

fn cwd_of(raw: &RawService, err: &ErrFn<'_>) -> Result<Template, SourceError> {
    match &raw.cwd {
        Some(c) if c.get_ref().is_empty() => Err(err(
            c.span(),
            "cwd cannot be empty; leave it out for the topology's directory".into(),
        )),
        Some(c) => Template::parse(c.get_ref()).map_err(|m| err(c.span(), m)),
        None => Ok(Template(vec![Piece::TopologyDir])),
    }
}

/// The longest an exec health probe may run.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

fn health_of(raw: &RawService, err: &ErrFn<'_>) -> Result<Health, SourceError> {
    let Some(h) = &raw.health else {
        return Ok(Health::Http("/health".to_owned()));
    };
    let bad = |what: String| err(h.span(), what);
    let expected = "health must be an HTTP path such as \"/health\", \"tcp\", \"none\" or { exec = [\"PROGRAM\", ...] }";
    match h.get_ref() {
        toml::Value::String(w) if w.starts_with('/') => Ok(Health::Http(w.clone())),
        toml::Value::String(w) if w == "tcp" => Ok(Health::Tcp),
        toml::Value::String(w) if w == "none" => Ok(Health::None),
        toml::Value::String(w) => Err(bad(format!("{expected}, not `{w}`"))),
        toml::Value::Table(t) => {
            if let Some(k) = t
                .keys()
                .find(|k| !["exec", "timeout"].contains(&k.as_str()))
            {
                return Err(bad(format!(
                    "unknown key `{k}` in health; expected `exec` and optionally `timeout`"
                )));
            }
            let argv: Vec<&str> = match t.get("exec") {
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .map(toml::Value::as_str)
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("health's exec must be a list of strings".into()))?,
                Some(_) => return Err(bad("health's exec must be a list of strings".into())),
                None => return Err(bad("health's table needs exec = [\"PROGRAM\", ...]".into())),
            };
            if argv.is_empty() {
                return Err(bad(
                    "health's exec is empty; give the program and its arguments".into(),
                ));
            }
            let argv = argv
                .into_iter()
                .map(Template::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| bad(format!("health's exec: {m}")))?;
            let timeout = match t.get("timeout") {
                None => Duration::from_secs(2),
                Some(toml::Value::String(t)) => {
                    let d = humantime::parse_duration(t).map_err(|e| {
                        bad(format!(
                            "health's timeout: {e} (write durations like 500ms, 2s)"
                        ))
                    })?;
                    if d.is_zero() || d > MAX_PROBE_TIMEOUT {
                        return Err(bad(format!(
                            "health's timeout must be above 0 and at most 60s, not `{t}`"
                        )));
                    }
                    d
                }
                Some(_) => {
                    return Err(bad(
                        "health's timeout must be a duration such as \"2s\"".into()
                    ));
                }
            };
            Ok(Health::Exec { argv, timeout })
        }
        other => Err(bad(format!("{expected}, not {other}"))),
    }
}

/// The most failed probes `liveness` may wait for.
pub const MAX_LIVENESS_FAILURES: i64 = 1000;
/// The longest `liveness` period.
pub const MAX_LIVENESS_PERIOD: Duration = Duration::from_secs(600);
/// A liveness probe's timeout when the file gives none (Kubernetes' default).
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

fn liveness_of(raw: &RawService, err: &ErrFn<'_>) -> Result<Option<Liveness>, SourceError> {
    let Some(l) = &raw.liveness else {
        return Ok(None);
    };
    let l = l.get_ref();
    let failures = *l.failures.get_ref();
    if !(1..=MAX_LIVENESS_FAILURES).contains(&failures) {
        return Err(err(
            l.failures.span(),
            format!("liveness failures must be from 1 to {MAX_LIVENESS_FAILURES}, not {failures}"),
        ));
    }
    let duration = |d: &Spanned<String>, what: &str, max: Duration| {
        let text = d.get_ref();
        let v = humantime::parse_duration(text).map_err(|e| {
            err(
                d.span(),
                format!("liveness {what}: {e} (write durations like 500ms, 2s)"),
            )
        })?;
        if v < Duration::from_millis(10) || v > max {
            return Err(err(
                d.span(),
                format!(
                    "liveness {what} must be from 10ms to {}, not `{text}`",
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(v)
    };
    let period = l
        .period
        .as_ref()
        .map(|p| duration(p, "period", MAX_LIVENESS_PERIOD))
        .transpose()?;
    let timeout = l
        .timeout
        .as_ref()
        .map(|t| duration(t, "timeout", MAX_PROBE_TIMEOUT))
        .transpose()?
        .unwrap_or(LIVENESS_TIMEOUT);
    Ok(Some(Liveness {
        failures: u32::try_from(failures).expect("bounded above"),
        period,
        timeout,
    }))
}

/// The largest file template a service may declare.
const MAX_FILE_TEMPLATE: u64 = 1 << 20;

fn files_of(
    raw: &RawService,
    base_dir: &Path,
    err: &ErrFn<'_>,
) -> Result<Vec<ServiceFile>, SourceError> {
    let mut files = Vec::new();
    for (name, source) in &raw.files {
        let n = name.get_ref();
        if n.is_empty() || n.contains(['/', '\\', '\0']) || n == "." || n == ".." {
            return Err(err(
                name.span(),
                format!("file name `{n}` must be a plain file name, without `/`"),
            ));
        }
        let path = base_dir.join(source.get_ref());
        let shown = path.display().to_string();
        let size = std::fs::metadata(&path)
            .map_err(|e| {
                err(
                    source.span(),
                    format!("cannot read the template `{shown}`: {e}"),
                )
            })?
            .len();
        if size > MAX_FILE_TEMPLATE {
            return Err(err(
                source.span(),
                format!("the template `{shown}` is {size} bytes; at most 1 MiB"),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            err(
                source.span(),
                format!("cannot read the template `{shown}`: {e}"),
            )
        })?;
        let template = Template::parse_file(&text)
            .map_err(|(at, msg)| SourceError::at(&shown, &text, at..at + 2, msg))?;
        if let Some(f) = template.files().next() {
            return Err(err(
                source.span(),
                format!(
                    "the template `{shown}` uses `{{{{file:{f}}}}}`; a file cannot name another file"
                ),
            ));
        }
        files.push(ServiceFile {
            name: n.clone(),
            source: path,
            template,
        });
    }
    Ok(files)
}

/// Orders services so that each comes after every service it calls, refusing cycles.
fn start_order(
    services: Vec<Service>,
    raw: &RawTopology,
    err: &ErrFn<'_>,
) -> Result<Vec<Service>, SourceError> {
    let mut remaining: HashMap<String, Service> =
        services.into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut ordered: Vec<Service> = Vec::new();
    while !remaining.is_empty() {
        let mut ready: Vec<String> = remaining
            .values()
            .filter(|s| s.calls.iter().all(|c| ordered.iter().any(|o| &o.name == c)))
            .map(|s| s.name.clone())
            .collect();
        if ready.is_empty() {
            let mut stuck: Vec<&String> = remaining.keys().collect();
            stuck.sort();
            let first = stuck[0];
            let span = raw
                .services
                .get_key_value(first.as_str())
                .map(|(k, _)| k.span())
                .unwrap_or(0..0);
            let list: Vec<&str> = stuck.iter().map(|s| s.as_str()).collect();
            return Err(err(
                span,
                format!(
                    "the calls between {} form a cycle; services must be startable in order",
                    list.join(", ")
                ),
            ));
        }
        ready.sort();
        for name in ready {
            ordered.push(remaining.remove(&name).expect("name came from the map"));
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Topology, SourceError> {
        Topology::parse("t.toml", text, PathBuf::new())
    }

    fn check_err(text: &str, expected: &str) {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => assert_eq!(e.to_string(), expected),
        }
    }

    fn err_text(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn runtimes_come_from_the_top_or_the_service() {
        let t = parse(
            r#"
runtime = "docker"
image = "faultline/shop"
[services.a]
command = ["shop", "cache", "--listen", "{listen}"]
[services.b]
runtime = "process"
command = ["b"]
[services.c]
image = "mine:1"
command = ["c"]
"#,
        )
        .unwrap();
        let runtime = |n: &str| t.service(n).unwrap().runtime.clone();
        assert_eq!(
            runtime("a"),
            Runtime::Docker {
                image: "faultline/shop".into()
            }
        );
        assert_eq!(runtime("b"), Runtime::Process);
        assert_eq!(
            runtime("c"),
            Runtime::Docker {
                image: "mine:1".into()
            }
        );
        assert!(t.uses_docker());
        let mut t = t;
        t.set_runtime(RuntimeKind::Process).unwrap();
        assert!(!t.uses_docker());
    }

    #[test]
    fn docker_services_need_an_image_and_no_host_or_exec_probe() {
        let e = err_text("[services.a]\nruntime = \"docker\"\ncommand = [\"a\"]\n");
        assert!(
            e.contains("t.toml:2:11") && e.contains("names no image"),
            "{e}"
        );
        let e = err_text("runtime = \"podman\"\n[services.a]\ncommand = [\"a\"]\n");
        assert!(
            e.contains("t.toml:1:11") && e.contains("\"process\" or \"docker\""),
            "{e}"
        );
        let e = err_text(
            "image = \"x\"\n[services.a]\nruntime = \"docker\"\nhost = \"127.0.0.2\"\ncommand = [\"a\"]\n",
        );
        assert!(
            e.contains("t.toml:4:8") && e.contains("leave host out"),
            "{e}"
        );
        let e = err_text(
            "image = \"x\"\nruntime = \"docker\"\n[services.a]\ncommand = [\"a\"]\nhealth = { exec = [\"true\"] }\n",
        );
        assert!(e.contains("exec health probe"), "{e}");
        let e = err_text("pass_env = [\"A*B\"]\n[services.a]\ncommand = [\"a\"]\n");
        assert!(
            e.contains("t.toml:1:13") && e.contains("prefixes ending in"),
            "{e}"
        );
        let e = err_text("image = \"two words\"\n[services.a]\ncommand = [\"a\"]\n");
        assert!(
            e.contains("t.toml:1:9") && e.contains("image reference"),
            "{e}"
        );
        // --runtime docker on services with no image names the first of them.
        let mut t = parse("[services.a]\ncommand = [\"a\"]\n").unwrap();
        let e = t.set_runtime(RuntimeKind::Docker).unwrap_err();
        assert!(e.contains("service `a` has no image"), "{e}");
    }

    #[test]
    fn a_compose_project_is_adopted_instead_of_services() {
        let t = parse("entrypoint = \"web\"\n[docker]\nproject = \"shop\"\n").unwrap();
        assert_eq!(t.docker_project.as_deref(), Some("shop"));
        assert!(t.services.is_empty());
        let e = err_text("[docker]\nproject = \"shop\"\n[services.a]\ncommand = [\"a\"]\n");
        assert!(
            e.contains("t.toml:2:11") && e.contains("leave [services] out"),
            "{e}"
        );
        let e = err_text("[docker]\nprojekt = \"shop\"\n");
        assert!(e.contains("projekt"), "{e}");
    }

    const GOOD: &str = r#"
name = "demo"
entrypoint = "web"
[env]
SECRET = "{secret:jwt}"
[services.db]
command = ["db", "--listen", "{listen}"]
[services.web]
command = ["web", "--listen", "{listen}", "--db", "{upstream:db}"]
replicas = 3
zones = ["a", "b"]
calls = ["db"]
"#;

    #[test]
    fn a_good_file_is_validated_and_ordered() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.name, "demo");
        assert_eq!(t.entrypoint.as_deref(), Some("web"));
        let order: Vec<_> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["db", "web"]);
        let web = t.service("web").unwrap();
        assert_eq!(web.replicas, 3);
        assert_eq!(
            [web.zone_of(1), web.zone_of(2), web.zone_of(3)],
            ["a", "b", "a"]
        );
        assert_eq!(web.command[4], Template(vec![Piece::Upstream("db".into())]));
        assert_eq!(t.service("db").unwrap().zones, ["default"]);
        assert_eq!(t.env[0].1, Template(vec![Piece::Secret("jwt".into())]));
    }

    #[test]
    fn templates_parse_and_render() {
        let t = Template::parse("http://{host}:{port}/x{{y}}").unwrap();
        let out = t.render(&|p| match p {
            Piece::Host => "h".into(),
            Piece::Port => "1".into(),
            _ => unreachable!(),
        });
        assert_eq!(out, "http://h:1/x{y}");
        assert!(
            Template::parse("{nope}")
                .unwrap_err()
                .contains("unknown placeholder `{nope}`")
        );
        assert!(Template::parse("{listen").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a}b").unwrap_err().contains("unmatched"));
    }

    #[test]
    fn autoscale_groups_are_validated_where_they_are_written() {
        let base = "[services.web]\ncommand = [\"x\", \"@{upstream-file:api}\"]\ncalls = [\"api\"]\n[services.api]\ncommand = [\"y\"]\n";
        let t = parse(&format!(
            "{base}autoscale = {{ min = 2, max = 5, target = 50 }}\n"
        ))
        .unwrap();
        let api = t.service("api").unwrap();
        assert_eq!(api.replicas, 2, "a group starts at its minimum");
        let a = api.autoscale.as_ref().unwrap();
        assert_eq!((a.min, a.max, a.target), (2, 5, 50.0));
        assert_eq!(a.scale_in_window, Duration::from_secs(30));
        assert_eq!(a.scale_out_cooldown, Duration::from_secs(3));
        for (autoscale, expected) in [
            (
                "{ min = 3, max = 2, target = 5 }",
                "t.toml:6:13: autoscale min (3) is above its max (2)",
            ),
            (
                "{ min = 0, max = 2, target = 5 }",
                "t.toml:6:13: autoscale min must be from 1 to 64, not 0",
            ),
            (
                "{ min = 1, max = 65, target = 5 }",
                "t.toml:6:13: autoscale max must be from 1 to 64, not 65",
            ),
            (
                "{ min = 1, max = 2, target = 0 }",
                "t.toml:6:13: autoscale target (requests a second per replica) must be from 0.001 to 1000000, not 0",
            ),
            (
                "{ min = 1, max = 2 }",
                "t.toml:6:13: autoscale needs target (requests a second per replica)",
            ),
            (
                "{ min = 1, max = 2, target = 5, cooldown = \"1s\" }",
                "t.toml:6:13: unknown autoscale key `cooldown`; expected one of min, max, target, scale_in_window, scale_out_cooldown",
            ),
            (
                "{ min = 1, max = 2, target = 5, scale_in_window = \"soon\" }",
                "t.toml:6:13: autoscale scale_in_window must be a duration of at most 1h such as \"30s\", not `soon`",
            ),
            (
                "3",
                "t.toml:6:13: autoscale must be a table: { min = 1, max = 4, target = 50 }",
            ),
        ] {
            check_err(&format!("{base}autoscale = {autoscale}\n"), expected);
        }
        check_err(
            &format!("{base}replicas = 9\nautoscale = {{ min = 1, max = 4, target = 5 }}\n"),
            "t.toml:7:13: service `api` starts with 9 replicas, outside its autoscale range 1..=4",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\nautoscale = { min = 1, max = 2, target = 5 }\n",
            "t.toml:3:13: service `a` is called by no service, so its load cannot be measured: autoscale counts the requests of its callers through their edge proxies",
        );
        check_err(
            "[services.a]\ncommand = [\"x\", \"{upstream-file:b}\"]\n",
            "t.toml:2:17: `{upstream:b}` needs `b` in the calls of `a` (calls = [])",
        );
    }

    #[test]
    fn errors_point_at_the_problem() {
        check_err(
            "[services.a]\ncommand = []\n",
            "t.toml:2:11: service `a` has an empty command; give the program and its arguments",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\nstartup_timeout = \"584000000000years\"\n",
            "t.toml:3:19: startup_timeout must be at most 1h, not `584000000000years`",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\ncalls = [\"b\"]\n",
            "t.toml:3:10: `a` calls unknown service `b`; services are: a",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\nreplicas = 0\n",
            "t.toml:3:12: replicas must be from 1 to 64, not 0",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\nreplicas = 2\nport = 8080\n",
            "t.toml:4:8: service `a` has 2 replicas, so they cannot share port 8080; use port = 0",
        );
        check_err(
            "[services.a]\ncommand = [\"x\", \"{upstream:b}\"]\n[services.b]\ncommand = [\"y\"]\n",
            "t.toml:2:17: `{upstream:b}` needs `b` in the calls of `a` (calls = [])",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\ncalls = [\"b\"]\n[services.b]\ncommand = [\"y\"]\ncalls = [\"a\"]\n",
            "t.toml:1:11: the calls between a, b form a cycle; services must be startable in order",
        );
        check_err(
            "entrypoint = \"web\"\n[services.a]\ncommand = [\"x\"]\n",
            "t.toml:1:14: entrypoint `web` is not a service; services are: a",
        );
        check_err(
            "[services.orders-2]\ncommand = [\"x\"]\n",
            "t.toml:1:11: service name `orders-2` ends in `-2`, which reads as a replica number; rename it",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\nhealth = \"health\"\n",
            "t.toml:3:10: health must be an HTTP path such as \"/health\", \"tcp\", \"none\" or { exec = [\"PROGRAM\", ...] }, not `health`",
        );
        check_err(
            "[services.a]\ncommand = [\"x\", \"{lisen}\"]\n",
            &format!(
                "t.toml:2:17: unknown placeholder `{{lisen}}`; expected one of {PLACEHOLDERS}"
            ),
        );
        check_err(
            "",
            "t.toml: the topology has no services; add a [services.NAME] table with a command",
        );
    }

    #[test]
    fn externals_are_callable_but_not_started() {
        let t = parse(
            r#"
[external.payments-api]
address = "payments.example.com:443"
[external.audit]
address = "127.0.0.1:9999"
[services.db]
command = ["db"]
[services.web]
command = ["web", "--payments", "{upstream:payments-api}", "--audit", "{upstream:audit:1}"]
calls = ["payments-api", "db", "audit"]
"#,
        )
        .unwrap();
        assert_eq!(
            t.externals,
            [
                External {
                    name: "audit".into(),
                    address: "127.0.0.1:9999".into()
                },
                External {
                    name: "payments-api".into(),
                    address: "payments.example.com:443".into()
                },
            ]
        );
        let web = t.service("web").unwrap();
        assert_eq!(web.calls, ["db"]);
        assert_eq!(web.externals, ["payments-api", "audit"]);
        let order: Vec<_> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["db", "web"]);
        assert_eq!(
            t.external("audit").map(|e| e.address.as_str()),
            Some("127.0.0.1:9999")
        );
        assert!(Topology::none().externals.is_empty());
    }

    #[test]
    fn external_errors_point_at_the_problem() {
        check_err(
            "[external.pay]\naddress = \"nope\"\n[services.a]\ncommand = [\"x\"]\n",
            "t.toml:2:11: external `pay`: address `nope` is not host:port (no port)",
        );
        check_err(
            "[external.pay]\naddress = \"localhost:http\"\n[services.a]\ncommand = [\"x\"]\n",
            "t.toml:2:11: external `pay`: address `localhost:http` is not host:port (the port is a number from 0 to 65535)",
        );
        check_err(
            "[external.a]\naddress = \"127.0.0.1:1\"\n[services.a]\ncommand = [\"x\"]\n",
            "t.toml:1:11: external `a` has the name of a service; rename one of them",
        );
        check_err(
            "[external.pay-2]\naddress = \"127.0.0.1:1\"\n[services.a]\ncommand = [\"x\"]\n",
            "t.toml:1:11: external name `pay-2` ends in `-2`, which reads as a replica number; rename it",
        );
        check_err(
            "[external.pay]\naddress = \"127.0.0.1:1\"\n[services.a]\ncommand = [\"x\"]\ncalls = [\"b\"]\n",
            "t.toml:5:10: `a` calls unknown service `b`; services are: a; externals are: pay",
        );
        check_err(
            "[external.pay]\naddress = \"127.0.0.1:1\"\n[services.a]\ncommand = [\"x\"]\ncalls = [\"pay\", \"pay\"]\n",
            "t.toml:5:17: `a` lists `pay` twice in calls",
        );
        check_err(
            "[external.pay]\naddress = \"127.0.0.1:1\"\n[services.a]\ncommand = [\"x\", \"{upstream:pay}\"]\n",
            "t.toml:4:17: `{upstream:pay}` needs `pay` in the calls of `a` (calls = [])",
        );
        check_err(
            "[external.pay]\naddress = \"127.0.0.1:1\"\n[services.a]\ncommand = [\"x\"]\n[messaging]\nbroker = \"pay\"\n",
            "t.toml:6:10: `pay` is an external; messaging names services, which are: a",
        );
        let e = parse("[external.pay]\n[services.a]\ncommand = [\"x\"]\n").unwrap_err();
        assert!(e.message.contains("missing field `address`"), "{e}");
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn liveness_is_read_with_defaults_and_bounds() {
        let t = parse(
            "[services.a]\ncommand = [\"x\"]\nliveness = { failures = 3 }\n[services.b]\ncommand = [\"x\"]\nliveness = { failures = 5, period = \"2s\", timeout = \"250ms\" }\n[services.c]\ncommand = [\"x\"]\n",
        )
        .unwrap();
        let a = t.service("a").unwrap().liveness.unwrap();
        assert_eq!(
            (a.failures, a.period, a.timeout),
            (3, None, Duration::from_secs(1))
        );
        let b = t.service("b").unwrap().liveness.unwrap();
        assert_eq!(
            (b.failures, b.period, b.timeout),
            (5, Some(Duration::from_secs(2)), Duration::from_millis(250))
        );
        assert_eq!(t.service("c").unwrap().liveness, None);
        let service = "[services.a]\ncommand = [\"x\"]\n";
        check_err(
            &format!("{service}liveness = {{ failures = 0 }}\n"),
            "t.toml:3:25: liveness failures must be from 1 to 1000, not 0",
        );
        check_err(
            &format!("{service}liveness = {{ failures = 2, period = \"soon\" }}\n"),
            "t.toml:3:37: liveness period: expected number at 0 (write durations like 500ms, 2s)",
        );
        check_err(
            &format!("{service}liveness = {{ failures = 2, timeout = \"2m\" }}\n"),
            "t.toml:3:38: liveness timeout must be from 10ms to 1m, not `2m`",
        );
        let e = parse(&format!("{service}liveness = {{ after = 2 }}\n")).unwrap_err();
        assert!(e.message.contains("unknown field `after`"), "{e}");
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn health_probes_of_every_kind() {
        let t = parse(
            r#"
[services.web]
command = ["web"]
[services.redis]
command = ["redis-server", "--port", "{port}"]
health = { exec = ["redis-cli", "-p", "{port}", "ping"], timeout = "1s" }
[services.tcp]
command = ["x"]
health = "tcp"
[services.quiet]
command = ["x"]
health = "none"
[services.api]
command = ["x"]
health = "/ready"
metrics = "/metrics"
"#,
        )
        .unwrap();
        assert_eq!(
            t.service("web").unwrap().health,
            Health::Http("/health".into())
        );
        assert_eq!(t.service("web").unwrap().metrics, None);
        assert_eq!(
            t.service("api").unwrap().health,
            Health::Http("/ready".into())
        );
        assert_eq!(
            t.service("api").unwrap().metrics.as_deref(),
            Some("/metrics")
        );
        assert_eq!(t.service("tcp").unwrap().health, Health::Tcp);
        assert_eq!(t.service("quiet").unwrap().health, Health::None);
        let redis = &t.service("redis").unwrap().health;
        assert_eq!(redis.describe(), "exec `redis-cli -p {port} ping`");
        assert!(
            matches!(redis, Health::Exec { timeout, .. } if *timeout == Duration::from_secs(1))
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\nhealth = { exec = [] }\n",
            "t.toml:3:10: health's exec is empty; give the program and its arguments",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\nhealth = { exec = [\"x\"], timeout = \"2m\" }\n",
            "t.toml:3:10: health's timeout must be above 0 and at most 60s, not `2m`",
        );
        check_err(
            "[services.a]\ncommand = [\"x\"]\nmetrics = \"metrics\"\n",
            "t.toml:3:11: metrics must be an HTTP path starting with `/`, such as \"/metrics\", not `metrics`",
        );
    }

    #[test]
    fn files_are_templates_with_double_braces() {
        let dir = std::env::temp_dir().join(format!("fl-topology-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("nginx.conf.in"),
            "events {}\nhttp { upstream app { server {{upstream:app:1}}; server {{ upstream:app:2 }}; }\n  server { listen {{listen}}; } }\n",
        )
        .unwrap();
        std::fs::write(dir.join("bad.in"), "a\nlisten {{lisen}};\n").unwrap();
        let text = r#"
[services.app]
command = ["app"]
replicas = 2
[services.lb]
command = ["nginx", "-c", "{file:nginx.conf}", "-p", "{topology_dir}"]
calls = ["app"]
cwd = "{run_dir}"
files = { "nginx.conf" = "nginx.conf.in" }
"#;
        let t = Topology::parse("t.toml", text, dir.clone()).unwrap();
        let lb = t.service("lb").unwrap();
        assert_eq!(lb.files.len(), 1);
        let rendered = lb.files[0].template.render(&|p| format!("<{}>", p.name()));
        assert_eq!(
            rendered,
            "events {}\nhttp { upstream app { server <upstream:app:1>; server <upstream:app:2>; }\n  server { listen <listen>; } }\n"
        );
        assert_eq!(lb.cwd, Template(vec![Piece::RunDir]));
        assert_eq!(
            t.service("app").unwrap().cwd,
            Template(vec![Piece::TopologyDir])
        );

        let bad = text.replace("nginx.conf.in", "bad.in");
        let e = Topology::parse("t.toml", &bad, dir.clone()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:2:8: unknown placeholder `{{{{lisen}}}}`; expected one of {PLACEHOLDERS}, written with double braces",
                dir.join("bad.in").display()
            )
        );
        let missing = text.replace("nginx.conf.in", "nope.in");
        let e = Topology::parse("t.toml", &missing, dir.clone()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.toml:9:26: cannot read the template"),
            "{e}"
        );
        let undeclared = text.replace("{file:nginx.conf}", "{file:other.conf}");
        let e = Topology::parse("t.toml", &undeclared, dir.clone()).unwrap_err();
        assert!(
            e.to_string()
                .contains("`{file:other.conf}` needs `other.conf` in the files of `lb`"),
            "{e}"
        );
        let uncalled = text.replace("calls = [\"app\"]", "calls = []");
        let e = Topology::parse("t.toml", &uncalled, dir.clone()).unwrap_err();
        assert!(
            e.to_string()
                .contains("uses `{{upstream:app}}`, which needs `app` in the calls of `lb`"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn toml_and_schema_errors_keep_their_position() {
        let e = parse("[services.a]\ncommand = [\"x\"]\nreplica = 2\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1));
        assert!(
            e.message.contains("unknown field `replica`"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("replicas"),
            "names the valid fields: {}",
            e.message
        );
        let e = parse("[services.a]\ncommand = [\"x\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("[services.a]\ncommand = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 11), "{e}");
    }
}
