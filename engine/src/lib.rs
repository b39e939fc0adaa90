//! ringway: a thread-per-core io_uring reverse proxy.
//!
//! The binary (`main.rs`) parses flags into a [`config::Config`] and starts a
//! [`shard::Proxy`]. The library form exists so that `ringway demo` and the tests can run
//! the real proxy in-process. See `docs/architecture.md` for how the pieces fit.

pub mod admin;
pub mod backend;
pub mod body;
pub mod buf;
pub mod config;
pub mod demo;
pub mod fd;
pub mod h2front;
pub mod http1;
pub mod listener;
pub mod mesh;
pub mod metrics;
pub mod oneshot;
pub mod proxy;
pub mod route;
pub mod shard;
