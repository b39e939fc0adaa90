//! Streaming one HTTP/1.1 body from a reader to a writer through a connection's buffer:
//! by length, chunked (validated and forwarded as is), until close, or de-chunked for an
//! HTTP/1.0 client. Generic over the streams (a client socket, a backend transport, a
//! half of a [`Duplex`](crate::duplex::Duplex)): this leaf knows none of them. Large
//! bodies between two plain sockets are spliced instead (`splice.rs`, built on this).
//! Nothing here holds a whole body or allocates per chunk.

use std::io;

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::buf::Buf;
use ringway_http1::{ChunkedScanner, Framing};

/// An error while streaming a body, by side.
pub(crate) enum CopyError {
    /// Reading the source failed or it ended early.
    Src(io::Error),
    /// Writing the destination failed.
    Dst(io::Error),
    /// The body's framing is broken (bad chunk syntax).
    Framing,
}

/// Streams one body from `src` (with `buf` holding what was already read) to `dst`.
pub(crate) async fn copy_body<R, W>(
    framing: Framing,
    src: &mut R,
    buf: &mut Buf,
    dst: &mut W,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(mut left) => {
            while left > 0 {
                if buf.is_empty() {
                    fill_or_eof(buf, src).await?;
                }
                gather(buf, src, left).await;
                let take = (buf.len() as u64).min(left) as usize;
                dst.write_all(&buf.data()[..take])
                    .await
                    .map_err(CopyError::Dst)?;
                flush(dst).await?;
                buf.consume(take);
                left -= take as u64;
            }
            Ok(())
        }
        Framing::Chunked => {
            let mut scanner = ChunkedScanner::new();
            loop {
                if buf.is_empty() {
                    fill_or_eof(buf, src).await?;
                }
                let (used, done) = scanner.feed(buf.data()).map_err(|_| CopyError::Framing)?;
                dst.write_all(&buf.data()[..used])
                    .await
                    .map_err(CopyError::Dst)?;
                flush(dst).await?;
                buf.consume(used);
                if done {
                    return Ok(());
                }
            }
        }
        Framing::UntilClose => loop {
            if buf.is_empty() {
                buf.clear();
                match buf.fill_from(src).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(CopyError::Src(e)),
                }
            }
            dst.write_all(buf.data()).await.map_err(CopyError::Dst)?;
            flush(dst).await?;
            let n = buf.len();
            buf.consume(n);
        },
    }
}

/// Relays a chunked body to an HTTP/1.0 client as plain bytes (then the connection closes).
pub(crate) async fn copy_dechunked<R, W>(
    src: &mut R,
    buf: &mut Buf,
    dst: &mut W,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scanner = ChunkedScanner::new();
    let mut plain = Vec::with_capacity(16 << 10);
    loop {
        if buf.is_empty() {
            fill_or_eof(buf, src).await?;
        }
        plain.clear();
        let (used, done) = scanner
            .feed_decoded(buf.data(), |d| plain.extend_from_slice(d))
            .map_err(|_| CopyError::Framing)?;
        buf.consume(used);
        if !plain.is_empty() {
            dst.write_all(&plain).await.map_err(CopyError::Dst)?;
            flush(dst).await?;
        }
        if done {
            return Ok(());
        }
    }
}

/// How many bytes of a large body [`copy_body`] gathers for one write: three reads of
/// the shard's 16 KiB receive buffers, under loopback's 65,483-byte MSS, so one write is
/// one segment there.
const GATHER: usize = 48 << 10;

/// Takes into `buf` (grown up to [`GATHER`], the grown store freed when the request is
/// done) what `src` has already received of the `left` bytes still to copy, without
/// waiting: a body arriving faster than the client takes it leaves in writes of up to
/// 48 KiB instead of one per 16 KiB read (1 MiB responses: 101 TCP segments per response
/// on loopback before, HAProxy 69). A read that would wait, EOF or an error stops it; the
/// next fill sees them.
async fn gather<R: AsyncRead + Unpin>(buf: &mut Buf, src: &mut R, left: u64) {
    while (buf.len() as u64) < left && buf.len() < GATHER {
        if buf.spare_capacity() == 0 && !buf.grow(GATHER) {
            return;
        }
        match futures_lite::future::poll_once(buf.fill_from(src)).await {
            Some(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

pub(crate) async fn fill_or_eof<R: AsyncRead + Unpin>(
    buf: &mut Buf,
    src: &mut R,
) -> Result<(), CopyError> {
    buf.clear();
    match buf.fill_from(src).await {
        Ok(0) => Err(CopyError::Src(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "body ended early",
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(CopyError::Src(e)),
    }
}

/// Pushes out what a writer buffered (TLS records the socket could not take yet); free
/// for plain TCP. After every write: the next step may wait on the other side.
async fn flush<W: AsyncWrite + Unpin>(dst: &mut W) -> Result<(), CopyError> {
    dst.flush().await.map_err(CopyError::Dst)
}
