//! Outside dependencies (`[external.NAME]`): a service of the topology calls a server
//! the test runs itself, through an edge proxy `client->NAME` that network faults and
//! partitions act on like any other edge.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_tests::{bin, cli, start_agent, wait_until};

const T: Duration = Duration::from_secs(15);

/// An HTTP server outside the topology: every request is answered `outside`.
fn outside_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\noutside",
                );
            });
        }
    });
    addr
}

use faultline_tests::PY_WEB as WEB;

fn topology(dir: &std::path::Path, address: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("web.py"), WEB).unwrap();
    let file = dir.join("topology.toml");
    std::fs::write(
        &file,
        format!(
            "entrypoint = \"web\"\n\
             [external.payments-api]\n\
             address = \"{address}\"\n\
             [services.web]\n\
             command = [\"python3\", \"web.py\", \"{{listen}}\", \"{{upstream:payments-api}}\"]\n\
             calls = [\"payments-api\"]\n\
             health = \"tcp\"\n"
        ),
    )
    .unwrap();
    file
}

fn status(agent: &str) -> serde_json::Value {
    reqwest::blocking::get(format!("{agent}/v1/status"))
        .unwrap()
        .json()
        .unwrap()
}

/// One request through the service: its status and how long it took.
fn request(http: &reqwest::blocking::Client, url: &str) -> (u16, Duration) {
    let start = Instant::now();
    let code = http
        .get(url)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    (code, start.elapsed())
}

/// The median time of `n` requests, every one of which must answer 200.
fn median_ok(http: &reqwest::blocking::Client, url: &str, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let (code, took) = request(http, url);
            assert_eq!(code, 200, "a request through web->payments-api failed");
            took
        })
        .collect();
    times.sort();
    times[n / 2]
}

#[test]
fn an_external_is_an_edge_that_faults_act_on() {
    let outside = outside_server();
    let d = tempfile::tempdir().unwrap();
    let file = topology(d.path(), &outside.to_string());
    let (child, agent) = start_agent(&d.path().join("run"), &file, &[]);
    let _agent = child;

    let s = status(&agent);
    let edges = s["edges"].as_array().unwrap();
    let edge = edges
        .iter()
        .find(|e| e["name"] == "web->payments-api")
        .unwrap_or_else(|| panic!("no edge web->payments-api in {edges:?}"));
    assert_eq!(edge["client"], "web");
    assert_eq!(edge["server"], "payments-api");
    assert_eq!(edge["target"], outside.to_string());
    let url = format!("{}/", s["entrypoint"].as_str().unwrap());

    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = http.get(&url).send().unwrap().text().unwrap();
    assert_eq!(body, "outside");
    let base = median_ok(&http, &url, 5);

    let (code, out, err) = cli(
        &agent,
        &[
            "fault",
            "latency",
            "web->payments-api",
            "--delay",
            "300ms",
            "--ttl",
            "60s",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, status, _) = cli(&agent, &["status"]);
    assert!(
        status.contains("edges to externals:") && status.contains("web->payments-api via"),
        "{status}"
    );
    let slow = median_ok(&http, &url, 5);
    let added = slow.saturating_sub(base);
    assert!(
        added >= Duration::from_millis(250) && added <= Duration::from_millis(350),
        "latency on web->payments-api added {added:?} (from {base:?} to {slow:?})"
    );
    let (code, out, err) = cli(&agent, &["heal", "--all"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(median_ok(&http, &url, 3) < base + Duration::from_millis(150));

    let (code, out, err) = cli(
        &agent,
        &["fault", "partition", "web", "payments-api", "--ttl", "60s"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        wait_until(T, || request(&http, &url).0 == 502),
        "requests still pass through a partitioned web->payments-api"
    );
    let (code, out, err) = cli(&agent, &["heal", "--all"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        wait_until(T, || request(&http, &url).0 == 200),
        "requests still fail after the partition was healed"
    );
}

#[test]
fn a_bad_external_address_is_refused_with_its_position() {
    let d = tempfile::tempdir().unwrap();
    let file = topology(d.path(), "nope");
    let out = Command::new(bin("faultline-agent"))
        .env("FAULTLINE_HOME", d.path().join("home"))
        .arg("--topology")
        .arg(&file)
        .arg("--run-dir")
        .arg(d.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3:11: external `payments-api`: address `nope` is not host:port (no port)",
            file.display()
        )),
        "{stderr}"
    );
}
