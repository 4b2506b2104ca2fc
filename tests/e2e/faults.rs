//! The fault agent through its real entry points: the CLI against `faultline up`, the
//! control API, the standalone `faultline-agent`, leases and the journal.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultline::shop::broker_messages;
use faultline::shop::invariants::{AUDIT_ORDERS, POISON_ATTRIBUTE, POISON_INJECTED};
use faultline_agent::faults::{Directions, FaultRequest, FaultSpec};
use faultline_agent::supervisor::ReplicaState;
use faultline_tests::invariants::settle;
use faultline_tests::metrics::sum;
use faultline_tests::{Shop, Up, bin, cli, one_cache_topology, start_agent, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

fn status_json(agent: &str) -> serde_json::Value {
    let (code, out, err) = cli(agent, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn replica_state(status: &serde_json::Value, name: &str) -> String {
    status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .unwrap()
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

#[test]
fn the_cli_forms_work_as_written() {
    let up = Up::start(&[], &[]);
    let agent = up.agent.clone();
    assert!(agent.starts_with("http://127.0.0.1:"), "{}", up.stdout[0]);
    let run = |args: &[&str]| {
        let (code, out, err) = cli(&agent, args);
        assert_eq!(code, 0, "faultline {}: {err}", args.join(" "));
        out
    };
    let kill_id = run(&["fault", "kill", "orders-2", "--hold", "--ttl", "30s"]);
    assert!(kill_id.starts_with('f'), "prints the fault id: {kill_id}");
    run(&["fault", "pause", "content-1", "--ttl", "10s"]);
    run(&[
        "fault",
        "latency",
        "payments->bank",
        "--delay",
        "200ms",
        "--jitter",
        "20ms",
        "--ttl",
        "60s",
    ]);
    run(&["fault", "partition", "orders", "broker", "--ttl", "30s"]);
    run(&[
        "fault",
        "http-abort",
        "gateway->cdn",
        "--status",
        "503",
        "--percent",
        "50",
        "--ttl",
        "30s",
    ]);
    run(&["fault", "poison", "payments", "--count", "5"]);

    let st = status_json(&agent);
    assert_eq!(replica_state(&st, "orders-2"), "held");
    assert_eq!(replica_state(&st, "content-1"), "paused");
    let kinds: BTreeSet<String> = st["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["kill", "pause", "latency", "partition", "http-abort"].map(String::from)),
        "poison is over once sent"
    );
    let list = run(&["fault", "list"]);
    assert!(list.contains("orders<->broker"), "{list}");
    let human = run(&["status"]);
    assert!(
        human.contains("orders-2") && human.contains("faults:"),
        "{human}"
    );

    // The http-abort answers product reads with 503. What reaches the client depends on
    // the gateway: its retries hide some aborts, and its breaker for the cdn opens on the
    // rest, as it should. The gateway saw the cdn fail.
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let failed = (0..60)
        .filter(|i| {
            client
                .get(format!("{}/api/v1/products/{}", up.gateway, 1 + i % 3))
                .send()
                .unwrap()
                .status()
                == 503
        })
        .count();
    let gw_metrics = client
        .get(format!("{}/metrics", up.gateway))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let cdn_failures = sum(
        &gw_metrics,
        "shop_upstream_tries_total",
        &[("upstream", "cdn"), ("outcome", "failure")],
    );
    assert!(
        failed >= 10 && cdn_failures >= 3.0,
        "{failed} of 60 failed, {cdn_failures} failed tries to the cdn"
    );
    // The poison is in the payments queue (or already in its dead-letter queue).
    let broker = up
        .rows
        .iter()
        .find(|r| r.replica == "broker-1")
        .unwrap()
        .addr
        .clone();
    let poison = |q: &str| -> usize {
        let v: serde_json::Value = client
            .get(format!("http://{broker}{}", broker_messages(q)))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["attributes"][POISON_ATTRIBUTE] == POISON_INJECTED)
            .count()
    };
    assert_eq!(poison("payments") + poison("payments-dlq"), 5);

    assert_eq!(run(&["heal", "--all"]), "healed 5 faults");
    let healed = wait_until(Duration::from_secs(15), || {
        let st = status_json(&agent);
        st["faults"].as_array().unwrap().is_empty()
            && replica_state(&st, "orders-2") == "healthy"
            && replica_state(&st, "content-1") == "healthy"
    });
    assert!(healed, "everything back: {}", status_json(&agent));
    assert_eq!(run(&["fault", "list"]), "no faults in effect");
}

#[test]
fn bad_cli_input_is_named_and_exits_2() {
    let up = Up::start(&[], &[]);
    let check = |args: &[&str], expected: &str| {
        let (code, out, err) = cli(&up.agent, args);
        assert_eq!(code, 2, "faultline {}: {out} {err}", args.join(" "));
        assert!(
            err.contains(expected),
            "faultline {}: {err}",
            args.join(" ")
        );
    };
    check(
        &["fault", "explode", "orders"],
        "unknown fault kind `explode`; kinds are: kill, terminate",
    );
    check(&["fault", "kill"], "<TARGET>");
    check(
        &["fault", "kill", "nosuch"],
        "no service or replica `nosuch`; services are:",
    );
    check(
        &["fault", "latency", "orders", "--delay", "1s"],
        "`orders` is not an edge or a proxy",
    );
    check(
        &["fault", "latency", "orders->bank", "--delay", "1s"],
        "no edge 'orders->bank'; orders calls: store-primary, store-replica, broker, cdn",
    );
    check(&["fault", "latency", "payments->bank"], "--delay <DELAY>");
    check(
        &[
            "fault",
            "latency",
            "payments->bank",
            "--delay",
            "1s",
            "--status",
            "500",
        ],
        "--status",
    );
    check(
        &["fault", "http-abort", "gateway->cdn", "--status", "999"],
        "must be at most 599",
    );
    check(
        &["fault", "pause", "api-1", "--ttl", "soon"],
        "write durations like",
    );
    check(
        &["fault", "zone-outage", "mars"],
        "no zone `mars`; zones are: a, b",
    );
    check(
        &["fault", "poison", "nowhere", "--count", "1"],
        "no queue `nowhere`; queues are:",
    );
    check(&["fault", "partition", "orders", "orders"], "on both sides");
    check(&["heal", "f00000000"], "no active fault f00000000");
    check(&["heal"], "required");
    let (code, _, err) = cli("http://127.0.0.1:9", &["status"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot reach the agent at http://127.0.0.1:9"),
        "{err}"
    );
}

/// Creates orders from 4 clients until `stop`; returns the acknowledged ids.
fn order_stream(
    shop: &Arc<Shop>,
    tokens: Vec<String>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeSet<String>> {
    let shop = shop.clone();
    tokio::spawn(async move {
        let clients = tokens.into_iter().enumerate().map(|(c, token)| {
            let (shop, stop) = (shop.clone(), stop.clone());
            async move {
                let mut acked = BTreeSet::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (status, body, _) = shop
                        .order(
                            &token,
                            &format!("s{c}-{n}"),
                            json!([{"product_id": 1 + n % 40, "quantity": 1}]),
                        )
                        .await;
                    if status == 201 {
                        acked.insert(body["order_id"].as_str().unwrap().to_owned());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_orders_and_the_broker_backs_up_the_outbox_which_drains_after_heal() {
    let shop = Arc::new(Shop::start(&[]).await);
    let mut tokens = Vec::new();
    for i in 1..=4 {
        tokens.push(shop.login(&format!("user{i}"), &format!("pass{i}")).await);
    }
    let fault = shop
        .agent
        .inject(&FaultRequest {
            tree: None,
            spec: FaultSpec::Partition {
                with: "broker".into(),
            },
            target: "orders".into(),
            ttl_ms: Some(60_000),
            seed: None,
        })
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stream = order_stream(&shop, tokens, stop.clone());
    let pending = || async {
        let mut p = 0.0;
        for r in ["orders-1", "orders-2", "orders-3"] {
            p += sum(&shop.metrics(r).await, "shop_orders_outbox_pending", &[]);
        }
        p
    };
    let end = Instant::now() + Duration::from_secs(20);
    while pending().await < 20.0 {
        assert!(Instant::now() < end, "the outbox never backed up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let acked = stream.await.unwrap();
    shop.agent.heal(&fault.id).await.unwrap();
    let v = settle(&shop, &acked, Duration::from_secs(60)).await;
    assert!(v.is_empty(), "{v:?}");
    assert!(acked.len() >= 20);
}

/// Order-to-paid times (ms) of `n` new orders, from the orders service's own records.
async fn paid_times(shop: &Shop, token: &str, tag: &str, n: usize) -> Vec<u64> {
    let mut ids = BTreeSet::new();
    for i in 0..n {
        let (status, body, _) = shop
            .order(
                token,
                &format!("{tag}{i}"),
                json!([{"product_id": 5, "quantity": 1}]),
            )
            .await;
        assert_eq!(status, 201);
        ids.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    assert!(settle(shop, &ids, Duration::from_secs(30)).await.is_empty());
    let audit = shop.internal("orders-1", AUDIT_ORDERS).await;
    audit["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| ids.contains(o["order_id"].as_str().unwrap()))
        .map(|o| o["updated_ms"].as_u64().unwrap() - o["created_ms"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_on_payments_to_bank_adds_about_its_delay_to_order_to_paid() {
    let shop = Shop::start(&[]).await;
    let token = shop.login("user20", "pass20").await;
    let mut base = paid_times(&shop, &token, "b", 10).await;
    shop.agent
        .inject(&FaultRequest {
            tree: None,
            spec: FaultSpec::Latency {
                delay_ms: 300,
                jitter_ms: 0,
                direction: Directions::Downstream,
                toxicity: 1.0,
            },
            target: "payments->bank".into(),
            ttl_ms: Some(60_000),
            seed: None,
        })
        .await
        .unwrap();
    let mut slow = paid_times(&shop, &token, "s", 10).await;
    base.sort();
    slow.sort();
    let added = slow[5] as i64 - base[5] as i64;
    assert!(
        (250..=450).contains(&added),
        "median order->paid {} ms, then {} ms with 300 ms on payments->bank",
        base[5],
        slow[5]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_controller_died_heals_within_its_ttl() {
    let shop = Shop::start(&[]).await;
    let agent = shop.agent.url().to_owned();
    let faultline = bin("faultline");
    // The controller injects a 2 s pause and renews it every half second.
    let script = format!(
        "id=$({f} fault pause content-1 --ttl 2s --agent {agent}) && while {f} fault renew $id --ttl 2s --agent {agent} >/dev/null; do sleep 0.5; done",
        f = faultline.display()
    );
    let mut controller = Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .spawn()
        .unwrap();
    shop.sup
        .wait_for("content-1", Duration::from_secs(10), |s| {
            s.state == ReplicaState::Paused
        })
        .await
        .expect("paused");
    // Well past the TTL, the renewals keep it in effect.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        shop.sup.replica_status("content-1").unwrap().state,
        ReplicaState::Paused
    );

    kill(Pid::from_raw(-(controller.id() as i32)), Signal::SIGKILL).unwrap();
    controller.wait().unwrap();
    let killed = Instant::now();
    shop.sup
        .wait_for("content-1", Duration::from_secs(10), |s| {
            s.state != ReplicaState::Paused
        })
        .await
        .expect("healed");
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(3),
        "healed {took:?} after the controller died (TTL 2 s + 1 s)"
    );
    assert!(shop.agent.faults().await.unwrap().is_empty());
    // The heal is journalled, then counted: the counter follows within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut m;
    loop {
        m = reqwest::get(format!("{agent}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let healed = sum(
            &m,
            "faultline_agent_faults_healed_total",
            &[("kind", "pause"), ("reason", "expired")],
        );
        if healed == 1.0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sum(
            &m,
            "faultline_agent_faults_healed_total",
            &[("kind", "pause"), ("reason", "expired")]
        ),
        1.0,
        "{m}"
    );
}

#[test]
fn an_agent_killed_with_a_fault_applied_heals_it_when_restarted_on_its_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let topology = one_cache_topology(dir.path());
    let run_dir = dir.path().join("run");
    // A process outside the topology, which outlives the agent.
    let mut victim = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = victim.id();
    let (mut agent, url) = start_agent(&run_dir, &topology, &[]);
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let resp = client
        .post(format!("{url}/v1/faults"))
        .json(&json!({"kind": "pause", "target": format!("pid:{pid}"), "ttl_ms": 600_000}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(
        wait_until(Duration::from_secs(2), || process_state(pid) == Some('T')),
        "paused"
    );

    kill(Pid::from_raw(agent.id() as i32), Signal::SIGKILL).unwrap();
    agent.wait().unwrap();
    assert_eq!(
        process_state(pid),
        Some('T'),
        "the pause outlives the dead agent"
    );

    let (mut agent, url) = start_agent(&run_dir, &topology, &[]);
    assert!(
        wait_until(Duration::from_secs(5), || process_state(pid) == Some('S')),
        "resumed by the new agent"
    );
    let journal = std::fs::read_to_string(run_dir.join("faults.jsonl")).unwrap();
    assert!(journal.contains("\"reason\":\"recovered\""), "{journal}");
    let faults: serde_json::Value = client
        .get(format!("{url}/v1/faults"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(faults["faults"], json!([]));
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
fn the_api_needs_a_token_off_loopback_and_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let topology = one_cache_topology(dir.path());
    // Off loopback without a token: refused before anything starts.
    let out = Command::new(bin("faultline-agent"))
        .arg("--topology")
        .arg(&topology)
        .arg("--run-dir")
        .arg(dir.path().join("open"))
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("FAULTLINE_AGENT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address, without a token"),
        "{err}"
    );
    assert!(
        !dir.path().join("open/logs/cache-1.log").exists(),
        "nothing started"
    );

    let (mut agent, url) = start_agent(
        &dir.path().join("run"),
        &topology,
        &["--listen", "0.0.0.0:0", "--token", "s3cret"],
    );
    let url = url.replace("0.0.0.0", "127.0.0.1");
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let get = |token: Option<&str>| {
        let mut r = client.get(format!("{url}/v1/status"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(get(None), 401);
    assert_eq!(get(Some("wrong")), 401);
    assert_eq!(get(Some("s3cret")), 200);
    assert_eq!(
        client.get(format!("{url}/health")).send().unwrap().status(),
        200
    );

    let post = |body: &str| {
        let resp = client
            .post(format!("{url}/v1/faults"))
            .bearer_auth("s3cret")
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.json().unwrap();
        (status, v["error"].as_str().unwrap_or_default().to_owned())
    };
    let check = |body: &str, status: u16, message: &str| {
        let (s, m) = post(body);
        assert_eq!(s, status, "{body}: {m}");
        assert!(m.contains(message), "{body}: {m}");
    };
    check("nope", 400, "not valid JSON");
    check("[]", 400, "must be a JSON object");
    check(r#"{"kind":"kill"}"#, 400, "`target` is required");
    check(
        r#"{"kind":"boom","target":"cache"}"#,
        400,
        "unknown fault kind `boom`",
    );
    check(
        r#"{"kind":"kill","target":"cache","hold":"yes"}"#,
        400,
        "`hold` must be true or false",
    );
    check(
        r#"{"kind":"kill","target":"nope"}"#,
        404,
        "no service or replica `nope`",
    );
    check(
        r#"{"kind":"latency","target":"cache","delay_ms":1}"#,
        400,
        "not an edge",
    );
    check(
        r#"{"kind":"pause","target":"pid:1"}"#,
        400,
        "not a process id target",
    );
    check(
        r#"{"kind":"poison","target":"q","count":1}"#,
        400,
        "[messaging]",
    );
    let call = |method: reqwest::Method, path: &str, body: &str| {
        let resp = client
            .request(method, format!("{url}{path}"))
            .bearer_auth("s3cret")
            .body(body.to_owned())
            .send()
            .unwrap();
        resp.status().as_u16()
    };
    assert_eq!(call(reqwest::Method::DELETE, "/v1/faults/fnope", ""), 404);
    assert_eq!(
        call(reqwest::Method::POST, "/v1/faults/fnope/renew", ""),
        404
    );
    assert_eq!(
        call(reqwest::Method::POST, "/v1/faults/fnope/renew", "{bad"),
        400
    );
    assert_eq!(call(reqwest::Method::GET, "/v1/nowhere", ""), 404);
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_outage_holds_every_replica_of_the_zone_until_healed() {
    let shop = Shop::start(&[]).await;
    let zone_b: Vec<String> = shop
        .sup
        .status()
        .into_iter()
        .filter(|r| r.zone == "b")
        .map(|r| r.name)
        .collect();
    assert!(zone_b.len() >= 5);
    let f = shop
        .agent
        .inject(&FaultRequest {
            tree: None,
            spec: FaultSpec::ZoneOutage,
            target: "b".into(),
            ttl_ms: Some(60_000),
            seed: None,
        })
        .await
        .unwrap();
    for r in &zone_b {
        shop.sup
            .wait_for(r, Duration::from_secs(10), |s| {
                s.state == ReplicaState::Held
            })
            .await
            .unwrap_or_else(|| panic!("{r} held"));
    }
    // Once the gateway's health checks take zone b's replicas out (a request that went
    // to a dead one is not retried when it is not idempotent, like a login), the shop
    // still sells through zone a: to the users whose shard's primary is in zone a (the
    // other shard has no primary until the zone returns: there is no failover).
    let end = Instant::now() + Duration::from_secs(20);
    let mut sold = false;
    let mut n = 0;
    while !sold {
        assert!(Instant::now() < end, "no order through zone a");
        n += 1;
        let user = 30 + n % 10;
        let resp = shop
            .http
            .post(shop.url("/api/v1/auth/login"))
            .json(&json!({"username": format!("user{user}"), "password": format!("pass{user}")}))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            let token = resp.json::<serde_json::Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned();
            let (status, _, _) = shop
                .order(
                    &token,
                    &format!("z{n}"),
                    json!([{"product_id": 1, "quantity": 1}]),
                )
                .await;
            sold = status == 201;
        }
        if !sold {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    shop.agent.heal(&f.id).await.unwrap();
    for r in &zone_b {
        shop.sup
            .wait_for(r, Duration::from_secs(20), |s| {
                s.state == ReplicaState::Healthy
            })
            .await
            .unwrap_or_else(|| panic!("{r} back"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_partition_cuts_consumers_off_until_healed_and_the_metrics_show_it() {
    let shop = Shop::start(&[("SHOP_BROKER_VISIBILITY", "3s")]).await;
    let token = shop.login("user40", "pass40").await;
    let f = shop
        .agent
        .inject(&FaultRequest {
            tree: None,
            spec: FaultSpec::QueuePartition {
                side: faultline_agent::faults::QueueSide::Consumers,
            },
            target: "payments".into(),
            ttl_ms: Some(60_000),
            seed: None,
        })
        .await
        .unwrap();
    let metrics = || async {
        reqwest::get(format!("{}/metrics", shop.agent.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let m = metrics().await;
    assert_eq!(
        sum(
            &m,
            "faultline_agent_faults_active",
            &[("kind", "queue-partition"), ("target", "payments")]
        ),
        1.0,
        "{m}"
    );
    let mut acked = BTreeSet::new();
    for i in 0..5 {
        let (status, body, _) = shop
            .order(
                &token,
                &format!("q{i}"),
                json!([{"product_id": 50 + i, "quantity": 1}]),
            )
            .await;
        assert_eq!(status, 201);
        acked.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    // The payments reach the queue; the consumers' long polls were cut mid-flight (the
    // broker hands messages out into a dead connection, where they stay in flight until
    // their visibility runs out), and nothing gets paid.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let q = shop.internal("broker-1", "/v1/queues/payments").await;
        if q["visible"].as_u64().unwrap() + q["in_flight"].as_u64().unwrap() >= 5 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the payments never reached the queue: {q}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut processed = 0.0;
    for r in ["payments-1", "payments-2"] {
        processed += sum(&shop.metrics(r).await, "shop_payments_processed_total", &[]);
    }
    assert_eq!(processed, 0.0, "payments got through the partition");
    shop.agent.heal(&f.id).await.unwrap();
    assert!(
        settle(&shop, &acked, Duration::from_secs(60))
            .await
            .is_empty()
    );
    let m = metrics().await;
    assert_eq!(sum(&m, "faultline_agent_faults_active", &[]), 0.0);
    assert_eq!(
        sum(
            &m,
            "faultline_agent_faults_healed_total",
            &[("kind", "queue-partition"), ("reason", "healed")]
        ),
        1.0
    );
    assert!(
        sum(
            &m,
            "faultline_agent_proxy_transferred_bytes_total",
            &[("edge", "payments->broker-1"), ("direction", "downstream")]
        ) > 0.0
    );
}

#[test]
fn stopping_faultline_up_heals_its_faults_and_commands_find_it_as_the_latest_run() {
    let mut up = Up::start(&[], &[]);
    let mut victim = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = victim.id();
    // No --agent: the command finds the run through $FAULTLINE_HOME/latest.
    let out = Command::new(bin("faultline"))
        .env("FAULTLINE_HOME", &up.home)
        .env_remove("FAULTLINE_AGENT")
        .args(["fault", "pause", &format!("pid:{pid}"), "--ttl", "5m"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_until(Duration::from_secs(2), || process_state(pid) == Some('T')));
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(up.child.wait().unwrap().code(), Some(0));
    assert_eq!(
        process_state(pid),
        Some('S'),
        "the pause ended with the run, long before its 5 minutes"
    );
    let journal = std::fs::read_to_string(up.run_dir.join("faults.jsonl")).unwrap();
    assert!(journal.contains("\"reason\":\"shutdown\""), "{journal}");
    let _ = victim.kill();
    let _ = victim.wait();
}
