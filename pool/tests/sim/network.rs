//! The simulated network: messages in flight between shards, with random delays,
//! reordering (any ready message may be delivered next) and bounded links (a full link
//! is a miss). It plays the engine's side of the takeover protocol exactly as the engine
//! must: reserve before asking, treat a full link as a miss, adopt every grant (I2, I5).
//! It never delivers a message to a shard other than its addressee.

use rand::Rng;
use ringway_pool::{ConnClass, FaultPoint, GrantFate, Msg, Next, PutResult, Ticket};

use crate::world::{Bug, Close, Meta, Req, ReqState, Res, SimConn, World};

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

    /// Carries out what the taker said for request `id` (which is in no table now).
    pub fn follow(&mut self, id: u64, meta: Meta, mut next: Next) -> Res {
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
                    let full = self.link_len(s, o) >= self.cfg.link_cap
                        || self.shards[s].faults.should_fail(FaultPoint::ChannelFull);
                    if full {
                        next = self.shards[s].taker.on_send_failed(ticket, now);
                        continue;
                    }
                    let at = self.tick + self.delay();
                    self.flights.push(Flight {
                        from: s,
                        to: o,
                        at,
                        msg: Msg::Reserve {
                            from: s,
                            server: meta.server,
                            ticket,
                            allowed: meta.allowed,
                        },
                    });
                    self.waiting.insert((s, ticket), id);
                    let state = ReqState::Waiting(ticket);
                    self.reqs.insert(id, Req { meta, state });
                    return Ok(());
                }
                Next::ConnectNew(_) => return self.connect(id, meta),
                Next::WaiterGone => {
                    return Err(format!(
                        "I3: request {id} waits but the taker said WaiterGone"
                    ))
                }
            }
        }
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
                let reply = sh
                    .owner
                    .handle_reserve(&mut sh.pool, server, ticket, allowed);
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
                    match sh.owner.reply_failed(&mut sh.pool, reply, now) {
                        None => {}
                        Some(PutResult::Pooled(_)) => self.tally.grant_returned += 1,
                        Some(r) => self.close_rejected(r)?,
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
                // request going away just before the grant lands.
                if let Some(&rid) = self.waiting.get(&(t, ticket)) {
                    if self.shards[t].faults.should_fail(FaultPoint::Adopt) {
                        self.drop_waiter(t, ticket, rid)?;
                    }
                }
                match self.shards[t].taker.on_grant(ticket) {
                    GrantFate::Deliver => {
                        let rid = self.waiting.remove(&(t, ticket)).ok_or_else(|| {
                            format!("I2: Deliver for ticket {ticket:?} with no waiting request")
                        })?;
                        let req = self
                            .reqs
                            .get_mut(&rid)
                            .ok_or_else(|| format!("I2: request {rid} vanished"))?;
                        if req.meta.server != server {
                            return Err("I2: grant for another server".into());
                        }
                        req.state = ReqState::Active { conn, uses };
                        self.shards[t].pool.adopted(server);
                        self.tally.adopted += 1;
                        Ok(())
                    }
                    GrantFate::AdoptIdle => {
                        if self.waiting.contains_key(&(t, ticket)) {
                            return Err(format!("I5: AdoptIdle while ticket {ticket:?} waits"));
                        }
                        self.tally.adopt_idle_calls += 1;
                        if self.cfg.bug == Bug::DropLateGrant {
                            return self.close(conn, Close::Protocol);
                        }
                        let r = self.shards[t].pool.adopt_idle(server, conn, uses, now);
                        if matches!(r, PutResult::Pooled(_)) {
                            self.tally.adopt_idle_pooled += 1;
                        }
                        self.close_rejected(r)
                    }
                }
            }
            Msg::Deny { ticket } => {
                let t = f.to;
                self.note("deny", &[ticket.0]);
                let next = self.shards[t].taker.on_deny(ticket, now);
                match self.waiting.remove(&(t, ticket)) {
                    Some(rid) => {
                        let req = self
                            .reqs
                            .remove(&rid)
                            .ok_or_else(|| format!("request {rid} vanished"))?;
                        self.follow(rid, req.meta, next)
                    }
                    None if next == Next::WaiterGone => Ok(()),
                    None => Err(format!("I3: deny for a gone request returned {next:?}")),
                }
            }
        }
    }

    /// The client of a waiting request went away.
    pub fn drop_waiter(&mut self, shard: usize, ticket: Ticket, rid: u64) -> Res {
        if !self.shards[shard].taker.abandon(ticket) {
            return Err(format!("I3: waiting ticket {ticket:?} was not pending"));
        }
        self.waiting.remove(&(shard, ticket));
        self.reqs.remove(&rid);
        self.tally.client_gone += 1;
        self.note("gone", &[rid]);
        Ok(())
    }
}
