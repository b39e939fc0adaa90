//! ringway-bench: the benchmark origin (`origin`) and the load generator (`load`),
//! usable as libraries (ringway's `demo` runs both in-process) and as binaries.

#![forbid(unsafe_code)]

pub mod load;
pub mod origin;
