//! `faultline load` against real servers on loopback.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use faultline::cmd::load::LoadReport;
use faultline::load::stats::ErrorKind;
use http_body_util::Full;

/// Serves HTTP on a runtime of its own; `stall` makes every request that arrives in the
/// first half of a second wait for its second half. `/mix` answers 200, 404 and 503 in
/// turn.
pub(crate) fn server(stall: bool) -> (SocketAddr, tokio::runtime::Runtime) {
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
    let turn = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let turn = turn.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let turn = turn.clone();
                    async move {
                        if stall {
                            let into = start.elapsed().subsec_millis();
                            if into < 500 {
                                tokio::time::sleep(Duration::from_millis(u64::from(500 - into)))
                                    .await;
                            }
                        }
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                        if req.uri().path() == "/mix" {
                            let n = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            *resp.status_mut() =
                                [200, 404, 503][(n % 3) as usize].try_into().unwrap();
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, rt)
}

/// Runs `faultline load ARGS`: its exit code, its `--json` summary read back into the
/// product's type (`None` without one), and its stderr.
pub(crate) fn load(args: &[&str]) -> (Option<i32>, Option<LoadReport>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("load")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = (!out.stdout.is_empty()).then(|| {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "--json output: {e}\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    });
    (out.status.code(), report, stderr)
}

/// The `--json` summary of a run that must have printed one.
pub(crate) fn summary(report: Option<LoadReport>, stderr: &str) -> LoadReport {
    report.unwrap_or_else(|| panic!("no summary on stdout; stderr:\n{stderr}"))
}

#[test]
fn an_open_model_run_holds_its_rate() {
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
    let s = summary(s, &err);
    assert_eq!(s.requests, 20_000, "every planned request sent: {s:?}");
    assert_eq!(s.dropped, 0);
    assert_eq!(s.statuses["200"], 20_000);
    // Never above the plan; below it only by the time the last sends lag on a loaded
    // machine (the run's wall time includes it: 1968 req/s was seen with the other
    // core compiling), never by requests not sent, which the counts above rule out.
    let rate = s.requests_per_s;
    assert!((1940.0..=2020.0).contains(&rate), "{rate} req/s for 2000");
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
    let s = summary(s, &err);
    let p99 = s.latency_ms.p99;
    let service_p99 = s.service_time_ms.p99;
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
    let s = summary(s, &err);
    assert_eq!(s.requests, 1000);
    assert_eq!(s.statuses["200"], 1000);
}

#[test]
fn the_summary_tells_answered_requests_from_good_ones() {
    let (addr, _rt) = server(false);
    let (code, s, err) = load(&[
        &format!("http://{addr}/mix"),
        "-c",
        "1",
        "-n",
        "300",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let s = summary(s, &err);
    assert_eq!(s.requests, 300, "{s:?}");
    for status in ["200", "404", "503"] {
        assert_eq!(s.statuses[status], 100, "{s:?}");
    }
    let per_s = |rate: f64| rate * s.duration_s;
    // Every answer counts in requests_per_s, only the 2xx and 3xx in ok_per_s, and the
    // availability SLI's good (below 500) in success_ratio.
    assert!((per_s(s.requests_per_s) - 300.0).abs() < 1e-6, "{s:?}");
    assert!((per_s(s.ok_per_s) - 100.0).abs() < 1e-6, "{s:?}");
    assert!((s.success_ratio - 2.0 / 3.0).abs() < 1e-9, "{s:?}");
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
    // Nothing succeeded: the run fails (and its report still counts what happened).
    assert_eq!(code, Some(1), "{err}");
    let s = summary(s, &err);
    assert_eq!(s.errors[&ErrorKind::Connect], 10, "{s:?}");
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

/// Every flag has an upper bound, and the message names it; none of these may start a
/// run (each would otherwise panic, wrap or run for ages).
#[test]
fn absurd_load_flags_are_refused_with_their_limit() {
    let url = "http://127.0.0.1:1/";
    for (args, message) in [
        (
            vec!["-r", "1e300", "-n", "1"],
            "-r must be at most 1000000 requests a second, not 1e300",
        ),
        (
            vec!["-d", "584000000000years"],
            "invalid value '584000000000years' for '--duration <DURATION>': must be at most 24h",
        ),
        (
            vec!["-r", "1e-300", "-n", "10"],
            "-n 10 at -r 1e-300 a second would run longer than 24h",
        ),
        (
            vec!["-c", "50001", "-n", "1"],
            "-c must be at most 50000, not 50001",
        ),
        (
            vec!["-r", "10", "-n", "1", "--max-in-flight", "1000001"],
            "--max-in-flight must be at most 1000000, not 1000001",
        ),
        (
            vec!["-n", "1", "--timeout", "25h"],
            "invalid value '25h' for '--timeout <TIMEOUT>': must be at most 24h",
        ),
        (
            vec!["-n", "86400000001", "-c", "1"],
            "-n must be at most 86400000000, not 86400000001",
        ),
        (
            vec!["-n", "1", "--slo", "latency<25h>=99"],
            "latency threshold `25h` must be at most 24h",
        ),
    ] {
        let mut all = vec![url];
        all.extend(&args);
        let (code, _, err) = load(&all);
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
    let s = summary(s, &err);
    assert!(s.slos[0].met, "{s:?}");
    assert_eq!(s.slos[0].budget_remaining, 1.0);
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
    let s = summary(s, &err);
    assert!(!s.slos[1].met);
    assert_eq!(s.slos[1].sli, Some(0.0));
    // Against a dead port every request fails: availability is missed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, s, err) = load(&[
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
    let s = summary(s, &err);
    assert!(s.slos[0].max_short_burn > 14.4, "{s:?}");
    let (code, _, err) = load(&[&url, "-n", "1", "--slo", "uptime>=99"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown SLI `uptime`"), "{err}");
}

#[test]
fn late_sends_are_blamed_on_a_target_that_holds_every_connection() {
    // One connection and a server that stalls 500 ms a second: sends queue behind the
    // stall, and the note says so rather than blame the generator.
    let (addr, _rt) = server(true);
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "load",
            &format!("http://{addr}/"),
            "-r",
            "200",
            "-d",
            "3s",
            "-c",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("found all 1 connections busy waiting on the target"),
        "{text}"
    );
    assert!(!text.contains("the generator could not keep up"), "{text}");
}
