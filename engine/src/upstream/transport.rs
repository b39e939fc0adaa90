//! A backend connection as a *transport*, not a socket: what the request path reads from
//! and writes to, what the pool holds, and what moves between shards.
//!
//! [`Transport`] is plain TCP or TLS (a rustls session over the TCP stream). An HTTP/2
//! connection runs `h2` over an [`H2Io`] handle to a `Transport` and is shared
//! (`h2conns.rs`); idle, it sits in the same pool as HTTP/1.1 connections ([`Pooled`])
//! and moves between shards whole ([`Handover`]). Everything above it — bodies,
//! relays, the idle health check, the takeover hand-over — goes through its methods, so
//! a new variant is added here and nowhere else:
//!
//! - reading and writing: `AsyncRead`/`AsyncWrite`; full duplex by lending it to a
//!   [`Duplex`](crate::duplex::Duplex), never by duplicating the fd;
//! - [`Transport::idle_is_healthy`]: TCP peeks for EOF or unsolicited bytes; TLS
//!   consumes and accepts session tickets; HTTP/2 answers with a PING and a deadline;
//! - [`Transport::detach`] / [`Transport::attach`]: the fd plus the transport's own
//!   state ([`Moved`]), which is all that crosses shards in a `Grant`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
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
/// records not yet read). An HTTP/2 connection's HPACK tables, settings and windows travel
/// around it, in the `h2` connection ([`Handover::H2`]).
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

impl crate::splice::SpliceEnd for Transport {
    fn with_tcp<T>(&mut self, f: impl FnOnce(&mut TcpStream) -> T) -> Option<T> {
        match self {
            Transport::Tcp(s) => Some(f(s)),
            Transport::Tls(_) => None,
        }
    }
}

impl Transport {
    /// Opens a plain TCP connection (with `TCP_NODELAY`).
    pub async fn connect_tcp(addr: std::net::SocketAddr, timeout: Duration) -> io::Result<Self> {
        Transport::connect_tcp_with(addr, timeout, &[]).await
    }

    /// Opens a TCP connection and writes `preface` on it first (a PROXY protocol header,
    /// which comes before anything else, TLS included), all within `timeout`.
    pub async fn connect_tcp_with(
        addr: std::net::SocketAddr,
        timeout: Duration,
        preface: &[u8],
    ) -> io::Result<Self> {
        let started = glommio::clock::now();
        let mut stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)?;
        let _ = stream.set_nodelay(true);
        if !preface.is_empty() {
            let left = timeout.saturating_sub(started.elapsed());
            let _ = stream.set_write_timeout(Some(left.max(Duration::from_millis(1))));
            stream.write_all(preface).await?;
            let _ = stream.set_write_timeout(None);
        }
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
        preface: &[u8],
    ) -> io::Result<Self> {
        let started = glommio::clock::now();
        let Transport::Tcp(tcp) = Transport::connect_tcp_with(addr, timeout, preface).await? else {
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

    /// What the ring already took from the socket, without a system call: bytes
    /// (`Unsolicited`), only an end (`Closed`), or nothing (`Quiet`; the socket itself is
    /// not looked at). For the checks that skip [`Transport::idle_peek`]'s `recv`. TLS:
    /// `Quiet` (its records are read and judged by `idle_peek`).
    pub fn held_peek(&self) -> fd::IdlePeek {
        match self {
            Transport::Tcp(s) => fd::held_peek(s),
            Transport::Tls(_) => fd::IdlePeek::Quiet,
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
/// Boxed once when it is made (or adopted after a takeover): the pool and the lease pass
/// the box, so the several moves of each request's checkout and give-back are pointers,
/// not copies of the stream's state.
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
    /// It began with a PROXY protocol header naming one client (`send-proxy`): it carries
    /// that client's identity, so it never goes back to a pool (nor to another shard); it
    /// stays private to that client connection and closes with it.
    pub private: bool,
}

/// An idle connection in a shard's pool: an HTTP/1.1 connection (plain or TLS), or an
/// HTTP/2 connection with no open stream (see `h2conns.rs`). Both live in the same
/// `IdlePool`, so purge, limits, server-down, the published idle counts and the takeover
/// protocol are the same code for both.
pub enum Pooled {
    H1(Box<BackendConn>),
    H2(std::rc::Rc<super::h2conns::H2Conn>),
}

/// A pooled connection and when it entered the pool.
pub struct IdleConn {
    pub conn: Pooled,
    pub since: Instant,
}

impl IdleConn {
    /// An idle HTTP/1.1 connection.
    pub fn new(conn: Box<BackendConn>) -> IdleConn {
        IdleConn {
            conn: Pooled::H1(conn),
            since: glommio::clock::now(),
        }
    }

    /// An HTTP/2 connection whose last stream ended.
    pub fn h2(conn: std::rc::Rc<super::h2conns::H2Conn>) -> IdleConn {
        IdleConn {
            conn: Pooled::H2(conn),
            since: glommio::clock::now(),
        }
    }

    /// Whether it can still carry a request: the TCP peek (or TLS records) of an
    /// HTTP/1.1 connection; for HTTP/2, that no GOAWAY or error ended it (its PING
    /// health check runs separately).
    pub fn is_healthy(&mut self) -> bool {
        match &mut self.conn {
            Pooled::H1(c) => c.transport.idle_is_healthy(),
            Pooled::H2(c) => !c.is_dead(),
        }
    }
}

/// What a `Grant` carries from the owner to the taker: a detached HTTP/1.1 transport, or
/// an idle HTTP/2 connection whole (its detached transport inside its `h2` state).
pub enum Handover {
    H1(Moved),
    H2(Box<super::h2conns::H2Moved>),
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handover::H1(m) => f.debug_tuple("H1").field(m).finish(),
            Handover::H2(_) => f.write_str("H2(..)"),
        }
    }
}

/// The IO object under an `h2` client connection: a handle to a transport that can be
/// detached from this shard and attached on another while the `h2` state that owns the
/// handle stays whole. `h2` owns its IO and never gives it back, so the connection keeps
/// one handle and `H2Conn` another; the state moves between the two forms only between
/// two polls of the connection (the driver task is not running), on the shard that holds
/// it. The lock is never contended (one shard touches it at a time): `try_lock` only.
#[derive(Clone)]
pub struct H2Io(Arc<std::sync::Mutex<IoState>>);

enum IoState {
    Attached(crate::fd::ThreadBound<Transport>),
    Detached(Moved),
    /// Between the two, or after a failed attach: every read and write fails.
    Gone,
}

fn not_here() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the HTTP/2 connection's transport is not attached to this shard",
    )
}

impl H2Io {
    pub fn new(t: Transport) -> H2Io {
        H2Io(Arc::new(std::sync::Mutex::new(IoState::Attached(
            crate::fd::ThreadBound::new(t),
        ))))
    }

    fn with<R>(&self, f: impl FnOnce(&mut IoState) -> R) -> Option<R> {
        let mut g = self.0.try_lock().ok()?;
        Some(f(&mut g))
    }

    fn with_transport<R>(&self, f: impl FnOnce(&mut Transport) -> io::Result<R>) -> io::Result<R> {
        self.with(|st| match st {
            IoState::Attached(tb) => match tb.get_mut() {
                Some(t) => f(t),
                None => Err(not_here()),
            },
            _ => Err(not_here()),
        })
        .unwrap_or_else(|| Err(io::Error::other("HTTP/2 transport busy")))
    }

    /// Makes the coming close an RST (connections closed by policy).
    pub fn arm_reset(&self) {
        let _ = self.with_transport(|t| {
            t.arm_reset();
            Ok(())
        });
    }

    /// Detaches the transport for a hand-over (the duplicate fd is made first: on failure
    /// the transport stays attached and usable here).
    pub fn detach(&self) -> io::Result<()> {
        self.with(|st| {
            let IoState::Attached(tb) = std::mem::replace(st, IoState::Gone) else {
                return Err(not_here());
            };
            let t = match tb.into_inner() {
                Ok(t) => t,
                Err(tb) => {
                    *st = IoState::Attached(tb);
                    return Err(not_here());
                }
            };
            match t.detach() {
                Ok(m) => {
                    *st = IoState::Detached(m);
                    Ok(())
                }
                Err((t, e)) => {
                    *st = IoState::Attached(crate::fd::ThreadBound::new(t));
                    Err(e)
                }
            }
        })
        .unwrap_or_else(|| Err(io::Error::other("HTTP/2 transport busy")))
    }

    /// Binds a detached transport to this shard. Cannot fail but for a handle in the
    /// wrong state, which no hand-over produces (then every I/O on it fails, and the
    /// connection ends as if the server had closed it).
    pub fn attach(&self) {
        let _ = self.with(|st| {
            if let IoState::Detached(m) = std::mem::replace(st, IoState::Gone) {
                *st = IoState::Attached(crate::fd::ThreadBound::new(Transport::attach(m)));
            }
        });
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.with_transport(|t| match Pin::new(t).poll_read(cx, buf) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }) {
            Ok(Some(n)) => Poll::Ready(Ok(n)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.with_transport(|t| match Pin::new(t).poll_write(cx, buf) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }) {
            Ok(Some(n)) => Poll::Ready(Ok(n)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.with_transport(|t| match Pin::new(t).poll_flush(cx) {
            Poll::Ready(r) => r.map(|()| true),
            Poll::Pending => Ok(false),
        }) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.with_transport(|t| match Pin::new(t).poll_close(cx) {
            Poll::Ready(r) => r.map(|()| true),
            Poll::Pending => Ok(false),
        }) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
