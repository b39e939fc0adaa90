//! Prometheus text exposition (format 0.0.4) of the shards' snapshots.
//!
//! Hand-formatted rather than through `prometheus-client`: the figures are plain
//! integers each shard owns and copies into a [`Snapshot`] when asked, so there are no
//! live metric objects to register; building that crate's atomic counters and
//! histograms anew from every snapshot at each scrape would only re-encode the same
//! text. The format is checked instead: `.ci/run` runs `promtool check metrics` on a
//! real scrape, and the unit tests below check the invariants (one `# TYPE` per family,
//! cumulative buckets, no synthetic total).
//!
//! Every per-shard series carries `shard` (and `cpu` when pinned); totals are what
//! `sum()` gives. Server series also carry `backend` and `server`.

use std::fmt::Write as _;

use ringway_pool::ServerStats;

use super::{Hist, Snapshot, BUCKETS, CONN_KINDS};
use crate::metrics::ServerError;

/// Names for labels: (backend name, server address) per pool slot, the backend of each
/// slot's server in table order, and the backends' names.
pub struct Labels<'a> {
    pub slots: &'a [(String, String)],
    pub backends: &'a [String],
    /// Process-wide figures.
    pub open_fds: usize,
    /// `ringway_build_info` labels: version, commit.
    pub version: &'a str,
    pub commit: &'a str,
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(
        out,
        "# HELP ringway_{name} {help}\n# TYPE ringway_{name} {kind}"
    );
}

fn shard_label(s: &Snapshot) -> String {
    match s.cpu {
        Some(cpu) => format!("shard=\"{}\",cpu=\"{cpu}\"", s.shard),
        None => format!("shard=\"{}\"", s.shard),
    }
}

/// Writes one histogram's `_bucket`, `_sum` and `_count` lines with `labels`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Hist) {
    let mut cumulative = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(
            out,
            "ringway_{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}"
        );
    }
    cumulative += h.counts[BUCKETS.len()];
    let _ = writeln!(
        out,
        "ringway_{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "ringway_{name}_sum{{{labels}}} {}",
        h.sum.as_secs_f64()
    );
    let _ = writeln!(out, "ringway_{name}_count{{{labels}}} {}", h.count);
}

/// Renders snapshots (one per shard, any order) as Prometheus text, one series per shard.
pub fn render(snaps: &mut [Snapshot], labels: &Labels<'_>) -> String {
    snaps.sort_by_key(|s| s.shard);
    let mut out = String::with_capacity(32 << 10);

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
            "Client connections refused (503) over --max-conns-per-shard or the shard's file descriptor budget.",
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
            "io_buffer_ring_exhausted_total",
            "Socket receives that found the shard's receive buffer ring empty and fell back to poll + RECV with a buffer of their own (no bytes lost; a sign the ring is small for the load).",
            "counter",
            |s| s.c.io_buffer_ring_exhausted,
        ),
        (
            "io_multishot_armed_total",
            "Multishot socket receives armed (one serves every read of a connection after its first, until it ends; 0 while the receive buffer ring is off).",
            "counter",
            |s| s.c.io_multishot_armed,
        ),
        (
            "io_single_recv_armed_total",
            "Single socket receives from the receive buffer ring armed: a connection's first read is one, so a connection closed after one request has no multishot to cancel (0 while the ring is off).",
            "counter",
            |s| s.c.io_single_recv_armed,
        ),
        (
            "body_spliced_total",
            "Response bodies moved from backend to client by splice(2), never copied through ringway (Content-Length bodies of at least --splice-min, plain TCP on both sides).",
            "counter",
            |s| s.c.body_spliced,
        ),
        (
            "body_spliced_bytes_total",
            "Body bytes moved by splice(2) (what came with a response head, or was already received, is copied and not counted here).",
            "counter",
            |s| s.c.body_spliced_bytes,
        ),
        (
            "splice_pipes_opened_total",
            "Pipes opened for splice(2); empty ones are kept for reuse (up to 16 per shard), so this grows with concurrent spliced bodies or with bodies given up mid-way.",
            "counter",
            |s| s.c.splice_pipes_opened,
        ),
        (
            "body_ring_sent_bytes_total",
            "Content-Length body bytes sent to clients straight from the receive buffer ring (one sendmsg over the ring's buffers), never copied through ringway's memory: plain TCP on both sides, bodies not spliced. Bytes that came with the head, or while the client was not taking more, are copied and not counted here.",
            "counter",
            |s| s.c.body_ring_sent_bytes,
        ),
        (
            "splice_pipes_pooled",
            "Empty pipes kept for the next spliced body now (two file descriptors each; at most 16 per shard).",
            "gauge",
            |s| s.c.splice_pipes_pooled,
        ),
        (
            "h2_flood_closed_total",
            "HTTP/2 client connections closed with ENHANCE_YOUR_CALM for sending too many frames that carry no request (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, RST_STREAM, empty DATA, unknown).",
            "counter",
            |s| s.c.h2_flood_closed,
        ),
        (
            "h2_reset_closed_total",
            "HTTP/2 client connections closed with ENHANCE_YOUR_CALM for resetting more streams in progress than --h2-reset-rate/--h2-reset-burst allow.",
            "counter",
            |s| s.c.h2_reset_closed,
        ),
        (
            "h2_refused_streams_total",
            "HTTP/2 streams refused (REFUSED_STREAM) because their connection had twice its stream limit of requests still in progress.",
            "counter",
            |s| s.c.h2_refused_streams,
        ),
        (
            "h2_stream_errors_total",
            "HTTP/2 client streams ended with a stream error for breaking RFC 9113 (PROTOCOL_ERROR: bad pseudo-headers or fields, content-length mismatch).",
            "counter",
            |s| s.c.h2_stream_errors,
        ),
        (
            "h2_connection_errors_total",
            "HTTP/2 client connections ended with a connection error (a broken preface, a protocol or flow-control error, a header or CONTINUATION flood).",
            "counter",
            |s| s.c.h2_conn_errors,
        ),
        (
            "cancel_drained_total",
            "Requests cancelled by their client whose backend connection was saved: the rest of the response read and discarded within --cancel-drain-time/--cancel-drain-size, the connection pooled.",
            "counter",
            |s| s.c.cancel_drained,
        ),
        (
            "cancel_closed_total",
            "Requests cancelled by their client whose backend connection had to be closed.",
            "counter",
            |s| s.c.cancel_closed,
        ),
        (
            "cancel_connect_waits_total",
            "Requests that waited for a backend connection because their client connection's cancels had cost more than --cancel-connect-rate allows.",
            "counter",
            |s| s.c.cancel_connect_waits,
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
            "proxy_header_errors_total",
            "Connections on --accept-proxy listeners closed for a missing, malformed or truncated PROXY header.",
            "counter",
            |s| s.c.proxy_header_errors,
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
    let more: &[(&str, &str, &str, Get)] = &[
        (
            "access_log_lines_total",
            "Access log lines written to the shard's buffer.",
            "counter",
            |s| s.c.access_log_lines,
        ),
        (
            "access_log_dropped_total",
            "Access log lines dropped because the log writer fell behind.",
            "counter",
            |s| s.c.access_log_dropped,
        ),
        (
            "draining",
            "1 while the shard drains (after SIGTERM/SIGINT), else 0.",
            "gauge",
            |s| u64::from(s.draining),
        ),
    ];
    for (name, help, kind, get) in simple.iter().chain(more) {
        family(&mut out, name, help, kind);
        for s in snaps.iter() {
            let _ = writeln!(out, "ringway_{name}{{{}}} {}", shard_label(s), get(s));
        }
    }

    family(
        &mut out,
        "responses_total",
        "Responses sent to clients by status class.",
        "counter",
    );
    for s in snaps.iter() {
        for class in 1..=5 {
            let _ = writeln!(
                out,
                "ringway_responses_total{{{},code=\"{class}xx\"}} {}",
                shard_label(s),
                s.c.responses[class]
            );
        }
    }

    family(
        &mut out,
        "request_duration_seconds",
        "Request duration, from a complete request head to the last response byte, by backend (none: answered without one).",
        "histogram",
    );
    for s in snaps.iter() {
        for (i, h) in s.request.iter().enumerate() {
            let backend = match i {
                0 => "none".to_string(),
                b => labels.backends.get(b - 1).cloned().unwrap_or_default(),
            };
            let l = format!("{},backend=\"{backend}\"", shard_label(s));
            histogram(&mut out, "request_duration_seconds", &l, h);
        }
    }

    // Request figures per server.
    let server_l = |s: &Snapshot, slot: usize| {
        let (be, addr) = labels
            .slots
            .get(slot)
            .map_or(("", ""), |(b, a)| (b.as_str(), a.as_str()));
        format!("{},backend=\"{be}\",server=\"{addr}\"", shard_label(s))
    };
    family(
        &mut out,
        "server_responses_total",
        "Responses to requests routed to the server, by status class (proxy-made 502/503/504 included).",
        "counter",
    );
    for s in snaps.iter() {
        for (i, f) in s.figures.iter().enumerate() {
            for class in 1..=5 {
                let _ = writeln!(
                    out,
                    "ringway_server_responses_total{{{},code=\"{class}xx\"}} {}",
                    server_l(s, i),
                    f.responses[class]
                );
            }
        }
    }
    family(
        &mut out,
        "server_requests_total",
        "Requests sent to the server, by how their connection was had: reused from this shard's pool, taken over from another shard, or new.",
        "counter",
    );
    for s in snaps.iter() {
        for (i, f) in s.figures.iter().enumerate() {
            for (k, conn) in CONN_KINDS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ringway_server_requests_total{{{},conn=\"{conn}\"}} {}",
                    server_l(s, i),
                    f.requests[k]
                );
            }
        }
    }
    family(
        &mut out,
        "server_errors_total",
        "Backend errors by kind: connect, connect_timeout, unavailable (our own limits), timeout (no response head), response (bad or failed head), body (broke after it started).",
        "counter",
    );
    for s in snaps.iter() {
        for (i, f) in s.figures.iter().enumerate() {
            for e in ServerError::ALL {
                let _ = writeln!(
                    out,
                    "ringway_server_errors_total{{{},kind=\"{}\"}} {}",
                    server_l(s, i),
                    e.name(),
                    f.errors[e as usize]
                );
            }
        }
    }
    type GetF = fn(&super::ServerFigures) -> u64;
    let bytes: &[(&str, &str, GetF)] = &[
        (
            "server_received_bytes_total",
            "Request bytes sent to the server (heads and bodies, as sent upstream).",
            |f| f.bytes_in,
        ),
        (
            "server_sent_bytes_total",
            "Response bytes from the server sent to clients (heads and bodies, as sent downstream).",
            |f| f.bytes_out,
        ),
    ];
    for (name, help, get) in bytes {
        family(&mut out, name, help, "counter");
        for s in snaps.iter() {
            for (i, f) in s.figures.iter().enumerate() {
                let _ = writeln!(out, "ringway_{name}{{{}}} {}", server_l(s, i), get(f));
            }
        }
    }
    type GetH = fn(&super::ServerFigures) -> &Hist;
    let hists: &[(&str, &str, GetH)] = &[
        (
            "server_connect_duration_seconds",
            "Time to open a new connection to the server.",
            |f| &f.connect,
        ),
        (
            "server_first_byte_seconds",
            "Time from a complete request head to the first response byte sent to the client.",
            |f| &f.ttfb,
        ),
    ];
    for (name, help, get) in hists {
        family(&mut out, name, help, "histogram");
        for s in snaps.iter() {
            for (i, f) in s.figures.iter().enumerate() {
                histogram(&mut out, name, &server_l(s, i), get(f));
            }
        }
    }
    family(
        &mut out,
        "server_up",
        "1 when the server is usable as the shard sees it; 0 while it is down by its health check, taken out by passive checks or a failed connect, drained (weight 0) or removed by a reload.",
        "gauge",
    );
    for s in snaps.iter() {
        for i in 0..s.figures.len() {
            let up = s.up.get(i).copied().unwrap_or(true);
            let _ = writeln!(
                out,
                "ringway_server_up{{{}}} {}",
                server_l(s, i),
                u64::from(up)
            );
        }
    }

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
        family(&mut out, &format!("server_{name}"), help, kind);
        for s in snaps.iter() {
            for (i, st) in s.servers.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ringway_server_{name}{{{}}} {}",
                    server_l(s, i),
                    get(st)
                );
            }
        }
    }

    family(
        &mut out,
        "faults_injected_total",
        "Faults injected by --fault, by point.",
        "counter",
    );
    for s in snaps.iter() {
        for (p, v) in &s.faults {
            let _ = writeln!(
                out,
                "ringway_faults_injected_total{{{},point=\"{p}\"}} {v}",
                shard_label(s)
            );
        }
    }
    family(
        &mut out,
        "open_fds",
        "File descriptors open in the process.",
        "gauge",
    );
    let _ = writeln!(out, "ringway_open_fds {}", labels.open_fds);
    family(
        &mut out,
        "shards",
        "Shards that answered this scrape.",
        "gauge",
    );
    let _ = writeln!(out, "ringway_shards {}", snaps.len());
    family(
        &mut out,
        "build_info",
        "Always 1; the labels say which ringway this is.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "ringway_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        labels.version, labels.commit
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ServerFigures, ShardMetrics};
    use std::time::Duration;

    fn snap(shard: usize, requests: u64) -> Snapshot {
        let mut m = ShardMetrics::new(1, 1);
        m.c.requests = requests;
        m.record_status(200);
        m.record_status(503);
        m.request[1].record(Duration::from_micros(120));
        m.request[1].record(Duration::from_secs(100));
        let f = ServerFigures {
            requests: [5, 1, 2],
            ..ServerFigures::default()
        };
        Snapshot {
            shard,
            cpu: Some(shard),
            c: m.c,
            t: Default::default(),
            request: m.request,
            servers: vec![ServerStats {
                connect: 2,
                reuse: 5,
                ..ServerStats::default()
            }],
            figures: vec![f],
            up: vec![true],
            client_conns: 1,
            inflight: 0,
            draining: false,
            faults: vec![("connect".into(), 3)],
            checks: Vec::new(),
            no_server: Vec::new(),
        }
    }

    fn render_two() -> String {
        let mut snaps = vec![snap(1, 7), snap(0, 5)];
        let slots = vec![("api".to_string(), "127.0.0.1:9000".to_string())];
        let backends = vec!["api".to_string()];
        render(
            &mut snaps,
            &Labels {
                slots: &slots,
                backends: &backends,
                open_fds: 9,
                version: "0.1.0",
                commit: "abc",
            },
        )
    }

    #[test]
    fn per_shard_series_and_no_synthetic_total() {
        let text = render_two();
        assert!(
            text.contains("ringway_requests_total{shard=\"0\",cpu=\"0\"} 5"),
            "{text}"
        );
        assert!(text.contains("ringway_requests_total{shard=\"1\",cpu=\"1\"} 7"));
        assert!(!text.contains("shard=\"all\""), "{text}");
        assert!(text.contains(
            "ringway_server_connect_total{shard=\"1\",cpu=\"1\",backend=\"api\",server=\"127.0.0.1:9000\"} 2"
        ));
        assert!(text.contains(
            "ringway_server_requests_total{shard=\"0\",cpu=\"0\",backend=\"api\",server=\"127.0.0.1:9000\",conn=\"taken_over\"} 1"
        ));
        assert!(text
            .contains("ringway_faults_injected_total{shard=\"0\",cpu=\"0\",point=\"connect\"} 3"));
    }

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let text = render_two();
        let l = "shard=\"0\",cpu=\"0\",backend=\"api\"";
        assert!(text.contains(&format!(
            "ringway_request_duration_seconds_bucket{{{l},le=\"0.0005\"}} 1"
        )));
        assert!(text.contains(&format!(
            "ringway_request_duration_seconds_bucket{{{l},le=\"60\"}} 1"
        )));
        assert!(text.contains(&format!(
            "ringway_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2"
        )));
        assert!(text.contains(&format!("ringway_request_duration_seconds_count{{{l}}} 2")));
        assert!(!text.contains("duration_us"), "no microsecond names left");
    }

    #[test]
    fn one_type_line_per_family() {
        let text = render_two();
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = l.split_whitespace().nth(2).unwrap_or_default().to_string();
            assert!(seen.insert(name.clone()), "{name} typed twice");
        }
        // Every sample belongs to a typed family.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| seen.contains(*f)))
                .unwrap_or(name);
            assert!(seen.contains(family), "{name} has no # TYPE");
        }
    }
}
