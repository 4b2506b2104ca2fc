//! Prometheus compatibility: every `/metrics` endpoint passes `promtool check metrics`,
//! and Prometheus itself gets OpenMetrics when it asks for it.

use std::io::Write;
use std::process::{Command, Stdio};

use faultline_tests::Up;

/// Runs `promtool check metrics` on `text`; returns its complaints (empty when clean).
pub fn promtool_check_metrics(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (install it: apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
}

#[test]
fn every_metrics_endpoint_passes_promtool() {
    let up = Up::start(&[], &[]);
    let http = reqwest::blocking::Client::new();
    // Some traffic first, so that labelled series exist.
    for path in ["/api/v1/products/1", "/api/v1/products?page=1", "/nope"] {
        let _ = http.get(format!("{}{path}", up.gateway)).send().unwrap();
    }
    let mut endpoints: Vec<(String, String)> = up
        .rows
        .iter()
        .map(|r| (r.replica.clone(), format!("http://{}/metrics", r.addr)))
        .collect();
    endpoints.push(("agent".into(), format!("{}/metrics", up.agent)));
    let mut failures = Vec::new();
    for (name, url) in &endpoints {
        let text = http.get(url).send().unwrap().text().unwrap();
        assert!(!text.contains("# EOF"), "{name}: classic text unless asked");
        let complaints = promtool_check_metrics(&text);
        if !complaints.is_empty() {
            failures.push(format!("{name}: {complaints}"));
        }
    }
    assert!(
        failures.is_empty(),
        "promtool complains:\n{}",
        failures.join("\n")
    );
    // Prometheus asks for OpenMetrics, and gets it.
    let om = http
        .get(format!("{}/metrics", up.gateway))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .unwrap();
    assert!(
        om.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(om.text().unwrap().ends_with("# EOF\n"));
}

#[test]
fn the_load_engine_serves_its_own_metrics_to_prometheus() {
    let up = Up::start(&[], &[]);
    let mut child = Command::new(faultline_tests::bin("faultline"))
        .args([
            "load",
            &format!("{}/api/v1/products/1", up.gateway),
            "-r",
            "200",
            "-d",
            "20s",
            "--slo",
            "availability>=99",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let url = faultline_tests::find_line(&mut stderr, "metrics", |line| {
        line.trim().strip_prefix("metrics: ").map(str::to_owned)
    });
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let http = reqwest::blocking::Client::new();
    let mut text = String::new();
    let counted = faultline_tests::wait_until(std::time::Duration::from_secs(10), || {
        text = http.get(&url).send().unwrap().text().unwrap();
        text.contains("faultline_slo_sli{slo=\"availability>=99\"}")
            && text.contains("faultline_request_duration_seconds_bucket")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(counted, "{text}");
    assert!(
        text.contains("faultline_requests_total{step=\"load\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("faultline_slo_burn_rate{slo=\"availability>=99\",window=\"short\"}"));
    assert_eq!(promtool_check_metrics(&text), "");
}

/// A free loopback port, found by binding port 0 (Prometheus cannot report the port it
/// picked itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(http: &reqwest::blocking::Client, prom: &str, q: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = http
        .get(format!("{prom}/api/v1/query?query={}", encode(q)))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Every query of a dashboard (panels and annotations), template variables substituted
/// as Grafana would for "All".
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let subst = |e: &str| {
        e.replace("$service", ".*")
            .replace("$replica", ".*")
            .replace("$__rate_interval", "15s")
            .replace("$__range", "1m")
    };
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                format!("{} / {}", d["title"], p["title"]),
                subst(t["expr"].as_str().unwrap()),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(e) = a["expr"].as_str() {
            out.push((
                format!("{} / annotation {}", d["title"], a["name"]),
                subst(e),
            ));
        }
    }
    out
}

#[test]
fn every_dashboard_query_and_slo_rule_returns_data_from_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // A gameday that exercises what the dashboards show: errors (the cdn aborted for
    // product reads), rate limiting (a low limit), a fault healed and one in effect.
    let experiment = dir.path().join("exp.toml");
    std::fs::write(
        &experiment,
        r#"
name = "prometheus"
duration = "60s"
[load]
rate = 40
users = 16
workload = "shop"
[[slo]]
name = "availability"
objective = "availability>=99"
[[slo]]
name = "latency"
objective = "latency<500ms>=95"
[[faults]]
at = "1s"
duration = "2s"
kind = "pause"
target = "content-2"
[[faults]]
at = "2s"
duration = "50s"
kind = "http-abort"
target = "gateway->cdn"
status = 503
path = "/api/v1/products/"
[checks]
invariants = false
"#,
    )
    .unwrap();
    let rules_dir = dir.path().join("slo-rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    let rules = Command::new(faultline_tests::bin("faultline"))
        .args(["slo", "rules", experiment.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        rules.status.success(),
        "{}",
        String::from_utf8_lossy(&rules.stderr)
    );
    std::fs::write(rules_dir.join("experiment.yml"), &rules.stdout).unwrap();

    let mut run = Command::new(faultline_tests::bin("faultline"))
        .env("FAULTLINE_HOME", dir.path().join("home"))
        .env("SHOP_RATE_LIMIT_RPS", "10")
        .env("SHOP_RATE_LIMIT_BURST", "10")
        .args(["run", experiment.to_str().unwrap(), "--no-tui"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(run.stderr.take().unwrap());
    let targets = faultline_tests::find_line(&mut stderr, "metrics", |line| {
        let rest = line.trim().strip_suffix(')')?;
        let (_, path) = rest.split_once("(prometheus targets: ")?;
        Some(std::path::PathBuf::from(path))
    });
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

    // The shipped configuration, with a fast scrape, reading the run's targets file.
    let config = std::fs::read_to_string(repo.join("dashboards/prometheus/prometheus.yml"))
        .unwrap()
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("scrape_timeout: 4s", "scrape_timeout: 900ms")
        .replace("evaluation_interval: 5s", "evaluation_interval: 1s")
        .replace("refresh_interval: 10s", "refresh_interval: 1s");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        repo.join("dashboards/prometheus/shop-slo-rules.yml"),
        dir.path().join("shop-slo-rules.yml"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("targets")).unwrap();
    std::fs::copy(&targets, dir.path().join("targets/faultline.json")).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.path().join("prometheus.yml"))
        .output()
        .expect("promtool runs (apt-get install prometheus)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let port = free_port();
    let prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus runs (apt-get install prometheus)");
    struct Kill(std::process::Child, std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = self.1.kill();
            let _ = self.1.wait();
        }
    }
    let _guard = Kill(prometheus, run);
    let prom = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    // Every target up (23 replicas, the agent, the run), then a few scrapes more so
    // that rates have two samples in their window.
    let all_up = faultline_tests::wait_until(std::time::Duration::from_secs(30), || {
        http.get(format!(
            "{prom}/api/v1/query?query={}",
            encode("count(up == 1)")
        ))
        .send()
        .ok()
        .and_then(|r| r.json::<serde_json::Value>().ok())
        .and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        })
        .is_some_and(|n| n == "25")
    });
    assert!(all_up, "not every target is up; prometheus log:\n{}", log());

    let mut queries = Vec::new();
    for name in [
        "faultline-overview.json",
        "shop-services.json",
        "shop-data.json",
    ] {
        let d: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo.join("dashboards").join(name)).unwrap(),
        )
        .unwrap();
        queries.extend(dashboard_queries(&d));
    }
    // The recording rules of both files, per window.
    for slo in [
        "shop-availability",
        "shop-latency",
        "availability",
        "latency",
    ] {
        for w in ["5m", "1h", "3d"] {
            queries.push((
                format!("rule {slo} {w}"),
                format!(r#"slo:error_ratio:rate{{slo="{slo}",window="{w}"}}"#),
            ));
        }
    }
    let mut empty: Vec<String> = Vec::new();
    let answered = faultline_tests::wait_until(std::time::Duration::from_secs(40), || {
        empty = queries
            .iter()
            .filter(|(_, q)| query(&http, &prom, q).is_empty())
            .map(|(name, q)| format!("{name}: {q}"))
            .collect();
        empty.is_empty()
    });
    assert!(
        answered,
        "queries without data:\n{}\nprometheus log:\n{}",
        empty.join("\n"),
        log()
    );
}

#[test]
fn promtool_accepts_the_shipped_rules_and_the_rules_of_every_bundled_experiment() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![repo.join("dashboards/prometheus/shop-slo-rules.yml")];
    for e in std::fs::read_dir(repo.join("target-system/experiments")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let out = Command::new(faultline_tests::bin("faultline"))
                .args(["slo", "rules"])
                .arg(&p)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("must be a bucket") {
                // A latency threshold Prometheus cannot judge is refused, with the buckets.
                assert_eq!(out.status.code(), Some(2));
                continue;
            }
            assert!(out.status.success(), "{}: {stderr}", p.display());
            let f = dir
                .path()
                .join(p.file_name().unwrap())
                .with_extension("yml");
            std::fs::write(&f, &out.stdout).unwrap();
            files.push(f);
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .args(&files)
        .output()
        .expect("promtool runs (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
