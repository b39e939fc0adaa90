//! The bodies of an exchange with an HTTP/2 backend, as the HTTP/1.1-shaped traits of
//! the exchange see them: [`BodyWriter`] takes a request body in its HTTP/1.1 framing (by
//! length, or chunked) and sends the payload as DATA frames only as the server's window
//! allows; [`BodyReader`] gives a response's DATA to a sink, chunk-encoded when the
//! HTTP/1.1 head says chunked, returning window capacity only once the sink took the
//! bytes. Neither buffers more than one write or one frame.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use h2::{RecvStream, SendStream};
use ringway_http1::{ChunkedScanner, Framing};

/// Takes the request body in its HTTP/1.1 framing (what a `BodySource` writes) and
/// sends its payload as DATA frames, never more than the server's window allows: a write
/// is accepted only once the previous one has gone out.
pub(super) struct BodyWriter<'a> {
    send: SendStream<Bytes>,
    /// Length framing: payload bytes still expected.
    remaining: u64,
    chunks: Option<ChunkedScanner>,
    pending: BytesMut,
    /// The chunked body's trailer section, sent on as HTTP/2 trailers.
    section: Vec<u8>,
    touched: &'a Cell<bool>,
}

impl<'a> BodyWriter<'a> {
    pub(super) fn new(send: SendStream<Bytes>, framing: Framing, touched: &'a Cell<bool>) -> Self {
        let (remaining, chunks) = match framing {
            Framing::Length(n) => (n, None),
            Framing::Chunked => (0, Some(ChunkedScanner::new())),
            Framing::Empty | Framing::UntilClose => (0, None),
        };
        BodyWriter {
            send,
            remaining,
            chunks,
            pending: BytesMut::new(),
            section: Vec::new(),
            touched,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            self.send.reserve_capacity(self.pending.len());
            match self.send.poll_capacity(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the backend stream closed",
                    )))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(Some(Ok(0))) => {}
                Poll::Ready(Some(Ok(n))) => {
                    let piece = self.pending.split_to(n.min(self.pending.len())).freeze();
                    if let Err(e) = self.send.send_data(piece, false) {
                        return Poll::Ready(Err(io::Error::other(e)));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends what is left and ends the stream: with the trailers of a chunked body, if
    /// it had any, else with an empty DATA frame.
    pub(super) async fn finish(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_drain(cx)).await?;
        let fields = super::trailers::parse(&self.section);
        if fields.is_empty() {
            self.send.send_data(Bytes::new(), true)
        } else {
            self.send.send_trailers(fields)
        }
        .map_err(io::Error::other)
    }
}

impl AsyncWrite for BodyWriter<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map_ok(|()| 0),
        }
        this.touched.set(true);
        let BodyWriter {
            chunks,
            pending,
            remaining,
            section,
            ..
        } = this;
        match chunks {
            Some(scanner) => {
                let fed = scanner.feed_with_trailers(
                    buf,
                    |d| pending.extend_from_slice(d),
                    |b| section.push(b),
                );
                if fed.is_err() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad chunked request body",
                    )));
                }
            }
            None => {
                let take = (*remaining).min(buf.len() as u64) as usize;
                pending.extend_from_slice(&buf[..take]);
                *remaining -= take as u64;
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }
}

/// The response body as a sink reads it: DATA payload, chunk-encoded when the HTTP/1.1
/// head says chunked. Flow-control capacity goes back to the server once the sink has
/// taken the bytes of a frame. Silence for `idle` (`--timeout-backend`) is an error.
pub(super) struct BodyReader {
    recv: RecvStream,
    chunked: bool,
    out: Bytes,
    /// Payload bytes of `out` not yet given back to the server's window.
    unreleased: usize,
    ended: bool,
    /// All DATA is in; the trailers (if any) are still to be read (chunked only).
    data_done: bool,
    idle: Duration,
    timer: Option<glommio::timer::Timer>,
}

/// An HTTP/2 stream's body is framed: it is copied, never spliced.
impl crate::splice::SpliceEnd for BodyReader {}

impl BodyReader {
    pub(super) fn new(recv: RecvStream, chunked: bool, idle: Duration) -> Self {
        BodyReader {
            recv,
            chunked,
            out: Bytes::new(),
            unreleased: 0,
            ended: false,
            data_done: false,
            idle,
            timer: None,
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.len());
                buf[..n].copy_from_slice(&this.out[..n]);
                let _ = this.out.split_to(n);
                return Poll::Ready(Ok(n));
            }
            if this.unreleased > 0 {
                let _ = this.recv.flow_control().release_capacity(this.unreleased);
                this.unreleased = 0;
            }
            if this.ended {
                return Poll::Ready(Ok(0));
            }
            if this.data_done {
                // The server's trailers end the chunked body as its trailer section.
                match this.recv.poll_trailers(cx) {
                    Poll::Ready(Ok(t)) => {
                        let mut end = Vec::new();
                        super::trailers::write(t.as_ref(), &mut end);
                        this.out = Bytes::from(end);
                        this.ended = true;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    this.timer = None;
                    this.unreleased = data.len();
                    if data.is_empty() {
                        continue;
                    }
                    this.out = if this.chunked {
                        let mut framed = BytesMut::with_capacity(data.len() + 16);
                        framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        framed.extend_from_slice(&data);
                        framed.extend_from_slice(b"\r\n");
                        framed.freeze()
                    } else {
                        data
                    };
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                Poll::Ready(None) => {
                    if this.chunked {
                        this.data_done = true;
                    } else {
                        this.ended = true;
                    }
                }
                Poll::Pending => {
                    let idle = this.idle;
                    let timer = this
                        .timer
                        .get_or_insert_with(|| glommio::timer::Timer::new(idle));
                    if Pin::new(timer).poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the HTTP/2 backend sent nothing within --timeout-backend",
                        )));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
