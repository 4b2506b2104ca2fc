//! One direction of one proxied connection: read a chunk, pass it through the toxics of
//! its direction that apply to this connection, write it on. The toxics live in a watch
//! channel: a pump sees a change at its next chunk, and a pump waiting inside a toxic
//! (latency, bandwidth, a held connection) wakes on the change, so adding or removing
//! a toxic takes effect on live connections at once and never waits for traffic.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::ReadHalf;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::ReusableBoxFuture;

use super::http::{self, Framer, Segment};
use super::{Direction, EdgeProxy, End, Installed, Toxic, ToxicKind, Toxics};

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

/// A request's method and path.
type RequestLine = (String, String);

/// One direction of one connection, and what it has seen of its toxics and its bytes.
struct Pump<'a> {
    edge: &'a EdgeProxy,
    dir: Direction,
    conn: u64,
    writer: &'a TcpStream,
    /// Where an aborted HTTP request is answered (the client; upstream only).
    reply: Option<&'a TcpStream>,
    rx: watch::Receiver<Toxics>,
    active: Active,
    /// Requests are framed only once an HTTP toxic has applied to this connection:
    /// until then its bytes go straight through.
    framer: Option<Framer>,
    /// The bytes of an aborted request are dropped until the next request starts.
    discarding: bool,
    requests: u64,
    passed: u64,
}

/// What a request's head asks of the chunk it is in.
enum Request {
    /// Its bytes go on.
    Pass,
    /// It was answered here: its bytes go nowhere.
    Skip,
    End(End),
}

/// Pumps `reader` into `writer` through the toxics of `dir` until the connection ends.
pub(super) async fn pump(
    edge: &EdgeProxy,
    dir: Direction,
    conn: u64,
    reader: &mut ReadHalf<'_>,
    writer: &TcpStream,
    reply: Option<&TcpStream>,
) -> End {
    let mut p = Pump {
        edge,
        dir,
        conn,
        writer,
        reply,
        rx: edge.toxics.subscribe(),
        active: Active {
            list: Vec::new(),
            opened: Instant::now(),
        },
        framer: None,
        discarding: false,
        requests: 0,
        passed: 0,
    };
    p.active.refresh(&p.rx.borrow_and_update(), dir, conn);
    let mut buf = vec![0u8; BUF];
    let mut changes = ReusableBoxFuture::new(next_change(edge.toxics.subscribe()));
    loop {
        p.refresh_if_changed();
        if let Some(end) = p.active.verdict(Instant::now()) {
            return end;
        }
        let deadline = p.active.deadline();
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
                p.refresh_if_changed();
                continue;
            }
            _ = sleep_until_opt(deadline) => continue,
        };
        match read {
            Ok(0) | Err(_) => return p.eof().await,
            Ok(n) => {
                if let Some(end) = p.chunk(&buf[..n]).await {
                    return end;
                }
            }
        }
    }
}

impl Pump<'_> {
    fn refresh_if_changed(&mut self) {
        if self.rx.has_changed().unwrap_or(false) {
            self.active
                .refresh(&self.rx.borrow_and_update(), self.dir, self.conn);
        }
    }

    /// The reader closed: pass the close on, after a slow close's delay.
    async fn eof(&self) -> End {
        if let Some(t) = self
            .active
            .find(|k| matches!(k, ToxicKind::SlowClose { .. }))
            && let ToxicKind::SlowClose { delay } = t.kind
        {
            tokio::time::sleep(delay).await;
        }
        shutdown_write(self.writer);
        End::Eof
    }

    /// Passes one chunk on through the toxics; `Some` when the connection ends.
    async fn chunk(&mut self, chunk: &[u8]) -> Option<End> {
        let arrived = Instant::now();
        // A change made before these bytes were sent must apply to them, even when the
        // read won the race against the change notification.
        self.refresh_if_changed();
        // Requests counted for the autoscaler: HTTP clients that do not pipeline start
        // each request with a write of its own, which starts like a request line.
        if self.dir == Direction::Upstream && http::starts_like_request(chunk) {
            self.edge.stats.requests.fetch_add(1, Ordering::Relaxed);
        }
        if self.active.list.is_empty() && self.framer.is_none() {
            // The common case, no toxic: pass the bytes on as they are.
            if write_all(self.writer, chunk).await.is_err() {
                return Some(End::Close);
            }
            self.edge
                .stats
                .bytes(self.dir)
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            return None;
        }
        if self
            .active
            .find(|k| matches!(k, ToxicKind::Timeout { .. }))
            .is_some()
        {
            // A held connection: the bytes vanish.
            return None;
        }
        // What passes of this chunk is written in one go, as it came: cutting a request's
        // head from its body into two writes would change what the server sees.
        let mut out: Vec<u8> = Vec::with_capacity(chunk.len());
        for (head, bytes) in self.pieces(chunk) {
            if let Some((method, path)) = head {
                match self.request(&method, &path, &mut out, arrived).await {
                    Request::Pass => {}
                    Request::Skip => continue,
                    Request::End(end) => return Some(end),
                }
            } else if self.discarding {
                continue;
            }
            out.extend_from_slice(&bytes);
        }
        self.flush(&mut out, arrived).await
    }

    /// The chunk cut into pieces: each with the request line when it starts a request.
    fn pieces(&mut self, chunk: &[u8]) -> Vec<(Option<RequestLine>, Vec<u8>)> {
        if self.framer.is_none()
            && self.dir == Direction::Upstream
            && self.active.find(ToxicKind::is_http).is_some()
            && http::starts_like_request(chunk)
        {
            // HTTP clients that do not pipeline start each request with a fresh write:
            // framing can begin at a chunk that starts like a request line.
            self.framer = Some(Framer::default());
        }
        match self.framer.as_mut() {
            Some(f) if !f.is_opaque() => {
                let mut segs = Vec::new();
                f.feed(chunk, &mut segs);
                segs.into_iter()
                    .map(|s| match s {
                        Segment::Head {
                            method,
                            path,
                            bytes,
                        } => (Some((method, path)), bytes),
                        Segment::Body(b) | Segment::Opaque(b) => (None, b),
                    })
                    .collect()
            }
            _ => vec![(None, chunk.to_vec())],
        }
    }

    /// What the HTTP toxics do with a request starting in this chunk; what came before
    /// it in `out` goes first when it is delayed or answered here.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        out: &mut Vec<u8>,
        arrived: Instant,
    ) -> Request {
        self.requests += 1;
        self.discarding = false;
        match http_decision(&self.active, self.conn, self.requests, method, path) {
            HttpDecision::Forward => Request::Pass,
            HttpDecision::Delay(d) => {
                if let Some(end) = self.flush(out, arrived).await {
                    return Request::End(end);
                }
                let (dir, conn) = (self.dir, self.conn);
                wait_toxic(&mut self.rx, &mut self.active, dir, conn, |_| {
                    Some(later(arrived, d))
                })
                .await;
                Request::Pass
            }
            HttpDecision::Abort { status, fault } => {
                self.discarding = true;
                if let Some(end) = self.flush(out, arrived).await {
                    return Request::End(end);
                }
                if let Some(reply) = self.reply {
                    let body = format!("{{\"error\":\"aborted by fault {fault}\"}}");
                    let resp = format!(
                        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-faultline-fault: {fault}\r\n\r\n{body}",
                        reason(status),
                        body.len()
                    );
                    if write_all(reply, resp.as_bytes()).await.is_err() {
                        return Request::End(End::Close);
                    }
                }
                Request::Skip
            }
        }
    }

    /// Forwards what `out` holds through the byte toxics, and empties it.
    async fn flush(&mut self, out: &mut Vec<u8>, arrived: Instant) -> Option<End> {
        if out.is_empty() {
            return None;
        }
        let result = self.forward(out, arrived).await;
        out.clear();
        result.unwrap_or(Some(End::Close))
    }

    /// Passes `bytes` through the byte toxics and writes them. `Some(end)` when a toxic
    /// ends the connection.
    async fn forward(&mut self, bytes: &[u8], arrived: Instant) -> io::Result<Option<End>> {
        let (dir, conn, passed) = (self.dir, self.conn, self.passed);
        // Latencies are recomputed on every change: a healed one releases its share of
        // the delay at once, and the one left still holds the chunk.
        wait_toxic(&mut self.rx, &mut self.active, dir, conn, |a| {
            latency_of(a, conn, passed).map(|d| later(arrived, d))
        })
        .await;
        let (bytes, end) = self.limited(bytes);
        let slicer = self
            .active
            .find(|k| matches!(k, ToxicKind::Slicer { .. }))
            .cloned();
        let pieces = match &slicer {
            Some(t) => slices(t, conn ^ passed, bytes),
            None => vec![bytes],
        };
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0
                && let Some(Toxic {
                    kind: ToxicKind::Slicer { delay, .. },
                    ..
                }) = &slicer
                && !delay.is_zero()
            {
                tokio::time::sleep(*delay).await;
            }
            let mut rest: &[u8] = piece;
            while !rest.is_empty() {
                let n = self.throttle(rest.len()).await;
                let (now, next) = rest.split_at(n);
                write_all(self.writer, now).await?;
                self.passed += now.len() as u64;
                self.edge
                    .stats
                    .bytes(dir)
                    .fetch_add(now.len() as u64, Ordering::Relaxed);
                rest = next;
            }
        }
        Ok(end)
    }

    /// `bytes` cut at the data limit, with the end it brings; two data limits on one
    /// edge: the smaller one holds.
    fn limited<'b>(&self, bytes: &'b [u8]) -> (&'b [u8], Option<End>) {
        let limit = self
            .active
            .list
            .iter()
            .filter_map(|t| match t.kind {
                ToxicKind::LimitData { bytes } => Some(bytes),
                _ => None,
            })
            .min();
        if let Some(limit) = limit {
            let left = usize::try_from(limit.saturating_sub(self.passed)).unwrap_or(usize::MAX);
            if bytes.len() >= left {
                return (&bytes[..left], Some(End::Close));
            }
        }
        (bytes, None)
    }

    /// How many of the next `n` bytes may go now: all of them without a bandwidth
    /// toxic. With one (two on one edge: the narrower holds), at most a tenth of a
    /// second's worth, after waiting the time they take, as Toxiproxy paces: data never
    /// runs ahead of the rate, and a small answer is as late as its size says. A toxic
    /// healed during the wait releases it at once.
    async fn throttle(&mut self, n: usize) -> usize {
        let slowest = self
            .active
            .list
            .iter()
            .filter_map(|t| match t.kind {
                ToxicKind::Bandwidth { rate } => Some((rate, t.id.clone())),
                _ => None,
            })
            .min();
        let Some((rate, id)) = slowest else {
            return n;
        };
        let rate = rate.max(1);
        let n = n.min(usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1));
        let wait = Duration::from_secs_f64(n as f64 / rate as f64);
        let until = later(Instant::now(), wait);
        let (dir, conn) = (self.dir, self.conn);
        wait_toxic(&mut self.rx, &mut self.active, dir, conn, |a| {
            a.list.iter().any(|t| t.id == id).then_some(until)
        })
        .await;
        n
    }
}

/// `bytes` cut as the slicer `t` says, its draws seeded with `salt`.
fn slices<'b>(t: &Toxic, salt: u64, bytes: &'b [u8]) -> Vec<&'b [u8]> {
    let ToxicKind::Slicer {
        average_size,
        size_variation,
        ..
    } = t.kind
    else {
        return vec![bytes];
    };
    let mut rng = fastrand::Rng::with_seed(t.seed ^ salt);
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let var = size_variation.min(average_size - 1);
        let size = (average_size - var + rng.usize(0..=2 * var)).clamp(1, rest.len());
        out.push(&rest[..size]);
        rest = &rest[size..];
    }
    out
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
