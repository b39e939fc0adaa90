//! The HTTP/2 front (h2c, prior knowledge): a client whose first bytes are the HTTP/2
//! preface is served here, on the same listeners as HTTP/1.1, and each of its streams is
//! proxied to the backends over the HTTP/1.1 backend path and pool.
//!
//! `proxy.rs` reads a connection's first bytes; when they are the preface it hands the
//! stream and those bytes to [`serve`] (the connection stays counted in `client_conns`
//! by `serve_client`). [`serve`] runs the `h2` server (`ringway_h2mux::server`) and
//! spawns one task per stream, up to SETTINGS_MAX_CONCURRENT_STREAMS (256). A stream:
//!
//! 1. becomes an HTTP/1.1 request head: `:method`, `:path`, `Host` from `:authority`,
//!    the other fields (cookies folded into one line, RFC 9113 §8.2.3) and the body's
//!    framing (its `content-length`, else `Transfer-Encoding: chunked` when a body follows
//!    the HEADERS). That head goes through `http1::parse_request` and
//!    `http1::write_request_upstream`, exactly as an HTTP/1.1 request would: routing, the
//!    Host and framing checks, hop-by-hop removal, `X-Forwarded-For`/`-Proto` and `Via`
//!    are then the same code for both protocols, never two copies that drift apart. The
//!    cost is one small head built and parsed per stream.
//! 2. takes a backend connection (`Shard::acquire`, `first` only for the connection's
//!    first stream), writes the head, and streams the request body (chunked-encoded or by
//!    length) while the response is read (a backend may answer before the body ends);
//!    flow-control capacity is released to the client as bytes reach the backend.
//! 3. reads the response head with the HTTP/1 parser, re-emits it through
//!    `http1::write_response_downstream` (same hop-by-hop and `Via` rules) and sends it as
//!    HTTP/2 headers without connection-specific fields, then streams the body (chunked
//!    decoded, trailers dropped) as flow control allows, and gives the connection back.
//!
//! Errors before the response head become responses with HTTP/1's statuses (400, 404,
//! 431, 502, 503, 504); after it, RST_STREAM. A client's RST_STREAM abandons the backend
//! connection. A draining shard or an idle connection (`--timeout-client-idle` without
//! streams) sends GOAWAY. Nothing from the peer can panic here.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::IpAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use ringway_h2mux::server::{self as h2s, Settings};

use crate::backend::{AcquireError, BackendConn};
use crate::buf::Buf;
use crate::http1::{self, ChunkedScanner, Framing, HeadError, Method, ResponseHead};
use crate::proxy::{read_response_head, InflightGuard, RespErr};
use crate::shard::Shard;

/// This hop's `Via` entry for a request received over HTTP/2.
const VIA: &str = "2.0 ringway";
/// How often a connection looks at the shard's drain flag and its own idleness.
const TICK: Duration = Duration::from_millis(250);
/// A connection that sent GOAWAY and has no streams left is closed after this long even
/// if the client never acknowledges.
const GOAWAY_LINGER: Duration = Duration::from_secs(1);
const BUF_SIZE: usize = 16 << 10;
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
    shard: Rc<Shard>,
    peer: IpAddr,
    /// No stream has asked for a backend connection yet (HAProxy's "first request").
    first: Cell<bool>,
    /// Streams being served.
    active: Cell<usize>,
    /// When `active` last dropped to zero (or the connection started).
    idle_since: Cell<Instant>,
}

/// Counts an HTTP/2 connection for the drain.
struct H2ConnGuard(Rc<Shard>);
impl Drop for H2ConnGuard {
    fn drop(&mut self) {
        self.0.h2_conns.set(self.0.h2_conns.get().saturating_sub(1));
    }
}

/// Counts a stream being served on its connection.
struct StreamGuard(Rc<ConnCtx>);
impl Drop for StreamGuard {
    fn drop(&mut self) {
        let n = self.0.active.get().saturating_sub(1);
        self.0.active.set(n);
        if n == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

/// Serves one HTTP/2 connection whose first bytes (`buffered`, the preface or part of
/// it) were already read from `stream`.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: IpAddr, buffered: Vec<u8>) {
    shard.h2_conns.set(shard.h2_conns.get() + 1);
    let _h2_guard = H2ConnGuard(shard.clone());
    let cfg = shard.config();
    let (client_head, client_idle) = (cfg.timeouts.client_head, cfg.timeouts.client_idle);
    // h2 reads whenever it likes; only a stuck write is bounded by the socket.
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(client_idle));
    let _ = stream.set_nodelay(true);
    let settings = Settings {
        max_header_list_size: u32::try_from(cfg.max_head).unwrap_or(u32::MAX),
        ..Settings::default()
    };
    let handshake = glommio::timer::timeout(client_head, async {
        Ok(h2s::handshake(stream, buffered, &settings).await)
    })
    .await;
    let mut conn = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            shard.metrics.borrow_mut().c.bad_request += 1;
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            shard.metrics.borrow_mut().c.head_timeout += 1;
            return;
        }
    };
    let ctx = Rc::new(ConnCtx {
        shard: shard.clone(),
        peer,
        first: Cell::new(true),
        active: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
    });
    let mut goaway_at: Option<Instant> = None;
    loop {
        if goaway_at.is_none() {
            let idle = ctx.active.get() == 0 && ctx.idle_since.get().elapsed() >= client_idle;
            if shard.draining.get() || idle {
                conn.graceful_shutdown();
                goaway_at = Some(Instant::now());
            }
        } else if goaway_at.is_some_and(|t| t.elapsed() >= GOAWAY_LINGER) && ctx.active.get() == 0 {
            return;
        }
        let next = futures_lite::future::or(async { Some(conn.accept().await) }, async {
            glommio::timer::sleep(TICK).await;
            None
        })
        .await;
        match next {
            None => {}
            Some(None) => return,
            Some(Some(Ok((req, respond)))) => {
                ctx.active.set(ctx.active.get() + 1);
                let guard = StreamGuard(ctx.clone());
                glommio::spawn_local(serve_stream(guard, req, respond)).detach();
            }
            Some(Some(Err(e))) => {
                // NotConnected after the client closed is a normal end.
                let normal_close =
                    matches!(e.get_io(), Some(io) if io.kind() == io::ErrorKind::NotConnected);
                if !normal_close {
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
    let ctx = guard.0.clone();
    let shard = ctx.shard.clone();
    let start = Instant::now();
    shard.metrics.borrow_mut().c.requests += 1;
    shard.inflight.set(shard.inflight.get() + 1);
    let status = {
        let _inflight = InflightGuard(shard.clone());
        handle(&ctx, req, &mut respond).await
    };
    let mut m = shard.metrics.borrow_mut();
    // 499: the client went away; nothing was sent, nothing to count as a response.
    if status != 499 {
        m.record_status(status);
    }
    let us = start.elapsed().as_micros() as u64;
    let _ = m.latency.record(us.max(1));
    drop(m);
    drop(guard);
}

/// Why the request body could not be sent.
enum UploadError {
    /// The client reset the stream or broke its framing.
    Client,
    /// The backend stopped reading.
    Backend(io::Error),
}

/// Why a response could not be relayed.
enum RelayError {
    /// Nothing was sent to the client yet: answer with an error status.
    BeforeHead(RespErr),
    /// The backend answered 101, which has no HTTP/2 equivalent.
    Switching,
    /// The client reset the stream (or the connection is gone).
    ClientGone,
    /// The response started and then the backend failed: RST_STREAM.
    AfterHead(u16),
}

/// Proxies one stream; returns the status for the metrics (499 when the client left).
async fn handle(
    ctx: &Rc<ConnCtx>,
    req: http::Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
) -> u16 {
    let shard = ctx.shard.clone();
    let cfg = shard.config();
    let (parts, mut body) = req.into_parts();
    let has_body = !body.is_end_stream();
    let is_head = parts.method == http::Method::HEAD;

    if parts.method == http::Method::CONNECT {
        // No tunnels over HTTP/2 streams (yet); h2 did not enable extended CONNECT.
        shard.metrics.borrow_mut().c.bad_request += 1;
        return answer_locally(respond, 501, is_head);
    }
    let mut h1 = Vec::with_capacity(512);
    if !build_h1_head(&parts, has_body, &mut h1) {
        shard.metrics.borrow_mut().c.bad_request += 1;
        return answer_locally(respond, 400, is_head);
    }
    drop(parts);
    let head = match http1::parse_request(&h1, cfg.max_head) {
        Ok(Some(h)) => h,
        Ok(None) | Err(HeadError::TooLarge) => {
            shard.metrics.borrow_mut().c.head_too_large += 1;
            return answer_locally(respond, 431, is_head);
        }
        Err(e) => {
            shard.metrics.borrow_mut().c.bad_request += 1;
            tracing::debug!(peer = %ctx.peer, error = %e, "bad HTTP/2 request");
            return answer_locally(respond, e.status(), is_head);
        }
    };
    let backend = shard
        .shared
        .router
        .route(head.host.clone().map(|r| &h1[r]), &h1[head.path.clone()]);
    let Some(backend) = backend else {
        shard.metrics.borrow_mut().c.no_route += 1;
        return answer_locally(respond, 404, is_head);
    };
    let server = shard.choose_server(backend);
    let mut upstream = Vec::with_capacity(h1.len() + 128);
    http1::write_request_upstream(
        &h1,
        &head,
        &http1::Forwarded {
            client_ip: ctx.peer,
            proto: "http",
            via: VIA,
        },
        &mut upstream,
    );
    let first = ctx.first.replace(false);
    let backend_timeout = cfg.timeouts.backend;
    let mut bbuf = Buf::with_capacity(BUF_SIZE);
    let mut retried = false;

    loop {
        let (mut bc, reused) = match shard.acquire(server, first, retried).await {
            Ok(x) => x,
            Err(e) => {
                if let AcquireError::Refused(err) = &e {
                    tracing::debug!(error = %err, "backend connect refused");
                }
                return answer_locally(respond, e.status(), is_head);
            }
        };
        bc.begin_request(backend_timeout);
        bbuf.clear();
        let retryable = reused && !retried && !has_body && head.method.is_idempotent();

        if let Err(e) = bc.stream.write_all(&upstream).await {
            shard.release(bc, false);
            if retryable {
                retried = true;
                shard.metrics.borrow_mut().c.retries += 1;
                continue;
            }
            tracing::debug!(error = %e, "writing the request head to the backend failed");
            shard.metrics.borrow_mut().c.backend_errors += 1;
            return answer_locally(respond, 502, is_head);
        }

        // The body goes up on a second stream object (one side writes while the other
        // reads the response).
        let mut backend_w = if has_body {
            match crate::fd::duplicate(&bc.stream) {
                Ok(w) => {
                    let _ = w.set_write_timeout(Some(backend_timeout));
                    Some(w)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot duplicate a socket (fd limit?)");
                    shard.release(bc, false);
                    shard.metrics.borrow_mut().c.local_exhaustion += 1;
                    return answer_locally(respond, 503, is_head);
                }
            }
        } else {
            None
        };
        let (relayed, uploaded) = {
            let mut up = pin!(upload(
                cfg.timeouts.client_idle,
                &mut body,
                head.framing,
                backend_w.as_mut()
            ));
            let mut down = pin!(relay(&shard, head.method, &mut bc, &mut bbuf, respond));
            let mut up_done: Option<Result<(), UploadError>> = None;
            let relayed = poll_fn(|cx| {
                if up_done.is_none() {
                    if let Poll::Ready(r) = up.as_mut().poll(cx) {
                        up_done = Some(r);
                    }
                }
                if let Some(Err(UploadError::Client)) = &up_done {
                    return Poll::Ready(None);
                }
                down.as_mut().poll(cx).map(Some)
            })
            .await;
            (relayed, up_done)
        };
        drop(backend_w);
        let body_sent = matches!(uploaded, Some(Ok(())));
        match relayed {
            None => {
                // The client reset the stream or broke its body: abandon the exchange.
                shard.release(bc, false);
                shard.metrics.borrow_mut().c.client_aborts += 1;
                respond.send_reset(Reason::CANCEL);
                return 499;
            }
            Some(Ok((status, reusable))) => {
                shard.release(bc, reusable && body_sent);
                return status;
            }
            Some(Err(RelayError::BeforeHead(RespErr::NothingReceived(_)))) if retryable => {
                shard.release(bc, false);
                retried = true;
                shard.metrics.borrow_mut().c.retries += 1;
                continue;
            }
            Some(Err(RelayError::BeforeHead(RespErr::NothingReceived(e) | RespErr::Io(e)))) => {
                shard.release(bc, false);
                let status = if e.kind() == io::ErrorKind::TimedOut {
                    shard.metrics.borrow_mut().c.backend_timeouts += 1;
                    504
                } else {
                    shard.metrics.borrow_mut().c.backend_errors += 1;
                    502
                };
                if let Some(Err(UploadError::Backend(e))) = &uploaded {
                    tracing::debug!(error = %e, "backend stopped reading the request body");
                }
                tracing::debug!(error = %e, status, "backend failed before responding");
                return answer_locally(respond, status, is_head);
            }
            Some(Err(RelayError::BeforeHead(RespErr::Bad(e)))) => {
                tracing::debug!(error = %e, "backend sent a bad response head");
                shard.release(bc, false);
                shard.metrics.borrow_mut().c.backend_errors += 1;
                return answer_locally(respond, 502, is_head);
            }
            Some(Err(RelayError::Switching)) => {
                tracing::debug!("backend answered 101 to an HTTP/2 request");
                shard.release(bc, false);
                shard.metrics.borrow_mut().c.backend_errors += 1;
                return answer_locally(respond, 502, is_head);
            }
            Some(Err(RelayError::ClientGone)) => {
                shard.release(bc, false);
                shard.metrics.borrow_mut().c.client_aborts += 1;
                return 499;
            }
            Some(Err(RelayError::AfterHead(status))) => {
                shard.release(bc, false);
                shard.metrics.borrow_mut().c.backend_errors += 1;
                return status;
            }
        }
    }
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

/// Sends the request body to the backend (`dst`; `None` when there is none), releasing
/// flow-control capacity to the client as each piece is written. Trailers are ignored.
async fn upload(
    idle: Duration,
    body: &mut RecvStream,
    framing: Framing,
    dst: Option<&mut TcpStream>,
) -> Result<(), UploadError> {
    let Some(dst) = dst else { return Ok(()) };
    let chunked = framing == Framing::Chunked;
    let mut frame = Vec::new();
    loop {
        // A client that stops sending its body for `idle` is given up on, as in HTTP/1.1.
        let next = glommio::timer::timeout(idle, async { Ok(body.data().await) })
            .await
            .map_err(|_| UploadError::Client)?;
        let Some(data) = next else { break };
        let data = data.map_err(|_| UploadError::Client)?;
        let n = data.len();
        if n == 0 {
            continue;
        }
        if chunked {
            frame.clear();
            frame.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            frame.extend_from_slice(&data);
            frame.extend_from_slice(b"\r\n");
            dst.write_all(&frame).await.map_err(UploadError::Backend)?;
        } else {
            dst.write_all(&data).await.map_err(UploadError::Backend)?;
        }
        let _ = body.flow_control().release_capacity(n);
    }
    if chunked {
        dst.write_all(b"0\r\n\r\n")
            .await
            .map_err(UploadError::Backend)?;
    }
    Ok(())
}

/// Runs `fut` unless the client resets the stream first (`reset` polls for that): `None`.
async fn or_reset<F: Future>(
    fut: F,
    mut reset: impl FnMut(&mut Context<'_>) -> Poll<()>,
) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        reset(cx).map(|()| None)
    })
    .await
}

/// Reads once more from the backend into the (empty) `bbuf`; EOF is an error.
async fn fill(bbuf: &mut Buf, src: &mut TcpStream) -> io::Result<()> {
    bbuf.clear();
    match bbuf.fill_from(src).await {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend response body ended early",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads the backend's response head, sends it to the client as HTTP/2 and streams the
/// body. Returns the status and whether the backend connection may be reused.
async fn relay(
    shard: &Rc<Shard>,
    method: Method,
    bc: &mut BackendConn,
    bbuf: &mut Buf,
    respond: &mut SendResponse<Bytes>,
) -> Result<(u16, bool), RelayError> {
    let max_head = shard.config().max_head;
    let resp = or_reset(read_response_head(max_head, bc, bbuf, method), |cx| {
        respond.poll_reset(cx).map(|_| ())
    })
    .await
    .ok_or(RelayError::ClientGone)?
    .map_err(RelayError::BeforeHead)?;
    if resp.status == 101 {
        return Err(RelayError::Switching);
    }
    let response = response_head(bbuf.data(), &resp);
    bbuf.consume(resp.head_len);
    let empty = matches!(resp.framing, Framing::Empty | Framing::Length(0));
    let mut send = respond
        .send_response(response, empty)
        .map_err(|_| RelayError::ClientGone)?;
    let status = resp.status;
    let reusable = resp.keep_alive && resp.framing != Framing::UntilClose;
    if empty {
        return Ok((status, reusable && bbuf.is_empty()));
    }
    let idle = shard.config().timeouts.client_idle;
    match stream_body(idle, resp.framing, bc, bbuf, &mut send).await {
        Ok(()) => Ok((status, reusable && bbuf.is_empty())),
        Err(BodyError::Client) => Err(RelayError::ClientGone),
        Err(BodyError::Backend(why)) => {
            tracing::debug!(error = %why, "backend response body failed");
            send.send_reset(Reason::INTERNAL_ERROR);
            Err(RelayError::AfterHead(status))
        }
    }
}

enum BodyError {
    Client,
    Backend(io::Error),
}

/// Reads more of a response body, unless the client resets the stream first.
async fn read_more(
    bbuf: &mut Buf,
    src: &mut TcpStream,
    send: &mut SendStream<Bytes>,
) -> Result<(), BodyError> {
    match or_reset(fill(bbuf, src), |cx| send.poll_reset(cx).map(|_| ())).await {
        None => Err(BodyError::Client),
        Some(Err(e)) => Err(BodyError::Backend(e)),
        Some(Ok(())) => Ok(()),
    }
}

/// Sends one piece of a response body. A client that gives no window for `idle` (it
/// stopped reading) gets RST_STREAM, as an HTTP/1.1 client that stops reading is closed.
async fn send_piece(
    send: &mut SendStream<Bytes>,
    piece: Bytes,
    end: bool,
    idle: Duration,
) -> Result<(), BodyError> {
    let sent =
        glommio::timer::timeout(idle, async { Ok(h2s::send_body(send, piece, end).await) }).await;
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(BodyError::Client),
        Err(_) => {
            send.send_reset(Reason::CANCEL);
            Err(BodyError::Client)
        }
    }
}

/// Streams a response body from the backend to the client stream.
async fn stream_body(
    idle: Duration,
    framing: Framing,
    bc: &mut BackendConn,
    bbuf: &mut Buf,
    send: &mut SendStream<Bytes>,
) -> Result<(), BodyError> {
    match framing {
        Framing::Empty => send_piece(send, Bytes::new(), true, idle).await,
        Framing::Length(mut left) => {
            while left > 0 {
                if bbuf.is_empty() {
                    read_more(bbuf, &mut bc.stream, send).await?;
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
            loop {
                if bbuf.is_empty() {
                    read_more(bbuf, &mut bc.stream, send).await?;
                }
                plain.clear();
                let (used, done) = scanner
                    .feed_decoded(bbuf.data(), |d| plain.extend_from_slice(d))
                    .map_err(|e| BodyError::Backend(io::Error::other(e)))?;
                bbuf.consume(used);
                if done || !plain.is_empty() {
                    let piece = Bytes::copy_from_slice(&plain);
                    send_piece(send, piece, done, idle).await?;
                }
                if done {
                    return Ok(());
                }
            }
        }
        Framing::UntilClose => loop {
            if bbuf.is_empty() {
                match read_more(bbuf, &mut bc.stream, send).await {
                    Ok(()) => {}
                    Err(BodyError::Backend(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
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

/// The HTTP/2 response head for a backend response: the fields HTTP/1.1 would forward
/// (same rules: `write_response_downstream`), less connection-specific ones.
fn response_head(buf: &[u8], resp: &ResponseHead) -> Response<()> {
    let mut h1 = Vec::with_capacity(resp.head_len + 64);
    http1::write_response_downstream(buf, resp, VIA, true, 1, &mut h1);
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut slots = [httparse::EMPTY_HEADER; http1::MAX_HEADERS + 8];
    let mut parsed = httparse::Response::new(&mut slots);
    if !matches!(parsed.parse(&h1), Ok(httparse::Status::Complete(_))) {
        return response;
    }
    let headers = response.headers_mut();
    for h in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            continue;
        };
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(h.value) else {
            continue;
        };
        headers.append(name, value);
    }
    response
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
    fn response_head_drops_connection_specific_fields() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nKeep-Alive: t=5\r\n\
            Transfer-Encoding: chunked\r\nUpgrade: foo\r\nServer: o\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n";
        let h = http1::parse_response(raw, Method::Get, 8192)
            .unwrap()
            .unwrap();
        let r = response_head(raw, &h);
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
