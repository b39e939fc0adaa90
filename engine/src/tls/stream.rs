//! A TLS session over a glommio TCP stream, for both sides (rustls `ServerConnection`
//! for clients of ringway, `ClientConnection` for TLS backends), as an
//! `AsyncRead`/`AsyncWrite` stream.
//!
//! Ours rather than futures-rustls's because a backend session must move between shards
//! with its socket: [`TlsStream::into_parts`] gives the TCP stream (to detach) and the
//! rustls connection (plain `Send` data: keys, sequence numbers, buffered records), and
//! [`TlsStream::from_parts`] rebuilds the stream around the re-attached socket on the
//! taker. futures-rustls can give its parts away but not take them back.
//!
//! Writes: [`poll_write`](AsyncWrite::poll_write) hands the plaintext to rustls and
//! writes records until the socket would block; what is left is written first by the
//! next write or by [`poll_flush`](AsyncWrite::poll_flush), which callers issue at the
//! end of every message (the body and head writers do; for plain TCP a flush is free).
//! Reads: pending records are written out first (rustls may owe the peer a reply), then
//! records are read and decrypted until plaintext is available.

use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ConnectionCommon, SideData};

/// A TLS session and the socket it runs on.
pub struct TlsStream<C> {
    io: TcpStream,
    conn: C,
}

/// The socket seen as a blocking `Read`/`Write` that says `WouldBlock` instead of waiting,
/// for rustls's `read_tls`/`write_tls`. The waker is registered by glommio's poll.
struct SyncIo<'a, 'b> {
    io: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SyncIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_read(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<C, D> TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Deref<Target = ConnectionCommon<D>> + Unpin,
    D: SideData,
{
    pub fn from_parts(io: TcpStream, conn: C) -> Self {
        TlsStream { io, conn }
    }

    pub fn into_parts(self) -> (TcpStream, C) {
        (self.io, self.conn)
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }

    pub fn session(&self) -> &C {
        &self.conn
    }

    /// Writes out every record rustls has ready. Ready(Ok) once none is left.
    fn poll_write_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut sync = SyncIo {
                io: &mut self.io,
                cx,
            };
            match self.conn.write_tls(&mut sync) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads one batch of records and processes them. Ready(Ok(0)) at EOF.
    fn poll_read_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut sync = SyncIo {
            io: &mut self.io,
            cx,
        };
        let n = match self.conn.read_tls(&mut sync) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Err(e) = self.conn.process_new_packets() {
            // Tell the peer why (the alert is queued by rustls), best effort.
            let _ = self.poll_write_records(cx);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        Poll::Ready(Ok(n))
    }

    /// For an idle pooled connection: reads whatever records arrived without waiting and
    /// processes them. Quiet when nothing but handshake messages (session tickets, key
    /// updates) came; application data is unsolicited; close_notify, an alert or EOF
    /// mean closed.
    pub fn idle_peek(&mut self) -> crate::fd::IdlePeek {
        use crate::fd::IdlePeek;
        let mut buf = [0u8; 4096];
        loop {
            match crate::fd::recv_nonblocking(&mut self.io, &mut buf) {
                Ok(0) => return IdlePeek::Closed,
                Ok(n) => {
                    let mut data = &buf[..n];
                    while !data.is_empty() {
                        if self.conn.read_tls(&mut data).is_err() {
                            return IdlePeek::Closed;
                        }
                        let state = match self.conn.process_new_packets() {
                            Ok(st) => st,
                            Err(_) => return IdlePeek::Closed,
                        };
                        if state.plaintext_bytes_to_read() > 0 {
                            return IdlePeek::Unsolicited;
                        }
                        if state.peer_has_closed() {
                            return IdlePeek::Closed;
                        }
                    }
                    if n < buf.len() {
                        return IdlePeek::Quiet;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return IdlePeek::Quiet,
                Err(_) => return IdlePeek::Closed,
            }
        }
    }

    /// Waits until a read can make progress without lending it a buffer: decrypted
    /// bytes (or a close) already here, records rustls still has to send (the read sends
    /// them first), or the socket readable. A keep-alive client waits here between
    /// requests holding no receive buffer of ringway's.
    pub async fn readable(&mut self) -> io::Result<()> {
        if self.conn.wants_write() {
            return Ok(());
        }
        match self.conn.process_new_packets() {
            Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => {}
            // Bytes to read, a close, or an error the next read reports.
            _ => return Ok(()),
        }
        self.io.readable().await
    }

    /// Polls the TCP socket underneath for readiness (bytes, a close or an error), past
    /// whatever rustls holds: for noticing a client that hung up while its request waits.
    pub fn poll_tcp_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.poll_readable(cx)
    }

    /// Sends every record rustls still owes the peer, e.g. the alert that says why a
    /// handshake failed. Writes complete only when the ring's send does (vendored
    /// glommio), so a connection closed right after a failed handshake must wait here
    /// or the alert would be cancelled with it.
    pub async fn send_pending_records(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_records(cx)).await
    }

    /// Runs the handshake to its end.
    pub async fn handshake(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| loop {
            if self.conn.wants_write() {
                match self.poll_write_records(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match self.poll_read_records(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS handshake: peer closed",
                    )))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }
}

impl<C, D> AsyncRead for TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Deref<Target = ConnectionCommon<D>> + Unpin,
    D: SideData,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Records rustls owes the peer go out first (best effort; a full socket waits).
        if this.conn.wants_write() {
            if let Poll::Ready(Err(e)) = this.poll_write_records(cx) {
                return Poll::Ready(Err(e));
            }
        }
        loop {
            match this.conn.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            match this.poll_read_records(cx) {
                // EOF without close_notify: the next reader().read says UnexpectedEof.
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(match this.conn.reader().read(buf) {
                        Ok(n) => Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "TLS: peer closed",
                        )),
                        Err(e) => Err(e),
                    })
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<C, D> AsyncWrite for TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Deref<Target = ConnectionCommon<D>> + Unpin,
    D: SideData,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What an earlier write left goes first, so records stay in order and memory bounded.
        match this.poll_write_records(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let n = match this.conn.writer().write(buf) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        // Push the new records now; whatever the socket cannot take waits for the next
        // write or the flush.
        if let Poll::Ready(Err(e)) = this.poll_write_records(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_write_records(cx)
    }

    /// Sends close_notify, then half-closes the socket.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.send_close_notify();
        match this.poll_write_records(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_close(cx),
            other => other,
        }
    }
}
