//! The HTTP/1.1 front: read a client's requests one after another (pipelined ones in
//! order), route each, hand it to the [exchange](crate::exchange) with an
//! HTTP/1.1 body source and response sink, and answer what fails.
//!
//! This is the fast path and stays specialised behind the exchange: heads are rewritten
//! in place from the client's buffer (`ringway_http1::write_request_upstream`), a small
//! complete body travels in the same write as its head, chunked bodies are forwarded
//! verbatim, and a small response leaves in one write (head and first body bytes).
//! Each client connection is one task. Its two buffers (client side, backend side) and
//! its scratch vector for heads come from the shard's pool (`crate::buf`) when a request
//! arrives and go back when it is done, so a keep-alive connection waiting for its next
//! request holds none of them: it waits for readability without a buffer. The state of
//! one request (the exchange and everything under it) lives in one allocation made when
//! the head is complete, not in the connection's task. Every failure becomes a status the client can read or, once a response has
//! started, a closed connection; nothing here panics on what a peer sent.

use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ringway_http1::{self as http1, Framing, HeadError, RequestHead, ResponseHead};

use super::{ClientStream, Hangup};
use crate::body::{copy_body, copy_dechunked, CopyError};
use crate::buf::Buf;
use crate::ctx::{Counted, ShardCtx};
use crate::duplex::Duplex;
use crate::exchange::{
    self, BodyError, BodySource, ClientAddr, DeliverError, Failure, ResponseSink, Session,
};
use crate::splice::SpliceEnd;
use crate::trace::{Counting, Front, Metered, Trace};
use crate::upstream::Lease;

const VIA: &str = "1.1 ringway";
/// Pipelined requests served in a row from the buffer before the task yields.
const PIPELINE_SLICE: usize = 16;
/// Bodies up to this size are sent whole before the response is read.
const DUPLEX_ABOVE: u64 = 256 << 10;

/// Serves an HTTP/1.1 client connection whose first bytes are already in `buf` in a
/// task of its own (detached, as every connection task is), counted by `conn` until it
/// ends. Its own task, not a box in the accept layer's: an idle keep-alive connection is
/// then one allocation (the task: glommio's header and [`serve`]'s future), not two.
pub fn spawn(conn: Counted, ctx: Rc<ShardCtx>, stream: ClientStream, client: ClientAddr, buf: Buf) {
    glommio::spawn_local(serve(conn, ctx, stream, client, buf)).detach();
}

/// Serves an HTTP/1.1 client connection whose first bytes are already in `buf`.
///
/// Not an `async fn`: its future would keep the arguments (the stream, the address, the
/// buffer: about 260 bytes) for the connection's life beside the `Client` they were
/// moved into (rustc keeps an async fn's arguments in a part of its state that no other
/// state overlaps). Built first and captured by the block, the `Client` is there once.
pub fn serve(
    conn: Counted,
    ctx: Rc<ShardCtx>,
    stream: ClientStream,
    client: ClientAddr,
    buf: Buf,
) -> impl std::future::Future<Output = ()> {
    let mut c = Client {
        _conn: conn,
        ctx,
        stream,
        buf,
        out: Vec::new(),
        route_scratch: Vec::new(),
        session: Session::new(client),
        trace: Trace::new(Front::Http1),
    };
    async move {
        c.run().await;
        if c.stream.is_tls() {
            // End the TLS session with close_notify before the socket closes, whichever
            // side decided to close. Without it OpenSSL reads "unexpected eof" and marks
            // the session not resumable, so every OpenSSL client (curl, `s_time -reuse`,
            // other proxies) did a full handshake after each `Connection: close`
            // response. Bounded: a client that does not read gets no alert after a second.
            c.stream.set_write_timeout(Some(
                c.ctx.config().timeouts.client_idle.min(CLOSE_NOTIFY_WAIT),
            ));
            let _ = c.stream.close().await;
        }
    }
}

/// The most a TLS client connection's close waits for its close_notify to be sent.
const CLOSE_NOTIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What became of one request, for the connection's next step.
struct Outcome {
    status: u16,
    keep_alive: bool,
}

impl Outcome {
    fn close(status: u16) -> Outcome {
        Outcome {
            status,
            keep_alive: false,
        }
    }
}

struct Client {
    /// Counts the connection (`ringway_client_connections`) while it lives.
    _conn: Counted,
    ctx: Rc<ShardCtx>,
    stream: ClientStream,
    /// Bytes from the client not yet consumed (head, body, next pipelined request);
    /// holds a store only while it holds bytes.
    buf: Buf,
    /// Scratch for heads we write, taken from the shard's pool for each request.
    out: Vec<u8>,
    /// Scratch for the routing view of a target that needs normalising.
    route_scratch: Vec<u8>,
    session: Session,
    /// The current request's facts for the access log and metrics.
    trace: Trace,
}

enum HeadRead {
    Head(RequestHead),
    /// The client closed (or idled out) between requests: close quietly.
    Closed,
    /// The head did not complete in time.
    Timeout,
    Bad(HeadError),
}

impl Client {
    /// Serves requests until the connection ends.
    async fn run(&mut self) {
        let mut streak = 0usize;
        loop {
            let head_started = glommio::clock::now();
            let head = match self.read_head().await {
                HeadRead::Head(h) => h,
                HeadRead::Closed => return,
                HeadRead::Timeout => {
                    self.ctx.metrics.borrow_mut().c.head_timeout += 1;
                    self.send_error(408, true).await;
                    return;
                }
                HeadRead::Bad(e) => {
                    {
                        let mut m = self.ctx.metrics.borrow_mut();
                        if matches!(e, HeadError::TooLarge) {
                            m.c.head_too_large += 1;
                        } else {
                            m.c.bad_request += 1;
                        }
                    }
                    tracing::debug!(peer = %self.session.peer(), error = %e, "bad request head");
                    self.send_error(e.status(), true).await;
                    return;
                }
            };
            {
                let data = self.buf.data();
                let method = data[..head.path.start.saturating_sub(1)].trim_ascii();
                let version = if head.minor == 0 {
                    "HTTP/1.0"
                } else {
                    "HTTP/1.1"
                };
                let target = &data[head.path.clone()];
                self.trace
                    .begin(self.session.peer(), head_started, method, target, version);
            }
            self.ctx.metrics.borrow_mut().c.requests += 1;
            let outcome = {
                let _inflight = Counted::new(&self.ctx, |l| &l.inflight);
                // Boxed: the exchange's state (many awaits deep) exists only while a
                // request does, and the idle connection's task stays small. The box's
                // block (about 2 KiB, past glibc's per-thread cache) is the shard's to
                // reuse for the next request (`glommio::recycle`).
                glommio::recycle::Recycled::pin_with(|| self.handle(head)).await
            };
            crate::buf::give_scratch(std::mem::take(&mut self.out));
            crate::report::done(&self.ctx, &self.trace, outcome.status);
            // The request line's store back to the pool: the wait for the next request
            // holds none.
            self.trace.release();
            if !outcome.keep_alive || self.ctx.load.draining.get() {
                return;
            }
            // Pipelined requests answered without waiting on any socket (a 404 for each,
            // say) must not hold the shard: let the other tasks run every few.
            if self.buf.is_empty() {
                streak = 0;
            } else {
                streak += 1;
                if streak.is_multiple_of(PIPELINE_SLICE) {
                    futures_lite::future::yield_now().await;
                }
            }
        }
    }

    /// Reads until a complete request head is buffered.
    async fn read_head(&mut self) -> HeadRead {
        let cfg = self.ctx.config();
        let max_head = cfg.max_head;
        let mut head_deadline: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                // The upstream head is written from the same parse (kept in `out` until a
                // response head arrives: a retry resends it).
                let mut out = crate::buf::scratch();
                let fwd = http1::Forwarded {
                    client_ip: self.session.peer(),
                    proto: self.stream.proto(),
                    via: VIA,
                    host_when_absent: Some(b""),
                };
                match http1::parse_request_for_upstream(self.buf.data(), max_head, &fwd, &mut out) {
                    Ok(Some(h)) => {
                        self.out = out;
                        return HeadRead::Head(h);
                    }
                    Ok(None) => crate::buf::give_scratch(out),
                    Err(e) => {
                        crate::buf::give_scratch(out);
                        return HeadRead::Bad(e);
                    }
                }
                if head_deadline.is_none() {
                    head_deadline = Some(glommio::clock::now() + cfg.timeouts.client_head);
                }
            }
            let timeout = match head_deadline {
                None => cfg.timeouts.client_idle,
                Some(d) => {
                    let left = d.saturating_duration_since(glommio::clock::now());
                    if left.is_zero() {
                        return HeadRead::Timeout;
                    }
                    left
                }
            };
            self.stream.set_read_timeout(Some(timeout));
            if self.buf.is_empty() {
                // Between requests: wait for the client holding no buffer.
                self.buf.release();
                if let Err(e) = self.stream.readable().await {
                    return if e.kind() == io::ErrorKind::TimedOut && head_deadline.is_some() {
                        HeadRead::Timeout
                    } else {
                        HeadRead::Closed
                    };
                }
            }
            if self.buf.spare_capacity() == 0 && !self.buf.grow(max_head + 1) {
                return HeadRead::Bad(HeadError::TooLarge);
            }
            match self.buf.fill_from(&mut self.stream).await {
                Ok(0) => return HeadRead::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return if head_deadline.is_some() {
                        HeadRead::Timeout
                    } else {
                        HeadRead::Closed
                    };
                }
                Err(_) => return HeadRead::Closed,
            }
        }
    }

    async fn send_error(&mut self, status: u16, close: bool) {
        self.out.clear();
        http1::write_error(status, close, &mut self.out);
        self.stream
            .set_write_timeout(Some(self.ctx.config().timeouts.client_idle));
        if self.stream.write_all(&self.out).await.is_ok() {
            self.trace.add_local_out(self.out.len());
        }
        if close {
            let _ = self.stream.close().await;
        } else {
            let _ = self.stream.flush().await;
        }
    }

    async fn handle(&mut self, mut head: RequestHead) -> Outcome {
        let ctx = self.ctx.clone();
        if head.method == http1::Method::Connect {
            // No tunnels: forwarded, a CONNECT that a backend answers 2xx would leave a
            // tunnel where the pool expects HTTP. Whatever follows it cannot be trusted.
            ctx.metrics.borrow_mut().c.bad_request += 1;
            self.send_error(501, true).await;
            return Outcome::close(501);
        }
        let backend = {
            let data = self.buf.data();
            let host = head.host.clone().map(|r| &data[r]);
            let path = http1::route_path(&data[head.path.clone()], &mut self.route_scratch);
            ctx.router().route(host, path)
        };
        let Some(backend) = backend else {
            ctx.metrics.borrow_mut().c.no_route += 1;
            // Answered without a backend; a body we did not read means we must close.
            let close = !head.keep_alive || head.framing != Framing::Empty;
            if !close {
                self.buf.consume(head.head_len);
            }
            self.send_error(404, close).await;
            return Outcome {
                status: 404,
                keep_alive: !close,
            };
        };
        let chosen = {
            let data = self.buf.data();
            let key = crate::upstream::balance::KeySource {
                head: &data[..head.head_len],
                path: &data[head.path.clone()],
                client: self.session.peer(),
            };
            ctx.upstreams.choose(backend, &key)
        };
        let Some(slot) = chosen else {
            // No usable server in the backend (the upstream layer logged why).
            let close = !head.keep_alive || head.framing != Framing::Empty;
            if !close {
                self.buf.consume(head.head_len);
            }
            self.send_error(503, close).await;
            return Outcome {
                status: 503,
                keep_alive: !close,
            };
        };
        self.trace.routed(backend, slot);

        // `out` holds the upstream head (written by `read_head`).
        self.buf.consume(head.head_len);
        let has_body = !matches!(head.framing, Framing::Empty | Framing::Length(0));
        // A body that is already here in full travels in the same write as the head (and
        // is resent with it on a retry).
        if let Framing::Length(n) = head.framing {
            if n <= self.buf.len() as u64 {
                self.out.extend_from_slice(&self.buf.data()[..n as usize]);
                self.buf.consume(n as usize);
                head.framing = Framing::Empty;
                head.expect_continue = false;
            }
        }
        let idle = ctx.config().timeouts.client_idle;
        self.stream.set_write_timeout(Some(idle));
        self.stream.set_read_timeout(Some(idle));
        if head.expect_continue && head.framing != Framing::Empty {
            // We answer 100 ourselves and stream the body at once; the backend's own
            // interim 100, if any, is dropped when its response is read.
            let sent = self
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await;
            if sent.is_err() || self.stream.flush().await.is_err() {
                return Outcome::close(499);
            }
        }

        // The response head is written into a second scratch vector from the pool (an
        // empty one here would be a heap allocation per response).
        let upstream_head = std::mem::replace(&mut self.out, crate::buf::scratch());
        let req = exchange::Request {
            slot,
            method: head.method,
            head: &upstream_head,
            has_body,
            trace: &self.trace,
        };
        let trace = &self.trace;
        // Bytes from the backend not yet consumed: this request's own (its store goes
        // back to the pool when the request is done), so the idle connection's state
        // has no room for it.
        let mut bbuf = Buf::new();
        let result = {
            let Client {
                stream,
                buf,
                out,
                session,
                ..
            } = self;
            let client = Duplex::new(stream);
            let mut src = H1Body {
                framing: head.framing,
                duplex: needs_duplex(head.framing, buf.len()),
                reader: &client,
                buf,
                sent: &trace.bytes_in,
            };
            let mut sink = H1Sink {
                writer: Metered::new(&client, trace),
                client: &client,
                watch_hangup: ctx.upstreams.is_h2(slot),
                upgrade: head.upgrade,
                out,
                minor: head.minor,
                keep_alive: head.keep_alive,
                draining: ctx.load.draining.get(),
                splice_min: ctx.config().splice_min,
            };
            exchange::forward(&ctx, session, &req, &mut src, &mut sink, &mut bbuf).await
        };
        crate::outcome::note(&self.trace, &result);
        crate::buf::give_scratch(std::mem::replace(&mut self.out, upstream_head));
        match result {
            Ok(ex) => {
                if let (Some(lease), true) = (ex.upgraded, head.upgrade) {
                    // The backend switched protocols (WebSocket and friends): from here
                    // on both connections are one tunnel, then both close.
                    self.tunnel(lease, &mut bbuf).await;
                    return Outcome::close(101);
                }
                Outcome {
                    status: ex.status,
                    keep_alive: ex.client_keep_alive,
                }
            }
            Err(Failure::Answer { status, close }) => {
                let close = close || !head.keep_alive;
                self.send_error(status, close).await;
                Outcome {
                    status,
                    keep_alive: !close,
                }
            }
            Err(Failure::ClientGone) => Outcome::close(499),
            Err(Failure::Broken { status, .. }) => Outcome::close(status),
        }
    }

    /// Relays bytes both ways after a `101 Switching Protocols`, until each side has
    /// closed its half (a half-close is passed on) or stays silent for
    /// `--timeout-client-idle`.
    async fn tunnel(&mut self, mut lease: Lease, bbuf: &mut Buf) {
        let idle = self.ctx.config().timeouts.client_idle;
        self.stream.set_read_timeout(Some(idle));
        self.stream.set_write_timeout(Some(idle));
        lease.transport().set_timeouts(Some(idle));
        let client = Duplex::new(&mut self.stream);
        let backend = Duplex::new(lease.transport());
        let (mut cr, mut cw, mut br, mut bw) = (&client, &client, &backend, &backend);
        let buf = &mut self.buf;
        let up = async {
            let _ = copy_body(Framing::UntilClose, &mut cr, buf, &mut bw).await;
            let _ = bw.close().await;
        };
        let down = async {
            let _ = copy_body(Framing::UntilClose, &mut br, bbuf, &mut cw).await;
            let _ = cw.close().await;
        };
        futures_lite::future::zip(up, down).await;
    }
}

/// Whether the request body must flow while the response is already being read: a
/// backend may answer (and stop reading) before the body ends, and a body larger than
/// the socket buffers would then stall both sides until a timeout.
fn needs_duplex(framing: Framing, buffered: usize) -> bool {
    match framing {
        Framing::Length(n) => n > DUPLEX_ABOVE && n > buffered as u64,
        Framing::Chunked => true,
        Framing::Empty | Framing::UntilClose => false,
    }
}

/// The rest of an HTTP/1.1 request body, read from the client through its buffer.
struct H1Body<'a, R> {
    framing: Framing,
    duplex: bool,
    reader: R,
    buf: &'a mut Buf,
    /// Body bytes sent up, for the trace.
    sent: &'a std::cell::Cell<u64>,
}

impl<R: AsyncRead + Unpin> BodySource for H1Body<'_, R> {
    fn pending(&self) -> bool {
        self.framing != Framing::Empty
    }

    fn duplex(&self) -> bool {
        self.duplex
    }

    async fn send<W: AsyncWrite + Unpin>(&mut self, dst: &mut W) -> Result<(), BodyError> {
        let mut dst = Counting::new(dst, self.sent);
        copy_body(self.framing, &mut self.reader, self.buf, &mut dst)
            .await
            .map_err(|e| match e {
                CopyError::Src(_) => BodyError::Client,
                CopyError::Framing => BodyError::Framing,
                CopyError::Dst(e) => BodyError::Backend(e),
            })
    }
}

/// The client end of an HTTP/1.1 response: the head rewritten for this hop, then the
/// body as the backend framed it (de-chunked for an HTTP/1.0 client).
struct H1Sink<'a, 'd, W> {
    writer: W,
    /// The client connection itself, watched for a hang-up while the answer is awaited.
    client: &'a Duplex<'d, ClientStream>,
    /// Whether to watch: for HTTP/2 backends, where a client gone before the head
    /// cancels the backend stream (RST_STREAM) and costs no connection.
    watch_hangup: bool,
    /// The request asked to switch protocols: only then may a `101` pass.
    upgrade: bool,
    out: &'a mut Vec<u8>,
    minor: u8,
    keep_alive: bool,
    draining: bool,
    /// Bodies of at least this size go by splice where they can (`--splice-min`).
    splice_min: Option<u64>,
}

impl<W> H1Sink<'_, '_, W> {
    /// Whether the client connection stays open after this response.
    fn client_keep_alive(&self, resp: &ResponseHead) -> bool {
        self.keep_alive
            && !self.draining
            && resp.framing != Framing::UntilClose
            && !resp.needs_dechunk(self.minor)
            && resp.status != 101
    }
}

impl<W: AsyncWrite + Unpin + SpliceEnd> ResponseSink for H1Sink<'_, '_, W> {
    fn can_switch(&self) -> bool {
        self.upgrade
    }

    /// The client closed its connection (FIN or reset) while the head is awaited. Bytes
    /// waiting on the socket (a body being sent, a pipelined request) say nothing either
    /// way: then this is Pending without a wake-up of its own, and is asked again on the
    /// task's next wake-up.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.watch_hangup {
            return Poll::Pending;
        }
        match self.client.with_mut(|s| s.poll_hangup(cx)) {
            Poll::Ready(Hangup::Gone) => Poll::Ready(()),
            Poll::Ready(Hangup::Unknown) | Poll::Pending => Poll::Pending,
        }
    }

    /// The client's head goes into `out`, where [`deliver`](ResponseSink::deliver)
    /// appends the body bytes that came with it.
    fn head(&mut self, fields: &http1::ResponseFields<'_, '_>) {
        let client_keep_alive = self.client_keep_alive(fields.head());
        self.out.clear();
        fields.write_downstream(VIA, client_keep_alive, self.minor, &mut *self.out);
    }

    async fn deliver<R: AsyncRead + Unpin + SpliceEnd>(
        &mut self,
        resp: &ResponseHead,
        bbuf: &mut Buf,
        src: &mut R,
    ) -> Result<bool, DeliverError> {
        let dechunk = resp.needs_dechunk(self.minor);
        let client_keep_alive = self.client_keep_alive(resp);
        // `out` holds the head `head` wrote.
        let out = &mut *self.out;
        bbuf.consume(resp.head_len);
        // Body bytes that came with the head leave in the same write as the head.
        let mut framing = resp.framing;
        if let (Framing::Length(n), false) = (framing, dechunk) {
            let take = (bbuf.len() as u64).min(n) as usize;
            out.extend_from_slice(&bbuf.data()[..take]);
            bbuf.consume(take);
            framing = Framing::Length(n - take as u64);
            top_up(src, out, &mut framing).await;
        }
        self.writer
            .write_all(out)
            .await
            .map_err(|_| DeliverError::ClientGone)?;
        if framing == Framing::Empty || framing == Framing::Length(0) {
            self.writer
                .flush()
                .await
                .map_err(|_| DeliverError::ClientGone)?;
        }
        let copied = if dechunk {
            copy_dechunked(src, bbuf, &mut self.writer).await
        } else if let Some(n) = spliced_length(resp.framing, framing, self.splice_min) {
            crate::splice::copy_length(src, bbuf, &mut self.writer, n).await
        } else if let Framing::Length(n @ 1..) = framing {
            crate::splice::relay_length(src, bbuf, &mut self.writer, n).await
        } else {
            copy_body(framing, src, bbuf, &mut self.writer).await
        };
        match copied {
            Ok(()) => Ok(client_keep_alive),
            Err(CopyError::Dst(_)) => Err(DeliverError::ClientGone),
            Err(CopyError::Src(e)) => {
                tracing::debug!(error = %e, "backend response body ended early");
                Err(DeliverError::Backend)
            }
            Err(CopyError::Framing) => {
                tracing::debug!("backend sent a bad chunked body");
                Err(DeliverError::Backend)
            }
        }
    }
}

/// The rest (`rest`) of a `Content-Length` body (`whole`) when the body is large enough
/// to splice (`min`, `--splice-min`): a body is spliced or not by its size, not by how
/// much of it came with the head.
fn spliced_length(whole: Framing, rest: Framing, min: Option<u64>) -> Option<u64> {
    match (whole, rest, min) {
        (Framing::Length(n), Framing::Length(left), Some(min)) if n >= min && left > 0 => {
            Some(left)
        }
        _ => None,
    }
}

/// How large the first write of a response (head and body) may grow by taking in body
/// bytes that have already arrived: at most half a pooled scratch vector's limit, so the
/// vector still goes back to the pool.
const COALESCE: usize = 32 << 10;

/// Appends to `out` the body bytes (of a `Content-Length` body, `framing`) that the
/// backend has already delivered, without waiting for more: a response larger than one
/// read (a 16 KiB body behind its head is two reads) then leaves in one write, one TCP
/// segment on loopback, instead of one per read. Stops at [`COALESCE`], at the body's
/// end, or at the first read that would wait. A read error or EOF is left for the body
/// copy that follows, which reads again and reports it.
async fn top_up<R: AsyncRead + Unpin>(src: &mut R, out: &mut Vec<u8>, framing: &mut Framing) {
    while let Framing::Length(left) = *framing {
        if left == 0 || out.len() >= COALESCE {
            return;
        }
        let at = out.len();
        let want = left.min((COALESCE - at) as u64) as usize;
        out.resize(at + want, 0);
        match futures_lite::future::poll_once(src.read(&mut out[at..])).await {
            Some(Ok(n)) if n > 0 => {
                out.truncate(at + n);
                *framing = Framing::Length(left - n as u64);
            }
            _ => {
                out.truncate(at);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_length_goes_by_the_whole_body_and_needs_something_left() {
        let min = Some(64 << 10);
        // At the threshold, with or without part of it read with the head.
        assert_eq!(
            spliced_length(Framing::Length(65_536), Framing::Length(65_536), min),
            Some(65_536)
        );
        assert_eq!(
            spliced_length(Framing::Length(65_536), Framing::Length(100), min),
            Some(100)
        );
        // Below it, even if little was read.
        assert_eq!(
            spliced_length(Framing::Length(65_535), Framing::Length(65_535), min),
            None
        );
        // All of it came with the head: nothing to splice.
        assert_eq!(
            spliced_length(Framing::Length(1 << 20), Framing::Length(0), min),
            None
        );
        // Off, and framings that are not a length.
        assert_eq!(
            spliced_length(Framing::Length(1 << 20), Framing::Length(1 << 20), None),
            None
        );
        assert_eq!(
            spliced_length(Framing::Chunked, Framing::Chunked, min),
            None
        );
        assert_eq!(
            spliced_length(Framing::UntilClose, Framing::UntilClose, min),
            None
        );
    }
}
