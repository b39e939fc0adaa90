//! A token bucket: what a client may spend per second, after a burst. Used to count
//! what a client connection costs over time rather than only in bursts: its stream
//! resets (HTTP/2 front) and the backend connections its cancelled requests cost (the
//! exchange). One bucket per client connection; plain arithmetic, no timer, no task.

use std::time::{Duration, Instant};

/// `burst` tokens at most, refilled at `rate` per second. A rate of 0 means unbounded
/// (every `take` succeeds).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Whether this bucket bounds anything.
    pub fn bounded(&self) -> bool {
        self.rate > 0.0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Spends one token; false when none was left (the bucket then stays empty).
    pub fn take(&mut self, now: Instant) -> bool {
        if !self.bounded() {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken for something that turned out to cost nothing.
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// How long until a token is there (zero when one is).
    pub fn wait(&mut self, now: Instant) -> Duration {
        if !self.bounded() {
            return Duration::ZERO;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        for _ in 0..5 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        let w = b.wait(t0);
        assert!(
            w > Duration::from_millis(90) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        // 1 s later: 10 tokens due, but the bucket holds 5 at most.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            assert!(b.take(t1));
        }
        assert!(!b.take(t1));
        assert!(b.take(t1 + Duration::from_millis(100)));
    }

    #[test]
    fn sustained_rate_is_bounded() {
        // 1,600 takes per second for 10 s against 100/s after a burst of 1000: about
        // 1000 + 100 * 10 succeed.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 1000, t0);
        let ok = (0..16_000)
            .filter(|i| b.take(t0 + Duration::from_micros(625 * i)))
            .count();
        assert!((1990..=2010).contains(&ok), "{ok}");
    }

    #[test]
    fn zero_rate_is_unbounded() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 0, t0);
        assert!((0..100_000).all(|_| b.take(t0)));
        assert_eq!(b.wait(t0), Duration::ZERO);
    }
}
