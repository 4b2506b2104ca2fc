//! What a fault is, as the control API, the CLI and experiment files describe it: a kind
//! with its parameters, a target, a time to live. The kinds and their parameters are
//! described in [`super::kinds`]; requests are read through those descriptions, so every
//! bound is checked in one place whatever the dialect.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::kind::{Dialect, Kind, Lasts, Raw, Target};
use super::kinds;
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

    /// What an edge's directions mean on a container that serves: what goes upstream
    /// (requests) it receives, what goes downstream (responses) it sends.
    pub fn on_container(self) -> Traffic {
        match self {
            Directions::Upstream => Traffic::In,
            Directions::Downstream => Traffic::Out,
            Directions::Both => Traffic::Both,
        }
    }
}

/// Which packets of a container a fault acts on: what it receives, what it sends, or
/// both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Traffic {
    In,
    Out,
    #[default]
    Both,
}

/// Every fault kind with its parameters, typed, as the fault engine executes it; read
/// from requests through its description in [`super::kinds`], written as the API's
/// JSON by `Serialize` (times in milliseconds, a slicer's delay in microseconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultSpec {
    /// SIGKILL; with `hold`, the replica stays down until the fault heals.
    Kill { hold: bool },
    /// SIGTERM; with `hold`, the replica stays down until the fault heals.
    Terminate { hold: bool },
    /// SIGSTOP until the fault heals (SIGCONT).
    Pause,
    /// SIGTERM and start again at once.
    Restart,
    Latency {
        delay_ms: u64,
        jitter_ms: u64,
        direction: Directions,
        toxicity: f64,
    },
    Bandwidth {
        /// Bytes a second.
        rate: u64,
        direction: Directions,
        toxicity: f64,
    },
    /// Drop all data and hold the connection (optionally close it after a time).
    Blackhole {
        #[serde(skip_serializing_if = "Option::is_none")]
        close_after_ms: Option<u64>,
        direction: Directions,
        toxicity: f64,
    },
    /// Close connections with a TCP RST.
    Reset {
        after_ms: u64,
        direction: Directions,
        toxicity: f64,
    },
    Slicer {
        average_size: usize,
        size_variation: usize,
        delay_us: u64,
        direction: Directions,
        toxicity: f64,
    },
    SlowClose {
        delay_ms: u64,
        direction: Directions,
        toxicity: f64,
    },
    LimitData {
        bytes: u64,
        direction: Directions,
        toxicity: f64,
    },
    /// Answer a share of matching HTTP requests with `status`.
    HttpAbort {
        status: u16,
        percent: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Hold a share of matching HTTP requests for `delay_ms`.
    HttpDelay {
        delay_ms: u64,
        percent: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Drop a random share of a container's packets (iptables in its network namespace).
    Loss { percent: f64, direction: Traffic },
    /// Cut every edge between the target services and `with` (comma-separated service
    /// lists), both ways, live connections included.
    Partition { with: String },
    /// Every replica of the target zone killed and held down.
    ZoneOutage,
    /// `count` malformed messages sent to the target queue.
    Poison { count: usize },
    /// The target queue's consumers (or producers) cut off from the broker.
    QueuePartition { side: QueueSide },
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
            FaultSpec::Loss { .. } => "loss",
            FaultSpec::Partition { .. } => "partition",
            FaultSpec::ZoneOutage => "zone-outage",
            FaultSpec::Poison { .. } => "poison",
            FaultSpec::QueuePartition { .. } => "queue-partition",
        }
    }

    /// The kind's description.
    pub fn description(&self) -> &'static Kind {
        kinds::find(self.kind()).expect("every variant is described in kinds::KINDS")
    }

    /// Whether the fault holds its replicas down (a kill or terminate with `hold`).
    pub fn holds(&self) -> bool {
        matches!(
            self,
            FaultSpec::Kill { hold: true } | FaultSpec::Terminate { hold: true }
        )
    }

    /// Whether the fault is over as soon as it took effect (nothing to heal).
    pub fn is_instant(&self) -> bool {
        match self.description().lasts {
            Lasts::AtOnce => true,
            Lasts::WhileHeld => !self.holds(),
            Lasts::UntilHealed => false,
        }
    }
}

/// A request to inject a fault. It is read (from the API, the journal, an agent's
/// answer) only through [`FaultRequest::from_json`], so every bound holds for every
/// request in the system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultRequest {
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub target: String,
    /// Lease length; the fault heals when it runs out unless renewed.
    pub ttl_ms: Option<u64>,
    /// Seed of the fault's random draws (which connections, which requests).
    pub seed: Option<u64>,
    /// For a `pid:N` or `proc:PATTERN` target: act on each process's whole tree (its
    /// descendants too; the default) or, with `false`, on the processes themselves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<bool>,
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
    /// Parses a request body, naming the problem on failure. Duplicate keys, values of
    /// the wrong type and values past their bounds are refused, never wrapped or
    /// dropped.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        Self::from_map(crate::json::parse_object(body)?)
    }

    /// Like [`FaultRequest::from_json`], from a JSON object already parsed.
    pub fn from_map(mut map: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let target = match map.remove("target") {
            Some(serde_json::Value::String(t)) if !t.is_empty() => t,
            None | Some(serde_json::Value::Null) => {
                return Err(format!("`target` is required: {TARGETS}"));
            }
            Some(serde_json::Value::String(_)) => {
                return Err(format!("`target` is empty: {TARGETS}"));
            }
            Some(v) => {
                return Err(format!(
                    "`target` must be a string ({TARGETS}), not {}",
                    crate::json::type_name(&v)
                ));
            }
        };
        let ttl_ms = whole(
            map.remove("ttl_ms"),
            "ttl_ms",
            "a whole number of milliseconds",
        )?;
        let seed = whole(map.remove("seed"), "seed", "a whole number")?;
        let tree = match map.remove("tree") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Bool(b)) => Some(b),
            Some(v) => {
                return Err(format!(
                    "`tree` must be true or false, not {}",
                    crate::json::type_name(&v)
                ));
            }
        };
        let kind = match map.remove("kind") {
            None | Some(serde_json::Value::Null) => {
                return Err(format!(
                    "`kind` is required, one of: {}",
                    kinds::names().join(", ")
                ));
            }
            Some(serde_json::Value::String(k)) => kinds::find(&k).ok_or_else(|| {
                format!(
                    "unknown fault kind `{k}`; kinds are: {}",
                    kinds::names().join(", ")
                )
            })?,
            Some(v) => {
                return Err(format!(
                    "`kind` must be a string, one of: {}; not {}",
                    kinds::names().join(", "),
                    crate::json::type_name(&v)
                ));
            }
        };
        let given = map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.as_str(), Raw::Json(v)));
        let spec = kind.parse(Dialect::Json, given).map_err(|e| e.message)?;
        let req = FaultRequest {
            spec,
            target,
            ttl_ms,
            seed,
            tree,
        };
        req.check_envelope()?;
        Ok(req)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl_ms.map_or(DEFAULT_TTL, Duration::from_millis)
    }

    /// Checks a request made in code (not read) as a read one is checked: by reading
    /// what it writes.
    pub fn validate(&self) -> Result<(), String> {
        let serde_json::Value::Object(map) =
            serde_json::to_value(self).map_err(|e| e.to_string())?
        else {
            return Err("a request is a JSON object".into());
        };
        Self::from_map(map).map(|_| ())
    }

    /// What concerns the request beyond its kind's parameters: the lease, the target's
    /// length, and what a `pid:N` target allows.
    fn check_envelope(&self) -> Result<(), String> {
        if self.target.len() > MAX_TARGET {
            return Err(format!(
                "`target` is {} bytes long; the limit is {MAX_TARGET}",
                self.target.len()
            ));
        }
        if self.ttl_ms == Some(0) || self.ttl() > MAX_TTL {
            return Err(format!(
                "`ttl_ms` must be from 1 to {} (24h), not {}",
                MAX_TTL.as_millis(),
                self.ttl_ms.unwrap_or_default()
            ));
        }
        if container_target(&self.target)?.is_some() {
            return self.check_container();
        }
        let kind = self.spec.description();
        if kind.targets == [Target::Container] {
            return Err(format!(
                "`{} {}`: {} acts on a container (container:NAME), inside its network namespace",
                kind.name, self.target, kind.name
            ));
        }
        if process_target(&self.target)?.is_none() {
            if self.tree == Some(false) {
                return Err(format!(
                    "`tree` applies to pid:N and proc:PATTERN targets; `{}` is a replica or service, always acted on as its whole process tree",
                    self.target
                ));
            }
            return Ok(());
        }
        if !kind.targets(Target::Pid) {
            let takes = kinds_taking(Target::Pid);
            let why = if kind.name == "restart" {
                format!(
                    ": nobody restarts {}, a process faultline did not start (kill or terminate it, and start it again yourself)",
                    self.target
                )
            } else {
                String::new()
            };
            return Err(format!(
                "`{} {}`: a process target takes {}, not {}{why}",
                kind.name, self.target, takes, kind.name
            ));
        }
        if self.spec.holds() {
            return Err(format!(
                "`hold` keeps a supervised replica down, and nobody restarts {}: drop `hold`, or target the replica by name",
                self.target
            ));
        }
        Ok(())
    }
}

/// The kinds that take a target of `kind`, comma-separated, for messages.
fn kinds_taking(target: Target) -> String {
    kinds::KINDS
        .iter()
        .filter(|k| k.targets(target))
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl FaultRequest {
    /// What a `container:NAME` target allows: the kinds that take one, no `tree`.
    fn check_container(&self) -> Result<(), String> {
        let kind = self.spec.description();
        if !kind.targets(Target::Container) {
            let takes = kinds_taking(Target::Container);
            return Err(format!(
                "`{} {}`: a container target takes {}, not {} (the other network faults act on edges and proxies: put a proxy in front of the container)",
                kind.name, self.target, takes, kind.name
            ));
        }
        if self.tree.is_some() {
            return Err(format!(
                "`tree` applies to pid:N and proc:PATTERN targets; {} is a container, acted on whole",
                self.target
            ));
        }
        let toxicity = |t: f64| {
            if t < 1.0 {
                return Err(format!(
                    "`toxicity` picks connections on an edge's proxy; on {} every packet is affected (for a share of packets, use `loss`)",
                    self.target
                ));
            }
            Ok(())
        };
        // tbf and netem queue what an interface sends; the container's side of what it
        // receives would take an ifb device.
        let egress = |d: Directions| {
            if d != Directions::Downstream {
                return Err(format!(
                    "`{} {}`: on a container this shapes only what it sends (a qdisc on its interfaces' egress): `direction` must be downstream",
                    kind.name, self.target
                ));
            }
            Ok(())
        };
        match &self.spec {
            FaultSpec::Reset {
                after_ms,
                toxicity: t,
                ..
            } => {
                if *after_ms > 0 {
                    return Err(format!(
                        "`after` delays resets on an edge's proxy; on {} the resets start at once (give no `after`)",
                        self.target
                    ));
                }
                toxicity(*t)
            }
            FaultSpec::Bandwidth {
                direction,
                toxicity: t,
                ..
            }
            | FaultSpec::Latency {
                direction,
                toxicity: t,
                ..
            } => {
                egress(*direction)?;
                toxicity(*t)
            }
            FaultSpec::Partition { with } => self.check_container_sides(with),
            _ => Ok(()),
        }
    }

    /// The other side of a container's partition: containers and networks, or nothing
    /// (every network it is on).
    fn check_container_sides(&self, with: &str) -> Result<(), String> {
        let own = container_target(&self.target)?.unwrap_or_default();
        for item in with.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some(peer) = container_target(item)? {
                if peer == own {
                    return Err(format!(
                        "container `{own}` is on both sides of the partition"
                    ));
                }
            } else if let Some(net) = item.strip_prefix("network:") {
                if !is_docker_name(net) {
                    return Err(format!(
                        "`{item}` does not name a network: network:NAME takes a Docker network's name or id (letters, digits, `_`, `.`, `-`)"
                    ));
                }
            } else {
                return Err(format!(
                    "`partition {} with {item}`: a container is partitioned from containers (container:NAME) or Docker networks (network:NAME), comma-separated, or from every network it is on (give no `with`), not from `{item}`",
                    self.target
                ));
            }
        }
        Ok(())
    }
}

/// A name or id as Docker writes them: a letter or digit, then letters, digits, `_`,
/// `.` and `-`, at most 128 bytes.
fn is_docker_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A process target: a process id, or processes by command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessTarget {
    Pid(i32),
    /// A regular expression over `/proc/PID/cmdline` (arguments joined by spaces).
    Pattern(String),
}

/// The longest `proc:` pattern.
pub const MAX_PATTERN: usize = 512;

/// The container `target` names (`container:NAME`, a name or an id as Docker writes
/// them), `None` for any other target.
pub fn container_target(target: &str) -> Result<Option<&str>, String> {
    let Some(name) = target.strip_prefix("container:") else {
        return Ok(None);
    };
    if is_docker_name(name) {
        Ok(Some(name))
    } else {
        Err(format!(
            "`{target}` does not name a container: container:NAME takes a container's name or id (letters, digits, `_`, `.`, `-`)"
        ))
    }
}

/// The process target `target` names (`pid:N` or `proc:PATTERN`), `None` for any other.
pub fn process_target(target: &str) -> Result<Option<ProcessTarget>, String> {
    if let Some(pid) = pid_target(target)? {
        return Ok(Some(ProcessTarget::Pid(pid)));
    }
    let Some(pattern) = target.strip_prefix("proc:") else {
        return Ok(None);
    };
    if pattern.is_empty() {
        return Err(format!(
            "`{target}` has no pattern: proc:PATTERN takes a regular expression over command lines, like proc:'redis-server .*:6379'"
        ));
    }
    if pattern.len() > MAX_PATTERN {
        return Err(format!(
            "the pattern of `proc:` is {} bytes long; the limit is {MAX_PATTERN}",
            pattern.len()
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            format!(
                "`{target}` is not a valid regular expression: {}",
                one_line(&e.to_string())
            )
        })?;
    Ok(Some(ProcessTarget::Pattern(pattern.to_owned())))
}

/// A multi-line message (the regex crate's) on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl<'de> Deserialize<'de> for FaultRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Object(map) => Self::from_map(map).map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom("a fault request is a JSON object")),
        }
    }
}

/// What a target can be, for messages.
const TARGETS: &str = "a service, replica, edge ('a->b'), zone, queue, pid:N or proc:PATTERN";
/// The longest target (or partition side) accepted.
pub const MAX_TARGET: usize = 1024;
/// The most poison messages one fault injects.
pub const MAX_POISON: usize = 10_000;

/// The process a `pid:N` target names, or `None` for any other target. `N` is a plain
/// decimal above 1 and at most the kernel's `pid_max`: nothing that `kill(2)` would read
/// as a process group (a negative number) or as every process (-1), no sign, no
/// leading zero, and never init.
pub fn pid_target(target: &str) -> Result<Option<i32>, String> {
    let Some(digits) = target.strip_prefix("pid:") else {
        return Ok(None);
    };
    let max = pid_max();
    let bad = || {
        format!("`{target}` is not a process id target: pid:N takes a process id from 2 to {max}")
    };
    if digits.is_empty()
        || digits.len() > 10
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(bad());
    }
    match digits.parse::<u64>() {
        Ok(p) if (2..=max).contains(&p) => Ok(Some(p as i32)),
        _ => Err(bad()),
    }
}

/// The kernel's largest process id (`/proc/sys/kernel/pid_max`; 2^22 where unreadable,
/// the most Linux allows).
pub fn pid_max() -> u64 {
    static MAX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|m| (2..=1 << 22).contains(m))
            .unwrap_or(1 << 22)
    })
}

fn whole(v: Option<serde_json::Value>, name: &str, what: &str) -> Result<Option<u64>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{name}` must be {what}, not {v}")),
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
        assert!(parse("nope").unwrap_err().contains("not valid JSON"));
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
                .contains("a `latency` fault needs `delay_ms`")
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

    /// What every kind's `Serialize` writes, its description reads back as the same
    /// request: the typed enum and the descriptions agree on every name and unit.
    #[test]
    fn every_kind_reads_back_what_it_writes() {
        use crate::faults::kind::Type;
        for kind in kinds::KINDS {
            let target = if kind.targets == [Target::Container] {
                "container:c"
            } else {
                "a->b"
            };
            let mut body =
                serde_json::json!({"kind": kind.name, "target": target, "ttl_ms": 5000, "seed": 7});
            for p in kind.params {
                let v: serde_json::Value = match p.ty {
                    Type::Duration { .. } => 3.into(),
                    Type::Whole { min, .. } => (min + 1).into(),
                    Type::Real { max, .. } => (max / 2.0).into(),
                    Type::Flag => true.into(),
                    Type::Choice(words) => words[words.len() - 1].into(),
                    Type::Text { check } => ["GET", "/x", "b"]
                        .into_iter()
                        .find(|t| check(t).is_ok())
                        .expect("a sample text")
                        .into(),
                };
                body[p.json] = v;
            }
            let first = FaultRequest::from_json(body.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}: {body}", kind.name));
            let written = serde_json::to_vec(&first).unwrap();
            let again = FaultRequest::from_json(&written).unwrap_or_else(|e| {
                panic!("{}: {e}: {}", kind.name, String::from_utf8_lossy(&written))
            });
            assert_eq!(first, again, "{}", kind.name);
            // Every parameter given was kept: the typed request writes each back.
            let v: serde_json::Value = serde_json::from_slice(&written).unwrap();
            for p in kind.params {
                assert_eq!(v[p.json], body[p.json], "{} {}", kind.name, p.json);
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A JSON value of any type, with the extremes a hostile client would send.
        fn value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                prop_oneof![Just(u64::MAX), Just(1u64 << 63), Just(86_400_001), Just(0)]
                    .prop_map(serde_json::Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(serde_json::Value::from),
                "[ -~]{0,12}".prop_map(serde_json::Value::from),
                prop_oneof![
                    Just("pid:4294967295"),
                    Just("pid:-1"),
                    Just("pid:+5"),
                    Just("pid:2"),
                    Just("a->b"),
                    Just("orders-2"),
                    Just(""),
                ]
                .prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(2, 8, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                    prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Keys a fault request may have, and some it may not.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "kind",
                    "target",
                    "ttl_ms",
                    "seed",
                    "hold",
                    "delay_ms",
                    "jitter_ms",
                    "direction",
                    "toxicity",
                    "rate",
                    "close_after_ms",
                    "after_ms",
                    "average_size",
                    "size_variation",
                    "delay_us",
                    "bytes",
                    "status",
                    "percent",
                    "method",
                    "path",
                    "with",
                    "count",
                    "side",
                ])
                .prop_map(str::to_owned),
                "[a-z_]{1,10}",
            ]
        }

        fn request() -> impl Strategy<Value = String> {
            let kind = prop::sample::select(kinds::names());
            (kind, prop::collection::vec((key(), value()), 0..8)).prop_map(|(kind, fields)| {
                let mut body = format!("{{\"kind\":\"{kind}\"");
                for (k, v) in fields {
                    // Written out by hand, so a key can repeat.
                    body.push_str(&format!(",\"{k}\":{v}"));
                }
                body.push('}');
                body
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            #[test]
            fn any_bytes_are_refused_with_a_message_or_parsed_valid(body in prop::collection::vec(any::<u8>(), 0..64)) {
                match FaultRequest::from_json(&body) {
                    Ok(r) => prop_assert!(r.validate().is_ok()),
                    Err(m) => prop_assert!(!m.is_empty()),
                }
            }

            #[test]
            fn any_request_is_refused_with_a_message_or_parsed_within_its_bounds(body in request()) {
                match FaultRequest::from_json(body.as_bytes()) {
                    Ok(r) => {
                        prop_assert!(r.validate().is_ok());
                        prop_assert!(!r.target.is_empty());
                        prop_assert!(r.ttl() <= MAX_TTL && !r.ttl().is_zero());
                        if let Some(pid) = pid_target(&r.target).unwrap() {
                            prop_assert!(pid > 1);
                        }
                        let ms = MAX_DURATION.as_millis() as u64;
                        match r.spec {
                            FaultSpec::Latency { delay_ms, jitter_ms, .. } => {
                                prop_assert!(delay_ms <= ms && jitter_ms <= ms);
                            }
                            FaultSpec::Slicer { average_size, size_variation, .. } => {
                                prop_assert!(average_size + size_variation <= MAX_SLICE);
                            }
                            FaultSpec::LimitData { bytes, .. } => prop_assert!(bytes <= MAX_BYTES),
                            _ => {}
                        }
                    }
                    Err(m) => prop_assert!(!m.is_empty()),
                }
            }
        }
    }
}
