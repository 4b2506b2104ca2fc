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
