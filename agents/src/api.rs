//! The agent's control API (HTTP/JSON): status, faults in and out, leases, metrics.
//! Only this module knows the API's routes; [`crate::client`] is its typed client.
//!
//! Bound to loopback by default. Any other address needs a bearer token, which every
//! request but `/health` must then carry (compared in constant time).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::faults::{FaultError, FaultInfo, FaultRequest, Faults};
use crate::http_server::{ConnStats, Limits};
use crate::proxy::runtime::{ProxyChange, ProxyError, ProxyView};
use crate::supervisor::{ReplicaStatus, ScaleError, Scaled};
use crate::topology::Messaging;

/// What `GET /v1/status` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub topology: String,
    /// `http://ADDR` of the entrypoint, if the topology has one.
    pub entrypoint: Option<String>,
    pub run_dir: String,
    pub replicas: Vec<ReplicaStatus>,
    pub faults: Vec<FaultInfo>,
    pub edges: Vec<EdgeView>,
    /// The topology's `[messaging]`: the broker service and who uses each queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging: Option<Messaging>,
    /// Per service that declares one (`metrics = "/metrics"`), the path of its
    /// Prometheus metrics; a service not named here is never scraped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, String>,
    /// The proxies made at run time (`faultline proxy`, the Toxiproxy API).
    #[serde(default)]
    pub proxies: Vec<ProxyView>,
    /// The mechanisms of network faults on containers this machine has (nsenter,
    /// iptables and its backend, tc, tbf, netem), found at agent start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanisms: Option<crate::faults::netns::Mechanisms>,
    /// The Docker runtime's network and run id (what its containers are labelled
    /// with), when the topology runs containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerView>,
    /// Every scaling of the run so far (`faultline scale`, the autoscaler), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scalings: Vec<Scaled>,
}

/// A scaling to make, as `POST /v1/scale` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub service: String,
    pub replicas: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerView {
    /// `faultline-<run id>`.
    pub network: String,
    /// The `faultline.run` label of every container and the network.
    pub run_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeView {
    /// `client->server-N`.
    pub name: String,
    /// The calling service, and the server replica the edge leads to.
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub server: String,
    pub listen: SocketAddr,
    /// Where the edge's connections go, `host:port`.
    pub target: String,
    pub toxics: usize,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the agent API would listen on {listen}, which is not a loopback address, without a token: set a token ({flag} or FAULTLINE_AGENT_TOKEN), or listen on 127.0.0.1"
)]
pub struct UnprotectedBind {
    pub listen: SocketAddr,
    /// The command's flag that sets the token, for the message.
    pub flag: &'static str,
}

/// Refuses to expose the API beyond this machine without a token; `flag` is the
/// caller's flag for the token (`--token`, `--agent-token`).
pub fn check_bind(
    listen: SocketAddr,
    token: Option<&str>,
    flag: &'static str,
) -> Result<(), UnprotectedBind> {
    if listen.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(UnprotectedBind { listen, flag })
    }
}

#[derive(Clone)]
struct AppState {
    faults: Arc<Faults>,
    registry: Arc<Registry>,
    token: Option<Arc<str>>,
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

fn fault_error(e: FaultError) -> Response {
    let status = match e {
        FaultError::BadRequest(_) => StatusCode::BAD_REQUEST,
        FaultError::UnknownTarget(_) | FaultError::NotFound(_) => StatusCode::NOT_FOUND,
        FaultError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        FaultError::Conflict(_) => StatusCode::CONFLICT,
        FaultError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
    };
    json_error(status, e.to_string())
}

/// Whether `headers` carry the bearer `token` (compared in constant time); anything
/// passes when there is no token. The load workers' API uses it too.
pub fn bearer_ok(headers: &axum::http::HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if !bearer_ok(req.headers(), s.token.as_deref()) {
        let mut resp = json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    next.run(req).await
}

async fn status(State(s): State<AppState>) -> Response {
    let sup = s.faults.supervisor();
    axum::Json(Status {
        topology: sup.topology().name.clone(),
        entrypoint: sup.entrypoint().map(|a| format!("http://{a}")),
        run_dir: sup.run_dir().display().to_string(),
        replicas: sup.status(),
        faults: s.faults.list(),
        edges: sup
            .edges()
            .iter()
            .map(|e| EdgeView {
                name: e.name.clone(),
                client: e.client.clone(),
                server: e.server.clone(),
                listen: e.listen,
                target: e.target(),
                toxics: e.toxics().len(),
            })
            .collect(),
        messaging: sup.topology().messaging.clone(),
        metrics: sup
            .topology()
            .services
            .iter()
            .filter_map(|svc| Some((svc.name.clone(), svc.metrics.clone()?)))
            .collect(),
        proxies: s.faults.proxies().list(),
        mechanisms: s.faults.mechanisms(),
        docker: sup
            .docker_network()
            .zip(sup.docker_run_id())
            .map(|(network, run_id)| DockerView {
                network: network.to_owned(),
                run_id: run_id.to_owned(),
            }),
        scalings: sup.scalings(),
    })
    .into_response()
}

async fn scale(State(s): State<AppState>, body: Bytes) -> Response {
    let req: ScaleRequest = match parse_body(&body, r#"{"service", "replicas"}"#) {
        Ok(r) => r,
        Err(r) => return r,
    };
    // In a task of its own: a scaling half done when the caller goes away would leave
    // replicas out of their callers' lists, so it always runs to its end.
    let sup = s.faults.supervisor().clone();
    let task = tokio::spawn(async move { sup.scale(&req.service, req.replicas, "api").await });
    match task.await {
        Ok(Ok(scaled)) => axum::Json(scaled).into_response(),
        Ok(Err(e)) => {
            let status = match e {
                ScaleError::UnknownService(..) => StatusCode::NOT_FOUND,
                ScaleError::BadCount(_)
                | ScaleError::NotProcess(..)
                | ScaleError::FixedPort(..) => StatusCode::BAD_REQUEST,
                ScaleError::Exhausted => StatusCode::TOO_MANY_REQUESTS,
                ScaleError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                ScaleError::Start(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            json_error(status, e.to_string())
        }
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the scaling failed: {e}"),
        ),
    }
}

fn proxy_error(e: ProxyError) -> Response {
    let status = match e {
        ProxyError::Invalid(_) => StatusCode::BAD_REQUEST,
        ProxyError::Exists(_) => StatusCode::CONFLICT,
        ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
        ProxyError::TooMany => StatusCode::TOO_MANY_REQUESTS,
        ProxyError::Listen(..) => StatusCode::CONFLICT,
    };
    json_error(status, e.to_string())
}

/// A proxy to make, as `POST /v1/proxies` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProxy {
    pub name: String,
    pub upstream: String,
    /// Where it listens; `127.0.0.1:0` (a free loopback port) when not given.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_listen() -> String {
    "127.0.0.1:0".into()
}

fn yes() -> bool {
    true
}

/// A change to a proxy, as `PATCH /v1/proxies/NAME` reads it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// The body as `T`, or the 400 that says why not.
#[allow(clippy::result_large_err)]
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, Response> {
    let map =
        crate::json::parse_object(body).map_err(|m| json_error(StatusCode::BAD_REQUEST, m))?;
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, format!("expected {shape}: {e}")))
}

async fn proxies_list(State(s): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "proxies": s.faults.proxies().list() })).into_response()
}

async fn proxy_create(State(s): State<AppState>, body: Bytes) -> Response {
    let p: NewProxy = match parse_body(&body, r#"{"name", "upstream", "listen", "enabled"}"#) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match s
        .faults
        .create_proxy(&p.name, &p.listen, &p.upstream, p.enabled)
        .await
    {
        Ok(v) => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Err(e) => proxy_error(e),
    }
}

async fn proxy_show(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match s.faults.proxies().get(&name) {
        Some(v) => axum::Json(v).into_response(),
        None => proxy_error(ProxyError::NotFound(name)),
    }
}

async fn proxy_update(
    State(s): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let u: ProxyUpdate = match parse_body(&body, r#"{"listen", "upstream", "enabled"}"#) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let change = ProxyChange {
        listen: u.listen,
        upstream: u.upstream,
        enabled: u.enabled,
    };
    match s.faults.proxies().update(&name, change).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => proxy_error(e),
    }
}

async fn proxy_delete(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(view) = s.faults.proxies().get(&name) else {
        return proxy_error(ProxyError::NotFound(name));
    };
    match s.faults.delete_proxy(&name).await {
        Ok(()) => axum::Json(view).into_response(),
        Err(e) => proxy_error(e),
    }
}

async fn list(State(s): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "faults": s.faults.list() })).into_response()
}

async fn inject(State(s): State<AppState>, body: Bytes) -> Response {
    let req = match FaultRequest::from_json(&body) {
        Ok(r) => r,
        Err(msg) => return json_error(StatusCode::BAD_REQUEST, msg),
    };
    match s.faults.apply(req).await {
        Ok(info) => (StatusCode::CREATED, axum::Json(info)).into_response(),
        Err(e) => fault_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Renew {
    ttl_ms: Option<u64>,
}

fn parse_renew(body: &[u8]) -> Result<Renew, String> {
    if body.is_empty() {
        return Ok(Renew::default());
    }
    let map = crate::json::parse_object(body)?;
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| format!("expected {{\"ttl_ms\": N}}: {e}"))
}

async fn renew(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let renew = match parse_renew(&body) {
        Ok(r) => r,
        Err(msg) => return json_error(StatusCode::BAD_REQUEST, msg),
    };
    match s.faults.renew(&id, renew.ttl_ms.map(Duration::from_millis)) {
        Ok(info) => axum::Json(info).into_response(),
        Err(e) => fault_error(e),
    }
}

async fn heal(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.faults.heal(&id, "healed").await {
        Ok(info) => axum::Json(info).into_response(),
        Err(e) => fault_error(e),
    }
}

async fn heal_all(State(s): State<AppState>) -> Response {
    let healed = s.faults.heal_all("healed").await;
    axum::Json(serde_json::json!({ "healed": healed })).into_response()
}

async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    crate::metrics::render(&s.registry, &headers)
}

/// The largest request body the API reads; fault requests are a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Every error the API answers is JSON, `{"error": "..."}`: the router's own answers
/// (405 with its `Allow` header, 413 from the body limit, a rejected extractor) come as
/// plain text or empty, and are rewritten here.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("the body is larger than {MAX_BODY} bytes"),
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "method not allowed here; allowed: {}",
            parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
        ),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_lowercase(),
        _ => String::from_utf8_lossy(&text).into_owned(),
    };
    let mut out = json_error(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

/// Serves the API on `listener` within `limits` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    faults: Arc<Faults>,
    token: Option<String>,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let conns = Arc::new(ConnStats::default());
    let state = AppState {
        registry: Arc::new(crate::metrics::registry(&faults, conns.clone())),
        faults,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
    };
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/faults", get(list).post(inject).delete(heal_all))
        .route("/v1/faults/{id}", axum::routing::delete(heal))
        .route("/v1/faults/{id}/renew", post(renew))
        .route("/v1/scale", post(scale))
        .route("/v1/proxies", get(proxies_list).post(proxy_create))
        .route(
            "/v1/proxies/{name}",
            get(proxy_show).patch(proxy_update).delete(proxy_delete),
        )
        .route("/metrics", get(metrics))
        .fallback(|| async {
            json_error(
                StatusCode::NOT_FOUND,
                "no such route; see /v1/status, /v1/faults, /v1/proxies, /v1/scale",
            )
        })
        // The token is checked before the handler reads a byte of the body.
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(json_errors))
        .with_state(state);
    crate::http_server::serve(listener, app, limits, conns, shutdown).await
}
