//! The one audited place where ringway touches raw file descriptors of live sockets:
//! detaching a backend connection's fd from the shard that owns it, attaching it on the
//! shard that adopts it, handing a listening socket to glommio, and the two socket
//! options and checks that glommio 0.9 does not expose (`SO_LINGER 0`, a non-blocking
//! `MSG_PEEK`).
//!
//! glommio 0.9's `TcpStream` has no `IntoRawFd`. [`detach`] duplicates the fd
//! (`F_DUPFD_CLOEXEC`) *before* it gives anything up: if the duplicate cannot be made
//! (the fd limit), the stream comes back untouched and stays usable where it was. Only
//! once the duplicate exists is the glommio stream dropped, which closes the old number
//! and cancels its pending poll on the owner's ring. The duplicate travels as a
//! [`DetachedFd`], a newtype only [`detach`] can build, so [`attach`] can only ever be
//! given a connected TCP socket that nothing else owns. Every `unsafe` block of the engine
//! is in this file.
//!
//! [`ThreadBound`] is the other piece a hand-over needs for HTTP/2: an `h2` connection
//! owns its IO object, so to move the connection (its HPACK tables, settings, windows)
//! the IO object must be `Send` while its glommio stream is not. `ThreadBound` holds a
//! value that must stay on the thread that made it and is `Send` only because the value
//! is unreachable anywhere else: off its thread it can be neither borrowed nor dropped
//! (a drop there leaks it). The `send_wrapper` crate does the same but panics on those
//! paths; a panic on a shard is what ringway never does.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use glommio::net::TcpStream;

/// A value bound to the thread that made it (a glommio stream), inside a type that may
/// cross threads: see the module docs. Only the making thread can reach the value.
pub struct ThreadBound<T> {
    value: std::mem::ManuallyDrop<T>,
    thread: std::thread::ThreadId,
}

// SAFETY: the `T` inside is only ever borrowed (`get_mut`), taken (`into_inner`) or dropped
// on the thread recorded at construction; on any other thread those give `None` or leak.
// Moving the `ThreadBound` itself only copies bytes, which touches no thread-local state
// of `T` (a glommio stream's `Rc`s to its reactor are neither read nor dropped elsewhere).
unsafe impl<T> Send for ThreadBound<T> {}

impl<T> ThreadBound<T> {
    /// Binds `value` to the current thread.
    pub fn new(value: T) -> Self {
        ThreadBound {
            value: std::mem::ManuallyDrop::new(value),
            thread: std::thread::current().id(),
        }
    }

    fn here(&self) -> bool {
        std::thread::current().id() == self.thread
    }

    /// The value, on its own thread only.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        if self.here() {
            Some(&mut self.value)
        } else {
            None
        }
    }

    /// Unwraps the value, on its own thread only; elsewhere it is given back.
    pub fn into_inner(mut self) -> Result<T, Self> {
        if !self.here() {
            return Err(self);
        }
        // SAFETY: `self.value` is taken exactly once: `self` is forgotten right after, so
        // its `Drop` (the only other place that touches `value`) never runs.
        let v = unsafe { std::mem::ManuallyDrop::take(&mut self.value) };
        std::mem::forget(self);
        Ok(v)
    }
}

impl<T> Drop for ThreadBound<T> {
    fn drop(&mut self) {
        if self.here() {
            // SAFETY: dropped once, here, on the value's own thread; `value` is not used again.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.value) }
        }
        // Elsewhere: leaked. Never reached by ringway (a hand-over detaches the stream
        // first), and safer than dropping a glommio stream on a foreign thread.
    }
}

/// A connected TCP socket detached from every shard: the only form in which a live
/// connection crosses threads. Built only by [`detach`]; consumed only by [`attach`].
#[derive(Debug)]
pub struct DetachedFd(OwnedFd);

fn borrow(stream: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the fd belongs to `stream`, which outlives the returned borrow (same lifetime),
    // and glommio closes it only when the stream is dropped.
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

/// Detaches a stream from this shard. On failure (no fd left for the duplicate) the
/// stream is given back as it was, still registered and usable on this shard.
/// The caller must not hold buffered bytes for this stream (ringway's are unbuffered);
/// a stream with ring I/O in flight ([`TcpStream::io_quiet`]) is refused the same way.
#[allow(clippy::result_large_err)] // the stream itself comes back, on a path taken at the fd limit only
pub fn detach(mut stream: TcpStream) -> Result<DetachedFd, (TcpStream, io::Error)> {
    // An idle stream may have a multishot receive armed (it holds no buffer until bytes
    // arrive): end it here, synchronously; bytes it already brought keep the stream
    // where it is (below).
    stream.quiesce();
    // Reads and writes go through the ring (vendor/glommio/RINGWAY-PATCHES.md): a stream
    // with a receive or send on it, or received bytes no read took, would leave them
    // behind. Such a stream stays here, usable (a hand-over never costs a connection).
    if !stream.io_quiet() {
        return Err((
            stream,
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the connection has a receive or send in flight on this shard's ring",
            ),
        ));
    }
    match borrow(&stream).try_clone_to_owned() {
        Ok(owned) => {
            drop(stream);
            Ok(DetachedFd(owned))
        }
        Err(e) => Err((stream, e)),
    }
}

/// Attaches a detached socket to the current shard's reactor.
pub fn attach(fd: DetachedFd) -> TcpStream {
    let raw = fd.0.into_raw_fd();
    // SAFETY: `raw` comes from the `OwnedFd` inside a `DetachedFd`, which only `detach`
    // builds from a connected glommio TCP stream; we just consumed it, so it is open and
    // has no other owner.
    unsafe { TcpStream::from_raw_fd(raw) }
}

/// Moves a listening std socket onto the current glommio executor.
pub fn listener_into_glommio(l: std::net::TcpListener) -> glommio::net::TcpListener {
    let fd = l.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` from a listening TCP socket we own;
    // nothing else refers to it, so glommio becomes its single owner and closes it on drop.
    unsafe { glommio::net::TcpListener::from_raw_fd(fd) }
}

/// Whether an idle connection is still usable: no EOF, no error, and nothing sent by
/// the server unasked (one non-blocking `MSG_PEEK`; nothing is consumed).
pub fn idle_is_healthy(stream: &TcpStream) -> bool {
    idle_peek(stream) == IdlePeek::Quiet
}

/// What a non-blocking peek finds on an idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePeek {
    /// Nothing to read: the connection can carry a request.
    Quiet,
    /// The server closed or reset it.
    Closed,
    /// Bytes nobody asked for: the server and we disagree on where a message ended.
    Unsolicited,
}

/// What the ring already took from an idle connection's socket (a multishot receive),
/// which a peek at the socket would not see; no system call. `Quiet`: nothing held (the
/// socket itself is not looked at).
pub fn held_peek(stream: &TcpStream) -> IdlePeek {
    match stream.rx_buffered() {
        Some(true) => IdlePeek::Unsolicited,
        Some(false) => IdlePeek::Closed,
        None => IdlePeek::Quiet,
    }
}

/// Peeks at an idle connection without consuming anything (what the ring holds, then
/// one `recv` with `MSG_PEEK | MSG_DONTWAIT`).
pub fn idle_peek(stream: &TcpStream) -> IdlePeek {
    let held = held_peek(stream);
    if held != IdlePeek::Quiet {
        return held;
    }
    let fd = borrow(stream);
    let sock = socket2::SockRef::from(&fd);
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => IdlePeek::Quiet,
        Err(_) | Ok(0) => IdlePeek::Closed,
        Ok(_) => IdlePeek::Unsolicited,
    }
}

/// Reads what is there without waiting (`MSG_DONTWAIT`): `WouldBlock` when nothing is.
/// For idle checks that must consume what they look at (TLS records).
pub fn recv_nonblocking(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // Bytes the ring took already come first; with a multishot receive armed the
    // socket is not read around it (bytes would come out of order).
    if let Some(r) = stream.try_read_buffered(buf) {
        return r;
    }
    let fd = borrow(stream);
    let sock = socket2::SockRef::from(&fd);
    let uninit: &mut [std::mem::MaybeUninit<u8>] =
        // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, and recv only writes
        // initialised bytes into it, so `buf` stays initialised.
        unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    sock.recv_with_flags(uninit, libc::MSG_DONTWAIT)
}

/// Turns TCP's quick-ACK start off on a newly accepted client connection
/// (`TCP_QUICKACK` 0, what HAProxy does per connection too). Linux ACKs the first
/// segments of a connection at once; a request then got a bare ACK of its own a moment
/// before the response that would have carried it: one more segment per short-lived
/// connection, which on loopback the proxy pays for both ways. With it off, the ACK
/// rides on the response (or goes after the delayed-ACK timer, 40 ms at most, for a
/// response slower than that). One `setsockopt` per connection, no error to act on.
pub fn delay_acks(stream: &TcpStream) {
    let fd = borrow(stream);
    let sock = socket2::SockRef::from(&fd);
    let _ = sock.set_quickack(false);
}

/// Makes the next close of this stream send RST instead of FIN (`SO_LINGER` 0), so that
/// connections closed by policy do not pile up in TIME_WAIT.
pub fn set_linger_zero(stream: &TcpStream) {
    let fd = borrow(stream);
    let sock = socket2::SockRef::from(&fd);
    // Failure only means the close will be a FIN; nothing to recover.
    let _ = sock.set_linger(Some(std::time::Duration::ZERO));
}

/// Number of open fds of this process (for tests and the admin page).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}
