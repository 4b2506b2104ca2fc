//! Toxics: what a fault proxy does to the bytes of one direction of an edge (Toxiproxy's
//! model). A toxic applies to a connection with its `toxicity` (a probability drawn once
//! per connection from a seeded generator), to connections open when it is added as well
//! as new ones, and stops at once when it is removed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which way the bytes flow: `upstream` from the client service to the server replica
/// (requests), `downstream` back (responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Upstream,
    Downstream,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        }
    }
}

/// An HTTP request matcher for L7 toxics: method and path prefix, each optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

impl HttpMatch {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToxicKind {
    /// Delays every chunk by `latency` plus up to `jitter` either way.
    Latency {
        #[serde(with = "millis")]
        latency: Duration,
        #[serde(with = "millis", default)]
        jitter: Duration,
    },
    /// Limits the rate to `rate` bytes a second.
    Bandwidth { rate: u64 },
    /// Holds the connection and drops every byte; closes it after `close_after`, if set.
    Timeout {
        #[serde(with = "opt_millis", default)]
        close_after: Option<Duration>,
    },
    /// Closes the connection with a TCP RST after `after`.
    Reset {
        #[serde(with = "millis", default)]
        after: Duration,
    },
    /// Cuts data into pieces of about `average_size` bytes (plus or minus
    /// `size_variation`), `delay` apart.
    Slicer {
        average_size: usize,
        #[serde(default)]
        size_variation: usize,
        #[serde(with = "micros", default)]
        delay: Duration,
    },
    /// Delays the close of the connection by `delay`.
    SlowClose {
        #[serde(with = "millis")]
        delay: Duration,
    },
    /// Closes the connection once `bytes` have passed.
    LimitData { bytes: u64 },
    /// Answers `percent` of matching HTTP requests with `status` instead of forwarding.
    HttpAbort {
        status: u16,
        percent: f64,
        #[serde(flatten)]
        matcher: HttpMatch,
    },
    /// Holds `percent` of matching HTTP requests for `delay` before forwarding.
    HttpDelay {
        #[serde(with = "millis")]
        delay: Duration,
        percent: f64,
        #[serde(flatten)]
        matcher: HttpMatch,
    },
}

impl ToxicKind {
    pub fn name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::Reset { .. } => "reset",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::LimitData { .. } => "limit_data",
            ToxicKind::HttpAbort { .. } => "http_abort",
            ToxicKind::HttpDelay { .. } => "http_delay",
        }
    }

    pub fn is_http(&self) -> bool {
        matches!(
            self,
            ToxicKind::HttpAbort { .. } | ToxicKind::HttpDelay { .. }
        )
    }

    /// Checks the parameters; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        let percent = |p: f64| {
            if (0.0..=100.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("percent must be from 0 to 100, not {p}"))
            }
        };
        match self {
            ToxicKind::Bandwidth { rate } if *rate == 0 => {
                Err("rate must be at least 1 byte a second".into())
            }
            ToxicKind::Slicer { average_size, .. } if *average_size == 0 => {
                Err("average_size must be at least 1".into())
            }
            ToxicKind::HttpAbort {
                status, percent: p, ..
            } => {
                if !(100..=599).contains(status) {
                    return Err(format!(
                        "status must be an HTTP status from 100 to 599, not {status}"
                    ));
                }
                percent(*p)
            }
            ToxicKind::HttpDelay { percent: p, .. } => percent(*p),
            _ => Ok(()),
        }
    }
}

/// A toxic installed on one direction of an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Toxic {
    /// The fault it belongs to.
    pub id: String,
    pub direction: Direction,
    pub kind: ToxicKind,
    /// Probability (0 to 1) that it applies to a given connection.
    pub toxicity: f64,
    /// Seed of the per-connection draws, so a run can be repeated.
    pub seed: u64,
}

impl Toxic {
    /// Whether the toxic applies to connection number `conn` of its edge.
    pub fn applies_to(&self, conn: u64) -> bool {
        if self.toxicity >= 1.0 {
            return true;
        }
        let mut rng =
            fastrand::Rng::with_seed(self.seed ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.f64() < self.toxicity
    }
}

mod millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_millis)
    }
}

mod micros {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_micros)
    }
}

mod opt_millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        <Option<u64> as serde::Deserialize>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxicity_is_drawn_per_connection_and_repeatable() {
        let t = Toxic {
            id: "f1".into(),
            direction: Direction::Upstream,
            kind: ToxicKind::Reset {
                after: Duration::ZERO,
            },
            toxicity: 0.3,
            seed: 42,
        };
        let hits: Vec<bool> = (0..1000).map(|c| t.applies_to(c)).collect();
        let n = hits.iter().filter(|h| **h).count();
        assert!((250..350).contains(&n), "{n} of 1000");
        assert_eq!(hits, (0..1000).map(|c| t.applies_to(c)).collect::<Vec<_>>());
    }

    #[test]
    fn http_matchers() {
        let m = HttpMatch {
            method: Some("post".into()),
            path_prefix: Some("/api/v1/orders".into()),
        };
        assert!(m.matches("POST", "/api/v1/orders/1"));
        assert!(!m.matches("GET", "/api/v1/orders"));
        assert!(!m.matches("POST", "/api/v1/home"));
        assert!(HttpMatch::default().matches("GET", "/"));
    }

    #[test]
    fn kinds_round_trip_through_json() {
        let k: ToxicKind = serde_json::from_str(
            r#"{"type":"http_abort","status":503,"percent":50,"path_prefix":"/x"}"#,
        )
        .unwrap();
        assert_eq!(
            k,
            ToxicKind::HttpAbort {
                status: 503,
                percent: 50.0,
                matcher: HttpMatch {
                    method: None,
                    path_prefix: Some("/x".into())
                }
            }
        );
        let k: ToxicKind =
            serde_json::from_str(r#"{"type":"latency","latency":100,"jitter":5}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            r#"{"type":"latency","latency":100,"jitter":5}"#
        );
        assert!(
            ToxicKind::HttpAbort {
                status: 700,
                percent: 1.0,
                matcher: HttpMatch::default()
            }
            .validate()
            .is_err()
        );
    }
}
