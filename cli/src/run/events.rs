//! What happened during a run, typed: each event says what it is about (which fault,
//! which SLO, which replica) in fields of its own, so nothing reads a label back out of
//! a message. The message is the event in words, for progress lines and the dashboard.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Something that happened, seconds from the start of the load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub t_s: f64,
    #[serde(flatten)]
    pub kind: EventKind,
    pub message: String,
}

/// What an event is about. In JSON, `kind` names the variant and its fields sit beside
/// it: `{"t_s": 3.0, "kind": "fault_applied", "fault": "kill orders-1", "id": "f1", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The agent applied the fault labelled `fault` as `id`; an `instant` one (a
    /// poison, a restart) was done at once and has nothing to heal.
    FaultApplied {
        fault: String,
        id: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        instant: bool,
    },
    /// The runner healed it.
    FaultHealed { fault: String, id: String },
    /// The agent refused it: the run stops.
    FaultFailed { fault: String },
    /// Its lease could not be renewed (it heals when the lease runs out).
    FaultRenewFailed { fault: String },
    /// It could not be healed (its lease heals it).
    FaultHealFailed { fault: String },
    /// An abort guard on `slo` tripped.
    Abort { slo: String },
    /// Ctrl-C, SIGTERM or the dashboard's q.
    Interrupted,
    /// A load worker stopped answering: the run stops and fails.
    WorkerLost { worker: String },
    /// Agent `agent` stopped answering: the run ends, the other agents heal.
    AgentLost { agent: String },
    /// A replica's state changed (`faultline tui`).
    Replica { replica: String },
    /// A replica restarted (`faultline tui`).
    Restart { replica: String },
    /// A service was scaled from `from` to `to` replicas, `by` the API (`faultline
    /// scale`, the dashboard) or the autoscaler.
    Scaled {
        service: String,
        from: u32,
        to: u32,
        by: String,
    },
}

/// A fault on the time axis: from its apply to its heal (open while it is active).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    /// The fault's label (`kind target`).
    pub fault: String,
    pub start_s: f64,
    pub end_s: Option<f64>,
}

/// The fault windows `events` describe: an apply opens one, the heal of the same fault
/// id closes it; an instant fault's ends where it starts.
pub fn fault_windows(events: &[Event]) -> Vec<FaultWindow> {
    let mut windows: Vec<(&str, FaultWindow)> = Vec::new();
    for e in events {
        match &e.kind {
            EventKind::FaultApplied { fault, id, instant } => windows.push((
                id,
                FaultWindow {
                    fault: fault.clone(),
                    start_s: e.t_s,
                    end_s: instant.then_some(e.t_s),
                },
            )),
            EventKind::FaultHealed { id, .. } => {
                if let Some((_, w)) = windows
                    .iter_mut()
                    .find(|(i, w)| i == id && w.end_s.is_none())
                {
                    w.end_s = Some(e.t_s);
                }
            }
            _ => {}
        }
    }
    windows.into_iter().map(|(_, w)| w).collect()
}

/// The run's event log, shared by its parts; every event is also printed to stderr
/// unless a live view shows them.
#[derive(Clone, Default)]
pub struct Events {
    log: Arc<Mutex<Vec<Event>>>,
    quiet: bool,
}

impl Events {
    pub fn new(quiet: bool) -> Self {
        Events {
            log: Arc::default(),
            quiet,
        }
    }

    pub fn push(&self, t_s: f64, kind: EventKind, message: impl Into<String>) {
        let message = message.into();
        if !self.quiet {
            eprintln!("[{t_s:>6.1}s] {message}");
        }
        self.log.lock().unwrap().push(Event { t_s, kind, message });
    }

    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_s: f64, kind: EventKind) -> Event {
        Event {
            t_s,
            kind,
            message: String::new(),
        }
    }

    #[test]
    fn windows_open_on_apply_and_close_on_the_heal_of_the_same_fault() {
        let applied = |f: &str, id: &str| EventKind::FaultApplied {
            fault: f.into(),
            id: id.into(),
            instant: false,
        };
        let healed = |f: &str, id: &str| EventKind::FaultHealed {
            fault: f.into(),
            id: id.into(),
        };
        // The same label twice: each heal closes its own apply, found by id.
        let events = [
            at(1.0, applied("kill orders-1", "f1")),
            at(2.0, applied("kill orders-1", "f2")),
            at(3.0, healed("kill orders-1", "f2")),
            at(
                3.5,
                EventKind::FaultApplied {
                    fault: "poison payments".into(),
                    id: "f3".into(),
                    instant: true,
                },
            ),
            at(4.0, EventKind::Interrupted),
        ];
        let w = fault_windows(&events);
        assert_eq!(
            w,
            [
                FaultWindow {
                    fault: "kill orders-1".into(),
                    start_s: 1.0,
                    end_s: None
                },
                FaultWindow {
                    fault: "kill orders-1".into(),
                    start_s: 2.0,
                    end_s: Some(3.0)
                },
                // Instant: nothing stays in effect after it, so the window closes.
                FaultWindow {
                    fault: "poison payments".into(),
                    start_s: 3.5,
                    end_s: Some(3.5)
                },
            ]
        );
    }

    #[test]
    fn events_keep_their_kind_and_message_in_json() {
        let e = Event {
            t_s: 3.5,
            kind: EventKind::FaultApplied {
                fault: "latency payments->bank".into(),
                id: "f7".into(),
                instant: false,
            },
            message: "applied: latency payments->bank (f7)".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "fault_applied");
        assert_eq!(v["fault"], "latency payments->bank");
        assert_eq!(v["message"], "applied: latency payments->bank (f7)");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
    }
}
