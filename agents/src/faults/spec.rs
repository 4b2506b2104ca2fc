//! What a fault is, as the control API, the CLI and experiment files describe it: a kind
//! with its parameters, a target, a time to live.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proxy::Direction;

/// Which directions of an edge a network fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Directions {
    Upstream,
    #[default]
    Downstream,
    Both,
}

impl Directions {
    pub fn list(self) -> &'static [Direction] {
        match self {
            Directions::Upstream => &[Direction::Upstream],
            Directions::Downstream => &[Direction::Downstream],
            Directions::Both => &[Direction::Upstream, Direction::Downstream],
        }
    }
}

fn both() -> Directions {
    Directions::Both
}

fn one() -> f64 {
    1.0
}

fn hundred() -> f64 {
    100.0
}

/// Every fault kind with its parameters. Times are in milliseconds in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultSpec {
    /// SIGKILL; with `hold`, the replica stays down until the fault heals.
    Kill {
        #[serde(default)]
        hold: bool,
    },
    /// SIGTERM; with `hold`, the replica stays down until the fault heals.
    Terminate {
        #[serde(default)]
        hold: bool,
    },
    /// SIGSTOP until the fault heals (SIGCONT).
    Pause,
    /// SIGTERM and start again at once.
    Restart,
    Latency {
        delay_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default)]
        direction: Directions,
        #[serde(default = "one")]
        toxicity: f64,
    },
    Bandwidth {
        /// Bytes a second.
        rate: u64,
        #[serde(default)]
        direction: Directions,
        #[serde(default = "one")]
        toxicity: f64,
    },
    /// Drop all data and hold the connection (optionally close it after a time).
    Blackhole {
        close_after_ms: Option<u64>,
        #[serde(default = "both")]
        direction: Directions,
        #[serde(default = "one")]
        toxicity: f64,
    },
    /// Close connections with a TCP RST.
    Reset {
        #[serde(default)]
        after_ms: u64,
        #[serde(default = "both")]
        direction: Directions,
        #[serde(default = "one")]
        toxicity: f64,
    },
    Slicer {
        average_size: usize,
        #[serde(default)]
        size_variation: usize,
        #[serde(default)]
        delay_us: u64,
        #[serde(default)]
        direction: Directions,
        #[serde(default = "one")]
        toxicity: f64,
    },
    SlowClose {
        delay_ms: u64,
        #[serde(default)]
        direction: Directions,
        #[serde(default = "one")]
        toxicity: f64,
    },
    LimitData {
        bytes: u64,
        #[serde(default)]
        direction: Directions,
        #[serde(default = "one")]
        toxicity: f64,
    },
    /// Answer a share of matching HTTP requests with `status`.
    HttpAbort {
        status: u16,
        #[serde(default = "hundred")]
        percent: f64,
        method: Option<String>,
        path: Option<String>,
    },
    /// Hold a share of matching HTTP requests for `delay_ms`.
    HttpDelay {
        delay_ms: u64,
        #[serde(default = "hundred")]
        percent: f64,
        method: Option<String>,
        path: Option<String>,
    },
    /// Cut every edge between the target services and `with` (comma-separated service
    /// lists), both ways, live connections included.
    Partition { with: String },
    /// Every replica of the target zone killed and held down.
    ZoneOutage,
    /// `count` malformed messages sent to the target queue.
    Poison { count: usize },
    /// The target queue's consumers (or producers) cut off from the broker.
    QueuePartition {
        #[serde(default)]
        side: QueueSide,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QueueSide {
    #[default]
    Consumers,
    Producers,
}

impl FaultSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            FaultSpec::Kill { .. } => "kill",
            FaultSpec::Terminate { .. } => "terminate",
            FaultSpec::Pause => "pause",
            FaultSpec::Restart => "restart",
            FaultSpec::Latency { .. } => "latency",
            FaultSpec::Bandwidth { .. } => "bandwidth",
            FaultSpec::Blackhole { .. } => "blackhole",
            FaultSpec::Reset { .. } => "reset",
            FaultSpec::Slicer { .. } => "slicer",
            FaultSpec::SlowClose { .. } => "slow-close",
            FaultSpec::LimitData { .. } => "limit-data",
            FaultSpec::HttpAbort { .. } => "http-abort",
            FaultSpec::HttpDelay { .. } => "http-delay",
            FaultSpec::Partition { .. } => "partition",
            FaultSpec::ZoneOutage => "zone-outage",
            FaultSpec::Poison { .. } => "poison",
            FaultSpec::QueuePartition { .. } => "queue-partition",
        }
    }

    /// Every kind's name, for error messages and help.
    pub const KINDS: &'static [&'static str] = &[
        "kill",
        "terminate",
        "pause",
        "restart",
        "latency",
        "bandwidth",
        "blackhole",
        "reset",
        "slicer",
        "slow-close",
        "limit-data",
        "http-abort",
        "http-delay",
        "partition",
        "zone-outage",
        "poison",
        "queue-partition",
    ];
}

/// A request to inject a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRequest {
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub target: String,
    /// Lease length; the fault heals when it runs out unless renewed.
    pub ttl_ms: Option<u64>,
    /// Seed of the fault's random draws (which connections, which requests).
    pub seed: Option<u64>,
}

pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest any duration a fault carries may be (a latency, a delay, a close-after):
/// the longest lease, since no fault outlives its lease. Written in messages as
/// "24 hours".
pub const MAX_DURATION: Duration = MAX_TTL;
/// The largest byte count a fault carries (a data limit).
pub const MAX_BYTES: u64 = 1 << 40;
/// The largest bandwidth a fault may set, in bytes a second (10 GB/s).
pub const MAX_RATE: u64 = 10_000_000_000;
/// The largest slice a slicer cuts (average size plus variation).
pub const MAX_SLICE: usize = 1 << 20;

impl FaultRequest {
    /// Parses a request body, naming the problem on failure.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let serde_json::Value::Object(mut map) = v else {
            return Err("the body must be a JSON object".into());
        };
        let target =
            match map.remove("target") {
                Some(serde_json::Value::String(t)) if !t.is_empty() => t,
                _ => return Err(
                    "`target` is required: a service, replica, edge (a->b), zone, queue or pid:N"
                        .into(),
                ),
            };
        let ttl_ms = match map.remove("ttl_ms") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or("`ttl_ms` must be a whole number of milliseconds")?,
            ),
        };
        let seed = match map.remove("seed") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or("`seed` must be a whole number")?),
        };
        match map.get("kind").and_then(|k| k.as_str()) {
            None => {
                return Err(format!(
                    "`kind` is required, one of: {}",
                    FaultSpec::KINDS.join(", ")
                ));
            }
            Some(k) if !FaultSpec::KINDS.contains(&k) => {
                return Err(format!(
                    "unknown fault kind `{k}`; kinds are: {}",
                    FaultSpec::KINDS.join(", ")
                ));
            }
            Some(_) => {}
        }
        let spec: FaultSpec =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
        let req = FaultRequest {
            spec,
            target,
            ttl_ms,
            seed,
        };
        req.validate()?;
        Ok(req)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl_ms.map_or(DEFAULT_TTL, Duration::from_millis)
    }

    pub fn validate(&self) -> Result<(), String> {
        let ttl = self.ttl();
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err("`ttl_ms` must be from 1 ms to 24 hours".into());
        }
        let toxicity = |t: f64| {
            if (0.0..=1.0).contains(&t) {
                Ok(())
            } else {
                Err(format!("`toxicity` must be from 0 to 1, not {t}"))
            }
        };
        let percent = |p: f64| {
            if (0.0..=100.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("`percent` must be from 0 to 100, not {p}"))
            }
        };
        match &self.spec {
            FaultSpec::Latency { toxicity: t, .. }
            | FaultSpec::Blackhole { toxicity: t, .. }
            | FaultSpec::Reset { toxicity: t, .. }
            | FaultSpec::SlowClose { toxicity: t, .. }
            | FaultSpec::LimitData { toxicity: t, .. } => toxicity(*t),
            FaultSpec::Bandwidth {
                rate, toxicity: t, ..
            } => {
                if *rate == 0 {
                    return Err("`rate` must be at least 1 byte a second".into());
                }
                toxicity(*t)
            }
            FaultSpec::Slicer {
                average_size,
                toxicity: t,
                ..
            } => {
                if *average_size == 0 {
                    return Err("`average_size` must be at least 1 byte".into());
                }
                toxicity(*t)
            }
            FaultSpec::HttpAbort {
                status, percent: p, ..
            } => {
                if !(100..=599).contains(status) {
                    return Err(format!(
                        "`status` must be an HTTP status from 100 to 599, not {status}"
                    ));
                }
                percent(*p)
            }
            FaultSpec::HttpDelay { percent: p, .. } => percent(*p),
            FaultSpec::Poison { count } if !(1..=10_000).contains(count) => {
                Err("`count` must be from 1 to 10000".into())
            }
            FaultSpec::Partition { with } if with.trim().is_empty() => {
                Err("`with` names the other side of the partition".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FaultRequest, String> {
        FaultRequest::from_json(s.as_bytes())
    }

    #[test]
    fn requests_parse_with_defaults() {
        let r = parse(r#"{"kind":"latency","target":"payments->bank","delay_ms":200,"jitter_ms":20,"ttl_ms":60000}"#).unwrap();
        assert_eq!(r.target, "payments->bank");
        assert_eq!(r.ttl(), Duration::from_secs(60));
        assert_eq!(
            r.spec,
            FaultSpec::Latency {
                delay_ms: 200,
                jitter_ms: 20,
                direction: Directions::Downstream,
                toxicity: 1.0
            }
        );
        let r = parse(r#"{"kind":"kill","target":"orders-2"}"#).unwrap();
        assert_eq!(r.spec, FaultSpec::Kill { hold: false });
        assert_eq!(r.ttl(), DEFAULT_TTL);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert!(parse("nope").unwrap_err().contains("not JSON"));
        assert!(
            parse(r#"{"kind":"kill"}"#)
                .unwrap_err()
                .contains("`target` is required")
        );
        assert!(
            parse(r#"{"target":"x"}"#)
                .unwrap_err()
                .contains("`kind` is required")
        );
        assert!(
            parse(r#"{"kind":"explode","target":"x"}"#)
                .unwrap_err()
                .contains("unknown fault kind `explode`")
        );
        let e = parse(r#"{"kind":"latency","target":"a->b","delay":5}"#).unwrap_err();
        assert!(e.contains("unknown field `delay`"), "{e}");
        assert!(
            parse(r#"{"kind":"latency","target":"a->b"}"#)
                .unwrap_err()
                .contains("missing field `delay_ms`")
        );
        assert!(
            parse(r#"{"kind":"http-abort","target":"a->b","status":700}"#)
                .unwrap_err()
                .contains("`status`")
        );
        assert!(
            parse(r#"{"kind":"pause","target":"a","ttl_ms":0}"#)
                .unwrap_err()
                .contains("ttl_ms")
        );
        assert!(
            parse(r#"{"kind":"latency","target":"a->b","delay_ms":1,"toxicity":2}"#)
                .unwrap_err()
                .contains("toxicity")
        );
    }
}
