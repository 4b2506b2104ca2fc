//! The shop's synchronous path through the gateway, under the real supervisor.

use std::time::{Duration, Instant};

use faultline_tests::Shop;
use faultline_tests::metrics::{sample, sum};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const SECRET_ENV: &str = "SHOP_JWT_SECRET";

async fn get(shop: &Shop, path: &str) -> reqwest::Response {
    shop.http.get(shop.url(path)).send().await.unwrap()
}

fn x_cache(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_products_cache_and_tokens() {
    // A fixed secret lets the test forge tokens the way an attacker would.
    let secret = "test-secret-test-secret-test-secret!";
    let shop = Shop::start(&[(SECRET_ENV, secret)]).await;

    // Wrong password: 401, and no token.
    let resp = shop
        .http
        .post(shop.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "user1", "password": "pass2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let token = shop.login("user42", "pass42").await;

    let resp = get(&shop, "/api/v1/products?page=2&per_page=10").await;
    assert_eq!(resp.status(), 200);
    let page: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    assert_eq!(page["items"][0]["id"], 11);
    assert_eq!(page["total"], 1000);

    let first = get(&shop, "/api/v1/products/77").await;
    assert_eq!(first.status(), 200);
    assert_eq!(x_cache(&first), "MISS");
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["id"], 77);
    let second = get(&shop, "/api/v1/products/77").await;
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.json::<serde_json::Value>().await.unwrap(), body);
    assert_eq!(get(&shop, "/api/v1/products/1001").await.status(), 404);
    assert_eq!(get(&shop, "/api/v1/products/0").await.status(), 404);
    assert_eq!(get(&shop, "/api/v1/nowhere").await.status(), 404);

    // The protected route: a valid token passes; none, a forged, an expired and an
    // `alg: none` token do not.
    let home = |auth: Option<String>| {
        let mut req = shop.http.get(shop.url("/api/v1/home"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let resp = home(Some(format!("Bearer {token}"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let page: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(page["user"], "user42");
    assert_eq!(page["featured"].as_array().unwrap().len(), 4);
    assert_eq!(page["degraded"], serde_json::json!([]));

    assert_eq!(home(None).await.unwrap().status(), 401);
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |exp: u64| serde_json::json!({"sub": "user1", "iat": now - 100, "exp": exp, "iss": "shop-auth"});
    let sign = |key: &str, exp: u64| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(exp),
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let forged = sign("some-other-secret-some-other-secret", now + 600);
    let resp = home(Some(format!("Bearer {forged}"))).await.unwrap();
    assert_eq!(resp.status(), 401);
    let expired = sign(secret, now - 10);
    let resp = home(Some(format!("Bearer {expired}"))).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("expired"),
        "the challenge says why"
    );
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims(now + 600).to_string())
    );
    assert_eq!(
        home(Some(format!("Bearer {none}"))).await.unwrap().status(),
        401
    );
    // The same claims properly signed pass, so the refusals above are about the token.
    let good = sign(secret, now + 600);
    assert_eq!(
        home(Some(format!("Bearer {good}"))).await.unwrap().status(),
        200
    );

    let gw = shop.metrics("gateway-1").await;
    assert_eq!(
        sample(
            &gw,
            "shop_gateway_auth_failures_total",
            &[("reason", "expired")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &gw,
            "shop_gateway_auth_failures_total",
            &[("reason", "missing")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &gw,
            "shop_gateway_auth_failures_total",
            &[("reason", "invalid")]
        ),
        Some(2.0)
    );
    assert!(
        sum(
            &gw,
            "shop_http_requests_total",
            &[("route", "/api/v1/products/{id}"), ("status", "200")]
        ) >= 2.0,
        "requests by route and status:\n{gw}"
    );
    let cdn = shop.metrics("cdn-1").await;
    assert_eq!(
        sample(&cdn, "shop_cdn_lookups_total", &[("result", "hit")]),
        Some(1.0)
    );
    let cache = shop.metrics("cache-1").await;
    assert!(
        sample(&cache, "shop_cache_keys", &[]).unwrap() >= 2.0,
        "{cache}"
    );
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_body_limit() {
    let shop = Shop::start(&[
        ("SHOP_RATE_LIMIT_RPS", "2"),
        ("SHOP_RATE_LIMIT_BURST", "5"),
        ("SHOP_MAX_BODY_BYTES", "1024"),
    ])
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let resp = get(&shop, "/api/v1/products/1").await;
        if resp.status() == 429 {
            retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[200; 5], "the burst passes: {statuses:?}");
    assert!(
        statuses[5..].contains(&429),
        "then the limit bites: {statuses:?}"
    );
    let secs: u64 = retry_after.expect("Retry-After on a 429").parse().unwrap();
    assert!(
        (1..=1).contains(&secs),
        "at 2/s the next token is under a second away: {secs}"
    );

    // Another client (a logged-in user) has its own bucket. Logging in is a request of
    // the anonymous client too, so wait for its bucket first.
    let token = loop {
        let resp = shop
            .http
            .post(shop.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"username": "user3", "password": "pass3"}))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break resp.json::<serde_json::Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        assert_eq!(resp.status(), 429);
        let wait: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(wait)).await;
    };
    let resp = shop
        .http
        .get(shop.url("/api/v1/products/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "a user's bucket is separate from the address's"
    );

    let resp = shop
        .http
        .post(shop.url("/api/v1/auth/login"))
        .bearer_auth(&token)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let gw = shop.metrics("gateway-1").await;
    assert!(sum(&gw, "shop_gateway_rate_limited_total", &[]) >= 1.0);
    assert_eq!(
        sample(&gw, "shop_gateway_body_too_large_total", &[]),
        Some(1.0)
    );
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_content_replica_under_load_loses_no_request() {
    let shop = Shop::start(&[]).await;
    let before = shop.sup.replica_status("content-1").unwrap();
    let mut failures = Vec::new();
    // Every request names a product not read before, so each one reaches content.
    for id in 1..=300u32 {
        if id == 100 {
            shop.sup.kill("content-1", None).await.unwrap();
        }
        let resp = get(&shop, &format!("/api/v1/products/{id}")).await;
        if resp.status() != 200 {
            failures.push((id, resp.status().as_u16()));
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let after = shop
        .sup
        .wait_for("content-1", Duration::from_secs(10), |s| {
            s.restarts == 1 && s.state == faultline_agent::supervisor::ReplicaState::Healthy
        })
        .await
        .expect("the supervisor restarts the killed replica");
    assert_ne!(after.pid, before.pid);
    assert_eq!(after.last_exit.as_deref(), Some("killed by SIGKILL"));
    // The restart shows in the supervisor's status file too.
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shop.sup.run_dir().join("status.json")).unwrap())
            .unwrap();
    let found = faultline_tests::wait_until(Duration::from_secs(5), || {
        let status: serde_json::Value =
            serde_json::from_slice(&std::fs::read(shop.sup.run_dir().join("status.json")).unwrap())
                .unwrap();
        status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "content-1" && r["restarts"] == 1)
    });
    assert!(found, "status.json: {status}");
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_content_down_serves_stale_fails_fast_and_recovers() {
    let shop = Shop::start(&[
        ("SHOP_CDN_TTL", "1s"),
        ("SHOP_CDN_STALE_WHILE_REVALIDATE", "0s"),
        ("SHOP_BREAKER_OPEN_WAIT", "1s"),
    ])
    .await;
    for id in 1..=3 {
        assert_eq!(
            get(&shop, &format!("/api/v1/products/{id}")).await.status(),
            200
        );
    }
    shop.sup.kill("content-1", Some("test")).await.unwrap();
    shop.sup.kill("content-2", Some("test")).await.unwrap();
    for r in ["content-1", "content-2"] {
        shop.sup
            .wait_for(r, Duration::from_secs(5), |s| {
                s.state == faultline_agent::supervisor::ReplicaState::Held
            })
            .await
            .expect("held down");
    }

    // Cached products: served stale once their TTL is over, as long as content is down.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(&shop, "/api/v1/products/1").await;
        assert_eq!(resp.status(), 200, "a cached product never fails");
        if x_cache(&resp) == "STALE" {
            break;
        }
        assert!(Instant::now() < deadline, "never served STALE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Uncached products fail, and fast: no request hangs.
    for id in 500..530 {
        let start = Instant::now();
        let resp = get(&shop, &format!("/api/v1/products/{id}")).await;
        assert!(
            resp.status().is_server_error(),
            "product {id}: {}",
            resp.status()
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "product {id} took {:?}",
            start.elapsed()
        );
    }
    let cdn = shop.metrics("cdn-1").await;
    assert_eq!(
        sample(
            &cdn,
            "shop_upstream_breaker_state",
            &[("upstream", "content")]
        ),
        Some(1.0),
        "the cdn's breaker for content is open:\n{cdn}"
    );
    assert!(
        sum(
            &cdn,
            "shop_upstream_breaker_rejections_total",
            &[("upstream", "content")]
        ) >= 1.0
    );
    // The gateway sees the cdn blame content, so its own breaker for the cdn stays
    // closed and the stale pages keep flowing.
    let gw = shop.metrics("gateway-1").await;
    assert_eq!(
        sample(&gw, "shop_upstream_breaker_state", &[("upstream", "cdn")]),
        Some(0.0)
    );
    assert!(
        sum(
            &gw,
            "shop_upstream_tries_total",
            &[("upstream", "cdn"), ("outcome", "dependency_failure")]
        ) >= 30.0
    );
    let resp = get(&shop, "/api/v1/products/2").await;
    assert_eq!(
        (resp.status().as_u16(), x_cache(&resp).as_str()),
        (200, "STALE")
    );

    shop.sup.release("content-1", "test").await.unwrap();
    shop.sup.release("content-2", "test").await.unwrap();
    // The breaker half-opens after its wait and closes on successful trial calls.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 600;
    loop {
        id += 1;
        let ok = get(&shop, &format!("/api/v1/products/{id}")).await.status() == 200;
        let cdn = shop.metrics("cdn-1").await;
        if ok
            && sample(
                &cdn,
                "shop_upstream_breaker_state",
                &[("upstream", "content")],
            ) == Some(0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never closed:\n{cdn}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_reads_survive_the_cache_going_down() {
    let shop = Shop::start(&[]).await;
    shop.sup.kill("cache-1", Some("test")).await.unwrap();
    shop.sup
        .wait_for("cache-1", Duration::from_secs(5), |s| {
            s.state == faultline_agent::supervisor::ReplicaState::Held
        })
        .await
        .unwrap();
    for id in 1..=40 {
        let resp = get(&shop, &format!("/api/v1/products/{id}")).await;
        assert_eq!(resp.status(), 200, "product {id}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["id"], id);
    }
    let page = get(&shop, "/api/v1/products?page=3").await;
    assert_eq!(page.status(), 200);
    let errors: f64 = sum(
        &shop.metrics("content-1").await,
        "shop_content_cache_lookups_total",
        &[("result", "error")],
    ) + sum(
        &shop.metrics("content-2").await,
        "shop_content_cache_lookups_total",
        &[("result", "error")],
    );
    assert!(
        errors >= 40.0,
        "content read past the dead cache {errors} times"
    );
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_working_while_every_auth_replica_is_down() {
    let shop = Shop::start(&[]).await;
    let token = shop.login("user7", "pass7").await;
    shop.sup.kill("auth-1", Some("test")).await.unwrap();
    shop.sup.kill("auth-2", Some("test")).await.unwrap();
    for r in ["auth-1", "auth-2"] {
        shop.sup
            .wait_for(r, Duration::from_secs(5), |s| {
                s.state == faultline_agent::supervisor::ReplicaState::Held
            })
            .await
            .unwrap();
    }
    let login = shop
        .http
        .post(shop.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "user8", "password": "pass8"}))
        .send()
        .await
        .unwrap();
    assert!(
        login.status().is_server_error(),
        "no one can log in: {}",
        login.status()
    );
    for _ in 0..5 {
        let resp = shop
            .http
            .get(shop.url("/api/v1/home"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_stops_work_downstream() {
    // Every catalog read takes 3 s; the client allows 300 ms.
    let shop = Shop::start(&[("SHOP_DB_LATENCY", "3s"), ("SHOP_PER_TRY_TIMEOUT", "10s")]).await;
    let start = Instant::now();
    let resp = shop
        .http
        .get(shop.url("/api/v1/products/5"))
        .header("x-timeout-ms", "300")
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}, not at the deadline"
    );
    // Content itself stopped at the propagated deadline rather than finishing its 3 s
    // read: it answered 504 at its deadline, or its caller (the cdn, also at the
    // deadline) hung up first and the request was dropped, recorded as 499. It learns
    // of the deadline a hop later than the gateway, so look until it is recorded.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut stopped = 0.0;
        for r in ["content-1", "content-2"] {
            let m = shop.metrics(r).await;
            for status in ["504", "499"] {
                stopped += sum(
                    &m,
                    "shop_http_requests_total",
                    &[("route", "/api/v1/products/{id}"), ("status", status)],
                );
            }
        }
        if stopped >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "content worked past the deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_is_retried_around_and_ejected() {
    // The cdn gives up on a try to content after 250 ms; the gateway leaves it room to
    // retry (a caller's per-try timeout must exceed its callee's, or the propagated
    // deadline leaves the callee no time for a second try).
    let shop = Shop::start_with_args(
        &[("SHOP_PER_TRY_TIMEOUT", "250ms"), ("SHOP_EJECT_AFTER", "2")],
        "gateway",
        &["--per-try-timeout", "3s"],
    )
    .await;
    shop.sup.pause("content-2", "test").await.unwrap();
    for id in 1..=30 {
        let resp = get(&shop, &format!("/api/v1/products/{id}")).await;
        assert_eq!(resp.status(), 200, "product {id}");
    }
    let cdn = shop.metrics("cdn-1").await;
    assert!(
        sum(
            &cdn,
            "shop_upstream_retries_total",
            &[("upstream", "content")]
        ) >= 1.0,
        "{cdn}"
    );
    assert!(
        sum(
            &cdn,
            "shop_upstream_ejections_total",
            &[("upstream", "content")]
        ) >= 1.0,
        "{cdn}"
    );
    shop.sup.resume("content-2", "test").await.unwrap();
    shop.sup.shutdown().await;
}
