//! `shop cache`: an in-memory key/value service in Redis's role: values with a TTL,
//! a bound on memory with least-recently-used eviction.
//!
//! API: `GET /v1/keys/{key}` (200 with the value, 404), `PUT /v1/keys/{key}?ttl_ms=N`
//! (204), `DELETE /v1/keys/{key}` (204).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lru::LruCache;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{CommonArgs, duration};
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Memory bound for keys and values, in bytes.
    #[arg(long, env = "SHOP_CACHE_MAX_BYTES", default_value_t = 64 << 20)]
    pub max_bytes: u64,
    /// TTL of a value stored without `ttl_ms`.
    #[arg(long, env = "SHOP_CACHE_DEFAULT_TTL", default_value = "5m", value_parser = duration)]
    pub default_ttl: Duration,
}

/// Bookkeeping cost of an entry beyond its key and value, so that a flood of tiny
/// entries is bounded too.
const ENTRY_OVERHEAD: u64 = 64;

struct Entry {
    value: Bytes,
    expires: Instant,
}

fn cost(key: &str, value: &Bytes) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The store itself, independent of HTTP.
pub struct Store {
    entries: LruCache<String, Entry>,
    bytes: u64,
    max_bytes: u64,
    metrics: StoreMetrics,
}

#[derive(Clone)]
struct StoreMetrics {
    hits: Counter,
    misses: Counter,
    evictions: Family<ReasonLabels, Counter>,
    keys: Gauge,
    bytes: Gauge,
}

impl Store {
    fn new(max_bytes: u64, metrics: StoreMetrics) -> Self {
        Self {
            entries: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
            metrics,
        }
    }

    fn get(&mut self, key: &str, now: Instant) -> Option<Bytes> {
        let found = match self.entries.get(key) {
            Some(e) if e.expires > now => Some(e.value.clone()),
            Some(_) => {
                self.remove(key, Some("expired"));
                None
            }
            None => None,
        };
        if found.is_some() {
            self.metrics.hits.inc();
        } else {
            self.metrics.misses.inc();
        }
        found
    }

    fn put(&mut self, key: String, value: Bytes, expires: Instant) -> Result<(), &'static str> {
        let c = cost(&key, &value);
        if c > self.max_bytes {
            return Err("value larger than the cache's memory bound");
        }
        self.remove(&key, None);
        while self.bytes + c > self.max_bytes {
            let Some((k, e)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= cost(&k, &e.value);
            self.metrics
                .evictions
                .get_or_create(&ReasonLabels { reason: "capacity" })
                .inc();
        }
        self.bytes += c;
        self.entries.put(key, Entry { value, expires });
        self.sync();
        Ok(())
    }

    fn remove(&mut self, key: &str, reason: Option<&'static str>) -> bool {
        let Some(e) = self.entries.pop(key) else {
            return false;
        };
        self.bytes -= cost(key, &e.value);
        if let Some(reason) = reason {
            self.metrics
                .evictions
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        self.sync();
        true
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k, Some("expired"));
        }
    }

    fn sync(&self) {
        self.metrics.keys.set(self.entries.len() as i64);
        self.metrics.bytes.set(self.bytes as i64);
    }
}

#[derive(Clone)]
struct AppState {
    store: Arc<Mutex<Store>>,
    default_ttl: Duration,
}

#[derive(Deserialize)]
struct PutParams {
    ttl_ms: Option<u64>,
}

async fn get_key(State(s): State<AppState>, Path(key): Path<String>) -> Response {
    match s.store.lock().unwrap().get(&key, Instant::now()) {
        Some(v) => (StatusCode::OK, v).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn put_key(
    State(s): State<AppState>,
    Path(key): Path<String>,
    Query(p): Query<PutParams>,
    body: Bytes,
) -> Response {
    let ttl = p.ttl_ms.map_or(s.default_ttl, Duration::from_millis);
    match s.store.lock().unwrap().put(key, body, Instant::now() + ttl) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(msg) => crate::error::error(StatusCode::PAYLOAD_TOO_LARGE, msg),
    }
}

async fn delete_key(State(s): State<AppState>, Path(key): Path<String>) -> StatusCode {
    s.store.lock().unwrap().remove(&key, None);
    StatusCode::NO_CONTENT
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let metrics = StoreMetrics {
        hits: Counter::default(),
        misses: Counter::default(),
        evictions: Family::default(),
        keys: Gauge::default(),
        bytes: Gauge::default(),
    };
    let r = registry.sub_registry_with_prefix("cache");
    r.register(
        "hits",
        "Lookups that found a live value",
        metrics.hits.clone(),
    );
    r.register(
        "misses",
        "Lookups that found nothing",
        metrics.misses.clone(),
    );
    r.register(
        "evictions",
        "Entries removed, by reason (capacity, expired)",
        metrics.evictions.clone(),
    );
    r.register("keys", "Entries held", metrics.keys.clone());
    r.register(
        "size_bytes",
        "Memory held by keys and values",
        metrics.bytes.clone(),
    );
    let max = Gauge::<i64>::default();
    max.set(args.max_bytes as i64);
    r.register("max_bytes", "The memory bound", max);

    let store = Arc::new(Mutex::new(Store::new(args.max_bytes, metrics)));
    let state = AppState {
        store: store.clone(),
        default_ttl: args.default_ttl,
    };
    let router = Router::new()
        .route(
            "/v1/keys/{key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .fallback(server::not_found)
        .with_state(state);

    // Expired entries are removed lazily on read, and by this sweep so that keys nobody
    // reads again do not hold memory until capacity evicts them.
    let sweeper = |shutdown: CancellationToken| async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => store.lock().unwrap().sweep(Instant::now()),
            }
        }
    };
    let service = Service {
        name: "cache",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    server::serve_with(args.common.listen, service, shutdown, sweeper).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max: u64) -> Store {
        Store::new(
            max,
            StoreMetrics {
                hits: Counter::default(),
                misses: Counter::default(),
                evictions: Family::default(),
                keys: Gauge::default(),
                bytes: Gauge::default(),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn values_expire() {
        let mut s = store(1 << 20);
        let now = Instant::now();
        s.put(
            "k".into(),
            Bytes::from_static(b"v"),
            now + Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(s.get("k", now).as_deref(), Some(&b"v"[..]));
        assert_eq!(s.get("k", now + Duration::from_secs(1)), None);
        assert_eq!(s.bytes, 0);
        assert_eq!(s.metrics.hits.get(), 1);
        assert_eq!(s.metrics.misses.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_by_evicting_the_least_recently_used() {
        // Each entry costs 2 + 100 + 64 = 166 bytes; three fit in 500.
        let mut s = store(500);
        let far = Instant::now() + Duration::from_secs(60);
        let v = Bytes::from(vec![0u8; 100]);
        for k in ["k1", "k2", "k3"] {
            s.put(k.into(), v.clone(), far).unwrap();
        }
        s.get("k1", Instant::now());
        s.put("k4".into(), v.clone(), far).unwrap();
        assert!(s.bytes <= 500);
        assert!(
            s.get("k2", Instant::now()).is_none(),
            "k2 was least recently used"
        );
        assert!(s.get("k1", Instant::now()).is_some());
        assert!(s.get("k4", Instant::now()).is_some());
        assert_eq!(
            s.metrics
                .evictions
                .get_or_create(&ReasonLabels { reason: "capacity" })
                .get(),
            1
        );
        assert!(
            s.put("big".into(), Bytes::from(vec![0u8; 1000]), far)
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn overwriting_a_key_does_not_leak_its_old_size() {
        let mut s = store(10_000);
        let far = Instant::now() + Duration::from_secs(60);
        for _ in 0..10 {
            s.put("k".into(), Bytes::from(vec![0u8; 100]), far).unwrap();
        }
        assert_eq!(s.bytes, 1 + 100 + ENTRY_OVERHEAD);
        s.sweep(far);
        assert_eq!(s.bytes, 0);
    }
}
