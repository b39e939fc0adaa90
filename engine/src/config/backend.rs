//! Per-backend settings: what one backend says about its servers, balancing, checks,
//! timeouts, retries and pool, from a `[backends.NAME]` table of the configuration file
//! (or, for a backend given with `--backend`, from the command-line flags alone).
//!
//! Every key of a backend table is declared once, in [`BACKEND_KEYS`]: its name, what a
//! valid value looks like, the global setting that is its default, and its help. The
//! reference (`docs/configuration.md`) is generated from that list, and a key not in it
//! is refused with the backend's name, the key, the file and the line. The global flags
//! (`--balance`, `--timeout-connect`, `--check-path`, ...) are the defaults of every
//! backend; a backend table overrides them for that backend only.

use std::net::SocketAddr;
use std::time::Duration;

use ringway_pool::ReuseMode;

use super::file::key_line;
use super::values::{
    self, Balance, BalanceKind, CheckPath, Count, Dur, Family, FamilyKind, HashOn, HashOnKind,
    Kind, MethodKind, ProxyVersion, ResolverAddr, RetryOn, RetryOnKind, Reuse, Scheme,
    SendProxyKind, ServerEntry, StatusRange, StatusRangeKind, Target,
};
use super::{ConfigError, Settings};

/// The active health check of a backend (`[backends.NAME.check]`, or the `--check-*`
/// flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    pub method: String,
    pub path: String,
    pub status: StatusRange,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a down server up.
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    pub fall: u32,
}

/// Passive checks (outlier detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive failures that take a server out; 0 = off.
    pub failures: u32,
    pub ejection: Duration,
    pub max_ejection: Duration,
}

/// How the DNS names among a backend's servers are resolved (`dns.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveConfig {
    /// DNS servers to ask; empty: the system's (`/etc/resolv.conf`, and `/etc/hosts`).
    pub resolvers: Vec<SocketAddr>,
    pub family: Family,
    /// Re-resolve every this long whatever the TTL; `None`: honour the TTL, clamped.
    pub interval: Option<Duration>,
    /// An answer's TTL is raised to this (and a failed resolution is retried after it).
    pub ttl_min: Duration,
    /// An answer's TTL is lowered to this.
    pub ttl_max: Duration,
    /// Time one resolution may take.
    pub timeout: Duration,
}

/// One backend, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub name: String,
    /// The servers as configured (addresses and DNS names); `servers`, `schemes` and
    /// `weights` are what they stand for now (see [`BackendConfig::refill`]).
    pub entries: Vec<ServerEntry>,
    pub resolve: ResolveConfig,
    pub servers: Vec<SocketAddr>,
    /// How each server is spoken to, in the same order (plain or TLS, with its name).
    pub schemes: Vec<Scheme>,
    /// Each server's weight, in the same order (0: drained, gets no new requests).
    pub weights: Vec<u32>,
    pub balance: Balance,
    pub hash_on: HashOn,
    pub timeout_connect: Duration,
    pub timeout_backend: Duration,
    /// Per try; `None`: `timeout_backend`.
    pub timeout_try: Option<Duration>,
    pub retries: u32,
    pub retry_on: RetryOn,
    pub reuse: ReuseMode,
    pub pool_max_idle: usize,
    pub max_reuse: Option<u32>,
    pub check: Option<CheckConfig>,
    pub outlier: OutlierConfig,
    /// Send a PROXY protocol header naming the client at the start of every connection
    /// to its servers (HTTP/1.1 servers only; such connections are private to one client
    /// connection, see `exchange::Session`).
    pub send_proxy: Option<ProxyVersion>,
}

impl BackendConfig {
    /// Recomputes `servers`, `schemes` and `weights` from `entries`: each address, and
    /// each address a name resolved to (in order, duplicates once).
    pub fn refill(&mut self) {
        self.servers.clear();
        self.schemes.clear();
        self.weights.clear();
        for e in &self.entries {
            for addr in e.addrs() {
                let dup = self
                    .servers
                    .iter()
                    .zip(&self.schemes)
                    .any(|(a, s)| *a == addr && *s == e.scheme);
                if dup {
                    continue;
                }
                self.servers.push(addr);
                self.schemes.push(e.scheme.clone());
                self.weights.push(e.weight);
            }
        }
    }

    /// Whether any of its servers is a DNS name.
    pub fn has_names(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.target, Target::Name { .. }))
    }
}

/// One key of a backend table.
#[derive(Debug, Clone, Copy)]
pub struct BackendKey {
    pub key: &'static str,
    /// What a valid value looks like.
    pub expected: &'static str,
    /// The global setting (a flag and top-level key) that is its default, if any.
    pub default_from: Option<&'static str>,
    pub doc: &'static str,
}

macro_rules! backend_keys {
    ($( $key:literal : $kind:ty, $from:expr, $doc:literal; )*) => {
        /// Every key a `[backends.NAME]` table may hold.
        pub const BACKEND_KEYS: &[BackendKey] = &[
            $( BackendKey {
                key: $key,
                expected: <$kind as Kind>::EXPECTED,
                default_from: $from,
                doc: $doc,
            }, )*
        ];
    };
}

/// Servers as listed in a table: `"HOST:PORT"` strings (with ` weight=N`), or inline
/// tables `{ address = "HOST:PORT", weight = N }`.
pub struct ServerList;
impl Kind for ServerList {
    type Value = Vec<ServerEntry>;
    const EXPECTED: &'static str =
        "an array of servers such as [\"10.0.0.5:9000\", \"api.internal:9000 weight=2\"]";
    fn parse(s: &str) -> Result<Self::Value, String> {
        s.split(',').map(values::parse_weighted_server).collect()
    }
    fn from_toml(v: &toml::Value) -> Result<Self::Value, String> {
        let toml::Value::Array(items) = v else {
            return Err(values::wrong_type::<Self>(v));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                toml::Value::String(s) => out.push(values::parse_weighted_server(s)?),
                toml::Value::Table(t) => {
                    let addr = match t.get("address") {
                        Some(toml::Value::String(a)) => a.clone(),
                        _ => {
                            return Err(format!(
                                "server {item} needs address = \"HOST:PORT\" (and optionally weight = N)"
                            ))
                        }
                    };
                    if let Some(k) = t.keys().find(|k| *k != "address" && *k != "weight") {
                        return Err(format!(
                            "server {item}: unknown key '{k}' (address and weight only)"
                        ));
                    }
                    let spec = match t.get("weight") {
                        None => addr,
                        Some(toml::Value::Integer(w)) => format!("{addr} weight={w}"),
                        Some(other) => {
                            return Err(format!(
                                "server {item}: weight must be a whole number, found {other}"
                            ))
                        }
                    };
                    out.push(values::parse_weighted_server(&spec)?);
                }
                other => return Err(values::wrong_type::<Self>(other)),
            }
        }
        if out.is_empty() {
            return Err("a backend needs at least one server".to_string());
        }
        Ok(out)
    }
}

/// DNS servers, as a TOML array of `"IP[:PORT]"` strings.
pub struct ResolverList;
impl Kind for ResolverList {
    type Value = Vec<SocketAddr>;
    const EXPECTED: &'static str = "an array of DNS servers such as [\"127.0.0.1:5353\"]";
    fn parse(s: &str) -> Result<Self::Value, String> {
        s.split(',').map(ResolverAddr::parse).collect()
    }
    fn from_toml(v: &toml::Value) -> Result<Self::Value, String> {
        values::from_toml_list::<ResolverAddr>(v)
    }
}

/// A `[backends.NAME.check]` table (its keys are listed in [`CHECK_KEYS`]).
pub struct CheckTable;
impl Kind for CheckTable {
    type Value = ();
    const EXPECTED: &'static str =
        "a table ([backends.NAME.check]) with path, interval, timeout, rise, fall, method, status";
    fn parse(_: &str) -> Result<(), String> {
        Err(Self::EXPECTED.to_string())
    }
}

backend_keys! {
    "servers": ServerList, None,
        "The servers: \"HOST:PORT\" (or http://, https://, h2c://, h2:// as for --backend), each optionally followed by ` weight=N` (0 drains it), or { address = \"...\", weight = N }. Required.";
    "balance": BalanceKind, Some("balance"), "round-robin, least-request or hash.";
    "hash-on": HashOnKind, Some("hash-on"), "With balance = \"hash\": header:NAME, cookie:NAME, path or client-ip.";
    "timeout-connect": Dur, Some("timeout-connect"), "Time allowed to connect to one of its servers.";
    "timeout-backend": Dur, Some("timeout-backend"), "Time a server may stay silent while a response is expected.";
    "timeout-try": Dur, Some("timeout-try"), "Longest silence of a server during one try; a try that times out before a response byte may be retried (retry-on timeout).";
    "retries": Count, Some("retries"), "Further tries on another server (idempotent requests, body all sent, no response byte yet).";
    "retry-on": RetryOnKind, Some("retry-on"), "Which failures are retried: [\"connect-failure\", \"reset\", \"timeout\"].";
    "reuse": Reuse, Some("reuse"), "Connection reuse mode of its servers: never, safe, aggressive, always.";
    "pool-max-idle": Count, Some("pool-max-idle"), "Idle connections kept per server per shard.";
    "max-reuse": Count, Some("max-reuse"), "Requests one connection may carry (0 = unlimited).";
    "outlier-failures": Count, Some("outlier-failures"), "Passive checks: consecutive failures that take a server out (0 = off).";
    "outlier-ejection": Dur, Some("outlier-ejection"), "First time out after passive checks; doubles while it keeps failing.";
    "outlier-max-ejection": Dur, Some("outlier-max-ejection"), "Longest time out after passive checks.";
    "send-proxy": SendProxyKind, None, "PROXY protocol header sent at the start of each connection to its servers, naming the client (the address from --accept-proxy, else the peer): \"v1\" (text, HAProxy's send-proxy), \"v2\" (binary, send-proxy-v2) or \"off\" (default). Such a connection is private to its client connection: never pooled for others, never taken over by another shard, closed with the client. Health checks then send a LOCAL header (v2) or PROXY UNKNOWN (v1). HTTP/1.1 servers only: refused with h2:// and h2c:// servers.";
    "resolvers": ResolverList, Some("resolvers"), "DNS servers that resolve its servers given by name; [] or absent: the global resolvers (default: /etc/resolv.conf and /etc/hosts).";
    "resolve-family": FamilyKind, Some("resolve-family"), "Which addresses its names resolve to: any (A and AAAA), ipv4, ipv6.";
    "resolve-interval": Dur, Some("resolve-interval"), "Re-resolve its names this often whatever the TTL (default: honour the TTL between resolve-ttl-min and resolve-ttl-max).";
    "resolve-ttl-min": Dur, Some("resolve-ttl-min"), "Shortest time between two resolutions of a name (a lower TTL is raised to it; a failed resolution is retried after it).";
    "resolve-ttl-max": Dur, Some("resolve-ttl-max"), "Longest time between two resolutions of a name (a higher TTL is lowered to it).";
    "resolve-timeout": Dur, Some("resolve-timeout"), "Time one resolution of a name may take before it counts as failed.";
    "check": CheckTable, None, "The active health check: a [backends.NAME.check] table (keys below); without it, the --check-* flags apply (no check unless --check-path is given).";
}

/// Every key a `[backends.NAME.check]` table may hold.
pub const CHECK_KEYS: &[BackendKey] = &[
    BackendKey {
        key: "path",
        expected: CheckPath::EXPECTED,
        default_from: Some("check-path"),
        doc: "Path of the check request. Required unless --check-path is given.",
    },
    BackendKey {
        key: "method",
        expected: MethodKind::EXPECTED,
        default_from: Some("check-method"),
        doc: "Method of the check request.",
    },
    BackendKey {
        key: "status",
        expected: StatusRangeKind::EXPECTED,
        default_from: Some("check-status"),
        doc: "Statuses that pass.",
    },
    BackendKey {
        key: "interval",
        expected: Dur::EXPECTED,
        default_from: Some("check-interval"),
        doc: "Time between two checks of one server.",
    },
    BackendKey {
        key: "timeout",
        expected: Dur::EXPECTED,
        default_from: Some("check-timeout"),
        doc: "Time one check may take; then it failed.",
    },
    BackendKey {
        key: "rise",
        expected: Count::EXPECTED,
        default_from: Some("check-rise"),
        doc: "Consecutive passes that bring a down server up.",
    },
    BackendKey {
        key: "fall",
        expected: Count::EXPECTED,
        default_from: Some("check-fall"),
        doc: "Consecutive failures that take an up server down.",
    },
];

/// The `[backends]` part of a configuration file: each backend's table, with the lines
/// of its keys, in file order.
#[derive(Debug, Clone, Default)]
pub struct BackendsSection {
    pub tables: Vec<BackendTable>,
}

#[derive(Debug, Clone)]
pub struct BackendTable {
    pub name: String,
    pub line: usize,
    /// Key, value, line.
    pub entries: Vec<(String, toml::Value, usize)>,
    /// The check table's keys, values and lines.
    pub check: Option<Vec<(String, toml::Value, usize)>>,
}

impl BackendsSection {
    /// Reads the `[backends]` tables of `value` (the `backends` key of the file `path`,
    /// whose text is `text`, for the lines); `None` if it has none.
    pub fn parse(
        path: &str,
        text: &str,
        value: &toml::Value,
    ) -> Result<Option<BackendsSection>, ConfigError> {
        let toml::Value::Table(backends) = value else {
            return Err(ConfigError::new(
                "backends",
                format!("each backend is a table [backends.NAME] (in {path})"),
            ));
        };
        let mut tables = Vec::new();
        for (name_s, table) in backends {
            let bline = header_line(text, &format!("backends.{name_s}")).unwrap_or(1);
            let toml::Value::Table(table) = table else {
                return Err(ConfigError::new(
                    &format!("backends.{name_s}"),
                    format!("a backend is a table [backends.{name_s}] (in {path}, line {bline})"),
                ));
            };
            let mut entries = Vec::new();
            let mut check = None;
            for (key, value) in table {
                let kline = key_line(text, bline, key).unwrap_or(bline);
                if !BACKEND_KEYS.iter().any(|k| k.key == key) {
                    return Err(ConfigError::new(
                        &format!("backends.{name_s}.{key}"),
                        format!(
                            "unknown key of backend '{name_s}' (in {path}, line {kline}); a backend table takes: {}",
                            BACKEND_KEYS.iter().map(|k| k.key).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                if key == "check" {
                    let cline =
                        header_line(text, &format!("backends.{name_s}.check")).unwrap_or(kline);
                    let toml::Value::Table(t) = value else {
                        return Err(ConfigError::new(
                            &format!("backends.{name_s}.check"),
                            format!("{} (in {path}, line {kline})", CheckTable::EXPECTED),
                        ));
                    };
                    let mut c = Vec::new();
                    for (k, v) in t {
                        let l = key_line(text, cline, k).unwrap_or(cline);
                        if !CHECK_KEYS.iter().any(|x| x.key == k) {
                            return Err(ConfigError::new(
                                &format!("backends.{name_s}.check.{k}"),
                                format!(
                                    "unknown key of the health check of backend '{name_s}' (in {path}, line {l}); it takes: {}",
                                    CHECK_KEYS.iter().map(|k| k.key).collect::<Vec<_>>().join(", ")
                                ),
                            ));
                        }
                        c.push((k.clone(), v.clone(), l));
                    }
                    check = Some(c);
                } else {
                    entries.push((key.clone(), value.clone(), kline));
                }
            }
            tables.push(BackendTable {
                name: name_s.clone(),
                line: bline,
                entries,
                check,
            });
        }
        if tables.is_empty() {
            return Ok(None);
        }
        // The first backend in the file is the default one: keep the file's order.
        tables.sort_by_key(|t| t.line);
        Ok(Some(BackendsSection { tables }))
    }
}

/// The line of the `[NAME]` table header (also written with spaces or quotes).
fn header_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim();
            l.starts_with('[')
                && !l.starts_with("[[")
                && l.trim_start_matches('[')
                    .split(']')
                    .next()
                    .is_some_and(|h| h.replace([' ', '"'], "") == name)
        })
        .map(|i| i + 1)
}

/// The defaults every backend starts from: the resolved global settings.
pub fn defaults(s: &Settings) -> Result<BackendConfig, ConfigError> {
    let max_reuse = match s.max_reuse.value {
        0 => None,
        n => Some(u32::try_from(n).map_err(|_| s.max_reuse.err("is out of range"))?),
    };
    let check = s.check_path.value.as_ref().map(|path| CheckConfig {
        method: s.check_method.value.clone(),
        path: path.clone(),
        status: s.check_status.value,
        interval: s.check_interval.value,
        timeout: s.check_timeout.value,
        rise: s.check_rise.value.min(u32::MAX as u64) as u32,
        fall: s.check_fall.value.min(u32::MAX as u64) as u32,
    });
    let small = |c: &super::Setting<u64>| -> Result<u32, ConfigError> {
        u32::try_from(c.value).map_err(|_| c.err(format!("{} is out of range", c.value)))
    };
    let resolve = ResolveConfig {
        resolvers: s.resolvers.value.clone(),
        family: s.resolve_family.value,
        interval: s.resolve_interval.value,
        ttl_min: s.resolve_ttl_min.value,
        ttl_max: s.resolve_ttl_max.value,
        timeout: s.resolve_timeout.value,
    };
    resolve_valid(&resolve).map_err(|(key, msg)| match key {
        "resolve-interval" => s.resolve_interval.err(msg),
        "resolve-ttl-min" => s.resolve_ttl_min.err(msg),
        "resolve-ttl-max" => s.resolve_ttl_max.err(msg),
        _ => s.resolve_timeout.err(msg),
    })?;
    let d = BackendConfig {
        name: String::new(),
        entries: Vec::new(),
        resolve,
        servers: Vec::new(),
        schemes: Vec::new(),
        weights: Vec::new(),
        balance: s.balance.value.clone(),
        hash_on: s.hash_on.value.clone(),
        timeout_connect: s.timeout_connect.value,
        timeout_backend: s.timeout_backend.value,
        timeout_try: s.timeout_try.value,
        retries: small(&s.retries)?,
        retry_on: s.retry_on.value,
        reuse: s.reuse.value,
        pool_max_idle: usize::try_from(s.pool_max_idle.value.min(1_000_000)).unwrap_or(0),
        max_reuse,
        check,
        outlier: OutlierConfig {
            failures: small(&s.outlier_failures)?,
            ejection: s.outlier_ejection.value,
            max_ejection: s.outlier_max_ejection.value,
        },
        send_proxy: None,
    };
    if let Some(c) = &d.check {
        check_valid(c).map_err(|(key, msg)| match key {
            "rise" => s.check_rise.err(msg),
            "fall" => s.check_fall.err(msg),
            "interval" => s.check_interval.err(msg),
            _ => s.check_timeout.err(msg),
        })?;
    }
    for t in [&s.outlier_ejection, &s.outlier_max_ejection] {
        if t.value.is_zero() {
            return Err(t.err("must be greater than zero"));
        }
    }
    if let Some(t) = &s.timeout_try.value {
        if t.is_zero() {
            return Err(s.timeout_try.err("must be greater than zero"));
        }
    }
    Ok(d)
}

/// What must hold for the resolution settings; the key and the message otherwise.
fn resolve_valid(r: &ResolveConfig) -> Result<(), (&'static str, String)> {
    let (lo, hi) = (Duration::from_millis(10), Duration::from_secs(86_400));
    let within = |d: Duration| d >= lo && d <= hi;
    if let Some(i) = r.interval {
        if !within(i) {
            return Err((
                "resolve-interval",
                format!("{i:?} is out of range (10ms to 1 day)"),
            ));
        }
    }
    if !within(r.ttl_min) {
        return Err((
            "resolve-ttl-min",
            format!("{:?} is out of range (10ms to 1 day)", r.ttl_min),
        ));
    }
    if !within(r.ttl_max) {
        return Err((
            "resolve-ttl-max",
            format!("{:?} is out of range (10ms to 1 day)", r.ttl_max),
        ));
    }
    if r.ttl_max < r.ttl_min {
        return Err((
            "resolve-ttl-max",
            format!("{:?} is below resolve-ttl-min ({:?})", r.ttl_max, r.ttl_min),
        ));
    }
    if r.timeout.is_zero() || r.timeout > Duration::from_secs(60) {
        return Err((
            "resolve-timeout",
            format!("{:?} is out of range (more than 0 to 60s)", r.timeout),
        ));
    }
    Ok(())
}

/// What must hold for a health check; the key and the message otherwise.
fn check_valid(c: &CheckConfig) -> Result<(), (&'static str, String)> {
    if c.rise == 0 || c.rise > 1000 {
        return Err(("rise", format!("{} is out of range (1 to 1000)", c.rise)));
    }
    if c.fall == 0 || c.fall > 1000 {
        return Err(("fall", format!("{} is out of range (1 to 1000)", c.fall)));
    }
    if c.interval < Duration::from_millis(10) {
        return Err(("interval", "must be at least 10ms".to_string()));
    }
    if c.timeout.is_zero() {
        return Err(("timeout", "must be greater than zero".to_string()));
    }
    Ok(())
}

/// A backend from its `[backends.NAME]` table, on top of the defaults.
pub fn from_table(
    path: &str,
    t: &BackendTable,
    defaults: &BackendConfig,
) -> Result<BackendConfig, ConfigError> {
    let mut b = defaults.clone();
    b.name = t.name.clone();
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if t.name.is_empty() || !t.name.chars().all(valid) {
        return Err(ConfigError::new(
            &format!("backends.{}", t.name),
            format!(
                "'{}' is not a valid backend name (letters, digits, - _ .) (in {path}, line {})",
                t.name, t.line
            ),
        ));
    }
    let err = |key: &str, line: usize, msg: String| {
        ConfigError::new(
            &format!("backends.{}.{key}", t.name),
            format!("{msg} (backend '{}', in {path}, line {line})", t.name),
        )
    };
    fn get<K: Kind>(
        v: &toml::Value,
        key: &str,
        line: usize,
        err: &dyn Fn(&str, usize, String) -> ConfigError,
    ) -> Result<K::Value, ConfigError> {
        K::from_toml(v).map_err(|m| err(key, line, m))
    }
    let mut have_servers = false;
    for (key, v, line) in &t.entries {
        let line = *line;
        match key.as_str() {
            "servers" => {
                b.entries = get::<ServerList>(v, key, line, &err)?;
                have_servers = true;
                b.refill();
            }
            "resolvers" => {
                let list = get::<ResolverList>(v, key, line, &err)?;
                if !list.is_empty() {
                    b.resolve.resolvers = list;
                }
            }
            "resolve-family" => b.resolve.family = get::<FamilyKind>(v, key, line, &err)?,
            "resolve-interval" => b.resolve.interval = Some(get::<Dur>(v, key, line, &err)?),
            "resolve-ttl-min" => b.resolve.ttl_min = get::<Dur>(v, key, line, &err)?,
            "resolve-ttl-max" => b.resolve.ttl_max = get::<Dur>(v, key, line, &err)?,
            "resolve-timeout" => b.resolve.timeout = get::<Dur>(v, key, line, &err)?,
            "balance" => b.balance = get::<BalanceKind>(v, key, line, &err)?,
            "hash-on" => b.hash_on = get::<HashOnKind>(v, key, line, &err)?,
            "timeout-connect" => {
                b.timeout_connect = positive(get::<Dur>(v, key, line, &err)?, key, line, &err)?
            }
            "timeout-backend" => {
                b.timeout_backend = positive(get::<Dur>(v, key, line, &err)?, key, line, &err)?
            }
            "timeout-try" => {
                b.timeout_try = Some(positive(get::<Dur>(v, key, line, &err)?, key, line, &err)?)
            }
            "retries" => {
                b.retries = ranged(get::<Count>(v, key, line, &err)?, 0, 16, key, line, &err)?
            }
            "retry-on" => b.retry_on = get::<RetryOnKind>(v, key, line, &err)?,
            "reuse" => b.reuse = get::<Reuse>(v, key, line, &err)?,
            "pool-max-idle" => {
                b.pool_max_idle = ranged(
                    get::<Count>(v, key, line, &err)?,
                    0,
                    1_000_000,
                    key,
                    line,
                    &err,
                )? as usize
            }
            "max-reuse" => {
                b.max_reuse = match ranged(
                    get::<Count>(v, key, line, &err)?,
                    0,
                    u32::MAX as u64,
                    key,
                    line,
                    &err,
                )? {
                    0 => None,
                    n => Some(n),
                }
            }
            "outlier-failures" => {
                b.outlier.failures =
                    ranged(get::<Count>(v, key, line, &err)?, 0, 1000, key, line, &err)?
            }
            "outlier-ejection" => {
                b.outlier.ejection = positive(get::<Dur>(v, key, line, &err)?, key, line, &err)?
            }
            "outlier-max-ejection" => {
                b.outlier.max_ejection = positive(get::<Dur>(v, key, line, &err)?, key, line, &err)?
            }
            "send-proxy" => b.send_proxy = get::<SendProxyKind>(v, key, line, &err)?,
            other => return Err(err(other, line, "unknown key".to_string())),
        }
    }
    if !have_servers {
        return Err(err(
            "servers",
            t.line,
            "missing: a backend needs servers = [\"HOST:PORT\", ...]".to_string(),
        ));
    }
    resolve_valid(&b.resolve).map_err(|(key, msg)| {
        let line = t
            .entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map_or(t.line, |(_, _, l)| *l);
        err(key, line, msg)
    })?;
    if b.send_proxy.is_some() {
        // An HTTP/2 connection carries many clients' streams: it cannot start with one
        // client's PROXY header (private HTTP/2 connections per client are not built).
        if let Some(i) = b
            .entries
            .iter()
            .position(|e| matches!(e.scheme, Scheme::H2c | Scheme::H2 { .. }))
        {
            let line = t
                .entries
                .iter()
                .find(|(k, _, _)| k == "send-proxy")
                .map_or(t.line, |e| e.2);
            return Err(err(
                "send-proxy",
                line,
                format!(
                    "not supported with the HTTP/2 server {} (h2:// and h2c:// connections are shared by many clients; send-proxy needs HTTP/1.1 servers)",
                    b.entries[i].target
                ),
            ));
        }
    }
    if let Some(entries) = &t.check {
        let mut c = match &defaults.check {
            Some(c) => c.clone(),
            None => CheckConfig {
                method: "GET".to_string(),
                path: String::new(),
                status: StatusRange { lo: 200, hi: 399 },
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
            },
        };
        let cerr = |key: &str, line: usize, msg: String| {
            ConfigError::new(
                &format!("backends.{}.check.{key}", t.name),
                format!("{msg} (backend '{}', in {path}, line {line})", t.name),
            )
        };
        let mut lines = std::collections::HashMap::new();
        for (key, v, line) in entries {
            let line = *line;
            lines.insert(key.as_str(), line);
            match key.as_str() {
                "path" => c.path = get::<CheckPath>(v, key, line, &cerr)?,
                "method" => c.method = get::<MethodKind>(v, key, line, &cerr)?,
                "status" => c.status = get::<StatusRangeKind>(v, key, line, &cerr)?,
                "interval" => c.interval = get::<Dur>(v, key, line, &cerr)?,
                "timeout" => c.timeout = get::<Dur>(v, key, line, &cerr)?,
                "rise" => c.rise = get::<Count>(v, key, line, &cerr)?.min(u32::MAX as u64) as u32,
                "fall" => c.fall = get::<Count>(v, key, line, &cerr)?.min(u32::MAX as u64) as u32,
                other => return Err(cerr(other, line, "unknown key".to_string())),
            }
        }
        if c.path.is_empty() {
            return Err(cerr(
                "path",
                t.line,
                "missing: a health check needs path = \"/...\" (or give --check-path)".to_string(),
            ));
        }
        check_valid(&c)
            .map_err(|(key, msg)| cerr(key, lines.get(key).copied().unwrap_or(t.line), msg))?;
        b.check = Some(c);
    }
    Ok(b)
}

fn positive(
    d: Duration,
    key: &str,
    line: usize,
    err: &dyn Fn(&str, usize, String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(err(key, line, "must be greater than zero".to_string()));
    }
    Ok(d)
}

fn ranged(
    n: u64,
    min: u64,
    max: u64,
    key: &str,
    line: usize,
    err: &dyn Fn(&str, usize, String) -> ConfigError,
) -> Result<u32, ConfigError> {
    if n < min || n > max {
        return Err(err(
            key,
            line,
            format!("{n} is out of range ({min} to {max})"),
        ));
    }
    Ok(n.min(u32::MAX as u64) as u32)
}
