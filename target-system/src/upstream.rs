//! The client side of every hop between shop services: load balancing over an
//! upstream's replicas, active health checks, passive ejection, a circuit breaker,
//! per-try timeouts under the caller's deadline, and retries with full-jitter backoff
//! under a retry budget.
//!
//! One [`Upstream`] per called service. The gateway forwards arbitrary requests through
//! [`Upstream::send`]; services that only read JSON use [`Upstream::get`].
//!
//! An upstream given as a file (`--orders @PATH`, one address a line) follows it: the
//! file is re-read every second, and when its list changes the endpoint set is
//! replaced, keeping the health and ejection state of the endpoints that stay (the
//! way Prometheus' file_sd or Envoy's file-based discovery follow theirs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadline::{self, Deadline};
use crate::error::{DEPENDENCY_FAILURE, dependency_error, error};
use crate::metrics::latency_histogram;
use crate::resilience::{
    Backoff, Breaker, BreakerConfig, HealthConfig, HealthState, Outlier, OutlierConfig,
    RetryBudget, RetryBudgetConfig,
};

/// How long a pooled connection may stay unused before the client closes it. Servers'
/// idle timeouts should be longer, so that the client, not the server, closes an idle
/// connection and no request is sent on one the server is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an upstream given as a file re-reads it.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Longest wait for one try's response headers.
    pub per_try_timeout: Duration,
    /// Retries after the first try, at most.
    pub max_retries: u32,
    pub backoff: Backoff,
    pub breaker: BreakerConfig,
    pub budget: RetryBudgetConfig,
    /// Active health checks; `None` turns them off.
    pub health: Option<HealthConfig>,
    pub health_path: String,
    pub outlier: OutlierConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            per_try_timeout: Duration::from_secs(2),
            max_retries: 2,
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(200)),
            breaker: BreakerConfig::default(),
            budget: RetryBudgetConfig::default(),
            health: Some(HealthConfig::default()),
            health_path: "/health".into(),
            outlier: OutlierConfig::default(),
        }
    }
}

/// Why a call produced no response from the upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("circuit breaker for {0} is open")]
    CircuitOpen(String),
    #[error("{0} has no endpoints")]
    NoEndpoints(String),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("request to {0} failed: {1}")]
    Transport(String, String),
    /// The request cannot be sent as the caller made it (a path that is not a valid
    /// URI, a request hyper refuses to write). Nothing reached the upstream, so this is
    /// the caller's fault: a 4xx at the hop that received the input, never counted
    /// against the upstream.
    #[error("cannot send the request to {0}: {1}")]
    InvalidRequest(String, String),
}

impl UpstreamError {
    pub fn upstream(&self) -> &str {
        match self {
            UpstreamError::CircuitOpen(u)
            | UpstreamError::NoEndpoints(u)
            | UpstreamError::Timeout(u)
            | UpstreamError::Connect(u, _)
            | UpstreamError::Transport(u, _)
            | UpstreamError::InvalidRequest(u, _) => u,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::CircuitOpen(_) | UpstreamError::NoEndpoints(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Connect(..) | UpstreamError::Transport(..) => StatusCode::BAD_GATEWAY,
            UpstreamError::InvalidRequest(..) => StatusCode::BAD_REQUEST,
        }
    }

    /// Short machine-friendly name, used as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::CircuitOpen(_) => "circuit_open",
            UpstreamError::NoEndpoints(_) => "no_endpoints",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Connect(..) => "connect",
            UpstreamError::Transport(..) => "transport",
            UpstreamError::InvalidRequest(..) => "invalid_request",
        }
    }

    /// The error as an HTTP answer: one that blames the upstream, not the service
    /// answering, except for an invalid request, which is the caller's to fix.
    pub fn into_response(self) -> axum::response::Response {
        let status = self.status();
        if let UpstreamError::InvalidRequest(..) = self {
            return error(status, self.to_string());
        }
        let upstream = self.upstream().to_owned();
        dependency_error(status, &upstream, self.to_string())
    }
}

/// Whether a failed try may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Only when the request provably never reached the upstream (connect failed).
    Never,
    /// After any failure: the request is safe to repeat.
    Idempotent,
}

impl RetryPolicy {
    /// GET, HEAD, OPTIONS, PUT and DELETE are idempotent by definition; a POST is when it
    /// carries an `Idempotency-Key`, because the upstream then deduplicates it.
    pub fn for_request(method: &Method, headers: &HeaderMap) -> Self {
        let idempotent = matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        ) || headers.contains_key("idempotency-key");
        if idempotent {
            RetryPolicy::Idempotent
        } else {
            RetryPolicy::Never
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    upstream: String,
    outcome: &'static str,
}

/// The metric families of every upstream in a process (`shop_upstream_*`).
#[derive(Clone)]
pub struct UpstreamMetrics {
    tries: Family<OutcomeLabels, Counter>,
    try_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    retries: Family<UpstreamLabels, Counter>,
    budget_exhausted: Family<UpstreamLabels, Counter>,
    invalid_requests: Family<UpstreamLabels, Counter>,
    breaker_state: Family<UpstreamLabels, Gauge>,
    breaker_rejections: Family<UpstreamLabels, Counter>,
    breaker_transitions: Family<UpstreamLabels, Counter>,
    endpoint_healthy: Family<EndpointLabels, Gauge>,
    endpoint_ejected: Family<EndpointLabels, Gauge>,
    ejections: Family<EndpointLabels, Counter>,
}

impl UpstreamMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            tries: Family::default(),
            try_duration: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            budget_exhausted: Family::default(),
            invalid_requests: Family::default(),
            breaker_state: Family::default(),
            breaker_rejections: Family::default(),
            breaker_transitions: Family::default(),
            endpoint_healthy: Family::default(),
            endpoint_ejected: Family::default(),
            ejections: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("upstream");
        r.register(
            "tries",
            "Tries sent to an upstream, by outcome (success, failure, dependency_failure)",
            m.tries.clone(),
        );
        r.register(
            "try_duration_seconds",
            "Time to the response headers of one try",
            m.try_duration.clone(),
        );
        r.register("retries", "Retries sent to an upstream", m.retries.clone());
        r.register(
            "retry_budget_exhausted",
            "Retries not sent because the retry budget was spent",
            m.budget_exhausted.clone(),
        );
        r.register(
            "invalid_requests",
            "Requests not sent because the caller's input made them invalid (not counted against the upstream)",
            m.invalid_requests.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        r.register(
            "breaker_rejections",
            "Calls refused at once because the circuit breaker was open",
            m.breaker_rejections.clone(),
        );
        r.register(
            "breaker_transitions",
            "Circuit breaker state changes",
            m.breaker_transitions.clone(),
        );
        r.register(
            "endpoint_healthy",
            "1 when the endpoint passes its active health checks",
            m.endpoint_healthy.clone(),
        );
        r.register(
            "endpoint_ejected",
            "1 while the endpoint is ejected after consecutive failures",
            m.endpoint_ejected.clone(),
        );
        r.register(
            "ejections",
            "Passive ejections of an endpoint after consecutive failures",
            m.ejections.clone(),
        );
        m
    }
}

struct Endpoint {
    authority: String,
    labels: EndpointLabels,
    health: Mutex<HealthState>,
    outlier: Mutex<Outlier>,
    in_flight: AtomicUsize,
}

struct Policy {
    breaker: Breaker,
    budget: RetryBudget,
}

/// This upstream's own series, resolved once so the request path touches only atomics.
struct Handles {
    tries_success: Counter,
    tries_failure: Counter,
    tries_dependency: Counter,
    try_duration: Histogram,
    retries: Counter,
    budget_exhausted: Counter,
    invalid_requests: Counter,
    breaker_state: Gauge,
    breaker_rejections: Counter,
    breaker_transitions: Counter,
}

impl Handles {
    fn new(m: &UpstreamMetrics, labels: &UpstreamLabels) -> Self {
        let outcome = |outcome| {
            m.tries.get_or_create_owned(&OutcomeLabels {
                upstream: labels.upstream.clone(),
                outcome,
            })
        };
        Self {
            tries_success: outcome("success"),
            tries_failure: outcome("failure"),
            tries_dependency: outcome("dependency_failure"),
            try_duration: m.try_duration.get_or_create_owned(labels),
            retries: m.retries.get_or_create_owned(labels),
            budget_exhausted: m.budget_exhausted.get_or_create_owned(labels),
            invalid_requests: m.invalid_requests.get_or_create_owned(labels),
            breaker_state: m.breaker_state.get_or_create_owned(labels),
            breaker_rejections: m.breaker_rejections.get_or_create_owned(labels),
            breaker_transitions: m.breaker_transitions.get_or_create_owned(labels),
        }
    }
}

/// An endpoint set: replaced whole when the upstream's file changes, so a request
/// works on one snapshot from its first try to its last.
type Endpoints = Arc<Vec<Arc<Endpoint>>>;

/// One called service: its replicas and the policies guarding calls to it.
pub struct Upstream {
    name: String,
    handles: Handles,
    endpoints: RwLock<Endpoints>,
    /// The file the endpoints are read from, and its text when last read.
    source: Mutex<Option<(PathBuf, String)>>,
    client: Client<HttpConnector, Full<Bytes>>,
    policy: Mutex<Policy>,
    config: UpstreamConfig,
    metrics: UpstreamMetrics,
}

/// Decrements an endpoint's in-flight count when the try ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum TryOutcome {
    /// A response the caller should get; `failure` says whether it counts against the
    /// upstream, `retryable` whether another try may do better.
    Response {
        resp: Response<Incoming>,
        failure: bool,
        retryable: bool,
    },
    Error {
        error: UpstreamError,
        /// The request never left this process (connect failed), so any method may be
        /// retried.
        not_sent: bool,
    },
    /// The request could not be made, or hyper refused to write it, for what the
    /// caller put in it: the caller's fault, not the upstream's, and no other try would
    /// do better.
    Refused(UpstreamError),
}

impl Upstream {
    pub fn new(
        name: impl Into<String>,
        addrs: &[SocketAddr],
        config: UpstreamConfig,
        metrics: UpstreamMetrics,
    ) -> Arc<Self> {
        let name = name.into();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.per_try_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        let labels = UpstreamLabels {
            upstream: name.clone(),
        };
        let endpoints = addrs
            .iter()
            .map(|a| new_endpoint(&name, *a, &config, &metrics))
            .collect::<Vec<_>>();
        let handles = Handles::new(&metrics, &labels);
        handles.breaker_state.set(0);
        let now = Instant::now();
        Arc::new(Self {
            handles,
            policy: Mutex::new(Policy {
                breaker: Breaker::new(config.breaker, now),
                budget: RetryBudget::new(config.budget, now),
            }),
            name,
            endpoints: RwLock::new(Arc::new(endpoints)),
            source: Mutex::new(None),
            client,
            config,
            metrics,
        })
    }

    /// Follows `file` (when given): its list of addresses, one a line, replaces the
    /// endpoints whenever it changes ([`Upstream::run_health_checks`] re-reads it).
    pub fn follow(self: Arc<Self>, file: Option<&Path>) -> Arc<Self> {
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            *self.source.lock().unwrap() = Some((f.to_owned(), text));
        }
        self
    }

    /// The endpoints now.
    fn endpoints(&self) -> Endpoints {
        self.endpoints.read().unwrap().clone()
    }

    /// Re-reads the followed file; a changed list replaces the endpoint set, keeping
    /// the state of every endpoint that stays. A list that cannot be read or parsed, or
    /// is empty, leaves the set as it is: a caller with no endpoint at all helps no one.
    fn reload(&self) {
        let mut source = self.source.lock().unwrap();
        let Some((path, last)) = source.as_mut() else {
            return;
        };
        let text = match std::fs::read_to_string(&*path) {
            Ok(t) if t != *last => t,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(upstream = %self.name, file = %path.display(), error = %e, "cannot read the upstream file");
                return;
            }
        };
        *last = text.clone();
        let addrs = match parse_addrs(&text.replace('\n', ",")) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => {
                tracing::warn!(upstream = %self.name, file = %path.display(), "the upstream file lists no address; keeping the endpoints");
                return;
            }
            Err(e) => {
                tracing::warn!(upstream = %self.name, file = %path.display(), error = %e, "bad upstream file; keeping the endpoints");
                return;
            }
        };
        let old = self.endpoints();
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|a| {
                let authority = a.to_string();
                old.iter()
                    .find(|e| e.authority == authority)
                    .cloned()
                    .unwrap_or_else(|| new_endpoint(&self.name, *a, &self.config, &self.metrics))
            })
            .collect();
        for gone in old
            .iter()
            .filter(|e| !next.iter().any(|n| Arc::ptr_eq(n, e)))
        {
            self.metrics.endpoint_healthy.remove(&gone.labels);
            self.metrics.endpoint_ejected.remove(&gone.labels);
            self.metrics.ejections.remove(&gone.labels);
        }
        tracing::info!(upstream = %self.name, endpoints = next.len(), "endpoints changed");
        *self.endpoints.write().unwrap() = Arc::new(next);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a request, retrying as `retry` allows, and returns the upstream's response
    /// (which may be an error status) or why there is none.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Deadline,
        retry: RetryPolicy,
    ) -> Result<Response<Incoming>, UpstreamError> {
        // Checked before anything counts the request: a path the caller's input made
        // invalid touches neither the breaker, nor ejection, nor the retry budget.
        let path = self.valid_path(path_and_query)?;
        let eps = self.endpoints();
        self.policy.lock().unwrap().budget.deposit(Instant::now());
        let mut tried: Vec<usize> = Vec::new();
        let mut attempt = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline.0 {
                return Err(UpstreamError::Timeout(self.name.clone()));
            }
            let permit = {
                let mut policy = self.policy.lock().unwrap();
                let permit = policy.breaker.try_acquire(now);
                self.sync_breaker_metrics(&mut policy.breaker, now);
                permit
            };
            let Ok(permit) = permit else {
                self.handles.breaker_rejections.inc();
                return Err(UpstreamError::CircuitOpen(self.name.clone()));
            };
            let Some(idx) = pick(&eps, &tried) else {
                return Err(UpstreamError::NoEndpoints(self.name.clone()));
            };
            tried.push(idx);
            let outcome = self
                .try_once(&eps[idx], &method, &path, headers, body.clone(), deadline)
                .await;
            let (failure, retryable) = match &outcome {
                TryOutcome::Response {
                    failure, retryable, ..
                } => (*failure, *retryable && retry == RetryPolicy::Idempotent),
                TryOutcome::Error { not_sent, .. } => {
                    (true, *not_sent || retry == RetryPolicy::Idempotent)
                }
                TryOutcome::Refused(error) => {
                    self.policy.lock().unwrap().breaker.release(permit);
                    self.handles.invalid_requests.inc();
                    return Err(error.clone());
                }
            };
            self.record(&eps, idx, permit, !failure);
            let give_up = !failure
                || !retryable
                || attempt >= self.config.max_retries
                || !self.withdraw_retry();
            if give_up {
                return match outcome {
                    TryOutcome::Response { resp, .. } => Ok(resp),
                    TryOutcome::Error { error, .. } | TryOutcome::Refused(error) => Err(error),
                };
            }
            let wait = self
                .config
                .backoff
                .delay(attempt, &mut fastrand::Rng::new());
            let wake = deadline.min_after(Instant::now(), wait);
            tokio::time::sleep_until(wake).await;
            attempt += 1;
            self.handles.retries.inc();
        }
    }

    /// The path of a request as a URI part, or the caller's error when its input
    /// cannot make one (unencoded spaces, control bytes, non-ASCII).
    fn valid_path(&self, path_and_query: &str) -> Result<PathAndQuery, UpstreamError> {
        let parsed = if path_and_query.starts_with('/') {
            PathAndQuery::try_from(path_and_query).map_err(|e| e.to_string())
        } else {
            Err("the path does not start with /".to_owned())
        };
        parsed.map_err(|why| {
            self.handles.invalid_requests.inc();
            UpstreamError::InvalidRequest(self.name.clone(), why)
        })
    }

    /// GETs `path` and reads the whole body; for services calling each other.
    pub async fn get(
        &self,
        path: &str,
        deadline: Deadline,
    ) -> Result<(StatusCode, HeaderMap, Bytes), UpstreamError> {
        self.request(
            Method::GET,
            path,
            &HeaderMap::new(),
            Bytes::new(),
            deadline,
            RetryPolicy::Idempotent,
        )
        .await
    }

    /// POSTs `body` as JSON and reads the whole answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &HeaderMap,
        deadline: Deadline,
        retry: RetryPolicy,
    ) -> Result<(StatusCode, HeaderMap, Bytes), UpstreamError> {
        let mut headers = headers.clone();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = Bytes::from(serde_json::to_vec(body).expect("JSON values serialise"));
        self.request(Method::POST, path, &headers, body, deadline, retry)
            .await
    }

    /// Sends a request and reads the whole answer within the deadline.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Deadline,
        retry: RetryPolicy,
    ) -> Result<(StatusCode, HeaderMap, Bytes), UpstreamError> {
        let resp = self
            .send(method, path, headers, body, deadline, retry)
            .await?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout_at(deadline.0, body.collect())
            .await
            .map_err(|_| UpstreamError::Timeout(self.name.clone()))?
            .map_err(|e| UpstreamError::Transport(self.name.clone(), e.to_string()))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    fn withdraw_retry(&self) -> bool {
        let ok = self
            .policy
            .lock()
            .unwrap()
            .budget
            .try_withdraw(Instant::now());
        if !ok {
            self.handles.budget_exhausted.inc();
        }
        ok
    }

    fn record(
        &self,
        eps: &[Arc<Endpoint>],
        idx: usize,
        permit: crate::resilience::breaker::Permit,
        success: bool,
    ) {
        let now = Instant::now();
        {
            let mut policy = self.policy.lock().unwrap();
            policy.breaker.record(permit, success, now);
            self.sync_breaker_metrics(&mut policy.breaker, now);
        }
        let ejectable = eps.len() / 2;
        let ejected_now = eps
            .iter()
            .filter(|e| e.outlier.lock().unwrap().is_ejected(now))
            .count();
        let e = &eps[idx];
        let ejected = e.outlier.lock().unwrap().observe(
            success,
            &self.config.outlier,
            ejected_now < ejectable.max(1),
            now,
        );
        if ejected {
            tracing::warn!(upstream = %self.name, endpoint = %e.authority, "endpoint ejected after consecutive failures");
            self.metrics.ejections.get_or_create(&e.labels).inc();
            self.metrics
                .endpoint_ejected
                .get_or_create(&e.labels)
                .set(1);
        }
    }

    fn sync_breaker_metrics(&self, breaker: &mut Breaker, now: Instant) {
        let state = breaker.state(now);
        self.handles.breaker_state.set(state.as_gauge());
        let counter = &self.handles.breaker_transitions;
        let seen = counter.get();
        if breaker.transitions() > seen {
            counter.inc_by(breaker.transitions() - seen);
        }
    }

    async fn try_once(
        &self,
        e: &Endpoint,
        method: &Method,
        path: &PathAndQuery,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Deadline,
    ) -> TryOutcome {
        e.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&e.in_flight);
        let start = Instant::now();
        let try_deadline = deadline.min_after(start, self.config.per_try_timeout);
        let req = match self.build_request(e, method, path, headers, body, try_deadline) {
            Ok(r) => r,
            Err(error) => return TryOutcome::Refused(error),
        };
        let result = tokio::time::timeout_at(try_deadline, self.client.request(req)).await;
        self.handles
            .try_duration
            .observe(start.elapsed().as_secs_f64());
        let (outcome, label) = match result {
            Err(_) => (
                TryOutcome::Error {
                    error: UpstreamError::Timeout(self.name.clone()),
                    not_sent: false,
                },
                &self.handles.tries_failure,
            ),
            Ok(Err(err)) if refused_by_hyper(&err) => {
                let error = UpstreamError::InvalidRequest(self.name.clone(), root_cause(&err));
                return TryOutcome::Refused(error);
            }
            Ok(Err(err)) => {
                let not_sent = err.is_connect();
                let error = if not_sent {
                    UpstreamError::Connect(
                        self.name.clone(),
                        format!("{}: {}", e.authority, root_cause(&err)),
                    )
                } else {
                    UpstreamError::Transport(self.name.clone(), root_cause(&err))
                };
                (
                    TryOutcome::Error { error, not_sent },
                    &self.handles.tries_failure,
                )
            }
            Ok(Ok(resp)) => self.classify(resp),
        };
        label.inc();
        outcome
    }

    /// One try's request to endpoint `e`, with this hop's headers and what remains of
    /// the deadline. Whatever fails here came from the caller's input.
    fn build_request(
        &self,
        e: &Endpoint,
        method: &Method,
        path: &PathAndQuery,
        headers: &HeaderMap,
        body: Bytes,
        try_deadline: Instant,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let invalid = |why: String| UpstreamError::InvalidRequest(self.name.clone(), why);
        let uri = Uri::builder()
            .scheme("http")
            .authority(e.authority.as_str())
            .path_and_query(path.clone())
            .build()
            .map_err(|err| invalid(err.to_string()))?;
        let mut req = Request::builder().method(method.clone()).uri(uri);
        if let Some(h) = req.headers_mut() {
            for (k, v) in headers {
                if !is_hop_by_hop(k) && k != header::HOST {
                    h.append(k, v.clone());
                }
            }
            let remaining = Deadline(try_deadline).header_value(Instant::now());
            if let Ok(v) = HeaderValue::from_str(&remaining) {
                h.insert(deadline::HEADER, v);
            }
        }
        req.body(Full::new(body))
            .map_err(|err| invalid(err.to_string()))
    }

    /// What an answer means for the upstream: a failure or not, worth another try or
    /// not, and the `tries` series it counts in.
    fn classify(&self, resp: Response<Incoming>) -> (TryOutcome, &Counter) {
        let status = resp.status();
        let blames_dependency = resp.headers().contains_key(DEPENDENCY_FAILURE);
        // A 5xx the upstream attributes to its own dependency is a response the
        // upstream served correctly: counting it would open this breaker too and cut
        // off everything else the upstream still serves (a CDN's stale pages while its
        // origin is down). A 4xx is the upstream answering correctly about a request
        // the caller got wrong: never a failure, never retried.
        let failure = status.is_server_error() && !blames_dependency;
        let retryable = failure
            && matches!(
                status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            );
        let label = if blames_dependency {
            &self.handles.tries_dependency
        } else if failure {
            &self.handles.tries_failure
        } else {
            &self.handles.tries_success
        };
        let outcome = TryOutcome::Response {
            resp,
            failure,
            retryable,
        };
        (outcome, label)
    }

    /// Probes every endpoint's health path on the configured interval, and re-reads
    /// the followed file every [`RELOAD_INTERVAL`], until `shutdown`.
    pub async fn run_health_checks(self: Arc<Self>, shutdown: CancellationToken) {
        let follows = self.source.lock().unwrap().is_some();
        let health = self.config.health;
        if health.is_none() && !follows {
            return;
        }
        let every = |d| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let mut checks = every(health.map_or(Duration::from_secs(3600), |c| c.interval));
        let mut reloads = every(RELOAD_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = reloads.tick(), if follows => self.reload(),
                _ = checks.tick(), if health.is_some() => {
                    if let Some(config) = health {
                        self.check_health(config.timeout).await;
                    }
                }
            }
        }
    }

    /// One round of health checks of every endpoint.
    async fn check_health(&self, timeout: Duration) {
        {
            let eps = self.endpoints();
            let probes = eps.iter().map(|e| self.probe(e, timeout));
            let results = futures::future::join_all(probes).await;
            let now = Instant::now();
            for (e, passed) in eps.iter().zip(results) {
                let mut h = e.health.lock().unwrap();
                if h.observe(passed) {
                    tracing::warn!(upstream = %self.name, endpoint = %e.authority, healthy = h.is_healthy(), "endpoint health changed");
                }
                self.metrics
                    .endpoint_healthy
                    .get_or_create(&e.labels)
                    .set(h.is_healthy() as i64);
                self.metrics
                    .endpoint_ejected
                    .get_or_create(&e.labels)
                    .set(e.outlier.lock().unwrap().is_ejected(now) as i64);
            }
            let mut policy = self.policy.lock().unwrap();
            self.sync_breaker_metrics(&mut policy.breaker, now);
        }
    }

    async fn probe(&self, e: &Endpoint, timeout: Duration) -> bool {
        let uri = format!("http://{}{}", e.authority, self.config.health_path);
        let Ok(req) = Request::get(uri).body(Full::new(Bytes::new())) else {
            return false;
        };
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => resp.status().is_success(),
            _ => false,
        }
    }

    /// Whether each endpoint is in rotation (healthy and not ejected), by address.
    pub fn endpoint_states(&self) -> Vec<(String, bool)> {
        let now = Instant::now();
        self.endpoints()
            .iter()
            .map(|e| {
                (
                    e.authority.clone(),
                    e.health.lock().unwrap().is_healthy()
                        && !e.outlier.lock().unwrap().is_ejected(now),
                )
            })
            .collect()
    }
}

/// Power of two choices over the endpoints that are healthy and not ejected,
/// preferring ones not tried yet for this request. With none available it falls back
/// to every endpoint (Envoy's panic routing): a stale view must not turn into a
/// total outage.
fn pick(endpoints: &[Arc<Endpoint>], tried: &[usize]) -> Option<usize> {
    if endpoints.is_empty() {
        return None;
    }
    let now = Instant::now();
    let usable = |i: &usize| {
        let e = &endpoints[*i];
        e.health.lock().unwrap().is_healthy() && !e.outlier.lock().unwrap().is_ejected(now)
    };
    let all: Vec<usize> = (0..endpoints.len()).collect();
    let mut candidates: Vec<usize> = all
        .iter()
        .copied()
        .filter(|i| usable(i) && !tried.contains(i))
        .collect();
    if candidates.is_empty() {
        candidates = all.iter().copied().filter(usable).collect();
    }
    if candidates.is_empty() {
        candidates = all.iter().copied().filter(|i| !tried.contains(i)).collect();
    }
    if candidates.is_empty() {
        candidates = all;
    }
    if candidates.len() == 1 {
        return Some(candidates[0]);
    }
    let a = candidates[fastrand::usize(..candidates.len())];
    let mut b = candidates[fastrand::usize(..candidates.len() - 1)];
    if b == a {
        b = candidates[candidates.len() - 1];
    }
    let load = |i: usize| endpoints[i].in_flight.load(Ordering::Relaxed);
    Some(if load(b) < load(a) { b } else { a })
}

/// Whether hyper refused to write the request for what it holds (one of its "user"
/// errors, such as a method it cannot send): the request never reached the upstream.
fn refused_by_hyper(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return h.is_user();
        }
        cur = e.source();
    }
    false
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Connection-scoped headers (RFC 9110 section 7.6.1) that a proxy must not forward.
pub fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// A new endpoint at `addr`, in rotation until checks say otherwise.
fn new_endpoint(
    upstream: &str,
    addr: SocketAddr,
    config: &UpstreamConfig,
    metrics: &UpstreamMetrics,
) -> Arc<Endpoint> {
    let e = Endpoint {
        authority: addr.to_string(),
        labels: EndpointLabels {
            upstream: upstream.to_owned(),
            endpoint: addr.to_string(),
        },
        health: Mutex::new(HealthState::new(&config.health.unwrap_or_default())),
        outlier: Mutex::new(Outlier::default()),
        in_flight: AtomicUsize::new(0),
    };
    metrics.endpoint_healthy.get_or_create(&e.labels).set(1);
    metrics.endpoint_ejected.get_or_create(&e.labels).set(0);
    Arc::new(e)
}

/// Parses a comma-separated list of `host:port` addresses, as the supervisor passes them.
pub fn parse_addrs(list: &str) -> Result<Vec<SocketAddr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_start_matches("http://")
                .parse::<SocketAddr>()
                .map_err(|e| format!("bad address {s:?}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    /// An upstream over one real server that answers 200 on `/ok` and 404 elsewhere.
    async fn upstream() -> Arc<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/ok", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut registry = Registry::default();
        let config = UpstreamConfig {
            health: None,
            ..UpstreamConfig::default()
        };
        Upstream::new(
            "dep",
            &[addr],
            config,
            UpstreamMetrics::register(&mut registry),
        )
    }

    fn deadline() -> Deadline {
        Deadline(Instant::now() + Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_callers_invalid_path_is_its_own_error_and_counts_against_nothing() {
        let up = upstream().await;
        for path in [
            "/keys/x y",
            "/keys/\0",
            "/keys/a\tb",
            "no-slash",
            "/a\r\nb: c",
        ] {
            for _ in 0..20 {
                let err = up.get(path, deadline()).await.expect_err(path);
                assert!(matches!(err, UpstreamError::InvalidRequest(..)), "{err}");
                assert_eq!(err.status(), StatusCode::BAD_REQUEST);
                let resp = err.into_response();
                assert!(!resp.headers().contains_key(DEPENDENCY_FAILURE));
            }
        }
        let h = &up.handles;
        assert_eq!(h.invalid_requests.get(), 100);
        assert_eq!(
            h.tries_failure.get() + h.tries_success.get(),
            0,
            "nothing sent"
        );
        assert_eq!(h.retries.get(), 0);
        assert_eq!(up.policy.lock().unwrap().breaker.transitions(), 0);
        assert!(up.endpoint_states().iter().all(|(_, usable)| *usable));
        let (status, _, _) = up.get("/ok", deadline()).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_4xx_answer_is_neither_a_failure_nor_retried() {
        let up = upstream().await;
        for _ in 0..30 {
            let (status, _, _) = up.get("/missing", deadline()).await.unwrap();
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        let h = &up.handles;
        assert_eq!((h.tries_success.get(), h.tries_failure.get()), (30, 0));
        assert_eq!(h.retries.get(), 0);
        assert_eq!(up.policy.lock().unwrap().breaker.transitions(), 0);
        assert!(up.endpoint_states().iter().all(|(_, usable)| *usable));
    }
}
