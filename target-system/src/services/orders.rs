//! `shop orders`: creates and reads orders, relays their events through a transactional
//! outbox, and follows payment outcomes.
//!
//! **Create** (`POST /api/v1/orders`, Bearer token, `Idempotency-Key` required) follows
//! Stripe's idempotency: the key is claimed in the user's shard (`if_absent`); a repeat
//! of a finished request replays its stored answer (with `Idempotent-Replayed: true`), a
//! different body under the same key is refused (422), and a repeat while the first is
//! still running is refused (409). The order, its outbox entry and the finished
//! idempotency record are one atomic batch, conditional on the claim, so a request that
//! lost its claim cannot create a second order.
//!
//! **Relay**: every replica scans the outbox of every shard, claims an entry (a
//! conditional write with an expiry), publishes it to the broker, then deletes it. An
//! entry is published at least once; the claims keep replicas from all publishing the
//! same entry in steady state, and an expired claim (a replica died mid-publish) is taken
//! over.
//!
//! **Outcomes**: payment events from the `order-events` queue move an order from
//! `pending` to `paid` or `failed`, once.
//!
//! Reads (`GET /api/v1/orders/{id}`) go to the shard's replica and fall back to the
//! primary when the replica is down, behind, or does not have the order yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs, duration};
use crate::clients::{self, Handled, ReadFrom, Store, StoreError};
use crate::deadline::Deadline;
use crate::error::{dependency_error, error};
use crate::jwt::{self, Verifier};
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::upstream::{Upstream, UpstreamMetrics};
use crate::url::encode;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// Every shard's primary, in shard order.
    #[arg(long, value_parser = addrs)]
    pub store_primaries: Addrs,
    /// Every shard's replica, in shard order.
    #[arg(long, value_parser = addrs)]
    pub store_replicas: Addrs,
    #[arg(long, value_parser = addrs)]
    pub broker: Addrs,
    /// The cdn, for product prices.
    #[arg(long, value_parser = addrs)]
    pub cdn: Addrs,
    /// Topic new orders are published to.
    #[arg(long, default_value = "orders")]
    pub topic: String,
    /// Queue of payment outcomes.
    #[arg(long, default_value = "order-events")]
    pub events_queue: String,
    /// How often each replica scans the outbox when nothing wakes it sooner.
    #[arg(long, env = "SHOP_RELAY_INTERVAL", default_value = "200ms", value_parser = duration)]
    pub relay_interval: Duration,
    /// How long a replica's claim on an outbox entry lasts.
    #[arg(long, env = "SHOP_RELAY_CLAIM_TTL", default_value = "10s", value_parser = duration)]
    pub claim_ttl: Duration,
    /// After this long, a request holding an idempotency key is presumed dead and the
    /// key may be taken over.
    #[arg(long, env = "SHOP_IDEMPOTENCY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub in_flight_timeout: Duration,
    #[arg(long, env = "SHOP_CATALOG_SIZE", default_value_t = 1000)]
    pub products: u32,
    #[arg(long, env = "SHOP_REJECT_DELAY", default_value = "1s", value_parser = duration)]
    pub reject_delay: Duration,
    /// UNSAFE: commit the order without an outbox entry and publish it afterwards, not
    /// atomically: a crash or a broker outage in between strands the order. For
    /// demonstrating the lost-event check.
    #[arg(long, env = "SHOP_UNSAFE_NO_OUTBOX", default_value_t = false, value_parser = clap::builder::BoolishValueParser::new())]
    pub unsafe_no_outbox: bool,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct ItemRequest {
    #[serde(deserialize_with = "integral_u32")]
    product_id: u32,
    #[serde(deserialize_with = "integral_u32")]
    quantity: u32,
}

/// A JSON integer as the contract (JSON Schema's `"type": "integer"`) counts them: `82`
/// and `82.0` alike. serde's `u32` alone refuses `82.0` (found by schemathesis).
fn integral_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(f))
                .map(|f| f as u64)
        })
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected an integer from 0 to {}, got {n}",
                u32::MAX
            ))
        })
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrder {
    items: Vec<ItemRequest>,
}

const MAX_ITEMS: usize = 50;
const MAX_QUANTITY: u32 = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: String,
}

#[derive(Clone)]
struct OrderMetrics {
    created: Counter,
    replays: Counter,
    refused: Family<ReasonLabels, Counter>,
    published: Counter,
    claim_conflicts: Counter,
    outbox_pending: Family<ShardLabels, Gauge>,
    outcomes: Family<StatusLabels, Counter>,
    fallbacks: Family<ReasonLabels, Counter>,
}

struct AppState {
    verifier: Verifier,
    store: Store,
    broker: clients::Broker,
    cdn: Arc<Upstream>,
    topic: String,
    in_flight_timeout: Duration,
    claim_ttl: Duration,
    products: u32,
    unsafe_no_outbox: bool,
    relay_wake: Notify,
    relay_offset: AtomicUsize,
    me: String,
    metrics: OrderMetrics,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Order ids sort by creation time, so a user's orders scan oldest first.
fn new_order_id() -> String {
    format!("ord_{:012x}{:08x}", now_ms(), fastrand::u32(..))
}

/// Whether `id` has the shape [`new_order_id`] gives: `ord_` and 20 lowercase hex
/// digits. Checked where an id enters, so no client's id reaches the store otherwise.
fn is_order_id(id: &str) -> bool {
    id.strip_prefix("ord_").is_some_and(|hex| {
        hex.len() == 20 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Whether `k` is an Idempotency-Key the contract accepts: 1 to 255 printable ASCII
/// characters (spaces inside). `to_str` alone also lets a tab through, which the
/// contract (openapi.json) does not.
fn is_idempotency_key(k: &str) -> bool {
    (1..=255).contains(&k.len()) && k.bytes().all(|b| (b' '..=b'~').contains(&b))
}

fn order_key(user: &str, id: &str) -> String {
    format!("order/{user}/{id}")
}

fn store_failure(e: StoreError) -> Response {
    if let StoreError::Client(c) = &e
        && let Some(invalid) = c.invalid_request()
    {
        // The request's input could not make a store request: this service's caller
        // is to blame, not the store.
        return invalid.clone().into_response();
    }
    dependency_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store",
        format!("the order store is unavailable: {e}"),
    )
}

/// The user named by the request's token (the gateway checked it; checking again keeps
/// the service safe when reached some other way).
fn user_of(s: &AppState, headers: &HeaderMap) -> Result<String, jwt::TokenError> {
    s.verifier
        .verify_header(headers.get(header::AUTHORIZATION))
        .map(|c| c.sub)
}

fn unauthorized(e: jwt::TokenError) -> Response {
    error(StatusCode::UNAUTHORIZED, e.to_string())
}

impl AppState {
    /// Prices every item through the cdn; `Err` is the answer to give.
    async fn price(
        &self,
        items: &[ItemRequest],
        deadline: Deadline,
    ) -> Result<(Vec<Value>, u64), Response> {
        let fetches = items.iter().map(|item| async move {
            let id = item.product_id.to_string();
            let path = format!("/api/v1/products/{}", encode(&id));
            (item, self.cdn.get(&path, deadline).await)
        });
        let mut priced = Vec::new();
        let mut total = 0u64;
        for (item, result) in futures::future::join_all(fetches).await {
            let price = match result {
                Ok((StatusCode::OK, _, body)) => serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["price_cents"].as_u64()),
                Ok((StatusCode::NOT_FOUND, _, _)) => {
                    return Err(error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("no product {}", item.product_id),
                    ));
                }
                _ => None,
            };
            let Some(price) = price else {
                return Err(dependency_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cdn",
                    "cannot price the order: the catalog is unavailable",
                ));
            };
            total += price * u64::from(item.quantity);
            priced.push(json!({ "product_id": item.product_id, "quantity": item.quantity, "price_cents": price }));
        }
        Ok((priced, total))
    }
}

async fn create(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (user, key, req) = match checked_create(&s, &headers, &body) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let hash = hex(&sha2::Sha256::digest(
        serde_json::to_vec(&req).expect("serialises"),
    ));
    let shard = s.store.shard(&user);
    let idem_key = format!("idem/{user}/{key}");
    let claim = match claim_key(&s, shard, &idem_key, &hash, deadline).await {
        Ok(lsn) => lsn,
        Err(resp) => return resp,
    };
    let (items, amount) = match s.price(&req.items, deadline).await {
        Ok(p) => p,
        Err(resp) => {
            // Nothing was created: free the key so that the client's retry can succeed.
            let release = json!({ "op": "delete", "key": idem_key, "if_version": claim });
            let _ = s.store.batch(shard, vec![release], deadline).await;
            return resp;
        }
    };
    let claimed = Claimed {
        shard,
        user,
        idem_key,
        hash,
        lsn: claim,
    };
    commit(&s, claimed, items, amount, deadline).await
}

/// An answer given instead of going on (boxed: a response is large).
type Refusal = Box<Response>;

/// The caller, its Idempotency-Key and its order, checked; the answer to give
/// otherwise.
fn checked_create(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, String, CreateOrder), Refusal> {
    let refuse = |status, message: String| Box::new(error(status, message));
    let user = user_of(s, headers).map_err(|e| Box::new(unauthorized(e)))?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| is_idempotency_key(k))
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "an Idempotency-Key header (1 to 255 printable ASCII characters) is required"
                    .into(),
            )
        })?
        .to_owned();
    let req: CreateOrder = serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"items\":[{{\"product_id\":N,\"quantity\":N}}]}}: {e}"),
        )
    })?;
    if req.items.is_empty() || req.items.len() > MAX_ITEMS {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("an order has 1 to {MAX_ITEMS} items"),
        ));
    }
    if let Some(bad) = req
        .items
        .iter()
        .find(|i| i.product_id == 0 || i.product_id > s.products)
    {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("no product {}", bad.product_id),
        ));
    }
    if let Some(bad) = req
        .items
        .iter()
        .find(|i| i.quantity == 0 || i.quantity > MAX_QUANTITY)
    {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "quantity {} of product {}: quantities are 1 to {MAX_QUANTITY}",
                bad.quantity, bad.product_id
            ),
        ));
    }
    Ok((user, key, req))
}

/// Claims the Idempotency-Key for this request (the claim's version), or answers for
/// the request that holds it: a replay of its order, a conflict while it is in flight.
async fn claim_key(
    s: &AppState,
    shard: usize,
    idem_key: &str,
    hash: &str,
    deadline: Deadline,
) -> Result<u64, Response> {
    let claim_value = json!({ "state": "in_flight", "request_hash": hash, "started_ms": now_ms() });
    let put_claim =
        json!({ "op": "put", "key": idem_key, "value": claim_value, "if_absent": true });
    match s.store.batch(shard, vec![put_claim], deadline).await {
        Ok(lsn) => Ok(lsn),
        Err(StoreError::Conflict(_)) => {
            match s
                .store
                .get(shard, idem_key, ReadFrom::Primary, deadline)
                .await
            {
                Ok(Some(existing)) => {
                    answer_for_holder(s, &existing.value, hash).map_err(|r| *r)?;
                    // The request holding the key is presumed dead: take the key over.
                    let takeover = json!({ "op": "put", "key": idem_key, "value": claim_value, "if_version": existing.version });
                    match s.store.batch(shard, vec![takeover], deadline).await {
                        Ok(lsn) => Ok(lsn),
                        Err(StoreError::Conflict(_)) => Err(error(
                            StatusCode::CONFLICT,
                            "a request with this Idempotency-Key is in progress; retry later",
                        )),
                        Err(e) => Err(store_failure(e)),
                    }
                }
                Ok(None) => Err(error(
                    StatusCode::CONFLICT,
                    "a request with this Idempotency-Key just ended; retry",
                )),
                Err(e) => Err(store_failure(e)),
            }
        }
        Err(e) => Err(store_failure(e)),
    }
}

/// The answer the claim `v` of another request calls for: its order to replay, or a
/// refusal (the key reused for another body, or a request still in flight); `Ok` when
/// its holder is presumed dead and the key may be taken over.
fn answer_for_holder(s: &AppState, v: &serde_json::Value, hash: &str) -> Result<(), Refusal> {
    if v["request_hash"] != hash {
        s.metrics
            .refused
            .get_or_create(&ReasonLabels {
                reason: "key_reused",
            })
            .inc();
        return Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was used with a different request body",
        )));
    }
    if v["state"] == "done" {
        s.metrics.replays.inc();
        let status = v["response"]["status"]
            .as_u64()
            .and_then(|c| StatusCode::from_u16(c as u16).ok());
        let mut resp = (
            status.unwrap_or(StatusCode::CREATED),
            Json(v["response"]["body"].clone()),
        )
            .into_response();
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Err(Box::new(resp));
    }
    let started = v["started_ms"].as_u64().unwrap_or(0);
    if now_ms().saturating_sub(started) < s.in_flight_timeout.as_millis() as u64 {
        s.metrics
            .refused
            .get_or_create(&ReasonLabels {
                reason: "in_flight",
            })
            .inc();
        return Err(Box::new(error(
            StatusCode::CONFLICT,
            "a request with this Idempotency-Key is in progress; retry later",
        )));
    }
    Ok(())
}

/// An Idempotency-Key this request holds.
struct Claimed {
    shard: usize,
    user: String,
    idem_key: String,
    hash: String,
    /// The claim's version: the order commits only if the claim is still this one.
    lsn: u64,
}

/// Commits the order, the key's answer and the outbox entry as one batch, and answers.
async fn commit(
    s: &AppState,
    c: Claimed,
    items: Vec<serde_json::Value>,
    amount: u64,
    deadline: Deadline,
) -> Response {
    let Claimed {
        shard,
        user,
        idem_key,
        hash,
        lsn: claim,
    } = c;
    let order_id = new_order_id();
    let now = now_ms();
    let order = json!({
        "order_id": order_id,
        "user": user,
        "status": "pending",
        "items": items,
        "amount_cents": amount,
        "created_ms": now,
        "updated_ms": now,
    });
    let response = json!({ "order_id": order_id, "status": "pending", "amount_cents": amount });
    let event = json!({ "order_id": order_id, "user": user, "amount_cents": amount }).to_string();
    let done = json!({ "state": "done", "request_hash": hash, "response": { "status": 201, "body": response } });
    let mut ops = vec![
        json!({ "op": "put", "key": order_key(&user, &order_id), "value": order, "if_absent": true }),
        json!({ "op": "put", "key": idem_key, "value": done, "if_version": claim }),
    ];
    if !s.unsafe_no_outbox {
        ops.push(json!({
            "op": "put",
            "key": format!("outbox/{order_id}"),
            "value": { "topic": s.topic, "body": event, "claim": null },
        }));
    }
    match s.store.batch(shard, ops, deadline).await {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => {
            return error(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is in progress; retry later",
            );
        }
        // The batch may or may not have committed; the key stays claimed, so a retry
        // either replays the order or, once the claim times out, creates it once.
        Err(e) => return store_failure(e),
    }
    s.metrics.created.inc();
    if s.unsafe_no_outbox {
        if let Err(e) = s.broker.publish(&s.topic, &event).await {
            tracing::error!(order = order_id, error = %e, "UNSAFE no-outbox mode: the order's event is lost");
        }
    } else {
        s.relay_wake.notify_one();
    }
    (StatusCode::CREATED, Json(response)).into_response()
}

async fn get_order(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let user = match user_of(&s, &headers) {
        Ok(u) => u,
        Err(e) => return unauthorized(e),
    };
    if !is_order_id(&id) {
        // Not echoed: the id is whatever the client sent, of any length.
        return error(
            StatusCode::NOT_FOUND,
            "no such order: order ids are ord_ and 20 hex digits",
        );
    }
    let shard = s.store.shard(&user);
    match s
        .store
        .get(shard, &order_key(&user, &id), ReadFrom::Replica, deadline)
        .await
    {
        Ok(Some(item)) => Json(item.value).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no order {id}")),
        Err(e) => store_failure(e),
    }
}

/// The most orders one list answers.
const MAX_LIST_LIMIT: usize = 100;

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
}

async fn list(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Response {
    let user = match user_of(&s, &headers) {
        Ok(u) => u,
        Err(e) => return unauthorized(e),
    };
    // Out of range is refused, not clamped: the contract (openapi.json) says 1 to 100,
    // and a caller asking for 1000 should learn it gets at most 100.
    let limit = p.limit.unwrap_or(10);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_LIST_LIMIT}"),
        );
    }
    let shard = s.store.shard(&user);
    match s
        .store
        .scan(shard, &format!("order/{user}/"), 100_000, deadline)
        .await
    {
        Ok(items) => {
            let orders: Vec<Value> = items
                .into_iter()
                .rev()
                .take(limit)
                .map(|i| i.value)
                .collect();
            Json(json!({ "orders": orders })).into_response()
        }
        Err(e) => store_failure(e),
    }
}

/// Every order of every shard, for outside checkers.
async fn audit(State(s): State<Arc<AppState>>, deadline: Deadline) -> Response {
    let mut orders = Vec::new();
    for shard in 0..s.store.shards() {
        match s.store.scan(shard, "order/", usize::MAX, deadline).await {
            Ok(items) => orders.extend(items.into_iter().map(|i| i.value)),
            Err(e) => return store_failure(e),
        }
    }
    Json(json!({ "orders": orders })).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Publishes the outbox entries of one shard that no other replica holds.
async fn relay_shard(s: &AppState, shard: usize) {
    let deadline = Deadline(Instant::now() + Duration::from_secs(5));
    let Ok(items) = s.store.scan(shard, "outbox/", 200, deadline).await else {
        return;
    };
    s.metrics
        .outbox_pending
        .get_or_create(&ShardLabels {
            shard: shard.to_string(),
        })
        .set(items.len() as i64);
    if items.is_empty() {
        return;
    }
    // Replicas start at different entries, so that they mostly claim different ones.
    let start = s.relay_offset.fetch_add(7, Ordering::Relaxed) % items.len();
    for item in items[start..].iter().chain(&items[..start]) {
        let now = now_ms();
        let claim = &item.value["claim"];
        let held_by = claim["owner"].as_str();
        let live = claim["until_ms"].as_u64().is_some_and(|u| u > now);
        if live && held_by != Some(s.me.as_str()) {
            continue;
        }
        let mut claimed = item.value.clone();
        claimed["claim"] =
            json!({ "owner": s.me, "until_ms": now + s.claim_ttl.as_millis() as u64 });
        let put =
            json!({ "op": "put", "key": item.key, "value": claimed, "if_version": item.version });
        let version = match s.store.batch(shard, vec![put], deadline).await {
            Ok(lsn) => lsn,
            Err(StoreError::Conflict(_)) => {
                s.metrics.claim_conflicts.inc();
                continue;
            }
            Err(_) => return,
        };
        let topic = item.value["topic"].as_str().unwrap_or(&s.topic);
        let body = item.value["body"].as_str().unwrap_or_default();
        if let Err(e) = s.broker.publish(topic, body).await {
            // Keep the claim: it lapses, and the entry is published later.
            tracing::warn!(error = %e, "cannot publish from the outbox; will retry");
            return;
        }
        s.metrics.published.inc();
        let delete = json!({ "op": "delete", "key": item.key, "if_version": version });
        let _ = s.store.batch(shard, vec![delete], deadline).await;
    }
}

async fn relay(s: Arc<AppState>, interval: Duration, shutdown: CancellationToken) {
    loop {
        for shard in 0..s.store.shards() {
            relay_shard(&s, shard).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = s.relay_wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[derive(Deserialize)]
struct Outcome {
    order_id: String,
    user: String,
    outcome: String,
    charge_id: Option<String>,
}

/// Applies one payment outcome to its order, once.
async fn apply_outcome(s: &AppState, m: clients::Message) -> Handled {
    let Ok(o) = serde_json::from_str::<Outcome>(&m.body) else {
        return Handled::Reject;
    };
    let status: &'static str = match o.outcome.as_str() {
        "paid" => "paid",
        "failed" => "failed",
        _ => return Handled::Reject,
    };
    let shard = s.store.shard(&o.user);
    let key = order_key(&o.user, &o.order_id);
    for _ in 0..5 {
        let deadline = Deadline(Instant::now() + Duration::from_secs(5));
        let item = match s.store.get(shard, &key, ReadFrom::Primary, deadline).await {
            Ok(Some(i)) => i,
            // An outcome for an order that does not exist is not ours to fix.
            Ok(None) => return Handled::Reject,
            Err(_) => return Handled::Later,
        };
        if item.value["status"] != "pending" {
            return Handled::Done;
        }
        let mut order = item.value.clone();
        order["status"] = json!(status);
        order["updated_ms"] = json!(now_ms());
        order["charge_id"] = json!(o.charge_id);
        let put = json!({ "op": "put", "key": key, "value": order, "if_version": item.version });
        match s.store.batch(shard, vec![put], deadline).await {
            Ok(_) => {
                s.metrics
                    .outcomes
                    .get_or_create(&StatusLabels { status })
                    .inc();
                return Handled::Done;
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(_) => return Handled::Later,
        }
    }
    Handled::Later
}

impl OrderMetrics {
    /// `shop_orders_*`, registered in `r`.
    fn register(r: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = OrderMetrics {
            created: Counter::default(),
            replays: Counter::default(),
            refused: Family::default(),
            published: Counter::default(),
            claim_conflicts: Counter::default(),
            outbox_pending: Family::default(),
            outcomes: Family::default(),
            fallbacks: Family::default(),
        };
        r.register("created", "Orders created", metrics.created.clone());
        r.register(
            "idempotent_replays",
            "Repeated requests answered from the idempotency record",
            metrics.replays.clone(),
        );
        r.register(
            "idempotency_refusals",
            "Requests refused for their Idempotency-Key, by reason",
            metrics.refused.clone(),
        );
        r.register(
            "outbox_published",
            "Outbox entries published to the broker",
            metrics.published.clone(),
        );
        r.register(
            "outbox_claim_conflicts",
            "Outbox entries another replica claimed first",
            metrics.claim_conflicts.clone(),
        );
        r.register(
            "outbox_pending",
            "Outbox entries waiting, by shard, at the last scan",
            metrics.outbox_pending.clone(),
        );
        r.register(
            "outcomes_applied",
            "Payment outcomes applied to orders, by status",
            metrics.outcomes.clone(),
        );
        r.register(
            "replica_read_fallbacks",
            "Reads sent to the primary instead of the replica, by reason",
            metrics.fallbacks.clone(),
        );
        metrics
    }
}

/// The sharded store: a primary and a replica upstream per shard (no retries: a
/// batch is never sent twice), counting reads that fall back to the primary.
fn store_client(
    args: &Args,
    metrics: &UpstreamMetrics,
    fallbacks: Family<ReasonLabels, Counter>,
) -> Store {
    let mut store_config = args.upstream.config();
    store_config.max_retries = 0;
    let primaries = args
        .store_primaries
        .0
        .iter()
        .map(|a| {
            Upstream::new(
                "store-primary",
                &[*a],
                store_config.clone(),
                metrics.clone(),
            )
        })
        .collect::<Vec<_>>();
    let replicas = args
        .store_replicas
        .0
        .iter()
        .map(|a| {
            Upstream::new(
                "store-replica",
                &[*a],
                store_config.clone(),
                metrics.clone(),
            )
        })
        .collect::<Vec<_>>();
    Store::new(
        primaries,
        replicas,
        Arc::new(move |reason| {
            fallbacks.get_or_create(&ReasonLabels { reason }).inc();
        }),
    )
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let secret = jwt::secret_from_env()?;
    anyhow::ensure!(
        args.store_primaries.0.len() == args.store_replicas.0.len(),
        "--store-primaries and --store-replicas must list one address per shard each"
    );
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let metrics = OrderMetrics::register(registry.sub_registry_with_prefix("orders"));
    let store = store_client(&args, &upstream_metrics, metrics.fallbacks.clone());
    let broker = clients::Broker::new(
        &args.broker.0,
        &args.upstream.config(),
        upstream_metrics.clone(),
    );
    let broker_up = broker.upstream().clone();
    let cdn = Upstream::new("cdn", &args.cdn.0, args.upstream.config(), upstream_metrics)
        .follow(args.cdn.1.as_deref());
    if args.unsafe_no_outbox {
        tracing::warn!("UNSAFE: publishing order events without the outbox");
    }
    let state = Arc::new(AppState {
        verifier: Verifier::new(&secret),
        store: store.clone(),
        broker: broker.clone(),
        cdn: cdn.clone(),
        topic: args.topic.clone(),
        in_flight_timeout: args.in_flight_timeout,
        claim_ttl: args.claim_ttl,
        products: args.products,
        unsafe_no_outbox: args.unsafe_no_outbox,
        relay_wake: Notify::new(),
        relay_offset: AtomicUsize::new(fastrand::usize(..1000)),
        me: format!("{:016x}", fastrand::u64(..)),
        metrics,
    });
    let router = Router::new()
        .route("/api/v1/orders", get(list).post(create))
        .route("/api/v1/orders/{id}", get(get_order))
        .route("/v1/audit/orders", get(audit))
        .fallback(server::not_found)
        .with_state(state.clone());
    let service = Service {
        name: "orders",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    let (interval, queue, reject_delay) = (
        args.relay_interval,
        args.events_queue.clone(),
        args.reject_delay,
    );
    let background = move |t: CancellationToken| async move {
        let consumer_state = state.clone();
        let consumer = clients::consume(
            state.broker.clone(),
            queue,
            reject_delay,
            t.clone(),
            move |m| {
                let s = consumer_state.clone();
                async move { apply_outcome(&s, m).await }
            },
        );
        let checks = store
            .upstreams()
            .chain([&broker_up, &cdn])
            .map(|u| u.clone().run_health_checks(t.clone()))
            .collect::<Vec<_>>();
        tokio::join!(
            relay(state.clone(), interval, t.clone()),
            consumer,
            futures::future::join_all(checks)
        );
    };
    server::serve_with(args.common.listen, service, shutdown, background).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_json_schemas_integers() {
        let parse =
            |s: &str| serde_json::from_str::<ItemRequest>(s).map(|i| (i.product_id, i.quantity));
        assert_eq!(
            parse(r#"{"product_id":7,"quantity":82.0}"#).unwrap(),
            (7, 82)
        );
        assert_eq!(parse(r#"{"product_id":7e0,"quantity":1}"#).unwrap(), (7, 1));
        for bad in [
            "1.5",
            "-1",
            "-1.0",
            "4294967296",
            "4294967296.0",
            "\"1\"",
            "null",
        ] {
            let body = format!(r#"{{"product_id":1,"quantity":{bad}}}"#);
            assert!(parse(&body).is_err(), "{body}");
        }
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_up_to_255() {
        assert!(is_idempotency_key("order 1"));
        assert!(is_idempotency_key(&"k".repeat(255)));
        for bad in ["", "a\tb", "é", &"k".repeat(256)] {
            assert!(!is_idempotency_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn order_ids_are_recognised_and_nothing_else_is() {
        assert!(is_order_id(&new_order_id()));
        assert!(is_order_id("ord_0123456789abcdef0123"));
        for bad in [
            "",
            "ord_",
            "ord_0123456789ABCDEF0123",
            "ord_0123456789abcdef012",
            "ord_0123456789abcdef01234",
            "ord_0123456789abcdef012 ",
            "ord_..",
            "x y",
            "\0",
            "ord_0123456789abcdef01\u{e9}",
        ] {
            assert!(!is_order_id(bad), "{bad:?}");
        }
    }
}
