//! Counters an origin keeps about what it served, readable while it runs.
//!
//! Each shard writes only its own cache-line-padded counters (relaxed atomics, never
//! contended on the request path); [`StatsRegistry::snapshot`] sums them on demand.
//! Connection ids come from one global counter, touched once per accepted connection.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of an origin's counters, summed over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OriginStats {
    /// Connections accepted since start (or since the last reset).
    pub connections_total: u64,
    /// Connections open now (a gauge: never reset).
    pub connections_open: u64,
    /// Requests whose head was parsed since start (or since the last reset).
    pub requests_total: u64,
    /// The highest `X-Origin-Req` seen on any connection since start (or reset).
    pub max_requests_per_conn: u64,
    /// Requests whose first byte had already arrived while the previous response on
    /// the same connection was not fully written (the connection carried two at once).
    /// h2c: streams that opened while another stream of the same connection was still
    /// open (multiplexed).
    pub pipelined: u64,
    /// The most requests in progress at once on one connection since start (or reset):
    /// h2c, the most streams open at once (never above the announced
    /// SETTINGS_MAX_CONCURRENT_STREAMS when clients obey it); HTTP/1.1, 1, or 2 once a
    /// pipelined request arrived.
    pub max_open_per_conn: u64,
    /// h2c: streams the client reset before their response was complete (a cancelled
    /// request reaches the origin as `RST_STREAM`). Always 0 in HTTP/1.1 mode.
    pub cancelled: u64,
}

impl OriginStats {
    /// The counters as a JSON object with the field names above.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "connections_total": self.connections_total,
            "connections_open": self.connections_open,
            "requests_total": self.requests_total,
            "max_requests_per_conn": self.max_requests_per_conn,
            "pipelined": self.pipelined,
            "max_open_per_conn": self.max_open_per_conn,
            "cancelled": self.cancelled,
        })
    }
}

impl std::fmt::Display for OriginStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// One shard's counters, alone on their cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ShardCounters {
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    requests_total: AtomicU64,
    max_requests_per_conn: AtomicU64,
    pipelined: AtomicU64,
    max_open_per_conn: AtomicU64,
    cancelled: AtomicU64,
}

impl ShardCounters {
    pub(crate) fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    /// Counts request number `index` (1-based) of a connection.
    pub(crate) fn request(&self, index: u64, pipelined: bool) {
        self.requests_total.fetch_add(1, Relaxed);
        if self.max_requests_per_conn.load(Relaxed) < index {
            self.max_requests_per_conn.fetch_max(index, Relaxed);
        }
        if pipelined {
            self.pipelined.fetch_add(1, Relaxed);
        }
        self.open_on_conn(1 + u64::from(pipelined));
    }

    /// Notes that `open` requests are in progress at once on one connection.
    pub(crate) fn open_on_conn(&self, open: u64) {
        if self.max_open_per_conn.load(Relaxed) < open {
            self.max_open_per_conn.fetch_max(open, Relaxed);
        }
    }

    /// Counts a stream the client reset before its response was complete.
    pub(crate) fn cancelled(&self) {
        self.cancelled.fetch_add(1, Relaxed);
    }
}

/// Decrements the open-connections gauge however a connection task ends (including when
/// the shard stops and drops it).
pub(crate) struct OpenGuard<'a>(pub(crate) &'a ShardCounters);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// The counters of all shards of one origin, plus the connection id source.
#[derive(Debug)]
pub(crate) struct StatsRegistry {
    shards: Box<[ShardCounters]>,
    next_conn_id: AtomicU64,
}

impl StatsRegistry {
    pub(crate) fn new(shards: usize) -> Self {
        StatsRegistry {
            shards: (0..shards).map(|_| ShardCounters::default()).collect(),
            next_conn_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn shard(&self, index: usize) -> &ShardCounters {
        &self.shards[index]
    }

    /// A fresh connection id, unique over the origin's life (never reset).
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Relaxed)
    }

    pub(crate) fn snapshot(&self) -> OriginStats {
        let mut s = OriginStats::default();
        for c in self.shards.iter() {
            s.connections_total += c.connections_total.load(Relaxed);
            s.connections_open += c.connections_open.load(Relaxed);
            s.requests_total += c.requests_total.load(Relaxed);
            s.max_requests_per_conn = s
                .max_requests_per_conn
                .max(c.max_requests_per_conn.load(Relaxed));
            s.pipelined += c.pipelined.load(Relaxed);
            s.max_open_per_conn = s.max_open_per_conn.max(c.max_open_per_conn.load(Relaxed));
            s.cancelled += c.cancelled.load(Relaxed);
        }
        s
    }

    /// Zeroes every counter except the `connections_open` gauge.
    pub(crate) fn reset(&self) {
        for c in self.shards.iter() {
            c.connections_total.store(0, Relaxed);
            c.requests_total.store(0, Relaxed);
            c.max_requests_per_conn.store(0, Relaxed);
            c.pipelined.store(0, Relaxed);
            c.max_open_per_conn.store(0, Relaxed);
            c.cancelled.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_shards_and_reset_keeps_open_gauge() {
        let r = StatsRegistry::new(2);
        r.shard(0).connection_opened();
        r.shard(1).connection_opened();
        r.shard(0).request(1, false);
        r.shard(0).request(2, true);
        r.shard(1).request(1, false);
        r.shard(1).connection_closed();
        r.shard(1).open_on_conn(5);
        r.shard(0).cancelled();
        let s = r.snapshot();
        assert_eq!(s.connections_total, 2);
        assert_eq!(s.connections_open, 1);
        assert_eq!(s.requests_total, 3);
        assert_eq!(s.max_requests_per_conn, 2);
        assert_eq!(s.pipelined, 1);
        assert_eq!(s.max_open_per_conn, 5);
        assert_eq!(s.cancelled, 1);
        r.reset();
        let s = r.snapshot();
        assert_eq!(
            s,
            OriginStats {
                connections_open: 1,
                ..OriginStats::default()
            }
        );
        assert_eq!(r.next_conn_id(), 1);
        assert_eq!(r.next_conn_id(), 2);
    }
}
