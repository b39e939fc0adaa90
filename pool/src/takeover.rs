//! The takeover protocol between shards, as two sans-IO state machines.
//!
//! A shard T that needs a connection to server S and has none idle becomes a *taker*:
//! [`Taker::begin`] picks an *owner* O from the published idle counts (a rotating scan
//! that visits each other shard with a non-zero count at most once per attempt, and is
//! skipped entirely while the server's total idle count is below `low_idle`), and issues
//! a *ticket* with a deadline. The engine makes its *reservation* (slot, buffers, parked
//! task), sends [`Msg::Reserve`], and feeds back what happens: the reservation or the
//! send failed, a [`Msg::Grant`] or [`Msg::Deny`] arrived, the deadline passed, the
//! request went away. The [`Owner`] side answers a reservation from its [`IdlePool`].
//!
//! This module owns tickets, deadlines, the scan cursor and the takeover counters. It
//! never touches a socket, never waits (every wait is a deadline the engine polls with
//! [`Taker::poll_timeouts`]), and never drops a connection: a grant that arrives after
//! its request gave up is answered with [`GrantFate::AdoptIdle`], and a grant that could
//! not be sent goes back into the owner's pool ([`Owner::reply_failed`]). The table of
//! requests waiting on tickets, and the routing of answers to them, is
//! [`Driver`](crate::Driver)'s: a runtime drives that, not these two machines directly.
//!
//! Counter identity, true after every call (not only at rest):
//! `asked == granted + denied + timeout + reservation_failed + channel_full + pending`.
//! Each issued ticket is counted once in `asked` and resolved exactly once, into exactly
//! one of the five outcome counters, when it leaves the pending table; late grants and
//! denies for tickets already resolved are counted apart (`late_grant_adopted`,
//! `late_deny`) and do not enter the identity.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{Allowed, IdlePool, PutResult, ServerId};

/// Names one ask of one taker. Unique per taker; the owner echoes it back unread.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A message between shards. The engine carries it over the bounded channel mesh.
#[derive(Debug)]
pub enum Msg<C> {
    /// Taker to owner: "hand me an idle connection to `server`, answer quoting `ticket`".
    Reserve {
        /// The taker's shard, where the answer goes.
        from: usize,
        /// The server the taker wants a connection to.
        server: ServerId,
        /// Quoted back in the answer.
        ticket: Ticket,
        /// Which pooled connections the taker's request may use (its reuse mode).
        allowed: Allowed,
    },
    /// Owner to taker: here it is; the owner keeps no reference to it.
    Grant {
        /// The ticket of the `Reserve` this answers.
        ticket: Ticket,
        /// The connection's server (so a late grant can still be pooled).
        server: ServerId,
        /// The connection.
        conn: C,
        /// Requests it has carried.
        uses: u32,
    },
    /// Owner to taker: none left that the request may use.
    Deny {
        /// The ticket of the `Reserve` this answers.
        ticket: Ticket,
    },
}

/// Taker knobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakerConfig {
    /// HAProxy's `pool-low-conn`: no takeover while the published idle counts for the
    /// server sum to less than this.
    pub low_idle: usize,
    /// How long one ask waits for its grant or deny before the next candidate is tried.
    pub ask_timeout: Duration,
}

impl Default for TakerConfig {
    fn default() -> Self {
        TakerConfig {
            low_idle: 0,
            ask_timeout: Duration::from_millis(5),
        }
    }
}

/// Why the taker tells the engine to open a new connection instead.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ConnectReason {
    /// The reuse mode forbids pooled connections for this request.
    ReuseForbids,
    /// The server's idle count over all shards is below `low_idle`.
    LowIdle,
    /// No other shard published an idle connection to the server.
    NoCandidate,
    /// Every candidate was asked once; none granted.
    Exhausted,
    /// The reservation could not be made (capacity limit or injected fault).
    ReservationFailed,
}

/// What the engine does next for a request that wants a connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Next {
    /// Send `Msg::Reserve` with this ticket to `shard` (reservation made first).
    Ask {
        /// The owner to ask.
        shard: usize,
        /// The ticket to quote.
        ticket: Ticket,
    },
    /// Give up on takeover: connect anew (free the reservation if one was made).
    ConnectNew(ConnectReason),
    /// The request had already gone: nothing to do but free its reservation.
    WaiterGone,
}

/// What to do with a connection that arrived in a `Grant`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GrantFate {
    /// The request is still waiting: bind the connection, call [`IdlePool::adopted`] and
    /// hand it to the reserved task.
    Deliver,
    /// The request gave up (timeout or abandon): [`IdlePool::adopt_idle`] it (I5).
    AdoptIdle,
}

/// Taker-side counters. See the module docs for the identity they satisfy.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct TakerStats {
    /// Calls to `begin` with a reuse mode that allows pooled connections.
    pub attempts: u64,
    /// Tickets issued (each told the engine to reserve and send a `Reserve`).
    pub asked: u64,
    /// Tickets resolved by a grant.
    pub granted: u64,
    /// Tickets resolved by a deny.
    pub denied: u64,
    /// Tickets resolved by their deadline.
    pub timeout: u64,
    /// Tickets resolved because the reservation failed (nothing was sent).
    pub reservation_failed: u64,
    /// Tickets resolved because the bounded channel was full (a miss, not a wait).
    pub channel_full: u64,
    /// Grants that found their request gone and were adopted into the idle pool (I5).
    pub late_grant_adopted: u64,
    /// Denies for tickets already resolved by timeout.
    pub late_deny: u64,
    /// Requests that went away while their ticket was pending.
    pub abandoned: u64,
    /// Attempts skipped because the total idle count was below `low_idle`.
    pub low_idle_skipped: u64,
    /// Attempts that found no other shard with an idle connection.
    pub no_candidate: u64,
}

impl TakerStats {
    /// Tickets resolved so far, over the five outcomes.
    pub fn resolved(&self) -> u64 {
        self.granted + self.denied + self.timeout + self.reservation_failed + self.channel_full
    }
}

#[derive(Debug)]
struct Pending {
    server: ServerId,
    allowed: Allowed,
    shard: usize,
    deadline: Instant,
    /// Candidates not yet asked in this attempt, in scan order (next one last).
    remaining: Vec<usize>,
    /// False once the request went away.
    waiter: bool,
}

/// The taker side of one shard: pending tickets with deadlines, the scan cursor, counters.
#[derive(Debug)]
pub struct Taker {
    shard: usize,
    n_shards: usize,
    cfg: TakerConfig,
    seq: u64,
    cursor: usize,
    pending: BTreeMap<Ticket, Pending>,
    stats: TakerStats,
}

impl Taker {
    /// The taker for shard `shard` of `n_shards`.
    pub fn new(shard: usize, n_shards: usize, cfg: TakerConfig) -> Self {
        Taker {
            shard,
            n_shards,
            cfg,
            seq: 0,
            cursor: (shard + 1) % n_shards.max(1),
            pending: BTreeMap::new(),
            stats: TakerStats::default(),
        }
    }

    /// This taker's shard.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Starts an attempt for a request that found nothing usable locally. `published[i]`
    /// is shard i's published idle count for `server` (this shard's own entry is ignored
    /// for the scan but counts towards `low_idle`; missing entries read as 0).
    pub fn begin(
        &mut self,
        server: ServerId,
        allowed: Allowed,
        published: &[usize],
        now: Instant,
    ) -> Next {
        self.begin_with(
            server,
            allowed,
            |i| published.get(i).copied().unwrap_or(0),
            now,
        )
    }

    /// [`begin`](Self::begin) reading the published counts through a function (e.g. from
    /// a table of atomics), so nothing is copied. `published(i)` is called for each shard
    /// `0..n_shards`, once for the `low_idle` sum and once for the scan.
    pub fn begin_with(
        &mut self,
        server: ServerId,
        allowed: Allowed,
        published: impl Fn(usize) -> usize,
        now: Instant,
    ) -> Next {
        if allowed == Allowed::Nothing {
            return Next::ConnectNew(ConnectReason::ReuseForbids);
        }
        self.stats.attempts += 1;
        let n = self.n_shards;
        let total = (0..n).fold(0usize, |acc, i| acc.saturating_add(published(i)));
        if total < self.cfg.low_idle {
            self.stats.low_idle_skipped += 1;
            return Next::ConnectNew(ConnectReason::LowIdle);
        }
        let start = self.cursor;
        self.cursor = (self.cursor + 1) % n.max(1);
        // Scan order start, start+1, ... (mod n); stored reversed so `pop` yields the next.
        let mut remaining: Vec<usize> = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| i != self.shard && published(i) > 0)
            .collect();
        remaining.reverse();
        match remaining.pop() {
            None => {
                self.stats.no_candidate += 1;
                Next::ConnectNew(ConnectReason::NoCandidate)
            }
            Some(shard) => self.issue(server, allowed, shard, remaining, now),
        }
    }

    /// The reservation for `ticket` failed: nothing was sent. Connect anew.
    pub fn on_reserve_failed(&mut self, ticket: Ticket) -> Next {
        match self.pending.remove(&ticket) {
            Some(p) => {
                self.stats.reservation_failed += 1;
                if p.waiter {
                    Next::ConnectNew(ConnectReason::ReservationFailed)
                } else {
                    Next::WaiterGone
                }
            }
            None => Next::WaiterGone,
        }
    }

    /// Sending the `Reserve` for `ticket` failed because the channel was full: a miss.
    /// Returns the next candidate to ask (same reservation) or connect anew.
    pub fn on_send_failed(&mut self, ticket: Ticket, now: Instant) -> Next {
        match self.pending.remove(&ticket) {
            Some(p) => {
                self.stats.channel_full += 1;
                self.advance(p, now)
            }
            None => Next::WaiterGone,
        }
    }

    /// A `Deny` arrived. Returns the next candidate, connect anew, or nothing to do.
    pub fn on_deny(&mut self, ticket: Ticket, now: Instant) -> Next {
        match self.pending.remove(&ticket) {
            Some(p) => {
                self.stats.denied += 1;
                self.advance(p, now)
            }
            None => {
                self.stats.late_deny += 1;
                Next::WaiterGone
            }
        }
    }

    /// A `Grant` arrived. Never fails: the connection is delivered or adopted idle (I2, I5).
    pub fn on_grant(&mut self, ticket: Ticket) -> GrantFate {
        match self.pending.remove(&ticket) {
            Some(p) if p.waiter => {
                self.stats.granted += 1;
                GrantFate::Deliver
            }
            Some(_) => {
                self.stats.granted += 1;
                self.stats.late_grant_adopted += 1;
                GrantFate::AdoptIdle
            }
            None => {
                self.stats.late_grant_adopted += 1;
                GrantFate::AdoptIdle
            }
        }
    }

    /// The request waiting on `ticket` went away. The ticket stays pending until its
    /// grant, deny or deadline, so the identity and I5 hold. False if not pending.
    pub fn abandon(&mut self, ticket: Ticket) -> bool {
        match self.pending.get_mut(&ticket) {
            Some(p) if p.waiter => {
                p.waiter = false;
                self.stats.abandoned += 1;
                true
            }
            _ => false,
        }
    }

    /// Resolves every ticket whose deadline is at or before `now` as a timeout. Returns,
    /// for each one whose request still waits, the old ticket and what to do next.
    pub fn poll_timeouts(&mut self, now: Instant) -> Vec<(Ticket, Next)> {
        let expired: Vec<Ticket> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        let mut out = Vec::new();
        for ticket in expired {
            if let Some(p) = self.pending.remove(&ticket) {
                self.stats.timeout += 1;
                if p.waiter {
                    out.push((ticket, self.advance(p, now)));
                }
            }
        }
        out
    }

    /// The earliest pending deadline, to arm the engine's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Deadline of a pending ticket.
    pub fn deadline(&self, ticket: Ticket) -> Option<Instant> {
        self.pending.get(&ticket).map(|p| p.deadline)
    }

    /// The server and owner shard of a pending ticket.
    pub fn pending_ask(&self, ticket: Ticket) -> Option<(ServerId, usize)> {
        self.pending.get(&ticket).map(|p| (p.server, p.shard))
    }

    /// Server, reuse mode and owner shard of a pending ticket whose request still waits:
    /// what its `Reserve` says. `None` once resolved or abandoned.
    pub(crate) fn pending_reserve(&self, ticket: Ticket) -> Option<(ServerId, Allowed, usize)> {
        self.pending
            .get(&ticket)
            .filter(|p| p.waiter)
            .map(|p| (p.server, p.allowed, p.shard))
    }

    /// A grant answered with [`GrantFate::Deliver`] could not be handed to its request
    /// (it went away without [`abandon`](Self::abandon)): counted as if it had been
    /// abandoned before the grant arrived, so the figures do not depend on which came first.
    pub(crate) fn count_undelivered(&mut self) {
        self.stats.abandoned += 1;
        self.stats.late_grant_adopted += 1;
    }

    /// Tickets issued and not yet resolved (their requests may have gone).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Counters.
    pub fn stats(&self) -> &TakerStats {
        &self.stats
    }

    /// The counter identity from the module docs. Always true; exposed for `/metrics` checks.
    pub fn identity_holds(&self) -> bool {
        self.stats.asked == self.stats.resolved() + self.pending.len() as u64
    }

    fn issue(
        &mut self,
        server: ServerId,
        allowed: Allowed,
        shard: usize,
        remaining: Vec<usize>,
        now: Instant,
    ) -> Next {
        self.seq += 1;
        let ticket = Ticket(((self.shard as u64) << 40) | (self.seq & ((1 << 40) - 1)));
        self.stats.asked += 1;
        let old = self.pending.insert(
            ticket,
            Pending {
                server,
                allowed,
                shard,
                deadline: now + self.cfg.ask_timeout,
                remaining,
                waiter: true,
            },
        );
        debug_assert!(old.is_none(), "ticket {ticket:?} issued twice");
        Next::Ask { shard, ticket }
    }

    /// After an ask resolved without a connection: the next candidate, if the request waits.
    fn advance(&mut self, mut p: Pending, now: Instant) -> Next {
        if !p.waiter {
            return Next::WaiterGone;
        }
        match p.remaining.pop() {
            Some(shard) => self.issue(p.server, p.allowed, shard, p.remaining, now),
            None => Next::ConnectNew(ConnectReason::Exhausted),
        }
    }
}

/// Owner-side counters: `reserve_received == granted + denied`.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub struct OwnerStats {
    /// `Reserve` messages answered.
    pub reserve_received: u64,
    /// Answered with a grant.
    pub granted: u64,
    /// Answered with a deny.
    pub denied: u64,
    /// Grants that could not be sent and went back into the pool.
    pub grant_returned: u64,
    /// Grants that could not be sent nor pooled again (closed by policy: limits, down).
    pub grant_closed: u64,
    /// Denies that could not be sent (the taker's deadline resolves its ticket).
    pub deny_unsent: u64,
}

/// The owner side of one shard: answers reservations from its idle pool.
#[derive(Debug, Default)]
pub struct Owner {
    stats: OwnerStats,
}

impl Owner {
    /// A fresh owner.
    pub fn new() -> Self {
        Owner::default()
    }

    /// Answers a `Reserve`: pops the most recent connection the taker's request may use
    /// and grants it, or denies. The engine detaches
    /// it before sending the grant; from then on this shard holds no reference to it.
    pub fn handle_reserve<C>(
        &mut self,
        pool: &mut IdlePool<C>,
        server: ServerId,
        ticket: Ticket,
        allowed: Allowed,
    ) -> Msg<C> {
        self.stats.reserve_received += 1;
        match pool.take_for_takeover_allowed(server, allowed) {
            Some((conn, uses)) => {
                self.stats.granted += 1;
                Msg::Grant {
                    ticket,
                    server,
                    conn,
                    uses,
                }
            }
            None => {
                self.stats.denied += 1;
                Msg::Deny { ticket }
            }
        }
    }

    /// The reply could not be sent (channel full). A grant's connection goes back into
    /// the pool: `Some(Pooled(key))` (pooled under a new key), or
    /// `Some(Rejected(conn, why))` if the pool refuses it (limits, server down) and it
    /// must be closed. `None` for a deny (the taker's deadline resolves its ticket).
    pub fn reply_failed<C>(
        &mut self,
        pool: &mut IdlePool<C>,
        reply: Msg<C>,
        now: Instant,
    ) -> Option<PutResult<C>> {
        match reply {
            Msg::Grant {
                server, conn, uses, ..
            } => {
                let r = pool.return_granted(server, conn, uses, now);
                match r {
                    PutResult::Pooled(_) => self.stats.grant_returned += 1,
                    PutResult::Rejected(..) => self.stats.grant_closed += 1,
                }
                Some(r)
            }
            Msg::Deny { .. } => {
                self.stats.deny_unsent += 1;
                None
            }
            Msg::Reserve { .. } => None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> &OwnerStats {
        &self.stats
    }
}

#[cfg(test)]
#[path = "takeover_tests.rs"]
mod tests;
