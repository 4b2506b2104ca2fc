//! The supervisor's controls on real processes.

use std::time::Duration;

use faultline_agent::supervisor::{ControlError, ReplicaState};
use faultline_tests::{Shop, alive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_terminate_restart_and_hold() {
    let shop = Shop::start(&[]).await;
    let sup = &shop.sup;
    let pid = sup.replica_status("api-1").unwrap().pid.unwrap();

    sup.pause("api-1").await.unwrap();
    // The pause is in effect when the call returns.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(
        stat.rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('T'),
        "stopped: {stat}"
    );
    assert_eq!(
        sup.replica_status("api-1").unwrap().state,
        ReplicaState::Paused
    );
    sup.resume("api-1").await.unwrap();
    sup.wait_for("api-1", Duration::from_secs(5), |s| {
        s.state == ReplicaState::Healthy
    })
    .await
    .expect("healthy again after resume");

    sup.terminate("api-1", false).await.unwrap();
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

    sup.kill("api-2", true).await.unwrap();
    let held = sup
        .wait_for("api-2", Duration::from_secs(5), |s| {
            s.state == ReplicaState::Held
        })
        .await
        .expect("held down");
    assert_eq!(held.pid, None);
    assert!(matches!(
        sup.pause("api-2").await,
        Err(ControlError::NotRunning(_))
    ));
    sup.release("api-2").await.unwrap();
    sup.wait_for("api-2", Duration::from_secs(10), |s| {
        s.state == ReplicaState::Healthy
    })
    .await
    .expect("released replicas start again");

    assert!(matches!(
        sup.kill("nope-1", false).await,
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
