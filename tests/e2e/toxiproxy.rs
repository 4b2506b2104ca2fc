//! Run-time proxies and the Toxiproxy-compatible API, through real processes, sockets
//! and a Toxiproxy client nobody here wrote (toxiproxy-python, from PyPI).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::{cli, python, ready_field, start_agent_with, wait_until};

/// A server on a free loopback port calling `handle` on a thread per connection.
fn serve(handle: fn(TcpStream)) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || handle(c));
        }
    });
    addr
}

/// An echo server on a free loopback port.
fn echo_server() -> String {
    serve(|mut c| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

/// One round trip of a byte through `addr`, with its time.
fn round_trip(addr: &str) -> std::io::Result<Duration> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let t0 = Instant::now();
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(t0.elapsed())
}

/// SIGTERM to the agent, which must exit 0 (healing everything first).
fn stop(mut child: faultline_tests::Killed) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the agent exited with {status}");
}

/// Every fault the journal in `run_dir` records as applied is recorded healed.
fn journal_all_healed(run_dir: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(run_dir.join("faults.jsonl")).unwrap();
    let mut applied = Vec::new();
    let mut healed = Vec::new();
    for line in text.lines() {
        let Ok(framed) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let v = &framed["record"];
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        match v["event"].as_str() {
            Some("applied") => applied.push(id),
            Some("healed") => healed.push(id),
            _ => {}
        }
    }
    let left = applied
        .iter()
        .filter(|a| !healed.contains(a))
        .cloned()
        .collect();
    (applied.len(), left)
}

#[test]
fn toxiproxy_python_drives_an_agent_without_a_topology() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let (agent, ready) = start_agent_with(&run_dir, &["--toxiproxy-listen", "127.0.0.1:0"]);
    let url = ready_field(&ready, "agent");
    let toxiproxy = ready_field(&ready, "toxiproxy");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/toxiproxy_client.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(toxiproxy.trim_start_matches("http://"))
        .arg(faultline_tests::bin("faultline"))
        .arg(&url)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "the client's checks failed:\n{stdout}\n{stderr}"
    );
    // The script left a toxic in effect: the agent's stop heals it, journalled.
    let left = faultline_tests::active_faults(&url);
    assert_eq!(left.len(), 1, "{left:?}");
    stop(agent);
    let (applied, unhealed) = journal_all_healed(&run_dir);
    assert!(applied >= 10, "only {applied} faults journalled");
    assert!(unhealed.is_empty(), "never healed: {unhealed:?}");
}

#[test]
fn proxies_made_at_run_time_take_network_faults_and_heal_on_delete() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let (agent, ready) = start_agent_with(&run_dir, &[]);
    let url = ready_field(&ready, "agent");
    let upstream = echo_server();
    let (code, out, err) = cli(&url, &["proxy", "create", "db", "--upstream", &upstream]);
    assert_eq!(code, 0, "{out}\n{err}");
    let listen = out
        .split_whitespace()
        .nth(4)
        .expect("proxy db listens on ADDR for UPSTREAM")
        .to_owned();
    assert!(round_trip(&listen).unwrap() < Duration::from_millis(200));

    let (code, _, err) = cli(&url, &["proxy", "create", "db", "--upstream", &upstream]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("proxy `db` already exists"), "{err}");
    let (code, _, err) = cli(&url, &["proxy", "create", "a->b", "--upstream", &upstream]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`a->b` is not a proxy name"), "{err}");
    let (code, _, err) = cli(&url, &["proxy", "create", "x", "--upstream", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("upstream `nope` is not host:port"), "{err}");

    let (code, out, err) = cli(&url, &["fault", "latency", "db", "--delay", "300ms"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let rtt = round_trip(&listen).unwrap();
    assert!(rtt >= Duration::from_millis(300), "{rtt:?}");
    let (_, list, _) = cli(&url, &["proxy", "list"]);
    assert!(list.contains("db") && list.contains(&upstream), "{list}");
    let (_, status, _) = cli(&url, &["status"]);
    assert!(status.contains("proxies made at run time"), "{status}");
    // Its connections and bytes are the agent's metrics, as an edge's.
    let metrics = reqwest::blocking::get(format!("{url}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let connections = faultline_tests::metrics::sample(
        &metrics,
        "faultline_agent_proxy_connections_total",
        &[("edge", "db")],
    );
    assert!(connections >= Some(2.0), "{connections:?}\n{metrics}");
    let active = faultline_tests::metrics::sample(
        &metrics,
        "faultline_agent_faults_active",
        &[("kind", "latency"), ("target", "db")],
    );
    assert_eq!(active, Some(1.0), "{metrics}");

    // A network fault on a name that is neither an edge nor a proxy says which are.
    let (code, _, err) = cli(&url, &["fault", "reset", "dbx"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("proxies made at run time: db"), "{err}");

    // Deleting the proxy heals its faults and closes it.
    let (code, out, err) = cli(&url, &["proxy", "delete", "db"]);
    assert_eq!(code, 0, "{out}\n{err}");
    faultline_tests::assert_no_faults(&url);
    assert!(
        round_trip(&listen).is_err(),
        "a deleted proxy still answers"
    );

    // Partitioned alone, a proxy holds every byte; healed, it passes them again.
    cli(
        &url,
        &[
            "proxy",
            "create",
            "db",
            "--upstream",
            &upstream,
            "--listen",
            &listen,
        ],
    );
    let (code, out, err) = cli(&url, &["fault", "partition", "db", "--ttl", "1s"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut s = TcpStream::connect(&listen).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(b"x").unwrap();
    assert!(s.read(&mut [0u8; 1]).is_err(), "data crossed a partition");
    // The lease lapses: the same connection works again.
    assert!(wait_until(Duration::from_secs(10), || {
        faultline_tests::active_faults(&url).is_empty()
    }));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"y").unwrap();
    let mut got = [0u8; 1];
    s.read_exact(&mut got).unwrap();
    assert!(&got == b"x" || &got == b"y");
    stop(agent);
}

#[test]
fn toxiproxy_ttl_bounds_a_toxic_and_remote_listening_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let (agent, ready) = start_agent_with(
        &run_dir,
        &["--toxiproxy-listen", "127.0.0.1:0", "--toxiproxy-ttl", "1s"],
    );
    let url = ready_field(&ready, "agent");
    let api = ready_field(&ready, "toxiproxy");
    let http = reqwest::blocking::Client::new();
    let upstream = echo_server();
    let made = http
        .post(format!("{api}/proxies"))
        .json(&serde_json::json!({"name": "e", "upstream": upstream}))
        .send()
        .unwrap();
    assert_eq!(made.status(), 201);
    let toxic = http
        .post(format!("{api}/proxies/e/toxics"))
        .json(&serde_json::json!({"type": "latency", "attributes": {"latency": 10}}))
        .send()
        .unwrap();
    assert_eq!(toxic.status(), 200);
    let listed = || -> usize {
        let v: serde_json::Value = http
            .get(format!("{api}/proxies/e/toxics"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v.as_array().unwrap().len()
    };
    assert_eq!(listed(), 1);
    assert!(wait_until(Duration::from_secs(10), || listed() == 0));
    faultline_tests::assert_no_faults(&url);
    // A browser is refused, as by Toxiproxy.
    let browser = http
        .get(format!("{api}/proxies"))
        .header("User-Agent", "Mozilla/5.0")
        .send()
        .unwrap();
    assert_eq!(browser.status(), 403);
    stop(agent);

    let out = Command::new(faultline_tests::bin("faultline-agent"))
        .args(["--toxiproxy-listen", "0.0.0.0:0", "--run-dir"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--toxiproxy-allow-remote"), "{err}");
}

/// A minimal HTTP/1.1 server on a free loopback port: `200 ok` to every request, on
/// keep-alive connections.
fn http_ok_server() -> String {
    serve(|mut c| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..end + 4);
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if c.write_all(answer).is_err() {
                    return;
                }
            }
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// A port free on 127.0.0.1 now (the experiment's proxy listens there).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_experiment_declares_proxies_to_a_system_it_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = http_ok_server();
    let port = free_port();
    let file = dir.path().join("proxied.toml");
    std::fs::write(
        &file,
        format!(
            r#"
name = "proxied"
seed = 1
duration = "6s"

[target]
url = "http://127.0.0.1:{port}"

[[proxies]]
name = "front"
listen = "127.0.0.1:{port}"
upstream = "{upstream}"

[load]
rate = 40
users = 8

[[load.flows]]
name = "get"
steps = [{{ name = "get", path = "/" }}]

[[slo]]
name = "fast"
objective = "latency<150ms>=99"

[[faults]]
at = "2s"
duration = "2s"
kind = "latency"
target = "front"
delay = "300ms"
"#
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = Command::new(faultline_tests::bin("faultline"))
        .env("FAULTLINE_HOME", dir.path().join("home"))
        .args(["run", file.to_str().unwrap(), "--report"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The latency fault on the proxy breaks the SLO: the hypothesis fails, exit 1.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("proxy front listens on 127.0.0.1:{port}")),
        "{stderr}"
    );
    let report: faultline::run::report::Report =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report.faults.len(), 1, "{:?}", report.faults);
    assert!(report.faults[0].error.is_none(), "{:?}", report.faults[0]);
    // Every answer came through the proxy, which is gone with the run.
    assert!(report.load.requests > 100, "{:?}", report.load.requests);
    assert_eq!(
        report.load.statuses.get("200"),
        Some(&report.load.requests),
        "{:?}",
        report.load.statuses
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the proxy outlived the run"
    );

    // A fault on a name that is neither a declared proxy nor a process is placed.
    let bad = std::fs::read_to_string(&file)
        .unwrap()
        .replace("target = \"front\"", "target = \"back\"");
    std::fs::write(&file, bad).unwrap();
    let out = Command::new(faultline_tests::bin("faultline"))
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("proxied.toml:30:10"), "{stderr}");
    assert!(
        stderr.contains("proxies made at run time: front"),
        "{stderr}"
    );
}
