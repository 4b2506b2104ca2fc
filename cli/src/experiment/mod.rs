//! Experiment files: parsed (`raw`), then checked into an [`Experiment`] the runner can
//! execute without further questions. Every problem comes back as `file:line:column`
//! with the valid choices named, and all problems at once where they are independent.
//!
//! - [`raw`]: the file as written, and the source of the JSON Schema.
//! - [`faults`]: the fault timeline, converted to the agent's requests.
//! - `load`: the `[load]` section: flows, steps and the load model.
//! - [`checks`]: the `[checks]` section: the shop's invariants, HTTP and command checks.

pub mod checks;
pub mod faults;
mod load;
#[cfg(test)]
mod proptests;
pub mod raw;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use faultline_agent::diag::SourceError;
use faultline_agent::topology::Topology;
use toml::Spanned;

use crate::bundled;
use crate::input;
use crate::limits::{self, MAX_BURN_RATE, MAX_DURATION};
use crate::load::flow::Flows;
use crate::load::schedule::Schedule;
use crate::load::template::Template;
use crate::slo::Objective;

pub use checks::{Checks, CommandCheck, Destination, HttpCheck, When};
pub use faults::Planned;
pub use load::worker_url;

pub use crate::fleet::AgentRef;

pub use crate::shop::{
    DEMO, DEMO_NAME, WORKLOAD as SHOP_WORKLOAD, WORKLOAD_NAME as SHOP_WORKLOAD_NAME,
};

#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// Start this topology with an embedded agent.
    Start {
        topology: Box<Topology>,
        bundled: bool,
    },
    /// A running system: load to `url`, faults (if any) through `agents` (each fault
    /// on the one that owns its target).
    Running {
        url: Option<String>,
        agents: Vec<AgentRef>,
    },
}

#[derive(Debug, Clone)]
pub enum LoadModel {
    Open {
        schedule: Schedule,
        max_in_flight: usize,
    },
    Closed {
        think: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub model: LoadModel,
    pub users: usize,
    pub timeout: Duration,
    pub flows: Arc<Flows>,
    /// Load workers' base URLs; none: this process makes the load.
    pub workers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Slo {
    pub name: String,
    pub objective: Objective,
    /// Index into the flows' steps, when the SLO judges one step.
    pub step: Option<usize>,
    /// Availability: statuses below 500 that count as bad too.
    pub also_bad: Vec<u16>,
}

impl Slo {
    /// An SLO of the whole load, named as its objective is (`faultline load --slo`).
    pub fn of(objective: &Objective) -> Slo {
        Slo {
            name: objective.name.clone(),
            objective: objective.clone(),
            step: None,
            also_bad: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AbortRule {
    /// Index into [`Experiment::slos`].
    pub slo: usize,
    pub burn_rate: f64,
    pub sustained: Duration,
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub path: String,
    pub status: u16,
}

#[derive(Debug, Clone)]
pub struct Experiment {
    pub file: String,
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub duration: Duration,
    pub target: TargetSpec,
    pub load: LoadPlan,
    pub slos: Vec<Slo>,
    pub faults: Vec<Planned>,
    pub aborts: Vec<AbortRule>,
    pub checks: Checks,
    pub steady_state: Vec<Probe>,
    /// Proxies made on the agent for the run, and deleted after it.
    pub proxies: Vec<faultline_agent::api::NewProxy>,
}

/// What may override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub seed: Option<u64>,
    /// `--agent`, repeatable: `URL` or `NAME=URL`.
    pub agents: Vec<String>,
    /// `--workers`, instead of `[load] workers`.
    pub workers: Option<Vec<String>>,
}

/// All problems of a file.
#[derive(Debug)]
pub struct Problems(pub Vec<SourceError>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<SourceError>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors
            .push(SourceError::at(self.file, self.text, span, message));
    }

    /// A duration, at most [`MAX_DURATION`] like every duration of a file.
    fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        let parsed = humantime::parse_duration(s.get_ref())
            .map_err(|e| {
                format!(
                    "{what}: `{}` is not a duration ({e}); write 500ms, 30s, 2m",
                    s.get_ref()
                )
            })
            .and_then(|d| limits::duration_within(d, MAX_DURATION, what, s.get_ref()).map(|()| d));
        match parsed {
            Ok(d) => Some(d),
            Err(m) => {
                self.err(s.span(), m);
                None
            }
        }
    }

    /// A template written in a TOML string at `s`; errors point into the string.
    fn template(&mut self, s: &Spanned<String>) -> Option<Template> {
        match Template::parse(s.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                let span = s.span();
                // A basic or literal string starts with one quote; the offset inside
                // is exact when the string has no escapes before it.
                let at = span.start + 1 + e.offset;
                self.err(at..at + 1, e.message);
                None
            }
        }
    }
}

/// Reads and checks an experiment file.
pub fn load_file(path: &Path, overrides: &Overrides) -> Result<Experiment, Problems> {
    let name = path.display().to_string();
    let text = input::read(path, &name)
        .map_err(|e| Problems(vec![e.into_source(&name, "cannot read it")]))?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&name, &text, &base, overrides)
}

/// Checks an experiment given as text; relative paths resolve against `base`.
pub fn parse(
    file: &str,
    text: &str,
    base: &Path,
    overrides: &Overrides,
) -> Result<Experiment, Problems> {
    let raw: raw::Experiment =
        toml::from_str(text).map_err(|e| Problems(vec![toml_error(file, text, &e)]))?;
    let mut cx = Ctx {
        file,
        text,
        errors: Vec::new(),
    };
    let seed = overrides.seed.or(raw.seed).unwrap_or(1);
    let duration = match cx.duration(&raw.duration, "`duration`") {
        Some(d) if d.is_zero() => {
            cx.err(raw.duration.span(), "`duration` must be above zero");
            None
        }
        other => other,
    };
    if raw.name.get_ref().trim().is_empty() {
        cx.err(raw.name.span(), "`name` must not be empty");
    }
    let target = target(&mut cx, &raw.target, base, overrides);
    let load = load::section(&mut cx, &raw.load, base, seed, duration)?;
    let (slos, slo_names) = slos(&mut cx, &raw.slo, load.as_ref());
    let proxies = proxies(&mut cx, &raw.proxies, target.as_ref());
    let faults = timeline(
        &mut cx,
        &raw.faults,
        target.as_ref(),
        &proxies,
        seed,
        duration,
    );
    let aborts = aborts(&mut cx, &raw.abort, &slos, &slo_names);
    let checks = checks::section(&mut cx, &raw.checks, target.as_ref(), base);
    let mut steady_state = Vec::new();
    for p in &raw.steady_state {
        if !p.path.get_ref().starts_with('/') {
            cx.err(p.path.span(), "a probe's `path` starts with /");
        }
        steady_state.push(Probe {
            path: p.path.get_ref().clone(),
            status: p.status.unwrap_or(200),
        });
    }
    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|e| (e.line, e.column));
        return Err(Problems(cx.errors));
    }
    Ok(Experiment {
        file: file.to_owned(),
        name: raw.name.into_inner(),
        description: raw.description,
        seed,
        duration: duration.expect("checked"),
        target: target.expect("checked"),
        load: {
            let mut load = load.expect("checked");
            if let Some(w) = &overrides.workers {
                load.workers = w.clone();
            }
            load
        },
        slos,
        faults,
        aborts,
        checks: checks.expect("checked"),
        steady_state,
        proxies,
    })
}

/// The `[[proxies]]`: each name valid, used once and not a service's; each address
/// `host:port`.
fn proxies(
    cx: &mut Ctx<'_>,
    raw: &[raw::Proxy],
    target: Option<&TargetSpec>,
) -> Vec<faultline_agent::api::NewProxy> {
    use faultline_agent::proxy::runtime::{check_address, check_name};
    let mut out: Vec<faultline_agent::api::NewProxy> = Vec::new();
    let most = faultline_agent::proxy::runtime::MAX_PROXIES;
    if let Some(p) = raw.get(most) {
        cx.err(
            p.name.span(),
            format!("more than {most} proxies; an agent holds at most {most}"),
        );
    }
    for p in raw {
        let name = p.name.get_ref();
        if let Err(e) = check_name(name) {
            cx.err(p.name.span(), e.to_string());
        } else if out.iter().any(|o| o.name == *name) {
            cx.err(p.name.span(), format!("proxy `{name}` is declared twice"));
        } else if let Some(TargetSpec::Start { topology, .. }) = target
            && topology.service(name).is_some()
        {
            cx.err(
                p.name.span(),
                format!(
                    "`{name}` is a service of topology `{}`; give the proxy another name",
                    topology.name
                ),
            );
        }
        if let Err(e) = check_address("upstream", p.upstream.get_ref()) {
            cx.err(p.upstream.span(), e.to_string());
        }
        let listen = p
            .listen
            .as_ref()
            .map_or_else(|| "127.0.0.1:0".to_owned(), |l| l.get_ref().clone());
        if let Some(l) = &p.listen
            && let Err(e) = check_address("listen", l.get_ref())
        {
            cx.err(l.span(), e.to_string());
        }
        out.push(faultline_agent::api::NewProxy {
            name: name.clone(),
            upstream: p.upstream.get_ref().clone(),
            listen,
            enabled: true,
        });
    }
    out
}

/// A TOML error at its place. Where TOML gives none (or the top of the file, for a
/// missing top-level key) it is placed at the first key; a duplicated key is named.
fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> SourceError {
    let err = SourceError::from_toml(file, text, e);
    match e.span() {
        Some(span) if err.message.starts_with("duplicate key") => {
            let message = match key_at(text, span.start) {
                Some(key) => format!("duplicate key `{key}`: set each key once per table"),
                None => format!("{}: set each key once per table", err.message),
            };
            SourceError::at(file, text, span, message)
        }
        Some(span) if !(err.message.starts_with("missing field") && span.start == 0) => err,
        _ => {
            let first = first_key(text);
            SourceError::at(file, text, first..first + 1, err.message)
        }
    }
}

/// The key written at byte `at`: a bare key, or a quoted one without its quotes.
fn key_at(text: &str, at: usize) -> Option<&str> {
    let rest = text.get(at..)?;
    let key = match rest.chars().next()? {
        q @ ('"' | '\'') => rest[1..].split(q).next()?,
        _ => {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            &rest[..end]
        }
    };
    (!key.is_empty()).then_some(key)
}

/// The offset of the first line that is neither blank nor a comment (0 if none is).
fn first_key(text: &str) -> usize {
    text.lines()
        .scan(0, |at, l| {
            let start = *at;
            *at += l.len() + 1;
            Some((start, l))
        })
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map_or(0, |(start, _)| start)
}

/// The SLOs, and the index of each by name.
fn slos(
    cx: &mut Ctx<'_>,
    raw: &[raw::Slo],
    load: Option<&LoadPlan>,
) -> (Vec<Slo>, HashMap<String, usize>) {
    let mut slos = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for s in raw {
        let objective: Objective = match s.objective.get_ref().parse() {
            Ok(o) => o,
            Err(m) => {
                cx.err(s.objective.span(), m);
                continue;
            }
        };
        let step = match (&s.step, load) {
            (Some(step), Some(l)) => match slo_step(cx, step, &l.flows) {
                Some(i) => Some(i),
                None => continue,
            },
            _ => None,
        };
        let name = s
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .unwrap_or_else(|| match (&s.step, &objective) {
                (Some(step), o) => format!("{} {}", step.get_ref(), o.name),
                (None, o) => o.name.clone(),
            });
        if names.insert(name.clone(), slos.len()).is_some() {
            match &s.name {
                Some(n) => cx.err(
                    n.span(),
                    format!("two SLOs are named `{name}`: SLO names must be unique"),
                ),
                None => cx.err(
                    s.objective.span(),
                    format!("two SLOs are named `{name}`: give one a `name`"),
                ),
            }
        }
        if !s.also_bad.is_empty() && !matches!(objective.kind, crate::slo::SliKind::Availability) {
            cx.err(
                s.objective.span(),
                "`also_bad` belongs to availability objectives",
            );
        }
        if let Some(code) = s.also_bad.iter().find(|c| !(100..=499).contains(*c)) {
            cx.err(
                s.objective.span(),
                format!(
                    "`also_bad` lists statuses from 100 to 499 (5xx are bad already), not {code}"
                ),
            );
        }
        slos.push(Slo {
            name,
            objective,
            step,
            also_bad: s.also_bad.clone(),
        });
    }
    (slos, names)
}

/// The index of the step an SLO judges.
fn slo_step(cx: &mut Ctx<'_>, step: &Spanned<String>, flows: &Flows) -> Option<usize> {
    let found = flows.steps.iter().position(|x| x.name == *step.get_ref());
    if found.is_none() {
        let names: Vec<&str> = flows.steps.iter().map(|s| s.name.as_str()).collect();
        cx.err(
            step.span(),
            format!(
                "no step `{}`; steps are: {}",
                step.get_ref(),
                names.join(", ")
            ),
        );
    }
    found
}

/// The fault timeline in order of start, checked against the topology when it is known.
fn timeline(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<toml::Table>],
    target: Option<&TargetSpec>,
    proxies: &[faultline_agent::api::NewProxy],
    seed: u64,
    duration: Option<Duration>,
) -> Vec<Planned> {
    let mut planned = Vec::new();
    if let Some(run) = duration {
        for entry in raw {
            match faults::convert(cx.text, entry, seed, run) {
                Ok(p) => planned.push(p),
                Err((span, m)) => cx.err(span, m),
            }
        }
    }
    let names: Vec<String> = proxies.iter().map(|p| p.name.clone()).collect();
    let none = Topology::none();
    let on = match target {
        Some(TargetSpec::Start { topology, .. }) => Some(&**topology),
        // The run's own agent, for its proxies: faults on them and on processes only.
        Some(TargetSpec::Running { agents, .. }) if agents.is_empty() && !names.is_empty() => {
            Some(&none)
        }
        Some(TargetSpec::Running { agents, .. }) if agents.is_empty() && !raw.is_empty() => {
            cx.err(
                raw[0].span(),
                "faults need an agent: set `agent` under [target] (or pass --agent), declare the [[proxies]] they act on, or leave out `url` to start the bundled system",
            );
            None
        }
        Some(TargetSpec::Running { agents, .. }) => {
            agent_names(cx, agents, &planned);
            None
        }
        _ => None,
    };
    if let Some(topology) = on {
        for p in &planned {
            if let Err((on_with, m)) = faults::check_target(topology, &names, &p.request) {
                let span = if on_with {
                    &p.with_span
                } else {
                    &p.target_span
                };
                cx.err(span.clone(), m);
            }
        }
    }
    planned.sort_by_key(|p| p.at);
    planned
}

/// The agent names the faults' targets use (`NAME/target`, `host:NAME`), checked against
/// the agents the run is given; what each target names is checked on the agents once
/// they answer ([`crate::run::target`]).
fn agent_names(cx: &mut Ctx<'_>, agents: &[AgentRef], planned: &[Planned]) {
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    for p in planned {
        if let Err(e) = crate::fleet::check_names(&names, &p.request) {
            let span = if e.on_with {
                &p.with_span
            } else {
                &p.target_span
            };
            cx.err(span.clone(), e.message);
        }
    }
}

/// The abort guards.
fn aborts(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<raw::Abort>],
    slos: &[Slo],
    slo_names: &HashMap<String, usize>,
) -> Vec<AbortRule> {
    let mut aborts = Vec::new();
    for entry in raw {
        let a = entry.get_ref();
        let Some(slo) = slo_names.get(a.slo.get_ref()).copied() else {
            let names: Vec<&str> = slos.iter().map(|s| s.name.as_str()).collect();
            cx.err(
                a.slo.span(),
                format!(
                    "no SLO named `{}`; SLOs are: {}",
                    a.slo.get_ref(),
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            );
            continue;
        };
        let at = || faults::value_span(cx.text, &entry.span(), "burn_rate");
        if !(a.burn_rate > 0.0 && a.burn_rate.is_finite()) {
            cx.err(
                at().unwrap_or_else(|| entry.span()),
                "`burn_rate` must be above zero",
            );
            continue;
        }
        if a.burn_rate > MAX_BURN_RATE {
            let message = limits::too_high(
                "`burn_rate`",
                limits::number(MAX_BURN_RATE),
                limits::number(a.burn_rate),
            );
            cx.err(at().unwrap_or_else(|| entry.span()), message);
            continue;
        }
        let sustained = match &a.for_ {
            None => Duration::from_secs(5),
            Some(f) => match cx.duration(f, "`for`") {
                Some(d) => d,
                None => continue,
            },
        };
        aborts.push(AbortRule {
            slo,
            burn_rate: a.burn_rate,
            sustained,
        });
    }
    aborts
}

fn target(
    cx: &mut Ctx<'_>,
    t: &raw::Target,
    base: &Path,
    overrides: &Overrides,
) -> Option<TargetSpec> {
    let check_url = |cx: &mut Ctx<'_>, s: &Spanned<String>, what: &str| {
        let ok = s
            .get_ref()
            .parse::<hyper::Uri>()
            .ok()
            .is_some_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
        if !ok {
            cx.err(
                s.span(),
                format!(
                    "`{what}` must be an http:// URL, like http://127.0.0.1:8080, not `{}`",
                    s.get_ref()
                ),
            );
        }
        ok
    };
    if let Some(u) = &t.url
        && !check_url(cx, u, "url")
    {
        return None;
    }
    if let Some(a) = &t.agent
        && !check_url(cx, a, "agent")
    {
        return None;
    }
    let agents = agents(cx, t, overrides, &check_url)?;
    if t.url.is_some() || !agents.is_empty() {
        if let Some(topo) = &t.topology {
            cx.err(
                topo.span(),
                "`topology` starts a system; `url` and `agent` use a running one: choose one",
            );
            return None;
        }
        return Some(TargetSpec::Running {
            url: t
                .url
                .as_ref()
                .map(|u| u.get_ref().trim_end_matches('/').to_owned()),
            agents,
        });
    }
    match &t.topology {
        None => match bundled::load_topology(None) {
            Ok(topo) => Some(TargetSpec::Start {
                topology: Box::new(topo),
                bundled: true,
            }),
            Err(e) => {
                cx.errors.push(e);
                None
            }
        },
        Some(p) => match bundled::load_topology(Some(&base.join(p.get_ref()))) {
            Ok(topo) => {
                if topo.entrypoint.is_none() {
                    cx.err(
                        p.span(),
                        "the topology has no `entrypoint`, so the load has nowhere to go",
                    );
                    return None;
                }
                Some(TargetSpec::Start {
                    topology: Box::new(topo),
                    bundled: false,
                })
            }
            Err(e) => {
                cx.err(p.span(), format!("the topology does not load: {e}"));
                None
            }
        },
    }
}

/// The agents of a running target: `--agent` (repeated) if given, else `agent` (named
/// by its host:port), else `[[target.agents]]`, each name valid and used once.
fn agents(
    cx: &mut Ctx<'_>,
    t: &raw::Target,
    overrides: &Overrides,
    check_url: &dyn Fn(&mut Ctx<'_>, &Spanned<String>, &str) -> bool,
) -> Option<Vec<AgentRef>> {
    if let (Some(_), Some(first)) = (&t.agent, t.agents.first()) {
        cx.err(
            first.name.span(),
            "[target] has both `agent` and [[target.agents]]: name one agent with `agent`, or every agent under [[target.agents]]",
        );
        return None;
    }
    if !overrides.agents.is_empty() {
        return match crate::fleet::parse_args(&overrides.agents, None) {
            Ok(a) => Some(a),
            Err(m) => {
                cx.errors.push(SourceError::whole_file(cx.file, m));
                None
            }
        };
    }
    if let Some(a) = &t.agent {
        let url = a.get_ref().clone();
        return Some(vec![AgentRef {
            name: crate::fleet::name_of_url(&url),
            url,
            token: None,
        }]);
    }
    let mut out: Vec<AgentRef> = Vec::new();
    let mut ok = true;
    for a in &t.agents {
        let name = a.name.get_ref();
        if let Err(m) = crate::fleet::check_name(name) {
            cx.err(a.name.span(), m);
            ok = false;
        } else if out.iter().any(|o| o.name == *name) {
            cx.err(
                a.name.span(),
                format!("two agents are named `{name}`: give each agent of [[target.agents]] its own name"),
            );
            ok = false;
        }
        ok &= check_url(cx, &a.url, "url");
        out.push(AgentRef {
            name: name.clone(),
            url: a.url.get_ref().clone(),
            token: a.token.clone(),
        });
    }
    ok.then_some(out)
}

/// The JSON Schema of experiment files.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(raw::Experiment)).expect("schemas serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Experiment, Problems> {
        parse("x.toml", text, Path::new("."), &Overrides::default())
    }

    const HEAD: &str = "name = \"t\"\nduration = \"60s\"\n[load]\nrate = 10\nworkload = \"shop\"\n";

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("../../../schemas/experiment.schema.json")).unwrap();
        assert_eq!(
            committed,
            schema(),
            "schemas/experiment.schema.json is stale: run `faultline schema > schemas/experiment.schema.json`"
        );
    }

    #[test]
    fn the_demo_and_the_shop_workload_load() {
        let e = parse(DEMO_NAME, DEMO, Path::new("."), &Overrides::default()).unwrap();
        assert_eq!(e.name, "demo");
        assert_eq!(e.faults.len(), 4);
        assert!(
            e.checks.invariants,
            "the bundled shop is checked by default"
        );
        let names: Vec<&str> = e.load.flows.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "list products",
                "view product",
                "login",
                "home",
                "create order",
                "order status",
                "recent orders"
            ]
        );
        let login = &e.load.flows.steps[2];
        assert!(login.once);
        assert_eq!(e.load.flows.flows.len(), 5);
        // `--seed` wins over the file.
        let seeded = parse(
            DEMO_NAME,
            DEMO,
            Path::new("."),
            &Overrides {
                seed: Some(9),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!((e.seed, seeded.seed), (42, 9));
    }

    #[test]
    fn every_fault_kind_of_the_agent_can_be_written() {
        let faults = [
            ("kill", "orders-2", "hold = true\nduration = \"5s\""),
            ("terminate", "orders", ""),
            ("pause", "content-1", "duration = \"5s\""),
            ("restart", "auth-1", ""),
            (
                "latency",
                "payments->bank",
                "delay = \"200ms\"\njitter = \"20ms\"\nduration = \"5s\"",
            ),
            (
                "bandwidth",
                "gateway->cdn",
                "rate = 10000\nduration = \"5s\"",
            ),
            (
                "blackhole",
                "orders->broker",
                "close_after = \"1s\"\nduration = \"5s\"",
            ),
            (
                "reset",
                "orders->broker-1",
                "after = \"10ms\"\nduration = \"5s\"",
            ),
            (
                "slicer",
                "cdn->content",
                "average_size = 10\ndelay = \"50us\"\nduration = \"5s\"",
            ),
            (
                "slow-close",
                "cdn->content",
                "delay = \"1s\"\nduration = \"5s\"",
            ),
            (
                "limit-data",
                "cdn->content",
                "bytes = 100\nduration = \"5s\"",
            ),
            (
                "http-abort",
                "gateway->cdn",
                "status = 503\npercent = 50\npath = \"/api/v1/products\"\nduration = \"5s\"",
            ),
            (
                "http-delay",
                "gateway->api",
                "delay = \"300ms\"\nduration = \"5s\"",
            ),
            (
                "loss",
                "container:orders-db",
                "percent = 30\ndirection = \"in\"\nduration = \"5s\"",
            ),
            (
                "partition",
                "orders",
                "with = \"broker\"\nduration = \"5s\"",
            ),
            ("zone-outage", "b", "duration = \"5s\""),
            ("poison", "payments", "count = 5"),
            (
                "queue-partition",
                "payments",
                "side = \"producers\"\nduration = \"5s\"",
            ),
        ];
        assert_eq!(faults.len(), faultline_agent::faults::kinds::KINDS.len());
        let mut text = HEAD.to_owned();
        for (kind, target, params) in faults {
            text.push_str(&format!(
                "\n[[faults]]\nat = \"10s\"\nkind = \"{kind}\"\ntarget = \"{target}\"\n{params}\n"
            ));
        }
        let e = parse_text(&text).unwrap_or_else(|p| panic!("{p}"));
        let kinds: Vec<&str> = e.faults.iter().map(|f| f.request.spec.kind()).collect();
        assert_eq!(kinds.len(), 18);
        let slicer = e
            .faults
            .iter()
            .find(|f| f.request.spec.kind() == "slicer")
            .unwrap();
        assert!(
            matches!(
                slicer.request.spec,
                faultline_agent::faults::FaultSpec::Slicer { delay_us: 50, .. }
            ),
            "{:?}",
            slicer.request.spec
        );
        let latency = e
            .faults
            .iter()
            .find(|f| f.label == "latency payments->bank")
            .unwrap();
        assert_eq!(latency.duration, Some(Duration::from_secs(5)));
        assert!(latency.request.seed.is_some(), "fault draws are seeded");
    }

    #[test]
    fn problems_are_all_reported_with_their_place() {
        let text = format!(
            "{HEAD}\n[[slo]]\nobjective = \"availability>=99\"\n[[abort]]\nslo = \"avail\"\nburn_rate = 10\n\n[[faults]]\nat = \"5s\"\nduration = \"5s\"\nkind = \"latency\"\ntarget = \"bank->payments\"\ndelay = \"5ms\"\n"
        );
        let p = parse_text(&text).unwrap_err();
        let lines: Vec<String> = p.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("x.toml:10:7: no SLO named `avail`; SLOs are: availability>=99"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("x.toml:17:10: no edge 'bank->payments'; bank calls: nothing"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_file_at_every_limit_is_accepted() {
        let text = "name = \"t\"\nduration = \"24h\"\n[load]\nstages = [{ duration = \"12h\", target = 1000000 }, { duration = \"43200s\", target = 0 }]\nstart_rate = 1000000\nusers = 50000\nmax_in_flight = 1000000\ntimeout = \"24h\"\n[load.pool]\ncount = 1000000\nusername = \"u{{n}}\"\npassword = \"p\"\n[[load.flows]]\nname = \"a\"\nweight = 1000000\nsteps = [{ name = \"s\", path = \"/\" }]\n[[slo]]\nobjective = \"latency<24h>=99\"\n[[abort]]\nslo = \"latency<24h>=99\"\nburn_rate = 1000000\nfor = \"24h\"\n[checks]\ndrain_timeout = \"24h\"\n[[faults]]\nat = \"0s\"\nduration = \"24h\"\nkind = \"latency\"\ntarget = \"payments->bank\"\ndelay = \"24h\"\njitter = \"24h\"\n[[faults]]\nat = \"1s\"\nduration = \"1s\"\nkind = \"bandwidth\"\ntarget = \"gateway->cdn\"\nrate = 10000000000\n[[faults]]\nat = \"1s\"\nduration = \"1s\"\nkind = \"limit-data\"\ntarget = \"cdn->content\"\nbytes = 1099511627776\n[[faults]]\nat = \"1s\"\nduration = \"1s\"\nkind = \"slicer\"\ntarget = \"cdn->content\"\naverage_size = 1048000\nsize_variation = 576\ndelay = \"24h\"\n[[faults]]\nat = \"1s\"\nkind = \"poison\"\ntarget = \"payments\"\ncount = 10000\n";
        let e = parse_text(text).unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(e.duration, MAX_DURATION);
        let LoadModel::Open { schedule, .. } = &e.load.model else {
            panic!("open model");
        };
        assert_eq!(schedule.total(), 1e6 * 43_200.0 + 0.5e6 * 43_200.0);
        let latency = &e.faults[0].request.spec;
        assert!(
            matches!(
                latency,
                faultline_agent::faults::FaultSpec::Latency {
                    delay_ms: 86_400_000,
                    ..
                }
            ),
            "{latency:?}"
        );
        // One past the slicer's bound, in the sum of its sizes.
        let over = text.replace("size_variation = 576", "size_variation = 577");
        let p = parse_text(&over).unwrap_err().to_string();
        assert!(
            p.contains("`average_size` plus `size_variation` must be at most 1048576 bytes"),
            "{p}"
        );
        // `start_rate` is bounded like every rate.
        let over = text.replace("start_rate = 1000000", "start_rate = 1000001");
        let p = parse_text(&over).unwrap_err().to_string();
        assert!(
            p.contains("x.toml:5:14: `start_rate` must be at most 1000000 iterations a second"),
            "{p}"
        );
    }

    #[test]
    fn toml_errors_without_a_place_are_placed_at_the_first_key() {
        // TOML's recursion limit in a table header comes without a span.
        let header = vec!["a"; 100_000].join(".");
        let text = format!("# a comment\n\nname = \"t\"\n[{header}]\n");
        let p = parse_text(&text).unwrap_err();
        assert_eq!((p.0[0].line, p.0[0].column), (3, 1), "{p}");
    }

    #[test]
    fn a_url_target_without_an_agent_cannot_have_faults() {
        let text = "name = \"t\"\nduration = \"10s\"\n[target]\nurl = \"http://127.0.0.1:9\"\n[load]\nrate = 1\n[[load.flows]]\nname = \"f\"\nsteps = [{ name = \"a\", path = \"/\" }]\n[[faults]]\nat = \"1s\"\nkind = \"restart\"\ntarget = \"x\"\n";
        let p = parse_text(text).unwrap_err().to_string();
        assert!(p.contains("x.toml:10:1: faults need an agent"), "{p}");
        // Without faults it is a plain load test, with no invariant checks by default.
        let text = text.split("[[faults]]").next().unwrap();
        let e = parse_text(text).unwrap();
        assert!(!e.checks.invariants);
        assert!(matches!(&e.target, TargetSpec::Running { agents, .. } if agents.is_empty()));
    }

    const AGENTS: &str = "name = \"t\"\nduration = \"10s\"\n[target]\n[[target.agents]]\nname = \"a\"\nurl = \"http://10.0.0.2:7400\"\ntoken = \"t\"\n[[target.agents]]\nname = \"b\"\nurl = \"http://10.0.0.3:7400\"\n[load]\nrate = 1\n[[load.flows]]\nname = \"f\"\nsteps = [{ name = \"a\", path = \"/\" }]\n";

    fn fault(target: &str, extra: &str) -> String {
        format!("{AGENTS}[[faults]]\nat = \"1s\"\nkind = \"kill\"\ntarget = \"{target}\"\n{extra}")
    }

    #[test]
    fn several_agents_are_named_once_each_and_targets_qualified_with_their_names() {
        let e = parse_text(&fault("b/api-1", "")).unwrap();
        let TargetSpec::Running { agents, url } = &e.target else {
            panic!("{:?}", e.target)
        };
        assert_eq!(url, &None);
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(agents[0].token.as_deref(), Some("t"));
        assert_eq!(agents[1].token, None);
        // The target's place is kept for what the agents say once they answer.
        assert_eq!(e.faults[0].target_at, (19, 10));

        let p = parse_text(&fault("c/api-1", "")).unwrap_err().to_string();
        assert!(
            p.contains("x.toml:19:10: no agent named `c`; agents are: a, b"),
            "{p}"
        );
        let twice = AGENTS.replace("name = \"b\"", "name = \"a\"");
        let p = parse_text(&twice).unwrap_err().to_string();
        assert!(
            p.contains("x.toml:9:8: two agents are named `a`: give each agent of [[target.agents]] its own name"),
            "{p}"
        );
        let both = AGENTS.replace("[target]\n", "[target]\nagent = \"http://10.0.0.9:1\"\n");
        let p = parse_text(&both).unwrap_err().to_string();
        assert!(
            p.contains("x.toml:6:8: [target] has both `agent` and [[target.agents]]"),
            "{p}"
        );
        let bad = AGENTS.replace("name = \"b\"", "name = \"b/c\"");
        let p = parse_text(&bad).unwrap_err().to_string();
        assert!(p.contains("x.toml:9:8: agent name `b/c`"), "{p}");
    }

    #[test]
    fn a_partition_between_hosts_names_agents_on_both_sides() {
        let partition = |with: &str| {
            fault("host:a", &format!("with = \"{with}\"\n"))
                .replace("kind = \"kill\"", "kind = \"partition\"")
                .replace("at = \"1s\"\n", "at = \"1s\"\nduration = \"2s\"\n")
        };
        let e = parse_text(&partition("host:b")).unwrap();
        assert_eq!(e.faults[0].label, "partition host:a | host:b");
        let p = parse_text(&partition("host:z")).unwrap_err().to_string();
        assert!(
            p.contains("x.toml:21:8: no agent named `z`; agents are: a, b"),
            "{p}"
        );
        let p = parse_text(&partition("b")).unwrap_err().to_string();
        assert!(
            p.contains("x.toml:21:8: `b`: both sides of a partition between hosts are host:NAME"),
            "{p}"
        );
        // `--agent` replaces the file's agents: one agent cannot be partitioned from itself.
        let one = Overrides {
            agents: vec!["a=http://10.0.0.2:7400".into()],
            ..Overrides::default()
        };
        let p = parse("x.toml", &partition("host:a"), Path::new("."), &one)
            .unwrap_err()
            .to_string();
        assert!(
            p.contains("a partition between hosts needs several agents"),
            "{p}"
        );
    }
}
