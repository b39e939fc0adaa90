//! `ringway-origin`: a fast HTTP/1.1 or h2c origin server for ringway's tests and
//! benchmarks.
//!
//! An [`Origin`] runs one glommio executor per shard, each with its own `SO_REUSEPORT`
//! listener on the same address, and serves a fixed set of paths (see [`Route`]) that
//! let a test provoke every behaviour a proxy must handle: keep-alive, pipelining,
//! streamed and chunked bodies of any size, echo, slow answers, odd statuses, closes,
//! resets and garbage. Every response carries `X-Origin-Conn` (a connection id unique
//! over the origin's life) and `X-Origin-Req` (the 1-based index of the request on its
//! connection). [`OriginStats`] counts connections, requests and pipelined requests.
//!
//! With [`Protocol::H2c`] every connection speaks HTTP/2 with prior knowledge instead
//! (`h2` on glommio, see `h2conn`): the same paths, streams counted as requests, the
//! announced `SETTINGS_MAX_CONCURRENT_STREAMS` configurable, and the counters showing how
//! many streams shared each connection (multiplexing) and how many were cancelled.
//!
//! It is the benchmark's ceiling, so the `GET /` path allocates nothing: one read buffer
//! per connection, a pre-rendered head prefix, head and small bodies in one write.
//! Body bytes are documented in [`payload`]: `/size/N` and `/chunked/N` send byte `i` =
//! `(i % 251) as u8`.

mod chunked;
mod config;
mod conn;
mod h2conn;
pub mod payload;
mod request;
mod response;
mod route;
mod shard;
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use glommio::{CpuSet, ExecutorJoinHandle, Placement};

pub use chunked::{ChunkedDecoder, ChunkedError, Step as ChunkedStep};
pub use config::{OriginConfig, Protocol, DEFAULT_BODY_UNIT, DEFAULT_MAX_CONCURRENT_STREAMS};
pub use route::Route;
pub use stats::OriginStats;

use shard::ShardSpec;
use stats::StatsRegistry;

/// How long `start` waits for a shard to report its listener.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running origin. [`Origin::stop`] or dropping it stops every shard and joins their
/// threads; open connections are closed.
pub struct Origin {
    addr: SocketAddr,
    stats: Arc<StatsRegistry>,
    stop: Arc<AtomicBool>,
    shards: Vec<ExecutorJoinHandle<()>>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("addr", &self.addr)
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// Fails when a CPU in `cpus` does not exist or is offline.
pub fn check_cpus(cpus: &[usize]) -> anyhow::Result<()> {
    let online = CpuSet::online().map_err(|e| anyhow!("cannot list online CPUs: {e}"))?;
    let online: Vec<usize> = online.iter().map(|c| c.cpu).collect();
    let missing: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !online.contains(c))
        .collect();
    if !missing.is_empty() {
        bail!("CPU(s) {missing:?} do not exist or are offline; online CPUs: {online:?}");
    }
    Ok(())
}

impl Origin {
    /// Starts the shards and returns once every one of them listens.
    pub fn start(cfg: OriginConfig) -> anyhow::Result<Origin> {
        let placements: Vec<Placement> = match &cfg.cpus {
            Some(cpus) if cpus.is_empty() => bail!("the CPU list is empty: name at least one CPU"),
            Some(cpus) => {
                check_cpus(cpus)?;
                cpus.iter().map(|&c| Placement::Fixed(c)).collect()
            }
            None if cfg.shards == 0 => bail!("shards must be at least 1"),
            None => vec![Placement::Unbound; cfg.shards],
        };
        ringway_sys::memlock::check()?;

        let stats = Arc::new(StatsRegistry::new(placements.len()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut origin = Origin {
            addr: cfg.listen,
            stats,
            stop,
            shards: Vec::with_capacity(placements.len()),
        };
        // The first shard binds the configured address (maybe port 0); the others bind
        // the address it got, so all share one port.
        let mut bind = cfg.listen;
        for (index, placement) in placements.into_iter().enumerate() {
            let (ready, bound) = mpsc::channel();
            let spec = ShardSpec {
                index,
                placement: placement.clone(),
                bind,
                cfg: cfg.clone(),
                stats: origin.stats.clone(),
                stop: origin.stop.clone(),
                ready,
            };
            let handle = shard::spawn(spec)
                .map_err(|e| anyhow!("cannot start shard {index} ({placement:?}): {e}"))?;
            match bound.recv_timeout(START_TIMEOUT) {
                Ok(Ok(addr)) => {
                    origin.shards.push(handle);
                    bind = addr;
                }
                Ok(Err(why)) => {
                    let _ = handle.join();
                    bail!("shard {index}: {why}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The executor failed before running our code; join says why.
                    let why = match handle.join() {
                        Err(e) => e.to_string(),
                        Ok(()) => String::from("exited before listening"),
                    };
                    bail!("shard {index} ({placement:?}) did not start: {why}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    origin.stop.store(true, Ordering::Relaxed);
                    bail!("shard {index} did not listen within {START_TIMEOUT:?}");
                }
            }
        }
        origin.addr = bind;
        Ok(origin)
    }

    /// The address every shard listens on (with the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters summed over all shards.
    pub fn stats(&self) -> OriginStats {
        self.stats.snapshot()
    }

    /// Zeroes the counters (not the open-connections gauge).
    pub fn reset_stats(&self) {
        self.stats.reset()
    }

    /// Stops every shard and waits for their threads.
    pub fn stop(mut self) {
        let _ = self.shutdown();
    }

    /// Stops and joins; returns the shards' errors, if any.
    pub fn stop_and_join(mut self) -> anyhow::Result<()> {
        self.shutdown().context("stopping the origin")
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for (i, h) in self.shards.drain(..).enumerate() {
            if let Err(e) = h.join() {
                errors.push(format!("shard {i}: {e}"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(errors.join("; ")))
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
