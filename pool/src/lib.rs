//! ringway-pool: the sans-IO per-shard backend connection pool and the cross-shard
//! takeover protocol.
//!
//! This crate owns the decisions about backend connections that do not need a socket:
//! which pooled connection a request may use ([`ReuseMode`], [`IdlePool`]), when idle
//! connections are closed (limits and [`IdlePool::purge`]), how a shard takes over an idle
//! connection owned by another shard ([`takeover`]: reservation, ticket, grant, deny), the
//! bookkeeping a shard keeps around a takeover ([`driver`]: who waits on which ticket,
//! late grants, unsent grants), and where faults are injected ([`fault`]). It never
//! performs I/O, never reads a clock (time comes in as [`std::time::Instant`]), never
//! spawns or locks, and holds no `unsafe`: the engine drives it with events and carries
//! out what it returns. Everything here is deterministic, so the simulation in
//! `tests/sim/` replays thousands of interleavings per second through the same
//! [`Driver`] the engine runs.
//!
//! # How the engine drives it
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ringway_pool::*;
//!
//! let now = Instant::now();
//! let cfg = PoolConfig { reuse: ReuseMode::Always, ..PoolConfig::default() };
//! let s = ServerId(0);
//! // Two shards; shard 1 holds an idle connection ("conn-a") to server 0.
//! let mut pools: Vec<IdlePool<&str>> = (0..2).map(|_| IdlePool::new(cfg.clone(), 1)).collect();
//! pools[1].connected(s);
//! assert!(matches!(pools[1].checkin(s, "conn-a", 1, now), PutResult::Pooled(_)));
//! // One driver per shard. A waiter here is a request's name; the engine's is a oneshot sender.
//! let tcfg = TakerConfig { low_idle: 0, ask_timeout: Duration::from_millis(5) };
//! let mut drivers: Vec<Driver<&str, &str>> =
//!     (0..2).map(|i| Driver::new(i, 2, tcfg.clone())).collect();
//!
//! // Shard 0 has nothing locally: its driver picks an owner from the published counts.
//! assert!(pools[0].checkout(s, false).is_none());
//! let published = [pools[0].idle_count(s), pools[1].idle_count(s)];
//! let allowed = cfg.reuse.allowed(false);
//! let Next::Ask { ticket, .. } = drivers[0].begin(s, allowed, |i| published[i], now) else {
//!     panic!("expected an ask")
//! };
//! // (reserve slot/buffers/task here; on failure: drivers[0].reserve_failed(ticket))
//! let Ok((to, reserve)) = drivers[0].ask::<&str>(ticket, "request-1") else { panic!() };
//! // (try_send `reserve` to shard `to`; if full: drivers[0].send_failed(ticket, now)
//! //  hands the waiter back with its next step)
//!
//! // The owner answers from its pool (the engine detaches the fd before sending; if the
//! // answer cannot be sent: drivers[to].reply_failed(&mut pools[to], reply, now)).
//! let Msg::Reserve { server, ticket, allowed, .. } = reserve else { unreachable!() };
//! let reply = drivers[to].on_reserve(&mut pools[to], server, ticket, allowed);
//!
//! // Back on the taker (the fd attached first): the grant goes to the request that asked.
//! let Msg::Grant { ticket, server, conn, uses } = reply else { panic!("denied") };
//! match drivers[0].on_grant(&mut pools[0], ticket, server, conn, uses, now) {
//!     GrantEffect::Deliver { waiter, conn, .. } => {
//!         assert_eq!((waiter, conn), ("request-1", "conn-a"));
//!         // (if the hand-off fails: drivers[0].undeliverable(&mut pools[0], ...))
//!     }
//!     GrantEffect::AdoptedIdle(_) => unreachable!("the request still waits"),
//! }
//! // A deny or an expired ticket hands the waiter back with its next step:
//! // drivers[0].on_deny(ticket, now), drivers[0].poll_timeouts(now) at next_deadline().
//! assert_eq!(pools[0].stats(s).adopted, 1);
//! assert_eq!(pools[1].stats(s).taken_over, 1);
//! assert!(drivers[0].identity_holds() && drivers[1].identity_holds());
//! ```
#![forbid(unsafe_code)]

mod config;
pub mod driver;
pub mod fault;
mod idle;
mod key;
mod stats;
pub mod takeover;

pub use config::{Allowed, PoolConfig, ReuseMode, ReuseModeError, ServerId};
#[cfg(feature = "planted-bug")]
pub use driver::PlantedBug;
pub use driver::{Driver, GrantEffect};
pub use fault::{FaultError, FaultPlan, FaultPoint};
pub use idle::{Checkout, ConnClass, IdleKey, IdlePool, PutResult, RejectReason};
pub use key::{KeyTable, PoolKey, Proto};
pub use stats::ServerStats;
pub use takeover::{
    ConnectReason, GrantFate, Msg, Next, Owner, OwnerStats, Taker, TakerConfig, TakerStats, Ticket,
};
