//! The shop's data and asynchronous path under real SIGKILLs, pauses and outages, judged
//! by its invariants: no acknowledged order lost, every order terminal, no double
//! charge, only poison in the dead-letter queues. Each unsafe switch is shown to break
//! the invariant its protection guards.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultline::shop::broker_messages;
use faultline::shop::invariants::{AUDIT_ORDERS, PENDING, POISON_ATTRIBUTE, POISON_INJECTED};
use faultline_agent::supervisor::ReplicaState;
use faultline_tests::Shop;
use faultline_tests::invariants::{Violations, settle};
use faultline_tests::metrics::sum;
use serde_json::json;

pub(crate) const SETTLE: Duration = Duration::from_secs(30);

async fn wait_for_state(shop: &Shop, replica: &str, state: ReplicaState) {
    shop.sup
        .wait_for(replica, Duration::from_secs(20), |s| s.state == state)
        .await
        .unwrap_or_else(|| panic!("{replica} never became {state:?}"));
}

/// Clients creating orders until `stop`; returns the ids that got a 201.
pub(crate) fn stream_orders(
    shop: &Arc<Shop>,
    tokens: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeSet<String>> {
    let shop = shop.clone();
    tokio::spawn(async move {
        let clients = tokens.into_iter().enumerate().map(|(c, token)| {
            let shop = shop.clone();
            let stop = stop.clone();
            async move {
                let mut acked = BTreeSet::new();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let items = json!([{ "product_id": 1 + (n * 7 + c as u32) % 50, "quantity": 1 + n % 3 }]);
                    let (status, body, _) = shop.order(&token, &format!("c{c}-{n}"), items).await;
                    if status == 201 {
                        acked.insert(body["order_id"].as_str().unwrap().to_owned());
                    }
                }
                acked
            }
        });
        futures::future::join_all(clients)
            .await
            .into_iter()
            .flatten()
            .collect()
    })
}

/// Waits until the sum of metric `name` on `replica` reaches `at_least`.
async fn wait_metric(shop: &Shop, replica: &str, name: &str, at_least: f64, what: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    // A replica that does not answer (restarting again under a loaded machine) counts
    // as not there yet.
    while shop
        .try_metrics(replica)
        .await
        .is_none_or(|m| sum(&m, name, &[]) < at_least)
    {
        assert!(Instant::now() < end, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes acknowledged by the members of `shard` that can lead it (a member that
/// does not answer counts 0).
pub(crate) async fn shard_batches(shop: &Shop, shard: usize) -> f64 {
    let mut n = 0.0;
    for seat in ["store-primary", "store-replica"] {
        if let Some(m) = shop.try_metrics(&format!("{seat}-{shard}")).await {
            n += sum(&m, "shop_store_batches_total", &[]);
        }
    }
    n
}

/// Waits until `shard`'s members have acknowledged `at_least` writes.
pub(crate) async fn wait_shard_batches(shop: &Shop, shard: usize, at_least: f64, what: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while shard_batches(shop, shard).await < at_least {
        assert!(Instant::now() < end, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn tokens(shop: &Shop, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(shop.login(&format!("user{i}"), &format!("pass{i}")).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_paid_notified_and_shown_on_the_home_page() {
    let shop = Shop::start(&[]).await;
    let token = shop.login("user5", "pass5").await;
    let (status, body, _) = shop
        .order(&token, "first", json!([{"product_id": 3, "quantity": 2}]))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], PENDING);
    let id = body["order_id"].as_str().unwrap().to_owned();

    let start = Instant::now();
    let order = loop {
        let resp = shop
            .http
            .get(shop.url(&format!("/api/v1/orders/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let order: serde_json::Value = resp.json().await.unwrap();
        if order["status"] != PENDING {
            break order;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still pending: {order}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(order["status"], "paid");
    assert_eq!(order["amount_cents"], body["amount_cents"]);
    assert!(order["charge_id"].as_str().unwrap().starts_with("ch_"));

    // Someone else cannot see it.
    let other = shop.login("user6", "pass6").await;
    let resp = shop
        .http
        .get(shop.url(&format!("/api/v1/orders/{id}")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let end = Instant::now() + Duration::from_secs(10);
    let mut found = false;
    while !found && Instant::now() < end {
        let sent = shop.internal("notifications-1", "/v1/sent").await;
        found = sent["sent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["order_id"] == id.as_str() && n["outcome"] == "paid");
        if !found {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(found, "a notification was recorded");

    let home: serde_json::Value = shop
        .http
        .get(shop.url("/api/v1/home"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(home["recent_orders"][0]["order_id"], id.as_str(), "{home}");
    assert_eq!(home["degraded"], json!([]));

    // The documented decline rule: the bank declines charges over $10,000.
    let page: serde_json::Value = shop
        .http
        .get(shop.url("/api/v1/products?per_page=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pricey = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["price_cents"].as_u64().unwrap() > 10_100)
        .unwrap();
    let (status, body, _) = shop
        .order(
            &token,
            "big",
            json!([{"product_id": pricey["id"], "quantity": 100}]),
        )
        .await;
    assert_eq!(status, 201);
    let acked = BTreeSet::from([id.clone(), body["order_id"].as_str().unwrap().to_owned()]);
    assert!(settle(&shop, &acked, SETTLE).await.is_empty());
    let audit = shop.internal("orders-1", AUDIT_ORDERS).await;
    let big = audit["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["order_id"] == body["order_id"])
        .unwrap();
    assert_eq!(big["status"], "failed");
    shop.sup.shutdown().await;
}

/// Finds whether an idempotency key has been claimed on either store primary.
async fn claimed(shop: &Shop, user: &str, key: &str) -> bool {
    for p in ["store-primary-1", "store-primary-2"] {
        let resp = shop
            .http
            .get(shop.replica_url(p, &format!("/v1/keys/idem/{user}/{key}")))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_replays_refuses_other_bodies_and_concurrent_repeats() {
    // Pricing a product not cached yet reads the catalog, which takes 1.5 s here: long
    // enough to send a second request while the first holds its key.
    let shop = Arc::new(
        Shop::start(&[
            ("SHOP_DB_LATENCY", "1500ms"),
            ("SHOP_PER_TRY_TIMEOUT", "5s"),
        ])
        .await,
    );
    let token = shop.login("user9", "pass9").await;
    let items = json!([{"product_id": 42, "quantity": 1}]);

    let first = {
        let (shop, token, items) = (shop.clone(), token.clone(), items.clone());
        tokio::spawn(async move { shop.order(&token, "k1", items).await })
    };
    let end = Instant::now() + Duration::from_secs(10);
    while !claimed(&shop, "user9", "k1").await {
        assert!(
            Instant::now() < end,
            "the first request never claimed its key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body, _) = shop.order(&token, "k1", items.clone()).await;
    assert_eq!(status, 409, "a repeat while the first runs: {body}");

    let (status, body, headers) = first.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(!headers.contains_key("idempotent-replayed"));
    let (status, replay, headers) = shop.order(&token, "k1", items.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(replay, body, "the stored answer is replayed");
    assert_eq!(headers["idempotent-replayed"], "true");

    let (status, err, _) = shop
        .order(&token, "k1", json!([{"product_id": 42, "quantity": 2}]))
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("different request body")
    );

    // The same key of another user is another key.
    let other = shop.login("user10", "pass10").await;
    let (status, _, headers) = shop.order(&other, "k1", items.clone()).await;
    assert_eq!(status, 201);
    assert!(!headers.contains_key("idempotent-replayed"));

    let resp = shop
        .http
        .post(shop.url("/api/v1/orders"))
        .bearer_auth(&token)
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "the key is required");
    let resp = shop
        .http
        .post(shop.url("/api/v1/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "k9")
        .json(&json!({"items": [{"product_id": 5000, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422, "unknown product");

    let audit = shop.internal("orders-1", AUDIT_ORDERS).await;
    let mine = audit["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["user"] == "user9")
        .count();
    assert_eq!(mine, 1, "one order for one key, however many requests");
    shop.sup.shutdown().await;
}

/// Streams orders, SIGKILLs both store primaries once orders flow, and returns what the
/// invariants say after the system settles.
async fn kill_store_primaries_under_load(env: &[(&str, &str)]) -> (Violations, usize) {
    let shop = Arc::new(Shop::start(env).await);
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_orders(&shop, tokens(&shop, 8).await, stop.clone());
    wait_shard_batches(&shop, 1, 60.0, "orders are not flowing").await;
    shop.sup.kill("store-primary-1", None).await.unwrap();
    shop.sup.kill("store-primary-2", None).await.unwrap();
    for p in ["store-primary-1", "store-primary-2"] {
        shop.sup
            .wait_for(p, Duration::from_secs(20), |s| {
                s.restarts == 1 && s.state == ReplicaState::Healthy
            })
            .await
            .expect("restarted");
    }
    // Keep ordering a little after the restart (on whichever member leads now), then
    // stop.
    let before = shard_batches(&shop, 1).await;
    wait_shard_batches(&shop, 1, before + 30.0, "orders did not resume").await;
    stop.store(true, Ordering::Relaxed);
    let acked = stream.await.unwrap();
    let v = settle(&shop, &acked, SETTLE).await;
    shop.sup.shutdown().await;
    (v, acked.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_store_primaries_loses_no_acknowledged_order() {
    let (v, acked) = kill_store_primaries_under_load(&[]).await;
    assert!(acked > 50, "only {acked} orders acknowledged");
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_a_sigkill_loses_acknowledged_orders() {
    let (v, _) = kill_store_primaries_under_load(&[("SHOP_UNSAFE_NO_FSYNC", "1")]).await;
    assert!(
        !v.lost.is_empty(),
        "the checker must see lost orders: {v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_broker_loses_nothing_and_redelivers_in_flight_messages() {
    let shop = Shop::start_text(
        r#"
entrypoint = "broker"
[services.broker]
command = ["shop", "broker", "--listen", "{listen}", "--data-dir", "{run_dir}/data", "--queue", "jobs:visibility=2s"]
"#,
        &[],
    )
    .await;
    let url = |p: &str| shop.replica_url("broker-1", p);
    let mut sent = BTreeSet::new();
    for i in 0..200 {
        let resp: serde_json::Value = shop
            .http
            .post(url("/v1/queues/jobs/send"))
            .json(&json!({"body": format!("job {i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sent.insert(resp["message_id"].as_str().unwrap().to_owned());
    }
    // Take 50 without deleting them: they are in flight when the broker dies.
    let mut in_flight = BTreeSet::new();
    while in_flight.len() < 50 {
        let got: serde_json::Value = shop
            .http
            .post(url("/v1/queues/jobs/receive"))
            .json(&json!({"max_messages": 10}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in got["messages"].as_array().unwrap() {
            in_flight.insert(m["message_id"].as_str().unwrap().to_owned());
        }
    }
    shop.sup.kill("broker-1", None).await.unwrap();
    shop.sup
        .wait_for("broker-1", Duration::from_secs(20), |s| {
            s.restarts == 1 && s.state == ReplicaState::Healthy
        })
        .await
        .expect("the broker restarts");
    let stats: serde_json::Value = shop
        .http
        .get(url("/v1/queues/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["visible"].as_u64().unwrap() + stats["in_flight"].as_u64().unwrap(),
        200,
        "{stats}"
    );

    // Drain: every acknowledged message comes back, the in-flight ones once their
    // visibility timeout (kept across the crash) passes.
    let mut received = BTreeSet::new();
    let mut redelivered = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs(20);
    while received.len() < sent.len() {
        assert!(
            Instant::now() < end,
            "{} of {} messages came back",
            received.len(),
            sent.len()
        );
        let got: serde_json::Value = shop
            .http
            .post(url("/v1/queues/jobs/receive"))
            .json(&json!({"max_messages": 10, "wait_ms": 1000}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for m in got["messages"].as_array().unwrap() {
            let id = m["message_id"].as_str().unwrap().to_owned();
            if m["receive_count"] == 2 {
                redelivered.insert(id.clone());
            }
            let resp = shop
                .http
                .post(url("/v1/queues/jobs/delete"))
                .json(&json!({"receipt_handle": m["receipt_handle"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            received.insert(id);
        }
    }
    assert_eq!(received, sent);
    assert_eq!(
        redelivered, in_flight,
        "exactly the in-flight messages were delivered a second time"
    );
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_broker_in_the_shop_loses_no_order() {
    let shop = Arc::new(Shop::start(&[("SHOP_BROKER_VISIBILITY", "3s")]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_orders(&shop, tokens(&shop, 6).await, stop.clone());
    wait_metric(
        &shop,
        "broker-1",
        "shop_broker_deletes_total",
        30.0,
        "messages are not flowing",
    )
    .await;
    shop.sup.kill("broker-1", None).await.unwrap();
    shop.sup
        .wait_for("broker-1", Duration::from_secs(20), |s| {
            s.restarts == 1 && s.state == ReplicaState::Healthy
        })
        .await
        .expect("restarted");
    wait_metric(
        &shop,
        "broker-1",
        "shop_broker_deletes_total",
        30.0,
        "messages did not resume",
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let acked = stream.await.unwrap();
    let v = settle(&shop, &acked, SETTLE).await;
    assert!(v.is_empty(), "{v:?}");
    shop.sup.shutdown().await;
}

/// Creates orders while every charge takes a second, SIGKILLs both payments replicas
/// while charges are in flight, and returns the invariants' verdict and how many charges
/// the bank answered from its idempotency records.
async fn kill_payments_mid_charge(env: &[(&str, &str)]) -> (Violations, f64) {
    let mut env = env.to_vec();
    env.extend([
        ("SHOP_BANK_LATENCY", "1s"),
        ("SHOP_BROKER_VISIBILITY", "2s"),
    ]);
    let shop = Shop::start(&env).await;
    let token = shop.login("user11", "pass11").await;
    let mut acked = BTreeSet::new();
    for i in 0..8 {
        let (status, body, _) = shop
            .order(
                &token,
                &format!("p{i}"),
                json!([{"product_id": 10 + i, "quantity": 1}]),
            )
            .await;
        assert_eq!(status, 201);
        acked.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    // Payments has taken messages and is waiting on the bank.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let q = shop.internal("broker-1", "/v1/queues/payments").await;
        if q["in_flight"].as_u64().unwrap() >= 4 {
            break;
        }
        assert!(
            Instant::now() < end,
            "payments never took the messages: {q}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shop.sup.kill("payments-1", None).await.unwrap();
    shop.sup.kill("payments-2", None).await.unwrap();
    let v = settle(&shop, &acked, SETTLE).await;
    let replayed = sum(
        &shop.metrics("bank-1").await,
        "shop_bank_charges_total",
        &[("result", "replayed")],
    );
    shop.sup.shutdown().await;
    (v, replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_payments_mid_charge_charges_no_order_twice() {
    let (v, replayed) = kill_payments_mid_charge(&[]).await;
    assert!(v.is_empty(), "{v:?}");
    assert!(
        replayed >= 1.0,
        "redelivered payments reached the bank again and were answered from its records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotency_keys_redelivery_charges_twice() {
    let (v, _) = kill_payments_mid_charge(&[("SHOP_UNSAFE_NO_IDEMPOTENCY", "1")]).await;
    assert!(
        !v.charged_twice.is_empty(),
        "the checker must see double charges: {v:?}"
    );
}

/// Holds the broker down while orders are created, brings it back, and returns the
/// invariants' verdict.
async fn orders_during_a_broker_outage(env: &[(&str, &str)]) -> (Violations, usize) {
    let shop = Shop::start(env).await;
    let token = shop.login("user12", "pass12").await;
    shop.sup.kill("broker-1", Some("test")).await.unwrap();
    wait_for_state(&shop, "broker-1", ReplicaState::Held).await;
    let mut acked = BTreeSet::new();
    for i in 0..10 {
        let (status, body, _) = shop
            .order(
                &token,
                &format!("o{i}"),
                json!([{"product_id": 20 + i, "quantity": 1}]),
            )
            .await;
        assert_eq!(
            status, 201,
            "orders are accepted while the broker is down: {body}"
        );
        acked.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    let pending: f64 = {
        let mut total = 0.0;
        for r in ["orders-1", "orders-2", "orders-3"] {
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                let m = shop.metrics(r).await;
                let p = sum(&m, "shop_orders_outbox_pending", &[]);
                if p > 0.0
                    || Instant::now() > end
                    || env.iter().any(|(k, _)| *k == "SHOP_UNSAFE_NO_OUTBOX")
                {
                    total += p;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        total
    };
    shop.sup.release("broker-1", "test").await.unwrap();
    wait_for_state(&shop, "broker-1", ReplicaState::Healthy).await;
    let v = settle(&shop, &acked, SETTLE).await;
    shop.sup.shutdown().await;
    (v, pending as usize)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_holds_events_through_a_broker_outage() {
    let (v, pending) = orders_during_a_broker_outage(&[]).await;
    assert!(pending > 0, "the outbox backlog was visible in the metrics");
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_outbox_a_broker_outage_strands_orders() {
    let (v, _) = orders_during_a_broker_outage(&[("SHOP_UNSAFE_NO_OUTBOX", "1")]).await;
    assert!(v.lost.is_empty());
    assert!(
        !v.not_terminal.is_empty(),
        "the checker must see stranded orders: {v:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_and_a_redrive_brings_real_messages_back() {
    let shop = Shop::start(&[
        ("SHOP_REJECT_DELAY", "50ms"),
        ("SHOP_BROKER_VISIBILITY", "300ms"),
    ])
    .await;
    let resp = shop
        .http
        .post(shop.replica_url("broker-1", "/v1/admin/queues/payments/poison"))
        .json(&json!({"count": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dlq_len = |v: serde_json::Value| v["messages"].as_array().unwrap().len();
    let end = Instant::now() + Duration::from_secs(20);
    while dlq_len(
        shop.internal("broker-1", &broker_messages("payments-dlq"))
            .await,
    ) < 3
    {
        assert!(
            Instant::now() < end,
            "poison never reached the dead-letter queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dlq = shop
        .internal("broker-1", &broker_messages("payments-dlq"))
        .await;
    for m in dlq["messages"].as_array().unwrap() {
        assert_eq!(
            m["receive_count"], 10,
            "moved after max_receives deliveries: {m}"
        );
        assert_eq!(m["attributes"][POISON_ATTRIBUTE], POISON_INJECTED);
    }
    let m = shop.metrics("broker-1").await;
    assert_eq!(
        sum(
            &m,
            "shop_broker_dead_lettered_total",
            &[("queue", "payments")]
        ),
        3.0
    );

    let none = BTreeSet::new();
    assert!(
        faultline_tests::invariants::check(&shop, &none)
            .await
            .is_empty(),
        "poison alone is fine"
    );

    // A real payment in the dead-letter queue is a violation the checker sees...
    let token = shop.login("user13", "pass13").await;
    let (status, body, _) = shop
        .order(&token, "d1", json!([{"product_id": 31, "quantity": 1}]))
        .await;
    assert_eq!(status, 201);
    let acked = BTreeSet::from([body["order_id"].as_str().unwrap().to_owned()]);
    assert!(settle(&shop, &acked, SETTLE).await.is_empty());
    let payment = json!({"order_id": body["order_id"], "user": "user13", "amount_cents": body["amount_cents"]});
    let resp = shop
        .http
        .post(shop.replica_url("broker-1", "/v1/queues/payments-dlq/send"))
        .json(&json!({"body": payment.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = faultline_tests::invariants::check(&shop, &acked).await;
    assert_eq!(
        v.real_messages_in_dlq.get("payments-dlq"),
        Some(&1),
        "{v:?}"
    );

    // ...and a redrive sends everything back to payments: the real message is processed
    // (the bank answers it from its records: no second charge), the poison dead-letters
    // again.
    let moved: serde_json::Value = shop
        .http
        .post(shop.replica_url("broker-1", "/v1/queues/payments-dlq/redrive"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(moved["moved"], 4);
    let v = settle(&shop, &acked, SETTLE).await;
    assert!(v.is_empty(), "{v:?}");
    let end = Instant::now() + Duration::from_secs(20);
    while dlq_len(
        shop.internal("broker-1", &broker_messages("payments-dlq"))
            .await,
    ) < 3
    {
        assert!(Instant::now() < end, "the poison did not return to the DLQ");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = shop.metrics("broker-1").await;
    assert_eq!(
        sum(&m, "shop_broker_redrives_total", &[("queue", "payments")]),
        4.0
    );
    let bank = shop.metrics("bank-1").await;
    assert_eq!(
        sum(&bank, "shop_bank_charges_total", &[("result", "replayed")]),
        1.0
    );
    shop.sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_store_replica_lags_reads_fall_back_and_it_catches_up() {
    let shop = Shop::start(&[]).await;
    let token = shop.login("user14", "pass14").await;
    shop.sup.pause("store-replica-1", "test").await.unwrap();
    shop.sup.pause("store-replica-2", "test").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        let (status, body, _) = shop
            .order(
                &token,
                &format!("r{i}"),
                json!([{"product_id": 40 + i, "quantity": 1}]),
            )
            .await;
        assert_eq!(status, 201);
        ids.push(body["order_id"].as_str().unwrap().to_owned());
    }
    // The primaries see their replicas fall behind.
    let lag_on_primaries = || async {
        sum(
            &shop.metrics("store-primary-1").await,
            "shop_store_replication_lag_entries",
            &[],
        ) + sum(
            &shop.metrics("store-primary-2").await,
            "shop_store_replication_lag_entries",
            &[],
        )
    };
    let end = Instant::now() + Duration::from_secs(10);
    while lag_on_primaries().await < 10.0 {
        assert!(Instant::now() < end, "lag never showed on the primaries");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        let resp = shop
            .http
            .get(shop.url(&format!("/api/v1/orders/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "order reads fall back to the primary");
    }
    let mut fallbacks = 0.0;
    for r in ["orders-1", "orders-2", "orders-3"] {
        fallbacks += sum(
            &shop.metrics(r).await,
            "shop_orders_replica_read_fallbacks_total",
            &[],
        );
    }
    assert!(fallbacks >= 10.0, "{fallbacks} fallbacks");

    shop.sup.resume("store-replica-1", "test").await.unwrap();
    shop.sup.resume("store-replica-2", "test").await.unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let mut lag = lag_on_primaries().await;
        for r in ["store-replica-1", "store-replica-2"] {
            lag += sum(
                &shop.metrics(r).await,
                "shop_store_replication_lag_entries",
                &[],
            );
        }
        if lag == 0.0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the replicas did not catch up: lag {lag}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shop.sup.shutdown().await;
}
