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
    use std::io::BufRead;
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
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no metrics line");
        if let Some(u) = line.trim().strip_prefix("metrics: ") {
            break u.to_owned();
        }
    };
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
