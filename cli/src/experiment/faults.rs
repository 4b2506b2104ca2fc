//! The fault timeline of an experiment file: each `[[faults]]` entry becomes the agent's
//! `FaultRequest` (durations written as "200ms" turn into the API's milliseconds), with
//! errors placed on the key at fault; targets are checked against the topology when it
//! is known before the run.

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use faultline_agent::faults::{FaultRequest, FaultSpec, spec};
use faultline_agent::topology::Topology;
use schemars::JsonSchema;
use toml::Spanned;

use crate::limits;

/// One entry of the timeline, as written (the schema of `[[faults]]`).
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct FaultEntry {
    /// When the fault starts, from the start of the load ("20s").
    at: String,
    /// How long it lasts; the runner heals it then. Required for faults that last
    /// (pause, network and HTTP faults, partitions, held kills); not allowed for
    /// instant ones (restart, poison).
    duration: Option<String>,
    /// A service, a replica (`orders-2`), an edge (`payments->bank`), a zone or a queue,
    /// as the kind requires; for partition, a comma-separated list of services.
    target: String,
    /// Seed of the fault's own random draws (default: from the experiment's seed).
    seed: Option<u64>,
    #[serde(flatten)]
    params: FaultParams,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Direction {
    Upstream,
    Downstream,
    Both,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Side {
    Consumers,
    Producers,
}

/// The kind and its parameters (durations as strings like "200ms").
#[derive(JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[allow(dead_code)]
enum FaultParams {
    /// SIGKILL; with `hold`, the replica stays down until the fault heals.
    Kill {
        hold: Option<bool>,
    },
    /// SIGTERM; with `hold`, the replica stays down until the fault heals.
    Terminate {
        hold: Option<bool>,
    },
    /// SIGSTOP until the fault heals.
    Pause {},
    /// SIGTERM and start again at once.
    Restart {},
    Latency {
        delay: String,
        jitter: Option<String>,
        direction: Option<Direction>,
        toxicity: Option<f64>,
    },
    Bandwidth {
        /// Bytes a second.
        #[schemars(range(min = 1, max = spec::MAX_RATE))]
        rate: u64,
        direction: Option<Direction>,
        toxicity: Option<f64>,
    },
    Blackhole {
        close_after: Option<String>,
        direction: Option<Direction>,
        toxicity: Option<f64>,
    },
    Reset {
        after: Option<String>,
        direction: Option<Direction>,
        toxicity: Option<f64>,
    },
    Slicer {
        /// Bytes; with `size_variation`, at most 1 MiB.
        #[schemars(range(min = 1, max = spec::MAX_SLICE))]
        average_size: usize,
        #[schemars(range(max = spec::MAX_SLICE))]
        size_variation: Option<usize>,
        delay: Option<String>,
        direction: Option<Direction>,
        toxicity: Option<f64>,
    },
    SlowClose {
        delay: String,
        direction: Option<Direction>,
        toxicity: Option<f64>,
    },
    LimitData {
        #[schemars(range(max = spec::MAX_BYTES))]
        bytes: u64,
        direction: Option<Direction>,
        toxicity: Option<f64>,
    },
    HttpAbort {
        status: u16,
        percent: Option<f64>,
        method: Option<String>,
        path: Option<String>,
    },
    HttpDelay {
        delay: String,
        percent: Option<f64>,
        method: Option<String>,
        path: Option<String>,
    },
    /// Both directions of every edge between `target` and `with`.
    Partition {
        with: String,
    },
    ZoneOutage {},
    Poison {
        #[schemars(range(max = crate::limits::MAX_POISON))]
        count: usize,
    },
    QueuePartition {
        side: Option<Side>,
    },
}

/// A fault of the timeline, ready for the agent.
#[derive(Debug, Clone)]
pub struct Planned {
    pub at: Duration,
    /// `None` for instant faults.
    pub duration: Option<Duration>,
    pub request: FaultRequest,
    /// `kind target`, for reports.
    pub label: String,
    /// Where `target` is written, for errors found when the run starts.
    pub target_span: Range<usize>,
    /// Where `with` is written (partitions).
    pub with_span: Range<usize>,
}

/// The text of a table: TOML gives the span of an `[[array]]` table's header only, so
/// the table runs on to the next header (or the end).
fn table_region(text: &str, span: &Range<usize>) -> Range<usize> {
    if text.get(span.clone()).is_some_and(|t| t.starts_with('[')) {
        let end = text[span.end..]
            .find("\n[")
            .map_or(text.len(), |i| span.end + i);
        span.start..end
    } else {
        span.clone()
    }
}

/// Where in `text` (within the table at `within`) the key `key` is written.
pub fn key_span(text: &str, within: &Range<usize>, key: &str) -> Option<Range<usize>> {
    let within = &table_region(text, within);
    let region = text.get(within.clone())?;
    let mut from = 0;
    while let Some(i) = region[from..].find(key) {
        let start = from + i;
        let before = region[..start].chars().next_back();
        let after = region[start + key.len()..].trim_start();
        let boundary = before.is_none_or(|c| c.is_whitespace() || c == '{' || c == ',');
        if boundary && after.starts_with('=') {
            return Some(within.start + start..within.start + start + key.len());
        }
        from = start + key.len();
    }
    None
}

/// Where the value of `key` starts (after `=` and blanks).
pub fn value_span(text: &str, within: &Range<usize>, key: &str) -> Option<Range<usize>> {
    let k = key_span(text, within, key)?;
    let within = table_region(text, within);
    let rest = &text[k.end..within.end];
    let eq = rest.find('=')?;
    let skip = rest[eq + 1..].len() - rest[eq + 1..].trim_start().len();
    let start = k.end + eq + 1 + skip;
    Some(start..start + 1)
}

/// Turns `(toml key, JSON key)` renames around in a message from the API's parser.
const RENAMES: &[(&str, &str)] = &[
    ("delay", "delay_ms"),
    ("delay", "delay_us"),
    ("jitter", "jitter_ms"),
    ("close_after", "close_after_ms"),
    ("after", "after_ms"),
];

fn humane(message: &str) -> String {
    let mut m = message.to_owned();
    for (toml, json) in RENAMES {
        m = m.replace(&format!("`{json}`"), &format!("`{toml}`"));
    }
    m
}

fn parse_duration(v: &toml::Value, key: &str) -> Result<Duration, String> {
    let s = v.as_str().ok_or_else(|| {
        format!("`{key}` is a duration: write it as a string, like \"200ms\" or \"30s\"")
    })?;
    humantime::parse_duration(s)
        .map_err(|e| format!("`{key}`: `{s}` is not a duration ({e}); write 200ms, 30s, 2m"))
}

/// An error at `key` of the entry if it is written there, else at the entry.
fn at_key(text: &str, span: &Range<usize>, key: &str) -> Range<usize> {
    value_span(text, span, key).unwrap_or(span.start..span.start + 1)
}

/// The key of `table` a message from the API's parser is about: the first backticked
/// word that is a key, else the key whose value the message quotes (`down`, "503").
fn key_in_message(message: &str, table: &toml::Table) -> Option<String> {
    if let Some(k) = message
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|w| table.contains_key(*w))
    {
        return Some(k.to_owned());
    }
    let quoted: Vec<&str> = message
        .split('`')
        .skip(1)
        .step_by(2)
        .chain(message.split('"').skip(1).step_by(2))
        .collect();
    table
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "kind" | "target" | "at" | "duration"))
        .find(|(_, v)| {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            quoted.contains(&text.as_str())
        })
        .map(|(k, _)| k.clone())
}

/// An error: the byte range it concerns and the message.
type Problem = (Range<usize>, String);

/// The bound of an integer parameter of `kind`, with its unit as messages write it.
fn param_limit(kind: &str, key: &str) -> Option<(u64, &'static str)> {
    match (kind, key) {
        ("bandwidth", "rate") => Some((spec::MAX_RATE, " bytes a second")),
        ("limit-data", "bytes") => Some((spec::MAX_BYTES, " bytes")),
        ("slicer", "average_size" | "size_variation") => Some((spec::MAX_SLICE as u64, " bytes")),
        ("poison", "count") => Some((limits::MAX_POISON, " messages")),
        _ => None,
    }
}

/// Converts one entry; errors come with the byte range they concern.
pub fn convert(
    text: &str,
    entry: &Spanned<toml::Table>,
    seed: u64,
    run: Duration,
) -> Result<Planned, Problem> {
    let span = entry.span();
    let table = entry.get_ref();
    let err_at = |key: &str, message: String| (at_key(text, &span, key), message);
    let head = span.start..span.start + 1;
    let kind = kind_of(table, &head, &err_at)?;
    let target = match table.get("target").map(|t| t.as_str()) {
        Some(Some(t)) if !t.trim().is_empty() => t.to_owned(),
        Some(_) => {
            return Err(err_at(
                "target",
                "`target` must name a service, replica, edge, zone or queue".into(),
            ));
        }
        None => return Err((head, format!("this `{kind}` fault has no `target`"))),
    };
    let (at, duration) = timing(table, &head, &err_at, run)?;
    let mut body = params(table, &kind, &err_at)?;
    body.insert("target".into(), target.clone().into());
    if !body.contains_key("seed") {
        let at_ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        body.insert(
            "seed".into(),
            (seed ^ at_ms.wrapping_mul(0x9E37_79B9)).into(),
        );
    }
    let json = serde_json::Value::Object(body).to_string();
    let request = FaultRequest::from_json(json.as_bytes()).map_err(|m| {
        let m = humane(&m);
        match key_in_message(&m, table) {
            Some(k) if m.starts_with("unknown field") => {
                (key_span(text, &span, &k).unwrap_or(head.clone()), m.clone())
            }
            Some(k) if !m.contains(&format!("`{k}`")) => err_at(&k, format!("`{k}`: {m}")),
            Some(k) => err_at(&k, m.clone()),
            None => err_at("kind", m.clone()),
        }
    })?;
    check_lasting(&kind, &request.spec, duration, &head, &err_at)?;
    if let Some(d) = duration {
        // Both are within a day, so the sum is far from overflowing; checked all the same.
        let end = at.checked_add(d).filter(|end| *end <= run);
        if end.is_none() {
            return Err(err_at(
                "duration",
                format!(
                    "the fault would end at {}, after the run ends at {}",
                    humantime::format_duration(at.saturating_add(d)),
                    humantime::format_duration(run)
                ),
            ));
        }
    }
    let label = match &request.spec {
        FaultSpec::Partition { with } => format!("partition {target} | {with}"),
        _ => format!("{kind} {target}"),
    };
    Ok(Planned {
        at,
        duration,
        request,
        label,
        target_span: at_key(text, &span, "target"),
        with_span: at_key(text, &span, "with"),
    })
}

/// The entry's `kind`, one of the agent's.
fn kind_of(
    table: &toml::Table,
    head: &Range<usize>,
    err_at: &impl Fn(&str, String) -> Problem,
) -> Result<String, Problem> {
    match table.get("kind") {
        None => Err((
            head.clone(),
            format!(
                "this fault has no `kind`; kinds are: {}",
                FaultSpec::KINDS.join(", ")
            ),
        )),
        Some(k) => match k.as_str() {
            Some(k) if FaultSpec::KINDS.contains(&k) => Ok(k.to_owned()),
            _ => Err(err_at(
                "kind",
                format!(
                    "unknown fault kind {k}; kinds are: {}",
                    FaultSpec::KINDS.join(", ")
                ),
            )),
        },
    }
}

/// When the fault starts, and how long it lasts (at most the agent's
/// [`spec::MAX_DURATION`]).
fn timing(
    table: &toml::Table,
    head: &Range<usize>,
    err_at: &impl Fn(&str, String) -> Problem,
    run: Duration,
) -> Result<(Duration, Option<Duration>), Problem> {
    let at = match table.get("at") {
        None => {
            return Err((
                head.clone(),
                "this fault has no `at` (when it starts, like \"20s\")".into(),
            ));
        }
        Some(v) => parse_duration(v, "at").map_err(|m| err_at("at", m))?,
    };
    if at >= run {
        return Err(err_at(
            "at",
            format!(
                "`at` {} is not within the run's duration of {}",
                humantime::format_duration(at),
                humantime::format_duration(run)
            ),
        ));
    }
    let duration = match table.get("duration") {
        None => None,
        Some(v) => {
            let d = parse_bounded(v, "duration").map_err(|m| err_at("duration", m))?;
            if d.is_zero() {
                return Err(err_at("duration", "`duration` must be above zero".into()));
            }
            Some(d)
        }
    };
    Ok((at, duration))
}

/// A duration parameter, at most the agent's [`spec::MAX_DURATION`].
fn parse_bounded(v: &toml::Value, key: &str) -> Result<Duration, String> {
    let d = parse_duration(v, key)?;
    let written = v.as_str().unwrap_or_default();
    limits::duration_within(d, spec::MAX_DURATION, &format!("`{key}`"), written)?;
    Ok(d)
}

/// The entry's parameters as the API's JSON body (without `target`): durations in
/// milliseconds (a slicer's delay in microseconds), integers within their bounds.
fn params(
    table: &toml::Table,
    kind: &str,
    err_at: &impl Fn(&str, String) -> Problem,
) -> Result<serde_json::Map<String, serde_json::Value>, Problem> {
    let mut body = serde_json::Map::new();
    for (key, value) in table {
        match key.as_str() {
            "at" | "duration" | "target" => {}
            "seed" => {
                let seed = value
                    .as_integer()
                    .and_then(|i| u64::try_from(i).ok())
                    .ok_or_else(|| err_at("seed", "`seed` is a whole number".into()))?;
                body.insert("seed".into(), seed.into());
            }
            "delay" | "jitter" | "close_after" | "after" => {
                let d = parse_bounded(value, key).map_err(|m| err_at(key, m))?;
                // Within a day, both fit a u64 many times over.
                let (json, n) = match (key.as_str(), kind) {
                    ("delay", "slicer") => ("delay_us".to_owned(), d.as_micros()),
                    _ => (format!("{key}_ms"), d.as_millis()),
                };
                let n = u64::try_from(n).unwrap_or(u64::MAX);
                body.insert(json, n.into());
            }
            _ => {
                if let (Some((max, unit)), Some(n)) = (param_limit(kind, key), value.as_integer())
                    && u64::try_from(n).is_ok_and(|n| n > max)
                {
                    let message = limits::too_high(&format!("`{key}`"), format!("{max}{unit}"), n);
                    return Err(err_at(key, message));
                }
                let v = serde_json::to_value(value).map_err(|e| err_at(key, e.to_string()))?;
                body.insert(key.clone(), v);
            }
        }
    }
    if kind == "slicer" {
        let size = |k: &str| body.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let slice = size("average_size").checked_add(size("size_variation"));
        if slice.is_none_or(|s| s > spec::MAX_SLICE as u64) {
            return Err(err_at(
                "size_variation",
                format!(
                    "`average_size` plus `size_variation` must be at most {} bytes",
                    spec::MAX_SLICE
                ),
            ));
        }
    }
    Ok(body)
}

/// Whether a `duration` is there exactly when the fault lasts.
fn check_lasting(
    kind: &str,
    spec: &FaultSpec,
    duration: Option<Duration>,
    head: &Range<usize>,
    err_at: &impl Fn(&str, String) -> Problem,
) -> Result<(), Problem> {
    let instant = matches!(
        spec,
        FaultSpec::Restart
            | FaultSpec::Poison { .. }
            | FaultSpec::Kill { hold: false }
            | FaultSpec::Terminate { hold: false }
    );
    if let (Some(_), FaultSpec::Kill { hold: false } | FaultSpec::Terminate { hold: false }) =
        (duration, spec)
    {
        return Err(err_at(
            "duration",
            format!(
                "a `{kind}` without `hold = true` is over at once (the supervisor restarts the replica): add `hold = true` to keep it down for the `duration`, or remove `duration`"
            ),
        ));
    }
    match (duration, instant) {
        (None, false) => Err((
            head.clone(),
            format!("this `{kind}` fault lasts until healed: give it a `duration` (like \"15s\")"),
        )),
        (Some(_), true) if matches!(spec, FaultSpec::Restart | FaultSpec::Poison { .. }) => {
            Err(err_at(
                "duration",
                format!("a `{kind}` fault happens at once and has no `duration`"),
            ))
        }
        _ => Ok(()),
    }
}

/// Checks a comma-separated list of services (a partition's `target` or `with`).
pub fn check_services(topo: &Topology, list: &str) -> Result<BTreeSet<String>, String> {
    let services: Vec<&str> = topo.services.iter().map(|s| s.name.as_str()).collect();
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if services.contains(&s) {
                Ok(s.to_owned())
            } else {
                Err(format!(
                    "no service `{s}`; services are: {}",
                    services.join(", ")
                ))
            }
        })
        .collect()
}

/// Checks the target of a fault against the topology it will run on (a partition's
/// `with` is checked by [`check_services`]).
pub fn check_target(topo: &Topology, spec: &FaultSpec, target: &str) -> Result<(), String> {
    let services: Vec<&str> = topo.services.iter().map(|s| s.name.as_str()).collect();
    let service_of = |name: &str| -> Option<String> {
        topo.services.iter().find_map(|s| {
            if s.name == name {
                return Some(s.name.clone());
            }
            (1..=s.replicas)
                .any(|i| s.replica_name(i) == name)
                .then(|| s.name.clone())
        })
    };
    match spec {
        FaultSpec::Kill { .. }
        | FaultSpec::Terminate { .. }
        | FaultSpec::Pause
        | FaultSpec::Restart => {
            if target.starts_with("pid:") {
                return Ok(());
            }
            service_of(target).map(|_| ()).ok_or_else(|| {
                format!(
                    "no service or replica `{target}`; services are: {} (a replica is service-N)",
                    services.join(", ")
                )
            })
        }
        FaultSpec::Partition { .. } => check_services(topo, target).map(|_| ()),
        FaultSpec::ZoneOutage => {
            let zones: BTreeSet<&str> = topo
                .services
                .iter()
                .flat_map(|s| s.zones.iter().map(String::as_str))
                .collect();
            if zones.contains(target) {
                Ok(())
            } else {
                Err(format!(
                    "no zone `{target}`; zones are: {}",
                    zones.into_iter().collect::<Vec<_>>().join(", ")
                ))
            }
        }
        FaultSpec::Poison { .. } | FaultSpec::QueuePartition { .. } => {
            let queues: Vec<String> = topo
                .messaging
                .as_ref()
                .map(|m| m.queues.keys().cloned().collect())
                .unwrap_or_default();
            if queues.iter().any(|q| q == target) {
                Ok(())
            } else if queues.is_empty() {
                Err("queue faults need a topology with a [messaging] table".into())
            } else {
                Err(format!(
                    "no queue `{target}`; queues are: {}",
                    queues.join(", ")
                ))
            }
        }
        _ => {
            let Some((client, server)) = target.split_once("->") else {
                return Err(format!(
                    "`{target}` is not an edge: a `{}` fault targets an edge such as orders->broker or orders->broker-1",
                    spec.kind()
                ));
            };
            let (client, server) = (client.trim(), server.trim());
            let Some(c) = topo.service(client) else {
                return Err(format!(
                    "no service `{client}`; services are: {}",
                    services.join(", ")
                ));
            };
            match service_of(server) {
                Some(s) if c.calls.contains(&s) => Ok(()),
                _ => Err(format!(
                    "no edge `{client}->{server}`; {client} calls: {}",
                    if c.calls.is_empty() {
                        "nothing".to_owned()
                    } else {
                        c.calls.join(", ")
                    }
                )),
            }
        }
    }
}
