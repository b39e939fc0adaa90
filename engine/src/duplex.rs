//! One stream, two directions at once, from one task: [`Duplex`] lends `&Duplex` as both
//! a reader and a writer, so a request body can flow up while the response flows down,
//! without duplicating the fd (which a TLS session or an HTTP/2 connection could not
//! survive) and without a lock.
//!
//! Each poll borrows the stream for the length of that one call; the two halves are
//! polled one after the other by the same task, never at the same time, so the borrow
//! cannot fail. glommio keeps separate read and write readiness sources per stream, so a
//! read and a write can both be pending at once.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// A stream shared by a reading half and a writing half of the same task.
pub struct Duplex<'a, T>(RefCell<&'a mut T>);

impl<'a, T> Duplex<'a, T> {
    pub fn new(stream: &'a mut T) -> Self {
        Duplex(RefCell::new(stream))
    }

    /// Runs `f` on the stream itself for the length of one call (e.g. a readiness check
    /// beside the two halves), under the same one-borrow-at-a-time rule.
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for &Duplex<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut **s).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for &Duplex<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut **s).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut **s).poll_flush(cx)
    }

    /// Half-closes the writing direction (glommio: `shutdown(SHUT_WR)`).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.0.borrow_mut();
        Pin::new(&mut **s).poll_close(cx)
    }
}
