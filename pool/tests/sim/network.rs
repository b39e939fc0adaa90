//! The simulated network and the simulation's side of the takeover: messages in flight
//! between shards, with random delays, reordering (any ready message may be delivered
//! next) and bounded links (a full link is a miss), and the runtime's few duties around
//! the shared [`ringway_pool::Driver`]: reserve before asking, send what `ask` returns,
//! report a full link, hand a granted connection to its request, and carry out the next
//! step the driver hands back with a waiter. Every decision and every table of the
//! takeover lives in the driver, as in the engine. It never delivers a message to a shard
//! other than its addressee.

use rand::Rng;
use ringway_pool::{ConnClass, FaultPoint, GrantEffect, Msg, Next, PutResult, ServerId, Ticket};

use crate::world::{Bug, Close, End, Meta, Req, ReqState, Res, SimConn, World};

pub struct Flight {
    pub from: usize,
    pub to: usize,
    pub at: u64,
    pub msg: Msg<SimConn>,
}

impl World {
    pub fn link_len(&self, from: usize, to: usize) -> usize {
        self.flights
            .iter()
            .filter(|f| f.from == from && f.to == to)
            .count()
    }

    /// Carries out the driver's next step for request `id` (which is in no table now,
    /// or has vanished: then it is asked for but never connects).
    pub fn carry(&mut self, id: u64, meta: Meta, mut next: Next) -> Res {
        let s = meta.shard;
        let now = self.now();
        loop {
            let code = match next {
                Next::Ask { shard, ticket } => [0, shard as u64, ticket.0],
                Next::ConnectNew(r) => [1, r as u64, 0],
                Next::WaiterGone => [2, 0, 0],
            };
            self.note("next", &[id, code[0], code[1], code[2]]);
            match next {
                Next::Ask { shard: o, ticket } => {
                    if o == s || o >= self.cfg.n_shards {
                        return Err(format!("scan: shard {s} asked shard {o}"));
                    }
                    let (to, msg) = self.shards[s].driver.ask(ticket, id).map_err(|rid| {
                        format!("I3: the driver refused to ask {ticket:?} for request {rid}")
                    })?;
                    let right = matches!(msg, Msg::Reserve { from, server, ticket: tk, allowed }
                        if from == s && server == meta.server && tk == ticket && allowed == meta.allowed);
                    if to != o || !right {
                        return Err(format!(
                            "ask: {ticket:?} for shard {o} became {msg:?} to {to}"
                        ));
                    }
                    let full = self.link_len(s, o) >= self.cfg.link_cap
                        || self.shards[s].faults.should_fail(FaultPoint::ChannelFull);
                    if full {
                        let (rid, n) = self.shards[s]
                            .driver
                            .send_failed(ticket, now)
                            .ok_or_else(|| format!("I3: send of {ticket:?} failed, no waiter"))?;
                        if rid != id {
                            return Err(format!("send_failed gave back {rid}, not {id}"));
                        }
                        next = n;
                        continue;
                    }
                    let at = self.tick + self.delay();
                    self.flights.push(Flight {
                        from: s,
                        to: o,
                        at,
                        msg,
                    });
                    if !self.vanished.contains_key(&id) {
                        let state = ReqState::Waiting(ticket);
                        self.reqs.insert(id, Req { meta, state });
                    }
                    return Ok(());
                }
                Next::ConnectNew(_) => {
                    if self.vanished.remove(&id).is_some() {
                        return Ok(());
                    }
                    return self.connect(id, meta);
                }
                Next::WaiterGone => {
                    return Err(format!(
                        "I3: request {id} waits but the driver said WaiterGone"
                    ))
                }
            }
        }
    }

    /// The driver handed waiter `rid` of shard `s` back (deny or timeout) with its next step.
    pub fn resume(&mut self, s: usize, rid: u64, next: Next) -> Res {
        if let Some(&meta) = self.vanished.get(&rid) {
            // Nobody waits any more. A runtime may notice (abandon the new ticket) or not
            // (ask anyway; the grant will be undeliverable and pooled).
            if let Next::Ask { ticket, .. } = next {
                if self.rng.gen_bool(0.5) {
                    self.vanished.remove(&rid);
                    if self.shards[s].driver.abandon(ticket).is_some() {
                        return Err(format!("I3: unasked {ticket:?} had a waiter"));
                    }
                    return Ok(());
                }
            }
            return self.carry(rid, meta, next);
        }
        let req = self
            .reqs
            .remove(&rid)
            .ok_or_else(|| format!("I3: the driver handed back unknown request {rid}"))?;
        if !matches!(req.state, ReqState::Waiting(_)) || req.meta.shard != s {
            return Err(format!(
                "I3: request {rid} handed back but not waiting on {s}"
            ));
        }
        self.carry(rid, req.meta, next)
    }

    pub fn ready_flights(&self) -> Vec<usize> {
        (0..self.flights.len())
            .filter(|&i| self.flights[i].at <= self.tick)
            .collect()
    }

    pub fn deliver(&mut self) -> Res {
        let ready = self.ready_flights();
        if ready.is_empty() {
            return Ok(());
        }
        let i = ready[self.rng.gen_range(0..ready.len())];
        self.deliver_one(i)
    }

    pub fn deliver_one(&mut self, i: usize) -> Res {
        let f = self.flights.swap_remove(i);
        let now = self.now();
        match f.msg {
            Msg::Reserve {
                from,
                server,
                ticket,
                allowed,
            } => {
                if from != f.from {
                    return Err("reserve: wrong sender".into());
                }
                let o = f.to;
                let sh = &mut self.shards[o];
                let busy = (self.cfg.bug == Bug::H2GrantBusy && sh.pool.idle_count(server) == 0)
                    .then(|| {
                        sh.avail
                            .range((server, 0)..=(server, u64::MAX))
                            .next()
                            .copied()
                    })
                    .flatten();
                let reply = match busy {
                    Some((_, seq)) => {
                        sh.avail.remove(&(server, seq));
                        let b = sh.busy.remove(&seq).ok_or("avail lists a gone entry")?;
                        Msg::Grant {
                            ticket,
                            server,
                            conn: b.conn,
                            uses: b.uses,
                        }
                    }
                    None => sh.driver.on_reserve(&mut sh.pool, server, ticket, allowed),
                };
                let reply = self.owner_reads_goaway(o, reply, now)?;
                let granted = match &reply {
                    Msg::Grant { conn, uses, .. } => {
                        if !allowed.permits(ConnClass::for_uses(*uses)) {
                            return Err(format!("takeover: {allowed:?} granted uses={uses}"));
                        }
                        Some(conn.id)
                    }
                    _ => None,
                };
                self.note(
                    "reserve",
                    &[ticket.0, o as u64, granted.map_or(u64::MAX, |c| c)],
                );
                let full = self.link_len(o, from) >= self.cfg.link_cap
                    || self.shards[o].faults.should_fail(FaultPoint::ChannelFull);
                if full {
                    let sh = &mut self.shards[o];
                    match sh.driver.reply_failed(&mut sh.pool, reply, now) {
                        None => {}
                        Some(PutResult::Pooled(_)) => {
                            self.tally.grant_returned += 1;
                            if self.is_h2(server) {
                                self.tally.h2.grant_returned += 1;
                            }
                        }
                        Some(r) => self.close_rejected(o, server, r)?,
                    }
                    return Ok(());
                }
                let late =
                    granted.is_some() && self.shards[o].faults.should_fail(FaultPoint::GrantDelay);
                let at = if late {
                    self.tick + self.cfg.ask_timeout + 1 + self.delay()
                } else {
                    self.tick + self.delay()
                };
                self.flights.push(Flight {
                    from: o,
                    to: from,
                    at,
                    msg: reply,
                });
                Ok(())
            }
            Msg::Grant {
                ticket,
                server,
                conn,
                uses,
            } => {
                let t = f.to;
                self.tally.grants_received += 1;
                self.note("grant", &[ticket.0, conn.id]);
                // I2: from here nothing on the taker can fail. The `adopt` fault models the
                // request going away just before the grant lands, told or not.
                let waiter = self.shards[t].driver.waiter(ticket).copied();
                if let Some(rid) = waiter.filter(|r| !self.vanished.contains_key(r)) {
                    if self.shards[t].faults.should_fail(FaultPoint::Adopt) {
                        if self.rng.gen_bool(0.5) {
                            self.drop_waiter(t, ticket, rid)?;
                        } else {
                            self.vanish(rid)?;
                        }
                    }
                }
                let sh = &mut self.shards[t];
                match sh
                    .driver
                    .on_grant(&mut sh.pool, ticket, server, conn, uses, now)
                {
                    GrantEffect::Deliver {
                        waiter: rid,
                        server: s2,
                        conn,
                        uses,
                    } => {
                        if s2 != server {
                            return Err("I2: grant delivered for another server".into());
                        }
                        if self.vanished.remove(&rid).is_some() {
                            // The hand-off fails: the request is gone (I5).
                            self.note("undeliverable", &[rid, conn.id]);
                            self.tally.undeliverable += 1;
                            let sh = &mut self.shards[t];
                            let r = sh
                                .driver
                                .undeliverable(&mut sh.pool, server, conn, uses, now);
                            return self.adopted_idle(t, server, r);
                        }
                        let req = self
                            .reqs
                            .remove(&rid)
                            .ok_or_else(|| format!("I2: request {rid} vanished"))?;
                        if !matches!(req.state, ReqState::Waiting(tk) if tk == ticket) {
                            return Err(format!(
                                "I2: {ticket:?} delivered to request {rid}, which waits elsewhere"
                            ));
                        }
                        if req.meta.server != server || req.meta.shard != t {
                            return Err("I2: grant for another server or shard".into());
                        }
                        self.tally.adopted += 1;
                        if self.is_h2(server) {
                            return self.h2_adopt(rid, req.meta, conn, uses);
                        }
                        self.activate_h1(rid, req.meta, conn, uses)
                    }
                    GrantEffect::AdoptedIdle(r) => {
                        let waits = self.reqs.values().any(|q| {
                            q.meta.shard == t
                                && matches!(q.state, ReqState::Waiting(tk) if tk == ticket)
                        });
                        if waits {
                            return Err(format!("I5: adopted idle while {ticket:?} waits"));
                        }
                        self.adopted_idle(t, server, r)
                    }
                }
            }
            Msg::Deny { ticket } => {
                let t = f.to;
                self.note("deny", &[ticket.0]);
                match self.shards[t].driver.on_deny(ticket, now) {
                    Some((rid, next)) => self.resume(t, rid, next),
                    None => Ok(()),
                }
            }
        }
    }

    /// The owner stops the driver of an HTTP/2 connection it is about to grant; the driver
    /// may have read what the server sent meanwhile (or not: then the taker reads it at
    /// adoption). One that read GOAWAY is not granted: it goes back into the pool through
    /// `reply_failed`, is taken out and closed as the sweep would, and the taker is
    /// denied (the engine's `regain` path).
    fn owner_reads_goaway(
        &mut self,
        o: usize,
        reply: Msg<SimConn>,
        now: std::time::Instant,
    ) -> Result<Msg<SimConn>, String> {
        let Msg::Grant {
            ticket,
            server,
            mut conn,
            uses,
        } = reply
        else {
            return Ok(reply);
        };
        let wire = self.srv.get(&conn.id).is_some_and(|s| !s.wire.is_empty());
        if conn.h2.is_none() || !wire || !self.rng.gen_bool(0.5) {
            return Ok(Msg::Grant {
                ticket,
                server,
                conn,
                uses,
            });
        }
        if !self.read_conn(&mut conn)? || self.cfg.bug == Bug::H2GrantDead {
            return Ok(Msg::Grant {
                ticket,
                server,
                conn,
                uses,
            });
        }
        self.tally.h2.goaway_at_owner += 1;
        self.note("h2-goaway-owner", &[ticket.0, conn.id]);
        let sh = &mut self.shards[o];
        let back = sh.driver.reply_failed(
            &mut sh.pool,
            Msg::Grant {
                ticket,
                server,
                conn,
                uses,
            },
            now,
        );
        match back {
            Some(PutResult::Pooled(key)) => {
                self.tally.grant_returned += 1;
                let conn = self.shards[o]
                    .pool
                    .remove(key)
                    .ok_or("regain: the key just pooled did not remove")?;
                self.close(conn, Close::GoAway)?;
            }
            Some(r) => self.close_rejected(o, server, r)?,
            None => return Err("regain: a grant came back as nothing".into()),
        }
        Ok(Msg::Deny { ticket })
    }

    /// A late or undeliverable grant went to the idle pool: pooled, or closed by policy.
    fn adopted_idle(&mut self, t: usize, server: ServerId, r: PutResult<SimConn>) -> Res {
        self.tally.adopt_idle_calls += 1;
        if matches!(r, PutResult::Pooled(_)) {
            self.tally.adopt_idle_pooled += 1;
            if self.is_h2(server) {
                self.tally.h2.adopted_idle += 1;
            }
        }
        self.close_rejected(t, server, r)
    }

    /// The client of a waiting request went away, and the runtime tells the driver.
    pub fn drop_waiter(&mut self, shard: usize, ticket: Ticket, rid: u64) -> Res {
        match self.shards[shard].driver.abandon(ticket) {
            Some(w) if w == rid => {}
            other => {
                return Err(format!(
                    "I3: abandoning {ticket:?} of request {rid} gave {other:?}"
                ))
            }
        }
        self.reqs.remove(&rid);
        self.tally.client_gone += 1;
        self.note("gone", &[rid]);
        self.finish(rid, End::Gone)?;
        self.h2_leader_done(shard, rid)
    }

    /// The client of a waiting request went away without the driver being told (the
    /// engine's parked task dropped with its oneshot): the driver still holds its id.
    pub fn vanish(&mut self, rid: u64) -> Res {
        let req = self
            .reqs
            .remove(&rid)
            .ok_or_else(|| format!("request {rid} cannot vanish: unknown"))?;
        self.vanished.insert(rid, req.meta);
        self.tally.client_gone += 1;
        self.tally.vanished += 1;
        self.note("vanished", &[rid]);
        self.finish(rid, End::Gone)?;
        self.h2_leader_done(req.meta.shard, rid)
    }
}
