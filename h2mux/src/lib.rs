//! ringway-h2mux: HTTP/2 on both sides of the proxy over the `h2` crate.

pub mod io;
