//! The Grafana dashboards and provisioning files faultline ships (`dashboards/`), made
//! here so that every panel follows the same rules: the datasource comes from the
//! `${DS_PROMETHEUS}` input, every panel has a unit and a query, template variables
//! `service` and `replica` filter, and fault windows show as annotations.
//! `faultline dashboards export DIR` writes them; a test keeps `dashboards/` equal to this.

use serde_json::{Value, json};

/// The current dashboard schema version (Grafana 11).
pub const SCHEMA_VERSION: u64 = 39;

fn ds() -> Value {
    json!({ "type": "prometheus", "uid": "${DS_PROMETHEUS}" })
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

pub(crate) fn dashboard(uid: &str, title: &str, description: &str, panels: Vec<Panel>) -> Value {
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
        "__inputs": [{
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "The Prometheus that scrapes faultline and the shop",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus"
        }],
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
        "templating": { "list": [
            variable("service", "label_values(up, service)"),
            variable("replica", "label_values(up{service=~\"$service\"}, replica)"),
        ] },
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

/// Grafana file provisioning: the Prometheus datasource the dashboards' input names.
pub const PROVISIONING_DATASOURCE: &str = r#"# Grafana file provisioning: copy to /etc/grafana/provisioning/datasources/faultline.yml.
# Provisioned dashboards cannot ask for their ${DS_PROMETHEUS} input, so this datasource
# has the uid DS_PROMETHEUS that the dashboards resolve to.
apiVersion: 1
datasources:
  - name: Prometheus
    uid: DS_PROMETHEUS
    type: prometheus
    access: proxy
    url: http://127.0.0.1:9090
    isDefault: true
    jsonData:
      timeInterval: 5s
"#;

#[cfg(test)]
mod tests {
    /// The dashboard linter: what Grafana's dashboard-linter checks, and ours.
    fn lint(name: &str, d: &serde_json::Value) -> Vec<String> {
        let mut problems = Vec::new();
        let input = d["__inputs"]
            .as_array()
            .and_then(|i| i.first())
            .map(|i| i["name"].as_str().unwrap_or_default().to_owned());
        if input.as_deref() != Some("DS_PROMETHEUS") {
            problems.push(format!("{name}: no DS_PROMETHEUS datasource input"));
        }
        let want = "${DS_PROMETHEUS}";
        if d["schemaVersion"].as_u64().unwrap_or(0) < 36 {
            problems.push(format!("{name}: an old schemaVersion"));
        }
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        if vars != ["service", "replica"] {
            problems.push(format!("{name}: template variables are {vars:?}"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or("?");
            if !ids.insert(p["id"].as_u64().unwrap()) {
                problems.push(format!("{name}: panel id {} twice", p["id"]));
            }
            if p["datasource"]["uid"] != want {
                problems.push(format!("{name} / {title}: datasource is not the input"));
            }
            if p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                problems.push(format!("{name} / {title}: no unit"));
            }
            let targets = p["targets"].as_array().unwrap();
            if targets.is_empty() {
                problems.push(format!("{name} / {title}: no query"));
            }
            for t in targets {
                if t["datasource"]["uid"] != want || t["expr"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!(
                        "{name} / {title}: a query without expr or input datasource"
                    ));
                }
            }
            if p["description"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name} / {title}: no description"));
            }
        }
        // No uid of a real datasource anywhere: only the input.
        fn datasources<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        if k == "datasource" {
                            out.push(v);
                        }
                        datasources(v, out);
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| datasources(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        datasources(d, &mut all);
        for ds in all {
            let uid = ds["uid"].as_str().unwrap_or_default();
            if uid != want && uid != "-- Grafana --" {
                problems.push(format!("{name}: a hard-coded datasource uid {uid}"));
            }
        }
        problems
    }

    #[test]
    fn the_dashboards_pass_the_lint_and_the_lint_catches_mistakes() {
        for (name, d) in super::all() {
            assert_eq!(lint(name, &d), Vec::<String>::new());
        }
        let (_, mut d) = super::all().remove(0);
        d["panels"][1]["id"] = d["panels"][0]["id"].clone();
        d["panels"][2]["fieldConfig"]["defaults"]["unit"] = "".into();
        d["panels"][3]["datasource"]["uid"] = "P1809F7CD0C75ACF3".into();
        let problems = lint("x", &d);
        assert_eq!(problems.len(), 4, "{problems:?}");
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
