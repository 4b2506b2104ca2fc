//! A system nobody here wrote, under faultline: Debian's nginx (a master and two
//! workers) in front of two Python backends that keep their state in Debian's
//! redis-server, from `examples/own-system` as a user would write it (no wrappers, no
//! `/health` added to Redis). Every fault kind that applies to it is exercised through
//! it, and its effect is checked from the client side, through nginx.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::{Up, alive, bin, cli, example, process_tree, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One HTTP/1.1 request on a fresh connection: the status (0 when no answer came
/// within `timeout`), the body, and how long it took.
fn request(base: &str, method: &str, path: &str, timeout: Duration) -> (u16, String, Duration) {
    let addr = base.trim_start_matches("http://");
    let started = Instant::now();
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new(), started.elapsed());
    };
    s.set_read_timeout(Some(timeout)).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new(), started.elapsed());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body, started.elapsed())
}

/// Applies a fault through `faultline fault`, returning its id.
fn fault(agent: &str, args: &[&str]) -> String {
    let mut all = vec!["fault"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--ttl", "60s"]);
    let (code, out, err) = cli(agent, &all);
    assert_eq!(code, 0, "faultline {}: {err}", all.join(" "));
    out
}

fn heal(agent: &str, id: &str) {
    let (code, _, err) = cli(agent, &["heal", id]);
    assert_eq!(code, 0, "heal {id}: {err}");
}

fn replica(agent: &str, name: &str) -> serde_json::Value {
    let (code, out, err) = cli(agent, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no replica {name} in {status}"))
}

fn healthy(agent: &str, name: &str) -> bool {
    replica(agent, name)["state"] == "healthy"
}

/// `faultline up` on the example, started from a directory of its own with a relative
/// path to the topology, so nothing depends on the caller's directory.
fn up_elsewhere() -> (Up, tempfile::TempDir) {
    up_elsewhere_with(&[])
}

/// [`up_elsewhere`] with `env` set.
fn up_elsewhere_with(env: &[(&str, &str)]) -> (Up, tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let topology = example("own-system").join("topology.toml");
    let rel = pathdiff(&topology, cwd.path());
    let up = Up::start_in(Some(cwd.path()), &["--topology", &rel], env);
    (up, cwd)
}

/// `to` relative to `from` (both absolute).
fn pathdiff(to: &std::path::Path, from: &std::path::Path) -> String {
    let from = from.canonicalize().unwrap();
    let ups = from.components().count() - 1;
    let mut rel = "../".repeat(ups);
    rel.push_str(to.strip_prefix("/").unwrap().to_str().unwrap());
    rel
}

const T: Duration = Duration::from_secs(5);

fn visits(body: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {body}");
    });
    v["visits"].as_i64().unwrap()
}

#[test]
fn every_fault_that_applies_shows_through_nginx() {
    let (up, _cwd) = up_elsewhere();
    let (agent, lb) = (up.agent.clone(), up.gateway.clone());
    let names: Vec<&str> = up.rows.iter().map(|r| r.replica.as_str()).collect();
    assert_eq!(
        names,
        ["redis-1", "app-1", "app-2", "lb-1"],
        "{:?}",
        up.stdout
    );

    // The system works: visits are counted in Redis, whichever backend answers.
    let mut backends = std::collections::BTreeSet::new();
    for n in 1..=4 {
        let (status, body, _) = request(&lb, "POST", "/visits/home", T);
        assert_eq!(status, 200, "{body}");
        assert_eq!(visits(&body), n);
        let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        backends.insert(v["backend"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        backends.len(),
        2,
        "nginx balances over both backends: {backends:?}"
    );
    let mut count = 4;
    let mut post = |expect: u16| {
        let (status, body, took) = request(&lb, "POST", "/visits/home", T);
        assert_eq!(status, expect, "{body}");
        if status == 200 {
            count += 1;
            assert_eq!(visits(&body), count, "no visit lost");
        }
        took
    };

    // kill --hold of one backend: nginx fails over, every read still succeeds. (A POST
    // that nginx had sent to the dead backend's proxy is not retried elsewhere, as
    // nginx does not retry non-idempotent requests: that is this system's behaviour.)
    let id = fault(&agent, &["kill", "app-2", "--hold"]);
    assert!(wait_until(T, || replica(&agent, "app-2")["state"] == "held"));
    for _ in 0..10 {
        let (status, body, _) = request(&lb, "GET", "/visits/home", T);
        assert_eq!(status, 200, "kill --hold: {body}");
        assert!(body.contains("app-1"), "{body}");
    }
    heal(&agent, &id);
    assert!(wait_until(Duration::from_secs(20), || healthy(
        &agent, "app-2"
    )));

    // latency on the app's calls to Redis: slower answers, then fast again.
    let id = fault(&agent, &["latency", "app->redis", "--delay", "400ms"]);
    let took = post(200);
    assert!(took >= Duration::from_millis(400), "latency {took:?}");
    heal(&agent, &id);
    let took = post(200);
    assert!(took < Duration::from_millis(400), "healed latency {took:?}");

    // partition of the backends from Redis: the app answers 503, nginx passes it on.
    let id = fault(&agent, &["partition", "app", "redis"]);
    post(503);
    heal(&agent, &id);
    assert!(wait_until(T, || request(&lb, "GET", "/visits/home", T).0 == 200));
    post(200);

    // reset of the app's connections to Redis.
    let id = fault(&agent, &["reset", "app->redis"]);
    post(503);
    heal(&agent, &id);
    assert!(wait_until(T, || request(&lb, "GET", "/visits/home", T).0 == 200));
    post(200);

    // L7 faults between nginx and the backends.
    let id = fault(&agent, &["http-abort", "lb->app", "--status", "503"]);
    post(503);
    heal(&agent, &id);
    post(200);
    let id = fault(&agent, &["http-delay", "lb->app", "--delay", "300ms"]);
    let took = post(200);
    assert!(took >= Duration::from_millis(300), "http-delay {took:?}");
    heal(&agent, &id);

    // bandwidth on the backends' answers: about 250 bytes at 200 bytes a second.
    let id = fault(&agent, &["bandwidth", "lb->app", "--rate", "200"]);
    let took = post(200);
    assert!(took >= Duration::from_millis(500), "bandwidth {took:?}");
    heal(&agent, &id);
    let took = post(200);
    assert!(
        took < Duration::from_millis(500),
        "healed bandwidth {took:?}"
    );

    // slicer: the answers come in 8-byte pieces 20 ms apart, and still whole.
    let id = fault(
        &agent,
        &[
            "slicer",
            "lb->app",
            "--average-size",
            "8",
            "--delay",
            "20ms",
        ],
    );
    let took = post(200);
    assert!(took >= Duration::from_millis(300), "slicer {took:?}");
    heal(&agent, &id);

    // (slow-close has nothing to show here: nginx keeps its connections to the
    // backends, and the backends theirs to Redis, so no close is held back.)

    // pause by command line, as of a process faultline did not start. Redis freezes,
    // the backends time out on it (503); healed, they answer again, no visit lost.
    let redis = up.rows.iter().find(|r| r.replica == "redis-1").unwrap();
    let port = redis.addr.rsplit(':').next().unwrap();
    // (redis-server rewrites its title to `/usr/bin/redis-server HOST:PORT`.)
    let target = format!("proc:redis-server.*[: ]{port}( |$)");
    let id = fault(&agent, &["pause", &target]);
    // A read, not a POST: an INCR sent to the frozen Redis runs when it thaws, so a
    // write that timed out (503) would still count, as timeouts leave it open.
    let (status, body, _) = request(&lb, "GET", "/visits/home", Duration::from_secs(15));
    assert_eq!(status, 503, "{body}");
    heal(&agent, &id);
    assert!(wait_until(T, || request(&lb, "GET", "/visits/home", T).0 == 200));
    post(200);

    // limit-data: nginx gets a cut answer from every backend and says 502.
    let id = fault(&agent, &["limit-data", "lb->app", "--bytes", "20"]);
    let (status, body, _) = request(&lb, "GET", "/visits/home", T);
    assert_eq!(status, 502, "{body}");
    heal(&agent, &id);
    assert!(wait_until(T, || request(&lb, "GET", "/visits/home", T).0 == 200));

    // blackhole: nginx's read timeout (3 s) passes, then 504.
    let id = fault(&agent, &["blackhole", "lb->app"]);
    let (status, _, took) = request(&lb, "GET", "/visits/home", Duration::from_secs(10));
    assert_eq!(status, 504, "after {took:?}");
    heal(&agent, &id);
    assert!(wait_until(T, || request(&lb, "GET", "/visits/home", T).0 == 200));

    // zone-outage: zone a's backend is down and held; zone b's answers everything.
    let id = fault(&agent, &["zone-outage", "a"]);
    assert!(wait_until(T, || replica(&agent, "app-1")["state"] == "held"));
    for _ in 0..6 {
        let (status, body, _) = request(&lb, "GET", "/visits/home", T);
        assert_eq!(status, 200, "zone-outage: {body}");
        assert!(body.contains("app-2"), "{body}");
    }
    heal(&agent, &id);
    assert!(wait_until(Duration::from_secs(20), || healthy(
        &agent, "app-1"
    )));

    // restart of Redis, health-checked by redis-cli: it comes back, the backends
    // reconnect (it keeps nothing on disk here, so the count starts again).
    let pid = replica(&agent, "redis-1")["pid"].as_u64().unwrap();
    fault(&agent, &["restart", "redis-1"]);
    assert!(wait_until(Duration::from_secs(20), || {
        let r = replica(&agent, "redis-1");
        r["state"] == "healthy" && r["pid"].as_u64() != Some(pid)
    }));
    assert!(wait_until(T, || request(&lb, "POST", "/visits/home", T).0 == 200));

    // pause of nginx: master and workers stop together, so nobody answers; resumed,
    // they answer again.
    let id = fault(&agent, &["pause", "lb-1"]);
    assert!(wait_until(T, || replica(&agent, "lb-1")["state"] == "paused"));
    let (status, _, took) = request(&lb, "GET", "/visits/home", Duration::from_secs(1));
    assert_eq!(status, 0, "a paused nginx answered after {took:?}");
    heal(&agent, &id);
    assert!(wait_until(T, || request(&lb, "GET", "/visits/home", T).0 == 200));

    // terminate of nginx: its whole tree goes, the supervisor starts a new one.
    let lb_pid = replica(&agent, "lb-1")["pid"].as_u64().unwrap() as u32;
    let old_tree = process_tree(lb_pid);
    assert_eq!(
        old_tree.len(),
        3,
        "nginx: a master and two workers: {old_tree:?}"
    );
    fault(&agent, &["terminate", "lb-1"]);
    assert!(wait_until(Duration::from_secs(20), || {
        let r = replica(&agent, "lb-1");
        r["state"] == "healthy" && r["pid"].as_u64() != Some(u64::from(lb_pid))
    }));
    assert!(
        old_tree.iter().all(|p| !alive(*p)),
        "old nginx processes left"
    );
    assert!(wait_until(T, || request(&lb, "GET", "/visits/home", T).0 == 200));
}

#[test]
fn a_sigkill_of_faultline_up_leaves_none_of_the_systems_processes() {
    let (mut up, _cwd) = up_elsewhere();
    let tree = process_tree(up.child.id());
    // faultline, redis, two pythons, nginx's master and two workers (and nothing of
    // faultline's own beyond its process).
    let programs: Vec<String> = tree
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect();
    for want in ["redis-server", "python3", "nginx"] {
        assert!(programs.iter().any(|c| c == want), "{want} in {programs:?}");
    }
    assert!(tree.len() >= 7, "{programs:?}");
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGKILL).unwrap();
    let _ = up.child.wait();
    let left = || {
        tree.iter()
            .copied()
            .filter(|p| alive(*p))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(10), || left().is_empty()),
        "left running after SIGKILL of faultline up: {:?}",
        left()
            .iter()
            .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_gameday_runs_from_any_directory_and_reads_its_topology_beside_it() {
    // From a directory of its own, naming the experiment by a relative path: the
    // experiment's `topology = "topology.toml"` means the file beside it, and the
    // topology's `app.py` and `nginx.conf.in` the files beside that.
    let cwd = tempfile::tempdir().unwrap();
    let file = example("own-system").join("gameday.toml");
    let rel = pathdiff(&file, cwd.path());
    let home = cwd.path().join("home");
    let out = Command::new(bin("faultline"))
        .current_dir(cwd.path())
        .env("FAULTLINE_HOME", &home)
        .args(["run", &rel, "--no-tui", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: faultline::run::report::Report =
        serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report.target, "topology `visits`", "{:?}", report.target);
    assert!(report.passed, "{:?}", report.failures);
    assert_eq!(report.slos.len(), 2);
    assert_eq!(report.faults.len(), 2);
    assert!(report.load.requests > 0);
    // Its generic checks ran before the load and after the drain, and passed.
    let checks: Vec<(&str, bool)> = report
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.passed))
        .collect();
    for name in ["a visit is counted", "redis answers PING"] {
        let runs: Vec<_> = checks.iter().filter(|(n, _)| n.contains(name)).collect();
        assert_eq!(runs.len(), 2, "{name} before and after: {checks:?}");
        assert!(runs.iter().all(|(_, passed)| *passed), "{checks:?}");
    }
    // No service declares `metrics`: nothing scraped nginx for a /metrics it has not.
    let runs: Vec<_> = std::fs::read_dir(home.join("runs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1, "one run directory");
    let access = std::fs::read_to_string(runs[0].path().join("lb-1-access.log")).unwrap();
    assert!(
        access.contains("POST /visits/"),
        "the load went through nginx"
    );
    assert!(!access.contains("/metrics"), "scraped: {access}");
}

/// `faultline up` on a topology written into `dir`: its exit code and stderr, for
/// topologies that must not start.
fn up_fails(dir: &std::path::Path, topology: &str) -> (i32, String) {
    let file = dir.join("topology.toml");
    std::fs::write(&file, topology).unwrap();
    let out = Command::new(bin("faultline"))
        .env("FAULTLINE_HOME", dir.join("home"))
        .args(["up", "--topology"])
        .arg(&file)
        .args(["--run-dir"])
        .arg(dir.join("run"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_replica_that_never_becomes_healthy_is_named_with_its_probe_and_last_error() {
    let d = tempfile::tempdir().unwrap();
    // `sleep` never listens: the tcp probe is refused until the startup timeout.
    let (code, err) = up_fails(
        d.path(),
        "[services.quiet]\ncommand = [\"sleep\", \"30\"]\nhealth = \"tcp\"\nstartup_timeout = \"1s\"\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("replica quiet-1 did not become healthy: its health probe (tcp connect) did not pass within 1s; last: connect to 127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    // An exec probe that fails says what the command printed.
    let (code, err) = up_fails(
        d.path(),
        "[services.quiet]\ncommand = [\"sleep\", \"30\"]\nhealth = { exec = [\"sh\", \"-c\", \"echo not yet on {port} >&2; exit 3\"] }\nstartup_timeout = \"1s\"\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("its health probe (exec `sh -c echo not yet on {port} >&2; exit 3`) did not pass within 1s; last: `sh -c echo not yet on "), "{err}");
    assert!(err.contains("exited with code 3: not yet on "), "{err}");
    // A value that is no probe is refused where it is written.
    let (code, err) = up_fails(
        d.path(),
        "[services.quiet]\ncommand = [\"sleep\", \"30\"]\nhealth = false\n",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("topology.toml:3:10: health must be an HTTP path such as \"/health\", \"tcp\", \"none\" or { exec = [\"PROGRAM\", ...] }, not false"), "{err}");
}

#[test]
fn health_none_is_healthy_once_started_and_cwd_and_files_are_the_replicas() {
    let d = tempfile::tempdir().unwrap();
    let sys = d.path().join("sys");
    std::fs::create_dir_all(sys.join("work")).unwrap();
    std::fs::write(
        sys.join("greeting.in"),
        "hello from {{replica}} on {{port}}\n",
    )
    .unwrap();
    std::fs::write(
        sys.join("topology.toml"),
        "entrypoint = \"quiet\"\n[services.quiet]\ncommand = [\"sh\", \"-c\", \"cp {file:greeting} ./seen-$FAULTLINE_REPLICA; pwd > ./.cwd-$FAULTLINE_REPLICA; mv ./.cwd-$FAULTLINE_REPLICA ./cwd-$FAULTLINE_REPLICA; exec sleep 30\"]\nhealth = \"none\"\ncwd = \"work\"\nfiles = { greeting = \"greeting.in\" }\nreplicas = 2\n",
    )
    .unwrap();
    // Started from another directory, with a relative path to the topology.
    let other = d.path().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let up = Up::start_in(Some(&other), &["--topology", "../sys/topology.toml"], &[]);
    assert_eq!(up.rows.len(), 2, "{:?}", up.stdout);
    for r in &up.rows {
        let seen = sys.join("work").join(format!("seen-{}", r.replica));
        let cwd_file = sys.join("work").join(format!("cwd-{}", r.replica));
        // The replica writes `seen` first, then moves `cwd` into place: once `cwd` is
        // there, both are whole.
        assert!(
            wait_until(T, || cwd_file.exists()),
            "{} wrote no file",
            r.replica
        );
        let port = r.addr.rsplit(':').next().unwrap();
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            format!("hello from {} on {port}\n", r.replica)
        );
        let cwd = std::fs::read_to_string(&cwd_file).unwrap();
        assert_eq!(
            cwd.trim(),
            sys.join("work").canonicalize().unwrap().to_str().unwrap()
        );
    }
}

#[test]
fn the_ready_line_the_logs_and_the_commands_speak_of_the_users_own_system() {
    let (up, _cwd) = up_elsewhere_with(&[("FAULTLINE_LOG", "info")]);
    // The entrypoint is keyed by its own name, not the shop's.
    let ready = up.stdout.iter().find(|l| l.starts_with("ready: ")).unwrap();
    assert!(
        ready.starts_with(&format!("ready: lb={} agent={}", up.gateway, up.agent)),
        "{ready}"
    );
    assert!(!ready.contains("gateway"), "{ready}");
    // --agent before the command, and the latest run found without it.
    let out = Command::new(bin("faultline"))
        .args(["--agent", &up.agent, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("lb-1"));
    let out = Command::new(bin("faultline"))
        .arg("status")
        .env("FAULTLINE_HOME", &up.home)
        .env_remove("FAULTLINE_AGENT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("(agent {})", up.agent)));
    // A mistaken edge is answered with an example from this topology, quoted.
    let (code, _, err) = cli(&up.agent, &["fault", "latency", "app", "--delay", "1s"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`app` is not an edge or a proxy")
            && err.contains("e.g. 'app->redis' or 'app->redis-1'"),
        "{err}"
    );
    // Logs written to a file carry no colour codes.
    fault(&up.agent, &["kill", "app-2"]);
    assert!(
        wait_until(T, || up.stderr().contains("app-2")),
        "{}",
        up.stderr()
    );
    let logs = up.stderr();
    assert!(!logs.contains('\x1b'), "colour codes in a file: {logs:?}");
}
