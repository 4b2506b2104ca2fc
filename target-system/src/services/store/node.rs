//! One member of a shard's replication group: its term and vote, its log, the data it
//! serves, and the rules (Raft's) that let at most one leader acknowledge writes.
//!
//! Invariants kept here, and relied on by [`super::election`]:
//! - a term and a vote are durable (in the log, fsync'd) before the member acts on them;
//! - a member appends a leader's batches only right after the batch it has
//!   (`prev`), so two logs that hold a batch of the same LSN and term hold the same
//!   batches up to it; otherwise it installs the leader's snapshot, which replaces its
//!   log (the un-acknowledged divergent tail of a deposed leader is cut off that way);
//! - a leader counts a follower's LSN only from an answer of its own term and only when
//!   the follower's last batch has the same term as the leader's batch at that LSN.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::data::{
    Checkpoint, CheckpointView, Data, LogBatch, LogOp, OpKind, OpRequest, Record, Snapshot, Tail,
    now_ms,
};
use super::metrics::StoreMetrics;
use crate::upstream::Upstream;
use crate::wal::{self, CheckpointConfig, Checkpoints, Recovered, Wal};

/// Seats in a shard's group of three: the primary leads first, the replica takes over,
/// the witness keeps the log and votes but never leads.
pub const PRIMARY: usize = 0;
pub const REPLICA: usize = 1;
pub const WITNESS: usize = 2;
pub const MEMBERS: usize = 3;
/// Members (the leader included) that must hold a batch durably before it is
/// acknowledged, and that must vote for a leader.
pub const MAJORITY: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Leader,
    Follower,
    Candidate,
}

/// How safe the member is asked to be.
#[derive(Debug, Clone, Copy)]
pub struct Modes {
    /// Answer a write only once a follower has it durably (the default).
    pub semi_sync: bool,
    /// UNSAFE: answer before the log is written, flushing it every 200 ms.
    pub unsafe_no_fsync: bool,
    /// UNSAFE: no fences: a leader answers writes on its own durability and keeps
    /// leading when cut off from every follower.
    pub no_fencing: bool,
}

impl Modes {
    /// Whether a write's answer waits for a follower's acknowledgement.
    pub fn waits_for_follower(&self) -> bool {
        self.semi_sync && !self.unsafe_no_fsync && !self.no_fencing
    }
}

/// How a member runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Batches kept in memory for followers.
    pub tail: usize,
    pub modes: Modes,
    /// The election timeout's lower bound.
    pub base_timeout: Duration,
    /// When the member's log is checkpointed and cut.
    pub checkpoint: CheckpointConfig,
}

/// A leader's batch (`prev` is the batch just before the first one sent), or its whole
/// data when the follower's log does not match.
#[derive(Debug, Serialize, Deserialize)]
pub struct Append {
    pub term: u64,
    pub leader: usize,
    pub prev: (u64, u64),
    pub batches: Vec<Arc<LogBatch>>,
    pub snapshot: Option<Snapshot>,
    /// The leader's last durable LSN, for the follower's lag.
    pub leader_lsn: u64,
}

/// A member's position: its answer to an append, and a follower's pull request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Position {
    pub member: usize,
    pub term: u64,
    pub last_lsn: u64,
    pub last_term: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VoteRequest {
    /// A pre-vote: would the member vote so, were it asked? Nothing changes on either
    /// side, so a member cut off from the others does not raise terms it would then
    /// force on them when it comes back.
    #[serde(default)]
    pub pre: bool,
    pub term: u64,
    pub candidate: usize,
    pub last_lsn: u64,
    pub last_term: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VoteReply {
    pub term: u64,
    pub granted: bool,
}

#[derive(Debug)]
pub enum WriteError {
    Conflict(String),
    Invalid(String),
    NotLeader { term: u64, leader: Option<usize> },
}

pub type Write = (
    Vec<OpRequest>,
    oneshot::Sender<Result<(u64, u64), WriteError>>,
);

/// What the member's lock guards: everything that changes with the log.
pub struct Core {
    pub term: u64,
    pub voted_for: Option<usize>,
    pub state: State,
    pub leader: Option<usize>,
    /// When a leader (or a vote this member granted) was last heard of.
    pub last_heard: Instant,
    /// This member's election timeout, drawn anew after each election.
    pub timeout: Duration,
    pub wal: Wal,
    pub checkpoints: Checkpoints,
    pub tail: Tail,
    /// As a leader: each follower's matching LSN in this term, and when it was heard.
    pub followers: [Option<(u64, Instant)>; MEMBERS],
    pub leader_since: Instant,
    /// As a follower: the leader's last durable LSN, as it last said.
    pub leader_lsn: u64,
    /// When this member (as a follower) or every follower (as a leader) was last
    /// caught up.
    pub caught_up_at: Instant,
    /// As a leader: batches durable here but not yet on a follower, which readers do
    /// not see yet (a leader's reads never show a write that a failover could lose).
    pub unapplied: std::collections::VecDeque<Arc<LogBatch>>,
}

pub struct Node {
    pub me: usize,
    pub shard: usize,
    pub peers: [Option<Arc<Upstream>>; MEMBERS],
    pub core: Mutex<Core>,
    pub data: RwLock<Data>,
    /// The last LSN this member holds durably (what a leader may send on).
    pub durable: watch::Sender<u64>,
    /// As a leader: (term, highest LSN a follower holds durably in that term).
    pub acked: watch::Sender<(u64, u64)>,
    pub path: PathBuf,
    pub modes: Modes,
    pub base_timeout: Duration,
    pub metrics: StoreMetrics,
}

fn fatal(path: &Path, e: &std::io::Error) -> ! {
    tracing::error!(path = %path.display(), error = %e, "cannot write the log; stopping");
    std::process::exit(70);
}

impl Node {
    /// Opens the member's log at `path` and replays it.
    pub fn open(
        me: usize,
        shard: usize,
        peers: [Option<Arc<Upstream>>; MEMBERS],
        path: PathBuf,
        settings: Settings,
        metrics: StoreMetrics,
    ) -> anyhow::Result<Node> {
        let Settings {
            tail,
            modes,
            base_timeout,
            checkpoint,
        } = settings;
        let Recovered {
            wal,
            snapshot,
            records,
        } = Wal::recover::<Checkpoint, Record>(&path, checkpoint)?;
        let mut data = Data::default();
        let mut tail = Tail::new(tail);
        let (mut term, mut voted_for) = (0, None);
        let mut pending = Vec::new();
        if let Some(c) = snapshot {
            (term, voted_for) = (c.term, c.voted_for);
            data.install(&c.data);
            tail.reset(c.data.lsn, c.data.term);
            pending = c.pending;
        }
        for r in pending.into_iter().map(Record::Batch).chain(records) {
            match r {
                Record::Term {
                    term: t,
                    voted_for: v,
                } => (term, voted_for) = (t, v),
                Record::Batch(b) if b.lsn == tail.last().0 + 1 => {
                    data.apply(&b);
                    tail.push(b);
                }
                Record::Batch(_) => {}
            }
        }
        tracing::info!(
            lsn = data.lsn,
            term,
            keys = data.map.len(),
            "recovered from the log"
        );
        let now = Instant::now();
        // A primary starting afresh asks for votes at once, so that the shard has its
        // leader as soon as the group is up; a replica starting afresh gives it time
        // to start (it starts after the replica and the witness, which it calls).
        let timeout = match (me, term) {
            (PRIMARY, 0) => Duration::ZERO,
            (_, 0) => random_timeout(base_timeout * 3),
            _ => random_timeout(base_timeout),
        };
        let lsn = data.lsn;
        Ok(Node {
            me,
            shard,
            peers,
            core: Mutex::new(Core {
                term,
                voted_for,
                state: State::Follower,
                leader: None,
                last_heard: now,
                timeout,
                wal,
                checkpoints: Checkpoints::new(metrics.wal.clone()),
                tail,
                followers: [None; MEMBERS],
                leader_since: now,
                leader_lsn: lsn,
                caught_up_at: now,
                unapplied: std::collections::VecDeque::new(),
            }),
            data: RwLock::new(data),
            durable: watch::Sender::new(lsn),
            acked: watch::Sender::new((0, 0)),
            path,
            modes,
            base_timeout,
            metrics,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap()
    }

    pub fn position(&self, core: &Core) -> Position {
        let (last_lsn, last_term) = core.tail.last();
        Position {
            member: self.me,
            term: core.term,
            last_lsn,
            last_term,
        }
    }

    /// Makes `term` and `voted_for` durable and current.
    pub fn set_term(&self, core: &mut Core, term: u64, voted_for: Option<usize>) {
        core.term = term;
        core.voted_for = voted_for;
        self.log(core, [Record::Term { term, voted_for }]);
        self.sync(core);
        self.metrics.term.set(term as i64);
    }

    /// Buffers `records` for the log.
    fn log(&self, core: &mut Core, records: impl IntoIterator<Item = Record>) {
        let before = core.wal.len();
        for r in records {
            core.wal.append(&r);
        }
        self.metrics.wal.bytes.inc_by(core.wal.len() - before);
    }

    /// Writes and makes durable what the log holds; a failing disk stops the process.
    fn sync(&self, core: &mut Core) {
        let start = Instant::now();
        if let Err(e) = core.wal.sync() {
            fatal(&self.path, &e);
        }
        self.metrics
            .wal
            .fsync
            .observe(start.elapsed().as_secs_f64());
    }

    /// Follows a newer term when one is seen: a leader or candidate steps down.
    pub fn observe_term(&self, core: &mut Core, term: u64, leader: Option<usize>) {
        if term > core.term {
            self.set_term(core, term, None);
            self.follow(core, leader);
        }
    }

    pub fn follow(&self, core: &mut Core, leader: Option<usize>) {
        if core.state == State::Leader {
            tracing::warn!(term = core.term, "stepping down");
        }
        // What it logged as a leader and no follower confirmed stays unseen: it shows
        // once the next leader's log is found to hold it (`accept`), or goes with
        // the snapshot that replaces a divergent log.
        core.state = State::Follower;
        core.leader = leader;
        // A fresh replica's first timeout is long (see `open`); once the group runs
        // it is the usual one.
        core.timeout = random_timeout(self.base_timeout);
        self.metrics.leader.set(0);
    }

    pub fn become_leader(&self, core: &mut Core) {
        tracing::info!(term = core.term, member = self.me, "leading the shard");
        core.state = State::Leader;
        core.leader = Some(self.me);
        core.followers = [None; MEMBERS];
        core.leader_since = Instant::now();
        self.acked.send_replace((core.term, 0));
        self.metrics.leader.set(1);
        self.metrics.elections.inc();
    }

    pub fn is_leader(&self, term: u64) -> bool {
        let core = self.lock();
        core.state == State::Leader && core.term == term
    }

    /// The leader a caller should try, when this member has heard from one lately.
    pub fn leader_hint(&self, core: &Core) -> Option<usize> {
        match core.state {
            State::Leader => Some(self.me),
            _ if core.last_heard.elapsed() < self.base_timeout => core.leader,
            _ => None,
        }
    }

    /// Applies a group of write requests as the leader: checks their conditions, logs
    /// them, and (unless unsafe) makes them durable before the data shows them.
    pub fn commit_group(&self, group: Vec<Write>) {
        let mut core = self.lock();
        if core.state != State::Leader {
            let (term, leader) = (core.term, self.leader_hint(&core));
            for (_, reply) in group {
                let _ = reply.send(Err(WriteError::NotLeader { term, leader }));
            }
            return;
        }
        let term = core.term;
        let mut next = core.tail.last().0 + 1;
        let mut overlay: Vec<(String, Option<u64>)> = core
            .unapplied
            .iter()
            .flat_map(|b| {
                b.ops
                    .iter()
                    .map(|op| (op.key.clone(), (op.op == OpKind::Put).then_some(b.lsn)))
            })
            .collect();
        let mut batches = Vec::new();
        let mut replies = Vec::new();
        {
            let data = self.data.read().unwrap();
            for (ops, reply) in group {
                match check(&ops, &data, &overlay) {
                    Ok(()) => {
                        let b = to_batch(ops, next, term, &mut overlay);
                        replies.push((reply, Ok((next, term))));
                        batches.push(b);
                        next += 1;
                    }
                    Err(e) => replies.push((reply, Err(e))),
                }
            }
        }
        self.log(&mut core, batches.iter().cloned().map(Record::Batch));
        if !self.modes.unsafe_no_fsync && !batches.is_empty() {
            self.sync(&mut core);
            self.metrics.wal.group_size.observe(batches.len() as f64);
        }
        if self.modes.waits_for_follower() {
            for b in batches {
                core.unapplied.push_back(b.clone());
                core.tail.push(b);
            }
        } else {
            self.apply(&mut core, batches);
        }
        if !self.modes.unsafe_no_fsync {
            self.durable.send_replace(core.tail.last().0);
        }
        drop(core);
        for (reply, r) in replies {
            let _ = reply.send(r);
        }
        self.checkpoint(&mut self.lock());
    }

    /// Collects a finished checkpoint (the soak, before it ends).
    #[doc(hidden)]
    pub fn checkpoint_collect(&self) {
        let mut core = self.lock();
        let Core {
            wal, checkpoints, ..
        } = &mut *core;
        checkpoints.step(wal, || None);
    }

    /// Starts a checkpoint of the log when it has grown enough (`wal::Checkpoints`):
    /// the state its records make is the data readers see, the batches they do not
    /// see yet (a leader's), and the term and vote.
    fn checkpoint(&self, core: &mut Core) {
        let Core {
            term,
            voted_for,
            wal,
            checkpoints,
            tail,
            unapplied,
            ..
        } = core;
        checkpoints.step(wal, || {
            let data = self.data.read().unwrap();
            let data_term = tail.term_at(data.lsn).unwrap_or(tail.last().1);
            Some(wal::Snapshot::of(CheckpointView {
                term: *term,
                voted_for: *voted_for,
                data: data.view(data_term),
                pending: unapplied.iter().cloned().collect(),
            }))
        });
    }

    /// UNSAFE mode: writes what was acknowledged to the file (without fsync), and only
    /// then lets followers have it.
    pub fn flush_unsafe(&self) {
        let mut core = self.lock();
        if let Err(e) = core.wal.write() {
            fatal(&self.path, &e);
        }
        self.durable.send_replace(core.tail.last().0);
    }

    /// Shows the leader's batches up to `lsn` to readers.
    fn apply_committed(&self, core: &mut Core, lsn: u64) {
        if core.unapplied.front().is_none_or(|b| b.lsn > lsn) {
            return;
        }
        let mut data = self.data.write().unwrap();
        while let Some(b) = core.unapplied.front()
            && b.lsn <= lsn
        {
            data.apply(b);
            core.unapplied.pop_front();
        }
    }

    fn apply(&self, core: &mut Core, batches: Vec<Arc<LogBatch>>) {
        if batches.is_empty() {
            return;
        }
        let mut data = self.data.write().unwrap();
        for b in batches {
            data.apply(&b);
            core.tail.push(b);
        }
    }

    /// A follower takes a leader's append (pushed to it, or the answer to its pull),
    /// and answers with its position.
    pub fn accept(&self, a: Append) -> Position {
        let mut core = self.lock();
        if a.term < core.term {
            return self.position(&core);
        }
        if a.term > core.term {
            self.set_term(&mut core, a.term, None);
        }
        if core.state != State::Follower || core.leader != Some(a.leader) {
            self.follow(&mut core, Some(a.leader));
        }
        core.last_heard = Instant::now();
        core.leader_lsn = a.leader_lsn;
        if let Some(s) = a.snapshot {
            self.install(&mut core, s);
        } else if core.tail.last() == a.prev {
            self.extend(&mut core, a.prev.0, a.batches);
            self.checkpoint(&mut core);
        }
        self.position(&core)
    }

    /// Appends `batches`, which follow this member's last batch at `prev` in another
    /// member's log, and makes them durable.
    fn extend(&self, core: &mut Core, prev: u64, batches: Vec<Arc<LogBatch>>) {
        // The other log holds this one's up to `prev`: it is a majority's.
        self.apply_committed(core, prev);
        if batches.is_empty() {
            return;
        }
        self.log(core, batches.iter().cloned().map(Record::Batch));
        if self.modes.unsafe_no_fsync {
            if let Err(e) = core.wal.write() {
                fatal(&self.path, &e);
            }
        } else {
            self.sync(core);
        }
        self.apply(core, batches);
        self.durable.send_replace(core.tail.last().0);
    }

    /// What this member holds beyond a candidate's last batch (`after`), when its log
    /// is more up to date than the candidate's: the batches after it, or a snapshot.
    /// A witness never leads, so without this a replica whose log is behind the
    /// witness's (the lost leader's last batches reached the witness first) could
    /// never win its vote, and the shard would stay without a leader.
    pub fn catch_up_for(&self, after: (u64, u64)) -> Option<Append> {
        let core = self.lock();
        let (lsn, term) = core.tail.last();
        ((term, lsn) > (after.1, after.0)).then(|| self.build_append(&core, after))
    }

    /// A candidate takes what a more up-to-date member sent it (`catch_up_for`). As
    /// with a leader's append, batches go on only right after the batch they follow,
    /// and a snapshot replaces a log that diverges; unlike one, it changes neither the
    /// term nor whom this member follows. Returns whether the log grew.
    pub fn catch_up(&self, a: Append) -> bool {
        let mut core = self.lock();
        if core.state == State::Leader {
            return false;
        }
        let (lsn, term) = core.tail.last();
        if let Some(s) = a.snapshot {
            // Only a more up-to-date log replaces this one: what it cuts off was
            // never acknowledged (a majority holding it would have elected no leader
            // whose log lacks it).
            if (s.term, s.lsn) <= (term, lsn) {
                return false;
            }
            self.install(&mut core, s);
            return true;
        }
        if a.batches.is_empty() || (lsn, term) != a.prev {
            return false;
        }
        self.extend(&mut core, a.prev.0, a.batches);
        self.checkpoint(&mut core);
        true
    }

    /// Replaces the member's log and data by the leader's snapshot.
    fn install(&self, core: &mut Core, s: Snapshot) {
        tracing::warn!(
            lsn = s.lsn,
            term = s.term,
            had = core.tail.last().0,
            "replacing the log by the leader's snapshot"
        );
        // Readers wait until the snapshot is durable: they never see data that a
        // crash now would take back.
        let mut data = self.data.write().unwrap();
        data.install(&s);
        let checkpoint = CheckpointView {
            term: core.term,
            voted_for: core.voted_for,
            data: data.view(s.term),
            pending: Vec::new(),
        };
        if let Err(e) = core.wal.replace(wal::Snapshot::of(checkpoint)) {
            fatal(&self.path, &e);
        }
        drop(data);
        core.unapplied.clear();
        core.tail.reset(s.lsn, s.term);
        self.metrics.snapshots.inc();
        self.durable.send_replace(s.lsn);
    }

    /// What a leader sends a follower at `f`: the batches after it, or a snapshot when
    /// the follower's log does not match this one.
    pub fn build_append(&self, core: &Core, f: (u64, u64)) -> Append {
        let durable = *self.durable.borrow();
        let mut append = Append {
            term: core.term,
            leader: self.me,
            prev: f,
            batches: Vec::new(),
            snapshot: None,
            leader_lsn: durable,
        };
        if f.0 <= durable && core.tail.term_at(f.0) == Some(f.1) {
            append.batches = core.tail.after(f.0, durable, 1000);
        } else {
            let data = self.data.read().unwrap();
            let term = core.tail.term_at(data.lsn).unwrap_or(core.tail.last().1);
            append.snapshot = Some(data.snapshot(term));
            self.metrics.snapshots.inc();
        }
        append
    }

    /// A leader learns a follower's position: what it holds counts towards the
    /// acknowledgement of writes when its log matches this one.
    pub fn record(&self, core: &mut Core, p: &Position) {
        if core.state != State::Leader || p.term != core.term || p.member >= MEMBERS {
            return;
        }
        let matched = if core.tail.term_at(p.last_lsn) == Some(p.last_term) {
            p.last_lsn
        } else {
            0
        };
        core.followers[p.member] = Some((matched, Instant::now()));
        let best = core
            .followers
            .iter()
            .flatten()
            .map(|(lsn, _)| *lsn)
            .max()
            .unwrap_or(0);
        let term = core.term;
        self.apply_committed(core, best);
        self.acked.send_if_modified(|a| {
            if a.0 != term || a.1 < best {
                *a = (term, best);
                true
            } else {
                false
            }
        });
    }

    /// A leader that has heard from no follower for an election timeout steps down:
    /// it could not have its writes acknowledged anyway, and callers go elsewhere.
    pub fn check_quorum(&self, core: &mut Core) {
        if core.state != State::Leader || self.modes.no_fencing {
            return;
        }
        let limit = self.base_timeout;
        let heard = core
            .followers
            .iter()
            .flatten()
            .any(|(_, at)| at.elapsed() < limit);
        if !heard && core.leader_since.elapsed() > limit {
            tracing::warn!(
                term = core.term,
                "no follower heard for an election timeout"
            );
            self.follow(core, None);
            core.last_heard = Instant::now();
        }
    }

    /// Answers a candidate's vote request.
    pub fn vote(&self, req: &VoteRequest) -> VoteReply {
        let mut core = self.lock();
        // A member that hears from a leader ignores candidates (a member that comes
        // back must not depose a working leader). Heard means within half the
        // timeout: heartbeats come every 150 ms, and a candidate must not be refused
        // by a voter that heard the lost leader a moment after it did.
        let recent = self.base_timeout / 2;
        let sticky = match core.state {
            State::Leader => core
                .followers
                .iter()
                .flatten()
                .any(|(_, at)| at.elapsed() < recent),
            State::Follower => core.leader.is_some() && core.last_heard.elapsed() < recent,
            State::Candidate => false,
        };
        let (last_lsn, last_term) = core.tail.last();
        let up_to_date = (req.last_term, req.last_lsn) >= (last_term, last_lsn);
        if req.pre || (sticky && req.term > core.term) {
            return VoteReply {
                term: core.term,
                granted: req.pre && !sticky && req.term > core.term && up_to_date,
            };
        }
        if req.term > core.term {
            self.set_term(&mut core, req.term, None);
            self.follow(&mut core, None);
        }
        let granted = req.term == core.term
            && core.voted_for.is_none_or(|v| v == req.candidate)
            && up_to_date;
        if granted {
            if core.voted_for.is_none() {
                self.set_term(&mut core, req.term, Some(req.candidate));
            }
            core.last_heard = Instant::now();
        }
        VoteReply {
            term: core.term,
            granted,
        }
    }

    /// Entries behind, and seconds since caught up: a follower's own, a leader's
    /// furthest follower's.
    pub fn lag(&self) -> (u64, f64) {
        let mut core = self.lock();
        let last = core.tail.last().0;
        let entries = if core.state == State::Leader {
            (0..MEMBERS)
                .filter(|m| *m != self.me)
                .map(|m| last.saturating_sub(core.followers[m].map_or(0, |f| f.0)))
                .max()
                .unwrap_or(0)
        } else {
            core.leader_lsn.saturating_sub(last)
        };
        if entries == 0 {
            core.caught_up_at = Instant::now();
            return (0, 0.0);
        }
        (entries, core.caught_up_at.elapsed().as_secs_f64())
    }
}

pub fn random_timeout(base: Duration) -> Duration {
    base + base.mul_f64(fastrand::f64() * 0.6)
}

/// Checks a request's ops against the data and the batches of the same group ahead of
/// it (`overlay`).
fn check(
    ops: &[OpRequest],
    data: &Data,
    overlay: &[(String, Option<u64>)],
) -> Result<(), WriteError> {
    if ops.is_empty() {
        return Err(WriteError::Invalid("a batch needs at least one op".into()));
    }
    for op in ops {
        if op.key.is_empty() {
            return Err(WriteError::Invalid("keys cannot be empty".into()));
        }
        match (op.op, &op.value) {
            (OpKind::Put, None) => {
                return Err(WriteError::Invalid(format!(
                    "put of {} has no value",
                    op.key
                )));
            }
            (OpKind::Delete, Some(_)) => {
                return Err(WriteError::Invalid(format!(
                    "delete of {} has a value",
                    op.key
                )));
            }
            _ => {}
        }
        let current = match overlay.iter().rev().find(|(k, _)| *k == op.key) {
            Some((_, v)) => *v,
            None => data.map.get(&op.key).map(|e| e.version),
        };
        let ok = (!op.if_absent || current.is_none())
            && op.if_version.is_none_or(|v| current == Some(v));
        if !ok {
            return Err(WriteError::Conflict(op.key.clone()));
        }
    }
    Ok(())
}

fn to_batch(
    ops: Vec<OpRequest>,
    lsn: u64,
    term: u64,
    overlay: &mut Vec<(String, Option<u64>)>,
) -> Arc<LogBatch> {
    let ops = ops
        .into_iter()
        .map(|op| {
            overlay.push((op.key.clone(), (op.op == OpKind::Put).then_some(lsn)));
            LogOp {
                op: op.op,
                key: op.key,
                value: op.value,
            }
        })
        .collect();
    Arc::new(LogBatch {
        lsn,
        term,
        ts_ms: now_ms(),
        ops,
    })
}
