//! What a load run is asked to do ([`LoadConfig`]) and its checked form ([`Plan`]).
//!
//! `LoadConfig` is the public contract shared by the `ringway-bench` binary and by
//! `ringway demo`, which builds one in-process. Everything a user can get wrong (a URL we
//! cannot reach, zero connections, a rate of zero) is refused here, once, with a message
//! that says what to change, so the shards never see an invalid plan. This module owns no
//! sockets and does no I/O beyond resolving the URL's host.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

/// A load run's parameters. `Default` gives a 10 s, 10-connection HTTP/1.1 GET closed loop.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://HOST:PORT/path` (only plain `http://`; HTTP/2 is h2c prior knowledge).
    pub url: String,
    /// Connections in total, spread over the threads.
    pub connections: usize,
    /// How long to measure (after the warm-up). Ignored when `requests` is set.
    pub duration: Option<Duration>,
    /// Measure exactly this many requests (after the warm-up), then stop.
    pub requests: Option<u64>,
    /// Time spent sending requests before measuring; those requests are not recorded.
    pub warmup: Duration,
    /// Open loop: requests per second in total, sent on a fixed schedule; latency is
    /// measured from each request's intended send time. `None`: closed loop.
    pub rate: Option<f64>,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    pub streams: usize,
    /// HTTP/1.1: send `Connection: close` and open a new connection per request.
    pub close: bool,
    /// Request method.
    pub method: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Request body size in bytes (sent with `Content-Length`), 0 for none.
    pub body_size: usize,
    /// Pin one executor on each listed CPU (overrides `threads`).
    pub cpus: Option<Vec<usize>>,
    /// Unpinned executors to run when `cpus` is `None`.
    pub threads: usize,
    /// Per-request limit: connect, and each wait for response bytes.
    pub timeout: Duration,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080/".to_string(),
            connections: 10,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            warmup: Duration::ZERO,
            rate: None,
            http2: false,
            streams: 1,
            close: false,
            method: "GET".to_string(),
            headers: Vec::new(),
            body_size: 0,
            cpus: None,
            threads: 1,
            timeout: Duration::from_secs(10),
            progress: false,
        }
    }
}

/// Where the requests go, parsed from [`LoadConfig::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The resolved address to connect to.
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port` as written in the URL).
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// When a run stops measuring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long past the warm-up.
    After(Duration),
    /// After this many measured requests in total.
    Count(u64),
}

/// A checked [`LoadConfig`]: what each shard needs, nothing left to validate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    pub stop: Stop,
    pub warmup: Duration,
    /// CPUs to pin to, one executor each; `None` entries run unpinned.
    pub shards: Vec<Option<usize>>,
    pub connections: usize,
    pub streams: usize,
    pub rate: Option<f64>,
    pub http2: bool,
    pub close: bool,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body_size: usize,
    pub timeout: Duration,
    pub progress: bool,
}

impl Plan {
    /// Validates `cfg` and resolves its URL.
    pub fn from_config(cfg: &LoadConfig) -> anyhow::Result<Plan> {
        let target = parse_url(&cfg.url)?;
        if cfg.connections == 0 {
            bail!("--connections must be at least 1");
        }
        let stop = match (cfg.requests, cfg.duration) {
            (Some(0), _) => bail!("--requests must be at least 1"),
            (Some(n), _) => Stop::Count(n),
            (None, Some(d)) if d.is_zero() => bail!("--duration must be longer than 0s"),
            (None, Some(d)) => Stop::After(d),
            (None, None) => bail!("give a duration (-d 10s) or a request count (-n 100000)"),
        };
        if let Some(r) = cfg.rate {
            if !(r.is_finite() && r > 0.0) {
                bail!("--rate must be a positive number of requests per second, got {r}");
            }
        }
        if cfg.http2 && cfg.close {
            bail!("--close is an HTTP/1.1 option; drop it or drop --http2");
        }
        let streams = if cfg.http2 { cfg.streams.max(1) } else { 1 };
        if cfg.timeout.is_zero() {
            bail!("--timeout must be longer than 0s");
        }
        if cfg.method.is_empty() || !cfg.method.bytes().all(|b| b.is_ascii_uppercase()) {
            bail!(
                "--method must be an upper-case HTTP method such as GET, got {:?}",
                cfg.method
            );
        }
        for (name, value) in &cfg.headers {
            let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
            if name.is_empty() || bad(name) || bad(value) || name.contains(':') {
                bail!("bad header {name:?}: {value:?}; give headers as 'Name: value'");
            }
        }
        let shards: Vec<Option<usize>> = match &cfg.cpus {
            Some(cpus) if cpus.is_empty() => bail!("--cpus lists no CPU"),
            Some(cpus) => cpus.iter().map(|&c| Some(c)).collect(),
            None if cfg.threads == 0 => bail!("--threads must be at least 1"),
            None => vec![None; cfg.threads],
        };
        // More shards than connections would leave executors with nothing to do.
        let mut shards = shards;
        shards.truncate(cfg.connections);
        Ok(Plan {
            target,
            stop,
            warmup: cfg.warmup,
            shards,
            connections: cfg.connections,
            streams,
            rate: cfg.rate,
            http2: cfg.http2,
            close: cfg.close,
            method: cfg.method.clone(),
            headers: cfg.headers.clone(),
            body_size: cfg.body_size,
            timeout: cfg.timeout,
            progress: cfg.progress,
        })
    }

    /// How many of the connections shard `shard` opens (spread evenly, first ones get more).
    pub fn connections_of(&self, shard: usize) -> usize {
        let n = self.shards.len();
        self.connections / n + usize::from(shard < self.connections % n)
    }

    /// The global index of the first connection of `shard`.
    pub fn first_connection_of(&self, shard: usize) -> usize {
        (0..shard).map(|s| self.connections_of(s)).sum()
    }

    /// Request slots in the whole run: connections × streams (one per HTTP/1.1 connection).
    pub fn slots(&self) -> usize {
        self.connections * self.streams
    }

    /// With `Stop::Count`, how many measured requests slot `slot` sends.
    pub fn quota_of(&self, slot: usize) -> Option<u64> {
        match self.stop {
            Stop::Count(n) => {
                let slots = self.slots() as u64;
                Some(n / slots + u64::from((slot as u64) < n % slots))
            }
            Stop::After(_) => None,
        }
    }
}

/// Parses `http://host[:port][/path]` into a [`Target`].
pub fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = match url.strip_prefix("http://") {
        Some(r) => r,
        None if url.starts_with("https://") => {
            bail!("{url}: https is not supported yet; use http:// (h2c with --http2)")
        }
        None => bail!("{url}: give a URL such as http://127.0.0.1:8080/"),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() {
        bail!("{url}: the URL has no host");
    }
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => authority.contains(':'),
    };
    let with_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {with_port}"))?
        .next()
        .with_context(|| format!("{url}: {with_port} resolves to no address"))?;
    Ok(Target {
        addr,
        authority: authority.to_string(),
        path,
    })
}

/// Parses `Name: value` into a header pair.
pub fn parse_header(s: &str) -> anyhow::Result<(String, String)> {
    let (name, value) = s
        .split_once(':')
        .with_context(|| format!("{s:?} is not a header; give it as 'Name: value'"))?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_address_authority_and_path() {
        let t = parse_url("http://127.0.0.1:8080/size/10?x=1").ok();
        assert_eq!(
            t.map(|t| (t.addr.port(), t.authority, t.path)),
            Some((
                8080,
                "127.0.0.1:8080".to_string(),
                "/size/10?x=1".to_string()
            ))
        );
        let t = parse_url("http://127.0.0.1").ok();
        assert_eq!(t.map(|t| (t.addr.port(), t.path)), Some((80, "/".into())));
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("127.0.0.1:80").is_err());
    }

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_header("X-A:  b ").ok(),
            Some(("X-A".to_string(), "b".to_string()))
        );
    }

    #[test]
    fn connections_and_quotas_spread_exactly() {
        let cfg = LoadConfig {
            url: "http://127.0.0.1:1/".into(),
            connections: 7,
            requests: Some(1000),
            threads: 3,
            ..LoadConfig::default()
        };
        let plan = Plan::from_config(&cfg).ok();
        let Some(plan) = plan else {
            panic!("valid config refused")
        };
        let conns: Vec<usize> = (0..3).map(|s| plan.connections_of(s)).collect();
        assert_eq!(conns, vec![3, 2, 2]);
        assert_eq!(plan.first_connection_of(2), 5);
        let total: u64 = (0..7).filter_map(|s| plan.quota_of(s)).sum();
        assert_eq!(total, 1000);
    }
}
