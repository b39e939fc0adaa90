//! Per-shard counters and latency histograms, and their Prometheus rendering.
//!
//! Each shard owns its [`ShardMetrics`] outright (plain integers behind a `RefCell`, no
//! atomics): the request path only increments them. `/metrics` asks every shard for a
//! [`Snapshot`] through the shard mesh and renders per-shard and total figures here; no
//! lock is shared between shards.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use ringway_pool::ServerStats;

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
    /// TLS handshakes with clients completed, of which resumed, and failed.
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    pub tls_handshake_errors: u64,
    /// HTTP/2 connections closed with ENHANCE_YOUR_CALM for flooding cheap frames.
    pub h2_flood_closed: u64,
    /// Backend connections closed because bytes came that no request asked for (past the
    /// end of a response, or on an idle connection that carried a request body).
    pub backend_desync: u64,
    /// Request bodies not complete within `--timeout-client-body` (408).
    pub body_timeout: u64,
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

/// What one shard measures.
#[derive(Debug)]
pub struct ShardMetrics {
    pub c: Counters,
    pub t: TakeoverCounters,
    /// Request latency in microseconds, from a complete head to the last response byte.
    pub latency: Histogram<u64>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            c: Counters::default(),
            t: TakeoverCounters::default(),
            // 1 µs .. 1 h, 3 significant digits; the bounds are constants, so this cannot fail.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant figures is valid")),
        }
    }
}

impl ShardMetrics {
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
    pub latency: Histogram<u64>,
    pub servers: Vec<ServerStats>,
    pub client_conns: u64,
    pub inflight: u64,
    pub faults: Vec<(String, u64)>,
}

/// Names of servers for labels: (backend name, server address).
pub struct ServerLabels<'a> {
    pub labels: &'a [(String, String)],
}

fn counter(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(
        out,
        "# HELP ringway_{name} {help}\n# TYPE ringway_{name} {kind}"
    );
}

/// Renders snapshots (one per shard, any order) as Prometheus text, per shard and in total.
pub fn render(snaps: &mut [Snapshot], labels: ServerLabels<'_>, open_fds: usize) -> String {
    snaps.sort_by_key(|s| s.shard);
    let mut out = String::with_capacity(16 << 10);
    let shard_label = |s: &Snapshot| match s.cpu {
        Some(cpu) => format!("shard=\"{}\",cpu=\"{cpu}\"", s.shard),
        None => format!("shard=\"{}\"", s.shard),
    };

    type Get = fn(&Snapshot) -> u64;
    let simple: &[(&str, &str, &str, Get)] = &[
        (
            "accepted_total",
            "Client connections accepted.",
            "counter",
            |s| s.c.accepted,
        ),
        (
            "refused_capacity_total",
            "Client connections refused over --max-conns-per-shard.",
            "counter",
            |s| s.c.refused_capacity,
        ),
        (
            "client_connections",
            "Client connections open now.",
            "gauge",
            |s| s.client_conns,
        ),
        (
            "inflight_requests",
            "Requests being served now.",
            "gauge",
            |s| s.inflight,
        ),
        (
            "requests_total",
            "Requests received with a complete head.",
            "counter",
            |s| s.c.requests,
        ),
        (
            "bad_request_total",
            "Requests refused as malformed (400).",
            "counter",
            |s| s.c.bad_request,
        ),
        (
            "head_too_large_total",
            "Request heads over --max-head (431).",
            "counter",
            |s| s.c.head_too_large,
        ),
        (
            "head_timeout_total",
            "Request heads not complete in time (408).",
            "counter",
            |s| s.c.head_timeout,
        ),
        (
            "no_route_total",
            "Requests with no route (404).",
            "counter",
            |s| s.c.no_route,
        ),
        (
            "h2_flood_closed_total",
            "HTTP/2 client connections closed with ENHANCE_YOUR_CALM for sending too many frames that carry no request (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, RST_STREAM, empty DATA, unknown).",
            "counter",
            |s| s.c.h2_flood_closed,
        ),
        (
            "tls_handshakes_total",
            "TLS handshakes with clients completed.",
            "counter",
            |s| s.c.tls_handshakes,
        ),
        (
            "tls_resumed_total",
            "TLS handshakes with clients that resumed a session (ticket or cache).",
            "counter",
            |s| s.c.tls_resumed,
        ),
        (
            "tls_handshake_errors_total",
            "TLS handshakes with clients that failed (not TLS, no common protocol, timeout).",
            "counter",
            |s| s.c.tls_handshake_errors,
        ),
        (
            "backend_connect_errors_total",
            "Failed connects to backend servers.",
            "counter",
            |s| s.c.backend_connect_errors,
        ),
        (
            "backend_timeouts_total",
            "Backends too slow (504).",
            "counter",
            |s| s.c.backend_timeouts,
        ),
        (
            "backend_errors_total",
            "Backends that failed or sent garbage (502).",
            "counter",
            |s| s.c.backend_errors,
        ),
        (
            "client_aborts_total",
            "Clients that went away mid-request.",
            "counter",
            |s| s.c.client_aborts,
        ),
        (
            "retries_total",
            "Requests retried on a fresh connection after a reused one failed.",
            "counter",
            |s| s.c.retries,
        ),
        (
            "idle_closed_by_server_total",
            "Idle backend connections removed because the server closed or wrote on them.",
            "counter",
            |s| s.c.idle_closed_by_server,
        ),
        (
            "body_timeout_total",
            "Request bodies not complete within --timeout-client-body (408).",
            "counter",
            |s| s.c.body_timeout,
        ),
        (
            "backend_desync_total",
            "Backend connections closed on bytes no request asked for (never reused).",
            "counter",
            |s| s.c.backend_desync,
        ),
        (
            "server_down_total",
            "Times a server was marked down after a failed connect.",
            "counter",
            |s| s.c.server_down_events,
        ),
        (
            "local_exhaustion_total",
            "Backend connects refused by this process's own limits (fds, memory); answered 503.",
            "counter",
            |s| s.c.local_exhaustion,
        ),
        (
            "takeover_asked_total",
            "Reserve messages sent to owner shards.",
            "counter",
            |s| s.t.asked,
        ),
        (
            "takeover_granted_total",
            "Grants received (connections taken over).",
            "counter",
            |s| s.t.granted,
        ),
        (
            "takeover_denied_total",
            "Denies received.",
            "counter",
            |s| s.t.denied,
        ),
        (
            "takeover_timeout_total",
            "Asks that timed out before an answer.",
            "counter",
            |s| s.t.timeout,
        ),
        (
            "takeover_failed_total",
            "Asks that failed before an answer could come: reservation failed or channel full.",
            "counter",
            |s| s.t.failed,
        ),
        (
            "takeover_pending",
            "Takeover tickets waiting for an answer; asked = granted + denied + timeout + failed + pending.",
            "gauge",
            |s| s.t.pending,
        ),
        (
            "reservation_failed_total",
            "Reservations that failed before anything was sent.",
            "counter",
            |s| s.t.reservation_failed,
        ),
        (
            "late_grant_adopted_total",
            "Grants that arrived after the taker gave up, kept in its idle pool.",
            "counter",
            |s| s.t.late_grant_adopted,
        ),
        (
            "takeover_channel_full_total",
            "Sends refused by a full shard channel (a miss, never a wait).",
            "counter",
            |s| s.t.channel_full,
        ),
        (
            "takeover_handed_over_total",
            "Idle connections this shard handed to another (owner side).",
            "counter",
            |s| s.t.handed_over,
        ),
        (
            "takeover_owner_denied_total",
            "Reserve messages this shard denied (owner side).",
            "counter",
            |s| s.t.owner_denied,
        ),
    ];
    for (name, help, kind, get) in simple {
        counter(&mut out, name, help, kind);
        let mut total = 0;
        for s in snaps.iter() {
            let v = get(s);
            total += v;
            let _ = writeln!(out, "ringway_{name}{{{}}} {v}", shard_label(s));
        }
        let _ = writeln!(out, "ringway_{name}{{shard=\"all\"}} {total}");
    }

    counter(
        &mut out,
        "responses_total",
        "Responses sent to clients by status class.",
        "counter",
    );
    for class in 1..=5 {
        let mut total = 0;
        for s in snaps.iter() {
            let v = s.c.responses[class];
            total += v;
            let _ = writeln!(
                out,
                "ringway_responses_total{{{},code=\"{class}xx\"}} {v}",
                shard_label(s)
            );
        }
        let _ = writeln!(
            out,
            "ringway_responses_total{{shard=\"all\",code=\"{class}xx\"}} {total}"
        );
    }

    // Latency summary from the merged histograms.
    counter(
        &mut out,
        "request_duration_us",
        "Request latency in microseconds (head received to last byte sent).",
        "summary",
    );
    let mut all: Option<Histogram<u64>> = None;
    for s in snaps.iter() {
        write_summary(&mut out, &shard_label(s), &s.latency);
        match &mut all {
            None => all = Some(s.latency.clone()),
            Some(h) => {
                let _ = h.add(&s.latency);
            }
        }
    }
    if let Some(h) = &all {
        write_summary(&mut out, "shard=\"all\"", h);
    }

    // Pool figures per server, HAProxy's names.
    type GetS = fn(&ServerStats) -> u64;
    let pool: &[(&str, &str, &str, GetS)] = &[
        (
            "connect_total",
            "New connections opened to the server.",
            "counter",
            |s| s.connect,
        ),
        (
            "reuse_total",
            "Requests sent on a reused connection.",
            "counter",
            |s| s.reuse,
        ),
        (
            "idle_cur",
            "Idle connections (used once) in the pool now.",
            "gauge",
            |s| s.idle_cur,
        ),
        (
            "safe_cur",
            "Safe connections (reused at least once) in the pool now.",
            "gauge",
            |s| s.safe_cur,
        ),
        (
            "used_cur",
            "Connections carrying a request now.",
            "gauge",
            |s| s.used_cur,
        ),
        (
            "need_est",
            "Estimated connections needed (purge keeps this many).",
            "gauge",
            |s| s.need_est,
        ),
        (
            "purged_total",
            "Idle connections closed by the purge.",
            "counter",
            |s| s.purged,
        ),
        (
            "taken_over_total",
            "Idle connections handed to another shard.",
            "counter",
            |s| s.taken_over,
        ),
        (
            "adopted_total",
            "Connections adopted from another shard.",
            "counter",
            |s| s.adopted,
        ),
    ];
    for (name, help, kind, get) in pool {
        counter(&mut out, &format!("server_{name}"), help, kind);
        for (i, (be, addr)) in labels.labels.iter().enumerate() {
            let mut total = 0;
            for s in snaps.iter() {
                let v = s.servers.get(i).map_or(0, get);
                total += v;
                let _ = writeln!(
                    out,
                    "ringway_server_{name}{{{},backend=\"{be}\",server=\"{addr}\"}} {v}",
                    shard_label(s)
                );
            }
            let _ = writeln!(
                out,
                "ringway_server_{name}{{shard=\"all\",backend=\"{be}\",server=\"{addr}\"}} {total}"
            );
        }
    }

    counter(
        &mut out,
        "faults_injected_total",
        "Faults injected by --fault, by point.",
        "counter",
    );
    let mut points: Vec<(String, u64)> = Vec::new();
    for s in snaps.iter() {
        for (p, v) in &s.faults {
            match points.iter_mut().find(|(q, _)| q == p) {
                Some((_, t)) => *t += v,
                None => points.push((p.clone(), *v)),
            }
        }
    }
    for (p, v) in points {
        let _ = writeln!(out, "ringway_faults_injected_total{{point=\"{p}\"}} {v}");
    }
    counter(
        &mut out,
        "open_fds",
        "File descriptors open in the process.",
        "gauge",
    );
    let _ = writeln!(out, "ringway_open_fds {open_fds}");
    counter(&mut out, "shards", "Shards running.", "gauge");
    let _ = writeln!(out, "ringway_shards {}", snaps.len());
    out
}

fn write_summary(out: &mut String, label: &str, h: &Histogram<u64>) {
    for q in [0.5, 0.9, 0.99, 0.999] {
        let _ = writeln!(
            out,
            "ringway_request_duration_us{{{label},quantile=\"{q}\"}} {}",
            h.value_at_quantile(q)
        );
    }
    let _ = writeln!(
        out,
        "ringway_request_duration_us_count{{{label}}} {}",
        h.len()
    );
    let sum = (h.mean() * h.len() as f64) as u64;
    let _ = writeln!(out, "ringway_request_duration_us_sum{{{label}}} {sum}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(shard: usize, requests: u64) -> Snapshot {
        let mut m = ShardMetrics::default();
        m.c.requests = requests;
        m.record_status(200);
        m.record_status(503);
        m.latency.record(120).unwrap();
        let servers = vec![ServerStats {
            connect: 2,
            reuse: 5,
            ..ServerStats::default()
        }];
        Snapshot {
            shard,
            cpu: Some(shard),
            c: m.c,
            t: m.t,
            latency: m.latency,
            servers,
            client_conns: 1,
            inflight: 0,
            faults: vec![("connect".into(), 3)],
        }
    }

    #[test]
    fn totals_sum_shards() {
        let mut snaps = vec![snap(1, 7), snap(0, 5)];
        let labels = vec![("api".to_string(), "127.0.0.1:9000".to_string())];
        let text = render(&mut snaps, ServerLabels { labels: &labels }, 9);
        assert!(
            text.contains("ringway_requests_total{shard=\"0\",cpu=\"0\"} 5"),
            "{text}"
        );
        assert!(text.contains("ringway_requests_total{shard=\"all\"} 12"));
        assert!(text.contains("ringway_responses_total{shard=\"all\",code=\"5xx\"} 2"));
        assert!(text.contains(
            "ringway_server_connect_total{shard=\"all\",backend=\"api\",server=\"127.0.0.1:9000\"} 4"
        ));
        assert!(text.contains("ringway_faults_injected_total{point=\"connect\"} 6"));
        assert!(text.contains("ringway_request_duration_us_count{shard=\"all\"} 2"));
    }
}
