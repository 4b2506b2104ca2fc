//! The task that owns one replica's process: starts it, probes it, restarts it with
//! backoff when it dies, and carries out the commands sent to it.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Future;
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::docker::{ContainerStart, DockerRun, Running};
use super::process::{describe_exit, is_stopped, owns_listener, spawn};
use super::tree::Tree;
use super::{Action, Command, ControlError, ReplicaState, ReplicaStatus, Shared, ports};
use crate::topology::{Liveness, Runtime};

/// A replica that stayed up this long is considered stable: its next crash restarts
/// after the base backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Probe interval while a replica is starting.
const STARTUP_PROBE: Duration = Duration::from_millis(25);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Failed probes in a row that mark a healthy replica unhealthy.
const UNHEALTHY_AFTER: u32 = 2;

enum Ended {
    /// The process exited; start another unless held. `expected`: because it was
    /// told to (a kill, terminate or restart), not a crash.
    Exited {
        uptime: Duration,
        restart_now: bool,
        expected: bool,
    },
    /// The supervisor is stopping.
    Stop,
}

enum Waited {
    Start,
    Stop,
}

/// What a command did to a replica that is down.
enum Down {
    /// The last hold ended.
    Released,
    /// Start again now.
    Restart,
    /// The first hold began.
    Held,
    Stop,
    Nothing,
}

pub(crate) struct Runner {
    shared: Arc<Shared>,
    idx: usize,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    /// Who holds the replica down; it stays down while any remains.
    holds: BTreeSet<String>,
    /// Who pauses the replica; it stays stopped, across restarts too, while any remains.
    pauses: BTreeSet<String>,
    crashes: u32,
    /// An adopted container stopped because faultline stopped it (a kill, terminate or
    /// restart): it may start it again. One that stopped by itself is left alone.
    restore: bool,
    ever_ready: bool,
    starts: u32,
    /// Every process of the replica, however it forked.
    tree: Tree,
}

type Probing = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What runs a replica now: a process of this machine, or a container.
enum Instance {
    /// The child and its pid, kept from the start: once the child is reaped, tokio's
    /// `id()` is `None`, and the group of what it left is still to be killed (a pid of
    /// 0 there would be the agent's own group).
    Process(Child, u32),
    Container(Running),
}

impl Instance {
    fn pid(&self) -> u32 {
        match self {
            Instance::Process(_, pid) => *pid,
            Instance::Container(r) => r.pid,
        }
    }

    /// How it ended, once it has.
    async fn wait(&mut self) -> String {
        match self {
            Instance::Process(c, _) => c
                .wait()
                .await
                .ok()
                .as_ref()
                .map_or_else(|| "ended".to_owned(), describe_exit),
            Instance::Container(r) => (&mut r.exit).await.unwrap_or_else(|_| "ended".to_owned()),
        }
    }
}

impl Runner {
    pub(crate) fn new(
        shared: Arc<Shared>,
        idx: usize,
        commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) -> Self {
        let tree = shared.trees.tree(&shared.replicas[idx].name);
        Self {
            tree,
            shared,
            idx,
            commands,
            cancel,
            holds: BTreeSet::new(),
            pauses: BTreeSet::new(),
            crashes: 0,
            restore: false,
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
            if self.held() {
                self.update(|s| {
                    s.state = ReplicaState::Held;
                    s.pid = None;
                });
                if let Waited::Stop = self.wait_held().await {
                    break;
                }
            }
            let ended = match self.start().await {
                Ok(inst) => self.supervise(inst).await,
                Err(e) => {
                    let msg = format!("cannot start: {e}");
                    tracing::error!(replica = self.name(), error = %e, "cannot start replica");
                    self.update(|s| s.last_exit = Some(msg));
                    Ended::Exited {
                        uptime: Duration::ZERO,
                        restart_now: false,
                        expected: false,
                    }
                }
            };
            if let Ended::Exited { expected, .. } = &ended {
                self.restore = *expected;
            }
            match ended {
                Ended::Stop => break,
                Ended::Exited {
                    restart_now: true, ..
                } => {}
                Ended::Exited { .. } if self.held() => {}
                Ended::Exited {
                    uptime, expected, ..
                } => {
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
                    let delay_ms = delay.as_millis() as u64;
                    if expected {
                        tracing::info!(replica = self.name(), delay_ms, "restarting replica");
                    } else {
                        tracing::warn!(
                            replica = self.name(),
                            delay_ms,
                            "restarting replica after backoff"
                        );
                    }
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

    fn held(&self) -> bool {
        !self.holds.is_empty()
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

    /// Whether the replica is a container faultline adopted (never removed).
    fn adopted(&self) -> bool {
        let svc = self.shared.replicas[self.idx].service;
        matches!(
            self.shared.topology.services[svc].runtime,
            Runtime::Adopted { .. }
        )
    }

    fn docker(&self) -> &DockerRun {
        self.shared
            .docker
            .as_ref()
            .expect("a container replica has a docker runtime")
    }

    async fn start(&mut self) -> std::io::Result<Instance> {
        let super::Launch {
            args,
            env,
            cwd,
            files,
        } = self.shared.render(self.idx);
        for (path, text) in &files {
            write_file(path, text).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })?;
        }
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
        let svc = &self.shared.topology.services[self.shared.replicas[self.idx].service];
        let inst = if let Runtime::Adopted { containers } = &svc.runtime {
            let index = self.shared.replicas[self.idx].index as usize;
            let name = &containers[index - 1].name;
            Instance::Container(self.docker().attach(name, &log, self.restore).await?)
        } else if let Runtime::Docker { image } = &svc.runtime {
            let ip = match self.status().addr.ip() {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(_) => unreachable!("docker replicas have IPv4 addresses"),
            };
            let explicit_cwd =
                !matches!(svc.cwd.0.as_slice(), [crate::topology::Piece::TopologyDir]);
            // What `pass_env` names of faultline's environment, then the topology's.
            let mut env_all = self.shared.topology.passed_env();
            env_all.extend(env.iter().cloned());
            let start = ContainerStart {
                replica: self.name(),
                service: &svc.name,
                image,
                program: &program.to_string_lossy(),
                args: &args,
                env: &env_all,
                cwd: explicit_cwd.then_some(cwd.as_path()),
                ip,
                log: &log,
            };
            Instance::Container(self.docker().start(&start).await?)
        } else {
            // A frozen cgroup would stop the new process before it gets to exec.
            self.tree.prepare()?;
            let join = self.tree.join_file()?;
            let child = spawn(program, &args, &env, &cwd, &log, join.as_ref())?;
            drop(join);
            // Not yet waited for, so it has its id.
            let pid = child.id().unwrap_or(0);
            self.shared.trees.record_group(pid, true);
            Instance::Process(child, pid)
        };
        if self.starts > 0 {
            self.update(|s| s.restarts += 1);
        }
        self.starts += 1;
        let pid = Some(inst.pid()).filter(|p| *p > 0);
        let container = match &inst {
            Instance::Container(r) => Some(r.name.clone()),
            Instance::Process(..) => None,
        };
        tracing::info!(replica = self.name(), pid, container, "replica started");
        self.update(|s| {
            s.pid = pid;
            s.container = container;
            s.state = ReplicaState::Starting;
        });
        Ok(inst)
    }

    /// SIGKILL to every process of the replica (waiting until they are gone).
    async fn kill_all(&self, inst: &Instance, paused: bool) -> std::io::Result<()> {
        self.signal_all(inst, Signal::SIGKILL, paused).await
    }

    /// SIGTERM to every process of the replica.
    async fn terminate_all(&self, inst: &Instance, paused: bool) -> std::io::Result<()> {
        self.signal_all(inst, Signal::SIGTERM, paused).await
    }

    /// `signal` to every process of the replica, which does not stay frozen, so that
    /// it can act on it (and a new process never starts frozen). `paused`: whether it
    /// is frozen now; a container is thawed first only then, since the engine refuses
    /// to signal a paused container and to unpause a running one.
    async fn signal_all(
        &self,
        inst: &Instance,
        signal: Signal,
        paused: bool,
    ) -> std::io::Result<()> {
        match inst {
            Instance::Process(..) => {
                let pid = inst.pid();
                if signal == Signal::SIGKILL {
                    self.tree.kill(pid).await?;
                } else {
                    self.tree.signal(pid, signal)?;
                }
                self.tree.thaw(pid)
            }
            Instance::Container(r) => {
                if paused {
                    self.docker().freeze(&r.name, false).await?;
                }
                self.docker().signal(&r.name, signal.as_str()).await
            }
        }
    }

    async fn freeze(&self, inst: &Instance, frozen: bool) -> std::io::Result<()> {
        match inst {
            Instance::Process(..) if frozen => self.tree.freeze(inst.pid()).await,
            Instance::Process(..) => self.tree.thaw(inst.pid()),
            Instance::Container(r) => self.docker().freeze(&r.name, frozen).await,
        }
    }

    async fn supervise(&mut self, mut inst: Instance) -> Ended {
        let pid = inst.pid();
        let in_container = matches!(inst, Instance::Container(_));
        let mut live = Live {
            started: Instant::now(),
            addr: self.status().addr,
            ready: false,
            paused: false,
            expected_exit: false,
            kill_at: None,
            failures: 0,
            unanswered: 0,
            probe_saw_stopped: false,
            next_probe: Instant::now(),
            probe: None,
        };
        if !self.pauses.is_empty() {
            // Paused before it went down and still paused by a fault: the new process
            // waits stopped too, rather than running while the pause is in effect.
            if let Err(e) = self.stop_process(&inst, &mut live).await {
                tracing::warn!(replica = self.name(), error = %e, "cannot pause the restarted replica");
            }
        }
        let health = self.shared.probe(self.idx);
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    if self.adopted() {
                        return Ended::Stop;
                    }
                    // Dropping the supervisor: no grace period.
                    let _ = self.kill_all(&inst, live.paused).await;
                    let how = inst.wait().await;
                    self.exited(&inst, how, true).await;
                    return Ended::Stop;
                }
                how = inst.wait() => {
                    let expected = live.expected_exit;
                    self.exited(&inst, how, expected).await;
                    return Ended::Exited { uptime: live.started.elapsed(), restart_now: false, expected };
                }
                _ = tokio::time::sleep_until(live.kill_at.unwrap_or_else(Instant::now)), if live.kill_at.is_some() => {
                    // Terminated and the grace period is over: kill what is left.
                    live.kill_at = None;
                    if let Err(e) = self.kill_all(&inst, live.paused).await {
                        tracing::warn!(replica = self.name(), error = %e, "cannot kill the replica");
                    }
                }
                cmd = self.commands.recv() => {
                    if let Some(ended) = self.command(cmd, &mut inst, &mut live).await {
                        return ended;
                    }
                }
                _ = tokio::time::sleep_until(live.next_probe), if live.probe.is_none() && !live.paused => {
                    let (health, addr) = (health.clone(), live.addr);
                    // A container's address is its own: nothing else can hold it.
                    let check_owner = !live.ready && !in_container && health.reaches_the_address();
                    let pids = if check_owner { self.tree.pids(pid) } else { Vec::new() };
                    let timeout = self.liveness().map_or(PROBE_TIMEOUT, |l| l.timeout);
                    live.probe_saw_stopped = live.ready
                        && self.liveness().is_some()
                        && self.stopped_by_someone(&inst);
                    live.probe = Some(Box::pin(async move {
                        health.check(addr, timeout).await?;
                        // Until the first healthy answer, make sure it came from this
                        // replica and not from whatever else holds the port.
                        if check_owner && !owns_listener(&pids, addr.port()) {
                            return Err(format!(
                                "{addr} answers, but not from this replica's processes (another program holds the port)"
                            ));
                        }
                        Ok(())
                    }));
                }
                passed = async { live.probe.as_mut().expect("guarded by is_some").await }, if live.probe.is_some() => {
                    // A probe that met the process stopped by someone says it is paused,
                    // not hung, however it ends.
                    let stopped = passed.is_err()
                        && self.liveness().is_some()
                        && (live.probe_saw_stopped || self.stopped_by_someone(&inst));
                    if self.probed(&mut live, passed, stopped) {
                        return self.hung(&mut inst, live.unanswered, live.started).await;
                    }
                }
            }
        }
    }

    /// Carries out one command while the process runs; `Some` when it ends.
    async fn command(
        &mut self,
        cmd: Option<Command>,
        inst: &mut Instance,
        live: &mut Live,
    ) -> Option<Ended> {
        let (action, by, reply) = match cmd {
            Some(Command::Control { action, by, reply }) => (action, by, reply),
            Some(Command::Release { by, reply }) => {
                // Running already: the hold only mattered while it was down.
                self.holds.remove(&by);
                let _ = reply.send(Ok(()));
                return None;
            }
            Some(Command::Stop) | None => {
                if self.adopted() {
                    // Left running, as it was found.
                    if live.paused {
                        let _ = self.freeze(inst, false).await;
                    }
                } else {
                    self.stop(inst, live.paused).await;
                }
                return Some(Ended::Stop);
            }
        };
        let result = match action {
            Action::Kill => {
                self.holds.extend(by);
                live.expected_exit = true;
                // A new process must not start frozen.
                self.kill_all(inst, live.paused).await
            }
            Action::Terminate => {
                self.holds.extend(by);
                live.expected_exit = true;
                live.kill_at = Some(Instant::now() + self.shared.config.stop_timeout);
                // A paused process must run again to act on SIGTERM.
                self.terminate_all(inst, live.paused).await
            }
            Action::Pause => {
                self.pauses.extend(by);
                if live.paused {
                    Ok(())
                } else {
                    self.stop_process(inst, live).await
                }
            }
            Action::Resume => {
                if let Some(by) = &by {
                    self.pauses.remove(by);
                }
                if live.paused && self.pauses.is_empty() {
                    self.freeze(inst, false).await.map(|()| {
                        live.paused = false;
                        // Probes failed before the pause say nothing of it now.
                        live.failures = 0;
                        live.unanswered = 0;
                        live.next_probe = Instant::now();
                        self.set_state(if live.ready {
                            ReplicaState::Healthy
                        } else {
                            ReplicaState::Starting
                        });
                    })
                } else {
                    Ok(())
                }
            }
            Action::Restart => {
                self.stop(inst, live.paused).await;
                let _ = reply.send(Ok(()));
                return Some(Ended::Exited {
                    uptime: live.started.elapsed(),
                    restart_now: true,
                    expected: true,
                });
            }
        };
        let name = self.name().to_owned();
        let _ = reply.send(result.map_err(|e| ControlError::Signal(name, e)));
        None
    }

    /// Freezes every process of the replica, waiting until they have stopped.
    async fn stop_process(&self, inst: &Instance, live: &mut Live) -> std::io::Result<()> {
        self.freeze(inst, true).await?;
        live.paused = true;
        live.probe = None;
        self.set_state(ReplicaState::Paused);
        Ok(())
    }

    /// The service's liveness setting, if it has one.
    fn liveness(&self) -> Option<Liveness> {
        self.shared.topology.services[self.shared.replicas[self.idx].service].liveness
    }

    /// Whether a process of the replica is stopped by a signal that was not the
    /// supervisor's (a `pause` of `pid:N`, a debugger): a pause, which liveness leaves
    /// alone, not a hang. (The supervisor's own pauses stop its probes instead.)
    fn stopped_by_someone(&self, inst: &Instance) -> bool {
        let pid = inst.pid();
        let pids = match inst {
            Instance::Process(..) => self.tree.pids(pid),
            Instance::Container(_) => vec![pid],
        };
        pids.into_iter().any(is_stopped)
    }

    /// Kills a replica that failed its liveness probe; the run loop starts it again
    /// after the crash backoff (as Kubernetes does), and it counts apart from crashes.
    async fn hung(&mut self, inst: &mut Instance, failures: u32, started: Instant) -> Ended {
        let probe_error = self.status().probe_error.unwrap_or_default();
        tracing::warn!(
            replica = self.name(),
            failures,
            error = %probe_error,
            "replica failed its liveness probe; killing it"
        );
        if let Err(e) = self.kill_all(inst, false).await {
            tracing::warn!(replica = self.name(), error = %e, "cannot kill the replica");
        }
        let how = inst.wait().await;
        // Expected: faultline stopped it, so an adopted container is started again.
        self.exited(inst, how, true).await;
        let why =
            format!("killed after failing its liveness probe {failures} times ({probe_error})");
        self.update(|s| {
            s.liveness_restarts += 1;
            s.last_exit = Some(why);
        });
        Ended::Exited {
            uptime: started.elapsed(),
            restart_now: false,
            expected: true,
        }
    }

    /// Takes a probe's result; true when the replica failed its liveness probe and is
    /// to be killed. `stopped`: a process of it was stopped by a signal meanwhile.
    fn probed(&mut self, live: &mut Live, result: Result<(), String>, stopped: bool) -> bool {
        live.probe = None;
        let passed = result.is_ok();
        self.update(|s| s.probe_error = result.err());
        if passed {
            live.failures = 0;
            live.unanswered = 0;
            if !live.ready {
                live.ready = true;
                self.ever_ready = true;
                tracing::info!(
                    replica = self.name(),
                    startup_ms = live.started.elapsed().as_millis() as u64,
                    "replica healthy"
                );
            }
            if self.status().state != ReplicaState::Healthy {
                self.set_state(ReplicaState::Healthy);
            }
        } else {
            live.failures += 1;
            live.unanswered = if stopped { 0 } else { live.unanswered + 1 };
            if live.ready
                && live.failures >= UNHEALTHY_AFTER
                && self.status().state == ReplicaState::Healthy
            {
                tracing::warn!(replica = self.name(), "replica fails its health probe");
                self.set_state(ReplicaState::Unhealthy);
            }
        }
        let liveness = self.liveness();
        live.next_probe = Instant::now()
            + if live.ready {
                liveness
                    .and_then(|l| l.period)
                    .unwrap_or(self.shared.config.health_interval)
            } else {
                STARTUP_PROBE
            };
        // Only a replica that was healthy can be hung; one still starting has its
        // startup timeout.
        live.ready && liveness.is_some_and(|l| live.unanswered >= l.failures)
    }

    /// The replica's first process (or its container) ended, as `how` says;
    /// `expected` when it was told to.
    async fn exited(&self, inst: &Instance, how: String, expected: bool) {
        let pid = inst.pid();
        match inst {
            Instance::Process(..) => {
                // Whatever the replica started goes with it, before anything starts
                // again.
                if let Err(e) = self.tree.kill(pid).await {
                    tracing::warn!(replica = self.name(), error = %e, "cannot kill what the replica left");
                }
                self.shared.trees.record_group(pid, false);
            }
            Instance::Container(_) if self.adopted() => {}
            Instance::Container(r) => self.docker().remove(&r.name).await,
        }
        if expected || self.cancel.is_cancelled() {
            // Stopped on purpose: not worth a warning.
            tracing::info!(replica = self.name(), pid, exit = %how, "replica stopped");
        } else {
            tracing::warn!(replica = self.name(), pid, exit = %how, "replica exited");
        }
        self.update(|s| {
            s.last_exit = Some(how);
            s.pid = None;
            s.container = None;
        });
    }

    /// SIGTERM to every process of the replica, then SIGKILL after the stop timeout.
    async fn stop(&self, inst: &mut Instance, paused: bool) {
        let _ = self.terminate_all(inst, paused).await;
        let how = match tokio::time::timeout(self.shared.config.stop_timeout, inst.wait()).await {
            Ok(how) => how,
            Err(_) => {
                tracing::warn!(replica = self.name(), "replica ignored SIGTERM; killing it");
                let _ = self.kill_all(inst, false).await;
                inst.wait().await
            }
        };
        self.exited(inst, how, true).await;
    }

    /// Carries out a command while no process runs (held down or between restarts):
    /// only the holders change.
    fn command_while_down(&mut self, cmd: Option<Command>) -> Down {
        match cmd {
            Some(Command::Release { by, reply }) => {
                let was_held = self.held();
                self.holds.remove(&by);
                let _ = reply.send(Ok(()));
                if was_held && !self.held() {
                    Down::Released
                } else {
                    Down::Nothing
                }
            }
            Some(Command::Control {
                action: Action::Restart,
                reply,
                ..
            }) => {
                if let Some(by) = self.holds.first() {
                    let e = ControlError::Held(self.name().to_owned(), by.clone());
                    let _ = reply.send(Err(e));
                    return Down::Nothing;
                }
                let _ = reply.send(Ok(()));
                Down::Restart
            }
            Some(Command::Control {
                action: Action::Kill | Action::Terminate,
                by,
                reply,
            }) => {
                // Already down: a kill only changes whether it stays down.
                let newly_held = by.is_some() && !self.held();
                self.holds.extend(by);
                let _ = reply.send(Ok(()));
                if newly_held {
                    Down::Held
                } else {
                    Down::Nothing
                }
            }
            Some(Command::Control {
                action: Action::Pause,
                by,
                reply,
            }) => {
                self.pauses.extend(by);
                let _ = reply.send(Ok(()));
                Down::Nothing
            }
            Some(Command::Control {
                action: Action::Resume,
                by,
                reply,
            }) => {
                if let Some(by) = by {
                    self.pauses.remove(&by);
                }
                let _ = reply.send(Ok(()));
                Down::Nothing
            }
            Some(Command::Stop) | None => Down::Stop,
        }
    }

    /// Waits while held down, until every hold is released.
    async fn wait_held(&mut self) -> Waited {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Waited::Stop,
                cmd = self.commands.recv() => match self.command_while_down(cmd) {
                    Down::Released => return Waited::Start,
                    Down::Stop => return Waited::Stop,
                    Down::Restart | Down::Held | Down::Nothing => {}
                },
            }
        }
    }

    /// Waits out a restart backoff; a restart command cuts it short, and a kill that
    /// holds ends it (the run loop then holds the replica down).
    async fn wait_backoff(&mut self, delay: Duration) -> Waited {
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Waited::Stop,
                _ = tokio::time::sleep_until(wake) => return Waited::Start,
                cmd = self.commands.recv() => match self.command_while_down(cmd) {
                    // Held: the run loop keeps it down from here.
                    Down::Restart | Down::Held => return Waited::Start,
                    Down::Stop => return Waited::Stop,
                    Down::Released | Down::Nothing => {}
                },
            }
        }
    }
}

/// What the supervisor knows of the process it runs now.
struct Live {
    started: Instant,
    addr: SocketAddr,
    ready: bool,
    paused: bool,
    /// Killed or terminated on purpose: its exit is no crash.
    expected_exit: bool,
    /// Terminated: when what is left of the tree gets SIGKILL.
    kill_at: Option<Instant>,
    /// Failed probes in a row.
    failures: u32,
    /// Failed probes in a row while no process of it was stopped: what liveness counts.
    unanswered: u32,
    /// The probe under way began while a process of it was stopped.
    probe_saw_stopped: bool,
    next_probe: Instant,
    probe: Option<Probing>,
}

/// Writes a replica's rendered file, making its directory.
fn write_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}
