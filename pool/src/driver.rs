//! The takeover driver of one shard: its [`Taker`], its [`Owner`] and the table of
//! requests waiting on a ticket, wired together, sans-IO.
//!
//! [`takeover`](crate::takeover) decides; this module keeps the books around those
//! decisions that every runtime would otherwise write for itself: which request waits on
//! which ticket, waking every request whose ticket expired with what it does next, routing
//! a grant or a deny to its request, adopting into the idle pool a grant whose request is
//! gone (I5), and putting back into the owner's pool a grant that could not be sent. The
//! engine and the simulation both drive this one copy, so the simulation's checks of
//! I1-I6 cover the code the engine runs. A runtime only carries messages (and the fds in
//! them), runs one timer at [`Driver::next_deadline`], and hands connections to requests.
//!
//! The driver is generic over the connection type `C` (what the shard's [`IdlePool`]
//! holds) and the waiter type `W` (how the runtime reaches a waiting request: a oneshot
//! sender, a request id). A runtime that must convert a connection to send it (the engine
//! detaches its fd) converts between calls: after [`Driver::on_reserve`] and before
//! [`Driver::on_grant`] or [`Driver::reply_failed`]. It never performs I/O, never reads a
//! clock, never waits, and never drops a connection or a waiter: each one it takes in is
//! handed back out by exactly one later call.
//!
//! # Taker side: one request
//!
//! 1. [`begin`](Driver::begin): [`Next::ConnectNew`], or [`Next::Ask`] with a ticket.
//! 2. On the first `Ask`, make the reservation (DESIGN step 1). If it fails,
//!    [`reserve_failed`](Driver::reserve_failed) and connect anew.
//! 3. For every `Ask` (the first, or one handed back by steps 4-5):
//!    [`ask`](Driver::ask) registers the waiter and returns the `Reserve` to send; if the
//!    channel is full, [`send_failed`](Driver::send_failed) hands the waiter back with the
//!    next step. Both happen in the same turn of the runtime, with no wait in between.
//! 4. What comes back: [`on_grant`](Driver::on_grant) gives the connection to deliver (or
//!    says it was adopted idle), [`on_deny`](Driver::on_deny) and
//!    [`poll_timeouts`](Driver::poll_timeouts) hand waiters back with their next step.
//! 5. If a delivery fails because the request vanished meanwhile,
//!    [`undeliverable`](Driver::undeliverable) pools the connection (I5). A request that
//!    goes away while it waits calls [`abandon`](Driver::abandon).
//!
//! # Owner side
//!
//! [`on_reserve`](Driver::on_reserve) answers a `Reserve` with a grant or a deny; if the
//! answer cannot be sent, [`reply_failed`](Driver::reply_failed) takes a grant's
//! connection back into the pool.
//!
//! Besides the taker's counter identity (see [`takeover`](crate::takeover)), the driver
//! keeps one of its own: every waiter in its table waits on a ticket that is pending.
//! [`Driver::identity_holds`] checks both, and the owner's.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Instant;

use crate::takeover::{GrantFate, Msg, Next, Owner, OwnerStats, Taker, TakerConfig, TakerStats};
use crate::{Allowed, IdlePool, PutResult, ServerId, Ticket};

/// What became of a connection that arrived in a `Grant`. Either way the connection is
/// owned by this shard now; nothing on the protocol's side can fail any more (I2).
#[derive(Debug)]
pub enum GrantEffect<C, W> {
    /// Hand `conn` to `waiter`; [`IdlePool::adopted`] has been called. If the hand-off
    /// fails because the request vanished, pass the connection to
    /// [`Driver::undeliverable`].
    Deliver {
        /// The request that asked for it.
        waiter: W,
        /// The connection's server.
        server: ServerId,
        /// The connection.
        conn: C,
        /// Requests it has carried.
        uses: u32,
    },
    /// Its request had gone: the connection went to [`IdlePool::adopt_idle`] (I5), which
    /// pooled it (publish the new idle count) or refused it by policy (close it with RST).
    AdoptedIdle(PutResult<C>),
}

/// Bugs that can be planted in the driver on purpose, to prove the simulation catches a
/// bug in the code the engine runs. Only with the `planted-bug` feature, which nothing but
/// this crate's own tests turns on; a plant is inert until [`Driver::plant`] arms it.
#[cfg(feature = "planted-bug")]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PlantedBug {
    /// A grant whose request is gone is handed back to be closed, as if the pool were
    /// over its idle limit, instead of being adopted idle (breaks I5 and I6).
    CloseLateGrant,
    /// When several tickets expire in one poll, only the first waiter is woken; the
    /// others are forgotten and wait forever (breaks I3).
    WakeOneExpired,
}

/// One shard's side of the takeover protocol, both roles. See the module docs.
#[derive(Debug)]
pub struct Driver<C, W> {
    taker: Taker,
    owner: Owner,
    /// Tickets whose `Reserve` went out, and the request waiting on each.
    waiters: BTreeMap<Ticket, W>,
    #[cfg(feature = "planted-bug")]
    plant: Option<PlantedBug>,
    _conn: PhantomData<fn(C) -> C>,
}

impl<C, W> Driver<C, W> {
    /// The driver for shard `shard` of `n_shards`.
    pub fn new(shard: usize, n_shards: usize, cfg: TakerConfig) -> Self {
        Driver {
            taker: Taker::new(shard, n_shards, cfg),
            owner: Owner::new(),
            waiters: BTreeMap::new(),
            #[cfg(feature = "planted-bug")]
            plant: None,
            _conn: PhantomData,
        }
    }

    /// This driver's shard.
    pub fn shard(&self) -> usize {
        self.taker.shard()
    }

    // ---- taker side -----------------------------------------------------------------

    /// A request found nothing usable in the local pool. `published(i)` is shard i's
    /// published idle count for `server` (see [`Taker::begin_with`]). On
    /// [`Next::Ask`], make the reservation, then [`ask`](Self::ask) or
    /// [`reserve_failed`](Self::reserve_failed).
    pub fn begin(
        &mut self,
        server: ServerId,
        allowed: Allowed,
        published: impl Fn(usize) -> usize,
        now: Instant,
    ) -> Next {
        self.taker.begin_with(server, allowed, published, now)
    }

    /// The reservation for `ticket` (from [`begin`](Self::begin)) could not be made;
    /// nothing was sent. Returns [`Next::ConnectNew`]. A ticket whose `Reserve` already
    /// went out is left to its answer ([`Next::WaiterGone`]).
    pub fn reserve_failed(&mut self, ticket: Ticket) -> Next {
        if self.waiters.contains_key(&ticket) {
            return Next::WaiterGone;
        }
        self.taker.on_reserve_failed(ticket)
    }

    /// The request `waiter` (reservation in hand) asks for `ticket`: registers it and
    /// returns the owner shard and the `Reserve` to send there now. The message carries
    /// no connection, so it comes in whatever message type `M` the runtime sends.
    /// `Err(waiter)` if the ticket is not waiting to be asked (it expired before this
    /// call, or was never issued): connect anew.
    pub fn ask<M>(&mut self, ticket: Ticket, waiter: W) -> Result<(usize, Msg<M>), W> {
        let Some((server, allowed, to)) = self.taker.pending_reserve(ticket) else {
            return Err(waiter);
        };
        if self.waiters.contains_key(&ticket) {
            return Err(waiter);
        }
        self.waiters.insert(ticket, waiter);
        let from = self.taker.shard();
        Ok((
            to,
            Msg::Reserve {
                from,
                server,
                ticket,
                allowed,
            },
        ))
    }

    /// The `Reserve` for `ticket` could not be sent (the channel was full: a miss, not a
    /// wait). Hands the waiter back with its next step (another [`Next::Ask`], same
    /// reservation, or [`Next::ConnectNew`]). `None` if nobody waited on the ticket.
    pub fn send_failed(&mut self, ticket: Ticket, now: Instant) -> Option<(W, Next)> {
        let waiter = self.waiters.remove(&ticket);
        let next = self.taker.on_send_failed(ticket, now);
        self.hand_back(waiter, next)
    }

    /// A `Grant` arrived, its connection already bound to this shard. Never fails: the
    /// connection is to be delivered, or it was adopted idle (I2, I5).
    pub fn on_grant(
        &mut self,
        pool: &mut IdlePool<C>,
        ticket: Ticket,
        server: ServerId,
        conn: C,
        uses: u32,
        now: Instant,
    ) -> GrantEffect<C, W> {
        match self.taker.on_grant(ticket) {
            GrantFate::Deliver => match self.waiters.remove(&ticket) {
                Some(waiter) => {
                    pool.adopted(server);
                    GrantEffect::Deliver {
                        waiter,
                        server,
                        conn,
                        uses,
                    }
                }
                None => {
                    // Granted before anyone asked for it (a runtime that sent a
                    // `Reserve` without `ask`): nobody to deliver to, so keep it idle.
                    self.taker.count_undelivered();
                    GrantEffect::AdoptedIdle(self.adopt_late(pool, server, conn, uses, now))
                }
            },
            GrantFate::AdoptIdle => {
                GrantEffect::AdoptedIdle(self.adopt_late(pool, server, conn, uses, now))
            }
        }
    }

    /// A connection from [`GrantEffect::Deliver`] could not be handed over: its request
    /// vanished between the table and the hand-off. Undoes the adoption count and pools
    /// the connection idle (I5), counted as a late grant of an abandoned request.
    pub fn undeliverable(
        &mut self,
        pool: &mut IdlePool<C>,
        server: ServerId,
        conn: C,
        uses: u32,
        now: Instant,
    ) -> PutResult<C> {
        pool.adoption_undone(server);
        self.taker.count_undelivered();
        self.adopt_late(pool, server, conn, uses, now)
    }

    /// A `Deny` arrived. Hands the waiter back with its next step; `None` if nobody
    /// waits on the ticket any more (it timed out or was abandoned).
    pub fn on_deny(&mut self, ticket: Ticket, now: Instant) -> Option<(W, Next)> {
        let waiter = self.waiters.remove(&ticket);
        let next = self.taker.on_deny(ticket, now);
        self.hand_back(waiter, next)
    }

    /// Resolves every ticket whose deadline is at or before `now` and hands back every
    /// waiter that still waited on one, each with its next step. A ticket resolved by a
    /// grant or a deny before this call is not among them, even if its deadline passed.
    pub fn poll_timeouts(&mut self, now: Instant) -> Vec<(W, Next)> {
        let mut woken = Vec::new();
        for (ticket, next) in self.taker.poll_timeouts(now) {
            let waiter = self.waiters.remove(&ticket);
            woken.extend(self.hand_back(waiter, next));
        }
        #[cfg(feature = "planted-bug")]
        if self.plant == Some(PlantedBug::WakeOneExpired) {
            woken.truncate(1);
        }
        woken
    }

    /// The request waiting on `ticket` went away. Returns its waiter if the `Reserve` had
    /// gone out; the ticket then stays pending until its grant (adopted idle, I5), deny or
    /// deadline. A ticket issued but not yet asked is resolved at once (nothing was sent).
    pub fn abandon(&mut self, ticket: Ticket) -> Option<W> {
        match self.waiters.remove(&ticket) {
            Some(waiter) => {
                self.taker.abandon(ticket);
                Some(waiter)
            }
            None => {
                if self.taker.abandon(ticket) {
                    let _ = self.taker.on_reserve_failed(ticket);
                }
                None
            }
        }
    }

    /// The earliest pending deadline: when to call [`poll_timeouts`](Self::poll_timeouts).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.taker.next_deadline()
    }

    /// The deadline of a pending ticket.
    pub fn deadline(&self, ticket: Ticket) -> Option<Instant> {
        self.taker.deadline(ticket)
    }

    /// Tickets issued and not yet resolved (their requests may have gone).
    pub fn pending(&self) -> usize {
        self.taker.pending()
    }

    /// The request waiting on `ticket`, if one does.
    pub fn waiter(&self, ticket: Ticket) -> Option<&W> {
        self.waiters.get(&ticket)
    }

    /// Every waiting request and its ticket, in ticket order (for checks and shutdown).
    pub fn waiters(&self) -> impl Iterator<Item = (Ticket, &W)> + '_ {
        self.waiters.iter().map(|(t, w)| (*t, w))
    }

    // ---- owner side -----------------------------------------------------------------

    /// A `Reserve` arrived: grants the most recent connection the taker's request may use,
    /// popped from `pool`, or denies. Convert and send the answer; if it cannot be sent,
    /// [`reply_failed`](Self::reply_failed). Once a grant is sent this shard holds no
    /// reference to its connection.
    pub fn on_reserve(
        &mut self,
        pool: &mut IdlePool<C>,
        server: ServerId,
        ticket: Ticket,
        allowed: Allowed,
    ) -> Msg<C> {
        self.owner.handle_reserve(pool, server, ticket, allowed)
    }

    /// The answer from [`on_reserve`](Self::on_reserve) could not be sent. A grant's
    /// connection goes back into `pool` (`Pooled`) or must be closed by policy
    /// (`Rejected`); a deny needs nothing (`None`: the taker's deadline resolves it).
    pub fn reply_failed(
        &mut self,
        pool: &mut IdlePool<C>,
        reply: Msg<C>,
        now: Instant,
    ) -> Option<PutResult<C>> {
        self.owner.reply_failed(pool, reply, now)
    }

    // ---- counters -------------------------------------------------------------------

    /// The taker state machine, read-only.
    pub fn taker(&self) -> &Taker {
        &self.taker
    }

    /// The owner state machine, read-only.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Taker counters.
    pub fn taker_stats(&self) -> &TakerStats {
        self.taker.stats()
    }

    /// Owner counters.
    pub fn owner_stats(&self) -> &OwnerStats {
        self.owner.stats()
    }

    /// The taker's counter identity, the owner's (`reserve_received == granted + denied`)
    /// and the driver's own: every waiter waits on a pending ticket. Always true.
    pub fn identity_holds(&self) -> bool {
        let o = self.owner.stats();
        self.taker.identity_holds()
            && o.reserve_received == o.granted + o.denied
            && self.waiters.len() <= self.taker.pending()
            && self
                .waiters
                .keys()
                .all(|t| self.taker.pending_reserve(*t).is_some())
    }

    /// Arms a planted bug (tests of the simulation only).
    #[cfg(feature = "planted-bug")]
    pub fn plant(&mut self, bug: PlantedBug) {
        self.plant = Some(bug);
    }

    // ---- internals ------------------------------------------------------------------

    /// Pairs a waiter taken from the table with the taker's next step for it. A next step
    /// with nobody to carry it out (a ticket issued but never asked) must not leave a new
    /// ticket pending for nobody: it is resolved at once, nothing having been sent.
    fn hand_back(&mut self, waiter: Option<W>, next: Next) -> Option<(W, Next)> {
        match waiter {
            Some(w) => Some((w, next)),
            None => {
                if let Next::Ask { ticket, .. } = next {
                    let _ = self.taker.on_reserve_failed(ticket);
                }
                None
            }
        }
    }

    /// Pools a granted connection whose request is gone (I5); limits still apply.
    fn adopt_late(
        &mut self,
        pool: &mut IdlePool<C>,
        server: ServerId,
        conn: C,
        uses: u32,
        now: Instant,
    ) -> PutResult<C> {
        #[cfg(feature = "planted-bug")]
        if self.plant == Some(PlantedBug::CloseLateGrant) {
            return PutResult::Rejected(conn, crate::RejectReason::MaxIdle);
        }
        pool.adopt_idle(server, conn, uses, now)
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
