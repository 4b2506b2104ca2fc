//! A Toxiproxy 2.x server (`--toxiproxy-listen`): Toxiproxy's HTTP API, its routes,
//! shapes, status codes and toxic types as its server and documentation define them, so
//! that Toxiproxy's clients (Go, Ruby, Python, Java, .NET, testcontainers' module) drive
//! faultline unchanged.
//!
//! It is a dialect, not a second engine: a Toxiproxy proxy is a run-time proxy of
//! [`crate::proxy::runtime`], and a toxic is a fault of the fault engine on it, leased,
//! journalled and healed like every fault, shown by `faultline fault list`, `status`,
//! the dashboard and `/metrics`. What this module keeps is the Toxiproxy side of each
//! toxic (its name, type, stream and attributes as the client wrote them) and which
//! fault carries it; a toxic whose fault is healed by other means (`faultline heal`, a
//! lapsed `--toxiproxy-ttl`) is gone from its listing.
//!
//! Toxiproxy's toxics last until removed, and its clients rely on that: by default a
//! toxic's fault is leased for the longest lease and renewed while the agent runs;
//! with `--toxiproxy-ttl` each lasts that long at most.

// The helpers below fail with the answer itself, an axum `Response`, which handlers
// return as it is; boxing it would only move the error paths to the heap.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::faults::{FaultError, FaultRequest, Faults, spec};
use crate::http_server::{ConnStats, Limits};
use crate::proxy::runtime::{ProxyChange, ProxyError, ProxyView};

/// The Toxiproxy version whose API this serves.
pub const VERSION: &str = "2.12.0";

/// How the Toxiproxy API is started: where it listens, and how long its toxics last.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ToxiproxyArgs {
    /// Serve Toxiproxy's HTTP API here too (its usual port is 8474), so Toxiproxy's
    /// clients drive this agent unchanged. Off by default; loopback only unless
    /// --toxiproxy-allow-remote, since the API has no authentication.
    #[arg(long, value_name = "ADDR")]
    pub toxiproxy_listen: Option<SocketAddr>,
    /// How long a toxic made through the Toxiproxy API lasts at most (a lease); by
    /// default, like Toxiproxy's, until it is removed or the agent stops.
    #[arg(long, value_name = "DURATION", value_parser = ttl, requires = "toxiproxy_listen")]
    pub toxiproxy_ttl: Option<Duration>,
    /// Let the Toxiproxy API listen beyond loopback: anyone who reaches it can make
    /// proxies to any address.
    #[arg(long, requires = "toxiproxy_listen")]
    pub toxiproxy_allow_remote: bool,
}

fn ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d > spec::MAX_TTL {
        return Err(format!("must be from 1s to 24h, not {s}"));
    }
    Ok(d)
}

impl ToxiproxyArgs {
    /// Refuses a listen address beyond loopback without `--toxiproxy-allow-remote`.
    pub fn check(&self) -> Result<(), String> {
        match self.toxiproxy_listen {
            Some(a) if !a.ip().is_loopback() && !self.toxiproxy_allow_remote => Err(format!(
                "--toxiproxy-listen {a} is not a loopback address, and the Toxiproxy API has no authentication: listen on 127.0.0.1, or pass --toxiproxy-allow-remote"
            )),
            _ => Ok(()),
        }
    }
}

/// One toxic as its client wrote it, and the fault that carries it.
#[derive(Debug, Clone)]
struct ToxicRecord {
    name: String,
    kind: String,
    stream: String,
    toxicity: f64,
    /// Every attribute of its type, defaults filled in.
    attributes: Map<String, Value>,
    fault: String,
}

impl ToxicRecord {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": self.attributes,
        })
    }
}

struct Server {
    faults: Arc<Faults>,
    /// Per proxy, its toxics; one change at a time (applying a fault awaits).
    toxics: tokio::sync::Mutex<BTreeMap<String, Vec<ToxicRecord>>>,
    ttl: Option<Duration>,
}

type Shared = Arc<Server>;

/// A Toxiproxy error: `{"error": "...", "status": N}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "error": message.into(), "status": status.as_u16() });
    (status, axum::Json(body)).into_response()
}

fn proxy_error(e: ProxyError) -> Response {
    match e {
        ProxyError::NotFound(_) => error(StatusCode::NOT_FOUND, "proxy not found"),
        ProxyError::Exists(_) => error(StatusCode::CONFLICT, "proxy already exists"),
        ProxyError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        e @ (ProxyError::TooMany | ProxyError::Listen(..)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

fn fault_error(e: FaultError) -> Response {
    match e {
        FaultError::BadRequest(m) => {
            error(StatusCode::BAD_REQUEST, format!("bad request body: {m}"))
        }
        FaultError::TooMany(_) => error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        e => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn not_found_toxic() -> Response {
    error(StatusCode::NOT_FOUND, "toxic not found")
}

/// The body as JSON, as Toxiproxy decodes it (`bad request body: ...` otherwise).
fn body_json(body: &[u8]) -> Result<Value, Response> {
    crate::json::parse(body)
        .map_err(|m| error(StatusCode::BAD_REQUEST, format!("bad request body: {m}")))
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, Response> {
    match body_json(body)? {
        Value::Object(m) => Ok(m),
        v => Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "bad request body: expected a JSON object, not {}",
                crate::json::type_name(&v)
            ),
        )),
    }
}

impl Server {
    /// The toxics of `proxy` whose faults are still in effect (the others are dropped).
    fn live(&self, all: &mut BTreeMap<String, Vec<ToxicRecord>>, proxy: &str) -> Vec<ToxicRecord> {
        let list = all.entry(proxy.to_owned()).or_default();
        list.retain(|t| self.faults.is_active(&t.fault));
        list.clone()
    }

    fn proxy_json(&self, view: &ProxyView, toxics: &[ToxicRecord]) -> Value {
        json!({
            "name": view.name,
            "listen": view.listen,
            "upstream": view.upstream,
            "enabled": view.enabled,
            "toxics": toxics.iter().map(ToxicRecord::json).collect::<Vec<_>>(),
        })
    }

    async fn show(&self, view: &ProxyView) -> Value {
        let toxics = self.live(&mut *self.toxics.lock().await, &view.name);
        self.proxy_json(view, &toxics)
    }

    /// The fault that carries a toxic of `kind` on `stream` with `attributes` and
    /// `toxicity`, on proxy `proxy`.
    fn request(
        &self,
        proxy: &str,
        kind: &str,
        stream: &str,
        toxicity: f64,
        attributes: &Map<String, Value>,
    ) -> Result<FaultRequest, Response> {
        let mut map = fault_fields(kind, attributes)?;
        map.insert("target".into(), proxy.into());
        map.insert("direction".into(), stream.into());
        map.insert("toxicity".into(), toxicity.into());
        let ttl = self.ttl.unwrap_or(spec::MAX_TTL);
        map.insert("ttl_ms".into(), (ttl.as_millis() as u64).into());
        FaultRequest::from_map(map)
            .map_err(|m| error(StatusCode::BAD_REQUEST, format!("bad request body: {m}")))
    }

    /// Renews every toxic's fault while the agent runs, unless toxics have a TTL.
    async fn renew(self: Arc<Self>, shutdown: CancellationToken) {
        if self.ttl.is_some() {
            return;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
            let ids: Vec<String> = self
                .toxics
                .lock()
                .await
                .values()
                .flatten()
                .map(|t| t.fault.clone())
                .collect();
            for id in ids {
                let _ = self.faults.renew(&id, None);
            }
        }
    }
}

/// How often the faults of lasting toxics are renewed, well inside the longest lease.
const RENEW_EVERY: Duration = Duration::from_secs(3600);

/// A whole number attribute, `default` when absent.
fn attr(attributes: &Map<String, Value>, name: &str, default: u64) -> Result<u64, Response> {
    match attributes.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("bad request body: attribute `{name}` must be a whole number, not {v}"),
            )
        }),
    }
}

/// Every attribute of toxic type `kind` (Toxiproxy's names and units), defaults filled
/// in; a type Toxiproxy does not have is refused.
fn attributes_of(kind: &str, given: &Map<String, Value>) -> Result<Map<String, Value>, Response> {
    let names: &[&str] = match kind {
        "latency" => &["latency", "jitter"],
        "bandwidth" => &["rate"],
        "slow_close" => &["delay"],
        "timeout" | "reset_peer" => &["timeout"],
        "slicer" => &["average_size", "size_variation", "delay"],
        "limit_data" => &["bytes"],
        _ => return Err(error(StatusCode::BAD_REQUEST, "invalid toxic type")),
    };
    let mut out = Map::new();
    for n in names {
        out.insert((*n).to_owned(), attr(given, n, 0)?.into());
    }
    Ok(out)
}

/// The fault engine's fields for a toxic of type `kind` with `a`, its attributes
/// (complete): Toxiproxy's units turned into the engine's.
fn fault_fields(kind: &str, a: &Map<String, Value>) -> Result<Map<String, Value>, Response> {
    let n = |name: &str| a.get(name).and_then(Value::as_u64).unwrap_or(0);
    let fields = match kind {
        "latency" => json!({"kind": "latency", "delay_ms": n("latency"), "jitter_ms": n("jitter")}),
        // KB/s, of 1000 bytes; 0 is no limit in Toxiproxy.
        "bandwidth" => {
            let rate = match n("rate") {
                0 => spec::MAX_RATE,
                r => r.saturating_mul(1000).min(spec::MAX_RATE),
            };
            json!({"kind": "bandwidth", "rate": rate})
        }
        "slow_close" => json!({"kind": "slow-close", "delay_ms": n("delay")}),
        // 0 holds the data until the toxic is removed.
        "timeout" => match n("timeout") {
            0 => json!({"kind": "blackhole"}),
            t => json!({"kind": "blackhole", "close_after_ms": t}),
        },
        "reset_peer" => json!({"kind": "reset", "after_ms": n("timeout")}),
        "slicer" => json!({
            "kind": "slicer",
            "average_size": n("average_size"),
            "size_variation": n("size_variation"),
            "delay_us": n("delay"),
        }),
        "limit_data" => json!({"kind": "limit-data", "bytes": n("bytes")}),
        _ => return Err(error(StatusCode::BAD_REQUEST, "invalid toxic type")),
    };
    match fields {
        Value::Object(m) => Ok(m),
        _ => unreachable!("an object"),
    }
}

/// A stream as Toxiproxy reads it (either case), or 400.
fn stream_of(v: Option<&Value>) -> Result<String, Response> {
    let bad = || {
        error(
            StatusCode::BAD_REQUEST,
            "stream was invalid, can be either upstream or downstream",
        )
    };
    match v {
        None | Some(Value::Null) => Ok("downstream".into()),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "upstream" => Ok("upstream".into()),
            "downstream" => Ok("downstream".into()),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

fn text_field(map: &Map<String, Value>, name: &str) -> Result<Option<String>, Response> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("bad request body: `{name}` must be a string, not {v}"),
        )),
    }
}

fn bool_field(map: &Map<String, Value>, name: &str) -> Result<Option<bool>, Response> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("bad request body: `{name}` must be true or false, not {v}"),
        )),
    }
}

fn toxicity_of(v: Option<&Value>, default: f64) -> Result<f64, Response> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("bad request body: toxicity must be a number from 0 to 1, not {v}"),
                )
            }),
    }
}

/// A proxy to make: `name` and `upstream` required, `listen` (default
/// `127.0.0.1:0`) and `enabled` (default true).
struct NewProxy {
    name: String,
    listen: String,
    upstream: String,
    enabled: bool,
}

fn new_proxy(map: &Map<String, Value>) -> Result<NewProxy, Response> {
    let missing = |f: &str| {
        error(
            StatusCode::BAD_REQUEST,
            format!("missing required field: {f}"),
        )
    };
    let name = text_field(map, "name")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("name"))?;
    let upstream = text_field(map, "upstream")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("upstream"))?;
    Ok(NewProxy {
        name,
        listen: text_field(map, "listen")?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "127.0.0.1:0".into()),
        upstream,
        enabled: bool_field(map, "enabled")?.unwrap_or(true),
    })
}

async fn index(State(s): State<Shared>) -> Response {
    let mut out = Map::new();
    for view in s.faults.proxies().list() {
        out.insert(view.name.clone(), s.show(&view).await);
    }
    axum::Json(Value::Object(out)).into_response()
}

async fn create(State(s): State<Shared>, body: Bytes) -> Response {
    let p = match body_object(&body).and_then(|m| new_proxy(&m)) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match s
        .faults
        .create_proxy(&p.name, &p.listen, &p.upstream, p.enabled)
        .await
    {
        Ok(view) => (StatusCode::CREATED, axum::Json(s.show(&view).await)).into_response(),
        Err(e) => proxy_error(e),
    }
}

/// `POST /populate`: makes every proxy of the list that does not exist as written (one
/// whose listen or upstream differs is made again); 201 with all of them.
async fn populate(State(s): State<Shared>, body: Bytes) -> Response {
    let list = match body_json(&body) {
        Ok(Value::Array(a)) => a,
        Ok(Value::Object(mut m)) if m.get("proxies").is_some_and(Value::is_array) => {
            match m.remove("proxies") {
                Some(Value::Array(a)) => a,
                _ => unreachable!("checked"),
            }
        }
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad request body: expected a list of proxies",
            );
        }
        Err(r) => return r,
    };
    let mut wanted = Vec::new();
    for item in &list {
        let Value::Object(m) = item else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad request body: each proxy is an object",
            );
        };
        match new_proxy(m) {
            Ok(p) => wanted.push(p),
            Err(r) => return r,
        }
    }
    let mut made = Vec::new();
    for p in wanted {
        let kept = s.faults.proxies().get(&p.name).filter(|v| {
            v.upstream == p.upstream && (v.listen == p.listen || p.listen.ends_with(":0"))
        });
        let view = match kept {
            Some(v) => v,
            None => {
                if s.faults.proxies().get(&p.name).is_some() {
                    let _ = s.faults.delete_proxy(&p.name).await;
                }
                match s
                    .faults
                    .create_proxy(&p.name, &p.listen, &p.upstream, p.enabled)
                    .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        let resp = proxy_error(e);
                        let status = resp.status();
                        let body = json!({
                            "error": format!("cannot make proxy `{}`", p.name),
                            "status": status.as_u16(),
                            "proxies": made,
                        });
                        return (status, axum::Json(body)).into_response();
                    }
                }
            }
        };
        made.push(s.show(&view).await);
    }
    (StatusCode::CREATED, axum::Json(json!({ "proxies": made }))).into_response()
}

async fn show(State(s): State<Shared>, Path(proxy): Path<String>) -> Response {
    match s.faults.proxies().get(&proxy) {
        Some(view) => axum::Json(s.show(&view).await).into_response(),
        None => proxy_error(ProxyError::NotFound(proxy)),
    }
}

/// `POST`/`PATCH /proxies/NAME`: the fields given replace the proxy's.
async fn update(State(s): State<Shared>, Path(proxy): Path<String>, body: Bytes) -> Response {
    if s.faults.proxies().get(&proxy).is_none() {
        return proxy_error(ProxyError::NotFound(proxy));
    }
    let change = match body_object(&body).and_then(|m| {
        Ok(ProxyChange {
            listen: text_field(&m, "listen")?,
            upstream: text_field(&m, "upstream")?,
            enabled: bool_field(&m, "enabled")?,
        })
    }) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match s.faults.proxies().update(&proxy, change).await {
        Ok(view) => axum::Json(s.show(&view).await).into_response(),
        Err(e) => proxy_error(e),
    }
}

async fn delete(State(s): State<Shared>, Path(proxy): Path<String>) -> Response {
    if let Err(e) = s.faults.delete_proxy(&proxy).await {
        return proxy_error(e);
    }
    s.toxics.lock().await.remove(&proxy);
    StatusCode::NO_CONTENT.into_response()
}

async fn toxic_index(State(s): State<Shared>, Path(proxy): Path<String>) -> Response {
    if s.faults.proxies().get(&proxy).is_none() {
        return proxy_error(ProxyError::NotFound(proxy));
    }
    let toxics = s.live(&mut *s.toxics.lock().await, &proxy);
    axum::Json(toxics.iter().map(ToxicRecord::json).collect::<Vec<_>>()).into_response()
}

async fn toxic_create(State(s): State<Shared>, Path(proxy): Path<String>, body: Bytes) -> Response {
    if s.faults.proxies().get(&proxy).is_none() {
        return proxy_error(ProxyError::NotFound(proxy));
    }
    let record = match read_toxic(&s, &proxy, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut all = s.toxics.lock().await;
    if s.live(&mut all, &proxy)
        .iter()
        .any(|t| t.name == record.0.name)
    {
        return error(StatusCode::CONFLICT, "toxic already exists");
    }
    let (mut record, request) = record;
    match s.faults.apply(request).await {
        Ok(info) => {
            record.fault = info.id;
            let out = record.json();
            all.entry(proxy).or_default().push(record);
            axum::Json(out).into_response()
        }
        Err(e) => fault_error(e),
    }
}

/// A new toxic from its body, with Toxiproxy's defaults (stream `downstream`, toxicity
/// 1, name `TYPE_STREAM`), and the fault that will carry it.
fn read_toxic(
    s: &Server,
    proxy: &str,
    body: &[u8],
) -> Result<(ToxicRecord, FaultRequest), Response> {
    let map = body_object(body)?;
    let kind = text_field(&map, "type")?.unwrap_or_default();
    let stream = stream_of(map.get("stream"))?;
    let name = text_field(&map, "name")?
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("{kind}_{stream}"));
    let toxicity = toxicity_of(map.get("toxicity"), 1.0)?;
    let given = match map.get("attributes") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(v) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("bad request body: attributes must be an object, not {v}"),
            ));
        }
    };
    let attributes = attributes_of(&kind, &given)?;
    let request = s.request(proxy, &kind, &stream, toxicity, &attributes)?;
    let record = ToxicRecord {
        name,
        kind,
        stream,
        toxicity,
        attributes,
        fault: String::new(),
    };
    Ok((record, request))
}

async fn toxic_show(
    State(s): State<Shared>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Response {
    if s.faults.proxies().get(&proxy).is_none() {
        return proxy_error(ProxyError::NotFound(proxy));
    }
    let toxics = s.live(&mut *s.toxics.lock().await, &proxy);
    match toxics.iter().find(|t| t.name == toxic) {
        Some(t) => axum::Json(t.json()).into_response(),
        None => not_found_toxic(),
    }
}

/// `POST`/`PATCH .../toxics/NAME`: new attributes (merged into the old) and toxicity;
/// the old fault is healed and a new one applied.
async fn toxic_update(
    State(s): State<Shared>,
    Path((proxy, toxic)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if s.faults.proxies().get(&proxy).is_none() {
        return proxy_error(ProxyError::NotFound(proxy));
    }
    let mut all = s.toxics.lock().await;
    let Some(old) = s
        .live(&mut all, &proxy)
        .into_iter()
        .find(|t| t.name == toxic)
    else {
        return not_found_toxic();
    };
    let map = match body_object(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut given = old.attributes.clone();
    match map.get("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => given.extend(m.clone()),
        Some(v) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad request body: attributes must be an object, not {v}"),
            );
        }
    }
    let built = toxicity_of(map.get("toxicity"), old.toxicity).and_then(|toxicity| {
        let attributes = attributes_of(&old.kind, &given)?;
        let request = s.request(&proxy, &old.kind, &old.stream, toxicity, &attributes)?;
        Ok((toxicity, attributes, request))
    });
    let (toxicity, attributes, request) = match built {
        Ok(b) => b,
        Err(r) => return r,
    };
    let _ = s.faults.heal(&old.fault, "updated").await;
    let list = all.entry(proxy).or_default();
    list.retain(|t| t.name != toxic);
    match s.faults.apply(request).await {
        Ok(info) => {
            let record = ToxicRecord {
                toxicity,
                attributes,
                fault: info.id,
                ..old
            };
            let out = record.json();
            list.push(record);
            axum::Json(out).into_response()
        }
        Err(e) => fault_error(e),
    }
}

async fn toxic_delete(
    State(s): State<Shared>,
    Path((proxy, toxic)): Path<(String, String)>,
) -> Response {
    if s.faults.proxies().get(&proxy).is_none() {
        return proxy_error(ProxyError::NotFound(proxy));
    }
    let mut all = s.toxics.lock().await;
    let list = all.entry(proxy).or_default();
    let Some(at) = list.iter().position(|t| t.name == toxic) else {
        return not_found_toxic();
    };
    let record = list.remove(at);
    match s.faults.heal(&record.fault, "healed").await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        // Healed by other means already: the toxic was gone.
        Err(_) => not_found_toxic(),
    }
}

/// `POST /reset`: every proxy enabled again, every toxic made here removed.
async fn reset(State(s): State<Shared>) -> Response {
    let mut all = s.toxics.lock().await;
    for t in std::mem::take(&mut *all).into_values().flatten() {
        let _ = s.faults.heal(&t.fault, "healed").await;
    }
    for view in s.faults.proxies().list() {
        let enable = ProxyChange {
            enabled: Some(true),
            ..ProxyChange::default()
        };
        if let Err(e) = s.faults.proxies().update(&view.name, enable).await {
            return proxy_error(e);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn version() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        format!("{{\"version\": \"{VERSION}\"}}\n"),
    )
        .into_response()
}

/// As Toxiproxy: a browser's request is refused, so no web page can drive the API.
async fn no_browsers(req: Request, next: Next) -> Response {
    let browser = req
        .headers()
        .get(header::USER_AGENT)
        .is_some_and(|v| v.as_bytes().starts_with(b"Mozilla/"));
    if browser {
        return error(StatusCode::FORBIDDEN, "User agent not allowed");
    }
    next.run(req).await
}

/// Serves the Toxiproxy API on `listener` until `shutdown`; toxics last `ttl` at most
/// (`None`: until removed).
pub async fn serve(
    listener: tokio::net::TcpListener,
    faults: Arc<Faults>,
    ttl: Option<Duration>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let server = Arc::new(Server {
        faults,
        toxics: tokio::sync::Mutex::new(BTreeMap::new()),
        ttl,
    });
    tokio::spawn(server.clone().renew(shutdown.clone()));
    let app = Router::new()
        .route("/reset", post(reset))
        .route("/proxies", get(index).post(create))
        .route("/populate", post(populate))
        .route(
            "/proxies/{proxy}",
            get(show).post(update).patch(update).delete(delete),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(toxic_index).post(toxic_create),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(toxic_show)
                .post(toxic_update)
                .patch(toxic_update)
                .delete(toxic_delete),
        )
        .route("/version", get(version))
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .fallback(|| async { error(StatusCode::NOT_FOUND, "404 page not found") })
        .layer(middleware::from_fn(no_browsers))
        .layer(axum::extract::DefaultBodyLimit::max(crate::api::MAX_BODY))
        .with_state(server);
    let conns = Arc::new(ConnStats::default());
    crate::http_server::serve(listener, app, Limits::default(), conns, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_type_fills_its_attributes_and_maps_to_a_fault_in_the_engines_units() {
        let a = attributes_of("latency", &attrs(json!({"latency": 100}))).unwrap();
        assert_eq!(
            Value::Object(a.clone()),
            json!({"latency": 100, "jitter": 0})
        );
        let f = fault_fields("latency", &a).unwrap();
        assert_eq!(f["kind"], "latency");
        assert_eq!(f["delay_ms"], 100);
        // KB/s of 1000 bytes; 0 is no limit.
        let f = fault_fields("bandwidth", &attrs(json!({"rate": 200}))).unwrap();
        assert_eq!(f["rate"], 200_000);
        let f = fault_fields("bandwidth", &attrs(json!({"rate": 0}))).unwrap();
        assert_eq!(f["rate"], spec::MAX_RATE);
        // timeout 0 holds until removed; otherwise it closes after that long.
        let f = fault_fields("timeout", &attrs(json!({"timeout": 0}))).unwrap();
        assert!(f.get("close_after_ms").is_none());
        let f = fault_fields("timeout", &attrs(json!({"timeout": 250}))).unwrap();
        assert_eq!(f["close_after_ms"], 250);
        let f = fault_fields("reset_peer", &attrs(json!({"timeout": 5}))).unwrap();
        assert_eq!(
            (f["kind"].as_str(), f["after_ms"].as_u64()),
            (Some("reset"), Some(5))
        );
        // The slicer's delay is in microseconds, as Toxiproxy has it.
        let f = fault_fields(
            "slicer",
            &attrs(json!({"average_size": 10, "size_variation": 2, "delay": 7})),
        )
        .unwrap();
        assert_eq!(f["delay_us"], 7);
        assert_eq!(
            fault_fields("limit_data", &attrs(json!({"bytes": 9}))).unwrap()["bytes"],
            9
        );
        assert_eq!(
            fault_fields("slow_close", &attrs(json!({"delay": 3}))).unwrap()["delay_ms"],
            3
        );
        for bad in ["", "noop", "http_abort"] {
            assert_eq!(attributes_of(bad, &Map::new()).unwrap_err().status(), 400);
        }
        let wrong = attributes_of("latency", &attrs(json!({"latency": "fast"})));
        assert_eq!(wrong.unwrap_err().status(), 400);
    }

    #[test]
    fn streams_and_toxicity_as_toxiproxy_reads_them() {
        assert_eq!(stream_of(None).unwrap(), "downstream");
        assert_eq!(stream_of(Some(&json!("UpStream"))).unwrap(), "upstream");
        assert_eq!(stream_of(Some(&json!("both"))).unwrap_err().status(), 400);
        assert_eq!(toxicity_of(None, 1.0).unwrap(), 1.0);
        assert_eq!(toxicity_of(Some(&json!(0.25)), 1.0).unwrap(), 0.25);
        assert_eq!(toxicity_of(Some(&json!(2)), 1.0).unwrap_err().status(), 400);
    }

    #[test]
    fn remote_listening_needs_its_own_flag() {
        let mut a = ToxiproxyArgs {
            toxiproxy_listen: Some("0.0.0.0:8474".parse().unwrap()),
            ..ToxiproxyArgs::default()
        };
        assert!(a.check().unwrap_err().contains("--toxiproxy-allow-remote"));
        a.toxiproxy_allow_remote = true;
        assert!(a.check().is_ok());
        a.toxiproxy_listen = Some("127.0.0.1:8474".parse().unwrap());
        a.toxiproxy_allow_remote = false;
        assert!(a.check().is_ok());
    }
}
