//! Checks after the run that hold for any topology: the queues of its `[messaging]`
//! drain (bounded), and steady-state probes answer as expected. The shop's own
//! invariants are in [`crate::shop::invariants`]; both find services through the
//! agent's status, so they work the same for an embedded or a standalone agent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use faultline_agent::api::Status;
use faultline_agent::client::{AgentClient, ClientError};
use faultline_agent::supervisor::ReplicaState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::target::Target;
use crate::experiment::{Experiment, Probe};
use crate::shop::invariants;
use crate::shop::{BROKER_QUEUES, QueueListing};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// What was found, in words.
    pub detail: String,
}

/// Why a look at the system's endpoints found nothing to judge.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Agent(#[from] ClientError),
    #[error("the topology has no `{0}` service")]
    NoService(String),
    #[error("the topology has no [messaging] table naming its broker")]
    NoBroker,
    #[error("{url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{url}: {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url}: {source}")]
    Body { url: String, source: reqwest::Error },
}

/// `http://ADDR` of a live replica of `service` (any replica when none is live).
pub fn replica_url(status: &Status, service: &str) -> Result<String, AuditError> {
    status
        .replicas
        .iter()
        .filter(|r| r.service == service)
        .find(|r| r.state == ReplicaState::Healthy)
        .or_else(|| status.replicas.iter().find(|r| r.service == service))
        .map(|r| format!("http://{}", r.addr))
        .ok_or_else(|| AuditError::NoService(service.to_owned()))
}

/// `http://ADDR` of the topology's broker, and the queues the topology names.
pub fn broker_url(status: &Status) -> Result<(String, BTreeSet<&str>), AuditError> {
    let m = status.messaging.as_ref().ok_or(AuditError::NoBroker)?;
    let queues = m.queues.keys().map(String::as_str).collect();
    Ok((replica_url(status, &m.broker)?, queues))
}

/// `GET url` as JSON of type `T`; a non-2xx answer is an error.
pub async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> Result<T, AuditError> {
    let resp = match http.get(&url).send().await {
        Ok(r) => r,
        Err(source) => return Err(AuditError::Unreachable { url, source }),
    };
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(AuditError::Status { url, status });
    }
    resp.json()
        .await
        .map_err(|source| AuditError::Body { url, source })
}

/// The topology's queues that still hold messages (visible, in flight or delayed).
async fn busy_queues(
    client: &AgentClient,
    http: &reqwest::Client,
) -> Result<Vec<String>, AuditError> {
    let status = client.status().await?;
    let (broker, queues) = broker_url(&status)?;
    let listing: QueueListing = get_json(http, format!("{broker}{BROKER_QUEUES}")).await?;
    Ok(listing
        .queues
        .iter()
        .filter(|q| queues.contains(q.name.as_str()))
        .filter_map(|q| {
            let n = q.visible + q.in_flight + q.delayed;
            (n > 0).then(|| format!("{} holds {n}", q.name))
        })
        .collect())
}

/// Waits until every queue of the topology's `[messaging]` is empty (nothing visible,
/// in flight or delayed), or `timeout` passes.
pub async fn drain(client: &AgentClient, http: &reqwest::Client, timeout: Duration) -> CheckResult {
    let start = Instant::now();
    let name = "queues drained".to_owned();
    loop {
        let last = match busy_queues(client, http).await {
            Ok(busy) if busy.is_empty() => {
                let detail = format!(
                    "every queue empty after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                return CheckResult {
                    name,
                    passed: true,
                    detail,
                };
            }
            Ok(busy) => busy.join(", "),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            let detail = format!(
                "not drained within {}: {last}",
                humantime::format_duration(timeout)
            );
            return CheckResult {
                name,
                passed: false,
                detail,
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A steady-state probe: `GET base+path` answers `status`.
pub async fn probe(http: &reqwest::Client, base: &str, p: &Probe, when: &str) -> CheckResult {
    let url = format!("{base}{}", p.path);
    let (passed, detail) = match http.get(&url).send().await {
        Ok(r) if r.status().as_u16() == p.status => (true, format!("{} as expected", p.status)),
        Ok(r) => (
            false,
            format!("answered {}, expected {}", r.status(), p.status),
        ),
        Err(e) => (false, format!("no answer: {e}")),
    };
    CheckResult {
        name: format!("steady state {when}: GET {}", p.path),
        passed,
        detail,
    }
}

/// The steady-state probes after the run: each may take up to `settle` to pass (the
/// system may need a moment once the faults heal).
pub async fn steady_state_after(
    http: &reqwest::Client,
    base: &str,
    probes: &[Probe],
    settle: Duration,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for p in probes {
        let deadline = Instant::now() + settle;
        let c = loop {
            let c = probe(http, base, p, "after").await;
            if c.passed || Instant::now() >= deadline {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        out.push(c);
    }
    out
}

/// The checks after the load: the queues drain and the shop's invariants hold (when the
/// experiment asks for them and there is an agent to find the services through), then
/// the steady-state probes pass (the system may need a moment to settle). `history` is
/// what the load engine recorded: the shop's acknowledged orders among it.
pub async fn after(
    exp: &Experiment,
    target: &Target,
    http: &reqwest::Client,
    history: &BTreeMap<String, Vec<String>>,
    quiet: bool,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    if let (true, Some(client)) = (exp.checks.invariants, &target.agent) {
        if !quiet {
            eprintln!(
                "draining the queues (at most {})...",
                humantime::format_duration(exp.checks.drain_timeout)
            );
        }
        out.push(drain(client, http, exp.checks.drain_timeout).await);
        let acknowledged: BTreeSet<String> = history
            .get(invariants::ACKNOWLEDGED)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        let found = invariants::settle(client, http, &acknowledged, SETTLE).await;
        out.extend(invariants::checks(found));
    }
    out.extend(steady_state_after(http, &target.base, &exp.steady_state, SETTLE).await);
    out
}

/// How long the invariants and the steady state may take to hold once the load ends.
const SETTLE: Duration = Duration::from_secs(10);
