//! The Docker runtime (`faultline up --runtime docker`): every replica a container of
//! a locally built image on a network made for the run, supervised by faultline (its
//! restarts, holds and pauses), its edges through fault proxies on the host, and
//! nothing left behind, even after a SIGKILL. A missing Docker daemon fails these tests.

use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::docker::inspect;
use faultline_tests::{Up, bin, cli, ready_field, replica_json, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn images() {
    faultline_tests::docker::images("e2e-docker-runtime");
}

/// The reaper of this test's own image (not whatever `faultline/agent:<version>` is).
const REAPER: &[(&str, &str)] = &[(
    "FAULTLINE_REAPER_IMAGE",
    "faultline/agent:e2e-docker-runtime",
)];

/// A cache and two content replicas that read through it, on docker.
fn small_topology(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("topology.toml");
    std::fs::write(
        &path,
        r#"
name = "small"
entrypoint = "content"
runtime = "docker"
image = "faultline/shop:e2e-docker-runtime"
pass_env = ["FL_E2E_*"]

[services.cache]
metrics = "/metrics"
command = ["shop", "cache", "--listen", "{listen}"]

[services.content]
metrics = "/metrics"
command = ["shop", "content", "--listen", "{listen}", "--cache", "{upstream:cache}"]
replicas = 2
zones = ["a", "b"]
calls = ["cache"]
"#,
    )
    .unwrap();
    path
}

/// `docker ps -a` (or `docker network ls`) names of what carries `label`.
fn labelled(what: &str, label: &str) -> Vec<String> {
    let args: Vec<&str> = match what {
        "container" => vec!["ps", "-a", "--filter", "", "--format", "{{.Names}}"],
        _ => vec!["network", "ls", "--filter", "", "--format", "{{.Name}}"],
    };
    let filter = format!("label={label}");
    let args: Vec<&str> = args
        .into_iter()
        .map(|a| if a.is_empty() { filter.as_str() } else { a })
        .collect();
    let out = Command::new("docker").args(&args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Everything of run `id`: its containers, its reaper and its network.
fn leftovers(id: &str) -> Vec<String> {
    let mut left = labelled("container", &format!("faultline.run={id}"));
    left.extend(labelled("container", &format!("faultline.reaper={id}")));
    left.extend(labelled("network", &format!("faultline.run={id}")));
    left
}

/// Removes run `id`'s containers and network, whatever happened to the test.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in labelled("container", &format!("faultline.run={}", self.0))
            .into_iter()
            .chain(labelled(
                "container",
                &format!("faultline.reaper={}", self.0),
            ))
        {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
        for n in labelled("network", &format!("faultline.run={}", self.0)) {
            let _ = Command::new("docker").args(["network", "rm", &n]).output();
        }
    }
}

/// The container replica `replica` runs in now, from `faultline status --json`.
fn container_of(agent: &str, replica: &str) -> Option<String> {
    replica_json(agent, replica)["container"]
        .as_str()
        .map(str::to_owned)
}

fn replica_field(agent: &str, replica: &str, key: &str) -> serde_json::Value {
    replica_json(agent, replica)[key].clone()
}

fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get(url)
        .send()
        .ok()?;
    Some((r.status().as_u16(), r.text().unwrap_or_default()))
}

fn run_id_of(up: &Up) -> String {
    let ready = up.stdout.iter().find(|l| l.starts_with("ready: ")).unwrap();
    let network = ready_field(ready, "docker");
    network
        .strip_prefix("faultline-")
        .unwrap_or_else(|| panic!("no docker= network in the ready line: {ready}"))
        .to_owned()
}

#[test]
fn a_topology_runs_as_labelled_containers_supervised_by_faultline() {
    images();
    let dir = tempfile::tempdir().unwrap();
    let topo = small_topology(dir.path());
    let mut up = Up::start(
        &["--topology", topo.to_str().unwrap()],
        &[REAPER[0], ("FL_E2E_PASSED", "yes")],
    );
    let id = run_id_of(&up);
    let _cleanup = Cleanup(id.clone());

    // One container per replica, labelled with the run and the replica, on the run's
    // own network, each at the address the table shows.
    let mut containers = labelled("container", &format!("faultline.run={id}"));
    containers.sort();
    assert_eq!(
        containers,
        [
            format!("faultline-{id}-cache-1"),
            format!("faultline-{id}-content-1"),
            format!("faultline-{id}-content-2"),
        ]
    );
    assert_eq!(
        labelled("network", &format!("faultline.run={id}")),
        [format!("faultline-{id}")]
    );
    let (code, status, err) = cli(&up.agent, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        status.contains(&format!(
            "docker: network faultline-{id}, containers labelled faultline.run={id}"
        )),
        "{status}"
    );
    assert!(status.contains("CONTAINER"), "{status}");
    for row in &up.rows {
        let name = format!("faultline-{id}-{}", row.replica);
        assert_eq!(
            inspect(&name, "{{index .Config.Labels \"faultline.replica\"}}"),
            row.replica
        );
        let ip = inspect(
            &name,
            &format!("{{{{(index .NetworkSettings.Networks \"faultline-{id}\").IPAddress}}}}"),
        );
        assert_eq!(row.addr, format!("{ip}:8080"), "{name}");
        // What `pass_env` names of faultline's environment, and nothing else of it.
        let env = inspect(&name, "{{range .Config.Env}}{{println .}}{{end}}");
        assert!(env.lines().any(|l| l == "FL_E2E_PASSED=yes"), "{env}");
        assert!(!env.contains("FAULTLINE_HOME="), "{env}");
        assert!(
            env.lines()
                .any(|l| l == format!("FAULTLINE_REPLICA={}", row.replica)),
            "{env}"
        );
        // Restarts are the supervisor's, never the engine's.
        let policy = inspect(&name, "{{.HostConfig.RestartPolicy.Name}}");
        assert!(matches!(policy.as_str(), "" | "no"), "{name}: {policy}");
    }

    // The entrypoint answers from the host, and content reads through the cache: the
    // container reaches the edge's proxy on the host, which reaches the cache's
    // container.
    let url = format!("{}/api/v1/products", up.gateway);
    for _ in 0..3 {
        let (status, _) = get(&url).expect("content answers");
        assert_eq!(status, 200);
    }
    let (_, metrics) = get(&format!("{}/metrics", up.gateway)).unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("shop_content_cache_lookups_total{result=\"hit\"}")
                && !l.ends_with(" 0")
        ),
        "no cache hit through the proxy:\n{metrics}"
    );
    // A network fault on that edge acts on the container's traffic.
    let (code, _, err) = cli(
        &up.agent,
        &["fault", "partition", "content", "cache", "--ttl", "60s"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, metrics) = get(&format!("{}/metrics", up.gateway)).unwrap();
    let errors_before = count(
        &metrics,
        "shop_content_cache_lookups_total{result=\"error\"}",
    );
    get(&format!("{url}/1")).expect("content answers from its catalog");
    let (_, metrics) = get(&format!("{}/metrics", up.gateway)).unwrap();
    assert!(
        count(
            &metrics,
            "shop_content_cache_lookups_total{result=\"error\"}"
        ) > errors_before,
        "{metrics}"
    );
    let (code, _, err) = cli(&up.agent, &["heal", "--all"]);
    assert_eq!(code, 0, "{err}");

    // A kill: the engine's container dies, the supervisor starts a new one.
    let first = container_of(&up.agent, "content-2").expect("content-2's container");
    let first_id = inspect(&first, "{{.Id}}");
    let (code, _, err) = cli(&up.agent, &["fault", "kill", "content-2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            replica_field(&up.agent, "content-2", "state") == "healthy"
                && replica_field(&up.agent, "content-2", "restarts") == 1
        }),
        "content-2 was not restarted: {}",
        replica_field(&up.agent, "content-2", "state")
    );
    let second = container_of(&up.agent, "content-2").unwrap();
    assert_ne!(inspect(&second, "{{.Id}}"), first_id, "a new container");
    assert_eq!(
        replica_field(&up.agent, "content-2", "last_exit"),
        "killed by SIGKILL"
    );

    // Held down: no container until the heal; then one, at the same address.
    let addr = up
        .rows
        .iter()
        .find(|r| r.replica == "content-2")
        .unwrap()
        .addr
        .clone();
    let (code, _, err) = cli(
        &up.agent,
        &["fault", "kill", "content-2", "--hold", "--ttl", "60s"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(wait_until(Duration::from_secs(10), || {
        replica_field(&up.agent, "content-2", "state") == "held"
            && labelled("container", "faultline.replica=content-2")
                .iter()
                .all(|c| !c.starts_with(&format!("faultline-{id}-")))
    }));
    let (code, _, err) = cli(&up.agent, &["heal", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(wait_until(Duration::from_secs(20), || {
        replica_field(&up.agent, "content-2", "state") == "healthy"
    }));
    assert!(get(&format!("http://{addr}/health")).is_some_and(|(s, _)| s == 200));

    // Paused by the engine's freezer: it stops answering, and answers after the heal.
    let (code, _, err) = cli(&up.agent, &["fault", "pause", "cache-1", "--ttl", "60s"]);
    assert_eq!(code, 0, "{err}");
    let cache = container_of(&up.agent, "cache-1").unwrap();
    let cache_id = inspect(&cache, "{{.Id}}");
    assert_eq!(inspect(&cache, "{{.State.Status}}"), "paused");
    let cache_addr = up
        .rows
        .iter()
        .find(|r| r.replica == "cache-1")
        .unwrap()
        .addr
        .clone();
    assert!(get(&format!("http://{cache_addr}/health")).is_none());
    // Killed while paused: the new container is paused too while the pause lasts.
    let (code, _, err) = cli(&up.agent, &["fault", "kill", "cache-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            inspect(&cache, "{{.Id}}") != cache_id
                && inspect(&cache, "{{.State.Status}}") == "paused"
                && replica_field(&up.agent, "cache-1", "state") == "paused"
        }),
        "cache-1 after a kill while paused: {}",
        replica_field(&up.agent, "cache-1", "state")
    );
    assert_eq!(inspect(&cache, "{{.State.Status}}"), "paused");
    assert_ne!(inspect(&cache, "{{.Id}}"), cache_id, "a new container");
    let (code, _, err) = cli(&up.agent, &["heal", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(inspect(&cache, "{{.State.Status}}"), "running");
    assert!(wait_until(Duration::from_secs(10), || get(&format!(
        "http://{cache_addr}/health"
    ))
    .is_some_and(|(s, _)| s == 200)));

    // Logs go to the replica's log file, as for processes.
    let log = std::fs::read_to_string(up.run_dir.join("logs/cache-1.log")).unwrap();
    assert!(log.contains("faultline: starting cache-1"), "{log}");

    // A clean stop removes every container and the network at once; the reaper goes
    // a moment later, by itself.
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = up.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", up.stderr());
    assert!(labelled("container", &format!("faultline.run={id}")).is_empty());
    assert!(labelled("network", &format!("faultline.run={id}")).is_empty());
    assert!(
        wait_until(Duration::from_secs(10), || leftovers(&id).is_empty()),
        "left after a clean stop: {:?}",
        leftovers(&id)
    );
}

fn count(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// SIGKILL of `faultline up --runtime docker`: within 10 s nothing of the run is left.
/// `reaper` false turns the reaper off, to show that the check catches what it does.
fn after_sigkill(reaper: bool) -> (Vec<String>, Cleanup) {
    images();
    let dir = tempfile::tempdir().unwrap();
    let topo = small_topology(dir.path());
    let env: &[(&str, &str)] = if reaper {
        REAPER
    } else {
        &[("FAULTLINE_UNSAFE_NO_REAPER", "1")]
    };
    let mut up = Up::start(&["--topology", topo.to_str().unwrap()], env);
    let id = run_id_of(&up);
    let cleanup = Cleanup(id.clone());
    assert_eq!(
        labelled("container", &format!("faultline.run={id}")).len(),
        3
    );
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGKILL).unwrap();
    up.child.wait().unwrap();
    let killed = Instant::now();
    wait_until(Duration::from_secs(10), || leftovers(&id).is_empty());
    assert!(killed.elapsed() <= Duration::from_secs(11));
    (leftovers(&id), cleanup)
}

#[test]
fn sigkill_of_up_on_docker_leaves_no_container_and_no_network() {
    let (left, _cleanup) = after_sigkill(true);
    assert!(left.is_empty(), "left 10 s after SIGKILL: {left:?}");
}

#[test]
fn without_the_reaper_a_sigkill_leaves_the_containers_behind() {
    let (left, _cleanup) = after_sigkill(false);
    assert_eq!(left.len(), 4, "three containers and the network: {left:?}");
}

#[test]
fn a_topology_without_an_image_for_docker_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        "[services.cache]\nruntime = \"docker\"\ncommand = [\"shop\", \"cache\", \"--listen\", \"{listen}\"]\n",
    )
    .unwrap();
    let out = Command::new(bin("faultline"))
        .args(["up", "--topology", path.to_str().unwrap()])
        .env("FAULTLINE_HOME", dir.path().join("home"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("t.toml:2:11") && err.contains("names no image"),
        "{err}"
    );
    // --runtime docker on a topology without any image names the service.
    std::fs::write(
        &path,
        "[services.cache]\ncommand = [\"shop\", \"cache\", \"--listen\", \"{listen}\"]\n",
    )
    .unwrap();
    let out = Command::new(bin("faultline"))
        .args([
            "up",
            "--runtime",
            "docker",
            "--topology",
            path.to_str().unwrap(),
        ])
        .env("FAULTLINE_HOME", dir.path().join("home"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("service `cache` has no image"), "{err}");
}

#[test]
fn the_demo_gameday_passes_on_the_shop_as_containers() {
    images();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let out = Command::new(bin("faultline"))
        .args(["demo", "--runtime", "docker", "--no-tui", "--report"])
        .arg(&report)
        .env("FAULTLINE_HOME", dir.path().join("home"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], true, "{json:#}");
    assert_eq!(json["status"], "completed");
    // Its faults acted on the containers (an orders replica killed among them).
    let faults = json["faults"].as_array().unwrap();
    assert!(faults.len() >= 4, "{json:#}");
    assert!(
        faults.iter().any(|f| f.to_string().contains("orders-")),
        "{faults:#?}"
    );
    assert!(
        faults
            .iter()
            .all(|f| f["error"].is_null() && f["applied_at_s"].is_number()),
        "{faults:#?}"
    );
    // The run ran on containers, and they are gone.
    let network = err
        .lines()
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("docker=")))
        .unwrap_or_else(|| panic!("no docker= in the run's output:\n{err}"))
        .to_owned();
    let id = network.trim_start_matches("faultline-").to_owned();
    let _cleanup = Cleanup(id.clone());
    assert!(labelled("container", &format!("faultline.run={id}")).is_empty());
    assert!(labelled("network", &format!("faultline.run={id}")).is_empty());
}
