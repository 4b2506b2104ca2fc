//! `shop <service>`: runs one service of the reference system in this process.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shop::services::{
    api, auth, bank, broker, cache, cdn, content, gateway, notifications, orders, payments, store,
};

/// The bundled reference system of faultline. Each subcommand runs one service.
#[derive(Parser)]
#[command(name = "shop", version)]
struct Cli {
    #[command(subcommand)]
    service: Svc,
}

#[derive(Subcommand)]
enum Svc {
    /// The public entry point: routing, balancing, breakers, retries, JWT, rate limits.
    Gateway(gateway::Args),
    /// Logins and tokens.
    Auth(auth::Args),
    /// The home page, aggregated from other services, degrading gracefully.
    Api(api::Args),
    /// The product catalog, cache-aside through the cache.
    Content(content::Args),
    /// The edge cache in front of content.
    Cdn(cdn::Args),
    /// An in-memory key/value store with TTLs and a memory bound.
    Cache(cache::Args),
    /// Orders: idempotent creation, a transactional outbox, payment outcomes.
    Orders(orders::Args),
    /// A member of a shard of the durable key/value store: primary, replica or witness.
    Store(store::Args),
    /// SQS-style queues and SNS-style topics, durable.
    Broker(broker::Args),
    /// Charges orders at the bank, idempotently, and publishes the outcome.
    Payments(payments::Args),
    /// The external payment provider, with a ledger.
    Bank(bank::Args),
    /// Sends one notification per payment outcome event.
    Notifications(notifications::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    shop::server::raise_open_files_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shop::server::shutdown_token();
        match cli.service {
            Svc::Gateway(a) => gateway::run(a, shutdown).await,
            Svc::Auth(a) => auth::run(a, shutdown).await,
            Svc::Api(a) => api::run(a, shutdown).await,
            Svc::Content(a) => content::run(a, shutdown).await,
            Svc::Cdn(a) => cdn::run(a, shutdown).await,
            Svc::Cache(a) => cache::run(a, shutdown).await,
            Svc::Orders(a) => orders::run(a, shutdown).await,
            Svc::Store(a) => store::run(a, shutdown).await,
            Svc::Broker(a) => broker::run(a, shutdown).await,
            Svc::Payments(a) => payments::run(a, shutdown).await,
            Svc::Bank(a) => bank::run(a, shutdown).await,
            Svc::Notifications(a) => notifications::run(a, shutdown).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
