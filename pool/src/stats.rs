//! Per-server pool counters, with HAProxy's names where they exist.
//!
//! This module owns [`ServerStats`] and the two helpers that change a gauge. Gauges
//! (`idle_cur`, `safe_cur`, `used_cur`) go down only through [`dec`], which saturates at
//! zero in release builds and fails a `debug_assert!` in tests, so drift (HAProxy bug #14)
//! is caught where it happens instead of wrapping. Nothing here ever decrements a
//! monotone counter.

/// Counters for one server on one shard. Sum them over shards for the process figures.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct ServerStats {
    /// New connections opened to the server (`connected`).
    pub connect: u64,
    /// Requests sent over a pooled connection: checkouts that returned one, plus adoptions.
    pub reuse: u64,
    /// Idle connections (carried exactly one request) in this shard's pool now.
    pub idle_cur: u64,
    /// Safe connections (reused at least once) in this shard's pool now.
    pub safe_cur: u64,
    /// Connections checked out and carrying a request on this shard now.
    pub used_cur: u64,
    /// HAProxy's `need_conn_est`: the smoothed estimate purge keeps.
    pub need_est: u64,
    /// Highest `used_cur` since the last purge.
    pub max_used: u64,
    /// Idle connections closed by purge.
    pub purged: u64,
    /// Check-ins refused because the server already had `max_idle_per_server` idle here.
    pub rejected_max_idle: u64,
    /// Check-ins refused because the connection carried `max_reuse` requests.
    pub rejected_max_reuse: u64,
    /// Idle connections that left this shard in a takeover grant.
    pub taken_over: u64,
    /// Connections adopted from another shard and used for a request here.
    pub adopted: u64,
    /// Connections adopted from another shard straight into the idle pool (late grant, I5).
    pub adopted_idle: u64,
    /// Granted connections that came back because the grant could not be sent.
    pub grant_returned: u64,
    /// Idle connections removed because their check saw EOF, RST or unexpected bytes.
    pub removed: u64,
    /// Idle connections drained because the server went down.
    pub drained_down: u64,
}

impl ServerStats {
    /// Adds every field of `other` into `self` (for shard and server totals).
    pub fn add(&mut self, other: &ServerStats) {
        self.connect += other.connect;
        self.reuse += other.reuse;
        self.idle_cur += other.idle_cur;
        self.safe_cur += other.safe_cur;
        self.used_cur += other.used_cur;
        self.need_est += other.need_est;
        self.max_used += other.max_used;
        self.purged += other.purged;
        self.rejected_max_idle += other.rejected_max_idle;
        self.rejected_max_reuse += other.rejected_max_reuse;
        self.taken_over += other.taken_over;
        self.adopted += other.adopted;
        self.adopted_idle += other.adopted_idle;
        self.grant_returned += other.grant_returned;
        self.removed += other.removed;
        self.drained_down += other.drained_down;
    }

    /// Idle + safe connections in the pool now.
    pub fn pooled_cur(&self) -> u64 {
        self.idle_cur + self.safe_cur
    }

    /// Raises `used_cur` and keeps `max_used` at or above it.
    pub(crate) fn inc_used(&mut self) {
        self.used_cur += 1;
        self.max_used = self.max_used.max(self.used_cur);
    }
}

/// Decrements a gauge. Going below zero is a bookkeeping bug: it fails a debug assertion
/// (so tests catch it) and saturates at zero in release builds.
pub(crate) fn dec(gauge: &mut u64, what: &'static str) {
    debug_assert!(*gauge > 0, "pool gauge {what} would go below zero");
    *gauge = gauge.saturating_sub(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sums_fields_and_inc_used_tracks_max() {
        let mut a = ServerStats::default();
        a.inc_used();
        a.inc_used();
        dec(&mut a.used_cur, "used_cur");
        assert_eq!((a.used_cur, a.max_used), (1, 2));
        let mut t = ServerStats::default();
        t.add(&a);
        t.add(&a);
        assert_eq!((t.used_cur, t.max_used), (2, 4));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "would go below zero")]
    fn dec_below_zero_is_caught_in_debug() {
        let mut g = 0;
        dec(&mut g, "idle_cur");
    }
}
