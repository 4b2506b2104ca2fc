//! The Grafana dashboards and provisioning files faultline ships (`dashboards/`), made
//! here so that every panel follows the same rules: the datasource comes from the
//! `datasource` template variable (of type datasource, so that an import and file
//! provisioning both resolve it), every panel has a unit and a query, template variables
//! `service` and `replica` filter, and fault windows show as annotations.
//! `faultline dashboards export DIR` writes them; a test keeps `dashboards/` equal to this.

use serde_json::{Value, json};

/// The current dashboard schema version (Grafana 11).
pub const SCHEMA_VERSION: u64 = 39;

/// The name of the datasource template variable, and how panels refer to it.
pub const DATASOURCE_VARIABLE: &str = "datasource";
const DATASOURCE_REF: &str = "${datasource}";

fn ds() -> Value {
    json!({ "type": "prometheus", "uid": DATASOURCE_REF })
}

/// The datasource variable: Grafana lists its Prometheus datasources in it and starts
/// with the default one, whether the dashboard was imported or provisioned from a file
/// (an `__inputs` entry, `${DS_PROMETHEUS}`, is resolved by the import alone: a
/// provisioned dashboard looks for a datasource literally named so, grafana/grafana#10786).
fn datasource_variable() -> Value {
    json!({
        "name": DATASOURCE_VARIABLE,
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "current": {},
        "hide": 0,
        "includeAll": false,
        "multi": false,
        "refresh": 1,
        "options": [],
    })
}

/// A query and its legend.
pub(crate) struct Q(pub String, pub &'static str);

/// A query and its legend.
pub(crate) fn q(expr: impl Into<String>, legend: &'static str) -> Q {
    Q(expr.into(), legend)
}

pub(crate) struct Panel {
    title: &'static str,
    description: &'static str,
    kind: &'static str,
    unit: &'static str,
    queries: Vec<Q>,
    w: u64,
    h: u64,
}

pub(crate) fn p(
    title: &'static str,
    description: &'static str,
    kind: &'static str,
    unit: &'static str,
    queries: Vec<Q>,
) -> Panel {
    Panel {
        title,
        description,
        kind,
        unit,
        queries,
        w: 12,
        h: 8,
    }
}

fn variable(name: &str, query: &str) -> Value {
    json!({
        "name": name,
        "label": name,
        "type": "query",
        "datasource": ds(),
        "definition": query,
        "query": { "query": query, "refId": format!("{name}-var") },
        "includeAll": true,
        "multi": true,
        "allValue": ".*",
        "current": { "selected": true, "text": ["All"], "value": ["$__all"] },
        "refresh": 2,
        "sort": 1,
    })
}

/// The datasource variable, then the filters the panels' queries use, and only those
/// (`replica` needs `service`).
fn variables(panels: &[Panel]) -> Vec<Value> {
    let uses = |v: &str| {
        let var = format!("${v}");
        panels
            .iter()
            .any(|p| p.queries.iter().any(|q| q.0.contains(&var)))
    };
    let mut variables = vec![datasource_variable()];
    if uses("service") || uses("replica") {
        variables.push(variable("service", "label_values(up, service)"));
    }
    if uses("replica") {
        variables.push(variable(
            "replica",
            "label_values(up{service=~\"$service\"}, replica)",
        ));
    }
    variables
}

pub(crate) fn dashboard(uid: &str, title: &str, description: &str, panels: Vec<Panel>) -> Value {
    let variables = variables(&panels);
    let mut x = 0;
    let mut y = 0;
    let panels: Vec<Value> = panels
        .into_iter()
        .enumerate()
        .map(|(i, pn)| {
            if x + pn.w > 24 {
                x = 0;
                y += pn.h;
            }
            let pos = json!({ "x": x, "y": y, "w": pn.w, "h": pn.h });
            x += pn.w;
            let targets: Vec<Value> = pn
                .queries
                .iter()
                .enumerate()
                .map(|(j, q)| {
                    json!({
                        "refId": ((b'A' + j as u8) as char).to_string(),
                        "datasource": ds(),
                        "expr": q.0.as_str(),
                        "legendFormat": q.1,
                    })
                })
                .collect();
            let mut panel = json!({
                "id": i + 1,
                "type": pn.kind,
                "title": pn.title,
                "description": pn.description,
                "datasource": ds(),
                "gridPos": pos,
                "fieldConfig": { "defaults": { "unit": pn.unit }, "overrides": [] },
                "targets": targets,
            });
            if pn.kind == "timeseries" {
                panel["options"] = json!({
                    "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
                    "tooltip": { "mode": "multi", "sort": "desc" }
                });
            }
            panel
        })
        .collect();
    json!({
        "__requires": [
            { "type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0" },
            { "type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0" },
            { "type": "panel", "id": "timeseries", "name": "Time series", "version": "" },
            { "type": "panel", "id": "state-timeline", "name": "State timeline", "version": "" },
            { "type": "panel", "id": "stat", "name": "Stat", "version": "" }
        ],
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["faultline"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": true,
        "graphTooltip": 1,
        "time": { "from": "now-30m", "to": "now" },
        "refresh": "10s",
        "timezone": "browser",
        "templating": { "list": variables },
        "annotations": { "list": [
            {
                "builtIn": 1,
                "datasource": { "type": "grafana", "uid": "-- Grafana --" },
                "enable": true,
                "hide": true,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard"
            },
            {
                "name": "faults",
                "datasource": ds(),
                "enable": true,
                "iconColor": "orange",
                "expr": "sum by (kind, target) (faultline_agent_faults_active) > 0",
                "titleFormat": "fault: {{kind}} {{target}}",
                "step": "5s"
            }
        ] },
        "panels": panels,
    })
}

fn overview() -> Value {
    dashboard(
        "faultline-overview",
        "faultline: overview",
        "A gameday as faultline runs it: load by status, latency from the intended send, SLIs, error budgets, burn rates and the faults in effect.",
        vec![
            p(
                "Load by status",
                "Requests a second the load engine sent, by HTTP status or error kind (timeout, connect, reset).",
                "timeseries",
                "reqps",
                vec![q(
                    "sum by (status) (rate(faultline_requests_total[$__rate_interval]))",
                    "{{status}}",
                )],
            ),
            p(
                "Latency percentiles",
                "p50, p90 and p99 from each request's intended send time (no coordinated omission), from the histogram.",
                "timeseries",
                "s",
                vec![
                    q(
                        "histogram_quantile(0.5, sum by (le) (rate(faultline_request_duration_seconds_bucket[$__rate_interval])))",
                        "p50",
                    ),
                    q(
                        "histogram_quantile(0.9, sum by (le) (rate(faultline_request_duration_seconds_bucket[$__rate_interval])))",
                        "p90",
                    ),
                    q(
                        "histogram_quantile(0.99, sum by (le) (rate(faultline_request_duration_seconds_bucket[$__rate_interval])))",
                        "p99",
                    ),
                ],
            ),
            p(
                "SLIs",
                "The good share of events so far, per SLO, against its objective (dashed).",
                "timeseries",
                "percentunit",
                vec![
                    q("faultline_slo_sli", "{{slo}}"),
                    q("faultline_slo_objective", "{{slo}} objective"),
                ],
            ),
            p(
                "Error budget left",
                "Share of each SLO's error budget left over the run (below zero: overspent).",
                "timeseries",
                "percentunit",
                vec![q("faultline_slo_error_budget_remaining", "{{slo}}")],
            ),
            p(
                "Burn rates",
                "How many times faster than allowed each SLO burns its budget, over the run's short and long windows; the fast page fires when both exceed 14.4.",
                "timeseries",
                "suffix:x",
                vec![q("faultline_slo_burn_rate", "{{slo}} {{window}}")],
            ),
            p(
                "Dropped iterations",
                "Iterations the load engine could not start (its in-flight bound): when this grows, the generator, not the system, is the limit.",
                "timeseries",
                "ops",
                vec![q(
                    "rate(faultline_dropped_iterations_total[$__rate_interval])",
                    "dropped",
                )],
            ),
            p(
                "Active faults",
                "Faults in effect, by kind and target, as the agent reports them.",
                "state-timeline",
                "short",
                vec![q(
                    "sum by (kind, target) (faultline_agent_faults_active)",
                    "{{kind}} {{target}}",
                )],
            ),
            p(
                "Faults injected and healed",
                "Faults the agent injected and healed a second, by kind (and why they healed).",
                "timeseries",
                "ops",
                vec![
                    q(
                        "sum by (kind) (rate(faultline_agent_faults_injected_total[$__rate_interval]))",
                        "injected {{kind}}",
                    ),
                    q(
                        "sum by (kind, reason) (rate(faultline_agent_faults_healed_total[$__rate_interval]))",
                        "healed {{kind}} ({{reason}})",
                    ),
                ],
            ),
        ]
        .into_iter()
        .chain(scaling_panels())
        .collect(),
    )
}

/// `expr` with the agent's own `service` label back where its series are queried: the
/// agent's scrape target carries `service="faultline-agent"`, so Prometheus keeps the
/// series' own `service` as `exported_service` (with `honor_labels` there is none, and
/// `expr` stays as it is).
fn agent_service(expr: &str) -> String {
    format!(r#"label_replace({expr}, "service", "$1", "exported_service", "(.+)")"#)
}

/// The overview's panels of scaling: replicas, scalings, the load the autoscaler sees.
fn scaling_panels() -> Vec<Panel> {
    let replicas = agent_service("faultline_agent_service_replicas");
    vec![
        p(
            "Replicas per service",
            "Replicas each service has, as `faultline scale` and the autoscaler set them.",
            "timeseries",
            "short",
            vec![q(format!("sum by (service) ({replicas})"), "{{service}}")],
        ),
        p(
            "Scalings",
            "Scalings of each service in the interval, out and in, by `faultline scale`, the dashboard or the autoscaler.",
            "timeseries",
            "short",
            vec![q(
                format!(
                    "sum by (service, direction) ({})",
                    agent_service("increase(faultline_agent_scalings_total[$__rate_interval])")
                ),
                "{{service}} {{direction}}",
            )],
        ),
        p(
            "Requests per replica through the edges",
            "HTTP requests a second into each service through its callers' edge proxies, per replica: the load the autoscaler measures.",
            "timeseries",
            "reqps",
            vec![q(
                format!(
                    "sum by (service) (label_replace(rate(faultline_agent_proxy_requests_total[$__rate_interval]), \"service\", \"$1\", \"edge\", \".*->(.*)-[0-9]+\")) / on (service) sum by (service) ({replicas})"
                ),
                "{{service}}",
            )],
        ),
    ]
}

/// Every dashboard, by file name.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        ("faultline-overview.json", overview()),
        ("shop-services.json", crate::shop::dashboards::services()),
        ("shop-data.json", crate::shop::dashboards::data()),
    ]
}

/// Grafana file provisioning: the dashboards from a directory.
pub const PROVISIONING_DASHBOARDS: &str = r#"# Grafana file provisioning: copy to /etc/grafana/provisioning/dashboards/faultline.yml
# and the dashboards' JSON files to /var/lib/grafana/dashboards/faultline/.
apiVersion: 1
providers:
  - name: faultline
    folder: faultline
    type: file
    disableDeletion: false
    updateIntervalSeconds: 30
    allowUiUpdates: true
    options:
      path: /var/lib/grafana/dashboards/faultline
      foldersFromFilesStructure: false
"#;

/// Grafana file provisioning: a Prometheus datasource, the default one, which the
/// dashboards' `datasource` variable starts with.
pub const PROVISIONING_DATASOURCE: &str = r#"# Grafana file provisioning: copy to /etc/grafana/provisioning/datasources/faultline.yml.
# The dashboards' `datasource` variable starts with the default Prometheus datasource
# (this one, or any other you mark default) and lists every Prometheus to switch to.
apiVersion: 1
datasources:
  - name: Prometheus
    uid: faultline-prometheus
    type: prometheus
    access: proxy
    url: http://127.0.0.1:9090
    isDefault: true
    jsonData:
      timeInterval: 5s
"#;

/// Binds `dashboard` to the datasource of uid `uid`: the variable starts with it (it
/// still lists every Prometheus datasource to switch to).
pub fn bind_datasource(dashboard: &mut Value, uid: &str) {
    if let Some(list) = dashboard["templating"]["list"].as_array_mut() {
        for v in list.iter_mut().filter(|v| v["name"] == DATASOURCE_VARIABLE) {
            v["current"] = json!({ "selected": true, "text": uid, "value": uid });
        }
    }
}

/// The dashboard lint (tests only): the rules of grafana/dashboard-linter that apply
/// to these dashboards, and ours.
#[cfg(test)]
mod lint {
    use super::{DATASOURCE_REF, DATASOURCE_VARIABLE, Value};

    /// The dashboard lint: the rules of grafana/dashboard-linter that apply to these
    /// dashboards, and ours. Each problem starts with its rule's name.
    pub(super) fn lint(name: &str, d: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let mut bad = |rule: &str, what: String| problems.push(format!("{rule}: {name}: {what}"));
        if d["schemaVersion"].as_u64().unwrap_or(0) < 36 {
            bad("schema-version", "an old schemaVersion".into());
        }
        let vars: Vec<&Value> = d["templating"]["list"]
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        // template-datasource-rule: one variable of type datasource, `datasource`
        // ("Data source"), listing Prometheus datasources.
        let sources: Vec<&&Value> = vars.iter().filter(|v| v["type"] == "datasource").collect();
        match sources.as_slice() {
            [v] if v["name"] == DATASOURCE_VARIABLE
                && v["label"] == "Data source"
                && v["query"] == "prometheus" => {}
            [v] => bad(
                "template-datasource-rule",
                format!(
                    "the datasource variable is {} ({}, of {})",
                    v["name"], v["label"], v["query"]
                ),
            ),
            _ => bad(
                "template-datasource-rule",
                format!("{} datasource variables, not one", sources.len()),
            ),
        }
        if !d["__inputs"].is_null() {
            bad(
                "template-datasource-rule",
                "an __inputs entry: file provisioning cannot resolve it".into(),
            );
        }
        // Ours: the datasource first, then the filters in their order.
        let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        let known = [DATASOURCE_VARIABLE, "service", "replica"];
        if names.first() != Some(&DATASOURCE_VARIABLE) || !known.starts_with(&names) {
            bad("template-variables", format!("the variables are {names:?}"));
        }
        // template-unused-rule: a filter is used by a query or by another filter.
        let mut used = String::new();
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                used += t["expr"].as_str().unwrap_or_default();
            }
        }
        for v in &vars {
            used += v["query"]["query"].as_str().unwrap_or_default();
        }
        for v in names.iter().filter(|n| **n != DATASOURCE_VARIABLE) {
            if !used.contains(&format!("${v}")) {
                bad("template-unused-rule", format!("${v} is never used"));
            }
        }
        // template-label-promql-rule: a query variable is label_values(...) of a label.
        for v in vars.iter().filter(|v| v["type"] == "query") {
            let q = v["query"]["query"].as_str().unwrap_or_default();
            if !(q.starts_with("label_values(") && q.ends_with(')')) {
                bad("template-label-promql-rule", format!("${}: {q}", v["name"]));
            }
            if v["datasource"]["uid"] != DATASOURCE_REF {
                bad(
                    "panel-datasource-rule",
                    format!("${} has its own datasource", v["name"]),
                );
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in d["panels"].as_array().into_iter().flatten() {
            lint_panel(p, &mut ids, &mut bad);
            // target-required-matchers-rule (dashboard-linter's target-job and
            // target-instance, with our filters): where the dashboard filters by replica,
            // every selector does.
            if names.contains(&"replica") {
                for t in p["targets"].as_array().into_iter().flatten() {
                    let expr = t["expr"].as_str().unwrap_or_default();
                    if let Some(s) = unfiltered_selector(expr) {
                        bad(
                            "target-required-matchers-rule",
                            format!(
                                "{}: {s} lacks the $service and $replica matchers",
                                p["title"]
                            ),
                        );
                    }
                }
            }
        }
        // No datasource but the variable anywhere (annotations included), except Grafana's
        // own built-in annotations.
        let mut all = Vec::new();
        datasources(d, &mut all);
        for ds in all {
            let uid = ds["uid"].as_str().unwrap_or_default();
            if uid != DATASOURCE_REF && uid != "-- Grafana --" {
                bad(
                    "panel-datasource-rule",
                    format!("a hard-coded datasource {uid}"),
                );
            }
        }
        problems
    }

    /// Units Grafana knows that these dashboards may use.
    const UNITS: &[&str] = &[
        "reqps",
        "ops",
        "s",
        "ms",
        "percentunit",
        "percent",
        "short",
        "none",
        "bytes",
        "decbytes",
        "bool",
        "dtdurations",
    ];

    fn lint_panel(
        p: &Value,
        ids: &mut std::collections::BTreeSet<u64>,
        bad: &mut impl FnMut(&str, String),
    ) {
        let title = p["title"].as_str().unwrap_or_default();
        if !ids.insert(p["id"].as_u64().unwrap_or(0)) {
            bad("panel-id", format!("panel id {} twice", p["id"]));
        }
        // panel-title-description-rule
        if title.is_empty() || p["description"].as_str().is_none_or(str::is_empty) {
            bad(
                "panel-title-description-rule",
                format!("{title:?} lacks a title or description"),
            );
        }
        // panel-units-rule: a unit Grafana knows (or a custom suffix).
        let unit = p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        if !(UNITS.contains(&unit) || unit.strip_prefix("suffix:").is_some_and(|s| !s.is_empty())) {
            bad("panel-units-rule", format!("{title}: unit {unit:?}"));
        }
        // panel-datasource-rule
        if p["datasource"]["uid"] != DATASOURCE_REF {
            bad(
                "panel-datasource-rule",
                format!("{title}: not the datasource variable"),
            );
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        // panel-no-targets-rule
        if targets.is_empty() {
            bad("panel-no-targets-rule", format!("{title}: no query"));
        }
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            if expr.is_empty() {
                bad("target-promql-rule", format!("{title}: an empty query"));
            }
            if t["datasource"]["uid"] != DATASOURCE_REF {
                bad(
                    "panel-datasource-rule",
                    format!("{title}: a query's datasource"),
                );
            }
            for problem in lint_expr(expr) {
                bad(problem.0, format!("{title}: {}", problem.1));
            }
        }
    }

    /// The first selector of `expr` without `service=~"$service"` and
    /// `replica=~"$replica"`: a metric name (outside quotes) not followed by matchers, or
    /// matchers without both.
    fn unfiltered_selector(expr: &str) -> Option<String> {
        let bytes = expr.as_bytes();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        let (mut i, mut quoted) = (0, false);
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'"' {
                quoted = !quoted;
            } else if !quoted && b == b'{' {
                let end = expr[i..].find('}').map_or(expr.len(), |k| i + k + 1);
                let m = &expr[i..end];
                if !(m.contains(r#"service=~"$service""#) && m.contains(r#"replica=~"$replica""#)) {
                    return Some(m.to_owned());
                }
                i = end;
                continue;
            } else if !quoted
                && (expr[i..].starts_with("shop_") || expr[i..].starts_with("faultline_"))
                && (i == 0 || !word(bytes[i - 1]))
            {
                let end = (i..bytes.len())
                    .find(|&k| !word(bytes[k]))
                    .unwrap_or(bytes.len());
                if bytes.get(end) != Some(&b'{') {
                    return Some(expr[i..end].to_owned());
                }
                i = end;
                continue;
            }
            i += 1;
        }
        None
    }

    /// The PromQL rules, read from the text: target-rate-interval-rule (a range under
    /// `rate` or `irate` is `$__rate_interval`) and target-counter-agg-rule (a counter,
    /// `_total`, is read through a range, as `rate`, `irate` or `increase` need).
    fn lint_expr(expr: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for f in ["rate(", "irate("] {
            let mut rest = expr;
            while let Some(i) = rest.find(f) {
                // `irate(` also contains `rate(`: only a name that starts here counts.
                let starts = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
                let after = &rest[i + f.len()..];
                if starts
                    && let Some(open) = after.find('[')
                    && !after[open..].starts_with("[$__rate_interval]")
                {
                    out.push((
                        "target-rate-interval-rule",
                        format!("{expr}: use $__rate_interval"),
                    ));
                }
                rest = after;
            }
        }
        let bytes = expr.as_bytes();
        let mut rest = 0;
        while let Some(i) = expr[rest..].find("_total") {
            let end = rest + i + "_total".len();
            rest = end;
            if bytes
                .get(end)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                continue;
            }
            // Past the selector's matchers, a range must follow.
            let mut j = end;
            if bytes.get(j) == Some(&b'{') {
                j += expr[j..].find('}').map_or(0, |k| k + 1);
            }
            if bytes.get(j) != Some(&b'[') {
                out.push((
                    "target-counter-agg-rule",
                    format!("{expr}: a counter without rate"),
                ));
            }
        }
        out
    }

    fn datasources<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "datasource" {
                        out.push(v);
                    }
                    datasources(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| datasources(v, out)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lint::lint;
    use serde_json::json;

    #[test]
    fn the_dashboards_pass_the_lint() {
        for (name, d) in super::all() {
            assert_eq!(lint(name, &d), Vec::<String>::new());
        }
    }

    /// Each planted mistake is caught by its rule, and by it alone.
    #[test]
    fn the_lint_catches_each_planted_mistake() {
        type Plant = fn(&mut serde_json::Value);
        let plants: [(&str, Plant); 17] = [
            ("template-datasource-rule", |d| {
                d["templating"]["list"][0]["type"] = "constant".into();
            }),
            ("template-datasource-rule", |d| {
                d["templating"]["list"][0]["label"] = "Prometheus".into();
            }),
            ("template-datasource-rule", |d| {
                d["__inputs"] = json!([{ "name": "DS_PROMETHEUS", "type": "datasource" }]);
            }),
            ("panel-datasource-rule", |d| {
                d["panels"][3]["datasource"]["uid"] = "${DS_PROMETHEUS}".into();
            }),
            ("panel-datasource-rule", |d| {
                d["annotations"]["list"][1]["datasource"]["uid"] = "P1809F7CD0C75ACF3".into();
            }),
            ("panel-units-rule", |d| {
                d["panels"][2]["fieldConfig"]["defaults"]["unit"] = "".into();
            }),
            ("panel-units-rule", |d| {
                d["panels"][2]["fieldConfig"]["defaults"]["unit"] = "requests".into();
            }),
            ("target-rate-interval-rule", |d| {
                d["panels"][0]["targets"][0]["expr"] =
                    r#"sum(rate(shop_http_requests_total{service=~"$service",replica=~"$replica"}[5m]))"#.into();
            }),
            ("target-counter-agg-rule", |d| {
                d["panels"][0]["targets"][0]["expr"] =
                    r#"sum(shop_http_requests_total{service=~"$service",replica=~"$replica"})"#
                        .into();
            }),
            ("panel-no-targets-rule", |d| {
                d["panels"][4]["targets"] = json!([]);
            }),
            ("panel-title-description-rule", |d| {
                d["panels"][5]["description"] = "".into();
            }),
            ("panel-id", |d| {
                d["panels"][1]["id"] = d["panels"][0]["id"].clone();
            }),
            ("template-label-promql-rule", |d| {
                d["templating"]["list"][1]["query"]["query"] = "up".into();
            }),
            ("template-unused-rule", |d| {
                // The overview, given the shop's `service` filter that none of its
                // queries uses.
                let service = d["templating"]["list"][1].clone();
                *d = crate::dashboards::all().remove(0).1;
                d["templating"]["list"]
                    .as_array_mut()
                    .unwrap()
                    .push(service);
            }),
            ("target-required-matchers-rule", |d| {
                d["panels"][0]["targets"][0]["expr"] =
                    "sum by (service) (rate(shop_http_requests_total[$__rate_interval]))".into();
            }),
            ("target-required-matchers-rule", |d| {
                d["panels"][0]["targets"][0]["expr"] =
                    r#"sum(rate(shop_http_requests_total{service=~"$service"}[$__rate_interval]))"#
                        .into();
            }),
            ("schema-version", |d| {
                d["schemaVersion"] = 27.into();
            }),
        ];
        for (rule, plant) in plants {
            // The shop's services: it has every variable.
            let (_, mut d) = super::all().remove(1);
            plant(&mut d);
            let problems = lint("x", &d);
            assert!(
                !problems.is_empty() && problems.iter().all(|p| p.starts_with(rule)),
                "{rule}: {problems:?}"
            );
        }
    }

    #[test]
    fn a_bound_dashboard_starts_with_its_datasource_and_still_passes() {
        let (name, mut d) = super::all().remove(0);
        super::bind_datasource(&mut d, "abc123");
        assert_eq!(d["templating"]["list"][0]["current"]["value"], "abc123");
        assert_eq!(lint(name, &d), Vec::<String>::new());
    }

    #[test]
    fn the_committed_dashboards_are_the_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
        for (name, value) in super::all() {
            let committed = std::fs::read_to_string(dir.join(name)).unwrap();
            let committed: serde_json::Value = serde_json::from_str(&committed).unwrap();
            assert_eq!(
                committed, value,
                "dashboards/{name} is stale: run `faultline dashboards export dashboards`"
            );
        }
        for (file, text) in [
            (
                "provisioning/dashboards.yml",
                super::PROVISIONING_DASHBOARDS,
            ),
            (
                "provisioning/datasources.yml",
                super::PROVISIONING_DATASOURCE,
            ),
        ] {
            assert_eq!(
                std::fs::read_to_string(dir.join(file)).unwrap(),
                text,
                "{file}"
            );
        }
    }
}
