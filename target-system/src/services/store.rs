//! `shop store`: a durable key/value store; one process is one role of one shard.
//!
//! A **primary** writes every batch to its write-ahead log and answers only after
//! `fdatasync` (batches arriving together share one: group commit). A batch is atomic
//! and may carry conditions (`if_absent`, `if_version`), so an order, its outbox entry
//! and its idempotency record commit together or not at all. Every key's version is the
//! log sequence number (LSN) of the batch that last wrote it.
//!
//! A **replica** pulls the primary's log (long polling `GET /v1/wal`) and applies it:
//! asynchronous log shipping. It serves reads, with the number of entries it is behind in
//! `X-Store-Lag`, so callers can fall back to the primary. A replica that is too far
//! behind for the primary's in-memory tail gets a snapshot first. Replicas keep no log of
//! their own: after a restart they catch up from the primary.
//!
//! API: `POST /v1/batch`, `GET /v1/keys/{key}`, `GET /v1/scan?prefix=&after=&limit=`,
//! `GET /v1/wal?from=&max=&wait_ms=` (primary), `GET /v1/status`.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs};
use crate::deadline::Deadline;
use crate::error::error;
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::upstream::{Upstream, UpstreamMetrics};
use crate::url::encode;
use crate::wal::{Durability, Machine, Wal, WalMetrics, spawn_committer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Primary,
    Replica,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    #[arg(long, value_enum)]
    pub role: Role,
    /// Where a primary keeps its log.
    #[arg(long, required_if_eq("role", "primary"))]
    pub data_dir: Option<PathBuf>,
    /// A replica's shard, from 1: it follows the shard-th address of --primaries.
    #[arg(long, required_if_eq("role", "replica"))]
    pub shard: Option<usize>,
    /// Addresses of every shard's primary, in shard order.
    #[arg(long, value_parser = addrs, required_if_eq("role", "replica"))]
    pub primaries: Option<Addrs>,
    /// UNSAFE: acknowledge writes before they are written, flushing the log every
    /// 200 ms. A crash loses acknowledged writes. For demonstrating the durability checks.
    #[arg(long, env = "SHOP_UNSAFE_NO_FSYNC", default_value_t = false, value_parser = clap::builder::BoolishValueParser::new())]
    pub unsafe_no_fsync: bool,
    /// Batches a primary keeps in memory for replicas; one further behind gets a snapshot.
    #[arg(long, env = "SHOP_STORE_TAIL", default_value_t = 100_000)]
    pub tail: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Put,
    Delete,
}

/// One write of a batch, as logged. (A struct rather than a tagged enum: serde cannot
/// read raw JSON values through an internally tagged enum.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogOp {
    pub op: OpKind,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Box<RawValue>>,
}

/// One committed batch: the unit of the log and of replication.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogBatch {
    pub lsn: u64,
    pub ts_ms: u64,
    pub ops: Vec<LogOp>,
}

/// One write of a batch request, with its condition: `if_absent` (the key must not
/// exist) or `if_version` (the key must be at that version).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRequest {
    op: OpKind,
    key: String,
    value: Option<Box<RawValue>>,
    #[serde(default)]
    if_absent: bool,
    if_version: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    ops: Vec<OpRequest>,
}

#[derive(Debug)]
pub struct Entry {
    pub value: Box<RawValue>,
    pub version: u64,
}

#[derive(Default)]
struct Data {
    map: BTreeMap<String, Arc<Entry>>,
    lsn: u64,
}

impl Data {
    fn apply(&mut self, batch: &LogBatch) {
        for op in &batch.ops {
            match (&op.op, &op.value) {
                (OpKind::Put, Some(value)) => {
                    self.map.insert(
                        op.key.clone(),
                        Arc::new(Entry {
                            value: value.clone(),
                            version: batch.lsn,
                        }),
                    );
                }
                _ => {
                    self.map.remove(&op.key);
                }
            }
        }
        self.lsn = batch.lsn;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The committed batches a primary keeps for replicas.
struct Tail {
    batches: VecDeque<Arc<LogBatch>>,
    max: usize,
}

impl Tail {
    fn push(&mut self, b: Arc<LogBatch>) {
        if self.batches.len() >= self.max {
            self.batches.pop_front();
        }
        self.batches.push_back(b);
    }

    /// Batches from `from` on, or `None` when `from` is older than the tail.
    fn since(&self, from: u64, max: usize) -> Option<Vec<Arc<LogBatch>>> {
        let first = self.batches.front().map_or(from, |b| b.lsn);
        if from < first {
            return None;
        }
        let skip = (from - first) as usize;
        Some(self.batches.iter().skip(skip).take(max).cloned().collect())
    }
}

#[derive(Debug)]
enum BatchError {
    Conflict(String),
    Invalid(String),
}

/// The primary's state machine under the committer: conditions are checked against
/// committed data plus the batches of the same group not yet durable (`overlay`), and
/// readers see a batch only once it is durable.
struct Primary {
    data: Arc<RwLock<Data>>,
    tail: Arc<Mutex<Tail>>,
    durable: watch::Sender<u64>,
    next_lsn: u64,
    overlay: Vec<(String, Option<u64>)>,
    pending: Vec<Arc<LogBatch>>,
}

impl Primary {
    fn version_of(&self, key: &str, data: &Data) -> Option<u64> {
        match self.overlay.iter().rev().find(|(k, _)| k == key) {
            Some((_, v)) => *v,
            None => data.map.get(key).map(|e| e.version),
        }
    }
}

impl Machine for Primary {
    type Op = Vec<OpRequest>;
    type Reply = Result<u64, BatchError>;
    type Record = Arc<LogBatch>;

    fn apply(&mut self, ops: Vec<OpRequest>, records: &mut Vec<Arc<LogBatch>>) -> Self::Reply {
        if ops.is_empty() {
            return Err(BatchError::Invalid("a batch needs at least one op".into()));
        }
        {
            let data = self.data.read().unwrap();
            for op in &ops {
                if op.key.is_empty() {
                    return Err(BatchError::Invalid("keys cannot be empty".into()));
                }
                match (op.op, &op.value) {
                    (OpKind::Put, None) => {
                        return Err(BatchError::Invalid(format!(
                            "put of {} has no value",
                            op.key
                        )));
                    }
                    (OpKind::Delete, Some(_)) => {
                        return Err(BatchError::Invalid(format!(
                            "delete of {} has a value",
                            op.key
                        )));
                    }
                    _ => {}
                }
                let current = self.version_of(&op.key, &data);
                let ok = (!op.if_absent || current.is_none())
                    && op.if_version.is_none_or(|v| current == Some(v));
                if !ok {
                    return Err(BatchError::Conflict(op.key.clone()));
                }
            }
        }
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        let ops: Vec<LogOp> = ops
            .into_iter()
            .map(|op| {
                let version = (op.op == OpKind::Put).then_some(lsn);
                self.overlay.push((op.key.clone(), version));
                LogOp {
                    op: op.op,
                    key: op.key,
                    value: op.value,
                }
            })
            .collect();
        let batch = Arc::new(LogBatch {
            lsn,
            ts_ms: now_ms(),
            ops,
        });
        self.pending.push(batch.clone());
        records.push(batch);
        Ok(lsn)
    }

    fn committed(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut data = self.data.write().unwrap();
        let mut tail = self.tail.lock().unwrap();
        for b in self.pending.drain(..) {
            data.apply(&b);
            tail.push(b);
        }
        self.overlay.clear();
        let lsn = data.lsn;
        drop(data);
        drop(tail);
        self.durable.send_replace(lsn);
    }
}

/// How far behind the replica is, as the primary sees it from the replica's pulls (or as
/// the replica sees it from the primary's answers).
#[derive(Default)]
struct Lag {
    /// Highest LSN the other side is known to have.
    peer_lsn: u64,
    /// When this side was last fully caught up.
    caught_up_at: Option<Instant>,
}

struct StoreMetrics {
    lsn: Gauge,
    keys: Gauge,
    conflicts: Counter,
    batches: Counter,
    lag_entries: Gauge,
    lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    snapshots: Counter,
}

impl StoreMetrics {
    /// `shop_store_*`, registered in `r`.
    fn register(r: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = StoreMetrics {
            lsn: Gauge::default(),
            keys: Gauge::default(),
            conflicts: Counter::default(),
            batches: Counter::default(),
            lag_entries: Gauge::default(),
            lag_seconds: Gauge::default(),
            snapshots: Counter::default(),
        };
        r.register(
            "lsn",
            "Last durable (primary) or applied (replica) log sequence number",
            metrics.lsn.clone(),
        );
        r.register("keys", "Keys held", metrics.keys.clone());
        r.register(
            "batches",
            "Write batches committed",
            metrics.batches.clone(),
        );
        r.register(
            "conflicts",
            "Write batches refused because a condition failed",
            metrics.conflicts.clone(),
        );
        r.register(
            "replication_lag_entries",
            "Log entries the replica is behind (on a primary: its replica, by the replica's last pull)",
            metrics.lag_entries.clone(),
        );
        r.register(
            "replication_lag_seconds",
            "Time since the replica was last caught up, 0 when it is",
            metrics.lag_seconds.clone(),
        );
        r.register(
            "snapshots",
            "Full snapshots sent (primary) or loaded (replica)",
            metrics.snapshots.clone(),
        );
        metrics
    }
}

struct AppState {
    role: Role,
    shard: Option<usize>,
    data: Arc<RwLock<Data>>,
    tail: Arc<Mutex<Tail>>,
    durable: watch::Receiver<u64>,
    committer: Option<crate::wal::Committer<Primary>>,
    lag: Mutex<Lag>,
    metrics: StoreMetrics,
}

impl AppState {
    /// Entries and seconds behind: on a primary, its replica's; on a replica, its own.
    fn lag(&self) -> (u64, f64) {
        let lsn = self.data.read().unwrap().lsn;
        let lag = self.lag.lock().unwrap();
        let (mine, theirs) = match self.role {
            Role::Primary => (lag.peer_lsn, lsn),
            Role::Replica => (lsn, lag.peer_lsn),
        };
        let entries = theirs.saturating_sub(mine);
        let seconds = if entries == 0 {
            0.0
        } else {
            lag.caught_up_at.map_or(0.0, |t| t.elapsed().as_secs_f64())
        };
        (entries, seconds)
    }

    fn refresh_metrics(&self) {
        let (lsn, keys) = {
            let d = self.data.read().unwrap();
            (d.lsn, d.map.len())
        };
        self.metrics.lsn.set(lsn as i64);
        self.metrics.keys.set(keys as i64);
        let (entries, seconds) = self.lag();
        self.metrics.lag_entries.set(entries as i64);
        self.metrics.lag_seconds.set(seconds);
    }
}

fn lag_headers(resp: &mut Response, s: &AppState) {
    let (entries, _) = s.lag();
    let lsn = s.data.read().unwrap().lsn;
    resp.headers_mut()
        .insert("x-store-lsn", HeaderValue::from(lsn));
    resp.headers_mut()
        .insert("x-store-lag", HeaderValue::from(entries));
}

async fn batch(
    State(s): State<Arc<AppState>>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Response {
    let Some(committer) = &s.committer else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this is a read-only replica; write to the shard's primary",
        );
    };
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad batch: {}", e.body_text()),
            );
        }
    };
    match committer.call(req.ops).await {
        Ok(Ok(lsn)) => {
            s.metrics.batches.inc();
            Json(serde_json::json!({ "lsn": lsn })).into_response()
        }
        Ok(Err(BatchError::Conflict(key))) => {
            s.metrics.conflicts.inc();
            (
                StatusCode::CONFLICT,
                Json(serde_json::json!({ "error": format!("condition failed on key {key}"), "key": key })),
            )
                .into_response()
        }
        Ok(Err(BatchError::Invalid(msg))) => error(StatusCode::BAD_REQUEST, msg),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log writer has stopped",
        ),
    }
}

#[derive(Serialize)]
struct Item<'a> {
    key: &'a str,
    value: &'a RawValue,
    version: u64,
}

async fn get_key(State(s): State<Arc<AppState>>, Path(key): Path<String>) -> Response {
    let entry = s.data.read().unwrap().map.get(&key).cloned();
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
}

async fn scan(State(s): State<Arc<AppState>>, Query(p): Query<ScanParams>) -> Response {
    let limit = p.limit.unwrap_or(100).min(10_000);
    let data = s.data.read().unwrap();
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

#[derive(Deserialize)]
struct WalParams {
    from: u64,
    max: Option<usize>,
    wait_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct WalAnswer {
    /// The primary's durable LSN.
    last_lsn: u64,
    batches: Vec<Arc<LogBatch>>,
    /// Present when `from` was older than the tail: the whole data at `snapshot_lsn`.
    snapshot: Option<Vec<(String, Box<RawValue>, u64)>>,
    snapshot_lsn: Option<u64>,
}

async fn wal(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    Query(p): Query<WalParams>,
) -> Response {
    if s.role != Role::Primary {
        return error(StatusCode::BAD_REQUEST, "only a primary serves its log");
    }
    let from = p.from.max(1);
    {
        let mut lag = s.lag.lock().unwrap();
        lag.peer_lsn = from - 1;
        if from > *s.durable.borrow() {
            lag.caught_up_at = Some(Instant::now());
        }
    }
    // Long poll: wait until something past `from - 1` is durable.
    let mut durable = s.durable.clone();
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0).min(20_000));
    let until = deadline.min_after(Instant::now(), wait);
    let _ = tokio::time::timeout_at(until, durable.wait_for(|lsn| *lsn >= from)).await;
    let last_lsn = *s.durable.borrow();
    let max = p.max.unwrap_or(1000).clamp(1, 10_000);
    let since = s.tail.lock().unwrap().since(from, max);
    let answer = match since {
        Some(batches) => WalAnswer {
            last_lsn,
            batches,
            snapshot: None,
            snapshot_lsn: None,
        },
        None => {
            s.metrics.snapshots.inc();
            let data = s.data.read().unwrap();
            WalAnswer {
                last_lsn: data.lsn,
                batches: Vec::new(),
                snapshot: Some(
                    data.map
                        .iter()
                        .map(|(k, e)| (k.clone(), e.value.clone(), e.version))
                        .collect(),
                ),
                snapshot_lsn: Some(data.lsn),
            }
        }
    };
    Json(answer).into_response()
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    let (entries, seconds) = s.lag();
    let d = s.data.read().unwrap();
    Json(serde_json::json!({
        "role": match s.role { Role::Primary => "primary", Role::Replica => "replica" },
        "shard": s.shard,
        "lsn": d.lsn,
        "keys": d.map.len(),
        "lag_entries": entries,
        "lag_seconds": seconds,
    }))
    .into_response()
}

/// The replica's pull loop: long-polls the primary's log and applies what comes.
async fn follow(s: Arc<AppState>, primary: Arc<Upstream>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let from = s.data.read().unwrap().lsn + 1;
        let path = format!(
            "/v1/wal?from={}&max=2000&wait_ms=1000",
            encode(&from.to_string())
        );
        let deadline = Deadline(Instant::now() + Duration::from_secs(5));
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = primary.get(&path, deadline) => r,
        };
        let answer = match result {
            Ok((StatusCode::OK, _, body)) => serde_json::from_slice::<WalAnswer>(&body).ok(),
            _ => None,
        };
        let Some(answer) = answer else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = Duration::from_millis(50);
        {
            let mut data = s.data.write().unwrap();
            if let (Some(items), Some(lsn)) = (answer.snapshot, answer.snapshot_lsn) {
                s.metrics.snapshots.inc();
                data.map = items
                    .into_iter()
                    .map(|(k, value, version)| (k, Arc::new(Entry { value, version })))
                    .collect();
                data.lsn = lsn;
            }
            for b in &answer.batches {
                if b.lsn == data.lsn + 1 {
                    data.apply(b);
                }
            }
            let mut lag = s.lag.lock().unwrap();
            lag.peer_lsn = answer.last_lsn.max(lag.peer_lsn);
            if data.lsn >= lag.peer_lsn {
                lag.caught_up_at = Some(Instant::now());
            }
        }
        s.refresh_metrics();
    }
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let r = registry.sub_registry_with_prefix("store");
    let metrics = StoreMetrics::register(r);
    let wal_metrics = WalMetrics::register(r);

    let data = Arc::new(RwLock::new(Data::default()));
    let tail = Arc::new(Mutex::new(Tail {
        batches: VecDeque::new(),
        max: args.tail.max(1),
    }));
    let (durable_tx, durable_rx) = watch::channel(0u64);
    let (committer, writer) = match args.role {
        Role::Primary => {
            let (c, w) = open_primary(&args, &data, &tail, durable_tx, wal_metrics)?;
            (Some(c), Some(w))
        }
        Role::Replica => (None, None),
    };
    let state = Arc::new(AppState {
        role: args.role,
        shard: args.shard,
        data,
        tail,
        durable: durable_rx,
        committer,
        lag: Mutex::new(Lag::default()),
        metrics,
    });
    let primary = match args.role {
        Role::Replica => Some(primary_upstream(&args, upstream_metrics)?),
        Role::Primary => None,
    };
    let router = Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/keys/{*key}", get(get_key))
        .route("/v1/scan", get(scan))
        .route("/v1/wal", get(wal))
        .route("/v1/status", get(status))
        .fallback(server::not_found)
        .with_state(state.clone());
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
                    _ = tick.tick() => state.refresh_metrics(),
                }
            }
        };
        match primary {
            Some(p) => {
                tokio::join!(follow(state.clone(), p, t.clone()), metrics_loop);
            }
            None => metrics_loop.await,
        }
    };
    let result = server::serve_with(args.common.listen, service, shutdown, background).await;
    if let Some(w) = writer {
        // The server and its handlers are gone, so is the last committer handle: the
        // writer flushes what it holds and ends.
        let _ = w.await;
    }
    result
}

/// A replica's upstream to its shard's primary.
fn primary_upstream(args: &Args, metrics: UpstreamMetrics) -> anyhow::Result<Arc<Upstream>> {
    let shard = args.shard.expect("clap requires --shard for a replica");
    let primaries = args
        .primaries
        .as_ref()
        .expect("clap requires --primaries")
        .0
        .clone();
    let addr = *primaries.get(shard.wrapping_sub(1)).ok_or_else(|| {
        anyhow::anyhow!(
            "--shard {shard} but only {} primaries given",
            primaries.len()
        )
    })?;
    let mut config = args.upstream.config();
    config.per_try_timeout = Duration::from_secs(5);
    config.max_retries = 0;
    Ok(Upstream::new("store-primary", &[addr], config, metrics))
}

/// A primary's state recovered from its log, and the committer that makes its writes
/// durable (with the writer task to await at the end).
fn open_primary(
    args: &Args,
    data: &Arc<RwLock<Data>>,
    tail: &Arc<Mutex<Tail>>,
    durable_tx: watch::Sender<u64>,
    wal_metrics: WalMetrics,
) -> anyhow::Result<(crate::wal::Committer<Primary>, tokio::task::JoinHandle<()>)> {
    let dir = args
        .data_dir
        .clone()
        .expect("clap requires --data-dir for a primary");
    let (log, batches) = Wal::open::<Arc<LogBatch>>(&dir.join("wal.log"))?;
    {
        let mut d = data.write().unwrap();
        let mut t = tail.lock().unwrap();
        for b in batches {
            d.apply(&b);
            t.push(b);
        }
        tracing::info!(lsn = d.lsn, keys = d.map.len(), "recovered from the log");
    }
    let lsn = data.read().unwrap().lsn;
    durable_tx.send_replace(lsn);
    let machine = Primary {
        data: data.clone(),
        tail: tail.clone(),
        durable: durable_tx,
        next_lsn: lsn + 1,
        overlay: Vec::new(),
        pending: Vec::new(),
    };
    let durability = if args.unsafe_no_fsync {
        tracing::warn!("UNSAFE: acknowledging writes before they are durable");
        Durability::UnsafeAckBeforeWrite
    } else {
        Durability::Fsync
    };
    Ok(spawn_committer(machine, log, durability, wal_metrics))
}
