//! What faultline knows of the bundled shop, and the one place in the cli that names
//! its services, endpoints, states and metrics. Everything else in the cli takes the
//! broker, the queues and the entrypoint from the topology (`[messaging]`,
//! `entrypoint`), so it runs the same against any system.
//!
//! - the shop's files compiled into the binary: its topology, its workload, the demo;
//! - [`invariants`]: the shop's safety invariants, judged from acknowledged orders
//!   against its audit endpoints (the checker `faultline run` and the tests share);
//! - [`dashboards`]: the Grafana dashboards over the shop's own metrics;
//! - [`slo_rules`]: the shop's own SLOs as Prometheus rules, measured at its entrypoint;
//! - the broker's HTTP API (its queue listing and audit), which the observer and the
//!   drain check read wherever the topology puts the broker;
//! - [`BREAKER_STATE`], the metric the observer reads circuit breakers from.

pub mod dashboards;
pub mod invariants;

use serde::Deserialize;

use crate::slo::BAD_STATUS_PATTERN;
use crate::slo::rules::{SloQuery, rules};

/// `target-system/topology.toml`, as built: the default deployment.
pub const TOPOLOGY: &str = include_str!("../../../target-system/topology.toml");
pub const TOPOLOGY_NAME: &str = "<bundled>/topology.toml";

/// The built-in shop workload, as a file users can copy; experiments name it
/// `workload = "shop"` ([`WORKLOAD_KEY`]).
pub const WORKLOAD: &str = include_str!("../../../target-system/experiments/workloads/shop.toml");
pub const WORKLOAD_NAME: &str = "<bundled>/workloads/shop.toml";
pub const WORKLOAD_KEY: &str = "shop";

/// The demo gameday.
pub const DEMO: &str = include_str!("../../../target-system/experiments/demo.toml");
pub const DEMO_NAME: &str = "<bundled>/experiments/demo.toml";

/// The broker's queue listing: `{"queues": [QueueNow, ...]}`.
pub const BROKER_QUEUES: &str = "/v1/queues";

/// What [`BROKER_QUEUES`] answers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct QueueListing {
    pub queues: Vec<QueueNow>,
}

/// A queue of the broker, as its listing reports it.
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

/// The broker's audit of one queue: `{"messages": [{attributes, ...}]}`.
pub fn broker_messages(queue: &str) -> String {
    format!("/v1/queues/{queue}/messages")
}

/// The gauge every shop service exposes per upstream: 0 closed, 1 open, 2 half-open.
pub const BREAKER_STATE: &str = "shop_upstream_breaker_state";

/// The shop's own SLOs, measured at the topology's entrypoint (server side): 99.9% of
/// requests answered below 500, 99% within 250 ms. These are
/// `dashboards/prometheus/shop-slo-rules.yml`.
pub fn slo_rules(entrypoint: &str) -> String {
    let sel = format!(r#"job="shop",service="{entrypoint}""#);
    rules(
        "shop",
        &[
            SloQuery {
                name: "shop-availability".into(),
                objective: 0.999,
                bad: format!(
                    r#"sum(rate(shop_http_requests_total{{{sel},status=~"{BAD_STATUS_PATTERN}"}}[WINDOW]))"#
                ),
                total: format!("sum(rate(shop_http_requests_total{{{sel}}}[WINDOW]))"),
                min_rate: 0.1,
            },
            SloQuery {
                name: "shop-latency".into(),
                objective: 0.99,
                bad: format!(
                    r#"sum(rate(shop_http_request_duration_seconds_count{{{sel}}}[WINDOW])) - sum(rate(shop_http_request_duration_seconds_bucket{{{sel},le="0.25"}}[WINDOW]))"#
                ),
                total: format!(
                    "sum(rate(shop_http_request_duration_seconds_count{{{sel}}}[WINDOW]))"
                ),
                min_rate: 0.1,
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_shop_rules_are_the_generated_ones() {
        let topology = crate::bundled::load_topology(None).unwrap();
        assert_eq!(
            include_str!("../../../dashboards/prometheus/shop-slo-rules.yml"),
            super::slo_rules(topology.entrypoint.as_deref().unwrap()),
            "regenerate: faultline slo rules --shop > dashboards/prometheus/shop-slo-rules.yml"
        );
    }
}
