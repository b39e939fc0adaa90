//! The engine's side of the takeover protocol: what the sans-IO taker and owner decide,
//! carried out with transports, the outbox and glommio timers.
//!
//! Taker: a request that found nothing locally reserves first (it is itself the task
//! that will use the connection, with its buffers, and it parks on a oneshot slot put in
//! the waiter table *before* `Reserve` is sent), then waits, bounded by its ticket's
//! deadline. Owner: pops an idle connection, detaches it (the transport comes back intact
//! if it cannot), and grants it; a grant that cannot be sent goes back into its pool.
//! A grant that arrives after its request gave up is pooled here (I5).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringway_pool::{
    Allowed, FaultPoint, GrantFate, Msg, Next, Owner, ServerId, Taker, TakerConfig, Ticket,
};

use super::{BackendConn, IdleConn, Transport, UpstreamMsg, Upstreams};
use crate::metrics::TakeoverCounters;
use crate::oneshot;

/// What a request parked on a ticket is woken with.
pub(super) enum Outcome {
    /// The owner granted a connection; it is attached to this shard already.
    Granted(BackendConn),
    /// Try this next (another owner, or connect anew).
    Next(Next),
}

/// The taker and owner state machines and the requests parked on tickets.
pub(super) struct State {
    taker: Taker,
    owner: Owner,
    waiters: HashMap<Ticket, oneshot::Sender<Outcome>>,
    timeout: Duration,
}

impl State {
    pub(super) fn new(shard: usize, n_shards: usize, low_idle: usize, timeout: Duration) -> Self {
        State {
            taker: Taker::new(
                shard,
                n_shards,
                TakerConfig {
                    low_idle,
                    ask_timeout: timeout,
                },
            ),
            owner: Owner::new(),
            waiters: HashMap::new(),
            timeout,
        }
    }

    pub(super) fn counters(&self) -> TakeoverCounters {
        let ts = self.taker.stats();
        let os = self.owner.stats();
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
            pending: self.taker.pending() as u64,
        }
    }
}

impl Upstreams {
    /// The taker side. Returns a connection adopted from another shard, or `None` to
    /// connect anew.
    pub(super) async fn take_over(
        self: &Rc<Self>,
        slot: ServerId,
        first: bool,
    ) -> Option<BackendConn> {
        let allowed = self.knobs.reuse.allowed(first);
        let table = self.table.clone();
        let mut next = self.takeover.borrow_mut().taker.begin_with(
            slot,
            allowed,
            |shard| table.published(shard, slot),
            Instant::now(),
        );
        loop {
            let (shard, ticket) = match next {
                Next::Ask { shard, ticket } => (shard, ticket),
                Next::ConnectNew(_) | Next::WaiterGone => return None,
            };
            // 1. Reserve: everything the adoption needs exists before anything is sent:
            //    this request's task (parked below) with its buffers, and its waiter slot.
            let over_capacity = self.conns.get() >= self.knobs.max_conns;
            if over_capacity || self.fault(FaultPoint::Reserve) {
                next = self.takeover.borrow_mut().taker.on_reserve_failed(ticket);
                continue;
            }
            let (tx, rx) = oneshot::channel();
            self.takeover.borrow_mut().waiters.insert(ticket, tx);
            // 2. Ask. A full channel is a miss, never a wait.
            let msg = UpstreamMsg::Takeover(Msg::Reserve {
                from: self.shard,
                server: slot,
                ticket,
                allowed,
            });
            let sent = !self.fault(FaultPoint::ChannelFull) && (self.outbox)(shard, msg).is_ok();
            if !sent {
                let mut st = self.takeover.borrow_mut();
                st.waiters.remove(&ticket);
                next = st.taker.on_send_failed(ticket, Instant::now());
                continue;
            }
            // 3. Wait, bounded by the ticket's deadline (I3).
            let deadline = self
                .takeover
                .borrow()
                .taker
                .deadline(ticket)
                .unwrap_or_else(Instant::now);
            let mut rx = rx;
            let waited = futures_lite::future::or(async { (&mut rx).await }, async {
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
                None
            })
            .await;
            match waited {
                Some(Outcome::Granted(conn)) => return self.healthy_adopted(conn),
                Some(Outcome::Next(n)) => next = n,
                None => {
                    // Deadline: resolve every expired ticket; hand the others their next step.
                    let expired = self
                        .takeover
                        .borrow_mut()
                        .taker
                        .poll_timeouts(Instant::now());
                    let mut mine = None;
                    for (t, n) in expired {
                        let waiter = self.takeover.borrow_mut().waiters.remove(&t);
                        if t == ticket {
                            mine = Some(n);
                        } else if let Some(w) = waiter {
                            let _ = w.send(Outcome::Next(n));
                        }
                    }
                    match mine {
                        Some(n) => next = n,
                        None => {
                            // Resolved meanwhile (a grant or deny raced the timer): its
                            // outcome is already in our slot.
                            self.takeover.borrow_mut().waiters.remove(&ticket);
                            match futures_lite::future::poll_once(&mut rx).await {
                                Some(Some(Outcome::Granted(conn))) => {
                                    return self.healthy_adopted(conn)
                                }
                                Some(Some(Outcome::Next(n))) => next = n,
                                _ => return None,
                            }
                        }
                    }
                }
            }
        }
    }

    /// An adopted connection the server closed while it was idle on its owner is not used.
    /// The `adopt` fault point makes a healthy one look dead: after the fd left its owner,
    /// the connection's own I/O is the only thing that may fail (I2), and this is that path.
    fn healthy_adopted(&self, conn: BackendConn) -> Option<BackendConn> {
        if !self.fault(FaultPoint::Adopt) && conn.transport.idle_is_healthy() {
            return Some(conn);
        }
        self.pool.borrow_mut().discard_checkout(conn.slot);
        self.counters.borrow_mut().idle_closed_by_server += 1;
        self.close_policy(conn);
        None
    }

    pub(super) fn on_takeover(self: &Rc<Self>, m: Msg<super::Moved>) {
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
            } => {
                // Adopt: bind the fd to this shard. Nothing below can fail but I/O (I2).
                let bc = BackendConn {
                    transport: Transport::attach(conn),
                    slot: server,
                    uses,
                };
                let (fate, waiter) = {
                    let mut st = self.takeover.borrow_mut();
                    let fate = st.taker.on_grant(ticket);
                    (fate, st.waiters.remove(&ticket))
                };
                match (fate, waiter) {
                    (GrantFate::Deliver, Some(w)) => {
                        // Counted as adopted only once a request really takes it.
                        match w.send(Outcome::Granted(bc)) {
                            Ok(()) => {
                                self.pool.borrow_mut().adopted(server);
                                self.conns.set(self.conns.get() + 1);
                            }
                            // The request vanished in between: keep the connection idle (I5).
                            Err(Outcome::Granted(bc)) => self.adopt_idle(bc),
                            Err(Outcome::Next(_)) => {}
                        }
                    }
                    _ => self.adopt_idle(bc),
                }
            }
            Msg::Deny { ticket } => {
                let mut st = self.takeover.borrow_mut();
                let next = st.taker.on_deny(ticket, Instant::now());
                if let Some(w) = st.waiters.remove(&ticket) {
                    drop(st);
                    let _ = w.send(Outcome::Next(next));
                }
            }
        }
    }

    /// Pools a connection that arrived from another shard after its request gave up (I5).
    fn adopt_idle(&self, conn: BackendConn) {
        let slot = conn.slot;
        let uses = conn.uses;
        self.conns.set(self.conns.get() + 1);
        let put =
            self.pool
                .borrow_mut()
                .adopt_idle(slot, IdleConn::new(conn), uses, Instant::now());
        self.close_rejected(put);
        self.publish_idle(slot);
    }

    /// Owner side: hand over an idle connection (detached first) or deny.
    fn answer_reserve(&self, from: usize, slot: ServerId, ticket: Ticket, allowed: Allowed) {
        let reply = {
            let mut st = self.takeover.borrow_mut();
            st.owner
                .handle_reserve(&mut self.pool.borrow_mut(), slot, ticket, allowed)
        };
        match reply {
            Msg::Grant {
                ticket,
                server,
                conn,
                uses,
            } => {
                self.publish_idle(server);
                let bc = conn.conn;
                match bc.transport.detach() {
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
                                let transport = Transport::attach(conn);
                                self.regain(ticket, server, transport, uses);
                            }
                            Err(_) => self.forget_conn(),
                        }
                    }
                    Err((transport, e)) => {
                        // The duplicate could not be made (fd limit): the connection never
                        // left; it goes back into the pool and the taker is denied.
                        tracing::warn!(error = %e, "cannot detach an idle connection for takeover");
                        self.regain(ticket, server, transport, uses);
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

    /// A granted connection that did not leave goes back into this shard's pool.
    fn regain(&self, ticket: Ticket, slot: ServerId, transport: Transport, uses: u32) {
        let ic = IdleConn::new(BackendConn {
            transport,
            slot,
            uses,
        });
        let back = self.takeover.borrow_mut().owner.reply_failed(
            &mut self.pool.borrow_mut(),
            Msg::Grant {
                ticket,
                server: slot,
                conn: ic,
                uses,
            },
            Instant::now(),
        );
        if let Some(put) = back {
            self.close_rejected(put);
        }
        self.publish_idle(slot);
    }
}
