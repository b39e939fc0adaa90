//! Rate-limited warnings for resource errors: the fd limit can make every accept and
//! every connect fail at once, and a log line per failure would make things worse.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

/// Logs at most one warning a second, with how many were not logged meanwhile.
#[derive(Default)]
pub struct RateLimited {
    state: Cell<(Option<Instant>, u64)>,
}

impl RateLimited {
    pub fn warn(&self, shard: usize, what: &str, e: &io::Error) {
        let now = glommio::clock::now();
        let (last, quiet) = self.state.get();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.state.set((last, quiet + 1));
            return;
        }
        tracing::warn!(shard, error = %e, suppressed = quiet, "{what}");
        self.state.set((Some(now), 0));
    }

    /// Whether a warning may be logged now (at most one a second): `Some(n)` with the
    /// number not logged since the last one, else `None` (and this one is counted).
    pub fn allow(&self) -> Option<u64> {
        let now = glommio::clock::now();
        let (last, quiet) = self.state.get();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.state.set((last, quiet + 1));
            return None;
        }
        self.state.set((Some(now), 0));
        Some(quiet)
    }
}
