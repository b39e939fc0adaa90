//! The per-shard idle pool: backend connections waiting for their next request.
//!
//! One [`IdlePool`] lives on each shard and is touched only by that shard. It owns the
//! connections it holds (idle: carried one request; safe: reused at least once), keeps
//! them per server in most-recent-first lists so checkout is LIFO and purge closes the
//! oldest, applies the limits (`max_idle_per_server`, `max_reuse`, server down) and keeps
//! HAProxy's counters. It never closes anything itself: every connection that must go
//! is handed back to the caller with the reason, to be closed with RST. It knows no
//! clock (time is passed in), no socket and no other shard.

use std::time::Instant;

use slab::Slab;

use crate::stats::{dec, ServerStats};
use crate::{Allowed, PoolConfig, ServerId};

/// Handle to one pooled connection. It survives slab reuse: a key whose connection has
/// left the pool never matches a connection pooled later in the same slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IdleKey {
    index: usize,
    generation: u64,
}

/// How far a pooled connection has proven itself (HAProxy's idle and safe lists).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ConnClass {
    /// Carried exactly one request so far.
    Idle,
    /// Reused at least once: the server is known to keep it alive.
    Safe,
}

impl ConnClass {
    /// The class of a connection that has carried `uses` requests.
    pub fn for_uses(uses: u32) -> ConnClass {
        if uses <= 1 {
            ConnClass::Idle
        } else {
            ConnClass::Safe
        }
    }
}

/// A connection handed out by [`IdlePool::checkout`].
#[derive(Debug)]
pub struct Checkout<C> {
    /// The connection; the caller now owns it.
    pub conn: C,
    /// Requests it carried before this one.
    pub uses: u32,
    /// Its class when it left the pool.
    pub class: ConnClass,
}

/// What [`IdlePool::checkin`] (and the other ways into the pool) did with a connection.
#[derive(Debug)]
pub enum PutResult<C> {
    /// Pooled; the key names it for a later `remove` (the engine's idle sweep).
    Pooled(IdleKey),
    /// Not pooled: the caller must close it (with RST), for the reason given.
    Rejected(C, RejectReason),
}

/// Why a connection was not pooled. Each one is a policy, never a protocol failure.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RejectReason {
    /// Reuse mode `never`: nothing is shared.
    ReuseNever,
    /// The server already has `max_idle_per_server` idle connections on this shard.
    MaxIdle,
    /// The connection carried `max_reuse` requests.
    MaxReuse,
    /// The server is marked down.
    ServerDown,
    /// The server id is outside the table this pool was built for (a caller bug).
    UnknownServer,
}

struct Entry<C> {
    conn: C,
    server: ServerId,
    uses: u32,
    class: ConnClass,
    generation: u64,
    since: Instant,
    /// Towards the most recent end of its list.
    newer: Option<usize>,
    /// Towards the oldest end of its list.
    older: Option<usize>,
}

/// An intrusive doubly linked list threaded through the slab: `newest` is where puts and
/// checkouts happen (LIFO), `oldest` is where purge starts.
#[derive(Default, Clone, Copy)]
struct List {
    newest: Option<usize>,
    oldest: Option<usize>,
    len: usize,
}

#[derive(Default)]
struct ServerSlot {
    idle: List,
    safe: List,
    down: bool,
    stats: ServerStats,
    /// This server's own limits (a per-backend setting), instead of the pool's.
    limits: Option<PoolConfig>,
}

impl ServerSlot {
    fn list_mut(&mut self, class: ConnClass) -> &mut List {
        match class {
            ConnClass::Idle => &mut self.idle,
            ConnClass::Safe => &mut self.safe,
        }
    }

    fn pooled(&self) -> usize {
        self.idle.len + self.safe.len
    }
}

static NO_STATS: ServerStats = ServerStats {
    connect: 0,
    reuse: 0,
    idle_cur: 0,
    safe_cur: 0,
    used_cur: 0,
    need_est: 0,
    max_used: 0,
    purged: 0,
    rejected_max_idle: 0,
    rejected_max_reuse: 0,
    taken_over: 0,
    adopted: 0,
    adopted_idle: 0,
    grant_returned: 0,
    removed: 0,
    drained_down: 0,
};

/// One shard's idle backend connections, per server. See the module docs.
pub struct IdlePool<C> {
    cfg: PoolConfig,
    entries: Slab<Entry<C>>,
    servers: Vec<ServerSlot>,
    next_generation: u64,
}

impl<C> IdlePool<C> {
    /// An empty pool for servers `0..n_servers`.
    pub fn new(cfg: PoolConfig, n_servers: usize) -> Self {
        IdlePool {
            cfg,
            entries: Slab::new(),
            servers: (0..n_servers).map(|_| ServerSlot::default()).collect(),
            next_generation: 0,
        }
    }

    /// The limits this pool applies.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// The limits that apply to `server`: its own if it has them, else the pool's.
    pub fn limits(&self, server: ServerId) -> &PoolConfig {
        self.servers
            .get(server.index())
            .and_then(|s| s.limits.as_ref())
            .unwrap_or(&self.cfg)
    }

    /// Gives `server` its own limits (reuse mode, max idle, max reuse), e.g. from its
    /// backend's settings. Connections already pooled stay until checkout or purge.
    pub fn set_limits(&mut self, server: ServerId, limits: PoolConfig) {
        if let Some(s) = self.servers.get_mut(server.index()) {
            s.limits = Some(limits);
        }
    }

    /// Makes room for servers up to `n_servers` (a configuration reload added some); the
    /// existing servers and their connections are untouched.
    pub fn grow(&mut self, n_servers: usize) {
        while self.servers.len() < n_servers {
            self.servers.push(ServerSlot::default());
        }
    }

    /// Number of servers this pool was built for.
    pub fn n_servers(&self) -> usize {
        self.servers.len()
    }

    /// Takes the most recently pooled connection this request may use, preferring safe
    /// over idle, and counts it as used. `first_request` is true for the first request of
    /// a client session; the reuse mode decides (see [`crate::ReuseMode::allowed`]).
    /// Returns `None` when the request must use a new connection (or its own private one).
    pub fn checkout(&mut self, server: ServerId, first_request: bool) -> Option<Checkout<C>> {
        let allowed = self.limits(server).reuse.allowed(first_request);
        let (conn, uses, class) = self.pop_newest(server, allowed, true)?;
        let stats = &mut self.servers[server.index()].stats;
        stats.reuse += 1;
        stats.inc_used();
        Some(Checkout { conn, uses, class })
    }

    /// A request finished cleanly on a connection from [`checkout`](Self::checkout),
    /// [`connected`](Self::connected) or [`adopted`](Self::adopted); `uses` is the number of
    /// requests it has carried, this one included. The connection stops counting as used
    /// and is pooled, or handed back with the reason it must be closed.
    pub fn checkin(&mut self, server: ServerId, conn: C, uses: u32, now: Instant) -> PutResult<C> {
        let Some(slot) = self.servers.get_mut(server.index()) else {
            return PutResult::Rejected(conn, RejectReason::UnknownServer);
        };
        dec(&mut slot.stats.used_cur, "used_cur");
        self.put(server, conn, uses, now)
    }

    /// The caller opened a new connection to `server`; it now carries a request.
    pub fn connected(&mut self, server: ServerId) {
        if let Some(slot) = self.servers.get_mut(server.index()) {
            slot.stats.connect += 1;
            slot.stats.inc_used();
        }
    }

    /// A used connection is being closed instead of checked in (error, `Connection: close`).
    pub fn released(&mut self, server: ServerId) {
        if let Some(slot) = self.servers.get_mut(server.index()) {
            dec(&mut slot.stats.used_cur, "used_cur");
        }
    }

    /// The idle check saw EOF, RST or unexpected bytes: take the connection out so the
    /// caller can close it. `None` if the key is stale (the connection already left).
    pub fn remove(&mut self, key: IdleKey) -> Option<C> {
        self.entry(key)?;
        let (conn, server, _, _) = self.unlink(key.index);
        if let Some(slot) = self.servers.get_mut(server.index()) {
            slot.stats.removed += 1;
        }
        Some(conn)
    }

    /// A connection just taken with [`checkout`](Self::checkout) turned out dead before it
    /// carried anything (the server closed it while it was idle). The caller closes it;
    /// the checkout is not counted as a reuse, and it is counted as removed.
    pub fn discard_checkout(&mut self, server: ServerId) {
        if let Some(slot) = self.servers.get_mut(server.index()) {
            dec(&mut slot.stats.used_cur, "used_cur");
            dec(&mut slot.stats.reuse, "reuse");
            slot.stats.removed += 1;
        }
    }

    /// The pooled connection behind `key`, to inspect it in place.
    pub fn get_mut(&mut self, key: IdleKey) -> Option<&mut C> {
        self.entry(key)?;
        self.entries.get_mut(key.index).map(|e| &mut e.conn)
    }

    /// Server, uses, class and pooling time of the connection behind `key`.
    pub fn info(&self, key: IdleKey) -> Option<(ServerId, u32, ConnClass, Instant)> {
        self.entry(key)
            .map(|e| (e.server, e.uses, e.class, e.since))
    }

    /// Every pooled connection, in no particular order (for checks and shutdown logs).
    pub fn iter(&self) -> impl Iterator<Item = (IdleKey, ServerId, &C)> + '_ {
        self.entries.iter().map(|(index, e)| {
            (
                IdleKey {
                    index,
                    generation: e.generation,
                },
                e.server,
                &e.conn,
            )
        })
    }

    /// Run every purge delay. Per server, closes half (rounded up, so at least one while
    /// there is any excess) of `used + idle − max(max_used, need_est)`, oldest first; then
    /// `need_est = (need_est + max_used) / 2` and `max_used = used_cur`. Once traffic stops
    /// the excess halves every delay and reaches zero. Returns the connections to close.
    pub fn purge(&mut self) -> Vec<(ServerId, C)> {
        let mut out = Vec::new();
        for s in 0..self.servers.len() {
            let server = ServerId(s as u32);
            let slot = &self.servers[s];
            let pooled = slot.pooled() as u64;
            let used = slot.stats.used_cur;
            let need = slot.stats.max_used.max(slot.stats.need_est);
            let excess = (used + pooled).saturating_sub(need).min(pooled);
            let to_close = excess.div_ceil(2);
            for _ in 0..to_close {
                match self.pop_oldest(server) {
                    Some(conn) => out.push((server, conn)),
                    None => break,
                }
            }
            let stats = &mut self.servers[s].stats;
            stats.purged += to_close;
            stats.need_est = (stats.need_est + stats.max_used) / 2;
            stats.max_used = stats.used_cur;
        }
        out
    }

    /// Marks a server down or up. Going down drains its pooled connections (returned for
    /// closing); while down, checkin rejects with [`RejectReason::ServerDown`] and checkout
    /// and takeover find nothing.
    pub fn set_server_down(&mut self, server: ServerId, down: bool) -> Vec<C> {
        let Some(slot) = self.servers.get_mut(server.index()) else {
            return Vec::new();
        };
        slot.down = down;
        let mut out = Vec::new();
        if down {
            while let Some((conn, _, _)) = self.pop_newest(server, Allowed::Any, false) {
                out.push(conn);
            }
            self.servers[server.index()].stats.drained_down += out.len() as u64;
        }
        out
    }

    /// Whether the server is marked down (unknown servers read as down).
    pub fn is_server_down(&self, server: ServerId) -> bool {
        !matches!(self.servers.get(server.index()), Some(s) if !s.down)
    }

    /// Owner side of a takeover: pops the most recent pooled connection (safe first) to
    /// hand to another shard. It leaves this shard: not counted as used here.
    pub fn take_for_takeover(&mut self, server: ServerId) -> Option<(C, u32)> {
        self.take_for_takeover_allowed(server, Allowed::Any)
    }

    /// [`take_for_takeover`](Self::take_for_takeover) restricted to what the taker's
    /// request may use (its reuse mode and first-request flag travel in the reservation).
    pub fn take_for_takeover_allowed(
        &mut self,
        server: ServerId,
        allowed: Allowed,
    ) -> Option<(C, u32)> {
        let (conn, uses, _) = self.pop_newest(server, allowed, true)?;
        self.servers[server.index()].stats.taken_over += 1;
        Some((conn, uses))
    }

    /// Owner side: a granted connection could not be sent (the reply channel was full);
    /// it goes back into this pool as it was. Not counted as used.
    pub fn return_granted(
        &mut self,
        server: ServerId,
        conn: C,
        uses: u32,
        now: Instant,
    ) -> PutResult<C> {
        let r = self.put(server, conn, uses, now);
        if let (PutResult::Pooled(_), Some(slot)) = (&r, self.servers.get_mut(server.index())) {
            slot.stats.grant_returned += 1;
        }
        r
    }

    /// Taker side: a connection adopted from another shard now carries a request here.
    pub fn adopted(&mut self, server: ServerId) {
        if let Some(slot) = self.servers.get_mut(server.index()) {
            slot.stats.adopted += 1;
            slot.stats.reuse += 1;
            slot.stats.inc_used();
        }
    }

    /// Taker side: a connection counted by [`adopted`](Self::adopted) never reached its
    /// request (it went away in between); undoes that count so the connection can be
    /// pooled with [`adopt_idle`](Self::adopt_idle) instead, as if the grant had been late.
    pub(crate) fn adoption_undone(&mut self, server: ServerId) {
        if let Some(slot) = self.servers.get_mut(server.index()) {
            dec(&mut slot.stats.adopted, "adopted");
            dec(&mut slot.stats.reuse, "reuse");
            dec(&mut slot.stats.used_cur, "used_cur");
        }
    }

    /// Taker side: a grant arrived after its request gave up (I5); the connection joins
    /// this shard's pool instead of being dropped. Limits still apply.
    pub fn adopt_idle(
        &mut self,
        server: ServerId,
        conn: C,
        uses: u32,
        now: Instant,
    ) -> PutResult<C> {
        let r = self.put(server, conn, uses, now);
        if let (PutResult::Pooled(_), Some(slot)) = (&r, self.servers.get_mut(server.index())) {
            slot.stats.adopted_idle += 1;
        }
        r
    }

    /// Removes every pooled connection (shutdown) and returns them for closing.
    pub fn drain(&mut self) -> Vec<(ServerId, C)> {
        let mut out = Vec::new();
        for s in 0..self.servers.len() {
            let server = ServerId(s as u32);
            while let Some((conn, _, _)) = self.pop_newest(server, Allowed::Any, false) {
                out.push((server, conn));
            }
        }
        out
    }

    /// Idle + safe connections to `server` on this shard, to publish to the other shards.
    pub fn idle_count(&self, server: ServerId) -> usize {
        self.servers
            .get(server.index())
            .map_or(0, ServerSlot::pooled)
    }

    /// Counters for `server` (all zero for an unknown server).
    pub fn stats(&self, server: ServerId) -> &ServerStats {
        self.servers
            .get(server.index())
            .map_or(&NO_STATS, |s| &s.stats)
    }

    /// Counters summed over all servers of this shard.
    pub fn totals(&self) -> ServerStats {
        let mut t = ServerStats::default();
        for s in &self.servers {
            t.add(&s.stats);
        }
        t
    }

    // ---- internals -------------------------------------------------------------------

    fn entry(&self, key: IdleKey) -> Option<&Entry<C>> {
        self.entries
            .get(key.index)
            .filter(|e| e.generation == key.generation)
    }

    /// Pools a connection that does not count as used, applying the limits in order:
    /// unknown server, down, reuse never, max-reuse, max-idle.
    fn put(&mut self, server: ServerId, conn: C, uses: u32, now: Instant) -> PutResult<C> {
        let Some(slot) = self.servers.get_mut(server.index()) else {
            return PutResult::Rejected(conn, RejectReason::UnknownServer);
        };
        if slot.down {
            return PutResult::Rejected(conn, RejectReason::ServerDown);
        }
        let cfg = slot.limits.as_ref().unwrap_or(&self.cfg);
        if cfg.reuse == crate::ReuseMode::Never {
            return PutResult::Rejected(conn, RejectReason::ReuseNever);
        }
        if cfg.max_reuse.is_some_and(|m| uses >= m) {
            slot.stats.rejected_max_reuse += 1;
            return PutResult::Rejected(conn, RejectReason::MaxReuse);
        }
        if slot.pooled() >= cfg.max_idle_per_server {
            slot.stats.rejected_max_idle += 1;
            return PutResult::Rejected(conn, RejectReason::MaxIdle);
        }
        let class = ConnClass::for_uses(uses);
        let generation = self.next_generation;
        self.next_generation += 1;
        let list = *slot.list_mut(class);
        let index = self.entries.insert(Entry {
            conn,
            server,
            uses,
            class,
            generation,
            since: now,
            newer: None,
            older: list.newest,
        });
        if let Some(prev_newest) = list.newest {
            self.entries[prev_newest].newer = Some(index);
        }
        let slot = &mut self.servers[server.index()];
        let list = slot.list_mut(class);
        list.newest = Some(index);
        if list.oldest.is_none() {
            list.oldest = Some(index);
        }
        list.len += 1;
        match class {
            ConnClass::Idle => slot.stats.idle_cur += 1,
            ConnClass::Safe => slot.stats.safe_cur += 1,
        }
        PutResult::Pooled(IdleKey { index, generation })
    }

    /// Pops the newest connection `allowed` permits, safe list first.
    fn pop_newest(
        &mut self,
        server: ServerId,
        allowed: Allowed,
        respect_down: bool,
    ) -> Option<(C, u32, ConnClass)> {
        let slot = self.servers.get(server.index())?;
        if respect_down && slot.down {
            return None;
        }
        let index = [ConnClass::Safe, ConnClass::Idle]
            .into_iter()
            .filter(|c| allowed.permits(*c))
            .find_map(|c| match c {
                ConnClass::Idle => slot.idle.newest,
                ConnClass::Safe => slot.safe.newest,
            })?;
        let (conn, _, uses, class) = self.unlink(index);
        Some((conn, uses, class))
    }

    /// Pops the oldest pooled connection of either class (lower generation = pooled earlier).
    fn pop_oldest(&mut self, server: ServerId) -> Option<C> {
        let slot = self.servers.get(server.index())?;
        let generation = |i: Option<usize>| i.map(|i| self.entries[i].generation);
        let index = match (generation(slot.idle.oldest), generation(slot.safe.oldest)) {
            (Some(a), Some(b)) if b < a => slot.safe.oldest,
            (Some(_), _) => slot.idle.oldest,
            (None, _) => slot.safe.oldest,
        }?;
        Some(self.unlink(index).0)
    }

    /// Takes entry `index` out of its list and the slab, fixing neighbours and gauges.
    fn unlink(&mut self, index: usize) -> (C, ServerId, u32, ConnClass) {
        let e = self.entries.remove(index);
        if let Some(n) = e.newer {
            self.entries[n].older = e.older;
        }
        if let Some(o) = e.older {
            self.entries[o].newer = e.newer;
        }
        let slot = &mut self.servers[e.server.index()];
        let list = slot.list_mut(e.class);
        if list.newest == Some(index) {
            list.newest = e.older;
        }
        if list.oldest == Some(index) {
            list.oldest = e.newer;
        }
        debug_assert!(list.len > 0, "pool list length would go below zero");
        list.len = list.len.saturating_sub(1);
        match e.class {
            ConnClass::Idle => dec(&mut slot.stats.idle_cur, "idle_cur"),
            ConnClass::Safe => dec(&mut slot.stats.safe_cur, "safe_cur"),
        }
        (e.conn, e.server, e.uses, e.class)
    }
}

#[cfg(test)]
#[path = "idle_tests.rs"]
mod tests;
