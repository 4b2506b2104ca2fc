//! The shop's safety invariants, judged from the orders a client saw acknowledged (a 201
//! with an order id) against the shop's audit endpoints:
//!
//! - no acknowledged order lost (the orders audit has every one);
//! - every order terminal (paid or failed: none left pending);
//! - no order charged twice (the bank's ledger);
//! - the dead letter queues hold only the poison the experiment injected.
//!
//! `faultline run` judges the history its load engine recorded with it; the end-to-end
//! tests judge the histories of their own clients with the same code. Addresses come
//! from the agent's status (a live replica of `orders` and `bank`, the topology's
//! broker), so the checks work the same for an embedded or a standalone agent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use faultline_agent::client::AgentClient;
use faultline_agent::topology::Topology;
use serde::Deserialize;
use tokio::time::Instant;

use super::{BROKER_QUEUES, QueueListing, broker_messages};
use crate::run::checks::{AuditError, CheckResult, broker_url, get_json, replica_url};

/// The service that keeps the orders, and its audit of every order.
pub const ORDERS: &str = "orders";
pub const AUDIT_ORDERS: &str = "/v1/audit/orders";
/// The one state of an order that is not terminal (the terminal ones: paid, failed).
pub const PENDING: &str = "pending";
/// The payment provider, and its ledger of charges.
pub const BANK: &str = "bank";
pub const LEDGER: &str = "/v1/ledger";
/// The status of a charge that took the money.
pub const CHARGE_SUCCEEDED: &str = "succeeded";
/// The attribute the broker marks injected poison with, and its value.
pub const POISON_ATTRIBUTE: &str = "poison";
pub const POISON_INJECTED: &str = "injected";
/// The value the shop's workload records for every acknowledged order (`record`).
pub const ACKNOWLEDGED: &str = "order_id";

/// Whether a topology has what the checker reads: the services holding the audits
/// ([`ORDERS`], [`BANK`]) and a `[messaging]` broker. `Err` says what `topology` lacks.
pub fn supported_by(topology: &Topology) -> Result<(), String> {
    let services: Vec<&str> = topology.services.iter().map(|s| s.name.as_str()).collect();
    supported_by_parts(&topology.name, &services, topology.messaging.is_some())
}

/// [`supported_by`] from a topology's service names and whether it has a broker (what a
/// running agent's status says).
pub fn supported_by_parts(topology: &str, services: &[&str], broker: bool) -> Result<(), String> {
    let mut missing: Vec<String> = [ORDERS, BANK]
        .into_iter()
        .filter(|s| !services.contains(s))
        .map(|s| format!("no `{s}` service"))
        .collect();
    if !broker {
        missing.push("no [messaging] broker".into());
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "[checks] invariants are the bundled shop's (they read its audit endpoints on `{ORDERS}`, `{BANK}` and the [messaging] broker), and topology `{topology}` has {}: leave `invariants` out, and check this system with [[checks.http]] or [[checks.command]]",
        missing.join(", ")
    ))
}

#[derive(Debug, Deserialize)]
struct AuditOrders {
    orders: Vec<AuditOrder>,
}

/// One order as the orders audit shows it.
#[derive(Debug, Deserialize)]
pub struct AuditOrder {
    pub order_id: String,
    pub status: String,
}

#[derive(Debug, Deserialize)]
struct Ledger {
    charges: Vec<Charge>,
}

/// One charge of the bank's ledger.
#[derive(Debug, Deserialize)]
pub struct Charge {
    /// The order the charge is for.
    pub reference: String,
    pub status: String,
}

#[derive(Debug, Deserialize)]
struct Messages {
    messages: Vec<Message>,
}

/// One message of a queue, as the broker's audit shows it.
#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Message {
    pub fn is_injected_poison(&self) -> bool {
        self.attributes.get(POISON_ATTRIBUTE).map(String::as_str) == Some(POISON_INJECTED)
    }
}

/// What breaks an invariant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations {
    /// Acknowledged orders the shop does not have.
    pub lost: Vec<String>,
    /// Orders still pending.
    pub not_terminal: Vec<String>,
    /// Order ids with more than one successful charge.
    pub charged_twice: Vec<String>,
    /// Dead-lettered messages that were not injected poison, by dead letter queue.
    pub real_messages_in_dlq: BTreeMap<String, usize>,
}

impl Violations {
    pub fn is_empty(&self) -> bool {
        *self == Violations::default()
    }
}

/// One look at the audits: the violations, and what was counted on the way.
#[derive(Debug, Clone)]
pub struct Found {
    pub violations: Violations,
    /// Acknowledged orders judged.
    pub acknowledged: usize,
    /// Orders in the orders audit.
    pub orders: usize,
    /// Successful charges in the ledger.
    pub charges: usize,
    pub poison_in_dlq: usize,
}

/// The dead letter queues of the topology's queues, as the broker lists them.
async fn dead_letter_queues(
    http: &reqwest::Client,
    broker: &str,
    queues: &BTreeSet<&str>,
) -> Result<Vec<String>, AuditError> {
    let listing: QueueListing = get_json(http, format!("{broker}{BROKER_QUEUES}")).await?;
    Ok(listing
        .queues
        .into_iter()
        .filter(|q| queues.contains(q.name.as_str()))
        .filter_map(|q| q.dlq)
        .collect())
}

/// The acknowledged orders the audit lacks, the orders still pending, and how many
/// orders the audit holds.
fn judge_orders(
    acknowledged: &BTreeSet<String>,
    audit: &[AuditOrder],
) -> (Vec<String>, Vec<String>, usize) {
    let orders: BTreeMap<&str, &str> = audit
        .iter()
        .map(|o| (o.order_id.as_str(), o.status.as_str()))
        .collect();
    let lost = acknowledged
        .iter()
        .filter(|id| !orders.contains_key(id.as_str()))
        .cloned()
        .collect();
    let pending = orders
        .iter()
        .filter(|(_, s)| **s == PENDING)
        .map(|(id, _)| (*id).to_owned())
        .collect();
    (lost, pending, orders.len())
}

/// Successful charges per order.
fn successful_charges(charges: &[Charge]) -> BTreeMap<&str, usize> {
    let mut per_order = BTreeMap::new();
    for c in charges.iter().filter(|c| c.status == CHARGE_SUCCEEDED) {
        *per_order.entry(c.reference.as_str()).or_default() += 1;
    }
    per_order
}

/// Looks once. `Err` when an audit endpoint does not answer (a service still
/// recovering), which says nothing either way.
pub async fn look(
    client: &AgentClient,
    http: &reqwest::Client,
    acknowledged: &BTreeSet<String>,
) -> Result<Found, AuditError> {
    let status = client.status().await?;
    let orders_url = replica_url(&status, ORDERS)?;
    let audit: AuditOrders = get_json(http, format!("{orders_url}{AUDIT_ORDERS}")).await?;
    let (lost, not_terminal, orders) = judge_orders(acknowledged, &audit.orders);
    let bank = replica_url(&status, BANK)?;
    let ledger: Ledger = get_json(http, format!("{bank}{LEDGER}")).await?;
    let charges = successful_charges(&ledger.charges);
    let charged_twice = charges
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, _)| (*r).to_owned())
        .collect();
    let (broker, queues) = broker_url(&status)?;
    let mut real_messages_in_dlq = BTreeMap::new();
    let mut poison_in_dlq = 0;
    for q in dead_letter_queues(http, &broker, &queues).await? {
        let msgs: Messages = get_json(http, format!("{broker}{}", broker_messages(&q))).await?;
        let poison = msgs
            .messages
            .iter()
            .filter(|m| m.is_injected_poison())
            .count();
        poison_in_dlq += poison;
        if msgs.messages.len() > poison {
            real_messages_in_dlq.insert(q, msgs.messages.len() - poison);
        }
    }
    Ok(Found {
        violations: Violations {
            lost,
            not_terminal,
            charged_twice,
            real_messages_in_dlq,
        },
        acknowledged: acknowledged.len(),
        orders,
        charges: charges.values().sum(),
        poison_in_dlq,
    })
}

/// Looks until the invariants hold or `timeout` passes (orders finish paying
/// asynchronously after the queues drain); the last look's verdict, or its error when
/// the audits never answered.
pub async fn settle(
    client: &AgentClient,
    http: &reqwest::Client,
    acknowledged: &BTreeSet<String>,
    timeout: Duration,
) -> Result<Found, AuditError> {
    let end = Instant::now() + timeout;
    loop {
        match look(client, http, acknowledged).await {
            Ok(f) if f.violations.is_empty() || Instant::now() >= end => return Ok(f),
            Err(e) if Instant::now() >= end => return Err(e),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

fn sample(ids: &[String]) -> String {
    let mut s = ids.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if ids.len() > 5 {
        s.push_str(&format!(" and {} more", ids.len() - 5));
    }
    s
}

/// The invariants as the report's checks, or the one check that says the audits did
/// not answer.
pub fn checks(found: Result<Found, AuditError>) -> Vec<CheckResult> {
    let f = match found {
        Ok(f) => f,
        Err(e) => {
            return vec![CheckResult::new(
                "shop audit endpoints answer".into(),
                false,
                e.to_string(),
            )];
        }
    };
    let v = &f.violations;
    vec![
        CheckResult::new(
            "no acknowledged order lost".into(),
            v.lost.is_empty(),
            if v.lost.is_empty() {
                format!(
                    "all {} orders acknowledged with 201 are in the orders audit",
                    f.acknowledged
                )
            } else {
                format!(
                    "{} of {} acknowledged orders are missing: {}",
                    v.lost.len(),
                    f.acknowledged,
                    sample(&v.lost)
                )
            },
        ),
        CheckResult::new(
            "every order terminal".into(),
            v.not_terminal.is_empty(),
            if v.not_terminal.is_empty() {
                format!("all {} orders are paid or failed", f.orders)
            } else {
                format!(
                    "{} of {} orders still pending: {}",
                    v.not_terminal.len(),
                    f.orders,
                    sample(&v.not_terminal)
                )
            },
        ),
        CheckResult::new(
            "no order charged twice".into(),
            v.charged_twice.is_empty(),
            if v.charged_twice.is_empty() {
                format!("{} successful charges, one per order", f.charges)
            } else {
                format!(
                    "{} orders charged more than once: {}",
                    v.charged_twice.len(),
                    sample(&v.charged_twice)
                )
            },
        ),
        CheckResult::new(
            "dead letter queues hold only injected poison".into(),
            v.real_messages_in_dlq.is_empty(),
            if v.real_messages_in_dlq.is_empty() {
                format!("{} poison messages, nothing else", f.poison_in_dlq)
            } else {
                format!(
                    "real messages dead-lettered: {}",
                    v.real_messages_in_dlq
                        .iter()
                        .map(|(q, n)| format!("{q}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        ),
    ]
}
