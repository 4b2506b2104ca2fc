//! A run spread over load workers (`faultline worker`): the controller gives worker `i` of
//! `N` the segment `i/N` of the run ([`Segment`]), starts them all at one instant, and
//! merges the per-second snapshots they stream into one snapshot a second, exactly (HDR
//! histograms add bucket by bucket), so the SLOs, the abort guards, the reports and the
//! dashboard judge all the load once, as if one process had made it.
//!
//! The protocol, over HTTP with the worker's bearer token:
//! 1. `GET /v1/health` until it answers (bounded by [`Workers::wait`]);
//! 2. `POST /v1/jobs` with a [`Job`]: the worker checks it and resolves the target, and
//!    answers `{"id"}` (or 400 with the problem, 409 when it is busy); only when every
//!    worker has accepted does any start, so a refusal starts nothing;
//! 3. `POST /v1/jobs/ID/start` with the barrier instant (`at_unix_ms`): the answer is a
//!    stream of [`Message`] lines, a `tick` a second and `done` with the worker's summary;
//! 4. `DELETE /v1/jobs/ID` stops a job early (it still ends with `done`); a worker whose
//!    stream closes stops its job, so no load outlives its controller.
//!
//! A worker that answers nothing for [`silence`] or whose stream ends without `done` is
//! lost: the controller stops the others and the run fails naming it. It never reports
//! less load as if it were all.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::segment::Segment;
use super::{LoadSpec, Model, Snapshot, Summary, Work};

/// The load workers a run is spread over.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    /// Base URLs, `http://HOST:PORT`.
    pub urls: Vec<String>,
    pub token: Option<String>,
    /// How long to wait for a worker to answer its health check before the run.
    pub wait: Duration,
}

/// What a worker runs: its segment of a load spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub segment: Segment,
    /// `host:port` to load; the worker resolves it itself (from where it runs).
    pub authority: String,
    /// Longest wait for one answer.
    pub timeout: Duration,
    pub work: Work,
    pub model: Model,
    pub connections: usize,
    pub count: Option<u64>,
    /// How often it reports.
    pub tick: Duration,
}

/// One line of a job's stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    Tick(Snapshot),
    Done(Summary),
    /// The job was stopped before its end, and why: by its controller (then it is the
    /// end the controller asked for), or not (the worker shutting down, a stop from
    /// someone else): then the run did not get its load.
    Stopped {
        summary: Summary,
        why: String,
    },
    /// The job could not run (the target vanished from DNS, say).
    Failed(String),
}

/// What one worker made, in `load --json` and the run's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerTotals {
    pub url: String,
    /// `i/N`.
    pub segment: String,
    pub requests: u64,
    pub iterations: u64,
    pub dropped: u64,
    pub errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("load worker {url} did not answer within {}: {reason}", humantime::format_duration(*.wait))]
    Unreachable {
        url: String,
        wait: Duration,
        reason: String,
    },
    #[error("load worker {url} refused the load: {reason}")]
    Refused { url: String, reason: String },
    #[error(
        "{workers} load workers need at least {workers} virtual users (connections), one each; the load has {users}"
    )]
    TooFewUsers { workers: usize, users: usize },
    #[error("load worker {url} was lost mid-run: {reason}")]
    Lost { url: String, reason: String },
}

impl WorkerError {
    /// The worker it is about (empty for [`WorkerError::TooFewUsers`]).
    pub fn url(&self) -> &str {
        match self {
            WorkerError::Unreachable { url, .. }
            | WorkerError::Refused { url, .. }
            | WorkerError::Lost { url, .. } => url,
            WorkerError::TooFewUsers { .. } => "",
        }
    }
}

/// Silence after which a started worker counts as lost: it reports every tick.
pub fn silence(tick: Duration) -> Duration {
    tick * 5 + Duration::from_secs(5)
}

/// The job of worker `index` of `of` for `spec`.
pub fn job(spec: &LoadSpec, segment: Segment, tick: Duration) -> Job {
    Job {
        segment,
        authority: spec.endpoint.authority.clone(),
        timeout: spec.endpoint.timeout,
        work: spec.work.clone(),
        model: spec.model.clone(),
        connections: spec.connections,
        count: spec.count,
        tick,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One worker the controller talks to.
pub struct Remote {
    url: String,
    id: String,
}

/// The controller's client of its workers.
pub struct Control {
    http: reqwest::Client,
    token: Option<String>,
}

impl Control {
    fn req(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Polls the worker's health until it answers or `wait` runs out.
    async fn wait_healthy(&self, url: &str, wait: Duration) -> Result<(), WorkerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let answer = self
                .req(reqwest::Method::GET, format!("{url}/v1/health"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            let reason = match answer {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("its health check answered {}", r.status()),
                Err(e) => error_chain(&e),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(WorkerError::Unreachable {
                    url: url.to_owned(),
                    wait,
                    reason,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create(&self, url: &str, job: &Job) -> Result<String, WorkerError> {
        let refused = |reason: String| WorkerError::Refused {
            url: url.to_owned(),
            reason,
        };
        let answer = self
            .req(reqwest::Method::POST, format!("{url}/v1/jobs"))
            .timeout(Duration::from_secs(30))
            .json(job)
            .send()
            .await
            .map_err(|e| refused(error_chain(&e)))?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        if !status.is_success() {
            let why = body["error"].as_str().unwrap_or("no reason given");
            return Err(refused(format!("{status}: {why}")));
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| refused("its answer has no job id".into()))
    }

    async fn stop(&self, r: &Remote) {
        let _ = self
            .req(
                reqwest::Method::DELETE,
                format!("{}/v1/jobs/{}", r.url, r.id),
            )
            .timeout(Duration::from_secs(5))
            .send()
            .await;
    }
}

/// The error and its causes, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A load ready to start: here, or on workers that have all accepted their jobs.
pub enum Plan {
    Local(Box<LoadSpec>),
    Workers {
        control: Control,
        remotes: Vec<Remote>,
    },
}

/// What a started load gives back: its summary and, when a worker was lost mid-run,
/// which and why.
pub type Outcome = (Summary, Option<WorkerError>);

impl Plan {
    /// Readies `spec` here when there are no workers, else on every worker (each waited
    /// for, given its job, and the jobs withdrawn again if any worker refuses): an
    /// error here starts nothing.
    pub async fn prepare(
        spec: LoadSpec,
        workers: &Workers,
        tick: Duration,
    ) -> Result<Plan, WorkerError> {
        if workers.urls.is_empty() {
            return Ok(Plan::Local(Box::new(spec)));
        }
        let n = workers.urls.len();
        if spec.users() < n {
            return Err(WorkerError::TooFewUsers {
                workers: n,
                users: spec.users(),
            });
        }
        let control = Control {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client with no TLS and no proxy builds"),
            token: workers.token.clone(),
        };
        let remotes = prepare(&control, &spec, workers, tick).await?;
        Ok(Plan::Workers { control, remotes })
    }

    /// Starts the load, sending a merged snapshot every `tick` to `ticks` until it ends
    /// or `stop` fires. Returns the instant the load starts at (the workers' barrier,
    /// a moment ahead, so that the start requests arrive in time) and its task.
    pub fn start(
        self,
        tick: Duration,
        ticks: Option<mpsc::Sender<Snapshot>>,
        stop: CancellationToken,
    ) -> (tokio::time::Instant, tokio::task::JoinHandle<Outcome>) {
        match self {
            Plan::Local(spec) => (
                tokio::time::Instant::now(),
                tokio::spawn(async move { (super::run(*spec, tick, ticks, stop).await, None) }),
            ),
            Plan::Workers { control, remotes } => {
                let ahead = Duration::from_millis(500);
                let at = now_ms() + ahead.as_millis() as u64;
                let t0 = tokio::time::Instant::now() + ahead;
                let task = tokio::spawn(run(control, remotes, at, tick, ticks, stop));
                (t0, task)
            }
        }
    }
}

/// Runs the prepared jobs from `at` (Unix ms), merging their snapshots; a worker lost
/// mid-run stops the others and comes back beside the summary of what was merged.
async fn run(
    control: Control,
    remotes: Vec<Remote>,
    at: u64,
    tick: Duration,
    ticks: Option<mpsc::Sender<Snapshot>>,
    stop: CancellationToken,
) -> Outcome {
    let n = remotes.len();
    let (tx, mut rx) = mpsc::channel::<(usize, Result<Message, String>)>(256);
    for (i, r) in remotes.iter().enumerate() {
        let answer = control
            .req(
                reqwest::Method::POST,
                format!("{}/v1/jobs/{}/start", r.url, r.id),
            )
            .json(&serde_json::json!({ "at_unix_ms": at }))
            .send();
        tokio::spawn(read_stream(i, answer, tx.clone(), silence(tick)));
    }
    drop(tx);
    let mut merge = Merge::new(n);
    let mut lost: Option<WorkerError> = None;
    let mut stopping = false;
    loop {
        let next = tokio::select! {
            m = rx.recv() => m,
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                futures::future::join_all(remotes.iter().map(|r| control.stop(r))).await;
                continue;
            }
        };
        let Some((i, message)) = next else { break };
        match message {
            Ok(Message::Tick(s)) => merge.tick(i, s),
            Ok(Message::Done(s)) => merge.done(i, s),
            Ok(Message::Stopped { summary, .. }) if stopping => merge.done(i, summary),
            // Once the run stops, a worker that misses its start (the stop came first)
            // or its end takes nothing from it.
            Ok(Message::Failed(_)) | Err(_) if stopping => merge.gone(i),
            Ok(Message::Stopped { why: reason, .. })
            | Ok(Message::Failed(reason))
            | Err(reason) => {
                merge.gone(i);
                if lost.is_none() {
                    lost = Some(WorkerError::Lost {
                        url: remotes[i].url.clone(),
                        reason,
                    });
                }
                if !stopping {
                    stopping = true;
                    stop.cancel();
                    futures::future::join_all(remotes.iter().map(|r| control.stop(r))).await;
                }
            }
        }
        while let Some(s) = merge.ready() {
            if let Some(tx) = &ticks {
                let _ = tx.send(s).await;
            }
        }
    }
    let urls: Vec<String> = remotes.into_iter().map(|r| r.url).collect();
    (merge.summary(&urls), lost)
}

/// Waits for every worker and gives each its job; on any refusal, withdraws the jobs
/// already given.
async fn prepare(
    control: &Control,
    spec: &LoadSpec,
    workers: &Workers,
    tick: Duration,
) -> Result<Vec<Remote>, WorkerError> {
    let n = workers.urls.len() as u64;
    let created = futures::future::join_all(workers.urls.iter().enumerate().map(|(i, url)| {
        let url = url.trim_end_matches('/').to_owned();
        let job = job(spec, Segment::new(i as u64, n).expect("i < n"), tick);
        async move {
            control.wait_healthy(&url, workers.wait).await?;
            let id = control.create(&url, &job).await?;
            Ok::<_, WorkerError>(Remote { url, id })
        }
    }))
    .await;
    let mut remotes = Vec::new();
    let mut first_error = None;
    for c in created {
        match c {
            Ok(r) => remotes.push(r),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        futures::future::join_all(remotes.iter().map(|r| control.stop(r))).await;
        return Err(e);
    }
    Ok(remotes)
}

/// Reads one worker's stream of lines into `tx`, with its index; an error, a silence or
/// an end without `done` is sent as `Err`.
async fn read_stream(
    i: usize,
    answer: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    tx: mpsc::Sender<(usize, Result<Message, String>)>,
    silence: Duration,
) {
    if let Err(reason) = forward(i, answer, &tx, silence).await {
        let _ = tx.send((i, Err(reason))).await;
    }
}

/// The lines of one worker's stream, into `tx` until `done`; why it ended otherwise.
async fn forward(
    i: usize,
    answer: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    tx: &mpsc::Sender<(usize, Result<Message, String>)>,
    silence: Duration,
) -> Result<(), String> {
    let quiet = || {
        format!(
            "it sent nothing for {}",
            humantime::format_duration(silence)
        )
    };
    let mut resp = tokio::time::timeout(silence, answer)
        .await
        .map_err(|_| quiet())?
        .map_err(|e| error_chain(&e))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let why = body["error"].as_str().unwrap_or("no reason given");
        return Err(format!("the start answered {status}: {why}"));
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::time::timeout(silence, resp.chunk())
            .await
            .map_err(|_| quiet())?
            .map_err(|e| error_chain(&e))?
            .ok_or("its stream ended before the load did")?;
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let message = serde_json::from_slice::<Message>(&line)
                .map_err(|e| format!("it sent a line that is not a message: {e}"))?;
            let done = matches!(
                message,
                Message::Done(_) | Message::Stopped { .. } | Message::Failed(_)
            );
            if tx.send((i, Ok(message))).await.is_err() || done {
                return Ok(());
            }
        }
    }
}

/// The controller's merge: the `k`-th snapshot of every worker make the run's `k`-th.
struct Merge {
    queues: Vec<VecDeque<Snapshot>>,
    /// Whether each worker has finished (done, or lost).
    finished: Vec<bool>,
    summaries: Vec<Option<Summary>>,
    /// Snapshots merged per worker, for the totals of a lost one.
    partial: Vec<Summary>,
}

impl Merge {
    fn new(n: usize) -> Self {
        Merge {
            queues: vec![VecDeque::new(); n],
            finished: vec![false; n],
            summaries: vec![None; n],
            partial: vec![Summary::default(); n],
        }
    }

    fn tick(&mut self, i: usize, s: Snapshot) {
        let p = &mut self.partial[i];
        p.stats.merge(&s.stats);
        super::merge_steps(&mut p.steps, &s.steps);
        p.dropped += s.dropped;
        p.elapsed = s.elapsed;
        self.queues[i].push_back(s);
    }

    fn done(&mut self, i: usize, s: Summary) {
        self.finished[i] = true;
        self.summaries[i] = Some(s);
    }

    fn gone(&mut self, i: usize) {
        self.finished[i] = true;
    }

    /// The next merged snapshot, once every worker still running has sent its part.
    fn ready(&mut self) -> Option<Snapshot> {
        let waiting = self
            .queues
            .iter()
            .zip(&self.finished)
            .any(|(q, f)| q.is_empty() && !f);
        if waiting || self.queues.iter().all(VecDeque::is_empty) {
            return None;
        }
        let mut out: Option<Snapshot> = None;
        for q in &mut self.queues {
            let Some(s) = q.pop_front() else { continue };
            match &mut out {
                None => out = Some(s),
                Some(o) => {
                    o.stats.merge(&s.stats);
                    let mut steps = std::mem::take(&mut o.steps);
                    super::merge_steps(&mut steps, &s.steps);
                    o.steps = steps;
                    o.dropped += s.dropped;
                    o.in_flight += s.in_flight;
                    o.elapsed = o.elapsed.max(s.elapsed);
                }
            }
        }
        out
    }

    /// Every worker's summary merged (a lost one's from the snapshots it sent), with
    /// each worker's totals.
    fn summary(self, urls: &[String]) -> Summary {
        let n = urls.len() as u64;
        let mut total = Summary::default();
        for (i, (done, partial)) in self.summaries.into_iter().zip(self.partial).enumerate() {
            let s = done.unwrap_or(partial);
            total.stats.merge(&s.stats);
            super::merge_steps(&mut total.steps, &s.steps);
            total.dropped += s.dropped;
            total.iterations += s.iterations;
            total.queued += s.queued;
            total.elapsed = total.elapsed.max(s.elapsed);
            for (k, v) in s.history {
                total.history.entry(k).or_default().extend(v);
            }
            total.workers.push(WorkerTotals {
                url: urls[i].clone(),
                segment: format!("{i}/{n}"),
                requests: s.stats.requests(),
                iterations: s.iterations,
                dropped: s.dropped,
                errors: s.stats.errors.values().sum(),
            });
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(ms: u64, latency_us: u64) -> Snapshot {
        let mut s = Snapshot {
            elapsed: Duration::from_millis(ms),
            stats: Default::default(),
            steps: vec![],
            dropped: 1,
            in_flight: 2,
        };
        s.stats.latency.record(latency_us).unwrap();
        *s.stats.statuses.entry(200).or_default() += 1;
        s
    }

    #[test]
    fn the_kth_snapshots_of_every_worker_merge_into_one() {
        let mut m = Merge::new(2);
        m.tick(0, snap(1000, 10));
        assert!(
            m.ready().is_none(),
            "worker 1 has not sent its first second"
        );
        m.tick(0, snap(2000, 20));
        m.tick(1, snap(1001, 30));
        let first = m.ready().unwrap();
        assert_eq!(first.stats.requests(), 2);
        assert_eq!((first.dropped, first.in_flight), (2, 4));
        assert_eq!(first.elapsed, Duration::from_millis(1001));
        assert!(m.ready().is_none());
        // A finished worker no longer holds the others back.
        m.done(1, Summary::default());
        let second = m.ready().unwrap();
        assert_eq!(second.stats.requests(), 1);
        assert!(m.ready().is_none());
    }
}
