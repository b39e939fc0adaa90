//! The accept layer: every client connection starts here, above both fronts.
//!
//! [`accept_loop`] accepts on one listener (refusing with 503 over
//! `--max-conns-per-shard`), and [`serve`] decides which front a connection belongs to
//! before either sees it: on a TLS listener by the handshake's ALPN (`h2` or
//! `http/1.1`), on a plain one by sniffing the first bytes for the HTTP/2 preface (h2c
//! with prior knowledge). The bytes read for that decision are handed to the front,
//! never read twice. Both fronts see a [`ClientStream`], plain or TLS.

pub mod h1;
pub mod h2;
mod proxy;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::io::AsRawFd;

use crate::exchange::ClientAddr;
use std::rc::Rc;
use std::time::Duration;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use ringway_h2mux::server::PREFACE;
use ringway_http1 as http1;
use rustls::{ServerConfig, ServerConnection};

use crate::buf::Buf;
use crate::ctx::{Counted, ShardCtx};
use crate::tls::TlsStream;

/// A client connection as the fronts see it: plain TCP, or TLS terminated here.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<ServerConnection>>),
}

impl crate::splice::SpliceEnd for ClientStream {
    fn with_tcp<T>(&mut self, f: impl FnOnce(&mut TcpStream) -> T) -> Option<T> {
        match self {
            ClientStream::Plain(s) => Some(f(s)),
            ClientStream::Tls(_) => None,
        }
    }
}

impl ClientStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(t) => t.tcp(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The value of `X-Forwarded-Proto` for requests on this connection.
    pub fn proto(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = self.tcp().set_read_timeout(t);
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) {
        let _ = self.tcp().set_write_timeout(t);
    }

    /// Waits, without a buffer, until a read would not block (bytes, EOF, an error),
    /// bounded by the read timeout (expiry: `ErrorKind::TimedOut`).
    pub async fn readable(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.readable().await,
            ClientStream::Tls(t) => t.readable().await,
        }
    }
}

/// What [`ClientStream::poll_hangup`] learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// The client closed its connection (FIN or reset): nobody waits for the answer.
    Gone,
    /// Bytes are waiting to be read (a request body, a pipelined request): whether the
    /// client is still there cannot be told without reading them.
    Unknown,
}

impl ClientStream {
    /// Ready once the socket is readable while a request waits for its answer: whether
    /// the client hung up ([`Hangup::Gone`]) or sent more ([`Hangup::Unknown`]). Pending
    /// (and woken when something arrives) while nothing came. Reads nothing: the bytes
    /// stay for the front. Arms no read timeout (one armed before and passed: `Unknown`).
    pub fn poll_hangup(&mut self, cx: &mut Context<'_>) -> Poll<Hangup> {
        // The wait must not arm the read timeout: a deadline set now would stay armed
        // for the front's next wait (glommio keeps the first one), ending the keep-alive
        // wait after the next request early.
        let timeout = self.tcp().read_timeout();
        let _ = self.tcp().set_read_timeout(None);
        let ready = match self {
            ClientStream::Plain(s) => s.poll_readable(cx),
            ClientStream::Tls(t) => t.poll_tcp_readable(cx),
        };
        let _ = self.tcp().set_read_timeout(timeout);
        match ready {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                Poll::Ready(Hangup::Unknown)
            }
            Poll::Ready(Err(_)) => Poll::Ready(Hangup::Gone),
            Poll::Ready(Ok(())) => {
                // Bytes (or the EOF) the ring already took from the socket: a peek
                // would not see them (and could see the FIN behind queued bytes).
                match self.tcp().rx_buffered() {
                    Some(true) => return Poll::Ready(Hangup::Unknown),
                    Some(false) if !self.is_tls() => return Poll::Ready(Hangup::Gone),
                    _ => {}
                }
                Poll::Ready(peer_hung_up(self.tcp().as_raw_fd(), self.is_tls()))
            }
        }
    }
}

/// Whether the peer of the readable socket `fd` closed it. Plain TCP: a peek at the next
/// byte says EOF (or a reset) apart from data. TLS: the close_notify record arrives just
/// before the FIN, so the socket's "peer shut down" flag (`POLLRDHUP`) decides.
fn peer_hung_up(fd: std::os::unix::io::RawFd, tls: bool) -> Hangup {
    if tls {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one initialised pollfd on the stack, nfds 1, no wait; `fd` is the open
        // socket of a stream borrowed for this call.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        let gone = n == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
        return if gone { Hangup::Gone } else { Hangup::Unknown };
    }
    let mut byte = 0u8;
    // SAFETY: a 1-byte buffer on the stack, valid for the call; MSG_PEEK leaves the byte
    // in the socket, MSG_DONTWAIT never blocks; `fd` is the open socket borrowed above.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Hangup::Gone,
        n if n > 0 => Hangup::Unknown,
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Hangup::Unknown,
            _ => Hangup::Gone,
        },
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    /// Half-closes (TLS: close_notify first).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_close(cx),
            ClientStream::Tls(t) => Pin::new(&mut **t).poll_close(cx),
        }
    }
}

/// Accepts clients on one listener until the task is dropped (shard draining). With
/// `tls`, each connection is a TLS client (this shard's config: shared certificates and
/// ticket keys, its own session cache).
pub async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener, tls: Option<Arc<ServerConfig>>) {
    // A connection's local address is the listener's when that is bound to one IP
    // address (not a wildcard): learned once here instead of by a `getsockname` per
    // connection. The peer's comes with the accept (no `getpeername`).
    let local = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        match listener.accept_with_peer().await {
            Ok((stream, peer)) => {
                ctx.metrics.borrow_mut().c.accepted += 1;
                if ctx.load.client_conns.get() as usize >= ctx.config().max_conns_per_shard
                    || ctx.upstreams.fds_exhausted()
                {
                    ctx.metrics.borrow_mut().c.refused_capacity += 1;
                    glommio::spawn_local(refuse(stream)).detach();
                    continue;
                }
                let addrs = Addrs { peer, local };
                glommio::spawn_local(serve(ctx.clone(), stream, addrs, tls.clone())).detach();
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                ctx.warn.warn(ctx.id, "accept failed", &io::Error::from(e));
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn refuse(mut stream: TcpStream) {
    let mut out = Vec::new();
    http1::write_error(503, true, &mut out);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out).await;
}

/// The protocol a connection speaks, as far as its first bytes tell.
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    Http1,
    /// It opened with the HTTP/2 preface (or closed before it could say).
    Http2,
    /// It opened with the preface's request line, `PRI * HTTP/2.0`, and then broke the
    /// preface (or stalled): an HTTP/2 client, so an HTTP/2 connection error
    /// (GOAWAY(PROTOCOL_ERROR), RFC 9113 §3.4), not an HTTP/1.1 answer.
    BrokenPreface,
    /// Nothing arrived (closed, or idle past `--timeout-client-idle`).
    Nothing,
}

/// The request line the HTTP/2 preface starts with; no HTTP/1.x request starts so.
const PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";

/// What a server says to a connection whose HTTP/2 preface is broken: its own (empty)
/// SETTINGS, which must come first, then GOAWAY(last stream 0, PROTOCOL_ERROR).
const GOAWAY_PROTOCOL_ERROR: &[u8] = &[
    0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS, empty
    0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes, stream 0
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 1, // PROTOCOL_ERROR
];

/// Whether `data` so far could still become the HTTP/2 preface.
fn could_be_preface(data: &[u8]) -> bool {
    let n = data.len().min(PREFACE.len());
    n > 0 && data[..n] == PREFACE[..n]
}

/// Serves one client connection to its end, in the front its first bytes (or its TLS
/// handshake) call for.
/// A connection's addresses as far as the accept layer knows them without asking the
/// kernel (`None`: ask).
#[derive(Clone, Copy)]
pub struct Addrs {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

pub async fn serve(
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    addrs: Addrs,
    tls: Option<Arc<ServerConfig>>,
) {
    let conn = Counted::new(&ctx, |l| &l.client_conns);
    let Some((stream, client, early)) = Box::pin(prelude(ctx.clone(), stream, addrs)).await else {
        return;
    };
    // Each phase's future is boxed for that phase only (the prelude, the sniff, the
    // HTTP/2 front), so the task itself holds a counter, a pointer and little else. An
    // HTTP/1.1 connection gets a task of its own (`h1::spawn`) and this one ends: an idle
    // keep-alive connection is one allocation, its task, and nothing of the phases
    // before it.
    if let Some(config) = tls {
        return Box::pin(serve_tls(conn, ctx, stream, client, config, early)).await;
    }
    let (stream, buf, sniffed) = Box::pin(sniff(ctx.clone(), stream, early)).await;
    match sniffed {
        Sniffed::Nothing => {}
        Sniffed::Http1 => h1::spawn(conn, ctx, ClientStream::Plain(stream), client, buf),
        Sniffed::Http2 => {
            let first = buf.data().to_vec();
            drop(buf);
            Box::pin(h2::serve(ctx, ClientStream::Plain(stream), client, first)).await;
            // Counted until the front is done (a binding of its own would be a second
            // slot in this future).
            drop(conn);
        }
        Sniffed::BrokenPreface => {
            drop(buf);
            Box::pin(broken_preface(ctx, stream, client.src.ip())).await
        }
    }
}

/// A connection that opened with `PRI * HTTP/2.0` and broke the preface: SETTINGS and
/// GOAWAY(PROTOCOL_ERROR), counted (boxed by the caller, so the accept layer's own future
/// stays small).
async fn broken_preface(ctx: Rc<ShardCtx>, mut stream: TcpStream, peer: IpAddr) {
    {
        let mut m = ctx.metrics.borrow_mut();
        m.c.bad_request += 1;
        m.c.h2_conn_errors += 1;
    }
    tracing::debug!(%peer, "broken HTTP/2 preface: GOAWAY(PROTOCOL_ERROR)");
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(GOAWAY_PROTOCOL_ERROR).await;
}

/// What comes before a front: the peer's address and, with
/// `--accept-proxy`, the PROXY header (the balancer in front names the client first; the
/// bytes read past its header are the client's and go to whatever reads next). `None`:
/// the header was bad and the connection is closed (counted).
async fn prelude(
    ctx: Rc<ShardCtx>,
    mut stream: TcpStream,
    addrs: Addrs,
) -> Option<(TcpStream, ClientAddr, Vec<u8>)> {
    // No per-connection `TCP_NODELAY`: the listener has it (`listener::bind_reuseport`)
    // and Linux copies it to every connection accepted from it, which saved a
    // `setsockopt` per connection.
    crate::fd::delay_acks(&stream);
    let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let mut client = ClientAddr {
        src: match addrs.peer {
            Some(a) => a,
            None => stream.peer_addr().unwrap_or(unspecified),
        },
        dst: match addrs.local {
            Some(a) => a,
            None => stream.local_addr().unwrap_or(unspecified),
        },
    };
    let peer = client.src.ip();
    let mut early = Vec::new();
    if ctx.config().accept_proxy {
        let timeout = ctx.config().timeouts.client_head;
        match proxy::read_header(&mut stream, timeout).await {
            Ok((p, rest)) => {
                if let Some(src) = p.source {
                    client.src = src;
                }
                if let (Some(_), Some(dst)) = (p.source, p.dest) {
                    client.dst = dst;
                }
                early = rest;
            }
            Err(why) => {
                ctx.metrics.borrow_mut().c.proxy_header_errors += 1;
                tracing::debug!(%peer, ?why, "connection without a valid PROXY header closed");
                return None;
            }
        }
    }
    Some((stream, client, early))
}

/// The TLS handshake (bounded by `--timeout-client-head`), then the front ALPN chose.
/// A handshake that fails (not TLS, no common protocol or cipher, a stalled or truncated
/// client) closes the connection, after the alert rustls queued, and is counted.
async fn serve_tls(
    counted: Counted,
    ctx: Rc<ShardCtx>,
    stream: TcpStream,
    client: ClientAddr,
    config: Arc<ServerConfig>,
    early: Vec<u8>,
) {
    let peer = client.src.ip();
    let mut conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a TLS session");
            return;
        }
    };
    // Bytes of the ClientHello that came with a PROXY header: rustls reads them first.
    let mut rd: &[u8] = &early;
    while !rd.is_empty() {
        match conn.read_tls(&mut rd) {
            Ok(0) | Err(_) => {
                ctx.metrics.borrow_mut().c.tls_handshake_errors += 1;
                return;
            }
            Ok(_) => {}
        }
    }
    let mut tls = TlsStream::from_parts(stream, conn);
    let t = ctx.config().timeouts.client_head;
    let _ = tls.tcp().set_read_timeout(Some(t));
    let _ = tls.tcp().set_write_timeout(Some(t));
    let done = glommio::timer::timeout(t, async { Ok(tls.handshake().await) }).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            ctx.metrics.borrow_mut().c.tls_handshake_errors += 1;
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            // The alert rustls queued goes out before the close (bounded: a client
            // that does not read gets none).
            let _ = glommio::timer::timeout(std::time::Duration::from_secs(1), async {
                Ok(tls.send_pending_records().await)
            })
            .await;
            return;
        }
        Err(_) => {
            ctx.metrics.borrow_mut().c.tls_handshake_errors += 1;
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    }
    let session = tls.session();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let resumed = matches!(
        session.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    {
        let mut m = ctx.metrics.borrow_mut();
        m.c.tls_handshakes += 1;
        if resumed {
            m.c.tls_resumed += 1;
        }
    }
    let stream = ClientStream::Tls(Box::new(tls));
    if h2 {
        Box::pin(h2::serve(ctx, stream, client, Vec::new())).await;
        drop(counted);
    } else {
        h1::spawn(counted, ctx, stream, client, Buf::new())
    }
}

/// Reads the first bytes: until they are not the start of the HTTP/2 preface, or are
/// all of it. The wait for the first byte is up to `--timeout-client-idle` and holds no
/// buffer (one is taken when bytes are there), the rest of a preface up to
/// `--timeout-client-head`. `early` are bytes already read (past a PROXY header). Gives
/// back the stream and the bytes read.
async fn sniff(
    ctx: Rc<ShardCtx>,
    mut stream: TcpStream,
    early: Vec<u8>,
) -> (TcpStream, Buf, Sniffed) {
    let mut buf = Buf::new();
    if !early.is_empty() {
        buf.put(&early);
    }
    drop(early);
    let sniffed = sniff_into(&ctx, &mut stream, &mut buf).await;
    (stream, buf, sniffed)
}

async fn sniff_into(ctx: &ShardCtx, stream: &mut TcpStream, buf: &mut Buf) -> Sniffed {
    let t = &ctx.config().timeouts;
    let _ = stream.set_read_timeout(Some(t.client_idle));
    // Bytes may be there already (read past a PROXY header).
    if buf.is_empty() {
        if stream.readable().await.is_err() {
            return Sniffed::Nothing;
        }
        match buf.fill_from(stream).await {
            Ok(0) | Err(_) => return Sniffed::Nothing,
            Ok(_) => {}
        }
    }
    let deadline = glommio::clock::now() + t.client_head;
    while could_be_preface(buf.data()) && buf.len() < PREFACE.len() {
        let left = deadline.saturating_duration_since(glommio::clock::now());
        if left.is_zero() {
            break;
        }
        let _ = stream.set_read_timeout(Some(left));
        match buf.fill_from(stream).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if could_be_preface(buf.data()) && buf.len() >= PREFACE.len() {
        Sniffed::Http2
    } else if buf.data().starts_with(PREFACE_LINE) {
        Sniffed::BrokenPreface
    } else {
        // Anything else (even a stalled `PRI * HT`) is answered by the HTTP/1.1 front
        // (400, 408 or 505) as it would any broken head.
        Sniffed::Http1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns, without calling it.
    fn future_size4<A, B, C, D, F: std::future::Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn future_size5<A, B, C, D, E, F: std::future::Future>(
        _: impl FnOnce(A, B, C, D, E) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// What a connection's tasks hold: the accept layer's future (the task of every
    /// connection until its front starts, and of an HTTP/2 one for its life) and the
    /// HTTP/1.1 front's (the task of an HTTP/1.1 connection, `h1::spawn`), each bounded
    /// so the per-request state (the exchange, boxed per request) cannot creep back into
    /// them unnoticed.
    #[test]
    fn connection_futures_stay_small() {
        let serve = future_size4(serve);
        let h1 = future_size5(h1::serve);
        let h2 = future_size4(h2::serve);
        eprintln!(
            "futures: serve {serve} bytes, h1::serve {h1}, h2::serve {h2}; in h1::serve: \
             ClientStream {}, Session {}, Trace {}, Buf {}",
            std::mem::size_of::<ClientStream>(),
            std::mem::size_of::<crate::exchange::Session>(),
            std::mem::size_of::<crate::trace::Trace>(),
            std::mem::size_of::<Buf>(),
        );
        // 432 in a debug build since the accept hands over the peer and local addresses
        // (`Addrs`, 64 bytes, saving two system calls per connection).
        assert!(serve <= 448, "the accept layer's future is {serve} bytes");
        assert!(
            h1 <= 1024,
            "the HTTP/1.1 front's future is {h1} bytes (release: 808)"
        );
    }

    #[test]
    fn preface_prefixes() {
        assert!(could_be_preface(b"PRI * HTTP/2.0\r\n"));
        assert!(could_be_preface(PREFACE));
        assert!(!could_be_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!could_be_preface(b"PRI * HTTP/1.1\r\n"));
        assert!(!could_be_preface(b""));
    }
}
