//! The shop against careless and hostile clients, through real processes and sockets:
//! every error it answers is in its JSON shape.

use faultline_tests::Shop;

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
