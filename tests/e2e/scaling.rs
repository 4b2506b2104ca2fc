//! Horizontal scaling through real processes: `faultline scale` on the shop and on a
//! system of one's own, new replicas reached through the gateway without a restart,
//! scale-in draining without a failed call (and losing calls when the drain is
//! switched off), and bad input.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faultline_tests::metrics::sum;
use faultline_tests::{Up, alive, cli, replica_json, wait_until};

fn status(agent: &str) -> serde_json::Value {
    let (code, out, err) = cli(agent, &["status", "--json"]);
    assert_eq!(code, 0, "faultline status: {err}");
    serde_json::from_str(&out).expect("status --json is JSON")
}

/// The names of the replicas of `service`, as the agent lists them.
fn replicas(agent: &str, service: &str) -> Vec<String> {
    status(agent)["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["service"] == service)
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

fn edges(agent: &str) -> Vec<String> {
    status(agent)["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

fn get(url: &str) -> Option<(u16, String)> {
    get_as(url, None)
}

/// GET `url`, with `token` as the bearer when given.
fn get_as(url: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut req = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().unwrap_or_default()))
}

fn upstream_file(up: &Up, client: &str, server: &str) -> Vec<String> {
    std::fs::read_to_string(up.run_dir.join("upstreams").join(client).join(server))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A system nobody here wrote for faultline: Python's own `http.server` as the
/// backend, two replicas, behind a small Python front (`PY_WEB`) that calls the first;
/// written into `dir`.
fn own_system(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::write(dir.join("web.py"), faultline_tests::PY_WEB).unwrap();
    let file = dir.join("topology.toml");
    std::fs::write(
        &file,
        r#"name = "own"
entrypoint = "lb"
[services.app]
command = ["python3", "-m", "http.server", "{port}", "--bind", "{host}"]
replicas = 2
health = "/"
[services.redis]
command = ["python3", "-m", "http.server", "{port}", "--bind", "{host}"]
health = "tcp"
[services.lb]
command = ["python3", "web.py", "{listen}", "{upstream:app:1}"]
calls = ["app", "redis"]
health = "tcp"
"#,
    )
    .unwrap();
    file
}

#[test]
fn scale_out_and_in_on_a_system_of_ones_own() {
    let dir = tempfile::tempdir().unwrap();
    let topology = own_system(dir.path());
    let up = Up::start(&["--topology", topology.to_str().unwrap()], &[]);
    let agent = up.agent.as_str();
    assert_eq!(replicas(agent, "app"), ["app-1", "app-2"]);

    let (code, out, err) = cli(agent, &["scale", "app", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "scaled app from 2 to 4 replicas (started app-3, app-4)"
    );
    assert_eq!(replicas(agent, "app"), ["app-1", "app-2", "app-3", "app-4"]);
    for name in ["app-3", "app-4"] {
        let r = replica_json(agent, name);
        assert_eq!(r["state"], "healthy", "{r}");
        // Each new replica is a real process answering on its own address, with the
        // edge proxy of its caller in front of it.
        let (code, _) = get(&format!("http://{}/", r["addr"].as_str().unwrap()))
            .expect("the new replica answers");
        assert_eq!(code, 200);
        assert!(edges(agent).contains(&format!("lb->{name}")));
    }
    assert_eq!(upstream_file(&up, "lb", "app").len(), 4);
    // Faults reach new replicas and their edges like any other.
    let (code, out, err) = cli(
        agent,
        &[
            "fault",
            "latency",
            "lb->app-4",
            "--delay",
            "10ms",
            "--ttl",
            "60s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    let (code, _, err) = cli(agent, &["fault", "kill", "app-3", "--ttl", "60s"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(
            Duration::from_secs(20),
            || replica_json(agent, "app-3")["restarts"]
                .as_u64()
                .unwrap_or(0)
                >= 1
                && replica_json(agent, "app-3")["state"] == "healthy"
        ),
        "a killed new replica is restarted like the others"
    );

    let pid4 = replica_json(agent, "app-4")["pid"].as_u64().unwrap() as u32;
    let (code, out, err) = cli(agent, &["scale", "app", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "scaled app from 4 to 1 replica (drained and stopped app-2, app-3, app-4)"
    );
    assert_eq!(replicas(agent, "app"), ["app-1"]);
    assert!(!alive(pid4), "a removed replica's process is gone");
    assert!(
        !edges(agent)
            .iter()
            .any(|e| e.starts_with("lb->app-") && e != "lb->app-1")
    );
    assert_eq!(upstream_file(&up, "lb", "app").len(), 1);
    // The toxics of a removed edge went with it; healing its fault is no error.
    let (code, _, err) = cli(agent, &["heal", &id]);
    assert_eq!(code, 0, "{err}");
    // The system still answers through its entrypoint.
    let (code, body) = get(&format!("{}/", up.gateway)).expect("the front answers");
    assert_eq!(code, 200, "{body}");
    // And it can grow again, under the same names.
    let (code, out, err) = cli(agent, &["scale", "app", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "scaled app from 1 to 2 replicas (started app-2)");
    assert_eq!(replica_json(agent, "app-2")["state"], "healthy");
}

#[test]
fn bad_scale_requests_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let topology = own_system(dir.path());
    let up = Up::start(&["--topology", topology.to_str().unwrap()], &[]);
    let agent = up.agent.as_str();
    for (args, expected) in [
        (
            vec!["scale", "nosuch", "2"],
            "no service named `nosuch`; services: app, redis, lb",
        ),
        (vec!["scale", "app", "0"], "0 is not in 1..=64"),
        (vec!["scale", "app", "65"], "65 is not in 1..=64"),
        (vec!["scale", "app", "two"], "invalid digit"),
        (vec!["scale", "app"], "required"),
    ] {
        let (code, out, err) = cli(agent, &args);
        assert_eq!(code, 2, "{args:?}: {out} {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(
        replicas(agent, "app"),
        ["app-1", "app-2"],
        "nothing changed"
    );
}

/// Requests to `path` through the gateway from `threads` loops until `stop`: every
/// status seen, counted as 200s and others.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    bad: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, threads: usize) -> Load {
        Self::start_as(url, None, threads)
    }

    fn start_as(url: String, token: Option<String>, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, bad, url) = (stop.clone(), ok.clone(), bad.clone(), url.clone());
                let token = token.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get_as(&url, token.as_deref()) {
                            Some((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                            _ => bad.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            bad,
            threads,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.bad.load(Ordering::Relaxed),
        )
    }
}

/// A token for the seeded user1, from a login through the gateway.
fn login(up: &Up) -> String {
    let resp = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/api/v1/auth/login", up.gateway))
        .json(&serde_json::json!({ "username": "user1", "password": "pass1" }))
        .send()
        .expect("the gateway answers");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// The gateway's tries to `upstream` answered by each replica of it, by reading every
/// replica's own request counter of the home route.
fn served(up: &Up, replica: &str) -> f64 {
    let addr = replica_json(&up.agent, replica)["addr"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    get(&format!("http://{addr}/metrics"))
        .map(|(_, text)| {
            sum(
                &text,
                "shop_http_requests_total",
                &[("route", "/api/v1/home")],
            )
        })
        .unwrap_or(0.0)
}

#[test]
fn the_gateway_uses_new_replicas_without_a_restart() {
    let up = Up::start(&[], &[]);
    let agent = up.agent.as_str();
    let gateway_pid = replica_json(agent, "gateway-1")["pid"].clone();
    let (code, out, err) = cli(agent, &["scale", "api", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "scaled api from 2 to 4 replicas (started api-3, api-4)"
    );
    assert_eq!(upstream_file(&up, "gateway", "api").len(), 4);
    let home = format!("{}/api/v1/home", up.gateway);
    let token = login(&up);
    assert!(
        wait_until(Duration::from_secs(30), || {
            for _ in 0..20 {
                assert_eq!(get_as(&home, Some(&token)).map(|(c, _)| c), Some(200));
            }
            served(&up, "api-3") > 0.0 && served(&up, "api-4") > 0.0
        }),
        "the gateway never sent a request to the new replicas"
    );
    let gw = replica_json(agent, "gateway-1");
    assert_eq!(gw["pid"], gateway_pid, "the gateway was not restarted");
    assert_eq!(gw["restarts"], 0);
}

/// Scales api from 3 to 1 under load whose home requests wait 300 ms on the cdn (so
/// requests are in flight on the replicas being removed), and returns the client's
/// answers (200s, others) and the gateway's failed tries to api.
fn scale_in_under_load(env: &[(&str, &str)]) -> (u64, u64, f64) {
    let up = Up::start(&[], env);
    let agent = up.agent.as_str();
    let (code, _, err) = cli(agent, &["scale", "api", "3"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        agent,
        &[
            "fault",
            "latency",
            "api->cdn-1",
            "--delay",
            "300ms",
            "--ttl",
            "120s",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let home = format!("{}/api/v1/home", up.gateway);
    let load = Load::start_as(home, Some(login(&up)), 6);
    assert!(
        wait_until(Duration::from_secs(30), || served(&up, "api-3") > 0.0),
        "api-3 never served"
    );
    let (code, _, err) = cli(agent, &["scale", "api", "1"]);
    assert_eq!(code, 0, "{err}");
    // Some more load on the one that is left.
    let before = load.ok.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(30), || load
        .ok
        .load(Ordering::Relaxed)
        > before + 20));
    let (ok, bad) = load.finish();
    let metrics = get(&format!("{}/metrics", up.gateway)).unwrap().1;
    let failed = sum(
        &metrics,
        "shop_upstream_tries_total",
        &[("upstream", "api"), ("outcome", "failure")],
    );
    (ok, bad, failed)
}

#[test]
fn a_removed_replica_drains_without_a_failed_call() {
    let (ok, bad, failed) = scale_in_under_load(&[]);
    assert!(ok > 0);
    assert_eq!(bad, 0, "every request through the gateway succeeded");
    assert_eq!(failed, 0.0, "no try of the gateway to api failed");
}

#[test]
fn without_the_drain_calls_in_flight_fail() {
    let (_, _, failed) = scale_in_under_load(&[("FAULTLINE_UNSAFE_NO_DRAIN", "1")]);
    assert!(
        failed > 0.0,
        "the drain test would not notice a replica killed with requests in flight"
    );
}

/// `faultline run` of the autoscale gameday from a copy of its files in a directory of
/// its own, `edit` applied to the topology; the exit code, the report and stderr.
fn run_autoscale_gameday(
    edit: impl Fn(&str) -> String,
) -> (i32, faultline::run::report::Report, String) {
    let d = tempfile::tempdir().unwrap();
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target-system/experiments");
    let topology = std::fs::read_to_string(lib.join("topologies/autoscale.toml")).unwrap();
    std::fs::create_dir_all(d.path().join("topologies")).unwrap();
    std::fs::write(d.path().join("topologies/autoscale.toml"), edit(&topology)).unwrap();
    std::fs::copy(lib.join("autoscale.toml"), d.path().join("autoscale.toml")).unwrap();
    let out_dir = d.path().join("out");
    let out = std::process::Command::new(faultline_tests::bin("faultline"))
        .env("FAULTLINE_HOME", d.path().join("home"))
        .args(["run", "--no-tui", "--report"])
        .arg(&out_dir)
        .arg(d.path().join("autoscale.toml"))
        .output()
        .unwrap();
    let text = std::fs::read_to_string(out_dir.join("report.json")).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report.json: {e}\n{text}\nstderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

#[test]
fn the_autoscale_gameday_passes_only_with_the_autoscaler() {
    use faultline::run::events::EventKind;
    let (code, report, stderr) = run_autoscale_gameday(str::to_owned);
    let scale_outs: Vec<(String, u32, u32, String)> = report
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Scaled {
                service,
                from,
                to,
                by,
            } => Some((service.clone(), *from, *to, by.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(code, 0, "the gameday failed with the autoscaler: {stderr}");
    assert!(
        scale_outs
            .iter()
            .any(|(s, from, to, by)| s == "cdn" && to > from && by == "autoscaler"),
        "no scale-out of cdn in the report: {scale_outs:?}"
    );
    assert!(
        report.markdown().contains("### Scalings"),
        "the Markdown report lists the scalings"
    );

    // The same load on the same capacity without the auto-scaling group fails.
    let (code, report, stderr) = run_autoscale_gameday(|t| {
        t.lines()
            .filter(|l| !l.starts_with("autoscale = "))
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert_eq!(
        code, 1,
        "the gameday passed without the autoscaler: {stderr}"
    );
    assert!(!report.passed);
}

#[test]
fn the_autoscaler_scales_out_under_load_and_back_in_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("t.toml");
    // Two caches behind one content service: the cache is autoscaled on the requests
    // content sends it, with a short scale-in window.
    let shop = faultline_tests::bin("shop");
    std::fs::write(
        &topology,
        format!(
            r#"entrypoint = "content"
[services.cache]
command = ["{shop}", "cache", "--listen", "{{listen}}"]
autoscale = {{ min = 1, max = 3, target = 10, scale_in_window = "4s", scale_out_cooldown = "1s" }}
metrics = "/metrics"
[services.content]
command = ["{shop}", "content", "--listen", "{{listen}}", "--cache", "@{{upstream-file:cache}}"]
calls = ["cache"]
"#,
            shop = shop.display()
        ),
    )
    .unwrap();
    let up = Up::start(&["--topology", topology.to_str().unwrap()], &[]);
    let agent = up.agent.as_str();
    assert_eq!(replicas(agent, "cache"), ["cache-1"]);
    // Without load nothing happens: over three ticks the group stays at one (what was
    // counted before the first tick, health checks included, is not a rate).
    let idle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < idle {
        assert_eq!(
            replicas(agent, "cache"),
            ["cache-1"],
            "scaled out without load"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // About 60 requests a second into the cache: more than one replica's target.
    let load = Load::start(format!("{}/api/v1/products/7", up.gateway), 4);
    assert!(
        wait_until(Duration::from_secs(30), || replicas(agent, "cache").len()
            == 3),
        "the autoscaler did not scale out: {:?}",
        replicas(agent, "cache")
    );
    let (ok, _) = load.finish();
    assert!(ok > 0);
    assert!(
        wait_until(Duration::from_secs(30), || replicas(agent, "cache").len()
            == 1),
        "the autoscaler did not scale back in: {:?}",
        replicas(agent, "cache")
    );
    let (code, out, err) = cli(agent, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by: Vec<&str> = s["scalings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["by"].as_str().unwrap())
        .collect();
    assert!(by.iter().all(|b| *b == "autoscaler"), "{by:?}");
    let metrics = get(&format!("{agent}/metrics")).unwrap().1;
    assert!(
        sum(
            &metrics,
            "faultline_agent_scalings_total",
            &[("service", "cache"), ("direction", "out")]
        ) >= 1.0
    );
    assert!(
        sum(
            &metrics,
            "faultline_agent_scalings_total",
            &[("service", "cache"), ("direction", "in")]
        ) >= 1.0
    );
    assert_eq!(
        sum(
            &metrics,
            "faultline_agent_service_replicas",
            &[("service", "cache")]
        ),
        1.0
    );
}
