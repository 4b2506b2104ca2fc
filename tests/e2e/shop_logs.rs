//! Bounded logs: the broker, the bank, notifications and the store's members
//! checkpoint and cut their write-ahead logs, keep exactly their state across SIGKILL
//! and restart, and lose nothing acknowledged when killed in the middle of a
//! checkpoint (while the unsafe order, `SHOP_UNSAFE_CUT_BEFORE_SNAPSHOT`, does).

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

/// Waits (up to a minute) for a checkpoint to be under way in `dir`.
async fn checkpoint_started(dir: &Path, round: u32) {
    let end = Instant::now() + Duration::from_secs(60);
    while !checkpoint_under_way(dir) {
        assert!(
            Instant::now() < end,
            "no checkpoint started in round {round}"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
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
        checkpoint_started(&dir, round).await;
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

const STORE: [&str; 3] = ["store-primary-1", "store-replica-1", "store-witness-1"];

/// Puts `key` through whichever member leads the shard; whether it was acknowledged.
async fn store_put(shop: &Shop, key: &str, value: &Value) -> bool {
    for member in &STORE[..2] {
        let Some(s) = shop.sup.replica_status(member) else {
            continue;
        };
        let sent = shop
            .http
            .post(format!("http://{}/v1/batch", s.addr))
            .json(&json!({"ops": [{"op": "put", "key": key, "value": value}]}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if sent.is_ok_and(|r| r.status() == 200) {
            return true;
        }
    }
    false
}

/// Every key a member holds, with its value and version.
async fn store_items(shop: &Shop, member: &str) -> BTreeMap<String, Value> {
    let v = get(shop, member, "/v1/scan?prefix=&limit=10000").await;
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["key"].as_str().unwrap().to_owned(), i.clone()))
        .collect()
}

/// Waits for a leader, then for every member to hold as much as it.
async fn store_settled(shop: &Shop) -> u64 {
    use crate::store_failover::{status, wait_status};
    let end = Instant::now() + Duration::from_secs(30);
    let lsn = loop {
        let mut leader = None;
        for m in &STORE[..2] {
            if let Some(s) = status(shop, m).await
                && s["role"] == "leader"
            {
                leader = s["lsn"].as_u64();
            }
        }
        if let Some(lsn) = leader {
            break lsn;
        }
        assert!(Instant::now() < end, "the shard has no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for m in STORE {
        wait_status(shop, m, "did not catch up", |s| {
            s["lsn"].as_u64() >= Some(lsn)
        })
        .await;
    }
    lsn
}

/// SIGKILLs every member of the shard at once.
async fn kill_the_group(shop: &Shop) {
    for m in STORE {
        shop.sup.kill(m, None).await.unwrap();
    }
}

/// Waits for every member's `restarts`-th start to be healthy.
async fn group_back(shop: &Shop, restarts: u32) {
    for m in STORE {
        shop.sup
            .wait_for(m, Duration::from_secs(60), |s| {
                s.restarts == restarts && s.state == ReplicaState::Healthy
            })
            .await
            .unwrap_or_else(|| panic!("{m} did not come back healthy"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_checkpoints_its_logs_and_restores_exact_state() {
    use crate::store_failover::ONE_SHARD;
    let shop = Shop::start_text(ONE_SHARD, &[("SHOP_WAL_CHECKPOINT_BYTES", "8192")]).await;
    store_settled(&shop).await;
    let pad = "x".repeat(100);
    sixteen_at_once((0..2_000).map(|i| {
        let (shop, pad) = (&shop, &pad);
        async move {
            let value = json!({"i": i, "pad": pad});
            assert!(store_put(shop, &format!("key-{}", i % 100), &value).await);
        }
    }))
    .await;
    for i in 90..100 {
        post(
            &shop,
            "store-primary-1",
            "/v1/batch",
            json!({"ops": [{"op": "delete", "key": format!("key-{i}")}]}),
        )
        .await;
    }
    let lsn = store_settled(&shop).await;
    let items = store_items(&shop, "store-primary-1").await;
    assert_eq!(items.len(), 90);
    let data = shop.sup.run_dir().join("data");
    for m in STORE {
        assert!(checkpoints(&shop, m, "store").await >= 3.0, "{m}");
        let written = sum(
            &shop.metrics(m).await,
            "shop_store_wal_written_bytes_total",
            &[],
        );
        let (segments, snapshots, bytes) = log_files(&data.join(m), "store.log");
        assert!(
            segments.len() <= 2 && snapshots.len() <= 1,
            "{m}: {segments:?} {snapshots:?}"
        );
        assert!(
            (bytes as f64) * 5.0 < written,
            "{m}: {bytes} bytes on disk for {written} written"
        );
        assert_eq!(
            store_items(&shop, m).await,
            items,
            "{m} holds the leader's data"
        );
    }
    let terms: Vec<Value> = {
        let mut t = Vec::new();
        for m in STORE {
            t.push(crate::store_failover::status(&shop, m).await.unwrap()["term"].clone());
        }
        t
    };

    // Every member restarts from its own checkpoint and log.
    kill_the_group(&shop).await;
    group_back(&shop, 1).await;
    assert_eq!(store_settled(&shop).await, lsn, "no batch lost or invented");
    for (m, before) in STORE.iter().zip(&terms) {
        assert_eq!(store_items(&shop, m).await, items, "{m} restored exactly");
        let now = crate::store_failover::status(&shop, m).await.unwrap();
        assert!(
            now["term"].as_u64() >= before.as_u64(),
            "{m}: {now} after {before}"
        );
    }
    // Versions go on from where they were.
    assert!(store_put(&shop, "after", &json!(1)).await);
    store_settled(&shop).await;
    let after = get(&shop, "store-primary-1", "/v1/keys/after").await;
    assert!(after["version"].as_u64() > Some(lsn), "{after}");
    shop.sup.shutdown().await;
}

/// The LSN `member` recovered from its own log at its `start`-th start (from 0), from
/// the "recovered from the log" line it writes before it serves, so before any leader
/// could send it what it lacks.
fn recovered_lsn(shop: &Shop, member: &str, start: usize) -> u64 {
    let log = shop.sup.replica_status(member).unwrap().log;
    let text = std::fs::read_to_string(&log).unwrap();
    // Without the terminal's colours: `ESC [ ... m`.
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let line = plain
        .lines()
        .filter(|l| l.contains("recovered from the log"))
        .nth(start)
        .unwrap_or_else(|| panic!("{member}: no start {start} in {}", log.display()));
    let lsn = line.split("lsn=").nth(1).expect("an lsn field");
    lsn.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The store's twin of the broker's: the group holds 200 large keys, a client
/// overwrites others so that checkpoints follow one another, and each round SIGKILLs
/// the whole group while a checkpoint is under way. Returns the LSN every member held
/// before the rounds, each member's LSN recovered from its own log at each restart,
/// how many kills landed mid-checkpoint, and how many of the 200 keys the group holds
/// at the end (`None` once a member recovered less than it held).
async fn kill_the_store_group_during_checkpoints(
    env: &[(&str, &str)],
) -> (u64, Vec<(String, u64)>, usize, Option<usize>) {
    use crate::store_failover::ONE_SHARD;
    let mut env = env.to_vec();
    env.push(("SHOP_WAL_CHECKPOINT_BYTES", "65536"));
    let shop = Arc::new(Shop::start_text(ONE_SHARD, &env).await);
    store_settled(&shop).await;
    let big = "x".repeat(100_000);
    for i in 0..200 {
        assert!(store_put(&shop, &format!("keep-{i}"), &json!(format!("{i} {big}"))).await);
    }
    let held = store_settled(&shop).await;
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (shop, stop, big) = (shop.clone(), stop.clone(), big.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // Refused while the group is down or electing.
                if !store_put(&shop, &format!("churn-{}", n % 20), &json!(big)).await {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    let dir = shop.sup.run_dir().join("data/store-primary-1");
    let mut mid_checkpoint = 0;
    let mut recovered = Vec::new();
    for round in 1..=4u32 {
        checkpoint_started(&dir, round).await;
        kill_the_group(&shop).await;
        // `kill` returns once the member is dead: a snapshot still partial then was
        // cut off by the SIGKILL.
        if checkpoint_under_way(&dir) {
            mid_checkpoint += 1;
        }
        group_back(&shop, round).await;
        for m in STORE {
            recovered.push((m.to_owned(), recovered_lsn(&shop, m, round as usize)));
        }
        // The first member that recovers less than it held ends the rounds: a group
        // whose logs lost acknowledged batches and terms (the unsafe cut) is past what
        // its elections assume, and need not elect a leader again.
        if recovered.iter().any(|(_, lsn)| *lsn < held) {
            break;
        }
        store_settled(&shop).await;
    }
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();
    let lost = recovered.iter().any(|(_, lsn)| *lsn < held);
    let kept = if lost {
        None
    } else {
        let items = store_items(&shop, "store-primary-1").await;
        Some(items.into_keys().filter(|k| k.starts_with("keep-")).count())
    };
    shop.sup.shutdown().await;
    (held, recovered, mid_checkpoint, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_store_group_during_checkpoints_loses_no_acknowledged_write() {
    let (held, recovered, mid, kept) = kill_the_store_group_during_checkpoints(&[]).await;
    assert!(mid >= 2, "only {mid} kills landed mid-checkpoint");
    assert_eq!(kept, Some(200), "every kept key is in the group's data");
    // Each member's own log, before any leader could repair it, held what it had.
    for (m, lsn) in &recovered {
        assert!(
            *lsn >= held,
            "{m} recovered LSN {lsn}, held {held}: {recovered:?}"
        );
    }
}

/// The unsafe order loses what a member's log held (the group repairs it from the
/// others, which is why the check reads each member's own recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_a_store_log_before_its_snapshot_is_durable_loses_batches() {
    // Which member the loss hits varies (the mid-checkpoint count watches the primary
    // alone), so the loss itself is what is asserted.
    let (held, recovered, _, _) =
        kill_the_store_group_during_checkpoints(&[("SHOP_UNSAFE_CUT_BEFORE_SNAPSHOT", "1")]).await;
    assert!(
        recovered.iter().any(|(_, lsn)| *lsn < held),
        "the check must see a member recover less than it held ({held}): {recovered:?}"
    );
}
