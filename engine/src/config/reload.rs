//! What a configuration reload (SIGHUP) may change: [`merge`] takes the running
//! configuration and a freshly validated one and returns what to apply, keeping the
//! running value of every setting only a restart can change (and naming each), and
//! [`describe_changes`] says what the reload changes, for the log.
//!
//! Changeable at run time: backends and their servers (weights, balancing, checks,
//! timeouts, retries, pool limits and reuse mode), routes and the default backend,
//! client timeouts and `grace`, `max-head`, the log filter. Not: listeners, CPUs and
//! shards, the admin address, backend TLS files, takeover, the global reuse mode, the
//! shard connection limit, the purge interval, fault injection, the access-log target
//! and the log formats.

use super::Config;

/// The configuration to apply, and the settings that changed but need a restart.
pub fn merge(current: &Config, new: Config) -> (Config, Vec<String>) {
    let mut out = new;
    let mut restart = Vec::new();
    macro_rules! keep {
        ($($field:ident => $name:literal),* $(,)?) => {$(
            if format!("{:?}", out.$field) != format!("{:?}", current.$field) {
                restart.push($name.to_string());
                out.$field = current.$field.clone();
            }
        )*};
    }
    keep! {
        listen => "listen",
        listen_shards => "listen (shards)",
        listen_tls => "listen-tls",
        listen_tls_shards => "listen-tls (shards)",
        certs => "cert/key (the files are re-read; their paths need a restart)",
        backend_tls => "backend-ca/backend-cert/backend-key",
        placement => "cpus/shards",
        admin => "admin",
        reuse => "reuse (the global mode; a backend's own reuse key reloads)",
        pool_purge_delay => "pool-purge-delay",
        pool_low_idle => "pool-low-idle",
        takeover => "takeover",
        takeover_timeout => "takeover-timeout",
        max_conns_per_shard => "max-conns-per-shard",
        fault => "fault",
        fault_seed => "fault-seed",
        spin_before_park => "spin-before-park",
        log_format => "log-format",
        access_log => "access-log",
        access_log_format => "access-log-format",
        reuse_port_shared => "reuse-port-shared",
    }
    (out, restart)
}

/// What applying `new` over `old` changes, in words.
pub fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for b in &new.backends {
        match old.backends.iter().find(|o| o.name == b.name) {
            None => out.push(format!("backend {} added", b.name)),
            Some(o) if o != b => {
                let added = b.servers.iter().filter(|s| !o.servers.contains(s)).count();
                let removed = o.servers.iter().filter(|s| !b.servers.contains(s)).count();
                out.push(format!(
                    "backend {} changed ({added} server(s) added, {removed} removed)",
                    b.name
                ));
            }
            Some(_) => {}
        }
    }
    for o in &old.backends {
        if !new.backends.iter().any(|b| b.name == o.name) {
            out.push(format!("backend {} removed (its servers drain)", o.name));
        }
    }
    let routes = |c: &Config| {
        c.routes
            .iter()
            .map(|r| format!("{}{}={}", r.host, r.path_prefix, c.backends[r.backend].name))
            .collect::<Vec<_>>()
    };
    if routes(old) != routes(new) {
        out.push(format!("routes now {:?}", routes(new)));
    }
    let default_name = |c: &Config| c.default_backend.map(|b| c.backends[b].name.clone());
    if default_name(old) != default_name(new) {
        out.push(format!(
            "default backend now {}",
            default_name(new).unwrap_or_else(|| "none".into())
        ));
    }
    if format!("{:?}", old.timeouts) != format!("{:?}", new.timeouts) {
        out.push("timeouts changed".into());
    }
    if old.log != new.log {
        out.push(format!("log filter now {}", new.log));
    }
    out
}
