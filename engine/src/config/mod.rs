//! Command line and configuration file: what a user can say, and its validation.
//!
//! Every setting is declared once, in [`settings`]: its flag, its file key (the flag name
//! without `--`: `--pool-max-idle` is `pool-max-idle = 64`), its kind of value, default and
//! help. clap parses and types the flags, [`file`] reads the TOML file, and
//! [`Settings::resolve`] lets a flag win over the file and the file over the default.
//! [`build`] then checks what involves several settings and produces the [`Config`] the
//! shards share read-only. A bad value produces a [`ConfigError`] that names the flag (or
//! the file key, with the file and line) and what is wrong; `main` prints it and exits
//! with status 2 (clap does the same for the flags it refuses). Nothing in this module
//! panics on user input.

#[macro_use]
mod define;
pub mod backend;
mod file;
pub mod reference;
pub mod reload;
mod settings;
pub mod values;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringway_pool::{FaultPlan, ReuseMode};

pub use backend::{BackendConfig, CheckConfig, OutlierConfig, ResolveConfig};
pub use define::{Origin, Setting};
pub use file::SettingsFile;
pub use ringway_sys::format_cpu_list;
pub use settings::{Flags, Settings};

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
    long_version = crate::build_info::long_version(),
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
    Run(Opts),
    /// Validate the flags and configuration file, print the resulting setup, and exit.
    CheckConfig(Opts),
    /// Start a built-in origin, the proxy in front of it and a short load through it; print the figures.
    /// Takes only its own flags.
    Demo(DemoArgs),
    /// Write the man page or a shell completion script to stdout (for packaging).
    #[command(hide = true)]
    Generate {
        /// `man`, `config-reference` (docs/configuration.md), or a shell: bash, zsh, fish,
        /// elvish, powershell.
        #[arg(value_name = "man|config-reference|bash|zsh|fish|elvish|powershell")]
        what: String,
    },
}

impl Cli {
    /// The proxy's flags: those after `run`/`check-config`, else those before it.
    pub fn opts(&self) -> Opts {
        match &self.command {
            Some(Command::Run(o) | Command::CheckConfig(o)) => Opts {
                config: o.config.clone().or_else(|| self.opts.config.clone()),
                settings: o.settings.clone().or(self.opts.settings.clone()),
            },
            _ => self.opts.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Shards of the proxy under the load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub shards: u64,
    /// How long the load runs.
    #[arg(long, default_value = "3s", value_parser = ringway_sys::parse_duration)]
    pub duration: Duration,
    /// Client connections the load keeps open.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
}

/// What the command line says: the configuration file, if any, and every setting's flag.
#[derive(Args, Debug, Default, Clone)]
pub struct Opts {
    /// TOML file with the same settings (keys are the flag names without `--`); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Flags,
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

/// What a client's cancelled requests and stream resets may cost (docs/operations.md,
/// "Limits and abuse"). Rates are per second; 0 = no bound.
#[derive(Debug, Clone)]
pub struct CancelLimits {
    /// `--cancel-drain-time`: zero = never drain.
    pub drain_time: Duration,
    pub drain_size: u64,
    pub connect_rate: u32,
    pub connect_burst: u32,
    pub h2_reset_rate: u32,
    pub h2_reset_burst: u32,
}

/// The validated configuration every shard reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// For each listen address, the shards that accept on it (`None` = all).
    pub listen_shards: Vec<Option<Vec<usize>>>,
    /// TLS listeners (`--listen-tls`) and the shards that accept on each.
    pub listen_tls: Vec<SocketAddr>,
    pub listen_tls_shards: Vec<Option<Vec<usize>>>,
    /// Certificates for the TLS listeners, first = default (`--cert`/`--key`).
    pub certs: Vec<crate::tls::CertPair>,
    /// How https:// backends are verified (and whom we say we are).
    pub backend_tls: crate::tls::BackendTlsSpec,
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
    pub cancel: CancelLimits,
    pub fault: Option<FaultPlan>,
    pub fault_seed: u64,
    pub spin_before_park: Option<Duration>,
    /// Response bodies of at least this many bytes are spliced (`--splice-min`); `None`:
    /// never.
    pub splice_min: Option<u64>,
    pub log: String,
    pub log_format: values::TextOrJson,
    pub access_log: values::AccessLogTarget,
    pub access_log_format: values::TextOrJson,
    /// Another process may already listen on our addresses (`--reuse-port-shared`).
    pub reuse_port_shared: bool,
    /// Client connections start with a PROXY protocol header (`--accept-proxy`).
    pub accept_proxy: bool,
}

impl Config {
    /// Total servers over all backends (the pool's server ids are 0..this).
    pub fn n_servers(&self) -> usize {
        self.backends.iter().map(|b| b.servers.len()).sum()
    }

    /// Builds the configuration from flags and, if `--config` is given, the file.
    pub fn from_opts(opts: &Opts) -> Result<Config, ConfigError> {
        let file = match &opts.config {
            Some(path) => Some(SettingsFile::read(path, &Settings::keys())?),
            None => None,
        };
        build_with(
            Settings::resolve(&opts.settings, file.as_ref())?,
            file.as_ref(),
        )
    }
}

/// `n` (the value of `s`), or an error naming `s` when it is outside `min..=max`.
fn in_range<T>(s: &Setting<T>, n: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if n < min || n > max {
        return Err(s.err(format!("{n} is out of range ({min} to {max})")));
    }
    Ok(n)
}

/// Checks what involves more than one setting, and fills in the [`Config`].
pub fn build(s: Settings) -> Result<Config, ConfigError> {
    build_with(s, None)
}

/// [`build`], with the `[backends.NAME]` tables of the file, if any.
pub fn build_with(s: Settings, file: Option<&SettingsFile>) -> Result<Config, ConfigError> {
    let defaults = backend::defaults(&s)?;
    let tables = file.and_then(|f| f.backends.as_ref().map(|b| (f, b)));
    let mut backends: Vec<BackendConfig> = Vec::new();
    match tables {
        // `--backend` flags win over the file's backends; a `backend = [...]` list and
        // `[backends.NAME]` tables in the same file would be two answers to one question.
        Some((f, section)) if s.backend.origin != Origin::Flag => {
            if matches!(s.backend.origin, Origin::File { .. }) {
                return Err(s.backend.err(
                    "the file gives both backend = [...] and [backends.NAME] tables; keep one",
                ));
            }
            for t in &section.tables {
                if backends.iter().any(|x| x.name == t.name) {
                    return Err(ConfigError::new(
                        &format!("backends.{}", t.name),
                        format!("backend name '{}' is used twice", t.name),
                    ));
                }
                backends.push(backend::from_table(&f.path, t, &defaults)?);
            }
        }
        _ => {
            for (i, b) in s.backend.value.iter().enumerate() {
                let name = match &b.name {
                    Some(n) => n.clone(),
                    None if i == 0 => "default".to_string(),
                    None => format!("backend{}", i + 1),
                };
                if backends.iter().any(|x| x.name == name) {
                    return Err(s
                        .backend
                        .err(format!("backend name '{name}' is used twice")));
                }
                let mut be = BackendConfig {
                    name,
                    entries: b.entries.clone(),
                    ..defaults.clone()
                };
                be.refill();
                backends.push(be);
            }
        }
    }
    if backends.is_empty() {
        return Err(ConfigError::new(
            "--backend",
            "at least one backend is required, e.g. --backend 127.0.0.1:9000 (or a [backends.NAME] table in --config)",
        ));
    }
    let names: HashMap<&str, usize> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.as_str(), i))
        .collect();

    let mut routes = Vec::with_capacity(s.route.value.len());
    for r in &s.route.value {
        let backend = *names.get(r.backend.as_str()).ok_or_else(|| {
            s.route.err(format!(
                "'{}' names no known backend '{}'",
                r.spec, r.backend
            ))
        })?;
        routes.push(RouteConfig {
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            backend,
        });
    }

    let default_backend = match s.default_backend.value.as_deref() {
        None => Some(0),
        Some("none") => None,
        Some(name) => Some(*names.get(name).ok_or_else(|| {
            s.default_backend.err(format!(
                "no backend named '{name}' (known: {})",
                known(&backends)
            ))
        })?),
    };

    let placement = placement(&s)?;
    let n_shards = placement.shards();

    let check_shards = |setting: &define::Setting<Vec<values::ListenSpec>>| {
        for l in &setting.value {
            if let Some(bad) = l
                .shards
                .as_ref()
                .and_then(|v| v.iter().find(|&&i| i >= n_shards))
            {
                return Err(setting.err(format!(
                    "{}@{bad}: there are only {n_shards} shard(s), numbered from 0",
                    l.addr
                )));
            }
        }
        Ok(())
    };
    check_shards(&s.listen)?;
    check_shards(&s.listen_tls)?;
    // A TLS-only setup does not also get the default plain listener.
    let plain = if s.listen_tls.value.is_empty() || s.listen.origin != define::Origin::Default {
        s.listen.value.clone()
    } else {
        Vec::new()
    };
    let listen = plain.iter().map(|l| l.addr).collect();
    let listen_shards = plain.iter().map(|l| l.shards.clone()).collect();
    let listen_tls = s.listen_tls.value.iter().map(|l| l.addr).collect();
    let listen_tls_shards = s
        .listen_tls
        .value
        .iter()
        .map(|l| l.shards.clone())
        .collect();

    if s.cert.value.len() != s.key.value.len() {
        return Err(s.key.err(format!(
            "{} --cert but {} --key: give one key per certificate, in the same order",
            s.cert.value.len(),
            s.key.value.len()
        )));
    }
    let certs: Vec<crate::tls::CertPair> = s
        .cert
        .value
        .iter()
        .zip(&s.key.value)
        .map(|(c, k)| crate::tls::CertPair {
            cert: c.into(),
            key: k.into(),
        })
        .collect();
    if !s.listen_tls.value.is_empty() {
        if certs.is_empty() {
            return Err(s
                .listen_tls
                .err("a TLS listener needs a certificate: give --cert FILE --key FILE"));
        }
        // Load them now: a missing or broken file is a configuration error (exit 2).
        crate::tls::ServerTls::load(certs.clone()).map_err(|e| s.cert.err(e.to_string()))?;
    }
    let client_cert = match (&s.backend_cert.value, &s.backend_key.value) {
        (Some(c), Some(k)) => Some(crate::tls::CertPair {
            cert: c.into(),
            key: k.into(),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(s.backend_key.err("--backend-cert needs --backend-key")),
        (None, Some(_)) => return Err(s.backend_cert.err("--backend-key needs --backend-cert")),
    };
    let backend_tls = crate::tls::BackendTlsSpec {
        ca: s.backend_ca.value.as_ref().map(Into::into),
        client_cert,
        sni: None,
    };
    let any_https = backends
        .iter()
        .any(|b| b.entries.iter().any(|e| e.scheme.tls_name().is_some()));
    if any_https {
        crate::tls::BackendTls::build(&backend_tls).map_err(|e| s.backend_ca.err(e.to_string()))?;
    }

    if let Some(t) = &s.timeout_try.value {
        if t.is_zero() {
            return Err(s.timeout_try.err("must be greater than zero"));
        }
    }
    let timeouts = Timeouts {
        client_head: s.timeout_client_head.value,
        client_idle: s.timeout_client_idle.value,
        client_body: s.timeout_client_body.value,
        connect: s.timeout_connect.value,
        backend: s.timeout_backend.value,
    };
    for t in [
        &s.timeout_client_head,
        &s.timeout_client_idle,
        &s.timeout_client_body,
        &s.timeout_connect,
        &s.timeout_backend,
        &s.takeover_timeout,
    ] {
        if t.value.is_zero() {
            return Err(t.err("must be greater than zero"));
        }
    }

    let max_head = s.max_head.value;
    if !(1024..=(16 << 20)).contains(&max_head) {
        return Err(s
            .max_head
            .err(format!("{max_head} bytes is out of range (1KiB to 16MiB)")));
    }

    if s.pool_purge_delay.value < Duration::from_millis(10) {
        return Err(s.pool_purge_delay.err("must be at least 10ms"));
    }
    let max_reuse = match in_range(&s.max_reuse, s.max_reuse.value, 0, u32::MAX as u64)? {
        0 => None,
        n => Some(n as u32),
    };
    if s.max_conns_per_shard.value == 0 {
        return Err(s.max_conns_per_shard.err("must be at least 1"));
    }

    let cancel = CancelLimits {
        drain_time: s.cancel_drain_time.value,
        drain_size: s.cancel_drain_size.value,
        connect_rate: in_range(
            &s.cancel_connect_rate,
            s.cancel_connect_rate.value,
            0,
            1_000_000,
        )? as u32,
        connect_burst: in_range(
            &s.cancel_connect_burst,
            s.cancel_connect_burst.value,
            1,
            1_000_000,
        )? as u32,
        h2_reset_rate: in_range(&s.h2_reset_rate, s.h2_reset_rate.value, 0, 1_000_000)? as u32,
        h2_reset_burst: in_range(&s.h2_reset_burst, s.h2_reset_burst.value, 1, 1_000_000)? as u32,
    };

    let fault_seed = s.fault_seed.value;
    let fault = match &s.fault.value {
        Some(spec) => {
            Some(FaultPlan::parse(spec, fault_seed).map_err(|e| s.fault.err(e.to_string()))?)
        }
        None => None,
    };

    Ok(Config {
        listen,
        listen_shards,
        listen_tls,
        listen_tls_shards,
        certs,
        backend_tls,
        backends,
        routes,
        default_backend,
        placement,
        admin: s.admin.value,
        timeouts,
        grace: s.grace.value,
        max_head: max_head as usize,
        reuse: s.reuse.value,
        pool_max_idle: in_range(&s.pool_max_idle, s.pool_max_idle.value, 0, 1_000_000)? as usize,
        pool_purge_delay: s.pool_purge_delay.value,
        max_reuse,
        pool_low_idle: in_range(&s.pool_low_idle, s.pool_low_idle.value, 0, 1_000_000)? as usize,
        takeover: s.takeover.value,
        takeover_timeout: s.takeover_timeout.value,
        max_conns_per_shard: in_range(
            &s.max_conns_per_shard,
            s.max_conns_per_shard.value,
            1,
            10_000_000,
        )? as usize,
        cancel,
        fault,
        fault_seed,
        spin_before_park: (!s.spin_before_park.value.is_zero()).then_some(s.spin_before_park.value),
        splice_min: (s.splice_min.value > 0).then_some(s.splice_min.value),
        log: s.log.value,
        log_format: s.log_format.value,
        access_log: s.access_log.value,
        access_log_format: s.access_log_format.value,
        reuse_port_shared: s.reuse_port_shared.value,
        accept_proxy: s.accept_proxy.value,
    })
}

/// `--cpus` or `--shards`: a flag wins over the file; both from the same place is an error
/// (clap refuses both flags; this refuses both keys).
fn placement(s: &Settings) -> Result<Placement, ConfigError> {
    let (cpus, shards) = (&s.cpus, &s.shards);
    let use_cpus = match (&cpus.value, &shards.value) {
        (Some(_), Some(_)) if cpus.origin.beats(&shards.origin) => true,
        (Some(_), Some(_)) if shards.origin.beats(&cpus.origin) => false,
        (Some(_), Some(_)) => {
            return Err(cpus.err(format!(
                "give either {} or {}, not both",
                cpus.name(),
                shards.name()
            )))
        }
        (Some(_), None) => true,
        (None, _) => false,
    };
    if use_cpus {
        let list = cpus.value.clone().unwrap_or_default();
        let online = online_cpus();
        if let Some(bad) = list.iter().find(|c| !online.contains(c)) {
            return Err(cpus.err(format!(
                "CPU {bad} does not exist or is not available to this process (available: {})",
                format_cpu_list(&online)
            )));
        }
        return Ok(Placement::Pinned(list));
    }
    Ok(match &shards.value {
        Some(n) => {
            let n = in_range(shards, *n, 1, 1024)?;
            Placement::Unpinned(n as usize)
        }
        None => Placement::Pinned(default_cpus()),
    })
}

fn known(backends: &[BackendConfig]) -> String {
    backends
        .iter()
        .map(|b| b.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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
    if !c.listen_tls.is_empty() {
        let tls: Vec<String> = c.listen_tls.iter().map(|a| a.to_string()).collect();
        let certs: Vec<String> = c
            .certs
            .iter()
            .map(|p| p.cert.display().to_string())
            .collect();
        s.push_str(&format!(
            "listen (TLS): {} with {}\n",
            tls.join(", "),
            certs.join(", ")
        ));
    }
    if let Some(a) = c.admin {
        s.push_str(&format!("admin: http://{a}/metrics\n"));
    }
    for b in &c.backends {
        let servers: Vec<String> = b
            .servers
            .iter()
            .zip(&b.schemes)
            .zip(&b.weights)
            .map(|((a, sc), w)| {
                let s = match sc {
                    values::Scheme::Http => a.to_string(),
                    values::Scheme::Https { name } => format!("https://{name} ({a})"),
                    values::Scheme::H2c => format!("h2c://{a}"),
                    values::Scheme::H2 { name } => format!("h2://{name} ({a})"),
                };
                if *w == 1 {
                    s
                } else {
                    format!("{s} weight={w}")
                }
            })
            .collect();
        s.push_str(&format!("backend {}: {}\n", b.name, servers.join(", ")));
        for e in &b.entries {
            if let values::Target::Name { .. } = &e.target {
                let ips: Vec<String> = e.resolved.iter().map(|ip| ip.to_string()).collect();
                let resolvers = if b.resolve.resolvers.is_empty() {
                    "the system's resolvers".to_string()
                } else {
                    b.resolve
                        .resolvers
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                s.push_str(&format!(
                    "  name {} resolves to [{}] via {resolvers} ({}; re-resolved {})\n",
                    e.target,
                    ips.join(", "),
                    b.resolve.family,
                    match b.resolve.interval {
                        Some(i) => format!("every {i:?}"),
                        None => format!(
                            "at its TTL, within {:?} to {:?}",
                            b.resolve.ttl_min, b.resolve.ttl_max
                        ),
                    }
                ));
            }
        }
        let balance = match b.balance {
            values::Balance::Hash => format!("hash on {}", b.hash_on),
            ref other => other.to_string(),
        };
        let check = match &b.check {
            Some(c) => format!(
                "{} {} expecting {} every {:?} (timeout {:?}, rise {}, fall {})",
                c.method, c.path, c.status, c.interval, c.timeout, c.rise, c.fall
            ),
            None => "none".to_string(),
        };
        s.push_str(&format!(
            "  balance {balance}; check {check}; timeouts connect {:?}, backend {:?}{}; retries {} on {}; reuse {}, max idle {}, max reuse {}; passive checks {}\n",
            b.timeout_connect,
            b.timeout_backend,
            b.timeout_try.map_or(String::new(), |t| format!(", per try {t:?}")),
            b.retries,
            b.retry_on,
            b.reuse,
            b.pool_max_idle,
            b.max_reuse.map_or("unlimited".to_string(), |n| n.to_string()),
            if b.outlier.failures == 0 {
                "off".to_string()
            } else {
                format!(
                    "after {} failures, out {:?} to {:?}",
                    b.outlier.failures, b.outlier.ejection, b.outlier.max_ejection
                )
            }
        ));
        if let Some(v) = b.send_proxy {
            let v = match v {
                values::ProxyVersion::V1 => "v1",
                values::ProxyVersion::V2 => "v2",
            };
            s.push_str(&format!(
                "  sends PROXY protocol {v} (connections private to their client)\n"
            ));
        }
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
    s.push_str(&format!(
        "logs: {} on stderr at {}; access log {} ({})\n",
        c.log_format, c.log, c.access_log, c.access_log_format
    ));
    if let Some(f) = &c.fault {
        s.push_str(&format!("FAULT INJECTION: {f} (seed {})\n", c.fault_seed));
    }
    s
}
