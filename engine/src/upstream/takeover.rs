//! The engine's side of the takeover protocol: the sans-IO [`Driver`] of `ringway-pool`
//! (taker, owner and the table of waiting requests — the same code the deterministic
//! simulation drives) carried out with transports, the outbox and glommio timers. This
//! module only moves messages, fds and wake-ups; every decision is the driver's.
//!
//! Taker: a request that found nothing locally reserves first — it is itself the task
//! that will use the connection, with its buffers, and the oneshot slot it parks on is
//! in the driver's waiter table *before* `Reserve` is sent — then waits, bounded by the
//! tickets' deadlines (whichever waiting request wakes first resolves every expired
//! ticket). Owner: pops an idle connection, detaches it (the transport comes back intact
//! if it cannot) and grants it; a grant that cannot be sent goes back into its pool. A
//! grant that arrives after its request gave up is pooled here (I5).
//!
//! HTTP/2 connections take the same path when idle (no open stream): the taker's
//! reservation also spawns the task that will drive the `h2` connection, parked until it
//! is given one; the owner takes the `h2` state out of its driver and detaches the fd
//! (`h2conns::detach_h2`); the taker attaches both (`h2conns::attach_h2`).

use std::rc::Rc;
use std::time::Duration;

use super::h2conns::{self, DetachH2, DriverCell};

use ringway_pool::{
    Allowed, Driver, FaultPoint, GrantEffect, IdleKey, Msg, Next, PutResult, ServerId, TakerConfig,
    Ticket,
};

use super::{BackendConn, Handover, IdleConn, Pooled, Transport, UpstreamMsg, Upstreams};
use crate::metrics::TakeoverCounters;
use crate::oneshot;

/// What a request parked on a ticket is woken with.
pub(super) enum Outcome {
    /// The owner granted a connection; it is attached to this shard already.
    Granted(Pooled),
    /// Takeover is over for this request: connect anew.
    ConnectNew,
}

/// A request parked on a ticket, with what it reserved for the connection to come.
pub(super) struct Waiter {
    tx: oneshot::Sender<Outcome>,
    /// For an HTTP/2 slot: the task that will drive the connection, already spawned.
    driver: Option<oneshot::Sender<Rc<DriverCell>>>,
}

impl Waiter {
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn connect_new(self) {
        let _ = self.tx.send(Outcome::ConnectNew);
    }
}

/// The shard's takeover driver and the delay of the `grant-delay` fault.
pub(super) struct State {
    driver: Driver<IdleConn, Waiter>,
    timeout: Duration,
}

impl State {
    pub(super) fn new(shard: usize, n_shards: usize, low_idle: usize, timeout: Duration) -> Self {
        State {
            driver: Driver::new(
                shard,
                n_shards,
                TakerConfig {
                    low_idle,
                    ask_timeout: timeout,
                },
            ),
            timeout,
        }
    }

    pub(super) fn counters(&self) -> TakeoverCounters {
        let ts = self.driver.taker_stats();
        let os = self.driver.owner_stats();
        TakeoverCounters {
            asked: ts.asked,
            granted: ts.granted,
            denied: ts.denied,
            timeout: ts.timeout,
            failed: ts.reservation_failed + ts.channel_full,
            reservation_failed: ts.reservation_failed,
            late_grant_adopted: ts.late_grant_adopted,
            channel_full: ts.channel_full,
            // Only what really left this shard: grants sent back to the pool are not.
            handed_over: os
                .granted
                .saturating_sub(os.grant_returned + os.grant_closed),
            owner_denied: os.denied,
            pending: self.driver.pending() as u64,
        }
    }
}

impl Upstreams {
    /// The taker side. Returns a connection adopted from another shard, or `None` to
    /// connect anew.
    pub(super) async fn take_over(self: &Rc<Self>, slot: ServerId, first: bool) -> Option<Pooled> {
        let allowed = self.knobs.reuse.allowed(first);
        let table = self.table();
        let next = self.takeover.borrow_mut().driver.begin(
            slot,
            allowed,
            |shard| table.published(shard, slot),
            glommio::clock::now(),
        );
        let Next::Ask { ticket, .. } = next else {
            return None;
        };
        // 1. Reserve: everything the adoption needs exists before anything is sent:
        //    this request's task (parked below) with its buffers, its waiter slot, its
        //    place in the shard's connection count, and for HTTP/2 the driver task.
        if self.conns.get() >= self.knobs.max_conns
            || self.fds_exhausted()
            || self.fault(FaultPoint::Reserve)
        {
            let _ = self.takeover.borrow_mut().driver.reserve_failed(ticket);
            return None;
        }
        let (tx, mut rx) = oneshot::channel();
        let driver = self.is_h2(slot).then(h2conns::reserve_driver);
        // 2. Ask (and ask the next candidate whenever a deny or a timeout says so).
        self.carry(Waiter { tx, driver }, next);
        // 3. Wait, bounded by the tickets' deadlines (I3).
        loop {
            let deadline = self.takeover.borrow().driver.next_deadline();
            let woken = match deadline {
                None => (&mut rx).await,
                Some(d) => {
                    let timer = async {
                        glommio::timer::sleep(d.saturating_duration_since(glommio::clock::now()))
                            .await;
                        None
                    };
                    match futures_lite::future::or(async { Some((&mut rx).await) }, timer).await {
                        Some(got) => got,
                        None => {
                            let expired = self
                                .takeover
                                .borrow_mut()
                                .driver
                                .poll_timeouts(glommio::clock::now());
                            for (w, n) in expired {
                                self.carry(w, n);
                            }
                            continue;
                        }
                    }
                }
            };
            return match woken {
                Some(Outcome::Granted(conn)) => self.healthy_adopted(conn),
                Some(Outcome::ConnectNew) | None => None,
            };
        }
    }

    /// Carries out a waiting request's next step: ask the next owner (in the same turn
    /// as the driver registers the waiter), or wake it to connect anew. A waiter whose
    /// request has gone is abandoned rather than asked for.
    fn carry(&self, mut w: Waiter, mut next: Next) {
        loop {
            let ticket = match next {
                Next::Ask { ticket, .. } => ticket,
                Next::ConnectNew(_) | Next::WaiterGone => {
                    w.connect_new();
                    return;
                }
            };
            if w.is_closed() {
                let _ = self.takeover.borrow_mut().driver.abandon(ticket);
                return;
            }
            let asked = self.takeover.borrow_mut().driver.ask::<Handover>(ticket, w);
            let (to, msg) = match asked {
                Ok(x) => x,
                Err(back) => {
                    back.connect_new();
                    return;
                }
            };
            let sent = !self.fault(FaultPoint::ChannelFull)
                && (self.outbox)(to, UpstreamMsg::Takeover(msg)).is_ok();
            if sent {
                return;
            }
            // A full channel is a miss, never a wait: the next candidate, or connect.
            let back = self
                .takeover
                .borrow_mut()
                .driver
                .send_failed(ticket, glommio::clock::now());
            match back {
                Some((w2, n)) => {
                    w = w2;
                    next = n;
                }
                None => return,
            }
        }
    }

    /// An adopted connection the server closed while it was idle on its owner is not used.
    /// The `adopt` fault point makes a healthy one look dead: after the fd left its owner,
    /// the connection's own I/O is the only thing that may fail (I2), and this is that path.
    fn healthy_adopted(&self, mut conn: Pooled) -> Option<Pooled> {
        let (healthy, slot) = match &mut conn {
            Pooled::H1(c) => (c.transport.idle_is_healthy(), c.slot),
            // A GOAWAY that came while it moved is seen by its driver; it reads no
            // socket here (the driver owns it), so only the dead flag tells.
            Pooled::H2(c) => (!c.is_dead(), c.slot()),
        };
        if !self.fault(FaultPoint::Adopt) && healthy {
            return Some(conn);
        }
        self.pool.borrow_mut().discard_checkout(slot);
        self.counters.borrow_mut().idle_closed_by_server += 1;
        self.close_pooled(conn);
        None
    }

    pub(super) fn on_takeover(self: &Rc<Self>, m: Msg<Handover>) {
        match m {
            Msg::Reserve {
                from,
                server,
                ticket,
                allowed,
            } => {
                // Fault point: the owner answers late, so the taker's deadline may pass first.
                if self.fault(FaultPoint::GrantDelay) {
                    let delay = self.takeover.borrow().timeout * 2;
                    let ups = self.clone();
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(delay).await;
                        ups.answer_reserve(from, server, ticket, allowed);
                    })
                    .detach();
                } else {
                    self.answer_reserve(from, server, ticket, allowed);
                }
            }
            Msg::Grant {
                ticket,
                server,
                conn,
                uses,
            } => self.on_grant(ticket, server, conn, uses),
            Msg::Deny { ticket } => {
                let back = self
                    .takeover
                    .borrow_mut()
                    .driver
                    .on_deny(ticket, glommio::clock::now());
                if let Some((w, n)) = back {
                    self.carry(w, n);
                }
            }
        }
    }

    /// Adopt: bind the fd to this shard. Nothing below can fail but I/O (I2).
    fn on_grant(&self, ticket: Ticket, slot: ServerId, moved: Handover, uses: u32) {
        // An HTTP/2 connection needs its driver task: the reserved one when its request
        // still waits, a new one otherwise (spawning cannot fail; see docs/takeover.md).
        let (pooled, cell) = match moved {
            Handover::H1(m) => (
                Pooled::H1(Box::new(BackendConn {
                    transport: Transport::attach(m),
                    slot,
                    uses,
                    // Connections that carried a body never enter a pool, so never move.
                    carried_body: false,
                    private: false,
                })),
                None,
            ),
            Handover::H2(m) => {
                let (c, cell) = h2conns::attach_h2(m, slot, uses);
                (Pooled::H2(c), Some(cell))
            }
        };
        let conn = IdleConn {
            conn: pooled,
            since: glommio::clock::now(),
        };
        // The connection lives on this shard from now on, whatever happens to it.
        self.conns.set(self.conns.get() + 1);
        let effect = self.takeover.borrow_mut().driver.on_grant(
            &mut self.pool.borrow_mut(),
            ticket,
            slot,
            conn,
            uses,
            glommio::clock::now(),
        );
        let put = match effect {
            GrantEffect::Deliver {
                mut waiter, conn, ..
            } => {
                if let Some(cell) = cell {
                    h2conns::start_driver(cell, waiter.driver.take());
                }
                match waiter.tx.send(Outcome::Granted(conn.conn)) {
                    Ok(()) => return,
                    // The request vanished in between: keep the connection idle (I5).
                    Err(Outcome::Granted(pc)) => self.takeover.borrow_mut().driver.undeliverable(
                        &mut self.pool.borrow_mut(),
                        slot,
                        IdleConn {
                            conn: pc,
                            since: glommio::clock::now(),
                        },
                        uses,
                        glommio::clock::now(),
                    ),
                    Err(Outcome::ConnectNew) => return,
                }
            }
            GrantEffect::AdoptedIdle(put) => {
                if let Some(cell) = cell {
                    h2conns::start_driver(cell, None);
                }
                put
            }
        };
        self.close_rejected(put);
        self.publish_idle(slot);
    }

    /// Owner side: hand over an idle connection (detached first) or deny.
    fn answer_reserve(&self, from: usize, slot: ServerId, ticket: Ticket, allowed: Allowed) {
        let reply = self.takeover.borrow_mut().driver.on_reserve(
            &mut self.pool.borrow_mut(),
            slot,
            ticket,
            allowed,
        );
        match reply {
            Msg::Grant {
                ticket,
                server,
                conn,
                uses,
            } => {
                self.publish_idle(server);
                let detached = match conn.conn {
                    Pooled::H1(c) => {
                        let BackendConn { transport, .. } = *c;
                        transport
                            .detach()
                            .map(Handover::H1)
                            .map_err(|(t, e)| (self.reattached_h1(t, server, uses), Some(e)))
                    }
                    Pooled::H2(c) => match h2conns::detach_h2(c) {
                        Ok((m, _)) => Ok(Handover::H2(m)),
                        Err(DetachH2::Kept(c, e)) => Err((Pooled::H2(c), Some(e))),
                        // Died while idle (GOAWAY, error): never granted (see below).
                        Err(DetachH2::Dead(c)) => Err((Pooled::H2(c), None)),
                    },
                };
                match detached {
                    Ok(moved) => {
                        let msg = UpstreamMsg::Takeover(Msg::Grant {
                            ticket,
                            server,
                            conn: moved,
                            uses,
                        });
                        let res = if self.fault(FaultPoint::ChannelFull) {
                            Err(Some(msg))
                        } else {
                            (self.outbox)(from, msg)
                        };
                        match res {
                            Ok(()) => self.forget_conn(),
                            Err(Some(UpstreamMsg::Takeover(Msg::Grant {
                                ticket,
                                server,
                                conn,
                                uses,
                            }))) => {
                                // Could not send: the connection comes back to this pool.
                                let back = match conn {
                                    Handover::H1(m) => {
                                        self.reattached_h1(Transport::attach(m), server, uses)
                                    }
                                    Handover::H2(m) => {
                                        let (c, cell) = h2conns::attach_h2(m, server, uses);
                                        h2conns::start_driver(cell, None);
                                        Pooled::H2(c)
                                    }
                                };
                                self.regain(ticket, server, back, uses);
                            }
                            Err(_) => self.forget_conn(),
                        }
                    }
                    Err((kept, why)) => {
                        // The duplicate could not be made (fd limit), or a health check
                        // holds it: it never left and goes back into the pool. A dead one
                        // goes back too and is then closed as the sweep would close it.
                        // Either way the taker is denied and connects.
                        match why {
                            Some(e) => {
                                tracing::warn!(error = %e, "cannot detach an idle connection for takeover");
                                self.regain(ticket, server, kept, uses);
                            }
                            None => {
                                if let Some(key) = self.regain(ticket, server, kept, uses) {
                                    let removed = self.pool.borrow_mut().remove(key);
                                    if let Some(ic) = removed {
                                        self.counters.borrow_mut().idle_closed_by_server += 1;
                                        self.close_pooled(ic.conn);
                                        self.publish_idle(server);
                                    }
                                }
                            }
                        }
                        let _ = (self.outbox)(from, UpstreamMsg::Takeover(Msg::Deny { ticket }));
                    }
                }
            }
            Msg::Deny { ticket } => {
                let _ = (self.outbox)(from, UpstreamMsg::Takeover(Msg::Deny { ticket }));
            }
            Msg::Reserve { .. } => {}
        }
    }

    /// An HTTP/1.1 transport back in one piece on this shard.
    fn reattached_h1(&self, transport: Transport, slot: ServerId, uses: u32) -> Pooled {
        Pooled::H1(Box::new(BackendConn {
            transport,
            slot,
            uses,
            // It came from this shard's pool, which holds no body-carrying connection.
            carried_body: false,
            private: false,
        }))
    }

    /// A granted connection that did not leave goes back into this shard's pool.
    fn regain(&self, ticket: Ticket, slot: ServerId, conn: Pooled, uses: u32) -> Option<IdleKey> {
        let ic = IdleConn {
            conn,
            since: glommio::clock::now(),
        };
        let back = self.takeover.borrow_mut().driver.reply_failed(
            &mut self.pool.borrow_mut(),
            Msg::Grant {
                ticket,
                server: slot,
                conn: ic,
                uses,
            },
            glommio::clock::now(),
        );
        let key = match back {
            Some(PutResult::Pooled(key)) => Some(key),
            Some(put) => {
                self.close_rejected(put);
                None
            }
            None => None,
        };
        self.publish_idle(slot);
        key
    }
}
