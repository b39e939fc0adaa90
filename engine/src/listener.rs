//! Listening sockets: one `SO_REUSEPORT` listener per shard per address, built with
//! `socket2` so the backlog and options are ours, then handed to glommio.
//!
//! With port 0, the first shard's bind picks the port and the others bind that same port,
//! so every shard serves one address. This module owns the only `unsafe` on the accept
//! side: turning a listening fd into a glommio listener.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

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

/// Moves a listening std socket onto the current glommio executor.
pub fn into_glommio(l: std::net::TcpListener) -> glommio::net::TcpListener {
    let fd = l.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` from a listening TCP socket we own;
    // nothing else refers to it, so glommio becomes its single owner and closes it on drop.
    unsafe { glommio::net::TcpListener::from_raw_fd(fd) }
}
