//! `faultline worker`: a load worker. It runs one job at a time, given by a controller
//! (`faultline run --workers`, `faultline load --workers`): its segment of the run's load,
//! started at the controller's barrier instant, its per-second snapshots streamed back
//! as lines of JSON ([`Message`]). See [`crate::load::distributed`] for the protocol.
//!
//! A worker never runs load unattended: a job that is not started within
//! [`UNSTARTED_TTL`] is dropped, and a started job stops as soon as its stream's
//! connection is gone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tokio_util::sync::CancellationToken;

use crate::limits::{MAX_COUNT, MAX_DURATION, MAX_IN_FLIGHT, MAX_RATE, MAX_USERS};
use crate::load::client::Endpoint;
use crate::load::distributed::{Job, Message};
use crate::load::{self, LoadSpec, Model, Work};

/// How long a job given but not started is kept.
pub const UNSTARTED_TTL: Duration = Duration::from_secs(60);

struct Slot {
    id: String,
    spec: Option<LoadSpec>,
    tick: Duration,
    stop: CancellationToken,
    given: tokio::time::Instant,
    /// Past its barrier: its load runs.
    running: Arc<std::sync::atomic::AtomicBool>,
    /// Why `stop` fired, once it has.
    why: Arc<Mutex<&'static str>>,
}

impl Slot {
    fn stop(&self, why: &'static str) {
        *self.why.lock().unwrap() = why;
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Worker {
    token: Option<Arc<str>>,
    slot: Arc<Mutex<Option<Slot>>>,
    /// Jobs run to their end (their `done` line sent).
    finished: Arc<tokio::sync::watch::Sender<u64>>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn authorize(State(w): State<Worker>, req: Request, next: Next) -> Response {
    if !faultline_agent::api::bearer_ok(req.headers(), w.token.as_deref()) {
        let mut resp = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
        return resp;
    }
    next.run(req).await
}

/// Every number of a job within the limits a local run has, so a worker runs only
/// what `faultline load` or an experiment file could have asked for.
fn check(job: &Job) -> Result<(), String> {
    if job.connections == 0 || job.connections > MAX_USERS {
        return Err(format!("connections must be from 1 to {MAX_USERS}"));
    }
    if job.count.is_some_and(|c| c > MAX_COUNT) {
        return Err(format!("count must be at most {MAX_COUNT}"));
    }
    if job.timeout.is_zero() || job.timeout > MAX_DURATION {
        return Err("timeout must be from 1 ms to 24 hours".into());
    }
    if job.tick < Duration::from_millis(10) || job.tick > Duration::from_secs(60) {
        return Err("tick must be from 10 ms to 1 minute".into());
    }
    match &job.model {
        Model::Open {
            schedule,
            max_in_flight,
        } => {
            if schedule.duration() > MAX_DURATION {
                return Err("the schedule must be at most 24 hours".into());
            }
            if !schedule.rates_within(MAX_RATE) {
                return Err(format!("rates must be from 0 to {MAX_RATE} a second"));
            }
            if *max_in_flight > MAX_IN_FLIGHT {
                return Err(format!("max_in_flight must be at most {MAX_IN_FLIGHT}"));
            }
        }
        Model::Closed {
            users,
            duration,
            think,
        } => {
            if *users == 0 || *users > MAX_USERS {
                return Err(format!("users must be from 1 to {MAX_USERS}"));
            }
            if duration.is_some_and(|d| d > MAX_DURATION) || *think > MAX_DURATION {
                return Err("durations must be at most 24 hours".into());
            }
        }
    }
    if let Work::Flows(f) = &job.work {
        f.check()?;
    }
    let users = match &job.model {
        Model::Open { .. } => job.connections,
        Model::Closed { users, .. } => *users,
    };
    if job.segment.of > users as u64 {
        return Err(format!(
            "segment {} has more parts than the {users} users",
            job.segment
        ));
    }
    Ok(())
}

async fn create(State(w): State<Worker>, axum::Json(job): axum::Json<Job>) -> Response {
    if let Err(e) = check(&job) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let addr = match tokio::net::lookup_host(&job.authority).await {
        Ok(mut a) => match a.next() {
            Some(a) => a,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{} resolves to no address here", job.authority),
                );
            }
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot resolve {} here: {e}", job.authority),
            );
        }
    };
    let mut slot = w.slot.lock().unwrap();
    if let Some(s) = slot.as_ref() {
        let stale = s.spec.is_some() && s.given.elapsed() > UNSTARTED_TTL;
        if !stale {
            return error(
                StatusCode::CONFLICT,
                format!("busy with job {}: a worker runs one job at a time", s.id),
            );
        }
    }
    let id = format!("j{:016x}", fastrand::u64(..));
    eprintln!(
        "job {id}: segment {} of the load of {} ({addr})",
        job.segment, job.authority
    );
    let spec = LoadSpec {
        endpoint: Endpoint {
            addr,
            authority: job.authority,
            timeout: job.timeout,
        },
        work: job.work,
        model: job.model,
        connections: job.connections,
        count: job.count,
        segment: job.segment,
    };
    *slot = Some(Slot {
        id: id.clone(),
        spec: Some(spec),
        tick: job.tick,
        stop: CancellationToken::new(),
        given: tokio::time::Instant::now(),
        running: Arc::default(),
        why: Arc::new(Mutex::new("stopped")),
    });
    // A job nobody starts does not hold the worker for longer than its TTL.
    let (slot_ref, expired) = (w.slot.clone(), id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(UNSTARTED_TTL).await;
        let mut slot = slot_ref.lock().unwrap();
        if slot
            .as_ref()
            .is_some_and(|s| s.id == expired && s.spec.is_some())
        {
            eprintln!(
                "job {expired}: not started within {}s, dropped",
                UNSTARTED_TTL.as_secs()
            );
            *slot = None;
        }
    });
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "id": id })),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Start {
    at_unix_ms: u64,
}

fn line(m: &Message) -> bytes::Bytes {
    let mut v = serde_json::to_vec(m).expect("messages serialise");
    v.push(b'\n');
    bytes::Bytes::from(v)
}

async fn start(
    State(w): State<Worker>,
    Path(id): Path<String>,
    axum::Json(at): axum::Json<Start>,
) -> Response {
    let (spec, tick, stop, running, why) = {
        let mut slot = w.slot.lock().unwrap();
        let Some(s) = slot.as_mut().filter(|s| s.id == id) else {
            return error(StatusCode::NOT_FOUND, format!("no job {id}"));
        };
        let Some(spec) = s.spec.take() else {
            return error(
                StatusCode::CONFLICT,
                format!("job {id} has started already"),
            );
        };
        (
            spec,
            s.tick,
            s.stop.clone(),
            s.running.clone(),
            s.why.clone(),
        )
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let (slot, finished) = (w.slot.clone(), w.finished.clone());
    tokio::spawn(async move {
        // The barrier: the controller's instant on this machine's clock.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let wait =
            Duration::from_millis(at.at_unix_ms.saturating_sub(now)).min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
        running.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ticks_tx, mut ticks) = tokio::sync::mpsc::channel(64);
        let run = tokio::spawn(load::run(spec, tick, Some(ticks_tx), stop.clone()));
        // A controller that stops reading (its host gone without a reset) is gone too.
        let bound = crate::load::distributed::silence(tick);
        while let Some(s) = ticks.recv().await {
            // The controller is gone: no load without it.
            let sent = tokio::time::timeout(bound, tx.send(line(&Message::Tick(s)))).await;
            if !matches!(sent, Ok(Ok(()))) && !stop.is_cancelled() {
                *why.lock().unwrap() = "lost its controller";
                stop.cancel();
            }
        }
        let message = match run.await {
            Ok(summary) => {
                eprintln!(
                    "job {id}: {}, {} requests in {:.1} s",
                    if stop.is_cancelled() {
                        *why.lock().unwrap()
                    } else {
                        "done"
                    },
                    summary.stats.requests(),
                    summary.elapsed.as_secs_f64()
                );
                if stop.is_cancelled() {
                    let why = format!("the worker {}", *why.lock().unwrap());
                    Message::Stopped { summary, why }
                } else {
                    Message::Done(summary)
                }
            }
            Err(e) => Message::Failed(format!("the load engine failed: {e}")),
        };
        let _ = tokio::time::timeout(bound, tx.send(line(&message))).await;
        drop(tx);
        {
            let mut slot = slot.lock().unwrap();
            if slot.as_ref().is_some_and(|s| s.id == id) {
                *slot = None;
            }
        }
        finished.send_modify(|n| *n += 1);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .expect("a streaming response builds")
}

async fn stop(State(w): State<Worker>, Path(id): Path<String>) -> Response {
    let mut slot = w.slot.lock().unwrap();
    match slot.as_ref() {
        Some(s) if s.id == id => {
            s.stop("was stopped by a DELETE of its job");
            // Given but never started: nothing will clear it but this.
            if s.spec.is_some() {
                *slot = None;
            }
            StatusCode::ACCEPTED.into_response()
        }
        _ => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

async fn health(State(w): State<Worker>) -> Response {
    let (job, running) = match w.slot.lock().unwrap().as_ref() {
        Some(s) => (
            Some(s.id.clone()),
            s.running.load(std::sync::atomic::Ordering::Relaxed),
        ),
        None => (None, false),
    };
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "job": job,
        "running": running,
    }))
    .into_response()
}

/// The worker API on `listener`, served until `shutdown` (a running job is stopped
/// then), and the count of jobs run to their end.
pub fn serve(
    listener: tokio::net::TcpListener,
    token: Option<String>,
    shutdown: CancellationToken,
) -> (
    impl std::future::Future<Output = std::io::Result<()>>,
    tokio::sync::watch::Receiver<u64>,
) {
    let (finished, count) = tokio::sync::watch::channel(0);
    let w = Worker {
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
        slot: Arc::new(Mutex::new(None)),
        finished: Arc::new(finished),
    };
    let app = Router::new()
        .route("/v1/jobs", post(create))
        .route("/v1/jobs/{id}/start", post(start))
        .route("/v1/jobs/{id}", delete(stop))
        .layer(middleware::from_fn_with_state(w.clone(), authorize))
        .route("/v1/health", get(health))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route; see /v1/health and /v1/jobs",
            )
        })
        .with_state(w.clone());
    let stats = Arc::new(faultline_agent::http_server::ConnStats::default());
    let limits = faultline_agent::http_server::Limits {
        max_connections: 64,
        ..Default::default()
    };
    let slot = w.slot.clone();
    let served = async move {
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            if let Some(s) = slot.lock().unwrap().as_ref() {
                s.stop("is shutting down (SIGINT or SIGTERM)");
            }
        });
        faultline_agent::http_server::serve(listener, app, limits, stats, shutdown).await
    };
    (served, count)
}
