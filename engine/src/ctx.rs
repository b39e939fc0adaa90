//! What a request path may touch on its shard: [`ShardCtx`], a handful of owned
//! sub-contexts — the read-only [`Shared`] configuration, the upstream layer, the
//! shard's metrics and its client load — composed by `shard.rs` and handed to the fronts
//! and the exchange as `Rc<ShardCtx>`. Nothing here spawns, sends to other shards or
//! knows how the shard was put together.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::access_log::{Hub, ShardLog};
use crate::config::Config;
use crate::metrics::ShardMetrics;
use crate::route::Router;
use crate::tls::{BackendTls, ServerTls};
use crate::upstream::{Table, Upstreams};
use crate::warn::RateLimited;

/// What all shards read. Written once before the shards start, except the stop flag,
/// the table's published figures and a configuration reload (below).
pub struct Shared {
    /// The configuration the process started with (a shard's live one is
    /// [`ShardCtx::config`]).
    pub config: Config,
    pub router: Router,
    pub table: Arc<Table>,
    /// A configuration reload (SIGHUP): the signal thread validates the new
    /// configuration, builds its server table from the last one, puts both here and bumps
    /// `generation`; each shard picks it up at its next stop-flag poll (20 ms) and
    /// applies it between requests. The lock is taken once per reload per shard, never
    /// on the request path.
    pub reload: Mutex<Reloaded>,
    pub generation: AtomicU64,
    /// Held by whoever builds a new configuration from the one in force and publishes it
    /// (the SIGHUP reload, the resolver thread when a DNS name's addresses change), so
    /// that neither overwrites the other's change. Never taken by a shard.
    pub update: Mutex<()>,
    /// The DNS names of the backends' servers and their figures (`dns.rs` writes them).
    pub dns_names: crate::metrics::DnsNames,
    /// Reloads that took effect, and those refused (the old configuration stays).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
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

/// The configuration in force, as the last reload left it.
pub struct Reloaded {
    pub config: Arc<Config>,
    pub table: Arc<Table>,
}

impl Shared {
    pub fn new(
        config: Config,
        n_shards: usize,
        server_tls: Option<Arc<ServerTls>>,
        backend_tls: Option<BackendTls>,
    ) -> Shared {
        let table = Arc::new(Table::new(&config, n_shards, backend_tls));
        Shared {
            router: Router::new(&config),
            reload: Mutex::new(Reloaded {
                config: Arc::new(config.clone()),
                table: table.clone(),
            }),
            generation: AtomicU64::new(0),
            update: Mutex::new(()),
            dns_names: crate::metrics::DnsNames::from_pointee(Vec::new()),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            table,
            access_log: Hub::new(config.access_log.clone(), config.access_log_format),
            config,
            n_shards,
            stop: AtomicBool::new(false),
            server_tls,
            fd_budget: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }

    /// Publishes a new configuration and its table for the shards to pick up.
    pub fn publish_reload(&self, config: Config, table: Table) {
        if let Ok(mut r) = self.reload.lock() {
            *r = Reloaded {
                config: Arc::new(config),
                table: Arc::new(table),
            };
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
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
    /// The configuration and routes in force on this shard (its own copies: reading them
    /// costs no atomic), replaced by a reload between requests.
    pub live: RefCell<Rc<Live>>,
    /// The reload generation `live` comes from.
    pub generation: Cell<u64>,
}

/// A shard's configuration in force.
pub struct Live {
    pub config: Rc<Config>,
    pub router: Rc<Router>,
}

impl Live {
    pub fn new(config: Config) -> Live {
        Live {
            router: Rc::new(Router::new(&config)),
            config: Rc::new(config),
        }
    }
}

impl ShardCtx {
    /// The configuration in force on this shard.
    pub fn config(&self) -> Rc<Config> {
        self.live.borrow().config.clone()
    }

    /// The routes in force on this shard.
    pub fn router(&self) -> Rc<Router> {
        self.live.borrow().router.clone()
    }

    /// Applies a configuration reload if one was published since the last look; returns
    /// whether it did.
    pub fn pick_up_reload(&self) -> bool {
        let g = self.shared.generation.load(Ordering::SeqCst);
        if g == self.generation.get() {
            return false;
        }
        let (config, table) = match self.shared.reload.lock() {
            Ok(r) => (r.config.as_ref().clone(), r.table.as_ref().clone()),
            Err(_) => return false,
        };
        self.generation.set(g);
        let old_names: Vec<String> = self
            .config()
            .backends
            .iter()
            .map(|b| b.name.clone())
            .collect();
        self.upstreams.reload(table);
        let new_names: Vec<String> = config.backends.iter().map(|b| b.name.clone()).collect();
        self.metrics.borrow_mut().reshape(
            &old_names,
            &new_names,
            self.upstreams.table().keys.len(),
        );
        *self.live.borrow_mut() = Rc::new(Live::new(config));
        true
    }
}
