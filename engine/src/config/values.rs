//! The kinds of value a setting can hold, and how each is read from a flag and from the
//! TOML file. A kind is a type implementing [`Kind`]: `parse` reads the text a user typed
//! (and is clap's value parser, so a bad flag is refused before anything else runs);
//! `from_toml` reads a TOML value, which is usually that same text as a string, sometimes
//! a native TOML integer or boolean. Both return a message that quotes the value and says
//! what would be accepted; the caller adds which flag or key it came from.
//!
//! Durations, sizes and CPU lists are parsed by `ringway-sys`, shared with the bench tools.
//! What depends on other settings (a route naming a backend, `ADDR@SHARDS` against the
//! shard count, value ranges) is checked later, in `config::build`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ringway_pool::ReuseMode;

/// How one kind of setting value is read from a flag and from the configuration file.
pub trait Kind {
    /// The parsed value.
    type Value: Clone + std::fmt::Debug + Send + Sync + 'static;
    /// What a valid TOML value looks like, for the message when the TOML type is wrong.
    const EXPECTED: &'static str;

    /// Reads the text of a flag (or of a TOML string).
    fn parse(s: &str) -> Result<Self::Value, String>;

    /// Reads a TOML value: a string is parsed as a flag would be; other TOML types only
    /// where a kind says so.
    fn from_toml(v: &toml::Value) -> Result<Self::Value, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            other => Err(wrong_type::<Self>(other)),
        }
    }
}

/// "expected …, found an integer", for a TOML value of the wrong type.
pub fn wrong_type<K: Kind + ?Sized>(v: &toml::Value) -> String {
    format!(
        "expected {}, found {} {v}",
        K::EXPECTED,
        article(v.type_str())
    )
}

fn article(type_str: &str) -> String {
    match type_str.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {type_str}"),
        _ => format!("a {type_str}"),
    }
}

/// Reads a TOML array of values of kind `K` (a repeatable flag's file form).
pub fn from_toml_list<K: Kind>(v: &toml::Value) -> Result<Vec<K::Value>, String> {
    match v {
        toml::Value::Array(items) => items.iter().map(K::from_toml).collect(),
        other => Err(format!(
            "expected an array (the flag is repeatable), each item {}; found {} {other}",
            K::EXPECTED,
            article(other.type_str())
        )),
    }
}

/// A non-negative TOML integer, or the message for a negative one.
fn toml_whole(n: i64) -> Result<u64, String> {
    u64::try_from(n).map_err(|_| format!("'{n}' is not a whole number"))
}

/// Free text, checked later if at all (`--default-backend`, `--fault`).
pub struct Text;
impl Kind for Text {
    type Value = String;
    const EXPECTED: &'static str = "a string";
    fn parse(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }
}

/// A whole number (`64`); ranges are checked in `build`.
pub struct Count;
impl Kind for Count {
    type Value = u64;
    const EXPECTED: &'static str = "a whole number such as 64";
    fn parse(s: &str) -> Result<u64, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a whole number"))
    }
    fn from_toml(v: &toml::Value) -> Result<u64, String> {
        match v {
            toml::Value::Integer(n) => toml_whole(*n),
            toml::Value::String(s) => Self::parse(s),
            other => Err(wrong_type::<Self>(other)),
        }
    }
}

/// A duration (`250ms`, `5s`, `2m`); in the file also an integer number of seconds.
pub struct Dur;
impl Kind for Dur {
    type Value = Duration;
    const EXPECTED: &'static str = "a duration such as \"250ms\" or \"5s\"";
    fn parse(s: &str) -> Result<Duration, String> {
        ringway_sys::parse_duration(s).map_err(|e| e.to_string())
    }
    fn from_toml(v: &toml::Value) -> Result<Duration, String> {
        match v {
            toml::Value::Integer(n) => Self::parse(&n.to_string()),
            toml::Value::String(s) => Self::parse(s),
            other => Err(wrong_type::<Self>(other)),
        }
    }
}

/// A size in bytes (`65536`, `64KiB`, `64k`, `1MiB`); in the file also an integer.
pub struct Size;
impl Kind for Size {
    type Value = u64;
    const EXPECTED: &'static str = "a size such as 65536 or \"64KiB\"";
    fn parse(s: &str) -> Result<u64, String> {
        ringway_sys::parse_size(s).map_err(|e| e.to_string())
    }
    fn from_toml(v: &toml::Value) -> Result<u64, String> {
        match v {
            toml::Value::Integer(n) => toml_whole(*n),
            toml::Value::String(s) => Self::parse(s),
            other => Err(wrong_type::<Self>(other)),
        }
    }
}

/// `on` or `off` (also true/false, yes/no, 1/0); in the file also a TOML boolean.
pub struct OnOff;
impl Kind for OnOff {
    type Value = bool;
    const EXPECTED: &'static str = "on or off (or true/false)";
    fn parse(s: &str) -> Result<bool, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            _ => Err(format!("'{s}' is neither on nor off")),
        }
    }
    fn from_toml(v: &toml::Value) -> Result<bool, String> {
        match v {
            toml::Value::Boolean(b) => Ok(*b),
            toml::Value::String(s) => Self::parse(s),
            other => Err(wrong_type::<Self>(other)),
        }
    }
}

/// `HOST:PORT`, resolved now (a name such as `localhost` is looked up once, at start-up).
pub struct Addr;
impl Kind for Addr {
    type Value = SocketAddr;
    const EXPECTED: &'static str = "an address such as \"127.0.0.1:8080\"";
    fn parse(s: &str) -> Result<SocketAddr, String> {
        parse_addr(s)
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!(
            "'{s}' has no port; expected HOST:PORT such as 127.0.0.1:8080"
        ));
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("'{s}' resolves to no address")),
        Err(e) => Err(format!("'{s}' is not a valid HOST:PORT ({e})")),
    }
}

/// A CPU list such as `0-3,8`; whether the CPUs exist is checked in `build`.
pub struct Cpus;
impl Kind for Cpus {
    type Value = Vec<usize>;
    const EXPECTED: &'static str = "a CPU list such as \"0-3,8\"";
    fn parse(s: &str) -> Result<Vec<usize>, String> {
        ringway_sys::parse_cpu_list(s).map_err(|e| e.to_string())
    }
}

/// A backend connection reuse mode: never, safe, aggressive or always.
pub struct Reuse;
impl Kind for Reuse {
    type Value = ReuseMode;
    const EXPECTED: &'static str = "a reuse mode (never, safe, aggressive, always)";
    fn parse(s: &str) -> Result<ReuseMode, String> {
        s.parse::<ReuseMode>()
            .map_err(|_| format!("'{s}' is not a reuse mode (never, safe, aggressive, always)"))
    }
}

/// A `tracing` log filter (`info`, `ringway=debug,warn`).
pub struct LogFilter;
impl Kind for LogFilter {
    type Value = String;
    const EXPECTED: &'static str = "a log filter such as \"info\"";
    /// `tracing` reads a bare word as a target to enable at every level, so a typo such
    /// as `infoo` would silence every other log: a bare word must be a level here (a
    /// target is written `target=level`).
    fn parse(s: &str) -> Result<String, String> {
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        let bad = || {
            format!("'{s}' is not a log filter (a level: error, warn, info, debug, trace or off; or directives such as ringway=debug,warn)")
        };
        for d in s.split(',').map(str::trim) {
            if d.is_empty() {
                return Err(bad());
            }
            let bare = !d.contains(['=', '[', ':']);
            if bare && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
                return Err(bad());
            }
        }
        match tracing_subscriber::EnvFilter::try_new(s) {
            Ok(_) => Ok(s.to_string()),
            Err(_) => Err(bad()),
        }
    }
}

/// `text` or `json` (`--log-format`, `--access-log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOrJson {
    Text,
    Json,
}

impl std::fmt::Display for TextOrJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextOrJson::Text => "text",
            TextOrJson::Json => "json",
        })
    }
}

pub struct Format;
impl Kind for Format {
    type Value = TextOrJson;
    const EXPECTED: &'static str = "text or json";
    fn parse(s: &str) -> Result<TextOrJson, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(TextOrJson::Text),
            "json" => Ok(TextOrJson::Json),
            _ => Err(format!("'{s}' is neither text nor json")),
        }
    }
}

/// Where the access log goes: `stdout`, `off`, or a file (appended to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(std::path::PathBuf),
    Off,
}

impl std::fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogTarget::Stdout => f.write_str("stdout"),
            AccessLogTarget::File(p) => write!(f, "{}", p.display()),
            AccessLogTarget::Off => f.write_str("off"),
        }
    }
}

pub struct AccessLog;
impl Kind for AccessLog {
    type Value = AccessLogTarget;
    const EXPECTED: &'static str = "\"stdout\", \"off\" or a file path";
    fn parse(s: &str) -> Result<AccessLogTarget, String> {
        match s.trim() {
            "" => Err("an empty path; use stdout, off or a file path".to_string()),
            "stdout" | "-" => Ok(AccessLogTarget::Stdout),
            "off" | "none" => Ok(AccessLogTarget::Off),
            p => Ok(AccessLogTarget::File(p.into())),
        }
    }
}

/// `--listen ADDR[@SHARDS]`: an address, and optionally the only shards that accept on it
/// (like HAProxy's `bind ... thread`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    pub shards: Option<Vec<usize>>,
}

pub struct Listen;
impl Kind for Listen {
    type Value = ListenSpec;
    const EXPECTED: &'static str =
        "an address such as \"127.0.0.1:8080\" or \"127.0.0.1:8080@0-1\"";
    fn parse(s: &str) -> Result<ListenSpec, String> {
        let (addr, shards) = match s.rsplit_once('@') {
            Some((a, shards)) => (a, Some(Cpus::parse(shards)?)),
            None => (s, None),
        };
        Ok(ListenSpec {
            addr: parse_addr(addr)?,
            shards,
        })
    }
}

/// How ringway speaks to one server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// HTTP/1.1 in the clear (`HOST:PORT` or `http://HOST:PORT`).
    Http,
    /// HTTP/1.1 over TLS (`https://HOST:PORT`), with this name as SNI and verified name.
    Https { name: String },
    /// HTTP/2 in the clear with prior knowledge (`h2c://HOST:PORT`): one connection
    /// carries many requests at once (see `upstream/h2conns.rs`).
    H2c,
    /// HTTP/2 over TLS (`h2://HOST:PORT`), ALPN `h2`, with this name as SNI and verified
    /// name; shared like `h2c://`.
    H2 { name: String },
}

impl Scheme {
    /// The name a TLS server is verified as, for `https://` and `h2://`.
    pub fn tls_name(&self) -> Option<&str> {
        match self {
            Scheme::Https { name } | Scheme::H2 { name } => Some(name),
            Scheme::Http | Scheme::H2c => None,
        }
    }

    /// Whether the server speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self, Scheme::H2c | Scheme::H2 { .. })
    }
}

/// `--backend [NAME=]SERVER[,SERVER...]`. A missing name is given in `build`, from the
/// backend's position (`default` for the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub name: Option<String>,
    /// The servers as written, in order: addresses and DNS names.
    pub entries: Vec<ServerEntry>,
}

/// Where a configured server is: an address, or a DNS name resolved at start-up and
/// re-resolved while ringway runs (`dns.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// One server as a backend lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    pub scheme: Scheme,
    pub target: Target,
    /// 0 drains it; for a name, every address it resolves to gets this weight.
    pub weight: u32,
    /// For a name: the addresses it resolved to last (empty until it is resolved).
    pub resolved: Vec<std::net::IpAddr>,
}

impl ServerEntry {
    /// The servers this entry stands for now: its address, or one per resolved address.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        match &self.target {
            Target::Addr(a) => vec![*a],
            Target::Name { port, .. } => self
                .resolved
                .iter()
                .map(|ip| SocketAddr::new(*ip, *port))
                .collect(),
        }
    }
}

/// The largest server weight accepted.
pub const MAX_WEIGHT: u32 = 1000;

/// One server as a backend lists it: `SERVER [weight=N]`.
pub fn parse_weighted_server(s: &str) -> Result<ServerEntry, String> {
    let s = s.trim();
    let (server, weight) = match s.split_once(char::is_whitespace) {
        None => (s, 1),
        Some((server, rest)) => {
            let rest = rest.trim();
            let w = rest
                .strip_prefix("weight=")
                .ok_or_else(|| format!("'{s}': after the server only `weight=N` may follow"))?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("'{s}': weight '{w}' is not a whole number"))?;
            if w > MAX_WEIGHT {
                return Err(format!(
                    "'{s}': weight {w} is out of range (0 to {MAX_WEIGHT}; 0 drains the server)"
                ));
            }
            (server, w)
        }
    };
    let (scheme, target) = parse_server(server)?;
    Ok(ServerEntry {
        scheme,
        target,
        weight,
        resolved: Vec::new(),
    })
}

/// One server of a backend spec: its scheme (`http://`, `https://`, `h2c://` or none) and
/// address or DNS name.
fn parse_server(s: &str) -> Result<(Scheme, Target), String> {
    let s = s.trim();
    let (scheme, rest) = match s.split_once("://") {
        None => ("http", s),
        Some((scheme, rest)) => (scheme, rest),
    };
    let rest = rest.trim_end_matches('/');
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok((Scheme::Http, parse_target(rest)?)),
        "https" | "h2" => {
            let target = parse_target(rest)?;
            let name = match rest.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
                None => rest,
            }
            .trim_end_matches('.')
            .to_string();
            let scheme = if scheme.eq_ignore_ascii_case("h2") {
                Scheme::H2 { name }
            } else {
                Scheme::Https { name }
            };
            Ok((scheme, target))
        }
        "h2c" => Ok((Scheme::H2c, parse_target(rest)?)),
        other => Err(format!(
            "'{s}': unknown scheme '{other}://' (use http://, https://, h2c:// or h2://)"
        )),
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT` (a DNS name, resolved by `dns.rs`, never here).
fn parse_target(s: &str) -> Result<Target, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Target::Addr(a));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "'{s}' has no port; expected HOST:PORT such as 10.0.0.5:9000 or api.internal:9000"
        ));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 => p,
        _ => {
            return Err(format!(
                "'{s}' is not a valid HOST:PORT: '{port}' is not a port (1 to 65535)"
            ))
        }
    };
    if host.starts_with('[') || host.contains(':') {
        return Err(format!("'{s}': '{host}' is not a valid IPv6 address"));
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("'{s}' is not a valid address"));
    }
    check_hostname(host)
        .map_err(|why| format!("'{s}': '{host}' is not a valid host name ({why})"))?;
    Ok(Target::Name {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// A DNS host name as RFC 1123 allows (letters, digits, `-`, and `_` as service
/// discovery names use; labels of 1 to 63 characters, not starting or ending with `-`;
/// 253 characters at most; a final `.` is allowed). All digits and dots is refused: it
/// would be a mistyped address.
pub fn check_hostname(host: &str) -> Result<(), String> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() {
        return Err("empty".into());
    }
    if h.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in h.split('.') {
        if label.is_empty() {
            return Err("an empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label '{label}' is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("'{c}' is not allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label '{label}' starts or ends with '-'"));
        }
    }
    if h.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err("it looks like an IPv4 address but is not one".into());
    }
    Ok(())
}

/// A DNS resolver: `IP` (port 53) or `IP:PORT`, `[IPv6]:PORT`.
pub struct ResolverAddr;
impl Kind for ResolverAddr {
    type Value = SocketAddr;
    const EXPECTED: &'static str =
        "a DNS server address such as \"10.0.0.2\" or \"127.0.0.1:5353\"";
    fn parse(s: &str) -> Result<SocketAddr, String> {
        let t = s.trim();
        if let Ok(a) = t.parse::<SocketAddr>() {
            if a.port() == 0 {
                return Err(format!("'{s}': port 0 is not a DNS server's port"));
            }
            return Ok(a);
        }
        if let Ok(ip) = t.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, 53));
        }
        Err(format!(
            "'{s}' is not a DNS server address (an IP address, optionally with :PORT; a name would need a resolver itself)"
        ))
    }
}

/// Which addresses a name is resolved to (`resolve-family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A and AAAA.
    Any,
    Ipv4,
    Ipv6,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Any => "any",
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

pub struct FamilyKind;
impl Kind for FamilyKind {
    type Value = Family;
    const EXPECTED: &'static str = "an address family: any (A and AAAA), ipv4 (A) or ipv6 (AAAA)";
    fn parse(s: &str) -> Result<Family, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "any" => Ok(Family::Any),
            "ipv4" => Ok(Family::Ipv4),
            "ipv6" => Ok(Family::Ipv6),
            _ => Err(format!("'{s}' is not any, ipv4 or ipv6")),
        }
    }
}

pub struct Backend;
impl Kind for Backend {
    type Value = BackendSpec;
    const EXPECTED: &'static str = "a backend such as \"api=10.0.0.5:9000,10.0.0.6:9000\"";
    fn parse(spec: &str) -> Result<BackendSpec, String> {
        let (name, servers) = match spec.split_once('=') {
            Some((n, s)) => (Some(n.trim().to_string()), s),
            None => (None, spec),
        };
        if let Some(name) = &name {
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
            if name.is_empty() || !name.chars().all(valid) {
                return Err(format!(
                    "'{name}' in '{spec}' is not a valid backend name (letters, digits, - _ .)"
                ));
            }
        }
        let entries = servers
            .split(',')
            .map(parse_weighted_server)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BackendSpec { name, entries })
    }
}

/// How a backend spreads requests over its servers (`balance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round-robin (nginx's).
    RoundRobin,
    /// Least outstanding requests, power of two random choices, weighted.
    LeastRequest,
    /// Consistent hashing (Maglev) on a request key.
    Hash,
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastRequest => "least-request",
            Balance::Hash => "hash",
        })
    }
}

/// The PROXY protocol version sent to a backend's servers (`send-proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header (HAProxy's `send-proxy`).
    V1,
    /// The binary header (HAProxy's `send-proxy-v2`).
    V2,
}

pub struct SendProxyKind;
impl Kind for SendProxyKind {
    type Value = Option<ProxyVersion>;
    const EXPECTED: &'static str = "\"v1\", \"v2\" or \"off\"";
    fn parse(s: &str) -> Result<Option<ProxyVersion>, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(Some(ProxyVersion::V1)),
            "v2" | "2" => Ok(Some(ProxyVersion::V2)),
            "off" | "no" | "none" => Ok(None),
            _ => Err(format!(
                "'{s}' is not a PROXY protocol version (\"v1\", \"v2\" or \"off\")"
            )),
        }
    }
}

pub struct BalanceKind;
impl Kind for BalanceKind {
    type Value = Balance;
    const EXPECTED: &'static str = "round-robin, least-request or hash";
    fn parse(s: &str) -> Result<Balance, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "round-robin" | "roundrobin" => Ok(Balance::RoundRobin),
            "least-request" | "leastrequest" => Ok(Balance::LeastRequest),
            "hash" => Ok(Balance::Hash),
            _ => Err(format!(
                "'{s}' is not a balance algorithm (round-robin, least-request or hash)"
            )),
        }
    }
}

/// What `balance = "hash"` hashes (`hash-on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value (name in lower case).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The request path (without the query).
    Path,
    /// The client's address.
    ClientIp,
}

impl std::fmt::Display for HashOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOn::Header(n) => write!(f, "header:{n}"),
            HashOn::Cookie(n) => write!(f, "cookie:{n}"),
            HashOn::Path => f.write_str("path"),
            HashOn::ClientIp => f.write_str("client-ip"),
        }
    }
}

pub struct HashOnKind;
impl Kind for HashOnKind {
    type Value = HashOn;
    const EXPECTED: &'static str = "header:NAME, cookie:NAME, path or client-ip";
    fn parse(s: &str) -> Result<HashOn, String> {
        let t = s.trim();
        let token = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
        };
        let bad =
            || format!("'{s}' is not a hash key (header:NAME, cookie:NAME, path or client-ip)");
        match t.split_once(':') {
            Some((k, n)) if k.eq_ignore_ascii_case("header") && token(n) => {
                Ok(HashOn::Header(n.to_ascii_lowercase()))
            }
            Some((k, n)) if k.eq_ignore_ascii_case("cookie") && token(n) => {
                Ok(HashOn::Cookie(n.to_string()))
            }
            None if t.eq_ignore_ascii_case("path") || t.eq_ignore_ascii_case("uri") => {
                Ok(HashOn::Path)
            }
            None if t.eq_ignore_ascii_case("client-ip") => Ok(HashOn::ClientIp),
            _ => Err(bad()),
        }
    }
}

/// On which failures a request is retried (`retry-on`), each only for an idempotent
/// request whose body is all sent and before any byte of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// The connect failed (refused, timed out).
    pub connect_failure: bool,
    /// The connection was reset or closed before a response byte.
    pub reset: bool,
    /// No response head within the per-try timeout (`timeout-try`).
    pub timeout: bool,
}

impl std::fmt::Display for RetryOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut v = Vec::new();
        if self.connect_failure {
            v.push("connect-failure");
        }
        if self.reset {
            v.push("reset");
        }
        if self.timeout {
            v.push("timeout");
        }
        if v.is_empty() {
            v.push("none");
        }
        f.write_str(&v.join(","))
    }
}

pub struct RetryOnKind;
impl Kind for RetryOnKind {
    type Value = RetryOn;
    const EXPECTED: &'static str = "a list of connect-failure, reset, timeout (or none)";
    fn parse(s: &str) -> Result<RetryOn, String> {
        let mut r = RetryOn::default();
        for w in s.split(',').map(str::trim) {
            match w.to_ascii_lowercase().as_str() {
                "connect-failure" => r.connect_failure = true,
                "reset" => r.reset = true,
                "timeout" => r.timeout = true,
                "none" => {}
                _ => {
                    return Err(format!(
                        "'{w}' is not a retry condition (connect-failure, reset, timeout or none)"
                    ))
                }
            }
        }
        Ok(r)
    }
    fn from_toml(v: &toml::Value) -> Result<RetryOn, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            toml::Value::Array(items) => {
                let mut words = Vec::new();
                for i in items {
                    match i {
                        toml::Value::String(s) => words.push(s.clone()),
                        toml::Value::Integer(n) => words.push(n.to_string()),
                        other => return Err(wrong_type::<Self>(other)),
                    }
                }
                Self::parse(&words.join(","))
            }
            other => Err(wrong_type::<Self>(other)),
        }
    }
}

/// A range of HTTP status codes (`200-399`, or one code `204`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub lo: u16,
    pub hi: u16,
}

impl StatusRange {
    pub fn contains(&self, s: u16) -> bool {
        (self.lo..=self.hi).contains(&s)
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

pub struct StatusRangeKind;
impl Kind for StatusRangeKind {
    type Value = StatusRange;
    const EXPECTED: &'static str = "a status range such as \"200-399\"";
    fn parse(s: &str) -> Result<StatusRange, String> {
        let bad = || format!("'{s}' is not a status range such as 200-399 (codes 100 to 599)");
        let code = |t: &str| -> Result<u16, String> {
            let n: u16 = t.trim().parse().map_err(|_| bad())?;
            if (100..=599).contains(&n) {
                Ok(n)
            } else {
                Err(bad())
            }
        };
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => (code(s)?, code(s)?),
        };
        if lo > hi {
            return Err(bad());
        }
        Ok(StatusRange { lo, hi })
    }
    fn from_toml(v: &toml::Value) -> Result<StatusRange, String> {
        match v {
            toml::Value::Integer(n) => Self::parse(&n.to_string()),
            toml::Value::String(s) => Self::parse(s),
            other => Err(wrong_type::<Self>(other)),
        }
    }
}

/// An HTTP method token for health checks (`GET`, `HEAD`, `OPTIONS`).
pub struct MethodKind;
impl Kind for MethodKind {
    type Value = String;
    const EXPECTED: &'static str = "an HTTP method such as GET or HEAD";
    fn parse(s: &str) -> Result<String, String> {
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("'{s}' is not an HTTP method such as GET or HEAD"));
        }
        Ok(t.to_ascii_uppercase())
    }
}

/// A health-check path: absolute, printable, no spaces.
pub struct CheckPath;
impl Kind for CheckPath {
    type Value = String;
    const EXPECTED: &'static str = "a path such as \"/healthz\"";
    fn parse(s: &str) -> Result<String, String> {
        if !s.starts_with('/') || !s.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "'{s}' is not a request path (it starts with / and has no spaces)"
            ));
        }
        Ok(s.to_string())
    }
}

/// `--route HOST[/PATH-PREFIX]=NAME`; the name is looked up among the backends in `build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The text as given, for messages.
    pub spec: String,
    /// Lower-case host without port, or `*`.
    pub host: String,
    pub path_prefix: String,
    pub backend: String,
}

pub struct Route;
impl Kind for Route {
    type Value = RouteSpec;
    const EXPECTED: &'static str = "a route such as \"example.com/static=static\"";
    fn parse(spec: &str) -> Result<RouteSpec, String> {
        let (target, name) = spec
            .rsplit_once('=')
            .ok_or_else(|| format!("'{spec}' should be HOST[/PATH-PREFIX]=BACKEND"))?;
        let (host, path) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, "/"),
        };
        let host = host.trim().to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("'{spec}' has an empty host (use * for any host)"));
        }
        Ok(RouteSpec {
            spec: spec.to_string(),
            host,
            path_prefix: path.to_string(),
            backend: name.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_types_each_kind_accepts() {
        let int = toml::Value::Integer(7);
        assert_eq!(Count::from_toml(&int), Ok(7));
        assert_eq!(Dur::from_toml(&int), Ok(Duration::from_secs(7)));
        assert_eq!(Size::from_toml(&int), Ok(7));
        assert_eq!(OnOff::from_toml(&toml::Value::Boolean(false)), Ok(false));
        assert_eq!(OnOff::from_toml(&"on".into()), Ok(true));
        assert_eq!(Size::from_toml(&"16KiB".into()), Ok(16 << 10));
        let e = Count::from_toml(&toml::Value::Integer(-3)).unwrap_err();
        assert!(e.contains("not a whole number"), "{e}");
        let e = OnOff::from_toml(&int).unwrap_err();
        assert_eq!(e, "expected on or off (or true/false), found an integer 7");
        let e = Text::from_toml(&toml::Value::Boolean(true)).unwrap_err();
        assert_eq!(e, "expected a string, found a boolean true");
        let e = from_toml_list::<Listen>(&"127.0.0.1:1".into()).unwrap_err();
        assert!(
            e.starts_with("expected an array (the flag is repeatable), each item an address"),
            "{e}"
        );
    }

    #[test]
    fn specs_parse() {
        let l = Listen::parse("127.0.0.1:0@0-1").unwrap();
        assert_eq!(l.shards, Some(vec![0, 1]));
        let b = Backend::parse("api=127.0.0.1:1,127.0.0.1:2").unwrap();
        assert_eq!(b.name.as_deref(), Some("api"));
        assert_eq!(b.entries.len(), 2);
        assert_eq!(Backend::parse("127.0.0.1:1").unwrap().name, None);
        let schemes = |b: BackendSpec| b.entries.into_iter().map(|e| e.scheme).collect::<Vec<_>>();
        let tls = Backend::parse("api=https://localhost:443,http://127.0.0.1:2").unwrap();
        assert_eq!(
            tls.entries[0].target,
            Target::Name {
                host: "localhost".into(),
                port: 443
            }
        );
        assert_eq!(
            schemes(tls),
            vec![
                Scheme::Https {
                    name: "localhost".into()
                },
                Scheme::Http
            ]
        );
        let h2 = Backend::parse("api=h2c://127.0.0.1:1,127.0.0.1:2").unwrap();
        assert_eq!(schemes(h2), vec![Scheme::H2c, Scheme::Http]);
        assert_eq!(
            schemes(Backend::parse("h2://localhost:1").unwrap()),
            vec![Scheme::H2 {
                name: "localhost".into()
            }]
        );
        assert!(Backend::parse("h3://127.0.0.1:1")
            .unwrap_err()
            .contains("unknown scheme"));
        assert!(Backend::parse("ftp://127.0.0.1:1")
            .unwrap_err()
            .contains("unknown scheme"));
        let named = Backend::parse("api=Api.Internal:9000 weight=3,[::1]:80").unwrap();
        assert_eq!(
            named.entries[0].target,
            Target::Name {
                host: "api.internal".into(),
                port: 9000
            }
        );
        assert_eq!(named.entries[0].weight, 3);
        assert_eq!(
            named.entries[1].target,
            Target::Addr("[::1]:80".parse().unwrap())
        );
        for (bad, why) in [
            ("bad_host!:80", "not a valid host name"),
            ("-api.internal:80", "starts or ends with '-'"),
            ("a..b:80", "an empty label"),
            ("api.internal:0", "is not a port"),
            ("api.internal:99999", "is not a port"),
            ("api.internal", "has no port"),
            ("10.0.0.300:80", "looks like an IPv4 address"),
            ("::1:80", "not a valid IPv6 address"),
        ] {
            let e = Backend::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            ResolverAddr::parse("10.0.0.2").unwrap(),
            "10.0.0.2:53".parse().unwrap()
        );
        assert_eq!(
            ResolverAddr::parse("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert!(ResolverAddr::parse("dns.google").is_err());
        assert!(ResolverAddr::parse("127.0.0.1:0").is_err());
        let r = Route::parse("Example.com/static=static").unwrap();
        assert_eq!(
            (r.host.as_str(), r.path_prefix.as_str(), r.backend.as_str()),
            ("example.com", "/static", "static")
        );
        assert_eq!(Route::parse("*=b").unwrap().path_prefix, "/");
    }
}
