//! `shop payments`: consumes the `payments` queue; for each order it charges the bank
//! with the order id as the idempotency key, publishes the outcome (`paid` or `failed`)
//! to the `payment-events` topic, and deletes the message only after the outcome is
//! published. A crash anywhere in between leaves the message to be delivered again, and
//! the bank's idempotency makes the second charge the same charge.
//!
//! A message that is not a payment request is never deleted, so after the queue's max
//! receives it lands in the dead-letter queue.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{Addrs, CommonArgs, UpstreamArgs, addrs, duration};
use crate::clients::{self, Handled};
use crate::deadline::Deadline;
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::upstream::{RetryPolicy, Upstream, UpstreamMetrics};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    #[arg(long, value_parser = addrs)]
    pub broker: Addrs,
    #[arg(long, value_parser = addrs)]
    pub bank: Addrs,
    #[arg(long, default_value = "payments")]
    pub queue: String,
    #[arg(long, default_value = "payment-events")]
    pub topic: String,
    /// Concurrent consumers in this process.
    #[arg(long, env = "SHOP_PAYMENTS_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// How long a message that cannot be processed waits before its next delivery.
    #[arg(long, env = "SHOP_REJECT_DELAY", default_value = "1s", value_parser = duration)]
    pub reject_delay: Duration,
    /// UNSAFE: send every charge attempt with a new idempotency key, so a retried or
    /// redelivered payment charges twice. For demonstrating the double-charge check.
    #[arg(long, env = "SHOP_UNSAFE_NO_IDEMPOTENCY", default_value_t = false, value_parser = clap::builder::BoolishValueParser::new())]
    pub unsafe_no_idempotency: bool,
}

/// What orders publishes for each new order.
#[derive(Debug, Deserialize)]
pub struct PaymentRequest {
    pub order_id: String,
    pub user: String,
    pub amount_cents: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone)]
struct Worker {
    broker: clients::Broker,
    bank: std::sync::Arc<Upstream>,
    topic: String,
    unsafe_no_idempotency: bool,
    outcomes: Family<OutcomeLabels, Counter>,
}

impl Worker {
    async fn handle(&self, m: clients::Message) -> Handled {
        let Ok(req) = serde_json::from_str::<PaymentRequest>(&m.body) else {
            self.outcomes
                .get_or_create(&OutcomeLabels {
                    outcome: "malformed",
                })
                .inc();
            return Handled::Reject;
        };
        let key = if self.unsafe_no_idempotency {
            format!("{}-{:08x}", req.order_id, fastrand::u32(..))
        } else {
            req.order_id.clone()
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(&key).expect("order ids are header-safe"),
        );
        let body = json!({ "amount_cents": req.amount_cents, "reference": req.order_id });
        // The charge is idempotent, so it is safe to retry (the upstream client retries
        // transient failures within its budget).
        let deadline = Deadline(Instant::now() + Duration::from_secs(10));
        let charge = match self
            .bank
            .post_json(
                "/v1/charges",
                &body,
                &headers,
                deadline,
                RetryPolicy::Idempotent,
            )
            .await
        {
            Ok((StatusCode::OK, _, bytes)) => {
                serde_json::from_slice::<serde_json::Value>(&bytes).ok()
            }
            Ok((status, _, _)) => {
                tracing::warn!(order = req.order_id, %status, "charge refused; leaving the message for a retry");
                None
            }
            Err(e) => {
                tracing::warn!(order = req.order_id, error = %e, "cannot charge; leaving the message for a retry");
                None
            }
        };
        let Some(charge) = charge else {
            self.outcomes
                .get_or_create(&OutcomeLabels { outcome: "retry" })
                .inc();
            return Handled::Later;
        };
        let outcome = if charge["status"] == "succeeded" {
            "paid"
        } else {
            "failed"
        };
        let event = json!({
            "order_id": req.order_id,
            "user": req.user,
            "outcome": outcome,
            "charge_id": charge["charge_id"],
        });
        if let Err(e) = self.broker.publish(&self.topic, &event.to_string()).await {
            tracing::warn!(order = req.order_id, error = %e, "cannot publish the outcome; leaving the message for a retry");
            self.outcomes
                .get_or_create(&OutcomeLabels { outcome: "retry" })
                .inc();
            return Handled::Later;
        }
        self.outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        Handled::Done
    }
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let upstream_metrics = UpstreamMetrics::register(&mut registry);
    let outcomes = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "payments_processed",
        "Payment messages handled, by outcome (paid, failed, retry, malformed)",
        outcomes.clone(),
    );
    if args.unsafe_no_idempotency {
        tracing::warn!("UNSAFE: charging without idempotency keys");
    }
    let broker = clients::Broker::new(
        &args.broker.0,
        &args.upstream.config(),
        upstream_metrics.clone(),
    );
    let broker_up = broker.upstream().clone();
    let bank = Upstream::new(
        "bank",
        &args.bank.0,
        args.upstream.config(),
        upstream_metrics,
    );
    let worker = Worker {
        broker: broker.clone(),
        bank: bank.clone(),
        topic: args.topic.clone(),
        unsafe_no_idempotency: args.unsafe_no_idempotency,
        outcomes,
    };
    let service = Service {
        name: "payments",
        router: Router::new().fallback(server::not_found),
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    let (queue, workers, reject_delay) =
        (args.queue.clone(), args.workers.max(1), args.reject_delay);
    let background = move |t: CancellationToken| async move {
        let consumers = (0..workers).map(|_| {
            let w = worker.clone();
            clients::consume(
                w.broker.clone(),
                queue.clone(),
                reject_delay,
                t.clone(),
                move |m| {
                    let w = w.clone();
                    async move { w.handle(m).await }
                },
            )
        });
        tokio::join!(
            futures::future::join_all(consumers),
            broker_up.run_health_checks(t.clone()),
            bank.run_health_checks(t.clone())
        );
    };
    server::serve_with(args.common.listen, service, shutdown, background).await
}
