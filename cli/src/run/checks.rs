//! Checks after the run: the queues drain (bounded), then the shop's safety invariants,
//! judged from the client-side history (the orders the load engine saw acknowledged
//! with a 201) against the shop's audit endpoints:
//!
//! - no acknowledged order lost (the orders audit has every one);
//! - every order terminal (none left `pending`);
//! - no order charged twice (the bank's ledger);
//! - the dead letter queues hold only the poison the experiment injected.
//!
//! Addresses come from the agent's status (the first live replica of `orders`, `bank`,
//! `broker`), so the checks work the same for an embedded or a standalone agent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use faultline_agent::api::Status;
use faultline_agent::client::AgentClient;
use serde::Serialize;
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// What was found, in words.
    pub detail: String,
}

fn address(status: &Status, service: &str) -> Result<String, String> {
    use faultline_agent::supervisor::ReplicaState;
    status
        .replicas
        .iter()
        .filter(|r| r.service == service)
        .find(|r| r.state == ReplicaState::Healthy)
        .or_else(|| status.replicas.iter().find(|r| r.service == service))
        .map(|r| format!("http://{}", r.addr))
        .ok_or_else(|| format!("the topology has no `{service}` service"))
}

async fn get(http: &reqwest::Client, url: String) -> Result<serde_json::Value, String> {
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: {}", resp.status()));
    }
    resp.json().await.map_err(|e| format!("{url}: {e}"))
}

const DLQS: [&str; 3] = ["payments-dlq", "order-events-dlq", "notifications-dlq"];

/// Waits until every queue that has a dead letter queue is empty (nothing visible, in
/// flight or delayed), or `timeout` passes. Returns the check and the time it took.
pub async fn drain(client: &AgentClient, http: &reqwest::Client, timeout: Duration) -> CheckResult {
    let start = Instant::now();
    let mut last;
    loop {
        let round = async {
            let status = client.status().await.map_err(|e| e.to_string())?;
            let broker = address(&status, "broker")?;
            let q = get(http, format!("{broker}/v1/queues")).await?;
            let queues = q["queues"].as_array().cloned().unwrap_or_default();
            let busy: Vec<String> = queues
                .iter()
                .filter(|q| !q["dlq"].is_null())
                .filter_map(|q| {
                    let n = q["visible"].as_u64().unwrap_or(0)
                        + q["in_flight"].as_u64().unwrap_or(0)
                        + q["delayed"].as_u64().unwrap_or(0);
                    (n > 0).then(|| format!("{} holds {n}", q["name"].as_str().unwrap_or("?")))
                })
                .collect();
            Ok::<_, String>(busy)
        };
        match round.await {
            Ok(busy) if busy.is_empty() => {
                return CheckResult {
                    name: "queues drained".into(),
                    passed: true,
                    detail: format!(
                        "every queue empty after {:.1} s",
                        start.elapsed().as_secs_f64()
                    ),
                };
            }
            Ok(busy) => last = busy.join(", "),
            Err(e) => last = e,
        }
        if start.elapsed() >= timeout {
            return CheckResult {
                name: "queues drained".into(),
                passed: false,
                detail: format!(
                    "not drained within {}: {last}",
                    humantime::format_duration(timeout)
                ),
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Found {
    lost: Vec<String>,
    pending: Vec<String>,
    orders: usize,
    charged_twice: Vec<String>,
    charges: usize,
    real_in_dlq: BTreeMap<String, usize>,
    poison_in_dlq: usize,
}

async fn look(
    client: &AgentClient,
    http: &reqwest::Client,
    acknowledged: &BTreeSet<String>,
) -> Result<Found, String> {
    let status = client.status().await.map_err(|e| e.to_string())?;
    let orders_url = address(&status, "orders")?;
    let audit = get(http, format!("{orders_url}/v1/audit/orders")).await?;
    let orders: BTreeMap<String, String> = audit["orders"]
        .as_array()
        .ok_or("the orders audit has no `orders`")?
        .iter()
        .filter_map(|o| {
            Some((
                o["order_id"].as_str()?.to_owned(),
                o["status"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let lost = acknowledged
        .iter()
        .filter(|id| !orders.contains_key(*id))
        .cloned()
        .collect();
    let pending = orders
        .iter()
        .filter(|(_, s)| s.as_str() == "pending")
        .map(|(id, _)| id.clone())
        .collect();
    let bank = address(&status, "bank")?;
    let ledger = get(http, format!("{bank}/v1/ledger")).await?;
    let mut charges: BTreeMap<String, usize> = BTreeMap::new();
    let all = ledger["charges"]
        .as_array()
        .ok_or("the bank's ledger has no `charges`")?;
    for c in all {
        if c["status"] == "succeeded"
            && let Some(r) = c["reference"].as_str()
        {
            *charges.entry(r.to_owned()).or_default() += 1;
        }
    }
    let charged_twice = charges
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, _)| r.clone())
        .collect();
    let broker = address(&status, "broker")?;
    let mut real_in_dlq = BTreeMap::new();
    let mut poison_in_dlq = 0;
    for q in DLQS {
        let msgs = get(http, format!("{broker}/v1/queues/{q}/messages")).await?;
        let msgs = msgs["messages"].as_array().cloned().unwrap_or_default();
        let poison = msgs
            .iter()
            .filter(|m| m["attributes"]["poison"] == "injected")
            .count();
        poison_in_dlq += poison;
        if msgs.len() > poison {
            real_in_dlq.insert(q.to_owned(), msgs.len() - poison);
        }
    }
    Ok(Found {
        lost,
        pending,
        orders: orders.len(),
        charged_twice,
        charges: charges.values().sum(),
        real_in_dlq,
        poison_in_dlq,
    })
}

fn sample(ids: &[String]) -> String {
    let mut s = ids.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if ids.len() > 5 {
        s.push_str(&format!(" and {} more", ids.len() - 5));
    }
    s
}

/// The shop's invariants; while some fail and `settle` has not passed, looks again
/// (orders finish paying asynchronously after the queues drain).
pub async fn invariants(
    client: &AgentClient,
    http: &reqwest::Client,
    acknowledged: &BTreeSet<String>,
    settle: Duration,
) -> Vec<CheckResult> {
    let end = Instant::now() + settle;
    let found = loop {
        match look(client, http, acknowledged).await {
            Ok(f)
                if (f.lost.is_empty()
                    && f.pending.is_empty()
                    && f.charged_twice.is_empty()
                    && f.real_in_dlq.is_empty())
                    || Instant::now() >= end =>
            {
                break Ok(f);
            }
            Err(e) if Instant::now() >= end => break Err(e),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    let f = match found {
        Ok(f) => f,
        Err(e) => {
            return vec![CheckResult {
                name: "shop audit endpoints answer".into(),
                passed: false,
                detail: e,
            }];
        }
    };
    vec![
        CheckResult {
            name: "no acknowledged order lost".into(),
            passed: f.lost.is_empty(),
            detail: if f.lost.is_empty() {
                format!(
                    "all {} orders acknowledged with 201 are in the orders audit",
                    acknowledged.len()
                )
            } else {
                format!(
                    "{} of {} acknowledged orders are missing: {}",
                    f.lost.len(),
                    acknowledged.len(),
                    sample(&f.lost)
                )
            },
        },
        CheckResult {
            name: "every order terminal".into(),
            passed: f.pending.is_empty(),
            detail: if f.pending.is_empty() {
                format!("all {} orders are paid or failed", f.orders)
            } else {
                format!(
                    "{} of {} orders still pending: {}",
                    f.pending.len(),
                    f.orders,
                    sample(&f.pending)
                )
            },
        },
        CheckResult {
            name: "no order charged twice".into(),
            passed: f.charged_twice.is_empty(),
            detail: if f.charged_twice.is_empty() {
                format!("{} successful charges, one per order", f.charges)
            } else {
                format!(
                    "{} orders charged more than once: {}",
                    f.charged_twice.len(),
                    sample(&f.charged_twice)
                )
            },
        },
        CheckResult {
            name: "dead letter queues hold only injected poison".into(),
            passed: f.real_in_dlq.is_empty(),
            detail: if f.real_in_dlq.is_empty() {
                format!("{} poison messages, nothing else", f.poison_in_dlq)
            } else {
                format!(
                    "real messages dead-lettered: {}",
                    f.real_in_dlq
                        .iter()
                        .map(|(q, n)| format!("{q}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        },
    ]
}

/// A steady-state probe: `GET base+path` answers `status`.
pub async fn probe(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    status: u16,
    when: &str,
) -> CheckResult {
    let url = format!("{base}{path}");
    let got = http.get(&url).send().await;
    let (passed, detail) = match got {
        Ok(r) if r.status().as_u16() == status => (true, format!("{status} as expected")),
        Ok(r) => (false, format!("answered {}, expected {status}", r.status())),
        Err(e) => (false, format!("no answer: {e}")),
    };
    CheckResult {
        name: format!("steady state {when}: GET {path}"),
        passed,
        detail,
    }
}
