//! The typed client of the agent's control API, which the `faultline` CLI uses.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::api::{NewProxy, ProxyUpdate, ScaleRequest, Status};
use crate::faults::{FaultInfo, FaultRequest};
use crate::proxy::runtime::ProxyView;
use crate::supervisor::Scaled;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{message}")]
    Api { status: u16, message: String },
}

#[derive(Clone)]
pub struct AgentClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AgentClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Api {
            status: status.as_u16(),
            message: format!("unexpected answer from the agent: {e}"),
        })
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(reqwest::Method::GET, "/v1/status", None).await
    }

    pub async fn inject(&self, request: &FaultRequest) -> Result<FaultInfo, ClientError> {
        let body = serde_json::to_value(request).expect("requests serialise");
        self.call(reqwest::Method::POST, "/v1/faults", Some(body))
            .await
    }

    pub async fn faults(&self) -> Result<Vec<FaultInfo>, ClientError> {
        #[derive(serde::Deserialize)]
        struct List {
            faults: Vec<FaultInfo>,
        }
        let l: List = self.call(reqwest::Method::GET, "/v1/faults", None).await?;
        Ok(l.faults)
    }

    pub async fn renew(&self, id: &str, ttl: Option<Duration>) -> Result<FaultInfo, ClientError> {
        let body = serde_json::json!({ "ttl_ms": ttl.map(|t| t.as_millis() as u64) });
        self.call(
            reqwest::Method::POST,
            &format!("/v1/faults/{id}/renew"),
            Some(body),
        )
        .await
    }

    pub async fn heal(&self, id: &str) -> Result<FaultInfo, ClientError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/faults/{id}"), None)
            .await
    }

    /// Sets `service` to `replicas` replicas; answers once they are started and
    /// listed, or drained and stopped.
    pub async fn scale(&self, service: &str, replicas: u64) -> Result<Scaled, ClientError> {
        let body = serde_json::to_value(ScaleRequest {
            service: service.to_owned(),
            replicas,
        })
        .expect("scale requests serialise");
        self.call(reqwest::Method::POST, "/v1/scale", Some(body))
            .await
    }

    pub async fn heal_all(&self) -> Result<Vec<FaultInfo>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Healed {
            healed: Vec<FaultInfo>,
        }
        let h: Healed = self
            .call(reqwest::Method::DELETE, "/v1/faults", None)
            .await?;
        Ok(h.healed)
    }
}

impl AgentClient {
    pub async fn proxies(&self) -> Result<Vec<ProxyView>, ClientError> {
        #[derive(serde::Deserialize)]
        struct List {
            proxies: Vec<ProxyView>,
        }
        let l: List = self.call(reqwest::Method::GET, "/v1/proxies", None).await?;
        Ok(l.proxies)
    }

    pub async fn create_proxy(&self, proxy: &NewProxy) -> Result<ProxyView, ClientError> {
        let body = serde_json::to_value(proxy).expect("proxies serialise");
        self.call(reqwest::Method::POST, "/v1/proxies", Some(body))
            .await
    }

    pub async fn update_proxy(
        &self,
        name: &str,
        update: &ProxyUpdate,
    ) -> Result<ProxyView, ClientError> {
        let body = serde_json::to_value(update).expect("updates serialise");
        self.call(
            reqwest::Method::PATCH,
            &format!("/v1/proxies/{name}"),
            Some(body),
        )
        .await
    }

    pub async fn delete_proxy(&self, name: &str) -> Result<ProxyView, ClientError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/proxies/{name}"),
            None,
        )
        .await
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
