//! Serves one accepted connection: reads request heads into one reusable buffer, streams
//! request bodies through it, dispatches on the [`Route`], writes responses and counts
//! everything in its shard's counters.
//!
//! The loop never holds more than one read buffer and one write buffer per connection,
//! and the `GET /` path allocates nothing: the head prefix is pre-rendered and the body
//! is copied from the shard's [`Cycle`]. Input never causes a panic: a malformed head or
//! body gets a 400 (when no response has started) and the connection is closed.

use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::chunked::{ChunkedDecoder, Step};
use super::payload::{Cycle, SLICE_MAX};
use super::request::{self, Framing, Parsed, RequestHead};
use super::response::{self, BodyFraming, Tags};
use super::route::Route;
use super::shard::ShardCtx;
use super::stats::OpenGuard;

/// Size of each connection's read buffer (with the write buffer's first capacity, what
/// an idle connection costs: ~33 KiB, so 10,000 connections fit in ~330 MiB).
const READ_BUF: usize = 32 << 10;
/// Longest request head accepted (answered 431 beyond); at most half of [`READ_BUF`].
const MAX_HEAD: usize = 16 << 10;
/// First capacity of the write buffer; it grows once, on a connection's first large
/// body, and is reused after that.
const WRITE_BUF: usize = 1 << 10;
/// Bodies up to this size are written together with the head in one write.
const INLINE_BODY: usize = 64 << 10;
/// Largest chunk of a `/chunked/N` response.
const CHUNK: usize = 16 << 10;
/// How long a closing connection waits for the client to finish sending.
const LINGER: Duration = Duration::from_secs(1);
/// How much a closing connection reads and discards at most.
const LINGER_BYTES: usize = 1 << 20;

/// How a connection ends.
enum End {
    /// The peer closed or failed: just drop the socket.
    Drop,
    /// We close: FIN first, then drain what the client still sends, so it sees our
    /// last response rather than a reset.
    Close,
    /// Close with RST (`SO_LINGER 0`).
    Reset,
}

/// What happens after a response.
enum Next {
    KeepAlive,
    End(End),
}

/// A failure while reading a request body.
enum BodyError {
    /// The body is malformed (bad chunk framing): the request cannot be trusted.
    Malformed,
    /// The socket failed or closed mid-body.
    Io,
}

/// The request body still to be read.
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

impl Body {
    fn new(framing: Framing) -> Body {
        match framing {
            Framing::Empty => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(ChunkedDecoder::default()),
        }
    }
}

/// Serves `stream` until it closes.
pub(crate) async fn serve(stream: TcpStream, ctx: Rc<ShardCtx>) {
    let counters = ctx.counters();
    counters.connection_opened();
    let _open = OpenGuard(counters);
    let id = ctx.stats.next_conn_id();
    if let Some(idle) = ctx.cfg.idle_close {
        if stream.set_read_timeout(Some(idle)).is_err() {
            return;
        }
    }
    let mut conn = Conn {
        stream,
        id,
        rbuf: vec![0; READ_BUF].into_boxed_slice(),
        start: 0,
        end: 0,
        wbuf: Vec::with_capacity(WRITE_BUF),
        raw_head: Vec::new(),
        nreq: 0,
        body_done: true,
        early: false,
        ctx: ctx.clone(),
    };
    match conn.run().await {
        End::Drop => {}
        End::Close => conn.lingering_close().await,
        End::Reset => {
            let _ = socket2_04::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
        }
    }
}

struct Conn {
    stream: TcpStream,
    id: u64,
    rbuf: Box<[u8]>,
    /// Unconsumed input is `rbuf[start..end]`.
    start: usize,
    end: usize,
    wbuf: Vec<u8>,
    /// The raw head of a `/headers` request.
    raw_head: Vec<u8>,
    /// Requests parsed so far on this connection.
    nreq: u64,
    /// The current request's body has been read to its end.
    body_done: bool,
    /// Input beyond the current request was waiting in the kernel before one of the
    /// current response's writes: the next request was sent before this response was
    /// fully written.
    early: bool,
    ctx: Rc<ShardCtx>,
}

impl Conn {
    async fn run(&mut self) -> End {
        loop {
            // Bytes already buffered, or seen waiting before a write, arrived while the
            // previous response was not fully written.
            let early_bytes = self.nreq > 0 && (self.end > self.start || self.early);
            self.early = false;
            let head = match self.read_head().await {
                Ok(Some(head)) => head,
                Ok(None) => return End::Drop,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return End::Close,
                Err(_) => return End::Drop,
            };
            let head = match head {
                Parsed::Complete(head) if head.skipped + head.len > MAX_HEAD => {
                    return self.refuse(431, "request head too large").await
                }
                Parsed::Complete(head) => head,
                Parsed::Invalid(why) => return self.refuse(400, why).await,
                Parsed::Partial => return self.refuse(431, "request head too large").await,
            };
            if head.route == Route::Headers {
                let at = self.start + head.skipped;
                self.raw_head.clear();
                self.raw_head
                    .extend_from_slice(&self.rbuf[at..at + head.len]);
            }
            self.start += head.skipped + head.len;
            self.body_done = head.framing == Framing::Empty;
            self.nreq += 1;
            self.ctx.counters().request(self.nreq, early_bytes);
            let forced_close = self.ctx.cfg.close_after.is_some_and(|n| self.nreq >= n);
            let keep_alive = head.keep_alive && !forced_close;
            match self.respond(&head, keep_alive).await {
                Ok(Next::KeepAlive) => {}
                Ok(Next::End(end)) => return end,
                Err(_) => return End::Drop,
            }
        }
    }

    /// Reads until a complete head is buffered. `Ok(None)`: the peer closed between
    /// requests. `Parsed::Partial` comes back only when the head exceeds [`MAX_HEAD`].
    async fn read_head(&mut self) -> io::Result<Option<Parsed>> {
        loop {
            if self.end > self.start {
                match request::parse(&self.rbuf[self.start..self.end]) {
                    Parsed::Partial if self.end - self.start < MAX_HEAD => {}
                    parsed => return Ok(Some(parsed)),
                }
            }
            self.make_room();
            let n = self.stream.read(&mut self.rbuf[self.end..]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.end += n;
        }
    }

    /// Ensures free space after `end`, moving unconsumed input to the front if needed.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.rbuf.len() - self.end < MAX_HEAD {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// The next piece of request body, as a range of `rbuf`; `None` at its end.
    async fn body_piece(&mut self, body: &mut Body) -> Result<Option<(usize, usize)>, BodyError> {
        loop {
            match body {
                Body::Done => {
                    self.body_done = true;
                    return Ok(None);
                }
                Body::Length(0) => {
                    *body = Body::Done;
                    self.body_done = true;
                    return Ok(None);
                }
                Body::Length(remaining) => {
                    if self.start < self.end {
                        let avail = (self.end - self.start) as u64;
                        let take = avail.min(*remaining) as usize;
                        *remaining -= take as u64;
                        let at = self.start;
                        self.start += take;
                        return Ok(Some((at, at + take)));
                    }
                }
                Body::Chunked(decoder) => {
                    if self.start < self.end {
                        let (used, step) = decoder
                            .step(&self.rbuf[self.start..self.end])
                            .map_err(|_| BodyError::Malformed)?;
                        let base = self.start;
                        self.start += used;
                        match step {
                            Step::Data { start, len } => {
                                return Ok(Some((base + start, base + start + len)))
                            }
                            Step::Done => {
                                *body = Body::Done;
                                self.body_done = true;
                                return Ok(None);
                            }
                            Step::NeedMore => {}
                        }
                    }
                }
            }
            self.make_room();
            match self.stream.read(&mut self.rbuf[self.end..]).await {
                Ok(0) | Err(_) => return Err(BodyError::Io),
                Ok(n) => self.end += n,
            }
        }
    }

    /// Reads and discards the rest of a request body.
    async fn drain(&mut self, body: &mut Body) -> Result<(), BodyError> {
        while self.body_piece(body).await?.is_some() {}
        Ok(())
    }

    fn tags(&self, close: bool, minor: u8) -> Tags {
        Tags {
            conn_id: self.id,
            req_index: self.nreq,
            close,
            keep_alive_10: !close && minor == 0,
        }
    }

    /// Before a write of the response: once the request is fully read, notes whether
    /// the client already sent more (a 1-byte `MSG_PEEK | MSG_DONTWAIT`; skipped when
    /// the answer is already known). Bytes seen here provably preceded the end of this
    /// response, so [`OriginStats::pipelined`](super::OriginStats) has no false positives.
    fn note_early_input(&mut self) {
        if self.body_done && !self.early && self.end == self.start {
            // Bytes a multishot receive already took from the socket are the stream's,
            // where a peek does not see them.
            if self.stream.rx_buffered() == Some(true) {
                self.early = true;
                return;
            }
            let mut byte = [MaybeUninit::<u8>::uninit()];
            let peeked = socket2_04::SockRef::from(&self.stream)
                .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
            self.early = matches!(peeked, Ok(n) if n > 0);
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.note_early_input();
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Answers a request that cannot be served with `code` and closes.
    async fn refuse(&mut self, code: u16, why: &str) -> End {
        let body_len = why.len() + 1;
        self.wbuf.clear();
        response::status_and_framing(&mut self.wbuf, code, BodyFraming::Length(body_len as u64));
        let tags = Tags {
            conn_id: self.id,
            req_index: self.nreq + 1,
            close: true,
            keep_alive_10: false,
        };
        response::finish_head(&mut self.wbuf, tags, b"");
        self.wbuf.extend_from_slice(why.as_bytes());
        self.wbuf.push(b'\n');
        match self.flush().await {
            Ok(()) => End::Close,
            Err(_) => End::Drop,
        }
    }

    async fn send_continue(&mut self, head: &RequestHead) -> io::Result<()> {
        if head.expect_continue && head.minor >= 1 && head.framing != Framing::Empty {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        Ok(())
    }

    async fn respond(&mut self, head: &RequestHead, keep_alive: bool) -> io::Result<Next> {
        let ctx = self.ctx.clone();
        match head.route {
            Route::Reset => return Ok(Next::End(End::Reset)),
            Route::Garbage => {
                self.stream.write_all(b"garbage\r\n\r\n").await?;
                return Ok(Next::End(End::Close));
            }
            Route::Echo => return self.echo(head, keep_alive).await,
            _ => {}
        }
        self.send_continue(head).await?;
        let mut body = Body::new(head.framing);
        match self.drain(&mut body).await {
            Ok(()) => {}
            Err(BodyError::Malformed) => {
                return Ok(Next::End(self.refuse(400, "malformed chunked body").await))
            }
            Err(BodyError::Io) => return Ok(Next::End(End::Drop)),
        }
        if let Some(delay) = ctx.cfg.delay {
            glommio::timer::sleep(delay).await;
        }
        let close = !keep_alive || head.route == Route::Close;
        let tags = self.tags(close, head.minor);
        self.wbuf.clear();
        match head.route {
            Route::Fixed | Route::Close | Route::Delay(_) => {
                if let Route::Delay(ms) = head.route {
                    glommio::timer::sleep(Duration::from_millis(ms)).await;
                }
                self.wbuf.extend_from_slice(&ctx.fixed_prefix);
                response::finish_head(&mut self.wbuf, tags, b"");
                let len = ctx.cfg.body_size as u64;
                self.send_length_body(&ctx.default_body, len, head.is_head)
                    .await?;
            }
            Route::Size(n) => {
                response::status_and_framing(&mut self.wbuf, 200, BodyFraming::Length(n));
                response::finish_head(&mut self.wbuf, tags, b"");
                self.send_length_body(&ctx.pattern, n, head.is_head).await?;
            }
            Route::Chunked(n) => {
                if head.minor == 0 {
                    // HTTP/1.0 has no chunked coding: delimit by close instead.
                    let tags = self.tags(true, 0);
                    response::status_and_framing(&mut self.wbuf, 200, BodyFraming::UntilClose);
                    response::finish_head(&mut self.wbuf, tags, b"");
                    self.send_length_body(&ctx.pattern, n, head.is_head).await?;
                    return Ok(Next::End(End::Close));
                }
                response::status_and_framing(&mut self.wbuf, 200, BodyFraming::Chunked);
                response::finish_head(&mut self.wbuf, tags, b"");
                if !head.is_head {
                    self.send_chunked_pattern(&ctx.pattern, n).await?;
                }
                self.flush().await?;
            }
            Route::Headers => {
                let len = self.raw_head.len() as u64;
                response::status_and_framing(&mut self.wbuf, 200, BodyFraming::Length(len));
                response::finish_head(&mut self.wbuf, tags, b"Content-Type: text/plain\r\n");
                if !head.is_head {
                    self.wbuf.extend_from_slice(&self.raw_head);
                }
                self.flush().await?;
            }
            Route::Status(code) => {
                let body_len = if response::bodiless(code) {
                    None
                } else {
                    Some(4 + response::reason(code).len() + 1)
                };
                let framing = body_len.map_or(BodyFraming::None, |n| BodyFraming::Length(n as u64));
                response::status_and_framing(&mut self.wbuf, code, framing);
                response::finish_head(&mut self.wbuf, tags, b"");
                if body_len.is_some() && !head.is_head {
                    use std::io::Write;
                    let _ = writeln!(self.wbuf, "{code} {}", response::reason(code));
                }
                self.flush().await?;
            }
            Route::BadStatus => {
                let msg = b"bad status code: use /status/200..599\n";
                response::status_and_framing(
                    &mut self.wbuf,
                    400,
                    BodyFraming::Length(msg.len() as u64),
                );
                response::finish_head(&mut self.wbuf, tags, b"");
                if !head.is_head {
                    self.wbuf.extend_from_slice(msg);
                }
                self.flush().await?;
            }
            Route::Stats | Route::StatsReset => {
                let text = if head.route == Route::StatsReset {
                    ctx.stats.reset();
                    String::from("{\"reset\":true}\n")
                } else {
                    format!("{}\n", ctx.stats.snapshot())
                };
                response::status_and_framing(
                    &mut self.wbuf,
                    200,
                    BodyFraming::Length(text.len() as u64),
                );
                response::finish_head(&mut self.wbuf, tags, b"Content-Type: application/json\r\n");
                if !head.is_head {
                    self.wbuf.extend_from_slice(text.as_bytes());
                }
                self.flush().await?;
            }
            Route::Echo | Route::Reset | Route::Garbage => {}
        }
        Ok(if close {
            Next::End(End::Close)
        } else {
            Next::KeepAlive
        })
    }

    /// Writes the head in `wbuf` and `len` bytes of `cycle`: in one write when small,
    /// else the head with the first part, then slices straight from the cycle.
    async fn send_length_body(&mut self, cycle: &Cycle, len: u64, is_head: bool) -> io::Result<()> {
        if is_head || len == 0 {
            return self.flush().await;
        }
        let first = len.min(INLINE_BODY as u64) as usize;
        self.wbuf.extend_from_slice(cycle.slice(0, first));
        self.flush().await?;
        let mut sent = first as u64;
        while sent < len {
            let n = (len - sent).min(SLICE_MAX as u64) as usize;
            self.note_early_input();
            self.stream.write_all(cycle.slice(sent, n)).await?;
            sent += n as u64;
        }
        Ok(())
    }

    /// Appends `len` pattern bytes in chunks of at most [`CHUNK`] and the last chunk,
    /// writing whenever `wbuf` holds about [`INLINE_BODY`] bytes.
    async fn send_chunked_pattern(&mut self, cycle: &Cycle, len: u64) -> io::Result<()> {
        let mut sent = 0u64;
        while sent < len {
            let n = (len - sent).min(CHUNK as u64) as usize;
            response::chunk_line(&mut self.wbuf, n);
            self.wbuf.extend_from_slice(cycle.slice(sent, n));
            self.wbuf.extend_from_slice(b"\r\n");
            sent += n as u64;
            if self.wbuf.len() >= INLINE_BODY {
                self.flush().await?;
            }
        }
        self.wbuf.extend_from_slice(b"0\r\n\r\n");
        Ok(())
    }

    /// `/echo`: the response head goes out before the body is read, then each piece of
    /// the body as it arrives, framed like the request (length or chunked).
    async fn echo(&mut self, head: &RequestHead, keep_alive: bool) -> io::Result<Next> {
        self.send_continue(head).await?;
        if let Some(delay) = self.ctx.cfg.delay {
            glommio::timer::sleep(delay).await;
        }
        let framing = match head.framing {
            Framing::Empty => BodyFraming::Length(0),
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked if head.minor >= 1 => BodyFraming::Chunked,
            Framing::Chunked => BodyFraming::UntilClose,
        };
        let close = !keep_alive || framing == BodyFraming::UntilClose;
        self.wbuf.clear();
        response::status_and_framing(&mut self.wbuf, 200, framing);
        let tags = self.tags(close, head.minor);
        response::finish_head(&mut self.wbuf, tags, b"");
        let chunked = framing == BodyFraming::Chunked;
        let mut body = Body::new(head.framing);
        loop {
            let (a, b) = match self.body_piece(&mut body).await {
                Ok(Some(range)) => range,
                Ok(None) => break,
                // The response has started: all we can do is close.
                Err(_) => return Ok(Next::End(End::Drop)),
            };
            if head.is_head || a == b {
                continue;
            }
            if chunked {
                response::chunk_line(&mut self.wbuf, b - a);
                self.wbuf.extend_from_slice(&self.rbuf[a..b]);
                self.wbuf.extend_from_slice(b"\r\n");
                self.flush().await?;
            } else if !self.wbuf.is_empty() {
                self.wbuf.extend_from_slice(&self.rbuf[a..b]);
                self.flush().await?;
            } else {
                self.stream.write_all(&self.rbuf[a..b]).await?;
            }
        }
        if chunked && !head.is_head {
            self.wbuf.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush().await?;
        Ok(if close {
            Next::End(End::Close)
        } else {
            Next::KeepAlive
        })
    }

    /// Sends FIN, then reads and discards what the client still sends (bounded in time
    /// and bytes), so unread input does not turn our close into a reset that could
    /// destroy the last response before the client reads it.
    async fn lingering_close(&mut self) {
        if self.stream.shutdown(Shutdown::Write).await.is_err() {
            return;
        }
        if self.stream.set_read_timeout(Some(LINGER)).is_err() {
            return;
        }
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match self.stream.read(&mut self.rbuf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }
}
