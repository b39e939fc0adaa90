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

mod h2conns;
mod lease;
mod takeover;
mod transport;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

use crate::config::values::Scheme;
use crate::config::Config;
use crate::fd::IdlePeek;
use crate::route::RoundRobin;
use crate::tls::BackendTls;
use crate::warn::RateLimited;

/// How often idle connections are checked for a close or stray bytes from the server.
pub const IDLE_SWEEP: Duration = Duration::from_secs(1);
/// Idle connections pooled at least this long are probed before reuse.
pub const PROBE_AFTER: Duration = Duration::from_millis(50);
/// How long a server stays marked down after a failed connect before it is tried again.
pub const DOWN_RETRY: Duration = Duration::from_secs(1);

/// One configured backend server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub addr: SocketAddr,
    pub backend: usize,
    /// The index of its connections' [`PoolKey`].
    pub slot: ServerId,
    /// For an `https://` server, the name it is verified as (and told in SNI).
    pub tls_name: Option<ServerName<'static>>,
}

/// The server table every shard reads: built once before the shards start; only the
/// published idle counts change, each entry written by its own shard only.
pub struct Table {
    pub servers: Vec<ServerInfo>,
    /// For each backend, the range of its servers' indices.
    pub backend_servers: Vec<Range<u32>>,
    pub keys: KeyTable,
    /// Published idle counts: entry `[shard * keys.len() + slot]`, written only by `shard`.
    published: Vec<AtomicUsize>,
    n_shards: usize,
    /// The client config for `https://` servers (one for all: `--backend-ca` and
    /// `--backend-cert` are process-wide today).
    pub backend_tls: Option<BackendTls>,
}

impl Table {
    pub fn new(config: &Config, n_shards: usize, backend_tls: Option<BackendTls>) -> Table {
        let mut servers = Vec::new();
        let mut backend_servers = Vec::new();
        let mut keys = KeyTable::new();
        for (b, be) in config.backends.iter().enumerate() {
            let start = servers.len() as u32;
            for (i, addr) in be.servers.iter().enumerate() {
                let scheme = be.schemes.get(i).unwrap_or(&Scheme::Http);
                let tls_name = scheme
                    .tls_name()
                    .and_then(|n| ServerName::try_from(n.to_string()).ok());
                // Connections made with other TLS parameters never match: the digest of
                // the client config is part of the key (pingora's reuse hash).
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
                    slot,
                    tls_name,
                });
            }
            backend_servers.push(start..servers.len() as u32);
        }
        let published = (0..n_shards * keys.len())
            .map(|_| AtomicUsize::new(0))
            .collect();
        Table {
            servers,
            backend_servers,
            keys,
            published,
            n_shards,
            backend_tls,
        }
    }

    /// Labels (backend name, address) of each pool slot, in slot order.
    pub fn slot_labels(&self, config: &Config) -> Vec<(String, String)> {
        (0..self.keys.len())
            .map(|i| {
                let s = self
                    .keys
                    .key(ServerId(i as u32))
                    .and_then(|k| self.servers.get(k.server as usize));
                match s {
                    Some(s) => (config.backends[s.backend].name.clone(), s.addr.to_string()),
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
}

/// What the upstream layer says to other shards.
pub enum UpstreamMsg {
    Takeover(Msg<Handover>),
    /// A server went down (or came back) as seen by the sending shard.
    ServerState {
        server: u32,
        down: bool,
    },
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
}

/// What the upstream layer reads from the configuration.
struct Knobs {
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
    table: Arc<Table>,
    knobs: Knobs,
    pool: RefCell<IdlePool<IdleConn>>,
    /// The shared HTTP/2 connections (slots with `Proto::Http2`), see `h2conns.rs`.
    h2: h2conns::H2Pool,
    rr: Vec<RoundRobin>,
    /// When each server was marked down on this shard (None = up).
    down_since: Vec<Cell<Option<Instant>>>,
    /// Backend connections this shard holds (leased, idle, or parked for a hand-over).
    conns: Cell<usize>,
    faults: RefCell<Option<FaultPlan>>,
    takeover: RefCell<takeover::State>,
    outbox: Outbox,
    counters: RefCell<Counters>,
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
        Upstreams {
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
            rr: (0..config.backends.len())
                .map(|_| RoundRobin::default())
                .collect(),
            down_since: (0..table.servers.len()).map(|_| Cell::new(None)).collect(),
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
            warn: RateLimited::default(),
            table,
            fds,
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

    /// Whether a server may be chosen now: up, or down long enough to be tried again.
    fn server_usable(&self, server: u32) -> bool {
        match self.down_since.get(server as usize).and_then(|c| c.get()) {
            None => true,
            Some(t) => t.elapsed() >= DOWN_RETRY,
        }
    }

    /// Chooses a server of `backend` by round-robin, skipping servers marked down, and
    /// returns the pool slot its connections live in.
    pub fn choose(&self, backend: usize) -> ServerId {
        let range = self.table.backend_servers[backend].clone();
        let n = (range.end - range.start) as usize;
        let idx = self.rr[backend].pick(n, |i| self.server_usable(range.start + i as u32));
        self.table.servers[range.start as usize + idx].slot
    }

    /// The address of `slot`'s server, as text (the `:authority` of a request that had
    /// no Host).
    pub fn addr_of(&self, slot: ServerId) -> String {
        let server = self.server_of(slot) as usize;
        self.table
            .servers
            .get(server)
            .map_or_else(String::new, |s| s.addr.to_string())
    }

    fn server_of(&self, slot: ServerId) -> u32 {
        self.table.keys.key(slot).map_or(0, |k| k.server)
    }

    /// Idle connections for `slot` in this shard's pool now: a request for it would
    /// not connect (the exchange's `--cancel-connect-rate` bound asks).
    pub fn idle_here(&self, slot: ServerId) -> usize {
        self.pool.borrow().idle_count(slot)
    }

    /// Writes this shard's idle count for `slot` where the other shards can read it.
    fn publish_idle(&self, slot: ServerId) {
        let count = self.pool.borrow().idle_count(slot);
        if let Some(a) = self.table.published_entry(self.shard, slot) {
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
            if let Some(conn) = self.checkout_local(slot, first) {
                return Ok(Lease::new(self.clone(), conn, true));
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
        let asked = Instant::now();
        let conn = self.connect(slot).await?;
        Ok(Lease::new(self.clone(), conn, false).connected_in(asked.elapsed()))
    }

    /// The most recently used idle connection this request may use, from this shard.
    /// Connections the server closed (or wrote on) while idle are discarded on the way.
    fn checkout_local(&self, slot: ServerId, first: bool) -> Option<BackendConn> {
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
            let skip_peek = !conn.carried_body && since.elapsed() < PROBE_AFTER;
            let peek = if skip_peek {
                IdlePeek::Quiet
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

    /// Opens a new connection to `slot`'s server, marking the server down on failure.
    async fn connect(&self, slot: ServerId) -> Result<BackendConn, AcquireError> {
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
        let info = &self.table.servers[server as usize];
        let addr = info.addr;
        let timeout = self.knobs.connect_timeout;
        let connected = match (&info.tls_name, &self.table.backend_tls) {
            (Some(name), Some(tls)) => {
                // ALPN: `h2` for an h2:// server (and it must agree), `http/1.1` otherwise.
                let h2 = self
                    .table
                    .keys
                    .key(slot)
                    .is_some_and(|k| k.proto == Proto::Http2);
                let config = if h2 { &tls.config_h2 } else { &tls.config };
                Transport::connect_tls(addr, timeout, config.clone(), name.clone(), h2).await
            }
            _ => Transport::connect_tcp(addr, timeout).await,
        };
        match connected {
            Ok(transport) => {
                self.pool.borrow_mut().connected(slot);
                self.conns.set(self.conns.get() + 1);
                if let Some(c) = self.down_since.get(server as usize) {
                    if c.take().is_some() {
                        self.pool.borrow_mut().set_server_down(slot, false);
                        self.broadcast(server, false);
                    }
                }
                Ok(BackendConn {
                    transport,
                    slot,
                    uses: 0,
                    carried_body: false,
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
                tracing::warn!(server = %addr, error = %e, "backend connect failed; marking the server down");
                self.mark_down(server);
                self.broadcast(server, true);
                if timed_out {
                    Err(AcquireError::Timeout)
                } else {
                    Err(AcquireError::Refused(e))
                }
            }
        }
    }

    /// Tells every other shard that a server went down (or came back).
    fn broadcast(&self, server: u32, down: bool) {
        for peer in 0..self.table.n_shards {
            if peer != self.shard {
                let _ = (self.outbox)(peer, UpstreamMsg::ServerState { server, down });
            }
        }
    }

    /// Marks a server down on this shard and closes its idle connections.
    fn mark_down(&self, server: u32) {
        if let Some(c) = self.down_since.get(server as usize) {
            if c.get().is_none() {
                self.counters.borrow_mut().server_down_events += 1;
            }
            c.set(Some(Instant::now()));
        }
        let Some(slot) = self.table.servers.get(server as usize).map(|s| s.slot) else {
            return;
        };
        let closing = self.pool.borrow_mut().set_server_down(slot, true);
        for ic in closing {
            self.close_pooled(ic.conn);
        }
        self.publish_idle(slot);
    }

    /// Marks a server up again on this shard (another shard reached it).
    fn mark_up(&self, server: u32) {
        if let Some(c) = self.down_since.get(server as usize) {
            c.set(None);
        }
        if let Some(s) = self.table.servers.get(server as usize) {
            self.pool.borrow_mut().set_server_down(s.slot, false);
        }
    }

    /// A message from another shard.
    pub fn on_message(self: &Rc<Self>, msg: UpstreamMsg) {
        match msg {
            UpstreamMsg::Takeover(m) => self.on_takeover(m),
            UpstreamMsg::ServerState { server, down: true } => self.mark_down(server),
            UpstreamMsg::ServerState {
                server,
                down: false,
            } => self.mark_up(server),
        }
    }

    /// A kept connection was found holding bytes nobody asked for.
    pub fn count_desync(&self) {
        self.counters.borrow_mut().backend_desync += 1;
    }

    /// A lease ends. `reusable`: the exchange left the connection in a known-good state.
    /// A connection that carried a request body never enters the pool (see
    /// `BackendConn::carried_body`); the exchange keeps it private to its client instead.
    fn give_back(&self, conn: BackendConn, reusable: bool) {
        let slot = conn.slot;
        if !reusable || conn.carried_body {
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
        let put = self
            .pool
            .borrow_mut()
            .checkin(slot, IdleConn::new(conn), uses, Instant::now());
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
    fn close_policy(&self, conn: BackendConn) {
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

    /// Whether each server (by index in the table) is up as this shard sees it.
    pub fn servers_up(&self) -> Vec<bool> {
        self.down_since.iter().map(|c| c.get().is_none()).collect()
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

/// Errors that say this process ran out of something (fds, buffers, memory), not that
/// the server failed.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
