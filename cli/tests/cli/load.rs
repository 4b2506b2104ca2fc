//! `faultline load` against real servers on loopback.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

/// Serves HTTP on a runtime of its own; `stall` makes every request that arrives in the
/// first half of a second wait for its second half.
fn server(stall: bool) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let start = Instant::now();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    if stall {
                        let into = start.elapsed().subsec_millis();
                        if into < 500 {
                            tokio::time::sleep(Duration::from_millis(u64::from(500 - into))).await;
                        }
                    }
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, rt)
}

fn load(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("load")
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_open_model_run_holds_its_rate_within_one_percent() {
    let (addr, _rt) = server(false);
    let (code, s, err) = load(&[
        &format!("http://{addr}/x"),
        "-r",
        "2000",
        "-d",
        "10s",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(s["requests"], 20_000, "every planned request sent: {s}");
    assert_eq!(s["dropped"], 0);
    assert_eq!(s["statuses"]["200"], 20_000);
    let rate = s["requests_per_s"].as_f64().unwrap();
    assert!((1980.0..=2020.0).contains(&rate), "{rate} req/s for 2000");
}

#[test]
fn a_stalling_server_cannot_hide_behind_coordinated_omission() {
    // The server stalls 500 ms once a second; one connection means requests queue
    // behind the stall, and only latency from the intended send time sees it.
    let (addr, _rt) = server(true);
    let (code, s, err) = load(&[
        &format!("http://{addr}/"),
        "-r",
        "200",
        "-d",
        "5s",
        "-c",
        "1",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let p99 = s["latency_ms"]["p99"].as_f64().unwrap();
    let service_p99 = s["service_time_ms"]["p99"].as_f64().unwrap();
    assert!(p99 >= 400.0, "p99 from the intended send: {p99} ms");
    assert!(
        service_p99 < 100.0,
        "from the actual send the stall would hide: p99 {service_p99} ms"
    );
}

#[test]
fn a_closed_model_run_sends_exactly_its_count() {
    let (addr, _rt) = server(false);
    let (code, s, err) = load(&[
        &format!("http://{addr}/"),
        "-c",
        "4",
        "-n",
        "1000",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(s["requests"], 1000);
    assert_eq!(s["statuses"]["200"], 1000);
}

#[test]
fn errors_are_counted_by_kind() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, s, err) = load(&[
        &format!("http://127.0.0.1:{port}/"),
        "-c",
        "2",
        "-n",
        "10",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(s["errors"]["connect"], 10, "{s}");
}

#[test]
fn bad_load_input_is_named() {
    for (args, message) in [
        (vec!["ftp://127.0.0.1/"], "only http is supported"),
        (
            vec!["127.0.0.1:80/x"],
            "is not a URL (write http://HOST:PORT/PATH)",
        ),
        (vec!["//127.0.0.1/x"], "needs a scheme"),
        (
            vec!["http://127.0.0.1:1/", "-r", "0"],
            "-r must be a positive rate",
        ),
        (
            vec!["http://127.0.0.1:1/", "-H", "nocolon"],
            "header `nocolon` must be `name: value`",
        ),
        (
            vec!["http://127.0.0.1:1/", "-m", "GE T"],
            "is not an HTTP method",
        ),
        (
            vec!["http://127.0.0.1:1/", "-d", "soon"],
            "write durations like",
        ),
        (
            vec![
                "http://127.0.0.1:1/",
                "-r",
                "10",
                "-d",
                "1s",
                "--ramp",
                "5s",
            ],
            "--ramp 5s is longer than the run",
        ),
    ] {
        let (code, _, err) = load(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn objectives_decide_the_exit_code() {
    let (addr, _rt) = server(false);
    let url = format!("http://{addr}/");
    let (code, s, err) = load(&[
        &url,
        "-r",
        "200",
        "-d",
        "3s",
        "--slo",
        "availability>=99.9",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(s["slos"][0]["met"], true, "{s}");
    assert_eq!(s["slos"][0]["budget_remaining"], 1.0);
    // No request is answered within a microsecond: the objective is missed, exit 1.
    let (code, s, err) = load(&[
        &url,
        "-r",
        "200",
        "-d",
        "3s",
        "--slo",
        "availability>=99.9",
        "--slo",
        "latency<1us>=50",
        "--json",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(s["slos"][1]["met"], false);
    assert_eq!(s["slos"][1]["sli"], 0.0);
    // Against a dead port every request fails: availability is missed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, s, _) = load(&[
        &format!("http://127.0.0.1:{port}/"),
        "-r",
        "50",
        "-d",
        "2s",
        "--slo",
        "availability>=99",
        "--json",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        s["slos"][0]["max_short_burn"].as_f64().unwrap() > 14.4,
        "{s}"
    );
    let (code, _, err) = load(&[&url, "-n", "1", "--slo", "uptime>=99"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown SLI `uptime`"), "{err}");
}
