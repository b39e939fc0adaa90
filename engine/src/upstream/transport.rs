//! A backend connection as a *transport*, not a socket: what the request path reads from
//! and writes to, what the pool holds, and what moves between shards.
//!
//! [`Transport`] is plain TCP or TLS (a rustls session over the TCP stream). An HTTP/2
//! connection runs `h2` over a `Transport` and is shared, so it lives beside the pool
//! (`h2conns.rs`) rather than being a variant; a variant may come with its takeover. Everything above it — bodies,
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
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use ringway_pool::ServerId;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::fd::{self, DetachedFd};
use crate::tls::TlsStream;

/// The byte stream to one backend server.
pub enum Transport {
    Tcp(TcpStream),
    /// HTTP/1.1 over TLS: a rustls client session over the TCP stream.
    Tls(Box<TlsStream<ClientConnection>>),
}

/// A transport detached from its shard: the socket and whatever protocol state must
/// travel with it (none for TCP; for TLS the rustls session — keys, sequence numbers,
/// records not yet read; an HTTP/2 connection's HPACK tables, settings and windows later).
pub struct Moved {
    fd: DetachedFd,
    tls: Option<Box<ClientConnection>>,
}

impl std::fmt::Debug for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moved")
            .field("fd", &self.fd)
            .field("tls", &self.tls.is_some())
            .finish()
    }
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

    /// Opens a TCP connection and runs a TLS handshake on it, verifying the server as
    /// `name`; both bounded by `timeout`. With `h2`, the server must have chosen ALPN `h2`.
    pub async fn connect_tls(
        addr: std::net::SocketAddr,
        timeout: Duration,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        h2: bool,
    ) -> io::Result<Self> {
        let started = Instant::now();
        let Transport::Tcp(tcp) = Transport::connect_tcp(addr, timeout).await? else {
            return Err(io::Error::other("connect_tcp gave a TLS stream"));
        };
        let conn = ClientConnection::new(config, name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut tls = TlsStream::from_parts(tcp, conn);
        let left = timeout.saturating_sub(started.elapsed());
        glommio::timer::timeout(left.max(Duration::from_millis(1)), async {
            Ok(tls.handshake().await)
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        if h2 && tls.session().alpn_protocol() != Some(b"h2") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server did not agree to HTTP/2 (ALPN h2) over TLS",
            ));
        }
        Ok(Transport::Tls(Box::new(tls)))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tcp(s) => s,
            Transport::Tls(t) => t.tcp(),
        }
    }

    /// Bounds every read and write (`None`: no bound, for a pooled idle connection).
    pub fn set_timeouts(&self, t: Option<Duration>) {
        let s = self.tcp();
        let _ = s.set_read_timeout(t);
        let _ = s.set_write_timeout(t);
    }

    /// Whether an idle connection can carry another request: the server has not closed
    /// it, reset it or sent anything unasked. For TLS, records that arrived meanwhile are
    /// read and processed: session tickets (TLS 1.3 servers send them unasked) are fine;
    /// application data, a close_notify, an alert or EOF are not.
    pub fn idle_is_healthy(&mut self) -> bool {
        self.idle_peek() == fd::IdlePeek::Quiet
    }

    /// Like [`Transport::idle_is_healthy`], saying what was found.
    pub fn idle_peek(&mut self) -> fd::IdlePeek {
        match self {
            Transport::Tcp(s) => fd::idle_peek(s),
            Transport::Tls(t) => t.idle_peek(),
        }
    }

    /// Makes the coming close an RST (connections closed by policy).
    pub fn arm_reset(&self) {
        fd::set_linger_zero(self.tcp());
    }

    /// Detaches the transport from this shard for a hand-over. On failure it comes back
    /// untouched and still usable here (the hand-over never costs a healthy connection).
    #[allow(clippy::result_large_err)] // the stream itself comes back, on a path taken at the fd limit only
    pub fn detach(self) -> Result<Moved, (Transport, io::Error)> {
        match self {
            Transport::Tcp(s) => match fd::detach(s) {
                Ok(fd) => Ok(Moved { fd, tls: None }),
                Err((s, e)) => Err((Transport::Tcp(s), e)),
            },
            Transport::Tls(t) => {
                let (tcp, conn) = t.into_parts();
                match fd::detach(tcp) {
                    Ok(fd) => Ok(Moved {
                        fd,
                        tls: Some(Box::new(conn)),
                    }),
                    Err((tcp, e)) => Err((
                        Transport::Tls(Box::new(TlsStream::from_parts(tcp, conn))),
                        e,
                    )),
                }
            }
        }
    }

    /// Binds a moved transport to this shard. Cannot fail: after the fd left its owner,
    /// only I/O on the connection itself may (invariant I2).
    pub fn attach(m: Moved) -> Transport {
        let s = fd::attach(m.fd);
        let _ = s.set_nodelay(true);
        match m.tls {
            None => Transport::Tcp(s),
            Some(conn) => Transport::Tls(Box::new(TlsStream::from_parts(s, *conn))),
        }
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
            Transport::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
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
            Transport::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(t) => Pin::new(&mut **t).poll_close(cx),
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
