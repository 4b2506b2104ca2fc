//! The `[load]` section of an experiment: the workload's flows and the file's own, their
//! steps and templates, and the load model with its schedule.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper::header::HeaderName;
use toml::Spanned;

use super::{Ctx, LoadModel, LoadPlan, SHOP_WORKLOAD, SHOP_WORKLOAD_NAME, faults, raw};
use crate::load::flow::{Capture, Flow, Flows, Pool, Step};
use crate::load::schedule::{Schedule, Stage};

/// Builds the flows: steps are shared by name across flows (a step with only a name
/// reuses the definition); variables must be captured before they are read.
pub(super) fn build_flows<'a>(
    cx: &mut Ctx<'a>,
    workload_text: Option<&'a str>,
    workload: &[&raw::Flow],
    own: &[&raw::Flow],
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
        file: if workload_text == Some(SHOP_WORKLOAD) {
            SHOP_WORKLOAD_NAME
        } else {
            "<workload>"
        },
        text: workload_text.unwrap_or(""),
        errors: Vec::new(),
    };
    for (from_workload, f) in workload
        .iter()
        .map(|f| (true, *f))
        .chain(own.iter().map(|f| (false, *f)))
    {
        let cx: &mut Ctx<'_> = if from_workload { &mut sub } else { &mut *cx };
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
        if f.steps.is_empty() {
            cx.err(
                f.name.span(),
                format!("flow `{}` has no steps", f.name.get_ref()),
            );
        }
        // Variables: captured by an earlier step of this flow, or given to every user.
        let mut known: Vec<String> = vec!["vu".into()];
        if pool.is_some() {
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
        flows.push(Flow {
            name: f.name.get_ref().clone(),
            weight: f.weight.unwrap_or(1),
            steps: indices,
        });
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
    let pool = match pool {
        None => None,
        Some(spanned) => {
            let p = spanned.get_ref();
            if p.count == 0 {
                let at = faults::value_span(cx.text, &spanned.span(), "count")
                    .unwrap_or_else(|| spanned.span());
                cx.err(at, "the pool's `count` must be at least 1");
            }
            match (cx.template(&p.username), cx.template(&p.password)) {
                (Some(username), Some(password)) => Some(Pool {
                    count: p.count.max(1),
                    username,
                    password,
                }),
                _ => None,
            }
        }
    };
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
    let duration = duration?;
    let model = match l.model {
        raw::ModelKind::Open => {
            let schedule = match (l.rate, l.stages.is_empty()) {
                (Some(_), false) => {
                    cx.err(
                        at.clone(),
                        "[load] has both `rate` and `stages`: choose one",
                    );
                    return None;
                }
                (None, true) => {
                    cx.err(
                        at.clone(),
                        "the open model needs `rate` (iterations a second) or `stages` under [load]",
                    );
                    return None;
                }
                (Some(r), true) => {
                    if !(r > 0.0 && r.is_finite()) {
                        let v = faults::value_span(cx.text, &at, "rate").unwrap_or(at.clone());
                        cx.err(v, format!("[load] `rate` must be above zero, not {r}"));
                        return None;
                    }
                    Schedule::constant(r, duration)
                }
                (None, false) => {
                    let mut stages = Vec::new();
                    for s in &l.stages {
                        let d = cx.duration(&s.duration, "a stage's `duration`")?;
                        if !(s.target >= 0.0 && s.target.is_finite()) {
                            cx.err(
                                s.duration.span(),
                                "a stage's `target` must be zero or above",
                            );
                            return None;
                        }
                        stages.push(Stage {
                            duration: d,
                            target: s.target,
                        });
                    }
                    let total: Duration = stages.iter().map(|s| s.duration).sum();
                    if total != duration {
                        cx.err(
                            key(cx, "stages"),
                            format!(
                                "the stages add up to {}, but the experiment lasts {}",
                                humantime::format_duration(total),
                                humantime::format_duration(duration)
                            ),
                        );
                        return None;
                    }
                    Schedule::ramping(l.start_rate, stages)
                }
            };
            LoadModel::Open {
                schedule,
                max_in_flight: l.max_in_flight.unwrap_or(10_000).max(1),
            }
        }
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
    let users = l.users.unwrap_or(match model {
        LoadModel::Open { .. } => 50,
        LoadModel::Closed { .. } => 10,
    });
    if users == 0 {
        cx.err(at.clone(), "[load] `users` must be at least 1");
        return None;
    }
    Some(LoadPlan {
        model,
        users,
        timeout,
        flows: Arc::new(flows),
    })
}
