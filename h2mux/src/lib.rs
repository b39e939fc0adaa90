//! ringway-h2mux: HTTP/2 on both sides of the proxy over the `h2` crate.
//!
//! Generic plumbing only: it knows nothing of ringway's engine. [`io`] bridges glommio's
//! IO traits to tokio's (what `h2` speaks), [`rewind`] replays bytes the caller already
//! read from a stream, [`server`] runs the h2c server handshake on such a stream and
//! sends bodies under flow control, and [`client`] runs the h2c client handshake to a
//! backend server.
#![forbid(unsafe_code)]

pub mod client;
pub mod io;
pub mod meter;
pub mod rewind;
pub mod server;
