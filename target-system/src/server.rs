//! The process shell every shop service runs in: binds its address, adds `/health`,
//! `/metrics`, request metrics and deadline handling to the service's router, and serves
//! until SIGTERM or SIGINT, finishing in-flight requests first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadline::Deadline;
use crate::error::error;
use crate::metrics::{self, HttpLabels, HttpMetrics};

/// What the shell needs from a service.
pub struct Service {
    pub name: &'static str,
    pub router: Router,
    pub registry: Registry,
    pub http: HttpMetrics,
    /// The most time a request may take here, whatever the caller's budget.
    pub max_request_time: Duration,
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

pub async fn serve_on(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry: Arc<Registry> = Arc::new(service.registry);
    let track = Track {
        http: service.http,
        max_request_time: service.max_request_time,
    };
    let app = service
        .router
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
        );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
    .context("server failed")
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
