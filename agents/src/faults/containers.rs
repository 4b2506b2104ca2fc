//! Faults on Docker containers (`container:NAME`): kill (a signal), stop, pause and
//! unpause, restart, through the Docker Engine API (bollard, the local socket or
//! `DOCKER_HOST`). The engine pauses with the cgroup freezer, so a pause stops the
//! container's every process at once.
//!
//! bollard 0.21 sends request paths without an API version, which Docker 20.10 (API
//! 1.41) answers; the client is made when the first container fault needs it.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use bollard::Docker;
use bollard::query_parameters::{KillContainerOptions, StopContainerOptions};

use super::FaultError;

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

/// The Docker client, and who pauses which container, so overlapping pauses compose.
#[derive(Default)]
pub struct Containers {
    client: OnceLock<Result<Docker, String>>,
    pauses: tokio::sync::Mutex<HashMap<String, BTreeSet<String>>>,
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
}
