//! ringway-sys: the small things the proxy (`ringway`) and the bench tools
//! (`ringway-bench`, `ringway-origin`) must agree on, kept here once so they cannot drift:
//!
//! - [`parse_duration`], [`parse_size`] and [`parse_cpu_list`]: how a user writes a
//!   duration (`250ms`, `5s`, `2m`), a size (`65536`, `64KiB`) and a CPU list (`0-3,8`),
//!   on a flag or in a configuration file;
//! - [`memlock`]: the `RLIMIT_MEMLOCK` check every glommio program runs before it starts an
//!   executor, with the one piece of advice the documentation gives.
//!
//! This crate knows nothing of glommio, sockets or the proxy's configuration; it never
//! panics on input, and it has no `unsafe` (limits are read from `/proc`).

#![forbid(unsafe_code)]

mod cpus;
mod duration;
pub mod memlock;
mod size;

pub use cpus::{format_cpu_list, parse_cpu_list};
pub use duration::{parse_duration, MAX_DURATION};
pub use size::parse_size;

/// A value a user wrote that does not parse. The message quotes the value and shows
/// what would have been accepted; the caller adds which flag or key it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("'{0}' is not a duration (examples: 250ms, 5s, 2m, 100us; a bare number is seconds)")]
    Duration(String),
    #[error("'{0}' is not a duration of at most a year")]
    DurationTooLong(String),
    #[error("'{0}' is not a size (examples: 65536, 64KiB, 64k, 1MiB)")]
    Size(String),
    #[error("'{list}': {why} (example: 0-3,8)")]
    CpuList { list: String, why: String },
}
