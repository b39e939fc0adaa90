//! One shard of the origin: a glommio executor with its own `SO_REUSEPORT` listener and
//! the connections it accepts. The kernel spreads new connections across the shards'
//! listeners; a shard shares nothing with the others but its stats counters.
//!
//! The listener is glommio's `TcpListener::bind`, which builds it with socket2,
//! `SO_REUSEPORT` and a backlog of 1024: the crate forbids `unsafe`, and turning our own
//! socket2 listener into a glommio one would need `FromRawFd`. A shard stops when its
//! origin raises the stop flag (polled every [`STOP_POLL`]); its connection tasks are
//! dropped with the executor.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use super::config::{OriginConfig, Protocol, DEFAULT_BODY_UNIT};
use super::payload::Cycle;
use super::response;
use super::stats::{ShardCounters, StatsRegistry};

/// How often a shard checks its origin's stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Registered I/O memory per executor (TCP never uses it; keeps memlock needs small).
const IO_MEMORY: usize = 64 << 10;
/// How long a stopping shard keeps its ring running so the listener really closes.
const LISTENER_CLOSE_GRACE: Duration = Duration::from_millis(5);
/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What every connection of one shard reads: configuration, pre-rendered bytes, stats.
pub(crate) struct ShardCtx {
    pub(crate) cfg: OriginConfig,
    pub(crate) stats: Arc<StatsRegistry>,
    pub(crate) index: usize,
    /// `HTTP/1.1 200 OK\r\nContent-Length: {body_size}\r\n`.
    pub(crate) fixed_prefix: Box<[u8]>,
    pub(crate) default_body: Cycle,
    pub(crate) pattern: Cycle,
}

impl ShardCtx {
    pub(crate) fn counters(&self) -> &ShardCounters {
        self.stats.shard(self.index)
    }
}

/// Everything a shard needs to start.
pub(crate) struct ShardSpec {
    pub(crate) index: usize,
    pub(crate) placement: Placement,
    pub(crate) bind: SocketAddr,
    pub(crate) cfg: OriginConfig,
    pub(crate) stats: Arc<StatsRegistry>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Receives the bound address, or why binding failed.
    pub(crate) ready: mpsc::Sender<Result<SocketAddr, String>>,
}

/// Starts the shard's executor thread.
pub(crate) fn spawn(spec: ShardSpec) -> glommio::Result<ExecutorJoinHandle<()>, ()> {
    let name = format!("ringway-origin-{}", spec.index);
    LocalExecutorBuilder::new(spec.placement.clone())
        .name(&name)
        .io_memory(IO_MEMORY)
        .spawn(move || run(spec))
}

async fn run(spec: ShardSpec) {
    let listener = match TcpListener::bind(spec.bind) {
        Ok(l) => l,
        Err(e) => {
            let _ = spec
                .ready
                .send(Err(format!("cannot listen on {}: {e}", spec.bind)));
            return;
        }
    };
    match listener.local_addr() {
        Ok(addr) => {
            let _ = spec.ready.send(Ok(addr));
        }
        Err(e) => {
            let _ = spec
                .ready
                .send(Err(format!("listener has no address: {e}")));
            return;
        }
    }
    let ctx = Rc::new(ShardCtx {
        fixed_prefix: response::fixed_prefix(spec.cfg.body_size).into_boxed_slice(),
        default_body: Cycle::repeating(DEFAULT_BODY_UNIT),
        pattern: Cycle::pattern(),
        cfg: spec.cfg,
        stats: spec.stats,
        index: spec.index,
    });
    let stop = spec.stop;
    let watch = async move {
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(STOP_POLL).await;
        }
    };
    futures_lite::future::or(accept_loop(listener, ctx), watch).await;
    // The accept loop and the listener are dropped now, but the kernel keeps the socket
    // listening while an io_uring accept still refers to it. Let the executor submit the
    // cancellation before it exits, so the port is closed when `Origin::stop` returns.
    glommio::timer::sleep(LISTENER_CLOSE_GRACE).await;
}

async fn accept_loop(listener: TcpListener, ctx: Rc<ShardCtx>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                match ctx.cfg.protocol {
                    Protocol::Http1 => {
                        glommio::spawn_local(super::conn::serve(stream, ctx.clone())).detach();
                    }
                    Protocol::H2c => {
                        glommio::spawn_local(super::h2conn::serve(stream, ctx.clone())).detach();
                    }
                }
            }
            Err(_) => glommio::timer::sleep(ACCEPT_BACKOFF).await,
        }
    }
}
