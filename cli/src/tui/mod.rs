//! The live terminal dashboard. It draws the run state the runner publishes (or, for
//! `faultline tui`, what the running agents report) a few times a second, turns keys
//! into fault actions through the agent that owns the selection (with several agents,
//! every name is qualified, `host-a/web-1`), and on quit heals the faults it applied.
//! The terminal is restored on quit, on panic and on SIGTERM.
//!
//! - [`app`]: the dashboard's state and keys (no I/O, tested without a terminal).
//! - [`view`]: drawing (tested on ratatui's `TestBackend`).

pub mod app;
pub mod view;

use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use faultline_agent::api::EdgeView;
use faultline_agent::client::AgentClient;
use faultline_agent::faults::{FaultRequest, FaultSpec};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEventKind};
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::crossterm::{cursor, execute};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::app::{Action, App};
use crate::fleet::Fleet;
use crate::run::events::{Event, EventKind};
use crate::run::observe::observe_fleet;
use crate::run::state::{RunState, Stage};

/// How often the screen is redrawn.
const FRAME: Duration = Duration::from_millis(250);
/// Leases of the faults the dashboard applies; renewed while it runs.
const LEASE: Duration = Duration::from_secs(30);

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether the dashboard owns the terminal (nothing else may write to it).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Puts the terminal back: cooked mode, main screen, cursor shown. Safe to call twice.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = std::io::stdout().flush();
    }
}

/// Raw mode and the alternate screen until dropped (or a panic, whose hook restores
/// first so the message is readable).
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode().context("cannot put the terminal in raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide)
            .context("cannot switch to the alternate screen")?;
        Ok(Screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Reads terminal events on a thread of its own (crossterm's reads block).
fn terminal_events(stop: std::sync::Arc<AtomicBool>) -> mpsc::UnboundedReceiver<TermEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(e) => {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// What the dashboard knows of the topology when it carries out an action.
struct Known {
    /// The topology's edges, from the agent.
    edges: Vec<EdgeView>,
    /// The broker of the topology's `[messaging]`.
    broker: Option<String>,
}

/// The agent of a name the dashboard shows (`host-a/web-1` with several agents) and
/// the name on that agent.
fn locate<'a>(fleet: &Fleet, name: &'a str) -> (usize, &'a str) {
    if fleet.is_several() {
        fleet.split_qualified(name).unwrap_or((0, name))
    } else {
        (0, name)
    }
}

/// A fault the dashboard applies: leased, renewed while it runs.
fn leased(spec: FaultSpec, target: String) -> FaultRequest {
    FaultRequest {
        tree: None,
        spec,
        target,
        ttl_ms: Some(LEASE.as_millis() as u64),
        seed: None,
    }
}

/// Applies `requests` on agent `agent`: what to log and the faults applied.
async fn inject_all(fleet: &Fleet, agent: usize, requests: Vec<FaultRequest>) -> Done {
    let client = &fleet.members[agent].client;
    let mut ids = Vec::new();
    let mut said = Vec::new();
    for r in requests {
        let label = format!("{} {}", r.spec.kind(), r.target);
        match client.inject(&r).await {
            Ok(info) => {
                said.push(format!("{label} ({})", info.id));
                ids.push(fleet.qualify(agent, &info.id));
            }
            Err(e) => said.push(format!("cannot {label}: {e}")),
        }
    }
    (said.join("; "), ids)
}

/// Heals every fault on every agent.
async fn heal_everything(fleet: &Fleet) -> Done {
    let mut healed = 0;
    for m in &fleet.members {
        match m.client.heal_all().await {
            Ok(h) => healed += h.len(),
            Err(e) if fleet.is_several() => {
                return (format!("cannot heal on {}: {e}", m.name), vec![]);
            }
            Err(e) => return (format!("cannot heal: {e}"), vec![]),
        }
    }
    (format!("healed every fault ({healed})"), vec![])
}

/// Heals faults by the ids the dashboard shows.
async fn heal_ids(fleet: &Fleet, ids: &[String]) -> Done {
    let mut done = Vec::new();
    for id in ids {
        let (i, bare) = locate(fleet, id);
        match fleet.members[i].client.heal(bare).await {
            Ok(_) => done.push(id.clone()),
            Err(e) => return (format!("cannot heal {id}: {e}"), vec![]),
        }
    }
    (format!("healed {}", done.join(", ")), vec![])
}

/// Carries out one action through the agent that owns its selection; returns what to
/// log and the faults applied (qualified with their agent's name when there are
/// several).
async fn perform(fleet: &Fleet, action: Action, known: &Known) -> Done {
    let (agent, requests) = match &action {
        Action::Kill(r) => {
            let (i, bare) = locate(fleet, r);
            let kill = FaultSpec::Kill { hold: false };
            (i, vec![leased(kill, bare.to_owned())])
        }
        Action::Pause(r) => {
            let (i, bare) = locate(fleet, r);
            (i, vec![leased(FaultSpec::Pause, bare.to_owned())])
        }
        Action::Latency(r) => {
            // Every edge into the replica, on the agent of the replica (edges are the
            // clients' and the server's alike there).
            let clients: std::collections::BTreeSet<&str> = known
                .edges
                .iter()
                .filter(|e| e.server == *r)
                .map(|e| locate(fleet, &e.client).1)
                .collect();
            if clients.is_empty() {
                return (format!("no edge leads into {r}: nothing to slow"), vec![]);
            }
            let (i, bare) = locate(fleet, r);
            let latency = || FaultSpec::Latency {
                delay_ms: 200,
                jitter_ms: 0,
                direction: Default::default(),
                toxicity: 1.0,
            };
            let requests = clients
                .into_iter()
                .map(|c| leased(latency(), format!("{c}->{bare}")))
                .collect();
            (i, requests)
        }
        Action::PartitionFromBroker(r) => {
            let (i, bare) = locate(fleet, r);
            let Some(broker) = &known.broker else {
                let m = "the topology names no broker ([messaging]): nothing to partition from";
                return (m.to_owned(), vec![]);
            };
            let (j, broker) = locate(fleet, broker);
            if j != i {
                return (format!("the broker is on another agent than {r}"), vec![]);
            }
            let with = broker.to_owned();
            (
                i,
                vec![leased(FaultSpec::Partition { with }, bare.to_owned())],
            )
        }
        Action::Resume { replica, fault } => {
            let (i, bare) = locate(fleet, fault);
            return match fleet.members[i].client.heal(bare).await {
                Ok(_) => (format!("resumed {replica} (healed {fault})"), vec![]),
                Err(e) => (format!("cannot resume {replica}: {e}"), vec![]),
            };
        }
        Action::Heal(ids) => return heal_ids(fleet, ids).await,
        Action::HealAll => return heal_everything(fleet).await,
        Action::Scale {
            replica,
            service,
            to,
        } => {
            let (i, _) = locate(fleet, replica);
            return match fleet.members[i].client.scale(service, *to).await {
                Ok(s) => (
                    format!("scaled {service} from {} to {}", s.from, s.to),
                    vec![],
                ),
                Err(e) => (format!("cannot scale {service}: {e}"), vec![]),
            };
        }
    };
    inject_all(fleet, agent, requests).await
}

/// Hands the actions the keys asked for to the agent, each on a task of its own that
/// reports on `done` what it did and which faults it applied.
fn dispatch(app: &mut App, agent: Option<&Fleet>, done: &mpsc::UnboundedSender<Done>) {
    for action in std::mem::take(&mut app.pending) {
        let Some(client) = agent else {
            app.note("no agent: faults cannot be applied from here");
            continue;
        };
        let (client, tx) = (client.clone(), done.clone());
        let known = Known {
            edges: app.edges.clone(),
            broker: app.state.broker.clone(),
        };
        tokio::spawn(async move { tx.send(perform(&client, action, &known).await) });
    }
}

/// What an action did, in words, and the faults it applied.
type Done = (String, Vec<String>);

/// Runs the dashboard until the user quits (or `done` fires and is acknowledged with q).
/// `interrupt` is cancelled when the user quits: a run then stops and heals.
pub async fn run(
    mut state: watch::Receiver<RunState>,
    mut agent: Option<Fleet>,
    token: Option<String>,
    interrupt: CancellationToken,
) -> anyhow::Result<()> {
    let screen = Screen::enter()?;
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    let mut terminal = ratatui::Terminal::new(backend).context("cannot draw on the terminal")?;
    terminal.clear().ok();
    let stop_reader = std::sync::Arc::new(AtomicBool::new(false));
    let mut keys = terminal_events(stop_reader.clone());
    let mut app = App {
        no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        ..App::default()
    };
    app.set_state(state.borrow().clone());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut signals =
        faultline_agent::report::StopSignals::install().context("cannot watch signals")?;
    let mut frame = tokio::time::interval(FRAME);
    let mut renew = tokio::time::interval(LEASE / 3);
    let mut edges_at = tokio::time::Instant::now();
    // Every way out of the loop, a failed draw on a terminal that went away included,
    // reaches the heal below.
    let ended: anyhow::Result<()> = async { loop {
        tokio::select! {
            _ = frame.tick() => {
                terminal.draw(|f| view::draw(f, &app)).context("cannot draw")?;
            }
            changed = state.changed() => {
                if changed.is_err() {
                    // The run is over and gone: keep the last picture until q.
                    state = watch::channel(app.state.clone()).1;
                    continue;
                }
                app.set_state(state.borrow_and_update().clone());
                if agent.is_none() {
                    agent = fleet_of(&app.state, token.as_deref());
                }
                if let Some(fleet) = &agent
                    && (app.edges.is_empty() || edges_at.elapsed() > Duration::from_secs(10))
                {
                    app.edges = edges_of(fleet).await;
                    edges_at = tokio::time::Instant::now();
                }
            }
            e = keys.recv() => {
                match e {
                    Some(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => app.key(k),
                    Some(TermEvent::Resize(..)) => {
                        terminal.autoresize().ok();
                    }
                    Some(_) => {}
                    None => app.quit = true,
                }
                if agent.is_none() {
                    agent = fleet_of(&app.state, token.as_deref());
                }
                dispatch(&mut app, agent.as_ref(), &done_tx);
                if app.quit {
                    break;
                }
                terminal.draw(|f| view::draw(f, &app)).context("cannot draw")?;
            }
            Some((said, ids)) = done_rx.recv() => {
                app.note(said);
                app.applied.extend(ids);
            }
            _ = renew.tick() => {
                if let Some(fleet) = &agent {
                    let live: Vec<String> = app.state.faults.iter().map(|f| f.id.clone()).collect();
                    app.applied.retain(|id| live.contains(id) || app.state.faults.is_empty());
                    for id in &app.applied {
                        let (i, bare) = locate(fleet, id);
                        let _ = fleet.members[i].client.renew(bare, Some(LEASE)).await;
                    }
                }
            }
            signal = signals.next() => {
                app.note(signal);
                break;
            }
        }
    }
    Ok(()) }.await;
    // Leave no fault of ours behind, then hand the terminal back.
    if let Some(fleet) = &agent {
        for id in std::mem::take(&mut app.applied) {
            let (i, bare) = locate(fleet, &id);
            let heal = fleet.members[i].client.heal(bare);
            let _ = tokio::time::timeout(Duration::from_secs(5), heal).await;
        }
    }
    interrupt.cancel();
    stop_reader.store(true, Ordering::Relaxed);
    drop(terminal);
    drop(screen);
    ended
}

/// The agents of a run's state: its several agents, or the one at `agent_url`.
fn fleet_of(state: &RunState, token: Option<&str>) -> Option<Fleet> {
    if !state.agents.is_empty() {
        return Some(Fleet::new(&state.agents));
    }
    let url = state.agent_url.as_ref()?;
    Some(Fleet::one(AgentClient::new(url, token.map(str::to_owned))))
}

/// Every agent's edges, their names qualified as the dashboard shows replicas.
async fn edges_of(fleet: &Fleet) -> Vec<EdgeView> {
    let mut out = Vec::new();
    for (i, m) in fleet.members.iter().enumerate() {
        if let Ok(s) = m.client.status().await {
            out.extend(s.edges.into_iter().map(|mut e| {
                e.name = fleet.qualify(i, &e.name);
                e.client = fleet.qualify(i, &e.client);
                e.server = fleet.qualify(i, &e.server);
                e
            }));
        }
    }
    out
}

/// `faultline tui`: the state of a running `faultline up` (or of agents), once a
/// second: replicas, faults, queues, and an event for every change of a replica's
/// state; every host's, qualified, with several agents.
pub async fn attach(client: Fleet, tx: watch::Sender<RunState>, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let start = tokio::time::Instant::now();
    let mut state = RunState {
        experiment: "attached".into(),
        target: client
            .members
            .iter()
            .map(|m| m.client.url())
            .collect::<Vec<_>>()
            .join(", "),
        stage: Stage::Running,
        phase: "attached".into(),
        ..RunState::default()
    };
    // Per replica: its state's word, its restarts, and those of them for liveness.
    let mut seen: std::collections::BTreeMap<String, (String, u32, u32)> = Default::default();
    loop {
        let t = start.elapsed().as_secs_f64();
        state.elapsed_s = t;
        if let Some(o) = observe_fleet(&client, &http).await {
            for r in &o.replicas {
                let word = format!("{:?}", r.state).to_lowercase();
                let now = (word.clone(), r.restarts, r.liveness_restarts);
                let Some((was, restarts, hung)) = seen.insert(r.name.clone(), now) else {
                    continue;
                };
                let replica = r.name.clone();
                if was != word {
                    state.events.push(Event {
                        t_s: t,
                        kind: EventKind::Replica {
                            replica: replica.clone(),
                        },
                        message: format!("{}: {was} -> {word}", r.name),
                    });
                }
                if r.restarts > restarts {
                    state.events.push(Event {
                        t_s: t,
                        kind: EventKind::Restart { replica },
                        message: if r.liveness_restarts > hung {
                            format!(
                                "{} failed its liveness probe and was restarted ({} restarts)",
                                r.name, r.restarts
                            )
                        } else {
                            format!("{} restarted ({} restarts)", r.name, r.restarts)
                        },
                    });
                }
            }
            state.phase = if o.faults.is_empty() {
                "no fault active".into()
            } else {
                o.faults
                    .iter()
                    .map(|f| format!("{} {}", f.kind, f.target))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            state.see(o);
        }
        tx.send_replace(state.clone());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
