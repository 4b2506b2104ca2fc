//! `shop bank`: the external payment provider. Charges are idempotent by their
//! `Idempotency-Key`: the same key with the same request returns the same charge, with
//! another request 422. It can be slow (`--latency`) and fail transiently
//! (`--failure-rate`, answering 503 before doing anything). The ledger is durable.
//!
//! Decline rule: a charge over `--limit-cents` (default 1,000,000: $10,000) is declined.
//!
//! API: `POST /v1/charges` `{"amount_cents","reference"}` with `Idempotency-Key` ->
//! `{"charge_id","status":"succeeded"|"declined","amount_cents","reference"}`;
//! `GET /v1/ledger` (audit): every charge.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::args::{CommonArgs, duration};
use crate::error::error;
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::wal::{
    CheckpointArgs, CheckpointConfig, Committer, Durability, Machine, Snapshot, Wal, WalMetrics,
    spawn_committer,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Where the bank keeps its ledger.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Time to process a charge.
    #[arg(long, env = "SHOP_BANK_LATENCY", default_value = "20ms", value_parser = duration)]
    pub latency: Duration,
    /// Share of charge requests (0 to 1) refused with 503, before any processing.
    #[arg(long, env = "SHOP_BANK_FAILURE_RATE", default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Charges above this many cents are declined.
    #[arg(long, env = "SHOP_BANK_LIMIT_CENTS", default_value_t = 1_000_000)]
    pub limit_cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub charge_id: String,
    pub idempotency_key: String,
    pub reference: String,
    pub amount_cents: u64,
    pub status: String,
    pub created_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChargeRequest {
    amount_cents: u64,
    reference: String,
}

enum Op {
    Charge {
        key: String,
        amount_cents: u64,
        reference: String,
    },
    Ledger,
}

enum Reply {
    Charge { charge: Charge, replayed: bool },
    Mismatch,
    Ledger(Vec<Arc<Charge>>),
}

/// Every charge ever made, with its idempotency key: the ledger is the audit trail, so a
/// checkpoint keeps all of it (it is the state, not history) and only the log of how it
/// grew is cut. Charges are shared so that a checkpoint's copy costs pointers.
struct Ledger {
    by_key: HashMap<String, usize>,
    charges: Vec<Arc<Charge>>,
    limit_cents: u64,
}

impl Ledger {
    fn push(&mut self, c: Arc<Charge>) {
        self.by_key
            .insert(c.idempotency_key.clone(), self.charges.len());
        self.charges.push(c);
    }
}

impl Machine for Ledger {
    type Op = Op;
    type Reply = Reply;
    type Record = Charge;

    fn apply(&mut self, op: Op, records: &mut Vec<Charge>) -> Reply {
        match op {
            Op::Ledger => Reply::Ledger(self.charges.clone()),
            Op::Charge {
                key,
                amount_cents,
                reference,
            } => {
                if let Some(&i) = self.by_key.get(&key) {
                    let c = &self.charges[i];
                    if c.amount_cents != amount_cents || c.reference != reference {
                        return Reply::Mismatch;
                    }
                    return Reply::Charge {
                        charge: Charge::clone(c),
                        replayed: true,
                    };
                }
                let status = if amount_cents > self.limit_cents {
                    "declined"
                } else {
                    "succeeded"
                };
                let charge = Charge {
                    charge_id: format!("ch_{:016x}", fastrand::u64(..)),
                    idempotency_key: key.clone(),
                    reference,
                    amount_cents,
                    status: status.to_owned(),
                    created_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as u64,
                };
                self.push(Arc::new(charge.clone()));
                records.push(charge.clone());
                Reply::Charge {
                    charge,
                    replayed: false,
                }
            }
        }
    }

    fn snapshot(&self) -> Option<Snapshot> {
        Some(Snapshot::of(self.charges.clone()))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

struct AppState {
    ledger: Committer<Ledger>,
    /// Charges run as tasks of their own: like a real provider, the bank finishes a
    /// charge it accepted even when the caller hangs up, which is exactly the case where
    /// a retried payment needs the idempotency key.
    tasks: tokio_util::task::TaskTracker,
    latency: Duration,
    failure_rate: f64,
    charges: Family<ResultLabels, Counter>,
}

async fn charge(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ChargeRequest>, JsonRejection>,
) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "an Idempotency-Key header (1 to 255 characters) is required",
        );
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad charge: {}", e.body_text()),
            );
        }
    };
    if fastrand::f64() < s.failure_rate {
        s.charges
            .get_or_create(&ResultLabels {
                result: "unavailable",
            })
            .inc();
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the bank is temporarily unavailable; try again",
        );
    }
    let op = Op::Charge {
        key: key.to_owned(),
        amount_cents: req.amount_cents,
        reference: req.reference,
    };
    let (ledger, latency) = (s.ledger.clone(), s.latency);
    let task = s.tasks.spawn(async move {
        tokio::time::sleep(latency).await;
        ledger.call(op).await
    });
    let Ok(result) = task.await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the charge task failed");
    };
    match result {
        Ok(Reply::Charge { charge, replayed }) => {
            let result = if replayed {
                "replayed"
            } else {
                if charge.status == "succeeded" {
                    "succeeded"
                } else {
                    "declined"
                }
            };
            s.charges.get_or_create(&ResultLabels { result }).inc();
            let mut resp = Json(&charge).into_response();
            if replayed {
                resp.headers_mut()
                    .insert("idempotent-replayed", "true".parse().unwrap());
            }
            resp
        }
        Ok(Reply::Mismatch) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was used for a different charge",
        ),
        Ok(Reply::Ledger(_)) => unreachable!("a charge answers a charge"),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ledger writer has stopped",
        ),
    }
}

async fn ledger(State(s): State<Arc<AppState>>) -> Response {
    match s.ledger.call(Op::Ledger).await {
        Ok(Reply::Ledger(charges)) => {
            Json(serde_json::json!({ "charges": charges })).into_response()
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ledger writer has stopped",
        ),
    }
}

/// The ledger from the data directory: the newest snapshot, then the log.
fn recover(
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
    limit_cents: u64,
) -> anyhow::Result<(Ledger, Wal)> {
    let recovered =
        Wal::recover::<Vec<Arc<Charge>>, Arc<Charge>>(&data_dir.join("ledger.log"), checkpoint)?;
    let mut machine = Ledger {
        by_key: HashMap::new(),
        charges: Vec::new(),
        limit_cents,
    };
    for c in recovered
        .snapshot
        .into_iter()
        .flatten()
        .chain(recovered.records)
    {
        machine.push(c);
    }
    Ok((machine, recovered.wal))
}

/// Recovers the ledger from `data_dir` (what a restart does before it serves); returns
/// the charges held. For `bench/logs.sh`.
#[doc(hidden)]
pub fn soak_recover(
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
) -> anyhow::Result<usize> {
    Ok(recover(data_dir, checkpoint, 1_000_000)?.0.charges.len())
}

/// Drives the ledger's own state machine and log, in process, with one charge per order
/// (the record the shop's payments service makes the bank write). For `bench/logs.sh`.
#[doc(hidden)]
pub async fn soak(
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
    orders: u64,
    concurrency: u64,
    wal_metrics: WalMetrics,
) -> anyhow::Result<()> {
    let (machine, wal) = recover(data_dir, checkpoint, 1_000_000)?;
    let (committer, writer) = spawn_committer(machine, wal, Durability::Fsync, wal_metrics);
    crate::wal::soak(committer, orders, concurrency, |c, i| async move {
        let op = Op::Charge {
            key: format!("{i:032x}"),
            amount_cents: 1999 + i % 5000,
            reference: format!("{i:032x}"),
        };
        c.call(op).await?;
        Ok(())
    })
    .await?;
    writer.await?;
    Ok(())
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.failure_rate),
        "--failure-rate must be from 0 to 1"
    );
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let charges = Family::<ResultLabels, Counter>::default();
    let r = registry.sub_registry_with_prefix("bank");
    r.register(
        "charges",
        "Charge requests, by result (succeeded, declined, replayed, unavailable)",
        charges.clone(),
    );
    let wal_metrics = WalMetrics::register(r);
    let (machine, wal) = recover(&args.data_dir, args.checkpoint.config(), args.limit_cents)?;
    let (ledger_c, writer) = spawn_committer(machine, wal, Durability::Fsync, wal_metrics);
    let tasks = tokio_util::task::TaskTracker::new();
    let state = Arc::new(AppState {
        ledger: ledger_c,
        tasks: tasks.clone(),
        latency: args.latency,
        failure_rate: args.failure_rate,
        charges,
    });
    let router = Router::new()
        .route("/v1/charges", post(charge))
        .route("/v1/ledger", get(ledger))
        .fallback(server::not_found)
        .with_state(state);
    let service = Service {
        name: "bank",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    let result = server::serve(args.common.listen, service, shutdown).await;
    tasks.close();
    tasks.wait().await;
    let _ = writer.await;
    result
}
