//! The simulated world: N shards, each with an idle pool and the crate's takeover
//! [`Driver`] (the same code the engine runs), and, for HTTP/2 servers, a busy list, an
//! avail list and the acquisitions in progress (`h2.rs`); a network of in-flight messages
//! with random delays, reordering and bounded links, clients, servers (with their side of
//! every connection) and faults, all driven by one seeded PRNG.
//!
//! It owns every simulated connection (`SimConn`, which cannot be copied and panics if
//! dropped without being closed), records why each one was closed, and runs the client,
//! server and timer steps; message delivery lives in `network.rs`. It never reads the
//! real clock except once for a base `Instant`; simulated time is a tick counter, so a
//! seed replays the same trace.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringway_pool::{
    Allowed, Driver, FaultPlan, FaultPoint, IdlePool, KeyTable, Next, PlantedBug, PoolConfig,
    PoolKey, Proto, PutResult, RejectReason, ReuseMode, ServerId, TakerConfig, Ticket,
};

pub use crate::h2::{Acquire, Busy, End, H2State, H2Tally, Srv};

pub type Res = Result<(), String>;

thread_local! {
    /// While armed, dropping an unclosed `SimConn` panics (a connection lost: I1/I6).
    pub static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// A simulated backend connection: moved, never copied; must be closed explicitly. An
/// HTTP/2 one carries its `h2` state (settings, stream ids, GOAWAY seen) wherever it goes:
/// into a pool, into a grant, to another shard.
#[derive(Debug)]
pub struct SimConn {
    pub id: u64,
    pub h2: Option<H2State>,
    closed: bool,
}

impl Drop for SimConn {
    fn drop(&mut self) {
        if !self.closed && ARMED.with(Cell::get) && !std::thread::panicking() {
            panic!(
                "I1/I6: connection {} was dropped without being closed",
                self.id
            );
        }
    }
}

/// Why a connection was closed. The takeover itself never closes one: the driver hands
/// back only what a pool refused, and `check.rs` matches those closes against the pools'
/// refusal counters (I6). An unknown server is a bug of ours, not a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Close {
    Purge,
    Policy(RejectReasonKey),
    ServerDownDrain,
    Shutdown,
    /// The server closed it while idle (the watcher saw EOF/RST): not healthy.
    ServerClosed,
    /// The request ended in error or with `Connection: close`.
    RequestEnd,
    /// An HTTP/2 connection the server sent GOAWAY on: closed once its last stream ended,
    /// or when the client read the GOAWAY while it was idle (sweep, checkout, adoption).
    GoAway,
}

/// `RejectReason` with an order, for tallies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReasonKey {
    ReuseNever,
    MaxIdle,
    MaxReuse,
    ServerDown,
    UnknownServer,
}

impl From<RejectReason> for RejectReasonKey {
    fn from(r: RejectReason) -> Self {
        match r {
            RejectReason::ReuseNever => RejectReasonKey::ReuseNever,
            RejectReason::MaxIdle => RejectReasonKey::MaxIdle,
            RejectReason::MaxReuse => RejectReasonKey::MaxReuse,
            RejectReason::ServerDown => RejectReasonKey::ServerDown,
            RejectReason::UnknownServer => RejectReasonKey::UnknownServer,
        }
    }
}

/// A bug planted on purpose, to prove the checks catch it: in the simulation's own
/// runtime glue, or inside the shared [`Driver`] (the code the engine runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    None,
    /// A request closed on error does not call `released` (violates I4).
    ForgetRelease,
    /// Timeouts are never polled (violates I3).
    NeverPollTimeouts,
    /// A bug armed inside every shard's driver.
    Driver(PlantedBug),
    /// When a stream ends and others are still open on its HTTP/2 connection, the
    /// connection is checked into the idle pool anyway (so it can be granted busy).
    H2PoolBusy,
    /// An owner with no idle HTTP/2 connection to the server answers a `Reserve` with a
    /// busy one from its avail list.
    H2GrantBusy,
    /// An owner grants an HTTP/2 connection whose GOAWAY it read while stopping its driver.
    H2GrantDead,
    /// An HTTP/2 connection that saw GOAWAY is checked into the idle pool when its last
    /// stream ends, instead of being closed.
    H2PoolDead,
    /// A full HTTP/2 connection stays on the avail list (streams opened over the max).
    H2IgnoreMax,
    /// A taker adopts an HTTP/2 connection without its `h2` state (stream ids restart).
    H2LoseState,
}

#[derive(Clone, Debug)]
pub struct SimCfg {
    pub n_shards: usize,
    pub n_servers: usize,
    pub pool: PoolConfig,
    pub ask_timeout: u64,
    pub link_cap: usize,
    pub delay_max: u64,
    pub steps: usize,
    pub faults: FaultPlan,
    pub bug: Bug,
    /// Per server: spoken to in HTTP/2 (its `PoolKey` says `Proto::Http2`).
    pub h2: Vec<bool>,
    /// Per server: the highest SETTINGS_MAX_CONCURRENT_STREAMS it starts a connection with.
    pub h2_max: Vec<u32>,
    /// Most ticks an HTTP/2 connect (TCP + handshake + the server's SETTINGS) takes.
    pub connect_delay: u64,
}

impl SimCfg {
    pub fn random(seed: u64) -> SimCfg {
        let mut r = SmallRng::seed_from_u64(seed ^ 0x5EED_C0F1_6000_0000);
        let reuse = match r.gen_range(0..10) {
            0 => ReuseMode::Never,
            1..=3 => ReuseMode::Safe,
            4..=6 => ReuseMode::Aggressive,
            _ => ReuseMode::Always,
        };
        let mut faults = FaultPlan::none();
        for p in FaultPoint::ALL {
            if r.gen_bool(0.7) {
                faults.set_rate_ppm(p, r.gen_range(0..=150_000));
            }
        }
        let n_servers = r.gen_range(1..=3);
        SimCfg {
            n_shards: r.gen_range(2..=16),
            n_servers,
            pool: PoolConfig {
                reuse,
                max_idle_per_server: [0, 1, 2, 3, 4, 6][r.gen_range(0..6)],
                max_reuse: if r.gen_bool(0.3) {
                    Some(r.gen_range(1..=6))
                } else {
                    None
                },
                low_idle: r.gen_range(0..=3),
            },
            ask_timeout: r.gen_range(4..=20),
            link_cap: r.gen_range(1..=4),
            delay_max: r.gen_range(1..=10),
            steps: r.gen_range(150..=400),
            // Round-trips the spec through its text form on purpose.
            faults: FaultPlan::parse(&faults.to_string(), seed)
                .unwrap_or_else(|e| panic!("fault spec {faults} did not parse back: {e}")),
            bug: Bug::None,
            h2: (0..n_servers).map(|_| r.gen_bool(0.5)).collect(),
            h2_max: (0..n_servers).map(|_| r.gen_range(1..=4)).collect(),
            connect_delay: r.gen_range(0..=6),
        }
    }
}

/// What a request is, independent of where it stands.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    pub shard: usize,
    pub server: ServerId,
    pub first: bool,
    pub allowed: Allowed,
    pub started: u64,
}

#[derive(Debug)]
pub enum ReqState {
    /// The request's `Reserve` for this ticket is out; its shard's driver holds its id.
    Waiting(Ticket),
    /// HTTP/1.1: the request has the connection to itself.
    Active { conn: SimConn, uses: u32 },
    /// HTTP/2: stream `sid` on connection `conn`, busy entry `seq` of the request's shard.
    Stream { seq: u64, conn: u64, sid: u32 },
    /// HTTP/2: leads the connect in progress (`leader`) or waits for it.
    Connecting { leader: bool },
}

#[derive(Debug)]
pub struct Req {
    pub meta: Meta,
    pub state: ReqState,
}

pub use crate::network::Flight;

pub struct Shard {
    pub pool: IdlePool<SimConn>,
    /// Taker, owner and waiter table; a waiter is a request id.
    pub driver: Driver<SimConn, u64>,
    pub faults: FaultPlan,
    /// HTTP/2 connections with at least one open stream, by the order they became busy.
    pub busy: BTreeMap<u64, Busy>,
    /// The shared `avail` list: busy connections that can take another stream, oldest
    /// first per server.
    pub avail: BTreeSet<(ServerId, u64)>,
    /// HTTP/2 takeovers-then-connects in progress (at most one shared one per server).
    pub acquiring: Vec<Acquire>,
    /// Open HTTP/2 streams on this shard (the gauge a runtime would publish).
    pub streams: u64,
}

/// Event counts: for coverage assertions and the reuse/adopt cross-checks.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct Tally {
    pub requests: u64,
    pub reused_local: u64,
    pub reused_before_connect: u64,
    pub adopted: u64,
    pub connected: u64,
    pub refused_down: u64,
    pub connect_failed: u64,
    pub client_gone: u64,
    /// Requests that went away without telling the driver (the engine's dropped oneshot).
    pub vanished: u64,
    /// Grants delivered by the driver to a request that had vanished.
    pub undeliverable: u64,
    pub adopt_idle_calls: u64,
    pub adopt_idle_pooled: u64,
    pub grants_received: u64,
    pub grant_returned: u64,
    pub stale_key_checks: u64,
    /// Delivered grants whose connection turned out dead on arrival (GOAWAY in flight).
    pub adopted_dead: u64,
    pub closes: BTreeMap<Close, u64>,
    pub h2: H2Tally,
}

pub struct World {
    pub cfg: SimCfg,
    pub rng: SmallRng,
    pub base: Instant,
    pub tick: u64,
    pub shards: Vec<Shard>,
    /// `published[server][shard]`: idle counts as last published (may be stale).
    pub published: Vec<Vec<usize>>,
    pub reqs: BTreeMap<u64, Req>,
    /// Requests that went away without telling their driver, which may still hold their
    /// id; the driver hands it back once (grant, deny, timeout) and it leaves this table.
    pub vanished: BTreeMap<u64, Meta>,
    pub flights: Vec<Flight>,
    /// Open connections and their server; closed ones and why.
    pub open: BTreeMap<u64, ServerId>,
    pub closed: BTreeMap<u64, Close>,
    pub next_conn: u64,
    pub next_req: u64,
    pub next_seq: u64,
    /// Pool keys: server i is key i, HTTP/1.1 or HTTP/2 as configured.
    pub keys: KeyTable,
    /// The servers' side of every open connection, by connection id.
    pub srv: BTreeMap<u64, Srv>,
    /// How each finished request ended.
    pub done: BTreeMap<u64, End>,
    pub tally: Tally,
    pub trace: u64,
    pub verbose: bool,
}

impl World {
    pub fn new(seed: u64, cfg: SimCfg, verbose: bool) -> World {
        let tcfg = TakerConfig {
            low_idle: cfg.pool.low_idle,
            ask_timeout: Duration::from_millis(cfg.ask_timeout),
        };
        let shards = (0..cfg.n_shards)
            .map(|s| {
                let mut driver = Driver::new(s, cfg.n_shards, tcfg.clone());
                if let Bug::Driver(b) = cfg.bug {
                    driver.plant(b);
                }
                Shard {
                    pool: IdlePool::new(cfg.pool.clone(), cfg.n_servers),
                    driver,
                    faults: cfg.faults.for_shard(s),
                    busy: BTreeMap::new(),
                    avail: BTreeSet::new(),
                    acquiring: Vec::new(),
                    streams: 0,
                }
            })
            .collect();
        let mut keys = KeyTable::new();
        for (i, &h2) in cfg.h2.iter().enumerate() {
            let proto = if h2 { Proto::Http2 } else { Proto::Http1 };
            let id = keys.intern(PoolKey {
                server: i as u32,
                proto,
                tls: None,
            });
            assert_eq!(id.index(), i, "server i is key i");
        }
        World {
            published: vec![vec![0; cfg.n_shards]; cfg.n_servers],
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            base: Instant::now(),
            tick: 0,
            shards,
            reqs: BTreeMap::new(),
            vanished: BTreeMap::new(),
            flights: Vec::new(),
            open: BTreeMap::new(),
            closed: BTreeMap::new(),
            next_conn: 0,
            next_req: 0,
            next_seq: 0,
            keys,
            srv: BTreeMap::new(),
            done: BTreeMap::new(),
            tally: Tally::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            verbose,
        }
    }

    pub fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.tick)
    }

    /// Folds an event into the trace hash (and prints it when replaying one seed).
    pub fn note(&mut self, what: &str, parts: &[u64]) {
        for b in what.bytes().map(u64::from).chain(parts.iter().copied()) {
            self.trace = (self.trace ^ b).wrapping_mul(0x100_0000_01b3);
        }
        if self.verbose {
            println!("t={:<5} {what} {parts:?}", self.tick);
        }
    }

    pub fn delay(&mut self) -> u64 {
        self.rng.gen_range(0..=self.cfg.delay_max)
    }

    /// Closes a connection for a reason; I6 refuses protocol closes.
    pub fn close(&mut self, mut conn: SimConn, why: Close) -> Res {
        conn.closed = true;
        self.note("close", &[conn.id]);
        if self.open.remove(&conn.id).is_none() {
            return Err(format!("I1: connection {} closed twice", conn.id));
        }
        self.srv.remove(&conn.id);
        self.closed.insert(conn.id, why);
        *self.tally.closes.entry(why).or_default() += 1;
        match why {
            Close::Policy(RejectReasonKey::UnknownServer) => Err(format!(
                "I6: connection {} closed by the protocol ({why:?})",
                conn.id
            )),
            _ => Ok(()),
        }
    }

    /// Closes what shard `shard`'s pool refused for `server`, after checking the reason
    /// holds there now (I6: a protocol close must not pass itself off as a policy).
    /// `MaxReuse` is checked as a total in `check.rs` (the connection's uses are gone).
    pub fn close_rejected(&mut self, shard: usize, server: ServerId, r: PutResult<SimConn>) -> Res {
        let PutResult::Rejected(conn, why) = r else {
            return Ok(());
        };
        let pool = &self.shards[shard].pool;
        let holds = match why {
            RejectReason::ServerDown => pool.is_server_down(server),
            RejectReason::ReuseNever => self.cfg.pool.reuse == ReuseMode::Never,
            RejectReason::MaxIdle => pool.idle_count(server) >= self.cfg.pool.max_idle_per_server,
            RejectReason::MaxReuse => self.cfg.pool.max_reuse.is_some(),
            RejectReason::UnknownServer => false,
        };
        let id = conn.id;
        self.close(conn, Close::Policy(why.into()))?;
        if holds {
            Ok(())
        } else {
            Err(format!(
                "I6: connection {id} closed for {why:?}, which does not hold on shard {shard} for server {}",
                server.0
            ))
        }
    }

    // ---- steps ---------------------------------------------------------------------

    pub fn step(&mut self) -> Res {
        match self.rng.gen_range(0..110) {
            0..=27 => self.new_request(),
            28..=47 => self.complete(),
            48..=72 => self.deliver(),
            73..=82 => self.advance(),
            83..=85 => self.purge(),
            86..=89 => self.server_close_idle(),
            90 => self.server_toggle(),
            91..=97 => self.publish(),
            98..=99 => self.abandon(),
            100..=103 => self.h2_server_frame(),
            _ => self.finish_a_connect(),
        }
    }

    /// Whether `server`'s pool key says HTTP/2.
    pub fn is_h2(&self, server: ServerId) -> bool {
        self.keys
            .key(server)
            .is_some_and(|k| k.proto == Proto::Http2)
    }

    /// A new connection to `server`, with the server's side of it. An HTTP/2 one starts
    /// with the SETTINGS the server sent first (the engine waits for them before it
    /// offers the connection, so its max is known before any stream is opened).
    pub fn new_conn(&mut self, server: ServerId) -> SimConn {
        let id = self.next_conn;
        self.next_conn += 1;
        let h2 = self.is_h2(server).then(|| {
            let max = self.rng.gen_range(1..=self.cfg.h2_max[server.index()]);
            H2State {
                max,
                next_id: 1,
                dead: None,
            }
        });
        let acked_max = h2.as_ref().map_or(1, |h| h.max);
        self.srv.insert(
            id,
            Srv {
                acked_max,
                ..Srv::default()
            },
        );
        self.open.insert(id, server);
        SimConn {
            id,
            h2,
            closed: false,
        }
    }

    /// Records how request `id` ended; it must have been in no table and not ended before.
    pub fn finish(&mut self, id: u64, end: End) -> Res {
        if self.reqs.contains_key(&id) {
            return Err(format!(
                "lost: request {id} ended ({end:?}) but is still in flight"
            ));
        }
        if let Some(prev) = self.done.insert(id, end) {
            return Err(format!(
                "lost: request {id} ended twice ({prev:?}, {end:?})"
            ));
        }
        Ok(())
    }

    /// An HTTP/1.1 request starts on `conn`: the server sees it (and nothing else on it).
    pub fn activate_h1(&mut self, id: u64, meta: Meta, conn: SimConn, uses: u32) -> Res {
        let srv = self
            .srv
            .get_mut(&conn.id)
            .ok_or_else(|| format!("I1: connection {} has no server side", conn.id))?;
        if let Some((_, other)) = srv.open.iter().next() {
            return Err(format!(
                "H1: request {id} sent on connection {} while it carries request {other}",
                conn.id
            ));
        }
        srv.open.insert(0, id);
        let state = ReqState::Active { conn, uses };
        self.reqs.insert(id, Req { meta, state });
        Ok(())
    }

    fn new_request(&mut self) -> Res {
        let shard = self.rng.gen_range(0..self.cfg.n_shards);
        let server = ServerId(self.rng.gen_range(0..self.cfg.n_servers) as u32);
        let first = self.rng.gen_bool(0.3);
        let id = self.next_req;
        self.next_req += 1;
        self.tally.requests += 1;
        self.note(
            "request",
            &[id, shard as u64, server.0 as u64, first as u64],
        );
        // Every pooled HTTP/2 connection has carried a stream, so the engine applies the
        // reuse mode's rule for later requests to all HTTP/2 requests (only `never`
        // keeps them private).
        let first = first && !self.is_h2(server);
        let allowed = self.cfg.pool.reuse.allowed(first);
        let meta = Meta {
            shard,
            server,
            first,
            allowed,
            started: self.tick,
        };
        self.acquire(id, meta)
    }

    /// Finds request `id` a connection: HTTP/2, a free stream on a busy connection of
    /// its shard first; then the local idle pool; then a takeover; then a connect.
    pub fn acquire(&mut self, id: u64, meta: Meta) -> Res {
        let (shard, server, first, allowed) = (meta.shard, meta.server, meta.first, meta.allowed);
        if self.shards[shard].pool.is_server_down(server) {
            self.tally.refused_down += 1;
            return self.finish(id, End::Unavailable);
        }
        if self.is_h2(server) {
            if self.h2_local(id, meta)? || self.h2_wait_or_lead(id, meta)? {
                return Ok(());
            }
        } else if let Some(co) = self.shards[shard].pool.checkout(server, first) {
            if !allowed.permits(co.class) {
                return Err(format!(
                    "reuse mode: {allowed:?} got a {:?} connection",
                    co.class
                ));
            }
            self.tally.reused_local += 1;
            self.note("reuse", &[co.conn.id]);
            return self.activate_h1(id, meta, co.conn, co.uses);
        }
        let now = self.now();
        let published = &self.published[server.index()];
        let sh = &mut self.shards[shard];
        let mut next = sh.driver.begin(server, allowed, |i| published[i], now);
        if let Next::Ask { ticket, .. } = next {
            // Reserve before asking: a failure here sends nothing (DESIGN step 1).
            if sh.faults.should_fail(FaultPoint::Reserve) {
                next = sh.driver.reserve_failed(ticket);
            }
        }
        self.carry(id, meta, next)
    }

    /// Connects anew, after one more look at the local pool: a late grant may have been
    /// adopted there while the request waited on another shard (what the engine does too).
    pub fn connect(&mut self, id: u64, meta: Meta) -> Res {
        if self.is_h2(meta.server) {
            return self.h2_connect(id, meta);
        }
        let sh = &mut self.shards[meta.shard];
        if sh.pool.is_server_down(meta.server) {
            self.tally.refused_down += 1;
            return self.finish(id, End::Unavailable);
        }
        if let Some(co) = sh.pool.checkout(meta.server, meta.first) {
            self.tally.reused_local += 1;
            self.tally.reused_before_connect += 1;
            self.note("reuse-late", &[id, co.conn.id]);
            return self.activate_h1(id, meta, co.conn, co.uses);
        }
        if sh.faults.should_fail(FaultPoint::Connect) {
            self.tally.connect_failed += 1;
            return self.finish(id, End::Unavailable);
        }
        sh.pool.connected(meta.server);
        let conn = self.new_conn(meta.server);
        self.tally.connected += 1;
        self.note("connect", &[id, conn.id]);
        self.activate_h1(id, meta, conn, 0)
    }

    pub fn active_ids(&self) -> Vec<u64> {
        self.reqs
            .iter()
            .filter(|(_, r)| matches!(r.state, ReqState::Active { .. } | ReqState::Stream { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    fn complete(&mut self) -> Res {
        let ids = self.active_ids();
        if ids.is_empty() {
            return Ok(());
        }
        let id = ids[self.rng.gen_range(0..ids.len())];
        self.complete_one(id)
    }

    pub fn complete_one(&mut self, id: u64) -> Res {
        let (meta, conn, uses) = match self.reqs.remove(&id) {
            Some(Req {
                meta,
                state: ReqState::Active { conn, uses },
            }) => (meta, conn, uses),
            Some(Req {
                meta,
                state: ReqState::Stream { seq, conn, sid },
            }) => return self.complete_stream(id, meta, seq, conn, sid),
            _ => return Err(format!("request {id} is not active")),
        };
        self.note("complete", &[id, conn.id]);
        let token = self.srv.get_mut(&conn.id).and_then(|s| s.open.remove(&0));
        if token != Some(id) {
            return Err(format!(
                "answer: request {id} got the answer of {token:?} on connection {}",
                conn.id
            ));
        }
        self.finish(id, End::Response)?;
        let now = self.now();
        let close = self.rng.gen_bool(0.05);
        let sh = &mut self.shards[meta.shard];
        if sh.faults.should_fail(FaultPoint::Checkin) || close {
            if self.cfg.bug != Bug::ForgetRelease {
                sh.pool.released(meta.server);
            }
            return self.close(conn, Close::RequestEnd);
        }
        let r = sh.pool.checkin(meta.server, conn, uses + 1, now);
        self.close_rejected(meta.shard, meta.server, r)
    }

    pub fn advance(&mut self) -> Res {
        let dt = self.rng.gen_range(1..=5);
        self.advance_by(dt)
    }

    pub fn advance_by(&mut self, dt: u64) -> Res {
        self.tick += dt;
        self.note("tick", &[self.tick]);
        if self.cfg.bug == Bug::NeverPollTimeouts {
            return Ok(());
        }
        let now = self.now();
        for s in 0..self.cfg.n_shards {
            for (rid, next) in self.shards[s].driver.poll_timeouts(now) {
                self.note("timeout", &[rid]);
                self.resume(s, rid, next)?;
            }
        }
        Ok(())
    }

    fn purge(&mut self) -> Res {
        let s = self.rng.gen_range(0..self.cfg.n_shards);
        self.note("purge", &[s as u64]);
        self.h2_sweep(s)?;
        for (_, conn) in self.shards[s].pool.purge() {
            self.close(conn, Close::Purge)?;
        }
        Ok(())
    }

    fn server_close_idle(&mut self) -> Res {
        let s = self.rng.gen_range(0..self.cfg.n_shards);
        let keys: Vec<_> = self.shards[s].pool.iter().map(|(k, _, _)| k).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let k = keys[self.rng.gen_range(0..keys.len())];
        let conn = self.shards[s]
            .pool
            .remove(k)
            .ok_or("watcher: a listed key did not remove")?;
        self.close(conn, Close::ServerClosed)?;
        // The key is stale now, and stays stale when the slot is reused.
        self.tally.stale_key_checks += 1;
        if self.shards[s].pool.remove(k).is_some() || self.shards[s].pool.get_mut(k).is_some() {
            return Err("stale IdleKey matched".into());
        }
        Ok(())
    }

    fn server_toggle(&mut self) -> Res {
        let server = ServerId(self.rng.gen_range(0..self.cfg.n_servers) as u32);
        let down = !self.shards[0].pool.is_server_down(server) && self.rng.gen_bool(0.5);
        self.note("server", &[server.0 as u64, down as u64]);
        for s in 0..self.cfg.n_shards {
            for conn in self.shards[s].pool.set_server_down(server, down) {
                self.close(conn, Close::ServerDownDrain)?;
            }
        }
        Ok(())
    }

    fn publish(&mut self) -> Res {
        let s = self.rng.gen_range(0..self.cfg.n_shards);
        for server in 0..self.cfg.n_servers {
            self.published[server][s] = self.shards[s].pool.idle_count(ServerId(server as u32));
        }
        Ok(())
    }

    /// The client of a request goes away. While it waits on a ticket the runtime tells
    /// the driver, or (as when the engine's parked task is dropped with its oneshot) it
    /// does not; while it waits for an HTTP/2 connect it leaves the waiters; on an HTTP/2
    /// stream it resets the stream, which is cancelled on the backend too.
    fn abandon(&mut self) -> Res {
        let w: Vec<_> = self
            .reqs
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.state,
                    ReqState::Waiting(_)
                        | ReqState::Stream { .. }
                        | ReqState::Connecting { leader: false }
                )
            })
            .map(|(id, _)| *id)
            .collect();
        if w.is_empty() {
            return Ok(());
        }
        let rid = w[self.rng.gen_range(0..w.len())];
        let req = &self.reqs[&rid];
        match req.state {
            ReqState::Waiting(ticket) => {
                let s = req.meta.shard;
                if self.rng.gen_bool(0.5) {
                    self.drop_waiter(s, ticket, rid)
                } else {
                    self.vanish(rid)
                }
            }
            _ => self.h2_client_gone(rid),
        }
    }

    /// Stops traffic: finishes every request, delivers every message, fires every
    /// deadline, then drains every pool (shutdown).
    pub fn wind_down(&mut self) -> Res {
        for round in 0.. {
            if round > 10_000 {
                return Err("I3: the world did not quiesce after traffic stopped".into());
            }
            for id in self.active_ids() {
                self.complete_one(id)?;
            }
            if !self.flights.is_empty() {
                let i = self.rng.gen_range(0..self.flights.len());
                self.deliver_one(i)?;
            } else if let Some((s, i)) = (0..self.cfg.n_shards).find_map(|s| {
                let a = &self.shards[s].acquiring;
                a.iter()
                    .position(|a| a.connect_at.is_some())
                    .map(|i| (s, i))
            }) {
                self.finish_connect(s, i)?;
            } else if self.shards.iter().any(|s| s.driver.pending() > 0) {
                self.advance_by(self.cfg.ask_timeout)?;
            } else if self.reqs.is_empty() {
                break;
            }
            crate::check::check(self, false)?;
        }
        for s in 0..self.cfg.n_shards {
            for (_, conn) in self.shards[s].pool.drain() {
                self.close(conn, Close::Shutdown)?;
            }
        }
        Ok(())
    }
}
