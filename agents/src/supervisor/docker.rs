//! The Docker runtime: the replicas of `runtime = "docker"` services run as containers
//! on a private network made for the run, through the Docker Engine API (bollard).
//!
//! The supervisor keeps doing its own work: it starts each replica's container, probes
//! it from the host at the container's address, restarts it with backoff and hold-down
//! when it exits (Docker's restart policy stays off), pauses it with the engine's
//! freezer and routes every edge through a fault proxy on the host. Each replica has
//! a fixed address on the run's network (the network's subnet is given explicitly, so
//! the engine accepts fixed addresses), so a restarted container is where the old one
//! was and no proxy has to follow it. The proxies listen on the network's gateway, the
//! host's side of the bridge, which containers and host processes both reach.
//!
//! Every container and the network carry `faultline.run=<run id>` (containers also
//! `faultline.replica=<replica>`). A clean stop removes them; for any other end the
//! reaper ([`crate::container_reaper`]), a container of the agent's image holding a
//! connection from the supervisor, removes them once the connection drops.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use super::StartError;
use crate::container_reaper;
use crate::topology::{AdoptedContainer, Health, Piece, Runtime, Service, Template, Topology};

/// Every container and network of a run carries it, with the run's id.
pub const RUN_LABEL: &str = "faultline.run";
/// A replica's container carries it, with the replica's name.
pub const REPLICA_LABEL: &str = "faultline.replica";
/// The port a docker replica listens on inside its container when its service gives
/// none: every container has an address of its own, so they can all use one.
pub const DEFAULT_PORT: u16 = 8080;

/// The engine, the run's network and the reaper's connection.
pub(crate) struct DockerRun {
    client: Docker,
    pub(crate) run_id: String,
    pub(crate) network: String,
    /// The host's address on the network: where the fault proxies listen.
    pub(crate) gateway: Ipv4Addr,
    /// The next address to hand a replica, as a number.
    next: AtomicU32,
    last: u32,
    /// The run directory and the topology's directory, mounted at their own paths.
    binds: Vec<String>,
    /// Per image: the file name of its entrypoint's program.
    entrypoints: HashMap<String, Option<String>>,
    /// Dropped (closed) last: the reaper then removes whatever is left.
    reaper: Mutex<Option<tokio::net::TcpStream>>,
    /// Containers adopted from a Compose project: nothing of the run to remove.
    adopted: bool,
}

/// The Compose labels adoption reads.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";
const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";

fn engine(what: &str, e: bollard::errors::Error) -> StartError {
    StartError::Docker(format!("{what}: {e}"))
}

impl DockerRun {
    /// Connects to the engine, checks that every image is there, starts the reaper and
    /// makes the run's network.
    pub(crate) async fn open(topology: &Topology, run_dir: &Path) -> Result<Self, StartError> {
        let client = connect().await?;
        let mut entrypoints = HashMap::new();
        for svc in &topology.services {
            let Runtime::Docker { image } = &svc.runtime else {
                continue;
            };
            if entrypoints.contains_key(image) {
                continue;
            }
            let inspect = client.inspect_image(image).await.map_err(|e| {
                StartError::Docker(format!(
                    "image `{image}` of service `{}` is not on this Docker engine ({e}); build the bundled images with `faultline images build`, or build or pull yours",
                    svc.name
                ))
            })?;
            let program = inspect
                .config
                .and_then(|c| c.entrypoint)
                .and_then(|e| e.first().cloned())
                .map(|p| {
                    Path::new(&p)
                        .file_name()
                        .map_or(p.clone(), |f| f.to_string_lossy().into_owned())
                });
            entrypoints.insert(image.clone(), program);
        }
        let run_id = random_id();
        let reaper = if container_reaper::disabled() {
            tracing::warn!(
                "{}=1: no container reaper; containers may outlive a SIGKILLed agent",
                crate::reaper::UNSAFE_NO_REAPER_ENV
            );
            None
        } else {
            Some(container_reaper::start(&client, &run_id).await?)
        };
        let (network, gateway, first, last) = make_network(&client, &run_id).await?;
        let mut binds = vec![bind(run_dir, false)];
        let base = &topology.base_dir;
        if base.is_absolute() && base != Path::new("/") && !run_dir.starts_with(base) {
            binds.push(bind(base, true));
        }
        Ok(DockerRun {
            client,
            run_id,
            network,
            gateway,
            next: AtomicU32::new(first),
            last,
            binds,
            entrypoints,
            reaper: Mutex::new(reaper),
            adopted: false,
        })
    }

    /// Connects to the engine and makes `topology`'s services of Compose project
    /// `project`'s running containers, by their Compose labels: a service per Compose
    /// service, a replica per container in container-number order. Makes nothing.
    pub(crate) async fn adopt(project: &str, topology: &mut Topology) -> Result<Self, StartError> {
        let client = connect().await?;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{COMPOSE_PROJECT}={project}")],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let found = client
            .list_containers(Some(options))
            .await
            .map_err(|e| engine("cannot list the project's containers", e))?;
        let mut by_service: std::collections::BTreeMap<String, Vec<(u32, String)>> =
            Default::default();
        for c in found {
            let labels = c.labels.unwrap_or_default();
            if labels
                .get(COMPOSE_ONEOFF)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                continue;
            }
            let (Some(service), Some(name)) = (
                labels.get(COMPOSE_SERVICE),
                c.names
                    .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_owned())),
            ) else {
                continue;
            };
            let number = labels
                .get(COMPOSE_NUMBER)
                .and_then(|n| n.parse().ok())
                .unwrap_or(u32::MAX);
            by_service
                .entry(service.clone())
                .or_default()
                .push((number, name));
        }
        if by_service.is_empty() {
            return Err(StartError::Docker(format!(
                "no container of Compose project `{project}` on this Docker engine; start it first (docker-compose -p {project} up -d)"
            )));
        }
        let mut services = Vec::new();
        for (service, mut containers) in by_service {
            containers.sort();
            let mut adopted = Vec::new();
            for (_, name) in containers {
                let inspect = client
                    .inspect_container(&name, None)
                    .await
                    .map_err(|e| engine(&format!("cannot inspect container {name}"), e))?;
                let running = inspect.state.as_ref().and_then(|s| s.running) == Some(true);
                if !running {
                    return Err(StartError::Docker(format!(
                        "container {name} (service `{service}` of project `{project}`) is not running; faultline adopts running containers and starts nothing: start it first"
                    )));
                }
                adopted.push(AdoptedContainer {
                    addr: address_of(&inspect),
                    name,
                });
            }
            services.push(adopted_service(&service, adopted));
        }
        if let Some(ep) = &topology.entrypoint
            && !services.iter().any(|s| s.name == *ep)
        {
            let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
            return Err(StartError::Docker(format!(
                "entrypoint `{ep}` is not a service of project `{project}`; its services are: {}",
                names.join(", ")
            )));
        }
        topology.services = services;
        Ok(DockerRun {
            client,
            run_id: random_id(),
            network: String::new(),
            gateway: Ipv4Addr::UNSPECIFIED,
            next: AtomicU32::new(1),
            last: 0,
            binds: Vec::new(),
            entrypoints: HashMap::new(),
            reaper: Mutex::new(None),
            adopted: true,
        })
    }

    /// Takes adopted container `name` as it runs now; with `start`, starts it first
    /// when it is not running (after faultline's own kill, stop or restart).
    pub(crate) async fn attach(
        &self,
        name: &str,
        log: &Path,
        start: bool,
    ) -> std::io::Result<Running> {
        let io = |what: &str, e: bollard::errors::Error| {
            std::io::Error::other(format!("{what} container {name}: {e}"))
        };
        let state = self
            .client
            .inspect_container(name, None)
            .await
            .map_err(|e| io("cannot inspect", e))?
            .state;
        if state.as_ref().and_then(|s| s.running) != Some(true) {
            if !start {
                return Err(std::io::Error::other(format!(
                    "container {name} stopped by itself; faultline starts nothing it adopted, so it waits for the container to run again"
                )));
            }
            self.client
                .start_container(name, None)
                .await
                .map_err(|e| io("cannot start", e))?;
        }
        let pid = self.pid_of(name).await;
        let streaming = self.client.clone().with_timeout(LONG);
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i32);
        tokio::spawn(copy_logs(
            streaming.clone(),
            name.to_owned(),
            log.to_owned(),
            since,
        ));
        let (tx, exit) = tokio::sync::oneshot::channel();
        tokio::spawn(wait_exit(streaming, name.to_owned(), tx));
        Ok(Running {
            name: name.to_owned(),
            pid,
            exit,
        })
    }

    /// The next free address on the run's network.
    pub(crate) fn address(&self) -> Result<Ipv4Addr, StartError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n > self.last {
            return Err(StartError::Docker(format!(
                "the network {} has no address left for another replica",
                self.network
            )));
        }
        Ok(Ipv4Addr::from(n))
    }

    /// The name of replica `replica`'s container.
    pub(crate) fn container_name(&self, replica: &str) -> String {
        format!("faultline-{}-{replica}", self.run_id)
    }

    /// Starts a new container for a replica (removing what is left of its last one),
    /// its output appended to the replica's log.
    pub(crate) async fn start(&self, s: &ContainerStart<'_>) -> std::io::Result<Running> {
        let name = self.container_name(s.replica);
        self.remove(&name).await;
        let program_is_entrypoint = self
            .entrypoints
            .get(s.image)
            .and_then(Option::as_deref)
            .is_some_and(|p| p == s.program);
        let entrypoint = (!program_is_entrypoint).then(|| vec![s.program.to_owned()]);
        let labels = HashMap::from([
            (RUN_LABEL.to_owned(), self.run_id.clone()),
            (REPLICA_LABEL.to_owned(), s.replica.to_owned()),
            ("faultline.service".to_owned(), s.service.to_owned()),
        ]);
        let endpoint = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(s.ip.to_string()),
                ..Default::default()
            }),
            aliases: Some(vec![s.replica.to_owned(), s.service.to_owned()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(s.image.to_owned()),
            entrypoint,
            cmd: Some(s.args.to_vec()),
            env: Some(s.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: s.cwd.map(|p| p.display().to_string()),
            hostname: Some(s.replica.to_owned()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(self.binds.clone()),
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(self.network.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let io = |what: &str, e: bollard::errors::Error| {
            std::io::Error::other(format!("{what} container {name}: {e}"))
        };
        self.client
            .create_container(Some(options), body)
            .await
            .map_err(|e| io("cannot create", e))?;
        if let Err(e) = self.client.start_container(&name, None).await {
            self.remove(&name).await;
            return Err(io("cannot start", e));
        }
        let pid = self.pid_of(&name).await;
        // Logs and waits last as long as the container: no request timeout.
        let streaming = self.client.clone().with_timeout(LONG);
        tokio::spawn(copy_logs(
            streaming.clone(),
            name.clone(),
            s.log.to_owned(),
            0,
        ));
        let (tx, exit) = tokio::sync::oneshot::channel();
        tokio::spawn(wait_exit(streaming, name.clone(), tx));
        Ok(Running { name, pid, exit })
    }

    /// The host's process id of a container's first process (0 if unknown).
    async fn pid_of(&self, name: &str) -> u32 {
        self.client
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .map_or(0, |p| p as u32)
    }

    /// Sends `signal` (`SIGKILL`, `SIGTERM`) to a container's processes.
    pub(crate) async fn signal(&self, name: &str, signal: &str) -> std::io::Result<()> {
        let options = KillContainerOptions {
            signal: signal.into(),
        };
        match self.client.kill_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // Not running any more: nothing left to signal.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(std::io::Error::other(format!("container {name}: {e}"))),
        }
    }

    /// Freezes (`true`) or thaws a container's every process.
    pub(crate) async fn freeze(&self, name: &str, frozen: bool) -> std::io::Result<()> {
        let result = if frozen {
            self.client.pause_container(name).await
        } else {
            self.client.unpause_container(name).await
        };
        match result {
            Ok(()) => Ok(()),
            // Already in that state (the engine answers 500 "is not paused" to an
            // unpause of a running container), or not running: what was asked holds.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("not paused")
                    || message.contains("already paused")
                    || message.contains("not running") =>
            {
                Ok(())
            }
            Err(e) => Err(std::io::Error::other(format!("container {name}: {e}"))),
        }
    }

    /// Removes a container, running or not; one that is gone already is no error.
    pub(crate) async fn remove(&self, name: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.client.remove_container(name, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => tracing::warn!(container = name, error = %e, "cannot remove container"),
        }
    }

    /// Removes every container of the run still there, then the network, then lets
    /// the reaper go.
    pub(crate) async fn close(&self) {
        if self.adopted {
            // Nothing of the run's own: the containers stay as they were found.
            return;
        }
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{RUN_LABEL}={}", self.run_id)],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        if let Ok(left) = self.client.list_containers(Some(options)).await {
            let names = left.into_iter().filter_map(|c| c.id).collect::<Vec<_>>();
            futures::future::join_all(names.iter().map(|n| self.remove(n))).await;
        }
        if let Err(e) = self.client.remove_network(&self.network).await {
            tracing::warn!(network = %self.network, error = %e, "cannot remove the run's network");
        }
        let reaper = self.reaper.lock().unwrap().take();
        if let Some(mut conn) = reaper {
            let _ = conn.shutdown().await;
        }
    }
}

/// What a replica's container is started with.
pub(crate) struct ContainerStart<'a> {
    pub(crate) replica: &'a str,
    pub(crate) service: &'a str,
    pub(crate) image: &'a str,
    /// The command's first word: the image's entrypoint when it has that file name,
    /// else the program to run instead.
    pub(crate) program: &'a str,
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [(String, String)],
    pub(crate) cwd: Option<&'a Path>,
    pub(crate) ip: Ipv4Addr,
    pub(crate) log: &'a Path,
}

/// A replica's running container.
pub(crate) struct Running {
    pub(crate) name: String,
    /// The host's process id of the container's first process (0 if unknown).
    pub(crate) pid: u32,
    /// Answers once the container has stopped, with how it ended.
    pub(crate) exit: tokio::sync::oneshot::Receiver<String>,
}

/// The engine, answering.
async fn connect() -> Result<Docker, StartError> {
    let client = Docker::connect_with_local_defaults()
        .map_err(|e| StartError::Docker(format!("cannot reach the Docker engine: {e}")))?;
    client.ping().await.map_err(|e| {
        StartError::Docker(format!(
            "cannot reach the Docker engine ({}): {e}; is the daemon running?",
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "/var/run/docker.sock".into())
        ))
    })?;
    Ok(client)
}

/// An adopted container's address: its IPv4 address on its first network (by name)
/// and its lowest exposed TCP port (0 without one).
fn address_of(c: &bollard::models::ContainerInspectResponse) -> SocketAddr {
    let ip = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| {
            let mut nets: Vec<_> = n.iter().collect();
            nets.sort_by(|a, b| a.0.cmp(b.0));
            nets.into_iter()
                .find_map(|(_, e)| e.ip_address.as_deref().and_then(|ip| ip.parse().ok()))
        })
        .unwrap_or(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let port = c
        .config
        .as_ref()
        .and_then(|c| c.exposed_ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.strip_suffix("/tcp").and_then(|p| p.parse::<u16>().ok()))
        .min()
        .unwrap_or(0);
    SocketAddr::new(ip, port)
}

/// An adopted Compose service: its containers, probed by running (the engine's
/// word), calling nothing faultline knows of.
fn adopted_service(name: &str, containers: Vec<AdoptedContainer>) -> Service {
    Service {
        name: name.to_owned(),
        command: vec![Template(vec![Piece::Lit(name.to_owned())])],
        replicas: containers.len() as u32,
        port: 0,
        host: Ipv4Addr::UNSPECIFIED.into(),
        zones: vec!["default".to_owned()],
        calls: Vec::new(),
        externals: Vec::new(),
        health: Health::None,
        startup_timeout: Duration::from_secs(20),
        liveness: None,
        autoscale: None,
        metrics: None,
        cwd: Template(vec![Piece::TopologyDir]),
        files: Vec::new(),
        env: Vec::new(),
        runtime: Runtime::Adopted { containers },
    }
}

/// A request timeout no container outlives.
const LONG: Duration = Duration::from_secs(365 * 24 * 3600);

/// Sends how container `name` ended, once it has. A wait the engine breaks off (it
/// restarted, say) is asked again while the container still runs.
async fn wait_exit(client: Docker, name: String, tx: tokio::sync::oneshot::Sender<String>) {
    let how = loop {
        let options = WaitContainerOptions {
            condition: "not-running".into(),
        };
        match client.wait_container(&name, Some(options)).next().await {
            Some(Ok(r)) => break describe_code(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                break describe_code(code);
            }
            other => {
                let state = client
                    .inspect_container(&name, None)
                    .await
                    .ok()
                    .and_then(|c| c.state);
                match state {
                    Some(s) if s.running == Some(true) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Some(s) => break describe_code(s.exit_code.unwrap_or(0)),
                    None => {
                        let why = match other {
                            Some(Err(e)) => e.to_string(),
                            _ => "no answer".to_owned(),
                        };
                        break format!("ended (the container is gone; the engine: {why})");
                    }
                }
            }
        }
    };
    let _ = tx.send(how);
}

/// How a container's exit code reads: 128 + N is signal N, as shells count.
fn describe_code(code: i64) -> String {
    if code > 128 && code < 128 + 65 {
        format!(
            "killed by {}",
            super::process::signal_name((code - 128) as i32)
        )
    } else {
        format!("exited with code {code}")
    }
}

fn bind(path: &Path, read_only: bool) -> String {
    let p = path.display();
    if read_only {
        format!("{p}:{p}:ro")
    } else {
        format!("{p}:{p}")
    }
}

fn random_id() -> String {
    let mut rng = fastrand::Rng::new();
    (0..12)
        .map(|_| char::from_digit(rng.u32(0..16), 16).expect("a hex digit"))
        .collect()
}

/// Makes the run's bridge network with a subnet of its own: the engine picks a free
/// one for a first, throwaway network, and the real one is made with it explicitly,
/// since fixed container addresses need a subnet the user gave. Returns its name, the
/// gateway and the first and last address for replicas.
async fn make_network(
    client: &Docker,
    run_id: &str,
) -> Result<(String, Ipv4Addr, u32, u32), StartError> {
    let name = format!("faultline-{run_id}");
    let labels = HashMap::from([(RUN_LABEL.to_owned(), run_id.to_owned())]);
    let mut last_error = String::new();
    for _ in 0..5 {
        let probe = format!("{name}-probe");
        client
            .create_network(NetworkCreateRequest {
                name: probe.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| engine("cannot create a Docker network", e))?;
        let subnet = client
            .inspect_network(&probe, None)
            .await
            .ok()
            .and_then(|n| n.ipam)
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.subnet));
        let _ = client.remove_network(&probe).await;
        let Some((base, prefix)) = subnet.as_deref().and_then(parse_subnet) else {
            return Err(StartError::Docker(format!(
                "the engine gave network {probe} no IPv4 subnet ({subnet:?})"
            )));
        };
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let net = u32::from(base) & mask;
        let broadcast = net | !mask;
        let gateway = Ipv4Addr::from(net + 1);
        let cidr = format!("{}/{prefix}", Ipv4Addr::from(net));
        let created = client
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(cidr),
                        gateway: Some(gateway.to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => return Ok((name, gateway, net + 2, broadcast - 1)),
            // Another run took the subnet in between: ask again.
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(StartError::Docker(format!(
        "cannot create the run's Docker network {name}: {last_error}"
    )))
}

fn parse_subnet(s: &str) -> Option<(Ipv4Addr, u32)> {
    let (ip, prefix) = s.split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    (prefix <= 30).then_some(())?;
    Some((ip.parse().ok()?, prefix))
}

/// Appends a container's output from `since` (Unix seconds; 0: from its start) to
/// its replica's log until the container stops.
async fn copy_logs(client: Docker, name: String, log: PathBuf, since: i32) {
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        since,
        ..Default::default()
    };
    let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
    else {
        return;
    };
    let mut logs = client.logs(&name, Some(options));
    while let Some(Ok(chunk)) = logs.next().await {
        let _ = file.write_all(&chunk.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_read_as_signals_past_128() {
        assert_eq!(describe_code(0), "exited with code 0");
        assert_eq!(describe_code(3), "exited with code 3");
        assert_eq!(describe_code(137), "killed by SIGKILL");
        assert_eq!(describe_code(143), "killed by SIGTERM");
    }

    #[test]
    fn subnets_parse() {
        assert_eq!(
            parse_subnet("172.18.0.0/16"),
            Some((Ipv4Addr::new(172, 18, 0, 0), 16))
        );
        assert_eq!(parse_subnet("fd00::/64"), None);
        assert_eq!(parse_subnet("10.0.0.0/31"), None);
    }
}
