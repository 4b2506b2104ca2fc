//! The shop's safety invariants, judged from the client's history (the orders that got a
//! 201) against the shop's audit endpoints. (faultline's own checker will do the same
//! from the load engine's history; these helpers let the tests assert it now.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::Shop;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations {
    /// Acknowledged orders the shop does not have.
    pub lost: Vec<String>,
    /// Orders still pending.
    pub not_terminal: Vec<String>,
    /// Order ids with more than one successful charge.
    pub charged_twice: Vec<String>,
    /// Dead-lettered messages that were not injected poison, by queue.
    pub real_messages_in_dlq: BTreeMap<String, usize>,
}

impl Violations {
    pub fn is_empty(&self) -> bool {
        *self == Violations::default()
    }
}

pub const DLQS: [&str; 3] = ["payments-dlq", "order-events-dlq", "notifications-dlq"];

/// Checks once; `Err` when an audit endpoint does not answer (a service still
/// recovering), which says nothing either way.
pub async fn try_check(shop: &Shop, acknowledged: &BTreeSet<String>) -> Result<Violations, String> {
    let audit = shop.internal("orders-1", "/v1/audit/orders").await;
    let orders: BTreeMap<String, String> = audit["orders"]
        .as_array()
        .ok_or_else(|| format!("the orders audit failed: {audit}"))?
        .iter()
        .map(|o| {
            (
                o["order_id"].as_str().unwrap().to_owned(),
                o["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let lost = acknowledged
        .iter()
        .filter(|id| !orders.contains_key(*id))
        .cloned()
        .collect();
    let not_terminal = orders
        .iter()
        .filter(|(_, st)| st.as_str() == "pending")
        .map(|(id, _)| id.clone())
        .collect();
    let ledger = shop.internal("bank-1", "/v1/ledger").await;
    let mut charges: BTreeMap<String, usize> = BTreeMap::new();
    let ledger = ledger["charges"]
        .as_array()
        .ok_or_else(|| format!("the ledger failed: {ledger}"))?;
    for c in ledger {
        if c["status"] == "succeeded" {
            *charges
                .entry(c["reference"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    let charged_twice = charges
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(r, _)| r)
        .collect();
    let mut real_messages_in_dlq = BTreeMap::new();
    for q in DLQS {
        let msgs = shop
            .internal("broker-1", &format!("/v1/queues/{q}/messages"))
            .await;
        let real = msgs["messages"]
            .as_array()
            .ok_or_else(|| format!("the broker's audit failed: {msgs}"))?
            .iter()
            .filter(|m| m["attributes"]["poison"] != "injected")
            .count();
        if real > 0 {
            real_messages_in_dlq.insert(q.to_owned(), real);
        }
    }
    Ok(Violations {
        lost,
        not_terminal,
        charged_twice,
        real_messages_in_dlq,
    })
}

/// Checks once; panics when the audit endpoints do not answer.
pub async fn check(shop: &Shop, acknowledged: &BTreeSet<String>) -> Violations {
    try_check(shop, acknowledged)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Checks until the invariants hold (queues drained, orders terminal) or `timeout`
/// passes; returns the last verdict.
pub async fn settle(shop: &Shop, acknowledged: &BTreeSet<String>, timeout: Duration) -> Violations {
    let end = Instant::now() + timeout;
    loop {
        match try_check(shop, acknowledged).await {
            Ok(v) if v.is_empty() || Instant::now() >= end => return v,
            Err(e) if Instant::now() >= end => panic!("{e}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
