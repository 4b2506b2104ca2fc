//! The shop's invariants for the end-to-end tests: faultline's own checker
//! ([`faultline::shop::invariants`], the code `faultline run` judges with) applied to the
//! orders the tests' clients saw acknowledged, on a [`Shop`].
//!
//! No second, independent checker is kept here, on purpose: it would read the same
//! audit endpoints and prove only that two readings of them agree. What shows the
//! checker sees what it must is that every violation it reports is provoked on purpose
//! and caught, each beside the same scenario run safely: lost orders
//! (`shop_data::without_fsync_a_sigkill_loses_acknowledged_orders`,
//! `run::the_checker_catches_lost_orders_when_the_store_does_not_fsync`), orders left
//! pending (`shop_data::without_the_outbox_a_broker_outage_strands_orders`,
//! `run::the_checker_catches_stranded_orders_without_the_outbox`), double charges
//! (`shop_data::without_idempotency_keys_redelivery_charges_twice`,
//! `run::the_checker_catches_double_charges_without_idempotency_keys`) and a real
//! message in a dead letter queue (`shop_data::poison_goes_to_the_dlq_and_a_redrive_*`).
//! What stays independent of the product is the history: here the tests' own clients
//! decide which orders were acknowledged, not the load engine's record.

use std::collections::BTreeSet;
use std::time::Duration;

pub use faultline::shop::invariants::Violations;
use faultline::shop::invariants::{look, settle as settle_found};

use crate::Shop;

/// Checks once; panics when the audit endpoints do not answer.
pub async fn check(shop: &Shop, acknowledged: &BTreeSet<String>) -> Violations {
    look(&shop.agent, &shop.http, acknowledged)
        .await
        .unwrap_or_else(|e| panic!("the shop's audit endpoints do not answer: {e}"))
        .violations
}

/// Checks until the invariants hold (queues drained, orders terminal) or `timeout`
/// passes; returns the last verdict, or panics when the audits never answered.
pub async fn settle(shop: &Shop, acknowledged: &BTreeSet<String>, timeout: Duration) -> Violations {
    settle_found(&shop.agent, &shop.http, acknowledged, timeout)
        .await
        .unwrap_or_else(|e| panic!("the shop's audit endpoints do not answer: {e}"))
        .violations
}
