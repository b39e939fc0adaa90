//! HTTP/2 connections in the simulation: shared busy connections and the `avail` list,
//! stream counts against the server's SETTINGS_MAX_CONCURRENT_STREAMS, one connect in
//! progress per server and shard, and GOAWAY at any time.
//!
//! The rules modelled are those the engine follows (`engine/src/upstream/h2conns.rs`):
//! a connection with at least one open stream is *busy*: it is in its shard's busy list
//! (never in the [`IdlePool`](ringway_pool::IdlePool)), and on the shard's `avail` list
//! while it can take another stream. A request opens a stream on the oldest busy
//! connection with a free stream, else checks an idle one out of the pool, else takes
//! one over from another shard through the shared [`Driver`](ringway_pool::Driver),
//! else connects; at most one such takeover-or-connect is in progress per server and
//! shard, and the requests that find one in progress wait for it. When a
//! connection's last stream ends it is checked into the idle pool like an HTTP/1.1 one
//! (`uses` counts streams), unless it is dead or worn. Only idle (zero-stream)
//! connections are ever in a pool or a grant, so only those move between shards.
//!
//! The server's side of every connection ([`Srv`]) is kept apart from the client's
//! ([`H2State`], which travels inside the `SimConn`): the server checks each new stream
//! against what the client has read of its SETTINGS, against the stream ids it saw before
//! (so an `h2` state lost on the way to another shard shows), and against its GOAWAY;
//! it echoes each request's id back as the response, so a request answered with another's
//! response shows. Frames the server sends (SETTINGS, GOAWAY) wait on the wire until the
//! client reads them: at once on a busy connection (its task drives it), at the next
//! sweep or checkout on an idle one, at adoption on one that was in a grant.

use std::collections::BTreeMap;

use rand::Rng;
use ringway_pool::{Allowed, ConnClass, FaultPoint, PutResult, ServerId};

use crate::world::{Bug, Close, Meta, Req, ReqState, Res, SimConn, World};

/// The client's `h2` state of one connection; it moves with the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2State {
    /// SETTINGS_MAX_CONCURRENT_STREAMS as last read from the server.
    pub max: u32,
    /// The id the next stream gets (odd, increasing over the connection's life).
    pub next_id: u32,
    /// GOAWAY read, with its last_stream_id: never picked, pooled or granted again.
    pub dead: Option<u32>,
}

/// A frame from the server the client has not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Settings(u32),
    GoAway(u32),
}

/// The server's side of one connection (HTTP/1.1 too: stream 0 is its one request).
#[derive(Debug, Default)]
pub struct Srv {
    /// SETTINGS_MAX_CONCURRENT_STREAMS the client has read (the limit that binds it).
    pub acked_max: u32,
    /// Highest stream id opened so far.
    pub highest: u32,
    /// Open streams and the request each carries (echoed back as its response).
    pub open: BTreeMap<u32, u64>,
    /// GOAWAY sent, with its last_stream_id.
    pub goaway: Option<u32>,
    /// Sent, not yet read by the client.
    pub wire: Vec<Frame>,
}

/// A busy HTTP/2 connection: at least one open stream, owned by its shard's busy list.
#[derive(Debug)]
pub struct Busy {
    pub conn: SimConn,
    pub server: ServerId,
    /// Open streams and the request on each.
    pub streams: BTreeMap<u32, u64>,
    /// Streams it has carried over its life (`--max-reuse` counts these).
    pub uses: u32,
    /// How many streams may be open now: the max, or more while streams opened before
    /// the server lowered it are still finishing. Never raised by a new stream.
    pub ceiling: u32,
    /// Still counted in `used_cur`: a connection that read GOAWAY is uncounted at once
    /// (the engine's `retire_h2`) and closed when its last stream ends.
    pub counted: bool,
}

/// An HTTP/2 acquisition in progress on one shard: its leader asks other shards for an
/// idle connection (a takeover), then connects. While a shared one is in progress for a
/// server, the shard's other requests to it that find no free stream wait for it, as in
/// the engine (at most one takeover-or-connect per slot and shard).
#[derive(Debug)]
pub struct Acquire {
    pub server: ServerId,
    /// The request that started it; it gets the first stream.
    pub leader: u64,
    /// `None` while the leader waits on a takeover ticket; then when its connect
    /// completes (or fails).
    pub connect_at: Option<u64>,
    /// False for a request that may not share (`--reuse never`): it connects on its own,
    /// and nobody waits for it.
    pub shared: bool,
    /// Requests waiting for it.
    pub waiters: Vec<u64>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Response,
    /// 503 (or 502): no connection could be had.
    Unavailable,
    /// The client went away.
    Gone,
}

/// HTTP/2 event counts, for coverage.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct H2Tally {
    pub streams: u64,
    /// Streams opened on a connection that was already busy (sharing).
    pub shared: u64,
    /// Streams opened on a connection checked out of the idle pool.
    pub from_pool: u64,
    /// Streams opened on a connection taken over from another shard.
    pub from_takeover: u64,
    pub connects: u64,
    pub connect_waits: u64,
    pub waiters_failed: u64,
    pub private_connects: u64,
    /// Connections taken off `avail` because they filled up.
    pub full: u64,
    pub worn: u64,
    pub pooled: u64,
    pub settings: u64,
    pub settings_below_open: u64,
    pub goaway_busy: u64,
    pub goaway_idle: u64,
    pub goaway_in_flight: u64,
    pub goaway_sweep: u64,
    pub goaway_checkout: u64,
    pub goaway_adopted: u64,
    /// Read by the owner while it stopped the driver to grant it: put back, closed, denied.
    pub goaway_at_owner: u64,
    pub dead_closed: u64,
    /// Streams above a GOAWAY's last_stream_id, retried on another connection.
    pub retried: u64,
    pub client_reset: u64,
    pub wait_gone: u64,
    /// Late or undeliverable grants of HTTP/2 connections pooled idle by the taker (I5).
    pub adopted_idle: u64,
    /// HTTP/2 grants that could not be sent and went back into the owner's pool.
    pub grant_returned: u64,
}

impl H2Tally {
    pub fn add(&mut self, o: &H2Tally) {
        let H2Tally {
            streams,
            shared,
            from_pool,
            from_takeover,
            connects,
            connect_waits,
            waiters_failed,
            private_connects,
            full,
            worn,
            pooled,
            settings,
            settings_below_open,
            goaway_busy,
            goaway_idle,
            goaway_in_flight,
            goaway_sweep,
            goaway_checkout,
            goaway_adopted,
            goaway_at_owner,
            dead_closed,
            retried,
            client_reset,
            wait_gone,
            adopted_idle,
            grant_returned,
        } = o;
        self.streams += streams;
        self.shared += shared;
        self.from_pool += from_pool;
        self.from_takeover += from_takeover;
        self.connects += connects;
        self.connect_waits += connect_waits;
        self.waiters_failed += waiters_failed;
        self.private_connects += private_connects;
        self.full += full;
        self.worn += worn;
        self.pooled += pooled;
        self.settings += settings;
        self.settings_below_open += settings_below_open;
        self.goaway_busy += goaway_busy;
        self.goaway_idle += goaway_idle;
        self.goaway_in_flight += goaway_in_flight;
        self.goaway_sweep += goaway_sweep;
        self.goaway_checkout += goaway_checkout;
        self.goaway_adopted += goaway_adopted;
        self.goaway_at_owner += goaway_at_owner;
        self.dead_closed += dead_closed;
        self.retried += retried;
        self.client_reset += client_reset;
        self.wait_gone += wait_gone;
        self.adopted_idle += adopted_idle;
        self.grant_returned += grant_returned;
    }
}

/// Reads the frames waiting on the wire into the client's state. True if GOAWAY was read.
fn read_wire(srv: &mut Srv, st: &mut H2State) -> bool {
    for f in srv.wire.drain(..) {
        match f {
            Frame::Settings(m) => {
                st.max = m;
                srv.acked_max = m;
            }
            Frame::GoAway(l) => st.dead = Some(st.dead.map_or(l, |d| d.min(l))),
        }
    }
    st.dead.is_some()
}

/// Whether a busy connection belongs on the `avail` list: alive, not worn, a free stream,
/// and connections are shared at all.
pub fn avail_eligible(w: &World, b: &Busy) -> bool {
    let Some(st) = &b.conn.h2 else { return false };
    let worn = w.cfg.pool.max_reuse.is_some_and(|m| b.uses >= m);
    st.dead.is_none()
        && !worn
        && (b.streams.len() as u32) < st.max
        && w.cfg.pool.reuse != ringway_pool::ReuseMode::Never
}

impl World {
    fn h2_state(conn: &mut SimConn) -> Result<&mut H2State, String> {
        let id = conn.id;
        conn.h2
            .as_mut()
            .ok_or_else(|| format!("H2-place: connection {id} to an HTTP/2 server has no h2 state"))
    }

    /// Reads the wire of a connection the client is about to use (checkout, adoption).
    pub fn read_conn(&mut self, conn: &mut SimConn) -> Result<bool, String> {
        let id = conn.id;
        let srv = self
            .srv
            .get_mut(&id)
            .ok_or_else(|| format!("I1: connection {id} has no server side"))?;
        let st = conn
            .h2
            .as_mut()
            .ok_or_else(|| format!("H2-place: connection {id} has no h2 state"))?;
        Ok(read_wire(srv, st))
    }

    /// A stream for `id` on its shard without waiting: on the oldest busy connection with
    /// a free stream the request may use, else on one checked out of the idle pool (one
    /// whose GOAWAY is read at checkout is closed and the next one tried).
    pub fn h2_local(&mut self, id: u64, meta: Meta) -> Result<bool, String> {
        let (s, server) = (meta.shard, meta.server);
        if meta.allowed != Allowed::Nothing {
            let sh = &self.shards[s];
            let picked = sh
                .avail
                .range((server, 0)..=(server, u64::MAX))
                .map(|&(_, seq)| seq)
                .find(|seq| {
                    sh.busy
                        .get(seq)
                        .is_some_and(|b| meta.allowed.permits(ConnClass::for_uses(b.uses)))
                });
            if let Some(seq) = picked {
                self.tally.h2.shared += 1;
                self.open_stream(s, seq, id, meta)?;
                return Ok(true);
            }
        }
        loop {
            let Some(co) = self.shards[s].pool.checkout(server, meta.first) else {
                return Ok(false);
            };
            if !meta.allowed.permits(co.class) {
                return Err(format!(
                    "reuse mode: {:?} got a {:?} connection",
                    meta.allowed, co.class
                ));
            }
            let mut conn = co.conn;
            if self.read_conn(&mut conn)? {
                // Went away while idle: the checkout is undone and the connection closed.
                self.note("h2-goaway-checkout", &[conn.id]);
                self.shards[s].pool.discard_checkout(server);
                self.tally.h2.goaway_checkout += 1;
                self.close(conn, Close::GoAway)?;
                continue;
            }
            self.tally.reused_local += 1;
            self.tally.h2.from_pool += 1;
            self.note("h2-reuse", &[id, conn.id]);
            let seq = self.make_busy(s, server, conn, co.uses)?;
            self.open_stream(s, seq, id, meta)?;
            return Ok(true);
        }
    }

    fn make_busy(
        &mut self,
        s: usize,
        server: ServerId,
        mut conn: SimConn,
        uses: u32,
    ) -> Result<u64, String> {
        let ceiling = Self::h2_state(&mut conn)?.max;
        let seq = self.next_seq;
        self.next_seq += 1;
        let b = Busy {
            conn,
            server,
            streams: BTreeMap::new(),
            uses,
            ceiling,
            counted: true,
        };
        self.shards[s].busy.insert(seq, b);
        Ok(seq)
    }

    /// Opens a stream for request `id` on busy connection `seq` of shard `s`. The server
    /// refuses (the sim fails) a stream over the max the client has read, an id not above
    /// every earlier one, or one after its GOAWAY.
    fn open_stream(&mut self, s: usize, seq: u64, id: u64, meta: Meta) -> Res {
        let b = self.shards[s]
            .busy
            .get_mut(&seq)
            .ok_or_else(|| format!("H2-place: busy entry {seq} gone on shard {s}"))?;
        let cid = b.conn.id;
        let st = Self::h2_state(&mut b.conn)?;
        if let Some(l) = st.dead {
            return Err(format!(
                "H2-dead: new stream for request {id} on connection {cid}, which read GOAWAY({l})"
            ));
        }
        let sid = st.next_id;
        st.next_id += 2;
        b.uses += 1;
        b.streams.insert(sid, id);
        self.shards[s].streams += 1;
        let srv = self
            .srv
            .get_mut(&cid)
            .ok_or_else(|| format!("I1: connection {cid} has no server side"))?;
        if let Some(l) = srv.goaway {
            return Err(format!(
                "H2-dead: stream {sid} opened on connection {cid} after the server's GOAWAY({l})"
            ));
        }
        if sid <= srv.highest {
            return Err(format!(
                "H2-ids: stream {sid} on connection {cid} is not above stream {} (h2 state lost?)",
                srv.highest
            ));
        }
        if srv.open.len() as u32 >= srv.acked_max {
            return Err(format!(
                "H2-max: stream {sid} on connection {cid} opened with {} open, over the server's max {}",
                srv.open.len(),
                srv.acked_max
            ));
        }
        srv.highest = sid;
        srv.open.insert(sid, id);
        self.tally.h2.streams += 1;
        self.note("h2-stream", &[id, cid, sid as u64]);
        let state = ReqState::Stream {
            seq,
            conn: cid,
            sid,
        };
        self.reqs.insert(id, Req { meta, state });
        self.refresh_avail(s, seq);
        Ok(())
    }

    /// Puts busy connection `seq` on `avail` or takes it off, as it can take a stream.
    fn refresh_avail(&mut self, s: usize, seq: u64) {
        let Some(b) = self.shards[s].busy.get(&seq) else {
            return;
        };
        let server = b.server;
        let mut ok = avail_eligible(self, b);
        let full = b
            .conn
            .h2
            .as_ref()
            .is_some_and(|st| b.streams.len() as u32 >= st.max);
        let worn = self.cfg.pool.max_reuse.is_some_and(|m| b.uses >= m);
        if self.cfg.bug == Bug::H2IgnoreMax
            && full
            && b.conn.h2.as_ref().is_some_and(|st| st.dead.is_none())
            && !worn
        {
            ok = self.cfg.pool.reuse != ringway_pool::ReuseMode::Never;
        }
        let avail = &mut self.shards[s].avail;
        if ok {
            avail.insert((server, seq));
        } else if avail.remove(&(server, seq)) {
            if full {
                self.tally.h2.full += 1;
            } else if worn {
                self.tally.h2.worn += 1;
            }
        }
    }

    /// A stream ended (answered, reset, or refused by GOAWAY): the server forgets it and
    /// the busy connection gives the stream back. Returns the server's echo of it.
    fn end_stream(
        &mut self,
        s: usize,
        seq: u64,
        cid: u64,
        sid: u32,
    ) -> Result<Option<u64>, String> {
        let b = self.shards[s].busy.get_mut(&seq).ok_or_else(|| {
            format!("H2-place: stream {sid} on connection {cid}, which is not busy on shard {s}")
        })?;
        if b.conn.id != cid || b.streams.remove(&sid).is_none() {
            return Err(format!(
                "H2-place: stream {sid} is not open on busy entry {seq} (connection {cid}) of shard {s}"
            ));
        }
        self.shards[s].streams -= 1;
        let token = self.srv.get_mut(&cid).and_then(|srv| srv.open.remove(&sid));
        Ok(token)
    }

    /// After streams ended on busy connection `seq`: while others are open it stays busy
    /// (and may be back on `avail`); after the last one it is checked into the idle pool,
    /// or closed when it is dead (GOAWAY) or its server's end ended in error.
    fn after_streams(&mut self, s: usize, seq: u64) -> Res {
        let Some(b) = self.shards[s].busy.get_mut(&seq) else {
            return Err(format!("H2-place: busy entry {seq} gone on shard {s}"));
        };
        if let Some(st) = &b.conn.h2 {
            b.ceiling = st.max.max(b.streams.len() as u32);
        }
        if !b.streams.is_empty() && self.cfg.bug != Bug::H2PoolBusy {
            self.refresh_avail(s, seq);
            return Ok(());
        }
        let Some(b) = self.shards[s].busy.remove(&seq) else {
            return Ok(());
        };
        self.shards[s].avail.remove(&(b.server, seq));
        let Busy {
            conn,
            server,
            uses,
            counted,
            ..
        } = b;
        let dead = conn.h2.as_ref().is_some_and(|st| st.dead.is_some());
        let now = self.now();
        if !counted {
            // Read GOAWAY and was uncounted then: nothing left but closing it.
            self.tally.h2.dead_closed += 1;
            return self.close(conn, Close::GoAway);
        }
        if dead && self.cfg.bug != Bug::H2PoolDead {
            self.shards[s].pool.released(server);
            self.tally.h2.dead_closed += 1;
            return self.close(conn, Close::GoAway);
        }
        let close = self.rng.gen_bool(0.05);
        let sh = &mut self.shards[s];
        if sh.faults.should_fail(FaultPoint::Checkin) || close {
            sh.pool.released(server);
            return self.close(conn, Close::RequestEnd);
        }
        let r = sh.pool.checkin(server, conn, uses, now);
        if matches!(r, PutResult::Pooled(_)) {
            self.tally.h2.pooled += 1;
        }
        self.close_rejected(s, server, r)
    }

    /// A request's stream got its response.
    pub fn complete_stream(&mut self, id: u64, meta: Meta, seq: u64, cid: u64, sid: u32) -> Res {
        self.note("h2-complete", &[id, cid, sid as u64]);
        let token = self.end_stream(meta.shard, seq, cid, sid)?;
        if token != Some(id) {
            return Err(format!(
                "answer: request {id} on stream {sid} of connection {cid} got the answer of {token:?}"
            ));
        }
        self.finish(id, End::Response)?;
        self.after_streams(meta.shard, seq)
    }

    /// The shared acquisition in progress for `server` on shard `s`, if any.
    fn shared_acquire(&self, s: usize, server: ServerId) -> Option<usize> {
        self.shards[s]
            .acquiring
            .iter()
            .position(|a| a.shared && a.server == server)
    }

    /// The acquisition request `id` leads on shard `s`, if any.
    fn led_by(&self, s: usize, id: u64) -> Option<usize> {
        self.shards[s].acquiring.iter().position(|a| a.leader == id)
    }

    /// Request `id` found no free stream: it waits for the shared acquisition in progress
    /// (true), or starts one and leads it: asks other shards, then connects (false).
    /// Under `--reuse never` nothing is shared and nobody waits (false).
    pub fn h2_wait_or_lead(&mut self, id: u64, meta: Meta) -> Result<bool, String> {
        if meta.allowed == Allowed::Nothing {
            return Ok(false);
        }
        let s = meta.shard;
        if let Some(i) = self.shared_acquire(s, meta.server) {
            self.shards[s].acquiring[i].waiters.push(id);
            self.tally.h2.connect_waits += 1;
            let state = ReqState::Connecting { leader: false };
            self.reqs.insert(id, Req { meta, state });
            self.note("h2-wait", &[id]);
            return Ok(true);
        }
        self.shards[s].acquiring.push(Acquire {
            server: meta.server,
            leader: id,
            connect_at: None,
            shared: true,
            waiters: Vec::new(),
        });
        self.note("h2-lead", &[id]);
        Ok(false)
    }

    /// Acquisition `i` of shard `s` ended with its leader served or gone: the waiters look
    /// again, each from the start (most find a stream on the leader's connection).
    fn wake(&mut self, s: usize, i: usize) -> Res {
        let a = self.shards[s].acquiring.remove(i);
        for rid in a.waiters {
            let mut req = self.reqs.remove(&rid).ok_or_else(|| {
                format!("lost: waiter {rid} of an acquisition on shard {s} is gone")
            })?;
            if !matches!(req.state, ReqState::Connecting { leader: false }) {
                return Err(format!("lost: waiter {rid} is {:?}", req.state));
            }
            req.meta.started = self.tick;
            self.acquire(rid, req.meta)?;
        }
        Ok(())
    }

    /// The request leading an acquisition went away (or was served without a connect).
    pub fn h2_leader_done(&mut self, s: usize, id: u64) -> Res {
        match self.led_by(s, id) {
            Some(i) => self.wake(s, i),
            None => Ok(()),
        }
    }

    /// The takeover found nothing (or what it found was dead): after one more local look,
    /// the leader connects; a request that may not share connects on its own.
    pub fn h2_connect(&mut self, id: u64, meta: Meta) -> Res {
        let s = meta.shard;
        if self.shards[s].pool.is_server_down(meta.server) {
            self.tally.refused_down += 1;
            self.finish(id, End::Unavailable)?;
            return self.h2_leader_done(s, id);
        }
        if self.h2_local(id, meta)? {
            // A late grant adopted meanwhile, or a connection that got a free stream.
            self.tally.reused_before_connect += 1;
            return self.h2_leader_done(s, id);
        }
        let lead = match self.led_by(s, id) {
            Some(i) => Some(i),
            None if meta.allowed != Allowed::Nothing => {
                if self.h2_wait_or_lead(id, meta)? {
                    return Ok(());
                }
                self.led_by(s, id)
            }
            None => None,
        };
        let at = self.tick + self.rng.gen_range(0..=self.cfg.connect_delay);
        match lead {
            Some(i) => self.shards[s].acquiring[i].connect_at = Some(at),
            None => {
                self.tally.h2.private_connects += 1;
                self.shards[s].acquiring.push(Acquire {
                    server: meta.server,
                    leader: id,
                    connect_at: Some(at),
                    shared: false,
                    waiters: Vec::new(),
                });
            }
        }
        let state = ReqState::Connecting { leader: true };
        self.reqs.insert(id, Req { meta, state });
        self.note("h2-connect", &[id, s as u64, meta.server.0 as u64]);
        Ok(())
    }

    /// Step: one connect whose time has come completes or fails.
    pub fn finish_a_connect(&mut self) -> Res {
        let tick = self.tick;
        let ready: Vec<(usize, usize)> = (0..self.cfg.n_shards)
            .flat_map(|s| {
                self.shards[s]
                    .acquiring
                    .iter()
                    .enumerate()
                    .filter(move |(_, a)| a.connect_at.is_some_and(|at| at <= tick))
                    .map(move |(i, _)| (s, i))
            })
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let (s, i) = ready[self.rng.gen_range(0..ready.len())];
        self.finish_connect(s, i)
    }

    /// The connect of acquisition `i` of shard `s` ends: its leader gets the first stream
    /// and the waiters look again; if it failed, all of them get a 503.
    pub fn finish_connect(&mut self, s: usize, i: usize) -> Res {
        let a = &self.shards[s].acquiring[i];
        let (server, leader) = (a.server, a.leader);
        if a.connect_at.is_none() {
            return Err(format!(
                "H2-connect: acquisition of {leader} is not connecting"
            ));
        }
        let meta = match self.reqs.remove(&leader) {
            Some(Req {
                meta,
                state: ReqState::Connecting { leader: true },
            }) if meta.shard == s && meta.server == server => meta,
            other => {
                return Err(format!(
                    "lost: leader {leader} of a connect on shard {s} is {other:?}"
                ))
            }
        };
        if self.shards[s].faults.should_fail(FaultPoint::Connect) {
            let a = self.shards[s].acquiring.remove(i);
            self.note("h2-connect-failed", &[leader, a.waiters.len() as u64]);
            self.tally.connect_failed += 1;
            self.finish(leader, End::Unavailable)?;
            for rid in a.waiters {
                self.tally.h2.waiters_failed += 1;
                match self.reqs.remove(&rid) {
                    Some(Req {
                        state: ReqState::Connecting { leader: false },
                        ..
                    }) => self.finish(rid, End::Unavailable)?,
                    other => return Err(format!("lost: waiter {rid} is {other:?}")),
                }
            }
            return Ok(());
        }
        self.note("h2-connected", &[leader, s as u64]);
        self.shards[s].pool.connected(server);
        let conn = self.new_conn(server);
        self.tally.connected += 1;
        self.tally.h2.connects += 1;
        let seq = self.make_busy(s, server, conn, 0)?;
        self.open_stream(s, seq, leader, meta)?;
        self.wake(s, i)
    }

    /// A grant was delivered to request `id`: the connection's wire is read first (it may
    /// have gone away in flight: then it is closed, the adoption undone, and the request
    /// connects anew), then it becomes busy here with the request's stream.
    pub fn h2_adopt(&mut self, id: u64, mut meta: Meta, mut conn: SimConn, uses: u32) -> Res {
        let s = meta.shard;
        if self.cfg.bug == Bug::H2LoseState {
            if let Some(st) = conn.h2.as_mut() {
                st.next_id = 1;
            }
        }
        if self.read_conn(&mut conn)? {
            self.note("h2-goaway-adopted", &[id, conn.id]);
            self.shards[s].pool.discard_checkout(meta.server);
            self.tally.adopted_dead += 1;
            self.tally.h2.goaway_adopted += 1;
            self.close(conn, Close::GoAway)?;
            meta.started = self.tick;
            return self.h2_connect(id, meta);
        }
        self.tally.h2.from_takeover += 1;
        let seq = self.make_busy(s, meta.server, conn, uses)?;
        self.open_stream(s, seq, id, meta)?;
        self.h2_leader_done(s, id)
    }

    /// Step: the server of some open HTTP/2 connection (busy, idle in a pool, or inside a
    /// grant) sends SETTINGS with a new max, or GOAWAY.
    pub fn h2_server_frame(&mut self) -> Res {
        let ids: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, server)| self.is_h2(**server))
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let cid = ids[self.rng.gen_range(0..ids.len())];
        let goaway = self.rng.gen_bool(0.35);
        let max = self.rng.gen_range(1..=5);
        let pick = self.rng.gen_range(0..u32::MAX);
        let srv = self
            .srv
            .get_mut(&cid)
            .ok_or_else(|| format!("I1: connection {cid} has no server side"))?;
        let frame = if goaway {
            // Streams above last_stream_id were not processed; those at or below finish.
            let l = match srv.open.keys().copied().collect::<Vec<_>>() {
                open if open.is_empty() || pick % 2 == 0 => srv.highest,
                open => open[pick as usize / 2 % open.len()].saturating_sub(1),
            };
            let l = srv.goaway.map_or(l, |g| g.min(l));
            srv.goaway = Some(l);
            Frame::GoAway(l)
        } else {
            Frame::Settings(max)
        };
        srv.wire.push(frame);
        self.note("h2-frame", &[cid, goaway as u64, max as u64]);
        let busy = (0..self.cfg.n_shards).find_map(|s| {
            self.shards[s]
                .busy
                .iter()
                .find(|(_, b)| b.conn.id == cid)
                .map(|(seq, _)| (s, *seq))
        });
        match (busy, frame) {
            (Some((s, seq)), _) => self.read_busy(s, seq),
            (None, Frame::Settings(_)) => {
                self.tally.h2.settings += 1;
                Ok(())
            }
            (None, Frame::GoAway(_)) => {
                let in_flight = self.flights.iter().any(
                    |f| matches!(&f.msg, ringway_pool::Msg::Grant { conn, .. } if conn.id == cid),
                );
                if in_flight {
                    self.tally.h2.goaway_in_flight += 1;
                } else {
                    self.tally.h2.goaway_idle += 1;
                }
                Ok(())
            }
        }
    }

    /// A busy connection's task reads what the server sent: a new max (streams already
    /// open over it finish), or GOAWAY (the connection leaves `avail` for good; streams
    /// above last_stream_id are retried on another connection, the others finish).
    fn read_busy(&mut self, s: usize, seq: u64) -> Res {
        let b = self.shards[s]
            .busy
            .get_mut(&seq)
            .ok_or_else(|| format!("H2-place: busy entry {seq} gone"))?;
        let cid = b.conn.id;
        let srv = self
            .srv
            .get_mut(&cid)
            .ok_or_else(|| format!("I1: connection {cid} has no server side"))?;
        let was_dead = b.conn.h2.as_ref().is_some_and(|st| st.dead.is_some());
        let frames = srv.wire.clone();
        let st = b
            .conn
            .h2
            .as_mut()
            .ok_or_else(|| format!("H2-place: connection {cid} has no h2 state"))?;
        read_wire(srv, st);
        let open = b.streams.len() as u32;
        b.ceiling = st.max.max(open);
        let mut refused = Vec::new();
        for f in frames {
            match f {
                Frame::Settings(m) => {
                    self.tally.h2.settings += 1;
                    if m < open {
                        self.tally.h2.settings_below_open += 1;
                    }
                }
                Frame::GoAway(_) => {
                    if !was_dead {
                        self.tally.h2.goaway_busy += 1;
                    }
                }
            }
        }
        if let Some(l) = st.dead {
            refused = b
                .streams
                .range(l + 1..)
                .map(|(sid, rid)| (*sid, *rid))
                .collect();
            if b.counted && self.cfg.bug != Bug::H2PoolDead {
                b.counted = false;
                let server = b.server;
                self.shards[s].pool.released(server);
            }
        }
        for &(sid, rid) in &refused {
            let token = self.end_stream(s, seq, cid, sid)?;
            if token != Some(rid) {
                return Err(format!(
                    "answer: refused stream {sid} carried {token:?}, not {rid}"
                ));
            }
        }
        self.after_streams(s, seq)?;
        for (sid, rid) in refused {
            let mut req = self
                .reqs
                .remove(&rid)
                .ok_or_else(|| format!("lost: request {rid} of refused stream {sid} is gone"))?;
            if !matches!(req.state, ReqState::Stream { conn, sid: x, .. } if conn == cid && x == sid)
            {
                return Err(format!(
                    "lost: request {rid} was not on stream {sid} of {cid}"
                ));
            }
            self.tally.h2.retried += 1;
            self.note("h2-retry", &[rid, cid, sid as u64]);
            req.meta.started = self.tick;
            self.acquire(rid, req.meta)?;
        }
        Ok(())
    }

    /// The sweep of one shard's idle pool: idle HTTP/2 connections read their wire; one
    /// that went away is taken out and closed.
    pub fn h2_sweep(&mut self, s: usize) -> Res {
        let keys: Vec<_> = self.shards[s]
            .pool
            .iter()
            .filter(|(_, _, c)| self.srv.get(&c.id).is_some_and(|srv| !srv.wire.is_empty()))
            .map(|(k, _, _)| k)
            .collect();
        for k in keys {
            let pool = &mut self.shards[s].pool;
            let conn = pool.get_mut(k).ok_or("sweep: a listed key is stale")?;
            let cid = conn.id;
            let srv = self
                .srv
                .get_mut(&cid)
                .ok_or_else(|| format!("I1: connection {cid} has no server side"))?;
            let st = conn
                .h2
                .as_mut()
                .ok_or_else(|| format!("H2-place: pooled connection {cid} has no h2 state"))?;
            if read_wire(srv, st) {
                let conn = pool.remove(k).ok_or("sweep: a listed key did not remove")?;
                self.tally.h2.goaway_sweep += 1;
                self.note("h2-goaway-sweep", &[cid]);
                self.close(conn, Close::GoAway)?;
            }
        }
        Ok(())
    }

    /// The client of an HTTP/2 request goes away: a stream is reset (and cancelled on the
    /// backend), a waiter leaves the connect it waited for.
    pub fn h2_client_gone(&mut self, rid: u64) -> Res {
        let req = self
            .reqs
            .remove(&rid)
            .ok_or_else(|| format!("request {rid} cannot go: unknown"))?;
        self.tally.client_gone += 1;
        self.note("h2-gone", &[rid]);
        match req.state {
            ReqState::Stream { seq, conn, sid } => {
                self.tally.h2.client_reset += 1;
                let token = self.end_stream(req.meta.shard, seq, conn, sid)?;
                if token != Some(rid) {
                    return Err(format!("answer: reset stream {sid} carried {token:?}"));
                }
                self.finish(rid, End::Gone)?;
                self.after_streams(req.meta.shard, seq)
            }
            ReqState::Connecting { leader: false } => {
                self.tally.h2.wait_gone += 1;
                let sh = &mut self.shards[req.meta.shard];
                let before: usize = sh.acquiring.iter().map(|c| c.waiters.len()).sum();
                for c in &mut sh.acquiring {
                    c.waiters.retain(|&w| w != rid);
                }
                let after: usize = sh.acquiring.iter().map(|c| c.waiters.len()).sum();
                if before != after + 1 {
                    return Err(format!(
                        "lost: waiter {rid} was not waiting for one connect"
                    ));
                }
                self.finish(rid, End::Gone)
            }
            other => Err(format!("request {rid} cannot go from {other:?}")),
        }
    }
}
