//! Faults on Docker containers (`container:NAME`) through the real engine: the shop's
//! image built locally (`faultline images build`), started with testcontainers, faulted
//! through `faultline fault`, every effect checked through real sockets and the
//! engine's own view of the container. Network faults are checked from the host
//! against the container's address, and from inside a container's network namespace
//! (`nsenter -t PID -n`, since the image holds no tools). A missing Docker daemon fails
//! these tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::docker::inspect;
use faultline_tests::{active_faults, cli, ready_field, start_agent_with, wait_until};
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

/// The tag of the shop's image these tests built (once per test binary).
fn shop_tag() -> String {
    faultline_tests::docker::images("e2e-containers")
}

/// A shop cache in a container of its own, named uniquely, labelled for this test.
fn cache_container(test: &str) -> (Container<GenericImage>, String) {
    start_cache(test, None)
}

/// A shop cache on `network` (the default bridge without), named and labelled for
/// `test`.
fn start_cache(test: &str, network: Option<&str>) -> (Container<GenericImage>, String) {
    let name = format!("fl-{test}-{}", std::process::id());
    let mut request = GenericImage::new("faultline/shop", &shop_tag())
        .with_exposed_port(ContainerPort::Tcp(7000))
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(["cache", "--listen", "0.0.0.0:7000"])
        .with_container_name(&name)
        .with_label("faultline.test", &name);
    if let Some(network) = network {
        request = request.with_network(network);
    }
    let container = request.start().unwrap_or_else(|e| {
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
    inspect(name, "{{.State.Status}}")
}

fn started_at(name: &str) -> String {
    inspect(name, "{{.State.StartedAt}}")
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
    let (code, _, err) = cli(&url, &["fault", "slicer", &target, "--average-size", "10"]);
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

/// A Docker network of the test's own (with a subnet of its own, so the engine pins an
/// address on reconnect), removed when dropped, after the containers on it (declare it
/// first).
struct Network(String);

impl Network {
    fn create(test: &str) -> Network {
        let name = format!("fl-{test}-{}", std::process::id());
        // A /24 of 10.200.0.0/13 not used yet; the engine refuses overlapping pools.
        for n in 0..64u32 {
            let third = (std::process::id() + n * 37) % 2048;
            let subnet = format!("10.{}.{}.0/24", 200 + third / 256, third % 256);
            let out = Command::new("docker")
                .args(["network", "create", "--subnet", &subnet])
                .args(["--label", &format!("faultline.test={name}"), &name])
                .output()
                .unwrap();
            if out.status.success() {
                return Network(name);
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("overlap"), "docker network create: {err}");
        }
        panic!("no free subnet for a test network");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// A shop cache like [`cache_container`], on `network` only.
fn cache_on(test: &str, network: &Network) -> (Container<GenericImage>, String) {
    start_cache(test, Some(&network.0))
}

/// The process whose network namespace is the container's.
fn pid_of(name: &str) -> u32 {
    inspect(name, "{{.State.Pid}}").parse().unwrap()
}

/// The container's address on `network` (empty when it is not on it).
fn ip_on(name: &str, network: &str) -> String {
    inspect(
        name,
        &format!(
            "{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}"
        ),
    )
}

/// The cache's address on the default bridge, port 7000.
fn addr_of(name: &str) -> SocketAddr {
    format!("{}:7000", ip_on(name, "bridge")).parse().unwrap()
}

/// Whether a TCP connect from the host to `addr` completes within `timeout`.
fn connects(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// Whether a TCP connect from inside process `pid`'s network namespace to `ip:port`
/// completes within a second (Python on the host, run in that namespace).
fn connects_from(pid: u32, ip: &str, port: u16) -> bool {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "python3", "-c"])
        .arg("import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()")
        .args([ip, &port.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}

/// `iptables -S` in the container's network namespace.
fn rules_in(name: &str) -> String {
    let out = Command::new("nsenter")
        .args(["-t", &pid_of(name).to_string(), "-n", "iptables", "-S"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rules of fault `id` in the container.
fn rules_of(name: &str, id: &str) -> usize {
    rules_in(name)
        .lines()
        .filter(|l| l.contains(&format!("faultline:{id}")))
        .count()
}

/// `tc qdisc show` in the container's network namespace.
fn qdiscs_in(name: &str) -> String {
    let out = Command::new("nsenter")
        .args(["-t", &pid_of(name).to_string(), "-n", "tc", "qdisc", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A container started and answering `/health` on its address.
fn answering(test: &str) -> (Container<GenericImage>, String, SocketAddr) {
    let (c, name) = cache_container(test);
    assert!(wait_until(Duration::from_secs(30), || healthy(
        &c,
        Duration::from_secs(2)
    )));
    let addr = addr_of(&name);
    (c, name, addr)
}

/// One request on `conn`, a keep-alive connection: the answer's status line, or the
/// error that ended it.
fn request(conn: &mut TcpStream, req: &str) -> std::io::Result<String> {
    conn.write_all(req.as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf)?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

const HEALTH: &str = "GET /health HTTP/1.1\r\nHost: cache\r\n\r\n";

#[test]
fn packet_loss_drops_a_share_of_a_containers_packets_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, name, addr) = answering("loss");
    let (mut agent, url) = agent(dir.path());
    let target = format!("container:{name}");
    assert!(connects(addr, Duration::from_secs(2)));

    // All of them: no connect completes; the rules carry the fault's id.
    let all = ok(
        &url,
        &["fault", "loss", &target, "--percent", "100", "--ttl", "60s"],
    );
    let all = all.trim();
    assert_eq!(rules_of(&name, all), 2, "{}", rules_in(&name));
    assert!(
        !connects(addr, Duration::from_secs(1)),
        "a connect passed 100% loss"
    );

    // Half of what it receives, overlapping the first: healing the first leaves the
    // second's rule alone. A connect needs its SYN through (the first retransmission
    // comes after a second, past the timeout), so about half of them complete.
    let half = ok(
        &url,
        &[
            "fault",
            "loss",
            &target,
            "--percent",
            "50",
            "--direction",
            "in",
            "--ttl",
            "60s",
        ],
    );
    let half = half.trim();
    ok(&url, &["heal", all]);
    assert_eq!(rules_of(&name, all), 0, "{}", rules_in(&name));
    assert_eq!(rules_of(&name, half), 1, "{}", rules_in(&name));
    let tries = 40;
    let passed = (0..tries)
        .filter(|_| connects(addr, Duration::from_millis(400)))
        .count();
    // Each side fails with probability 2^-40.
    assert!(
        passed > 0 && passed < tries,
        "{passed} of {tries} connects passed 50% loss"
    );
    ok(&url, &["heal", half]);
    assert!(
        !rules_in(&name).contains("faultline:"),
        "{}",
        rules_in(&name)
    );
    assert!((0..10).all(|_| connects(addr, Duration::from_secs(2))));

    // A lease that runs out heals it.
    let leased = ok(
        &url,
        &["fault", "loss", &target, "--percent", "100", "--ttl", "1s"],
    );
    assert_eq!(rules_of(&name, leased.trim()), 2);
    assert!(wait_until(Duration::from_secs(10), || rules_of(
        &name,
        leased.trim()
    ) == 0));
    assert!(connects(addr, Duration::from_secs(2)));

    // An agent that stops heals what it applied.
    let stays = ok(
        &url,
        &[
            "fault",
            "loss",
            &target,
            "--percent",
            "100",
            "--ttl",
            "600s",
        ],
    );
    assert_eq!(rules_of(&name, stays.trim()), 2);
    let pid = nix::unistd::Pid::from_raw(agent.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    agent.0.wait().unwrap();
    assert!(
        !rules_in(&name).contains("faultline:"),
        "{}",
        rules_in(&name)
    );
    assert!(connects(addr, Duration::from_secs(2)));
}

#[test]
fn resets_reach_live_and_new_connections_to_a_container_and_heal() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, name, addr) = answering("reset");
    let (_agent, url) = agent(dir.path());
    let target = format!("container:{name}");

    let mut live = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(request(&mut live, HEALTH).unwrap().contains("200"));

    ok(&url, &["fault", "reset", &target, "--ttl", "60s"]);
    // The live connection's next segment is answered with a RST...
    let e = request(&mut live, HEALTH).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    // ...and so is a new connection's SYN.
    let e = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // Refusals name what does not apply to a container.
    let (code, _, err) = cli(&url, &["fault", "reset", &target, "--after", "1s"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the resets start at once"), "{err}");
    let (code, _, err) = cli(&url, &["fault", "reset", &target, "--toxicity", "0.5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use `loss`"), "{err}");

    ok(&url, &["heal", "--all"]);
    assert!(
        !rules_in(&name).contains("faultline:"),
        "{}",
        rules_in(&name)
    );
    let mut again = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(request(&mut again, HEALTH).unwrap().contains("200"));
}

/// How long a GET of `key` from the cache at `addr` takes, the whole body read.
fn fetch(addr: SocketAddr, key: &str, size: usize) -> Duration {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let start = Instant::now();
    let body = client
        .get(format!("http://{addr}/v1/keys/{key}"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(body.len(), size);
    start.elapsed()
}

#[test]
fn bandwidth_on_a_container_slows_what_it_sends_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, name, addr) = answering("bandwidth");
    let (_agent, url) = agent(dir.path());
    let target = format!("container:{name}");
    let size = 300_000;
    let put = reqwest::blocking::Client::new()
        .put(format!("http://{addr}/v1/keys/big"))
        .body(vec![b'x'; size])
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let before = fetch(addr, "big", size);

    // 100 kB a second: 300 kB take about three seconds, less the bucket of 10 kB.
    ok(
        &url,
        &[
            "fault",
            "bandwidth",
            &target,
            "--rate",
            "100000",
            "--ttl",
            "60s",
        ],
    );
    assert!(
        qdiscs_in(&name).contains("qdisc tbf fa17:"),
        "{}",
        qdiscs_in(&name)
    );
    let shaped = fetch(addr, "big", size);
    assert!(
        shaped >= Duration::from_millis(1500) && shaped > before * 10,
        "300 kB took {shaped:?} at 100 kB/s, {before:?} without"
    );

    // One fault at a time owns the container's root qdiscs.
    let (code, _, err) = cli(&url, &["fault", "bandwidth", &target, "--rate", "5000"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has the qdiscs of fault"), "{err}");
    // tbf shapes only what the container sends.
    let (code, _, err) = cli(
        &url,
        &[
            "fault",
            "bandwidth",
            &target,
            "--rate",
            "5000",
            "--direction",
            "upstream",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`direction` must be downstream"), "{err}");

    ok(&url, &["heal", "--all"]);
    assert!(!qdiscs_in(&name).contains("fa17:"), "{}", qdiscs_in(&name));
    let after = fetch(addr, "big", size);
    assert!(after * 4 < shaped, "{after:?} healed, {shaped:?} shaped");
}

#[test]
fn a_partition_cuts_two_containers_both_ways_or_one_off_a_network_and_heals() {
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create("part");
    let (_a, a) = cache_on("part-a", &net);
    let (_b, b) = cache_on("part-b", &net);
    let (ip_a, ip_b) = (ip_on(&a, &net.0), ip_on(&b, &net.0));
    let (pid_a, pid_b) = (pid_of(&a), pid_of(&b));
    let addr_a: SocketAddr = format!("{ip_a}:7000").parse().unwrap();
    assert!(wait_until(Duration::from_secs(30), || connects_from(
        pid_a, &ip_b, 7000
    ) && connects_from(
        pid_b, &ip_a, 7000
    )));
    let (_agent, url) = agent(dir.path());
    let (ta, tb) = (format!("container:{a}"), format!("container:{b}"));

    // Container with container: neither reaches the other; the host still reaches A.
    let cut = ok(&url, &["fault", "partition", &ta, &tb, "--ttl", "60s"]);
    assert!(
        !connects_from(pid_a, &ip_b, 7000),
        "A reached B across the partition"
    );
    assert!(
        !connects_from(pid_b, &ip_a, 7000),
        "B reached A across the partition"
    );
    assert!(connects(addr_a, Duration::from_secs(2)));
    assert_eq!(rules_of(&a, cut.trim()), 1, "{}", rules_in(&a));
    assert_eq!(rules_of(&b, cut.trim()), 1, "{}", rules_in(&b));
    ok(&url, &["heal", cut.trim()]);
    assert!(connects_from(pid_a, &ip_b, 7000) && connects_from(pid_b, &ip_a, 7000));

    // Container with network: disconnected, its address on it answers no more; healed,
    // it is back on it with the same address, and B reaches it again.
    let off = ok(
        &url,
        &[
            "fault",
            "partition",
            &ta,
            &format!("network:{}", net.0),
            "--ttl",
            "60s",
        ],
    );
    assert_eq!(ip_on(&a, &net.0), "", "A is still on {}", net.0);
    assert!(!connects(addr_a, Duration::from_secs(1)));
    assert!(!connects_from(pid_b, &ip_a, 7000));
    // A second partition from every network A is on composes with the first: A stays
    // off until both are healed.
    let all = ok(&url, &["fault", "partition", &ta, "--ttl", "60s"]);
    ok(&url, &["heal", off.trim()]);
    assert_eq!(
        ip_on(&a, &net.0),
        "",
        "one heal reconnected what another fault holds"
    );
    ok(&url, &["heal", all.trim()]);
    assert_eq!(ip_on(&a, &net.0), ip_a, "A came back with another address");
    assert!(wait_until(Duration::from_secs(10), || connects(
        addr_a,
        Duration::from_secs(1)
    )));
    assert!(connects_from(pid_b, &ip_a, 7000));

    // The other side is containers or networks, nothing else.
    let (code, _, err) = cli(&url, &["fault", "partition", &ta, "orders"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not from `orders`"), "{err}");
    let (code, _, err) = cli(&url, &["fault", "partition", &ta, &ta]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("on both sides"), "{err}");
    let (code, _, err) = cli(&url, &["fault", "partition", &ta, "network:no-such-net-fl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not on network `no-such-net-fl`"), "{err}");
}

#[test]
fn network_faults_refuse_a_stopped_container_and_latency_without_netem() {
    let dir = tempfile::tempdir().unwrap();
    let (c, name, _) = answering("refusals");
    let (_agent, url) = agent(dir.path());
    let target = format!("container:{name}");

    // The status says what this machine has, as the tools themselves do.
    let (code, out, err) = cli(&url, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &status["mechanisms"];
    let netem = Command::new("unshare")
        .args([
            "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ])
        .output()
        .unwrap()
        .status
        .success();
    let version = Command::new("iptables").arg("-V").output().unwrap();
    let backend = if String::from_utf8_lossy(&version.stdout).contains("nf_tables") {
        "nf_tables"
    } else {
        "legacy"
    };
    assert_eq!(m["nsenter"], true, "{m}");
    assert_eq!(m["iptables"], backend, "{m}");
    assert_eq!(m["tc"], true, "{m}");
    assert_eq!(m["tbf"], true, "{m}");
    assert_eq!(m["netem"], netem, "{m}");
    let (_, text, _) = cli(&url, &["status"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("container network mechanisms: "))
        .unwrap_or_else(|| panic!("no mechanisms line in:\n{text}"));
    assert!(line.contains(&format!("iptables ({backend})")), "{line}");

    // Latency on a container is netem's, where the kernel has it.
    let (code, id, err) = cli(
        &url,
        &[
            "fault", "latency", &target, "--delay", "300ms", "--ttl", "60s",
        ],
    );
    if netem {
        assert_eq!(code, 0, "{err}");
        let start = Instant::now();
        assert!(healthy(&c, Duration::from_secs(5)));
        assert!(start.elapsed() >= Duration::from_millis(300));
        ok(&url, &["heal", id.trim()]);
    } else {
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("needs the netem qdisc"), "{err}");
        assert!(
            err.contains("latency on containers goes through fault proxies"),
            "{err}"
        );
        assert!(!qdiscs_in(&name).contains("fa17:"));
    }

    // loss takes only a container; a stopped one is refused.
    let (code, _, err) = cli(&url, &["fault", "loss", "cache", "--percent", "5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("acts on a container"), "{err}");
    let stop = Command::new("docker")
        .args(["stop", "-t", "1", &name])
        .output()
        .unwrap();
    assert!(stop.status.success());
    for args in [
        vec!["fault", "loss", target.as_str(), "--percent", "5"],
        vec!["fault", "reset", target.as_str()],
        vec!["fault", "partition", target.as_str()],
    ] {
        let (code, _, err) = cli(&url, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("is exited, not running"), "{args:?}: {err}");
    }
    assert!(active_faults(&url).is_empty());
}

#[test]
fn a_restarted_agent_removes_the_network_faults_a_sigkilled_one_left_in_containers() {
    let dir = tempfile::tempdir().unwrap();
    let net = Network::create("netrecover");
    let (_a, a) = cache_on("netrecover-a", &net);
    let (_b, b) = cache_on("netrecover-b", &net);
    let (ip_a, ip_b) = (ip_on(&a, &net.0), ip_on(&b, &net.0));
    let addr_a: SocketAddr = format!("{ip_a}:7000").parse().unwrap();
    let addr_b: SocketAddr = format!("{ip_b}:7000").parse().unwrap();
    assert!(wait_until(Duration::from_secs(30), || connects(
        addr_a,
        Duration::from_secs(1)
    ) && connects(
        addr_b,
        Duration::from_secs(1)
    )));
    let (mut first, url) = agent(dir.path());
    let (ta, tb) = (format!("container:{a}"), format!("container:{b}"));
    // Rules and a qdisc in A, B off its network.
    let loss = ok(
        &url,
        &["fault", "loss", &ta, "--percent", "100", "--ttl", "600s"],
    );
    let loss = loss.trim();
    ok(
        &url,
        &[
            "fault",
            "bandwidth",
            &ta,
            "--rate",
            "20000",
            "--ttl",
            "600s",
        ],
    );
    let network = format!("network:{}", net.0);
    ok(
        &url,
        &["fault", "partition", &tb, &network, "--ttl", "600s"],
    );
    assert_eq!(rules_of(&a, loss), 2, "{}", rules_in(&a));
    assert!(
        qdiscs_in(&a).contains("qdisc tbf fa17:"),
        "{}",
        qdiscs_in(&a)
    );
    assert_eq!(ip_on(&b, &net.0), "");
    first.kill().unwrap();
    first.wait().unwrap();
    // The containers outlive the agent with its faults in place...
    assert_eq!(rules_of(&a, loss), 2, "{}", rules_in(&a));
    assert!(
        qdiscs_in(&a).contains("qdisc tbf fa17:"),
        "{}",
        qdiscs_in(&a)
    );
    assert!(!connects(addr_a, Duration::from_secs(1)));
    assert_eq!(ip_on(&b, &net.0), "");
    // ...until an agent starts on the same run directory and heals the journal: A's
    // rules and qdisc are gone, and B is back on its network with its address.
    let (_second, _) = agent(dir.path());
    assert!(
        !rules_in(&a).contains("faultline:"),
        "rules left after recovery:\n{}",
        rules_in(&a)
    );
    assert!(!qdiscs_in(&a).contains("fa17:"), "{}", qdiscs_in(&a));
    assert_eq!(ip_on(&b, &net.0), ip_b, "B is not back with its address");
    assert!(connects(addr_a, Duration::from_secs(2)));
    assert!(wait_until(Duration::from_secs(10), || connects(
        addr_b,
        Duration::from_secs(1)
    )));
}
