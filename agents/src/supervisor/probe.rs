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
        let send = sender.send_request(req);
        tokio::pin!(send);
        // The connection must be driven for the request to go out. A server that answers
        // and closes at once ends the connection as the answer arrives: the answer is
        // still there to take.
        let resp = tokio::select! {
            biased;
            r = &mut send => r.ok()?,
            _ = &mut conn => send.await.ok()?,
        };
        Some(resp.status().is_success())
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers one request per connection and closes, as simple servers do.
    fn answer_and_close(status: &'static str) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                );
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_2xx_answer_passes_even_when_the_server_closes_at_once() {
        let ok = answer_and_close("200 OK");
        for _ in 0..20 {
            assert!(http_ok(ok, "/health", Duration::from_secs(2)).await);
        }
        let bad = answer_and_close("503 Service Unavailable");
        assert!(!http_ok(bad, "/health", Duration::from_secs(2)).await);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!http_ok(closed, "/health", Duration::from_secs(2)).await);
    }
}
