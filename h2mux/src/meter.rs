//! [`Metered`]: what an HTTP/2 peer sends, counted frame by frame as the bytes go by, and
//! a bound on how long one connection may keep its shard busy reading.
//!
//! The `h2` crate answers control frames (PING, SETTINGS, WINDOW_UPDATE, PRIORITY,
//! RST_STREAM, unknown types) itself and never tells the application, and it reads and
//! processes frames for as long as the socket has bytes. A peer that streams such frames
//! as fast as it can would then hold its shard for as long as it likes. `Metered` sits
//! between the socket and `h2`:
//!
//! - it parses frame *headers* only (9 bytes: length, type, flags, stream) on the read
//!   side and counts, per [`WINDOW`], the frames that cost work without carrying a request
//!   (every control frame, empty DATA, CONTINUATION) against those that do (HEADERS,
//!   DATA with a payload). The caller asks [`FrameMeter::over_budget`] and closes the
//!   connection with `ENHANCE_YOUR_CALM` when a peer is;
//! - after [`READ_SLICE`] bytes read without the socket ever saying "nothing more now",
//!   it returns `Pending` once (having woken itself), so the executor runs the shard's
//!   other tasks before this connection gets the CPU again.
//!
//! It keeps no buffer and copies nothing; its cost is a few comparisons per read.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

/// Bytes one connection may read in a row before it lets other tasks run.
pub const READ_SLICE: usize = 64 << 10;
/// The window over which frames are counted.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The budget of frames that carry no request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Cheap frames allowed per window whatever the peer does.
    pub base: u32,
    /// Extra cheap frames allowed per request-carrying frame in the same window (a busy
    /// client sends WINDOW_UPDATEs and the odd PING in proportion to its streams).
    pub per_request: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            base: 4000,
            per_request: 8,
        }
    }
}

/// Counts of one connection's frames, fed with the bytes read from it.
#[derive(Debug)]
pub struct FrameMeter {
    budget: Budget,
    /// Bytes of the current frame header seen so far.
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
    /// The connection preface (24 bytes) is not made of frames.
    preface_left: usize,
    window_start: Option<Instant>,
    cheap: u32,
    useful: u32,
    /// Frames counted since the connection started, by kind, for metrics and tests.
    pub total_cheap: u64,
    pub total_useful: u64,
    over: bool,
}

impl FrameMeter {
    /// A meter for a server connection whose first bytes are the client preface.
    pub fn server(budget: Budget) -> FrameMeter {
        FrameMeter {
            budget,
            head: [0; 9],
            head_len: 0,
            skip: 0,
            preface_left: 24,
            window_start: None,
            cheap: 0,
            useful: 0,
            total_cheap: 0,
            total_useful: 0,
            over: false,
        }
    }

    /// Whether the peer spent more than its budget of cheap frames in one window.
    pub fn over_budget(&self) -> bool {
        self.over
    }

    /// Feeds bytes read from the peer, at time `now`.
    pub fn feed(&mut self, mut data: &[u8], now: Instant) {
        if self.preface_left > 0 {
            let n = self.preface_left.min(data.len());
            self.preface_left -= n;
            data = &data[n..];
        }
        while !data.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (9 - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            data = &data[n..];
            if self.head_len == 9 {
                self.head_len = 0;
                let len = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]);
                self.skip = u64::from(len);
                self.count(self.head[3], len, now);
            }
        }
    }

    fn count(&mut self, kind: u8, len: u32, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= WINDOW {
            self.window_start = Some(now);
            self.cheap = 0;
            self.useful = 0;
        }
        // 0 DATA, 1 HEADERS: a request or its body; everything else, and empty DATA, is
        // work without one.
        let useful = match kind {
            0 => len > 0,
            1 => true,
            _ => false,
        };
        if useful {
            self.useful = self.useful.saturating_add(1);
            self.total_useful += 1;
        } else {
            self.cheap = self.cheap.saturating_add(1);
            self.total_cheap += 1;
            let allowed = self
                .budget
                .base
                .saturating_add(self.useful.saturating_mul(self.budget.per_request));
            if self.cheap > allowed {
                self.over = true;
            }
        }
    }
}

/// A stream whose reads are metered (see the module docs). The meter is shared with the
/// caller, who checks it between accepts.
pub struct Metered<T> {
    inner: T,
    meter: Rc<RefCell<FrameMeter>>,
    /// Bytes read since the socket last said Pending (or since we last yielded).
    streak: usize,
}

impl<T> Metered<T> {
    pub fn new(inner: T, meter: Rc<RefCell<FrameMeter>>) -> Self {
        Metered {
            inner,
            meter,
            streak: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.streak >= READ_SLICE {
            // Let the shard's other tasks run; we are next in line again at once.
            this.streak = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.streak += n.max(1);
                this.meter.borrow_mut().feed(&buf[..n], Instant::now());
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                this.streak = 0;
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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
    use super::*;

    fn frame(kind: u8, len: u32) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + len as usize, 0xab);
        f
    }

    #[test]
    fn counts_frames_across_any_split_and_flags_a_flood() {
        let now = Instant::now();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(4, 6)); // SETTINGS
        bytes.extend(frame(1, 30)); // HEADERS
        bytes.extend(frame(0, 100)); // DATA
        bytes.extend(frame(0, 0)); // empty DATA: cheap
        bytes.extend(frame(8, 4)); // WINDOW_UPDATE
        for split in [1usize, 7, 9, 10, 33, bytes.len()] {
            let mut m = FrameMeter::server(Budget::default());
            for piece in bytes.chunks(split) {
                m.feed(piece, now);
            }
            assert_eq!((m.total_useful, m.total_cheap), (2, 3), "split {split}");
            assert!(!m.over_budget());
        }
        let mut m = FrameMeter::server(Budget {
            base: 10,
            per_request: 2,
        });
        m.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", now);
        m.feed(&frame(1, 10), now);
        for _ in 0..12 {
            m.feed(&frame(6, 8), now); // PING
        }
        assert!(!m.over_budget(), "10 + 2 per request allowed");
        m.feed(&frame(6, 8), now);
        assert!(m.over_budget());
        // A new window starts afresh for a later flood check, but `over` stays set.
        let mut m = FrameMeter::server(Budget {
            base: 2,
            per_request: 0,
        });
        m.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", now);
        for i in 0..6u32 {
            m.feed(&frame(2, 5), now + WINDOW * i); // PRIORITY, one per window
        }
        assert!(!m.over_budget(), "a slow trickle of cheap frames is fine");
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn window_update_flood_in_socket_sized_pieces() {
        let now = Instant::now();
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
        for _ in 0..5000 {
            bytes.extend([0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        }
        for split in [16384usize, 4096, 65536, 33] {
            let mut m = FrameMeter::server(Budget::default());
            for piece in bytes.chunks(split) {
                m.feed(piece, now);
            }
            assert_eq!((m.total_cheap, m.total_useful), (5001, 0), "split {split}");
            assert!(m.over_budget());
        }
    }
}
