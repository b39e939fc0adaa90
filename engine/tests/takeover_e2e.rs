//! End-to-end tests of cross-shard takeover: idle backend connections made on one shard
//! serve requests that arrive on another, without new connects, without a connection
//! ever carrying two requests at once, and — under injected faults — without a lost
//! request, a panic or a leaked fd.
//!
//! Clients are steered to a shard with `--listen ADDR@SHARD`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn all(m: &str, name: &str) -> u64 {
    metric(m, &format!("{name}{{shard=\"all\"}}"))
}

fn server_all(m: &str, name: &str, origin: &Origin) -> u64 {
    metric(
        m,
        &format!(
            "ringway_server_{name}{{shard=\"all\",backend=\"default\",server=\"{}\"}}",
            origin.addr()
        ),
    )
}

/// `clients` threads each doing `requests` keep-alive GETs to `addr`; returns statuses seen.
fn load(addr: std::net::SocketAddr, clients: usize, requests: usize) -> Vec<u16> {
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                (0..requests).map(|_| c.get("/").status).collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

/// One keep-alive GET; an I/O error instead of a panic so a soak can report it.
fn try_get(c: &mut Conn) -> std::io::Result<Response> {
    use std::io::Write;
    c.stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
    c.try_read_response(false)
}

/// Two shards with one listener each (`[0]` reaches shard 0, `[1]` shard 1), reuse
/// `always`, in front of `origin`, plus `extra` flags.
fn two_shards(origin: &Origin, extra: &[&str]) -> Proxy {
    let backend = origin.addr().to_string();
    let mut args = vec![
        "--backend",
        &backend,
        "--shards",
        "2",
        "--listen",
        "127.0.0.1:0@0",
        "--listen",
        "127.0.0.1:0@1",
        "--reuse",
        "always",
    ];
    args.extend_from_slice(extra);
    Proxy::start(&args)
}

#[test]
fn idle_connections_move_to_the_shard_that_needs_them() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let proxy = two_shards(
        &origin,
        &["--pool-purge-delay", "60s", "--takeover-timeout", "200ms"],
    );
    let (on0, on1) = (proxy.listeners[0], proxy.listeners[1]);

    // Phase 1: all clients on shard 0; its pool fills.
    let statuses = load(on0, 8, 20);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let m = wait_for(
        Duration::from_secs(5),
        "idle connections on shard 0",
        || {
            let m = proxy.metrics();
            let idle = metric(
                &m,
                &format!(
                "ringway_server_idle_cur{{shard=\"0\",backend=\"default\",server=\"{backend}\"}}"
            ),
            ) + metric(
                &m,
                &format!(
                "ringway_server_safe_cur{{shard=\"0\",backend=\"default\",server=\"{backend}\"}}"
            ),
            );
            (idle > 0).then_some(m)
        },
    );
    let connects_before = origin.stats().connections_total;
    assert_eq!(server_all(&m, "connect_total", &origin), connects_before);
    assert_eq!(all(&m, "ringway_takeover_granted_total"), 0);

    // Phase 2: all clients on shard 1, which has nothing idle: it takes over.
    let statuses = load(on1, 4, 50);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let m = proxy.metrics();
    let granted = all(&m, "ringway_takeover_granted_total");
    assert!(granted > 0, "no takeover happened:\n{m}");
    assert_eq!(
        origin.stats().connections_total,
        connects_before,
        "shard 1 opened new backend connections instead of taking over"
    );
    assert!(
        metric(
            &m,
            &format!(
                "ringway_server_adopted_total{{shard=\"1\",backend=\"default\",server=\"{backend}\"}}"
            )
        ) > 0
    );
    // The owner side agrees with the taker side.
    assert_eq!(
        all(&m, "ringway_takeover_handed_over_total"),
        granted,
        "owner and taker disagree:\n{m}"
    );
    // No backend connection ever carried two requests at once.
    assert_eq!(origin.stats().pipelined, 0);
    assert_eq!(origin.stats().requests_total, 8 * 20 + 4 * 50);
}

#[test]
fn takeover_off_connects_anew() {
    let origin = origin();
    let proxy = two_shards(&origin, &["--takeover", "off"]);
    assert!(load(proxy.listeners[0], 4, 10).iter().all(|&s| s == 200));
    let before = origin.stats().connections_total;
    assert!(load(proxy.listeners[1], 4, 10).iter().all(|&s| s == 200));
    assert!(origin.stats().connections_total > before);
    assert_eq!(all(&proxy.metrics(), "ringway_takeover_asked_total"), 0);
}

#[test]
fn low_idle_threshold_prevents_takeover() {
    let origin = origin();
    let proxy = two_shards(&origin, &["--pool-low-idle", "1000"]);
    assert!(load(proxy.listeners[0], 4, 10).iter().all(|&s| s == 200));
    assert!(load(proxy.listeners[1], 4, 10).iter().all(|&s| s == 200));
    let m = proxy.metrics();
    assert_eq!(all(&m, "ringway_takeover_asked_total"), 0, "{m}");
}

/// Under heavy injected faults, clients alternate between the shards for a while (60 s by
/// default, `RINGWAY_SOAK_SECS` to change it): every request is answered with a proxied
/// 200 or a 503 where the fault left no way to serve it; the proxy never panics; its fd
/// count returns to its baseline once the load stops and the purge runs; the takeover
/// counters add up.
#[test]
fn faults_lose_nothing_and_leak_nothing() {
    let secs: u64 = std::env::var("RINGWAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let origin = origin();
    let mut proxy = two_shards(
        &origin,
        &[
            "--pool-purge-delay",
            "300ms",
            "--pool-max-idle",
            "3",
            "--takeover-timeout",
            "2ms",
            "--fault",
            "reserve=20%,grant-delay=20%,channel-full=20%,connect=5%,adopt=10%",
            "--fault-seed",
            "7",
        ],
    );
    let baseline = metric(&proxy.metrics(), "ringway_open_fds");
    let listeners = proxy.listeners.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (stop, sent, ok, unavailable) =
                (stop.clone(), sent.clone(), ok.clone(), unavailable.clone());
            let listeners = listeners.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Every 200 ms all clients move to the other shard, so idle
                    // connections keep sitting on the wrong one.
                    let phase = (started.elapsed().as_millis() / 200) as usize;
                    let addr = listeners[phase % 2];
                    let mut c = Conn::connect(addr);
                    for _ in 0..(5 + (i + round as usize) % 10) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let r = try_get(&mut c).map_err(|e| format!("request lost: {e}"))?;
                        match r.status {
                            200 => ok.fetch_add(1, Ordering::Relaxed),
                            503 => unavailable.fetch_add(1, Ordering::Relaxed),
                            s => return Err(format!("unexpected status {s}")),
                        };
                    }
                    round += 1;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .expect("client thread")
            .expect("every request answered");
    }
    let (sent, ok, unavailable) = (
        sent.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed),
        unavailable.load(Ordering::Relaxed),
    );
    assert_eq!(sent, ok + unavailable, "answers missing");
    assert!(ok > sent / 2, "too few proxied answers: {ok} of {sent}");
    proxy.assert_healthy();

    // Back to the baseline once idle connections are purged.
    let m = wait_for(Duration::from_secs(20), "fds back to the baseline", || {
        let m = proxy.metrics();
        (metric(&m, "ringway_open_fds") <= baseline).then_some(m)
    });
    let asked = all(&m, "ringway_takeover_asked_total");
    let granted = all(&m, "ringway_takeover_granted_total");
    let denied = all(&m, "ringway_takeover_denied_total");
    let timeout = all(&m, "ringway_takeover_timeout_total");
    let failed = all(&m, "ringway_takeover_failed_total");
    let pending = all(&m, "ringway_takeover_pending");
    assert!(asked > 0 && granted > 0, "takeover never happened:\n{m}");
    assert_eq!(
        granted + denied + timeout + failed + pending,
        asked,
        "takeover counters do not add up:\n{m}"
    );
    assert_eq!(pending, 0);
    for point in ["reserve", "grant-delay", "channel-full", "connect", "adopt"] {
        assert!(
            metric(
                &m,
                &format!("ringway_faults_injected_total{{point=\"{point}\"}}")
            ) > 0,
            "fault {point} never fired"
        );
    }
    assert_eq!(server_all(&m, "used_cur", &origin), 0, "{m}");
    assert_eq!(server_all(&m, "idle_cur", &origin), 0, "{m}");
    assert_eq!(all(&m, "ringway_inflight_requests"), 0);
    // The origin agrees: no backend connection is left open, none carried two requests.
    wait_until(Duration::from_secs(5), "origin connections closed", || {
        origin.stats().connections_open == 0
    });
    assert_eq!(origin.stats().pipelined, 0);
    assert!(m.contains("late_grant_adopted_total"));
    eprintln!(
        "soak: {sent} requests ({unavailable} x 503) in {secs}s; takeover asked {asked}, granted {granted}, denied {denied}, timeout {timeout}, failed {failed}; late grants adopted {}",
        all(&m, "ringway_late_grant_adopted_total")
    );
    proxy.terminate();
}
