//! `shop content`: the product catalog service. Reads go cache-aside through `cache`:
//! look in the cache, on a miss read the catalog (a database query, with its latency)
//! and store the answer with a TTL. When the cache is down, its circuit breaker opens
//! and reads go straight to the catalog: slower, never failing.
//!
//! API: `GET /api/v1/products?page=&per_page=`, `GET /api/v1/products/{id}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::catalog::Catalog;
use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs, duration};
use crate::deadline::Deadline;
use crate::error::error;
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::upstream::{RetryPolicy, Upstream, UpstreamMetrics};
use crate::url::encode;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// Addresses of the cache service replicas, comma-separated.
    #[arg(long, value_parser = addrs)]
    pub cache: Addrs,
    /// Seed of the generated catalog.
    #[arg(long, env = "SHOP_CATALOG_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Number of products.
    #[arg(long, env = "SHOP_CATALOG_SIZE", default_value_t = 1000)]
    pub products: u32,
    /// Latency of one catalog (database) read.
    #[arg(long, env = "SHOP_DB_LATENCY", default_value = "5ms", value_parser = duration)]
    pub db_latency: Duration,
    /// TTL of the answers stored in the cache.
    #[arg(long, env = "SHOP_CONTENT_CACHE_TTL", default_value = "60s", value_parser = duration)]
    pub cache_ttl: Duration,
    /// Longest wait for the cache before reading the catalog instead.
    #[arg(long, env = "SHOP_CONTENT_CACHE_TIMEOUT", default_value = "100ms", value_parser = duration)]
    pub cache_timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

struct AppState {
    catalog: Catalog,
    cache: Arc<Upstream>,
    db_latency: Duration,
    cache_ttl: Duration,
    cache_timeout: Duration,
    lookups: Family<ResultLabels, Counter>,
}

#[derive(Deserialize)]
struct PageParams {
    page: Option<u32>,
    per_page: Option<u32>,
}

const MAX_PER_PAGE: u32 = 100;

fn json_response(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

impl AppState {
    /// Cache-aside read of `key`; `load` produces the value from the catalog.
    async fn cached(
        &self,
        key: String,
        deadline: Deadline,
        load: impl FnOnce(&Catalog) -> Bytes,
    ) -> Bytes {
        let path = format!("/v1/keys/{}", encode(&key));
        let cache_deadline = Deadline(deadline.min_after(Instant::now(), self.cache_timeout));
        let result = match self.cache.get(&path, cache_deadline).await {
            Ok((StatusCode::OK, _, body)) => {
                self.lookups
                    .get_or_create(&ResultLabels { result: "hit" })
                    .inc();
                return body;
            }
            Ok(_) => "miss",
            Err(e) => {
                tracing::debug!(error = %e, "cache unavailable, reading the catalog");
                "error"
            }
        };
        self.lookups.get_or_create(&ResultLabels { result }).inc();
        tokio::time::sleep(self.db_latency).await;
        let body = load(&self.catalog);
        if result == "miss" {
            let ttl_ms = self.cache_ttl.as_millis().to_string();
            let put = format!("{path}?ttl_ms={}", encode(&ttl_ms));
            let cache_deadline = Deadline(deadline.min_after(Instant::now(), self.cache_timeout));
            // Filling the cache is best effort: the answer is already in hand.
            let _ = self
                .cache
                .send(
                    Method::PUT,
                    &put,
                    &HeaderMap::new(),
                    body.clone(),
                    cache_deadline,
                    RetryPolicy::Never,
                )
                .await;
        }
        body
    }
}

async fn product(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    Path(id): Path<String>,
) -> Response {
    let Some(id) = id
        .parse::<u32>()
        .ok()
        .filter(|id| s.catalog.get(*id).is_some())
    else {
        return error(StatusCode::NOT_FOUND, format!("no product {id}"));
    };
    let body = s
        .cached(format!("product:{id}"), deadline, |c| {
            serde_json::to_vec(c.get(id).expect("id checked above"))
                .unwrap()
                .into()
        })
        .await;
    json_response(body)
}

async fn products(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    Query(p): Query<PageParams>,
) -> Response {
    let page = p.page.unwrap_or(1);
    let per_page = p.per_page.unwrap_or(20);
    if page == 0 || per_page == 0 || per_page > MAX_PER_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("page must be 1 or more and per_page from 1 to {MAX_PER_PAGE}"),
        );
    }
    let body = s
        .cached(format!("products:{page}:{per_page}"), deadline, |c| {
            serde_json::to_vec(&json!({
                "items": c.page(page, per_page),
                "page": page,
                "per_page": per_page,
                "total": c.len(),
            }))
            .unwrap()
            .into()
        })
        .await;
    json_response(body)
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let lookups = Family::<ResultLabels, Counter>::default();
    registry.register(
        "content_cache_lookups",
        "Cache-aside lookups, by result (hit, miss, error)",
        lookups.clone(),
    );
    // A cache miss costs one catalog read; retrying the cache would cost more than that.
    let mut cache_config = args.upstream.config();
    cache_config.max_retries = 0;
    cache_config.per_try_timeout = args.cache_timeout;
    let cache = Upstream::new("cache", &args.cache.0, cache_config, upstream_metrics)
        .follow(args.cache.1.as_deref());
    let state = Arc::new(AppState {
        catalog: Catalog::generate(args.seed, args.products),
        cache: cache.clone(),
        db_latency: args.db_latency,
        cache_ttl: args.cache_ttl,
        cache_timeout: args.cache_timeout,
        lookups,
    });
    let router = Router::new()
        .route("/api/v1/products", get(products))
        .route("/api/v1/products/{id}", get(product))
        .fallback(server::not_found)
        .with_state(state);
    let service = Service {
        name: "content",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    server::serve_with(args.common.listen, service, shutdown, |t| {
        cache.run_health_checks(t)
    })
    .await
}
