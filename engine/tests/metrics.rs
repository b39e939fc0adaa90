//! `/metrics` as an operator queries it: Prometheus text that `promtool check metrics`
//! accepts, one series per shard and no synthetic total, latency histograms in seconds,
//! per-server figures a PromQL query can turn into a reuse ratio that matches what the
//! origin saw; `/healthz` and `/readyz`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs `promtool check metrics` on `text`; returns its verdict (ok, output).
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn admin_get(proxy: &Proxy, path: &str) -> (u16, String) {
    let mut c = Conn::connect(proxy.admin);
    let r = c.get(path);
    (r.status, r.text())
}

#[test]
fn metrics_after_a_load_pass_promtool_with_per_shard_series_only() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let proxy = Proxy::start(&[
        "--backend",
        &format!("api={backend}"),
        "--route",
        "*/size=api",
        "--route",
        "*/status=api",
        "--default-backend",
        "none",
        "--shards",
        "2",
    ]);
    // A load with every outcome: pooled 200s, a 404 without a backend, a backend 503.
    for _ in 0..4 {
        let mut c = proxy.connect();
        for _ in 0..10 {
            assert_eq!(c.get("/size/5").status, 200);
        }
        assert_eq!(c.get("/status/503").status, 503);
        assert_eq!(c.get("/nowhere").status, 404);
    }
    let m = proxy.metrics();
    let (ok, said) = promtool(&m);
    assert!(ok, "promtool check metrics refused /metrics:\n{said}\n{m}");
    assert!(
        !m.contains("shard=\"all\""),
        "a synthetic total is exported"
    );
    assert!(!m.contains("duration_us"), "a microsecond metric is left");
    // Totals are sums of the per-shard series.
    assert_eq!(sum_metric(&m, "ringway_requests_total", &[]), 48.0);
    assert_eq!(
        sum_metric(
            &m,
            "ringway_request_duration_seconds_count",
            &[("backend", "api")]
        ),
        44.0
    );
    assert_eq!(
        sum_metric(
            &m,
            "ringway_request_duration_seconds_bucket",
            &[("backend", "none"), ("le", "+Inf")]
        ),
        4.0
    );
    let server = [("backend", "api"), ("server", backend.as_str())];
    let code = |c: &'static str| {
        let mut l = server.to_vec();
        l.push(("code", c));
        sum_metric(&m, "ringway_server_responses_total", &l)
    };
    assert_eq!((code("2xx"), code("5xx"), code("4xx")), (40.0, 4.0, 0.0));
    assert_eq!(
        sum_metric(&m, "ringway_server_first_byte_seconds_count", &server),
        44.0
    );
    assert!(sum_metric(&m, "ringway_server_sent_bytes_total", &server) > 44.0 * 5.0);
    assert!(sum_metric(&m, "ringway_server_received_bytes_total", &server) > 44.0 * 16.0);
    assert_eq!(sum_metric(&m, "ringway_server_up", &server), 2.0);
    // Connects are timed: one histogram observation per new connection.
    assert_eq!(
        sum_metric(&m, "ringway_server_connect_duration_seconds_count", &server),
        sum_metric(&m, "ringway_server_connect_total", &server)
    );
}

#[test]
fn reuse_ratio_from_the_series_matches_the_origins_connection_count() {
    let origin = origin_with(OriginConfig {
        // Every 5th response closes its connection: some requests need a new one.
        close_after: Some(5),
        ..OriginConfig::default()
    });
    let backend = origin.addr().to_string();
    let proxy = Proxy::start(&["--backend", &backend]);
    let mut sent = 0;
    for _ in 0..6 {
        let mut c = proxy.connect();
        for _ in 0..20 {
            assert_eq!(c.get("/").status, 200);
            sent += 1;
        }
    }
    let m = proxy.metrics();
    // PromQL: sum(ringway_server_requests_total{conn!="new"}) / sum(ringway_server_requests_total)
    let total = sum_metric(&m, "ringway_server_requests_total", &[]);
    let new = sum_metric(&m, "ringway_server_requests_total", &[("conn", "new")]);
    let ratio = (total - new) / total;
    let o = origin.stats();
    assert_eq!(o.requests_total, sent);
    assert_eq!(total as u64, sent, "{m}");
    let origin_ratio = 1.0 - o.connections_total as f64 / o.requests_total as f64;
    assert!(
        (ratio - origin_ratio).abs() < 1e-9,
        "reuse ratio from /metrics {ratio} != origin's {origin_ratio} ({} connections for {} requests)",
        o.connections_total,
        o.requests_total
    );
    assert!(ratio > 0.5 && ratio < 1.0, "{ratio}");
    // The pool's own counter agrees: one connect per new connection the origin saw.
    assert_eq!(
        sum_metric(&m, "ringway_server_connect_total", &[]) as u64,
        o.connections_total
    );
}

#[test]
fn connections_closed_after_one_request_arm_single_receives_not_multishots() {
    // A connection's first read is a single receive from the buffer ring: one that
    // closes after its request has nothing armed to cancel. A keep-alive connection
    // waits for its next request through a multishot.
    let origin = origin();
    let backend = origin.addr().to_string();
    // The receive buffer ring at its default (on), whatever this run's environment says.
    let proxy = Proxy::start_with_env(
        &["-u", "GLOMMIO_RECV_BUFFER_RING"],
        &["--shards", "1", "--backend", &backend],
    );
    const CLOSED: u64 = 40;
    for i in 0..CLOSED {
        let mut c = proxy.connect();
        let r = c.request(
            "GET",
            &format!("/close/{i}"),
            &[("Connection", "close")],
            None,
        );
        assert_eq!(r.status, 200);
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "request {i}: not closed"
        );
    }
    let m = proxy.metrics();
    let single = sum_metric(&m, "ringway_io_single_recv_armed_total", &[]) as u64;
    let multi = sum_metric(&m, "ringway_io_multishot_armed_total", &[]) as u64;
    // The backend connection (reused) and the admin scrapes read through the ring too.
    assert!(
        single >= CLOSED,
        "{single} single receives for {CLOSED} connections\n{m}"
    );
    assert!(
        multi < 5,
        "{multi} multishots armed for {CLOSED} connections that each carried one request"
    );
    // Keep-alive: each client waits for its next request with a multishot armed.
    let mut kept: Vec<_> = (0..10).map(|_| proxy.connect()).collect();
    for c in &mut kept {
        assert_eq!(c.get("/").status, 200);
        assert_eq!(c.get("/").status, 200);
    }
    let m = proxy.metrics();
    let multi2 = sum_metric(&m, "ringway_io_multishot_armed_total", &[]) as u64;
    assert!(
        multi2 >= multi + 10,
        "keep-alive clients read on through multishots: {multi} then {multi2}"
    );
}

#[test]
fn backend_errors_are_counted_by_kind_and_the_server_state_is_exported() {
    let dead = format!("127.0.0.1:{}", closed_port());
    let mut proxy = Proxy::start(&["--backend", &format!("gone={dead}")]);
    let mut c = proxy.connect();
    assert_eq!(c.get("/").status, 502);
    let m = proxy.metrics();
    let l = [("backend", "gone"), ("server", dead.as_str())];
    let kind = |k: &'static str| {
        let mut v = l.to_vec();
        v.push(("kind", k));
        sum_metric(&m, "ringway_server_errors_total", &v)
    };
    assert_eq!(kind("connect"), 1.0, "{m}");
    assert_eq!(kind("timeout"), 0.0);
    assert_eq!(sum_metric(&m, "ringway_server_up", &l), 0.0);
    // The error log names the backend, the server and what failed.
    let err = wait_for(Duration::from_secs(5), "the backend error log", || {
        let e = proxy.stderr();
        e.contains("backend error").then_some(e)
    });
    let line = err
        .lines()
        .find(|l| l.contains("backend error"))
        .unwrap_or_default();
    assert!(
        line.contains("backend=gone") && line.contains(&dead) && line.contains("connect"),
        "{line}"
    );
    proxy.assert_healthy();
}

#[test]
fn healthz_stays_200_and_readyz_turns_503_while_draining() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--grace", "10s"]);
    assert_eq!(admin_get(&proxy, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(admin_get(&proxy, "/readyz").0, 200);
    // A slow request holds the drain open while we look.
    let addr = proxy.addr;
    let slow = std::thread::spawn(move || Conn::connect(addr).get("/delay/1500").status);
    wait_until(
        Duration::from_secs(10),
        "the slow request at the origin",
        || origin.stats().requests_total == 1,
    );
    proxy.signal(libc::SIGTERM);
    wait_until(Duration::from_secs(5), "/readyz to say 503", || {
        admin_get(&proxy, "/readyz").0 == 503
    });
    assert_eq!(admin_get(&proxy, "/healthz").0, 200);
    assert_eq!(slow.join().unwrap(), 200);
    let status = proxy.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

/// The fds of process `pid` (`/proc/PID/fd`).
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn the_fds_open_when_the_proxy_says_it_listens_are_all_it_holds_idle() {
    // A count of open fds taken as soon as the proxy announces its listeners (the
    // takeover soak takes its `ringway_open_fds` baseline then) must be the idle figure:
    // nothing may open fds a moment later. The DNS thread built its runtime (3 fds)
    // after the announcement, so on a busy machine the soak's baseline missed them and
    // "fds back to the baseline" never came. Several starts, each counted at once.
    let origin = origin();
    let backend = origin.addr().to_string();
    for round in 0..8 {
        let mut proxy = Proxy::start(&["--backend", &backend]);
        let at_start = fds_of(proxy.pid());
        std::thread::sleep(Duration::from_millis(300));
        let idle = fds_of(proxy.pid());
        assert_eq!(
            at_start, idle,
            "start {round}: {at_start} fds when it said it listens, {idle} once idle"
        );
        proxy.terminate();
    }
}
