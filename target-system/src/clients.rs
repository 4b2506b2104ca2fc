//! Typed clients for the shop's data services, over [`Upstream`]: the broker (queues and
//! topics) and the sharded store. Services that consume queues share [`consume`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadline::Deadline;
use crate::upstream::{RetryPolicy, Upstream, UpstreamError};
use crate::url::encode;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{service} answered {status}: {message}")]
    Status {
        service: String,
        status: StatusCode,
        message: String,
    },
}

impl ClientError {
    /// The request's own problem, when the caller's input made it unsendable.
    pub fn invalid_request(&self) -> Option<&UpstreamError> {
        match self {
            ClientError::Upstream(e @ UpstreamError::InvalidRequest(..)) => Some(e),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Upstream(_) => None,
        }
    }
}

fn check(service: &str, status: StatusCode, body: &Bytes) -> Result<(), ClientError> {
    if status.is_success() {
        return Ok(());
    }
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    Err(ClientError::Status {
        service: service.to_owned(),
        status,
        message,
    })
}

fn deadline(d: Duration) -> Deadline {
    Deadline(Instant::now() + d)
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
}

/// The broker, through two upstreams: `up` for short calls (send, publish, delete) and
/// `poll` for long-polling receives. A receive holds its call for up to 20 s; sharing one
/// circuit breaker would let waiting receives take every half-open trial slot and keep
/// publishes refused long after the broker is back.
#[derive(Clone)]
pub struct Broker {
    up: Arc<Upstream>,
    poll: Arc<Upstream>,
}

impl Broker {
    /// Both upstreams over `addrs`, with the long poll's per-try timeout raised to fit.
    pub fn new(
        addrs: &[std::net::SocketAddr],
        config: &crate::upstream::UpstreamConfig,
        metrics: crate::upstream::UpstreamMetrics,
    ) -> Self {
        let up = Upstream::new("broker", addrs, config.clone(), metrics.clone());
        let mut poll_config = config.clone();
        poll_config.per_try_timeout = Duration::from_secs(30);
        poll_config.health = None;
        let poll = Upstream::new("broker-poll", addrs, poll_config, metrics);
        Self { up, poll }
    }

    /// The upstream of short calls, for its health checks.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.up
    }

    async fn post(&self, path: &str, body: Value, timeout: Duration) -> Result<Value, ClientError> {
        self.post_via(&self.up, path, body, timeout).await
    }

    async fn post_via(
        &self,
        up: &Upstream,
        path: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        // Sends are repeated after a failure: the broker delivers at least once anyway,
        // and every consumer of the shop is idempotent.
        let (status, _, bytes) = up
            .post_json(
                path,
                &body,
                &HeaderMap::new(),
                deadline(timeout),
                RetryPolicy::Idempotent,
            )
            .await?;
        check("broker", status, &bytes)?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn send(&self, queue: &str, body: &str) -> Result<String, ClientError> {
        let v = self
            .post(
                &format!("/v1/queues/{}/send", encode(queue)),
                json!({ "body": body }),
                Duration::from_secs(5),
            )
            .await?;
        Ok(v["message_id"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn publish(&self, topic: &str, body: &str) -> Result<(), ClientError> {
        self.post(
            &format!("/v1/topics/{}/publish", encode(topic)),
            json!({ "body": body }),
            Duration::from_secs(5),
        )
        .await
        .map(drop)
    }

    /// Receives up to `max` messages, waiting up to `wait` for one.
    pub async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Message>, ClientError> {
        let body = json!({ "max_messages": max, "wait_ms": wait.as_millis() as u64 });
        let v = self
            .post_via(
                &self.poll,
                &format!("/v1/queues/{}/receive", encode(queue)),
                body,
                wait + Duration::from_secs(5),
            )
            .await?;
        Ok(serde_json::from_value(v["messages"].clone()).unwrap_or_default())
    }

    pub async fn delete(&self, queue: &str, receipt: &str) -> Result<(), ClientError> {
        self.post(
            &format!("/v1/queues/{}/delete", encode(queue)),
            json!({ "receipt_handle": receipt }),
            Duration::from_secs(5),
        )
        .await
        .map(drop)
    }

    /// Makes a received message visible again after `after` (a negative
    /// acknowledgement with a backoff).
    pub async fn retry_later(
        &self,
        queue: &str,
        receipt: &str,
        after: Duration,
    ) -> Result<(), ClientError> {
        self.post(
            &format!("/v1/queues/{}/visibility", encode(queue)),
            json!({ "receipt_handle": receipt, "visibility_timeout_ms": after.as_millis() as u64 }),
            Duration::from_secs(5),
        )
        .await
        .map(drop)
    }
}

/// Wait before the next delivery of a message whose handling failed for the
/// `receives`-th time: 500 ms doubling, at most 30 s.
pub fn later_backoff(receives: u32) -> Duration {
    let exp = receives.saturating_sub(1).min(6);
    (Duration::from_millis(500) * (1u32 << exp)).min(Duration::from_secs(30))
}

/// What a handler did with a message.
pub enum Handled {
    /// Done: delete it.
    Done,
    /// Not now (a dependency failed): leave it for a later receive.
    Later,
    /// It cannot be processed (malformed): never delete it, so that after the queue's
    /// max receives it lands in the dead-letter queue; come back to it after a pause.
    Reject,
}

/// Receives from `queue` until `shutdown`, handing each message to `handle` and acting on
/// its verdict. Errors talking to the broker back off and retry.
pub async fn consume<F, Fut>(
    broker: Broker,
    queue: String,
    reject_delay: Duration,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(Message) -> Fut,
    Fut: std::future::Future<Output = Handled>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = broker.receive(&queue, 10, Duration::from_secs(20)) => r,
        };
        let messages = match received {
            Ok(m) => {
                backoff = Duration::from_millis(100);
                m
            }
            Err(e) => {
                tracing::warn!(queue, error = %e, "cannot receive");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        for m in messages {
            let receipt = m.receipt_handle.clone();
            let id = m.message_id.clone();
            let receives = m.receive_count;
            match handle(m).await {
                Handled::Done => {
                    if let Err(e) = broker.delete(&queue, &receipt).await {
                        tracing::warn!(queue, message = id, error = %e, "cannot delete a processed message");
                    }
                }
                Handled::Later => {
                    // Come back soon rather than after the whole visibility timeout, and
                    // later each time, so that a dependency's outage of a minute or two
                    // does not use up the message's receives.
                    let _ = broker
                        .retry_later(&queue, &receipt, later_backoff(receives))
                        .await;
                }
                Handled::Reject => {
                    tracing::warn!(
                        queue,
                        message = id,
                        "rejecting a message that cannot be processed"
                    );
                    let _ = broker.retry_later(&queue, &receipt, reject_delay).await;
                }
            }
        }
    }
}

/// One item of the store.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    pub key: String,
    pub value: Value,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("condition failed on key {0}")]
    Conflict(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Where a read may be served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The shard's leader.
    Primary,
    /// The shard's other member when it answers and is caught up, else the leader.
    Replica,
}

/// Why a replica read went to the primary instead (a metrics label).
pub type FallbackHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// One shard: the two members that can lead it (its primary and its replica; the
/// witness never leads) and the one believed to lead now.
struct Shard {
    members: [Arc<Upstream>; 2],
    leader: AtomicUsize,
}

/// The sharded store. Each shard's leader is found by asking: a member that does not
/// lead answers 421 with the leader's seat, and a member that cannot be reached sends
/// the next call to the other one; no restart is needed after a failover.
#[derive(Clone)]
pub struct Store {
    shards: Arc<Vec<Shard>>,
    on_fallback: FallbackHook,
    /// How long a replica read may take before the primary is asked instead.
    pub replica_timeout: Duration,
}

/// FNV-1a: stable across processes and versions, unlike std's hasher.
pub fn shard_of(key: &str, shards: usize) -> usize {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % shards.max(1) as u64) as usize
}

/// Nothing reached the member: the call can go to another one.
fn not_sent(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::CircuitOpen(_) | UpstreamError::NoEndpoints(_) | UpstreamError::Connect(..)
    )
}

/// Tries of one call across a shard's members while its leader is looked for.
const LEADER_TRIES: usize = 6;

impl Store {
    /// Shard `i` is `primaries[i]` and `replicas[i]`.
    pub fn new(
        primaries: Vec<Arc<Upstream>>,
        replicas: Vec<Arc<Upstream>>,
        on_fallback: FallbackHook,
    ) -> Self {
        let shards = primaries
            .into_iter()
            .zip(replicas)
            .map(|(p, r)| Shard {
                members: [p, r],
                leader: AtomicUsize::new(0),
            })
            .collect();
        Self {
            shards: Arc::new(shards),
            on_fallback,
            replica_timeout: Duration::from_millis(200),
        }
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.shards.iter().flat_map(|s| s.members.iter())
    }

    /// The shard of a user's data.
    pub fn shard(&self, user: &str) -> usize {
        shard_of(user, self.shards.len())
    }

    /// Sends a call to `shard`'s leader, following 421 hints. A write (`body`) that may
    /// have reached a member is never sent again: its answer was lost, not its effect.
    async fn to_leader(
        &self,
        shard: usize,
        path: &str,
        body: Option<&Value>,
        d: Deadline,
    ) -> Result<(StatusCode, HeaderMap, Bytes), UpstreamError> {
        let s = &self.shards[shard];
        let mut last = None;
        for _ in 0..LEADER_TRIES {
            let i = s.leader.load(Ordering::Relaxed) % 2;
            let up = &s.members[i];
            let r = match body {
                Some(b) => {
                    up.post_json(path, b, &HeaderMap::new(), d, RetryPolicy::Never)
                        .await
                }
                None => up.get(path, d).await,
            };
            match r {
                Ok((StatusCode::MISDIRECTED_REQUEST, h, bytes)) => {
                    let hint = serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .and_then(|v| v["leader"].as_u64())
                        .map(|l| l as usize)
                        .filter(|l| *l < 2 && *l != i);
                    let _ = s.leader.compare_exchange(
                        i,
                        hint.unwrap_or(1 - i),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    last = Some(Ok((StatusCode::SERVICE_UNAVAILABLE, h, bytes)));
                    if hint.is_none() {
                        // An election is under way: give it a moment.
                        let pause = Instant::now() + Duration::from_millis(150);
                        if pause >= d.0 {
                            break;
                        }
                        tokio::time::sleep_until(pause).await;
                    }
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    let _ =
                        s.leader
                            .compare_exchange(i, 1 - i, Ordering::Relaxed, Ordering::Relaxed);
                    let retry = body.is_none() || not_sent(&e);
                    if !retry || matches!(e, UpstreamError::InvalidRequest(..)) {
                        return Err(e);
                    }
                    last = Some(Err(e));
                }
            }
            if Instant::now() >= d.0 {
                break;
            }
        }
        last.unwrap_or_else(|| Err(UpstreamError::Timeout("store".into())))
    }

    /// Applies `ops` atomically on `shard`'s leader. Never repeated once it may have
    /// reached a member: a batch whose answer was lost may have committed.
    pub async fn batch(
        &self,
        shard: usize,
        ops: Vec<Value>,
        d: Deadline,
    ) -> Result<u64, StoreError> {
        let body = json!({ "ops": ops });
        let (status, _, body) = self
            .to_leader(shard, "/v1/batch", Some(&body), d)
            .await
            .map_err(ClientError::from)?;
        if status == StatusCode::CONFLICT {
            let key = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["key"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(StoreError::Conflict(key));
        }
        check("store", status, &body)?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(v["lsn"].as_u64().unwrap_or(0))
    }

    pub async fn get(
        &self,
        shard: usize,
        key: &str,
        from: ReadFrom,
        d: Deadline,
    ) -> Result<Option<Item>, StoreError> {
        let path = format!("/v1/keys/{}", encode(key));
        if from == ReadFrom::Replica {
            let s = &self.shards[shard];
            let other = &s.members[1 - s.leader.load(Ordering::Relaxed) % 2];
            let replica_deadline = Deadline(d.min_after(Instant::now(), self.replica_timeout));
            match other.get(&path, replica_deadline).await {
                Ok((StatusCode::OK, headers, body)) if lag(&headers) == 0 => {
                    if let Ok(item) = serde_json::from_slice(&body) {
                        return Ok(Some(item));
                    }
                }
                Ok((StatusCode::OK, _, _)) => (self.on_fallback)("replica_lagging"),
                Ok((StatusCode::NOT_FOUND, _, _)) => (self.on_fallback)("not_on_replica"),
                // The primary would refuse the same request: the caller's error.
                Err(e @ UpstreamError::InvalidRequest(..)) => {
                    return Err(ClientError::from(e).into());
                }
                _ => (self.on_fallback)("replica_unavailable"),
            }
        }
        let (status, _, body) = self
            .to_leader(shard, &format!("{path}?leader=true"), None, d)
            .await
            .map_err(ClientError::from)?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check("store", status, &body)?;
        Ok(serde_json::from_slice(&body).ok())
    }

    /// Every item under `prefix`, in key order, from the leader.
    pub async fn scan(
        &self,
        shard: usize,
        prefix: &str,
        limit: usize,
        d: Deadline,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = limit.saturating_sub(out.len()).min(1000);
            if page == 0 {
                return Ok(out);
            }
            let mut path = format!(
                "/v1/scan?prefix={}&limit={page}&leader=true",
                encode(prefix)
            );
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", encode(a)));
            }
            let (status, _, body) = self
                .to_leader(shard, &path, None, d)
                .await
                .map_err(ClientError::from)?;
            check("store", status, &body)?;
            #[derive(Deserialize)]
            struct Page {
                items: Vec<Item>,
            }
            let items = serde_json::from_slice::<Page>(&body)
                .map(|p| p.items)
                .unwrap_or_default();
            let n = items.len();
            after = items.last().map(|i| i.key.clone());
            out.extend(items);
            if n < page {
                return Ok(out);
            }
        }
    }
}

fn lag(headers: &HeaderMap) -> u64 {
    headers
        .get("x-store-lag")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("user1", 2), shard_of("user1", 2));
        let on_first = (1..=1000)
            .filter(|i| shard_of(&format!("user{i}"), 2) == 0)
            .count();
        assert!(
            (400..600).contains(&on_first),
            "{on_first} of 1000 on shard 0"
        );
    }

    #[test]
    fn retries_back_off_up_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=9)
            .map(|n| later_backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }
}
