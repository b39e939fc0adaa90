//! What one request went through, as the access log and the metrics need it: when its
//! head was complete, where it was routed, how its backend connection was had (pooled,
//! taken over from another shard, or connected, and how long that took), when the first
//! response byte left for the client, the bytes each way, and how it ended.
//!
//! A [`Trace`] is plain `Cell`s owned by the task serving the request (kept for the life
//! of an HTTP/1.1 connection and reset per request, so nothing is allocated per request
//! there). The fronts and the exchange only *note* facts into it; what the facts mean —
//! the HAProxy-style timers and termination state, the metric each one feeds — is
//! decided once, when the front reports the request done (`ShardCtx::request_done`).
//! Nothing here does I/O of its own, and nothing here can fail.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use ringway_pool::ServerId;

use crate::metrics::ServerError;
use crate::upstream::{Acquired, Lease};

/// Which front a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Http1,
    Http2,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Front::Http1 => "h1",
            Front::Http2 => "h2c",
        }
    }
}

/// How the backend connection of a request was had, and how long that took.
#[derive(Debug, Clone, Copy)]
pub struct LeaseNote {
    pub how: Acquired,
    /// When the exchange asked for a connection.
    pub asked: Instant,
    /// When it had one.
    pub at: Instant,
}

impl LeaseNote {
    /// From asking for a connection to having one (takeover asks and connect included).
    /// Computed when read (the access log), not per request.
    pub fn took(&self) -> Duration {
        self.at.saturating_duration_since(self.asked)
    }
}

/// How a request ended, HAProxy's two-letter termination state: who ended it (`C`lient,
/// `S`erver, `P`roxy, `R`esource; lower case for a timeout) and at which stage
/// (`R`equest, `C`onnect, `H`eaders, `D`ata); `--` for a normal end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Term {
    #[default]
    Normal,
    /// The proxy answered itself (no route, a bad request): `PR`.
    ProxyRequest,
    /// Connect refused or reset: `SC`.
    ConnectRefused,
    /// Connect timed out: `sC`.
    ConnectTimeout,
    /// No connection could be had on our own limits (capacity, fds, injected fault): `RC`.
    Resource,
    /// The backend timed out before its response head: `sH`.
    ServerTimeout,
    /// The backend failed or sent garbage before its response head: `SH`.
    ServerHeaders,
    /// The backend's response broke after it started: `SD`.
    ServerData,
    /// The client went away before the response started: `CH`.
    ClientHeaders,
    /// The client went away while the response was sent: `CD`.
    ClientData,
    /// The client sent a broken request body (bad chunking): `PR`, the proxy refused it.
    BadBody,
}

impl Term {
    pub fn code(self) -> &'static str {
        match self {
            Term::Normal => "--",
            Term::ProxyRequest | Term::BadBody => "PR",
            Term::ConnectRefused => "SC",
            Term::ConnectTimeout => "sC",
            Term::Resource => "RC",
            Term::ServerTimeout => "sH",
            Term::ServerHeaders => "SH",
            Term::ServerData => "SD",
            Term::ClientHeaders => "CH",
            Term::ClientData => "CD",
        }
    }

    /// The backend error kind this termination counts as, for
    /// `ringway_server_errors_total{kind}`; `None` when the backend is not at fault.
    pub fn server_error(self) -> Option<ServerError> {
        match self {
            Term::ConnectRefused => Some(ServerError::Connect),
            Term::ConnectTimeout => Some(ServerError::ConnectTimeout),
            Term::Resource => Some(ServerError::Unavailable),
            Term::ServerTimeout => Some(ServerError::Timeout),
            Term::ServerHeaders => Some(ServerError::Response),
            Term::ServerData => Some(ServerError::Body),
            _ => None,
        }
    }
}

/// The facts noted about one request.
pub struct Trace {
    pub front: Front,
    pub client: Cell<IpAddr>,
    /// When the request head was complete.
    pub received: Cell<Instant>,
    /// When the wait for the request head began (for HTTP/1.1 keep-alive, the end of the
    /// previous exchange): [`Trace::tq`] is counted from it.
    pub head_started: Cell<Instant>,
    pub backend: Cell<Option<usize>>,
    pub slot: Cell<Option<ServerId>>,
    pub lease: Cell<Option<LeaseNote>>,
    /// When the first response byte was written to the client.
    pub first_byte: Cell<Option<Instant>>,
    /// Response bytes written to the client (head included).
    pub bytes_out: Cell<u64>,
    /// Request bytes sent to the backend (head included, a retry's too).
    pub bytes_in: Cell<u64>,
    pub term: Cell<Term>,
    /// `METHOD TARGET VERSION`, for the log line. Its store is a scratch vector taken
    /// from the shard's pool (`crate::buf::scratch`) when a request begins and given back
    /// by [`Trace::release`] (or the drop): an idle keep-alive connection holds none.
    pub request_line: RefCell<Vec<u8>>,
}

impl Trace {
    pub fn new(front: Front) -> Trace {
        Trace {
            front,
            client: Cell::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            received: Cell::new(glommio::clock::now()),
            head_started: Cell::new(glommio::clock::now()),
            backend: Cell::new(None),
            slot: Cell::new(None),
            lease: Cell::new(None),
            first_byte: Cell::new(None),
            bytes_out: Cell::new(0),
            bytes_in: Cell::new(0),
            term: Cell::new(Term::Normal),
            request_line: RefCell::new(Vec::new()),
        }
    }

    /// The request is reported: its request line's store goes back to the shard's pool
    /// (the HTTP/1.1 front keeps one `Trace` for the connection's life and calls this
    /// after each request, so the wait for the next one holds no store).
    pub fn release(&self) {
        let line = std::mem::take(&mut *self.request_line.borrow_mut());
        crate::buf::give_scratch(line);
    }

    /// A request head is complete: forget the previous request, note this one.
    /// `head_started` is when the wait for this head began.
    pub fn begin(
        &self,
        client: IpAddr,
        head_started: Instant,
        method: &[u8],
        target: &[u8],
        version: &str,
    ) {
        let now = glommio::clock::now();
        self.client.set(client);
        self.received.set(now);
        self.head_started.set(head_started);
        self.backend.set(None);
        self.slot.set(None);
        self.lease.set(None);
        self.first_byte.set(None);
        self.bytes_out.set(0);
        self.bytes_in.set(0);
        self.term.set(Term::Normal);
        let mut line = self.request_line.borrow_mut();
        if line.capacity() == 0 {
            // From the pool, not the allocator: no allocation per request.
            *line = crate::buf::scratch();
        }
        line.clear();
        // Bounded: a long target is cut in the log, never the request.
        line.extend_from_slice(&method[..method.len().min(32)]);
        line.push(b' ');
        line.extend_from_slice(&target[..target.len().min(1024)]);
        line.push(b' ');
        line.extend_from_slice(version.as_bytes());
    }

    /// Time to get the request head (for HTTP/1.1 keep-alive, including the idle time
    /// before it, as HAProxy's `Tq`). Computed when read (the access log), not per
    /// request.
    pub fn tq(&self) -> Duration {
        self.received
            .get()
            .saturating_duration_since(self.head_started.get())
    }

    /// Routing chose `backend`, and its server `slot`.
    pub fn routed(&self, backend: usize, slot: ServerId) {
        self.backend.set(Some(backend));
        self.slot.set(Some(slot));
    }

    /// The exchange got its backend connection (`asked` is when it asked for it).
    pub fn leased(&self, lease: &Lease, asked: Instant) {
        self.leased_as(lease.acquired(), asked);
    }

    /// The exchange got its backend connection (or, HTTP/2, a stream on one), had `how`.
    pub fn leased_as(&self, how: Acquired, asked: Instant) {
        let now = glommio::clock::now();
        self.lease.set(Some(LeaseNote {
            how,
            asked,
            at: now,
        }));
    }

    pub fn add_in(&self, n: usize) {
        self.bytes_in.set(self.bytes_in.get() + n as u64);
    }

    /// The response started (its head left for the client) now, if not before.
    pub fn response_started(&self) {
        if self.first_byte.get().is_none() {
            self.first_byte.set(Some(glommio::clock::now()));
        }
    }

    /// Bytes of a response the proxy made itself (not a first byte from the backend).
    pub fn add_local_out(&self, n: usize) {
        self.bytes_out.set(self.bytes_out.get() + n as u64);
    }

    pub fn add_out(&self, n: usize) {
        if n > 0 && self.first_byte.get().is_none() {
            self.first_byte.set(Some(glommio::clock::now()));
        }
        self.bytes_out.set(self.bytes_out.get() + n as u64);
    }

    /// The proxy answered the request itself (no route, a refused head).
    pub fn answered_locally(&self) {
        self.term.set(Term::ProxyRequest);
    }

    pub fn set_term(&self, term: Term) {
        self.term.set(term);
    }
}

impl Drop for Trace {
    /// An HTTP/2 stream's `Trace` ends with its stream: the store goes back to the pool.
    fn drop(&mut self) {
        self.release();
    }
}

/// A writer that notes in a [`Trace`] the bytes written through it and when the first
/// one was.
pub struct Metered<'t, W> {
    inner: W,
    trace: &'t Trace,
}

impl<'t, W> Metered<'t, W> {
    pub fn new(inner: W, trace: &'t Trace) -> Self {
        Metered { inner, trace }
    }
}

impl<W: crate::splice::SpliceEnd> crate::splice::SpliceEnd for Metered<'_, W> {
    fn with_tcp<T>(&mut self, f: impl FnOnce(&mut glommio::net::TcpStream) -> T) -> Option<T> {
        self.inner.with_tcp(f)
    }
    fn spliced(&mut self, n: usize) {
        self.trace.add_out(n);
        self.inner.spliced(n);
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Metered<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.trace.add_out(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A writer that adds the bytes written through it to a counter (request bodies going
/// up to the backend).
pub struct Counting<'c, W> {
    inner: W,
    count: &'c Cell<u64>,
}

impl<'c, W> Counting<'c, W> {
    pub fn new(inner: W, count: &'c Cell<u64>) -> Self {
        Counting { inner, count }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.count.set(self.count.get() + n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A reader that adds the bytes read through it to a counter (HTTP/2 response bodies,
/// counted as they come from the backend).
pub struct CountingRead<'c, R> {
    inner: R,
    count: &'c Cell<u64>,
}

impl<'c, R> CountingRead<'c, R> {
    pub fn new(inner: R, count: &'c Cell<u64>) -> Self {
        CountingRead { inner, count }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingRead<'_, R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.count.set(self.count.get() + n as u64);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request line's store exists only from `begin` to `release` (an idle HTTP/1.1
    /// connection keeps its `Trace`, and held 128 bytes in it between requests), and it
    /// comes from the shard's scratch pool, not a fresh allocation per request.
    #[test]
    fn request_line_store_lives_from_begin_to_release() {
        let t = Trace::new(Front::Http1);
        assert_eq!(
            t.request_line.borrow().capacity(),
            0,
            "no store before a request"
        );
        let begin = |target: &[u8]| {
            t.begin(
                "10.0.0.1".parse().unwrap(),
                Instant::now(),
                b"GET",
                target,
                "HTTP/1.1",
            )
        };
        begin(b"/first");
        assert_eq!(&t.request_line.borrow()[..], b"GET /first HTTP/1.1");
        let store = t.request_line.borrow().as_ptr();
        t.release();
        assert_eq!(
            t.request_line.borrow().capacity(),
            0,
            "released after the request"
        );
        // The next request takes the store just given back (the pool is per thread).
        begin(b"/second");
        assert_eq!(&t.request_line.borrow()[..], b"GET /second HTTP/1.1");
        assert_eq!(
            t.request_line.borrow().as_ptr(),
            store,
            "reused from the pool"
        );
        // A long target is cut in the line, and the store still goes back.
        let long = vec![b'a'; 4000];
        begin(&long);
        assert_eq!(t.request_line.borrow().len(), 3 + 1 + 1024 + 1 + 8);
        drop(t);
    }
}
