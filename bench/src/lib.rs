//! ringway-bench: the benchmark origin (`origin`), the load generator (`load`) and the
//! idle-memory probe (`idle`), usable as libraries (ringway's `demo` runs the first two
//! in-process; the engine's idle-memory test runs the third) and as binaries.

#![forbid(unsafe_code)]

pub mod idle;
pub mod load;
pub mod origin;
