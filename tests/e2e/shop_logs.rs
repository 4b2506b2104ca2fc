//! Bounded logs: the broker, the bank and notifications checkpoint and cut their
//! write-ahead logs, keep exactly their state across SIGKILL and restart, and lose
//! nothing acknowledged when killed in the middle of a checkpoint (while the unsafe
//! order, `SHOP_UNSAFE_CUT_BEFORE_SNAPSHOT`, does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultline_agent::supervisor::ReplicaState;
use faultline_tests::Shop;
use faultline_tests::metrics::sum;
use serde_json::{Value, json};

/// The files of log `stem` in `dir`: `(live segments, snapshots, bytes of all files)`.
fn log_files(dir: &Path, stem: &str) -> (Vec<String>, Vec<String>, u64) {
    let (mut segments, mut snapshots, mut bytes) = (Vec::new(), Vec::new(), 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(stem) {
            continue;
        }
        bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        if name.ends_with(".tmp") {
            // A checkpoint under way: its snapshot is not one yet (its bytes count).
            continue;
        }
        if name.contains(".snapshot.") {
            snapshots.push(name);
        } else {
            segments.push(name);
        }
    }
    (segments, snapshots, bytes)
}

async fn post(shop: &Shop, replica: &str, path: &str, body: Value) -> Value {
    let resp = shop
        .http
        .post(shop.replica_url(replica, path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn get(shop: &Shop, replica: &str, path: &str) -> Value {
    shop.http
        .get(shop.replica_url(replica, path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// SIGKILLs `replica` and waits for its `restarts`-th start to be healthy.
async fn kill_and_wait(shop: &Shop, replica: &str, restarts: u32) {
    shop.sup.kill(replica, None).await.unwrap();
    shop.sup
        .wait_for(replica, Duration::from_secs(60), |s| {
            s.restarts == restarts && s.state == ReplicaState::Healthy
        })
        .await
        .unwrap_or_else(|| panic!("{replica} did not come back healthy"));
}

async fn checkpoints(shop: &Shop, replica: &str, prefix: &str) -> f64 {
    let m = shop.metrics(replica).await;
    sum(&m, &format!("shop_{prefix}_wal_checkpoints_total"), &[])
}

/// Every message of `q` as the audit endpoint shows it, by id.
async fn peek(shop: &Shop, q: &str) -> BTreeMap<String, Value> {
    let v = get(shop, "broker-1", &format!("/v1/queues/{q}/messages")).await;
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["message_id"].as_str().unwrap().to_owned(), m.clone()))
        .collect()
}

/// Runs `calls`, sixteen at a time.
async fn sixteen_at_once<T>(calls: impl Iterator<Item = impl std::future::Future<Output = T>>) {
    use futures::StreamExt;
    futures::stream::iter(calls)
        .buffer_unordered(16)
        .collect::<Vec<T>>()
        .await;
}

const BROKER: &str = r#"
entrypoint = "broker"
[services.broker]
command = ["shop", "broker", "--listen", "{listen}", "--data-dir", "{run_dir}/data/broker",
  "--queue", "jobs:visibility=120s,max_receives=3,dlq=jobs-dlq", "--queue", "jobs-dlq",
  "--queue", "notifications"]
[services.bank]
command = ["shop", "bank", "--listen", "{listen}", "--data-dir", "{run_dir}/data/bank", "--latency", "0s"]
[services.notifications]
command = ["shop", "notifications", "--listen", "{listen}", "--broker", "{upstream:broker}",
  "--data-dir", "{run_dir}/data/notifications"]
calls = ["broker"]
"#;

/// Brings the `jobs` queue into every state a message can be in: deleted, in flight
/// (received once, hidden for 120 s), received several times and visible again, and
/// dead-lettered.
async fn shape_the_queue(shop: &Shop) {
    let sends = (0..2_000).map(|i| {
        post(
            shop,
            "broker-1",
            "/v1/queues/jobs/send",
            json!({"body": format!("job {i}")}),
        )
    });
    sixteen_at_once(sends).await;
    let mut deleted = 0;
    while deleted < 1_900 {
        let got = post(
            shop,
            "broker-1",
            "/v1/queues/jobs/receive",
            json!({"max_messages": 10}),
        )
        .await;
        for m in got["messages"].as_array().unwrap() {
            post(
                shop,
                "broker-1",
                "/v1/queues/jobs/delete",
                json!({"receipt_handle": m["receipt_handle"]}),
            )
            .await;
            deleted += 1;
        }
    }
    post(
        shop,
        "broker-1",
        "/v1/queues/jobs/receive",
        json!({"max_messages": 10}),
    )
    .await;
    // Receives that hide nothing: counts climb and the fourth receive dead-letters.
    for _ in 0..30 {
        post(
            shop,
            "broker-1",
            "/v1/queues/jobs/receive",
            json!({"max_messages": 10, "visibility_timeout_ms": 0}),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_logs_stay_small_and_restore_exact_state() {
    let shop = Shop::start_text(BROKER, &[("SHOP_WAL_CHECKPOINT_BYTES", "8192")]).await;
    let data = shop.sup.run_dir().join("data");

    // Broker: queues, in-flight messages, receive counts, the dead-letter queue.
    shape_the_queue(&shop).await;
    let (jobs, dlq) = (peek(&shop, "jobs").await, peek(&shop, "jobs-dlq").await);
    assert_eq!(jobs.len() + dlq.len(), 100);
    assert!(!dlq.is_empty(), "some messages were dead-lettered");
    assert_eq!(jobs.values().filter(|m| m["in_flight"] == true).count(), 10);
    assert!(checkpoints(&shop, "broker-1", "broker").await >= 5.0);
    let written = sum(
        &shop.metrics("broker-1").await,
        "shop_broker_wal_written_bytes_total",
        &[],
    );
    let (segments, snapshots, bytes) = log_files(&data.join("broker"), "broker.log");
    assert!(
        segments.len() <= 2 && snapshots.len() <= 1,
        "{segments:?} {snapshots:?}"
    );
    assert!(
        (bytes as f64) * 5.0 < written,
        "{bytes} bytes on disk for {written} written"
    );

    // Bank: charges and their idempotency keys.
    let charges = (0..300).map(|i| {
        let shop = &shop;
        async move {
            let resp = shop
                .http
                .post(shop.replica_url("bank-1", "/v1/charges"))
                .header("idempotency-key", format!("key-{i}"))
                .json(&json!({"amount_cents": 100 + i, "reference": format!("order-{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    });
    sixteen_at_once(charges).await;
    let ledger = get(&shop, "bank-1", "/v1/ledger").await;
    assert_eq!(ledger["charges"].as_array().unwrap().len(), 300);
    assert!(checkpoints(&shop, "bank-1", "bank").await >= 2.0);

    // Notifications: events consumed from the broker, each recorded once.
    for i in 0..200 {
        let event =
            json!({"order_id": format!("o{i}"), "user": "u", "outcome": "paid"}).to_string();
        post(
            &shop,
            "broker-1",
            "/v1/queues/notifications/send",
            json!({"body": event}),
        )
        .await;
    }
    let end = Instant::now() + Duration::from_secs(60);
    let sent = loop {
        let sent = get(&shop, "notifications-1", "/v1/sent").await;
        if sent["sent"].as_array().unwrap().len() >= 200 {
            break sent;
        }
        assert!(Instant::now() < end, "notifications sent only {sent}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(checkpoints(&shop, "notifications-1", "notifications").await >= 1.0);
    let (jobs, dlq) = (peek(&shop, "jobs").await, peek(&shop, "jobs-dlq").await);

    kill_and_wait(&shop, "broker-1", 1).await;
    kill_and_wait(&shop, "bank-1", 1).await;
    kill_and_wait(&shop, "notifications-1", 1).await;

    assert_eq!(
        peek(&shop, "jobs").await,
        jobs,
        "the queue, counts and receipts restored"
    );
    assert_eq!(peek(&shop, "jobs-dlq").await, dlq);
    assert_eq!(get(&shop, "bank-1", "/v1/ledger").await, ledger);
    assert_eq!(get(&shop, "notifications-1", "/v1/sent").await, sent);
    // Sequence numbers go on: a new message comes after every old one.
    let id = post(
        &shop,
        "broker-1",
        "/v1/queues/jobs/send",
        json!({"body": "after"}),
    )
    .await;
    let after = get(&shop, "broker-1", "/v1/queues/jobs/messages").await;
    assert_eq!(
        after["messages"].as_array().unwrap().last().unwrap()["message_id"],
        id["message_id"]
    );
    // Idempotency keys survived: a repeat replays, another body is refused.
    let repeat = |amount: u64| {
        shop.http
            .post(shop.replica_url("bank-1", "/v1/charges"))
            .header("idempotency-key", "key-7")
            .json(&json!({"amount_cents": amount, "reference": "order-7"}))
            .send()
    };
    let resp = repeat(107).await.unwrap();
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    assert_eq!(repeat(999).await.unwrap().status(), 422);
    shop.sup.shutdown().await;
}

/// Whether a checkpoint is under way in `dir`: a snapshot file (temporary or not) is
/// still being written. A snapshot is whole when its header (`magic, generation,
/// length` as little-endian u64s, then a crc32) matches the file's size.
fn checkpoint_under_way(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        if !e.file_name().to_string_lossy().contains(".snapshot.") {
            return false;
        }
        let Ok(snapshot) = std::fs::read(e.path()) else {
            return false;
        };
        snapshot.len() < 28
            || u64::from_le_bytes(snapshot[16..24].try_into().unwrap()) + 28
                != snapshot.len() as u64
    })
}

/// A broker with 200 large messages kept in `keep` (so every snapshot takes a while to
/// write) and a client churning `churn` (send, receive, delete) so that the log grows
/// and checkpoints follow one another. Each round waits for a checkpoint to be under
/// way and SIGKILLs the broker then. Returns the kept messages acknowledged, those
/// found after the last restart (the first restart missing some ends the rounds), and
/// how many kills landed mid-checkpoint.
async fn kill_during_checkpoints(
    env: &[(&str, &str)],
) -> (BTreeSet<String>, BTreeSet<String>, usize) {
    let text = r#"
entrypoint = "broker"
[services.broker]
command = ["shop", "broker", "--listen", "{listen}", "--data-dir", "{run_dir}/data", "--queue", "keep", "--queue", "churn"]
"#;
    let mut env = env.to_vec();
    env.push(("SHOP_WAL_CHECKPOINT_BYTES", "65536"));
    let shop = Arc::new(Shop::start_text(text, &env).await);
    let dir: PathBuf = shop.sup.run_dir().join("data");
    let big = "x".repeat(100_000);
    let mut kept = BTreeSet::new();
    for i in 0..200 {
        let r = post(
            &shop,
            "broker-1",
            "/v1/queues/keep/send",
            json!({"body": format!("{i} {big}")}),
        )
        .await;
        kept.insert(r["message_id"].as_str().unwrap().to_owned());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (shop, stop, big) = (shop.clone(), stop.clone(), big.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Errors are expected while the broker is down.
                let url = |p: &str| shop.replica_url("broker-1", p);
                let _ = shop
                    .http
                    .post(url("/v1/queues/churn/send"))
                    .json(&json!({"body": big}))
                    .send()
                    .await;
                let Ok(resp) = shop
                    .http
                    .post(url("/v1/queues/churn/receive"))
                    .json(&json!({"max_messages": 10}))
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Ok(got) = resp.json::<Value>().await else {
                    continue;
                };
                for m in got["messages"].as_array().into_iter().flatten() {
                    let _ = shop
                        .http
                        .post(url("/v1/queues/churn/delete"))
                        .json(&json!({"receipt_handle": m["receipt_handle"]}))
                        .send()
                        .await;
                }
            }
        })
    };
    let mut mid_checkpoint = 0;
    let mut found = kept.clone();
    for round in 1..=6u32 {
        let end = Instant::now() + Duration::from_secs(60);
        while !checkpoint_under_way(&dir) {
            assert!(
                Instant::now() < end,
                "no checkpoint started in round {round}"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        shop.sup.kill("broker-1", None).await.unwrap();
        if checkpoint_under_way(&dir) {
            mid_checkpoint += 1;
        }
        let back = shop
            .sup
            .wait_for("broker-1", Duration::from_secs(60), |s| {
                s.restarts == round && s.state == ReplicaState::Healthy
            })
            .await;
        if back.is_none() {
            found.clear();
            break;
        }
        // Every restart must hold every kept message; the first that does not ends it.
        found = peek(&shop, "keep").await.into_keys().collect();
        if found != kept {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();
    shop.sup.shutdown().await;
    (kept, found, mid_checkpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_checkpoints_loses_no_acknowledged_message() {
    let (kept, found, mid) = kill_during_checkpoints(&[]).await;
    assert!(mid >= 3, "only {mid} kills landed mid-checkpoint");
    assert_eq!(found, kept, "every acknowledged message is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_log_before_the_snapshot_is_durable_loses_messages() {
    let (kept, found, mid) =
        kill_during_checkpoints(&[("SHOP_UNSAFE_CUT_BEFORE_SNAPSHOT", "1")]).await;
    assert!(mid >= 1, "no kill landed mid-checkpoint");
    assert!(
        found.len() < kept.len(),
        "the check must see lost messages: {} of {} kept",
        found.len(),
        kept.len()
    );
}
