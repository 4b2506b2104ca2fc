//! The accept loop under every shop server, with the limits that keep one client from
//! holding the server: a cap on open connections, a header-read timeout and an idle
//! timeout per connection. Graceful shutdown lets in-flight requests finish.
//!
//! hyper's own `header_read_timeout` runs from the moment it starts waiting for a
//! request's head, so on a keep-alive connection it is an idle timeout as well, with
//! one value for both. Here the two are told apart: a connection waits for its first
//! head, or for the rest of a head once its first byte came, at most the header-read
//! timeout (a half-sent head is closed); with no request in flight and nothing received
//! since the last answer it may stay the longer idle timeout, long enough for callers'
//! connection pools to close it first. A request in flight is never timed out here:
//! its deadline bounds it, and long polls stay open as long as they wait.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a connection may wait and how many may be open at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a request's head: from the connection's start, or from the
    /// first byte of a later request.
    pub header_read_timeout: Duration,
    /// Longest wait, with no request in flight, from the end of one answer to the
    /// first byte of the next request.
    pub idle_timeout: Duration,
    /// Open connections at most; one more is accepted and closed at once.
    pub max_connections: usize,
    /// Requests a second the service serves at most (0: no bound); more are answered
    /// 503 at once. Enforced by `server`, before the service's routes.
    pub capacity_rps: f64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `shop_http_connections_*`: what the limits do.
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: Gauge,
    refused: Counter,
    closed: Family<ReasonLabels, Counter>,
}

impl ConnectionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            open: Gauge::default(),
            refused: Counter::default(),
            closed: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("http_connections");
        r.register("open", "HTTP connections open now", m.open.clone());
        r.register(
            "refused",
            "Connections closed as soon as accepted because the connection limit was reached",
            m.refused.clone(),
        );
        r.register(
            "timed_out",
            "Connections closed by a limit, by reason (header_read, idle)",
            m.closed.clone(),
        );
        m
    }

    fn timed_out(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown`, then stops accepting
/// and waits for every connection to finish its in-flight requests.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: ConnectionMetrics,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Closing at once tells the client now, instead of leaving it queued in the
            // backlog behind connections that may be held for a long time.
            metrics.refused.inc();
            drop(stream);
            continue;
        };
        let slot = Slot::new(permit, metrics.open.clone());
        let (app, metrics, shutdown) = (app.clone(), metrics.clone(), shutdown.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, app, limits, &metrics, shutdown).await;
            drop(slot);
        });
    }
    // The listener closes here: the kernel refuses new connections while the open ones
    // finish what they are doing.
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    // Most likely out of file descriptors (EMFILE): open connections will close and
    // free some; pausing keeps the loop from spinning on the error meanwhile.
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One open connection's place under the limit, given back when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: Gauge) -> Self {
        open.inc();
        Self {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Drives one connection until it ends, a limit closes it, or `shutdown` drains it.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    metrics: &ConnectionMetrics,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // What `into_make_service_with_connect_info` gave handlers: the gateway limits
        // anonymous clients by their address.
        req.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::begin(tracked.clone());
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap_or_else(|e| match e {});
            Ok::<_, Infallible>(resp.map(|inner| {
                Body::new(Tracked {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let mut builder = http1::Builder::new();
    // hyper's timer bounds the whole wait from one answer to the next head; the watcher
    // below splits that wait into its idle and header-read parts.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            expired = activity.expired(&limits), if !draining => match expired {
                // Nothing is in flight: the connection closes at once, and a request
                // whose first bytes raced the close is one the client may resend.
                Expired::Idle => {
                    metrics.timed_out("idle");
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                // A half-sent head: no answer is owed, the connection just closes.
                Expired::HeaderRead => {
                    metrics.timed_out("header_read");
                    return;
                }
            },
        }
    }
}

/// Where a connection is between requests, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's head since this instant (the connection opened, or the
    /// first byte of the next request came).
    Head(Instant),
    /// Nothing in flight and nothing received since the last answer ended, then.
    Idle(Instant),
    /// This many requests in flight: no timeout applies.
    Busy(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    HeaderRead,
    Idle,
}

impl Phase {
    fn read(self, now: Instant) -> Self {
        match self {
            Phase::Idle(_) => Phase::Head(now),
            other => other,
        }
    }

    fn begin(self) -> Self {
        match self {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        }
    }

    fn end(self, now: Instant) -> Self {
        match self {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(now),
        }
    }

    /// When this phase runs out, and which limit that is.
    fn expiry(self, limits: &Limits) -> Option<(Instant, Expired)> {
        match self {
            Phase::Head(t) => Some((t + limits.header_read_timeout, Expired::HeaderRead)),
            Phase::Idle(t) => Some((t + limits.idle_timeout, Expired::Idle)),
            Phase::Busy(_) => None,
        }
    }
}

/// A connection's [`Phase`], moved on by its reads and its requests, and watched.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::Head(now)),
            changed: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap();
        let next = f(*phase);
        if next != *phase {
            *phase = next;
            // One watcher per connection: a stored permit wakes it even if it is not
            // waiting at this moment.
            self.changed.notify_one();
        }
    }

    /// Resolves when the current phase outlasts its limit. The phase is read again
    /// after every wait, so a request that began as the time ran out is not cut.
    async fn expired(&self, limits: &Limits) -> Expired {
        loop {
            let expiry = self.phase.lock().unwrap().expiry(limits);
            match expiry {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.changed.notified() => {}
                },
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request in flight on a connection, from its head until its answer's body is done
/// or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.update(Phase::begin);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|p| p.end(Instant::now()));
    }
}

/// An answer's body that keeps its request counted as in flight until hyper is done
/// with it (a proxied body may stream for a while after the head).
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's stream, telling its [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.update(|p| p.read(Instant::now()));
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1,
        capacity_rps: 0.0,
    };

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_timed_by_its_phase() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let fresh = Phase::Head(t0);
        assert_eq!(
            fresh.expiry(&LIMITS),
            Some((t0 + s(10), Expired::HeaderRead)),
            "a new connection must send a head in time"
        );
        assert_eq!(
            fresh.read(t0 + s(5)),
            fresh,
            "bytes of a head do not extend it"
        );
        let busy = fresh.begin();
        assert_eq!(
            busy.expiry(&LIMITS),
            None,
            "a request in flight is never idle"
        );
        assert_eq!(busy.read(t0 + s(100)), busy, "nor is its body's upload");
        let idle = busy.end(t0 + s(100));
        assert_eq!(idle.expiry(&LIMITS), Some((t0 + s(160), Expired::Idle)));
        let next = idle.read(t0 + s(150));
        assert_eq!(
            next.expiry(&LIMITS),
            Some((t0 + s(160), Expired::HeaderRead))
        );
        assert_eq!(next.begin().begin().end(t0 + s(200)), Phase::Busy(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_fires_on_the_phase_it_is_in_when_time_runs_out() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let in_flight = InFlight::begin(activity.clone());
        let watcher = tokio::spawn({
            let a = activity.clone();
            async move { (a.expired(&LIMITS).await, Instant::now()) }
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!watcher.is_finished(), "nothing times out while busy");
        let ended = Instant::now();
        drop(in_flight);
        let (why, at) = watcher.await.unwrap();
        assert_eq!((why, at - ended), (Expired::Idle, LIMITS.idle_timeout));
    }
}
