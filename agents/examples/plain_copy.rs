//! A baseline for `bench/proxy.sh`: a TCP proxy that is tokio's `copy_bidirectional` and
//! nothing else, to tell the fault proxy's own cost from the runtime's.
//! `cargo run --release -p faultline-agent --example plain_copy -- LISTEN TARGET`.
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (listen, target) = (args.next().unwrap(), args.next().unwrap());
    let l = TcpListener::bind(&listen).await?;
    loop {
        let (mut c, _) = l.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&target).await.unwrap();
            let _ = c.set_nodelay(true);
            let _ = s.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
        });
    }
}
