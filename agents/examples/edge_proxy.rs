//! One fault proxy, standalone: `cargo run --release -p faultline-agent --example
//! edge_proxy -- LISTEN TARGET`. Used by `bench/proxy.sh` to measure the proxy's cost
//! against a direct connection and against HAProxy; it prints `listening on ADDR`.

use std::net::SocketAddr;

use faultline_agent::proxy::EdgeProxy;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(target)) = (args.next(), args.next()) else {
        eprintln!("usage: edge_proxy LISTEN TARGET");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN is host:port");
    let target: SocketAddr = target.parse().expect("TARGET is host:port");
    let (proxy, listener) = EdgeProxy::bind("bench", "target-1", listen, target).await?;
    println!("listening on {}", proxy.listen);
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    proxy.run(listener, stop).await;
    Ok(())
}
