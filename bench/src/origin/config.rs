//! What an origin is asked to do: where it listens, how many shards it runs, which
//! protocol it speaks (HTTP/1.1, or HTTP/2 with prior knowledge), and the knobs that
//! shape every response (default body size, forced closes, idle timeout, added delay,
//! the HTTP/2 stream limit). Plain data, validated by `Origin::start`; nothing here
//! touches a socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The default body for `GET /` repeats this unit, cut to `body_size` bytes.
pub const DEFAULT_BODY_UNIT: &[u8] = b"hello, world\n";

/// The SETTINGS_MAX_CONCURRENT_STREAMS an h2c origin announces unless told otherwise
/// (nginx's default, so the two h2c origins of the benchmarks and tests behave alike).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;

/// The protocol an origin speaks on its listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0), keep-alive and pipelining.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c, RFC 9113 §3.3): every connection must start
    /// with the HTTP/2 preface; anything else ends the connection.
    H2c,
}

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
    /// Close a connection (with `Connection: close`) after this many requests; h2c: send
    /// a graceful GOAWAY once this many streams were accepted, serve them and any the
    /// client sent before the final GOAWAY reached it, then close.
    pub close_after: Option<u64>,
    /// Close a connection that sent nothing for this long (h2c: that had no open stream
    /// for this long; it gets a GOAWAY first).
    pub idle_close: Option<Duration>,
    /// Sleep this long before every response.
    pub delay: Option<Duration>,
    /// HTTP/1.1 or h2c.
    pub protocol: Protocol,
    /// h2c only: the SETTINGS_MAX_CONCURRENT_STREAMS announced to clients (and enforced:
    /// a stream above it is refused with `REFUSED_STREAM` by `h2`). 0 refuses every stream.
    pub max_concurrent_streams: u32,
    /// h2c only: answer every stream with `RST_STREAM(REFUSED_STREAM)` — a server that
    /// takes no new work without saying so in its SETTINGS (the stream was not processed,
    /// so a client may send it again elsewhere).
    pub refuse_streams: bool,
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
            protocol: Protocol::Http1,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            refuse_streams: false,
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
