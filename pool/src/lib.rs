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
#![forbid(unsafe_code)]

mod config;
pub mod fault;
mod idle;
mod stats;
pub mod takeover;

pub use config::{Allowed, PoolConfig, ReuseMode, ReuseModeError, ServerId};
pub use fault::{FaultError, FaultPlan, FaultPoint};
pub use idle::{Checkout, ConnClass, IdleKey, IdlePool, PutResult, RejectReason};
pub use stats::ServerStats;
pub use takeover::{
    ConnectReason, GrantFate, Msg, Next, Owner, OwnerStats, Taker, TakerConfig, TakerStats, Ticket,
};
