//! The fault timeline: each fault applied through the agents at its time (on the agent
//! that owns its target, or, for a partition between hosts, on every agent with an edge
//! that crosses), its leases renewed on every agent while it should last, and healed at
//! its end, on abort, on Ctrl-C or SIGTERM. Leases are short, so a runner that dies
//! (SIGKILL) leaves faults that the agents heal by themselves within [`LEASE`]. While
//! it runs, every agent is watched: one that stops answering ends the run ([`Lost`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_agent::client::{AgentClient, ClientError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{EventKind, Events};
use crate::experiment::Planned;
use crate::fleet::{Fleet, Part};

/// The longest lease the runner takes on a fault; it renews at a third of it.
pub const LEASE: Duration = Duration::from_secs(15);
/// A lease outlives the fault's planned end by this much, so the runner's own heal is
/// what ends it when all goes well.
const GRACE: Duration = Duration::from_secs(2);
/// An agent that has not answered for this long is lost.
pub const AGENT_SILENCE: Duration = Duration::from_secs(3);
/// The longest wait for one answer of an agent while faults are healed or renewed, so
/// that a lost agent does not hold up the others' heals.
const CALL: Duration = Duration::from_secs(5);

/// What happened to one fault of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub label: String,
    pub kind: String,
    pub target: String,
    pub planned_at_s: f64,
    pub planned_duration_s: Option<f64>,
    /// The agent's fault id; with several agents, `AGENT/ID` of each part,
    /// comma-separated.
    pub id: Option<String>,
    /// Seconds from the start of the load.
    pub applied_at_s: Option<f64>,
    pub healed_at_s: Option<f64>,
    /// Why it could not be applied, renewed or healed.
    pub error: Option<String>,
}

/// Set when an agent stops answering: the name of the agent and why, for the report.
#[derive(Clone, Default)]
pub struct Lost {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Lost {
    fn set(&self, reason: String) {
        self.reason.lock().unwrap().get_or_insert(reason);
        self.token.cancel();
    }

    /// Waits until an agent is lost; the reason names it.
    pub async fn wait(&self) -> String {
        self.token.cancelled().await;
        self.reason.lock().unwrap().clone().unwrap_or_default()
    }
}

fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

async fn within<T>(
    c: &AgentClient,
    f: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(CALL, f).await.unwrap_or_else(|_| {
        Err(ClientError::Unreachable {
            url: c.url().to_owned(),
            reason: format!("no answer within {}", humantime::format_duration(CALL)),
        })
    })
}

/// One fault's parts once applied: the agent of each and its fault id there.
struct Applied {
    parts: Vec<(usize, String)>,
}

impl Applied {
    /// The id the report and the events show: the agent's own with one agent, else
    /// `AGENT/ID` of every part.
    fn id(&self, fleet: &Fleet) -> String {
        if fleet.is_several() {
            self.parts
                .iter()
                .map(|(a, id)| format!("{}/{id}", fleet.members[*a].name))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            self.parts
                .first()
                .map(|(_, id)| id.clone())
                .unwrap_or_default()
        }
    }
}

/// Applies every part of a fault; on a failure heals the parts already applied and
/// says which agent refused.
async fn apply(fleet: &Fleet, parts: &[Part], ttl: Duration) -> Result<(Applied, bool), String> {
    let mut applied = Applied { parts: Vec::new() };
    let mut instant = true;
    for part in parts {
        let member = &fleet.members[part.agent];
        let mut request = part.request.clone();
        request.ttl_ms = Some(ttl.as_millis() as u64);
        match member.client.inject(&request).await {
            Ok(info) => {
                instant &= info.healed_ms.is_some();
                applied.parts.push((part.agent, info.id));
            }
            Err(e) => {
                heal_all(fleet, &applied).await;
                return Err(if fleet.is_several() {
                    format!("on agent {}: {e}", member.name)
                } else {
                    e.to_string()
                });
            }
        }
    }
    Ok((applied, instant))
}

/// Heals every part; the errors of those that could not be healed.
async fn heal_all(fleet: &Fleet, applied: &Applied) -> Vec<String> {
    let heals = applied.parts.iter().map(|(a, id)| async move {
        let m = &fleet.members[*a];
        heal(&m.client, id).await.map_err(|e| {
            if fleet.is_several() {
                format!("on agent {}: {e}", m.name)
            } else {
                e
            }
        })
    });
    futures::future::join_all(heals)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

/// Runs one fault; returns what happened. `failed` is cancelled when the fault cannot be
/// applied (the run stops: the experiment would not be what the file says).
async fn one(
    fleet: Fleet,
    (planned, parts): (Planned, Vec<Part>),
    t0: Instant,
    stop: CancellationToken,
    failed: CancellationToken,
    events: Events,
) -> FaultRecord {
    let mut rec = FaultRecord {
        label: planned.label.clone(),
        kind: planned.request.spec.kind().to_owned(),
        target: planned.request.target.clone(),
        planned_at_s: planned.at.as_secs_f64(),
        planned_duration_s: planned.duration.map(|d| d.as_secs_f64()),
        id: None,
        applied_at_s: None,
        healed_at_s: None,
        error: None,
    };
    tokio::select! {
        _ = stop.cancelled() => return rec,
        _ = tokio::time::sleep_until(t0 + planned.at) => {}
    }
    let end = planned.duration.map(|d| t0 + planned.at + d);
    let ttl = match planned.duration {
        Some(d) => (d + GRACE).min(LEASE),
        None => LEASE,
    };
    let applied = match apply(&fleet, &parts, ttl).await {
        Ok((applied, _)) => applied,
        Err(e) => {
            let m = format!("{}: cannot apply: {e}", planned.label);
            let fault = planned.label.clone();
            events.push(secs(t0), EventKind::FaultFailed { fault }, m);
            rec.error = Some(e);
            failed.cancel();
            return rec;
        }
    };
    let id = applied.id(&fleet);
    rec.applied_at_s = Some(secs(t0));
    rec.id = Some(id.clone());
    events.push(
        secs(t0),
        EventKind::FaultApplied {
            fault: planned.label.clone(),
            id: id.clone(),
            instant: end.is_none(),
        },
        format!("applied: {} ({id})", planned.label),
    );
    let Some(end) = end else {
        // Instant: the agent marks it done at once.
        rec.healed_at_s = rec.applied_at_s;
        return rec;
    };
    loop {
        let renew_at = Instant::now() + LEASE / 3;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(end) => break,
            _ = tokio::time::sleep_until(renew_at), if renew_at < end => {
                let left = end.saturating_duration_since(Instant::now());
                let ttl = Some((left + GRACE).min(LEASE));
                // Every agent's lease, renewed at once.
                let fleet = &fleet;
                let renewals = applied.parts.iter().map(|(a, fid)| async move {
                    let m = &fleet.members[*a];
                    within(&m.client, m.client.renew(fid, ttl)).await.map_err(|e| (m.name.clone(), e))
                });
                for r in futures::future::join_all(renewals).await {
                    if let Err((agent, e)) = r {
                        let fault = planned.label.clone();
                        let on = if fleet.is_several() { format!(" on agent {agent}") } else { String::new() };
                        events.push(secs(t0), EventKind::FaultRenewFailed { fault }, format!("{}{on}: {e}", planned.label));
                    }
                }
            }
        }
    }
    let failures = heal_all(&fleet, &applied).await;
    if failures.is_empty() {
        rec.healed_at_s = Some(secs(t0));
        events.push(
            secs(t0),
            EventKind::FaultHealed {
                fault: planned.label.clone(),
                id: id.clone(),
            },
            format!("healed: {} ({id})", planned.label),
        );
    } else {
        let m = format!(
            "{}: cannot heal: {} (its lease ends within {} s)",
            planned.label,
            failures.join("; "),
            LEASE.as_secs()
        );
        let fault = planned.label.clone();
        events.push(secs(t0), EventKind::FaultHealFailed { fault }, m.clone());
        rec.error = Some(m);
    }
    rec
}

/// Heals a fault, retrying briefly: a heal must not be lost to one dropped request.
async fn heal(client: &AgentClient, id: &str) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..3 {
        match within(client, client.heal(id)).await {
            Ok(_) => return Ok(()),
            // Already healed (its lease ended): nothing is left to do.
            Err(ClientError::Api { status: 404, .. }) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
    }
    Err(last)
}

/// Watches every agent of `fleet` until `stop`: one that has not answered for
/// [`AGENT_SILENCE`] is lost (an event, and `lost` says which).
async fn watch_agents(
    fleet: Fleet,
    t0: Instant,
    stop: CancellationToken,
    lost: Lost,
    events: Events,
) {
    let mut answered: Vec<Instant> = vec![Instant::now(); fleet.members.len()];
    loop {
        let asks = fleet.members.iter().map(|m| async move {
            tokio::time::timeout(Duration::from_secs(1), m.client.status())
                .await
                .map_err(|_| "no answer within 1s".to_owned())
                .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
        });
        let answers = tokio::select! {
            _ = stop.cancelled() => return,
            a = futures::future::join_all(asks) => a,
        };
        for (i, a) in answers.into_iter().enumerate() {
            match a {
                Ok(()) => answered[i] = Instant::now(),
                Err(e) if answered[i].elapsed() >= AGENT_SILENCE => {
                    let agent = fleet.members[i].name.clone();
                    let m = format!(
                        "agent {agent} stopped answering ({e}): ending the run, healing on the other agents"
                    );
                    events.push(secs(t0), EventKind::AgentLost { agent }, m.clone());
                    lost.set(m);
                    return;
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Runs the whole timeline until every fault has ended and `stop` fires, watching the
/// agents (`watch`: they run apart from the runner) the whole time.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    fleet: Fleet,
    faults: Vec<(Planned, Vec<Part>)>,
    t0: Instant,
    stop: CancellationToken,
    failed: CancellationToken,
    lost: Option<Lost>,
    events: Events,
) -> Vec<FaultRecord> {
    let watcher = lost.map(|lost| {
        tokio::spawn(watch_agents(
            fleet.clone(),
            t0,
            stop.clone(),
            lost,
            events.clone(),
        ))
    });
    let tasks: Vec<_> = faults
        .into_iter()
        .map(|p| {
            tokio::spawn(one(
                fleet.clone(),
                p,
                t0,
                stop.clone(),
                failed.clone(),
                events.clone(),
            ))
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    if let Some(w) = watcher {
        let _ = w.await;
    }
    out
}
