//! `shop store`: a durable key/value store; one process is one member of one shard's
//! replication group of three.
//!
//! A shard is a **primary**, a **replica** and a **witness**, each with its own
//! write-ahead log. One of them leads (Raft's rules, terms and votes, see [`node`] and
//! [`election`]): the leader logs every batch (group commit, `fdatasync`), sends it to
//! the others, and answers the write only once a follower has it durably too
//! (semi-synchronous: a majority of the three). A batch is atomic and may carry
//! conditions (`if_absent`, `if_version`), so an order, its outbox entry and its
//! idempotency record commit together or not at all. Every key's version is the log
//! sequence number (LSN) of the batch that last wrote it.
//!
//! When the leader is silent for an election timeout, the replica (or the primary)
//! asks for votes in a new term; a member votes once a term, and only for a log at
//! least as up to date as its own, so the new leader holds every acknowledged write.
//! Followers refuse appends of an older term, and a leader that hears from no follower
//! steps down: a deposed leader cannot have a write acknowledged. When it comes back it
//! follows, and a log that diverges from the leader's is replaced by the leader's
//! snapshot (the un-acknowledged tail is cut off). The witness never leads.
//!
//! Any member serves reads, with the entries it is behind in `X-Store-Lag`; a read or
//! write that needs the leader is answered 421 by another member, with the leader's
//! seat (`leader`: 0 primary, 1 replica) and the term.
//!
//! API: `POST /v1/batch`, `GET /v1/keys/{key}[?leader=true]`,
//! `GET /v1/scan?prefix=&after=&limit=[&leader=true]`, `GET /v1/status`; between
//! members: `POST /v1/append`, `POST /v1/pull`, `POST /v1/vote`, `POST /v1/catchup`.

mod data;
pub mod election;
mod metrics;
pub mod node;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs};
use crate::deadline::Deadline;
use crate::error::error;
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::upstream::{Upstream, UpstreamMetrics};
use crate::wal::CheckpointArgs;
use data::OpRequest;
use metrics::StoreMetrics;
use node::{
    MEMBERS, Modes, Node, PRIMARY, Position, REPLICA, Settings, State as Seat, VoteRequest,
    WITNESS, Write, WriteError,
};

/// A member's seat in its shard's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Leads first.
    Primary,
    /// Takes over when the primary is lost.
    Replica,
    /// Keeps the log and votes; never leads.
    Witness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Replication {
    /// Answer a write once a follower has it durably too.
    SemiSync,
    /// Answer a write once the leader has it durably (a failover may lose it).
    Async,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    #[arg(long, value_enum)]
    pub role: Role,
    /// Where the member keeps its log.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The member's shard, from 1.
    #[arg(long)]
    pub shard: usize,
    /// Addresses of every shard's replica, in shard order (the primary's peers).
    #[arg(long, value_parser = addrs)]
    pub replicas: Option<Addrs>,
    /// Addresses of every shard's witness, in shard order (the primary's and the
    /// replica's peers).
    #[arg(long, value_parser = addrs)]
    pub witnesses: Option<Addrs>,
    /// When a write is answered: semi-sync (a follower has it durably) or async (the
    /// leader alone has it; kept to measure what safety costs).
    #[arg(
        long,
        value_enum,
        env = "SHOP_STORE_REPLICATION",
        default_value = "semi-sync"
    )]
    pub replication: Replication,
    /// Base election timeout; each member draws its own between it and 1.6 times it.
    #[arg(long, env = "SHOP_STORE_ELECTION_TIMEOUT", default_value = "1s", value_parser = crate::args::duration)]
    pub election_timeout: Duration,
    /// UNSAFE: acknowledge writes before they are written, flushing the log every
    /// 200 ms. A crash loses acknowledged writes. For demonstrating the durability checks.
    #[arg(long, env = "SHOP_UNSAFE_NO_FSYNC", default_value_t = false, value_parser = clap::builder::BoolishValueParser::new())]
    pub unsafe_no_fsync: bool,
    /// UNSAFE: no fencing. A leader answers writes without a follower's
    /// acknowledgement and keeps leading when cut off from its followers, so a
    /// partition makes two leaders and the deposed one's writes are lost when it
    /// rejoins. For demonstrating the split-brain checks.
    #[arg(long, env = "SHOP_UNSAFE_NO_FENCING", default_value_t = false, value_parser = clap::builder::BoolishValueParser::new())]
    pub unsafe_no_fencing: bool,
    /// Batches a member keeps in memory for followers; one further behind gets a
    /// snapshot.
    #[arg(long, env = "SHOP_STORE_TAIL", default_value_t = 100_000)]
    pub tail: usize,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    ops: Vec<OpRequest>,
}

struct AppState {
    node: Arc<Node>,
    writes: mpsc::Sender<Write>,
}

/// 421 with the leader's seat when this member knows it.
fn not_leader(term: u64, leader: Option<usize>) -> Response {
    let leader = leader.filter(|l| *l != WITNESS);
    (
        StatusCode::MISDIRECTED_REQUEST,
        Json(serde_json::json!({
            "error": "this member does not lead its shard",
            "term": term,
            "leader": leader,
        })),
    )
        .into_response()
}

fn lag_headers(resp: &mut Response, s: &AppState) {
    let (entries, _) = s.node.lag();
    let lsn = s.node.data.read().unwrap().lsn;
    resp.headers_mut()
        .insert("x-store-lsn", HeaderValue::from(lsn));
    resp.headers_mut()
        .insert("x-store-lag", HeaderValue::from(entries));
}

/// 421 unless this member leads, when the caller asks for the leader.
fn require_leader(s: &AppState, leader: bool) -> Option<Response> {
    if !leader {
        return None;
    }
    let core = s.node.lock();
    (core.state != Seat::Leader).then(|| not_leader(core.term, s.node.leader_hint(&core)))
}

async fn batch(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad batch: {}", e.body_text()),
            );
        }
    };
    let (tx, rx) = oneshot::channel();
    if s.writes.send((req.ops, tx)).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log writer has stopped",
        );
    }
    let (lsn, term) = match rx.await {
        Ok(Ok(v)) => v,
        Ok(Err(WriteError::Conflict(key))) => {
            s.node.metrics.conflicts.inc();
            return (
                StatusCode::CONFLICT,
                Json(serde_json::json!({ "error": format!("condition failed on key {key}"), "key": key })),
            )
                .into_response();
        }
        Ok(Err(WriteError::Invalid(msg))) => return error(StatusCode::BAD_REQUEST, msg),
        Ok(Err(WriteError::NotLeader { term, leader })) => return not_leader(term, leader),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the log writer has stopped",
            );
        }
    };
    if s.node.modes.waits_for_follower() {
        let mut acked = s.node.acked.subscribe();
        let until = deadline.min_after(Instant::now(), Duration::from_secs(10));
        let seen = tokio::time::timeout_at(until, acked.wait_for(|(t, l)| *t != term || *l >= lsn))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|v| *v);
        if seen.is_none_or(|(t, l)| t != term || l < lsn) {
            s.node.metrics.unreplicated.inc();
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no follower acknowledged the write in time; it may or may not be kept",
            );
        }
    }
    s.node.metrics.batches.inc();
    Json(serde_json::json!({ "lsn": lsn })).into_response()
}

#[derive(Serialize)]
struct Item<'a> {
    key: &'a str,
    value: &'a RawValue,
    version: u64,
}

#[derive(Deserialize)]
struct ReadParams {
    #[serde(default)]
    leader: bool,
}

async fn get_key(
    State(s): State<Arc<AppState>>,
    Path(key): Path<String>,
    Query(p): Query<ReadParams>,
) -> Response {
    if let Some(r) = require_leader(&s, p.leader) {
        return r;
    }
    let entry = s.node.data.read().unwrap().map.get(&key).cloned();
    let mut resp = match entry {
        Some(e) => Json(Item {
            key: &key,
            value: &e.value,
            version: e.version,
        })
        .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no key {key}")),
    };
    lag_headers(&mut resp, &s);
    resp
}

#[derive(Deserialize)]
struct ScanParams {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    leader: bool,
}

async fn scan(State(s): State<Arc<AppState>>, Query(p): Query<ScanParams>) -> Response {
    if let Some(r) = require_leader(&s, p.leader) {
        return r;
    }
    let limit = p.limit.unwrap_or(100).min(10_000);
    let data = s.node.data.read().unwrap();
    let start = match &p.after {
        Some(a) if a.as_str() >= p.prefix.as_str() => std::ops::Bound::Excluded(a.clone()),
        _ => std::ops::Bound::Included(p.prefix.clone()),
    };
    let items: Vec<Item> = data
        .map
        .range((start, std::ops::Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(&p.prefix))
        .take(limit)
        .map(|(k, e)| Item {
            key: k,
            value: &e.value,
            version: e.version,
        })
        .collect();
    let body = serde_json::json!({ "items": items, "lsn": data.lsn });
    drop(data);
    let mut resp = Json(body).into_response();
    lag_headers(&mut resp, &s);
    resp
}

const SEATS: [&str; MEMBERS] = ["primary", "replica", "witness"];

async fn status(State(s): State<Arc<AppState>>) -> Response {
    let (entries, seconds) = s.node.lag();
    let (term, state, leader, lsn) = {
        let core = s.node.lock();
        (
            core.term,
            core.state,
            s.node.leader_hint(&core),
            core.tail.last().0,
        )
    };
    let keys = s.node.data.read().unwrap().map.len();
    Json(serde_json::json!({
        "role": match state { Seat::Leader => "leader", Seat::Follower => "follower", Seat::Candidate => "candidate" },
        "seat": SEATS[s.node.me],
        "member": s.node.me,
        "shard": s.node.shard,
        "term": term,
        "leader": leader,
        "lsn": lsn,
        "keys": keys,
        "lag_entries": entries,
        "lag_seconds": seconds,
    }))
    .into_response()
}

async fn append(State(s): State<Arc<AppState>>, Json(a): Json<node::Append>) -> Response {
    Json(s.node.accept(a)).into_response()
}

/// What this member holds after the caller's last batch, when its log is more up to
/// date (a candidate catching up before it stands); 204 when it is not.
async fn catchup(State(s): State<Arc<AppState>>, Json(after): Json<(u64, u64)>) -> Response {
    match s.node.catch_up_for(after) {
        Some(a) => Json(a).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn vote(State(s): State<Arc<AppState>>, Json(req): Json<VoteRequest>) -> Response {
    Json(s.node.vote(&req)).into_response()
}

/// A follower asks for the batches after its position (long poll); its asking tells
/// the leader what it holds.
async fn pull(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    Json(p): Json<Position>,
) -> Response {
    let term = {
        let mut core = s.node.lock();
        s.node.observe_term(&mut core, p.term, None);
        if core.state != Seat::Leader || p.term < core.term || p.member >= MEMBERS {
            return not_leader(core.term, s.node.leader_hint(&core));
        }
        s.node.record(&mut core, &p);
        core.term
    };
    let mut durable = s.node.durable.subscribe();
    let until = deadline.min_after(Instant::now(), Duration::from_millis(300));
    let _ = tokio::time::timeout_at(until, durable.wait_for(|d| *d > p.last_lsn)).await;
    let core = s.node.lock();
    if core.state != Seat::Leader || core.term != term {
        return not_leader(core.term, s.node.leader_hint(&core));
    }
    Json(s.node.build_append(&core, (p.last_lsn, p.last_term))).into_response()
}

/// The leader's writer: takes every write waiting and commits them as one group.
async fn write_loop(node: Arc<Node>, mut rx: mpsc::Receiver<Write>) {
    let mut flush = tokio::time::interval(Duration::from_millis(200));
    loop {
        let first = tokio::select! {
            w = rx.recv() => w,
            _ = flush.tick(), if node.modes.unsafe_no_fsync => {
                node.flush_unsafe();
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut group = vec![first];
        while group.len() < 512 {
            match rx.try_recv() {
                Ok(w) => group.push(w),
                Err(_) => break,
            }
        }
        node.commit_group(group);
    }
    if node.modes.unsafe_no_fsync {
        node.flush_unsafe();
    }
}

fn refresh_metrics(node: &Node) {
    let (lsn, keys) = {
        let d = node.data.read().unwrap();
        (d.lsn, d.map.len())
    };
    node.metrics.lsn.set(lsn as i64);
    node.metrics.keys.set(keys as i64);
    let (entries, seconds) = node.lag();
    node.metrics.lag_entries.set(entries as i64);
    node.metrics.lag_seconds.set(seconds);
}

/// The member's peers, by seat: whom it can call.
fn peers(
    args: &Args,
    metrics: &UpstreamMetrics,
) -> anyhow::Result<[Option<Arc<Upstream>>; MEMBERS]> {
    let mut config = args.upstream.config();
    config.per_try_timeout = Duration::from_secs(3);
    config.max_retries = 0;
    config.health = None;
    let pick =
        |list: &Option<Addrs>, flag: &str, name: &str| -> anyhow::Result<Option<Arc<Upstream>>> {
            let Some(list) = list else { return Ok(None) };
            let addr = *list.0.get(args.shard.wrapping_sub(1)).ok_or_else(|| {
                anyhow::anyhow!(
                    "--shard {} but only {} addresses in {flag}",
                    args.shard,
                    list.0.len()
                )
            })?;
            Ok(Some(Upstream::new(
                name,
                &[addr],
                config.clone(),
                metrics.clone(),
            )))
        };
    let mut peers: [Option<Arc<Upstream>>; MEMBERS] = [None, None, None];
    match args.role {
        Role::Primary => {
            peers[REPLICA] = pick(&args.replicas, "--replicas", "store-replica")?;
            peers[WITNESS] = pick(&args.witnesses, "--witnesses", "store-witness")?;
        }
        Role::Replica => peers[WITNESS] = pick(&args.witnesses, "--witnesses", "store-witness")?,
        Role::Witness => {}
    }
    Ok(peers)
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let metrics = StoreMetrics::register(registry.sub_registry_with_prefix("store"));
    if args.unsafe_no_fsync {
        tracing::warn!("UNSAFE: acknowledging writes before they are durable");
    }
    if args.unsafe_no_fencing {
        tracing::warn!("UNSAFE: no fencing; a cut-off leader keeps acknowledging writes");
    }
    let me = match args.role {
        Role::Primary => PRIMARY,
        Role::Replica => REPLICA,
        Role::Witness => WITNESS,
    };
    let modes = Modes {
        semi_sync: args.replication == Replication::SemiSync,
        unsafe_no_fsync: args.unsafe_no_fsync,
        no_fencing: args.unsafe_no_fencing,
    };
    let node = Arc::new(Node::open(
        me,
        args.shard,
        peers(&args, &upstream_metrics)?,
        args.data_dir.join("store.log"),
        Settings {
            tail: args.tail,
            modes,
            base_timeout: args.election_timeout,
            checkpoint: args.checkpoint.config(),
        },
        metrics,
    )?);
    let (writes, rx) = mpsc::channel(4096);
    let writer = tokio::spawn(write_loop(node.clone(), rx));
    let state = Arc::new(AppState {
        node: node.clone(),
        writes,
    });
    let router = Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/keys/{*key}", get(get_key))
        .route("/v1/scan", get(scan))
        .route("/v1/status", get(status))
        .route("/v1/append", post(append))
        .route("/v1/pull", post(pull))
        .route("/v1/vote", post(vote))
        .route("/v1/catchup", post(catchup))
        .fallback(server::not_found)
        .with_state(state);
    let service = Service {
        name: "store",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    let background = |t: CancellationToken| async move {
        let metrics_loop = async {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = t.cancelled() => return,
                    _ = tick.tick() => refresh_metrics(&node),
                }
            }
        };
        tokio::join!(election::run(node.clone(), t.clone()), metrics_loop);
    };
    let result = server::serve_with(args.common.listen, service, shutdown, background).await;
    // The server and its handlers are gone, so is the last sender: the writer flushes
    // what it holds and ends.
    let _ = writer.await;
    result
}

/// A lone member leading its own log with no follower (asynchronous replication), for
/// the soak: its writes are durable on its log alone.
fn soak_member(
    data_dir: &std::path::Path,
    checkpoint: crate::wal::CheckpointConfig,
    metrics: StoreMetrics,
) -> anyhow::Result<Node> {
    let settings = Settings {
        tail: 100_000,
        modes: Modes {
            semi_sync: false,
            unsafe_no_fsync: false,
            no_fencing: false,
        },
        base_timeout: Duration::from_secs(1),
        checkpoint,
    };
    let path = data_dir.join("store.log");
    Node::open(PRIMARY, 1, [None, None, None], path, settings, metrics)
}

/// Recovers a soaked member's log; the keys it holds. For `bench/logs.sh`.
#[doc(hidden)]
pub fn soak_recover(
    data_dir: &std::path::Path,
    checkpoint: crate::wal::CheckpointConfig,
) -> anyhow::Result<usize> {
    let metrics = StoreMetrics::register(&mut new_registry());
    let node = soak_member(data_dir, checkpoint, metrics)?;
    Ok(node.data.read().unwrap().map.len())
}

/// Drives a member's own log, in process, with the five batches the shop writes to a
/// shard per order: the idempotency claim, the order with its outbox entry and
/// idempotency record, the relay's claim of the outbox entry and its delete, and the
/// payment's outcome. Its metrics go to `registry`. For `bench/logs.sh`.
#[doc(hidden)]
pub async fn soak(
    data_dir: &std::path::Path,
    checkpoint: crate::wal::CheckpointConfig,
    orders: u64,
    concurrency: u64,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<()> {
    let node = Arc::new(soak_member(
        data_dir,
        checkpoint,
        StoreMetrics::register(registry),
    )?);
    {
        let mut core = node.lock();
        let term = core.term + 1;
        node.set_term(&mut core, term, Some(PRIMARY));
        node.become_leader(&mut core);
    }
    let (writes, rx) = mpsc::channel(4096);
    let writer = tokio::spawn(write_loop(node.clone(), rx));
    crate::wal::soak(writes, orders, concurrency, soak_order).await?;
    writer.await?;
    while node.lock().checkpoints.busy() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.checkpoint_collect();
    Ok(())
}

async fn soak_order(writes: mpsc::Sender<Write>, i: u64) -> anyhow::Result<()> {
    let write = |ops: serde_json::Value| {
        let writes = writes.clone();
        async move {
            let ops: Vec<OpRequest> = serde_json::from_value(ops)?;
            let (tx, rx) = oneshot::channel();
            writes.send((ops, tx)).await?;
            match rx.await? {
                Ok((lsn, _)) => anyhow::Ok(lsn),
                Err(e) => anyhow::bail!("{i}: {e:?}"),
            }
        }
    };
    let (user, id) = (format!("user{}", i % 1000), format!("{i:032x}"));
    let (idem, order_key, outbox) = (
        format!("idem/{user}/{id}"),
        format!("orders/{user}/{id}"),
        format!("outbox/{id}"),
    );
    let order = serde_json::json!({"order_id": id, "user": user, "status": "pending",
        "items": [{"product_id": 1 + i % 50, "quantity": 1}], "amount_cents": 1999 + i % 5000,
        "created_ms": 1_700_000_000_000u64 + i, "updated_ms": 1_700_000_000_000u64 + i});
    let claim = write(serde_json::json!([{"op": "put", "key": idem, "value": {"state": "pending"}, "if_absent": true}])).await?;
    let done = serde_json::json!({"state": "done", "request_hash": id, "response": {"status": 201, "body": {"order_id": id}}});
    let entry = serde_json::json!({"topic": "orders", "body": order.to_string(), "claim": null});
    let placed = write(serde_json::json!([
        {"op": "put", "key": order_key, "value": order, "if_absent": true},
        {"op": "put", "key": idem, "value": done, "if_version": claim},
        {"op": "put", "key": outbox, "value": entry},
    ]))
    .await?;
    let mut claimed = entry.clone();
    claimed["claim"] = serde_json::json!({"owner": "orders-1", "until_ms": u64::MAX});
    let relayed = write(
        serde_json::json!([{"op": "put", "key": outbox, "value": claimed, "if_version": placed}]),
    )
    .await?;
    write(serde_json::json!([{"op": "delete", "key": outbox, "if_version": relayed}])).await?;
    let mut paid = order;
    paid["status"] = "paid".into();
    write(
        serde_json::json!([{"op": "put", "key": order_key, "value": paid, "if_version": placed}]),
    )
    .await?;
    Ok(())
}
