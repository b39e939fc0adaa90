//! [`Rewind`]: a stream that first replays bytes already read from it.
//!
//! The proxy reads a connection's first bytes before it knows which protocol the client
//! speaks; when they turn out to be the HTTP/2 preface, the `h2` server must see them
//! again. `Rewind` hands those bytes out first, then reads from the stream itself. Writes
//! go straight to the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// A futures-io stream with a prefix of already-read bytes replayed before its own.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Vec<u8>,
    /// How much of `prefix` has been handed out.
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    /// Replays `prefix`, then reads from `inner`.
    pub fn new(inner: T, prefix: Vec<u8>) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Prefix bytes not yet read.
    pub fn pending(&self) -> &[u8] {
        &self.prefix[self.pos..]
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let rest = &this.prefix[this.pos..];
        if !rest.is_empty() && !buf.is_empty() {
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                // Done with it: give the memory back.
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
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

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Rewind;
    use futures_lite::future::block_on;
    use futures_lite::io::{AsyncReadExt, Cursor};

    #[test]
    fn prefix_then_stream_in_any_split() {
        for chunk in [1usize, 2, 3, 7, 64] {
            let mut r = Rewind::new(Cursor::new(b" world".to_vec()), b"hello,".to_vec());
            let mut got = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let n = block_on(r.read(&mut buf)).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"hello, world", "chunk {chunk}");
            assert!(r.pending().is_empty());
        }
    }

    #[test]
    fn empty_prefix_reads_the_stream() {
        let mut r = Rewind::new(Cursor::new(b"abc".to_vec()), Vec::new());
        let mut got = Vec::new();
        block_on(r.read_to_end(&mut got)).unwrap();
        assert_eq!(got, b"abc");
    }
}
