//! The Grafana dashboards over the shop's own metrics (`shop_*`): its services (traffic,
//! upstream health, breakers, retries, rate limiting, restarts) and its data path
//! (queues, store, caches). They name metrics, never a service of the topology: the
//! `service` and `replica` variables filter.

use serde_json::Value;

use crate::dashboards::{Panel, dashboard, p, q};
use crate::slo::BAD_STATUS_PATTERN;

/// `shop: services`: traffic, upstream health and resilience per service and replica.
pub fn services() -> Value {
    dashboard(
        "shop-services",
        "shop: services",
        "The shop's services under faults: rate, errors and duration per service and replica, upstream health, circuit breakers, retries and their budget, rate limiting, restarts.",
        traffic().into_iter().chain(resilience()).collect(),
    )
}

/// Rate, errors and duration.
fn traffic() -> Vec<Panel> {
    vec![
        p(
            "Requests by service",
            "Requests served a second, per service.",
            "timeseries",
            "reqps",
            vec![q(
                r#"sum by (service) (rate(shop_http_requests_total{service=~"$service",replica=~"$replica"}[$__rate_interval]))"#,
                "{{service}}",
            )],
        ),
        p(
            "Errors (5xx) by replica",
            "Answers of 500 or above a second, per replica.",
            "timeseries",
            "reqps",
            vec![q(
                format!(
                    r#"sum by (replica) (rate(shop_http_requests_total{{service=~"$service",replica=~"$replica",status=~"{BAD_STATUS_PATTERN}"}}[$__rate_interval]))"#
                ),
                "{{replica}}",
            )],
        ),
        p(
            "Duration p99 by service",
            "99th percentile of the time to serve a request, per service.",
            "timeseries",
            "s",
            vec![q(
                r#"histogram_quantile(0.99, sum by (service, le) (rate(shop_http_request_duration_seconds_bucket{service=~"$service",replica=~"$replica"}[$__rate_interval])))"#,
                "{{service}}",
            )],
        ),
    ]
}

/// Upstream health, breakers, retries, rate limiting, restarts.
fn resilience() -> Vec<Panel> {
    vec![
        p(
            "Upstream endpoints healthy",
            "Per caller and upstream, how many endpoints pass their health checks (ejected ones count as not healthy).",
            "timeseries",
            "short",
            vec![q(
                r#"sum by (service, upstream) (shop_upstream_endpoint_healthy{service=~"$service",replica=~"$replica"})"#,
                "{{service}} -> {{upstream}}",
            )],
        ),
        p(
            "Circuit breakers",
            "Breaker state per caller and upstream: 0 closed, 1 open, 2 half-open.",
            "state-timeline",
            "short",
            vec![q(
                r#"max by (service, upstream) (shop_upstream_breaker_state{service=~"$service",replica=~"$replica"})"#,
                "{{service}} -> {{upstream}}",
            )],
        ),
        p(
            "Tries by outcome",
            "Tries sent to upstreams a second, by outcome.",
            "timeseries",
            "ops",
            vec![q(
                r#"sum by (upstream, outcome) (rate(shop_upstream_tries_total{service=~"$service",replica=~"$replica"}[$__rate_interval]))"#,
                "{{upstream}} {{outcome}}",
            )],
        ),
        p(
            "Retries and exhausted retry budget",
            "Retries a second, and retries refused because the retry budget was spent.",
            "timeseries",
            "ops",
            vec![
                q(
                    r#"sum by (upstream) (rate(shop_upstream_retries_total{service=~"$service",replica=~"$replica"}[$__rate_interval]))"#,
                    "retries {{upstream}}",
                ),
                q(
                    r#"sum by (upstream) (rate(shop_upstream_retry_budget_exhausted_total{service=~"$service",replica=~"$replica"}[$__rate_interval]))"#,
                    "budget exhausted {{upstream}}",
                ),
            ],
        ),
        p(
            "Rate limited",
            "Requests the gateway refused with 429 a second, by route.",
            "timeseries",
            "reqps",
            vec![q(
                r#"sum by (route) (rate(shop_gateway_rate_limited_total{service=~"$service",replica=~"$replica"}[$__rate_interval]))"#,
                "{{route}}",
            )],
        ),
        p(
            "Restarts",
            "Restarts per replica by the supervisor, over the dashboard's range.",
            "timeseries",
            "short",
            vec![q(
                r#"sum by (replica) (increase(faultline_agent_replica_restarts_total{service=~"$service",replica=~"$replica"}[$__range]))"#,
                "{{replica}}",
            )],
        ),
    ]
}

/// `shop: data and messaging`: queues, store and caches.
pub fn data() -> Value {
    dashboard(
        "shop-data",
        "shop: data and messaging",
        "The shop's queues, store and caches: depth, in flight, dead letters, oldest message age, replication lag, fsync latency, cache and CDN hit ratios.",
        vec![
            p(
                "Queue depth",
                "Messages visible (waiting) per queue.",
                "timeseries",
                "short",
                vec![q(
                    "sum by (queue) (shop_broker_messages_visible{service=~\"$service\",replica=~\"$replica\"})",
                    "{{queue}}",
                )],
            ),
            p(
                "In flight",
                "Messages received and not yet deleted per queue.",
                "timeseries",
                "short",
                vec![q(
                    "sum by (queue) (shop_broker_messages_in_flight{service=~\"$service\",replica=~\"$replica\"})",
                    "{{queue}}",
                )],
            ),
            p(
                "Dead letter queues",
                "Messages in each queue's dead letter queue.",
                "timeseries",
                "short",
                vec![q(
                    "sum by (queue) (shop_broker_dlq_depth{service=~\"$service\",replica=~\"$replica\"})",
                    "{{queue}}",
                )],
            ),
            p(
                "Oldest message age",
                "Age of the oldest message per queue.",
                "timeseries",
                "s",
                vec![q(
                    "max by (queue) (shop_broker_oldest_message_age_seconds{service=~\"$service\",replica=~\"$replica\"})",
                    "{{queue}}",
                )],
            ),
            p(
                "Replication lag",
                "How far each store replica trails its primary, in time and in log entries.",
                "timeseries",
                "s",
                vec![q(
                    r#"max by (replica) (shop_store_replication_lag_seconds{service=~"$service",replica=~"$replica"})"#,
                    "{{replica}}",
                )],
            ),
            p(
                "WAL fsync latency p99",
                "99th percentile of the write-ahead log's fsync, per service.",
                "timeseries",
                "s",
                vec![q(
                    r#"histogram_quantile(0.99, sum by (service, le) (rate({__name__=~"shop_.+_wal_fsync_duration_seconds_bucket",service=~"$service",replica=~"$replica"}[$__rate_interval])))"#,
                    "{{service}}",
                )],
            ),
            p(
                "Cache hit ratio",
                "Share of the cache's lookups that hit.",
                "timeseries",
                "percentunit",
                vec![q(
                    "sum(rate(shop_cache_hits_total{service=~\"$service\",replica=~\"$replica\"}[$__rate_interval])) / (sum(rate(shop_cache_hits_total{service=~\"$service\",replica=~\"$replica\"}[$__rate_interval])) + sum(rate(shop_cache_misses_total{service=~\"$service\",replica=~\"$replica\"}[$__rate_interval])))",
                    "cache",
                )],
            ),
            p(
                "CDN lookups by result",
                "Share of the CDN's lookups by result (hit, miss, stale).",
                "timeseries",
                "percentunit",
                vec![q(
                    "sum by (result) (rate(shop_cdn_lookups_total{service=~\"$service\",replica=~\"$replica\"}[$__rate_interval])) / scalar(sum(rate(shop_cdn_lookups_total{service=~\"$service\",replica=~\"$replica\"}[$__rate_interval])))",
                    "{{result}}",
                )],
            ),
        ],
    )
}
