//! `shop gateway`: the single public entry point.
//!
//! Per request, in order: route by exact path and method ([`ROUTES`], the public API's
//! contract with `target-system/openapi.json`); verify the bearer token (required on
//! protected routes, and naming the client elsewhere when valid); apply the client's
//! token-bucket rate limit (the user when the token is valid, else the peer address);
//! bound the body; forward through the route's [`Upstream`] with its balancing, health
//! checks, ejection, breaker, deadline and retries.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use http_body_util::{BodyExt, Limited};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs};
use crate::deadline::Deadline;
use crate::error::error;
use crate::jwt::{self, Claims, TokenError, Verifier};
use crate::metrics::{HttpMetrics, new_registry};
use crate::resilience::TokenBucket;
use crate::server::{self, Service};
use crate::upstream::{RetryPolicy, Upstream, UpstreamMetrics, is_hop_by_hop};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// Addresses of the auth replicas, comma-separated.
    #[arg(long, value_parser = addrs)]
    pub auth: Addrs,
    /// Addresses of the cdn replicas, comma-separated.
    #[arg(long, value_parser = addrs)]
    pub cdn: Addrs,
    /// Addresses of the api replicas, comma-separated.
    #[arg(long, value_parser = addrs)]
    pub api: Addrs,
    /// Addresses of the orders replicas, comma-separated.
    #[arg(long, value_parser = addrs)]
    pub orders: Addrs,
    /// Requests a second each client may make (0 turns rate limiting off).
    #[arg(long, env = "SHOP_RATE_LIMIT_RPS", default_value_t = 1000.0)]
    pub rate_limit_rps: f64,
    /// Requests a client may make at once above its rate.
    #[arg(long, env = "SHOP_RATE_LIMIT_BURST", default_value_t = 2000.0)]
    pub rate_limit_burst: f64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SHOP_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
}

/// One public operation set: a path, the methods it serves, the upstream that serves
/// them, and whether they need a valid token. The path is written as the OpenAPI
/// document (`target-system/openapi.json`) writes it; axum's `{param}` syntax is the
/// same, so one table builds the router and is compared with the document by a test.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [Method],
    upstream: &'static str,
    pub protected: bool,
}

/// Every public route. Exact paths and methods, not prefixes: an operation that is not
/// here (and so not in the contract) is 404 or 405 at the gateway, never forwarded.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/api/v1/auth/login",
        methods: &[Method::POST],
        upstream: "auth",
        protected: false,
    },
    Route {
        path: "/api/v1/products",
        methods: &[Method::GET],
        upstream: "cdn",
        protected: false,
    },
    Route {
        path: "/api/v1/products/{id}",
        methods: &[Method::GET],
        upstream: "cdn",
        protected: false,
    },
    Route {
        path: "/api/v1/home",
        methods: &[Method::GET],
        upstream: "api",
        protected: true,
    },
    Route {
        path: "/api/v1/orders",
        methods: &[Method::GET, Method::POST],
        upstream: "orders",
        protected: true,
    },
    Route {
        path: "/api/v1/orders/{id}",
        methods: &[Method::GET],
        upstream: "orders",
        protected: true,
    },
];

/// The routes the service shell ([`crate::server`]) adds to the gateway, as to every
/// service; documented too.
pub const SHELL_ROUTES: &[(&str, Method)] = &[("/health", Method::GET), ("/metrics", Method::GET)];

/// Per-client token buckets, sharded so that concurrent clients rarely share a lock.
struct RateLimiter {
    rate: f64,
    burst: f64,
    shards: Vec<Mutex<Shard>>,
}

struct Shard {
    buckets: HashMap<String, TokenBucket>,
    /// Size at which the shard next forgets idle clients (whose buckets are full again).
    /// It doubles with the number of active clients, so sweeping stays amortised O(1)
    /// per request even when many clients are active at once.
    next_sweep: usize,
}

/// A shard sweeps idle clients once it holds this many.
const SHARD_SOFT_LIMIT: usize = 4096;

impl RateLimiter {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            shards: (0..16)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        next_sweep: SHARD_SOFT_LIMIT,
                    })
                })
                .collect(),
        }
    }

    fn check(&self, client: &str, now: Instant) -> Result<(), std::time::Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        client.hash(&mut h);
        let mut shard = self.shards[h.finish() as usize % self.shards.len()]
            .lock()
            .unwrap();
        if shard.buckets.len() >= shard.next_sweep && !shard.buckets.contains_key(client) {
            shard.buckets.retain(|_, b| !b.is_full(now));
            shard.next_sweep = SHARD_SOFT_LIMIT.max(shard.buckets.len() * 2);
        }
        shard
            .buckets
            .entry(client.to_owned())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take(now)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

struct Gateway {
    upstreams: HashMap<&'static str, Arc<Upstream>>,
    verifier: Verifier,
    limiter: RateLimiter,
    max_body_bytes: usize,
    rate_limited: Family<RouteLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    body_too_large: Counter,
}

fn unauthorized(e: TokenError) -> Response {
    let mut resp = error(StatusCode::UNAUTHORIZED, e.to_string());
    let challenge = match e {
        TokenError::Missing => "Bearer",
        TokenError::Expired => {
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        }
        TokenError::Invalid => "Bearer error=\"invalid_token\"",
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

async fn proxy(
    gw: Arc<Gateway>,
    route: &'static Route,
    peer: IpAddr,
    deadline: Deadline,
    req: Request,
) -> Response {
    let claims: Result<Claims, TokenError> = gw
        .verifier
        .verify_header(req.headers().get(header::AUTHORIZATION));
    if route.protected
        && let Err(e) = claims
    {
        gw.auth_failures
            .get_or_create(&ReasonLabels {
                reason: e.as_label(),
            })
            .inc();
        return unauthorized(e);
    }
    let client = match &claims {
        Ok(c) => format!("user:{}", c.sub),
        Err(_) => format!("ip:{peer}"),
    };
    if let Err(wait) = gw.limiter.check(&client, Instant::now()) {
        gw.rate_limited
            .get_or_create(&RouteLabels { route: route.path })
            .inc();
        let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
        return resp;
    }

    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > gw.max_body_bytes) {
        gw.body_too_large.inc();
        return too_large(gw.max_body_bytes);
    }
    let body = match Limited::new(body, gw.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            gw.body_too_large.inc();
            return too_large(gw.max_body_bytes);
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
    };

    let mut headers = parts.headers;
    headers.append(
        "x-forwarded-for",
        HeaderValue::from_str(&peer.to_string()).expect("an IP address is a valid header value"),
    );
    if !headers.contains_key("x-request-id") {
        let id = format!("{:016x}", fastrand::u64(..));
        headers.insert(
            "x-request-id",
            HeaderValue::from_str(&id).expect("hex is a valid header value"),
        );
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let retry = RetryPolicy::for_request(&parts.method, &headers);
    let upstream = &gw.upstreams[route.upstream];
    match upstream
        .send(parts.method, path, &headers, body, deadline, retry)
        .await
    {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            let hop: Vec<_> = parts
                .headers
                .keys()
                .filter(|k| is_hop_by_hop(k))
                .cloned()
                .collect();
            for k in hop {
                parts.headers.remove(k);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => e.into_response(),
    }
}

fn too_large(limit: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {limit} bytes"),
    )
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret = jwt::secret_from_env()?;
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let rate_limited = Family::<RouteLabels, Counter>::default();
    let auth_failures = Family::<ReasonLabels, Counter>::default();
    let body_too_large = Counter::default();
    let r = registry.sub_registry_with_prefix("gateway");
    r.register(
        "rate_limited",
        "Requests refused with 429 by the per-client rate limit, by route",
        rate_limited.clone(),
    );
    r.register(
        "auth_failures",
        "Requests refused with 401 on protected routes, by reason (missing, expired, invalid)",
        auth_failures.clone(),
    );
    r.register(
        "body_too_large",
        "Requests refused with 413 for their body size",
        body_too_large.clone(),
    );

    let config = args.upstream.config();
    let mut upstreams = HashMap::new();
    for (name, list) in [
        ("auth", &args.auth),
        ("cdn", &args.cdn),
        ("api", &args.api),
        ("orders", &args.orders),
    ] {
        upstreams.insert(
            name,
            Upstream::new(name, &list.0, config.clone(), upstream_metrics.clone())
                .follow(list.1.as_deref()),
        );
    }
    for route in ROUTES {
        assert!(
            upstreams.contains_key(route.upstream),
            "route to unknown upstream {}",
            route.upstream
        );
    }
    let all: Vec<Arc<Upstream>> = upstreams.values().cloned().collect();
    let gw = Arc::new(Gateway {
        upstreams,
        verifier: Verifier::new(&secret),
        limiter: RateLimiter::new(args.rate_limit_rps, args.rate_limit_burst),
        max_body_bytes: args.max_body_bytes,
        rate_limited,
        auth_failures,
        body_too_large,
    });
    let mut router = Router::new();
    for route in ROUTES {
        let gw = gw.clone();
        let handler =
            move |ConnectInfo(peer): ConnectInfo<SocketAddr>, deadline: Deadline, req: Request| {
                proxy(gw, route, peer.ip(), deadline, req)
            };
        // Other methods are 405 with an `Allow` header (axum's, made JSON by the shell).
        let mut methods = MethodRouter::new();
        for method in route.methods {
            let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
            methods = methods.on(filter, handler.clone());
        }
        router = router.route(route.path, methods);
    }
    let router = router.fallback(server::not_found);
    let service = Service {
        name: "gateway",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    server::serve_with(args.common.listen, service, shutdown, |t| async move {
        futures::future::join_all(all.into_iter().map(|u| u.run_health_checks(t.clone()))).await;
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The OpenAPI document, the public API's contract.
    const OPENAPI: &str = include_str!("../../openapi.json");

    /// The operations of the document: (path, method) with whether it requires a token.
    fn documented() -> std::collections::BTreeMap<(String, String), bool> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        assert_eq!(doc["openapi"], "3.1.0");
        let global = doc["security"].as_array().is_some_and(|s| !s.is_empty());
        let mut ops = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                // A path item also holds non-operation keys (parameters, summary...).
                let known = [
                    "get", "put", "post", "delete", "options", "head", "patch", "trace",
                ];
                if !known.contains(&method.as_str()) {
                    continue;
                }
                let protected = op["security"].as_array().map_or(global, |s| {
                    s.iter()
                        .any(|r| r.as_object().is_some_and(|o| !o.is_empty()))
                });
                ops.insert((path.clone(), method.to_uppercase()), protected);
            }
        }
        ops
    }

    #[test]
    fn the_routes_are_the_documented_operations() {
        let mut served = std::collections::BTreeMap::new();
        for route in ROUTES {
            for method in route.methods {
                let prev = served.insert(
                    (route.path.to_owned(), method.as_str().to_owned()),
                    route.protected,
                );
                assert!(prev.is_none(), "{method} {} routed twice", route.path);
            }
        }
        for (path, method) in SHELL_ROUTES {
            served.insert(((*path).to_owned(), method.as_str().to_owned()), false);
        }
        let documented = documented();
        for (op, protected) in &served {
            match documented.get(op) {
                None => panic!("{} {} is served but not in openapi.json", op.1, op.0),
                Some(p) => assert_eq!(
                    p, protected,
                    "{} {}: a token is required by the gateway: {protected}, by the document: {p}",
                    op.1, op.0
                ),
            }
        }
        for op in documented.keys() {
            assert!(
                served.contains_key(op),
                "{} {} is in openapi.json but the gateway does not serve it",
                op.1,
                op.0
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_client_has_its_own_bucket() {
        let limiter = RateLimiter::new(1.0, 2.0);
        let now = Instant::now();
        assert!(limiter.check("ip:a", now).is_ok());
        assert!(limiter.check("ip:a", now).is_ok());
        assert_eq!(limiter.check("ip:a", now), Err(Duration::from_secs(1)));
        assert!(
            limiter.check("ip:b", now).is_ok(),
            "another client is not limited"
        );
        assert!(
            RateLimiter::new(0.0, 0.0).check("x", now).is_ok(),
            "0 turns it off"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_clients_are_forgotten_when_a_shard_fills() {
        let limiter = RateLimiter::new(100.0, 1.0);
        let now = Instant::now();
        for i in 0..SHARD_SOFT_LIMIT * 32 {
            let _ = limiter.check(&format!("ip:{i}"), now);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        for i in 0..SHARD_SOFT_LIMIT * 32 {
            let _ = limiter.check(&format!("new:{i}"), Instant::now());
        }
        let old: usize = limiter
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap()
                    .buckets
                    .keys()
                    .filter(|k| k.starts_with("ip:"))
                    .count()
            })
            .sum();
        assert_eq!(old, 0, "every idle client was forgotten");
    }
}
