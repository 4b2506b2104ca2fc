//! `faultline worker`: serve as a load worker until SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::exit::Exit;

/// The environment variable that carries the workers' token, for both sides.
pub const TOKEN_ENV: &str = "FAULTLINE_WORKER_TOKEN";

/// Serve as a load worker: a controller (`faultline run --workers`, `faultline load
/// --workers`) gives it a segment of the load, starts it at the same instant as the
/// others and merges what it measures with theirs.
///
/// Examples:
///   faultline worker
///   FAULTLINE_WORKER_TOKEN=secret faultline worker --listen 0.0.0.0:7070
///   faultline load http://10.0.0.5:8080/ -r 20000 -d 1m \
///     --workers http://10.0.0.7:7070,http://10.0.0.8:7070
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Where the worker's API listens. Anything but loopback needs --token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Bearer token the API requires.
    #[arg(long, value_name = "TOKEN", env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// Exit (0) after this many jobs have run to their end, as a batch job's worker
    /// should (a Kubernetes Job's pods then complete); default: serve until stopped.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_jobs: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    if !args.listen.ip().is_loopback() && args.token.as_deref().is_none_or(str::is_empty) {
        eprintln!(
            "error: the worker API would listen on {}, which is not a loopback address, without a token: set one (--token or {TOKEN_ENV}), or listen on 127.0.0.1",
            args.listen
        );
        return Ok(Exit::BadInput);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", args.listen);
                return Ok(Exit::BadInput);
            }
        };
        let addr = listener
            .local_addr()
            .context("the listener has no address")?;
        let signals = faultline_agent::report::StopSignals::install()
            .context("cannot catch the stop signals")?;
        let shutdown = CancellationToken::new();
        let (server, mut finished) = crate::worker::serve(listener, args.token, shutdown.clone());
        let server = tokio::spawn(server);
        println!("ready: worker=http://{addr}");
        let enough = async {
            match args.max_jobs {
                Some(n) => {
                    let _ = finished.wait_for(|done| *done >= n).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = signals.wait() => eprintln!("{signal}: stopping the worker"),
            _ = enough => eprintln!("{} jobs run: stopping the worker", args.max_jobs.unwrap_or(0)),
        }
        shutdown.cancel();
        server
            .await
            .context("the worker's server failed")?
            .context("the worker's server failed")?;
        Ok(Exit::Success)
    })
}
