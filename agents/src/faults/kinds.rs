//! Every fault kind, described once (see [`super::kind`]): the API, `faultline fault`,
//! experiment files, their schema and the README's table all read this list. Adding a
//! kind is an entry here, a variant of [`FaultSpec`] built by it, and its executor in
//! [`super::Faults::plan`].

use std::time::Duration;

use super::kind::{Kind, Lasts, Param, Spell, Target, Type, Unit, Values};
use super::spec::{
    Directions, FaultSpec, MAX_BYTES, MAX_DURATION, MAX_POISON, MAX_RATE, MAX_SLICE, MAX_TARGET,
    QueueSide, Traffic,
};

use Target::{Container, Edge, Pid, Queue, Replica, Service, Services, Zone};

const PROCESS: &[Target] = &[Service, Replica, Pid, Container];
const EDGE: &[Target] = &[Edge];
/// Network faults that act on an edge's proxy or inside a container's network namespace.
const EDGE_OR_CONTAINER: &[Target] = &[Edge, Container];

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn nothing(_: &Values, _: Spell<'_>) -> Result<(), String> {
    Ok(())
}

const fn duration(
    name: &'static str,
    json: &'static str,
    unit: Unit,
    required: bool,
    default: Option<&'static str>,
    help: &'static str,
) -> Param {
    Param {
        name,
        json,
        ty: Type::Duration {
            unit,
            max: MAX_DURATION,
        },
        required,
        default,
        help,
        positional: false,
    }
}

const fn whole(
    name: &'static str,
    (min, max): (u64, u64),
    unit: &'static str,
    said: &'static str,
    help: &'static str,
) -> Param {
    Param {
        name,
        json: name,
        ty: Type::Whole {
            min,
            max,
            unit,
            said,
        },
        required: true,
        default: None,
        help,
        positional: false,
    }
}

const HOLD: Param = Param {
    name: "hold",
    json: "hold",
    ty: Type::Flag,
    required: false,
    default: Some("false"),
    help: "keep the replica down until the fault heals",
    positional: false,
};

const DIRECTIONS: &[&str] = &["upstream", "downstream", "both"];

/// `direction`, defaulting to `default`.
const fn direction(default: &'static str) -> Param {
    Param {
        name: "direction",
        json: "direction",
        ty: Type::Choice(DIRECTIONS),
        required: false,
        default: Some(default),
        help: "upstream (requests), downstream (responses) or both",
        positional: false,
    }
}

const TOXICITY: Param = Param {
    name: "toxicity",
    json: "toxicity",
    ty: Type::Real { min: 0.0, max: 1.0 },
    required: false,
    default: Some("1"),
    help: "the share of connections affected, 0 to 1, drawn per connection from the seed",
    positional: false,
};

const PERCENT: Param = Param {
    name: "percent",
    json: "percent",
    ty: Type::Real {
        min: 0.0,
        max: 100.0,
    },
    required: false,
    default: Some("100"),
    help: "the share of matching requests, 0 to 100",
    positional: false,
};

const METHOD: Param = Param {
    name: "method",
    json: "method",
    ty: Type::Text { check: http_method },
    required: false,
    default: None,
    help: "only requests with this method",
    positional: false,
};

const PATH: Param = Param {
    name: "path",
    json: "path",
    ty: Type::Text { check: path_prefix },
    required: false,
    default: None,
    help: "only requests whose path starts with this",
    positional: false,
};

/// An HTTP method is a token of letters.
fn http_method(m: &str) -> Result<(), String> {
    if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("an HTTP method such as GET or POST, not `{m}`"));
    }
    Ok(())
}

/// A path prefix starts with `/`.
fn path_prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.len() > MAX_TARGET {
        return Err(format!(
            "a path prefix starting with / and at most {MAX_TARGET} bytes, not `{p}`"
        ));
    }
    Ok(())
}

/// A comma-separated list of services; empty only for a run-time proxy, partitioned
/// alone (the resolver says so otherwise).
fn service_list(s: &str) -> Result<(), String> {
    if s.len() > MAX_TARGET {
        return Err(format!("{} bytes long; the limit is {MAX_TARGET}", s.len()));
    }
    Ok(())
}

fn directions(v: &Values, default: Directions) -> Directions {
    match v.text("direction") {
        Some("upstream") => Directions::Upstream,
        Some("downstream") => Directions::Downstream,
        Some("both") => Directions::Both,
        _ => default,
    }
}

fn toxicity(v: &Values) -> f64 {
    v.real("toxicity").unwrap_or(1.0)
}

fn percent(v: &Values) -> f64 {
    v.real("percent").unwrap_or(100.0)
}

fn text(v: &Values, name: &str) -> Option<String> {
    v.text(name).map(str::to_owned)
}

fn slice_fits(v: &Values, spell: Spell<'_>) -> Result<(), String> {
    let size = v.whole("average_size").unwrap_or(0);
    let slice = size.saturating_add(v.whole("size_variation").unwrap_or(0));
    if slice > MAX_SLICE as u64 {
        return Err(format!(
            "{} plus {} must be at most {MAX_SLICE} bytes (1 MiB), not {slice}",
            spell("average_size"),
            spell("size_variation")
        ));
    }
    Ok(())
}

/// Every kind, in the order help and the README list them.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "kill",
        help: "SIGKILL; the supervisor restarts the replica unless the fault holds it down",
        targets: PROCESS,
        lasts: Lasts::WhileHeld,
        params: &[HOLD],
        build: |v| FaultSpec::Kill {
            hold: v.flag("hold"),
        },
        check: nothing,
        example: "kill orders-2 --hold --ttl 30s",
    },
    Kind {
        name: "terminate",
        help: "SIGTERM; the supervisor restarts the replica unless the fault holds it down",
        targets: PROCESS,
        lasts: Lasts::WhileHeld,
        params: &[HOLD],
        build: |v| FaultSpec::Terminate {
            hold: v.flag("hold"),
        },
        check: nothing,
        example: "terminate payments-1",
    },
    Kind {
        name: "pause",
        help: "SIGSTOP until the fault heals (SIGCONT)",
        targets: PROCESS,
        lasts: Lasts::UntilHealed,
        params: &[],
        build: |_| FaultSpec::Pause,
        check: nothing,
        example: "pause content-1 --ttl 10s",
    },
    Kind {
        name: "restart",
        help: "SIGTERM (SIGKILL after the stop timeout), then start again at once",
        targets: &[Service, Replica, Container],
        lasts: Lasts::AtOnce,
        params: &[],
        build: |_| FaultSpec::Restart,
        check: nothing,
        example: "restart api",
    },
    Kind {
        name: "latency",
        help: "delay the data by a latency, plus or minus a jitter (on a container: netem on what it sends, where the kernel has netem)",
        targets: EDGE_OR_CONTAINER,
        lasts: Lasts::UntilHealed,
        params: &[
            duration(
                "delay",
                "delay_ms",
                Unit::Millis,
                true,
                None,
                "how much later the data arrives",
            ),
            duration(
                "jitter",
                "jitter_ms",
                Unit::Millis,
                false,
                Some("0s"),
                "up to this much more or less, at random",
            ),
            direction("downstream"),
            TOXICITY,
        ],
        build: |v| FaultSpec::Latency {
            delay_ms: v.duration("delay").map_or(0, ms),
            jitter_ms: v.duration("jitter").map_or(0, ms),
            direction: directions(v, Directions::Downstream),
            toxicity: toxicity(v),
        },
        check: nothing,
        example: "latency 'payments->bank' --delay 200ms --jitter 20ms --ttl 60s",
    },
    Kind {
        name: "bandwidth",
        help: "limit the data rate (sent a tenth of a second's worth at a time; on a container: tbf on what it sends)",
        targets: EDGE_OR_CONTAINER,
        lasts: Lasts::UntilHealed,
        params: &[
            whole(
                "rate",
                (1, MAX_RATE),
                " bytes a second",
                "10 GB a second",
                "bytes a second",
            ),
            direction("downstream"),
            TOXICITY,
        ],
        build: |v| FaultSpec::Bandwidth {
            rate: v.whole("rate").unwrap_or(1),
            direction: directions(v, Directions::Downstream),
            toxicity: toxicity(v),
        },
        check: nothing,
        example: "bandwidth 'cdn->content' --rate 10000 --ttl 30s",
    },
    Kind {
        name: "blackhole",
        help: "drop every byte and hold the connection, optionally closing it after a time",
        targets: EDGE,
        lasts: Lasts::UntilHealed,
        params: &[
            duration(
                "close_after",
                "close_after_ms",
                Unit::Millis,
                false,
                None,
                "close held connections after this long (default: hold them)",
            ),
            direction("both"),
            TOXICITY,
        ],
        build: |v| FaultSpec::Blackhole {
            close_after_ms: v.duration("close_after").map(ms),
            direction: directions(v, Directions::Both),
            toxicity: toxicity(v),
        },
        check: nothing,
        example: "blackhole 'orders->broker' --ttl 20s",
    },
    Kind {
        name: "reset",
        help: "close connections with a TCP RST (on a container: every TCP segment answered with one, upstream what it receives, downstream what it sends)",
        targets: EDGE_OR_CONTAINER,
        lasts: Lasts::UntilHealed,
        params: &[
            duration(
                "after",
                "after_ms",
                Unit::Millis,
                false,
                Some("0s"),
                "reset connections after this long",
            ),
            direction("both"),
            TOXICITY,
        ],
        build: |v| FaultSpec::Reset {
            after_ms: v.duration("after").map_or(0, ms),
            direction: directions(v, Directions::Both),
            toxicity: toxicity(v),
        },
        check: nothing,
        example: "reset 'api->orders' --toxicity 0.5 --ttl 20s",
    },
    Kind {
        name: "slicer",
        help: "cut the data into small pieces, a delay apart",
        targets: EDGE,
        lasts: Lasts::UntilHealed,
        params: &[
            whole(
                "average_size",
                (1, MAX_SLICE as u64),
                " bytes",
                "1 MiB",
                "average piece size in bytes",
            ),
            Param {
                required: false,
                default: Some("0"),
                ..whole(
                    "size_variation",
                    (0, MAX_SLICE as u64),
                    " bytes",
                    "1 MiB",
                    "plus or minus this many bytes",
                )
            },
            duration(
                "delay",
                "delay_us",
                Unit::Micros,
                false,
                Some("0s"),
                "pause between pieces",
            ),
            direction("downstream"),
            TOXICITY,
        ],
        build: |v| FaultSpec::Slicer {
            average_size: v.whole("average_size").unwrap_or(1) as usize,
            size_variation: v.whole("size_variation").unwrap_or(0) as usize,
            delay_us: v.duration("delay").map_or(0, us),
            direction: directions(v, Directions::Downstream),
            toxicity: toxicity(v),
        },
        check: slice_fits,
        example: "slicer 'cdn->content' --average-size 64 --delay 1ms --ttl 30s",
    },
    Kind {
        name: "slow-close",
        help: "delay the close of connections",
        targets: EDGE,
        lasts: Lasts::UntilHealed,
        params: &[
            duration(
                "delay",
                "delay_ms",
                Unit::Millis,
                true,
                None,
                "how long the close is held back",
            ),
            direction("downstream"),
            TOXICITY,
        ],
        build: |v| FaultSpec::SlowClose {
            delay_ms: v.duration("delay").map_or(0, ms),
            direction: directions(v, Directions::Downstream),
            toxicity: toxicity(v),
        },
        check: nothing,
        example: "slow-close 'gateway->api' --delay 2s --ttl 30s",
    },
    Kind {
        name: "limit-data",
        help: "close connections once this many bytes have passed",
        targets: EDGE,
        lasts: Lasts::UntilHealed,
        params: &[
            whole(
                "bytes",
                (0, MAX_BYTES),
                "",
                "1 TiB",
                "close after this many bytes",
            ),
            direction("downstream"),
            TOXICITY,
        ],
        build: |v| FaultSpec::LimitData {
            bytes: v.whole("bytes").unwrap_or(0),
            direction: directions(v, Directions::Downstream),
            toxicity: toxicity(v),
        },
        check: nothing,
        example: "limit-data 'api->content' --bytes 1000 --ttl 30s",
    },
    Kind {
        name: "http-abort",
        help: "answer a share of matching HTTP requests with a status instead of forwarding them",
        targets: EDGE,
        lasts: Lasts::UntilHealed,
        params: &[
            whole("status", (100, 599), "", "", "the status to answer with"),
            PERCENT,
            METHOD,
            PATH,
        ],
        build: |v| FaultSpec::HttpAbort {
            status: v.whole("status").unwrap_or(500) as u16,
            percent: percent(v),
            method: text(v, "method"),
            path: text(v, "path"),
        },
        check: nothing,
        example: "http-abort 'gateway->cdn' --status 503 --percent 50 --ttl 30s",
    },
    Kind {
        name: "http-delay",
        help: "hold a share of matching HTTP requests for a delay before forwarding them",
        targets: EDGE,
        lasts: Lasts::UntilHealed,
        params: &[
            duration(
                "delay",
                "delay_ms",
                Unit::Millis,
                true,
                None,
                "how long each request is held",
            ),
            PERCENT,
            METHOD,
            PATH,
        ],
        build: |v| FaultSpec::HttpDelay {
            delay_ms: v.duration("delay").map_or(0, ms),
            percent: percent(v),
            method: text(v, "method"),
            path: text(v, "path"),
        },
        check: nothing,
        example: "http-delay 'api->orders' --delay 1s --method POST --ttl 30s",
    },
    Kind {
        name: "loss",
        help: "drop a random share of a container's packets (iptables in its network namespace)",
        targets: &[Container],
        lasts: Lasts::UntilHealed,
        params: &[
            Param {
                required: true,
                default: None,
                help: "the share of packets dropped, 0 to 100, each drawn by the kernel",
                ..PERCENT
            },
            Param {
                name: "direction",
                json: "direction",
                ty: Type::Choice(&["in", "out", "both"]),
                required: false,
                default: Some("both"),
                help: "in (what the container receives), out (what it sends) or both",
                positional: false,
            },
        ],
        build: |v| FaultSpec::Loss {
            percent: percent(v),
            direction: match v.text("direction") {
                Some("in") => Traffic::In,
                Some("out") => Traffic::Out,
                _ => Traffic::Both,
            },
        },
        check: nothing,
        example: "loss container:shop-cache --percent 30 --ttl 30s",
    },
    Kind {
        name: "partition",
        help: "cut every edge between two lists of services (or a proxy made at run time, alone), both ways, live connections included; a container from containers (iptables in both), from networks (disconnected, reconnected with its address and aliases) or from every network it is on",
        targets: &[Services, Container],
        lasts: Lasts::UntilHealed,
        params: &[Param {
            name: "with",
            json: "with",
            ty: Type::Text {
                check: service_list,
            },
            required: false,
            default: None,
            help: "the services on the other side, comma-separated (none for a proxy made at run time, cut whole); for a container, container:NAME and network:NAME, comma-separated (none: every network it is on)",
            positional: true,
        }],
        build: |v| FaultSpec::Partition {
            with: v.text("with").unwrap_or_default().to_owned(),
        },
        check: nothing,
        example: "partition orders broker --ttl 30s",
    },
    Kind {
        name: "zone-outage",
        help: "kill every replica of a zone and hold them down",
        targets: &[Zone],
        lasts: Lasts::UntilHealed,
        params: &[],
        build: |_| FaultSpec::ZoneOutage,
        check: nothing,
        example: "zone-outage b --ttl 30s",
    },
    Kind {
        name: "poison",
        help: "send malformed messages to a queue, through the broker's admin API",
        targets: &[Queue],
        lasts: Lasts::AtOnce,
        params: &[whole(
            "count",
            (1, MAX_POISON as u64),
            " messages",
            "",
            "how many messages",
        )],
        build: |v| FaultSpec::Poison {
            count: v.whole("count").unwrap_or(1) as usize,
        },
        check: nothing,
        example: "poison payments --count 5",
    },
    Kind {
        name: "queue-partition",
        help: "cut a queue's consumers (or producers) off from the broker",
        targets: &[Queue],
        lasts: Lasts::UntilHealed,
        params: &[Param {
            name: "side",
            json: "side",
            ty: Type::Choice(&["consumers", "producers"]),
            required: false,
            default: Some("consumers"),
            help: "which side to cut off",
            positional: false,
        }],
        build: |v| FaultSpec::QueuePartition {
            side: match v.text("side") {
                Some("producers") => QueueSide::Producers,
                _ => QueueSide::Consumers,
            },
        },
        check: nothing,
        example: "queue-partition payments --side consumers --ttl 30s",
    },
];

/// The kind named `name`.
pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// Every kind's name, for messages.
pub fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// The README's table of kinds: each kind's name, what it does, what it targets,
/// whether it lasts, and its parameters as flags with their defaults.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| kind | what it does | target | lasts | parameters |\n|---|---|---|---|---|\n",
    );
    for k in KINDS {
        let lasts = match k.lasts {
            Lasts::UntilHealed => "until healed",
            Lasts::AtOnce => "at once",
            Lasts::WhileHeld => "at once; until healed with `--hold`",
        };
        let params: Vec<String> = k
            .params
            .iter()
            .map(|p| {
                let name = if p.positional {
                    p.name.to_uppercase()
                } else {
                    format!("--{}", p.flag())
                };
                let default = p
                    .default
                    .map(|d| format!(", default {d}"))
                    .unwrap_or_default();
                let need = if p.required { ", required" } else { "" };
                format!("`{name}`: {}{need}{default}", p.help)
            })
            .collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {lasts} | {} |\n",
            k.name,
            k.help,
            k.targets_said(),
            if params.is_empty() {
                "none".to_owned()
            } else {
                params.join("; ")
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_kind_as_described() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let (begin, end) = (
            "<!-- fault kinds: generated from agents/src/faults/kinds.rs -->\n",
            "<!-- end of fault kinds -->",
        );
        let start = readme
            .find(begin)
            .expect("the README marks the table's start")
            + begin.len();
        let stop = readme[start..].find(end).expect("and its end") + start;
        assert_eq!(
            &readme[start..stop],
            markdown_table(),
            "README.md's table of fault kinds is stale: paste kinds::markdown_table() between its markers"
        );
    }

    #[test]
    fn every_kind_has_a_variant_of_its_name_and_parameters_of_unique_names() {
        for k in KINDS {
            let spec = (k.build)(&Values::default());
            assert_eq!(spec.kind(), k.name);
            let mut names: Vec<&str> = k.params.iter().map(|p| p.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), k.params.len(), "{}", k.name);
        }
    }
}
