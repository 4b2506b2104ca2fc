//! How a fault kind is described: its name, what it targets, whether it lasts, and each
//! parameter with its type, unit, default, bound and help. The catalog of descriptions
//! is [`super::kinds`]; from it alone come the API's parsing of fault requests, the
//! `faultline fault` subcommands and their flags, the `[[faults]]` tables of experiment
//! files with their JSON Schema, and the README's table of kinds.
//!
//! A parameter is read in one of three [`Dialect`]s: the API's JSON (`delay_ms: 200`),
//! a TOML table (`delay = "200ms"`) or a command-line flag (`--delay 200ms`). Each
//! dialect has its own spelling of the name and of durations; the bounds and messages
//! are the same, spelled in the dialect the user wrote.

use std::collections::BTreeMap;
use std::time::Duration;

use super::spec::FaultSpec;

/// What a fault can be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every replica of a service.
    Service,
    /// One replica, `service-N`.
    Replica,
    /// A process outside the topology, `pid:N` or `proc:PATTERN`.
    Pid,
    /// A Docker container, `container:NAME` (its name or id).
    Container,
    /// An edge, `client->server` (every replica of the server) or `client->server-N`.
    Edge,
    /// A comma-separated list of services (a side of a partition).
    Services,
    Zone,
    Queue,
}

impl Target {
    /// How the README and help name it.
    pub fn describe(self) -> &'static str {
        match self {
            Target::Service => "service",
            Target::Replica => "replica",
            Target::Pid => "process (pid:N or proc:PATTERN)",
            Target::Container => "container (container:NAME)",
            Target::Edge => "edge",
            Target::Services => "service list",
            Target::Zone => "zone",
            Target::Queue => "queue",
        }
    }
}

/// Whether a fault lasts until healed or is over once it took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasts {
    /// Until healed (a pause, a latency): a timeline gives it a `duration`.
    UntilHealed,
    /// Over at once (a restart, poison): nothing to heal, no `duration`.
    AtOnce,
    /// Until healed with its `hold` flag set, at once without (a kill: the supervisor
    /// restarts the replica unless the fault holds it down).
    WhileHeld,
}

/// A duration's unit in the API's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Micros,
}

/// A parameter's type, with its bounds.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    /// A duration of at most `max`: `"200ms"` in TOML and flags, whole `unit`s in JSON.
    Duration { unit: Unit, max: Duration },
    /// A whole number from `min` to `max`; `unit` follows it in messages (" bytes"), and
    /// `said` names the maximum in words ("1 TiB"), if it helps.
    Whole {
        min: u64,
        max: u64,
        unit: &'static str,
        said: &'static str,
    },
    /// A number from `min` to `max`.
    Real { min: f64, max: f64 },
    /// true or false; a flag without a value on the command line.
    Flag,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// Text that `check` accepts (it returns what is wrong otherwise).
    Text {
        check: fn(&str) -> Result<(), String>,
    },
}

/// One parameter of a kind.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The name in TOML and as a flag (`delay`, `--delay`; `_` becomes `-` in flags).
    pub name: &'static str,
    /// The name in the API's JSON (`delay_ms`).
    pub json: &'static str,
    pub ty: Type,
    /// Whether the parameter must be given.
    pub required: bool,
    /// The value when not given, as a user writes it (`"0s"`, `"downstream"`), for
    /// help; the kind's `build` applies it.
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// Given on the command line as the second positional argument rather than a flag
    /// (a partition's other side).
    pub positional: bool,
}

/// A fault kind.
#[derive(Debug)]
pub struct Kind {
    /// As requests and commands name it (`latency`).
    pub name: &'static str,
    /// One line: what it does.
    pub help: &'static str,
    pub targets: &'static [Target],
    pub lasts: Lasts,
    pub params: &'static [Param],
    /// The kind's typed request from its checked parameters.
    pub build: fn(&Values) -> FaultSpec,
    /// Checks between parameters, beyond each one's own bound (a slicer's size and
    /// variation together); the message names what is wrong, with the parameters
    /// spelled by the function it is given.
    pub check: fn(&Values, Spell<'_>) -> Result<(), String>,
    /// A command line that shows it: `kill orders-2 --hold`.
    pub example: &'static str,
}

/// Spells a parameter's name, by its TOML name, in the dialect being read.
pub type Spell<'a> = &'a dyn Fn(&str) -> String;

/// Which spelling a request is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The control API: `delay_ms: 200`.
    Json,
    /// An experiment file's `[[faults]]` table: `delay = "200ms"`.
    Toml,
    /// `faultline fault`: `--delay 200ms`.
    Flag,
}

impl Param {
    /// The name in `dialect`, quoted as messages quote it.
    pub fn spelled(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::Json => format!("`{}`", self.json),
            Dialect::Toml => format!("`{}`", self.name),
            Dialect::Flag if self.positional => {
                format!("the {} argument", self.name.to_uppercase())
            }
            Dialect::Flag => format!("--{}", self.flag()),
        }
    }

    /// The flag's name, without the dashes.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The key of this parameter in `dialect`.
    pub fn key(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Json => self.json,
            Dialect::Toml | Dialect::Flag => self.name,
        }
    }
}

/// A value as it arrives, in its dialect.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    Json(&'a serde_json::Value),
    Toml(&'a toml::Value),
    /// A flag's text (`"200ms"`, `"0.5"`; `"true"` for a flag given without a value).
    Text(&'a str),
}

/// A parameter's value, checked against its bounds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Duration(Duration),
    Whole(u64),
    Real(f64),
    Flag(bool),
    Text(String),
}

/// A kind's parameters, by name, as given.
#[derive(Debug, Default)]
pub struct Values(BTreeMap<&'static str, Value>);

impl Values {
    pub fn duration(&self, name: &str) -> Option<Duration> {
        match self.0.get(name)? {
            Value::Duration(d) => Some(*d),
            _ => None,
        }
    }

    pub fn whole(&self, name: &str) -> Option<u64> {
        match self.0.get(name)? {
            Value::Whole(n) => Some(*n),
            _ => None,
        }
    }

    pub fn real(&self, name: &str) -> Option<f64> {
        match self.0.get(name)? {
            Value::Real(v) => Some(*v),
            _ => None,
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.0.get(name), Some(Value::Flag(true)))
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        match self.0.get(name)? {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// What is wrong with a request: the key it is about, as given, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub key: Option<String>,
    pub message: String,
}

impl ParamError {
    fn at(key: &str, message: String) -> Self {
        Self {
            key: Some(key.to_owned()),
            message,
        }
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// "24h", "90s", "250ms": a bound as users write durations.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let whole = |unit: u128| ms >= unit && ms.is_multiple_of(unit);
    if whole(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if whole(60_000) {
        format!("{}m", ms / 60_000)
    } else if whole(1000) {
        format!("{}s", ms / 1000)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// A duration as flags and files write it, within `max`.
pub fn parse_duration(written: &str, what: &str, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(written).map_err(|e| {
        format!("{what}: `{written}` is not a duration ({e}); write durations like 200ms, 30s, 5m")
    })?;
    if d > max {
        return Err(format!(
            "{what} must be at most {}, not `{written}`",
            human(max)
        ));
    }
    Ok(d)
}

impl Param {
    /// Reads `raw`, written in `dialect`, and checks it against the bounds.
    pub fn read(&self, dialect: Dialect, raw: Raw<'_>) -> Result<Value, String> {
        let what = self.spelled(dialect);
        let wrong = |expected: &str| match raw {
            Raw::Json(v) => format!("{what} must be {expected}, not {v}"),
            Raw::Toml(v) => format!("{what} must be {expected}, not {v}"),
            Raw::Text(t) => format!("{what} must be {expected}, not `{t}`"),
        };
        match self.ty {
            Type::Duration { unit, max } => read_duration(raw, &what, unit, max, &wrong),
            Type::Whole {
                min,
                max,
                unit,
                said,
            } => {
                let n = match raw {
                    Raw::Json(v) => v.as_u64(),
                    Raw::Toml(v) => v.as_integer().and_then(|i| u64::try_from(i).ok()),
                    Raw::Text(t) => t.parse().ok(),
                }
                .ok_or_else(|| wrong("a whole number"))?;
                if n < min || n > max {
                    let said = if said.is_empty() {
                        String::new()
                    } else {
                        format!(" ({said})")
                    };
                    return Err(if n < min {
                        format!("{what} must be at least {min}{unit}, not {n}")
                    } else {
                        format!("{what} must be at most {max}{unit}{said}, not {n}")
                    });
                }
                Ok(Value::Whole(n))
            }
            Type::Real { min, max } => {
                let v = match raw {
                    Raw::Json(v) => v.as_f64(),
                    Raw::Toml(v) => v.as_float().or_else(|| v.as_integer().map(|i| i as f64)),
                    Raw::Text(t) => t.parse::<f64>().ok(),
                }
                .ok_or_else(|| wrong("a number"))?;
                if !(min..=max).contains(&v) {
                    return Err(format!("{what} must be from {min} to {max}, not {v}"));
                }
                Ok(Value::Real(v))
            }
            Type::Flag => match raw {
                Raw::Json(v) => v.as_bool(),
                Raw::Toml(v) => v.as_bool(),
                Raw::Text(t) => t.parse().ok(),
            }
            .map(Value::Flag)
            .ok_or_else(|| wrong("true or false")),
            Type::Choice(words) => {
                let t =
                    text_of(raw).ok_or_else(|| wrong(&format!("one of {}", words.join(", "))))?;
                if words.contains(&t) {
                    Ok(Value::Text(t.to_owned()))
                } else {
                    Err(format!(
                        "{what} must be one of {}, not `{t}`",
                        words.join(", ")
                    ))
                }
            }
            Type::Text { check } => {
                let t = text_of(raw).ok_or_else(|| wrong("text"))?;
                check(t).map_err(|m| format!("{what}: {m}"))?;
                Ok(Value::Text(t.to_owned()))
            }
        }
    }

    /// `value` as the API's JSON writes it.
    pub fn to_json(&self, value: &Value) -> serde_json::Value {
        match (value, self.ty) {
            (Value::Duration(d), Type::Duration { unit, .. }) => {
                let n = match unit {
                    Unit::Millis => d.as_millis(),
                    Unit::Micros => d.as_micros(),
                };
                u64::try_from(n).unwrap_or(u64::MAX).into()
            }
            (Value::Duration(d), _) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).into(),
            (Value::Whole(n), _) => (*n).into(),
            (Value::Real(v), _) => (*v).into(),
            (Value::Flag(b), _) => (*b).into(),
            (Value::Text(s), _) => s.clone().into(),
        }
    }
}

fn text_of(raw: Raw<'_>) -> Option<&str> {
    match raw {
        Raw::Json(v) => v.as_str(),
        Raw::Toml(v) => v.as_str(),
        Raw::Text(t) => Some(t),
    }
}

fn read_duration(
    raw: Raw<'_>,
    what: &str,
    unit: Unit,
    max: Duration,
    wrong: &dyn Fn(&str) -> String,
) -> Result<Value, String> {
    match raw {
        Raw::Json(v) => {
            let n = v.as_u64().ok_or_else(|| wrong("a whole number"))?;
            let (d, in_units) = match unit {
                Unit::Millis => (Duration::from_millis(n), max.as_millis()),
                Unit::Micros => (Duration::from_micros(n), max.as_micros()),
            };
            if d > max {
                return Err(format!(
                    "{what} must be at most {in_units} ({}), not {n}",
                    human(max)
                ));
            }
            Ok(Value::Duration(d))
        }
        Raw::Toml(v) => {
            let t = v.as_str().ok_or_else(|| {
                format!("{what} is a duration: write it as a string, like \"200ms\" or \"30s\"")
            })?;
            parse_duration(t, what, max).map(Value::Duration)
        }
        Raw::Text(t) => parse_duration(t, what, max).map(Value::Duration),
    }
}

impl Kind {
    /// Reads the parameters `given` as `(key, value)` pairs in `dialect`: each key must
    /// be one of this kind's, each value within its bounds, every required one there.
    pub fn parse<'a>(
        &self,
        dialect: Dialect,
        given: impl IntoIterator<Item = (&'a str, Raw<'a>)>,
    ) -> Result<FaultSpec, ParamError> {
        let mut values = Values::default();
        for (key, raw) in given {
            let Some(p) = self.params.iter().find(|p| p.key(dialect) == key) else {
                return Err(ParamError::at(key, self.unknown(dialect, key)));
            };
            let v = p.read(dialect, raw).map_err(|m| ParamError::at(key, m))?;
            values.0.insert(p.name, v);
        }
        if let Some(p) = self
            .params
            .iter()
            .find(|p| p.required && !values.0.contains_key(p.name))
        {
            return Err(ParamError {
                key: None,
                message: format!(
                    "a `{}` fault needs {} ({})",
                    self.name,
                    p.spelled(dialect),
                    p.help
                ),
            });
        }
        let spell = |name: &str| {
            self.params
                .iter()
                .find(|p| p.name == name)
                .map_or_else(|| format!("`{name}`"), |p| p.spelled(dialect))
        };
        (self.check)(&values, &spell).map_err(|message| ParamError { key: None, message })?;
        Ok((self.build)(&values))
    }

    fn unknown(&self, dialect: Dialect, key: &str) -> String {
        let known: Vec<String> = self.params.iter().map(|p| p.spelled(dialect)).collect();
        let shown = match dialect {
            Dialect::Flag => format!("--{}", key.replace('_', "-")),
            _ => format!("`{key}`"),
        };
        if known.is_empty() {
            format!("a `{}` fault takes no parameters, not {shown}", self.name)
        } else {
            format!(
                "unknown field {shown} for a `{}` fault; it takes {}",
                self.name,
                known.join(", ")
            )
        }
    }

    /// Whether it targets `t`.
    pub fn targets(&self, t: Target) -> bool {
        self.targets.contains(&t)
    }

    /// What it targets, in words: "service, replica or pid:N".
    pub fn targets_said(&self) -> String {
        let words: Vec<&str> = self.targets.iter().map(|t| t.describe()).collect();
        match words.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}
