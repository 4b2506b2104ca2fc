//! `shop notifications`: consumes payment outcome events and "sends" a notification for
//! each, at most once per message id: the record of sent notifications is durable, and a
//! redelivered message is only deleted again.
//!
//! API: `GET /v1/sent` (audit): every notification sent.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs, duration};
use crate::clients::{self, Handled};
use crate::error::error;
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::upstream::UpstreamMetrics;
use crate::wal::{
    CheckpointArgs, CheckpointConfig, Committer, Durability, Machine, Snapshot, Wal, WalMetrics,
    spawn_committer,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    #[arg(long, value_parser = addrs)]
    pub broker: Addrs,
    #[arg(long)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    #[arg(long, default_value = "notifications")]
    pub queue: String,
    /// How long a message that cannot be processed waits before its next delivery.
    #[arg(long, env = "SHOP_REJECT_DELAY", default_value = "1s", value_parser = duration)]
    pub reject_delay: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    pub message_id: String,
    pub order_id: String,
    pub user: String,
    pub outcome: String,
    pub sent_ms: u64,
}

enum Op {
    Record(Sent),
    List,
}

enum Reply {
    Recorded { duplicate: bool },
    List(Vec<Arc<Sent>>),
}

/// Every notification sent, and their message ids for deduplication. Both are kept whole
/// across checkpoints: the list is the audit that proves at-most-once, and a message id
/// forgotten could be notified twice if the broker redelivered it (a message stays in a
/// queue, or its dead-letter queue, until deleted, so no age bounds a redelivery).
struct Outbox {
    seen: HashSet<String>,
    sent: Vec<Arc<Sent>>,
}

impl Machine for Outbox {
    type Op = Op;
    type Reply = Reply;
    type Record = Arc<Sent>;

    fn apply(&mut self, op: Op, records: &mut Vec<Arc<Sent>>) -> Reply {
        match op {
            Op::List => Reply::List(self.sent.clone()),
            Op::Record(s) => {
                if !self.seen.insert(s.message_id.clone()) {
                    return Reply::Recorded { duplicate: true };
                }
                let s = Arc::new(s);
                self.sent.push(s.clone());
                records.push(s);
                Reply::Recorded { duplicate: false }
            }
        }
    }

    fn snapshot(&self) -> Option<Snapshot> {
        Some(Snapshot::of(self.sent.clone()))
    }
}

#[derive(Deserialize)]
struct Event {
    order_id: String,
    user: String,
    outcome: String,
}

struct AppState {
    outbox: Committer<Outbox>,
}

async fn sent(State(s): State<Arc<AppState>>) -> Response {
    match s.outbox.call(Op::List).await {
        Ok(Reply::List(sent)) => Json(serde_json::json!({ "sent": sent })).into_response(),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log writer has stopped",
        ),
    }
}

/// The record of notifications sent, from the data directory: snapshot, then log.
fn recover(
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
) -> anyhow::Result<(Outbox, Wal)> {
    let recovered =
        Wal::recover::<Vec<Arc<Sent>>, Arc<Sent>>(&data_dir.join("sent.log"), checkpoint)?;
    let mut sent = recovered.snapshot.unwrap_or_default();
    sent.extend(recovered.records);
    let machine = Outbox {
        seen: sent.iter().map(|s| s.message_id.clone()).collect(),
        sent,
    };
    Ok((machine, recovered.wal))
}

/// Recovers the record of notifications from `data_dir` (what a restart does before it
/// serves); returns the notifications held. For `bench/logs.sh`.
#[doc(hidden)]
pub fn soak_recover(
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
) -> anyhow::Result<usize> {
    Ok(recover(data_dir, checkpoint)?.0.sent.len())
}

/// Drives the notifications' own state machine and log, in process, with one
/// notification per order (the record the shop writes). For `bench/logs.sh`.
#[doc(hidden)]
pub async fn soak(
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
    orders: u64,
    concurrency: u64,
    wal_metrics: WalMetrics,
) -> anyhow::Result<()> {
    let (machine, wal) = recover(data_dir, checkpoint)?;
    let (committer, writer) = spawn_committer(machine, wal, Durability::Fsync, wal_metrics);
    crate::wal::soak(committer, orders, concurrency, |c, i| async move {
        let sent = Sent {
            message_id: format!("{:032x}", u128::from(i) << 64 | u128::from(i)),
            order_id: format!("{i:032x}"),
            user: format!("user{}", i % 1000),
            outcome: "paid".into(),
            sent_ms: 1_700_000_000_000 + i,
        };
        c.call(Op::Record(sent)).await?;
        Ok(())
    })
    .await?;
    writer.await?;
    Ok(())
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let sent_total: Counter = Counter::default();
    let duplicates: Counter = Counter::default();
    let r = registry.sub_registry_with_prefix("notifications");
    r.register("sent", "Notifications sent", sent_total.clone());
    r.register(
        "duplicates",
        "Redelivered events recognised by message id",
        duplicates.clone(),
    );
    let wal_metrics = WalMetrics::register(r);
    let (machine, wal) = recover(&args.data_dir, args.checkpoint.config())?;
    let (outbox, writer) = spawn_committer(machine, wal, Durability::Fsync, wal_metrics);
    let broker = clients::Broker::new(&args.broker.0, &args.upstream.config(), upstream_metrics);
    let broker_up = broker.upstream().clone();
    let state = Arc::new(AppState {
        outbox: outbox.clone(),
    });
    let router = Router::new()
        .route("/v1/sent", get(sent))
        .fallback(server::not_found)
        .with_state(state);
    let service = Service {
        name: "notifications",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    let queue = args.queue.clone();
    let reject_delay = args.reject_delay;
    let background = move |t: CancellationToken| async move {
        let handle = |m: clients::Message| {
            let outbox = outbox.clone();
            let sent_total = sent_total.clone();
            let duplicates = duplicates.clone();
            async move {
                let Ok(e) = serde_json::from_str::<Event>(&m.body) else {
                    return Handled::Reject;
                };
                let sent = Sent {
                    message_id: m.message_id,
                    order_id: e.order_id,
                    user: e.user,
                    outcome: e.outcome,
                    sent_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as u64,
                };
                match outbox.call(Op::Record(sent)).await {
                    Ok(Reply::Recorded { duplicate: true }) => {
                        duplicates.inc();
                        Handled::Done
                    }
                    Ok(_) => {
                        sent_total.inc();
                        Handled::Done
                    }
                    Err(_) => Handled::Later,
                }
            }
        };
        tokio::join!(
            clients::consume(broker, queue, reject_delay, t.clone(), handle),
            broker_up.run_health_checks(t.clone())
        );
    };
    let result = server::serve_with(args.common.listen, service, shutdown, background).await;
    let _ = writer.await;
    result
}
