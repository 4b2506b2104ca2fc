//! The agent's `/metrics` (`faultline_agent_*`): faults injected and healed, active
//! faults by kind and target, connections and bytes of every edge's proxy, restarts of
//! every replica. Live values are read at scrape time by a collector.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::faults::Faults;

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

struct Live(Arc<Faults>);

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let faults = &self.0;
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
        let edges = faults.supervisor().edges();
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
        let mut m = encoder.encode_descriptor(
            "replica_restarts",
            "Times the supervisor started a replica again",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for r in faults.supervisor().status() {
            ConstCounter::new(u64::from(r.restarts)).encode(m.encode_family(
                &ReplicaLabels {
                    service: r.service,
                    replica: r.name,
                },
            )?)?;
        }
        Ok(())
    }
}

/// The registry served on the agent's `/metrics`.
pub fn registry(faults: &Arc<Faults>) -> Registry {
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
    registry.register_collector(Box::new(Live(faults.clone())));
    registry
}
