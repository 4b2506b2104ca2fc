//! `shop broker`: queues with Amazon SQS semantics and topics with SNS-style fan-out.
//!
//! A received message becomes invisible for its visibility timeout and comes back if not
//! deleted by then; every receive counts, and a message received `max_receives` times is
//! moved to the queue's dead-letter queue instead of being delivered again. Receives may
//! wait up to 20 s for a message (long polling) and take 1 to 10 at once. Deletes and
//! visibility changes name the receipt handle of the latest receive. A dead-letter queue
//! can be redriven back to its source. Publishing to a topic sends one copy to each
//! subscribed queue, atomically.
//!
//! Durability: every change is a record of the broker's write-ahead log, acknowledged
//! after `fdatasync` (group commit). After a crash, the log is replayed: nothing
//! acknowledged is lost, and in-flight messages keep their visibility deadline, so they
//! reappear when it passes.
//!
//! API (JSON): `POST /v1/queues/{q}/send`, `.../receive`, `.../delete`,
//! `.../visibility`, `.../redrive`; `GET /v1/queues`, `GET /v1/queues/{q}`,
//! `GET /v1/queues/{q}/messages` (audit); `POST /v1/topics/{t}/publish`;
//! `POST /v1/admin/queues/{q}/poison`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::args::{CommonArgs, duration};
use crate::deadline::Deadline;
use crate::error::error;
use crate::metrics::{HttpMetrics, new_registry};
use crate::server::{self, Service};
use crate::wal::{
    CheckpointArgs, CheckpointConfig, Committer, Durability, Machine, Snapshot, Wal, WalMetrics,
    spawn_committer,
};

/// The attribute that marks a message injected as poison through the admin API.
pub const POISON_ATTRIBUTE: &str = "poison";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Where the broker keeps its log.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// A queue: `NAME[:visibility=30s,max_receives=5,dlq=NAME,delay=0s]`. Repeatable.
    #[arg(long = "queue", value_parser = parse_queue)]
    pub queues: Vec<QueueConfig>,
    /// A topic and its subscribed queues: `NAME=QUEUE,QUEUE`. Repeatable.
    #[arg(long = "topic", value_parser = parse_topic)]
    pub topics: Vec<(String, Vec<String>)>,
    /// Visibility timeout of queues that do not set their own.
    #[arg(long, env = "SHOP_BROKER_VISIBILITY", default_value = "30s", value_parser = duration)]
    pub default_visibility: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    /// `None` until resolved against `--default-visibility`.
    pub visibility: Option<Duration>,
    pub max_receives: Option<u32>,
    pub dlq: Option<String>,
    pub delay: Duration,
}

fn parse_queue(s: &str) -> Result<QueueConfig, String> {
    let (name, opts) = s.split_once(':').unwrap_or((s, ""));
    let valid = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !valid(name) {
        return Err(format!(
            "queue name `{name}` must be letters, digits, `-` or `_`"
        ));
    }
    let mut q = QueueConfig {
        name: name.to_owned(),
        visibility: None,
        max_receives: None,
        dlq: None,
        delay: Duration::ZERO,
    };
    for kv in opts.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("`{kv}` is not key=value"))?;
        match k {
            "visibility" => q.visibility = Some(duration(v)?),
            "delay" => q.delay = duration(v)?,
            "max_receives" => {
                q.max_receives = Some(
                    v.parse()
                        .map_err(|_| format!("max_receives `{v}` is not a number"))?,
                )
            }
            "dlq" if valid(v) => q.dlq = Some(v.to_owned()),
            _ => {
                return Err(format!(
                    "unknown queue option `{k}`; use visibility, max_receives, dlq, delay"
                ));
            }
        }
    }
    Ok(q)
}

fn parse_topic(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, queues) = s.split_once('=').ok_or("a topic is NAME=QUEUE,QUEUE")?;
    Ok((
        name.to_owned(),
        queues.split(',').map(str::to_owned).collect(),
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// One change to the broker's state: the log's records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
enum Rec {
    Sent {
        q: String,
        id: String,
        seq: u64,
        body: Arc<str>,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        sent_ms: u64,
        visible_ms: u64,
    },
    Received {
        q: String,
        id: String,
        receipt: String,
        count: u32,
        visible_ms: u64,
    },
    Deleted {
        q: String,
        id: String,
    },
    Visibility {
        q: String,
        id: String,
        visible_ms: u64,
    },
    /// To a dead-letter queue (`reset: false`) or redriven back (`reset: true`).
    Moved {
        from: String,
        to: String,
        id: String,
        seq: u64,
        reset: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Msg {
    id: String,
    seq: u64,
    body: Arc<str>,
    attributes: BTreeMap<String, String>,
    sent_ms: u64,
    visible_ms: u64,
    receive_count: u32,
    receipt: Option<String>,
    /// The queue a dead-lettered message came from, for redrive.
    source: Option<String>,
}

#[derive(Debug, Default)]
struct Queue {
    msgs: HashMap<String, Msg>,
    /// Messages by (visible from, sequence): the front is the next to deliver.
    index: BTreeSet<(u64, u64, String)>,
}

impl Queue {
    fn insert(&mut self, m: Msg) {
        self.index.insert((m.visible_ms, m.seq, m.id.clone()));
        self.msgs.insert(m.id.clone(), m);
    }

    fn remove(&mut self, id: &str) -> Option<Msg> {
        let m = self.msgs.remove(id)?;
        self.index.remove(&(m.visible_ms, m.seq, m.id.clone()));
        Some(m)
    }

    fn set_visible(&mut self, id: &str, visible_ms: u64) {
        if let Some(m) = self.msgs.get_mut(id) {
            self.index.remove(&(m.visible_ms, m.seq, m.id.clone()));
            m.visible_ms = visible_ms;
            self.index.insert((m.visible_ms, m.seq, m.id.clone()));
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone)]
struct BrokerMetrics {
    sends: Family<QueueLabels, Counter>,
    receives: Family<QueueLabels, Counter>,
    deletes: Family<QueueLabels, Counter>,
    dead_lettered: Family<QueueLabels, Counter>,
    redrives: Family<QueueLabels, Counter>,
    visible: Family<QueueLabels, Gauge>,
    in_flight: Family<QueueLabels, Gauge>,
    delayed: Family<QueueLabels, Gauge>,
    dlq_depth: Family<QueueLabels, Gauge>,
    oldest: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

fn ql(q: &str) -> QueueLabels {
    QueueLabels {
        queue: q.to_owned(),
    }
}

/// Operations on the broker's state.
enum Op {
    Send {
        q: String,
        body: String,
        attributes: BTreeMap<String, String>,
        delay: Option<Duration>,
    },
    Publish {
        topic: String,
        body: String,
        attributes: BTreeMap<String, String>,
    },
    Receive {
        q: String,
        max: usize,
        visibility: Option<Duration>,
    },
    Delete {
        q: String,
        receipt: String,
    },
    Visibility {
        q: String,
        receipt: String,
        timeout: Duration,
    },
    Redrive {
        dlq: String,
    },
    Stats,
    Peek {
        q: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    message_id: String,
    receipt_handle: String,
    body: Arc<str>,
    receive_count: u32,
    sent_at_ms: u64,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    name: String,
    visible: usize,
    in_flight: usize,
    delayed: usize,
    oldest_age_seconds: f64,
    dlq: Option<String>,
    dlq_depth: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Peeked {
    message_id: String,
    body: Arc<str>,
    receive_count: u32,
    sent_at_ms: u64,
    attributes: BTreeMap<String, String>,
    in_flight: bool,
    source: Option<String>,
}

enum Reply {
    Ids(Vec<String>),
    Messages {
        messages: Vec<Delivered>,
        /// When the next message of the queue becomes visible, if one is waiting.
        next_visible_ms: Option<u64>,
    },
    Done,
    Moved(usize),
    Stats(Vec<QueueStats>),
    Peek(Vec<Peeked>),
    Err(StatusCode, String),
}

struct Broker {
    configs: BTreeMap<String, QueueConfig>,
    topics: BTreeMap<String, Vec<String>>,
    queues: HashMap<String, Queue>,
    next_seq: u64,
    notify: HashMap<String, Arc<Notify>>,
    touched: HashSet<String>,
    metrics: BrokerMetrics,
}

fn new_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The broker's state in a checkpoint: every message of every queue, as it stands
/// (receipt, receive count, visibility, dead-letter source), and the next sequence number.
#[derive(Serialize, Deserialize)]
struct BrokerSnapshot {
    next_seq: u64,
    queues: BTreeMap<String, Vec<Msg>>,
}

impl Broker {
    /// Restores the state of a checkpoint; queues no longer configured are dropped, as
    /// their records would be on replay.
    fn restore(&mut self, snapshot: BrokerSnapshot) {
        self.next_seq = self.next_seq.max(snapshot.next_seq);
        for (name, msgs) in snapshot.queues {
            if let Some(queue) = self.queues.get_mut(&name) {
                for m in msgs {
                    queue.insert(m);
                }
            }
        }
    }

    /// Replays one log record; the same code path as live operation.
    fn replay(&mut self, rec: Rec) {
        match rec {
            Rec::Sent {
                q,
                id,
                seq,
                body,
                attributes,
                sent_ms,
                visible_ms,
            } => {
                self.next_seq = self.next_seq.max(seq + 1);
                if let Some(queue) = self.queues.get_mut(&q) {
                    queue.insert(Msg {
                        id,
                        seq,
                        body,
                        attributes,
                        sent_ms,
                        visible_ms,
                        receive_count: 0,
                        receipt: None,
                        source: None,
                    });
                }
            }
            Rec::Received {
                q,
                id,
                receipt,
                count,
                visible_ms,
            } => {
                if let Some(queue) = self.queues.get_mut(&q) {
                    queue.set_visible(&id, visible_ms);
                    if let Some(m) = queue.msgs.get_mut(&id) {
                        m.receive_count = count;
                        m.receipt = Some(receipt);
                    }
                }
            }
            Rec::Deleted { q, id } => {
                if let Some(queue) = self.queues.get_mut(&q) {
                    queue.remove(&id);
                }
            }
            Rec::Visibility { q, id, visible_ms } => {
                if let Some(queue) = self.queues.get_mut(&q) {
                    queue.set_visible(&id, visible_ms);
                }
            }
            Rec::Moved {
                from,
                to,
                id,
                seq,
                reset,
            } => {
                self.next_seq = self.next_seq.max(seq + 1);
                self.move_message(&from, &to, &id, seq, reset, now_ms());
            }
        }
    }

    fn move_message(&mut self, from: &str, to: &str, id: &str, seq: u64, reset: bool, now: u64) {
        let Some(mut m) = self.queues.get_mut(from).and_then(|q| q.remove(id)) else {
            return;
        };
        m.seq = seq;
        m.visible_ms = now;
        m.receipt = None;
        if reset {
            m.receive_count = 0;
            m.source = None;
        } else {
            m.source = Some(from.to_owned());
        }
        if let Some(q) = self.queues.get_mut(to) {
            q.insert(m);
        }
    }

    fn send(
        &mut self,
        q: &str,
        body: Arc<str>,
        attributes: BTreeMap<String, String>,
        delay: Option<Duration>,
        records: &mut Vec<Rec>,
    ) -> String {
        let id = new_id();
        let seq = self.next_seq;
        self.next_seq += 1;
        let sent_ms = now_ms();
        let delay = delay.unwrap_or(self.configs[q].delay);
        let visible_ms = sent_ms + delay.as_millis() as u64;
        self.queues
            .get_mut(q)
            .expect("checked by caller")
            .insert(Msg {
                id: id.clone(),
                seq,
                body: body.clone(),
                attributes: attributes.clone(),
                sent_ms,
                visible_ms,
                receive_count: 0,
                receipt: None,
                source: None,
            });
        records.push(Rec::Sent {
            q: q.to_owned(),
            id: id.clone(),
            seq,
            body,
            attributes,
            sent_ms,
            visible_ms,
        });
        self.metrics.sends.get_or_create(&ql(q)).inc();
        self.touched.insert(q.to_owned());
        id
    }

    fn unknown_queue(q: &str) -> Reply {
        Reply::Err(StatusCode::NOT_FOUND, format!("no queue named {q}"))
    }

    fn receipt_id(receipt: &str) -> &str {
        receipt.split('.').next().unwrap_or("")
    }

    fn stats(&self) -> Vec<QueueStats> {
        let now = now_ms();
        self.configs
            .values()
            .map(|c| {
                let q = &self.queues[&c.name];
                let (mut visible, mut in_flight, mut delayed) = (0, 0, 0);
                let mut oldest = u64::MAX;
                for m in q.msgs.values() {
                    oldest = oldest.min(m.sent_ms);
                    if m.visible_ms <= now {
                        visible += 1;
                    } else if m.receipt.is_some() {
                        in_flight += 1;
                    } else {
                        delayed += 1;
                    }
                }
                let age = if oldest == u64::MAX {
                    0.0
                } else {
                    now.saturating_sub(oldest) as f64 / 1000.0
                };
                QueueStats {
                    name: c.name.clone(),
                    visible,
                    in_flight,
                    delayed,
                    oldest_age_seconds: age,
                    dlq: c.dlq.clone(),
                    dlq_depth: c.dlq.as_ref().map(|d| self.queues[d].msgs.len()),
                }
            })
            .collect()
    }
}

impl Broker {
    /// Up to `max` visible messages of `q`, each hidden for its visibility timeout; a
    /// message received `max_receives` times already goes to the dead-letter queue.
    fn receive(
        &mut self,
        q: String,
        max: usize,
        visibility: Option<Duration>,
        records: &mut Vec<Rec>,
    ) -> Reply {
        let Some(config) = self.configs.get(&q).cloned() else {
            return Self::unknown_queue(&q);
        };
        let now = now_ms();
        let visibility = visibility
            .or(config.visibility)
            .unwrap_or(Duration::from_secs(30))
            .as_millis() as u64;
        let mut messages = Vec::new();
        while messages.len() < max {
            let queue = self.queues.get_mut(&q).expect("configured");
            let Some((visible_ms, _, id)) = queue.index.first().cloned() else {
                break;
            };
            if visible_ms > now {
                break;
            }
            let count = queue.msgs[&id].receive_count;
            if let (Some(maxr), Some(dlq)) = (config.max_receives, &config.dlq)
                && count >= maxr
            {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.move_message(&q, dlq, &id, seq, false, now);
                records.push(Rec::Moved {
                    from: q.clone(),
                    to: dlq.clone(),
                    id,
                    seq,
                    reset: false,
                });
                self.metrics.dead_lettered.get_or_create(&ql(&q)).inc();
                continue;
            }
            let receipt = format!("{id}.{}.{:08x}", count + 1, fastrand::u32(..));
            queue.set_visible(&id, now + visibility);
            let m = queue.msgs.get_mut(&id).expect("indexed");
            m.receive_count = count + 1;
            m.receipt = Some(receipt.clone());
            records.push(Rec::Received {
                q: q.clone(),
                id: id.clone(),
                receipt: receipt.clone(),
                count: m.receive_count,
                visible_ms: m.visible_ms,
            });
            messages.push(Delivered {
                message_id: id,
                receipt_handle: receipt,
                body: m.body.clone(),
                receive_count: m.receive_count,
                sent_at_ms: m.sent_ms,
                attributes: m.attributes.clone(),
            });
        }
        self.metrics
            .receives
            .get_or_create(&ql(&q))
            .inc_by(messages.len() as u64);
        let next_visible_ms = self.queues[&q].index.first().map(|(v, _, _)| *v);
        Reply::Messages {
            messages,
            next_visible_ms,
        }
    }

    /// Deletes the message a receipt handle names, if it is still the latest.
    fn delete(&mut self, q: String, receipt: String, records: &mut Vec<Rec>) -> Reply {
        let Some(queue) = self.queues.get_mut(&q) else {
            return Self::unknown_queue(&q);
        };
        let id = Self::receipt_id(&receipt).to_owned();
        match queue.msgs.get(&id) {
            Some(m) if m.receipt.as_deref() == Some(receipt.as_str()) => {
                queue.remove(&id);
                records.push(Rec::Deleted { q: q.clone(), id });
                self.metrics.deletes.get_or_create(&ql(&q)).inc();
                Reply::Done
            }
            _ => Reply::Err(
                StatusCode::GONE,
                "receipt handle is not the message's latest (deleted, or received again since)"
                    .into(),
            ),
        }
    }

    /// Hides a message in flight for `timeout` more, from now.
    fn visibility(
        &mut self,
        q: String,
        receipt: String,
        timeout: Duration,
        records: &mut Vec<Rec>,
    ) -> Reply {
        let Some(queue) = self.queues.get_mut(&q) else {
            return Self::unknown_queue(&q);
        };
        let id = Self::receipt_id(&receipt).to_owned();
        let now = now_ms();
        match queue.msgs.get(&id) {
            Some(m) if m.receipt.as_deref() == Some(receipt.as_str()) && m.visible_ms > now => {
                let visible_ms = now + timeout.as_millis() as u64;
                queue.set_visible(&id, visible_ms);
                records.push(Rec::Visibility { q, id, visible_ms });
                Reply::Done
            }
            _ => Reply::Err(
                StatusCode::GONE,
                "receipt handle is not the latest of a message in flight".into(),
            ),
        }
    }

    /// Moves every message of a dead-letter queue back to the queue it came from.
    fn redrive(&mut self, dlq: String, records: &mut Vec<Rec>) -> Reply {
        let Some(queue) = self.queues.get(&dlq) else {
            return Self::unknown_queue(&dlq);
        };
        let sources: Vec<String> = self
            .configs
            .values()
            .filter(|c| c.dlq.as_deref() == Some(&dlq))
            .map(|c| c.name.clone())
            .collect();
        if sources.is_empty() {
            return Reply::Err(
                StatusCode::BAD_REQUEST,
                format!("{dlq} is no queue's dead-letter queue"),
            );
        }
        let mut ids: Vec<(u64, String, String)> = queue
            .msgs
            .values()
            .map(|m| {
                (
                    m.seq,
                    m.id.clone(),
                    m.source.clone().unwrap_or_else(|| sources[0].clone()),
                )
            })
            .collect();
        ids.sort();
        let now = now_ms();
        for (_, id, to) in &ids {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.move_message(&dlq, to, id, seq, true, now);
            records.push(Rec::Moved {
                from: dlq.clone(),
                to: to.clone(),
                id: id.clone(),
                seq,
                reset: true,
            });
            self.metrics.redrives.get_or_create(&ql(to)).inc();
            self.touched.insert(to.clone());
        }
        Reply::Moved(ids.len())
    }

    /// Every message of `q`, in order, without receiving any (the audit endpoint).
    fn peek(&self, q: &str) -> Reply {
        let Some(queue) = self.queues.get(q) else {
            return Self::unknown_queue(q);
        };
        let now = now_ms();
        let mut msgs: Vec<&Msg> = queue.msgs.values().collect();
        msgs.sort_by_key(|m| m.seq);
        Reply::Peek(
            msgs.into_iter()
                .map(|m| Peeked {
                    message_id: m.id.clone(),
                    body: m.body.clone(),
                    receive_count: m.receive_count,
                    sent_at_ms: m.sent_ms,
                    attributes: m.attributes.clone(),
                    in_flight: m.receipt.is_some() && m.visible_ms > now,
                    source: m.source.clone(),
                })
                .collect(),
        )
    }
}

impl Machine for Broker {
    type Op = Op;
    type Reply = Reply;
    type Record = Rec;

    fn apply(&mut self, op: Op, records: &mut Vec<Rec>) -> Reply {
        match op {
            Op::Send {
                q,
                body,
                attributes,
                delay,
            } => {
                if !self.queues.contains_key(&q) {
                    return Self::unknown_queue(&q);
                }
                Reply::Ids(vec![self.send(&q, body.into(), attributes, delay, records)])
            }
            Op::Publish {
                topic,
                body,
                attributes,
            } => {
                let Some(queues) = self.topics.get(&topic).cloned() else {
                    return Reply::Err(StatusCode::NOT_FOUND, format!("no topic named {topic}"));
                };
                let body: Arc<str> = body.into();
                let ids = queues
                    .iter()
                    .map(|q| self.send(q, body.clone(), attributes.clone(), None, records))
                    .collect();
                Reply::Ids(ids)
            }
            Op::Receive { q, max, visibility } => self.receive(q, max, visibility, records),
            Op::Delete { q, receipt } => self.delete(q, receipt, records),
            Op::Visibility {
                q,
                receipt,
                timeout,
            } => self.visibility(q, receipt, timeout, records),
            Op::Redrive { dlq } => self.redrive(dlq, records),
            Op::Stats => Reply::Stats(self.stats()),
            Op::Peek { q } => self.peek(&q),
        }
    }

    fn snapshot(&self) -> Option<Snapshot> {
        let queues = self
            .queues
            .iter()
            .map(|(name, q)| (name.clone(), q.msgs.values().cloned().collect()))
            .collect();
        Some(Snapshot::of(BrokerSnapshot {
            next_seq: self.next_seq,
            queues,
        }))
    }

    fn committed(&mut self) {
        for q in self.touched.drain() {
            if let Some(n) = self.notify.get(&q) {
                n.notify_waiters();
            }
        }
    }
}

struct AppState {
    committer: Committer<Broker>,
    notify: HashMap<String, Arc<Notify>>,
}

impl AppState {
    async fn call(&self, op: Op) -> Result<Reply, Response> {
        match self.committer.call(op).await {
            Ok(Reply::Err(status, msg)) => Err(error(status, msg)),
            Ok(r) => Ok(r),
            Err(_) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the log writer has stopped",
            )),
        }
    }
}

const MAX_BODY: usize = 256 * 1024;

#[allow(clippy::result_large_err)]
fn check_size(body: &str) -> Result<(), Response> {
    if body.len() > MAX_BODY {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("message bodies are limited to {MAX_BODY} bytes"),
        ));
    }
    Ok(())
}

#[allow(clippy::result_large_err)]
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    body.map(|Json(b)| b).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {}", e.body_text()),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    body: String,
    delay_ms: Option<u64>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

async fn send(
    State(s): State<Arc<AppState>>,
    Path(q): Path<String>,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Response {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Err(e) = check_size(&req.body) {
        return e;
    }
    let op = Op::Send {
        q,
        body: req.body,
        attributes: req.attributes,
        delay: req.delay_ms.map(Duration::from_millis),
    };
    match s.call(op).await {
        Ok(Reply::Ids(ids)) => Json(serde_json::json!({ "message_id": ids[0] })).into_response(),
        Ok(_) => unreachable!("send answers ids"),
        Err(e) => e,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    body: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

async fn publish(
    State(s): State<Arc<AppState>>,
    Path(topic): Path<String>,
    body: Result<Json<PublishRequest>, JsonRejection>,
) -> Response {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Err(e) = check_size(&req.body) {
        return e;
    }
    match s
        .call(Op::Publish {
            topic,
            body: req.body,
            attributes: req.attributes,
        })
        .await
    {
        Ok(Reply::Ids(ids)) => Json(serde_json::json!({ "message_ids": ids })).into_response(),
        Ok(_) => unreachable!("publish answers ids"),
        Err(e) => e,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReceiveRequest {
    max_messages: Option<usize>,
    wait_ms: Option<u64>,
    visibility_timeout_ms: Option<u64>,
}

async fn receive(
    State(s): State<Arc<AppState>>,
    deadline: Deadline,
    Path(q): Path<String>,
    body: Result<Json<ReceiveRequest>, JsonRejection>,
) -> Response {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let max = req.max_messages.unwrap_or(1);
    if !(1..=10).contains(&max) {
        return error(StatusCode::BAD_REQUEST, "max_messages must be from 1 to 10");
    }
    let wait = req.wait_ms.unwrap_or(0);
    if wait > 20_000 {
        return error(StatusCode::BAD_REQUEST, "wait_ms must be at most 20000");
    }
    let Some(notify) = s.notify.get(&q).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("no queue named {q}"));
    };
    // Long polling ends early enough to answer within the caller's deadline.
    let now = Instant::now();
    let margin = Duration::from_millis(100);
    let until = (now + Duration::from_millis(wait))
        .min(deadline.0.checked_sub(margin).unwrap_or(now))
        .max(now);
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let op = Op::Receive {
            q: q.clone(),
            max,
            visibility: req.visibility_timeout_ms.map(Duration::from_millis),
        };
        let (messages, next) = match s.call(op).await {
            Ok(Reply::Messages {
                messages,
                next_visible_ms,
            }) => (messages, next_visible_ms),
            Ok(_) => unreachable!("receive answers messages"),
            Err(e) => return e,
        };
        let now = Instant::now();
        if !messages.is_empty() || now >= until {
            return Json(serde_json::json!({ "messages": messages })).into_response();
        }
        // Wake for a new message, for one becoming visible again, or at the end.
        let wake = next
            .map(|ms| now + Duration::from_millis(ms.saturating_sub(now_ms())))
            .map_or(until, |w| w.min(until));
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptRequest {
    receipt_handle: String,
    visibility_timeout_ms: Option<u64>,
}

async fn delete(
    State(s): State<Arc<AppState>>,
    Path(q): Path<String>,
    body: Result<Json<ReceiptRequest>, JsonRejection>,
) -> Response {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    match s
        .call(Op::Delete {
            q,
            receipt: req.receipt_handle,
        })
        .await
    {
        Ok(_) => Json(serde_json::json!({})).into_response(),
        Err(e) => e,
    }
}

async fn visibility(
    State(s): State<Arc<AppState>>,
    Path(q): Path<String>,
    body: Result<Json<ReceiptRequest>, JsonRejection>,
) -> Response {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(ms) = req
        .visibility_timeout_ms
        .filter(|ms| *ms <= 12 * 3600 * 1000)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "visibility_timeout_ms is required, at most 12 hours",
        );
    };
    match s
        .call(Op::Visibility {
            q,
            receipt: req.receipt_handle,
            timeout: Duration::from_millis(ms),
        })
        .await
    {
        Ok(_) => Json(serde_json::json!({})).into_response(),
        Err(e) => e,
    }
}

async fn redrive(State(s): State<Arc<AppState>>, Path(q): Path<String>) -> Response {
    match s.call(Op::Redrive { dlq: q }).await {
        Ok(Reply::Moved(n)) => Json(serde_json::json!({ "moved": n })).into_response(),
        Ok(_) => unreachable!("redrive answers a count"),
        Err(e) => e,
    }
}

async fn list(State(s): State<Arc<AppState>>) -> Response {
    match s.call(Op::Stats).await {
        Ok(Reply::Stats(stats)) => Json(serde_json::json!({ "queues": stats })).into_response(),
        Ok(_) => unreachable!("stats answers stats"),
        Err(e) => e,
    }
}

async fn queue_stats(State(s): State<Arc<AppState>>, Path(q): Path<String>) -> Response {
    match s.call(Op::Stats).await {
        Ok(Reply::Stats(stats)) => match stats.into_iter().find(|st| st.name == q) {
            Some(st) => Json(st).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no queue named {q}")),
        },
        Ok(_) => unreachable!("stats answers stats"),
        Err(e) => e,
    }
}

async fn peek(State(s): State<Arc<AppState>>, Path(q): Path<String>) -> Response {
    match s.call(Op::Peek { q }).await {
        Ok(Reply::Peek(msgs)) => Json(serde_json::json!({ "messages": msgs })).into_response(),
        Ok(_) => unreachable!("peek answers messages"),
        Err(e) => e,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoisonRequest {
    count: usize,
}

/// Sends `count` malformed messages, marked with the `poison` attribute so that an
/// auditor can tell injected poison from real messages that failed.
async fn poison(
    State(s): State<Arc<AppState>>,
    Path(q): Path<String>,
    body: Result<Json<PoisonRequest>, JsonRejection>,
) -> Response {
    let req = match json_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if !(1..=10_000).contains(&req.count) {
        return error(StatusCode::BAD_REQUEST, "count must be from 1 to 10000");
    }
    let mut ids = Vec::new();
    for i in 0..req.count {
        let op = Op::Send {
            q: q.clone(),
            body: format!("\u{1}poison {i}: not a message any consumer understands"),
            attributes: BTreeMap::from([(POISON_ATTRIBUTE.to_owned(), "injected".to_owned())]),
            delay: None,
        };
        match s.call(op).await {
            Ok(Reply::Ids(mut got)) => ids.append(&mut got),
            Ok(_) => unreachable!("send answers ids"),
            Err(e) => return e,
        }
    }
    Json(serde_json::json!({ "message_ids": ids })).into_response()
}

/// The queues and topics the flags describe, checked: no queue twice, every dead-letter
/// queue and topic queue given, every dead-letter queue with its `max_receives`.
/// Each topic's queues, by topic.
type Topics = BTreeMap<String, Vec<String>>;

fn configured(args: &Args) -> anyhow::Result<(BTreeMap<String, QueueConfig>, Topics)> {
    let mut configs = BTreeMap::new();
    for q in &args.queues {
        let mut q = q.clone();
        q.visibility = q.visibility.or(Some(args.default_visibility));
        let name = q.name.clone();
        if configs.insert(name.clone(), q).is_some() {
            anyhow::bail!("queue {name} is given twice");
        }
    }
    for q in configs.values() {
        if let Some(d) = &q.dlq {
            anyhow::ensure!(
                configs.contains_key(d),
                "queue {}: dead-letter queue {d} is not a --queue",
                q.name
            );
            anyhow::ensure!(
                q.max_receives.is_some(),
                "queue {}: a dlq needs max_receives",
                q.name
            );
        }
    }
    let topics: BTreeMap<String, Vec<String>> = args.topics.iter().cloned().collect();
    for (t, qs) in &topics {
        for q in qs {
            anyhow::ensure!(
                configs.contains_key(q),
                "topic {t}: queue {q} is not a --queue"
            );
        }
    }
    Ok((configs, topics))
}

impl BrokerMetrics {
    /// `shop_broker_*`, registered in `r`.
    fn register(r: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = BrokerMetrics {
            sends: Family::default(),
            receives: Family::default(),
            deletes: Family::default(),
            dead_lettered: Family::default(),
            redrives: Family::default(),
            visible: Family::default(),
            in_flight: Family::default(),
            delayed: Family::default(),
            dlq_depth: Family::default(),
            oldest: Family::default(),
        };
        r.register(
            "sends",
            "Messages sent to a queue (directly or through a topic)",
            metrics.sends.clone(),
        );
        r.register(
            "receives",
            "Messages delivered by receives",
            metrics.receives.clone(),
        );
        r.register(
            "deletes",
            "Messages deleted after processing",
            metrics.deletes.clone(),
        );
        r.register(
            "dead_lettered",
            "Messages moved to the dead-letter queue after max receives",
            metrics.dead_lettered.clone(),
        );
        r.register(
            "redrives",
            "Messages moved back from the dead-letter queue",
            metrics.redrives.clone(),
        );
        r.register(
            "messages_visible",
            "Messages waiting to be received",
            metrics.visible.clone(),
        );
        r.register(
            "messages_in_flight",
            "Messages received and not yet deleted or visible again",
            metrics.in_flight.clone(),
        );
        r.register(
            "messages_delayed",
            "Messages sent with a delay not yet over",
            metrics.delayed.clone(),
        );
        r.register(
            "dlq_depth",
            "Messages in the queue's dead-letter queue",
            metrics.dlq_depth.clone(),
        );
        r.register(
            "oldest_message_age_seconds",
            "Age of the oldest message in the queue",
            metrics.oldest.clone(),
        );
        metrics
    }
}

/// The broker's state from its data directory: the newest snapshot, then the log.
fn recover(
    configs: BTreeMap<String, QueueConfig>,
    topics: Topics,
    notify: HashMap<String, Arc<Notify>>,
    metrics: BrokerMetrics,
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
) -> anyhow::Result<(Broker, Wal)> {
    let mut broker = Broker {
        queues: configs
            .keys()
            .map(|q| (q.clone(), Queue::default()))
            .collect(),
        configs,
        topics,
        next_seq: 1,
        notify,
        touched: HashSet::new(),
        metrics,
    };
    let recovered = Wal::recover::<BrokerSnapshot, Rec>(&data_dir.join("broker.log"), checkpoint)?;
    if let Some(snapshot) = recovered.snapshot {
        broker.restore(snapshot);
    }
    let replayed = recovered.records.len();
    for r in recovered.records {
        broker.replay(r);
    }
    let wal = recovered.wal;
    tracing::info!(
        generation = wal.generation(),
        records = replayed,
        "recovered from the snapshot and the log"
    );
    Ok((broker, wal))
}

pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (configs, topics) = configured(&args)?;
    let mut registry = new_registry();
    let http = HttpMetrics::register(&mut registry);
    let r = registry.sub_registry_with_prefix("broker");
    let metrics = BrokerMetrics::register(r);
    let wal_metrics = WalMetrics::register(r);

    let notify: HashMap<String, Arc<Notify>> = configs
        .keys()
        .map(|q| (q.clone(), Arc::new(Notify::new())))
        .collect();
    let (broker, wal) = recover(
        configs,
        topics,
        notify.clone(),
        metrics.clone(),
        &args.data_dir,
        args.checkpoint.config(),
    )?;
    let (committer, writer) = spawn_committer(broker, wal, Durability::Fsync, wal_metrics);
    let state = Arc::new(AppState {
        committer: committer.clone(),
        notify,
    });
    let router = Router::new()
        .route("/v1/queues", get(list))
        .route("/v1/queues/{q}", get(queue_stats))
        .route("/v1/queues/{q}/messages", get(peek))
        .route("/v1/queues/{q}/send", post(send))
        .route("/v1/queues/{q}/receive", post(receive))
        .route("/v1/queues/{q}/delete", post(delete))
        .route("/v1/queues/{q}/visibility", post(visibility))
        .route("/v1/queues/{q}/redrive", post(redrive))
        .route("/v1/topics/{t}/publish", post(publish))
        .route("/v1/admin/queues/{q}/poison", post(poison))
        .fallback(server::not_found)
        .with_state(state);
    let service = Service {
        name: "broker",
        router,
        registry,
        http,
        max_request_time: args.common.max_request_time,
        connections: args.common.connection_limits(),
    };
    let gauges = |t: CancellationToken| async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = t.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(Reply::Stats(stats)) = committer.call(Op::Stats).await else {
                return;
            };
            for st in stats {
                let l = ql(&st.name);
                metrics.visible.get_or_create(&l).set(st.visible as i64);
                metrics.in_flight.get_or_create(&l).set(st.in_flight as i64);
                metrics.delayed.get_or_create(&l).set(st.delayed as i64);
                metrics.oldest.get_or_create(&l).set(st.oldest_age_seconds);
                if let Some(d) = st.dlq_depth {
                    metrics.dlq_depth.get_or_create(&l).set(d as i64);
                }
            }
        }
    };
    let result = server::serve_with(args.common.listen, service, shutdown, gauges).await;
    let _ = writer.await;
    result
}

/// The bundled topology's queues and topics, for [`soak`].
fn shop_queues() -> (BTreeMap<String, QueueConfig>, Topics) {
    let specs = [
        "payments:max_receives=10,dlq=payments-dlq",
        "payments-dlq",
        "order-events:max_receives=10,dlq=order-events-dlq",
        "order-events-dlq",
        "notifications:max_receives=10,dlq=notifications-dlq",
        "notifications-dlq",
    ];
    let configs = specs
        .iter()
        .map(|s| {
            let mut q = parse_queue(s).expect("valid queue spec");
            q.visibility = Some(Duration::from_secs(30));
            (q.name.clone(), q)
        })
        .collect();
    let topics = [
        ("orders", vec!["payments"]),
        ("payment-events", vec!["order-events", "notifications"]),
    ]
    .into_iter()
    .map(|(t, qs)| (t.to_owned(), qs.into_iter().map(str::to_owned).collect()))
    .collect();
    (configs, topics)
}

/// Recovers a broker with the bundled topology's queues from `data_dir` (what a restart
/// does before it serves); returns the messages held. For `bench/logs.sh`.
#[doc(hidden)]
pub fn soak_recover(
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
) -> anyhow::Result<usize> {
    let (configs, topics) = shop_queues();
    let mut registry = new_registry();
    let metrics = BrokerMetrics::register(&mut registry);
    let (broker, _wal) = recover(
        configs,
        topics,
        HashMap::new(),
        metrics,
        data_dir,
        checkpoint,
    )?;
    Ok(broker.queues.values().map(|q| q.msgs.len()).sum())
}

/// Drives the broker's own state machine and log, in process, with the operations the
/// shop makes for each of `orders` orders: the order published to `orders`, received
/// from `payments`, the outcome published to `payment-events`, the payment deleted, and
/// the outcome received and deleted from `order-events` and from `notifications` (nine
/// log records). For `bench/logs.sh`; HTTP is left out so that a million orders fit.
#[doc(hidden)]
pub async fn soak(
    data_dir: &std::path::Path,
    checkpoint: CheckpointConfig,
    orders: u64,
    concurrency: u64,
    wal_metrics: WalMetrics,
) -> anyhow::Result<()> {
    let (configs, topics) = shop_queues();
    let mut registry = new_registry();
    let metrics = BrokerMetrics::register(&mut registry);
    let (broker, wal) = recover(
        configs,
        topics,
        HashMap::new(),
        metrics,
        data_dir,
        checkpoint,
    )?;
    let (committer, writer) = spawn_committer(broker, wal, Durability::Fsync, wal_metrics);
    crate::wal::soak(committer, orders, concurrency, |c, i| async move {
        soak_order(&c, i).await
    })
    .await?;
    writer.await?;
    Ok(())
}

async fn soak_order(c: &Committer<Broker>, i: u64) -> anyhow::Result<()> {
    let call = |op| async { c.call(op).await.map_err(anyhow::Error::from) };
    let order = serde_json::json!({"order_id": format!("{i:032x}"), "user": format!("user{}", i % 1000), "amount_cents": 1999 + i % 5000});
    call(Op::Publish {
        topic: "orders".into(),
        body: order.to_string(),
        attributes: BTreeMap::new(),
    })
    .await?;
    let take = |q: &'static str| async move {
        for _ in 0..1_000_000 {
            if let Reply::Messages { messages, .. } = call(Op::Receive {
                q: q.into(),
                max: 1,
                visibility: None,
            })
            .await?
                && let Some(m) = messages.into_iter().next()
            {
                return Ok(m.receipt_handle);
            }
            tokio::task::yield_now().await;
        }
        anyhow::bail!("nothing to receive from {q}")
    };
    let receipt = take("payments").await?;
    let outcome = serde_json::json!({"order_id": format!("{i:032x}"), "user": format!("user{}", i % 1000), "outcome": "paid", "charge_id": format!("ch_{i:016x}")});
    call(Op::Publish {
        topic: "payment-events".into(),
        body: outcome.to_string(),
        attributes: BTreeMap::new(),
    })
    .await?;
    call(Op::Delete {
        q: "payments".into(),
        receipt,
    })
    .await?;
    for q in ["order-events", "notifications"] {
        let receipt = take(q).await?;
        call(Op::Delete {
            q: q.into(),
            receipt,
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_and_topic_specs_parse() {
        let q = parse_queue("payments:visibility=10s,max_receives=3,dlq=payments-dlq").unwrap();
        assert_eq!(q.visibility, Some(Duration::from_secs(10)));
        assert_eq!(q.max_receives, Some(3));
        assert_eq!(q.dlq.as_deref(), Some("payments-dlq"));
        assert!(
            parse_queue("a:colour=red")
                .unwrap_err()
                .contains("unknown queue option `colour`")
        );
        assert!(parse_queue("a b").is_err());
        assert_eq!(
            parse_topic("t=a,b").unwrap(),
            ("t".into(), vec!["a".into(), "b".into()])
        );
    }
}
