//! The CLI's own `/metrics` during `run`, `demo` and `load` (`faultline_*`): requests by
//! step and status, latency histograms from the intended send, dropped iterations, and
//! the SLO engine's figures (SLI, error budget left, burn rates), with the faults in
//! effect. Fed from the same per-second snapshots and run state the report uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::load::stats::Stats;
use crate::slo::SloNow;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepStatus {
    step: String,
    /// An HTTP status, or why there was none (`timeout`, `connect`, `reset`, `other`).
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SloLabel {
    slo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BurnLabel {
    slo: String,
    /// `short` or `long`.
    window: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabel {
    kind: String,
    target: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

fn latency() -> Histogram {
    Histogram::new(crate::slo::rules::CLI_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    requests: Family<StepStatus, Counter>,
    duration: Family<StepLabel, Histogram, fn() -> Histogram>,
    dropped: Counter,
    sli: Family<SloLabel, F64Gauge>,
    objective: Family<SloLabel, F64Gauge>,
    budget: Family<SloLabel, F64Gauge>,
    burn: Family<BurnLabel, F64Gauge>,
    faults: Family<FaultLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("faultline");
        let requests = Family::<StepStatus, Counter>::default();
        let duration =
            Family::<StepLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        let dropped = Counter::default();
        let sli = Family::<SloLabel, F64Gauge>::default();
        let objective = Family::<SloLabel, F64Gauge>::default();
        let budget = Family::<SloLabel, F64Gauge>::default();
        let burn = Family::<BurnLabel, F64Gauge>::default();
        let faults = Family::<FaultLabel, Gauge>::default();
        registry.register(
            "requests",
            "Requests the load engine sent, by step and status (or error kind)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Latency from each request's intended send time, by step",
            duration.clone(),
        );
        registry.register(
            "dropped_iterations",
            "Iterations that could not start because the in-flight bound was reached",
            dropped.clone(),
        );
        registry.register(
            "slo_sli",
            "The SLI so far: the good share of events, by SLO",
            sli.clone(),
        );
        registry.register(
            "slo_objective",
            "The objective, a share from 0 to 1, by SLO",
            objective.clone(),
        );
        registry.register(
            "slo_error_budget_remaining",
            "Share of the error budget left (negative when overspent), by SLO",
            budget.clone(),
        );
        registry.register(
            "slo_burn_rate",
            "Error budget burn rate over the run's short and long windows, by SLO",
            burn.clone(),
        );
        registry.register(
            "faults_active",
            "Faults in effect, by kind and target",
            faults.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            dropped,
            sli,
            objective,
            budget,
            burn,
            faults,
        }
    }

    /// Adds one snapshot's requests; `stats` pairs each step name with its statistics.
    pub fn observe<'a>(&self, steps: impl Iterator<Item = (&'a str, &'a Stats)>, dropped: u64) {
        for (step, s) in steps {
            for (status, n) in &s.statuses {
                self.requests
                    .get_or_create(&StepStatus {
                        step: step.to_owned(),
                        status: status.to_string(),
                    })
                    .inc_by(*n);
            }
            for (kind, n) in &s.errors {
                let status = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "other".into());
                self.requests
                    .get_or_create(&StepStatus {
                        step: step.to_owned(),
                        status,
                    })
                    .inc_by(*n);
            }
            let h = self.duration.get_or_create(&StepLabel {
                step: step.to_owned(),
            });
            for v in s.latency.iter_recorded() {
                let secs = v.value_iterated_to() as f64 / 1e6;
                for _ in 0..v.count_at_value() {
                    h.observe(secs);
                }
            }
        }
        self.dropped.inc_by(dropped);
    }

    pub fn set_slos(&self, slos: &[SloNow]) {
        for s in slos {
            let l = SloLabel {
                slo: s.name.clone(),
            };
            if let Some(v) = s.sli {
                self.sli.get_or_create(&l).set(v);
            }
            self.objective.get_or_create(&l).set(s.objective);
            if s.budget_remaining.is_finite() {
                self.budget.get_or_create(&l).set(s.budget_remaining);
            }
            for (window, v) in [("short", s.short_burn), ("long", s.long_burn)] {
                if v.is_finite() {
                    self.burn
                        .get_or_create(&BurnLabel {
                            slo: s.name.clone(),
                            window,
                        })
                        .set(v);
                }
            }
        }
    }

    pub fn set_faults(&self, faults: &[faultline_agent::faults::FaultInfo]) {
        self.faults.clear();
        for f in faults {
            self.faults
                .get_or_create(&FaultLabel {
                    kind: f.kind.clone(),
                    target: f.target.clone(),
                })
                .inc();
        }
    }

    /// Serves `/metrics` on `listen` until `stop`; returns the bound address.
    pub async fn serve(
        self: Arc<Self>,
        listen: SocketAddr,
        stop: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let m = self.clone();
                async move { faultline_agent::metrics::render(&m.registry, &headers) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(addr)
    }
}
