//! The shop: faultline's bundled reference system, a small e-commerce platform built the
//! way the classic fault-tolerant microservice design describes. Every service is a
//! subcommand of the one `shop` binary and runs as its own process; the shop knows
//! nothing of faultline and would run the same under any supervisor.
//!
//! # Layout
//!
//! - [`services`]: one module per service (gateway, auth, api, content, cdn, cache,
//!   orders, store, broker, payments, bank, notifications), each with its clap `Args`
//!   and `run`.
//! - [`clients`]: typed clients of the broker and the sharded store, and the consumer
//!   loop.
//! - [`wal`]: the write-ahead log and the group committer every durable service runs.
//! - [`upstream`]: the client side of every hop: balancing, health checks, ejection,
//!   circuit breaker, deadlines, retries under a budget.
//! - [`resilience`]: the state machines `upstream` and the gateway compose (breaker,
//!   token bucket, backoff, retry budget, health, outlier ejection).
//! - [`server`]: the process shell: `/health`, `/metrics`, request metrics, deadlines,
//!   JSON errors, graceful shutdown; [`listener`]: its accept loop, with the connection
//!   cap and the header-read and idle timeouts.
//! - [`url`]: the one percent-encoder for every value put into a URL.
//! - [`jwt`], [`deadline`], [`metrics`], [`error`], [`args`]: shared pieces.

pub mod args;
pub mod clients;
pub mod deadline;
pub mod error;
pub mod jwt;
pub mod listener;
pub mod metrics;
pub mod resilience;
pub mod server;
pub mod services;
pub mod upstream;
pub mod url;
pub mod wal;
