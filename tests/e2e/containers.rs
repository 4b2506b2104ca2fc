//! Faults on Docker containers (`container:NAME`) through the real engine: the shop's
//! image built locally (`faultline images build`), started with testcontainers, faulted
//! through `faultline fault`, every effect checked through real sockets and the
//! engine's own view of the container. A missing Docker daemon fails these tests.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use faultline_tests::{active_faults, bin, cli, ready_field, start_agent_with, wait_until};
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

/// The tag of the shop's image these tests built (once per test binary).
fn shop_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let tag = "e2e-containers".to_owned();
        let out = Command::new(bin("faultline"))
            .args(["images", "build", "--tag", &tag])
            .output()
            .expect("run faultline images build");
        assert!(
            out.status.success(),
            "faultline images build failed (is the Docker daemon running?):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tag
    })
}

/// A shop cache in a container of its own, named uniquely, labelled for this test.
fn cache_container(test: &str) -> (Container<GenericImage>, String) {
    let name = format!("fl-{test}-{}", std::process::id());
    let container = GenericImage::new("faultline/shop", shop_tag())
        .with_exposed_port(ContainerPort::Tcp(7000))
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(["cache", "--listen", "0.0.0.0:7000"])
        .with_container_name(&name)
        .with_label("faultline.test", &name)
        .start()
        .unwrap_or_else(|e| {
            panic!("cannot start a container (is the Docker daemon running?): {e}")
        });
    (container, name)
}

/// Whether the cache answers `GET /health` within `timeout`, on its published port now.
fn healthy(c: &Container<GenericImage>, timeout: Duration) -> bool {
    let Ok(port) = c.get_host_port_ipv4(7000) else {
        return false;
    };
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .is_ok_and(|r| r.status().is_success())
}

/// The engine's word for the container's state: running, paused, exited...
fn state(name: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Status}}", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn started_at(name: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.StartedAt}}", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A `faultline-agent` with no topology, in a run directory under `dir`.
fn agent(dir: &std::path::Path) -> (faultline_tests::Killed, String) {
    let (child, ready) = start_agent_with(&dir.join("run"), &[]);
    (child, ready_field(&ready, "agent"))
}

fn ok(agent: &str, args: &[&str]) -> String {
    let (code, out, err) = cli(agent, args);
    assert_eq!(code, 0, "faultline {args:?}: {out}\n{err}");
    out
}

#[test]
fn pause_kill_stop_and_restart_act_on_a_container_and_heal() {
    let dir = tempfile::tempdir().unwrap();
    let (c, name) = cache_container("faults");
    assert!(wait_until(Duration::from_secs(30), || healthy(
        &c,
        Duration::from_secs(2)
    )));
    let (_agent, url) = agent(dir.path());
    let target = format!("container:{name}");

    // Pause: the engine freezes it; requests hang; healed, it answers again.
    ok(&url, &["fault", "pause", &target, "--ttl", "60s"]);
    assert_eq!(state(&name), "paused");
    assert!(
        !healthy(&c, Duration::from_millis(500)),
        "a paused container answered"
    );
    // Two pauses compose: healing one leaves it paused.
    let second = ok(&url, &["fault", "pause", &target, "--ttl", "60s"]);
    let (code, _, err) = cli(&url, &["heal", second.trim()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(state(&name), "paused");
    ok(&url, &["heal", "--all"]);
    assert_eq!(state(&name), "running");
    assert!(wait_until(Duration::from_secs(10), || healthy(
        &c,
        Duration::from_secs(2)
    )));

    // A held kill: down until healed, then started again.
    ok(&url, &["fault", "kill", &target, "--hold", "--ttl", "60s"]);
    assert_eq!(state(&name), "exited");
    assert!(!healthy(&c, Duration::from_millis(500)));
    ok(&url, &["heal", "--all"]);
    assert!(wait_until(Duration::from_secs(20), || healthy(
        &c,
        Duration::from_secs(2)
    )));

    // Restart: a new start, answering again.
    let before = started_at(&name);
    ok(&url, &["fault", "restart", &target]);
    assert_ne!(started_at(&name), before, "the container did not restart");
    assert!(wait_until(Duration::from_secs(20), || healthy(
        &c,
        Duration::from_secs(2)
    )));

    // Terminate: a stop, which nothing undoes without --hold.
    ok(&url, &["fault", "terminate", &target]);
    assert_eq!(state(&name), "exited");
    assert!(active_faults(&url).is_empty());

    // Refusals name the problem.
    let (code, _, err) = cli(&url, &["fault", "latency", &target, "--delay", "10ms"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a container target takes"), "{err}");
    let (code, _, err) = cli(&url, &["fault", "pause", "container:no-such-container-fl"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("no container `no-such-container-fl`"), "{err}");
}

#[test]
fn a_restarted_agent_unpauses_what_a_sigkilled_one_paused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, name) = cache_container("recover");
    assert!(wait_until(Duration::from_secs(30), || healthy(
        &c,
        Duration::from_secs(2)
    )));
    let (mut first, url) = agent(dir.path());
    ok(
        &url,
        &[
            "fault",
            "pause",
            &format!("container:{name}"),
            "--ttl",
            "600s",
        ],
    );
    assert_eq!(state(&name), "paused");
    first.kill().unwrap();
    first.wait().unwrap();
    // The container outlives the agent, still paused...
    assert_eq!(state(&name), "paused");
    // ...until an agent starts on the same run directory and heals the journal.
    let (_second, _) = agent(dir.path());
    assert_eq!(state(&name), "running");
    assert!(wait_until(Duration::from_secs(10), || healthy(
        &c,
        Duration::from_secs(2)
    )));
    drop(c);
    assert!(state(&name).is_empty(), "the container outlived its test");
}
