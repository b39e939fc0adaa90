//! Every setting ringway has, in one place: its flag and file key (the field name in
//! kebab-case), its kind of value, its default and its help. To add a setting, add one
//! entry here, then read it in `config::build` into a [`Config`](super::Config) field.
//! `--help` (grouped by `help_heading`), the TOML key, flag-over-file precedence, the
//! messages naming the flag (or the key, file and line) and `docs/configuration.md`
//! (checked by a unit test) follow from the entry; see [`define`](super::define).

use super::values::{
    AccessLog, Addr, Backend, BalanceKind, CheckPath, Count, Cpus, Dur, FamilyKind, Format,
    HashOnKind, Listen, LogFilter, MethodKind, OnOff, ResolverAddr, RetryOnKind, Reuse, Route,
    Size, StatusRangeKind, Text,
};

pub const LISTENERS: &str = "Listeners";
pub const BACKENDS: &str = "Backends and routing";
pub const SHARDS: &str = "Shards";
pub const POOL: &str = "Pool and takeover";
pub const LIMITS: &str = "Timeouts and limits";
pub const LOGS: &str = "Logs and admin";
pub const TESTING: &str = "Testing";

settings! {
    many {
        /// Address to accept clients on (repeatable), optionally only on some shards: `ADDR@0-1`.
        #[arg(value_name = "ADDR", help_heading = LISTENERS)]
        listen: Listen = "127.0.0.1:8080";
        /// Address to accept TLS clients on (repeatable, `ADDR[@SHARDS]`); ALPN picks HTTP/2 or HTTP/1.1. Needs --cert and --key.
        #[arg(value_name = "ADDR", help_heading = LISTENERS)]
        listen_tls: Listen;
        /// PEM certificate chain for --listen-tls (repeatable, paired in order with --key); served for the names in its SAN, chosen by SNI; the first is the default.
        #[arg(value_name = "FILE", help_heading = LISTENERS)]
        cert: Text;
        /// PEM private key of the --cert at the same position (repeatable).
        #[arg(value_name = "FILE", help_heading = LISTENERS)]
        key: Text;
        /// A backend: [NAME=]SERVER[,SERVER...] (repeatable; the first is the default backend); SERVER is HOST:PORT, http://HOST:PORT, https://HOST:PORT (TLS, SNI = HOST) or h2c://HOST:PORT (HTTP/2, prior knowledge).
        #[arg(value_name = "SPEC", help_heading = BACKENDS)]
        backend: Backend;
        /// A route: HOST[/PATH-PREFIX]=NAME (repeatable; longest matching prefix wins; HOST `*` matches any).
        #[arg(value_name = "SPEC", help_heading = BACKENDS)]
        route: Route;
        /// DNS server (IP or IP:PORT, repeatable) that resolves servers given by name (`NAME:PORT`). Default: the system's (/etc/resolv.conf, and /etc/hosts).
        #[arg(value_name = "ADDR", help_heading = BACKENDS)]
        resolvers: ResolverAddr;
    }
    one {
        /// Share the listen addresses with another process already listening on them (SO_REUSEPORT splits the connections between both); without it ringway refuses to start there.
        #[arg(value_name = "on|off", num_args = 0..=1, default_missing_value = "on", help_heading = LISTENERS)]
        reuse_port_shared: OnOff = "off";
        /// Expect a PROXY protocol header (v1 or v2, from a load balancer in front) at the start of every client connection, on every --listen and --listen-tls listener: its source address is the client's in logs and X-Forwarded-For. A connection without a valid header is closed.
        #[arg(value_name = "on|off", num_args = 0..=1, default_missing_value = "on", help_heading = LISTENERS)]
        accept_proxy: OnOff = "off";
        /// Backend for requests no route matches: a backend name, or `none` to answer 404. Default: the first backend.
        #[arg(value_name = "NAME", help_heading = BACKENDS)]
        default_backend: Text;
        /// How a backend spreads requests over its servers: round-robin (smooth, weighted), least-request (fewest outstanding requests of two random servers) or hash (consistent, on --hash-on). Default for every backend.
        #[arg(value_name = "round-robin|least-request|hash", help_heading = BACKENDS)]
        balance: BalanceKind = "round-robin";
        /// What `balance = hash` hashes: header:NAME, cookie:NAME, path or client-ip (a request without the key gets round-robin).
        #[arg(value_name = "KEY", help_heading = BACKENDS)]
        hash_on: HashOnKind = "client-ip";
        /// Further tries a request may get on another server of its backend, when it is idempotent, its body is all sent and no response byte came (see --retry-on). A stale reused connection is always retried once anyway.
        #[arg(value_name = "N", help_heading = BACKENDS)]
        retries: Count = "0";
        /// Which failures --retries covers: connect-failure, reset (closed before a response byte), timeout (no response head within --timeout-try); comma-separated, or none.
        #[arg(value_name = "LIST", help_heading = BACKENDS)]
        retry_on: RetryOnKind = "connect-failure,reset";
        /// Path of the active health check (HTTP); given, every backend checks its servers. Default: no active checks.
        #[arg(value_name = "PATH", help_heading = BACKENDS)]
        check_path: CheckPath;
        /// Method of the active health check.
        #[arg(value_name = "METHOD", help_heading = BACKENDS)]
        check_method: MethodKind = "GET";
        /// Statuses an active health check accepts as healthy, e.g. 200-399.
        #[arg(value_name = "RANGE", help_heading = BACKENDS)]
        check_status: StatusRangeKind = "200-399";
        /// Time between two active checks of one server.
        #[arg(value_name = "DUR", help_heading = BACKENDS)]
        check_interval: Dur = "2s";
        /// Time an active check may take (connect, request and response head) before it counts as failed.
        #[arg(value_name = "DUR", help_heading = BACKENDS)]
        check_timeout: Dur = "1s";
        /// Consecutive passed checks that bring a down server up (HAProxy's rise).
        #[arg(value_name = "N", help_heading = BACKENDS)]
        check_rise: Count = "2";
        /// Consecutive failed checks that take an up server down (HAProxy's fall).
        #[arg(value_name = "N", help_heading = BACKENDS)]
        check_fall: Count = "3";
        /// Passive checks: consecutive connect errors, resets or 5xx answers from a server that take it out (0 = off).
        #[arg(value_name = "N", help_heading = BACKENDS)]
        outlier_failures: Count = "5";
        /// How long a server taken out by passive checks stays out the first time; it doubles each time it fails again, up to --outlier-max-ejection.
        #[arg(value_name = "DUR", help_heading = BACKENDS)]
        outlier_ejection: Dur = "1s";
        /// Longest time a server stays out after passive checks.
        #[arg(value_name = "DUR", help_heading = BACKENDS)]
        outlier_max_ejection: Dur = "30s";
        /// Which addresses a server given by name resolves to: any (A and AAAA), ipv4 (A only) or ipv6 (AAAA only).
        #[arg(value_name = "any|ipv4|ipv6", help_heading = BACKENDS)]
        resolve_family: FamilyKind = "any";
        /// Re-resolve servers given by name this often, whatever their TTL. Default: honour each answer's TTL, between --resolve-ttl-min and --resolve-ttl-max.
        #[arg(value_name = "DUR", help_heading = BACKENDS)]
        resolve_interval: Dur;
        /// Shortest time between two resolutions of a name: a lower TTL is raised to it, and a failed resolution is retried after it.
        #[arg(value_name = "DUR", help_heading = BACKENDS)]
        resolve_ttl_min: Dur = "1s";
        /// Longest time between two resolutions of a name: a higher TTL is lowered to it.
        #[arg(value_name = "DUR", help_heading = BACKENDS)]
        resolve_ttl_max: Dur = "60s";
        /// Time one resolution of a name may take (all its queries and retries) before it counts as failed.
        #[arg(value_name = "DUR", help_heading = BACKENDS)]
        resolve_timeout: Dur = "2s";
        /// PEM CA bundle that https:// backends are verified against. Default: the system roots.
        #[arg(value_name = "FILE", help_heading = BACKENDS)]
        backend_ca: Text;
        /// PEM client certificate presented to https:// backends (mTLS); needs --backend-key.
        #[arg(value_name = "FILE", help_heading = BACKENDS)]
        backend_cert: Text;
        /// PEM private key of --backend-cert.
        #[arg(value_name = "FILE", help_heading = BACKENDS)]
        backend_key: Text;
        /// CPUs to run one pinned shard on each, e.g. `0-3,8`. Default: every CPU the process may use.
        #[arg(value_name = "LIST", conflicts_with = "shards", help_heading = SHARDS)]
        cpus: Cpus;
        /// Run N unpinned shards instead of pinned ones. Default: one pinned shard per CPU (see --cpus).
        #[arg(value_name = "N", help_heading = SHARDS)]
        shards: Count;
        /// Busy-poll this long before a shard parks (lower latency, more CPU), e.g. 50us; 0 = never.
        #[arg(value_name = "DUR", help_heading = SHARDS)]
        spin_before_park: Dur = "0s";
        /// Response bodies of at least this size (Content-Length) pass from a plain-TCP backend to a plain-TCP client by splice(2), through a pipe, without being copied through ringway; TLS or HTTP/2 on either side copies. 0 = never (the default: see docs/tuning.md before turning it on).
        #[arg(value_name = "SIZE", help_heading = SHARDS)]
        splice_min: Size = "0";
        /// Backend connection reuse: never, safe, aggressive or always (HAProxy's meanings).
        #[arg(value_name = "never|safe|aggressive|always", help_heading = POOL)]
        reuse: Reuse = "safe";
        /// Idle backend connections kept per server per shard.
        #[arg(value_name = "N", help_heading = POOL)]
        pool_max_idle: Count = "64";
        /// Interval of the idle-pool purge (at least 10ms).
        #[arg(value_name = "DUR", help_heading = POOL)]
        pool_purge_delay: Dur = "5s";
        /// Requests a backend connection may carry before it is closed (0 = unlimited).
        #[arg(value_name = "N", help_heading = POOL)]
        max_reuse: Count = "0";
        /// No takeover while a server has fewer idle connections than this, over all shards (HAProxy's pool-low-conn).
        #[arg(value_name = "N", help_heading = POOL)]
        pool_low_idle: Count = "0";
        /// Take over idle backend connections from other shards: on or off.
        #[arg(value_name = "on|off", help_heading = POOL)]
        takeover: OnOff = "on";
        /// How long a taker waits for a Grant before it connects anew.
        #[arg(value_name = "DUR", help_heading = POOL)]
        takeover_timeout: Dur = "5ms";
        /// Time a client has to send a complete request head.
        #[arg(value_name = "DUR", help_heading = LIMITS)]
        timeout_client_head: Dur = "10s";
        /// Time an idle keep-alive client connection is kept open.
        #[arg(value_name = "DUR", help_heading = LIMITS)]
        timeout_client_idle: Dur = "60s";
        /// Time a client has to send a whole request body; then 408 and the backend connection closes.
        #[arg(value_name = "DUR", help_heading = LIMITS)]
        timeout_client_body: Dur = "300s";
        /// Time allowed to connect to a backend server.
        #[arg(value_name = "DUR", help_heading = LIMITS)]
        timeout_connect: Dur = "3s";
        /// Time a backend may stay silent while a response is expected.
        #[arg(value_name = "DUR", help_heading = LIMITS)]
        timeout_backend: Dur = "30s";
        /// Longest silence of the server during one try, instead of --timeout-backend; a try that times out before any response byte may be retried (--retry-on timeout). Default: --timeout-backend.
        #[arg(value_name = "DUR", help_heading = LIMITS)]
        timeout_try: Dur;
        /// On SIGINT/SIGTERM, how long in-flight requests may take to finish.
        #[arg(value_name = "DUR", help_heading = LIMITS)]
        grace: Dur = "10s";
        /// Largest request or response head accepted (1KiB to 16MiB); larger heads get 431.
        #[arg(value_name = "SIZE", help_heading = LIMITS)]
        max_head: Size = "64KiB";
        /// Client connections a shard serves at once; more are refused with 503.
        #[arg(value_name = "N", help_heading = LIMITS)]
        max_conns_per_shard: Count = "20000";
        /// When a client cancels a request to an HTTP/1.1 backend, how long the rest of the response may take to arrive (read and discarded) so the backend connection is pooled instead of closed; 0s = always close.
        #[arg(value_name = "DUR", help_heading = LIMITS)]
        cancel_drain_time: Dur = "1s";
        /// Largest rest of a cancelled response read to save its backend connection; a larger one closes it.
        #[arg(value_name = "SIZE", help_heading = LIMITS)]
        cancel_drain_size: Size = "64KiB";
        /// Backend connects per second one client connection may cause once its --cancel-connect-burst is spent; a connect's token comes back unless a cancel of that client cost the connection; past it, requests wait unless a pooled connection is idle. 0 = no bound.
        #[arg(value_name = "N", help_heading = LIMITS)]
        cancel_connect_rate: Count = "10";
        /// Backend connects one client connection may have outstanding or lost to its cancels before --cancel-connect-rate applies.
        #[arg(value_name = "N", help_heading = LIMITS)]
        cancel_connect_burst: Count = "128";
        /// Resets per second an HTTP/2 client may send for requests in progress (after --h2-reset-burst), counted over the connection's life; past it, GOAWAY(ENHANCE_YOUR_CALM). 0 = no bound.
        #[arg(value_name = "N", help_heading = LIMITS)]
        h2_reset_rate: Count = "100";
        /// Resets of requests in progress an HTTP/2 client may send at once before --h2-reset-rate applies.
        #[arg(value_name = "N", help_heading = LIMITS)]
        h2_reset_burst: Count = "1000";
        /// Address of the admin listener serving /metrics (Prometheus text format).
        #[arg(value_name = "ADDR", help_heading = LOGS)]
        admin: Addr;
        /// Log filter (error, warn, info, debug, trace or a tracing filter such as `ringway=debug,warn`); RINGWAY_LOG overrides it.
        #[arg(value_name = "FILTER", help_heading = LOGS)]
        log: LogFilter = "info";
        /// Format of the log on stderr: text or json.
        #[arg(value_name = "text|json", help_heading = LOGS)]
        log_format: Format = "text";
        /// Where the access log (one line per request) goes: stdout, off, or a FILE to append to (reopened on SIGUSR1).
        #[arg(value_name = "stdout|off|FILE", help_heading = LOGS)]
        access_log: AccessLog = "stdout";
        /// Format of the access log: text (like HAProxy's httplog) or json.
        #[arg(value_name = "text|json", help_heading = LOGS)]
        access_log_format: Format = "text";
        /// Fault injection, e.g. `reserve=2%,connect=1%,grant-delay=5%` (testing only). Default: off.
        #[arg(value_name = "SPEC", help_heading = TESTING)]
        fault: Text;
        /// Seed for fault injection, for replayable runs.
        #[arg(value_name = "N", help_heading = TESTING)]
        fault_seed: Count = "1";
    }
}
