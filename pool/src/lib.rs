//! ringway-pool: the sans-IO per-shard backend connection pool and the cross-shard
//! takeover protocol.
//!
//! This crate owns the decisions about backend connections that do not need a socket:
//! which pooled connection a request may use ([`ReuseMode`], [`IdlePool`]), when idle
//! connections are closed (limits and [`IdlePool::purge`]), how a shard takes over an idle
//! connection owned by another shard ([`takeover`]: reservation, ticket, grant, deny), and
//! where faults are injected ([`fault`]). It never performs I/O, never reads a clock (time
//! comes in as [`std::time::Instant`]), never spawns or locks, and holds no `unsafe`: the
//! engine drives it with events and carries out what it returns. Everything here is
//! deterministic, so `tests/sim.rs` can replay thousands of interleavings per second.
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
//!
//! // Shard 0 has nothing locally: it becomes a taker.
//! assert!(pools[0].checkout(s, false).is_none());
//! let tcfg = TakerConfig { low_idle: 0, ask_timeout: Duration::from_millis(5) };
//! let mut taker = Taker::new(0, 2, tcfg);
//! let published = [pools[0].idle_count(s), pools[1].idle_count(s)];
//! let allowed = cfg.reuse.allowed(false);
//! let Next::Ask { shard, ticket } = taker.begin(s, allowed, &published, now) else { panic!() };
//! // (reserve slot/buffers/task here; on failure: taker.on_reserve_failed(ticket))
//! let reserve = Msg::<&str>::Reserve { from: 0, server: s, ticket, allowed };
//! // (try_send to `shard`; if the channel is full: taker.on_send_failed(ticket, now))
//!
//! // The owner answers from its pool.
//! let mut owner = Owner::new();
//! let Msg::Reserve { server, ticket, allowed, .. } = reserve else { unreachable!() };
//! let reply = owner.handle_reserve(&mut pools[shard], server, ticket, allowed);
//!
//! // Back on the taker: a grant is never refused.
//! let Msg::Grant { ticket, server, conn, uses } = reply else { panic!("denied") };
//! match taker.on_grant(ticket) {
//!     GrantFate::Deliver => pools[0].adopted(server),
//!     GrantFate::AdoptIdle => { let _ = pools[0].adopt_idle(server, conn, uses, now); }
//! }
//! assert_eq!(pools[0].stats(s).adopted, 1);
//! assert_eq!(pools[1].stats(s).taken_over, 1);
//! assert!(taker.identity_holds());
//! ```
#![forbid(unsafe_code)]

mod config;
pub mod driver;
pub mod fault;
mod idle;
mod stats;
pub mod takeover;

pub use config::{Allowed, PoolConfig, ReuseMode, ReuseModeError, ServerId};
#[cfg(feature = "planted-bug")]
pub use driver::PlantedBug;
pub use driver::{Driver, GrantEffect};
pub use fault::{FaultError, FaultPlan, FaultPoint};
pub use idle::{Checkout, ConnClass, IdleKey, IdlePool, PutResult, RejectReason};
pub use stats::ServerStats;
pub use takeover::{
    ConnectReason, GrantFate, Msg, Next, Owner, OwnerStats, Taker, TakerConfig, TakerStats, Ticket,
};
