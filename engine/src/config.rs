//! Command line and configuration file: what a user can say, and its validation.
//!
//! Flags and the TOML file carry the same settings under the same names (`--pool-max-idle`
//! is `pool-max-idle = 64` in the file); a flag wins over the file. Everything is validated
//! here, once, into a [`Config`] the shards share read-only. A bad value produces a
//! [`ConfigError`] that names the flag (or file key) and what is wrong; `main` prints it and
//! exits with status 2. Nothing in this module panics on user input.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringway_pool::{FaultPlan, ReuseMode};
use serde::Deserialize;

/// A configuration problem a user caused: which setting, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {msg}")]
pub struct ConfigError {
    pub flag: String,
    pub msg: String,
}

impl ConfigError {
    pub fn new(flag: &str, msg: impl Into<String>) -> Self {
        ConfigError {
            flag: flag.to_string(),
            msg: msg.into(),
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "ringway",
    version,
    about = "ringway: a thread-per-core io_uring reverse proxy",
    long_about = "ringway: a thread-per-core io_uring reverse proxy.\n\n\
        One shard (an io_uring executor) runs on each CPU it is given; each shard accepts its own\n\
        connections and keeps its own pool of idle backend connections.\n\n\
        Example:\n  ringway --listen 0.0.0.0:8080 --backend api=10.0.0.5:9000,10.0.0.6:9000 --cpus 0-3 --admin 127.0.0.1:9100",
    args_conflicts_with_subcommands = false,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy (the default when no subcommand is given).
    Run,
    /// Validate the flags and configuration file, print the resulting setup, and exit.
    CheckConfig,
    /// Start a built-in origin, the proxy in front of it and a short load through it; print the figures.
    Demo(DemoArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// How long the load runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// Client connections the load keeps open.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
}

/// Every setting, as flags. `None` means "not given on the command line".
#[derive(Args, Debug, Default, Clone)]
pub struct Opts {
    /// TOML file with the same settings (keys are the flag names without `--`); flags win.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept clients on (repeatable), optionally only on some shards: `ADDR@0-1`. Default 127.0.0.1:8080.
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// A backend: [NAME=]HOST:PORT[,HOST:PORT...] (repeatable; the first is the default backend).
    #[arg(long, global = true, value_name = "SPEC")]
    pub backend: Vec<String>,
    /// A route: HOST[/PATH-PREFIX]=NAME (repeatable; longest matching prefix wins; HOST `*` matches any).
    #[arg(long, global = true, value_name = "SPEC")]
    pub route: Vec<String>,
    /// Backend for requests no route matches: a backend name, or `none` to answer 404. Default: the first backend.
    #[arg(long, global = true, value_name = "NAME")]
    pub default_backend: Option<String>,
    /// CPUs to run one pinned shard on each, e.g. `0-3,8`. Default: every CPU the process may use.
    #[arg(long, global = true, value_name = "LIST", conflicts_with = "shards")]
    pub cpus: Option<String>,
    /// Run N unpinned shards instead of pinned ones.
    #[arg(long, global = true, value_name = "N")]
    pub shards: Option<String>,
    /// Address of the admin listener serving /metrics (Prometheus text format).
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Time a client has to send a complete request head (e.g. 10s).
    #[arg(long, global = true, value_name = "DUR")]
    pub timeout_client_head: Option<String>,
    /// Time an idle keep-alive client connection is kept open (e.g. 60s).
    #[arg(long, global = true, value_name = "DUR")]
    pub timeout_client_idle: Option<String>,
    /// Time allowed to connect to a backend server (e.g. 3s).
    #[arg(long, global = true, value_name = "DUR")]
    pub timeout_connect: Option<String>,
    /// Time a backend may stay silent while a response is expected (e.g. 30s).
    #[arg(long, global = true, value_name = "DUR")]
    pub timeout_backend: Option<String>,
    /// Time a client has to send a whole request body (e.g. 300s); then 408. Default 300s.
    #[arg(long, global = true, value_name = "DUR")]
    pub timeout_client_body: Option<String>,
    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish (e.g. 10s).
    #[arg(long, global = true, value_name = "DUR")]
    pub grace: Option<String>,
    /// Largest request or response head accepted (e.g. 64KiB); larger heads get 431.
    #[arg(long, global = true, value_name = "SIZE")]
    pub max_head: Option<String>,
    /// Backend connection reuse: never, safe, aggressive or always (HAProxy's meanings). Default safe.
    #[arg(long, global = true, value_name = "MODE")]
    pub reuse: Option<String>,
    /// Idle backend connections kept per server per shard. Default 64.
    #[arg(long, global = true, value_name = "N")]
    pub pool_max_idle: Option<String>,
    /// Interval of the idle-pool purge (e.g. 5s).
    #[arg(long, global = true, value_name = "DUR")]
    pub pool_purge_delay: Option<String>,
    /// Requests a backend connection may carry before it is closed (0 = unlimited).
    #[arg(long, global = true, value_name = "N")]
    pub max_reuse: Option<String>,
    /// No takeover while a server has fewer idle connections than this, over all shards (HAProxy's pool-low-conn).
    #[arg(long, global = true, value_name = "N")]
    pub pool_low_idle: Option<String>,
    /// Take over idle backend connections from other shards: on or off. Default on.
    #[arg(long, global = true, value_name = "on|off")]
    pub takeover: Option<String>,
    /// How long a taker waits for a Grant before it connects anew (e.g. 5ms).
    #[arg(long, global = true, value_name = "DUR")]
    pub takeover_timeout: Option<String>,
    /// Client connections a shard serves at once; more are refused with 503.
    #[arg(long, global = true, value_name = "N")]
    pub max_conns_per_shard: Option<String>,
    /// Fault injection, e.g. `reserve=2%,connect=1%,grant-delay=5%` (testing only).
    #[arg(long, global = true, value_name = "SPEC")]
    pub fault: Option<String>,
    /// Seed for fault injection, for replayable runs.
    #[arg(long, global = true, value_name = "N")]
    pub fault_seed: Option<String>,
    /// Busy-poll this long before a shard parks (lower latency, more CPU), e.g. 50us. Default 0.
    #[arg(long, global = true, value_name = "DUR")]
    pub spin_before_park: Option<String>,
    /// Log filter (error, warn, info, debug, trace or a tracing filter). Default info.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
}

/// The configuration file: the same keys as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<Vec<String>>,
    backend: Option<Vec<String>>,
    route: Option<Vec<String>>,
    default_backend: Option<String>,
    cpus: Option<String>,
    shards: Option<u64>,
    admin: Option<String>,
    timeout_client_head: Option<String>,
    timeout_client_idle: Option<String>,
    timeout_connect: Option<String>,
    timeout_backend: Option<String>,
    timeout_client_body: Option<String>,
    grace: Option<String>,
    max_head: Option<toml::Value>,
    reuse: Option<String>,
    pool_max_idle: Option<u64>,
    pool_purge_delay: Option<String>,
    max_reuse: Option<u64>,
    pool_low_idle: Option<u64>,
    takeover: Option<toml::Value>,
    takeover_timeout: Option<String>,
    max_conns_per_shard: Option<u64>,
    fault: Option<String>,
    fault_seed: Option<u64>,
    spin_before_park: Option<String>,
    log: Option<String>,
}

/// Where shards run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// One shard pinned on each of these CPUs.
    Pinned(Vec<usize>),
    /// This many unpinned shards.
    Unpinned(usize),
}

impl Placement {
    pub fn shards(&self) -> usize {
        match self {
            Placement::Pinned(c) => c.len(),
            Placement::Unpinned(n) => *n,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub servers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Lower-case host without port, or `*`.
    pub host: String,
    pub path_prefix: String,
    pub backend: usize,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub client_head: Duration,
    pub client_idle: Duration,
    pub connect: Duration,
    pub backend: Duration,
    /// Whole-request-body deadline (`--timeout-client-body`).
    pub client_body: Duration,
}

/// The validated configuration every shard reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// For each listen address, the shards that accept on it (`None` = all).
    pub listen_shards: Vec<Option<Vec<usize>>>,
    pub backends: Vec<BackendConfig>,
    pub routes: Vec<RouteConfig>,
    pub default_backend: Option<usize>,
    pub placement: Placement,
    pub admin: Option<SocketAddr>,
    pub timeouts: Timeouts,
    pub grace: Duration,
    pub max_head: usize,
    pub reuse: ReuseMode,
    pub pool_max_idle: usize,
    pub pool_purge_delay: Duration,
    pub max_reuse: Option<u32>,
    pub pool_low_idle: usize,
    pub takeover: bool,
    pub takeover_timeout: Duration,
    pub max_conns_per_shard: usize,
    pub fault: Option<FaultPlan>,
    pub fault_seed: u64,
    pub spin_before_park: Option<Duration>,
    pub log: String,
}

impl Config {
    /// Total servers over all backends (the pool's server ids are 0..this).
    pub fn n_servers(&self) -> usize {
        self.backends.iter().map(|b| b.servers.len()).sum()
    }

    /// Builds the configuration from flags and, if `--config` is given, the file.
    pub fn from_opts(opts: &Opts) -> Result<Config, ConfigError> {
        let file = match &opts.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new("--config", format!("cannot read '{}': {e}", path.display()))
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    ConfigError::new(
                        "--config",
                        format!("'{}': {}", path.display(), e.to_string().trim_end()),
                    )
                })?
            }
            None => FileConfig::default(),
        };
        build(opts, file)
    }
}

fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
    flag.clone().or_else(|| file.clone())
}

fn list(flag: &[String], file: &Option<Vec<String>>) -> Vec<String> {
    if !flag.is_empty() {
        flag.to_vec()
    } else {
        file.clone().unwrap_or_default()
    }
}

fn build(o: &Opts, f: FileConfig) -> Result<Config, ConfigError> {
    let listen_specs = list(&o.listen, &f.listen);
    let mut listen = Vec::new();
    let mut listen_shards = Vec::new();
    if listen_specs.is_empty() {
        listen.push(SocketAddr::from(([127, 0, 0, 1], 8080)));
        listen_shards.push(None);
    }
    for spec in &listen_specs {
        // ADDR or ADDR@SHARDS (like HAProxy's `bind ... thread`): only those shards accept on it.
        let (addr, shards) = match spec.rsplit_once('@') {
            Some((a, s)) => (a, Some(parse_cpu_list("--listen", s)?)),
            None => (spec.as_str(), None),
        };
        listen.push(parse_addr("--listen", addr)?);
        listen_shards.push(shards);
    }

    let backend_specs = list(&o.backend, &f.backend);
    if backend_specs.is_empty() {
        return Err(ConfigError::new(
            "--backend",
            "at least one backend is required, e.g. --backend 127.0.0.1:9000",
        ));
    }
    let mut backends: Vec<BackendConfig> = Vec::new();
    for (i, spec) in backend_specs.iter().enumerate() {
        let b = parse_backend(spec, i)?;
        if backends.iter().any(|x| x.name == b.name) {
            return Err(ConfigError::new(
                "--backend",
                format!("backend name '{}' is used twice", b.name),
            ));
        }
        backends.push(b);
    }
    let names: HashMap<&str, usize> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.as_str(), i))
        .collect();

    let mut routes = Vec::new();
    for spec in list(&o.route, &f.route) {
        routes.push(parse_route(&spec, &names)?);
    }

    let default_backend = match pick(&o.default_backend, &f.default_backend) {
        None => Some(0),
        Some(s) if s == "none" => None,
        Some(s) => Some(*names.get(s.as_str()).ok_or_else(|| {
            ConfigError::new(
                "--default-backend",
                format!("no backend named '{s}' (known: {})", known(&backends)),
            )
        })?),
    };

    let shards_flag = match (&o.shards, f.shards) {
        (Some(s), _) => Some(parse_count("--shards", s, 1, 1024)?),
        (None, Some(n)) => Some(check_range("shards", n, 1, 1024)?),
        (None, None) => None,
    };
    let cpus_spec = pick(&o.cpus, &f.cpus);
    let placement = match (cpus_spec, shards_flag) {
        (Some(_), Some(_)) if o.cpus.is_some() && o.shards.is_some() => {
            return Err(ConfigError::new(
                "--cpus",
                "give either --cpus or --shards, not both",
            ))
        }
        // A flag wins over the other setting given in the file.
        (Some(_), Some(n)) if o.shards.is_some() => Placement::Unpinned(n),
        (Some(c), _) => Placement::Pinned(parse_cpu_list("--cpus", &c)?),
        (None, Some(n)) => Placement::Unpinned(n),
        (None, None) => Placement::Pinned(default_cpus()),
    };
    if let Placement::Pinned(cpus) = &placement {
        let online = online_cpus();
        if let Some(bad) = cpus.iter().find(|c| !online.contains(c)) {
            return Err(ConfigError::new(
                "--cpus",
                format!(
                    "CPU {bad} does not exist or is not available to this process (available: {})",
                    format_cpu_list(&online)
                ),
            ));
        }
    }

    let n_shards = placement.shards();
    for (a, shards) in listen.iter().zip(&listen_shards) {
        if let Some(bad) = shards
            .as_ref()
            .and_then(|v| v.iter().find(|&&s| s >= n_shards))
        {
            return Err(ConfigError::new(
                "--listen",
                format!("{a}@{bad}: there are only {n_shards} shard(s), numbered from 0"),
            ));
        }
    }

    let admin = pick(&o.admin, &f.admin)
        .map(|s| parse_addr("--admin", &s))
        .transpose()?;

    let dur =
        |flag: &str, a: &Option<String>, b: &Option<String>, default: Duration| match pick(a, b) {
            Some(s) => parse_duration(flag, &s),
            None => Ok(default),
        };
    let timeouts = Timeouts {
        client_head: dur(
            "--timeout-client-head",
            &o.timeout_client_head,
            &f.timeout_client_head,
            Duration::from_secs(10),
        )?,
        client_idle: dur(
            "--timeout-client-idle",
            &o.timeout_client_idle,
            &f.timeout_client_idle,
            Duration::from_secs(60),
        )?,
        connect: dur(
            "--timeout-connect",
            &o.timeout_connect,
            &f.timeout_connect,
            Duration::from_secs(3),
        )?,
        backend: dur(
            "--timeout-backend",
            &o.timeout_backend,
            &f.timeout_backend,
            Duration::from_secs(30),
        )?,
        client_body: dur(
            "--timeout-client-body",
            &o.timeout_client_body,
            &f.timeout_client_body,
            Duration::from_secs(300),
        )?,
    };
    for (flag, d) in [
        ("--timeout-client-head", timeouts.client_head),
        ("--timeout-client-idle", timeouts.client_idle),
        ("--timeout-connect", timeouts.connect),
        ("--timeout-backend", timeouts.backend),
        ("--timeout-client-body", timeouts.client_body),
    ] {
        if d.is_zero() {
            return Err(ConfigError::new(flag, "must be greater than zero"));
        }
    }
    let grace = dur("--grace", &o.grace, &f.grace, Duration::from_secs(10))?;

    let max_head = match (&o.max_head, &f.max_head) {
        (Some(s), _) => parse_size("--max-head", s)?,
        (None, Some(toml::Value::Integer(n))) if *n > 0 => *n as usize,
        (None, Some(toml::Value::String(s))) => parse_size("max-head", s)?,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "max-head",
                "expected a size such as 65536 or \"64KiB\"",
            ))
        }
        (None, None) => 64 << 10,
    };
    if !(1024..=(16 << 20)).contains(&max_head) {
        return Err(ConfigError::new(
            "--max-head",
            format!("{max_head} bytes is out of range (1KiB to 16MiB)"),
        ));
    }

    let reuse = match pick(&o.reuse, &f.reuse) {
        Some(s) => s.parse::<ReuseMode>().map_err(|_| {
            ConfigError::new(
                "--reuse",
                format!("'{s}' is not a reuse mode (never, safe, aggressive, always)"),
            )
        })?,
        None => ReuseMode::Safe,
    };

    let count =
        |flag: &str, a: &Option<String>, b: Option<u64>, default: u64, max: u64| match (a, b) {
            (Some(s), _) => parse_count(flag, s, 0, max as usize).map(|v| v as u64),
            (None, Some(n)) => check_range(&flag[2..], n, 0, max as usize).map(|v| v as u64),
            (None, None) => Ok(default),
        };
    let pool_max_idle = count(
        "--pool-max-idle",
        &o.pool_max_idle,
        f.pool_max_idle,
        64,
        1_000_000,
    )? as usize;
    let pool_purge_delay = dur(
        "--pool-purge-delay",
        &o.pool_purge_delay,
        &f.pool_purge_delay,
        Duration::from_secs(5),
    )?;
    if pool_purge_delay < Duration::from_millis(10) {
        return Err(ConfigError::new(
            "--pool-purge-delay",
            "must be at least 10ms",
        ));
    }
    let max_reuse = match count("--max-reuse", &o.max_reuse, f.max_reuse, 0, u32::MAX as u64)? {
        0 => None,
        n => Some(n as u32),
    };
    let pool_low_idle = count(
        "--pool-low-idle",
        &o.pool_low_idle,
        f.pool_low_idle,
        0,
        1_000_000,
    )? as usize;
    let takeover = match (&o.takeover, &f.takeover) {
        (Some(s), _) => parse_on_off("--takeover", s)?,
        (None, Some(toml::Value::Boolean(b))) => *b,
        (None, Some(toml::Value::String(s))) => parse_on_off("takeover", s)?,
        (None, Some(_)) => return Err(ConfigError::new("takeover", "expected on or off")),
        (None, None) => true,
    };
    let takeover_timeout = dur(
        "--takeover-timeout",
        &o.takeover_timeout,
        &f.takeover_timeout,
        Duration::from_millis(5),
    )?;
    if takeover_timeout.is_zero() {
        return Err(ConfigError::new(
            "--takeover-timeout",
            "must be greater than zero",
        ));
    }
    let max_conns_per_shard = count(
        "--max-conns-per-shard",
        &o.max_conns_per_shard,
        f.max_conns_per_shard,
        20_000,
        10_000_000,
    )? as usize;
    if max_conns_per_shard == 0 {
        return Err(ConfigError::new(
            "--max-conns-per-shard",
            "must be at least 1",
        ));
    }
    let fault_seed = match (&o.fault_seed, f.fault_seed) {
        (Some(s), _) => s.trim().parse::<u64>().map_err(|_| {
            ConfigError::new("--fault-seed", format!("'{s}' is not a whole number"))
        })?,
        (None, Some(n)) => n,
        (None, None) => 1,
    };
    let fault = match pick(&o.fault, &f.fault) {
        Some(s) => Some(
            FaultPlan::parse(&s, fault_seed)
                .map_err(|e| ConfigError::new("--fault", e.to_string()))?,
        ),
        None => None,
    };
    let spin_before_park = match pick(&o.spin_before_park, &f.spin_before_park) {
        Some(s) => {
            let d = parse_duration("--spin-before-park", &s)?;
            (!d.is_zero()).then_some(d)
        }
        None => None,
    };
    let log = pick(&o.log, &f.log).unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
        return Err(ConfigError::new(
            "--log",
            format!("'{log}' is not a log filter (try error, warn, info or debug)"),
        ));
    }

    Ok(Config {
        listen,
        listen_shards,
        backends,
        routes,
        default_backend,
        placement,
        admin,
        timeouts,
        grace,
        max_head,
        reuse,
        pool_max_idle,
        pool_purge_delay,
        max_reuse,
        pool_low_idle,
        takeover,
        takeover_timeout,
        max_conns_per_shard,
        fault,
        fault_seed,
        spin_before_park,
        log,
    })
}

fn known(backends: &[BackendConfig]) -> String {
    backends
        .iter()
        .map(|b| b.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_on_off(flag: &str, s: &str) -> Result<bool, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(ConfigError::new(
            flag,
            format!("'{s}' is neither on nor off"),
        )),
    }
}

fn check_range(key: &str, n: u64, min: usize, max: usize) -> Result<usize, ConfigError> {
    if n < min as u64 || n > max as u64 {
        return Err(ConfigError::new(
            key,
            format!("{n} is out of range ({min} to {max})"),
        ));
    }
    Ok(n as usize)
}

fn parse_count(flag: &str, s: &str, min: usize, max: usize) -> Result<usize, ConfigError> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(flag, format!("'{s}' is not a whole number")))?;
    check_range(flag, n, min, max)
}

/// `HOST:PORT`, resolved now (a name such as `localhost` is looked up once, at start-up).
pub fn parse_addr(flag: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(ConfigError::new(
            flag,
            format!("'{s}' has no port; expected HOST:PORT such as 127.0.0.1:8080"),
        ));
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| ConfigError::new(flag, format!("'{s}' resolves to no address"))),
        Err(e) => Err(ConfigError::new(
            flag,
            format!("'{s}' is not a valid HOST:PORT ({e})"),
        )),
    }
}

fn parse_backend(spec: &str, index: usize) -> Result<BackendConfig, ConfigError> {
    let (name, servers) = match spec.split_once('=') {
        Some((n, s)) => (n.trim().to_string(), s),
        None if index == 0 => ("default".to_string(), spec),
        None => (format!("backend{}", index + 1), spec),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ConfigError::new(
            "--backend",
            format!("'{name}' in '{spec}' is not a valid backend name (letters, digits, - _ .)"),
        ));
    }
    let servers = servers
        .split(',')
        .map(|s| parse_addr("--backend", s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BackendConfig { name, servers })
}

fn parse_route(spec: &str, names: &HashMap<&str, usize>) -> Result<RouteConfig, ConfigError> {
    let (target, name) = spec.rsplit_once('=').ok_or_else(|| {
        ConfigError::new(
            "--route",
            format!("'{spec}' should be HOST[/PATH-PREFIX]=BACKEND"),
        )
    })?;
    let backend = *names.get(name.trim()).ok_or_else(|| {
        ConfigError::new(
            "--route",
            format!("'{spec}' names no known backend '{}'", name.trim()),
        )
    })?;
    let (host, path) = match target.find('/') {
        Some(i) => (&target[..i], &target[i..]),
        None => (target, "/"),
    };
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() {
        return Err(ConfigError::new(
            "--route",
            format!("'{spec}' has an empty host (use * for any host)"),
        ));
    }
    Ok(RouteConfig {
        host,
        path_prefix: path.to_string(),
        backend,
    })
}

/// Parses `250ms`, `5s`, `2m`, `1h`, `100us`; a bare number is seconds.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        ConfigError::new(
            flag,
            format!("'{s}' is not a duration (examples: 250ms, 5s, 2m)"),
        )
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration("--duration", s).map_err(|e| e.msg)
}

/// Parses `65536`, `64KiB`, `64k`, `1MiB`.
pub fn parse_size(flag: &str, s: &str) -> Result<usize, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        ConfigError::new(
            flag,
            format!("'{s}' is not a size (examples: 65536, 64KiB, 1MiB)"),
        )
    };
    let v: usize = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(bad()),
    };
    v.checked_mul(mult).ok_or_else(bad)
}

/// Parses a CPU list such as `0-3,8,10-11` into sorted, distinct CPU numbers.
pub fn parse_cpu_list(flag: &str, s: &str) -> Result<Vec<usize>, ConfigError> {
    let mut cpus = Vec::new();
    let bad = |why: String| ConfigError::new(flag, format!("'{s}': {why} (example: 0-3,8)"));
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad("empty item".into()));
        }
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| bad(format!("'{x}' is not a CPU number")))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(format!("range {a}-{b} is backwards")));
                }
                if b - a > 4096 {
                    return Err(bad(format!("range {a}-{b} is too large")));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    cpus.sort_unstable();
    let before = cpus.len();
    cpus.dedup();
    if cpus.len() != before {
        return Err(bad("a CPU is listed twice".into()));
    }
    Ok(cpus)
}

pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// CPUs this process may run on (its affinity mask).
pub fn online_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => {
            let mut v: Vec<usize> = ids.into_iter().map(|c| c.id).collect();
            v.sort_unstable();
            v
        }
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

fn default_cpus() -> Vec<usize> {
    online_cpus()
}

/// A human summary of the configuration (start-up log and `check-config`).
pub fn describe(c: &Config) -> String {
    let mut s = String::new();
    let shards = match &c.placement {
        Placement::Pinned(cpus) => format!(
            "{} shard(s) pinned on CPU {}",
            cpus.len(),
            format_cpu_list(cpus)
        ),
        Placement::Unpinned(n) => format!("{n} unpinned shard(s)"),
    };
    s.push_str(&format!("shards: {shards}\n"));
    let listen: Vec<String> = c.listen.iter().map(|a| a.to_string()).collect();
    s.push_str(&format!("listen: {}\n", listen.join(", ")));
    if let Some(a) = c.admin {
        s.push_str(&format!("admin: http://{a}/metrics\n"));
    }
    for b in &c.backends {
        let servers: Vec<String> = b.servers.iter().map(|a| a.to_string()).collect();
        s.push_str(&format!("backend {}: {}\n", b.name, servers.join(", ")));
    }
    for r in &c.routes {
        s.push_str(&format!(
            "route: host {} path {} -> {}\n",
            r.host, r.path_prefix, c.backends[r.backend].name
        ));
    }
    s.push_str(&format!(
        "default backend: {}\n",
        c.default_backend
            .map_or("none (404)".to_string(), |b| c.backends[b].name.clone())
    ));
    s.push_str(&format!(
        "pool: reuse {}, max idle {}/server/shard, purge every {:?}, max reuse {}, low idle {}, takeover {}\n",
        c.reuse,
        c.pool_max_idle,
        c.pool_purge_delay,
        c.max_reuse.map_or("unlimited".to_string(), |n| n.to_string()),
        c.pool_low_idle,
        if c.takeover { "on" } else { "off" }
    ));
    s.push_str(&format!(
        "limits: max head {} bytes, {} client connections/shard; timeouts: head {:?}, idle {:?}, connect {:?}, backend {:?}, grace {:?}\n",
        c.max_head,
        c.max_conns_per_shard,
        c.timeouts.client_head,
        c.timeouts.client_idle,
        c.timeouts.connect,
        c.timeouts.backend,
        c.grace
    ));
    if let Some(f) = &c.fault {
        s.push_str(&format!("FAULT INJECTION: {f} (seed {})\n", c.fault_seed));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cfg(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["ringway"];
        v.extend_from_slice(args);
        let cli = Cli::try_parse_from(v).map_err(|e| ConfigError::new("clap", e.to_string()))?;
        Config::from_opts(&cli.opts)
    }

    fn err(args: &[&str]) -> ConfigError {
        match cfg(args) {
            Ok(c) => panic!("expected an error for {args:?}, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn minimal_config_has_sane_defaults() {
        let c = cfg(&["--backend", "127.0.0.1:9000"]).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.backends[0].name, "default");
        assert_eq!(c.default_backend, Some(0));
        assert_eq!(c.reuse, ReuseMode::Safe);
        assert_eq!(c.max_head, 64 << 10);
        assert_eq!(c.timeouts.connect, Duration::from_secs(3));
        assert!(c.takeover);
        assert_eq!(c.placement, Placement::Pinned(online_cpus()));
    }

    #[test]
    fn backends_routes_and_placement() {
        let c = cfg(&[
            "--backend",
            "api=127.0.0.1:9000,127.0.0.1:9001",
            "--backend",
            "static=127.0.0.1:9100",
            "--route",
            "Example.com/static=static",
            "--route",
            "*/api=api",
            "--shards",
            "3",
            "--default-backend",
            "none",
            "--max-head",
            "8KiB",
            "--timeout-backend",
            "250ms",
        ])
        .unwrap();
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.backends[0].servers.len(), 2);
        assert_eq!(c.n_servers(), 3);
        assert_eq!(c.routes[0].host, "example.com");
        assert_eq!(c.routes[0].path_prefix, "/static");
        assert_eq!(c.routes[0].backend, 1);
        assert_eq!(c.routes[1].host, "*");
        assert_eq!(c.placement, Placement::Unpinned(3));
        assert_eq!(c.default_backend, None);
        assert_eq!(c.max_head, 8192);
        assert_eq!(c.timeouts.backend, Duration::from_millis(250));
    }

    #[test]
    fn every_error_names_its_flag() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&[], "--backend", "at least one backend"),
            (&["--backend", "nope"], "--backend", "has no port"),
            (
                &["--backend", "127.0.0.1:99999"],
                "--backend",
                "not a valid",
            ),
            (
                &["--backend", "a b=127.0.0.1:1"],
                "--backend",
                "not a valid backend name",
            ),
            (
                &["--backend", "a=127.0.0.1:1", "--backend", "a=127.0.0.1:2"],
                "--backend",
                "used twice",
            ),
            (
                &["--backend", "127.0.0.1:1", "--listen", "x"],
                "--listen",
                "has no port",
            ),
            (
                &[
                    "--backend",
                    "127.0.0.1:1",
                    "--shards",
                    "2",
                    "--listen",
                    "127.0.0.1:0@2",
                ],
                "--listen",
                "only 2 shard(s)",
            ),
            (
                &["--backend", "127.0.0.1:1", "--listen", "127.0.0.1:0@x"],
                "--listen",
                "not a CPU number",
            ),
            (
                &["--backend", "127.0.0.1:1", "--route", "foo"],
                "--route",
                "HOST[/PATH-PREFIX]=BACKEND",
            ),
            (
                &["--backend", "127.0.0.1:1", "--route", "h/x=zz"],
                "--route",
                "no known backend",
            ),
            (
                &["--backend", "127.0.0.1:1", "--route", "/x=default"],
                "--route",
                "empty host",
            ),
            (
                &["--backend", "127.0.0.1:1", "--default-backend", "zz"],
                "--default-backend",
                "no backend named",
            ),
            (
                &["--backend", "127.0.0.1:1", "--cpus", "3-1"],
                "--cpus",
                "backwards",
            ),
            (
                &["--backend", "127.0.0.1:1", "--cpus", "a"],
                "--cpus",
                "not a CPU number",
            ),
            (
                &["--backend", "127.0.0.1:1", "--cpus", "0,0"],
                "--cpus",
                "listed twice",
            ),
            (
                &["--backend", "127.0.0.1:1", "--cpus", "4000"],
                "--cpus",
                "does not exist",
            ),
            (
                &["--backend", "127.0.0.1:1", "--shards", "0"],
                "--shards",
                "out of range",
            ),
            (
                &["--backend", "127.0.0.1:1", "--shards", "x"],
                "--shards",
                "not a whole number",
            ),
            (
                &["--backend", "127.0.0.1:1", "--admin", "nowhere"],
                "--admin",
                "has no port",
            ),
            (
                &[
                    "--backend",
                    "127.0.0.1:1",
                    "--timeout-client-head",
                    "5parsecs",
                ],
                "--timeout-client-head",
                "not a duration",
            ),
            (
                &["--backend", "127.0.0.1:1", "--timeout-client-idle", "0s"],
                "--timeout-client-idle",
                "greater than zero",
            ),
            (
                &["--backend", "127.0.0.1:1", "--timeout-connect=-1s"],
                "--timeout-connect",
                "not a duration",
            ),
            (
                &["--backend", "127.0.0.1:1", "--timeout-backend", "x"],
                "--timeout-backend",
                "not a duration",
            ),
            (
                &["--backend", "127.0.0.1:1", "--grace", "soon"],
                "--grace",
                "not a duration",
            ),
            (
                &["--backend", "127.0.0.1:1", "--max-head", "12 parsecs"],
                "--max-head",
                "not a size",
            ),
            (
                &["--backend", "127.0.0.1:1", "--max-head", "10"],
                "--max-head",
                "out of range",
            ),
            (
                &["--backend", "127.0.0.1:1", "--reuse", "sometimes"],
                "--reuse",
                "not a reuse mode",
            ),
            (
                &["--backend", "127.0.0.1:1", "--pool-max-idle=-3"],
                "--pool-max-idle",
                "not a whole number",
            ),
            (
                &["--backend", "127.0.0.1:1", "--pool-purge-delay", "1ms"],
                "--pool-purge-delay",
                "at least 10ms",
            ),
            (
                &["--backend", "127.0.0.1:1", "--max-reuse", "many"],
                "--max-reuse",
                "not a whole number",
            ),
            (
                &["--backend", "127.0.0.1:1", "--pool-low-idle", "x"],
                "--pool-low-idle",
                "not a whole number",
            ),
            (
                &["--backend", "127.0.0.1:1", "--takeover", "maybe"],
                "--takeover",
                "neither on nor off",
            ),
            (
                &["--backend", "127.0.0.1:1", "--takeover-timeout", "0ms"],
                "--takeover-timeout",
                "greater than zero",
            ),
            (
                &["--backend", "127.0.0.1:1", "--max-conns-per-shard", "0"],
                "--max-conns-per-shard",
                "at least 1",
            ),
            (
                &["--backend", "127.0.0.1:1", "--fault", "bogus=1%"],
                "--fault",
                "bogus",
            ),
            (
                &["--backend", "127.0.0.1:1", "--fault-seed", "x"],
                "--fault-seed",
                "not a whole number",
            ),
            (
                &["--backend", "127.0.0.1:1", "--spin-before-park", "x"],
                "--spin-before-park",
                "not a duration",
            ),
            (
                &["--backend", "127.0.0.1:1", "--log", "[["],
                "--log",
                "not a log filter",
            ),
            (
                &[
                    "--backend",
                    "127.0.0.1:1",
                    "--config",
                    "/nonexistent/ringway.toml",
                ],
                "--config",
                "cannot read",
            ),
        ];
        for (args, flag, needle) in cases {
            let e = err(args);
            assert_eq!(e.flag, *flag, "{args:?} -> {e}");
            assert!(e.msg.contains(needle), "{args:?} -> '{e}' lacks '{needle}'");
        }
    }

    #[test]
    fn cpus_and_shards_conflict_is_a_clap_error() {
        let e = err(&["--backend", "127.0.0.1:1", "--cpus", "0", "--shards", "2"]);
        assert!(e.msg.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn config_file_and_flag_precedence() {
        let dir = std::env::temp_dir().join(format!("ringway-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.toml");
        std::fs::write(
            &path,
            "listen = [\"127.0.0.1:7000\"]\nbackend = [\"api=127.0.0.1:9000\"]\nshards = 2\n\
             reuse = \"always\"\nmax-head = \"16KiB\"\ntakeover = false\npool-max-idle = 7\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = cfg(&["--config", p, "--reuse", "never"]).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:7000".parse().unwrap()]);
        assert_eq!(c.backends[0].name, "api");
        assert_eq!(c.placement, Placement::Unpinned(2));
        assert_eq!(c.reuse, ReuseMode::Never, "the flag wins");
        assert_eq!(c.max_head, 16 << 10);
        assert!(!c.takeover);
        assert_eq!(c.pool_max_idle, 7);

        std::fs::write(&path, "listn = [\"127.0.0.1:7000\"]\n").unwrap();
        let e = err(&["--config", p]);
        assert_eq!(e.flag, "--config");
        assert!(e.msg.contains("listn"), "{e}");
        std::fs::write(&path, "backend = [\"127.0.0.1:1\"]\nshards = 0\n").unwrap();
        let e = err(&["--config", p]);
        assert_eq!(e.flag, "shards");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn durations_sizes_cpu_lists() {
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("x", "1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("x", "7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("x", "").is_err());
        assert_eq!(parse_size("x", "1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_cpu_list("x", "0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }
}
