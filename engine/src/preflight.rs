//! Checks made before the proxy starts, each with the fix in its message: whether the
//! file descriptor limit can hold the connections the configuration allows, and
//! whether another process already listens on one of our addresses (`SO_REUSEPORT`
//! would silently split the traffic between both; `--reuse-port-shared` says that is
//! intended). Nothing here changes how the proxy runs.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;

/// What `RLIMIT_NOFILE` needs for `config`: two descriptors (client and backend) per
/// client connection the shards may serve, plus a margin for listeners, rings and logs.
pub fn fds_needed(config: &Config) -> u64 {
    let shards = config.placement.shards() as u64;
    (config.max_conns_per_shard as u64)
        .saturating_mul(shards)
        .saturating_mul(2)
        .saturating_add(64 + 8 * shards)
}

/// The warning to log when the soft `RLIMIT_NOFILE` (read from `/proc/self/limits`,
/// no `unsafe`) is below [`fds_needed`]; `None` when it is enough or cannot be read.
pub fn check_fd_limit(config: &Config) -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    fd_warning(&limits, config)
}

/// The soft and hard `RLIMIT_NOFILE` as `/proc/self/limits` gives them.
fn fd_limits(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut cols = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| match v {
        Some("unlimited") => Some(u64::MAX),
        Some(n) => n.parse::<u64>().ok(),
        None => None,
    };
    Some((parse(cols.next())?, parse(cols.next())?))
}

/// The soft `RLIMIT_NOFILE` of this process, if it can be read.
pub fn soft_fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    fd_limits(&limits).map(|(soft, _)| soft)
}

fn fd_warning(limits: &str, config: &Config) -> Option<String> {
    let need = fds_needed(config);
    let (soft, hard) = fd_limits(limits)?;
    if soft >= need {
        return None;
    }
    Some(format!(
        "RLIMIT_NOFILE is {soft} (hard limit {hard}) but --max-conns-per-shard {} x {} shard(s) x 2 needs about {need}: \
         past it accepts and connects fail with EMFILE. Raise it (`ulimit -n {need}`, or LimitNOFILE={need} \
         under systemd) or lower --max-conns-per-shard",
        config.max_conns_per_shard,
        config.placement.shards(),
    ))
}

/// The first listen address another socket already listens on, if any. Port 0 (a
/// fresh port) is never in use.
pub fn address_in_use(addrs: &[SocketAddr]) -> Option<(SocketAddr, io::Error)> {
    addrs
        .iter()
        .filter(|a| a.port() != 0)
        .find_map(|a| probe(*a).err().map(|e| (*a, e)))
}

/// Binds `addr` with `SO_REUSEADDR` but without `SO_REUSEPORT`: Linux refuses that bind
/// while any socket listens on the address (TIME_WAIT leftovers do not count), whether
/// or not that socket set `SO_REUSEPORT`.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    match sock.bind(&addr.into()) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
        // Other errors (address not available, permission) are the real bind's to report.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_address_is_in_use_and_a_closed_one_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(address_in_use(&[addr]).is_some());
        drop(l);
        assert!(address_in_use(&[addr]).is_none());
        assert!(address_in_use(&["127.0.0.1:0".parse().unwrap()]).is_none());
    }
}
