//! A connection's receive buffer (bytes read from a socket and not yet consumed), and
//! the per-shard pool its memory comes from.
//!
//! A [`Buf`] holds memory only while it holds bytes: the store is taken from the shard's
//! pool on the first read (or `put`) and given back by [`Buf::release`] once everything
//! in it is consumed, or when the `Buf` is dropped. A keep-alive connection waiting for
//! its next request therefore holds no buffer: the front waits for readability without
//! one (`glommio::net::TcpStream::readable`) and only then takes a store and reads.
//! Consumed bytes are reclaimed by moving the unread tail to the front just before the
//! next read, never per request; a store grows only while a head does not fit (up to
//! `--max-head`) and such a grown store goes back to the allocator, not to the pool.
//!
//! The pool is per thread, which is per shard (each shard is one executor thread); it
//! keeps at most [`POOL_KEEP`] free stores. Reads go through the ring (vendored glommio:
//! a readiness poll, then a `RECV` into a buffer of glommio's own I/O pool, copied into
//! the store when it completes), so no operation in flight ever refers to a store:
//! dropping a `Buf` in the middle of a read (a connection task cancelled) simply returns
//! the store, and bytes a dropped read's receive brought stay with the stream for the
//! next read.

use std::cell::RefCell;
use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

/// The size of a pooled store: each connection's receive buffer while it has bytes.
pub const BUF_SIZE: usize = 16 << 10;

/// Free stores a shard keeps for reuse (4 MiB at most); more go back to the allocator.
pub const POOL_KEEP: usize = 256;

/// Scratch vectors (heads ringway writes) kept for reuse, and the capacity each starts at.
const SCRATCH_KEEP: usize = 256;
const SCRATCH_CAP: usize = 1024;
/// A scratch vector that grew past this (a huge head) is freed rather than kept.
const SCRATCH_MAX: usize = 64 << 10;

thread_local! {
    static STORES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_store(cap: usize) -> Vec<u8> {
    if cap == BUF_SIZE {
        if let Some(s) = STORES.with(|p| p.borrow_mut().pop()) {
            return s;
        }
    }
    vec![0; cap]
}

fn give_store(store: Vec<u8>) {
    if store.len() != BUF_SIZE {
        return;
    }
    // `try_with`: a Buf dropped while the thread's locals are torn down just frees.
    let _ = STORES.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_KEEP {
            p.push(store);
        }
    });
}

/// Free stores in this shard's pool.
pub fn pooled_stores() -> usize {
    STORES.with(|p| p.borrow().len())
}

/// An empty scratch vector from this shard's pool (capacity at least 1 KiB).
pub fn scratch() -> Vec<u8> {
    SCRATCH
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SCRATCH_CAP))
}

/// Gives a scratch vector back (cleared); one that grew past 64 KiB is freed instead.
pub fn give_scratch(mut v: Vec<u8>) {
    if v.capacity() < SCRATCH_CAP || v.capacity() > SCRATCH_MAX {
        return;
    }
    v.clear();
    let _ = SCRATCH.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < SCRATCH_KEEP {
            p.push(v);
        }
    });
}

pub struct Buf {
    /// Empty while the buffer holds no memory.
    store: Vec<u8>,
    /// The size a store starts at when one is taken.
    cap: usize,
    start: usize,
    end: usize,
}

impl Default for Buf {
    fn default() -> Buf {
        Buf::new()
    }
}

impl Buf {
    /// A buffer of [`BUF_SIZE`] from the pool, taken when bytes first come.
    pub fn new() -> Buf {
        Buf::with_capacity(BUF_SIZE)
    }

    /// A buffer of `cap` bytes, taken (from the pool when `cap` is [`BUF_SIZE`]) when
    /// bytes first come.
    pub fn with_capacity(cap: usize) -> Buf {
        Buf {
            store: Vec::new(),
            cap: cap.max(1),
            start: 0,
            end: 0,
        }
    }

    fn ensure(&mut self) {
        if self.store.is_empty() {
            self.store = take_store(self.cap);
        }
    }

    /// Whether it holds a store now.
    pub fn holds_memory(&self) -> bool {
        !self.store.is_empty()
    }

    /// Gives the store back to the pool if no unread byte is left in it (else nothing).
    pub fn release(&mut self) {
        if self.start == self.end && !self.store.is_empty() {
            give_store(std::mem::take(&mut self.store));
            self.start = 0;
            self.end = 0;
        }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        &self.store[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes as read.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Appends `data` after the unread bytes, growing the buffer as needed (for heads
    /// that ringway writes itself, such as an HTTP/2 response seen as HTTP/1.1).
    pub fn put(&mut self, data: &[u8]) {
        self.ensure();
        if self.store.len() - self.end < data.len() {
            self.store.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.store.len() - self.end < data.len() {
                self.store.resize(self.end + data.len(), 0);
            }
        }
        self.store[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// Room for more bytes, counting space reclaimable by compaction (and a store not
    /// taken yet).
    pub fn spare_capacity(&self) -> usize {
        self.store.len().max(self.cap) - self.len()
    }

    /// Doubles the buffer up to `limit` bytes. False when already at the limit.
    pub fn grow(&mut self, limit: usize) -> bool {
        self.ensure();
        if self.store.len() >= limit {
            return false;
        }
        let new = (self.store.len() * 2).min(limit).max(self.store.len() + 1);
        self.store.resize(new, 0);
        true
    }

    /// Fills the free space with what `read` hands over without waiting (a stream's
    /// bytes already received), taking a store first if it has none: `read`'s answer,
    /// with the bytes it wrote kept. `None`: nothing was there.
    pub fn fill_now(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> Option<io::Result<usize>>,
    ) -> Option<io::Result<usize>> {
        self.ensure();
        if self.end == self.store.len() && self.start > 0 {
            self.store.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let got = read(&mut self.store[self.end..]);
        if let Some(Ok(n)) = got {
            self.end += n;
        }
        got
    }

    /// Reads once from `stream` (a socket, a TLS session, one half of a
    /// [`crate::duplex::Duplex`]) into the free space, taking a store first if it has
    /// none; returns the bytes read (0 = EOF). Dropping the future mid-read leaves the
    /// buffer as it was (a readiness-based read holds no reference to the store).
    pub async fn fill_from<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> io::Result<usize> {
        self.ensure();
        if self.end == self.store.len() && self.start > 0 {
            self.store.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.store.len() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer full"));
        }
        let n = stream.read(&mut self.store[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if !self.store.is_empty() {
            give_store(std::mem::take(&mut self.store));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_and_grow() {
        let mut b = Buf::with_capacity(4);
        assert!(!b.holds_memory());
        assert_eq!(b.spare_capacity(), 4);
        b.put(b"abc");
        b.consume(1);
        assert_eq!(b.data(), b"bc");
        assert_eq!(b.spare_capacity(), 2);
        assert!(b.grow(6));
        assert_eq!(b.store.len(), 6);
        assert!(!b.grow(6));
        b.consume(5);
        assert!(b.is_empty());
        assert_eq!((b.start, b.end), (0, 0));
    }

    #[test]
    fn stores_come_from_the_pool_and_go_back() {
        // Each test runs on its own thread: this pool starts empty.
        assert_eq!(pooled_stores(), 0);
        let mut b = Buf::new();
        assert!(!b.holds_memory(), "a new Buf holds no memory");
        b.put(b"GET / HTTP/1.1\r\n");
        assert!(b.holds_memory());
        b.release();
        assert!(b.holds_memory(), "unread bytes keep the store");
        b.consume(b.len());
        b.release();
        assert!(!b.holds_memory());
        assert_eq!(pooled_stores(), 1);
        // The next Buf reuses it; dropping one with bytes in it returns its store too.
        let mut c = Buf::new();
        c.put(b"x");
        assert_eq!(pooled_stores(), 0);
        drop(c);
        assert_eq!(pooled_stores(), 1);
        // A grown store is freed, not pooled; the pool keeps at most POOL_KEEP.
        let mut g = Buf::new();
        g.put(b"y");
        assert!(g.grow(BUF_SIZE * 4));
        drop(g);
        assert_eq!(pooled_stores(), 0);
        let many: Vec<Buf> = (0..POOL_KEEP + 10)
            .map(|_| {
                let mut b = Buf::new();
                b.put(b"z");
                b
            })
            .collect();
        drop(many);
        assert_eq!(pooled_stores(), POOL_KEEP);
    }

    #[test]
    fn scratch_vectors_are_reused_and_capped() {
        let mut v = scratch();
        assert!(v.capacity() >= SCRATCH_CAP);
        v.extend_from_slice(b"head");
        let ptr = v.as_ptr();
        give_scratch(v);
        let w = scratch();
        assert!(w.is_empty());
        assert_eq!(w.as_ptr(), ptr, "the same allocation comes back");
        let mut big = Vec::with_capacity(SCRATCH_MAX * 2);
        big.push(1u8);
        give_scratch(big);
        let again = scratch();
        assert!(again.capacity() < SCRATCH_MAX * 2);
    }
}

/// The buffer over real sockets on a glommio executor: the readiness wait that holds no
/// buffer (ringway's patch to the vendored glommio), partial reads, and a read cancelled
/// by dropping it.
#[cfg(test)]
mod socket_tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    use futures_lite::future::poll_once;
    use glommio::net::{TcpListener, TcpStream};
    use glommio::timer::timeout;

    /// Runs `f` on a fresh executor with a connected pair: (ours, accepted by glommio;
    /// theirs, a plain std socket).
    fn with_pair<F, Fut>(f: F)
    where
        F: FnOnce(TcpStream, std::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(move || async move {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
                let addr = listener.local_addr().expect("addr");
                let theirs = std::net::TcpStream::connect(addr).expect("connect");
                let ours = listener.accept().await.expect("accept");
                f(ours, theirs).await;
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn readable_waits_for_bytes_without_a_buffer() {
        with_pair(|mut ours, mut theirs| async move {
            // Nothing sent: the wait does not complete (checked for 50 ms).
            let quiet = timeout(Duration::from_millis(50), async {
                Ok(ours.readable().await)
            })
            .await;
            assert!(quiet.is_err(), "readable before any byte: {:?}", quiet.ok());
            theirs.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
            timeout(WAIT, async { Ok(ours.readable().await) })
                .await
                .expect("readable once bytes came")
                .expect("no error");
            let mut b = Buf::new();
            assert!(!b.holds_memory());
            let n = b.fill_from(&mut ours).await.expect("read");
            assert_eq!(&b.data()[..n], b"GET / HTTP/1.1\r\n\r\n");
            // Already readable (bytes left in the socket) counts too.
            theirs.write_all(b"more").expect("send");
            timeout(WAIT, async { Ok(ours.readable().await) })
                .await
                .expect("readable again")
                .expect("no error");
            assert_eq!(b.fill_from(&mut ours).await.expect("read"), 4);
        });
    }

    #[test]
    fn readable_reports_eof_and_times_out() {
        with_pair(|mut ours, theirs| async move {
            ours.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let err = ours.readable().await.expect_err("nothing came");
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            drop(theirs);
            ours.set_read_timeout(Some(WAIT)).expect("timeout");
            ours.readable().await.expect("EOF is readable");
            let mut b = Buf::new();
            assert_eq!(b.fill_from(&mut ours).await.expect("read"), 0);
        });
    }

    #[test]
    fn partial_reads_fill_the_store_in_pieces() {
        with_pair(|mut ours, mut theirs| async move {
            let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
            let copy = sent.clone();
            let writer = std::thread::spawn(move || theirs.write_all(&copy));
            ours.set_read_timeout(Some(WAIT)).expect("timeout");
            let mut b = Buf::new();
            let mut got = Vec::new();
            while got.len() < sent.len() {
                let n = b.fill_from(&mut ours).await.expect("read");
                assert!(n > 0 && n <= BUF_SIZE, "one read of {n}");
                got.extend_from_slice(b.data());
                b.consume(b.len());
            }
            assert_eq!(got, sent);
            writer.join().expect("writer").expect("write");
        });
    }

    #[test]
    fn a_read_dropped_in_flight_returns_its_store_and_loses_nothing() {
        with_pair(|mut ours, mut theirs| async move {
            assert_eq!(pooled_stores(), 0);
            let mut b = Buf::new();
            {
                let read = b.fill_from(&mut ours);
                futures_lite::pin!(read);
                assert!(poll_once(&mut read).await.is_none(), "no bytes yet");
                // The connection's task is cancelled here, read pending.
            }
            assert!(b.holds_memory());
            drop(b);
            assert_eq!(pooled_stores(), 1, "the store went back to the pool");
            // Bytes sent after the cancellation reach the next reader intact.
            theirs.write_all(b"after").expect("send");
            ours.set_read_timeout(Some(WAIT)).expect("timeout");
            let mut c = Buf::new();
            let n = c.fill_from(&mut ours).await.expect("read");
            assert_eq!(&c.data()[..n], b"after");
            assert_eq!(pooled_stores(), 0, "the next Buf took the pooled store");
        });
    }
}
