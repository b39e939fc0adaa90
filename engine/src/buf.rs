//! A connection's receive buffer: bytes read from a socket and not yet consumed.
//!
//! Allocated once per connection and reused for every request on it; it grows only
//! while a head does not fit (up to `--max-head`). Consumed bytes are reclaimed by moving
//! the unread tail to the front just before the next read, never per request.

use std::io;

use futures_lite::{AsyncRead, AsyncReadExt};

pub struct Buf {
    store: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn with_capacity(cap: usize) -> Buf {
        Buf {
            store: vec![0; cap],
            start: 0,
            end: 0,
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

    /// Room for more bytes, counting space reclaimable by compaction.
    pub fn spare_capacity(&self) -> usize {
        self.store.len() - self.len()
    }

    /// Doubles the buffer up to `limit` bytes. False when already at the limit.
    pub fn grow(&mut self, limit: usize) -> bool {
        if self.store.len() >= limit {
            return false;
        }
        let new = (self.store.len() * 2).min(limit).max(self.store.len() + 1);
        self.store.resize(new, 0);
        true
    }

    /// Reads once from `stream` (a socket, a TLS session, one half of a [`crate::duplex::Duplex`]) into the free space; returns the bytes read (0 = EOF).
    pub async fn fill_from<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_and_grow() {
        let mut b = Buf::with_capacity(4);
        b.store[..3].copy_from_slice(b"abc");
        b.end = 3;
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
}
