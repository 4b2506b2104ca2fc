//! Command-line settings shared by several services. Every flag can also be set through
//! an environment variable (`SHOP_*`), which is how a whole topology is tuned at once:
//! the supervisor passes its environment on to every replica.

use std::time::Duration;

use crate::resilience::{Backoff, BreakerConfig, HealthConfig, OutlierConfig, RetryBudgetConfig};
use crate::upstream::UpstreamConfig;

pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 250ms, 2s, 1m)"))
}

/// A duration that must not be zero (a zero timeout would close every connection).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be more than 0s".into()),
        d => Ok(d),
    }
}

/// How this service calls the services it depends on.
#[derive(clap::Args, Debug, Clone)]
pub struct UpstreamArgs {
    /// Longest wait for one try's response headers.
    #[arg(long, env = "SHOP_PER_TRY_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub per_try_timeout: Duration,
    /// Retries after the first try, for requests that are safe to repeat.
    #[arg(long, env = "SHOP_MAX_RETRIES", default_value_t = 2)]
    pub max_retries: u32,
    /// Base of the full-jitter exponential backoff between tries.
    #[arg(long, env = "SHOP_RETRY_BACKOFF", default_value = "10ms", value_parser = duration)]
    pub retry_backoff: Duration,
    /// Share of recent requests that retries may add.
    #[arg(long, env = "SHOP_RETRY_BUDGET_RATIO", default_value_t = 0.2)]
    pub retry_budget_ratio: f64,
    /// Retries a second allowed whatever the traffic.
    #[arg(long, env = "SHOP_RETRY_BUDGET_MIN_PER_SEC", default_value_t = 10.0)]
    pub retry_budget_min_per_sec: f64,
    /// Failure rate (0 to 1) over the window that opens a circuit breaker.
    #[arg(long, env = "SHOP_BREAKER_FAILURE_RATE", default_value_t = 0.5)]
    pub breaker_failure_rate: f64,
    /// Calls in the window before a breaker may open.
    #[arg(long, env = "SHOP_BREAKER_MIN_CALLS", default_value_t = 10)]
    pub breaker_min_calls: u64,
    #[arg(long, env = "SHOP_BREAKER_WINDOW", default_value = "10s", value_parser = duration)]
    pub breaker_window: Duration,
    /// How long an open breaker refuses calls before trying again.
    #[arg(long, env = "SHOP_BREAKER_OPEN_WAIT", default_value = "5s", value_parser = duration)]
    pub breaker_open_wait: Duration,
    /// Trial calls a half-open breaker lets through.
    #[arg(long, env = "SHOP_BREAKER_HALF_OPEN_CALLS", default_value_t = 3)]
    pub breaker_half_open_calls: u32,
    /// Interval of active health checks (0s turns them off).
    #[arg(long, env = "SHOP_HEALTH_INTERVAL", default_value = "1s", value_parser = duration)]
    pub health_interval: Duration,
    #[arg(long, env = "SHOP_HEALTH_TIMEOUT", default_value = "500ms", value_parser = duration)]
    pub health_timeout: Duration,
    /// Passed checks in a row that bring an endpoint back.
    #[arg(long, env = "SHOP_HEALTH_RISE", default_value_t = 2)]
    pub health_rise: u32,
    /// Failed checks in a row that take an endpoint out.
    #[arg(long, env = "SHOP_HEALTH_FALL", default_value_t = 2)]
    pub health_fall: u32,
    /// Consecutive failed requests that eject an endpoint.
    #[arg(long, env = "SHOP_EJECT_AFTER", default_value_t = 5)]
    pub eject_after: u32,
    /// Base ejection time, multiplied by the number of times ejected.
    #[arg(long, env = "SHOP_EJECT_TIME", default_value = "5s", value_parser = duration)]
    pub eject_time: Duration,
}

impl UpstreamArgs {
    pub fn config(&self) -> UpstreamConfig {
        UpstreamConfig {
            per_try_timeout: self.per_try_timeout,
            max_retries: self.max_retries,
            backoff: Backoff::new(self.retry_backoff, self.retry_backoff * 20),
            breaker: BreakerConfig {
                failure_rate: self.breaker_failure_rate,
                min_calls: self.breaker_min_calls,
                window: self.breaker_window,
                open_wait: self.breaker_open_wait,
                half_open_calls: self.breaker_half_open_calls,
            },
            budget: RetryBudgetConfig {
                ratio: self.retry_budget_ratio,
                min_per_sec: self.retry_budget_min_per_sec,
                window: Duration::from_secs(10),
            },
            health: (!self.health_interval.is_zero()).then_some(HealthConfig {
                interval: self.health_interval,
                timeout: self.health_timeout,
                rise: self.health_rise,
                fall: self.health_fall,
            }),
            health_path: "/health".into(),
            outlier: OutlierConfig {
                consecutive_failures: self.eject_after,
                base_ejection: self.eject_time,
                max_ejection: self.eject_time * 12,
            },
        }
    }
}

/// Settings every service has.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// The most time any request may take here, whatever the caller allows.
    #[arg(long, env = "SHOP_MAX_REQUEST_TIME", default_value = "10s", value_parser = duration)]
    pub max_request_time: Duration,
    /// Longest wait for a request's head, from the connection's start or from the first
    /// byte of a later request; a half-sent head is closed after it.
    #[arg(long, env = "SHOP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may stay open with no request. Keep it above
    /// 30 s, the time after which the shop's own clients drop pooled connections.
    #[arg(long, env = "SHOP_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// Open connections at most; one more is accepted and closed at once.
    #[arg(long, env = "SHOP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Requests a second this replica serves at most (0: no bound); more are answered
    /// 503 at once, as a saturated replica would. A replica of bounded capacity, so
    /// that load must be spread over more replicas (the autoscaling gameday).
    #[arg(long, env = "SHOP_CAPACITY_RPS", default_value_t = 0.0, value_parser = capacity)]
    pub capacity_rps: f64,
}

fn capacity(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1e7).contains(&v) => Ok(v),
        _ => Err(format!(
            "must be a number of requests a second from 0 to 10000000, not `{s}`"
        )),
    }
}

impl CommonArgs {
    pub fn connection_limits(&self) -> crate::listener::Limits {
        crate::listener::Limits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections as usize,
            capacity_rps: self.capacity_rps,
        }
    }
}

/// Replica addresses: a comma-separated list, or `@PATH`, a file listing them (one a
/// line, or comma-separated) that the service follows as it changes; the second field
/// is that file.
#[derive(Debug, Clone)]
pub struct Addrs(
    pub Vec<std::net::SocketAddr>,
    pub Option<std::path::PathBuf>,
);

pub fn addrs(s: &str) -> Result<Addrs, String> {
    let (text, file) = match s.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the address file {path}: {e}"))?;
            (
                text.replace('\n', ","),
                Some(std::path::PathBuf::from(path)),
            )
        }
        None => (s.to_owned(), None),
    };
    let list = crate::upstream::parse_addrs(&text)?;
    if list.is_empty() {
        return Err("no addresses given".into());
    }
    Ok(Addrs(list, file))
}
