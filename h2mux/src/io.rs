//! The bridge from glommio's IO traits to tokio's, so the `h2` crate can run on glommio.
//!
//! glommio streams implement futures-io's `AsyncRead`/`AsyncWrite`; `h2` wants tokio's.
//! [`TokioIo`] wraps any futures-io stream and forwards each poll one to one: it owns no
//! buffer, starts no runtime, reactor or timer (unlike `async-compat`), and adds nothing
//! to a read or a write beyond initialising (zeroing) the part of the caller's spare
//! buffer space that a read is offered.
//!
//! How much is offered adapts to the stream ([`READ_MIN`] up to the caller's whole spare
//! space): glommio reads into initialised memory only, and `h2`'s codec hands over its
//! whole 8 KiB of fresh, uninitialised spare space on every read, so zeroing all of it
//! cost 8 KiB of `memset` per read (16% of the HTTP/2 front's user-space instructions per
//! request, docs/benchmarks.md) when a read of a few HEADERS frames brings a few hundred
//! bytes. A read that fills what it was offered doubles the next offer, so a busy stream
//! (a large body) soon reads its full spare space at a time again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use tokio::io::ReadBuf;

/// A futures-io stream seen through tokio's `AsyncRead`/`AsyncWrite`.
#[derive(Debug)]
pub struct TokioIo<T> {
    inner: T,
    /// How many bytes the next read is offered (and so how many are zeroed first).
    offer: usize,
}

/// The smallest read offer: a read of a few frames' HEADERS fits.
pub const READ_MIN: usize = 1024;

impl<T> TokioIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            offer: READ_MIN,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> tokio::io::AsyncRead for TokioIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let offer = this.offer.min(buf.remaining());
        let n = match Pin::new(&mut this.inner).poll_read(cx, buf.initialize_unfilled_to(offer)) {
            Poll::Ready(Ok(n)) => n.min(offer),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        // A full read: more may be waiting, offer twice as much next time; else offer
        // twice what came (at least READ_MIN).
        this.offer = if n == offer && n > 0 {
            offer.saturating_mul(2)
        } else {
            (2 * n).max(READ_MIN)
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> tokio::io::AsyncWrite for TokioIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::TokioIo;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;
    use std::future::poll_fn;
    use std::pin::Pin;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    #[test]
    fn reads_pass_through_in_order_and_end_at_eof() {
        let mut io = TokioIo::new(Cursor::new(b"hello, world".to_vec()));
        let mut storage = [0u8; 5];
        let mut got = Vec::new();
        loop {
            let mut buf = ReadBuf::new(&mut storage);
            let r = block_on(poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf)));
            assert!(r.is_ok());
            if buf.filled().is_empty() {
                break;
            }
            got.extend_from_slice(buf.filled());
        }
        assert_eq!(got, b"hello, world");
    }

    #[test]
    fn a_read_zeroes_only_its_offer_which_grows_while_reads_fill_it() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let mut io = TokioIo::new(Cursor::new(data.clone()));
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let mut storage = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
            let mut buf = ReadBuf::uninit(&mut storage);
            let r = block_on(poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf)));
            assert!(r.is_ok());
            let n = buf.filled().len();
            // Only what the read was offered was initialised (zeroed) first.
            assert!(
                buf.initialized().len()
                    <= super::READ_MIN.max(2 * sizes.last().copied().unwrap_or(0))
            );
            if n == 0 {
                break;
            }
            sizes.push(n);
            got.extend_from_slice(buf.filled());
        }
        assert_eq!(got, data);
        assert_eq!(&sizes[..5], &[1024, 2048, 4096, 8192, 8192], "{sizes:?}");
    }

    #[test]
    fn writes_flush_and_shutdown_reach_the_inner_stream() {
        let mut io = TokioIo::new(Cursor::new(Vec::new()));
        let n = block_on(poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"abc")));
        assert_eq!(n.ok(), Some(3));
        let bufs = [std::io::IoSlice::new(b"de"), std::io::IoSlice::new(b"f")];
        let n = block_on(poll_fn(|cx| {
            Pin::new(&mut io).poll_write_vectored(cx, &bufs)
        }));
        assert!(matches!(n, Ok(1..=3)));
        assert!(block_on(poll_fn(|cx| Pin::new(&mut io).poll_flush(cx))).is_ok());
        assert!(block_on(poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx))).is_ok());
        let inner = io.into_inner().into_inner();
        assert!(inner.starts_with(b"abcd"));
    }
}
