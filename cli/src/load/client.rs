//! The lean client path: one HTTP/1.1 connection per worker, kept alive, rebuilt after an
//! error; no pool, no per-request channel. This is what lets one core drive tens of
//! thousands of requests a second.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::stats::ErrorKind;

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub authority: String,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

/// One request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Req {
    #[serde(with = "super::wire::method")]
    pub method: Method,
    pub path_and_query: String,
    #[serde(with = "super::wire::header_map")]
    pub headers: HeaderMap,
    #[serde(with = "super::wire::bytes_b64")]
    pub body: Bytes,
}

/// One worker's connection.
#[derive(Default)]
pub struct Conn {
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    driver: Option<JoinHandle<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

fn classify(e: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorKind::Connect,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                    ErrorKind::Reset
                }
                std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
                _ => ErrorKind::Other,
            };
        }
        cur = err.source();
    }
    ErrorKind::Other
}

impl Conn {
    async fn connect(&mut self, addr: SocketAddr) -> Result<(), ErrorKind> {
        let stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ErrorKind::Connect,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Connect,
        })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| classify(&e))?;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        // The connection's driver ends when the sender is dropped (or is aborted with
        // this `Conn`).
        self.driver = Some(tokio::spawn(async move {
            let _ = conn.await;
        }));
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads the whole answer: its status and body.
    pub async fn request(
        &mut self,
        ep: &Endpoint,
        t: &Req,
    ) -> Result<(StatusCode, Bytes), ErrorKind> {
        let result = tokio::time::timeout(ep.timeout, self.exchange(ep, t)).await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                // The connection may still carry the late answer: start a fresh one.
                self.sender = None;
                Err(ErrorKind::Timeout)
            }
        }
    }

    async fn exchange(&mut self, ep: &Endpoint, t: &Req) -> Result<(StatusCode, Bytes), ErrorKind> {
        let ready = match self.sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            self.connect(ep.addr).await?;
        }
        let sender = self.sender.as_mut().expect("connected above");
        let mut req = Request::builder()
            .method(t.method.clone())
            .uri(t.path_and_query.as_str())
            .header(hyper::header::HOST, ep.authority.as_str());
        for (k, v) in &t.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(t.body.clone()))
            .map_err(|_| ErrorKind::Other)?;
        let resp = sender.send_request(req).await.map_err(|e| classify(&e))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| classify(&e))?;
        Ok((status, body.to_bytes()))
    }
}
