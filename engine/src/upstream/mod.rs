//! The upstream layer of one shard: everything about backend connections, behind one
//! type, [`Upstreams`], with private state.
//!
//! It owns the shard's idle pool, server selection and up/down state, the count of
//! backend connections and its limit, the takeover taker and owner with their waiters,
//! and the fault plan. The request path asks it for a connection to a server and gets a
//! [`Lease`]: the connection goes back to the pool, or is closed and accounted, when the
//! lease is dropped, so no error path can forget to release it. Messages for other shards
//! leave through an [`Outbox`] the shard gives it; it never sees the mesh itself.
//!
//! HTTP/2 servers (`h2c://`, `h2://`, `Proto::Http2` slots) share their connections: a
//! request leases a stream on one ([`H2Stream`], `h2conns.rs`); a connection with open
//! streams is on its slot's busy list, one without is in the same idle pool as HTTP/1.1
//! connections ([`Pooled`]) and is taken over between shards like them, whole.
//!
//! The pool's decisions come from `ringway-pool`; this layer carries them out with
//! transports. An idle connection is checked ([`Transport::idle_peek`]) when it is
//! taken for a request (always when its last exchange carried a request body; otherwise
//! once it has been [`PROBE_AFTER`] in the pool) and by a sweep every [`IDLE_SWEEP`].
//! Bytes found on an idle connection are a desync: it is closed and counted, never used. Connections closed by policy (purge, limits, server down, shutdown)
//! close with RST so TIME_WAIT does not pile up.

pub mod balance;
mod h2conns;
pub mod health;
mod lease;
pub mod proxy_out;
mod takeover;
mod transport;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_pool::{
    FaultPlan, FaultPoint, IdleKey, IdlePool, KeyTable, Msg, PoolConfig, PoolKey, Proto, PutResult,
    ReuseMode, ServerId, ServerStats,
};

pub use h2conns::H2Stream;
pub use lease::{Acquired, Lease};
pub use transport::{BackendConn, H2Io, Handover, IdleConn, Moved, Pooled, Transport};

use rustls::pki_types::ServerName;

use crate::config::values::{Balance, Scheme};
use crate::config::{BackendConfig, Config};
use crate::fd::IdlePeek;
use crate::tls::BackendTls;
use crate::warn::RateLimited;
use balance::{KeySource, Maglev, Rng, SmoothWrr, Usable};

/// How often idle connections are checked for a close or stray bytes from the server.
pub const IDLE_SWEEP: Duration = Duration::from_secs(1);
/// Idle connections pooled at least this long are probed before reuse.
pub const PROBE_AFTER: Duration = Duration::from_millis(50);
/// One configured backend server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub addr: SocketAddr,
    /// Its backend's index in the current configuration (meaningless once `removed`).
    pub backend: usize,
    /// Its backend's name (kept for the labels of a removed server).
    pub backend_name: Arc<str>,
    /// The index of its connections' [`PoolKey`].
    pub slot: ServerId,
    /// For an `https://` server, the name it is verified as (and told in SNI).
    pub tls_name: Option<ServerName<'static>>,
    pub scheme: Scheme,
    /// 0: drained (no new requests).
    pub weight: u32,
    /// No longer in the configuration (a reload removed it): it gets no new requests,
    /// its idle connections are closed and the ones in use close when their request ends.
    pub removed: bool,
}

/// One backend as the upstream layer runs it.
#[derive(Debug, Clone)]
pub struct BackendRt {
    pub cfg: Arc<BackendConfig>,
    /// Its servers' indices in [`Table::servers`], in configuration order.
    pub servers: Vec<u32>,
    pub weights: Vec<u32>,
    /// The consistent-hash table, for `balance = "hash"`.
    pub maglev: Option<Arc<Maglev>>,
}

/// The server table: built before the shards start and rebuilt by a configuration
/// reload. Each shard holds its own copy (`Rc`), so reading it costs no atomic; only the
/// published figures are shared, each entry written by its own shard only.
///
/// Server indices and pool slots are stable across reloads: a server that stays (same
/// backend, address and scheme) keeps its index and slot, so its pooled connections and
/// takeover messages stay valid; new servers are appended; removed ones stay in the
/// table, marked `removed`.
#[derive(Clone)]
pub struct Table {
    pub servers: Vec<ServerInfo>,
    pub backends: Vec<BackendRt>,
    pub keys: KeyTable,
    /// Published idle counts: entry `[shard * keys.len() + slot]`, written only by `shard`.
    published: Arc<Vec<AtomicUsize>>,
    /// Published outstanding requests: entry `[shard * servers.len() + server]`, written
    /// only by `shard` (least-request balancing).
    outstanding: Arc<Vec<AtomicU32>>,
    n_shards: usize,
    /// The client config for `https://` servers (one for all: `--backend-ca` and
    /// `--backend-cert` are process-wide today).
    pub backend_tls: Option<Arc<BackendTls>>,
}

impl Table {
    pub fn new(config: &Config, n_shards: usize, backend_tls: Option<BackendTls>) -> Table {
        Table::build(config, n_shards, backend_tls.map(Arc::new), None)
    }

    /// The table for `config` after a reload of `self`: the same backend TLS, stable
    /// server indices and slots (see the type's documentation).
    pub fn rebuild(&self, config: &Config) -> Table {
        Table::build(config, self.n_shards, self.backend_tls.clone(), Some(self))
    }

    fn build(
        config: &Config,
        n_shards: usize,
        backend_tls: Option<Arc<BackendTls>>,
        previous: Option<&Table>,
    ) -> Table {
        let mut servers: Vec<ServerInfo> = previous.map_or_else(Vec::new, |p| p.servers.clone());
        let mut keys = previous.map_or_else(KeyTable::new, |p| p.keys.clone());
        for s in &mut servers {
            s.removed = true;
        }
        let mut claimed = vec![false; servers.len()];
        let mut backends = Vec::with_capacity(config.backends.len());
        for (b, be) in config.backends.iter().enumerate() {
            let name: Arc<str> = be.name.as_str().into();
            let mut list = Vec::with_capacity(be.servers.len());
            for (i, addr) in be.servers.iter().enumerate() {
                let scheme = be.schemes.get(i).cloned().unwrap_or(Scheme::Http);
                let weight = be.weights.get(i).copied().unwrap_or(1);
                let same = servers.iter().position(|s| {
                    s.addr == *addr && s.scheme == scheme && *s.backend_name == *name
                });
                let index = match same {
                    Some(j) if !claimed[j] => {
                        claimed[j] = true;
                        let s = &mut servers[j];
                        s.removed = false;
                        s.backend = b;
                        s.weight = weight;
                        j
                    }
                    _ => {
                        let tls_name = scheme
                            .tls_name()
                            .and_then(|n| ServerName::try_from(n.to_string()).ok());
                        // Connections made with other TLS parameters never match: the
                        // digest of the client config is part of the key (pingora's
                        // reuse hash).
                        let tls = match (&tls_name, &backend_tls) {
                            (Some(n), Some(t)) => {
                                let mut h = std::collections::hash_map::DefaultHasher::new();
                                std::hash::Hash::hash(&t.digest, &mut h);
                                std::hash::Hash::hash(&n.to_str(), &mut h);
                                Some(std::hash::Hasher::finish(&h))
                            }
                            _ => None,
                        };
                        let proto = if scheme.is_h2() {
                            Proto::Http2
                        } else {
                            Proto::Http1
                        };
                        let slot = keys.intern(PoolKey {
                            server: servers.len() as u32,
                            proto,
                            tls,
                        });
                        servers.push(ServerInfo {
                            addr: *addr,
                            backend: b,
                            backend_name: name.clone(),
                            slot,
                            tls_name,
                            scheme,
                            weight,
                            removed: false,
                        });
                        claimed.push(true);
                        servers.len() - 1
                    }
                };
                list.push(index as u32);
            }
            let weights: Vec<u32> = list.iter().map(|&i| servers[i as usize].weight).collect();
            let maglev = (be.balance == Balance::Hash).then(|| {
                let names: Vec<String> = list
                    .iter()
                    .map(|&i| format!("{}", servers[i as usize].addr))
                    .collect();
                Arc::new(Maglev::new(&names, &weights))
            });
            backends.push(BackendRt {
                cfg: Arc::new(be.clone()),
                servers: list,
                weights,
                maglev,
            });
        }
        // Published figures: fresh arrays of the new sizes, starting from the old values
        // (a stale figure only costs one less good choice or a Deny).
        let published = (0..n_shards * keys.len())
            .map(|e| {
                let v = previous.map_or(0, |p| {
                    let (shard, slot) = (e / keys.len().max(1), e % keys.len().max(1));
                    p.published(shard, ServerId(slot as u32))
                });
                AtomicUsize::new(v)
            })
            .collect();
        let outstanding = (0..n_shards * servers.len())
            .map(|e| {
                let v = previous.map_or(0, |p| {
                    let n = servers.len().max(1);
                    p.outstanding_of(e / n, (e % n) as u32)
                });
                AtomicU32::new(v)
            })
            .collect();
        Table {
            servers,
            backends,
            keys,
            published: Arc::new(published),
            outstanding: Arc::new(outstanding),
            n_shards,
            backend_tls,
        }
    }

    /// Labels (backend name, address) of each pool slot, in slot order.
    pub fn slot_labels(&self) -> Vec<(String, String)> {
        (0..self.keys.len())
            .map(|i| {
                let s = self
                    .keys
                    .key(ServerId(i as u32))
                    .and_then(|k| self.servers.get(k.server as usize));
                match s {
                    Some(s) => (s.backend_name.to_string(), s.addr.to_string()),
                    None => (String::new(), String::new()),
                }
            })
            .collect()
    }

    /// The address of the server whose connections live in `slot`.
    pub fn server_of_slot(&self, slot: ServerId) -> Option<SocketAddr> {
        let k = self.keys.key(slot)?;
        self.servers.get(k.server as usize).map(|s| s.addr)
    }

    fn published_entry(&self, shard: usize, slot: ServerId) -> Option<&AtomicUsize> {
        self.published.get(shard * self.keys.len() + slot.index())
    }

    /// What shard `shard` last published for `slot`.
    pub fn published(&self, shard: usize, slot: ServerId) -> usize {
        self.published_entry(shard, slot)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    fn outstanding_entry(&self, shard: usize, server: u32) -> Option<&AtomicU32> {
        self.outstanding
            .get(shard * self.servers.len() + server as usize)
    }

    /// Requests shard `shard` last said it has outstanding on `server`.
    pub fn outstanding_of(&self, shard: usize, server: u32) -> u32 {
        self.outstanding_entry(shard, server)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// The shard that runs the active checks of `server`: servers are spread over the
    /// shards, one shard per server, so each server gets one check per interval.
    pub fn checker_of(&self, server: u32) -> usize {
        server as usize % self.n_shards.max(1)
    }

    pub fn n_shards(&self) -> usize {
        self.n_shards
    }
}

/// What the upstream layer says to other shards.
pub enum UpstreamMsg {
    Takeover(Msg<Handover>),
    /// A server's state changed as seen by the sending shard.
    ServerState {
        server: u32,
        state: ServerVerdict,
    },
}

/// A change of a server's state, sent to every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerVerdict {
    /// Taken out by passive checks (or a failed connect) for this long.
    Ejected(Duration),
    /// A connect to it succeeded again.
    Reached,
    /// Its active check failed `fall` times in a row: down until it passes `rise` times.
    CheckDown,
    /// Its active check passed `rise` times in a row.
    CheckUp,
}

/// Sends a message to another shard without waiting. `Err(Some(msg))`: the channel was
/// full or closed and the message comes back; `Err(None)`: no such peer.
pub type Outbox = Box<dyn Fn(usize, UpstreamMsg) -> Result<(), Option<UpstreamMsg>>>;

/// Why no backend connection could be had.
#[derive(Debug)]
pub enum AcquireError {
    /// The server refused or reset the connect (502).
    Refused(io::Error),
    /// The connect did not finish within --timeout-connect (504).
    Timeout,
    /// An injected fault or a capacity limit (503).
    Unavailable(&'static str),
}

impl AcquireError {
    pub fn status(&self) -> u16 {
        match self {
            AcquireError::Refused(_) => 502,
            AcquireError::Timeout => 504,
            AcquireError::Unavailable(_) => 503,
        }
    }
}

/// The upstream layer's own counters (merged into the shard's snapshot).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub backend_connect_errors: u64,
    pub idle_closed_by_server: u64,
    pub server_down_events: u64,
    /// Connects that failed on our own limits (fds, memory): 503, server not marked down.
    pub local_exhaustion: u64,
    /// Idle or kept connections found holding bytes nobody asked for before reuse.
    pub backend_desync: u64,
    /// Requests answered 503 because no server of their backend was usable.
    pub no_server: u64,
    /// Servers taken out by passive checks (consecutive failures).
    pub outlier_ejections: u64,
}

/// One server's state on this shard.
#[derive(Debug, Default, Clone)]
struct ServerHealth {
    /// Taken out by passive checks (or a failed connect) until then.
    out_until: Option<Instant>,
    /// Ejections in a row without a success in between (the back-off doubles each time).
    ejections: u32,
    /// Failures in a row (connect errors, resets, 5xx) seen by this shard.
    fails: u32,
    /// Down by its active check.
    check_down: bool,
    /// Requests this shard has outstanding on it.
    outstanding: u32,
}

/// Counts one request outstanding on a server for as long as it lives (least-request).
pub struct Outstanding {
    ups: Rc<Upstreams>,
    server: u32,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.ups.add_outstanding(self.server, -1);
    }
}

/// How one exchange with a server ended, for the passive checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A response that is not a 5xx.
    Ok,
    /// Reset, closed or garbage before a response, or a 5xx answer.
    Failed,
}

/// What the upstream layer reads from the configuration.
struct Knobs {
    /// The default connect timeout (each backend may have its own).
    connect_timeout: Duration,
    max_conns: usize,
    takeover: bool,
    reuse: ReuseMode,
    purge_delay: Duration,
    max_reuse: Option<u32>,
    /// SETTINGS_MAX_HEADER_LIST_SIZE told to HTTP/2 servers (`--max-head`).
    max_head: u32,
}

/// This shard's share of the process's file descriptors, and its client connections,
/// which count against it with the backend connections. Past it, connects fail with
/// 503 and clients are refused, so that some descriptors are always left for `/metrics`,
/// log reopening and certificate reloads (see `process.rs`).
pub struct FdBudget {
    pub per_shard: Arc<AtomicUsize>,
    pub clients: Rc<Cell<u64>>,
}

/// One shard's backend connections and everything that decides about them.
pub struct Upstreams {
    shard: usize,
    table: RefCell<Rc<Table>>,
    knobs: Knobs,
    pool: RefCell<IdlePool<IdleConn>>,
    /// The shared HTTP/2 connections (slots with `Proto::Http2`), see `h2conns.rs`.
    h2: h2conns::H2Pool,
    /// Per backend: the smooth weighted round-robin state.
    wrr: RefCell<Vec<SmoothWrr>>,
    rng: Rng,
    /// Per server (by index in the table): its state on this shard.
    health: RefCell<Vec<ServerHealth>>,
    /// The active checks this shard runs (see `health.rs`).
    pub(crate) checks: health::Checks,
    /// Backend connections this shard holds (leased, idle, or parked for a hand-over).
    conns: Cell<usize>,
    faults: RefCell<Option<FaultPlan>>,
    takeover: RefCell<takeover::State>,
    outbox: Outbox,
    counters: RefCell<Counters>,
    /// Requests answered 503 because no server of their backend was usable, by backend
    /// name (names survive reloads).
    no_server: RefCell<std::collections::HashMap<String, u64>>,
    warn: RateLimited,
    fds: FdBudget,
}

impl Upstreams {
    pub fn new(
        shard: usize,
        n_shards: usize,
        config: &Config,
        table: Arc<Table>,
        outbox: Outbox,
        fds: FdBudget,
    ) -> Upstreams {
        let pool_cfg = PoolConfig {
            reuse: config.reuse,
            max_idle_per_server: config.pool_max_idle,
            max_reuse: config.max_reuse,
            low_idle: config.pool_low_idle,
        };
        let n_slots = table.keys.len();
        let table = Rc::new(table.as_ref().clone());
        let ups = Upstreams {
            shard,
            knobs: Knobs {
                connect_timeout: config.timeouts.connect,
                max_conns: config.max_conns_per_shard,
                takeover: config.takeover && n_shards > 1,
                reuse: config.reuse,
                purge_delay: config.pool_purge_delay,
                max_reuse: config.max_reuse,
                max_head: u32::try_from(config.max_head).unwrap_or(u32::MAX),
            },
            pool: RefCell::new(IdlePool::new(pool_cfg, n_slots)),
            h2: h2conns::H2Pool::new(n_slots),
            wrr: RefCell::new(
                table
                    .backends
                    .iter()
                    .map(|b| SmoothWrr::new(b.servers.len()))
                    .collect(),
            ),
            rng: Rng::new(shard as u64 + 1),
            health: RefCell::new(vec![ServerHealth::default(); table.servers.len()]),
            checks: health::Checks::default(),
            conns: Cell::new(0),
            faults: RefCell::new(config.fault.as_ref().map(|f| f.for_shard(shard))),
            takeover: RefCell::new(takeover::State::new(
                shard,
                n_shards,
                config.pool_low_idle,
                config.takeover_timeout,
            )),
            outbox,
            counters: RefCell::new(Counters::default()),
            no_server: RefCell::new(std::collections::HashMap::new()),
            warn: RateLimited::default(),
            table: RefCell::new(table),
            fds,
        };
        ups.apply_limits();
        ups
    }

    /// This shard's copy of the server table (cheap: an `Rc`).
    pub fn table(&self) -> Rc<Table> {
        self.table.borrow().clone()
    }

    /// Gives each server's pool slot its backend's limits (reuse mode, max idle, max
    /// reuse), where they differ from the global ones.
    fn apply_limits(&self) {
        let table = self.table();
        let mut pool = self.pool.borrow_mut();
        pool.grow(table.keys.len());
        let global = pool.config().clone();
        for s in &table.servers {
            let Some(be) = table.backends.get(s.backend).filter(|_| !s.removed) else {
                continue;
            };
            let limits = PoolConfig {
                reuse: be.cfg.reuse,
                max_idle_per_server: be.cfg.pool_max_idle,
                max_reuse: be.cfg.max_reuse,
                low_idle: global.low_idle,
            };
            pool.set_limits(s.slot, limits);
        }
    }

    /// A configuration reload: the new table (see [`Table::rebuild`]). Unchanged servers
    /// keep their pooled connections; removed ones get no new requests and their idle
    /// connections close now (the ones in use close when their request ends).
    pub fn reload(&self, table: Table) {
        let table = Rc::new(table);
        self.h2.grow(table.keys.len());
        {
            let mut h = self.health.borrow_mut();
            h.resize(table.servers.len(), ServerHealth::default());
        }
        *self.wrr.borrow_mut() = table
            .backends
            .iter()
            .map(|b| SmoothWrr::new(b.servers.len()))
            .collect();
        let removed: Vec<ServerId> = table
            .servers
            .iter()
            .filter(|s| s.removed)
            .map(|s| s.slot)
            .collect();
        *self.table.borrow_mut() = table;
        self.apply_limits();
        for slot in removed {
            self.close_idle_of(slot);
        }
    }

    /// Backend connections this shard holds (leased, idle, or parked for a hand-over).
    pub fn conn_count(&self) -> usize {
        self.conns.get()
    }

    /// Whether this shard has used its share of file descriptors (clients + backends).
    pub fn fds_exhausted(&self) -> bool {
        let used = self.conns.get() + self.fds.clients.get() as usize;
        used >= self.fds.per_shard.load(Ordering::Relaxed)
    }

    pub fn reuse_mode(&self) -> ReuseMode {
        self.knobs.reuse
    }

    /// Whether an injected fault fires at `point` (always false without `--fault`).
    fn fault(&self, point: FaultPoint) -> bool {
        match self.faults.borrow_mut().as_mut() {
            Some(f) => f.should_fail(point),
            None => false,
        }
    }

    /// Whether a server may get a new request now.
    fn usable(&self, table: &Table, server: u32, now: Instant) -> Usable {
        let Some(info) = table.servers.get(server as usize) else {
            return Usable::No;
        };
        if info.removed || info.weight == 0 {
            return Usable::No;
        }
        let h = self.health.borrow();
        match h.get(server as usize) {
            Some(h) if h.check_down => Usable::No,
            Some(ServerHealth {
                out_until: Some(t), ..
            }) if *t > now => Usable::Ejected,
            _ => Usable::Yes,
        }
    }

    /// `server`'s outstanding requests over all shards: this shard's own count, plus what
    /// the others published.
    fn load(&self, table: &Table, server: u32) -> u64 {
        let own = self
            .health
            .borrow()
            .get(server as usize)
            .map_or(0, |h| h.outstanding) as u64;
        let others: u64 = (0..table.n_shards)
            .filter(|&sh| sh != self.shard)
            .map(|sh| table.outstanding_of(sh, server) as u64)
            .sum();
        own + others
    }

    /// Chooses a server of `backend` by its `balance` algorithm among the usable ones and
    /// returns the pool slot its connections live in; `None` when no server of the
    /// backend is usable (down by its check, drained or removed): the request gets 503.
    pub fn choose(&self, backend: usize, key: &KeySource<'_>) -> Option<ServerId> {
        self.pick(backend, key, true)
    }

    /// [`Upstreams::choose`]; `answers` when a `None` means the request gets 503 (then it
    /// is counted per backend and logged), not when it only means "no retry elsewhere".
    fn pick(&self, backend: usize, key: &KeySource<'_>, answers: bool) -> Option<ServerId> {
        let table = self.table();
        let be = table.backends.get(backend)?;
        let now = glommio::clock::now();
        let usable = |i: usize| self.usable(&table, be.servers[i], now);
        let wrr = || {
            self.wrr
                .borrow()
                .get(backend)
                .and_then(|w| w.pick(&be.weights, &usable))
        };
        let idx = match (&be.cfg.balance, &be.maglev) {
            (Balance::LeastRequest, _) => balance::p2c(
                &be.weights,
                &usable,
                &|i| self.load(&table, be.servers[i]),
                &self.rng,
            ),
            (Balance::Hash, Some(m)) => match key.hash(&be.cfg.hash_on) {
                Some(h) => m.pick(h, be.servers.len(), &usable),
                None => wrr(),
            },
            _ => wrr(),
        };
        match idx {
            Some(i) => Some(table.servers[be.servers[i] as usize].slot),
            None if !answers => None,
            None => {
                self.counters.borrow_mut().no_server += 1;
                *self
                    .no_server
                    .borrow_mut()
                    .entry(be.cfg.name.clone())
                    .or_insert(0) += 1;
                if let Some(suppressed) = self.warn.allow() {
                    let (mut down, mut drained) = (0, 0);
                    for &s in &be.servers {
                        match self.usable(&table, s, now) {
                            Usable::No if table.servers[s as usize].weight == 0 => drained += 1,
                            Usable::No => down += 1,
                            _ => {}
                        }
                    }
                    tracing::warn!(
                        backend = %be.cfg.name,
                        servers = be.servers.len(),
                        down_by_check = down,
                        drained,
                        suppressed,
                        "no usable server in backend {}: answering 503",
                        be.cfg.name
                    );
                }
                None
            }
        }
    }

    /// The configuration of the backend whose server owns `slot`.
    pub fn backend_of(&self, slot: ServerId) -> Option<Arc<BackendConfig>> {
        let table = self.table();
        let server = table.keys.key(slot)?.server as usize;
        let s = table.servers.get(server)?;
        table.backends.get(s.backend).map(|b| b.cfg.clone())
    }

    /// Another server of the same backend than `slot`'s, for a retry; `None` when there
    /// is none usable.
    pub fn choose_other(&self, slot: ServerId, key: &KeySource<'_>) -> Option<ServerId> {
        let table = self.table();
        let server = table.keys.key(slot)?.server as usize;
        let backend = table.servers.get(server)?.backend;
        let be = table.backends.get(backend)?;
        if be.servers.len() < 2 {
            return Some(slot);
        }
        for _ in 0..be.servers.len() * 2 {
            let s = self.pick(backend, key, false)?;
            if s != slot {
                return Some(s);
            }
        }
        Some(slot)
    }

    /// How many servers `slot`'s backend has (itself included).
    pub fn servers_beside(&self, slot: ServerId) -> usize {
        let table = self.table();
        table
            .keys
            .key(slot)
            .and_then(|k| table.servers.get(k.server as usize))
            .and_then(|s| table.backends.get(s.backend))
            .map_or(1, |b| b.servers.len())
    }

    /// Counts a request outstanding on `slot`'s server until the guard is dropped.
    pub fn begin_outstanding(self: &Rc<Self>, slot: ServerId) -> Outstanding {
        let server = self.server_of(slot);
        self.add_outstanding(server, 1);
        Outstanding {
            ups: self.clone(),
            server,
        }
    }

    fn add_outstanding(&self, server: u32, delta: i32) {
        let v = {
            let mut h = self.health.borrow_mut();
            let Some(h) = h.get_mut(server as usize) else {
                return;
            };
            h.outstanding = h.outstanding.saturating_add_signed(delta);
            h.outstanding
        };
        if let Some(a) = self.table.borrow().outstanding_entry(self.shard, server) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// How an exchange with `slot`'s server ended (passive checks): failures in a row
    /// take the server out for a back-off that doubles while it keeps failing.
    pub fn passive(&self, slot: ServerId, verdict: Verdict) {
        let server = self.server_of(slot);
        let Some(cfg) = self.backend_of(slot) else {
            return;
        };
        let eject = {
            let mut h = self.health.borrow_mut();
            let Some(h) = h.get_mut(server as usize) else {
                return;
            };
            match verdict {
                Verdict::Ok => {
                    h.fails = 0;
                    if h.out_until.is_none_or(|t| t <= glommio::clock::now()) {
                        h.ejections = 0;
                    }
                    false
                }
                Verdict::Failed => {
                    h.fails += 1;
                    cfg.outlier.failures > 0 && h.fails >= cfg.outlier.failures
                }
            }
        };
        if eject {
            self.counters.borrow_mut().outlier_ejections += 1;
            let d = self.eject(server);
            tracing::warn!(
                backend = %cfg.name,
                server = %self.addr_of(slot),
                failures = cfg.outlier.failures,
                out_for = %out_for(d),
                "passive check: {} failures in a row; taking the server out",
                cfg.outlier.failures
            );
        }
    }

    /// Takes `server` out on this shard and every other: for its back-off (returned), or,
    /// when its backend has an active check, down for that check (`None`): only `rise`
    /// passed checks bring it back (HAProxy's `observe` with `on-error mark-down`), not a
    /// timer and not a lucky connect.
    fn eject(&self, server: u32) -> Option<Duration> {
        let cfg = self.backend_of(self.slot_of(server));
        let checked = cfg.as_ref().is_some_and(|c| c.check.is_some());
        let (base, max) = cfg.map_or((Duration::from_secs(1), Duration::from_secs(30)), |c| {
            (c.outlier.ejection, c.outlier.max_ejection)
        });
        let d = {
            let mut h = self.health.borrow_mut();
            let Some(h) = h.get_mut(server as usize) else {
                return Some(base);
            };
            let d = base
                .saturating_mul(1u32 << h.ejections.min(16))
                .min(max.max(base));
            h.ejections = h.ejections.saturating_add(1);
            h.fails = 0;
            d
        };
        let verdict = if checked {
            ServerVerdict::CheckDown
        } else {
            ServerVerdict::Ejected(d)
        };
        self.apply_verdict(server, verdict);
        self.broadcast(server, verdict);
        (!checked).then_some(d)
    }

    fn slot_of(&self, server: u32) -> ServerId {
        self.table()
            .servers
            .get(server as usize)
            .map_or(ServerId(0), |s| s.slot)
    }

    /// The address of `slot`'s server, as text (the `:authority` of a request that had
    /// no Host).
    pub fn addr_of(&self, slot: ServerId) -> String {
        let server = self.server_of(slot) as usize;
        self.table()
            .servers
            .get(server)
            .map_or_else(String::new, |s| s.addr.to_string())
    }

    fn server_of(&self, slot: ServerId) -> u32 {
        self.table.borrow().keys.key(slot).map_or(0, |k| k.server)
    }

    /// Idle connections for `slot` in this shard's pool now: a request for it would
    /// not connect (the exchange's `--cancel-connect-rate` bound asks).
    pub fn idle_here(&self, slot: ServerId) -> usize {
        self.pool.borrow().idle_count(slot)
    }

    /// Writes this shard's idle count for `slot` where the other shards can read it.
    fn publish_idle(&self, slot: ServerId) {
        let count = self.pool.borrow().idle_count(slot);
        if let Some(a) = self.table.borrow().published_entry(self.shard, slot) {
            a.store(count, Ordering::Relaxed);
        }
    }

    /// A connection for a request to `slot`: from this shard's pool, else taken over
    /// from another shard, else a new connect. `first` is the client session's first
    /// request; `fresh` forces a new connect (a retry after a reused one failed).
    pub async fn acquire(
        self: &Rc<Self>,
        slot: ServerId,
        first: bool,
        fresh: bool,
    ) -> Result<Lease, AcquireError> {
        if !fresh {
            if let Some(lease) = self.acquire_local(slot, first) {
                return Ok(lease);
            }
            if self.knobs.takeover {
                match self.take_over(slot, first).await {
                    Some(Pooled::H1(conn)) => {
                        return Ok(Lease::new(self.clone(), conn, true).taken_over());
                    }
                    // Not on an HTTP/1.1 slot; never happens, and costs only that connection.
                    Some(other) => self.close_pooled(other),
                    None => {}
                }
                // A late grant of an earlier ask may have been adopted meanwhile.
                if let Some(conn) = self.checkout_local(slot, first) {
                    return Ok(Lease::new(self.clone(), conn, true));
                }
            }
        }
        let asked = glommio::clock::now();
        let conn = self.connect(slot, &[]).await?;
        Ok(Lease::new(self.clone(), Box::new(conn), false).connected_in(asked.elapsed()))
    }

    /// An idle connection for `slot` from this shard's pool, if there is one: the step
    /// of [`acquire`](Self::acquire) that never waits.
    pub fn acquire_local(self: &Rc<Self>, slot: ServerId, first: bool) -> Option<Lease> {
        let conn = self.checkout_local(slot, first)?;
        Some(Lease::new(self.clone(), conn, true))
    }

    /// A new connection for one client only (`send-proxy`): it starts with `preface`
    /// (the PROXY header naming that client) and is marked private, so it never enters
    /// the pool or another shard; the client's session keeps it (`exchange::Session`).
    pub async fn acquire_private(
        self: &Rc<Self>,
        slot: ServerId,
        preface: &[u8],
    ) -> Result<Lease, AcquireError> {
        let asked = glommio::clock::now();
        let mut conn = self.connect(slot, preface).await?;
        conn.private = true;
        Ok(Lease::new(self.clone(), Box::new(conn), false).connected_in(asked.elapsed()))
    }

    /// The most recently used idle connection this request may use, from this shard.
    /// Connections the server closed (or wrote on) while idle are discarded on the way.
    fn checkout_local(&self, slot: ServerId, first: bool) -> Option<Box<BackendConn>> {
        loop {
            let got = self.pool.borrow_mut().checkout(slot, first)?;
            // Just pooled after a bodiless exchange: the sweep and the retry rule cover the
            // rare close in between, and a request without a body cannot have smuggled
            // another one in, so the hot keep-alive GET path skips the syscall. A
            // connection that carried a body is always peeked (see `carried_body`).
            let since = got.conn.since;
            let mut conn = match got.conn.conn {
                Pooled::H1(c) => c,
                // Not on an HTTP/1.1 slot; never happens, and costs only that connection.
                other => {
                    self.pool.borrow_mut().discard_checkout(slot);
                    self.close_pooled(other);
                    continue;
                }
            };
            let skip_peek = !conn.carried_body
                && glommio::clock::now().saturating_duration_since(since) < PROBE_AFTER;
            let peek = if skip_peek {
                // No `recv` for a connection pooled a moment ago, but what the ring
                // already took past its last response is looked at (free): whichever
                // body path left it there, it is never read as the next answer.
                conn.transport.held_peek()
            } else {
                conn.transport.idle_peek()
            };
            if peek == IdlePeek::Quiet {
                self.publish_idle(slot);
                conn.uses = got.uses;
                return Some(conn);
            }
            self.pool.borrow_mut().discard_checkout(slot);
            let mut c = self.counters.borrow_mut();
            if peek == IdlePeek::Unsolicited {
                c.backend_desync += 1;
            } else {
                c.idle_closed_by_server += 1;
            }
            drop(c);
            self.close_policy(conn);
            self.publish_idle(slot);
        }
    }

    /// Opens a new connection to `slot`'s server, marking the server down on failure;
    /// `preface` (a PROXY header, or nothing) is its first bytes.
    async fn connect(&self, slot: ServerId, preface: &[u8]) -> Result<BackendConn, AcquireError> {
        if self.fault(FaultPoint::Connect) {
            self.counters.borrow_mut().backend_connect_errors += 1;
            return Err(AcquireError::Unavailable("injected connect fault"));
        }
        if self.conns.get() >= self.knobs.max_conns {
            return Err(AcquireError::Unavailable("shard connection limit"));
        }
        if self.fds_exhausted() {
            self.counters.borrow_mut().local_exhaustion += 1;
            return Err(AcquireError::Unavailable("file descriptor budget"));
        }
        let server = self.server_of(slot);
        let table = self.table();
        let Some(info) = table.servers.get(server as usize) else {
            return Err(AcquireError::Unavailable("unknown server"));
        };
        let addr = info.addr;
        let timeout = table
            .backends
            .get(info.backend)
            .map_or(self.knobs.connect_timeout, |b| b.cfg.timeout_connect);
        let connected = match (&info.tls_name, &table.backend_tls) {
            (Some(name), Some(tls)) => {
                // ALPN: `h2` for an h2:// server (and it must agree), `http/1.1` otherwise.
                let h2 = table
                    .keys
                    .key(slot)
                    .is_some_and(|k| k.proto == Proto::Http2);
                let config = if h2 { &tls.config_h2 } else { &tls.config };
                Transport::connect_tls(addr, timeout, config.clone(), name.clone(), h2, preface)
                    .await
            }
            _ => Transport::connect_tcp_with(addr, timeout, preface).await,
        };
        match connected {
            Ok(transport) => {
                self.pool.borrow_mut().connected(slot);
                self.conns.set(self.conns.get() + 1);
                let was_out = {
                    let mut h = self.health.borrow_mut();
                    match h.get_mut(server as usize) {
                        Some(h) if !h.check_down && h.out_until.is_some() => {
                            h.out_until = None;
                            true
                        }
                        _ => false,
                    }
                };
                if was_out {
                    self.apply_verdict(server, ServerVerdict::Reached);
                    self.broadcast(server, ServerVerdict::Reached);
                }
                Ok(BackendConn {
                    transport,
                    slot,
                    uses: 0,
                    carried_body: false,
                    private: false,
                })
            }
            Err(e) => {
                if is_local_exhaustion(&e) {
                    // Our own limit, not the server's fault: 503, and the server stays up.
                    self.counters.borrow_mut().local_exhaustion += 1;
                    self.warn
                        .warn(self.shard, "cannot open a backend connection", &e);
                    return Err(AcquireError::Unavailable(
                        "out of file descriptors or memory",
                    ));
                }
                self.counters.borrow_mut().backend_connect_errors += 1;
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                let d = self.eject(server);
                tracing::warn!(server = %addr, error = %e, out_for = %out_for(d), "backend connect failed; taking the server out");
                if timed_out {
                    Err(AcquireError::Timeout)
                } else {
                    Err(AcquireError::Refused(e))
                }
            }
        }
    }

    /// Tells every other shard about a server's new state.
    fn broadcast(&self, server: u32, state: ServerVerdict) {
        for peer in 0..self.table.borrow().n_shards {
            if peer != self.shard {
                let _ = (self.outbox)(peer, UpstreamMsg::ServerState { server, state });
            }
        }
    }

    /// Applies a server's new state on this shard: out or down closes its idle
    /// connections (pooled HTTP/1.1 and idle HTTP/2 ones) and refuses new ones into the
    /// pool; requests in flight on it finish.
    pub(crate) fn apply_verdict(&self, server: u32, state: ServerVerdict) {
        let now = glommio::clock::now();
        let down = {
            let mut h = self.health.borrow_mut();
            let Some(h) = h.get_mut(server as usize) else {
                return;
            };
            match state {
                ServerVerdict::Ejected(d) => {
                    let until = now + d;
                    if h.out_until.is_none_or(|t| t < until) {
                        h.out_until = Some(until);
                    }
                    true
                }
                ServerVerdict::Reached => {
                    h.out_until = None;
                    h.check_down
                }
                ServerVerdict::CheckDown => {
                    h.check_down = true;
                    h.out_until = None;
                    true
                }
                ServerVerdict::CheckUp => {
                    h.check_down = false;
                    h.out_until = None;
                    h.ejections = 0;
                    h.fails = 0;
                    false
                }
            }
        };
        if state == ServerVerdict::CheckDown {
            // Taken down by passive checks on any shard: the checking shard's check state
            // goes down too, so its `rise` passes (and only they) bring the server back.
            self.mark_check_down(server);
        }
        let slot = self.slot_of(server);
        if down {
            if state != ServerVerdict::Reached {
                self.counters.borrow_mut().server_down_events += 1;
            }
            self.close_idle_of(slot);
        } else {
            self.pool.borrow_mut().set_server_down(slot, false);
        }
    }

    /// Closes `slot`'s idle connections on this shard and keeps new ones out of its pool.
    fn close_idle_of(&self, slot: ServerId) {
        let closing = self.pool.borrow_mut().set_server_down(slot, true);
        for ic in closing {
            self.close_pooled(ic.conn);
        }
        self.publish_idle(slot);
    }

    /// A message from another shard.
    pub fn on_message(self: &Rc<Self>, msg: UpstreamMsg) {
        match msg {
            UpstreamMsg::Takeover(m) => self.on_takeover(m),
            UpstreamMsg::ServerState { server, state } => self.apply_verdict(server, state),
        }
    }

    /// A kept connection was found holding bytes nobody asked for.
    pub fn count_desync(&self) {
        self.counters.borrow_mut().backend_desync += 1;
    }

    /// A lease ends. `reusable`: the exchange left the connection in a known-good state.
    /// A connection that carried a request body never enters the pool (see
    /// `BackendConn::carried_body`); the exchange keeps it private to its client instead.
    fn give_back(&self, conn: Box<BackendConn>, reusable: bool) {
        let slot = conn.slot;
        if !reusable || conn.carried_body || conn.private {
            self.pool.borrow_mut().released(slot);
            self.forget_conn();
            return;
        }
        if self.fault(FaultPoint::Checkin) {
            self.pool.borrow_mut().released(slot);
            self.close_policy(conn);
            return;
        }
        conn.transport.set_timeouts(None);
        let uses = conn.uses;
        let put =
            self.pool
                .borrow_mut()
                .checkin(slot, IdleConn::new(conn), uses, glommio::clock::now());
        self.close_rejected(put);
        self.publish_idle(slot);
    }

    /// Closes a connection the pool refused.
    fn close_rejected(&self, put: PutResult<IdleConn>) {
        if let PutResult::Rejected(ic, _why) = put {
            self.close_pooled(ic.conn);
        }
    }

    /// The connection leaves this shard (closed, or handed to another one).
    fn forget_conn(&self) {
        self.conns.set(self.conns.get().saturating_sub(1));
    }

    /// Closes a connection by policy, with RST (`SO_LINGER 0`).
    fn close_policy(&self, conn: Box<BackendConn>) {
        conn.transport.arm_reset();
        self.forget_conn();
        drop(conn);
    }

    /// Closes a connection the pool has let go of, HTTP/1.1 or HTTP/2, by policy.
    fn close_pooled(&self, conn: Pooled) {
        match conn {
            Pooled::H1(c) => self.close_policy(c),
            Pooled::H2(c) => self.close_pooled_h2(c),
        }
    }

    /// Every [`IDLE_SWEEP`], removes idle connections the server closed or wrote on.
    pub async fn sweep_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(IDLE_SWEEP).await;
            // HTTP/2: the connections whose driver ended or that saw GOAWAY leave, and
            // the idle ones must answer a PING.
            self.retire_dead_h2();
            self.ping_idle_h2().await;
            let keys: Vec<(IdleKey, ServerId)> =
                self.pool.borrow().iter().map(|(k, s, _)| (k, s)).collect();
            let dead: Vec<(IdleKey, ServerId)> = keys
                .into_iter()
                .filter(|(k, _)| {
                    let mut pool = self.pool.borrow_mut();
                    pool.get_mut(*k).is_some_and(|ic| !ic.is_healthy())
                })
                .collect();
            for (key, slot) in dead {
                let removed = self.pool.borrow_mut().remove(key);
                if let Some(ic) = removed {
                    self.counters.borrow_mut().idle_closed_by_server += 1;
                    self.close_pooled(ic.conn);
                    self.publish_idle(slot);
                }
            }
        }
    }

    /// Every `--pool-purge-delay`, closes the idle connections the pool says are in excess.
    pub async fn purge_loop(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(self.knobs.purge_delay).await;
            let purged = self.pool.borrow_mut().purge();
            let mut slots = Vec::new();
            for (slot, ic) in purged {
                self.close_pooled(ic.conn);
                slots.push(slot);
            }
            slots.dedup();
            for s in slots {
                self.publish_idle(s);
            }
        }
    }

    /// Shutdown: closes every idle connection of this shard.
    pub fn close_all_idle(&self) {
        let all = self.pool.borrow_mut().drain();
        for (slot, ic) in all {
            self.close_pooled(ic.conn);
            self.publish_idle(slot);
        }
    }

    /// Per-slot pool figures, the layer's counters, and the takeover figures, for `/metrics`.
    pub fn snapshot(&self) -> (Vec<ServerStats>, Counters, crate::metrics::TakeoverCounters) {
        let pool = self.pool.borrow();
        let servers = (0..pool.n_servers())
            .map(|i| pool.stats(ServerId(i as u32)).clone())
            .collect();
        let t = self.takeover.borrow().counters();
        (servers, self.counters.borrow().clone(), t)
    }

    /// Requests answered 503 for want of a usable server, for each backend of the
    /// current configuration (0 included), in configuration order.
    pub fn no_server_by_backend(&self) -> Vec<(String, u64)> {
        let counts = self.no_server.borrow();
        self.table()
            .backends
            .iter()
            .map(|b| {
                let n = counts.get(&b.cfg.name).copied().unwrap_or(0);
                (b.cfg.name.clone(), n)
            })
            .collect()
    }

    /// Whether each server (by index in the table) is up as this shard sees it.
    pub fn servers_up(&self) -> Vec<bool> {
        let now = glommio::clock::now();
        let table = self.table();
        (0..table.servers.len() as u32)
            .map(|s| self.usable(&table, s, now) == Usable::Yes)
            .collect()
    }

    /// The injected-fault counts by point (empty without `--fault`).
    pub fn faults_injected(&self) -> Vec<(String, u64)> {
        match self.faults.borrow().as_ref() {
            Some(f) => FaultPoint::ALL
                .iter()
                .map(|p| (p.name().to_string(), f.injected(*p)))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// How long a server taken out stays out, for the log.
fn out_for(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{d:?}"),
        None => "until its active check passes rise times".to_string(),
    }
}

/// Errors that say this process ran out of something (fds, buffers, memory), not that
/// the server failed.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
