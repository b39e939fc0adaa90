//! Per-shard counters and latency histograms, and their Prometheus rendering.
//!
//! Each shard owns its [`ShardMetrics`] outright (plain integers behind a `RefCell`, no
//! atomics): the request path only increments them, mostly once per request from
//! `report::done` (above this module: it knows nothing of requests).
//! `/metrics` asks every shard for a [`Snapshot`] through the shard mesh and
//! [`render`](render::render)s them: one series per shard (a `shard` label), never a
//! synthetic total, so that PromQL's `sum()` gives the totals. Latencies are histograms
//! in seconds with fixed buckets ([`BUCKETS`]), which can be summed over shards and
//! servers, unlike quantiles.

pub mod render;

use std::time::Duration;

use ringway_pool::ServerStats;

pub use render::{render, Labels};

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implied): from half a
/// millisecond (a pooled request on loopback) to a minute (past `--timeout-backend`).
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A latency histogram with the [`BUCKETS`] bounds: plain counts, no allocation.
#[derive(Debug, Clone, Default)]
pub struct Hist {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum: Duration,
    pub count: u64,
}

impl Hist {
    pub fn record(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += d;
        self.count += 1;
    }
}

/// Request-path counters of one shard.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub accepted: u64,
    pub refused_capacity: u64,
    pub requests: u64,
    /// Responses sent to clients, by status class 1xx..5xx (index 1..=5).
    pub responses: [u64; 6],
    pub bad_request: u64,
    pub head_too_large: u64,
    pub head_timeout: u64,
    pub no_route: u64,
    pub backend_connect_errors: u64,
    pub backend_timeouts: u64,
    pub backend_errors: u64,
    pub client_aborts: u64,
    pub retries: u64,
    pub idle_closed_by_server: u64,
    pub server_down_events: u64,
    /// Connects that failed on our own limits (fds, memory): 503, server not marked down.
    pub local_exhaustion: u64,
    /// Multishot receives that found this shard's receive buffer ring empty (`ENOBUFS`)
    /// and fell back to poll + `RECV` (glommio's figure, read at each snapshot).
    pub io_buffer_ring_exhausted: u64,
    /// Multishot receives armed on this shard (glommio's figure; 0 with the ring off).
    pub io_multishot_armed: u64,
    /// Single receives from the ring armed on this shard: each connection's first read
    /// (glommio's figure; 0 with the ring off).
    pub io_single_recv_armed: u64,
    /// Response bodies moved by splice(2) (`--splice-min`), their bytes, and the pipes
    /// opened for them (`splice::stats`, read at each snapshot).
    pub body_spliced: u64,
    pub body_spliced_bytes: u64,
    pub splice_pipes_opened: u64,
    /// Content-Length body bytes sent to clients straight from the receive buffer ring,
    /// never copied through ringway's memory (`splice::relay_length`).
    pub body_ring_sent_bytes: u64,
    /// Empty pipes the shard keeps for the next spliced body, now (a gauge, read at each
    /// snapshot): two descriptors each.
    pub splice_pipes_pooled: u64,
    /// TLS handshakes with clients completed, of which resumed, and failed.
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    pub tls_handshake_errors: u64,
    /// Connections on `--accept-proxy` listeners closed for a missing, malformed or
    /// truncated PROXY header.
    pub proxy_header_errors: u64,
    /// HTTP/2 connections closed with ENHANCE_YOUR_CALM for flooding cheap frames.
    pub h2_flood_closed: u64,
    /// HTTP/2 client connections closed with ENHANCE_YOUR_CALM for resetting too many
    /// streams in progress over time (`--h2-reset-rate`).
    pub h2_reset_closed: u64,
    /// HTTP/2 streams refused because their connection already had twice
    /// SETTINGS_MAX_CONCURRENT_STREAMS requests in progress (reset ones still finishing).
    pub h2_refused_streams: u64,
    /// Protocol errors of HTTP/2 clients (RFC 9113): stream errors sent by us, and
    /// connection errors (GOAWAY with an error code).
    pub h2_stream_errors: u64,
    pub h2_conn_errors: u64,
    /// Cancelled requests whose backend connection was saved: the rest of the response
    /// read and discarded, the connection pooled.
    pub cancel_drained: u64,
    /// Cancelled requests whose backend connection had to be closed.
    pub cancel_closed: u64,
    /// Requests that waited because their client connection's cancels had cost too many
    /// backend connections (`--cancel-connect-rate`).
    pub cancel_connect_waits: u64,
    /// Backend connections closed because bytes came that no request asked for (past the
    /// end of a response, or on an idle connection that carried a request body).
    pub backend_desync: u64,
    /// Request bodies not complete within `--timeout-client-body` (408).
    pub body_timeout: u64,
    /// Access log lines written to the shard's buffer.
    pub access_log_lines: u64,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: u64,
}

/// Takeover figures of one shard (as taker and as owner).
#[derive(Debug, Clone, Default)]
pub struct TakeoverCounters {
    pub asked: u64,
    pub granted: u64,
    pub denied: u64,
    pub timeout: u64,
    pub failed: u64,
    pub reservation_failed: u64,
    pub late_grant_adopted: u64,
    pub channel_full: u64,
    pub handed_over: u64,
    pub owner_denied: u64,
    /// Tickets issued and not yet resolved (at rest: 0).
    pub pending: u64,
}

/// Kinds of backend error, the `kind` label of `ringway_server_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError {
    Connect,
    ConnectTimeout,
    Unavailable,
    Timeout,
    Response,
    Body,
}

impl ServerError {
    pub const ALL: [ServerError; 6] = [
        ServerError::Connect,
        ServerError::ConnectTimeout,
        ServerError::Unavailable,
        ServerError::Timeout,
        ServerError::Response,
        ServerError::Body,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServerError::Connect => "connect",
            ServerError::ConnectTimeout => "connect_timeout",
            ServerError::Unavailable => "unavailable",
            ServerError::Timeout => "timeout",
            ServerError::Response => "response",
            ServerError::Body => "body",
        }
    }

    /// What failed, in words, for the error log.
    pub fn what(self) -> &'static str {
        match self {
            ServerError::Connect => "connect refused or reset",
            ServerError::ConnectTimeout => "connect timed out (--timeout-connect)",
            ServerError::Unavailable => {
                "no connection could be opened (shard connection limit, fds, or a fault)"
            }
            ServerError::Timeout => "no response head within --timeout-backend",
            ServerError::Response => "failed or sent a bad response head",
            ServerError::Body => "response body broke after it started",
        }
    }
}

/// How a request's backend connection was had: the `conn` label.
pub const CONN_KINDS: [&str; 3] = ["reused", "taken_over", "new"];

/// What one shard measured about one server (one pool slot).
#[derive(Debug, Clone, Default)]
pub struct ServerFigures {
    /// Responses to requests routed to this server, by status class (index 1..=5).
    pub responses: [u64; 6],
    /// Requests by how their connection was had ([`CONN_KINDS`] order).
    pub requests: [u64; 3],
    /// Request bytes sent to the server (heads and bodies).
    pub bytes_in: u64,
    /// Response bytes sent to clients from this server (heads and bodies).
    pub bytes_out: u64,
    /// Errors by kind ([`ServerError::ALL`] order).
    pub errors: [u64; 6],
    /// Time to open a new connection.
    pub connect: Hist,
    /// From the complete request head to the first response byte sent to the client.
    pub ttfb: Hist,
}

/// What one shard measures.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    pub c: Counters,
    /// Request duration, from a complete head to the last response byte, by backend:
    /// index 0 for requests no backend served (no route, refused heads), `1 + b` for
    /// backend `b`.
    pub request: Vec<Hist>,
    /// Per pool slot.
    pub servers: Vec<ServerFigures>,
}

impl ShardMetrics {
    pub fn new(n_backends: usize, n_slots: usize) -> ShardMetrics {
        ShardMetrics {
            c: Counters::default(),
            request: vec![Hist::default(); n_backends + 1],
            servers: vec![ServerFigures::default(); n_slots],
        }
    }

    /// A configuration reload: the per-backend figures follow their backend's name to its
    /// new index (a new backend starts empty, a removed one's are dropped); per-slot
    /// figures grow (slots are stable across reloads).
    pub fn reshape(&mut self, old: &[String], new: &[String], n_slots: usize) {
        let mut request = vec![Hist::default(); new.len() + 1];
        request[0] = std::mem::take(&mut self.request[0]);
        for (i, name) in new.iter().enumerate() {
            if let Some(j) = old.iter().position(|o| o == name) {
                if let Some(h) = self.request.get_mut(j + 1) {
                    request[i + 1] = std::mem::take(h);
                }
            }
        }
        self.request = request;
        if self.servers.len() < n_slots {
            self.servers.resize(n_slots, ServerFigures::default());
        }
    }

    pub fn record_status(&mut self, status: u16) {
        let class = (status / 100) as usize;
        if (1..=5).contains(&class) {
            self.c.responses[class] += 1;
        }
    }
}

/// One shard's figures at a point in time, sent through the mesh to the admin shard.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub shard: usize,
    pub cpu: Option<usize>,
    pub c: Counters,
    pub t: TakeoverCounters,
    pub request: Vec<Hist>,
    /// Pool figures per slot.
    pub servers: Vec<ServerStats>,
    /// Request figures per slot.
    pub figures: Vec<ServerFigures>,
    /// Whether each server (table order) is up as this shard sees it.
    pub up: Vec<bool>,
    pub client_conns: u64,
    pub inflight: u64,
    pub draining: bool,
    pub faults: Vec<(String, u64)>,
    /// The active checks this shard runs: (server index, up, last change in seconds
    /// since the epoch, checks failed, checks sent).
    pub checks: Vec<(u32, bool, f64, u64, u64)>,
    /// Per backend (name): requests answered 503 because none of its servers was usable.
    pub no_server: Vec<(String, u64)>,
}

/// What the resolver thread (`dns.rs`) says about one DNS name of one backend: written by
/// that thread only (relaxed atomics), read by `/metrics`.
#[derive(Debug)]
pub struct DnsName {
    pub backend: String,
    /// `HOST:PORT` as configured.
    pub name: String,
    pub resolutions: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
    /// Addresses in use for it now (the last answer that had any).
    pub addresses: std::sync::atomic::AtomicU64,
    /// Its last resolution failed or had no address (the last addresses stay in use).
    pub failing: std::sync::atomic::AtomicBool,
}

/// The DNS names in use, replaced whole when the set of names changes.
pub type DnsNames = arc_swap::ArcSwap<Vec<std::sync::Arc<DnsName>>>;

/// The Prometheus text of the DNS names' figures (empty without names).
pub fn render_dns(names: &[std::sync::Arc<DnsName>]) -> String {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    if names.is_empty() {
        return out;
    }
    type Get = fn(&DnsName) -> u64;
    let families: [(&str, &str, &str, Get); 4] = [
        (
            "dns_resolutions_total",
            "counter",
            "Resolutions of a server's DNS name (each periodic re-resolution counts).",
            |n| n.resolutions.load(Relaxed),
        ),
        (
            "dns_failures_total",
            "counter",
            "Resolutions of a server's DNS name that failed (NXDOMAIN, SERVFAIL, timeout) or had no address; its last addresses stay in use.",
            |n| n.failures.load(Relaxed),
        ),
        (
            "dns_addresses",
            "gauge",
            "Addresses a server's DNS name stands for now (each is a server of the backend).",
            |n| n.addresses.load(Relaxed),
        ),
        (
            "dns_failing",
            "gauge",
            "1 while the last resolution of the name failed or had no address.",
            |n| u64::from(n.failing.load(Relaxed)),
        ),
    ];
    for (name, kind, help, get) in families {
        let _ = write!(
            out,
            "# HELP ringway_{name} {help}\n# TYPE ringway_{name} {kind}\n"
        );
        for n in names {
            let _ = writeln!(
                out,
                "ringway_{name}{{backend=\"{}\",name=\"{}\"}} {}",
                n.backend,
                n.name,
                get(n)
            );
        }
    }
    out
}
