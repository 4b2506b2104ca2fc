//! The container reaper, in the manner of testcontainers' Ryuk: a container of the
//! agent's own image (`faultline/agent`, run with [`MARKER_ENV`]) that removes a run's
//! containers and network once the supervisor that made them is gone, however it went.
//!
//! Containers belong to the engine, not to the agent, so no death signal reaches them.
//! The supervisor starts the reaper first, with the engine's socket mounted, connects
//! to it over TCP and sends `label=faultline.run=<run id>`; the reaper answers `ACK`.
//! When every connection has closed (a clean stop, or the kernel closing the socket of
//! a SIGKILLed agent) and none comes back within [`GRACE`], it removes every container
//! and then every network carrying one of the labels it was sent, and exits; the
//! engine removes the reaper itself (auto-remove). It carries no `faultline.run` label,
//! so it never removes itself early. An agent that never connects is waited for
//! [`FIRST_CONNECTION`].

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use crate::supervisor::StartError;
use crate::supervisor::docker::RUN_LABEL;

/// Set to `1` in a container's environment: the agent's binary is a container reaper.
pub const MARKER_ENV: &str = "FAULTLINE_CONTAINER_REAPER";
/// Set: the image the reaper runs from (default `faultline/agent:<version>`).
pub const IMAGE_ENV: &str = "FAULTLINE_REAPER_IMAGE";
/// The reaper's port inside its container.
const PORT: u16 = 8080;
/// How long the reaper waits for a connection to come back before it removes.
const GRACE: Duration = Duration::from_secs(1);
/// How long a reaper nobody connected to lives.
const FIRST_CONNECTION: Duration = Duration::from_secs(60);
/// The label the reaper's own container carries, with the run id.
const REAPER_LABEL: &str = "faultline.reaper";

/// Whether the reaper is turned off (to show what it is for; see
/// [`crate::reaper::UNSAFE_NO_REAPER_ENV`]).
pub(crate) fn disabled() -> bool {
    std::env::var_os(crate::reaper::UNSAFE_NO_REAPER_ENV).is_some_and(|v| v == "1")
}

fn image() -> String {
    std::env::var(IMAGE_ENV)
        .unwrap_or_else(|_| format!("faultline/agent:{}", env!("CARGO_PKG_VERSION")))
}

/// Starts a reaper for run `run_id` and returns the connection that keeps it waiting.
pub(crate) async fn start(
    client: &Docker,
    run_id: &str,
) -> Result<tokio::net::TcpStream, StartError> {
    let image = image();
    let err = |what: String| StartError::Docker(what);
    client.inspect_image(&image).await.map_err(|e| {
        err(format!(
            "the container reaper's image `{image}` is not on this Docker engine ({e}); build it with `faultline images build`"
        ))
    })?;
    let name = format!("faultline-{run_id}-reaper");
    let socket = engine_socket();
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        env: Some(vec![format!("{MARKER_ENV}=1")]),
        labels: Some(HashMap::from([(
            REAPER_LABEL.to_owned(),
            run_id.to_owned(),
        )])),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{socket}:/var/run/docker.sock")]),
            auto_remove: Some(true),
            network_mode: Some("bridge".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    client
        .create_container(Some(options), body)
        .await
        .map_err(|e| err(format!("cannot create the container reaper: {e}")))?;
    if let Err(e) = client.start_container(&name, None).await {
        let _ = client
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        return Err(err(format!("cannot start the container reaper: {e}")));
    }
    let ip = client
        .inspect_container(&name, None)
        .await
        .ok()
        .and_then(|c| c.network_settings)
        .and_then(|n| n.networks)
        .and_then(|n| n.get("bridge").and_then(|b| b.ip_address.clone()))
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .ok_or_else(|| {
            err(format!(
                "the container reaper {name} has no address on the bridge network"
            ))
        })?;
    let addr = SocketAddr::new(ip, PORT);
    let mut conn = connect_within(addr, Duration::from_secs(10))
        .await
        .map_err(|e| {
            err(format!(
                "cannot connect to the container reaper at {addr}: {e}"
            ))
        })?;
    let answer = exchange(&mut conn, &format!("label={RUN_LABEL}={run_id}"))
        .await
        .map_err(|e| err(format!("the container reaper at {addr}: {e}")))?;
    if answer != "ACK" {
        return Err(err(format!(
            "the container reaper at {addr} answered `{answer}`, not ACK"
        )));
    }
    tracing::debug!(%addr, "container reaper ready");
    Ok(conn)
}

/// Waits until `addr` accepts a TCP connection, for at most `timeout`.
async fn connect_within(
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) if tokio::time::Instant::now() >= end => return Err(e),
            Err(_) if tokio::time::Instant::now() >= end => {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            // Not listening yet: the container is still starting.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Sends one line and reads one line back.
async fn exchange(conn: &mut tokio::net::TcpStream, line: &str) -> std::io::Result<String> {
    conn.write_all(line.as_bytes()).await?;
    conn.write_all(b"\n").await?;
    let mut reader = tokio::io::BufReader::new(conn);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    Ok(answer.trim_end().to_owned())
}

/// The engine's socket on the host, to mount into the reaper.
fn engine_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

/// Called first in the agent's `main`: in a reaper container it reaps and exits.
pub fn run_if_container_reaper() {
    if std::env::var_os(MARKER_ENV).is_none_or(|v| v != "1") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start the reaper's runtime");
    std::process::exit(runtime.block_on(reap()));
}

struct State {
    connections: usize,
    labels: BTreeSet<String>,
}

async fn reap() -> i32 {
    let client = match Docker::connect_with_local_defaults() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faultline container reaper: cannot reach the engine: {e}");
            return 1;
        }
    };
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", PORT)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("faultline container reaper: cannot listen on {PORT}: {e}");
            return 1;
        }
    };
    let state = Arc::new(Mutex::new(State {
        connections: 0,
        labels: BTreeSet::new(),
    }));
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut deadline = tokio::time::Instant::now() + FIRST_CONNECTION;
    let mut ever = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else { continue };
                ever = true;
                state.lock().unwrap().connections += 1;
                tokio::spawn(serve(conn, state.clone(), closed_tx.clone()));
            }
            Some(()) = closed.recv() => {
                if state.lock().unwrap().connections == 0 {
                    deadline = tokio::time::Instant::now() + GRACE;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let s = state.lock().unwrap();
                if s.connections == 0 {
                    if !ever {
                        eprintln!("faultline container reaper: nobody connected; exiting");
                    }
                    break;
                }
                drop(s);
                deadline = tokio::time::Instant::now() + FIRST_CONNECTION;
            }
        }
    }
    let labels: Vec<String> = state.lock().unwrap().labels.iter().cloned().collect();
    for label in labels {
        remove_labelled(&client, &label).await;
    }
    0
}

/// Reads `label=K=V` lines from one supervisor, answering `ACK` to each.
async fn serve(
    conn: tokio::net::TcpStream,
    state: Arc<Mutex<State>>,
    closed: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let (read, mut write) = conn.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match line.trim().strip_prefix("label=") {
            Some(l) if l.contains('=') => {
                state.lock().unwrap().labels.insert(l.to_owned());
                "ACK\n"
            }
            _ => "ERROR expected label=KEY=VALUE\n",
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            break;
        }
    }
    state.lock().unwrap().connections -= 1;
    let _ = closed.send(());
}

/// Removes every container, then every network, carrying `label` (`K=V`).
async fn remove_labelled(client: &Docker, label: &str) {
    let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    let containers = client
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
    let removals = containers.into_iter().filter_map(|c| c.id).map(|id| {
        let client = client.clone();
        async move {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            let _ = client.remove_container(&id, Some(options)).await;
        }
    });
    futures::future::join_all(removals).await;
    let networks = client
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .unwrap_or_default();
    for n in networks.into_iter().filter_map(|n| n.id) {
        // An endpoint may take a moment to go after its container.
        for _ in 0..20 {
            if client.remove_network(&n).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("faultline container reaper: removed what carried {label}");
}
