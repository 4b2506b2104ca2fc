//! The shop against careless and hostile clients, through real processes and sockets:
//! one client's bad input never hurts another client, and every error it answers is in
//! its JSON shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use faultline_tests::Shop;
use faultline_tests::metrics::sum;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
