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

/// Builds a bound, listening, non-blocking socket with `SO_REUSEPORT` and `SO_REUSEADDR`,
/// and `TCP_NODELAY`, which every accepted connection inherits (so the accept path sets
/// nothing per connection; a test below holds the kernel to it).
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn accepted_connections_inherit_nodelay() {
        let l = super::bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let accepted = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection to accept");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(
            accepted.nodelay().unwrap(),
            "accepted socket lacks TCP_NODELAY"
        );
        // The connecting side is a plain socket: the flag is not a default.
        assert!(!client.nodelay().unwrap());
    }
}
