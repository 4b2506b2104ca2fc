//! `shop cdn`: an edge cache in front of content reads.
//!
//! A fresh entry is a `HIT`. After its TTL, an entry still inside its
//! stale-while-revalidate window is served at once as `STALE` while one background
//! fetch refreshes it; past that, the request waits for the origin, and if the origin
//! fails, an entry inside its stale-if-error window is served as `STALE` rather than
//! failing. Concurrent misses for one key share a single origin fetch. The origin's
//! `Cache-Control` (max-age, s-maxage, stale-while-revalidate, stale-if-error,
//! no-store, private, no-cache) wins over the configured defaults.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use lru::LruCache;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs, duration};
use crate::deadline::Deadline;
use crate::error::{dependency_error, error};
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::upstream::{Upstream, UpstreamError, UpstreamMetrics};

pub const X_CACHE: &str = "x-cache";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// Addresses of the origin (content) replicas, comma-separated.
    #[arg(long, value_parser = addrs)]
    pub origin: Addrs,
    /// Freshness of an entry when the origin does not say.
    #[arg(long, env = "SHOP_CDN_TTL", default_value = "30s", value_parser = duration)]
    pub ttl: Duration,
    /// After the TTL, how long a stale entry is served while being refreshed.
    #[arg(long, env = "SHOP_CDN_STALE_WHILE_REVALIDATE", default_value = "30s", value_parser = duration)]
    pub stale_while_revalidate: Duration,
    /// After the TTL, how long a stale entry is served when the origin fails.
    #[arg(long, env = "SHOP_CDN_STALE_IF_ERROR", default_value = "10m", value_parser = duration)]
    pub stale_if_error: Duration,
    /// Freshness of a cached 404.
    #[arg(long, env = "SHOP_CDN_NEGATIVE_TTL", default_value = "10s", value_parser = duration)]
    pub negative_ttl: Duration,
    #[arg(long, env = "SHOP_CDN_MAX_ENTRIES", default_value_t = 10_000)]
    pub max_entries: usize,
    #[arg(long, env = "SHOP_CDN_MAX_BYTES", default_value_t = 64 << 20)]
    pub max_bytes: u64,
    /// Longest wait for one origin fetch.
    #[arg(long, env = "SHOP_CDN_ORIGIN_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub origin_timeout: Duration,
}

/// A stored origin answer and how long it may be used.
#[derive(Debug)]
struct Entry {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
    stored: Instant,
    fresh_for: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Fresh,
    /// Serve now, refresh in the background.
    Revalidate,
    /// Usable only if the origin fails.
    IfError,
    Expired,
}

impl Entry {
    fn freshness(&self, now: Instant) -> Freshness {
        let age = now.saturating_duration_since(self.stored);
        if age < self.fresh_for {
            Freshness::Fresh
        } else if age < self.fresh_for + self.stale_while_revalidate {
            Freshness::Revalidate
        } else if age < self.fresh_for + self.stale_if_error {
            Freshness::IfError
        } else {
            Freshness::Expired
        }
    }

    fn cost(&self, key: &str) -> u64 {
        (key.len() + self.body.len() + 128) as u64
    }

    fn respond(&self, x_cache: &'static str, now: Instant) -> Response {
        let mut resp = (self.status, self.body.clone()).into_response();
        let h = resp.headers_mut();
        if let Some(ct) = &self.content_type {
            h.insert(header::CONTENT_TYPE, ct.clone());
        }
        h.insert(X_CACHE, HeaderValue::from_static(x_cache));
        h.insert(
            header::AGE,
            now.saturating_duration_since(self.stored).as_secs().into(),
        );
        resp
    }
}

#[derive(Debug, Clone, Copy)]
struct Policy {
    ttl: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    negative_ttl: Duration,
}

impl Policy {
    /// The entry to store for an origin answer, or `None` when it must not be cached.
    fn entry(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        now: Instant,
    ) -> (Entry, bool) {
        let mut fresh_for = self.ttl;
        let mut swr = self.stale_while_revalidate;
        let mut sie = self.stale_if_error;
        let mut cacheable = matches!(status, StatusCode::OK | StatusCode::NOT_FOUND);
        let mut shared_max_age = None;
        if let Some(cc) = headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
        {
            for directive in cc.split(',').map(str::trim) {
                let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
                let secs = value
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
                match (name.to_ascii_lowercase().as_str(), secs) {
                    ("no-store" | "private" | "no-cache", _) => cacheable = false,
                    ("s-maxage", Some(d)) => shared_max_age = Some(d),
                    ("max-age", Some(d)) => fresh_for = d,
                    ("stale-while-revalidate", Some(d)) => swr = d,
                    ("stale-if-error", Some(d)) => sie = d,
                    _ => {}
                }
            }
        }
        if let Some(d) = shared_max_age {
            fresh_for = d;
        }
        if status == StatusCode::NOT_FOUND {
            fresh_for = fresh_for.min(self.negative_ttl);
            sie = Duration::ZERO;
        }
        let entry = Entry {
            status,
            content_type: headers.get(header::CONTENT_TYPE).cloned(),
            body,
            stored: now,
            fresh_for,
            stale_while_revalidate: swr,
            stale_if_error: sie,
        };
        (entry, cacheable)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone)]
struct CdnMetrics {
    lookups: Family<ResultLabels, Counter>,
    fetches: Family<ResultLabels, Counter>,
    coalesced: Counter,
    evictions: Counter,
    entries: Gauge,
    bytes: Gauge,
}

type Fetch = Shared<BoxFuture<'static, Result<Arc<Entry>, UpstreamError>>>;

struct Store {
    entries: LruCache<String, Arc<Entry>>,
    bytes: u64,
    max_bytes: u64,
}

struct Cdn {
    origin: Arc<Upstream>,
    store: Mutex<Store>,
    inflight: Mutex<HashMap<String, Fetch>>,
    tracker: TaskTracker,
    policy: Policy,
    origin_timeout: Duration,
    metrics: CdnMetrics,
}

impl Cdn {
    fn lookup(&self, key: &str) -> Option<Arc<Entry>> {
        self.store.lock().unwrap().entries.get(key).cloned()
    }

    fn insert(&self, key: String, entry: Arc<Entry>) {
        let mut s = self.store.lock().unwrap();
        if let Some(old) = s.entries.pop(&key) {
            s.bytes -= old.cost(&key);
        }
        let cost = entry.cost(&key);
        if cost > s.max_bytes {
            return;
        }
        while s.bytes + cost > s.max_bytes || s.entries.len() >= s.entries.cap().get() {
            let Some((k, e)) = s.entries.pop_lru() else {
                break;
            };
            s.bytes -= e.cost(&k);
            self.metrics.evictions.inc();
        }
        s.bytes += cost;
        s.entries.put(key, entry);
        self.metrics.entries.set(s.entries.len() as i64);
        self.metrics.bytes.set(s.bytes as i64);
    }

    /// The one origin fetch in flight for `key`, started if there is none. It runs as a
    /// tracked task, so it completes (and fills the cache) even if every waiter gives up,
    /// but never past the deadline of the request that started it (`None` for a
    /// background revalidation, bounded by the origin timeout alone): no work outlives
    /// the caller that asked for it.
    fn fetch(self: &Arc<Self>, key: &str, deadline: Option<Deadline>) -> Fetch {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(f) = inflight.get(key) {
            self.metrics.coalesced.inc();
            return f.clone();
        }
        let this = Arc::clone(self);
        let k = key.to_owned();
        let task = self.tracker.spawn(async move {
            let limit = Instant::now() + this.origin_timeout;
            let deadline = Deadline(deadline.map_or(limit, |d| d.0.min(limit)));
            let result = match this.origin.get(&k, deadline).await {
                Ok((status, headers, body)) => {
                    let (entry, cacheable) =
                        this.policy.entry(status, &headers, body, Instant::now());
                    let entry = Arc::new(entry);
                    if cacheable {
                        this.insert(k.clone(), entry.clone());
                    }
                    Ok(entry)
                }
                Err(e) => Err(e),
            };
            let outcome = match &result {
                Ok(e) if !e.status.is_server_error() => "ok",
                _ => "error",
            };
            this.metrics
                .fetches
                .get_or_create(&ResultLabels { result: outcome })
                .inc();
            this.inflight.lock().unwrap().remove(&k);
            result
        });
        let fetch = async move {
            task.await.unwrap_or_else(|e| {
                Err(UpstreamError::Transport(
                    "content".into(),
                    format!("fetch task failed: {e}"),
                ))
            })
        }
        .boxed()
        .shared();
        inflight.insert(key.to_owned(), fetch.clone());
        fetch
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .lookups
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

async fn handle(
    State(cdn): State<Arc<Cdn>>,
    deadline: Deadline,
    method: Method,
    uri: Uri,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "the cdn serves reads only");
    }
    let key = uri
        .path_and_query()
        .map_or(uri.path(), |p| p.as_str())
        .to_owned();
    let now = Instant::now();
    let cached = cdn.lookup(&key);
    let freshness = cached.as_ref().map(|e| e.freshness(now));
    match (&cached, freshness) {
        (Some(e), Some(Freshness::Fresh)) => {
            cdn.count("hit");
            return e.respond("HIT", now);
        }
        (Some(e), Some(Freshness::Revalidate)) => {
            drop(cdn.fetch(&key, None));
            cdn.count("stale");
            return e.respond("STALE", now);
        }
        _ => {}
    }
    let stale_ok = freshness == Some(Freshness::IfError);
    let fetched = tokio::time::timeout_at(deadline.0, cdn.fetch(&key, Some(deadline))).await;
    let now = Instant::now();
    match fetched {
        Ok(Ok(entry)) if !(stale_ok && entry.status.is_server_error()) => {
            cdn.count("miss");
            entry.respond("MISS", now)
        }
        _ if stale_ok => {
            cdn.count("stale");
            cached
                .expect("stale_ok implies an entry")
                .respond("STALE", now)
        }
        Ok(Ok(entry)) => {
            cdn.count("miss");
            entry.respond("MISS", now)
        }
        Ok(Err(e)) => {
            cdn.count("miss");
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(X_CACHE, HeaderValue::from_static("MISS"));
            resp
        }
        Err(_) => {
            cdn.count("miss");
            dependency_error(
                StatusCode::GATEWAY_TIMEOUT,
                "content",
                "origin did not answer in time",
            )
        }
    }
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let metrics = CdnMetrics {
        lookups: Family::default(),
        fetches: Family::default(),
        coalesced: Counter::default(),
        evictions: Counter::default(),
        entries: Gauge::default(),
        bytes: Gauge::default(),
    };
    let r = registry.sub_registry_with_prefix("cdn");
    r.register(
        "lookups",
        "Requests by cache result: hit (fresh), stale (served stale), miss (went to origin)",
        metrics.lookups.clone(),
    );
    r.register(
        "origin_fetches",
        "Fetches from the origin, by result (ok, error)",
        metrics.fetches.clone(),
    );
    r.register(
        "coalesced",
        "Requests that joined an origin fetch already in flight",
        metrics.coalesced.clone(),
    );
    r.register(
        "evictions",
        "Entries evicted by the memory bound",
        metrics.evictions.clone(),
    );
    r.register("entries", "Entries held", metrics.entries.clone());
    r.register(
        "size_bytes",
        "Memory held by entries",
        metrics.bytes.clone(),
    );

    let origin = Upstream::new(
        "content",
        &args.origin.0,
        args.upstream.config(),
        upstream_metrics,
    )
    .follow(args.origin.1.as_deref());
    let cdn = Arc::new(Cdn {
        origin: origin.clone(),
        store: Mutex::new(Store {
            entries: LruCache::new(NonZeroUsize::new(args.max_entries.max(1)).unwrap()),
            bytes: 0,
            max_bytes: args.max_bytes,
        }),
        inflight: Mutex::new(HashMap::new()),
        tracker: TaskTracker::new(),
        policy: Policy {
            ttl: args.ttl,
            stale_while_revalidate: args.stale_while_revalidate,
            stale_if_error: args.stale_if_error,
            negative_ttl: args.negative_ttl,
        },
        origin_timeout: args.origin_timeout,
        metrics,
    });
    let tracker = cdn.tracker.clone();
    let router = Router::new()
        .route("/api/v1/products", axum::routing::any(handle))
        .route("/api/v1/products/{*rest}", axum::routing::any(handle))
        .fallback(server::not_found)
        .with_state(cdn);
    let service = Service {
        name: "cdn",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    let result = server::serve_with(args.common.listen, service, shutdown, |t| {
        origin.run_health_checks(t)
    })
    .await;
    tracker.close();
    tracker.wait().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            ttl: Duration::from_secs(30),
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(10),
        }
    }

    fn headers(cc: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, cc.parse().unwrap());
        h
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_moves_through_the_windows() {
        let now = Instant::now();
        let (e, cacheable) = policy().entry(StatusCode::OK, &HeaderMap::new(), Bytes::new(), now);
        assert!(cacheable);
        let at = |s| e.freshness(now + Duration::from_secs(s));
        assert_eq!(at(0), Freshness::Fresh);
        assert_eq!(at(30), Freshness::Revalidate);
        assert_eq!(at(59), Freshness::Revalidate);
        assert_eq!(at(60), Freshness::IfError);
        assert_eq!(at(630), Freshness::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn the_origins_cache_control_wins() {
        let now = Instant::now();
        let p = policy();
        let (e, ok) = p.entry(
            StatusCode::OK,
            &headers("public, max-age=5, stale-while-revalidate=0, stale-if-error=7"),
            Bytes::new(),
            now,
        );
        assert!(ok);
        assert_eq!(
            (e.fresh_for, e.stale_while_revalidate, e.stale_if_error),
            (
                Duration::from_secs(5),
                Duration::ZERO,
                Duration::from_secs(7)
            )
        );
        let (e, _) = p.entry(
            StatusCode::OK,
            &headers("max-age=5, s-maxage=9"),
            Bytes::new(),
            now,
        );
        assert_eq!(
            e.fresh_for,
            Duration::from_secs(9),
            "s-maxage is for shared caches"
        );
        for cc in ["no-store", "private", "no-cache", "Private, max-age=60"] {
            assert!(
                !p.entry(StatusCode::OK, &headers(cc), Bytes::new(), now).1,
                "{cc}"
            );
        }
        assert!(
            !p.entry(
                StatusCode::INTERNAL_SERVER_ERROR,
                &HeaderMap::new(),
                Bytes::new(),
                now
            )
            .1
        );
        let (e, ok) = p.entry(StatusCode::NOT_FOUND, &HeaderMap::new(), Bytes::new(), now);
        assert!(ok);
        assert_eq!(
            e.fresh_for,
            Duration::from_secs(10),
            "404s are cached briefly"
        );
        assert_eq!(e.stale_if_error, Duration::ZERO);
    }
}
