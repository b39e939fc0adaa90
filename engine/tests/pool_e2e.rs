//! End-to-end tests of the backend connection pool (issue 3's "Must show"), each against
//! the real `ringway` binary and the in-process origin, with what the origin counts
//! (connections accepted, requests per connection, `X-Origin-Conn`) as the ground truth
//! and `/metrics` as what an operator would read:
//!
//! - `--reuse always`, 50 keep-alive clients x 200 requests on 2 shards: no more backend
//!   connections than requests in flight at once, counters consistent afterwards;
//! - `--reuse never`: one private backend connection per client connection;
//! - the first request of a client session under `safe`, `aggressive` and `always`;
//! - origins that close idle connections (after 1 s) or after 3 requests: no client errors;
//! - the purge shrinks the pool to zero after traffic stops, and no fd is leaked;
//! - a server that goes down; round-robin over two servers;
//! - `--max-reuse`;
//! - a raw backend that closes a reused connection as a request arrives (GET retried once,
//!   POST with a body answered 502) or writes stray bytes on an idle one (removed).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

/// Polls `f` every 20 ms until it returns `Ok`, panicking after `within` with the last
/// `Err` (what was observed, so a failure says how far off it was).
fn poll_until<T>(within: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("not reached within {within:?}: {last}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A per-server pool figure summed over shards: `ringway_server_{name}{shard="all",...}`.
fn server_metric(m: &str, name: &str, backend: &str, server: SocketAddr) -> u64 {
    metric(
        m,
        &format!(
            "ringway_server_{name}{{shard=\"all\",backend=\"{backend}\",server=\"{server}\"}}"
        ),
    )
}

/// A per-shard figure summed over shards: `ringway_{name}{shard="all"}`.
fn total(m: &str, name: &str) -> u64 {
    metric(m, &format!("ringway_{name}{{shard=\"all\"}}"))
}

/// One GET on a new client connection; its status and backend connection id.
fn one_get(proxy: &Proxy) -> (u16, u64) {
    let r = proxy.connect().get("/");
    (r.status, r.num("x-origin-conn"))
}

/// Waits until no request holds a backend connection and the pool holds `pooled`
/// connections, so that the next request sees a settled pool (the proxy checks a
/// connection in just after the client got the last response byte).
fn wait_pool_settled(proxy: &Proxy, server: SocketAddr, pooled: u64) {
    poll_until(Duration::from_secs(5), || {
        let m = proxy.metrics();
        let used = server_metric(&m, "used_cur", "default", server);
        let idle = server_metric(&m, "idle_cur", "default", server)
            + server_metric(&m, "safe_cur", "default", server);
        if used == 0 && idle == pooled {
            Ok(())
        } else {
            Err(format!(
                "used_cur {used}, idle+safe {idle}, want 0 and {pooled}"
            ))
        }
    })
}

// ---------------------------------------------------------------------------------------
// 1 + 8: reuse always under load; counters consistent afterwards

#[test]
fn reuse_always_50_clients_need_at_most_50_backend_connections() {
    const CLIENTS: usize = 50;
    const REQUESTS: usize = 200;
    let origin = origin();
    let server = origin.addr();
    let backend = server.to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--shards", "2", "--reuse", "always"]);

    let start = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = proxy.addr;
            let start = start.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                start.wait();
                for n in 0..REQUESTS {
                    let r = c.get("/");
                    assert_eq!(r.status, 200, "client {i} request {n}: {r:?}");
                    assert!(
                        !r.says_close(),
                        "client {i} request {n} closed the client side"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }

    // Each client has at most one request in flight, so at most CLIENTS requests need a
    // backend connection at once: that is the bound. Connections move between the two
    // shards by takeover, which does not open any; the only way to exceed the bound is a
    // takeover grant that arrives after its taker gave up and connected anyway (the grant
    // is then kept idle, `late_grant_adopted`), so each of those is allowed one extra.
    let m = proxy.metrics();
    let late = total(&m, "late_grant_adopted_total");
    let opened = origin.stats().connections_total;
    assert!(
        opened <= CLIENTS as u64 + late,
        "{opened} backend connections for {CLIENTS} clients (late grants adopted: {late}); \
         origin {}",
        origin.stats()
    );
    // And nothing close to one connection per request.
    let requests = (CLIENTS * REQUESTS) as u64;
    assert_eq!(origin.stats().requests_total, requests);
    assert_eq!(total(&m, "requests_total"), requests);
    assert_eq!(
        metric(&m, r#"ringway_responses_total{shard="all",code="2xx"}"#),
        requests
    );
    let reuse = server_metric(&m, "reuse_total", "default", server);
    let connect = server_metric(&m, "connect_total", "default", server);
    let retries = total(&m, "retries_total");
    // Every attempt either reused a pooled connection or opened one.
    assert_eq!(
        reuse + connect,
        requests + retries,
        "reuse {reuse} + connect {connect} != requests {requests} + retries {retries}"
    );
    assert!(
        reuse >= requests - CLIENTS as u64 - late,
        "reuse_total {reuse} of {requests} requests"
    );

    // 8: once the load is over, nothing is in use, and the proxy counted exactly the
    // connections the origin accepted.
    poll_until(Duration::from_secs(5), || {
        let m = proxy.metrics();
        let used = server_metric(&m, "used_cur", "default", server);
        let connect = server_metric(&m, "connect_total", "default", server);
        let accepted = origin.stats().connections_total;
        if used == 0 && connect == accepted {
            Ok(())
        } else {
            Err(format!(
                "used_cur {used} (want 0), connect_total {connect} vs origin accepted {accepted}"
            ))
        }
    });
    let m = proxy.metrics();
    let pooled = server_metric(&m, "idle_cur", "default", server)
        + server_metric(&m, "safe_cur", "default", server);
    let open = origin.stats().connections_open;
    assert!(
        pooled <= open,
        "the pool holds {pooled} connections but only {open} are open at the origin"
    );
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// 2: reuse never

#[test]
fn reuse_never_keeps_one_private_connection_per_client() {
    const CLIENTS: usize = 5;
    const ROUNDS: usize = 4;
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--shards", "2", "--reuse", "never"]);

    // All clients open at once, their requests interleaved, so that any pooling would
    // hand one client's backend connection to another.
    let mut clients: Vec<Conn> = (0..CLIENTS).map(|_| proxy.connect()).collect();
    let mut seen: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); CLIENTS];
    for round in 0..ROUNDS {
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.get("/");
            assert_eq!(r.status, 200, "client {i} round {round}");
            seen[i].insert(r.num("x-origin-conn"));
        }
    }
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.len(), 1, "client {i} used backend connections {s:?}");
    }
    let all: BTreeSet<u64> = seen.iter().flatten().copied().collect();
    assert_eq!(all.len(), CLIENTS, "backend connections shared: {seen:?}");
    assert_eq!(origin.stats().connections_total, CLIENTS as u64);
    assert_eq!(origin.stats().max_requests_per_conn, ROUNDS as u64);

    // Closed clients leave nothing behind for new ones.
    drop(clients);
    poll_until(Duration::from_secs(5), || {
        let open = origin.stats().connections_open;
        if open == 0 {
            Ok(())
        } else {
            Err(format!(
                "{open} backend connections still open after the clients left"
            ))
        }
    });
    let (status, conn) = one_get(&proxy);
    assert_eq!(status, 200);
    assert!(!all.contains(&conn));
    assert_eq!(origin.stats().connections_total, CLIENTS as u64 + 1);
    let m = proxy.metrics();
    let server = origin.addr();
    assert_eq!(server_metric(&m, "idle_cur", "default", server), 0);
    assert_eq!(server_metric(&m, "safe_cur", "default", server), 0);
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// 3: a session's first request, per mode

/// What the first request of a new client session may reuse, per mode, in two situations:
/// the pool holds one *safe* connection (used twice), or one *idle* connection (used once).
/// Returns (reused when safe, reused when idle).
fn first_request_reuse(mode: &str) -> (bool, bool) {
    let origin = origin();
    let server = origin.addr();
    let backend = server.to_string();
    let proxy = Proxy::start(&["--backend", &backend, "--reuse", mode]);

    // Client A: two requests on one backend connection, which becomes safe.
    let mut a = proxy.connect();
    let a1 = a.get("/");
    assert_eq!(a1.status, 200);
    let conn_a = a1.num("x-origin-conn");
    wait_pool_settled(&proxy, server, 1);
    let a2 = a.get("/");
    assert_eq!(a2.status, 200);
    assert_eq!(
        a2.num("x-origin-conn"),
        conn_a,
        "{mode}: a later request did not reuse the pooled connection"
    );
    drop(a);
    wait_pool_settled(&proxy, server, 1);

    // Client B's first request, with one safe connection pooled.
    let mut b = proxy.connect();
    let b1 = b.get("/");
    assert_eq!(b1.status, 200);
    let reused_safe = b1.num("x-origin-conn") == conn_a;
    let opened = origin.stats().connections_total;
    assert_eq!(opened, if reused_safe { 1 } else { 2 }, "{mode}");
    // B's second request may reuse, whatever the mode: no new connection.
    let pooled = opened;
    wait_pool_settled(&proxy, server, pooled);
    let b2 = b.get("/");
    assert_eq!(b2.status, 200);
    assert_eq!(
        origin.stats().connections_total,
        opened,
        "{mode}: B's second request opened a connection with {pooled} pooled"
    );
    drop(b);

    // A fresh proxy whose pool holds one connection used once (idle, not safe).
    drop(proxy);
    let origin2 = common::origin();
    let server = origin2.addr();
    let backend = server.to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--reuse", mode]);
    let (status, conn_x) = one_get(&proxy);
    assert_eq!(status, 200);
    wait_pool_settled(&proxy, server, 1);
    let (status, conn_y) = one_get(&proxy);
    assert_eq!(status, 200);
    let reused_idle = conn_y == conn_x;
    assert_eq!(
        origin2.stats().connections_total,
        if reused_idle { 1 } else { 2 },
        "{mode}"
    );
    proxy.assert_healthy();
    (reused_safe, reused_idle)
}

#[test]
fn safe_never_sends_a_first_request_on_a_pooled_connection() {
    assert_eq!(first_request_reuse("safe"), (false, false));
}

#[test]
fn aggressive_sends_a_first_request_on_safe_connections_only() {
    assert_eq!(first_request_reuse("aggressive"), (true, false));
}

#[test]
fn always_sends_a_first_request_on_any_pooled_connection() {
    assert_eq!(first_request_reuse("always"), (true, true));
}

// ---------------------------------------------------------------------------------------
// 4: origins that close connections

#[test]
fn origin_closing_idle_connections_causes_no_client_error() {
    let idle_close = Duration::from_secs(1);
    let origin = origin_with(OriginConfig {
        idle_close: Some(idle_close),
        ..OriginConfig::default()
    });
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--reuse", "always"]);

    let mut c = proxy.connect();
    let mut conns = Vec::new();
    const PAUSES: usize = 2;
    for i in 0..=PAUSES {
        if i > 0 {
            // The premise is elapsed time: the origin drops the idle connection meanwhile.
            std::thread::sleep(idle_close + Duration::from_millis(400));
        }
        let r = c.get("/");
        assert_eq!(
            r.status, 200,
            "GET {i} after the origin closed the idle connection"
        );
        conns.push(r.num("x-origin-conn"));
    }
    let distinct: BTreeSet<u64> = conns.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        conns.len(),
        "the origin closed every connection while idle, yet one was used twice: {conns:?}"
    );
    let m = proxy.metrics();
    let noticed = total(&m, "retries_total") + total(&m, "idle_closed_by_server_total");
    assert!(
        noticed > 0,
        "neither a retry nor an idle close counted after {PAUSES} server-side closes:\n{}",
        m.lines()
            .filter(|l| l.contains("retries_total") || l.contains("idle_closed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        metric(&m, r#"ringway_responses_total{shard="all",code="5xx"}"#),
        0
    );
    proxy.assert_healthy();
}

#[test]
fn origin_closing_after_3_requests_causes_no_client_error() {
    const REQUESTS: u64 = 30;
    let origin = origin_with(OriginConfig {
        close_after: Some(3),
        ..OriginConfig::default()
    });
    let server = origin.addr();
    let backend = server.to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--reuse", "always"]);

    let mut c = proxy.connect();
    for i in 0..REQUESTS {
        let r = c.get("/");
        assert_eq!(r.status, 200, "GET {i}");
        assert!(
            !r.says_close(),
            "GET {i}: the origin's close leaked to the client"
        );
        assert_eq!(r.num("x-origin-req"), i % 3 + 1, "GET {i}");
    }
    // The origin announces each close (`Connection: close`), so the proxy never pools a
    // connection it is about to lose: each connection carries exactly 3 requests.
    let s = origin.stats();
    assert_eq!(s.max_requests_per_conn, 3);
    assert_eq!(s.connections_total, REQUESTS / 3);
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, r#"ringway_responses_total{shard="all",code="2xx"}"#),
        REQUESTS
    );
    assert_eq!(
        server_metric(&m, "connect_total", "default", server),
        REQUESTS / 3
    );
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// 5: purge

#[test]
fn purge_shrinks_the_pool_to_zero_after_traffic_stops() {
    const CLIENTS: usize = 20;
    let origin = origin();
    let server = origin.addr();
    let backend = server.to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--shards",
        "2",
        "--reuse",
        "always",
        "--pool-purge-delay",
        "200ms",
    ]);
    let fds_before = metric(&proxy.metrics(), "ringway_open_fds");

    // Slow answers keep all 20 requests in flight together, so the pool grows.
    let start = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = proxy.addr;
            let start = start.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                start.wait();
                for n in 0..5 {
                    let r = c.get("/delay/100");
                    assert_eq!(r.status, 200, "client {i} request {n}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    let opened = origin.stats().connections_total;
    assert!(
        opened >= 5,
        "20 concurrent slow requests opened only {opened} backend connections"
    );

    poll_until(Duration::from_secs(5), || {
        let m = proxy.metrics();
        let pooled = server_metric(&m, "idle_cur", "default", server)
            + server_metric(&m, "safe_cur", "default", server);
        let used = server_metric(&m, "used_cur", "default", server);
        let open = origin.stats().connections_open;
        if pooled == 0 && used == 0 && open == 0 {
            Ok(())
        } else {
            Err(format!(
                "pool idle+safe {pooled}, used {used}, open at the origin {open}; need_est {}",
                server_metric(&m, "need_est", "default", server)
            ))
        }
    });
    let m = proxy.metrics();
    let purged = server_metric(&m, "purged_total", "default", server);
    let connect = server_metric(&m, "connect_total", "default", server);
    assert_eq!(connect, opened);
    assert_eq!(
        purged, connect,
        "every connection should have been closed by the purge (the origin closes none)"
    );
    // Every backend and client socket was closed: nothing leaked.
    poll_until(Duration::from_secs(5), || {
        let fds = metric(&proxy.metrics(), "ringway_open_fds");
        if fds <= fds_before {
            Ok(())
        } else {
            Err(format!("{fds} fds open, {fds_before} before the traffic"))
        }
    });
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// 6: two servers, one goes down

#[test]
fn requests_survive_a_server_going_down() {
    let o1 = origin();
    let o2 = origin();
    let (s1, s2) = (o1.addr(), o2.addr());
    let spec = format!("a={s1},{s2}");
    let mut proxy = Proxy::start(&["--backend", &spec, "--timeout-backend", "1s"]);

    // Round-robin over both servers (one shard, one client: strict alternation).
    let mut c = proxy.connect();
    for i in 0..10 {
        assert_eq!(c.get("/").status, 200, "GET {i}");
    }
    let (n1, n2) = (o1.stats().requests_total, o2.stats().requests_total);
    assert_eq!((n1, n2), (5, 5), "requests per server");

    o2.stop();
    // Requests go on. Those sent to the stopped server fail until it is marked down: a
    // refused connect answers 502 and marks it down. (`Origin::stop` leaves its accepted
    // connections open and silent, so a request on a pooled one waits for
    // `--timeout-backend` and answers 504.) Once marked down, the server is left alone
    // for a while: the next 10 requests in a row all succeed, on the other server.
    const IN_A_ROW: usize = 10;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut statuses = Vec::new();
    let mut ok_in_a_row = 0;
    let mut served_before_run = 0;
    while !(statuses.iter().any(|s| *s != 200) && ok_in_a_row >= IN_A_ROW) {
        assert!(
            Instant::now() < deadline,
            "no run of {IN_A_ROW} successes after a failure within 15 s: {statuses:?}"
        );
        if ok_in_a_row == 0 {
            served_before_run = o1.stats().requests_total;
        }
        let r = c.get("/");
        statuses.push(r.status);
        if r.status == 200 {
            ok_in_a_row += 1;
        } else {
            assert!(
                matches!(r.status, 502..=504),
                "a stopped server gave the client {}: {statuses:?}",
                r.status
            );
            ok_in_a_row = 0;
        }
    }
    let failures = statuses.iter().filter(|s| **s != 200).count();
    assert!(failures <= 3, "{failures} failed requests: {statuses:?}");
    assert_eq!(
        o1.stats().requests_total,
        served_before_run + IN_A_ROW as u64,
        "the run of successes was not served by the live server"
    );
    let m = proxy.metrics();
    assert!(total(&m, "server_down_total") > 0, "server_down_total is 0");
    assert_eq!(server_metric(&m, "idle_cur", "a", s2), 0);
    assert_eq!(server_metric(&m, "safe_cur", "a", s2), 0);
    assert_eq!(server_metric(&m, "used_cur", "a", s2), 0);
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// 7: max-reuse

#[test]
fn max_reuse_caps_requests_per_backend_connection() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--reuse",
        "always",
        "--max-reuse",
        "5",
    ]);
    let mut c = proxy.connect();
    for i in 0..20 {
        assert_eq!(c.get("/").status, 200, "GET {i}");
    }
    let s = origin.stats();
    assert_eq!(s.max_requests_per_conn, 5, "{s}");
    assert_eq!(s.connections_total, 4, "{s}");
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// A backend that misbehaves on purpose, one thread per connection. The origin announces
// its closes (`Connection: close`) and closes idle connections while they sit in the pool,
// where the watcher sees them; this one provokes the two other cases deterministically.

#[derive(Clone, Copy)]
enum Misbehave {
    /// Reads the second request of each connection, then closes without answering: the
    /// server closed a kept-alive connection just as a request was sent on it.
    CloseOnSecondRequest,
    /// Writes stray bytes on each connection 100 ms after its first response.
    GarbageWhileIdle,
}

struct RawBackend {
    addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicU64>,
}

impl RawBackend {
    fn start(how: Misbehave) -> RawBackend {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        // The thread ends with the test process; its sockets die with it.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let id = count.fetch_add(1, Ordering::SeqCst) + 1;
                std::thread::spawn(move || serve_raw(stream, id, how));
            }
        });
        RawBackend { addr, accepted }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one request (head and `Content-Length` body); `None` at EOF or error.
fn read_raw_request(stream: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    use std::io::Read;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return Some(());
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn serve_raw(mut stream: std::net::TcpStream, id: u64, how: Misbehave) {
    use std::io::Write;
    let mut buf = Vec::new();
    let mut nreq = 0u64;
    while read_raw_request(&mut stream, &mut buf).is_some() {
        nreq += 1;
        if nreq == 2 && matches!(how, Misbehave::CloseOnSecondRequest) {
            return; // FIN, no answer
        }
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Conn: {id}\r\n\r\nok");
        if stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
        if nreq == 1 && matches!(how, Misbehave::GarbageWhileIdle) {
            // The premise is elapsed time: the connection is pooled by then.
            std::thread::sleep(Duration::from_millis(100));
            let _ = stream.write_all(b"garbage\r\n\r\n");
        }
    }
}

#[test]
fn server_closing_a_reused_connection_mid_request_retries_gets_only() {
    let backend = RawBackend::start(Misbehave::CloseOnSecondRequest);
    let server = backend.addr;
    let spec = server.to_string();
    let mut proxy = Proxy::start(&["--backend", &spec, "--reuse", "always"]);
    let mut c = proxy.connect();

    let r = c.get("/");
    assert_eq!((r.status, r.num("x-conn")), (200, 1));
    wait_pool_settled(&proxy, server, 1);
    // Sent on the pooled connection, which the server closes unanswered: an idempotent
    // request without a body is retried once on a fresh connection.
    let r = c.get("/");
    assert_eq!(r.status, 200, "the GET was not retried: {r:?}");
    assert_eq!(
        r.num("x-conn"),
        2,
        "the retry did not go on a fresh connection"
    );
    assert_eq!(backend.accepted(), 2);
    let m = proxy.metrics();
    assert_eq!(total(&m, "retries_total"), 1);

    // A POST with a body is not replayed: 502.
    wait_pool_settled(&proxy, server, 1);
    let r = c.request("POST", "/", &[], Some(b"hello"));
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        backend.accepted(),
        2,
        "the POST was replayed on a new connection"
    );
    let m = proxy.metrics();
    assert_eq!(total(&m, "retries_total"), 1);
    assert_eq!(
        metric(&m, r#"ringway_responses_total{shard="all",code="5xx"}"#),
        1
    );
    // Nothing in use, nothing pooled: the counters came back to zero, not below.
    wait_pool_settled(&proxy, server, 0);
    proxy.assert_healthy();
}

#[test]
fn stray_bytes_on_an_idle_connection_remove_it_from_the_pool() {
    let backend = RawBackend::start(Misbehave::GarbageWhileIdle);
    let server = backend.addr;
    let spec = server.to_string();
    let mut proxy = Proxy::start(&["--backend", &spec, "--reuse", "always"]);
    let mut c = proxy.connect();

    let r = c.get("/");
    assert_eq!((r.status, r.num("x-conn")), (200, 1));
    poll_until(Duration::from_secs(5), || {
        let m = proxy.metrics();
        let closed = total(&m, "idle_closed_by_server_total");
        let pooled = server_metric(&m, "idle_cur", "default", server)
            + server_metric(&m, "safe_cur", "default", server);
        if closed == 1 && pooled == 0 {
            Ok(())
        } else {
            Err(format!(
                "idle_closed_by_server {closed} (want 1), pooled {pooled} (want 0)"
            ))
        }
    });
    // The next request does not see the garbage: it goes on a fresh connection.
    let r = c.get("/");
    assert_eq!((r.status, r.num("x-conn")), (200, 2), "{r:?}");
    assert_eq!(r.body, b"ok");
    let m = proxy.metrics();
    assert_eq!(total(&m, "retries_total"), 0);
    proxy.assert_healthy();
}
