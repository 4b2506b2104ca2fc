//! Deadline propagation: a caller tells how much time it has left in the
//! `X-Timeout-Ms` header (like gRPC's `grpc-timeout`), every service stops working on a
//! request when that time is up, and passes what remains to its own calls.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use tokio::time::Instant;

pub const HEADER: &str = "x-timeout-ms";

/// The instant by which the current request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// Reads the caller's budget from `headers`, capped by this service's own `max`.
    pub fn from_headers(headers: &HeaderMap, max: Duration, now: Instant) -> Self {
        let budget = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .map_or(max, |b| b.min(max));
        Deadline(now + budget)
    }

    pub fn remaining(&self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    pub fn header_value(&self, now: Instant) -> String {
        self.remaining(now).as_millis().to_string()
    }

    /// The sooner of this deadline and `now + limit`.
    pub fn min_after(&self, now: Instant, limit: Duration) -> Instant {
        self.0.min(now + limit)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Deadline {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Deadline>()
            .copied()
            .unwrap_or_else(|| Deadline(Instant::now() + Duration::from_secs(30))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_callers_budget_is_capped_by_our_own() {
        let now = Instant::now();
        let mut h = HeaderMap::new();
        let max = Duration::from_secs(5);
        assert_eq!(Deadline::from_headers(&h, max, now), Deadline(now + max));
        h.insert(HEADER, "250".parse().unwrap());
        let d = Deadline::from_headers(&h, max, now);
        assert_eq!(d.remaining(now), Duration::from_millis(250));
        assert_eq!(d.header_value(now + Duration::from_millis(100)), "150");
        h.insert(HEADER, "999999".parse().unwrap());
        assert_eq!(Deadline::from_headers(&h, max, now).remaining(now), max);
        h.insert(HEADER, "garbage".parse().unwrap());
        assert_eq!(Deadline::from_headers(&h, max, now).remaining(now), max);
    }
}
