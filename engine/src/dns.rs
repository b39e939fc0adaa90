//! Servers given by DNS name (`servers = ["api.internal:9000"]`): resolved before the
//! shards start, then re-resolved on a thread of their own, never on a shard.
//!
//! Resolution uses hickory-resolver (A and AAAA, `/etc/hosts` first, `/etc/resolv.conf`
//! or the configured `resolvers`) on a current-thread tokio runtime owned by the
//! `ringway-dns` thread. Each address a name resolves to is a server of its backend, with
//! the name's scheme and weight: it is balanced, checked and pooled like any other.
//!
//! When a name's addresses change, the thread builds the configuration in force with the
//! new addresses, rebuilds the server table from the last one ([`Table::rebuild`]: a
//! server that stays keeps its index, pool slot, pooled connections and health state)
//! and publishes both exactly as a SIGHUP reload does; every shard picks them up at its
//! next 20 ms poll. An address that went away is a removed server: no new requests, its
//! idle connections close, requests in flight on it finish.
//!
//! A name that stops resolving (NXDOMAIN, SERVFAIL, timeout) or answers with no address
//! keeps its last addresses; the change of state is logged once (and again when it
//! changes, or resolves again) and counted in `/metrics`
//! (`ringway_dns_resolutions_total`, `ringway_dns_failures_total`, `ringway_dns_addresses`,
//! `ringway_dns_failing`, per backend and name).
//!
//! At start-up (and in `check-config`), and for a name a reload adds, a name that does not
//! resolve is a configuration error (exit 2, or the reload is refused): starting with a
//! backend that has nowhere to send requests would only turn a typo into 503s, as nginx
//! and HAProxy (by default) also refuse to start then.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::values::{Family, Target};
use crate::config::{Config, ConfigError, ResolveConfig};
use crate::ctx::Shared;
use crate::metrics::DnsName;

/// How often the resolver thread looks for due names, new configurations and the stop
/// flag.
const TICK: Duration = Duration::from_millis(50);

/// What one resolution found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Addrs(Vec<IpAddr>, Duration),
    /// Why there is no address: `NXDOMAIN`, `no address`, `timeout` or the error.
    Failed(String),
}

/// One resolver per distinct resolution setting (servers, family, timeout).
#[derive(Default)]
struct Resolvers {
    by_key: HashMap<String, TokioResolver>,
}

impl Resolvers {
    fn get(&mut self, rc: &ResolveConfig) -> Result<TokioResolver, String> {
        let key = format!("{:?}/{}/{:?}", rc.resolvers, rc.family, rc.timeout);
        if let Some(r) = self.by_key.get(&key) {
            return Ok(r.clone());
        }
        let r = build_resolver(rc)?;
        self.by_key.insert(key, r.clone());
        Ok(r)
    }
}

fn build_resolver(rc: &ResolveConfig) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if rc.resolvers.is_empty() {
        match TokioResolver::builder(provider.clone()) {
            Ok(b) => b,
            // No usable /etc/resolv.conf: names in /etc/hosts still resolve.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system's DNS configuration; only /etc/hosts names resolve");
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(Vec::new()),
                    provider,
                )
            }
        }
    } else {
        let servers = rc
            .resolvers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let o = builder.options_mut();
    o.ip_strategy = match rc.family {
        Family::Any => LookupIpStrategy::Ipv4AndIpv6,
        Family::Ipv4 => LookupIpStrategy::Ipv4Only,
        Family::Ipv6 => LookupIpStrategy::Ipv6Only,
    };
    // Our own schedule decides when to ask again; the resolver's cache would only answer
    // from an old response.
    o.cache_size = 0;
    o.use_hosts_file = ResolveHosts::Always;
    o.timeout = rc.timeout;
    o.attempts = 1;
    builder.build().map_err(|e| e.to_string())
}

/// Resolves `host` once, within the backend's `resolve-timeout`.
async fn resolve(resolver: &TokioResolver, host: &str, timeout: Duration) -> Answer {
    resolver.clear_cache();
    // A final dot: the name as given, no search domains.
    let fqdn = if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    };
    match tokio::time::timeout(timeout, resolver.lookup_ip(fqdn.as_str())).await {
        Err(_) => Answer::Failed("timeout".into()),
        Ok(Err(e)) if e.is_nx_domain() => Answer::Failed("NXDOMAIN".into()),
        Ok(Err(e)) if e.is_no_records_found() => Answer::Failed("no address".into()),
        Ok(Err(e)) => Answer::Failed(e.to_string()),
        Ok(Ok(l)) => {
            let mut ips: Vec<IpAddr> = l.iter().collect();
            ips.sort();
            ips.dedup();
            if ips.is_empty() {
                return Answer::Failed("no address".into());
            }
            let ttl = l.valid_until().saturating_duration_since(Instant::now());
            Answer::Addrs(ips, ttl)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the DNS resolver's runtime: {e}"))
}

/// The error for a name that does not resolve when it must (start-up, a reload).
fn unresolved(backend: &str, host: &str, port: u16, why: &str) -> ConfigError {
    ConfigError::new(
        &format!("backends.{backend}.servers"),
        format!(
            "server '{host}:{port}' of backend '{backend}' does not resolve ({why}); ringway does not start (or reload) with a server it cannot find"
        ),
    )
}

/// Resolves every name of `config` that has no address yet (all of them at start-up):
/// before the shards start, on the calling thread. A name without an address is an
/// error naming its backend and server.
pub fn resolve_missing(config: &mut Config) -> Result<(), ConfigError> {
    let todo: Vec<(usize, usize)> = config
        .backends
        .iter()
        .enumerate()
        .flat_map(|(b, be)| {
            be.entries
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e.target, Target::Name { .. }) && e.resolved.is_empty())
                .map(move |(i, _)| (b, i))
        })
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let rt = runtime().map_err(|e| ConfigError::new("resolvers", e))?;
    let mut resolvers = Resolvers::default();
    for (b, i) in todo {
        let be = &config.backends[b];
        let Target::Name { host, port } = be.entries[i].target.clone() else {
            continue;
        };
        let resolver = resolvers
            .get(&be.resolve)
            .map_err(|e| unresolved(&be.name, &host, port, &e))?;
        let timeout = be.resolve.timeout;
        match rt.block_on(resolve(&resolver, &host, timeout)) {
            Answer::Addrs(ips, _) => {
                tracing::debug!(backend = %be.name, name = %host, addresses = ?ips, "resolved");
                config.backends[b].entries[i].resolved = ips;
            }
            Answer::Failed(why) => return Err(unresolved(&be.name, &host, port, &why)),
        }
    }
    for be in &mut config.backends {
        be.refill();
    }
    Ok(())
}

/// For a reload: each name of `new` that `current` also has (same backend, host and
/// port) keeps the addresses it resolves to now; the others are resolved
/// ([`resolve_missing`]).
pub fn carry_over(new: &mut Config, current: &Config) -> Result<(), ConfigError> {
    for be in &mut new.backends {
        let Some(old) = current.backends.iter().find(|o| o.name == be.name) else {
            continue;
        };
        for e in &mut be.entries {
            if !matches!(e.target, Target::Name { .. }) {
                continue;
            }
            if let Some(o) = old.entries.iter().find(|o| o.target == e.target) {
                e.resolved = o.resolved.clone();
            }
        }
        be.refill();
    }
    resolve_missing(new)
}

/// One (backend, name) the thread keeps resolving.
struct Watched {
    backend: String,
    host: String,
    port: u16,
    resolve: ResolveConfig,
    next: Instant,
    in_flight: bool,
    /// `None`: resolving; `Some(why)`: failing for that reason.
    failing: Option<String>,
    stats: Arc<DnsName>,
}

type Key = (String, String, u16);

/// Starts the `ringway-dns` thread: it re-resolves the names of the configuration in
/// force until the stop flag is set. Its runtime (an epoll fd, an eventfd and a second
/// epoll fd) is built here, before the thread starts, so that when this returns the
/// process holds every fd it holds while idle: the start-up that announces the
/// listeners after it is complete, and a count of open fds taken then is the idle
/// figure (built in the thread, the fds could appear a moment after a caller counted).
pub fn spawn(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = runtime();
    std::thread::Builder::new()
        .name("ringway-dns".into())
        .spawn(move || {
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("{e}; DNS names keep the addresses they had at start-up");
                    return;
                }
            };
            rt.block_on(run(shared));
        })
}

async fn run(shared: Arc<Shared>) {
    let mut watched: HashMap<Key, Watched> = HashMap::new();
    let mut resolvers = Resolvers::default();
    let mut seen_generation = u64::MAX;
    let (tx, rx) = mpsc::channel::<(Key, Answer)>();
    while !shared.stop.load(Ordering::SeqCst) {
        let g = shared.generation.load(Ordering::SeqCst);
        if g != seen_generation {
            seen_generation = g;
            let config = match shared.reload.lock() {
                Ok(r) => r.config.clone(),
                Err(_) => break,
            };
            reconcile(&mut watched, &config, &shared);
        }
        let now = Instant::now();
        for (key, w) in watched.iter_mut() {
            if w.in_flight || w.next > now {
                continue;
            }
            let resolver = match resolvers.get(&w.resolve) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send((key.clone(), Answer::Failed(e)));
                    w.in_flight = true;
                    continue;
                }
            };
            w.in_flight = true;
            let (tx, key, host, timeout) =
                (tx.clone(), key.clone(), w.host.clone(), w.resolve.timeout);
            tokio::spawn(async move {
                let answer = resolve(&resolver, &host, timeout).await;
                let _ = tx.send((key, answer));
            });
        }
        while let Ok((key, answer)) = rx.try_recv() {
            let Some(w) = watched.get_mut(&key) else {
                continue;
            };
            w.in_flight = false;
            w.stats.resolutions.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            match answer {
                Answer::Addrs(ips, ttl) => {
                    if let Some(why) = w.failing.take() {
                        tracing::info!(backend = %w.backend, name = %w.host, addresses = ?ips, "DNS name {}:{} resolves again (it had failed: {why})", w.host, w.port);
                    }
                    w.stats.failing.store(false, Ordering::Relaxed);
                    w.next = now
                        + w.resolve
                            .interval
                            .unwrap_or_else(|| ttl.clamp(w.resolve.ttl_min, w.resolve.ttl_max));
                    if apply(&shared, &key, &ips) {
                        w.stats.addresses.store(ips.len() as u64, Ordering::Relaxed);
                    }
                }
                Answer::Failed(why) => {
                    w.stats.failures.fetch_add(1, Ordering::Relaxed);
                    w.stats.failing.store(true, Ordering::Relaxed);
                    if w.failing.as_deref() != Some(why.as_str()) {
                        tracing::warn!(backend = %w.backend, name = %w.host, "DNS name {}:{} of backend {} does not resolve ({why}); keeping its last addresses", w.host, w.port, w.backend);
                        w.failing = Some(why);
                    }
                    w.next = now + w.resolve.ttl_min;
                }
            }
        }
        let now = Instant::now();
        let wake = watched
            .values()
            .filter(|w| !w.in_flight)
            .map(|w| w.next)
            .min()
            .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
        tokio::time::sleep(wake.max(Duration::from_millis(1))).await;
    }
}

/// Makes `watched` the names of `config`: new ones are watched (due after their
/// `resolve-ttl-min`: they were just resolved), gone ones dropped; publishes their figures.
fn reconcile(watched: &mut HashMap<Key, Watched>, config: &Config, shared: &Shared) {
    let mut now_keys = Vec::new();
    for be in &config.backends {
        for e in &be.entries {
            let Target::Name { host, port } = &e.target else {
                continue;
            };
            let key = (be.name.clone(), host.clone(), *port);
            now_keys.push(key.clone());
            match watched.get_mut(&key) {
                Some(w) => {
                    if w.resolve != be.resolve {
                        w.resolve = be.resolve.clone();
                        w.next = Instant::now();
                    }
                }
                None => {
                    let stats = Arc::new(DnsName {
                        backend: be.name.clone(),
                        name: format!("{host}:{port}"),
                        resolutions: AtomicU64::new(0),
                        failures: AtomicU64::new(0),
                        addresses: AtomicU64::new(e.resolved.len() as u64),
                        failing: AtomicBool::new(false),
                    });
                    watched.insert(
                        key,
                        Watched {
                            backend: be.name.clone(),
                            host: host.clone(),
                            port: *port,
                            resolve: be.resolve.clone(),
                            next: Instant::now()
                                + be.resolve.interval.unwrap_or(be.resolve.ttl_min),
                            in_flight: false,
                            failing: None,
                            stats,
                        },
                    );
                }
            }
        }
    }
    watched.retain(|k, _| now_keys.contains(k));
    let mut list: Vec<Arc<DnsName>> = watched.values().map(|w| w.stats.clone()).collect();
    list.sort_by(|a, b| (&a.backend, &a.name).cmp(&(&b.backend, &b.name)));
    shared.dns_names.store(Arc::new(list));
}

/// Puts `ips` as the addresses of the name `key` in the configuration in force, if they
/// changed: a new table from the last one, published like a reload. Returns whether the
/// name is still configured.
fn apply(shared: &Shared, key: &Key, ips: &[IpAddr]) -> bool {
    let (backend, host, port) = key;
    let Ok(_guard) = shared.update.lock() else {
        return false;
    };
    let (current, table) = match shared.reload.lock() {
        Ok(r) => (r.config.clone(), r.table.clone()),
        Err(_) => return false,
    };
    let target = Target::Name {
        host: host.clone(),
        port: *port,
    };
    let Some(b) = current.backends.iter().position(|be| &be.name == backend) else {
        return false;
    };
    let Some(i) = current.backends[b]
        .entries
        .iter()
        .position(|e| e.target == target)
    else {
        return false;
    };
    let old = &current.backends[b].entries[i].resolved;
    if old.as_slice() == ips {
        return true;
    }
    let mut new: Config = (*current).clone();
    let addrs = |v: &[IpAddr]| {
        v.iter()
            .map(|ip| SocketAddr::new(*ip, *port).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    tracing::info!(
        backend = %backend,
        name = %host,
        "DNS name {host}:{port} of backend {backend} now resolves to [{}] (was [{}])",
        addrs(ips),
        addrs(old)
    );
    new.backends[b].entries[i].resolved = ips.to_vec();
    new.backends[b].refill();
    let new_table = table.rebuild(&new);
    shared.publish_reload(new, new_table);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_resolve_without_a_dns_server() {
        let rc = ResolveConfig {
            resolvers: Vec::new(),
            family: Family::Ipv4,
            interval: None,
            ttl_min: Duration::from_secs(1),
            ttl_max: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        };
        let rt = runtime().unwrap();
        let r = build_resolver(&rc).unwrap();
        match rt.block_on(resolve(&r, "localhost", rc.timeout)) {
            Answer::Addrs(ips, _) => {
                assert!(ips.contains(&IpAddr::from([127, 0, 0, 1])), "{ips:?}")
            }
            other => panic!("localhost: {other:?}"),
        }
    }
}
