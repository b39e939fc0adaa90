//! The HTTP/2 front (h2c, prior knowledge): a client whose first bytes are the HTTP/2
//! preface is handed here by the accept layer, and each of its streams goes through the
//! same [exchange](crate::exchange) as an HTTP/1.1 request, to the HTTP/1.1 backends.
//!
//! [`serve`] runs the `h2` server (`ringway_h2mux::server`) and spawns one task per
//! stream, up to SETTINGS_MAX_CONCURRENT_STREAMS (256). A stream:
//!
//! 1. becomes an HTTP/1.1 request head: `:method`, `:path`, `Host` from `:authority`,
//!    the other fields (cookies folded into one line, RFC 9113 §8.2.3) and the body's
//!    framing (its `content-length`, else `Transfer-Encoding: chunked` when a body follows
//!    the HEADERS). That head goes through `http1::parse_request` and
//!    `http1::write_request_upstream`, exactly as an HTTP/1.1 request would: routing, the
//!    Host and framing checks, hop-by-hop removal, `X-Forwarded-For`/`-Proto` and `Via`
//!    are then the same code for both protocols. The cost is one small head built and
//!    parsed per stream.
//! 2. is forwarded by [`exchange::forward`] with an [`H2Body`] (DATA frames, re-framed
//!    for HTTP/1.1, flow-control capacity released as bytes reach the backend) and an
//!    [`H2Sink`] (the response head decided by `http1::write_response_downstream`, the
//!    same rules as HTTP/1.1, written straight into HTTP/2 headers without
//!    connection-specific fields; the body de-chunked, trailers passed on as HTTP/2
//!    trailers, sent as the client's window allows).
//!
//! The connection's [`Session`] is shared by its streams: its first stream is the
//! session's first request, and with `--reuse never` its backend connections stay
//! private to it, as an HTTP/1.1 client's do. Errors before the response head become
//! responses with HTTP/1's statuses (400, 404, 431, 502, 503, 504); after it,
//! RST_STREAM. A client's RST_STREAM abandons the backend exchange. A draining shard or
//! an idle connection (`--timeout-client-idle` without streams) sends GOAWAY. Nothing
//! from the peer can panic here.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderValue, Response, StatusCode};
use ringway_h2mux::meter::{Budget, FrameMeter, Metered};
use ringway_h2mux::server::{self as h2s, Settings};
use ringway_http1::{self as http1, ChunkedScanner, Framing, HeadError, ResponseHead};

use super::ClientStream;
use crate::buf::Buf;
use crate::ctx::{Counted, ShardCtx};
use crate::exchange::{
    self, trailers, BodyError, BodySource, ClientAddr, DeliverError, Failure, ResponseSink, Session,
};
use crate::fields;
use crate::rate::TokenBucket;
use crate::trace::{CountingRead, Front, Trace};

/// This hop's `Via` entry for a request received over HTTP/2.
const VIA: &str = "2.0 ringway";
/// How often a connection looks at the shard's drain flag and its own idleness.
const TICK: Duration = Duration::from_millis(250);
/// A connection that sent GOAWAY and has no streams left is closed after this long even
/// if the client never acknowledges.
const GOAWAY_LINGER: Duration = Duration::from_secs(1);
/// A stream's response buffer while its body streams: taken from the shard's pool
/// ([`StreamBufs`]) when a body starts, given back when the stream ends.
const BUF_SIZE: usize = 16 << 10;
/// A stream's buffer until then: enough for a typical response head (it grows up to
/// `--max-head` for a larger one). A stream waiting for its backend holds only this.
const HEAD_BUF: usize = 2 << 10;
/// Body buffers a shard keeps for reuse (beyond that, they are freed).
const POOL_MAX: usize = 512;

thread_local! {
    /// The shard's free body buffers (one thread per shard: no lock, no sharing).
    static STREAM_BUFS: std::cell::RefCell<Vec<Buf>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The shard's free head buffers ([`HEAD_BUF`], with their memory): a new one per
    /// stream was a zeroed 2 KiB allocation (`calloc`) per request.
    static HEAD_BUFS: std::cell::RefCell<Vec<Buf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The shard's pools of 16 KiB body buffers and 2 KiB head buffers for HTTP/2 streams.
struct StreamBufs;

impl StreamBufs {
    fn take() -> Buf {
        STREAM_BUFS
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Buf::with_capacity(BUF_SIZE))
    }

    /// A stream's first buffer (for its response head).
    fn take_head() -> Buf {
        HEAD_BUFS
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Buf::with_capacity(HEAD_BUF))
    }

    /// Gives `buf` back if it is a body or head buffer of the usual size (a grown one,
    /// or one that never took memory, is dropped).
    fn give_back(mut buf: Buf) {
        buf.clear();
        let pool = match buf.spare_capacity() {
            BUF_SIZE => &STREAM_BUFS,
            HEAD_BUF if buf.holds_memory() => &HEAD_BUFS,
            _ => return,
        };
        pool.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(buf);
            }
        });
    }
}

/// A head's text while a stream is served: a vector from the shard's scratch pool
/// (`buf::scratch`), given back when the stream is done with it, so a stream
/// allocates none for its heads.
struct Scratch(Vec<u8>);

impl Scratch {
    fn take() -> Scratch {
        Scratch(crate::buf::scratch())
    }
}

impl std::ops::Deref for Scratch {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        crate::buf::give_scratch(std::mem::take(&mut self.0));
    }
}

/// Fields that are connection-specific in HTTP/2 (RFC 9113 §8.2.2) and never sent.
const CONNECTION_SPECIFIC: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// One HTTP/2 client connection, shared by its stream tasks.
struct ConnCtx {
    ctx: Rc<ShardCtx>,
    peer: IpAddr,
    /// `X-Forwarded-Proto`: `https` when the client came over TLS.
    proto: &'static str,
    session: Session,
    /// Streams being served.
    active: Cell<usize>,
    /// When `active` last dropped to zero (or the connection started).
    idle_since: Cell<Instant>,
    /// The peer went over its frame budget and got GOAWAY(ENHANCE_YOUR_CALM).
    calmed: Cell<bool>,
    /// Resets of streams in progress this client may still send (`--h2-reset-rate`,
    /// `--h2-reset-burst`), over the connection's whole life: `h2` itself only bounds
    /// resets of streams not yet accepted, and only in bursts.
    resets: RefCell<TokenBucket>,
    /// The client spent its reset budget: the connection is to be closed.
    reset_over: Cell<bool>,
}

impl ConnCtx {
    /// The client reset (or abandoned) a stream whose request was in progress.
    fn note_reset(&self) {
        if !self.resets.borrow_mut().take(glommio::clock::now()) {
            self.reset_over.set(true);
        }
    }
}

/// Counts a stream being served on its connection.
struct StreamGuard(Rc<ConnCtx>);
impl Drop for StreamGuard {
    fn drop(&mut self) {
        let n = self.0.active.get().saturating_sub(1);
        self.0.active.set(n);
        if n == 0 {
            self.0.idle_since.set(glommio::clock::now());
        }
    }
}

/// Serves one HTTP/2 connection whose first bytes (`buffered`, the preface and maybe
/// more) were already read from `stream`.
pub async fn serve(ctx: Rc<ShardCtx>, stream: ClientStream, client: ClientAddr, buffered: Vec<u8>) {
    let peer = client.src.ip();
    let _h2_conn = Counted::new(&ctx, |l| &l.h2_conns);
    let cfg = ctx.config();
    let (client_head, client_idle) = (cfg.timeouts.client_head, cfg.timeouts.client_idle);
    // h2 reads whenever it likes; only a stuck write is bounded by the socket.
    stream.set_read_timeout(None);
    stream.set_write_timeout(Some(client_idle));
    let proto = stream.proto();
    let settings = Settings {
        max_header_list_size: u32::try_from(cfg.max_head).unwrap_or(u32::MAX),
        ..Settings::default()
    };
    // Frames that carry no request are counted, and no read streak holds the shard.
    let meter = Rc::new(std::cell::RefCell::new(FrameMeter::server(
        Budget::default(),
    )));
    // The bytes the accept layer already read (the preface, maybe more) are replayed to
    // `h2` without passing through `Metered`: the meter sees them first, so it stays
    // aligned on frame boundaries.
    meter.borrow_mut().feed(&buffered, glommio::clock::now());
    let stream = Metered::new(stream, meter.clone());
    // Boxed for its own length only: the connection's future (its task, for its whole
    // life) then holds no room for the handshake's state beside the connection's.
    let handshake = glommio::timer::timeout(client_head, async {
        Ok(Box::pin(h2s::handshake(stream, buffered, &settings)).await)
    })
    .await;
    let mut conn = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let mut m = ctx.metrics.borrow_mut();
            m.c.bad_request += 1;
            m.c.h2_conn_errors += 1;
            drop(m);
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.borrow_mut().c.head_timeout += 1;
            return;
        }
    };
    let cc = Rc::new(ConnCtx {
        ctx: ctx.clone(),
        peer,
        proto,
        session: Session::new(client),
        active: Cell::new(0),
        idle_since: Cell::new(glommio::clock::now()),
        calmed: Cell::new(false),
        resets: RefCell::new(TokenBucket::new(
            cfg.cancel.h2_reset_rate,
            cfg.cancel.h2_reset_burst,
            glommio::clock::now(),
        )),
        reset_over: Cell::new(false),
    });
    // Streams reset by the client leave `h2`'s count at once, but their requests may
    // still be finishing here (a cancelled response being drained): past twice the
    // announced limit, new streams are refused.
    let max_in_progress = 2 * settings.max_concurrent_streams as usize;
    let mut goaway_at: Option<Instant> = None;
    let mut tick = glommio::timer::Timer::new(TICK);
    loop {
        if meter.borrow().over_budget() && !cc.calmed.get() {
            // A flood of control frames (or empty DATA, resets, unknown frames): this
            // connection is closed; the shard's other clients never waited on it.
            cc.calmed.set(true);
            ctx.metrics.borrow_mut().c.h2_flood_closed += 1;
            tracing::debug!(%peer, "HTTP/2 peer over its frame budget: ENHANCE_YOUR_CALM");
            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            goaway_at = Some(glommio::clock::now());
        }
        if cc.reset_over.get() && !cc.calmed.get() {
            // Paced rapid reset (CVE-2023-44487 below the burst bounds): each reset
            // stream cost a request; over time this client has sent too many.
            cc.calmed.set(true);
            let mut m = ctx.metrics.borrow_mut();
            m.c.h2_reset_closed += 1;
            m.c.h2_conn_errors += 1;
            drop(m);
            tracing::debug!(%peer, "HTTP/2 peer over its reset budget: ENHANCE_YOUR_CALM");
            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            goaway_at = Some(glommio::clock::now());
        }
        if goaway_at.is_none() {
            let idle = cc.active.get() == 0 && cc.idle_since.get().elapsed() >= client_idle;
            if ctx.load.draining.get() || idle {
                conn.graceful_shutdown();
                goaway_at = Some(glommio::clock::now());
            }
        } else if goaway_at.is_some_and(|t| t.elapsed() >= GOAWAY_LINGER) && cc.active.get() == 0 {
            return;
        }
        // One timer for the connection's life, re-armed when it fires: a new one per
        // accepted stream cost an allocation and a timer-wheel insert and removal each.
        let next = poll_fn(|cx| {
            if let Poll::Ready(r) = conn.poll_accept(cx) {
                return Poll::Ready(Some(r));
            }
            match std::pin::Pin::new(&mut tick).poll(cx) {
                Poll::Ready(_) => {
                    tick.reset(TICK);
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match next {
            None => {}
            Some(None) => return,
            Some(Some(Ok((_, mut respond))))
                if cc.active.get() >= max_in_progress || cc.calmed.get() =>
            {
                ctx.metrics.borrow_mut().c.h2_refused_streams += 1;
                respond.send_reset(Reason::REFUSED_STREAM);
            }
            Some(Some(Ok((req, respond)))) => {
                cc.active.set(cc.active.get() + 1);
                let guard = StreamGuard(cc.clone());
                glommio::spawn_local(serve_stream(guard, req, respond)).detach();
            }
            Some(Some(Err(e))) => {
                // NotConnected after the client closed is a normal end.
                let normal_close =
                    matches!(e.get_io(), Some(io) if io.kind() == io::ErrorKind::NotConnected);
                if !normal_close {
                    if e.reason().is_some_and(|r| r != Reason::NO_ERROR) && !cc.calmed.get() {
                        ctx.metrics.borrow_mut().c.h2_conn_errors += 1;
                    }
                    tracing::debug!(%peer, error = %e, "HTTP/2 connection ended");
                }
                return;
            }
        }
    }
}

/// Serves one stream, counting it like an HTTP/1.1 request.
async fn serve_stream(
    guard: StreamGuard,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let cc = guard.0.clone();
    let ctx = cc.ctx.clone();
    let trace = Trace::new(Front::Http2);
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    trace.begin(
        cc.peer,
        glommio::clock::now(),
        req.method().as_str().as_bytes(),
        target.as_bytes(),
        "HTTP/2.0",
    );
    ctx.metrics.borrow_mut().c.requests += 1;
    let status = {
        let _inflight = Counted::new(&ctx, |l| &l.inflight);
        // Boxed: the exchange's state is most of this future's size, and the task's
        // future is moved by value while it is spawned (three copies of the whole
        // state otherwise; one here).
        Box::pin(handle(&cc, req, &mut respond, &trace)).await
    };
    crate::report::done(&ctx, &trace, status);
    if status == 499 {
        cc.note_reset();
    }
    drop(guard);
}

/// Proxies one stream; returns the status for the metrics (499 when the client left).
async fn handle(
    cc: &Rc<ConnCtx>,
    req: http::Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    trace: &Trace,
) -> u16 {
    let ctx = cc.ctx.clone();
    let cfg = ctx.config();
    let (parts, mut body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let is_head = parts.method == http::Method::HEAD;

    if let Err(why) = check_request(&parts) {
        // A malformed request (RFC 9113 §8.1.1): a stream error, the connection lives on.
        ctx.metrics.borrow_mut().c.h2_stream_errors += 1;
        tracing::debug!(peer = %cc.peer, why, "malformed HTTP/2 request: PROTOCOL_ERROR");
        respond.send_reset(Reason::PROTOCOL_ERROR);
        return 400;
    }
    if parts.method == http::Method::CONNECT {
        // No tunnels over HTTP/2 streams (yet); h2 did not enable extended CONNECT.
        ctx.metrics.borrow_mut().c.bad_request += 1;
        return answer_locally(respond, 501, is_head);
    }
    let mut h1 = Scratch::take();
    if !build_h1_head(&parts, has_body, &mut h1) {
        ctx.metrics.borrow_mut().c.bad_request += 1;
        return answer_locally(respond, 400, is_head);
    }
    drop(parts);
    // The upstream head is written from the same parse.
    let mut upstream = Scratch::take();
    let fwd = http1::Forwarded {
        client_ip: cc.peer,
        proto: cc.proto,
        via: VIA,
        host_when_absent: Some(b""),
    };
    let head = match http1::parse_request_for_upstream(&h1, cfg.max_head, &fwd, &mut upstream) {
        Ok(Some(h)) => h,
        Ok(None) | Err(HeadError::TooLarge) => {
            ctx.metrics.borrow_mut().c.head_too_large += 1;
            return answer_locally(respond, 431, is_head);
        }
        Err(e) => {
            ctx.metrics.borrow_mut().c.bad_request += 1;
            tracing::debug!(peer = %cc.peer, error = %e, "bad HTTP/2 request");
            return answer_locally(respond, e.status(), is_head);
        }
    };
    let mut route_scratch = Vec::new();
    let backend = ctx.router().route(
        head.host.clone().map(|r| &h1[r]),
        http1::route_path(&h1[head.path.clone()], &mut route_scratch),
    );
    let Some(backend) = backend else {
        ctx.metrics.borrow_mut().c.no_route += 1;
        return answer_locally(respond, 404, is_head);
    };
    let key = crate::upstream::balance::KeySource {
        head: &h1[..head.head_len],
        path: &h1[head.path.clone()],
        client: cc.peer,
    };
    let Some(slot) = ctx.upstreams.choose(backend, &key) else {
        // No usable server in the backend (the upstream layer logged why).
        return answer_locally(respond, 503, is_head);
    };
    trace.routed(backend, slot);
    if head.expect_continue && has_body {
        // As the HTTP/1.1 front does: we answer 100 ourselves and stream the body at
        // once; the backend's own interim 100, if any, is dropped when its response is
        // read (RFC 9110 §10.1.1, RFC 9113 §8.1).
        let mut cont = Response::new(());
        *cont.status_mut() = StatusCode::CONTINUE;
        if respond.send_informational(cont).is_err() {
            return 499;
        }
    }
    let req = exchange::Request {
        slot,
        method: head.method,
        head: &upstream,
        has_body,
        trace,
    };
    let idle = cfg.timeouts.client_idle;
    let mut src = H2Body {
        body: &mut body,
        framing: head.framing,
        pending: has_body,
        idle,
    };
    let mut bbuf = StreamBufs::take_head();
    let result = {
        let mut sink = H2Sink {
            respond: &mut *respond,
            is_head,
            idle,
            trace,
            head: None,
        };
        exchange::forward(&ctx, &cc.session, &req, &mut src, &mut sink, &mut bbuf).await
    };
    crate::outcome::note(trace, &result);
    StreamBufs::give_back(bbuf);
    match result {
        Ok(ex) => ex.status,
        Err(Failure::Answer { status, .. }) => answer_locally(respond, status, is_head),
        Err(Failure::ClientGone) => {
            respond.send_reset(Reason::CANCEL);
            499
        }
        Err(Failure::Broken {
            client_gone: true, ..
        }) => 499,
        Err(Failure::Broken { status, .. }) => status,
    }
}

/// What RFC 9113 makes a malformed request and `h2` lets through (it already refuses
/// connection-specific fields, `TE` other than `trailers`, missing, repeated, unknown or
/// misplaced pseudo-header fields, and a `content-length` the DATA frames disagree
/// with): a `:path` that is neither absolute (`/...`) nor `*` for OPTIONS (§8.3.1), a
/// `Host` naming another authority than `:authority` (§8.3.1), a field value that starts
/// or ends with whitespace (§8.2.1).
fn check_request(parts: &http::request::Parts) -> Result<(), &'static str> {
    if parts.method != http::Method::CONNECT {
        // `h2` lets a request without `:path` through; `http` then reads the path as
        // "/", but without a scheme the `Uri` parts show it is missing. (With `:scheme`
        // and `:authority` present a missing `:path` cannot be told from "/" any more:
        // left to `h2`.)
        if parts.uri.clone().into_parts().path_and_query.is_none() {
            return Err(":path is missing");
        }
        let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let asterisk = path == "*" && parts.method == http::Method::OPTIONS;
        if !path.starts_with('/') && !asterisk {
            return Err(":path is neither absolute nor * for OPTIONS");
        }
    }
    if let (Some(a), Some(h)) = (parts.uri.authority(), parts.headers.get(http::header::HOST)) {
        if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) {
            return Err("Host differs from :authority");
        }
    }
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    for v in parts.headers.values() {
        let b = v.as_bytes();
        if b.first().is_some_and(ws) || b.last().is_some_and(ws) {
            return Err("a field value starts or ends with whitespace");
        }
    }
    Ok(())
}

/// Writes the HTTP/1.1 form of an HTTP/2 request head into `out`. False when the request
/// names no authority at all (neither `:authority` nor `host`).
fn build_h1_head(parts: &http::request::Parts, has_body: bool, out: &mut Vec<u8>) -> bool {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str().as_bytes(),
        None => match parts.headers.get(http::header::HOST) {
            Some(h) => h.as_bytes(),
            None => return false,
        },
    };
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(authority);
    out.extend_from_slice(b"\r\n");
    let mut cookies = parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .peekable();
    if cookies.peek().is_some() {
        out.extend_from_slice(b"cookie: ");
        for (i, c) in cookies.enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(c.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n == "host" || n == "cookie" || CONNECTION_SPECIFIC.contains(&n) {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if has_body && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    true
}

/// The request body of one stream: DATA frames, written to the backend as the HTTP/1.1
/// framing of the head says (by length, or chunk-encoded here), with flow-control
/// capacity released to the client as each piece is written. Trailers are ignored.
struct H2Body<'a> {
    body: &'a mut RecvStream,
    framing: Framing,
    pending: bool,
    idle: Duration,
}

impl BodySource for H2Body<'_> {
    fn pending(&self) -> bool {
        self.pending
    }

    /// Always: the client sends at the pace its window allows, and the backend may
    /// answer first.
    fn duplex(&self) -> bool {
        true
    }

    async fn send<W: AsyncWrite + Unpin>(&mut self, dst: &mut W) -> Result<(), BodyError> {
        let chunked = self.framing == Framing::Chunked;
        let mut frame = Vec::new();
        loop {
            // A client that stops sending its body for `idle` is given up on, as in HTTP/1.1.
            let next = glommio::timer::timeout(self.idle, async { Ok(self.body.data().await) })
                .await
                .map_err(|_| BodyError::Client)?;
            let Some(data) = next else { break };
            let data = data.map_err(|_| BodyError::Client)?;
            let n = data.len();
            if n == 0 {
                continue;
            }
            if chunked {
                frame.clear();
                frame.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                frame.extend_from_slice(&data);
                frame.extend_from_slice(b"\r\n");
                dst.write_all(&frame).await.map_err(BodyError::Backend)?;
            } else {
                dst.write_all(&data).await.map_err(BodyError::Backend)?;
            }
            dst.flush().await.map_err(BodyError::Backend)?;
            let _ = self.body.flow_control().release_capacity(n);
        }
        if chunked {
            // Trailers, if the client sent any, become the chunked trailer section.
            let trailers =
                glommio::timer::timeout(self.idle, async { Ok(self.body.trailers().await) })
                    .await
                    .map_err(|_| BodyError::Client)?
                    .map_err(|_| BodyError::Client)?;
            frame.clear();
            trailers::write(trailers.as_ref(), &mut frame);
            dst.write_all(&frame).await.map_err(BodyError::Backend)?;
            dst.flush().await.map_err(BodyError::Backend)?;
        }
        self.pending = false;
        Ok(())
    }
}

/// The client end of one stream's response.
struct H2Sink<'a> {
    respond: &'a mut SendResponse<Bytes>,
    /// The request is a HEAD: the response has no body.
    is_head: bool,
    idle: Duration,
    /// Notes the response's start and its body bytes (as received from the backend).
    trace: &'a Trace,
    /// The response head [`ResponseSink::head`] built, for `deliver` to send.
    head: Option<Response<()>>,
}

impl ResponseSink for H2Sink<'_> {
    fn can_switch(&self) -> bool {
        false
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.respond.poll_reset(cx).map(|_| ())
    }

    fn takes_h2(&self) -> bool {
        true
    }

    /// HTTP/2 to HTTP/2: the backend's fields are already free of connection-specific
    /// ones (`h2` refuses a response carrying any), so the head goes on with this hop
    /// added to `Via`; each DATA frame's bytes go on as they came (no copy), the
    /// backend's window given back once the client's window let them out; trailers
    /// end the stream as they came, less fields that must not be trailers.
    async fn deliver_h2(
        &mut self,
        mut head: http::response::Parts,
        mut body: RecvStream,
        idle: Duration,
    ) -> Result<bool, DeliverError> {
        add_via(&mut head.headers);
        // As HTTP/1.1 framing has it: no body for HEAD, 204 and 304, whatever came.
        let status = head.status.as_u16();
        let empty = self.is_head || status == 204 || status == 304 || body.is_end_stream();
        let mut send = self
            .respond
            .send_response(Response::from_parts(head, ()), empty)
            .map_err(|_| DeliverError::ClientGone)?;
        self.trace.response_started();
        if empty {
            return Ok(true);
        }
        let failed = |send: &mut SendStream<Bytes>, why: &str| {
            tracing::debug!(why, "HTTP/2 backend response body failed");
            send.send_reset(Reason::INTERNAL_ERROR);
            Err(DeliverError::Backend)
        };
        loop {
            let next = or_reset(
                glommio::timer::timeout(idle, async { Ok(body.data().await) }),
                &mut send,
            )
            .await;
            let data = match next {
                None => return Err(DeliverError::ClientGone),
                Some(Err(_)) => return failed(&mut send, "silent for --timeout-backend"),
                Some(Ok(None)) => break,
                Some(Ok(Some(Err(_)))) => return failed(&mut send, "stream failed"),
                Some(Ok(Some(Ok(data)))) => data,
            };
            let n = data.len();
            self.trace.add_out(n);
            // The last frame carries END_STREAM when no trailers follow.
            let last = body.is_end_stream();
            if n > 0 || last {
                send_piece(&mut send, data, last, self.idle)
                    .await
                    .map_err(|_| DeliverError::ClientGone)?;
            }
            let _ = body.flow_control().release_capacity(n);
            if last {
                return Ok(true);
            }
        }
        let trailers = or_reset(
            glommio::timer::timeout(idle, async { Ok(body.trailers().await) }),
            &mut send,
        )
        .await;
        match trailers {
            None => Err(DeliverError::ClientGone),
            Some(Err(_)) => failed(&mut send, "silent for --timeout-backend"),
            Some(Ok(Err(_))) => failed(&mut send, "stream failed"),
            Some(Ok(Ok(Some(t)))) => {
                let t = trailers::allowed_only(t);
                if t.is_empty() {
                    send_piece(&mut send, Bytes::new(), true, self.idle)
                        .await
                        .map_err(|_| DeliverError::ClientGone)?;
                } else {
                    send.send_trailers(t)
                        .map_err(|_| DeliverError::ClientGone)?;
                }
                Ok(true)
            }
            Some(Ok(Ok(None))) => {
                send_piece(&mut send, Bytes::new(), true, self.idle)
                    .await
                    .map_err(|_| DeliverError::ClientGone)?;
                Ok(true)
            }
        }
    }

    fn head(&mut self, fields: &http1::ResponseFields<'_, '_>) {
        self.head = Some(response_head(fields));
    }

    async fn deliver<R: AsyncRead + Unpin + crate::splice::SpliceEnd>(
        &mut self,
        resp: &ResponseHead,
        bbuf: &mut Buf,
        src: &mut R,
    ) -> Result<bool, DeliverError> {
        let Some(response) = self.head.take() else {
            debug_assert!(false, "deliver without head");
            return Err(DeliverError::Backend);
        };
        bbuf.consume(resp.head_len);
        let empty = matches!(resp.framing, Framing::Empty | Framing::Length(0));
        let mut send = self
            .respond
            .send_response(response, empty)
            .map_err(|_| DeliverError::ClientGone)?;
        self.trace.response_started();
        if empty {
            return Ok(true);
        }
        self.trace.add_local_out(bbuf.len());
        let fits = matches!(resp.framing, Framing::Length(n) if n <= bbuf.len() as u64);
        if !fits {
            // A body to stream: a full-size buffer from the shard's pool, with what was
            // read past the head.
            let mut big = StreamBufs::take();
            big.put(bbuf.data());
            std::mem::swap(bbuf, &mut big);
            // `big` is the head buffer now: back to its pool.
            StreamBufs::give_back(big);
        }
        let mut src = CountingRead::new(src, &self.trace.bytes_out);
        match stream_body(self.idle, resp.framing, &mut src, bbuf, &mut send).await {
            Ok(()) => Ok(true),
            Err(BodyErr::Client) => Err(DeliverError::ClientGone),
            Err(BodyErr::Backend(why)) => {
                tracing::debug!(error = %why, "backend response body failed");
                send.send_reset(Reason::INTERNAL_ERROR);
                Err(DeliverError::Backend)
            }
        }
    }
}

enum BodyErr {
    Client,
    Backend(io::Error),
}

/// Runs `fut` unless the client resets the stream first: `None`.
async fn or_reset<F: std::future::Future>(
    fut: F,
    send: &mut SendStream<Bytes>,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        send.poll_reset(cx).map(|_| None)
    })
    .await
}

/// Reads more of a response body into the (empty) `bbuf`, unless the client resets the
/// stream first. EOF is an error (the body ended early).
async fn read_more<R: AsyncRead + Unpin>(
    bbuf: &mut Buf,
    src: &mut R,
    send: &mut SendStream<Bytes>,
) -> Result<(), BodyErr> {
    bbuf.clear();
    match or_reset(bbuf.fill_from(src), send).await {
        None => Err(BodyErr::Client),
        Some(Ok(0)) => Err(BodyErr::Backend(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend response body ended early",
        ))),
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(BodyErr::Backend(e)),
    }
}

/// Sends one piece of a response body. A client that gives no window for `idle` (it
/// stopped reading) gets RST_STREAM, as an HTTP/1.1 client that stops reading is closed.
async fn send_piece(
    send: &mut SendStream<Bytes>,
    piece: Bytes,
    end: bool,
    idle: Duration,
) -> Result<(), BodyErr> {
    // Most pieces go out at once (the window has room): no timer is made for those.
    let sent = {
        let mut now = std::pin::pin!(h2s::send_body(send, piece, end));
        match futures_lite::future::poll_once(now.as_mut()).await {
            Some(r) => Ok(r),
            None => glommio::timer::timeout(idle, async { Ok(now.await) }).await,
        }
    };
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(BodyErr::Client),
        Err(_) => {
            send.send_reset(Reason::CANCEL);
            Err(BodyErr::Client)
        }
    }
}

/// Streams a response body from the backend to the client stream.
async fn stream_body<R: AsyncRead + Unpin>(
    idle: Duration,
    framing: Framing,
    src: &mut R,
    bbuf: &mut Buf,
    send: &mut SendStream<Bytes>,
) -> Result<(), BodyErr> {
    match framing {
        Framing::Empty => send_piece(send, Bytes::new(), true, idle).await,
        Framing::Length(mut left) => {
            while left > 0 {
                if bbuf.is_empty() {
                    read_more(bbuf, src, send).await?;
                }
                let take = (bbuf.len() as u64).min(left) as usize;
                left -= take as u64;
                let piece = Bytes::copy_from_slice(&bbuf.data()[..take]);
                bbuf.consume(take);
                send_piece(send, piece, left == 0, idle).await?;
            }
            Ok(())
        }
        Framing::Chunked => {
            let mut scanner = ChunkedScanner::new();
            let mut plain = Vec::with_capacity(BUF_SIZE);
            let mut section = Vec::new();
            loop {
                if bbuf.is_empty() {
                    read_more(bbuf, src, send).await?;
                }
                plain.clear();
                let (used, done) = scanner
                    .feed_with_trailers(
                        bbuf.data(),
                        |d| plain.extend_from_slice(d),
                        |b| section.push(b),
                    )
                    .map_err(|e| BodyErr::Backend(io::Error::other(e)))?;
                bbuf.consume(used);
                // The backend's trailer section, if any, ends the stream as HTTP/2
                // trailers (a HEADERS frame after the DATA).
                let fields = if done {
                    trailers::parse(&section)
                } else {
                    Default::default()
                };
                let end = done && fields.is_empty();
                if end || !plain.is_empty() {
                    let piece = Bytes::copy_from_slice(&plain);
                    send_piece(send, piece, end, idle).await?;
                }
                if done {
                    if !end {
                        send.send_trailers(fields).map_err(|_| BodyErr::Client)?;
                    }
                    return Ok(());
                }
            }
        }
        Framing::UntilClose => loop {
            if bbuf.is_empty() {
                match read_more(bbuf, src, send).await {
                    Ok(()) => {}
                    Err(BodyErr::Backend(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return send_piece(send, Bytes::new(), true, idle).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            let piece = Bytes::copy_from_slice(bbuf.data());
            bbuf.clear();
            send_piece(send, piece, false, idle).await?;
        },
    }
}

/// Adds this hop to a response's `Via` (after the entries already there, in one field,
/// as `write_response_downstream` does for a response read as HTTP/1.1).
fn add_via(headers: &mut http::HeaderMap) {
    let via = http::header::VIA;
    if !headers.contains_key(&via) {
        headers.insert(via, HeaderValue::from_static(VIA));
        return;
    }
    let mut value = Vec::new();
    for v in headers.get_all(&via).iter().filter(|v| !v.is_empty()) {
        value.extend_from_slice(v.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(VIA.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&value) {
        headers.insert(via, v);
    }
}

/// The HTTP/2 response head for a backend response, from the parse that checked it: the
/// fields HTTP/1.1 would forward (same rules, same code: `ResponseFields::write_downstream`,
/// into [`H2Head`] instead of text), less connection-specific ones.
fn response_head(parsed: &http1::ResponseFields<'_, '_>) -> Response<()> {
    let mut out = H2Head {
        resp: Response::new(()),
        values: fields::Values::new(parsed.bytes()),
    };
    *out.resp.status_mut() = StatusCode::BAD_GATEWAY;
    parsed.write_downstream(VIA, true, 1, &mut out);
    out.resp
}

/// Builds an HTTP/2 response head from the fields the HTTP/1.1 rules decide on.
struct H2Head<'a> {
    resp: Response<()>,
    /// The backend's head as read: field values that are slices of it become slices of
    /// one shared copy, one allocation for the head instead of one per value.
    values: fields::Values<'a>,
}

impl H2Head<'_> {
    fn value(&mut self, v: &[u8]) -> Option<HeaderValue> {
        if v == VIA.as_bytes() {
            return Some(HeaderValue::from_static(VIA));
        }
        self.values.value(v)
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        let Some(name) = fields::name(name) else {
            return;
        };
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return;
        }
        if let Some(value) = self.value(value) {
            self.resp.headers_mut().append(name, value);
        }
    }
}

impl http1::HeadOut for H2Head<'_> {
    fn status_line(&mut self, status: u16, _reason: &[u8]) {
        *self.resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    }

    fn field(&mut self, name: &[u8], parts: &[&[u8]]) {
        let mut filled = parts.iter().filter(|p| !p.is_empty());
        match (filled.next(), filled.next()) {
            (None, _) => self.push(name, b""),
            (Some(one), None) => self.push(name, one),
            _ => self.push(name, &parts.concat()),
        }
    }

    fn combined(
        &mut self,
        canonical: &[u8],
        headers: &[httparse::Header<'_>],
        name: &str,
        ours: &[&[u8]],
    ) {
        let mut value = Vec::new();
        for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
            if !h.value.is_empty() {
                value.extend_from_slice(h.value);
                value.extend_from_slice(b", ");
            }
        }
        for part in ours {
            value.extend_from_slice(part);
        }
        self.push(canonical, &value);
    }

    fn end(&mut self) {}
}

/// Answers a stream without a backend: a short text body, like HTTP/1's canned errors.
fn answer_locally(respond: &mut SendResponse<Bytes>, status: u16, is_head: bool) -> u16 {
    let reason = http1::reason_phrase(status);
    let body = Bytes::from(format!("{reason}\n"));
    let mut response = Response::new(());
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    match respond.send_response(response, is_head) {
        Ok(mut send) if !is_head => {
            // Tiny: fits any window h2 gives a new stream, and h2 queues it regardless.
            let _ = send.send_data(body, true);
            status
        }
        Ok(_) => status,
        Err(_) => 499,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_http1::Method;

    fn head_of(req: http::Request<()>, has_body: bool) -> String {
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        assert!(build_h1_head(&parts, has_body, &mut out));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn h1_head_from_h2_request() {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://a.example:8080/p?q=1")
            .header("cookie", "a=1")
            .header("x-y", "z")
            .header("cookie", "b=2")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let text = head_of(req, true);
        assert_eq!(
            text,
            "POST /p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\ncookie: a=1; b=2\r\nx-y: z\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let h = http1::parse_request(text.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let req = http::Request::builder()
            .method("PUT")
            .uri("http://a/")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let text = head_of(req, true);
        let h = http1::parse_request(text.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        let req = http::Request::builder().uri("/x").body(()).unwrap();
        let (parts, ()) = req.into_parts();
        assert!(!build_h1_head(&parts, false, &mut Vec::new()));
    }

    #[test]
    fn via_is_added_after_the_backends_entries() {
        let mut h = http::HeaderMap::new();
        add_via(&mut h);
        assert_eq!(h["via"], "2.0 ringway");
        let mut h = http::HeaderMap::new();
        h.append("via", HeaderValue::from_static("1.1 a"));
        h.append("via", HeaderValue::from_static("2 b"));
        h.append("server", HeaderValue::from_static("o"));
        add_via(&mut h);
        assert_eq!(h.get_all("via").iter().count(), 1);
        assert_eq!(h["via"], "1.1 a, 2 b, 2.0 ringway");
        assert_eq!(h["server"], "o");
    }

    #[test]
    fn response_head_drops_connection_specific_fields() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nKeep-Alive: t=5\r\n\
            Transfer-Encoding: chunked\r\nUpgrade: foo\r\nServer: o\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n";
        let (_, r) = http1::parse_response_with(raw, Method::Get, 8192, response_head)
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), 200);
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        for gone in CONNECTION_SPECIFIC.iter().chain(&["x-hop"]) {
            assert!(!names.contains(gone), "{gone} in {names:?}");
        }
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(r.headers()["via"], "2.0 ringway");
        assert_eq!(r.headers()["server"], "o");
    }
}
