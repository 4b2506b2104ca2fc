//! The run as it stands: the one state that live views render (the TUI, `faultline
//! load --tui`, `faultline tui`). The runner folds it each second from the collector,
//! the events and the observer, the same numbers the report uses; views only draw it.

use std::collections::BTreeMap;

use faultline_agent::faults::FaultInfo;
use faultline_agent::supervisor::ReplicaStatus;

use super::collect::Collector;
use super::events::{Event, FaultWindow, fault_windows};
use super::observe::Observed;
use super::report::Second;
pub use crate::shop::QueueNow;
use crate::slo::SloNow;

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    #[default]
    Starting,
    Running,
    /// Load over: healing, draining, checking.
    Checking,
    Done,
}

/// A fault proxy to something the agent does not supervise, as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct OutsideNow {
    /// The proxy's name, or the edge's (`client->external`).
    pub name: String,
    /// `proxy` (made at run time) or `external` (a topology's `[external.NAME]`).
    pub kind: &'static str,
    /// Where its connections go, `host:port`.
    pub upstream: String,
    /// False while a run-time proxy is disabled.
    pub enabled: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub experiment: String,
    pub seed: u64,
    pub target: String,
    /// The agent's API, when there is one (the TUI's controls use it).
    pub agent_url: Option<String>,
    /// Every agent of a run across several hosts (else empty): the TUI's controls act
    /// through the one that owns the selection.
    pub agents: Vec<crate::fleet::AgentRef>,
    pub stage: Stage,
    pub elapsed_s: f64,
    pub duration_s: f64,
    /// Iterations a second the schedule asks for now (open model).
    pub target_rate: Option<f64>,
    /// The phase now: baseline, the active faults' labels, or recovery.
    pub phase: String,
    /// One row per second so far.
    pub seconds: Vec<Second>,
    /// Fault windows on the time axis (open while active).
    pub windows: Vec<FaultWindow>,
    pub slos: Vec<SloNow>,
    pub replicas: Vec<ReplicaStatus>,
    /// Per replica, its circuit breakers that are not closed (`cdn open`).
    pub breakers: BTreeMap<String, Vec<String>>,
    /// Whether some replica's metrics expose circuit breakers at all (else the
    /// dashboard shows no breaker column).
    pub has_breakers: bool,
    /// Faults in effect, as the agent reports them.
    pub faults: Vec<FaultInfo>,
    /// The queues of the topology's `[messaging]`.
    pub queues: Vec<QueueNow>,
    /// The broker service of the topology's `[messaging]`, when it has one.
    pub broker: Option<String>,
    /// Fault proxies to what the agent does not supervise: proxies made at run time
    /// and the edges to the topology's externals.
    pub outside: Vec<OutsideNow>,
    pub events: Vec<Event>,
    /// Set when the run is judged.
    pub passed: Option<bool>,
}

impl RunState {
    /// Catches up with the collector: its new rows and every SLO as it stands.
    pub fn follow(&mut self, collector: &Collector) {
        let rows = collector.seconds();
        self.seconds
            .extend_from_slice(&rows[self.seconds.len().min(rows.len())..]);
        self.slos = collector.now();
    }

    /// Takes the events so far, the fault windows they describe and the phase they put
    /// the run in.
    pub fn follow_events(&mut self, events: Vec<Event>) {
        self.windows = fault_windows(&events);
        self.events = events;
        let active: Vec<&str> = self
            .windows
            .iter()
            .filter(|w| w.end_s.is_none())
            .map(|w| w.fault.as_str())
            .collect();
        self.phase = if !active.is_empty() {
            active.join(", ")
        } else if self.windows.is_empty() {
            "baseline".into()
        } else {
            "recovery".into()
        };
    }

    /// Takes what the observer saw last.
    pub fn see(&mut self, o: Observed) {
        self.replicas = o.replicas;
        self.faults = o.faults;
        self.breakers = o.breakers;
        // Sticky: a replica that exposes breakers and is down for a second keeps the column.
        self.has_breakers |= o.has_breakers;
        self.queues = o.queues;
        self.broker = o.broker;
        self.outside = o.outside;
    }
}
