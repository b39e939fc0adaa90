//! h2c mode: serves one accepted connection as HTTP/2 with prior knowledge, with the
//! `h2` crate on glommio (`ringway_h2mux`'s handshake and flow-controlled `send_body`).
//!
//! Every stream gets the same [`Route`]s as in HTTP/1.1 mode, as far as they apply: the
//! default body and `/size/N` with `content-length`, `/chunked/N` as DATA frames of at
//! most [`CHUNK`] bytes without `content-length` (HTTP/2 has no chunked coding), `/echo`
//! streaming the request body (and its trailers) back as it arrives, `/headers` (the
//! request head as text, pseudo-headers first, and the request's trailers after the body
//! was read), `/delay/MS`, `/status/CODE`, `/stats`.
//! What is about connections in HTTP/1.1 becomes what HTTP/2 has for it: `/close` answers
//! and then sends GOAWAY (the connection ends once its open streams are done), `/reset`
//! resets its stream with `INTERNAL_ERROR`, `/garbage` ends the connection with
//! `GOAWAY(PROTOCOL_ERROR)`; `close_after` sends GOAWAY after that many streams and
//! `idle_close` closes a connection without open streams. Every response carries
//! `x-origin-conn` and `x-origin-req` (the stream's 1-based index on its connection).
//!
//! Counting: a stream is a request (`requests_total`); one that opens while another of its
//! connection is still open counts as `pipelined` (multiplexed); `max_open_per_conn` is the
//! most streams open at once on one connection; `cancelled` counts streams the client reset
//! before their response was complete. Nothing a client sends can panic the origin: a
//! broken preface or a protocol error ends that connection only.

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::net::TcpStream;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use ringway_h2mux::server::{self as h2s, Settings};

use super::payload::{Cycle, SLICE_MAX};
use super::response;
use super::route::{route, Route};
use super::shard::ShardCtx;
use super::stats::OpenGuard;

/// Largest DATA piece of a `/chunked/N` response (like the HTTP/1.1 mode's chunks).
const CHUNK: usize = 16 << 10;
/// How long a connection that sent GOAWAY keeps serving its open streams at most.
const FINISH: Duration = Duration::from_secs(30);
/// How long a connection the origin ended keeps its socket open after the GOAWAY.
const LINGER: Duration = Duration::from_millis(500);

const X_ORIGIN_CONN: HeaderName = HeaderName::from_static("x-origin-conn");
const X_ORIGIN_REQ: HeaderName = HeaderName::from_static("x-origin-req");

/// What a connection's streams share with its accept loop.
struct ConnState {
    /// Streams open now.
    open: Cell<u64>,
    /// When the last stream ended (or the connection started).
    idle_since: Cell<Instant>,
}

/// Counts a stream open on its connection until dropped.
struct StreamGuard(Rc<ConnState>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.idle_since.set(Instant::now());
    }
}

/// What `h2`'s `accept` gives: the next stream, the connection's end, or its error.
type Accepted = Option<Result<(Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;

/// One step of the accept loop (a transient value: not boxed, so accepting a stream
/// allocates nothing here).
#[allow(clippy::large_enum_variant)]
enum Step {
    Stream(Accepted),
    Idle,
    Finished,
}

/// Serves `stream` as h2c until it closes.
pub(crate) async fn serve(stream: TcpStream, ctx: Rc<ShardCtx>) {
    let counters = ctx.counters();
    counters.connection_opened();
    let _open = OpenGuard(counters);
    let id = ctx.stats.next_conn_id();
    let settings = Settings {
        max_concurrent_streams: ctx.cfg.max_concurrent_streams,
        ..Settings::default()
    };
    // A client that never sends its preface is closed like an idle one.
    let handshake = async { Some(h2s::handshake(stream, Vec::new(), &settings).await) };
    let handshake = match ctx.cfg.idle_close {
        Some(idle) => {
            future::or(handshake, async {
                glommio::timer::sleep(idle).await;
                None
            })
            .await
        }
        None => handshake.await,
    };
    let Some(Ok(mut conn)) = handshake else {
        return;
    };
    let state = Rc::new(ConnState {
        open: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
    });
    let mut nstreams = 0u64;
    // Set once GOAWAY was sent: the open streams get until then to finish.
    let mut finish_by: Option<Instant> = None;
    loop {
        let idle = ctx.cfg.idle_close.filter(|_| finish_by.is_none());
        let step = future::or(
            async { Step::Stream(conn.accept().await) },
            timers(&state, idle, finish_by),
        )
        .await;
        let (req, respond) = match step {
            Step::Stream(Some(Ok(pair))) => pair,
            Step::Stream(Some(Err(_)) | None) if finish_by.is_some() => {
                // We ended it: `h2` has sent its GOAWAY and a FIN. Keep the socket open
                // a while, so what the client still sends does not turn our close into
                // a reset that could destroy the GOAWAY before the client reads it.
                glommio::timer::sleep(LINGER).await;
                return;
            }
            Step::Stream(Some(Err(_)) | None) | Step::Finished => return,
            Step::Idle => {
                // No stream is open: nothing to finish, GOAWAY and close now.
                conn.abrupt_shutdown(Reason::NO_ERROR);
                finish_by = Some(Instant::now() + FINISH);
                continue;
            }
        };
        nstreams += 1;
        let open_before = state.open.get();
        counters.request(nstreams, open_before > 0);
        counters.open_on_conn(open_before + 1);
        state.open.set(open_before + 1);
        let guard = StreamGuard(state.clone());
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let route = route(target);
        match route {
            Route::Garbage => {
                // The HTTP/2 form of "the server sent garbage": a connection error.
                drop(guard);
                drop(respond);
                conn.abrupt_shutdown(Reason::PROTOCOL_ERROR);
                finish_by.get_or_insert(Instant::now() + FINISH);
                continue;
            }
            Route::Close => {
                conn.graceful_shutdown();
                finish_by.get_or_insert(Instant::now() + FINISH);
            }
            _ => {}
        }
        if ctx.cfg.close_after.is_some_and(|n| nstreams >= n) && finish_by.is_none() {
            conn.graceful_shutdown();
            finish_by = Some(Instant::now() + FINISH);
        }
        let tags = Tags {
            conn_id: id,
            req_index: nstreams,
        };
        let ctx = ctx.clone();
        glommio::spawn_local(async move {
            let _guard = guard;
            if let Err(Cancelled) = serve_stream(req, respond, route, tags, &ctx).await {
                ctx.counters().cancelled();
            }
        })
        .detach();
    }
}

/// Resolves when the connection has been idle for `idle` (with no stream open), or when
/// `finish_by` has passed; never when neither is set.
async fn timers(state: &ConnState, idle: Option<Duration>, finish_by: Option<Instant>) -> Step {
    loop {
        let now = Instant::now();
        let mut wake: Option<Instant> = finish_by;
        if let Some(at) = finish_by {
            if now >= at {
                return Step::Finished;
            }
        }
        if let Some(idle) = idle {
            let at = state.idle_since.get() + idle;
            if state.open.get() == 0 && now >= at {
                return Step::Idle;
            }
            // With streams open, look again after a whole idle period.
            let at = if state.open.get() == 0 {
                at
            } else {
                now + idle
            };
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        match wake {
            Some(at) => glommio::timer::sleep(at.saturating_duration_since(now)).await,
            None => future::pending::<()>().await,
        }
    }
}

/// The identity of one response.
#[derive(Clone, Copy)]
struct Tags {
    conn_id: u64,
    req_index: u64,
}

/// The client reset the stream (or the connection failed) before the response was done.
struct Cancelled;

impl From<h2::Error> for Cancelled {
    fn from(_: h2::Error) -> Self {
        Cancelled
    }
}

impl From<h2s::ServerError> for Cancelled {
    fn from(_: h2s::ServerError) -> Self {
        Cancelled
    }
}

fn head(code: u16, tags: Tags, length: Option<u64>) -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if let Some(n) = length {
        h.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    h.insert(X_ORIGIN_CONN, HeaderValue::from(tags.conn_id));
    h.insert(X_ORIGIN_REQ, HeaderValue::from(tags.req_index));
    resp
}

/// Sleeps for `d`, or fails as soon as the client resets the stream.
async fn sleep_unless_reset(
    respond: &mut SendResponse<Bytes>,
    d: Duration,
) -> Result<(), Cancelled> {
    future::or(
        async {
            glommio::timer::sleep(d).await;
            Ok(())
        },
        async {
            let _ = poll_fn(|cx| respond.poll_reset(cx)).await;
            Err(Cancelled)
        },
    )
    .await
}

/// Reads and discards the request body (releasing its flow-control window as it goes);
/// returns its trailers, if any.
async fn drain(body: &mut RecvStream) -> Result<Option<HeaderMap>, Cancelled> {
    while let Some(data) = body.data().await {
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    Ok(body.trailers().await?)
}

/// Sends `len` bytes of `cycle` in pieces of at most `piece`, ending the stream.
async fn send_cycle(
    send: &mut SendStream<Bytes>,
    cycle: &Cycle,
    len: u64,
    piece: usize,
) -> Result<(), Cancelled> {
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(piece as u64) as usize;
        h2s::send_body(send, cycle.bytes(sent, n), sent + n as u64 == len).await?;
        sent += n as u64;
    }
    Ok(())
}

/// Answers with `code`, `length` and `body` in one go (`head_only`: without the body).
fn respond_bytes(
    respond: &mut SendResponse<Bytes>,
    code: u16,
    tags: Tags,
    content_type: Option<&'static str>,
    body: Bytes,
    head_only: bool,
) -> Result<Option<(SendStream<Bytes>, Bytes)>, Cancelled> {
    let bodiless = response::bodiless(code);
    let mut resp = head(code, tags, (!bodiless).then_some(body.len() as u64));
    if let Some(ct) = content_type {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    let end = bodiless || head_only || body.is_empty();
    let send = respond.send_response(resp, end)?;
    Ok((!end).then_some((send, body)))
}

/// The request head as text: pseudo-headers, then each field as `name: value`, then the
/// body's trailers, if any, each as `trailer name: value`.
fn render_head(
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
) -> Bytes {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, ":method: {method}");
    if let Some(s) = uri.scheme_str() {
        let _ = writeln!(out, ":scheme: {s}");
    }
    if let Some(a) = uri.authority() {
        let _ = writeln!(out, ":authority: {a}");
    }
    let _ = writeln!(
        out,
        ":path: {}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    for (name, value) in headers {
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    for (name, value) in trailers.into_iter().flatten() {
        let _ = writeln!(
            out,
            "trailer {name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    Bytes::from(out)
}

async fn serve_stream(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    route: Route,
    tags: Tags,
    ctx: &ShardCtx,
) -> Result<(), Cancelled> {
    let (parts, mut body) = req.into_parts();
    if ctx.cfg.refuse_streams {
        respond.send_reset(Reason::REFUSED_STREAM);
        return Ok(());
    }
    if route == Route::Reset {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return Ok(());
    }
    let head_only = parts.method == Method::HEAD;
    let expects_continue = parts
        .headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && !body.is_end_stream() {
        let mut cont = Response::new(());
        *cont.status_mut() = StatusCode::CONTINUE;
        respond.send_informational(cont)?;
    }
    if route == Route::Echo {
        return echo(&parts.headers, body, respond, tags, ctx, head_only).await;
    }
    let trailers = drain(&mut body).await?;
    if let Some(delay) = ctx.cfg.delay {
        sleep_unless_reset(&mut respond, delay).await?;
    }
    let text =
        |code: u16, ct: Option<&'static str>, b: Bytes, respond: &mut SendResponse<Bytes>| {
            respond_bytes(respond, code, tags, ct, b, head_only)
        };
    let pending = match route {
        Route::Fixed | Route::Close | Route::Delay(_) => {
            if let Route::Delay(ms) = route {
                sleep_unless_reset(&mut respond, Duration::from_millis(ms)).await?;
            }
            let len = ctx.cfg.body_size as u64;
            let end = head_only || len == 0;
            let mut send = respond.send_response(head(200, tags, Some(len)), end)?;
            if !end {
                send_cycle(&mut send, &ctx.default_body, len, SLICE_MAX).await?;
            }
            None
        }
        Route::Size(n) | Route::Chunked(n) => {
            let (length, piece) = match route {
                Route::Size(_) => (Some(n), SLICE_MAX),
                _ => (None, CHUNK),
            };
            let end = head_only || n == 0;
            let mut send = respond.send_response(head(200, tags, length), end)?;
            if !end {
                send_cycle(&mut send, &ctx.pattern, n, piece).await?;
            }
            None
        }
        Route::Headers => {
            let b = render_head(&parts.method, &parts.uri, &parts.headers, trailers.as_ref());
            text(200, Some("text/plain"), b, &mut respond)?
        }
        Route::Status(code) => {
            let b = Bytes::from(format!("{code} {}\n", response::reason(code)));
            text(code, None, b, &mut respond)?
        }
        Route::BadStatus => {
            let b = Bytes::from_static(b"bad status code: use /status/200..599\n");
            text(400, None, b, &mut respond)?
        }
        Route::Stats | Route::StatsReset => {
            let b = if route == Route::StatsReset {
                ctx.stats.reset();
                String::from("{\"reset\":true}\n")
            } else {
                format!("{}\n", ctx.stats.snapshot())
            };
            text(200, Some("application/json"), Bytes::from(b), &mut respond)?
        }
        Route::Echo | Route::Reset | Route::Garbage => None,
    };
    if let Some((mut send, b)) = pending {
        h2s::send_body(&mut send, b, true).await?;
    }
    Ok(())
}

/// `/echo`: the response head goes out before the body is read, then each DATA piece as
/// it arrives (its window released only once it is sent on, so a slow reader slows the
/// sender), then the request's trailers, if any, as the response's.
async fn echo(
    headers: &HeaderMap,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    tags: Tags,
    ctx: &ShardCtx,
    head_only: bool,
) -> Result<(), Cancelled> {
    if let Some(delay) = ctx.cfg.delay {
        sleep_unless_reset(&mut respond, delay).await?;
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let empty = body.is_end_stream();
    let length = if empty { Some(0) } else { length };
    let end = empty || head_only;
    let mut send = respond.send_response(head(200, tags, length), end)?;
    if head_only {
        return drain(&mut body).await.map(drop);
    }
    if end {
        return Ok(());
    }
    while let Some(data) = body.data().await {
        let data = data?;
        let n = data.len();
        if n > 0 {
            h2s::send_body(&mut send, data, false).await?;
        }
        let _ = body.flow_control().release_capacity(n);
    }
    match body.trailers().await? {
        Some(trailers) => send.send_trailers(trailers)?,
        None => send.send_data(Bytes::new(), true)?,
    }
    Ok(())
}
