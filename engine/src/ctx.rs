//! What a request path may touch on its shard: [`ShardCtx`], a handful of owned
//! sub-contexts — the read-only [`Shared`] configuration, the upstream layer, the
//! shard's metrics and its client load — composed by `shard.rs` and handed to the fronts
//! and the exchange as `Rc<ShardCtx>`. Nothing here spawns, sends to other shards or
//! knows how the shard was put together.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use crate::access_log::{Hub, ShardLog};
use crate::config::Config;
use crate::metrics::ShardMetrics;
use crate::route::Router;
use crate::tls::{BackendTls, ServerTls};
use crate::upstream::{Table, Upstreams};
use crate::warn::RateLimited;

/// What all shards read. Written once before the shards start, except the stop flag and
/// the table's published idle counts.
pub struct Shared {
    pub config: Config,
    pub router: Router,
    pub table: Arc<Table>,
    pub n_shards: usize,
    pub stop: AtomicBool,
    /// TLS termination (certificates, ticket keys, reload counters), when `--listen-tls`.
    pub server_tls: Option<Arc<ServerTls>>,
    /// The access log's channel to its writer thread.
    pub access_log: Hub,
    /// Each shard's share of the file descriptors (client plus backend connections),
    /// set once every shard is up (see `process.rs`); unlimited until then.
    pub fd_budget: Arc<AtomicUsize>,
}

impl Shared {
    pub fn new(
        config: Config,
        n_shards: usize,
        server_tls: Option<Arc<ServerTls>>,
        backend_tls: Option<BackendTls>,
    ) -> Shared {
        Shared {
            router: Router::new(&config),
            table: Arc::new(Table::new(&config, n_shards, backend_tls)),
            access_log: Hub::new(config.access_log.clone(), config.access_log_format),
            config,
            n_shards,
            stop: AtomicBool::new(false),
            server_tls,
            fd_budget: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }
}

/// The client side's load on this shard, and whether the shard is draining.
#[derive(Default)]
pub struct Load {
    /// Shared with the upstream layer, which counts it against the fd budget.
    pub client_conns: Rc<Cell<u64>>,
    pub inflight: Cell<u64>,
    /// HTTP/2 client connections that have not yet closed after a drain's GOAWAY (the
    /// drain waits for these too, so every HTTP/2 client hears the GOAWAY).
    pub h2_conns: Cell<u64>,
    pub draining: Cell<bool>,
}

/// Counts one unit of load (a client connection, a request in flight, an HTTP/2
/// connection) for as long as it lives.
pub struct Counted(Rc<ShardCtx>, fn(&Load) -> &Cell<u64>);

impl Counted {
    pub fn new(ctx: &Rc<ShardCtx>, which: fn(&Load) -> &Cell<u64>) -> Counted {
        let c = which(&ctx.load);
        c.set(c.get() + 1);
        Counted(ctx.clone(), which)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let c = (self.1)(&self.0.load);
        c.set(c.get().saturating_sub(1));
    }
}

/// One shard, as its request paths see it.
pub struct ShardCtx {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub upstreams: Rc<Upstreams>,
    pub metrics: RefCell<ShardMetrics>,
    pub load: Load,
    /// Rate limit for resource warnings on the client side (accept failures).
    pub warn: RateLimited,
    /// Rate limit for backend error logs.
    pub backend_warn: RateLimited,
    /// This shard's access log buffer.
    pub access_log: ShardLog,
}

impl ShardCtx {
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}
