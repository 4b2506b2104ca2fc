//! The run as it stands: the one state that live views render (the TUI, the progress
//! lines). The runner computes it each second from the same numbers the report uses;
//! views only draw it.

use faultline_agent::faults::FaultInfo;
use faultline_agent::supervisor::ReplicaStatus;
use serde::Deserialize;

use super::Event;
use super::report::Second;
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

/// A queue of the broker, as its stats endpoint reports it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct QueueNow {
    pub name: String,
    pub visible: u64,
    pub in_flight: u64,
    #[serde(default)]
    pub delayed: u64,
    #[serde(default)]
    pub oldest_age_seconds: f64,
    pub dlq: Option<String>,
    pub dlq_depth: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub experiment: String,
    pub seed: u64,
    pub target: String,
    /// The agent's API, when there is one (the TUI's controls use it).
    pub agent_url: Option<String>,
    pub stage: Stage,
    pub elapsed_s: f64,
    pub duration_s: f64,
    /// Iterations a second the schedule asks for now (open model).
    pub target_rate: Option<f64>,
    /// The phase now: baseline, the active faults' labels, or recovery.
    pub phase: String,
    /// One row per second so far.
    pub seconds: Vec<Second>,
    /// Fault windows on the time axis: label, start, end (seconds; open while active).
    pub windows: Vec<(String, f64, Option<f64>)>,
    pub slos: Vec<SloNow>,
    pub replicas: Vec<ReplicaStatus>,
    /// Per replica, its circuit breakers that are not closed (`cdn open`).
    pub breakers: std::collections::BTreeMap<String, Vec<String>>,
    /// Faults in effect, as the agent reports them.
    pub faults: Vec<FaultInfo>,
    pub queues: Vec<QueueNow>,
    pub events: Vec<Event>,
    /// Set when the run is judged.
    pub passed: Option<bool>,
}
