//! Resilience building blocks shared by every shop service that calls another one.
//!
//! Each piece is a small, synchronous state machine driven by an explicit
//! `tokio::time::Instant`, so it can be unit-tested under `tokio::time::pause()` and
//! composed by [`crate::upstream`] without knowing anything about HTTP.

pub mod backoff;
pub mod breaker;
pub mod health;
pub mod outlier;
pub mod retry_budget;
pub mod token_bucket;
mod window;

pub use backoff::Backoff;
pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use health::{HealthConfig, HealthState};
pub use outlier::{Outlier, OutlierConfig};
pub use retry_budget::{RetryBudget, RetryBudgetConfig};
pub use token_bucket::TokenBucket;
