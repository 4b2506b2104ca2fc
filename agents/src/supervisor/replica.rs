//! The task that owns one replica's process: starts it, probes it, restarts it with
//! backoff when it dies, and carries out the commands sent to it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use futures::Future;
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::process::{describe_exit, owns_listener, signal_group, spawn, wait_stopped};
use super::{Action, Command, ControlError, ReplicaState, ReplicaStatus, Shared, ports, probe};

/// A replica that stayed up this long is considered stable: its next crash restarts
/// after the base backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Probe interval while a replica is starting.
const STARTUP_PROBE: Duration = Duration::from_millis(25);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Failed probes in a row that mark a healthy replica unhealthy.
const UNHEALTHY_AFTER: u32 = 2;

enum Ended {
    /// The process exited; start another unless held.
    Exited { uptime: Duration, restart_now: bool },
    /// The supervisor is stopping.
    Stop,
}

enum Waited {
    Start,
    Stop,
}

pub(crate) struct Runner {
    shared: Arc<Shared>,
    idx: usize,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    hold: bool,
    crashes: u32,
    ever_ready: bool,
    starts: u32,
}

type Probe = Pin<Box<dyn Future<Output = bool> + Send>>;

impl Runner {
    pub(crate) fn new(
        shared: Arc<Shared>,
        idx: usize,
        commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            shared,
            idx,
            commands,
            cancel,
            hold: false,
            crashes: 0,
            ever_ready: false,
            starts: 0,
        }
    }

    fn name(&self) -> &str {
        &self.shared.replicas[self.idx].name
    }

    fn status(&self) -> ReplicaStatus {
        self.shared.replicas[self.idx].status.borrow().clone()
    }

    fn update(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        self.shared.replicas[self.idx].status.send_modify(f);
        self.shared.notify();
    }

    fn set_state(&self, state: ReplicaState) {
        self.update(|s| s.state = state);
    }

    pub(crate) async fn run(mut self) {
        loop {
            if self.hold {
                self.update(|s| {
                    s.state = ReplicaState::Held;
                    s.pid = None;
                });
                if let Waited::Stop = self.wait_held().await {
                    break;
                }
            }
            let ended = match self.start() {
                Ok(child) => self.supervise(child).await,
                Err(e) => {
                    let msg = format!("cannot start: {e}");
                    tracing::error!(replica = self.name(), error = %e, "cannot start replica");
                    self.update(|s| s.last_exit = Some(msg));
                    Ended::Exited {
                        uptime: Duration::ZERO,
                        restart_now: false,
                    }
                }
            };
            match ended {
                Ended::Stop => break,
                Ended::Exited {
                    restart_now: true, ..
                } => {}
                Ended::Exited { .. } if self.hold => {}
                Ended::Exited { uptime, .. } => {
                    if !self.ever_ready && self.shared.replicas[self.idx].auto_port {
                        // The likeliest reason a new replica dies before its first
                        // healthy answer is that its port was taken in the meantime.
                        self.reassign_port();
                    }
                    if uptime >= STABLE_AFTER {
                        self.crashes = 0;
                    }
                    let delay = self.backoff();
                    self.crashes += 1;
                    tracing::warn!(
                        replica = self.name(),
                        delay_ms = delay.as_millis() as u64,
                        "restarting replica after backoff"
                    );
                    self.update(|s| {
                        s.state = ReplicaState::Backoff;
                        s.pid = None;
                    });
                    if let Waited::Stop = self.wait_backoff(delay).await {
                        break;
                    }
                }
            }
        }
        self.update(|s| {
            s.state = ReplicaState::Stopped;
            s.pid = None;
        });
    }

    fn backoff(&self) -> Duration {
        let c = &self.shared.config;
        let exp = c.backoff_base.saturating_mul(1u32 << self.crashes.min(16));
        let capped = exp.min(c.backoff_max);
        // Up to 10% jitter so replicas that crashed together do not restart in step.
        capped + capped.mul_f64(fastrand::f64() * 0.1)
    }

    fn reassign_port(&self) {
        let addr = self.status().addr;
        if let Ok(p) = ports::free_ports(addr.ip(), 1) {
            let moved = SocketAddr::new(addr.ip(), p[0]);
            self.update(|s| s.addr = moved);
            self.shared.retarget(self.name(), moved);
        }
    }

    fn start(&mut self) -> std::io::Result<Child> {
        let (args, env) = self.shared.render(self.idx);
        let program = &self.shared.programs[self.shared.replicas[self.idx].service];
        let log = self.status().log;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            let _ = writeln!(
                f,
                "--- faultline: starting {} ({}) {}",
                self.name(),
                program.display(),
                args.join(" ")
            );
        }
        let child = spawn(program, &args, &env, &log)?;
        if self.starts > 0 {
            self.update(|s| s.restarts += 1);
        }
        self.starts += 1;
        let pid = child.id();
        tracing::info!(replica = self.name(), pid, "replica started");
        self.update(|s| {
            s.pid = pid;
            s.state = ReplicaState::Starting;
        });
        Ok(child)
    }

    async fn supervise(&mut self, mut child: Child) -> Ended {
        let pid = child.id().unwrap_or(0);
        let started = Instant::now();
        let addr = self.status().addr;
        let health_path = self.shared.topology.services[self.shared.replicas[self.idx].service]
            .health_path
            .clone();
        let mut ready = false;
        let mut paused = false;
        let mut failures = 0u32;
        let mut next_probe = Instant::now();
        let mut probe: Option<Probe> = None;
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    // Dropping the supervisor: no grace period.
                    let _ = signal_group(pid, Signal::SIGKILL);
                    let _ = child.wait().await;
                    return Ended::Stop;
                }
                status = child.wait() => {
                    self.exited(pid, status.ok());
                    return Ended::Exited { uptime: started.elapsed(), restart_now: false };
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Control { action, hold, reply }) => {
                        let name = self.name().to_owned();
                        let result = match action {
                            Action::Kill | Action::Terminate => {
                                self.hold = hold;
                                let sig = if action == Action::Kill { Signal::SIGKILL } else { Signal::SIGTERM };
                                // A paused process must run again to act on SIGTERM.
                                signal_group(pid, sig).and_then(|()| signal_group(pid, Signal::SIGCONT))
                            }
                            Action::Pause => match signal_group(pid, Signal::SIGSTOP) {
                                Ok(()) => {
                                    wait_stopped(pid, Duration::from_secs(1)).await;
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            }
                            .map(|()| {
                                paused = true;
                                probe = None;
                                self.set_state(ReplicaState::Paused);
                            }),
                            Action::Resume => signal_group(pid, Signal::SIGCONT).map(|()| {
                                if paused {
                                    paused = false;
                                    next_probe = Instant::now();
                                    self.set_state(if ready { ReplicaState::Healthy } else { ReplicaState::Starting });
                                }
                            }),
                            Action::Restart => {
                                self.stop(&mut child, pid).await;
                                let _ = reply.send(Ok(()));
                                return Ended::Exited { uptime: started.elapsed(), restart_now: true };
                            }
                        };
                        let _ = reply.send(result.map_err(|e| ControlError::Signal(name, e)));
                    }
                    Some(Command::Release { reply }) => {
                        self.hold = false;
                        let _ = reply.send(Ok(()));
                    }
                    Some(Command::Stop) | None => {
                        self.stop(&mut child, pid).await;
                        return Ended::Stop;
                    }
                },
                _ = tokio::time::sleep_until(next_probe), if probe.is_none() && !paused => {
                    let path = health_path.clone();
                    let check_owner = !ready;
                    probe = Some(Box::pin(async move {
                        // Until the first healthy answer, make sure it came from this
                        // replica and not from whatever else holds the port.
                        probe::http_ok(addr, &path, PROBE_TIMEOUT).await
                            && (!check_owner || owns_listener(pid, addr.port()))
                    }));
                }
                passed = async { probe.as_mut().expect("guarded by is_some").await }, if probe.is_some() => {
                    probe = None;
                    if passed {
                        failures = 0;
                        if !ready {
                            ready = true;
                            self.ever_ready = true;
                            tracing::info!(replica = self.name(), startup_ms = started.elapsed().as_millis() as u64, "replica healthy");
                        }
                        if self.status().state != ReplicaState::Healthy {
                            self.set_state(ReplicaState::Healthy);
                        }
                    } else {
                        failures += 1;
                        if ready && failures >= UNHEALTHY_AFTER && self.status().state == ReplicaState::Healthy {
                            tracing::warn!(replica = self.name(), "replica fails its health probe");
                            self.set_state(ReplicaState::Unhealthy);
                        }
                    }
                    next_probe = Instant::now() + if ready { self.shared.config.health_interval } else { STARTUP_PROBE };
                }
            }
        }
    }

    fn exited(&self, pid: u32, status: Option<ExitStatus>) {
        // Whatever the replica started in its group goes with it.
        let _ = signal_group(pid, Signal::SIGKILL);
        let how = status
            .as_ref()
            .map_or_else(|| "ended".to_owned(), describe_exit);
        if self.cancel.is_cancelled() {
            // Stopped with the supervisor: expected, not worth a warning.
            tracing::info!(replica = self.name(), pid, exit = %how, "replica stopped");
        } else {
            tracing::warn!(replica = self.name(), pid, exit = %how, "replica exited");
        }
        self.update(|s| {
            s.last_exit = Some(how);
            s.pid = None;
        });
    }

    /// SIGTERM, then SIGKILL after the stop timeout.
    async fn stop(&self, child: &mut Child, pid: u32) {
        let _ = signal_group(pid, Signal::SIGTERM);
        let _ = signal_group(pid, Signal::SIGCONT);
        let status = match tokio::time::timeout(self.shared.config.stop_timeout, child.wait()).await
        {
            Ok(s) => s.ok(),
            Err(_) => {
                tracing::warn!(replica = self.name(), "replica ignored SIGTERM; killing it");
                let _ = signal_group(pid, Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        self.exited(pid, status);
    }

    /// Waits while held down, until released or restarted.
    async fn wait_held(&mut self) -> Waited {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Waited::Stop,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Release { reply }) => {
                        self.hold = false;
                        let _ = reply.send(Ok(()));
                        return Waited::Start;
                    }
                    Some(Command::Control { action: Action::Restart, reply, .. }) => {
                        self.hold = false;
                        let _ = reply.send(Ok(()));
                        return Waited::Start;
                    }
                    Some(Command::Control { action: Action::Kill | Action::Terminate, hold, reply }) => {
                        // Already down: a kill only changes whether it stays down.
                        self.hold = hold || self.hold;
                        let _ = reply.send(Ok(()));
                    }
                    Some(Command::Control { reply, .. }) => {
                        let _ = reply.send(Err(ControlError::NotRunning(self.name().to_owned())));
                    }
                    Some(Command::Stop) | None => return Waited::Stop,
                },
            }
        }
    }

    /// Waits out a restart backoff; a restart command cuts it short.
    async fn wait_backoff(&mut self, delay: Duration) -> Waited {
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Waited::Stop,
                _ = tokio::time::sleep_until(wake) => return Waited::Start,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Control { action: Action::Restart, reply, .. }) => {
                        let _ = reply.send(Ok(()));
                        return Waited::Start;
                    }
                    Some(Command::Control { action: Action::Kill | Action::Terminate, hold, reply }) => {
                        let _ = reply.send(Ok(()));
                        if hold {
                            self.hold = true;
                            return Waited::Start;
                        }
                    }
                    Some(Command::Control { reply, .. }) => {
                        let _ = reply.send(Err(ControlError::NotRunning(self.name().to_owned())));
                    }
                    Some(Command::Release { reply }) => {
                        let _ = reply.send(Ok(()));
                    }
                    Some(Command::Stop) | None => return Waited::Stop,
                },
            }
        }
    }
}
