//! A backend connection as a *transport*, not a socket: what the request path reads from
//! and writes to, what the pool holds, and what moves between shards.
//!
//! [`Transport`] is plain TCP today; TLS (a rustls session over the TCP stream) and an
//! HTTP/2 connection handle are the variants to come. Everything above it — bodies,
//! relays, the idle health check, the takeover hand-over — goes through its methods, so
//! a new variant is added here and nowhere else:
//!
//! - reading and writing: `AsyncRead`/`AsyncWrite`; full duplex by lending it to a
//!   [`Duplex`](crate::duplex::Duplex), never by duplicating the fd;
//! - [`Transport::idle_is_healthy`]: TCP peeks for EOF or unsolicited bytes; TLS will
//!   consume and accept session tickets; HTTP/2 will answer with a PING and a deadline;
//! - [`Transport::detach`] / [`Transport::attach`]: the fd plus the transport's own
//!   state ([`Moved`]), which is all that crosses shards in a `Grant`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use ringway_pool::ServerId;

use crate::fd::{self, DetachedFd};

/// The byte stream to one backend server.
pub enum Transport {
    Tcp(TcpStream),
}

/// A transport detached from its shard: the socket and whatever protocol state must
/// travel with it (none for TCP; a TLS session's secrets and sequence numbers, or an
/// HTTP/2 connection's HPACK tables, settings and windows, later).
#[derive(Debug)]
pub struct Moved {
    fd: DetachedFd,
}

impl Transport {
    /// Opens a plain TCP connection (with `TCP_NODELAY`).
    pub async fn connect_tcp(addr: std::net::SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)?;
        let _ = stream.set_nodelay(true);
        Ok(Transport::Tcp(stream))
    }

    /// Bounds every read and write (`None`: no bound, for a pooled idle connection).
    pub fn set_timeouts(&self, t: Option<Duration>) {
        match self {
            Transport::Tcp(s) => {
                let _ = s.set_read_timeout(t);
                let _ = s.set_write_timeout(t);
            }
        }
    }

    /// Whether an idle connection can carry another request: the server has not closed
    /// it, reset it or sent anything unasked.
    pub fn idle_is_healthy(&self) -> bool {
        match self {
            Transport::Tcp(s) => fd::idle_is_healthy(s),
        }
    }

    /// Like [`Transport::idle_is_healthy`], saying what was found.
    pub fn idle_peek(&self) -> fd::IdlePeek {
        match self {
            Transport::Tcp(s) => fd::idle_peek(s),
        }
    }

    /// Makes the coming close an RST (connections closed by policy).
    pub fn arm_reset(&self) {
        match self {
            Transport::Tcp(s) => fd::set_linger_zero(s),
        }
    }

    /// Detaches the transport from this shard for a hand-over. On failure it comes back
    /// untouched and still usable here (the hand-over never costs a healthy connection).
    #[allow(clippy::result_large_err)] // the stream itself comes back, on a path taken at the fd limit only
    pub fn detach(self) -> Result<Moved, (Transport, io::Error)> {
        match self {
            Transport::Tcp(s) => match fd::detach(s) {
                Ok(fd) => Ok(Moved { fd }),
                Err((s, e)) => Err((Transport::Tcp(s), e)),
            },
        }
    }

    /// Binds a moved transport to this shard. Cannot fail: after the fd left its owner,
    /// only I/O on the connection itself may (invariant I2).
    pub fn attach(m: Moved) -> Transport {
        let s = fd::attach(m.fd);
        let _ = s.set_nodelay(true);
        Transport::Tcp(s)
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// A connection to a backend server, owned by exactly one lease, the pool, or a message.
pub struct BackendConn {
    pub transport: Transport,
    /// The pool key's index (see `ringway_pool::KeyTable`).
    pub slot: ServerId,
    /// Requests carried so far (including the one in progress once it is sent).
    pub uses: u32,
    /// It has carried a request body (sticky). A backend that answered before reading a
    /// body may take the body for another request and answer that too, at any later
    /// time; no peek can rule that out. So such a connection never goes back to a pool
    /// (or to another shard): it stays private to the client connection whose body it
    /// carried, and closes with it. Only that client can then get a shifted answer.
    pub carried_body: bool,
}

/// A pooled connection and when it entered the pool.
pub struct IdleConn {
    pub conn: BackendConn,
    pub since: Instant,
}

impl IdleConn {
    pub fn new(conn: BackendConn) -> IdleConn {
        IdleConn {
            conn,
            since: Instant::now(),
        }
    }
}
