//! The supervisor's controls on real processes.

use std::time::Duration;

use faultline_agent::supervisor::{ControlError, ReplicaState};
use faultline_tests::{Shop, alive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_terminate_restart_and_hold() {
    let shop = Shop::start(&[]).await;
    let sup = &shop.sup;
    let pid = sup.replica_status("api-1").unwrap().pid.unwrap();

    sup.pause("api-1", "test").await.unwrap();
    // The pause is in effect when the call returns.
    // State T after SIGSTOP, or a frozen cgroup (where the process shows as sleeping).
    assert!(faultline_tests::stopped(pid), "stopped");
    assert_eq!(
        sup.replica_status("api-1").unwrap().state,
        ReplicaState::Paused
    );
    sup.resume("api-1", "test").await.unwrap();
    sup.wait_for("api-1", Duration::from_secs(5), |s| {
        s.state == ReplicaState::Healthy
    })
    .await
    .expect("healthy again after resume");

    sup.terminate("api-1", None).await.unwrap();
    let s = sup
        .wait_for("api-1", Duration::from_secs(10), |s| {
            s.restarts == 1 && s.state == ReplicaState::Healthy
        })
        .await
        .expect("restarted after SIGTERM");
    assert_eq!(
        s.last_exit.as_deref(),
        Some("exited with code 0"),
        "graceful exit on SIGTERM"
    );
    assert!(!alive(pid));

    let pid = s.pid.unwrap();
    sup.restart("api-1").await.unwrap();
    let s = sup
        .wait_for("api-1", Duration::from_secs(10), |s| {
            s.restarts == 2 && s.state == ReplicaState::Healthy
        })
        .await
        .expect("restarted");
    assert_ne!(s.pid, Some(pid));

    sup.kill("api-2", Some("test")).await.unwrap();
    let held = sup
        .wait_for("api-2", Duration::from_secs(5), |s| {
            s.state == ReplicaState::Held
        })
        .await
        .expect("held down");
    assert_eq!(held.pid, None);
    // A hold is its holder's to end: a restart does not lift it.
    assert!(matches!(
        sup.restart("api-2").await,
        Err(ControlError::Held(_, by)) if by == "test"
    ));
    sup.release("api-2", "test").await.unwrap();
    sup.wait_for("api-2", Duration::from_secs(10), |s| {
        s.state == ReplicaState::Healthy
    })
    .await
    .expect("released replicas start again");

    assert!(matches!(
        sup.kill("nope-1", None).await,
        Err(ControlError::UnknownReplica(_))
    ));

    let pids: Vec<u32> = sup.status().iter().filter_map(|s| s.pid).collect();
    sup.shutdown().await;
    assert!(
        sup.status()
            .iter()
            .all(|s| s.state == ReplicaState::Stopped && s.pid.is_none())
    );
    for p in pids {
        assert!(!alive(p), "pid {p} survived shutdown");
    }
}

/// Holds and pauses compose: a replica stays down while any holder holds it and stopped
/// while any holder pauses it, across kills and restarts; it runs again only when the
/// last one lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_and_pauses_last_until_their_last_holder_lets_go() {
    let shop = Shop::start(&[]).await;
    let sup = &shop.sup;
    let state = |name: &str| sup.replica_status(name).unwrap().state;
    let wait = |name: &'static str, want: ReplicaState| async move {
        sup.wait_for(name, Duration::from_secs(10), |s| s.state == want)
            .await
            .unwrap_or_else(|| panic!("{name} never became {want:?}"))
    };

    // Two holds: the first release leaves it down.
    sup.kill("api-2", Some("a")).await.unwrap();
    wait("api-2", ReplicaState::Held).await;
    sup.terminate("api-2", Some("b")).await.unwrap();
    sup.release("api-2", "a").await.unwrap();
    assert_eq!(state("api-2"), ReplicaState::Held);
    sup.release("api-2", "b").await.unwrap();
    wait("api-2", ReplicaState::Healthy).await;

    // Two pauses: the first resume leaves it stopped.
    let pid = sup.replica_status("api-1").unwrap().pid.unwrap();
    sup.pause("api-1", "a").await.unwrap();
    sup.pause("api-1", "b").await.unwrap();
    sup.resume("api-1", "a").await.unwrap();
    assert_eq!(state("api-1"), ReplicaState::Paused);
    assert!(
        faultline_tests::stopped(pid),
        "still stopped while b pauses it"
    );

    // A kill of a paused replica: the replica it restarts waits stopped too.
    sup.kill("api-1", None).await.unwrap();
    let s = sup
        .wait_for("api-1", Duration::from_secs(10), |s| {
            s.restarts == 1 && s.state == ReplicaState::Paused
        })
        .await
        .expect("restarted, and paused at once");
    let new_pid = s.pid.unwrap();
    assert_ne!(new_pid, pid);
    assert!(
        faultline_tests::stopped(new_pid),
        "the new process is stopped"
    );

    // A pause of a held replica takes hold when it comes back.
    sup.kill("api-2", Some("c")).await.unwrap();
    wait("api-2", ReplicaState::Held).await;
    sup.pause("api-2", "d").await.unwrap();
    sup.release("api-2", "c").await.unwrap();
    let s = wait("api-2", ReplicaState::Paused).await;
    assert!(faultline_tests::stopped(s.pid.unwrap()));

    sup.resume("api-1", "b").await.unwrap();
    sup.resume("api-2", "d").await.unwrap();
    wait("api-1", ReplicaState::Healthy).await;
    wait("api-2", ReplicaState::Healthy).await;
    sup.shutdown().await;
}

/// A web service whose `/health` stops answering, for good, once `GET /hang` is asked:
/// hung, not crashed and not stopped.
const PY_HANGS: &str = r#"
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

host, port = sys.argv[1].rsplit(":", 1)
hung = threading.Event()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hang":
            hung.set()
        elif hung.is_set():
            threading.Event().wait()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer((host, int(port)), Handler).serve_forever()
"#;

/// The one-service topology of `PY_HANGS`, written into `dir`, probed every 200 ms and
/// restarted after three failed probes.
fn hanging_topology(dir: &std::path::Path) -> String {
    let script = dir.join("hangs.py");
    std::fs::write(&script, PY_HANGS).unwrap();
    format!(
        "[services.web]\ncommand = [\"python3\", \"{}\", \"{{listen}}\"]\nreplicas = 2\nliveness = {{ failures = 3, period = \"200ms\", timeout = \"200ms\" }}\n",
        script.display()
    )
}

/// A replica that stops answering its probe is killed, tree and all, and started again;
/// the restart is counted apart from crashes, in the status, its table and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_killed_and_started_again_counted_apart_from_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start_text(&hanging_topology(dir.path()), &[]).await;
    let sup = &shop.sup;
    let first = sup.replica_status("web-1").unwrap().pid.unwrap();

    let hang = shop.replica_url("web-1", "/hang");
    assert_eq!(shop.http.get(&hang).send().await.unwrap().status(), 200);
    let s = sup
        .wait_for("web-1", Duration::from_secs(15), |s| {
            s.liveness_restarts == 1 && s.state == ReplicaState::Healthy
        })
        .await
        .expect("the hung replica is restarted and healthy again");
    assert_ne!(s.pid, Some(first));
    assert!(!alive(first), "the hung process is killed");
    assert_eq!(s.restarts, 1);
    let why = s.last_exit.unwrap();
    assert!(
        why.starts_with("killed after failing its liveness probe 3 times"),
        "{why}"
    );
    assert_eq!(sup.replica_status("web-2").unwrap().liveness_restarts, 0);

    // A crash is a restart, not a liveness restart.
    sup.kill("web-1", None).await.unwrap();
    let s = sup
        .wait_for("web-1", Duration::from_secs(15), |s| {
            s.restarts == 2 && s.state == ReplicaState::Healthy
        })
        .await
        .expect("restarted after the kill");
    assert_eq!(s.liveness_restarts, 1);

    let table = faultline_agent::report::table(&sup.status());
    assert!(table.contains("2 (1 hung)"), "{table}");
    let metrics = shop
        .http
        .get(format!("{}/metrics", shop.agent.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line =
        r#"faultline_agent_replica_liveness_restarts_total{service="web",replica="web-1"} 1"#;
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
    let line = r#"faultline_agent_replica_restarts_total{service="web",replica="web-1"} 2"#;
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
}

/// A replica a pause fault stops is not hung: neither the supervisor's pause (which
/// stops the probes) nor a pause of its pid (which the probes see failing) gets it
/// restarted, however long it lasts; it runs on when the pause heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_leaves_a_paused_replica_alone() {
    let dir = tempfile::tempdir().unwrap();
    let shop = Shop::start_text(&hanging_topology(dir.path()), &[]).await;
    let sup = &shop.sup;
    // Three failed probes 200 ms apart would restart it: four times as long.
    let window = Duration::from_millis(2400);

    let pid = sup.replica_status("web-1").unwrap().pid.unwrap();
    sup.pause("web-1", "test").await.unwrap();
    tokio::time::sleep(window).await;
    sup.resume("web-1", "test").await.unwrap();

    let pid2 = sup.replica_status("web-2").unwrap().pid.unwrap();
    let pause = format!(r#"{{"kind":"pause","target":"pid:{pid2}","ttl_ms":60000}}"#);
    let pause = faultline_agent::faults::spec::FaultRequest::from_json(pause.as_bytes()).unwrap();
    let fault = shop.agent.inject(&pause).await.unwrap();
    sup.wait_for("web-2", Duration::from_secs(10), |s| {
        s.state == ReplicaState::Unhealthy
    })
    .await
    .expect("the probes see the paused process fail");
    tokio::time::sleep(window).await;
    shop.agent.heal(&fault.id).await.unwrap();

    for (name, pid) in [("web-1", pid), ("web-2", pid2)] {
        let s = sup
            .wait_for(name, Duration::from_secs(10), |s| {
                s.state == ReplicaState::Healthy
            })
            .await
            .expect("healthy once resumed");
        assert_eq!(s.pid, Some(pid), "{name} ran on: {s:?}");
        assert_eq!((s.restarts, s.liveness_restarts), (0, 0), "{name}");
    }
}
