//! The process shell every shop service runs in: binds its address, adds `/health`,
//! `/metrics`, request metrics, deadline handling and JSON errors to the service's
//! router, and serves it through [`crate::listener`] (connection limits) until SIGTERM
//! or SIGINT, finishing in-flight requests first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadline::Deadline;
use crate::error::error;
use crate::metrics::{self, HttpLabels, HttpMetrics};
use crate::{listener, upstream};

/// What the shell needs from a service.
pub struct Service {
    pub name: &'static str,
    pub router: Router,
    pub registry: Registry,
    pub http: HttpMetrics,
    /// The most time a request may take here, whatever the caller's budget.
    pub max_request_time: Duration,
    /// How long connections may wait, and how many may be open.
    pub connections: listener::Limits,
}

#[derive(Clone)]
struct Track {
    http: HttpMetrics,
    max_request_time: Duration,
}

/// Binds `listen` and serves `service` until `shutdown` is cancelled.
pub async fn serve(
    listen: SocketAddr,
    service: Service,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(service = service.name, addr = %local, "listening");
    if service.connections.idle_timeout <= upstream::POOL_IDLE_TIMEOUT {
        tracing::warn!(
            idle_timeout = ?service.connections.idle_timeout,
            "the idle timeout is not above the shop clients' pool idle timeout ({:?}): callers may reuse a connection as it closes",
            upstream::POOL_IDLE_TIMEOUT
        );
    }
    serve_on(listener, service, shutdown).await
}

/// Like [`serve`], running `background` (health checks, sweepers) beside the server.
/// `background` gets a token that is cancelled when the server stops for any reason,
/// including failing to bind, so nothing outlives the server.
pub async fn serve_with<B, F>(
    listen: SocketAddr,
    service: Service,
    shutdown: CancellationToken,
    background: B,
) -> anyhow::Result<()>
where
    B: FnOnce(CancellationToken) -> F,
    F: std::future::Future<Output = ()>,
{
    let token = shutdown.child_token();
    let server = async {
        let result = serve(listen, service, token.clone()).await;
        token.cancel();
        result
    };
    let (result, ()) = tokio::join!(server, background(token.clone()));
    result
}

/// Serves `service` on a bound `listener` until `shutdown`, within its connection
/// limits; in-flight requests finish first.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut registry = service.registry;
    let connection_metrics = listener::ConnectionMetrics::register(&mut registry);
    let registry: Arc<Registry> = Arc::new(registry);
    let track = Track {
        http: service.http,
        max_request_time: service.max_request_time,
    };
    let capacity = Capacity::new(service.connections.capacity_rps);
    let app = service
        .router
        .layer(middleware::from_fn_with_state(capacity, shed))
        .layer(middleware::from_fn_with_state(track, track_request))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(
                |State(r): State<Arc<Registry>>, headers: axum::http::HeaderMap| async move {
                    metrics::render(&r, &headers)
                },
            )
            .with_state(registry),
        )
        .layer(middleware::from_fn(json_errors));
    listener::run(
        listener,
        app,
        service.connections,
        connection_metrics,
        shutdown,
    )
    .await;
    Ok(())
}

/// A replica's bounded capacity (`SHOP_CAPACITY_RPS`): a token bucket of one second's
/// requests; `None` when unbounded.
#[derive(Clone)]
struct Capacity(Option<(f64, Arc<std::sync::Mutex<crate::resilience::TokenBucket>>)>);

impl Capacity {
    fn new(rps: f64) -> Self {
        Self((rps > 0.0).then(|| {
            let bucket = crate::resilience::TokenBucket::new(rps, rps, tokio::time::Instant::now());
            (rps, Arc::new(std::sync::Mutex::new(bucket)))
        }))
    }
}

/// Answers 503 at once past the replica's capacity, as a saturated server sheds load.
async fn shed(State(capacity): State<Capacity>, req: Request, next: Next) -> Response {
    if let Some((rps, bucket)) = &capacity.0 {
        let taken = bucket.lock().unwrap().try_take(tokio::time::Instant::now());
        if taken.is_err() {
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("over capacity: this replica serves at most {rps} requests a second"),
            );
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            return resp;
        }
    }
    next.run(req).await
}

/// Records request metrics and enforces the request's deadline.
async fn track_request(State(track): State<Track>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().as_str().to_owned();
    let deadline = Deadline::from_headers(req.headers(), track.max_request_time, start);
    req.extensions_mut().insert(deadline);
    // If the caller hangs up, the server drops this future: the guard then records the
    // request as 499 (nginx's "client closed request"), so abandoned work shows.
    let mut guard = Recorded {
        track: &track,
        route,
        method,
        start,
        status: None,
    };
    let resp = match tokio::time::timeout_at(deadline.0, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "deadline exceeded"),
    };
    guard.status = Some(resp.status().as_u16());
    resp
}

/// The most of a non-JSON error body kept as the JSON error's message.
const MAX_ERROR_TEXT: usize = 4096;

/// Gives every error answer the shop's JSON shape. Handlers answer with
/// [`crate::error::error`], but some answers are made outside them: axum's extractor
/// rejections (plain text: a query, path or body that does not parse, a wrong
/// Content-Type) and the router's 405 (empty). Their status and headers (`Allow`) stay;
/// the text, or the status's reason when there is none, becomes the message.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_error = status.is_client_error() || status.is_server_error();
    if !is_error || is_json(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty());
    // An empty answer says only its status (axum adds a 405's `Allow` afterwards).
    let message = text.unwrap_or_else(|| {
        let reason = status.canonical_reason().unwrap_or("error");
        reason.to_ascii_lowercase()
    });
    let (json_parts, json_body) = error(status, message).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            let t = t.trim();
            t.eq_ignore_ascii_case("application/json") || t.ends_with("+json")
        })
}

/// Records one request's metrics when dropped, whether it was answered or abandoned.
struct Recorded<'a> {
    track: &'a Track,
    route: String,
    method: String,
    start: Instant,
    status: Option<u16>,
}

/// The status recorded for a request whose caller went away before the answer.
pub const CLIENT_CLOSED: u16 = 499;

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        let labels = HttpLabels {
            route: std::mem::take(&mut self.route),
            method: std::mem::take(&mut self.method),
            status: self.status.unwrap_or(CLIENT_CLOSED),
        };
        self.track
            .http
            .observe(&labels, self.start.elapsed().as_secs_f64());
    }
}

/// Raises the process's soft limit on open files to its hard limit (at most 2^20):
/// every connection is a file descriptor, and the common soft limit of 1024 is below the
/// default connection cap. Failing is not fatal: the server then pauses on EMFILE.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the `rlimit` passed, which outlives them.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let target = limit.rlim_max.min(1 << 20);
        if limit.rlim_cur >= target {
            return;
        }
        limit.rlim_cur = target;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
    };
    if !raised {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot raise the open files limit");
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A cancellation token that fires on SIGTERM or SIGINT.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        t.cancel();
    });
    token
}

/// 404 in the shop's JSON error shape.
pub async fn not_found() -> impl IntoResponse {
    error(StatusCode::NOT_FOUND, "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn rejections_and_405_are_json_errors_and_json_passes_untouched() {
        #[derive(serde::Deserialize)]
        struct Q {
            n: u32,
        }
        let app =
            Router::new()
                .route(
                    "/q",
                    get(
                        |axum::extract::Query(q): axum::extract::Query<Q>| async move {
                            q.n.to_string()
                        },
                    ),
                )
                .route(
                    "/own",
                    get(|| async { error(StatusCode::CONFLICT, "mine") }),
                )
                .layer(middleware::from_fn(json_errors));
        for (method, uri, status, message) in [
            ("GET", "/q?n=x", 400, "Failed to deserialize query string"),
            ("POST", "/q", 405, "method not allowed"),
            ("GET", "/own", 409, "mine"),
        ] {
            let req = Request::builder().method(method).uri(uri);
            let resp = app
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), status, "{method} {uri}");
            assert!(is_json(resp.headers()), "{method} {uri}");
            if status == 405 {
                assert_eq!(resp.headers()[header::ALLOW], "GET,HEAD");
            }
            let body = axum::body::to_bytes(resp.into_body(), 10_000)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let got = v["error"].as_str().unwrap();
            assert!(got.starts_with(message), "{method} {uri}: {got}");
        }
    }

    #[tokio::test]
    async fn handlers_see_the_callers_deadline() {
        let mut registry = crate::metrics::new_registry();
        let http = HttpMetrics::register(&mut registry);
        let router = Router::new().route(
            "/x",
            get(|d: Deadline| async move { d.remaining(Instant::now()).as_millis().to_string() }),
        );
        let track = Track {
            http,
            max_request_time: Duration::from_secs(10),
        };
        let app = router.layer(middleware::from_fn_with_state(track, track_request));
        let resp = app
            .oneshot(
                Request::get("/x")
                    .header("x-timeout-ms", "300")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 100).await.unwrap();
        let ms: u64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
        assert!((250..=300).contains(&ms), "remaining {ms} ms");
    }
}
