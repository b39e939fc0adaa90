//! Bookkeeping for a body of known length (`Content-Length`).
//!
//! [`LengthCounter`] has the same `feed` shape as [`super::ChunkedScanner`] so the proxy loop
//! can treat both framings alike. It only counts: it never looks at the bytes and never
//! lets bytes past the end of the body (the next pipelined message) be counted as body.

/// Bytes still expected of a `Content-Length` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthCounter {
    pub remaining: u64,
}

impl LengthCounter {
    pub fn new(len: u64) -> Self {
        LengthCounter { remaining: len }
    }

    /// The whole body has been seen (immediately true for a length of 0).
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// Feed the next bytes; returns how many of them belong to the body and whether the body
    /// is complete. Infallible, hence no `Result` (unlike `ChunkedScanner::feed`).
    pub fn feed(&mut self, data: &[u8]) -> (usize, bool) {
        let take = self.remaining.min(data.len() as u64);
        self.remaining -= take;
        (take as usize, self.remaining == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_end_only() {
        let mut c = LengthCounter::new(5);
        assert_eq!(c.feed(b"he"), (2, false));
        assert_eq!(c.feed(b""), (0, false));
        assert_eq!(c.feed(b"lloGET /"), (3, true));
        assert_eq!(c.feed(b"more"), (0, true));
        assert!(LengthCounter::new(0).is_done());
        assert_eq!(LengthCounter::new(0).feed(b"x"), (0, true));
        let mut big = LengthCounter::new(u64::MAX);
        assert_eq!(big.feed(&[0; 10]), (10, false));
        assert_eq!(big.remaining, u64::MAX - 10);
    }
}
