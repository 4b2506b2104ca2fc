//! Each toxic measured on real sockets, through a real proxy, against a real echo or
//! sink server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_agent::proxy::{Direction, EdgeProxy, HttpMatch, Toxic, ToxicKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A server on 127.0.0.1 that runs `handle` on each connection it accepts.
async fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// An echo server: writes back whatever it reads.
async fn echo_server() -> SocketAddr {
    serve(|mut s| async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

/// A server that sends `n` bytes to each connection, then closes.
async fn source_server(n: usize) -> SocketAddr {
    serve(move |mut s| async move {
        let data = vec![7u8; n];
        let _ = s.write_all(&data).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// A server that streams to each connection without pause until the connection fails.
async fn endless_server() -> SocketAddr {
    serve(|mut s| async move {
        let data = vec![7u8; 64 * 1024];
        while s.write_all(&data).await.is_ok() {}
    })
    .await
}

struct Proxy {
    edge: Arc<EdgeProxy>,
    _stop: tokio_util::sync::DropGuard,
}

async fn proxy_to(target: SocketAddr) -> Proxy {
    let (edge, listener) = EdgeProxy::bind("a", "b-1", "127.0.0.1:0".parse().unwrap(), target)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(edge.clone().run(listener, stop.clone()));
    Proxy {
        edge,
        _stop: stop.drop_guard(),
    }
}

fn toxic(id: &str, direction: Direction, kind: ToxicKind) -> Toxic {
    Toxic {
        id: id.into(),
        direction,
        kind,
        toxicity: 1.0,
        seed: 1,
    }
}

async fn round_trip(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_adds_its_delay_and_reaches_open_connections() {
    let p = proxy_to(echo_server().await).await;
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    s.set_nodelay(true).unwrap();
    let base = median(futures_vec(&mut s, 10).await);
    // Added while the connection is open: its next request is slowed.
    p.edge.add(&[toxic(
        "lat",
        Direction::Upstream,
        ToxicKind::Latency {
            latency: Duration::from_millis(100),
            jitter: Duration::ZERO,
        },
    )]);
    let slow = median(futures_vec(&mut s, 10).await);
    let added = slow.saturating_sub(base);
    assert!(
        added >= Duration::from_millis(95) && added <= Duration::from_millis(105),
        "latency 100 ms added {added:?} at p50 (base {base:?})"
    );
    assert_eq!(p.edge.remove("lat"), 1);
    let after = median(futures_vec(&mut s, 10).await);
    assert!(
        after < Duration::from_millis(20),
        "gone once removed: {after:?}"
    );
}

async fn futures_vec(s: &mut TcpStream, n: usize) -> Vec<Duration> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(round_trip(s).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_holds_the_rate_within_ten_percent() {
    let size = 400 * 1024;
    let p = proxy_to(source_server(size).await).await;
    p.edge.add(&[toxic(
        "bw",
        Direction::Downstream,
        ToxicKind::Bandwidth { rate: 400 * 1024 },
    )]);
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let took = start.elapsed();
    assert_eq!(got.len(), size);
    let rate = size as f64 / took.as_secs_f64();
    let target = 400.0 * 1024.0;
    assert!(
        (rate - target).abs() / target < 0.10,
        "{rate:.0} B/s against {target} B/s"
    );
}

/// A small answer under a low rate arrives as late as its size says, a tenth of a
/// second's worth at a time (Toxiproxy's pacing): the first bytes do not run ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_paces_a_small_answer_from_its_first_byte() {
    let p = proxy_to(source_server(200).await).await;
    p.edge.add(&[toxic(
        "bw",
        Direction::Downstream,
        ToxicKind::Bandwidth { rate: 400 },
    )]);
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    let start = Instant::now();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.unwrap();
    let first_at = start.elapsed();
    let mut got = vec![first[0]];
    s.read_to_end(&mut got).await.unwrap();
    let took = start.elapsed();
    assert_eq!(got.len(), 200);
    // 40 bytes (0.1 s at 400 B/s) before the first byte, 200 bytes in 0.5 s in all.
    assert!(
        first_at >= Duration::from_millis(90),
        "first byte after {first_at:?}"
    );
    assert!(took >= Duration::from_millis(450), "all after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_makes_a_client_with_a_timeout_time_out() {
    let p = proxy_to(echo_server().await).await;
    p.edge.add(&[toxic(
        "bh",
        Direction::Upstream,
        ToxicKind::Timeout { close_after: None },
    )]);
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    let r = tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await;
    assert!(r.is_err(), "the client timed out");
    // With close_after, the held connection is closed.
    p.edge.remove("bh");
    p.edge.add(&[toxic(
        "bh2",
        Direction::Upstream,
        ToxicKind::Timeout {
            close_after: Some(Duration::from_millis(200)),
        },
    )]);
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let start = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_produces_a_connection_reset() {
    let p = proxy_to(echo_server().await).await;
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    round_trip(&mut s).await;
    p.edge.add(&[toxic(
        "rst",
        Direction::Downstream,
        ToxicKind::Reset {
            after: Duration::ZERO,
        },
    )]);
    let mut buf = [0u8; 4];
    let mut err = None;
    // The reset reaches the client on its next write or read, whichever comes first.
    for _ in 0..10 {
        if let Err(e) = s.write_all(b"ping").await {
            err = Some(e);
            break;
        }
        if let Err(e) = s.read(&mut buf).await {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the connection was reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toxic_added_to_a_stream_that_never_pauses_takes_hold() {
    // The pump reads before it looks at its change watcher, so a stream whose data is
    // always waiting must still see a new toxic: the toxics are checked at every chunk.
    // The client reads slower than the server writes (a throttle, not a wait for
    // readiness), so the proxy always finds data ready and waits only on its writes.
    let p = proxy_to(endless_server().await).await;
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut streamed = 0usize;
    while streamed < 4 * 1024 * 1024 {
        streamed += s.read(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    p.edge.add(&[toxic(
        "rst",
        Direction::Downstream,
        ToxicKind::Reset {
            after: Duration::ZERO,
        },
    )]);
    // Bounded: a toxic that never took hold would otherwise stream forever.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the stream went on after the reset toxic was added");
    let err = end.expect_err("the connection was reset, not closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicer_delivers_the_same_bytes_in_smaller_reads() {
    let size = 64 * 1024;
    let p = proxy_to(source_server(size).await).await;
    p.edge.add(&[toxic(
        "sl",
        Direction::Downstream,
        ToxicKind::Slicer {
            average_size: 100,
            size_variation: 50,
            delay: Duration::from_micros(200),
        },
    )]);
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        reads += 1;
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, vec![7u8; size]);
    assert!(reads > 100, "{reads} reads for {size} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_closes_after_the_limit() {
    let p = proxy_to(source_server(100_000).await).await;
    p.edge.add(&[toxic(
        "lim",
        Direction::Downstream,
        ToxicKind::LimitData { bytes: 1000 },
    )]);
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    assert_eq!(got.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_toxic_under_fifty_streams_is_prompt_and_data_flows_again() {
    let p = proxy_to(echo_server().await).await;
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
        round_trip(&mut s).await;
        streams.push(s);
    }
    p.edge.add(&[toxic(
        "slow",
        Direction::Upstream,
        ToxicKind::Latency {
            latency: Duration::from_secs(30),
            jitter: Duration::ZERO,
        },
    )]);
    // Every stream is now stuck behind 30 s of latency.
    let stuck: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let t = round_trip(&mut s).await;
                (s, t)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    assert_eq!(p.edge.remove("slow"), 1);
    assert!(
        start.elapsed() < Duration::from_millis(10),
        "removal returned in {:?}",
        start.elapsed()
    );
    for h in stuck {
        let (_, t) = tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .expect("data flows again")
            .unwrap();
        assert!(t < Duration::from_secs(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxicity_leaves_some_connections_alone() {
    let p = proxy_to(echo_server().await).await;
    let mut t = toxic(
        "half",
        Direction::Upstream,
        ToxicKind::Timeout { close_after: None },
    );
    t.toxicity = 0.5;
    p.edge.add(&[t]);
    let mut held = 0;
    for _ in 0..40 {
        let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        if tokio::time::timeout(Duration::from_millis(100), s.read_exact(&mut buf))
            .await
            .is_err()
        {
            held += 1;
        }
    }
    assert!(
        (10..=30).contains(&held),
        "{held} of 40 held at toxicity 0.5"
    );
}

/// A minimal HTTP server: answers every request with 200 and its path.
async fn http_server() -> SocketAddr {
    serve(|s| async move {
        let io = hyper_util::rt::TokioIo::new(s);
        let svc =
            hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let path = req.uri().path().to_owned();
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(path),
                )))
            });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    })
    .await
}

async fn http_get(s: &mut TcpStream, method: &str, path: &str) -> (u16, String) {
    let body = if method == "POST" { "x=1" } else { "" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed");
        resp.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&resp).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if resp.len() >= end + 4 + len {
                let status = text[9..12].parse().unwrap();
                return (status, text[end + 4..end + 4 + len].to_owned());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_faults_abort_or_delay_matching_requests_on_live_connections() {
    let p = proxy_to(http_server().await).await;
    let mut s = TcpStream::connect(p.edge.listen).await.unwrap();
    assert_eq!(
        http_get(&mut s, "GET", "/api/v1/orders").await,
        (200, "/api/v1/orders".into())
    );
    p.edge.add(&[toxic(
        "abort",
        Direction::Upstream,
        ToxicKind::HttpAbort {
            status: 503,
            percent: 100.0,
            matcher: HttpMatch {
                method: Some("POST".into()),
                path_prefix: Some("/api/v1/orders".into()),
            },
        },
    )]);
    // Same keep-alive connection: the matching request is aborted, the others pass.
    let (status, body) = http_get(&mut s, "POST", "/api/v1/orders").await;
    assert_eq!(status, 503);
    assert!(body.contains("aborted by fault abort"), "{body}");
    assert_eq!(
        http_get(&mut s, "GET", "/api/v1/orders").await,
        (200, "/api/v1/orders".into())
    );
    assert_eq!(
        http_get(&mut s, "POST", "/api/v1/home").await,
        (200, "/api/v1/home".into())
    );
    p.edge.remove("abort");
    assert_eq!(http_get(&mut s, "POST", "/api/v1/orders").await.0, 200);

    p.edge.add(&[toxic(
        "delay",
        Direction::Upstream,
        ToxicKind::HttpDelay {
            delay: Duration::from_millis(200),
            percent: 100.0,
            matcher: HttpMatch {
                method: None,
                path_prefix: Some("/slow".into()),
            },
        },
    )]);
    let start = Instant::now();
    assert_eq!(http_get(&mut s, "GET", "/slow/x").await.0, 200);
    assert!(start.elapsed() >= Duration::from_millis(190));
    let start = Instant::now();
    assert_eq!(http_get(&mut s, "GET", "/fast").await.0, 200);
    assert!(start.elapsed() < Duration::from_millis(100));

    // A share of requests: about half at 50%.
    p.edge.remove("delay");
    p.edge.add(&[toxic(
        "half",
        Direction::Upstream,
        ToxicKind::HttpAbort {
            status: 500,
            percent: 50.0,
            matcher: HttpMatch::default(),
        },
    )]);
    let mut aborted = 0;
    for i in 0..100 {
        if http_get(&mut s, "GET", &format!("/n/{i}")).await.0 == 500 {
            aborted += 1;
        }
    }
    assert!(
        (35..=65).contains(&aborted),
        "{aborted} of 100 aborted at 50%"
    );
}
