//! The fault timeline of an experiment file: each `[[faults]]` entry becomes the agent's
//! `FaultRequest` (durations written as "200ms" turn into the API's milliseconds), with
//! errors placed on the key at fault; targets are checked against the topology when it
//! is known before the run.

use std::ops::Range;
use std::time::Duration;

use faultline_agent::diag::line_column;
use faultline_agent::faults::kind::{self, Dialect, Kind, Lasts, Param, Raw, Type, human};
use faultline_agent::faults::kinds;
use faultline_agent::faults::targets::Resolver;
use faultline_agent::faults::{FaultRequest, FaultSpec, spec};
use faultline_agent::topology::Topology;
use toml::Spanned;

/// The JSON Schema of one `[[faults]]` entry, made from the kinds' descriptions: the
/// timing and target every entry has, then one alternative per kind with its own
/// parameters (durations as strings like "200ms", every number with its bounds).
pub fn entries_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let alternatives: Vec<serde_json::Value> = kinds::KINDS.iter().map(kind_schema).collect();
    schemars::json_schema!({
        "type": "array",
        "description": "The fault timeline: one entry per fault, by kind.",
        "default": [],
        "items": { "oneOf": alternatives }
    })
}

fn kind_schema(k: &Kind) -> serde_json::Value {
    let mut properties = serde_json::json!({
        "kind": { "const": k.name, "description": k.help },
        "at": { "type": "string", "description": "When the fault starts, from the start of the load (\"20s\")." },
        "target": { "type": "string", "description": format!("What to fault: {}.", k.targets_said()) },
        "seed": { "type": "integer", "minimum": 0, "description": "Seed of the fault's own random draws (default: from the experiment's seed)." },
    });
    if k.targets(kind::Target::Pid) {
        properties["tree"] = serde_json::json!({
            "type": "boolean",
            "default": true,
            "description": "For a pid:N or proc:PATTERN target: act on each process and all its descendants (true), or on the processes alone.",
        });
    }
    if k.lasts != Lasts::AtOnce {
        properties["duration"] = serde_json::json!({
            "type": "string",
            "description": "How long it lasts; the runner heals it then.",
        });
    }
    let mut required = vec!["kind", "at", "target"];
    for p in k.params {
        properties[p.name] = param_schema(p);
        if p.required {
            required.push(p.name);
        }
    }
    serde_json::json!({
        "type": "object",
        "description": k.help,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn param_schema(p: &Param) -> serde_json::Value {
    let mut schema = match p.ty {
        Type::Duration { max, .. } => serde_json::json!({
            "type": "string",
            "description": format!("{} (a duration such as \"200ms\", at most {})", p.help, human(max)),
        }),
        Type::Whole { min, max, .. } => {
            serde_json::json!({ "type": "integer", "minimum": min, "maximum": max })
        }
        Type::Real { min, max } => {
            serde_json::json!({ "type": "number", "minimum": min, "maximum": max })
        }
        Type::Flag => serde_json::json!({ "type": "boolean" }),
        Type::Choice(words) => serde_json::json!({ "enum": words }),
        Type::Text { .. } => serde_json::json!({ "type": "string" }),
    };
    if schema.get("description").is_none() {
        schema["description"] = p.help.into();
    }
    if let Some(d) = p.default {
        schema["default"] = match p.ty {
            Type::Whole { .. } => d.parse::<u64>().map_or(d.into(), Into::into),
            Type::Real { .. } => d.parse::<f64>().map_or(d.into(), Into::into),
            Type::Flag => d.parse::<bool>().map_or(d.into(), Into::into),
            _ => d.into(),
        };
    }
    schema
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
    /// The line and column of `target` and of `with`, for errors found once the agents
    /// answer.
    pub target_at: (usize, usize),
    pub with_at: (usize, usize),
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

/// A duration of the entry itself (`at`, `duration`), at most the agent's
/// [`spec::MAX_DURATION`].
fn parse_duration(v: &toml::Value, key: &str) -> Result<Duration, String> {
    let s = v.as_str().ok_or_else(|| {
        format!("`{key}` is a duration: write it as a string, like \"200ms\" or \"30s\"")
    })?;
    kind::parse_duration(s, &format!("`{key}`"), spec::MAX_DURATION)
}

/// An error at `key` of the entry if it is written there, else at the entry.
fn at_key(text: &str, span: &Range<usize>, key: &str) -> Range<usize> {
    value_span(text, span, key).unwrap_or(span.start..span.start + 1)
}

/// An error: the byte range it concerns and the message.
type Problem = (Range<usize>, String);

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
        None => return Err((head, format!("this `{}` fault has no `target`", kind.name))),
    };
    let (at, duration) = timing(table, &head, &err_at, run)?;
    let given = table
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "kind" | "at" | "duration" | "target" | "seed" | "tree"
            )
        })
        .map(|(k, v)| (k.as_str(), Raw::Toml(v)));
    let spec = kind.parse(Dialect::Toml, given).map_err(|e| match e.key {
        // A key this kind does not take: point at the key itself.
        Some(k) if e.message.starts_with("unknown field") => {
            (key_span(text, &span, &k).unwrap_or(head.clone()), e.message)
        }
        Some(k) => err_at(&k, e.message),
        None => err_at("kind", e.message),
    })?;
    let seed = match table.get("seed") {
        None => {
            let at_ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
            seed ^ at_ms.wrapping_mul(0x9E37_79B9)
        }
        Some(v) => v
            .as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| err_at("seed", "`seed` is a whole number".into()))?,
    };
    let tree = match table.get("tree") {
        None => None,
        Some(v) => Some(
            v.as_bool()
                .ok_or_else(|| err_at("tree", "`tree` is true or false".into()))?,
        ),
    };
    let request = FaultRequest {
        spec,
        target: target.clone(),
        ttl_ms: None,
        seed: Some(seed),
        tree,
    };
    request.validate().map_err(|m| {
        // A message about an option points at it; any other at the target.
        let key = ["tree", "hold"]
            .into_iter()
            .find(|k| m.starts_with(&format!("`{k}`")) && table.contains_key(*k))
            .unwrap_or("target");
        err_at(key, m)
    })?;
    check_lasting(kind, &request.spec, duration, &head, &err_at)?;
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
        _ => format!("{} {target}", kind.name),
    };
    Ok(Planned {
        at,
        duration,
        request,
        label,
        target_span: at_key(text, &span, "target"),
        with_span: at_key(text, &span, "with"),
        target_at: line_column(text, at_key(text, &span, "target").start),
        with_at: line_column(text, at_key(text, &span, "with").start),
    })
}

/// The entry's `kind`, one of the agent's.
fn kind_of(
    table: &toml::Table,
    head: &Range<usize>,
    err_at: &impl Fn(&str, String) -> Problem,
) -> Result<&'static Kind, Problem> {
    let kinds_are = || kinds::names().join(", ");
    match table.get("kind") {
        None => Err((
            head.clone(),
            format!("this fault has no `kind`; kinds are: {}", kinds_are()),
        )),
        Some(k) => k.as_str().and_then(kinds::find).ok_or_else(|| {
            err_at(
                "kind",
                format!("unknown fault kind {k}; kinds are: {}", kinds_are()),
            )
        }),
    }
}

/// Whether a `duration` is there exactly when the fault lasts.
fn check_lasting(
    kind: &Kind,
    spec: &FaultSpec,
    duration: Option<Duration>,
    head: &Range<usize>,
    err_at: &impl Fn(&str, String) -> Problem,
) -> Result<(), Problem> {
    let name = kind.name;
    match (kind.lasts, duration) {
        (Lasts::WhileHeld, Some(_)) if !spec.holds() => Err(err_at(
            "duration",
            format!(
                "a `{name}` without `hold = true` is over at once (the supervisor restarts the replica): add `hold = true` to keep it down for the `duration`, or remove `duration`"
            ),
        )),
        (Lasts::AtOnce, Some(_)) => Err(err_at(
            "duration",
            format!("a `{name}` fault happens at once and has no `duration`"),
        )),
        (Lasts::UntilHealed, None) => Err((
            head.clone(),
            format!("this `{name}` fault lasts until healed: give it a `duration` (like \"15s\")"),
        )),
        (Lasts::WhileHeld, None) if spec.holds() => Err((
            head.clone(),
            format!("this `{name}` fault lasts until healed: give it a `duration` (like \"15s\")"),
        )),
        _ => Ok(()),
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
            let d = parse_duration(v, "duration").map_err(|m| err_at("duration", m))?;
            if d.is_zero() {
                return Err(err_at("duration", "`duration` must be above zero".into()));
            }
            Some(d)
        }
    };
    Ok((at, duration))
}

/// Checks a fault's target against the topology it will run on, with the agent's own
/// resolver and messages; the error says whether it is about a partition's `with`.
pub fn check_target(
    topo: &Topology,
    proxies: &[String],
    request: &FaultRequest,
) -> Result<(), (bool, String)> {
    let resolver = Resolver::new(topo, true).with_proxies(proxies.to_vec());
    if let FaultSpec::Partition { with } = &request.spec
        && !with.trim().is_empty()
    {
        resolver
            .services(&request.target)
            .map_err(|e| (false, e.to_string()))?;
        resolver.services(with).map_err(|e| (true, e.to_string()))?;
    }
    resolver
        .resolve(request)
        .map(|_| ())
        .map_err(|e| (false, e.to_string()))
}
