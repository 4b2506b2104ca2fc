//! Fault proxies: one TCP proxy per edge of a topology (client service -> server
//! replica), through which that edge's traffic flows so that any edge can be faulted.
//!
//! Each connection is two pumps, one per direction, run by one task. A pump reads a
//! chunk, passes it through the toxics of its direction that apply to this connection,
//! and writes it on. The toxics live in a watch channel: a pump sees a change at its
//! next chunk, and a pump waiting inside a toxic (latency, bandwidth, a held connection)
//! wakes on the change, so adding or removing a toxic takes effect on live connections
//! at once and never waits for traffic.

pub mod http;
pub mod toxic;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::tcp::ReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};
use tokio_util::task::TaskTracker;

pub use toxic::{Direction, HttpMatch, Toxic, ToxicKind};

use self::http::{Framer, Segment};

/// Counters of one edge.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub bytes_upstream: AtomicU64,
    pub bytes_downstream: AtomicU64,
}

impl EdgeStats {
    fn bytes(&self, dir: Direction) -> &AtomicU64 {
        match dir {
            Direction::Upstream => &self.bytes_upstream,
            Direction::Downstream => &self.bytes_downstream,
        }
    }
}

/// The proxy of one edge.
pub struct EdgeProxy {
    /// `client->server-N`.
    pub name: String,
    pub client: String,
    pub server: String,
    pub listen: SocketAddr,
    /// The server replica's address; it changes if the replica is moved to another port.
    target: std::sync::RwLock<SocketAddr>,
    toxics: watch::Sender<Toxics>,
    pub stats: EdgeStats,
}

impl EdgeProxy {
    /// Binds `listen` (port 0 picks one) for traffic to `target`.
    pub async fn bind(
        client: &str,
        server: &str,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> io::Result<(Arc<Self>, TcpListener)> {
        let listener = TcpListener::bind(listen).await?;
        let proxy = Arc::new(Self {
            name: format!("{client}->{server}"),
            client: client.to_owned(),
            server: server.to_owned(),
            listen: listener.local_addr()?,
            target: std::sync::RwLock::new(target),
            toxics: watch::Sender::new(Arc::new(Vec::new())),
            stats: EdgeStats::default(),
        });
        Ok((proxy, listener))
    }

    pub fn target(&self) -> SocketAddr {
        *self.target.read().unwrap()
    }

    /// Points new connections at `addr`.
    pub fn set_target(&self, addr: SocketAddr) {
        *self.target.write().unwrap() = addr;
    }

    pub fn toxics(&self) -> Vec<Toxic> {
        self.toxics
            .borrow()
            .iter()
            .map(|t| t.toxic.clone())
            .collect()
    }

    /// Installs toxics, on live connections too.
    pub fn add(&self, toxics: &[Toxic]) {
        let added = Instant::now();
        self.toxics.send_modify(|list| {
            let mut v = list.as_ref().clone();
            v.extend(toxics.iter().map(|t| {
                Arc::new(Installed {
                    toxic: t.clone(),
                    added,
                })
            }));
            *list = Arc::new(v);
        });
    }

    /// Removes every toxic of fault `id`; returns how many there were.
    pub fn remove(&self, id: &str) -> usize {
        let mut removed = 0;
        self.toxics.send_if_modified(|list| {
            let before = list.len();
            let v: Vec<Arc<Installed>> = list.iter().filter(|t| t.id != id).cloned().collect();
            removed = before - v.len();
            if removed > 0 {
                *list = Arc::new(v);
            }
            removed > 0
        });
        removed
    }

    /// Accepts connections until `shutdown`; every connection ends with it.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        let mut next = 0u64;
        loop {
            let (client, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(edge = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            next += 1;
            let proxy = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { proxy.connection(client, next, shutdown).await });
        }
        tasks.close();
        tasks.wait().await;
    }

    async fn connection(
        self: Arc<Self>,
        mut client: TcpStream,
        n: u64,
        shutdown: CancellationToken,
    ) {
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        let _active = Decrement(&self.stats.active);
        let target = self.target();
        let mut server = match TcpStream::connect(target).await {
            Ok(s) => s,
            Err(_) => {
                // The replica is down: the client must see a failure, not a silent close.
                let _ = client.set_zero_linger();
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let end = {
            // Each pump reads through its own read half, whose reads clear the socket's
            // readiness on a short read (no read that fails with EAGAIN per chunk), and
            // writes through shared references (non-blocking writes): no lock around
            // writes, and the upstream pump can answer the client itself.
            let (mut client_r, client_w) = client.split();
            let (mut server_r, server_w) = server.split();
            let (client_w, server_w) = (client_w.as_ref(), server_w.as_ref());
            let up = pump(
                &self,
                Direction::Upstream,
                n,
                &mut client_r,
                server_w,
                Some(client_w),
            );
            let down = pump(
                &self,
                Direction::Downstream,
                n,
                &mut server_r,
                client_w,
                None,
            );
            tokio::pin!(up, down);
            let (mut up_end, mut down_end) = (None, None);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break End::Close,
                    e = &mut up, if up_end.is_none() => {
                        if e != End::Eof { break e; }
                        up_end = Some(e);
                    }
                    e = &mut down, if down_end.is_none() => {
                        if e != End::Eof { break e; }
                        down_end = Some(e);
                    }
                }
                if up_end.is_some() && down_end.is_some() {
                    break End::Eof;
                }
            }
        };
        if end == End::Reset {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
}

struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reader's side closed; the close was passed on.
    Eof,
    /// A toxic closed the connection.
    Close,
    /// A toxic resets the connection.
    Reset,
}

/// The toxics of one direction that apply to one connection, and since when.
/// A toxic as an edge holds it: with the moment it was installed.
#[derive(Debug)]
struct Installed {
    toxic: Toxic,
    added: Instant,
}

impl std::ops::Deref for Installed {
    type Target = Toxic;

    fn deref(&self) -> &Toxic {
        &self.toxic
    }
}

/// An edge's toxics, shared by every pump: a change is a new list, and a pump's refresh
/// copies pointers, never toxics, so thousands of toxics on an edge stay cheap.
type Toxics = Arc<Vec<Arc<Installed>>>;

/// The toxics that apply to one direction of one connection.
struct Active {
    list: Vec<Arc<Installed>>,
    /// When the connection opened: a toxic acts on it from then or from when it was
    /// installed, whichever is later.
    opened: Instant,
}

impl Active {
    fn refresh(&mut self, all: &[Arc<Installed>], dir: Direction, conn: u64) {
        self.list = all
            .iter()
            .filter(|t| t.direction == dir && t.applies_to(conn))
            .cloned()
            .collect();
    }

    fn find(&self, f: impl Fn(&ToxicKind) -> bool) -> Option<&Toxic> {
        self.list.iter().find(|t| f(&t.kind)).map(|t| &t.toxic)
    }

    fn since(&self, t: &Installed) -> Instant {
        t.added.max(self.opened)
    }

    /// The next instant a toxic must act without traffic (a reset or a timeout's close).
    fn deadline(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter_map(|t| match &t.kind {
                ToxicKind::Reset { after } => Some(later(self.since(t), *after)),
                ToxicKind::Timeout {
                    close_after: Some(d),
                } => Some(later(self.since(t), *d)),
                _ => None,
            })
            .min()
    }

    /// What the toxics say the connection must do now, if anything.
    fn verdict(&self, now: Instant) -> Option<End> {
        for t in &self.list {
            match &t.kind {
                ToxicKind::Reset { after } if now >= later(self.since(t), *after) => {
                    return Some(End::Reset);
                }
                ToxicKind::Timeout {
                    close_after: Some(d),
                } if now >= later(self.since(t), *d) => return Some(End::Close),
                _ => {}
            }
        }
        None
    }
}

const BUF: usize = 32 * 1024;

async fn pump(
    edge: &EdgeProxy,
    dir: Direction,
    conn: u64,
    reader: &mut ReadHalf<'_>,
    writer: &TcpStream,
    reply: Option<&TcpStream>,
) -> End {
    let mut rx = edge.toxics.subscribe();
    let mut active = Active {
        list: Vec::new(),
        opened: Instant::now(),
    };
    active.refresh(&rx.borrow_and_update(), dir, conn);
    // Requests are framed only once an HTTP toxic has applied to this connection: until
    // then its bytes go straight through.
    let mut framer: Option<Framer> = None;
    let mut discarding = false;
    let mut requests = 0u64;
    let mut passed = 0u64;
    let mut buf = vec![0u8; BUF];
    let mut changes = ReusableBoxFuture::new(next_change(edge.toxics.subscribe()));
    loop {
        if rx.has_changed().unwrap_or(false) {
            active.refresh(&rx.borrow_and_update(), dir, conn);
        }
        if let Some(end) = active.verdict(Instant::now()) {
            return end;
        }
        let deadline = active.deadline();
        let read = tokio::select! {
            // Data first: a ready read does not poll the change watcher, whose re-poll
            // takes a lock. Changes and deadlines are not starved by a busy stream:
            // both are checked before every chunk.
            biased;
            r = read_some(reader, &mut buf) => r,
            watcher = &mut changes => {
                // Re-armed once per change, not once per read: registering a watch
                // waiter on every read costs the proxy a lock per chunk.
                changes.set(next_change(watcher));
                if rx.has_changed().unwrap_or(false) {
                    active.refresh(&rx.borrow_and_update(), dir, conn);
                }
                continue;
            }
            _ = sleep_until_opt(deadline) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                if let Some(t) = active.find(|k| matches!(k, ToxicKind::SlowClose { .. }))
                    && let ToxicKind::SlowClose { delay } = t.kind
                {
                    tokio::time::sleep(delay).await;
                }
                shutdown_write(writer);
                return End::Eof;
            }
            Ok(n) => n,
        };
        let arrived = Instant::now();
        // A change made before these bytes were sent must apply to them, even when the
        // read won the race against the change notification.
        if rx.has_changed().unwrap_or(false) {
            active.refresh(&rx.borrow_and_update(), dir, conn);
        }
        let chunk = &buf[..n];
        if active.list.is_empty() && framer.is_none() {
            // The common case, no toxic: pass the bytes on as they are.
            if write_all(writer, chunk).await.is_err() {
                return End::Close;
            }
            edge.stats.bytes(dir).fetch_add(n as u64, Ordering::Relaxed);
            continue;
        }
        if active
            .find(|k| matches!(k, ToxicKind::Timeout { .. }))
            .is_some()
        {
            // A held connection: the bytes vanish.
            continue;
        }
        if framer.is_none()
            && dir == Direction::Upstream
            && active.find(ToxicKind::is_http).is_some()
            && http::starts_like_request(chunk)
        {
            // HTTP clients that do not pipeline start each request with a fresh write:
            // framing can begin at a chunk that starts like a request line.
            framer = Some(Framer::default());
        }
        // Each piece: the request line (method, path) when it starts a request, and bytes.
        let mut pieces: Vec<(Option<RequestLine>, Vec<u8>)> = Vec::new();
        match framer.as_mut() {
            Some(f) if !f.is_opaque() => {
                let mut segs = Vec::new();
                f.feed(chunk, &mut segs);
                for s in segs {
                    match s {
                        Segment::Head {
                            method,
                            path,
                            bytes,
                        } => pieces.push((Some((method, path)), bytes)),
                        Segment::Body(b) | Segment::Opaque(b) => pieces.push((None, b)),
                    }
                }
            }
            _ => pieces.push((None, chunk.to_vec())),
        }
        // What passes of this chunk is written in one go, as it came: cutting a request's
        // head from its body into two writes would change what the server sees.
        let mut out: Vec<u8> = Vec::with_capacity(n);
        for (head, bytes) in pieces {
            if let Some((method, path)) = head {
                requests += 1;
                discarding = false;
                match http_decision(&active, conn, requests, &method, &path) {
                    HttpDecision::Forward => {}
                    HttpDecision::Delay(d) => {
                        // What came before this request goes now; the request waits.
                        if let Some(end) = flush(
                            edge,
                            dir,
                            conn,
                            &mut rx,
                            &mut active,
                            writer,
                            &mut out,
                            arrived,
                            &mut passed,
                        )
                        .await
                        {
                            return end;
                        }
                        wait_toxic(&mut rx, &mut active, dir, conn, |_| Some(later(arrived, d)))
                            .await;
                    }
                    HttpDecision::Abort { status, fault } => {
                        discarding = true;
                        if let Some(end) = flush(
                            edge,
                            dir,
                            conn,
                            &mut rx,
                            &mut active,
                            writer,
                            &mut out,
                            arrived,
                            &mut passed,
                        )
                        .await
                        {
                            return end;
                        }
                        if let Some(reply) = reply {
                            let body = format!("{{\"error\":\"aborted by fault {fault}\"}}");
                            let resp = format!(
                                "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-faultline-fault: {fault}\r\n\r\n{body}",
                                reason(status),
                                body.len()
                            );
                            if write_all(reply, resp.as_bytes()).await.is_err() {
                                return End::Close;
                            }
                        }
                        continue;
                    }
                }
            } else if discarding {
                continue;
            }
            out.extend_from_slice(&bytes);
        }
        if let Some(end) = flush(
            edge,
            dir,
            conn,
            &mut rx,
            &mut active,
            writer,
            &mut out,
            arrived,
            &mut passed,
        )
        .await
        {
            return end;
        }
    }
}

type RequestLine = (String, String);

/// Forwards what `out` holds through the byte toxics, and empties it.
#[allow(clippy::too_many_arguments)]
async fn flush(
    edge: &EdgeProxy,
    dir: Direction,
    conn: u64,
    rx: &mut watch::Receiver<Toxics>,
    active: &mut Active,
    writer: &TcpStream,
    out: &mut Vec<u8>,
    arrived: Instant,
    passed: &mut u64,
) -> Option<End> {
    if out.is_empty() {
        return None;
    }
    let result = forward(edge, dir, conn, rx, active, writer, out, arrived, passed).await;
    out.clear();
    match result {
        Ok(end) => end,
        Err(_) => Some(End::Close),
    }
}

enum HttpDecision {
    Forward,
    Delay(Duration),
    Abort { status: u16, fault: String },
}

fn http_decision(
    active: &Active,
    conn: u64,
    request: u64,
    method: &str,
    path: &str,
) -> HttpDecision {
    for t in &active.list {
        let draw = || {
            let mut rng = fastrand::Rng::with_seed(
                t.seed ^ conn.rotate_left(32) ^ request.wrapping_mul(0x2545_F491_4F6C_DD1D),
            );
            rng.f64() * 100.0
        };
        match &t.kind {
            ToxicKind::HttpAbort {
                status,
                percent,
                matcher,
            } if matcher.matches(method, path) && draw() < *percent => {
                return HttpDecision::Abort {
                    status: *status,
                    fault: t.id.clone(),
                };
            }
            ToxicKind::HttpDelay {
                delay,
                percent,
                matcher,
            } if matcher.matches(method, path) && draw() < *percent => {
                return HttpDecision::Delay(*delay);
            }
            _ => {}
        }
    }
    HttpDecision::Forward
}

fn reason(status: u16) -> &'static str {
    http_reason(status).unwrap_or("Error")
}

fn http_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// Reads what is there. Through the read half's `poll_read`, a read shorter than the
/// buffer clears the socket's readiness, so the next read waits for epoll instead of
/// failing with EAGAIN (a third of the proxy's syscalls before, measured with strace).
async fn read_some(s: &mut ReadHalf<'_>, buf: &mut [u8]) -> io::Result<usize> {
    s.read(buf).await
}

/// Writes everything, trying first: a small write to a socket with room never waits.
async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match s.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Passes a close on: the write side of `s` is shut (the read side stays open).
fn shutdown_write(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a file descriptor this socket owns and keeps open.
    unsafe {
        libc::shutdown(s.as_raw_fd(), libc::SHUT_WR);
    }
}

/// Resolves (handing the receiver back) at the next change of the toxics.
async fn next_change(mut rx: watch::Receiver<Toxics>) -> watch::Receiver<Toxics> {
    if rx.changed().await.is_err() {
        // The edge is gone; the connection ends with it.
        std::future::pending::<()>().await;
    }
    rx
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits until the instant `until` computes from the connection's toxics; a change of
/// the toxics computes it again, and `None` (the toxic that held the data is gone) ends
/// the wait at once, so a removed toxic releases held data without waiting for traffic.
async fn wait_toxic(
    rx: &mut watch::Receiver<Toxics>,
    active: &mut Active,
    dir: Direction,
    conn: u64,
    until: impl Fn(&Active) -> Option<Instant>,
) {
    while let Some(at) = until(active) {
        if at <= Instant::now() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => return,
            r = rx.changed() => {
                if r.is_err() {
                    return;
                }
                active.refresh(&rx.borrow_and_update(), dir, conn);
            }
        }
    }
}

/// `at + d`, or a day after `at` where that would not fit in an `Instant`.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(86_400))
}

/// The delay every latency toxic on this connection adds to a chunk that arrived with
/// `passed` bytes before it: latencies add up, as stages of a chain do in Toxiproxy.
fn latency_of(active: &Active, conn: u64, passed: u64) -> Option<Duration> {
    let mut total: Option<i128> = None;
    for t in &active.list {
        let ToxicKind::Latency { latency, jitter } = t.kind else {
            continue;
        };
        let jitter_ns = i64::try_from(jitter.as_nanos()).unwrap_or(i64::MAX);
        let offset = if jitter_ns > 0 {
            let mut rng = fastrand::Rng::with_seed(t.seed ^ conn ^ passed);
            rng.i64(-jitter_ns..=jitter_ns)
        } else {
            0
        };
        *total.get_or_insert(0) += latency.as_nanos() as i128 + i128::from(offset);
    }
    total.map(|ns| Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX)))
}

/// Passes `bytes` through the byte toxics and writes them. `Some(end)` when a toxic ends
/// the connection.
#[allow(clippy::too_many_arguments)]
async fn forward(
    edge: &EdgeProxy,
    dir: Direction,
    conn: u64,
    rx: &mut watch::Receiver<Toxics>,
    active: &mut Active,
    writer: &TcpStream,
    bytes: &[u8],
    arrived: Instant,
    passed: &mut u64,
) -> io::Result<Option<End>> {
    // Latencies are recomputed on every change: a healed one releases its share of the
    // delay at once, and the one left still holds the chunk.
    let passed_before = *passed;
    wait_toxic(rx, active, dir, conn, |a| {
        latency_of(a, conn, passed_before).map(|d| later(arrived, d))
    })
    .await;
    let mut bytes = bytes;
    let mut end = None;
    // Two data limits on one edge: the smaller one ends the connection.
    let limit = active
        .list
        .iter()
        .filter_map(|t| match t.kind {
            ToxicKind::LimitData { bytes } => Some(bytes),
            _ => None,
        })
        .min();
    if let Some(limit) = limit {
        let left = usize::try_from(limit.saturating_sub(*passed)).unwrap_or(usize::MAX);
        if bytes.len() >= left {
            bytes = &bytes[..left];
            end = Some(End::Close);
        }
    }
    let slicer = active
        .find(|k| matches!(k, ToxicKind::Slicer { .. }))
        .map(|t| (t.kind.clone(), t.seed));
    let pieces: Vec<&[u8]> = match &slicer {
        Some((
            ToxicKind::Slicer {
                average_size,
                size_variation,
                ..
            },
            seed,
        )) => {
            let mut rng = fastrand::Rng::with_seed(*seed ^ conn ^ *passed);
            let mut out = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let var = *size_variation.min(&(average_size - 1));
                let size = (average_size - var + rng.usize(0..=2 * var)).clamp(1, rest.len());
                out.push(&rest[..size]);
                rest = &rest[size..];
            }
            out
        }
        _ => vec![bytes],
    };
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0
            && let Some((ToxicKind::Slicer { delay, .. }, _)) = &slicer
            && !delay.is_zero()
        {
            tokio::time::sleep(*delay).await;
        }
        write_all(writer, piece).await?;
        *passed += piece.len() as u64;
        edge.stats
            .bytes(dir)
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        // Two bandwidth limits on one edge: the narrower one holds.
        let slowest = active
            .list
            .iter()
            .filter_map(|t| match t.kind {
                ToxicKind::Bandwidth { rate } => Some((rate, t.id.clone())),
                _ => None,
            })
            .min();
        if let Some((rate, id)) = slowest {
            let wait = Duration::from_secs_f64(piece.len() as f64 / rate.max(1) as f64);
            let until = later(Instant::now(), wait);
            wait_toxic(rx, active, dir, conn, |a| {
                a.list.iter().any(|t| t.id == id).then_some(until)
            })
            .await;
        }
    }
    Ok(end)
}
