//! The one audited place where ringway touches raw file descriptors of live connections:
//! detaching a backend connection's fd from the shard that owns it, attaching an fd on
//! the shard that adopts it, and arming `SO_LINGER 0` so a policy close sends RST.
//!
//! glommio 0.9's `TcpStream` has no `IntoRawFd`. Detaching duplicates the fd
//! (`F_DUPFD_CLOEXEC`) and then drops the glommio stream, which closes the old number and
//! cancels its pending poll on the owner's ring; the duplicate, an `OwnedFd`, is the only
//! thing that crosses threads. Nothing else in ringway may build a stream from a raw fd.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use glommio::net::TcpStream;

fn borrow(stream: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the fd belongs to `stream`, which outlives the returned borrow (same lifetime),
    // and glommio closes it only when the stream is dropped.
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

/// Detaches a stream from this shard: returns an independent fd for the same socket.
/// The caller must not hold any buffered bytes for this stream (ours are unbuffered).
pub fn detach(stream: TcpStream) -> io::Result<OwnedFd> {
    let owned = borrow(&stream).try_clone_to_owned()?;
    drop(stream);
    Ok(owned)
}

/// Attaches a detached fd to the current shard's reactor.
pub fn attach(fd: OwnedFd) -> TcpStream {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` comes from an `OwnedFd` we just consumed, so it is open, refers to a
    // connected TCP socket (only `detach` produces these), and has no other owner.
    unsafe { TcpStream::from_raw_fd(raw) }
}

/// A second stream object on the same socket (a duplicated fd), so that one task can
/// write while another reads. Dropping it closes only the duplicate.
pub fn duplicate(stream: &TcpStream) -> io::Result<TcpStream> {
    let owned = borrow(stream).try_clone_to_owned()?;
    Ok(attach(owned))
}

/// Whether an idle connection is still usable: no EOF, no error, and nothing sent by
/// the server unasked (one non-blocking `MSG_PEEK`; nothing is consumed).
pub fn idle_is_healthy(stream: &TcpStream) -> bool {
    let fd = borrow(stream);
    let sock = socket2::SockRef::from(&fd);
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        // 0: the server closed; >0: bytes nobody asked for.
        Ok(_) => false,
    }
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
