//! ringway: a per-thread pool of the codec's read and write buffers.
//!
//! The codec gives its buffers back while a connection idles (`framed_read.rs`,
//! `framed_write.rs`), so an idle connection holds none; a busy one took a new buffer
//! from the allocator for each read cycle and each flush (about 1.5 allocations per
//! request under `h2load -c 4 -m 16`). Given back here instead, they are taken again by
//! the next connection of the thread that needs one. At most [`KEEP`] of each kind are
//! kept (about 0.75 MiB per thread), so idle connections still cost no buffer each.
//! A buffer whose memory is still shared (frames handed out and not yet dropped) is
//! kept too: `reserve` on take reuses its memory once it is unique again, or allocates
//! as before.

use std::cell::RefCell;

use bytes::BytesMut;

/// Buffers of each kind a thread keeps.
pub(crate) const KEEP: usize = 32;

thread_local! {
    static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Which pool.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Read,
    Write,
}

fn with<R>(kind: Kind, f: impl FnOnce(&mut Vec<BytesMut>) -> R) -> Option<R> {
    let pool = match kind {
        Kind::Read => &READ,
        Kind::Write => &WRITE,
    };
    // `try_with`: during thread teardown the buffer is simply allocated or freed.
    pool.try_with(|p| f(&mut p.borrow_mut())).ok()
}

/// An empty buffer with room for `capacity` bytes, from the pool when it has one.
pub(crate) fn take(kind: Kind, capacity: usize) -> BytesMut {
    let mut buf = with(kind, |p| p.pop()).flatten().unwrap_or_default();
    buf.clear();
    buf.reserve(capacity);
    buf
}

/// Gives back an empty buffer (one holding bytes is dropped: never the case here).
pub(crate) fn give(kind: Kind, buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    with(kind, |p| {
        if p.len() < KEEP {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_buffer_is_taken_again_and_the_pool_is_bounded() {
        let b = take(Kind::Write, 16 << 10);
        let at = b.as_ptr();
        give(Kind::Write, b);
        let b = take(Kind::Write, 16 << 10);
        assert_eq!(b.as_ptr(), at, "the pooled buffer was reused");
        assert!(b.capacity() >= 16 << 10);
        give(Kind::Write, b);
        for _ in 0..2 * KEEP {
            give(Kind::Read, BytesMut::with_capacity(8 << 10));
        }
        assert_eq!(with(Kind::Read, |p| p.len()), Some(KEEP));
        // A buffer holding bytes is not pooled.
        let mut full = BytesMut::with_capacity(64);
        full.extend_from_slice(b"x");
        give(Kind::Write, full);
        assert_eq!(with(Kind::Write, |p| p.len()), Some(1));
    }
}
