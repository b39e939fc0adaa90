//! ringway-pool: sans-IO per-shard backend connection pool and takeover protocol.
#![forbid(unsafe_code)]
