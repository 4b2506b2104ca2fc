//! The HTTP server under the control API, with the limits `axum::serve` lacks: a
//! header-read timeout, a bound on each request's time (a body sent a byte a minute),
//! and a cap on open connections, beyond which a connection gets a 503 and is closed at
//! once. hyper runs the header-read timeout whenever it waits for a request's head, the
//! first or the next one on a keep-alive connection, so it closes half-sent requests and
//! idle connections alike. (The shop's `listener.rs` tells the two apart, because its
//! callers keep pooled connections idle for 30 s; the agent's clients do not need that,
//! and the shop shares no code with faultline.)
//!
//! The agent runs the topology's edge proxies and health probes in the same process,
//! so connections nobody authenticated must never take the file descriptors and memory
//! those need: held-open connections are bounded in number and in time.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The bounds on the server's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From a connection's start, or from the end of an answer on a keep-alive
    /// connection, to the end of the next request's headers.
    pub header_read: Duration,
    /// How long one request may take, body included.
    pub request: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// Connection counts, for the agent's metrics.
#[derive(Debug, Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub refused: AtomicU64,
}

/// The JSON body of a connection refused at the cap: written without reading anything.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 41\r\n\r\n{\"error\":\"too many connections to agent\"}";

/// Serves `app` on `listener` within `limits` until `shutdown`, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let conns = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before accept):
                    // wait a little rather than spin on an error that repeats.
                    tracing::warn!(error = %e, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = stream.try_write(REFUSED);
            continue;
        };
        let (app, stats, shutdown) = (app.clone(), stats.clone(), shutdown.clone());
        conns.spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            connection(stream, app, limits, shutdown).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    conns.close();
    conns.wait().await;
    Ok(())
}

async fn connection(stream: TcpStream, app: Router, limits: Limits, shutdown: CancellationToken) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            let answer = tokio::time::timeout(limits.request, app.oneshot(req.map(Body::new)));
            let resp = match answer.await {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(_) => too_slow(limits.request),
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    // Shutting down: an idle connection closes at once, a request in flight may finish
    // within its bound.
    let _ = tokio::time::timeout(limits.request, conn).await;
}

fn too_slow(limit: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        axum::Json(serde_json::json!({
            "error": format!("the request took longer than {}", humantime::format_duration(limit))
        })),
    )
        .into_response()
}

/// Raises this process's soft limit on open files to its hard limit, as Go's runtime
/// does, so the proxies of a large topology and the API's connections do not run out
/// at a default of 1024 while the system allows more.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
