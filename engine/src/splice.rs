//! Large response bodies between two plain TCP sockets by splice(2): backend socket →
//! pipe → client socket, so the body's bytes are never copied into ringway and out
//! again. On loopback and on real NICs alike the kernel then moves page references, not
//! bytes: a 1 MiB response costs the proxy two copies of 1 MiB less (the receive into
//! user memory and the send out of it).
//!
//! Only `Content-Length` bodies of at least `--splice-min` bytes, and only when both ends
//! are plain TCP ([`SpliceEnd`]): TLS has to see the bytes, an HTTP/2 stream is framed,
//! a chunked body is scanned. The body is moved exactly: never a byte past its length is
//! taken from the backend, so a connection that carried it goes back to the pool as
//! after a copy.
//!
//! Order of the bytes: the backend stream's own receives (a multishot armed on the ring,
//! bytes it already brought) come first. [`TcpStream::stop_receives`] ends them in the
//! kernel, what they brought is read and written out the ordinary way, and only then is
//! the socket spliced. The client side is written by the stream only between writes, so
//! nothing of the stream is in flight when the splice writes.
//!
//! Pipes come from a small per-shard pool. A pipe still holding bytes when its body is
//! given up (the client went away, the backend broke, a timeout) is closed, never reused;
//! an empty one goes back to the pool.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::body::CopyError;
use crate::buf::Buf;

/// One end of a splice: the plain TCP socket under a stream, if that is what it is.
/// Wrappers that count bytes hear of the bytes that passed around them.
pub trait SpliceEnd {
    /// Runs `f` on the plain TCP stream under this end; `None` when there is none (TLS),
    /// and the body is copied.
    fn with_tcp<T>(&mut self, _f: impl FnOnce(&mut TcpStream) -> T) -> Option<T> {
        None
    }
    /// `n` bytes were written through this end by splice (counters of wrappers).
    fn spliced(&mut self, _n: usize) {}
}

impl<E: SpliceEnd + ?Sized> SpliceEnd for &mut E {
    fn with_tcp<T>(&mut self, f: impl FnOnce(&mut TcpStream) -> T) -> Option<T> {
        (**self).with_tcp(f)
    }
    fn spliced(&mut self, n: usize) {
        (**self).spliced(n)
    }
}

impl<E: SpliceEnd> SpliceEnd for &crate::duplex::Duplex<'_, E> {
    fn with_tcp<T>(&mut self, f: impl FnOnce(&mut TcpStream) -> T) -> Option<T> {
        self.with_mut(|e| e.with_tcp(f))
    }
    fn spliced(&mut self, n: usize) {
        self.with_mut(|e| e.spliced(n))
    }
}

/// Bytes a pipe is asked to hold (`F_SETPIPE_SZ`): 256 KiB, so that one splice takes in
/// what a busy backend socket holds instead of 64 KiB at a time. The pipe holds page
/// references, not copies; its own cost is the slot array, about 2.5 KiB.
const PIPE_SIZE: i32 = 256 << 10;
/// Empty pipes a shard keeps for the next spliced body.
const POOL_KEEP: usize = 16;

/// A pipe: read end, write end, and what it can hold.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    static STATS: Cell<SpliceStats> = const { Cell::new(SpliceStats { bodies: 0, bytes: 0, pipes_opened: 0, ring_sent_bytes: 0 }) };
}

/// This shard's splice figures, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpliceStats {
    /// Response bodies whose bytes went (all or the rest after what was buffered) by splice.
    pub bodies: u64,
    /// Body bytes moved by splice.
    pub bytes: u64,
    /// Pipes opened (a pooled one is reused: this grows only with concurrency, or when
    /// a pipe had to be closed with bytes in it).
    pub pipes_opened: u64,
    /// Body bytes sent to the client straight from the receive buffer ring, with no
    /// copy through ringway's memory ([`relay_length`]).
    pub ring_sent_bytes: u64,
}

/// The calling shard's figures.
pub fn stats() -> SpliceStats {
    STATS.with(|s| s.get())
}

fn note(f: impl FnOnce(&mut SpliceStats)) {
    STATS.with(|s| {
        let mut v = s.get();
        f(&mut v);
        s.set(v);
    })
}

/// Empty pipes this shard keeps (`/metrics`: they hold two descriptors each).
pub fn pooled_pipes() -> usize {
    PIPES.with(|p| p.borrow().len())
}

fn open_pipe() -> io::Result<Pipe> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are open descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A larger pipe is a wish (`/proc/sys/fs/pipe-max-size`, the user's pipe quota): the
    // size it has is what counts.
    // SAFETY: fcntl on a descriptor we own.
    let set = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    let cap = if set > 0 {
        set as usize
    } else {
        // SAFETY: as above.
        match unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) } {
            n if n > 0 => n as usize,
            _ => 64 << 10,
        }
    };
    note(|s| s.pipes_opened += 1);
    Ok(Pipe { r, w, cap })
}

/// A pipe lent to one body. Given back to the pool by [`Lent::give_back`] once the body
/// is through (the pipe is then empty); dropped otherwise, which closes it: a body given
/// up (the client went away, the backend broke, a timeout) may have left bytes in it.
struct Lent {
    pipe: Pipe,
    /// Bytes in the pipe.
    held: usize,
}

impl Lent {
    fn take() -> io::Result<Lent> {
        let pipe = match PIPES.with(|p| p.borrow_mut().pop()) {
            Some(p) => p,
            None => open_pipe()?,
        };
        Ok(Lent { pipe, held: 0 })
    }

    /// Back to the pool if empty and the pool has room; closed otherwise.
    fn give_back(self) {
        if self.held == 0 {
            PIPES.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_KEEP {
                    pool.push(self.pipe);
                }
            });
        }
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
    // SAFETY: plain descriptors and no offsets (both are a pipe or a socket).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// splice(2) on a socket waits unless the socket itself is non-blocking
/// (`SPLICE_F_NONBLOCK` speaks for the pipe only). glommio's sockets are, as a rule;
/// this makes sure, once per body.
fn ensure_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the stream owns for the length of the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Streams the `left` bytes of a `Content-Length` body from `src` to `dst` (with `buf`
/// holding what was already read of it): by splice where both ends are plain TCP, by
/// copy ([`crate::body::copy_body`]) otherwise or when no pipe can be had.
pub(crate) async fn copy_length<R, W>(
    src: &mut R,
    buf: &mut Buf,
    dst: &mut W,
    mut left: u64,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin + SpliceEnd,
    W: AsyncWrite + Unpin + SpliceEnd,
{
    let framing = |left| ringway_http1::Framing::Length(left);
    // What was already read leaves first.
    write_held(buf, dst, &mut left).await?;
    if left == 0 {
        return Ok(());
    }
    let dst_fd = dst.with_tcp(|s| ensure_nonblocking(s.as_raw_fd()).map(|()| s.as_raw_fd()));
    let Some(Ok(dst_fd)) = dst_fd else {
        return crate::body::copy_body(framing(left), src, buf, dst).await;
    };
    // From now on this connection's receives are single ones: a multishot takes in all
    // that arrives while the shard serves other connections, or while this body's head
    // is being handled (an idle shard's multishot had a whole 1 MiB body in the ring
    // before the head was read; with eight busy connections on a shard, a quarter of the
    // bodies), and those bytes must be copied. A connection that carries one large body
    // is likely to carry more; one that never does keeps its multishot, which costs less
    // per small response. (This body may still be copied in part or whole: the next is
    // spliced.)
    src.with_tcp(|s| s.set_recv_multishot(false));
    // End the backend stream's receives; the bytes they brought go out first.
    loop {
        match src.with_tcp(|s| s.stop_receives()) {
            None => return crate::body::copy_body(framing(left), src, buf, dst).await,
            Some(true) => {}
            Some(false) => {
                // A receive of the stream's is in the kernel: read through it once.
                crate::body::fill_or_eof(buf, src).await?;
                write_held(buf, dst, &mut left).await?;
                if left == 0 {
                    return Ok(());
                }
                continue;
            }
        }
        // Nothing receives any more: write out what the receives brought.
        buf.clear();
        let held = src
            .with_tcp(|s| buf.fill_now(|spare| s.try_read_buffered(spare)))
            .flatten();
        match held {
            None => break,
            Some(Ok(0)) => {
                return Err(CopyError::Src(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body ended early",
                )))
            }
            Some(Ok(_)) => {
                write_held(buf, dst, &mut left).await?;
                if left == 0 {
                    return Ok(());
                }
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                // Still armed (the cancel did not take): read through it.
                continue;
            }
            Some(Err(e)) => return Err(CopyError::Src(e)),
        }
    }
    // From here on the socket is read only by splice, and never past the body: bytes
    // the backend sent beyond it (a response nobody asked for) stay in the socket, and
    // are looked for once the body is through.
    let src_fd = match src.with_tcp(|s| ensure_nonblocking(s.as_raw_fd()).map(|()| s.as_raw_fd())) {
        Some(Ok(fd)) => fd,
        Some(Err(e)) => return Err(CopyError::Src(e)),
        None => return crate::body::copy_body(framing(left), src, buf, dst).await,
    };
    let mut pipe = match Lent::take() {
        Ok(p) => p,
        // No fd for a pipe (the process's limit): copy instead, nothing lost.
        Err(_) => return crate::body::copy_body(framing(left), src, buf, dst).await,
    };
    note(|s| s.bodies += 1);
    poll_fn(|cx| pump(cx, src, dst, (src_fd, dst_fd), &mut pipe, &mut left)).await?;
    pipe.give_back();
    // Bytes the backend sent past the body (a response nobody asked for) are still in
    // the socket, where the pool's checks would not see them before the connection's
    // next request read them as its answer. What is there now is taken into `buf`: the
    // exchange then finds bytes past the response and closes the connection, as after
    // a copied body. Nothing of the stream receives now, so the socket may be read.
    if let Some(Err(e)) = buf.fill_now(|spare| Some(recv_now(src_fd, spare))) {
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(CopyError::Src(e));
        }
    }
    Ok(())
}

/// The most one send from the ring takes: as the copy's gather (`body.rs`), under
/// loopback's 65,483-byte MSS.
const RING_SEND: usize = 48 << 10;

/// Relays the `left` bytes of a `Content-Length` body from `src` to `dst` (with `buf`
/// holding what was already read of it) without copying them through ringway's memory
/// where both ends are plain TCP: what the backend's multishot receive brought is sent
/// from the receive buffer ring itself, one `sendmsg` of up to 48 KiB gathered from the
/// ring's buffers, and each buffer goes back to the ring once sent. The ring's buffers
/// are held only for that call: when the client's socket is full, what is queued is
/// copied into `buf` and written the ordinary way (under the write timeout), so a slow
/// client never pins ring buffers that other connections' receives need. Bytes that
/// came some other way (a single receive, the stream's stash) are copied as before.
/// TLS on either side: [`crate::body::copy_body`].
pub(crate) async fn relay_length<R, W>(
    src: &mut R,
    buf: &mut Buf,
    dst: &mut W,
    mut left: u64,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin + SpliceEnd,
    W: AsyncWrite + Unpin + SpliceEnd,
{
    let framing = |left| ringway_http1::Framing::Length(left);
    write_held(buf, dst, &mut left).await?;
    dst.flush().await.map_err(CopyError::Dst)?;
    let dst_fd = dst.with_tcp(|s| s.as_raw_fd());
    let (Some(dst_fd), Some(())) = (dst_fd, src.with_tcp(|_| ())) else {
        return crate::body::copy_body(framing(left), src, buf, dst).await;
    };
    let mut waited = false;
    while left > 0 {
        let max = left.min(RING_SEND as u64) as usize;
        match src.with_tcp(|s| s.send_buffered(dst_fd, max)).flatten() {
            Some(Ok(n)) => {
                left -= n as u64;
                dst.spliced(n);
                note(|s| s.ring_sent_bytes += n as u64);
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                // The client is full: free the ring's buffers into `buf`, and wait on
                // the client the ordinary way.
                buf.clear();
                while buf.len() < max {
                    if buf.spare_capacity() == 0 && !buf.grow(RING_SEND) {
                        break;
                    }
                    let got = src
                        .with_tcp(|s| buf.fill_now(|spare| s.try_read_buffered(spare)))
                        .flatten();
                    if !matches!(got, Some(Ok(n)) if n > 0) {
                        break;
                    }
                }
                if buf.is_empty() {
                    crate::body::fill_or_eof(buf, src).await?;
                }
                write_held(buf, dst, &mut left).await?;
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Some(Err(e)) => return Err(CopyError::Dst(e)),
            None if !waited => {
                // Nothing from a multishot held: wait until the backend is readable
                // (that arms one), then send from the ring.
                poll_fn(|cx| match src.with_tcp(|s| s.poll_readable(cx)) {
                    Some(p) => p,
                    None => Poll::Ready(Ok(())),
                })
                .await
                .map_err(CopyError::Src)?;
                waited = true;
                continue;
            }
            None => {
                // Readable, but not through a multishot (a single receive's bytes, the
                // stream's stash, EOF, an error): read it the ordinary way.
                crate::body::fill_or_eof(buf, src).await?;
                write_held(buf, dst, &mut left).await?;
            }
        }
        waited = false;
    }
    // Bytes the backend sent past the body (a response nobody asked for) that the
    // multishot already took stay in the ring's queue: the pool's checkout finds them
    // (`fd::held_peek`, also within `PROBE_AFTER`) and closes the connection as a
    // desync. (`bytes_past_a_spliced_body_never_reach_a_client` read them as the next
    // answer before that check.)
    Ok(())
}

/// One receive that never waits (`MSG_DONTWAIT`).
fn recv_now(fd: RawFd, into: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `into` is writable for its length for the length of the call.
    let n = unsafe { libc::recv(fd, into.as_mut_ptr().cast(), into.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes what `buf` holds of the body (at most `left` bytes) to `dst`.
async fn write_held<W: AsyncWrite + Unpin>(
    buf: &mut Buf,
    dst: &mut W,
    left: &mut u64,
) -> Result<(), CopyError> {
    let take = (buf.len() as u64).min(*left) as usize;
    if take > 0 {
        dst.write_all(&buf.data()[..take])
            .await
            .map_err(CopyError::Dst)?;
        buf.consume(take);
        *left -= take as u64;
    }
    Ok(())
}

/// The splice loop, as one poll: fill the empty pipe from the backend (at most what is
/// left of the body), empty it into the client; wait on whichever socket would block.
fn pump<R: SpliceEnd, W: SpliceEnd>(
    cx: &mut Context<'_>,
    src: &mut R,
    dst: &mut W,
    (src_fd, dst_fd): (RawFd, RawFd),
    pipe: &mut Lent,
    left: &mut u64,
) -> Poll<Result<(), CopyError>> {
    loop {
        if pipe.held == 0 {
            if *left == 0 {
                return Poll::Ready(Ok(()));
            }
            let want = (*left).min(pipe.pipe.cap as u64) as usize;
            match splice(src_fd, pipe.pipe.w.as_raw_fd(), want) {
                Ok(0) => {
                    return Poll::Ready(Err(CopyError::Src(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body ended early",
                    ))))
                }
                Ok(n) => {
                    pipe.held = n;
                    *left -= n as u64;
                    note(|s| s.bytes += n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match src.with_tcp(|s| s.poll_socket_readable(cx)) {
                        Some(Poll::Ready(Ok(()))) => continue,
                        Some(Poll::Ready(Err(e))) => return Poll::Ready(Err(CopyError::Src(e))),
                        Some(Poll::Pending) => return Poll::Pending,
                        None => {
                            return Poll::Ready(Err(CopyError::Src(io::ErrorKind::Other.into())))
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(CopyError::Src(e))),
            }
        }
        match splice(pipe.pipe.r.as_raw_fd(), dst_fd, pipe.held) {
            Ok(0) => {
                return Poll::Ready(Err(CopyError::Dst(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the client socket took nothing",
                ))))
            }
            Ok(n) => {
                pipe.held -= n;
                dst.spliced(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match dst.with_tcp(|s| s.poll_socket_writable(cx)) {
                    Some(Poll::Ready(Ok(()))) => continue,
                    Some(Poll::Ready(Err(e))) => return Poll::Ready(Err(CopyError::Dst(e))),
                    Some(Poll::Pending) => return Poll::Pending,
                    None => return Poll::Ready(Err(CopyError::Dst(io::ErrorKind::Other.into()))),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Poll::Ready(Err(CopyError::Dst(e))),
        }
    }
}
