//! The shop against careless and hostile clients, through real processes and sockets:
//! one client's bad input never hurts another client; its servers close half-sent
//! heads and idle connections, and refuse connections over their cap, but never cut a
//! request in flight; every error it answers is in its JSON shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use faultline_tests::Shop;
use faultline_tests::metrics::{sample, sum};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The gateway's `host:port`.
fn gateway_addr(shop: &Shop) -> String {
    shop.gateway.trim_start_matches("http://").to_owned()
}

/// Sends `request` as written on a fresh connection and reads until the server closes
/// it; the request should say `Connection: close`.
async fn raw_exchange(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 answer.
fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// Order ids no order can have, in the shapes a careless or hostile client sends, as
/// they appear in the request's path.
fn malformed_ids() -> Vec<String> {
    vec![
        "x%20y".into(),
        "ord_%20".into(),
        "%00".into(),
        "ord_%00%00".into(),
        "a%0D%0AX-Injected:%201".into(),
        "a".repeat(8000),
        format!("ord_{}", "%20".repeat(500)),
        // reqwest percent-encodes what is not ASCII.
        "ord_\u{2603}\u{1F600}".into(),
        "%FF%FE".into(),
        "..%2F..%2Fidem".into(),
        "ord_..".into(),
    ]
}

/// One GET of a malformed id: reqwest for most, a raw request for `..` (reqwest would
/// resolve the dot segment before sending).
async fn get_malformed(shop: &Shop, token: &str, i: usize, ids: &[String]) -> (u16, String) {
    let which = i % (ids.len() + 1);
    if which == ids.len() {
        let req = format!(
            "GET /api/v1/orders/.. HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw_exchange(&gateway_addr(shop), &req).await;
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        return (status_of(&answer), body);
    }
    let resp = shop
        .http
        .get(shop.url(&format!("/api/v1/orders/{}", ids[which])))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// What the well-behaved user saw.
#[derive(Default, Debug)]
struct Seen {
    created: usize,
    listed: usize,
    server_errors: Vec<(String, u16, String)>,
}

/// Creates and lists orders until `stop`, then for `tail` more rounds.
async fn create_and_list(shop: Arc<Shop>, token: String, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut tail = 25;
    let mut n = 0;
    while tail > 0 {
        if stop.load(Ordering::Relaxed) {
            tail -= 1;
        }
        n += 1;
        let items = json!([{ "product_id": 1 + n % 40, "quantity": 1 }]);
        let (status, body, _) = shop.order(&token, &format!("victim-{n}"), items).await;
        match status {
            201 => seen.created += 1,
            s if s >= 500 => seen
                .server_errors
                .push(("create".into(), s, body.to_string())),
            _ => {}
        }
        let resp = shop
            .http
            .get(shop.url("/api/v1/orders?limit=5"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        match status {
            200 => seen.listed += 1,
            s if s >= 500 => {
                let body = resp.text().await.unwrap_or_default();
                seen.server_errors.push(("list".into(), s, body));
            }
            _ => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_order_ids_from_one_user_hurt_no_other_user() {
    let shop = Arc::new(Shop::start(&[]).await);
    let attacker = shop.login("user1", "pass1").await;
    // Users are sharded by a hash of their name: user3 shares user1's store shard, so
    // it is the user the attacker's traffic would hurt through that shard's breakers.
    let victim = shop.login("user3", "pass3").await;
    let stop = Arc::new(AtomicBool::new(false));
    let victim = tokio::spawn(create_and_list(shop.clone(), victim, stop.clone()));

    let ids = malformed_ids();
    let answers: Vec<(u16, String)> = futures::stream::iter(0..1000)
        .map(|i| {
            let (shop, attacker, ids) = (&shop, &attacker, &ids);
            async move { get_malformed(shop, attacker, i, ids).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    stop.store(true, Ordering::Relaxed);
    let seen = victim.await.unwrap();

    assert!(
        seen.server_errors.is_empty(),
        "the other user got {} server errors ({} created, {} listed): {:?}",
        seen.server_errors.len(),
        seen.created,
        seen.listed,
        &seen.server_errors[..seen.server_errors.len().min(5)]
    );
    assert!(seen.created > 0 && seen.listed > 0, "{seen:?}");
    for replica in ["orders-1", "orders-2", "orders-3"] {
        let m = shop.metrics(replica).await;
        for upstream in ["store-primary", "store-replica"] {
            let labels = [("upstream", upstream)];
            let transitions = sum(&m, "shop_upstream_breaker_transitions_total", &labels);
            let ejections = sum(&m, "shop_upstream_ejections_total", &labels);
            assert_eq!(
                (transitions, ejections),
                (0.0, 0.0),
                "{replica}'s {upstream} breaker changed state or ejected an endpoint"
            );
        }
    }
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, body)| {
            !matches!(status, 400 | 404)
                || serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .is_none()
        })
        .collect();
    assert!(
        refused.is_empty(),
        "every malformed id is a 400 or 404 in the JSON error shape: {:?}",
        &refused[..refused.len().min(5)]
    );
    shop.sup.shutdown().await;
}

/// Checks that `resp` is an error of `status` in the shop's JSON shape.
async fn check_json_error(what: &str, resp: reqwest::Response, status: u16) {
    assert_eq!(resp.status().as_u16(), status, "{what}");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {content_type}"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_the_shop_answers_is_json() {
    let shop = Shop::start(&[]).await;
    let token = shop.login("user2", "pass2").await;
    let http = &shop.http;
    // Through the gateway: rejections and a 405 made by the services behind it.
    let resp = http
        .get(shop.url("/api/v1/orders?limit=many"))
        .bearer_auth(&token);
    check_json_error(
        "a query that does not parse",
        resp.send().await.unwrap(),
        400,
    )
    .await;
    let resp = http.get(shop.url("/api/v1/orders/%FF")).bearer_auth(&token);
    check_json_error("a path that is not UTF-8", resp.send().await.unwrap(), 400).await;
    let resp = http.get(shop.url("/api/v1/products?per_page=-1"));
    check_json_error("a bad page size", resp.send().await.unwrap(), 400).await;
    let resp = http.delete(shop.url("/api/v1/home")).bearer_auth(&token);
    let resp = resp.send().await.unwrap();
    assert!(
        resp.headers().contains_key("allow"),
        "a 405 says what is allowed"
    );
    check_json_error("a method the api does not take", resp, 405).await;
    // The gateway's own routes.
    let resp = http.post(shop.url("/health")).send().await.unwrap();
    check_json_error("a POST of /health", resp, 405).await;
    // The services' internal APIs.
    let store = |path: &str| shop.replica_url("store-primary-1", path);
    let resp = http.get(store("/v1/scan?limit=x")).send().await.unwrap();
    check_json_error("a store scan with a bad limit", resp, 400).await;
    let resp = http.put(store("/v1/batch")).send().await.unwrap();
    check_json_error("a PUT of a store batch", resp, 405).await;
    let resp = http
        .post(store("/v1/batch"))
        .header("content-type", "text/plain")
        .body("{}");
    check_json_error("a batch that is not JSON", resp.send().await.unwrap(), 400).await;
    let cache = shop.replica_url("cache-1", "/v1/keys/nothing-here");
    check_json_error("a cache miss", http.get(cache).send().await.unwrap(), 404).await;
    let broker = shop.replica_url("broker-1", "/v1/queues/payments/send");
    let resp = http.post(broker).body("not json").send().await.unwrap();
    check_json_error("a broker send that is not JSON", resp, 400).await;
    shop.sup.shutdown().await;
}

/// A raw HTTP/1.1 connection, kept alive between requests, to watch what the server
/// does with it.
struct Conn {
    io: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        Conn {
            io: BufReader::new(stream),
        }
    }

    /// Writes `bytes`; false when the server has closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        let s = self.io.get_mut();
        s.write_all(bytes).await.is_ok() && s.flush().await.is_ok()
    }

    /// Reads one answer: its status, or `None` when the server closed the connection
    /// instead.
    async fn answer(&mut self) -> Option<u16> {
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(15), self.io.read_line(&mut line));
        if read.await.expect("an answer or a close").unwrap_or(0) == 0 {
            return None;
        }
        let status = status_of(&line);
        let mut length = 0;
        loop {
            line.clear();
            self.io.read_line(&mut line).await.unwrap();
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.io.read_exact(&mut body).await.unwrap();
        Some(status)
    }

    /// GETs `path` on this connection.
    async fn get(&mut self, path: &str) -> Option<u16> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n");
        if !self.send(request.as_bytes()).await {
            return None;
        }
        self.answer().await
    }

    /// Waits for the server to close the connection, sending nothing; returns how long
    /// that took from `since`.
    async fn closed_after(&mut self, since: Instant) -> Duration {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(20), self.io.read(&mut byte));
        match read.await {
            Ok(Ok(0)) | Ok(Err(_)) => since.elapsed(),
            Ok(Ok(_)) => panic!("the server sent bytes instead of closing"),
            Err(_) => panic!("the connection is still open after 20 s"),
        }
    }
}

/// A client whose pooled connections go unused at most 500 ms: shorter than the idle
/// timeouts under test, so that the client, not the server, closes idle connections.
fn short_pool_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// Logs in, orders, lists and reads the home page through `url`, each answered 2xx.
async fn shop_traffic(client: &reqwest::Client, url: &str) {
    let login = json!({ "username": "user5", "password": "pass5" });
    let resp = client.post(format!("{url}/api/v1/auth/login")).json(&login);
    let body: serde_json::Value = resp.send().await.unwrap().json().await.unwrap();
    let token = body["token"].as_str().expect("a token").to_owned();
    let order = client
        .post(format!("{url}/api/v1/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "limits-1")
        .json(&json!({ "items": [{ "product_id": 7, "quantity": 1 }] }));
    assert_eq!(order.send().await.unwrap().status(), 201);
    for path in ["/api/v1/orders", "/api/v1/home", "/api/v1/products/7"] {
        let resp = client.get(format!("{url}{path}")).bearer_auth(&token);
        assert_eq!(resp.send().await.unwrap().status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_and_idle_connections_are_closed_but_no_request_in_flight() {
    let limits = ["--header-read-timeout", "1s", "--idle-timeout", "3s"];
    let shop = Shop::start_with_args(&[], "gateway", &limits).await;
    let addr = gateway_addr(&shop);

    // Half a head, and nothing at all: closed after the header-read timeout, well
    // before the idle timeout.
    let opened = Instant::now();
    let mut half = Conn::open(&addr).await;
    let mut silent = Conn::open(&addr).await;
    assert!(
        half.send(b"GET /api/v1/products/1 HTTP/1.1\r\nHost: shop\r\n")
            .await
    );
    for (what, conn) in [("half a head", &mut half), ("nothing", &mut silent)] {
        let waited = conn.closed_after(opened).await;
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_millis(2800),
            "a connection that sent {what} was closed after {waited:?}"
        );
    }

    // Idle between requests for longer than the header-read timeout: still open; then
    // closed once idle for the idle timeout.
    let mut conn = Conn::open(&addr).await;
    assert_eq!(conn.get("/api/v1/products/1").await, Some(200));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        conn.get("/api/v1/products/2").await,
        Some(200),
        "an idle connection outlives the header-read timeout"
    );
    let idle = conn.closed_after(Instant::now()).await;
    assert!(
        idle >= Duration::from_millis(2800) && idle < Duration::from_secs(8),
        "the idle connection was closed after {idle:?}"
    );

    // A request whose body comes slowly is in flight: neither timeout cuts it, though
    // it lasts longer than both and its body pauses longer than the header-read one.
    let body = br#"{"username":"user4","password":"pass4"}"#;
    let mut slow = Conn::open(&addr).await;
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    assert!(slow.send(head.as_bytes()).await);
    for piece in body.chunks(body.len() / 3 + 1) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(slow.send(piece).await, "the connection was cut mid-request");
    }
    assert_eq!(slow.answer().await, Some(200));

    let client = short_pool_client();
    shop_traffic(&client, &shop.gateway).await;
    let metrics = client.get(shop.replica_url("gateway-1", "/metrics"));
    let m = metrics.send().await.unwrap().text().await.unwrap();
    let timed_out = |reason| {
        let labels = [("reason", reason)];
        sample(&m, "shop_http_connections_timed_out_total", &labels).unwrap_or(0.0)
    };
    assert!(timed_out("header_read") >= 2.0, "{m}");
    assert!(timed_out("idle") >= 1.0, "{m}");
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_connection_cap_the_gateway_refuses_at_once_and_then_recovers() {
    let cap = 6;
    let shop = Shop::start_with_args(&[], "gateway", &["--max-connections", "6"]).await;
    let addr = gateway_addr(&shop);
    // Fill the cap with idle keep-alive connections. The supervisor's health probe may
    // hold a slot for a moment, so open them until one is refused.
    let mut held = Vec::new();
    loop {
        let mut conn = Conn::open(&addr).await;
        match conn.get("/health").await {
            Some(200) => held.push(conn),
            None => break,
            Some(other) => panic!("/health answered {other}"),
        }
        assert!(
            held.len() <= cap,
            "more connections than the cap were served"
        );
    }
    assert!(held.len() + 1 >= cap, "only {} connections fit", held.len());

    let start = Instant::now();
    let mut extra = Conn::open(&addr).await;
    assert_eq!(extra.get("/health").await, None, "over the cap");
    let refused_in = start.elapsed();
    assert!(
        refused_in < Duration::from_secs(2),
        "refused after {refused_in:?}"
    );
    for conn in &mut held {
        let status = conn.get("/api/v1/products/1").await;
        assert_eq!(status, Some(200), "the held connections are still served");
    }

    drop(held);
    let client = short_pool_client();
    let end = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let scrape = client.get(shop.replica_url("gateway-1", "/metrics")).send();
        if let Ok(resp) = scrape.await {
            break resp.text().await.unwrap();
        }
        assert!(Instant::now() < end, "the gateway never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let refused = sample(&m, "shop_http_connections_refused_total", &[]);
    assert!(refused.unwrap_or(0.0) >= 2.0, "{m}");
    let open = sample(&m, "shop_http_connections_open", &[]).unwrap_or(0.0);
    assert!((1.0..=3.0).contains(&open), "{open} connections open: {m}");
    shop_traffic(&client, &shop.gateway).await;
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_the_gateway_stops_accepting_and_finishes_the_request_in_flight() {
    let shop = Shop::start(&[]).await;
    let addr = gateway_addr(&shop);
    let body = br#"{"username":"user4","password":"pass4"}"#;
    let (first, rest) = body.split_at(body.len() / 2);
    let mut slow = Conn::open(&addr).await;
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    assert!(slow.send(head.as_bytes()).await && slow.send(first).await);
    shop.sup.terminate("gateway-1", Some("test")).await.unwrap();
    // The gateway is shutting down once its listener is gone.
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(
            Instant::now() < end,
            "the gateway still accepts after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(slow.send(rest).await, "the request in flight was cut");
    assert_eq!(
        slow.answer().await,
        Some(200),
        "the request in flight is answered"
    );
    slow.closed_after(Instant::now()).await;
    shop.sup.shutdown().await;
}
