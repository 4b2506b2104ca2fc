//! The load engine: open model (an arrival-rate schedule, each request's latency measured
//! from its intended send time, a bound on requests in flight with the excess counted as
//! dropped) and closed model (N users, optional think time). Workers keep their own
//! statistics; the run folds them into one snapshot per tick and a total. It knows
//! nothing of the terminal: callers get snapshots on a channel and a summary at the end.
//!
//! # Layout
//!
//! - [`schedule`]: when each open-model request is due.
//! - [`client`]: the lean one-connection-per-worker HTTP/1.1 client.
//! - [`stats`]: counts and HDR histograms, merged exactly.
//! - [`flow`], [`template`]: what an experiment's virtual users do.
//! - [`segment`]: the part of a run one of several load workers makes;
//!   [`distributed`]: a run spread over workers, their results merged; [`wire`]: what
//!   travels between them.

pub mod client;
pub mod distributed;
pub mod flow;
pub mod schedule;
pub mod segment;
pub mod stats;
pub mod template;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::client::{Conn, Endpoint, Req};
use self::flow::{Flows, Vu};
use self::schedule::Schedule;
use self::segment::Segment;
use self::stats::Stats;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Requests arrive on `schedule`, whatever the target does; at most `max_in_flight`
    /// wait or run at once, the rest are dropped (and counted).
    Open {
        schedule: Schedule,
        max_in_flight: usize,
    },
    /// `users` send one request after another, pausing `think` in between.
    Closed {
        users: usize,
        duration: Option<Duration>,
        think: Duration,
    },
}

/// What each iteration sends.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// The same request every time (`faultline load URL`).
    Fixed(Req),
    /// A flow of steps, picked by weight (experiments).
    Flows(Arc<Flows>),
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub endpoint: Endpoint,
    pub work: Work,
    pub model: Model,
    /// Connections (workers, each a virtual user) of an open-model run.
    pub connections: usize,
    /// Stop after this many requests.
    pub count: Option<u64>,
    /// The part of the run this process makes ([`Segment::WHOLE`] but on a load worker).
    pub segment: Segment,
}

impl LoadSpec {
    /// Virtual users (closed model) or connections (open model) of the whole run.
    pub fn users(&self) -> usize {
        match &self.model {
            Model::Open { .. } => self.connections.max(1),
            Model::Closed { users, .. } => (*users).max(1),
        }
    }
}

/// One tick's worth of results.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// End of the tick, from the start of the run.
    pub elapsed: Duration,
    pub stats: Stats,
    /// Per step of the flows, in [`Flows::steps`] order (empty for fixed requests).
    pub steps: Vec<Stats>,
    /// Iterations that could not start (the in-flight bound).
    pub dropped: u64,
    pub in_flight: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub elapsed: Duration,
    pub stats: Stats,
    pub steps: Vec<Stats>,
    pub dropped: u64,
    /// Iterations started.
    pub iterations: u64,
    /// Open model: sends that found every connection busy, so waited for one (the
    /// target, not the generator, made them late).
    pub queued: u64,
    /// Values recorded by steps with `record`, by variable name, in order (one
    /// worker's after another's, when load workers made the run).
    pub history: BTreeMap<String, Vec<String>>,
    /// What each load worker made, when workers made the run.
    #[serde(default)]
    pub workers: Vec<distributed::WorkerTotals>,
}

struct Shared {
    endpoint: Endpoint,
    work: Work,
    workers: Vec<Mutex<Stats>>,
    steps: Vec<Mutex<Stats>>,
    history: Mutex<BTreeMap<String, Vec<String>>>,
    segment: Segment,
    seq: template::Seq,
    dropped: AtomicU64,
    queued: AtomicU64,
    in_flight: AtomicUsize,
    /// Iterations started.
    started: AtomicU64,
    /// Closed model with a count: iterations claimed by users.
    claimed: AtomicU64,
}

/// A worker's own state: its connection and, for flows, its virtual user.
struct Worker {
    index: usize,
    conn: Conn,
    vu: Option<Vu>,
}

impl Shared {
    /// Takes every worker's and step's statistics since the last tick.
    fn drain(&self) -> (Stats, Vec<Stats>) {
        let mut total = Stats::default();
        for w in &self.workers {
            let mut s = w.lock().unwrap();
            total.merge(&s);
            s.clear();
        }
        let steps = self
            .steps
            .iter()
            .map(|m| {
                let mut s = m.lock().unwrap();
                let out = s.clone();
                s.clear();
                out
            })
            .collect();
        (total, steps)
    }

    /// Worker `index` of this process, the user of the run numbered by the segment.
    fn worker(&self, index: usize) -> Worker {
        let user = self.segment.global(index as u64) as usize;
        Worker {
            index,
            conn: Conn::default(),
            vu: match &self.work {
                Work::Fixed(_) => None,
                Work::Flows(f) => Some(f.new_vu(user)),
            },
        }
    }

    /// One iteration: the fixed request, or a flow's due steps. The first request's
    /// latency counts from `intended`; each later step's from the end of the one before.
    async fn iterate(&self, w: &mut Worker, intended: Instant) {
        self.started.fetch_add(1, Ordering::Relaxed);
        match &self.work {
            Work::Fixed(req) => {
                let sent = Instant::now();
                let result = w.conn.request(&self.endpoint, req).await;
                let result = result.map(|(status, body)| (status, body.len() as u64));
                record(&self.workers[w.index], intended, sent, &result);
            }
            Work::Flows(flows) => {
                let vu = w.vu.as_mut().expect("flows give every worker a user");
                let flow = flows.pick(vu).clone();
                let due: Vec<usize> = flows.due_steps(&flow, vu).collect();
                let mut from = intended;
                for step in due {
                    let req = flows.render(step, vu, &self.seq);
                    let sent = Instant::now();
                    let result = w.conn.request(&self.endpoint, &req).await;
                    let counted = result
                        .as_ref()
                        .map(|(status, body)| (*status, body.len() as u64))
                        .map_err(|e| *e);
                    record(&self.workers[w.index], from, sent, &counted);
                    record(&self.steps[step], from, sent, &counted);
                    let Ok((status, body)) = result else { break };
                    match flows.absorb(step, vu, status, &body) {
                        Ok(Some((key, value))) => self
                            .history
                            .lock()
                            .unwrap()
                            .entry(key)
                            .or_default()
                            .push(value),
                        Ok(None) => {}
                        Err(()) => break,
                    }
                    from = Instant::now();
                }
            }
        }
    }
}

fn record(
    stats: &Mutex<Stats>,
    intended: Instant,
    sent: Instant,
    result: &Result<(hyper::StatusCode, u64), stats::ErrorKind>,
) {
    let done = Instant::now();
    let us = |d: Duration| (d.as_micros() as u64).max(1);
    let mut s = stats.lock().unwrap();
    let _ = s.latency.record(us(done - intended));
    let _ = s.service.record(us(done - sent));
    let _ = s.lag.record(us(sent.saturating_duration_since(intended)));
    match result {
        Ok((status, bytes)) => {
            *s.statuses.entry(status.as_u16()).or_default() += 1;
            s.bytes += bytes;
        }
        Err(kind) => *s.errors.entry(*kind).or_default() += 1,
    }
}

/// Runs the load until its schedule, duration or count ends, or `stop` fires; sends a
/// snapshot every `tick` to `ticks` if given.
pub async fn run(
    spec: LoadSpec,
    tick: Duration,
    ticks: Option<mpsc::Sender<Snapshot>>,
    stop: CancellationToken,
) -> Summary {
    // This segment's users (a share of at least one: a controller gives no worker
    // a segment without users).
    let workers = (spec.segment.share(spec.users() as u64) as usize).max(1);
    let segment = spec.segment;
    let steps = match &spec.work {
        Work::Fixed(_) => 0,
        Work::Flows(f) => f.steps.len(),
    };
    let shared = Arc::new(Shared {
        endpoint: spec.endpoint.clone(),
        work: spec.work.clone(),
        workers: (0..workers).map(|_| Mutex::new(Stats::default())).collect(),
        steps: (0..steps).map(|_| Mutex::new(Stats::default())).collect(),
        history: Mutex::new(BTreeMap::new()),
        segment,
        seq: template::Seq::new(segment),
        dropped: AtomicU64::new(0),
        queued: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        started: AtomicU64::new(0),
        claimed: AtomicU64::new(0),
    });
    let start = Instant::now();
    let mut total = Stats::default();
    let mut total_steps: Vec<Stats> = Vec::new();
    let load = async {
        match spec.model.clone() {
            Model::Open {
                schedule,
                max_in_flight,
            } => {
                let in_flight = segment.share(max_in_flight as u64).max(1) as usize;
                open(
                    shared.clone(),
                    schedule,
                    in_flight,
                    spec.count,
                    start,
                    stop.clone(),
                )
                .await
            }
            Model::Closed {
                duration, think, ..
            } => {
                let end = duration.map(|d| start + d);
                let count = spec.count.map(|c| segment.share(c));
                closed(shared.clone(), end, think, count, stop.clone()).await
            }
        }
    };
    tokio::pin!(load);
    let mut interval = tokio::time::interval_at(start + tick, tick);
    let mut last_dropped = 0;
    loop {
        tokio::select! {
            _ = &mut load => break,
            _ = interval.tick() => {
                let (stats, steps) = shared.drain();
                total.merge(&stats);
                merge_steps(&mut total_steps, &steps);
                let dropped = shared.dropped.load(Ordering::Relaxed);
                if let Some(tx) = &ticks {
                    let _ = tx.try_send(Snapshot {
                        elapsed: start.elapsed(),
                        stats,
                        steps,
                        dropped: dropped - last_dropped,
                        in_flight: shared.in_flight.load(Ordering::Relaxed),
                    });
                }
                last_dropped = dropped;
            }
        }
    }
    let (rest, rest_steps) = shared.drain();
    total.merge(&rest);
    merge_steps(&mut total_steps, &rest_steps);
    let dropped = shared.dropped.load(Ordering::Relaxed);
    if let Some(tx) = &ticks {
        let _ = tx.try_send(Snapshot {
            elapsed: start.elapsed(),
            stats: rest,
            steps: rest_steps,
            dropped: dropped - last_dropped,
            in_flight: 0,
        });
    }
    let history = std::mem::take(&mut *shared.history.lock().unwrap());
    Summary {
        elapsed: start.elapsed(),
        stats: total,
        steps: total_steps,
        dropped,
        iterations: shared.started.load(Ordering::Relaxed),
        queued: shared.queued.load(Ordering::Relaxed),
        history,
        workers: Vec::new(),
    }
}

fn merge_steps(total: &mut Vec<Stats>, steps: &[Stats]) {
    if total.len() < steps.len() {
        total.resize_with(steps.len(), Stats::default);
    }
    for (t, s) in total.iter_mut().zip(steps) {
        t.merge(s);
    }
}

async fn open(
    shared: Arc<Shared>,
    schedule: Schedule,
    max_in_flight: usize,
    count: Option<u64>,
    start: Instant,
    stop: CancellationToken,
) {
    let (tx, rx) = async_channel::unbounded::<Instant>();
    // Workers are tasks of their own, so the run uses every core; the set is awaited
    // before the run returns, so none outlives it.
    let mut workers = JoinSet::new();
    for i in 0..shared.workers.len() {
        let (shared, rx) = (shared.clone(), rx.clone());
        workers.spawn(async move {
            let mut w = shared.worker(i);
            while let Ok(intended) = rx.recv().await {
                shared.iterate(&mut w, intended).await;
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
    // The dispatcher is an OS thread of its own that sleeps (nanosleep, with a 1 µs timer
    // slack) until each send is due: precise to tens of microseconds without spinning a
    // core, where tokio's timer is a millisecond coarse.
    let dispatcher = {
        let (shared, stop) = (shared.clone(), stop.clone());
        let start = start.into_std();
        std::thread::Builder::new()
            .name("faultline-dispatch".into())
            .spawn(move || {
                // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
                unsafe {
                    libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
                }
                // This segment's sends of the run's sequence: every `of`-th, each at its
                // own instant of the whole schedule.
                let segment = shared.segment;
                let mut n = segment.index;
                while count.is_none_or(|c| n < c) && !stop.is_cancelled() {
                    let Some(due) = schedule.due(n) else { break };
                    let at = start + due;
                    // The n-th send is due at its computed instant; waking late sends it
                    // at once, and its latency still counts from `at`.
                    let now = std::time::Instant::now();
                    if at > now {
                        // Long waits in slices, so that a stop is seen.
                        std::thread::sleep((at - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    n += segment.of;
                    if shared.in_flight.load(Ordering::Relaxed) >= max_in_flight {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if shared.in_flight.fetch_add(1, Ordering::Relaxed) >= shared.workers.len() {
                        shared.queued.fetch_add(1, Ordering::Relaxed);
                    }
                    if tx.send_blocking(Instant::from_std(at)).is_err() {
                        break;
                    }
                }
                tx.close();
            })
            .expect("a dispatcher thread")
    };
    let _ = tokio::task::spawn_blocking(move || dispatcher.join()).await;
    workers.join_all().await;
}

async fn closed(
    shared: Arc<Shared>,
    end: Option<Instant>,
    think: Duration,
    count: Option<u64>,
    stop: CancellationToken,
) {
    let mut users = JoinSet::new();
    for i in 0..shared.workers.len() {
        let (shared, stop) = (shared.clone(), stop.clone());
        users.spawn(async move {
            let mut w = shared.worker(i);
            loop {
                if stop.is_cancelled() || end.is_some_and(|e| Instant::now() >= e) {
                    return;
                }
                if count.is_some_and(|c| shared.claimed.fetch_add(1, Ordering::Relaxed) >= c) {
                    return;
                }
                shared.in_flight.fetch_add(1, Ordering::Relaxed);
                shared.iterate(&mut w, Instant::now()).await;
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                if !think.is_zero() {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(think) => {}
                    }
                }
            }
        });
    }
    users.join_all().await;
}
