//! The fault timeline: each fault applied through the agent at its time, its lease
//! renewed while it should last, and healed at its end, on abort, on Ctrl-C or SIGTERM.
//! Leases are short, so a runner that dies (SIGKILL) leaves faults that the agent heals
//! by itself within [`LEASE`].

use std::time::Duration;

use faultline_agent::client::AgentClient;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{EventKind, Events};
use crate::experiment::Planned;

/// The longest lease the runner takes on a fault; it renews at a third of it.
pub const LEASE: Duration = Duration::from_secs(15);
/// A lease outlives the fault's planned end by this much, so the runner's own heal is
/// what ends it when all goes well.
const GRACE: Duration = Duration::from_secs(2);

/// What happened to one fault of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    pub label: String,
    pub kind: String,
    pub target: String,
    pub planned_at_s: f64,
    pub planned_duration_s: Option<f64>,
    /// The agent's fault id.
    pub id: Option<String>,
    /// Seconds from the start of the load.
    pub applied_at_s: Option<f64>,
    pub healed_at_s: Option<f64>,
    /// Why it could not be applied, renewed or healed.
    pub error: Option<String>,
}

fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// Runs one fault; returns what happened. `failed` is cancelled when the fault cannot be
/// applied (the run stops: the experiment would not be what the file says).
async fn one(
    client: AgentClient,
    planned: Planned,
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
    let mut request = planned.request.clone();
    let ttl = match planned.duration {
        Some(d) => (d + GRACE).min(LEASE),
        None => LEASE,
    };
    request.ttl_ms = Some(ttl.as_millis() as u64);
    let info = match client.inject(&request).await {
        Ok(info) => info,
        Err(e) => {
            let m = format!("{}: cannot apply: {e}", planned.label);
            let fault = planned.label.clone();
            events.push(secs(t0), EventKind::FaultFailed { fault }, m);
            rec.error = Some(e.to_string());
            failed.cancel();
            return rec;
        }
    };
    rec.applied_at_s = Some(secs(t0));
    rec.id = Some(info.id.clone());
    events.push(
        secs(t0),
        EventKind::FaultApplied {
            fault: planned.label.clone(),
            id: info.id.clone(),
        },
        format!("applied: {} ({})", planned.label, info.id),
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
                if let Err(e) = client.renew(&info.id, Some((left + GRACE).min(LEASE))).await {
                    let fault = planned.label.clone();
                    events.push(secs(t0), EventKind::FaultRenewFailed { fault }, format!("{}: {e}", planned.label));
                }
            }
        }
    }
    match heal(&client, &info.id).await {
        Ok(()) => {
            rec.healed_at_s = Some(secs(t0));
            events.push(
                secs(t0),
                EventKind::FaultHealed {
                    fault: planned.label.clone(),
                    id: info.id.clone(),
                },
                format!("healed: {} ({})", planned.label, info.id),
            );
        }
        Err(e) => {
            let m = format!(
                "{}: cannot heal: {e} (its lease ends within {} s)",
                planned.label,
                LEASE.as_secs()
            );
            let fault = planned.label.clone();
            events.push(secs(t0), EventKind::FaultHealFailed { fault }, m.clone());
            rec.error = Some(m);
        }
    }
    rec
}

/// Heals a fault, retrying briefly: a heal must not be lost to one dropped request.
async fn heal(client: &AgentClient, id: &str) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..3 {
        match client.heal(id).await {
            Ok(_) => return Ok(()),
            // Already healed (its lease ended): nothing is left to do.
            Err(faultline_agent::client::ClientError::Api { status: 404, .. }) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
    }
    Err(last)
}

/// Runs the whole timeline until every fault has ended or `stop` fires.
pub async fn run(
    client: AgentClient,
    faults: Vec<Planned>,
    t0: Instant,
    stop: CancellationToken,
    failed: CancellationToken,
    events: Events,
) -> Vec<FaultRecord> {
    let tasks: Vec<_> = faults
        .into_iter()
        .map(|p| {
            tokio::spawn(one(
                client.clone(),
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
    out
}
