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
mod pump;
pub mod runtime;
pub mod toxic;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use toxic::{Direction, HttpMatch, Toxic, ToxicKind};

/// How long a proxy waits for its upstream to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of one edge.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub bytes_upstream: AtomicU64,
    pub bytes_downstream: AtomicU64,
    /// HTTP requests seen going upstream (writes that start like a request line), for
    /// the autoscaler: a pipelined request sharing a write with another is not seen.
    pub requests: AtomicU64,
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
    /// Where connections go, `host:port`: the server replica's address (it changes if
    /// the replica is moved to another port), or an outside address, resolved at each
    /// connect as Toxiproxy does.
    target: std::sync::RwLock<Arc<str>>,
    toxics: watch::Sender<Toxics>,
    pub stats: EdgeStats,
}

impl EdgeProxy {
    /// Binds `listen` (port 0 picks one) for traffic to `target`, as edge
    /// `client->server`.
    pub async fn bind(
        client: &str,
        server: &str,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> io::Result<(Arc<Self>, TcpListener)> {
        let listener = TcpListener::bind(listen).await?;
        let proxy = Self::new(
            format!("{client}->{server}"),
            client,
            server,
            listener.local_addr()?,
            &target.to_string(),
        );
        Ok((proxy, listener))
    }

    /// A proxy named `name` for traffic to `target` (`host:port`), to be run on a
    /// listener bound to `listen`.
    pub fn new(
        name: String,
        client: &str,
        server: &str,
        listen: SocketAddr,
        target: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            client: client.to_owned(),
            server: server.to_owned(),
            listen,
            target: std::sync::RwLock::new(Arc::from(target)),
            toxics: watch::Sender::new(Arc::new(Vec::new())),
            stats: EdgeStats::default(),
        })
    }

    /// The same proxy listening on `listen` instead: its toxics go with it.
    pub fn moved(&self, listen: SocketAddr) -> Arc<Self> {
        let moved = Self::new(
            self.name.clone(),
            &self.client,
            &self.server,
            listen,
            &self.target(),
        );
        moved.toxics.send_replace(self.toxics.borrow().clone());
        moved
    }

    /// Where new connections go, `host:port`.
    pub fn target(&self) -> String {
        self.target.read().unwrap().to_string()
    }

    /// Points new connections at `addr` (`host:port`).
    pub fn set_target(&self, addr: &str) {
        *self.target.write().unwrap() = Arc::from(addr);
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
        let target = self.target.read().unwrap().clone();
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*target));
        let mut server = match connect.await {
            Ok(Ok(s)) => s,
            _ => {
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
            let up = pump::pump(
                &self,
                Direction::Upstream,
                n,
                &mut client_r,
                server_w,
                Some(client_w),
            );
            let down = pump::pump(
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
