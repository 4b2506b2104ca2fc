//! The agent's `/metrics` (`faultline_agent_*`): faults injected and healed, active
//! faults by kind and target, connections and bytes of every edge's proxy, restarts of
//! every replica, replicas per service and scalings (`faultline scale`, the
//! autoscaler) with what the autoscaler measures. Live values are read at scrape time
//! by a collector.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::faults::Faults;
use crate::http_server::ConnStats;
use crate::supervisor::ReplicaStatus;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ActiveLabels {
    kind: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    edge: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeDirLabels {
    edge: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    service: String,
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct ScalingLabels {
    service: String,
    direction: &'static str,
}

struct Live(Arc<Faults>, Arc<ConnStats>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let faults = &self.0;
        let conns = &self.1;
        ConstGauge::new(conns.open.load(Ordering::Relaxed) as i64).encode(
            encoder.encode_descriptor(
                "api_connections",
                "Connections open to the control API",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?,
        )?;
        ConstCounter::new(conns.refused.load(Ordering::Relaxed)).encode(
            encoder.encode_descriptor(
                "api_connections_refused",
                "Connections to the control API refused at its connection cap",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?,
        )?;
        let mut active: std::collections::BTreeMap<ActiveLabels, i64> = Default::default();
        for f in faults.list() {
            *active
                .entry(ActiveLabels {
                    kind: f.kind,
                    target: f.target,
                })
                .or_default() += 1;
        }
        let mut m = encoder.encode_descriptor(
            "faults_active",
            "Faults in effect, by kind and target",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, n) in &active {
            ConstGauge::new(*n).encode(m.encode_family(labels)?)?;
        }
        let edges = &faults.edges();
        let mut m = encoder.encode_descriptor(
            "proxy_connections",
            "Connections accepted by an edge's fault proxy",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for e in edges {
            ConstCounter::new(e.stats.connections.load(Ordering::Relaxed)).encode(
                m.encode_family(&EdgeLabels {
                    edge: e.name.clone(),
                })?,
            )?;
        }
        let mut m = encoder.encode_descriptor(
            "proxy_active_connections",
            "Connections open through an edge's fault proxy",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for e in edges {
            ConstGauge::new(e.stats.active.load(Ordering::Relaxed) as i64).encode(
                m.encode_family(&EdgeLabels {
                    edge: e.name.clone(),
                })?,
            )?;
        }
        let mut m = encoder.encode_descriptor(
            "proxy_transferred_bytes",
            "Bytes passed by an edge's fault proxy, by direction",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for e in edges {
            for (direction, v) in [
                ("upstream", &e.stats.bytes_upstream),
                ("downstream", &e.stats.bytes_downstream),
            ] {
                ConstCounter::new(v.load(Ordering::Relaxed)).encode(m.encode_family(
                    &EdgeDirLabels {
                        edge: e.name.clone(),
                        direction,
                    },
                )?)?;
            }
        }
        encode_restarts(&mut encoder, &faults.supervisor().status())?;
        encode_scaling(faults, &mut encoder)
    }
}

/// Every replica's restarts, and those of them after a failed liveness probe.
fn encode_restarts(
    encoder: &mut DescriptorEncoder,
    replicas: &[ReplicaStatus],
) -> Result<(), std::fmt::Error> {
    type Count = fn(&ReplicaStatus) -> u32;
    let families: [(&str, &str, Count); 2] = [
        (
            "replica_restarts",
            "Times the supervisor started a replica again",
            |r| r.restarts,
        ),
        (
            "replica_liveness_restarts",
            "Times the supervisor killed a replica that failed its liveness probe (counted in replica_restarts too)",
            |r| r.liveness_restarts,
        ),
    ];
    for (name, help, count) in families {
        let mut m = encoder.encode_descriptor(
            name,
            help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for r in replicas {
            ConstCounter::new(u64::from(count(r))).encode(m.encode_family(&ReplicaLabels {
                service: r.service.clone(),
                replica: r.name.clone(),
            })?)?;
        }
    }
    Ok(())
}

/// Replicas per service, scalings, requests through each edge, and the autoscaler's
/// measurements.
fn encode_scaling(faults: &Faults, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType::{Counter, Gauge};
    let sup = faults.supervisor();
    let mut per_service: std::collections::BTreeMap<ServiceLabels, i64> = sup
        .topology()
        .services
        .iter()
        .map(|s| {
            (
                ServiceLabels {
                    service: s.name.clone(),
                },
                0,
            )
        })
        .collect();
    for r in sup.status() {
        *per_service
            .entry(ServiceLabels { service: r.service })
            .or_default() += 1;
    }
    let mut m = encoder.encode_descriptor(
        "service_replicas",
        "Replicas a service has now",
        None,
        Gauge,
    )?;
    for (labels, n) in &per_service {
        ConstGauge::new(*n).encode(m.encode_family(labels)?)?;
    }
    // Every service has both series from the start, so a query over them has data
    // before the first scaling.
    let mut scalings: std::collections::BTreeMap<ScalingLabels, u64> = per_service
        .keys()
        .flat_map(|l| {
            ["out", "in"].map(|direction| {
                (
                    ScalingLabels {
                        service: l.service.clone(),
                        direction,
                    },
                    0,
                )
            })
        })
        .collect();
    for s in sup.scalings() {
        let direction = if s.to > s.from { "out" } else { "in" };
        *scalings
            .entry(ScalingLabels {
                service: s.service,
                direction,
            })
            .or_default() += 1;
    }
    let mut m = encoder.encode_descriptor(
        "scalings",
        "Scalings of a service, by direction (out, in), by `faultline scale` or the autoscaler",
        None,
        Counter,
    )?;
    for (labels, n) in &scalings {
        ConstCounter::new(*n).encode(m.encode_family(labels)?)?;
    }
    let mut m = encoder.encode_descriptor(
        "proxy_requests",
        "HTTP requests seen going through an edge's fault proxy",
        None,
        Counter,
    )?;
    for e in faults.edges() {
        ConstCounter::new(e.stats.requests.load(Ordering::Relaxed)).encode(m.encode_family(
            &EdgeLabels {
                edge: e.name.clone(),
            },
        )?)?;
    }
    encode_autoscale(&sup.autoscale_views(), encoder)
}

/// What the autoscaler measured and wants, per autoscaled service.
fn encode_autoscale(
    views: &[crate::supervisor::AutoscaleView],
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType::Gauge;
    type Field = fn(&crate::supervisor::AutoscaleView) -> f64;
    let gauges: [(&str, &str, Field); 3] = [
        (
            "autoscale_load",
            "Requests a second per replica the autoscaler measured",
            |v| v.load,
        ),
        (
            "autoscale_target",
            "Requests a second per replica the autoscaler aims at",
            |v| v.target,
        ),
        (
            "autoscale_desired_replicas",
            "Replicas the measured load asks for",
            |v| f64::from(v.desired),
        ),
    ];
    for (name, help, field) in gauges {
        let mut m = encoder.encode_descriptor(name, help, None, Gauge)?;
        for v in views {
            ConstGauge::new(field(v)).encode(m.encode_family(&ServiceLabels {
                service: v.service.clone(),
            })?)?;
        }
    }
    Ok(())
}

/// The registry served on the agent's `/metrics`.
pub fn registry(faults: &Arc<Faults>, conns: Arc<ConnStats>) -> Registry {
    let mut registry = Registry::with_prefix("faultline_agent");
    registry.register(
        "faults_injected",
        "Faults applied, by kind",
        faults.metrics.injected.clone(),
    );
    registry.register(
        "faults_healed",
        "Faults healed, by kind and reason (healed, expired, shutdown, failed)",
        faults.metrics.healed.clone(),
    );
    registry.register_collector(Box::new(Live(faults.clone(), conns)));
    registry
}

/// `/metrics`: OpenMetrics for scrapers that ask for it, the classic text format for
/// the rest. (The shop has its own copy: it depends on no faultline crate.)
pub fn render(registry: &Registry, headers: &axum::http::HeaderMap) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) if wants_openmetrics(headers) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body,
        )
            .into_response(),
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CLASSIC_CONTENT_TYPE),
            )],
            classic_text(&body),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The same exposition in the classic Prometheus text format (0.0.4), for clients that do
/// not ask for OpenMetrics (`promtool check metrics`, curl, older scrapers): a counter's
/// `# HELP` and `# TYPE` carry its `_total` name, and the OpenMetrics-only lines
/// (`# UNIT`, `# EOF`) go.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            (counters.contains(name) && !name.ends_with("_total"))
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None if line.starts_with("# TYPE ") && line.ends_with(" unknown") => {
                out.push_str(&line.replace(" unknown", " untyped"))
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The Content-Type of [`classic_text`].
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper asked for OpenMetrics (Prometheus does; curl and promtool do not).
pub fn wants_openmetrics(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

#[cfg(test)]
mod classic_tests {
    #[test]
    fn counters_get_their_total_name_and_openmetrics_lines_go() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"1\"} 3\n# HELP x_up Up.\n# TYPE x_up gauge\n# UNIT x_up seconds\nx_up 1\n# EOF\n";
        assert_eq!(
            super::classic_text(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"1\"} 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
