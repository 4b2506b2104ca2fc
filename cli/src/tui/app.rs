//! The dashboard's own state: the run state it was last given, the selection, the help
//! overlay, the faults it applied itself and its log. Keys turn into [`Action`]s the loop
//! carries out through the agent; nothing here performs I/O, so key sequences are tested
//! without a terminal.

use std::collections::BTreeSet;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use faultline_agent::faults::{FaultRequest, FaultSpec};
use faultline_agent::supervisor::{ReplicaState, ReplicaStatus};

use crate::run::state::RunState;

/// What a key asks for, carried out by the loop through the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL a replica (the supervisor restarts it).
    Kill(String),
    /// SIGSTOP a replica until resumed (or the dashboard quits).
    Pause(String),
    /// Heal the pause of a replica.
    Resume {
        replica: String,
        fault: String,
    },
    /// 200 ms latency on every edge into a replica.
    Latency(String),
    /// Cut a service off from the broker.
    PartitionFromBroker(String),
    /// Heal these faults.
    Heal(Vec<String>),
    HealAll,
    /// Set the service of replica `replica` (on that replica's agent) to `to` replicas.
    Scale {
        replica: String,
        service: String,
        to: u64,
    },
}

#[derive(Debug, Default)]
pub struct App {
    pub state: RunState,
    /// Index into `state.replicas`.
    pub selected: usize,
    pub help: bool,
    pub quit: bool,
    /// Actions waiting for the loop.
    pub pending: Vec<Action>,
    /// Faults this dashboard applied: healed when it quits.
    pub applied: BTreeSet<String>,
    /// What the dashboard did, with times from the start of the run.
    pub log: Vec<(f64, String)>,
    /// The topology's edges (client service -> server replica), from the agent.
    pub edges: Vec<faultline_agent::api::EdgeView>,
    pub no_color: bool,
}

impl App {
    pub fn selected_replica(&self) -> Option<&faultline_agent::supervisor::ReplicaStatus> {
        self.state.replicas.get(self.selected)
    }

    /// Takes a new run state, keeping the selection on the same replica. Replicas in
    /// trouble come first (see [`App::in_trouble`]), each group in the agent's order,
    /// so that a cut list never hides the one that matters.
    pub fn set_state(&mut self, state: RunState) {
        let name = self.selected_replica().map(|r| r.name.clone());
        self.state = state;
        let mut replicas = std::mem::take(&mut self.state.replicas);
        replicas.sort_by_key(|r| !self.in_trouble(r));
        self.state.replicas = replicas;
        if let Some(name) = name
            && let Some(i) = self.state.replicas.iter().position(|r| r.name == name)
        {
            self.selected = i;
        }
        self.selected = self
            .selected
            .min(self.state.replicas.len().saturating_sub(1));
    }

    /// Down, held, paused, starting, unhealthy or restarting; under a fault; or with an
    /// open breaker.
    pub fn in_trouble(&self, r: &ReplicaStatus) -> bool {
        r.state != ReplicaState::Healthy
            || !self.faults_on(r).is_empty()
            || self.state.breakers.contains_key(&r.name)
    }

    pub fn note(&mut self, message: impl Into<String>) {
        self.log.push((self.state.elapsed_s, message.into()));
    }

    /// The faults in effect that concern `replica`: on it, its service or its zone, on
    /// an edge into it, or a partition with its service on either side.
    pub fn faults_on(
        &self,
        replica: &faultline_agent::supervisor::ReplicaStatus,
    ) -> Vec<&faultline_agent::faults::FaultInfo> {
        self.state
            .faults
            .iter()
            .filter(|f| touches(&f.request, replica))
            .collect()
    }

    /// The faults in effect on a proxy to the outside: those that name it, and
    /// partitions with an external on one side.
    pub fn faults_on_outside(
        &self,
        o: &crate::run::state::OutsideNow,
    ) -> Vec<&faultline_agent::faults::FaultInfo> {
        let external = o.name.split_once("->").map(|(_, e)| e);
        self.state
            .faults
            .iter()
            .filter(|f| {
                f.request.target == o.name
                    || match (&f.request.spec, external) {
                        (faultline_agent::faults::FaultSpec::Partition { with }, Some(e)) => {
                            let sides = [f.request.target.as_str(), with.as_str()];
                            sides.iter().any(|s| s.split(',').any(|x| x.trim() == e))
                        }
                        _ => false,
                    }
            })
            .collect()
    }

    fn move_to_service(&mut self, forward: bool) {
        let Some(cur) = self.selected_replica().map(|r| r.service.clone()) else {
            return;
        };
        let n = self.state.replicas.len();
        let mut i = self.selected;
        for _ in 0..n {
            i = if forward {
                (i + 1) % n
            } else {
                (i + n - 1) % n
            };
            if self.state.replicas[i].service != cur {
                // The first replica of that service.
                let svc = self.state.replicas[i].service.clone();
                while i > 0 && self.state.replicas[i - 1].service == svc {
                    i -= 1;
                }
                self.selected = i;
                return;
            }
        }
    }

    pub fn key(&mut self, k: KeyEvent) {
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            if !matches!(k.code, KeyCode::Char('q')) {
                return;
            }
        }
        let n = self.state.replicas.len();
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::Char('c') if ctrl => self.quit = true,
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Down | KeyCode::Char('j') if n > 0 => self.selected = (self.selected + 1) % n,
            KeyCode::Up | KeyCode::Char('k') if n > 0 => {
                self.selected = (self.selected + n - 1) % n
            }
            KeyCode::Right | KeyCode::Char('l') => self.move_to_service(true),
            KeyCode::Left | KeyCode::Char('h') => self.move_to_service(false),
            KeyCode::Char('x') => {
                if let Some(r) = self.selected_replica() {
                    self.pending.push(Action::Kill(r.name.clone()));
                }
            }
            KeyCode::Char('p') => {
                if let Some(r) = self.selected_replica() {
                    let paused = self
                        .state
                        .faults
                        .iter()
                        .find(|f| f.kind == "pause" && f.target == r.name);
                    let action = match paused {
                        Some(f) => Action::Resume {
                            replica: r.name.clone(),
                            fault: f.id.clone(),
                        },
                        None => Action::Pause(r.name.clone()),
                    };
                    self.pending.push(action);
                }
            }
            KeyCode::Char('d') => {
                if let Some(r) = self.selected_replica() {
                    self.pending.push(Action::Latency(r.name.clone()));
                }
            }
            // Only a topology with `[messaging]` has a broker to partition from.
            KeyCode::Char('b') if self.state.broker.is_some() => {
                if let Some(r) = self.selected_replica() {
                    self.pending
                        .push(Action::PartitionFromBroker(r.service.clone()));
                }
            }
            KeyCode::Char('u') => {
                if let Some(r) = self.selected_replica() {
                    let ids: Vec<String> = self.faults_on(r).iter().map(|f| f.id.clone()).collect();
                    if ids.is_empty() {
                        let m = format!("no fault on {} to heal", r.name);
                        self.note(m);
                    } else {
                        self.pending.push(Action::Heal(ids));
                    }
                }
            }
            KeyCode::Char('U') => self.pending.push(Action::HealAll),
            KeyCode::Char(c @ ('+' | '-')) => self.scale(c == '+'),
            _ => {}
        }
    }

    /// One replica more or fewer of the selected replica's service (on its agent).
    fn scale(&mut self, up: bool) {
        let Some(r) = self.selected_replica().cloned() else {
            return;
        };
        let agent = |name: &str| name.rsplit_once('/').map(|(a, _)| a.to_owned());
        let now = self
            .state
            .replicas
            .iter()
            .filter(|x| x.service == r.service && agent(&x.name) == agent(&r.name))
            .count() as u64;
        let to = if up { now + 1 } else { now.saturating_sub(1) };
        if !(1..=64).contains(&to) {
            let m = format!("{} stays at {now} replicas (1 to 64)", r.service);
            self.note(m);
            return;
        }
        self.pending.push(Action::Scale {
            replica: r.name.clone(),
            service: r.service.clone(),
            to,
        });
    }
}

/// Whether fault `req` acts on replica `r`, read from the request's kind and fields
/// rather than from a label.
fn touches(req: &FaultRequest, r: &ReplicaStatus) -> bool {
    let names_it = |name: &str| name == r.name || name == r.service;
    let side = |list: &str| list.split(',').map(str::trim).any(names_it);
    match &req.spec {
        FaultSpec::Partition { with } => side(&req.target) || side(with),
        FaultSpec::ZoneOutage => req.target == r.zone,
        _ => match req.target.split_once("->") {
            Some((_, server)) => names_it(server.trim()),
            None => names_it(&req.target),
        },
    }
}

/// The keys this dashboard offers now: all of [`KEYS`], less `b` without a broker.
pub fn keys(app: &App) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let broker = app.state.broker.is_some();
    KEYS.iter().filter(move |(k, _)| broker || *k != "b")
}

/// The keys, for the help overlay and the README.
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓ / k j", "select a replica"),
    ("← → / h l", "previous / next service"),
    ("x", "kill the replica (SIGKILL; it restarts)"),
    ("p", "pause / resume the replica (SIGSTOP / SIGCONT)"),
    ("d", "200 ms latency on every edge into the replica"),
    ("b", "partition the replica's service from the broker"),
    ("u", "heal the faults on the selection"),
    ("U", "heal every fault"),
    ("+ -", "one replica more / fewer of the service (scale)"),
    ("?", "this help"),
    (
        "q, Esc, Ctrl-C",
        "heal the faults this dashboard applied, and quit",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_agent::supervisor::{ReplicaState, ReplicaStatus};

    pub fn replica(service: &str, index: u32) -> ReplicaStatus {
        ReplicaStatus {
            name: format!("{service}-{index}"),
            service: service.into(),
            index,
            zone: "a".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            state: ReplicaState::Healthy,
            pid: Some(100 + index),
            restarts: 0,
            liveness_restarts: 0,
            last_exit: None,
            probe_error: None,
            log: "x.log".into(),
            container: None,
        }
    }

    fn press(app: &mut App, keys: &str) {
        for c in keys.chars() {
            app.key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
    }

    fn app() -> App {
        let mut app = App::default();
        app.set_state(RunState {
            replicas: vec![
                replica("auth", 1),
                replica("auth", 2),
                replica("orders", 1),
                replica("orders", 2),
                replica("orders", 3),
                replica("payments", 1),
            ],
            broker: Some("broker".into()),
            ..RunState::default()
        });
        app
    }

    #[test]
    fn without_messaging_b_does_nothing() {
        let mut a = app();
        a.state.broker = None;
        press(&mut a, "b");
        assert!(a.pending.is_empty(), "{:?}", a.pending);
        assert!(keys(&a).all(|(k, _)| *k != "b"));
    }

    #[test]
    fn keys_move_the_selection_between_replicas_and_services() {
        let mut a = app();
        assert_eq!(a.selected_replica().unwrap().name, "auth-1");
        press(&mut a, "jj");
        assert_eq!(a.selected_replica().unwrap().name, "orders-1");
        a.key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        assert_eq!(a.selected_replica().unwrap().name, "orders-2");
        press(&mut a, "l");
        assert_eq!(a.selected_replica().unwrap().name, "payments-1");
        press(&mut a, "l");
        assert_eq!(a.selected_replica().unwrap().name, "auth-1", "wraps around");
        press(&mut a, "h");
        assert_eq!(a.selected_replica().unwrap().name, "payments-1");
        press(&mut a, "h");
        assert_eq!(a.selected_replica().unwrap().name, "orders-1");
        press(&mut a, "k");
        assert_eq!(a.selected_replica().unwrap().name, "auth-2");
    }

    #[test]
    fn keys_become_actions_on_the_selection() {
        let mut a = app();
        press(&mut a, "jjj");
        press(&mut a, "xpdb");
        assert_eq!(
            a.pending,
            [
                Action::Kill("orders-2".into()),
                Action::Pause("orders-2".into()),
                Action::Latency("orders-2".into()),
                Action::PartitionFromBroker("orders".into()),
            ]
        );
        a.pending.clear();
        // Paused already: p resumes, u heals what is on the selection.
        let mut state = a.state.clone();
        state.faults = vec![fault("f1", FaultSpec::Pause, "orders-2", "orders-2")];
        a.set_state(state);
        assert_eq!(a.selected_replica().unwrap().name, "orders-2");
        press(&mut a, "puU");
        assert_eq!(
            a.pending,
            [
                Action::Resume {
                    replica: "orders-2".into(),
                    fault: "f1".into()
                },
                Action::Heal(vec!["f1".into()]),
                Action::HealAll
            ]
        );
        // Nothing on payments-1: u only says so. (orders-2, in trouble, is listed
        // first: the previous service wraps round to payments.)
        press(&mut a, "h");
        a.pending.clear();
        press(&mut a, "u");
        assert!(a.pending.is_empty());
        assert_eq!(a.log.last().unwrap().1, "no fault on payments-1 to heal");
    }

    fn fault(
        id: &str,
        spec: FaultSpec,
        target: &str,
        label: &str,
    ) -> faultline_agent::faults::FaultInfo {
        faultline_agent::faults::FaultInfo {
            id: id.into(),
            kind: spec.kind().into(),
            target: label.into(),
            request: FaultRequest {
                tree: None,
                spec,
                target: target.into(),
                ttl_ms: None,
                seed: None,
            },
            applied_ms: 0,
            expires_ms: 0,
            remaining_ms: 0,
            healed_ms: None,
        }
    }

    #[test]
    fn u_heals_what_b_applied_from_either_side_of_the_partition() {
        let mut a = app();
        let mut state = a.state.clone();
        state.faults = vec![fault(
            "f9",
            FaultSpec::Partition {
                with: "broker".into(),
            },
            "orders",
            "orders<->broker",
        )];
        a.set_state(state);
        // The partitioned service's replicas come first; the selection stays on auth-1.
        let names: Vec<&str> = a.state.replicas.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "orders-1",
                "orders-2",
                "orders-3",
                "auth-1",
                "auth-2",
                "payments-1"
            ]
        );
        assert_eq!(a.selected_replica().unwrap().name, "auth-1");
        press(&mut a, "kkk");
        assert_eq!(a.selected_replica().unwrap().name, "orders-1");
        press(&mut a, "u");
        assert_eq!(a.pending, [Action::Heal(vec!["f9".into()])]);
        // Nothing of it on auth.
        a.pending.clear();
        press(&mut a, "l");
        press(&mut a, "u");
        assert!(a.pending.is_empty(), "{:?}", a.pending);
    }

    #[test]
    fn faults_concern_their_replica_service_zone_and_edges_into_it() {
        let mut a = app();
        let mut state = a.state.clone();
        state.faults = vec![
            fault("e", FaultSpec::Pause, "api->orders-2", "api->orders-2"),
            fault("z", FaultSpec::ZoneOutage, "b", "b"),
            fault("s", FaultSpec::Restart, "orders", "orders"),
            fault("o", FaultSpec::Pause, "orders->broker", "orders->broker"),
        ];
        state.replicas[3].zone = "b".into();
        a.set_state(state);
        let ids = |a: &App, name: &str| -> Vec<String> {
            let r = a.state.replicas.iter().find(|r| r.name == name).unwrap();
            a.faults_on(r).iter().map(|f| f.id.clone()).collect()
        };
        assert_eq!(ids(&a, "orders-2"), ["e", "z", "s"]);
        assert_eq!(ids(&a, "orders-1"), ["s"]);
    }

    #[test]
    fn help_and_quit() {
        let mut a = app();
        press(&mut a, "?");
        assert!(a.help);
        press(&mut a, "x");
        assert!(
            !a.help && a.pending.is_empty(),
            "a key closes the help only"
        );
        a.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(a.quit);
    }

    #[test]
    fn the_selection_follows_its_replica_across_updates() {
        let mut a = app();
        press(&mut a, "jjj");
        let mut state = a.state.clone();
        state.replicas.remove(0);
        a.set_state(state);
        assert_eq!(a.selected_replica().unwrap().name, "orders-2");
        a.set_state(RunState::default());
        assert!(a.selected_replica().is_none());
        press(&mut a, "jkxlh");
        assert!(a.pending.is_empty());
    }
}
