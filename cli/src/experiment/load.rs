//! The `[load]` section of an experiment: the workload's flows and the file's own, their
//! steps and templates, and the load model with its schedule.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper::header::HeaderName;
use toml::Spanned;

use super::{Ctx, LoadModel, LoadPlan, Problems, SHOP_WORKLOAD, SHOP_WORKLOAD_NAME, faults, raw};
use crate::input::{self, ReadError};
use crate::limits::{self, MAX_IN_FLIGHT, MAX_POOL, MAX_RATE, MAX_USERS, MAX_WEIGHT};
use crate::load::flow::{Capture, Flow, Flows, Pool, Step};
use crate::load::schedule::{Schedule, Stage};
use crate::load::template::Template;

/// A workload's pool and flows, with the name and the text their places refer to.
struct Workload {
    name: String,
    text: String,
    load: raw::WorkloadLoad,
}

/// The `[load]` section: the workload's flows, then the file's own, and the model. A
/// workload that is not valid TOML ends the check (its problem is in that file).
pub(super) fn section(
    cx: &mut Ctx<'_>,
    l: &Spanned<raw::Load>,
    base: &Path,
    seed: u64,
    duration: Option<Duration>,
) -> Result<Option<LoadPlan>, Problems> {
    let load = l.get_ref();
    let (workload, failed) = match &load.workload {
        None => (None, false),
        Some(w) => {
            let read = workload(cx, w, base)?;
            let failed = read.is_none();
            (read, failed)
        }
    };
    let pool = load
        .pool
        .as_ref()
        .or(workload.as_ref().and_then(|w| w.load.pool.as_ref()));
    let flows = build_flows(
        cx,
        workload.as_ref(),
        &load.flows,
        pool,
        seed,
        (!failed).then(|| l.span()),
    );
    Ok(flows.and_then(|f| load_plan(cx, load, l.span(), f, duration)))
}

/// The workload `w` names (`None` when it cannot be read, which is reported at `w`).
fn workload(
    cx: &mut Ctx<'_>,
    w: &Spanned<String>,
    base: &Path,
) -> Result<Option<Workload>, Problems> {
    let (name, text) = if w.get_ref() == crate::shop::WORKLOAD_KEY {
        (SHOP_WORKLOAD_NAME.to_owned(), SHOP_WORKLOAD.to_owned())
    } else {
        let p = base.join(w.get_ref());
        let name = p.display().to_string();
        match input::read(&p, &name) {
            Ok(text) => (name, text),
            Err(e) => {
                match e {
                    ReadError::Io(e) => cx.err(
                        w.span(),
                        format!(
                            "cannot read the workload {name}: {e} (the built-in one is \"shop\")"
                        ),
                    ),
                    ReadError::Refused(m) => {
                        cx.err(w.span(), format!("cannot read the workload {name}: {m}"))
                    }
                    ReadError::NotUtf8(e) => cx.errors.push(e),
                }
                return Ok(None);
            }
        }
    };
    match toml::from_str::<raw::WorkloadFile>(&text) {
        Ok(f) => Ok(Some(Workload {
            name,
            text,
            load: f.load,
        })),
        Err(e) => Err(Problems(vec![super::toml_error(&name, &text, &e)])),
    }
}

/// Builds the flows: steps are shared by name across flows (a step with only a name
/// reuses the definition); variables must be captured before they are read.
fn build_flows(
    cx: &mut Ctx<'_>,
    workload: Option<&Workload>,
    own: &[raw::Flow],
    pool: Option<&Spanned<raw::Pool>>,
    seed: u64,
    // `None` when the workload could not be read (already reported).
    load_span: Option<Range<usize>>,
) -> Option<Flows> {
    let mut steps: Vec<Step> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut flows = Vec::new();
    let start_errors = cx.errors.len();
    // Workload flows come from another text: errors there are reported in it.
    let mut sub = Ctx {
        file: workload.map_or("", |w| w.name.as_str()),
        text: workload.map_or("", |w| w.text.as_str()),
        errors: Vec::new(),
    };
    let theirs = workload.map_or(&[][..], |w| &w.load.flows[..]);
    for (from_workload, f) in theirs
        .iter()
        .map(|f| (true, f))
        .chain(own.iter().map(|f| (false, f)))
    {
        // Each text has its own context (they differ in lifetime too, hence no rebinding).
        let one = if from_workload {
            flow(&mut sub, f, &mut steps, &mut by_name, pool.is_some())
        } else {
            flow(cx, f, &mut steps, &mut by_name, pool.is_some())
        };
        flows.push(one);
    }
    cx.errors.append(&mut sub.errors);
    match &load_span {
        Some(at) if flows.is_empty() => cx.err(
            at.clone(),
            "[load] has no flows: set `workload = \"shop\"` or write [[load.flows]]",
        ),
        None if flows.is_empty() => return None,
        Some(at) if flows.iter().all(|f| f.weight == 0) => {
            cx.err(at.clone(), "every flow has weight 0")
        }
        _ => {}
    }
    let pool = pool.and_then(|p| login_pool(cx, p));
    if cx.errors.len() > start_errors {
        return None;
    }
    Some(Flows {
        steps,
        flows,
        pool,
        seed,
        nonce: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    })
}

/// One flow: its steps (definitions added to `steps`), variables and weight.
fn flow(
    cx: &mut Ctx<'_>,
    f: &raw::Flow,
    steps: &mut Vec<Step>,
    by_name: &mut BTreeMap<String, usize>,
    pool: bool,
) -> Flow {
    let indices = flow_steps(cx, f, steps, by_name);
    if f.steps.is_empty() {
        cx.err(
            f.name.span(),
            format!("flow `{}` has no steps", f.name.get_ref()),
        );
    }
    check_variables(cx, f, &indices, steps, pool);
    Flow {
        name: f.name.get_ref().clone(),
        weight: weight(cx, f),
        steps: indices,
    }
}

/// The steps of flow `f`, as indices into `steps`: new definitions are added there.
fn flow_steps(
    cx: &mut Ctx<'_>,
    f: &raw::Flow,
    steps: &mut Vec<Step>,
    by_name: &mut BTreeMap<String, usize>,
) -> Vec<usize> {
    let mut indices = Vec::new();
    for s in &f.steps {
        let name = s.name.get_ref().clone();
        let defines = s.path.is_some();
        match (by_name.get(&name), defines) {
            (Some(i), false) => indices.push(*i),
            (None, false) => cx.err(
                s.name.span(),
                format!(
                    "step `{name}` has no `path` and no step of that name is defined before it; steps are: {}",
                    if by_name.is_empty() {
                        "none yet".to_owned()
                    } else {
                        by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            ),
            (Some(_), true) => cx.err(
                s.name.span(),
                format!(
                    "step `{name}` is defined twice; to reuse it, write only {{ name = \"{name}\" }}"
                ),
            ),
            (None, true) => {
                if let Some(step) = step(cx, s) {
                    by_name.insert(name, steps.len());
                    indices.push(steps.len());
                    steps.push(step);
                }
            }
        }
    }
    indices
}

/// Variables: captured by an earlier step of the flow, or given to every user.
fn check_variables(cx: &mut Ctx<'_>, f: &raw::Flow, indices: &[usize], steps: &[Step], pool: bool) {
    let mut known: Vec<String> = vec!["vu".into()];
    if pool {
        known.extend(["username".into(), "password".into()]);
    }
    for (s, i) in f.steps.iter().zip(indices.iter()) {
        let step = &steps[*i];
        let reads = step
            .path
            .vars()
            .chain(step.headers.iter().flat_map(|(_, t)| t.vars()))
            .chain(step.body.iter().flat_map(|t| t.vars()));
        for v in reads {
            if !known.iter().any(|k| k == v) {
                let strings = s.path.iter().chain(s.headers.values()).chain(s.body.iter());
                let at = strings
                    .filter_map(|t| var_place(t, v))
                    .next()
                    .unwrap_or_else(|| s.name.span());
                cx.err(
                    at,
                    format!(
                        "step `{}` reads `{{{{{v}}}}}`, which no earlier step of flow `{}` captures; known here: {}",
                        step.name,
                        f.name.get_ref(),
                        known.join(", ")
                    ),
                );
            }
        }
        known.extend(step.captures.iter().map(|c| c.var.clone()));
    }
}

/// A flow's weight (default 1), at most [`MAX_WEIGHT`].
fn weight(cx: &mut Ctx<'_>, f: &raw::Flow) -> u32 {
    match &f.weight {
        None => 1,
        Some(w) if *w.get_ref() > MAX_WEIGHT => {
            let message = limits::too_high("a flow's `weight`", MAX_WEIGHT, w.get_ref());
            cx.err(w.span(), message);
            0
        }
        Some(w) => *w.get_ref(),
    }
}

/// Who virtual users log in as.
fn login_pool(cx: &mut Ctx<'_>, spanned: &Spanned<raw::Pool>) -> Option<Pool> {
    let p = spanned.get_ref();
    let at = || faults::value_span(cx.text, &spanned.span(), "count").unwrap_or(spanned.span());
    if p.count == 0 {
        let at = at();
        cx.err(at, "the pool's `count` must be at least 1");
    } else if p.count > MAX_POOL {
        let (at, message) = (
            at(),
            limits::too_high("the pool's `count`", MAX_POOL, p.count),
        );
        cx.err(at, message);
    }
    match (cx.template(&p.username), cx.template(&p.password)) {
        (Some(username), Some(password)) => Some(Pool {
            count: p.count.clamp(1, MAX_POOL),
            username,
            password,
        }),
        _ => None,
    }
}

/// Where `{{var}}` is written inside the TOML string `s` (exact without escapes before it).
fn var_place(s: &Spanned<String>, var: &str) -> Option<Range<usize>> {
    let text = s.get_ref();
    let mut from = 0;
    while let Some(i) = text[from..].find("{{") {
        let open = from + i;
        let close = text[open..].find("}}").map(|c| open + c)?;
        if text[open + 2..close].trim() == var {
            let at = s.span().start + 1 + open;
            return Some(at..at + 1);
        }
        from = close;
    }
    None
}

/// A step's headers: names checked, values templated.
fn headers(cx: &mut Ctx<'_>, s: &raw::Step) -> Option<Vec<(HeaderName, Template)>> {
    let mut headers = Vec::new();
    for (k, v) in &s.headers {
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            // The key is written before its value: find it there.
            let before = &cx.text[..v.span().start];
            let at = before
                .rfind(k.as_str())
                .or_else(|| before.rfind(&format!("\"{k}\"")))
                .map_or(v.span(), |i| {
                    // A quoted key starts at its quote.
                    let i = if i > 0 && before[..i].ends_with('"') {
                        i - 1
                    } else {
                        i
                    };
                    i..i + 1
                });
            cx.err(
                at,
                format!("`{k}` is not a header name (letters, digits and - only)"),
            );
            return None;
        };
        headers.push((name, cx.template(v)?));
    }
    Some(headers)
}

fn step(cx: &mut Ctx<'_>, s: &raw::Step) -> Option<Step> {
    let method = match &s.method {
        None => Method::GET,
        Some(m) => match Method::from_bytes(m.get_ref().to_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                cx.err(m.span(), format!("`{}` is not an HTTP method", m.get_ref()));
                return None;
            }
        },
    };
    let path_text = s.path.as_ref().expect("defining steps have a path");
    if !path_text.get_ref().starts_with('/') {
        cx.err(
            path_text.span(),
            format!(
                "`path` starts with / (it is joined to the target's URL), not `{}`",
                path_text.get_ref()
            ),
        );
        return None;
    }
    let path = cx.template(path_text)?;
    let headers = headers(cx, s)?;
    let body = match &s.body {
        Some(b) => Some(cx.template(b)?),
        None => None,
    };
    for code in &s.expect {
        if !(100..=599).contains(code.get_ref()) {
            cx.err(
                code.span(),
                format!(
                    "`expect` holds {}, which is not an HTTP status (100 to 599)",
                    code.get_ref()
                ),
            );
            return None;
        }
    }
    let captures = s
        .capture
        .iter()
        .map(|(var, path)| Capture {
            var: var.clone(),
            path: path.get_ref().split('.').map(str::to_owned).collect(),
        })
        .collect::<Vec<_>>();
    let record = match &s.record {
        None => None,
        Some(r) if s.capture.contains_key(r.get_ref()) => Some(r.get_ref().clone()),
        Some(r) => {
            cx.err(
                r.span(),
                format!(
                    "`record` names `{}`, which this step does not capture; it captures: {}",
                    r.get_ref(),
                    if s.capture.is_empty() {
                        "nothing (add `capture`)".to_owned()
                    } else {
                        s.capture.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            );
            return None;
        }
    };
    Some(Step {
        name: s.name.get_ref().clone(),
        method,
        path,
        headers,
        body,
        once: s.once,
        expect: s.expect.iter().map(|c| *c.get_ref()).collect(),
        captures,
        record,
    })
}

pub(super) fn load_plan(
    cx: &mut Ctx<'_>,
    l: &raw::Load,
    at: Range<usize>,
    flows: Flows,
    duration: Option<Duration>,
) -> Option<LoadPlan> {
    let key = |cx: &Ctx<'_>, k: &str| faults::key_span(cx.text, &at, k).unwrap_or(at.clone());
    let value = |cx: &Ctx<'_>, k: &str| faults::value_span(cx.text, &at, k).unwrap_or(at.clone());
    let timeout = match &l.timeout {
        None => Duration::from_secs(10),
        Some(t) => cx.duration(t, "`timeout`")?,
    };
    // Settings of the other model would be silently ignored: say so.
    match l.model {
        raw::ModelKind::Open => {
            if let Some(t) = &l.think {
                cx.err(
                    faults::key_span(cx.text, &at, "think").unwrap_or(t.span()),
                    "`think` belongs to the closed model (model = \"closed\"); the open model's iterations arrive at `rate`",
                );
                return None;
            }
            if l.start_rate != 0.0 && l.stages.is_empty() {
                cx.err(
                    key(cx, "start_rate"),
                    "`start_rate` is where `stages` start from: it needs `stages`",
                );
                return None;
            }
        }
        raw::ModelKind::Closed => {
            if l.max_in_flight.is_some() {
                cx.err(
                    key(cx, "max_in_flight"),
                    "`max_in_flight` bounds the open model; the closed model's users are the bound",
                );
                return None;
            }
        }
    }
    if let Some(n) = l.max_in_flight.filter(|n| *n > MAX_IN_FLIGHT) {
        let message = limits::too_high("[load] `max_in_flight`", MAX_IN_FLIGHT, n);
        cx.err(value(cx, "max_in_flight"), message);
        return None;
    }
    let users = l.users.unwrap_or(match l.model {
        raw::ModelKind::Open => 50,
        raw::ModelKind::Closed => 10,
    });
    if users == 0 {
        cx.err(at.clone(), "[load] `users` must be at least 1");
        return None;
    }
    if users > MAX_USERS {
        let message = limits::too_high("[load] `users`", MAX_USERS, users);
        cx.err(value(cx, "users"), message);
        return None;
    }
    let duration = duration?;
    let model = match l.model {
        raw::ModelKind::Open => LoadModel::Open {
            schedule: open_schedule(cx, l, &at, duration)?,
            max_in_flight: l.max_in_flight.unwrap_or(10_000).max(1),
        },
        raw::ModelKind::Closed => {
            if l.rate.is_some() || !l.stages.is_empty() {
                let which = if l.rate.is_some() { "rate" } else { "stages" };
                cx.err(
                    key(cx, which),
                    "the closed model runs `users` one iteration after another: `rate` and `stages` belong to the open model",
                );
                return None;
            }
            LoadModel::Closed {
                think: match &l.think {
                    None => Duration::ZERO,
                    Some(t) => cx.duration(t, "`think`")?,
                },
            }
        }
    };
    let workers = workers(cx, l, &at, users)?;
    Some(LoadPlan {
        model,
        users,
        timeout,
        flows: Arc::new(flows),
        workers,
    })
}

/// `[load] workers`: base URLs of load workers, each once, no more than the users they
/// share.
fn workers(
    cx: &mut Ctx<'_>,
    l: &raw::Load,
    at: &Range<usize>,
    users: usize,
) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for w in &l.workers {
        let url = match worker_url(w.get_ref()) {
            Ok(u) => u,
            Err(e) => {
                cx.err(w.span(), format!("[load] `workers`: {e}"));
                return None;
            }
        };
        if out.contains(&url) {
            cx.err(w.span(), format!("[load] `workers` names {url} twice"));
            return None;
        }
        out.push(url);
    }
    if out.len() > users {
        cx.err(
            faults::key_span(cx.text, at, "workers").unwrap_or(at.clone()),
            format!(
                "{} load workers need at least {} users, one each; [load] has {users}",
                out.len(),
                out.len()
            ),
        );
        return None;
    }
    Some(out)
}

/// A load worker's base URL, `http://HOST:PORT` with no path, as the controller writes it.
pub fn worker_url(text: &str) -> Result<String, String> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL (write http://HOST:PORT)"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("`{text}`: a worker's URL is http://HOST:PORT"));
    }
    let Some(host) = uri.host() else {
        return Err(format!("`{text}` has no host"));
    };
    let Some(port) = uri.port_u16() else {
        return Err(format!(
            "`{text}` has no port (workers have no default port)"
        ));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("`{text}` has a path; write http://HOST:PORT only"));
    }
    Ok(format!("http://{host}:{port}"))
}

/// An open-model rate: above zero (or zero too, with `zero`) and at most [`MAX_RATE`].
fn rate(cx: &mut Ctx<'_>, at: Range<usize>, what: &str, r: f64, zero: bool) -> Option<f64> {
    if !(r.is_finite() && (r > 0.0 || (zero && r == 0.0))) {
        let least = if zero { "zero or above" } else { "above zero" };
        cx.err(
            at,
            format!("{what} must be {least}, not {}", limits::number(r)),
        );
        return None;
    }
    if r > MAX_RATE {
        let max = format!("{} iterations a second", limits::number(MAX_RATE));
        cx.err(at, limits::too_high(what, max, limits::number(r)));
        return None;
    }
    Some(r)
}

/// The open model's schedule: a constant `rate`, or `stages` that add up to the run.
fn open_schedule(
    cx: &mut Ctx<'_>,
    l: &raw::Load,
    at: &Range<usize>,
    duration: Duration,
) -> Option<Schedule> {
    let value = |cx: &Ctx<'_>, k: &str| faults::value_span(cx.text, at, k).unwrap_or(at.clone());
    match (l.rate, l.stages.is_empty()) {
        (Some(_), false) => {
            cx.err(
                at.clone(),
                "[load] has both `rate` and `stages`: choose one",
            );
            None
        }
        (None, true) => {
            cx.err(
                at.clone(),
                "the open model needs `rate` (iterations a second) or `stages` under [load]",
            );
            None
        }
        (Some(r), true) => {
            let r = rate(cx, value(cx, "rate"), "[load] `rate`", r, false)?;
            Some(Schedule::constant(r, duration))
        }
        (None, false) => {
            let start = rate(
                cx,
                value(cx, "start_rate"),
                "`start_rate`",
                l.start_rate,
                true,
            )?;
            let mut stages = Vec::new();
            for s in &l.stages {
                let d = cx.duration(&s.duration, "a stage's `duration`")?;
                let target = rate(
                    cx,
                    s.target.span(),
                    "a stage's `target`",
                    *s.target.get_ref(),
                    true,
                )?;
                stages.push(Stage {
                    duration: d,
                    target,
                });
            }
            // Each stage is at most a day, so this cannot overflow; were it to, the sum
            // would say so rather than wrap.
            let total = stages
                .iter()
                .try_fold(Duration::ZERO, |sum, s| sum.checked_add(s.duration));
            if total != Some(duration) {
                let sum = total.map_or("more than can be counted".to_owned(), |t| {
                    humantime::format_duration(t).to_string()
                });
                cx.err(
                    faults::key_span(cx.text, at, "stages").unwrap_or(at.clone()),
                    format!(
                        "the stages add up to {sum}, but the experiment lasts {}",
                        humantime::format_duration(duration)
                    ),
                );
                return None;
            }
            Some(Schedule::ramping(start, stages))
        }
    }
}
