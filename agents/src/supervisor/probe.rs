//! The supervisor's readiness and health probe: `GET <path>` over a fresh connection.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// True when `GET path` on `addr` answers 2xx within `timeout`.
pub async fn http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let probe = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        let req = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .ok()?;
        tokio::pin!(conn);
        let resp = tokio::select! {
            r = sender.send_request(req) => r.ok()?,
            _ = &mut conn => return None,
        };
        Some(resp.status().is_success())
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}
