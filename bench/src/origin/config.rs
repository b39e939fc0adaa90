//! What an origin is asked to do: where it listens, how many shards it runs, and the
//! knobs that shape every response (default body size, forced closes, idle timeout,
//! added delay). Plain data, validated by `Origin::start`; nothing here touches a socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The default body for `GET /` repeats this unit, cut to `body_size` bytes.
pub const DEFAULT_BODY_UNIT: &[u8] = b"hello, world\n";

/// Configuration of an [`Origin`](super::Origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Address to listen on; port 0 asks the kernel for a free port, shared by all shards.
    pub listen: SocketAddr,
    /// Number of unpinned shards (glommio executors). Ignored when `cpus` is set.
    pub shards: usize,
    /// One pinned shard per listed CPU; overrides `shards`.
    pub cpus: Option<Vec<usize>>,
    /// Size of the body served for `GET /` and unknown paths: [`DEFAULT_BODY_UNIT`]
    /// repeated and cut to this many bytes.
    pub body_size: usize,
    /// Close a connection (with `Connection: close`) after this many requests.
    pub close_after: Option<u64>,
    /// Close a connection that sent nothing for this long.
    pub idle_close: Option<Duration>,
    /// Sleep this long before every response.
    pub delay: Option<Duration>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            shards: 1,
            cpus: None,
            body_size: DEFAULT_BODY_UNIT.len(),
            close_after: None,
            idle_close: None,
            delay: None,
        }
    }
}

impl OriginConfig {
    /// The number of shards this configuration starts.
    pub fn shard_count(&self) -> usize {
        match &self.cpus {
            Some(cpus) => cpus.len(),
            None => self.shards,
        }
    }
}
