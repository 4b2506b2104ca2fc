//! Prometheus exposition for every shop service: the registry, the request metrics every
//! service shares, and the `/metrics` handler.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The Content-Type of the OpenMetrics text format that prometheus-client writes.
/// Prometheus 3 refuses scrapes without an explicit type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds, from 0.5 ms to 10 s: fine enough at the low end for
/// loopback hops, wide enough for timeouts.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern (`/api/v1/products/{id}`), never the raw path, so the label
    /// set stays bounded.
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// `shop_http_requests_total` and `shop_http_request_duration_seconds`, by route,
/// method and status.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Family<HttpLabels, Counter>,
    pub duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<HttpLabels, Counter>::default();
        let duration = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_requests",
            "HTTP requests served, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to serve an HTTP request, by route, method and status",
            duration.clone(),
        );
        Self { requests, duration }
    }

    pub fn observe(&self, labels: &HttpLabels, seconds: f64) {
        self.requests.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(seconds);
    }
}

/// The registry of one service process: every metric is named `shop_<name>`.
pub fn new_registry() -> Registry {
    Registry::with_prefix("shop")
}

/// `/metrics`: OpenMetrics for scrapers that ask for it, the classic text format for
/// the rest.
pub fn render(registry: &Registry, headers: &axum::http::HeaderMap) -> Response {
    let mut body = String::with_capacity(16 * 1024);
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

pub type SharedRegistry = Arc<Registry>;

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
