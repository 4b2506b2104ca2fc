//! The member's background work: elections when the leader is silent, the leader's
//! pushes to the followers it knows, a follower's pulls from a leader that cannot reach
//! it, and finding the leader after a restart.
//!
//! Who can reach whom follows the topology's calls, which cannot form a cycle: the
//! primary calls the replica and the witness, the replica calls the witness. So a
//! leading primary pushes to both; a leading replica pushes to the witness and the
//! primary pulls from it; the witness never leads (it could reach nobody).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::node::{
    Append, MAJORITY, MEMBERS, Node, PRIMARY, Position, REPLICA, State, VoteReply, VoteRequest,
    WITNESS, random_timeout,
};
use crate::deadline::Deadline;
use crate::upstream::{RetryPolicy, Upstream};

/// How often a leader sends an empty append when it has nothing new.
const HEARTBEAT: Duration = Duration::from_millis(150);

fn deadline(d: Duration) -> Deadline {
    Deadline(Instant::now() + d)
}

async fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
    up: &Upstream,
    path: &str,
    body: &T,
    timeout: Duration,
) -> Option<(StatusCode, Option<R>)> {
    let body = serde_json::to_value(body).ok()?;
    let (status, _, bytes) = up
        .post_json(
            path,
            &body,
            &HeaderMap::new(),
            deadline(timeout),
            RetryPolicy::Never,
        )
        .await
        .ok()?;
    Some((status, serde_json::from_slice(&bytes).ok()))
}

/// Runs until `shutdown`: the election timer, leader discovery and (on the primary)
/// pulls.
pub async fn run(node: Arc<Node>, shutdown: CancellationToken) {
    let pulls = async {
        if node.me == PRIMARY {
            pull_loop(&node, &shutdown).await;
        }
    };
    tokio::join!(ticker(node.clone(), shutdown.clone()), pulls);
}

async fn ticker(node: Arc<Node>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut next_discovery = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (state, leader, silent) = {
            let mut core = node.lock();
            node.check_quorum(&mut core);
            (
                core.state,
                core.leader,
                core.last_heard.elapsed() >= core.timeout,
            )
        };
        if state == State::Leader {
            continue;
        }
        if silent && node.me != WITNESS {
            campaign(&node, &shutdown).await;
        } else if leader.is_none() && Instant::now() >= next_discovery {
            discover(&node).await;
            next_discovery = Instant::now() + Duration::from_millis(300);
        }
    }
}

/// Asks the members this one knows who leads; follows a leader of a term at least
/// as new as its own.
async fn discover(node: &Node) {
    for up in node.peers.iter().flatten() {
        let Ok((StatusCode::OK, _, body)) = up
            .get("/v1/status", deadline(Duration::from_millis(500)))
            .await
        else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        let (Some(term), Some(leader)) = (v["term"].as_u64(), v["leader"].as_u64()) else {
            continue;
        };
        let leader = leader as usize;
        let mut core = node.lock();
        if term >= core.term && core.state != State::Leader && leader < MEMBERS && leader != node.me
        {
            node.observe_term(&mut core, term, Some(leader));
            core.leader = Some(leader);
            core.last_heard = Instant::now();
            return;
        }
    }
}

/// Asks every member it knows for a vote; counts its own.
async fn ballot(node: &Node, req: &VoteRequest) -> (usize, u64) {
    let asks = node
        .peers
        .iter()
        .flatten()
        .map(|up| post::<_, VoteReply>(up, "/v1/vote", req, Duration::from_millis(500)));
    let mut votes = 1;
    let mut highest = 0;
    for r in futures::future::join_all(asks).await.into_iter().flatten() {
        if let (StatusCode::OK, Some(v)) = r {
            highest = highest.max(v.term);
            votes += usize::from(v.granted);
        }
    }
    (votes, highest)
}

/// Before standing, takes from the members it can call what their logs hold beyond its
/// own: their votes go only to a log at least as up to date as theirs.
async fn catch_up(node: &Node) {
    for up in node.peers.iter().flatten() {
        // Each answer carries up to 1000 batches or a snapshot; a log far behind
        // takes a few.
        for _ in 0..100 {
            let after = {
                let core = node.lock();
                core.tail.last()
            };
            let got = post::<_, Append>(up, "/v1/catchup", &after, Duration::from_millis(500));
            let grew = match got.await {
                Some((StatusCode::OK, Some(a))) => node.catch_up(a),
                _ => false,
            };
            if !grew {
                break;
            }
        }
    }
}

/// Stands for election in a new term, after a pre-vote says it could win; leads when
/// a majority votes for it.
async fn campaign(node: &Arc<Node>, shutdown: &CancellationToken) {
    catch_up(node).await;
    let pre = {
        let mut core = node.lock();
        core.last_heard = Instant::now();
        core.timeout = random_timeout(node.base_timeout);
        let p = node.position(&core);
        VoteRequest {
            pre: true,
            term: core.term + 1,
            candidate: node.me,
            last_lsn: p.last_lsn,
            last_term: p.last_term,
        }
    };
    let (votes, highest) = ballot(node, &pre).await;
    if votes < MAJORITY {
        let mut core = node.lock();
        if highest > core.term {
            // Behind: learn the term, and the leader from the next discovery.
            node.observe_term(&mut core, highest, None);
        }
        return;
    }
    let req = {
        let mut core = node.lock();
        let term = core.term + 1;
        node.set_term(&mut core, term, Some(node.me));
        node.follow(&mut core, None);
        core.state = State::Candidate;
        core.last_heard = Instant::now();
        core.timeout = random_timeout(node.base_timeout);
        let p = node.position(&core);
        VoteRequest {
            pre: false,
            term,
            candidate: node.me,
            last_lsn: p.last_lsn,
            last_term: p.last_term,
        }
    };
    tracing::info!(term = req.term, "asking for votes");
    let (votes, highest) = ballot(node, &req).await;
    let mut core = node.lock();
    node.observe_term(&mut core, highest, None);
    let term = req.term;
    if core.state == State::Candidate && core.term == term && votes >= MAJORITY {
        node.become_leader(&mut core);
        drop(core);
        for (member, up) in node.peers.iter().enumerate() {
            if let Some(up) = up {
                let (node, up, stop) = (node.clone(), up.clone(), shutdown.clone());
                tokio::spawn(async move { push_loop(node, member, up, term, stop).await });
            }
        }
    }
}

/// A leader's replication to one follower, for as long as it leads in `term`.
async fn push_loop(
    node: Arc<Node>,
    member: usize,
    up: Arc<Upstream>,
    term: u64,
    stop: CancellationToken,
) {
    let mut known: Option<(u64, u64)> = None;
    let mut durable = node.durable.subscribe();
    while !stop.is_cancelled() {
        if let Some((lsn, _)) = known {
            let _ = tokio::time::timeout(HEARTBEAT, durable.wait_for(|d| *d > lsn)).await;
        }
        let append = {
            let core = node.lock();
            if core.state != State::Leader || core.term != term {
                return;
            }
            match known {
                Some(f) => node.build_append(&core, f),
                // Not known yet: an empty append at this member's end asks for it.
                None => Append {
                    term,
                    leader: node.me,
                    prev: core.tail.last(),
                    batches: Vec::new(),
                    snapshot: None,
                    leader_lsn: *node.durable.borrow(),
                },
            }
        };
        match post::<Append, Position>(&up, "/v1/append", &append, Duration::from_secs(2)).await {
            Some((StatusCode::OK, Some(p))) => {
                let mut core = node.lock();
                if p.term > core.term {
                    node.observe_term(&mut core, p.term, None);
                    return;
                }
                node.record(&mut core, &Position { member, ..p });
                known = Some((p.last_lsn, p.last_term));
            }
            _ => {
                known = None;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// The primary as a follower of the replica, which cannot call it: it asks for the
/// batches after its own (a long poll), and its asking tells the leader what it holds.
async fn pull_loop(node: &Node, shutdown: &CancellationToken) {
    let Some(up) = node.peers[REPLICA].clone() else {
        return;
    };
    loop {
        let position = {
            let core = node.lock();
            (core.state == State::Follower && core.leader == Some(REPLICA))
                .then(|| node.position(&core))
        };
        let Some(position) = position else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        };
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = post::<Position, serde_json::Value>(&up, "/v1/pull", &position, Duration::from_secs(3)) => a,
        };
        match answer {
            Some((StatusCode::OK, Some(v))) => {
                if let Ok(a) = serde_json::from_value::<Append>(v) {
                    node.accept(a);
                }
            }
            Some((_, Some(v))) => {
                let mut core = node.lock();
                if let Some(term) = v["term"].as_u64() {
                    node.observe_term(&mut core, term, None);
                }
                if core.leader == Some(REPLICA) {
                    core.leader = None;
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
