//! ringway: a thread-per-core io_uring reverse proxy.
//!
//! The binary (`main.rs`) parses flags into a [`config::Config`] and starts a
//! [`process::Proxy`]. The library form exists so that `ringway demo` and the tests can
//! run the real proxy in-process. See `docs/architecture.md` for how the pieces fit.
//!
//! Layering, top to bottom (a module only uses those below it):
//! `process` → `shard` → `admin`, `front` (`h1`, `h2`) → `report`, `outcome` →
//! `exchange` → `ctx` → `access_log` → `trace` → `upstream` → `body`, `buf`, `duplex`,
//! `mesh`, `metrics`, `rate`, `route`, `fd`, `warn`, `build_info`, `config`.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod buf;
pub mod build_info;
pub mod config;
pub mod ctx;
pub mod demo;
pub mod dns;
pub mod duplex;
pub mod exchange;
pub mod fd;
pub mod fields;
pub mod front;
pub mod listener;
pub mod mesh;
pub mod metrics;
pub mod oneshot;
pub mod outcome;
pub mod preflight;
pub mod process;
pub mod rate;
pub mod report;
pub mod route;
pub mod shard;
pub mod splice;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod warn;

pub use process::Proxy;
