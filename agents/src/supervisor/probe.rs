//! The supervisor's readiness and health probes: `GET <path>` over a fresh connection,
//! a TCP connect, or a command that must exit 0. Each answers why it failed, so that a
//! replica that never becomes healthy is reported with its probe's last error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::command::{Bounded, Outcome, describe_exit};

/// What one probe runs, rendered for one replica.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    Http(String),
    Tcp,
    Exec {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
        timeout: Duration,
    },
    None,
}

impl Probe {
    /// Probes `addr`; `Err` says why it is not healthy.
    pub(crate) async fn check(&self, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        match self {
            Probe::Http(path) => http(addr, path, timeout).await,
            Probe::Tcp => match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
                Err(_) => Err(format!("connect to {addr}: no answer within {timeout:?}")),
            },
            Probe::Exec {
                argv,
                env,
                cwd,
                timeout,
            } => exec(argv, env, cwd, *timeout).await,
            Probe::None => Ok(()),
        }
    }

    /// Whether a passing probe shows that the replica listens on its address.
    pub(crate) fn reaches_the_address(&self) -> bool {
        matches!(self, Probe::Http(_) | Probe::Tcp)
    }
}

/// Ok when `GET path` on `addr` answers 2xx within `timeout`.
pub(crate) async fn http(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let probe = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let req = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        tokio::pin!(conn);
        let send = sender.send_request(req);
        tokio::pin!(send);
        // The connection must be driven for the request to go out. A server that answers
        // and closes at once ends the connection as the answer arrives: the answer is
        // still there to take.
        let resp = tokio::select! {
            biased;
            r = &mut send => r,
            _ = &mut conn => send.await,
        }
        .map_err(|e| format!("GET {path}: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("GET {path} answered {}", resp.status()))
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| Err(format!("GET {path}: no answer within {timeout:?}")))
}

/// Ok when the command exits 0 within `timeout` (see [`super::command`]).
async fn exec(
    argv: &[String],
    env: &[(String, String)],
    cwd: &std::path::Path,
    timeout: Duration,
) -> Result<(), String> {
    let run = Bounded {
        argv,
        env,
        cwd,
        timeout,
    };
    let shown = run.shown();
    let ran = run.run().await;
    let status = match ran.outcome {
        Outcome::Exited(status) if status.success() => return Ok(()),
        Outcome::Exited(status) => status,
        Outcome::TimedOut => return Err(format!("`{shown}` did not exit within {timeout:?}")),
        Outcome::NotStarted(e) | Outcome::WaitFailed(e) => return Err(format!("`{shown}`: {e}")),
    };
    let said = String::from_utf8_lossy(&[ran.stdout, ran.stderr].concat()).into_owned();
    let said = said.trim();
    let how = describe_exit(&status);
    if said.is_empty() {
        Err(format!("`{shown}` {how}"))
    } else {
        Err(format!(
            "`{shown}` {how}: {}",
            said.lines().last().unwrap_or(said)
        ))
    }
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
            assert!(http(ok, "/health", Duration::from_secs(2)).await.is_ok());
        }
        let bad = answer_and_close("503 Service Unavailable");
        assert_eq!(
            http(bad, "/health", Duration::from_secs(2)).await,
            Err("GET /health answered 503 Service Unavailable".into())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = http(closed, "/health", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            e.contains("connection refused") || e.contains("Connection refused"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_exec_probe_that_says_much_on_stderr_still_passes_in_time() {
        // 256 KiB on stderr, more than a pipe holds, while stdout stays open: read one
        // stream after the other, the probe would wait out its timeout.
        let argv: Vec<String> = ["sh", "-c", "head -c 262144 /dev/zero >&2; exit 0"]
            .map(String::from)
            .to_vec();
        let r = exec(&argv, &[], std::path::Path::new(""), Duration::from_secs(5)).await;
        assert_eq!(r, Ok(()), "not a timeout");
        let failing: Vec<String> = ["sh", "-c", "echo first; echo last >&2; exit 3"]
            .map(String::from)
            .to_vec();
        let e = exec(
            &failing,
            &[],
            std::path::Path::new(""),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e,
            "`sh -c echo first; echo last >&2; exit 3` exited with code 3: last"
        );
    }
}
