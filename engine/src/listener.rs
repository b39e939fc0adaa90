//! Listening sockets: one `SO_REUSEPORT` listener per shard per address, built with
//! `socket2` so the backlog and options are ours, then handed to glommio.
//!
//! With port 0, the first shard's bind picks the port and the others bind that same port,
//! so every shard serves one address. Handing the socket to glommio is `fd.rs`'s job
//! (the engine's only `unsafe`).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog of each shard's listener.
pub const BACKLOG: i32 = 4096;

/// Builds a bound, listening, non-blocking socket with `SO_REUSEPORT` and `SO_REUSEADDR`.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nodelay(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(sock.into())
}
