//! Free ports for replicas configured with port 0.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};

/// `n` distinct free ports on `host`. All listeners are held until every port is
/// known, so the kernel cannot hand the same port out twice; they are closed before
/// returning, and a replica that then finds its port taken is given another one.
pub(crate) fn free_ports(host: IpAddr, n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(SocketAddr::new(host, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}
