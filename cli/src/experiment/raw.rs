//! The experiment file as written: serde types that keep the place of every value the
//! loader checks further (`Spanned`), and from which the JSON Schema is generated
//! (`faultline schema`). Doc comments here become the schema's descriptions.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

/// A faultline experiment: load against a system, a fault timeline, SLOs that judge it,
/// checks after it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "faultline experiment")]
pub struct Experiment {
    /// Shown in reports.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// Seed of every random draw (flows, template values, fault draws); `--seed` overrides.
    pub seed: Option<u64>,
    /// How long the load runs: a duration such as "90s" or "2m".
    #[schemars(with = "String")]
    pub duration: Spanned<String>,
    #[serde(default)]
    pub target: Target,
    #[schemars(with = "Load")]
    pub load: Spanned<Load>,
    /// Service level objectives that judge the run.
    #[serde(default)]
    pub slo: Vec<Slo>,
    /// The fault timeline.
    #[serde(default)]
    #[schemars(schema_with = "super::faults::entries_schema")]
    pub faults: Vec<Spanned<toml::Table>>,
    /// Guards: abort the run (and heal everything) when one trips.
    #[serde(default)]
    #[schemars(with = "Vec<Abort>")]
    pub abort: Vec<Spanned<Abort>>,
    #[serde(default)]
    pub checks: Checks,
    /// Requests that must answer as expected before the load starts and after the run
    /// (Chaos Toolkit's steady-state hypothesis).
    #[serde(default)]
    pub steady_state: Vec<Probe>,
    /// Fault proxies made for the run on its agent (deleted after it), to addresses the
    /// system under test reaches: faults then target them by name. With `url` and no
    /// `agent` under [target], the run starts an agent of its own for them.
    #[serde(default)]
    pub proxies: Vec<Proxy>,
}

/// A fault proxy from `listen` to `upstream`, made for the run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// Its name, which faults target: letters, digits, `_`, `.`, `-` and `:`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Where its connections go, `host:port`.
    #[schemars(with = "String")]
    pub upstream: Spanned<String>,
    /// Where it listens, `host:port` (the address the system is configured to call);
    /// port 0, the default on 127.0.0.1, picks a free one.
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
}

/// What the experiment runs against. Without `url` and `agent`, faultline starts the
/// bundled shop (or `topology`) itself, with an embedded fault agent.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A topology file to start instead of the bundled shop (relative to this file).
    #[schemars(with = "Option<String>")]
    pub topology: Option<Spanned<String>>,
    /// Base URL of a running system: the load goes there. Without `agent`, the
    /// experiment can have no faults.
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// Control API of a running agent (`faultline up` prints it): faults go there, and
    /// its topology's entrypoint is the base URL unless `url` is set. `--agent` overrides.
    #[schemars(with = "Option<String>")]
    pub agent: Option<Spanned<String>>,
    /// Several running agents, one per host (instead of `agent`): each fault goes to the
    /// agent that owns its target (`NAME/target` where two own the same name), and a
    /// `partition` of `host:NAME` with `host:NAME` cuts every edge between hosts. The
    /// first agent's entrypoint is the base URL unless `url` is set. `--agent` (repeated)
    /// overrides.
    #[serde(default)]
    pub agents: Vec<Agent>,
}

/// One agent of a run across several hosts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Its name, which qualifies targets (`NAME/orders-2`) and names hosts
    /// (`host:NAME`): 1 to 64 letters, digits, `_`, `.`, `-` or `:`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Its control API, like http://10.0.0.2:7400.
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// Its API's bearer token (default: `--agent-token`, `$FAULTLINE_AGENT_TOKEN`).
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Iterations arrive at a rate whatever the system does; latency counts from each
    /// iteration's intended start (no coordinated omission).
    #[default]
    Open,
    /// `users` run one iteration after another, pausing `think` in between.
    Closed,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    #[serde(default)]
    pub model: ModelKind,
    /// Open model: iterations a second, held for the whole run (at most 1000000).
    #[schemars(range(max = crate::limits::MAX_RATE))]
    pub rate: Option<f64>,
    /// Open model, with `stages`: the rate the first stage starts from.
    #[serde(default)]
    #[schemars(range(min = 0, max = crate::limits::MAX_RATE))]
    pub start_rate: f64,
    /// Open model: ramps, each from the previous rate to `target` over `duration`
    /// (instead of `rate`; they must add up to the experiment's duration).
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Virtual users: closed model users, open model connections (default 10 / 50).
    #[schemars(range(min = 1, max = crate::limits::MAX_USERS))]
    pub users: Option<usize>,
    /// Closed model: pause between a user's iterations, like "100ms".
    #[schemars(with = "Option<String>")]
    pub think: Option<Spanned<String>>,
    /// Open model: iterations waiting or running at most; further ones are dropped and
    /// counted (default 10000).
    #[schemars(range(max = crate::limits::MAX_IN_FLIGHT))]
    pub max_in_flight: Option<usize>,
    /// Longest wait for one answer (default "10s").
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// A built-in workload (`shop`) or a workload file (relative to this file) whose
    /// `[load.pool]` and `[[load.flows]]` are used; flows written here come on top.
    #[schemars(with = "Option<String>")]
    pub workload: Option<Spanned<String>>,
    /// Who virtual users log in as: user `n` renders `username` and `password` with `{{n}}`.
    #[schemars(with = "Option<Pool>")]
    pub pool: Option<Spanned<Pool>>,
    #[serde(default)]
    pub flows: Vec<Flow>,
    /// Load workers (`faultline worker`) to spread the load over, `http://HOST:PORT`
    /// each: worker i of N makes every N-th iteration (open model) or user (closed);
    /// their results are merged exactly and judged once. `--workers` overrides.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub workers: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    #[schemars(with = "String")]
    pub duration: Spanned<String>,
    /// Iterations a second at the end of the stage.
    #[schemars(with = "f64", range(min = 0, max = crate::limits::MAX_RATE))]
    pub target: Spanned<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[schemars(range(min = 1, max = crate::limits::MAX_POOL))]
    pub count: u64,
    #[schemars(with = "String")]
    pub username: Spanned<String>,
    #[schemars(with = "String")]
    pub password: Spanned<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Relative share of iterations (default 1).
    #[schemars(with = "Option<u32>", range(max = crate::limits::MAX_WEIGHT))]
    pub weight: Option<Spanned<u32>>,
    pub steps: Vec<Step>,
}

/// One request. A step with only a `name` reuses the step of that name defined in
/// another flow (the same statistics, the same once-per-user state).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique per definition; statistics and step SLOs use it.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Default GET.
    #[schemars(with = "Option<String>")]
    pub method: Option<Spanned<String>>,
    /// Path and query, templated: `/api/v1/orders/{{order_id}}`.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Templated header values.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// Templated body.
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
    /// Run once per virtual user (a login), and again only after it failed.
    #[serde(default)]
    pub once: bool,
    /// Statuses that count as success (default: any 2xx). Another status ends the
    /// iteration.
    #[serde(default)]
    #[schemars(with = "Vec<u16>")]
    pub expect: Vec<Spanned<u16>>,
    /// Variables taken from the JSON answer: `{ token = "token", id = "items.0.id" }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub capture: BTreeMap<String, Spanned<String>>,
    /// A captured variable recorded in the run's history when the step succeeds
    /// (`order_id`: the acknowledged orders the checks verify).
    #[schemars(with = "Option<String>")]
    pub record: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Default: the objective as written.
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// `availability>=99.5` (answers below 500) or `latency<300ms>=99` (answers within
    /// the threshold, from the intended send).
    #[schemars(with = "String")]
    pub objective: Spanned<String>,
    /// Judge only this step's requests.
    #[schemars(with = "Option<String>")]
    pub step: Option<Spanned<String>>,
    /// Availability: answers below 500 that count as bad too, like [429] when being
    /// rate limited is an outage for your users.
    #[serde(default)]
    pub also_bad: Vec<u16>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// The SLO (by name) whose burn rate is watched.
    #[schemars(with = "String")]
    pub slo: Spanned<String>,
    /// Abort when the short-window burn rate stays above this...
    #[schemars(range(max = crate::limits::MAX_BURN_RATE))]
    pub burn_rate: f64,
    /// ...for this long (default "5s").
    #[serde(rename = "for")]
    #[schemars(with = "Option<String>")]
    pub for_: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// The shop's invariants after the run (default: on when the target is the bundled
    /// shop): no acknowledged order lost, every order terminal, no double charge, dead
    /// letter queues holding only injected poison. Needs a topology with the shop's
    /// audit endpoints (its `orders` and `bank` services and a `[messaging]` broker).
    #[schemars(with = "Option<bool>")]
    pub invariants: Option<Spanned<bool>>,
    /// How long to wait for the queues to drain before checking (default "30s").
    #[schemars(with = "Option<String>")]
    pub drain_timeout: Option<Spanned<String>>,
    /// Requests that must answer as expected, before the load and after the drain.
    #[serde(default)]
    #[schemars(with = "Vec<HttpCheck>")]
    pub http: Vec<Spanned<HttpCheck>>,
    /// Programs that must exit as expected, before the load and after the drain; the
    /// run's addresses are in their environment (`FAULTLINE_ENTRYPOINT`, ...).
    #[serde(default)]
    #[schemars(with = "Vec<CommandCheck>")]
    pub command: Vec<Spanned<CommandCheck>>,
}

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Before the load: a failure stops the run before any load (exit code 2).
    Before,
    /// After the load, once the faults are healed and the queues drained.
    After,
    /// Both.
    #[default]
    Both,
}

/// Expected statuses: one, or a list.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum Statuses {
    One(#[schemars(range(min = 100, max = 599))] u16),
    Many(Vec<u16>),
}

/// An HTTP request whose answer must be as expected.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// Shown in reports (default: the method and the URL or path).
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// Default GET.
    #[schemars(with = "Option<String>")]
    pub method: Option<Spanned<String>>,
    /// An absolute http:// URL (instead of `path`).
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// A path and query on the target's entrypoint, like "/health" (instead of `url`).
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub headers: BTreeMap<String, Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
    /// Expected status, or a list of them (default: any 2xx).
    #[schemars(with = "Option<Statuses>")]
    pub status: Option<Spanned<toml::Value>>,
    /// Text the answer's body must contain.
    #[schemars(with = "Option<String>")]
    pub body_contains: Option<Spanned<String>>,
    /// Values the JSON answer must hold, by JSONPath (RFC 9535, `"$.items[0].id"`) or
    /// dotted path (`"items.0.id"`): `{ "$.items[0].id" = 3 }`. Each path must select
    /// exactly one value; numbers compare by value (3 equals 3.0).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub json: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// Longest wait for the answer (default "5s", at most 1h).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// After the load, how long the check may keep trying until it passes (default
    /// "10s": faults have just healed; "0s" tries once). Before the load it is tried once.
    #[schemars(with = "Option<String>")]
    pub within: Option<Spanned<String>>,
    /// When it runs (default both).
    #[serde(default)]
    pub when: When,
}

/// A program (no shell) that must exit as expected.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandCheck {
    /// Shown in reports (default: the command line).
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// The program and its arguments, run without a shell: `["./check.sh", "--all"]`.
    #[schemars(with = "Vec<String>")]
    pub argv: Spanned<Vec<String>>,
    /// Expected exit status (default 0).
    #[schemars(with = "Option<u8>")]
    pub exit: Option<Spanned<i64>>,
    /// Longest run (default "30s", at most 1h): then its process group is killed and
    /// the check fails.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Working directory, relative to this file's directory (the default).
    #[schemars(with = "Option<String>")]
    pub cwd: Option<Spanned<String>>,
    /// After the load, how long the check may keep trying until it passes (default
    /// "10s"; "0s" runs it once). Before the load it runs once.
    #[schemars(with = "Option<String>")]
    pub within: Option<Spanned<String>>,
    /// When it runs (default both).
    #[serde(default)]
    pub when: When,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Path on the target, like "/api/v1/products/1".
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Expected status (default 200).
    pub status: Option<u16>,
}

/// A workload file: the `[load]` part of an experiment with a pool and flows only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadFile {
    pub load: WorkloadLoad,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadLoad {
    pub pool: Option<Spanned<Pool>>,
    #[serde(default)]
    pub flows: Vec<Flow>,
}
