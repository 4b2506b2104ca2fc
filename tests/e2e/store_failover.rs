//! Store failover through real processes: a shard's primary SIGKILLed and held under
//! full load, a new leader elected, writes going on, the old primary rejoining as a
//! follower; a primary cut off from its followers by a partition is fenced. Judged by
//! the shop's invariant checker; `SHOP_UNSAFE_NO_FENCING` shows it catching the split
//! brain the fences prevent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultline_agent::faults::{FaultRequest, FaultSpec};
use faultline_agent::supervisor::ReplicaState;
use faultline_tests::Shop;
use faultline_tests::invariants::{Violations, settle};
use serde_json::Value;

use crate::shop_data::{SETTLE, shard_batches, stream_orders, tokens, wait_shard_batches};

/// The store member's `/v1/status`, or `None` while it does not answer.
pub(crate) async fn status(shop: &Shop, replica: &str) -> Option<Value> {
    let addr = shop.sup.replica_status(replica)?.addr;
    let resp = shop
        .http
        .get(format!("http://{addr}/v1/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

/// Waits until `replica`'s status satisfies `pred`; returns it.
pub(crate) async fn wait_status(
    shop: &Shop,
    replica: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let last = status(shop, replica).await;
        if let Some(s) = &last
            && pred(s)
        {
            return last.unwrap();
        }
        assert!(
            Instant::now() < end,
            "{replica}: {what}; its last status: {last:?}; the supervisor's: {:?}",
            shop.sup.replica_status(replica)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn leads(s: &Value) -> bool {
    s["role"] == "leader"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_down_primary_fails_over_under_load_and_rejoins_as_a_follower() {
    let shop = Arc::new(Shop::start(&[]).await);
    for shard in 1..=2 {
        wait_status(&shop, &format!("store-primary-{shard}"), "never led", leads).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_orders(&shop, tokens(&shop, 8).await, stop.clone());
    wait_shard_batches(&shop, 1, 40.0, "orders are not flowing").await;
    for shard in 1..=2 {
        shop.sup
            .kill(&format!("store-primary-{shard}"), Some("test"))
            .await
            .unwrap();
    }
    for shard in 1..=2 {
        let p = format!("store-primary-{shard}");
        shop.sup
            .wait_for(&p, Duration::from_secs(20), |s| {
                s.state == ReplicaState::Held
            })
            .await
            .expect("held down");
        wait_status(
            &shop,
            &format!("store-replica-{shard}"),
            "did not take over",
            leads,
        )
        .await;
    }
    // Writes go on while the primaries are away: the replicas acknowledge them.
    let mut replica_acks = Vec::new();
    for shard in 1..=2 {
        replica_acks.push(shard_batches(&shop, shard).await);
    }
    for shard in 1..=2 {
        let at_least = replica_acks[shard - 1] + 20.0;
        wait_shard_batches(&shop, shard, at_least, "writes did not go on").await;
    }
    for shard in 1..=2 {
        shop.sup
            .release(&format!("store-primary-{shard}"), "test")
            .await
            .unwrap();
    }
    for shard in 1..=2 {
        let leader = status(&shop, &format!("store-replica-{shard}"))
            .await
            .unwrap();
        let caught_up = leader["lsn"].as_u64().unwrap();
        let p = format!("store-primary-{shard}");
        let s = wait_status(&shop, &p, "did not rejoin as a follower", |s| {
            s["role"] == "follower" && s["leader"] == 1 && s["lsn"].as_u64() >= Some(caught_up)
        })
        .await;
        assert_eq!(s["term"], leader["term"], "{s} follows {leader}");
    }
    // Orders still flow after the primaries are back.
    let before = shard_batches(&shop, 1).await;
    wait_shard_batches(&shop, 1, before + 20.0, "orders stopped after the rejoin").await;
    stop.store(true, Ordering::Relaxed);
    let acked = stream.await.unwrap();
    // Progress in every phase is what the waits above assert; this only makes sure
    // the invariants below judge enough orders (fewer than the batches waited for:
    // an order writes its shard several times, and orders spread over two shards).
    assert!(
        acked.len() >= 50,
        "only {} orders acknowledged",
        acked.len()
    );
    let v = settle(&shop, &acked, SETTLE).await;
    shop.sup.shutdown().await;
    assert!(v.is_empty(), "{v:?}");
}

/// Streams orders, cuts both store primaries off from their replicas and witnesses
/// (orders still reach them), waits for the new leaders, goes on ordering (through
/// the old primaries, which orders keep using while they answer), heals, and returns
/// what the invariants say once everything settled.
async fn partition_store_primaries(env: &[(&str, &str)]) -> (Violations, usize) {
    let shop = Arc::new(Shop::start(env).await);
    for shard in 1..=2 {
        wait_status(&shop, &format!("store-primary-{shard}"), "never led", leads).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_orders(&shop, tokens(&shop, 8).await, stop.clone());
    wait_shard_batches(&shop, 1, 40.0, "orders are not flowing").await;
    let cut = shop
        .agent
        .inject(&FaultRequest {
            tree: None,
            spec: FaultSpec::Partition {
                with: "store-replica,store-witness".into(),
            },
            target: "store-primary".into(),
            ttl_ms: Some(120_000),
            seed: None,
        })
        .await
        .unwrap();
    for shard in 1..=2 {
        wait_status(
            &shop,
            &format!("store-replica-{shard}"),
            "did not take over",
            leads,
        )
        .await;
    }
    // Orders go on during the partition: to the old primaries while they answer
    // (unfenced, they acknowledge them), then to the new leaders.
    let before = shard_batches(&shop, 1).await;
    wait_shard_batches(&shop, 1, before + 30.0, "orders stopped in the partition").await;
    shop.agent.heal(&cut.id).await.unwrap();
    for shard in 1..=2 {
        wait_status(
            &shop,
            &format!("store-primary-{shard}"),
            "did not rejoin",
            |s| s["role"] == "follower" && s["leader"] == 1,
        )
        .await;
    }
    let before = shard_batches(&shop, 1).await;
    wait_shard_batches(&shop, 1, before + 20.0, "orders stopped after the heal").await;
    stop.store(true, Ordering::Relaxed);
    let acked = stream.await.unwrap();
    let v = settle(&shop, &acked, SETTLE).await;
    shop.sup.shutdown().await;
    (v, acked.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_is_fenced_and_no_acknowledged_order_is_lost() {
    let (v, acked) = partition_store_primaries(&[]).await;
    assert!(acked >= 50, "only {acked} orders acknowledged");
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fencing_a_partitioned_primary_loses_acknowledged_orders() {
    let (v, _) = partition_store_primaries(&[("SHOP_UNSAFE_NO_FENCING", "1")]).await;
    assert!(
        !v.lost.is_empty(),
        "the checker must see the split brain's lost orders: {v:?}"
    );
}

/// One shard's group of three, nothing else.
pub(crate) const ONE_SHARD: &str = r#"
entrypoint = "store-primary"
[services.store-primary]
command = ["shop", "store", "--listen", "{listen}", "--role", "primary", "--shard", "1",
  "--data-dir", "{run_dir}/data/{replica}",
  "--replicas", "{upstream:store-replica}", "--witnesses", "{upstream:store-witness}"]
calls = ["store-replica", "store-witness"]
[services.store-replica]
command = ["shop", "store", "--listen", "{listen}", "--role", "replica", "--shard", "1",
  "--data-dir", "{run_dir}/data/{replica}", "--witnesses", "{upstream:store-witness}"]
calls = ["store-witness"]
[services.store-witness]
command = ["shop", "store", "--listen", "{listen}", "--role", "witness", "--shard", "1",
  "--data-dir", "{run_dir}/data/{replica}"]
"#;

/// The replica is stopped while the primary goes on writing with the witness (a
/// majority), so the witness's log gets ahead of the replica's; then the primary is
/// lost. The witness cannot lead and votes only for a log as up to date as its own:
/// the replica must take the missing batches from it first, and then leads with every
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_witness_catches_up_from_it_and_takes_over() {
    let shop = Shop::start_text(ONE_SHARD, &[]).await;
    wait_status(&shop, "store-primary-1", "never led", leads).await;
    let write = |key: String| {
        let shop = &shop;
        async move {
            let resp = shop
                .http
                .post(shop.replica_url("store-primary-1", "/v1/batch"))
                .json(&serde_json::json!({"ops": [{"op": "put", "key": key, "value": {"n": 1}}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{key}: {:?}", resp.text().await);
        }
    };
    write("before".into()).await;
    wait_status(&shop, "store-replica-1", "never got the first write", |s| {
        s["lsn"].as_u64() >= Some(1)
    })
    .await;
    shop.sup.pause("store-replica-1", "test").await.unwrap();
    for i in 0..50 {
        write(format!("while-stopped-{i}")).await;
    }
    let witness = status(&shop, "store-witness-1").await.unwrap();
    let replica_lsn = |s: &Value| s["lsn"].as_u64().unwrap();
    shop.sup
        .kill("store-primary-1", Some("test"))
        .await
        .unwrap();
    shop.sup.resume("store-replica-1", "test").await.unwrap();
    let leader = wait_status(&shop, "store-replica-1", "did not take over", leads).await;
    assert!(
        replica_lsn(&leader) >= replica_lsn(&witness),
        "{leader} {witness}"
    );
    for i in 0..50 {
        let resp = shop
            .http
            .get(shop.replica_url(
                "store-replica-1",
                &format!("/v1/keys/while-stopped-{i}?leader=true"),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "while-stopped-{i} was acknowledged");
    }
    shop.sup.shutdown().await;
}
