//! `shop api`: orchestration for pages that need several services. `GET /api/v1/home`
//! gathers the user's featured products from the cdn and answers with whatever it got,
//! listing each dependency that failed or timed out in `degraded` instead of failing
//! the whole page.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs, duration};
use crate::deadline::Deadline;
use crate::error::error;
use crate::jwt::{self, Verifier};
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
    /// Addresses of the cdn replicas, comma-separated.
    #[arg(long, value_parser = addrs)]
    pub cdn: Addrs,
    /// Addresses of the orders replicas, comma-separated.
    #[arg(long, value_parser = addrs)]
    pub orders: Addrs,
    /// Recent orders on the home page.
    #[arg(long, env = "SHOP_API_RECENT_ORDERS", default_value_t = 5)]
    pub recent_orders: u32,
    /// How long to wait for each dependency before leaving its part out.
    #[arg(long, env = "SHOP_API_DEPENDENCY_TIMEOUT", default_value = "500ms", value_parser = duration)]
    pub dependency_timeout: Duration,
    /// Featured products on the home page.
    #[arg(long, env = "SHOP_API_FEATURED", default_value_t = 4)]
    pub featured: u32,
    /// Size of the catalog the featured products are drawn from.
    #[arg(long, env = "SHOP_CATALOG_SIZE", default_value_t = 1000)]
    pub products: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

struct AppState {
    verifier: Verifier,
    cdn: Arc<Upstream>,
    orders: Arc<Upstream>,
    recent_orders: u32,
    dependency_timeout: Duration,
    featured: u32,
    products: u32,
    degraded: Family<DependencyLabels, Counter>,
}

/// The user's featured product ids: stable for a user, different between users.
fn featured_ids(user: &str, count: u32, products: u32) -> Vec<u32> {
    let mut rng = fastrand::Rng::with_seed(user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }));
    let mut ids = Vec::new();
    while ids.len() < count.min(products) as usize {
        let id = rng.u32(1..=products);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

async fn home(State(s): State<Arc<AppState>>, deadline: Deadline, headers: HeaderMap) -> Response {
    // The gateway verified the token already; checking again here keeps the service
    // safe when reached some other way.
    let claims = match s.verifier.verify_header(headers.get(header::AUTHORIZATION)) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::UNAUTHORIZED, e.to_string()),
    };
    let dep_deadline = Deadline(deadline.min_after(Instant::now(), s.dependency_timeout));
    let fetches = featured_ids(&claims.sub, s.featured, s.products)
        .into_iter()
        .map(|id| {
            let cdn = s.cdn.clone();
            async move {
                match cdn
                    .get(
                        &format!("/api/v1/products/{}", encode(&id.to_string())),
                        dep_deadline,
                    )
                    .await
                {
                    Ok((StatusCode::OK, _, body)) => serde_json::from_slice::<Value>(&body).ok(),
                    _ => None,
                }
            }
        });
    let mut auth = HeaderMap::new();
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        auth.insert(header::AUTHORIZATION, v.clone());
    }
    let recent = async {
        // orders answers 400 to a limit over 100 (its contract): ask for 100 at most.
        let limit = s.recent_orders.min(100).to_string();
        let path = format!("/api/v1/orders?limit={}", encode(&limit));
        let got = s
            .orders
            .request(
                Method::GET,
                &path,
                &auth,
                Bytes::new(),
                dep_deadline,
                RetryPolicy::Idempotent,
            )
            .await;
        match got {
            Ok((StatusCode::OK, _, body)) => serde_json::from_slice::<Value>(&body)
                .ok()
                .map(|v| v["orders"].clone()),
            _ => None,
        }
    };
    let (results, recent) = tokio::join!(futures::future::join_all(fetches), recent);
    let featured: Vec<Value> = results.iter().flatten().cloned().collect();
    let mut degraded = Vec::new();
    if featured.len() < results.len() {
        degraded.push("cdn");
        s.degraded
            .get_or_create(&DependencyLabels { dependency: "cdn" })
            .inc();
    }
    if recent.is_none() {
        degraded.push("orders");
        s.degraded
            .get_or_create(&DependencyLabels {
                dependency: "orders",
            })
            .inc();
    }
    Json(json!({
        "user": claims.sub,
        "featured": featured,
        "recent_orders": recent.unwrap_or_else(|| json!([])),
        "degraded": degraded,
    }))
    .into_response()
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret = jwt::secret_from_env()?;
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let degraded = Family::<DependencyLabels, Counter>::default();
    registry.register(
        "api_degraded_responses",
        "Pages answered without a failed dependency's part, by dependency",
        degraded.clone(),
    );
    let cdn = Upstream::new(
        "cdn",
        &args.cdn.0,
        args.upstream.config(),
        upstream_metrics.clone(),
    )
    .follow(args.cdn.1.as_deref());
    let orders = Upstream::new(
        "orders",
        &args.orders.0,
        args.upstream.config(),
        upstream_metrics,
    )
    .follow(args.orders.1.as_deref());
    let state = Arc::new(AppState {
        verifier: Verifier::new(&secret),
        cdn: cdn.clone(),
        orders: orders.clone(),
        recent_orders: args.recent_orders,
        dependency_timeout: args.dependency_timeout,
        featured: args.featured,
        products: args.products,
        degraded,
    });
    let router = Router::new()
        .route("/api/v1/home", get(home))
        .fallback(server::not_found)
        .with_state(state);
    let service = Service {
        name: "api",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    server::serve_with(args.common.listen, service, shutdown, |t| async move {
        tokio::join!(
            cdn.run_health_checks(t.clone()),
            orders.run_health_checks(t)
        );
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn featured_products_are_stable_per_user_and_distinct() {
        let a = featured_ids("user1", 4, 1000);
        assert_eq!(a, featured_ids("user1", 4, 1000));
        assert_ne!(a, featured_ids("user2", 4, 1000));
        let mut d = a.clone();
        d.dedup();
        assert_eq!(d.len(), 4);
        assert_eq!(featured_ids("u", 10, 3).len(), 3);
    }
}
