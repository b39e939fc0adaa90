//! Traffic management through the real binary against real origins: per-backend settings
//! from `[backends.NAME]` tables, the balance algorithms and weights, passive and active
//! health checks, and the configuration reload on SIGHUP under continuous load.

mod common;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn write_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    // Atomic replace: a reload never reads half a file.
    std::fs::rename(&tmp, path).unwrap();
}

/// Requests each origin served since the counters were last reset.
fn served(origins: &[&Origin]) -> Vec<u64> {
    origins.iter().map(|o| o.stats().requests_total).collect()
}

fn get_ok(conn: &mut Conn, path: &str, headers: &[(&str, &str)]) {
    let r = conn.request("GET", path, headers, None);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
}

#[test]
fn bad_backend_settings_exit_2_naming_backend_and_key() {
    let f = TempFile(temp_path("bad-backend.toml"));
    write_file(
        &f.0,
        "[backends.api]\nservers = [\"127.0.0.1:9\"]\n\n[backends.api.check]\npath = \"/healthz\"\nfall = 0\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config", f.0.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("backends.api.check.fall"), "{err}");
    assert!(
        err.contains("backend 'api'") && err.contains("line 6"),
        "{err}"
    );
    // The same file as a start: exit 2 too, before anything listens.
    let out = std::process::Command::new(BIN)
        .args(["--config", f.0.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // A valid table is accepted and described.
    write_file(
        &f.0,
        "default-backend = \"api\"\n[backends.api]\nservers = [\"127.0.0.1:9\", \"127.0.0.1:10 weight=3\"]\nbalance = \"hash\"\nhash-on = \"cookie:sid\"\n[backends.api.check]\npath = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config", f.0.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("127.0.0.1:10 weight=3"), "{text}");
    assert!(text.contains("balance hash on cookie:sid"), "{text}");
    assert!(
        text.contains("GET /healthz expecting 200-399 every 1s"),
        "{text}"
    );
}

/// Smooth weighted round-robin: weights 1:2:3 give exactly that split (nginx's algorithm
/// is exact over a full cycle); weight 0 gets nothing.
#[test]
fn weighted_round_robin_splits_by_weight() {
    let (a, b, c, d) = (origin(), origin(), origin(), origin());
    let spec = format!(
        "w={} weight=1,{} weight=2,{} weight=3,{} weight=0",
        a.addr(),
        b.addr(),
        c.addr(),
        d.addr()
    );
    let p = Proxy::start(&["--backend", &spec]);
    let mut conn = p.connect();
    for _ in 0..600 {
        get_ok(&mut conn, "/", &[]);
    }
    let n = served(&[&a, &b, &c, &d]);
    // Tolerance: exact, give or take one cycle (6 requests).
    for (got, want) in n.iter().zip([100u64, 200, 300, 0]) {
        assert!(got.abs_diff(want) <= 6, "{n:?}");
    }
}

/// Least outstanding requests: with concurrent clients, a server that takes 40 ms per
/// answer gets far fewer requests than a fast one (round-robin would give each half).
#[test]
fn least_request_sends_less_to_a_slow_server() {
    let fast = origin();
    let slow = origin_with(OriginConfig {
        delay: Some(Duration::from_millis(40)),
        ..OriginConfig::default()
    });
    let f = TempFile(temp_path("lr.toml"));
    write_file(
        &f.0,
        &format!(
            "[backends.lr]\nservers = [\"{}\", \"{}\"]\nbalance = \"least-request\"\n",
            fast.addr(),
            slow.addr()
        ),
    );
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "2"]);
    let loads: Vec<Load> = (0..6).map(|_| Load::start(p.addr, "/")).collect();
    wait_until(Duration::from_secs(20), "600 answers", || {
        loads.iter().map(|l| l.ok()).sum::<u64>() >= 600
    });
    let mut failed = 0;
    for l in loads {
        failed += l.finish().1;
    }
    assert_eq!(failed, 0);
    let n = served(&[&fast, &slow]);
    let share = n[1] as f64 / (n[0] + n[1]) as f64;
    // Stated tolerance: the slow server gets under 20% (round-robin: 50%).
    assert!(
        share < 0.20,
        "slow server got {:.1}% of {n:?}",
        share * 100.0
    );
    assert!(n[1] > 0, "the slow server is still used: {n:?}");
}

/// Which origin served one request (the one whose counter moved).
fn who(origins: &[&Origin], before: &[u64]) -> usize {
    let now = served(origins);
    let moved: Vec<usize> = (0..origins.len())
        .filter(|&i| now[i] != before[i])
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one origin serves a request: {before:?} -> {now:?}"
    );
    moved[0]
}

/// Consistent hashing on a header: every request of one key goes to one server; keys
/// spread within 15% of even; adding a fourth server (by a reload) moves at most
/// 1/4 + 5 points of 2,000 keys, and only to the new server's benefit in the main.
#[test]
fn hashing_is_sticky_even_and_moves_about_one_nth_on_reload() {
    let o: Vec<Origin> = (0..4).map(|_| origin()).collect();
    let refs: Vec<&Origin> = o.iter().collect();
    let f = TempFile(temp_path("hash.toml"));
    let cfg = |n: usize| {
        let servers: Vec<String> = o[..n].iter().map(|x| format!("\"{}\"", x.addr())).collect();
        format!(
            "[backends.h]\nservers = [{}]\nbalance = \"hash\"\nhash-on = \"header:x-user\"\n",
            servers.join(", ")
        )
    };
    write_file(&f.0, &cfg(3));
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "2"]);
    const KEYS: usize = 2000;
    let map = |conns: &mut [Conn]| -> Vec<usize> {
        (0..KEYS)
            .map(|k| {
                let before = served(&refs);
                let user = format!("user-{k}");
                get_ok(&mut conns[k % conns.len()], "/", &[("x-user", &user)]);
                who(&refs, &before)
            })
            .collect()
    };
    let mut conns: Vec<Conn> = (0..4).map(|_| p.connect()).collect();
    let first = map(&mut conns);
    // Sticky: the same keys again, over other connections, land where they did.
    conns.rotate_left(1);
    for k in (0..KEYS).step_by(10) {
        let before = served(&refs);
        get_ok(&mut conns[0], "/", &[("x-user", &format!("user-{k}"))]);
        assert_eq!(
            who(&refs, &before),
            first[k],
            "key {k} moved without a change"
        );
    }
    let mut per = [0usize; 4];
    for &s in &first {
        per[s] += 1;
    }
    for &c in &per[..3] {
        assert!(
            (c as f64 - KEYS as f64 / 3.0).abs() < KEYS as f64 * 0.15,
            "{per:?}"
        );
    }
    // Add a server: SIGHUP with four.
    write_file(&f.0, &cfg(4));
    p.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the reload", || {
        metric(&p.metrics(), "ringway_config_reloads_total") == 1
    });
    // Every shard picks a reload up within 20 ms; give them a few polls.
    let m = p.metrics();
    wait_until(
        Duration::from_secs(5),
        "the new server is in /metrics",
        || p.metrics().contains(&format!("server=\"{}\"", o[3].addr())),
    );
    drop(m);
    std::thread::sleep(Duration::from_millis(100));
    let mut conns: Vec<Conn> = (0..4).map(|_| p.connect()).collect();
    let second = map(&mut conns);
    let moved = first.iter().zip(&second).filter(|(a, b)| a != b).count();
    let to_new = second.iter().filter(|&&s| s == 3).count();
    let limit = KEYS / 4 + KEYS / 20;
    assert!(
        moved <= limit,
        "{moved} of {KEYS} keys moved (limit {limit})"
    );
    assert!(to_new >= KEYS / 5, "the new server got {to_new} keys");
}

/// A TCP server that accepts and resets every connection (SO_LINGER 0), counting them.
fn resetter() -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (count.clone(), stop.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
            match l.accept() {
                Ok((sock, _)) => {
                    c.fetch_add(1, Ordering::Relaxed);
                    let sock = socket2::Socket::from(sock);
                    let _ = sock.set_linger(Some(Duration::ZERO));
                    // Read the request first, so the reset comes after it was sent.
                    std::thread::sleep(Duration::from_millis(2));
                    drop(sock);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (addr, count, stop)
}

/// Passive checks: a server that resets every connection is taken out after the
/// configured count of failures; with a retry on reset the client never sees an error.
#[test]
fn passive_checks_take_out_a_server_that_resets() {
    let good = origin();
    let (bad, resets, stop) = resetter();
    let f = TempFile(temp_path("passive.toml"));
    write_file(
        &f.0,
        &format!(
            "[backends.p]\nservers = [\"{}\", \"{bad}\"]\noutlier-failures = 3\noutlier-ejection = \"30s\"\nretries = 1\nretry-on = [\"reset\", \"connect-failure\"]\n",
            good.addr()
        ),
    );
    let p = Proxy::start(&["--config", f.0.to_str().unwrap()]);
    let mut conn = p.connect();
    for i in 0..60 {
        let r = conn.request("GET", "/", &[], None);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let n = resets.load(Ordering::Relaxed);
    assert_eq!(
        n, 3,
        "taken out after exactly 3 failures (it saw {n} connections)"
    );
    for _ in 0..40 {
        get_ok(&mut conn, "/", &[]);
    }
    assert_eq!(
        resets.load(Ordering::Relaxed),
        3,
        "no request went to it while it is out"
    );
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            &format!("ringway_server_up{{shard=\"0\",backend=\"p\",server=\"{bad}\"}}")
        ),
        0,
        "{m}"
    );
    assert!(
        p.stderr().contains("passive check: 3 failures in a row"),
        "{}",
        p.stderr()
    );
    stop.store(true, Ordering::Relaxed);
}

/// Idle pooled connections of `server` over every shard.
fn pooled(p: &Proxy, server: SocketAddr) -> f64 {
    let m = p.metrics();
    let want = server.to_string();
    sum_metric(&m, "ringway_server_idle_cur", &[("server", &want)])
        + sum_metric(&m, "ringway_server_safe_cur", &[("server", &want)])
}

/// Active checks, HAProxy's meanings, under continuous load over two shards: one of three
/// servers stops; within fall x interval it stops getting requests and its pooled
/// connections are gone on every shard; no client request fails (retries cover the ones
/// in flight on the dead connection); restarted, it is used again after rise x interval.
/// Checks sent per interval = servers (counted at the origins), not servers x shards.
#[test]
fn active_checks_take_a_stopped_server_out_and_back() {
    let a = origin();
    let b = origin();
    let c = origin();
    let c_addr = c.addr();
    let f = TempFile(temp_path("active.toml"));
    write_file(
        &f.0,
        &format!(
            "[backends.web]\nservers = [\"{}\", \"{}\", \"{c_addr}\"]\nretries = 1\nretry-on = [\"connect-failure\", \"reset\", \"timeout\"]\ntimeout-try = \"300ms\"\n[backends.web.check]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n",
            a.addr(),
            b.addr()
        ),
    );
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "2"]);
    // Checks alone, no load: over ~2 s each origin sees about 10 (one shard checks each
    // server), not 20.
    a.reset_stats();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    let checks = a.stats().requests_total as f64 / t0.elapsed().as_secs_f64() * 0.2;
    assert!(
        (0.6..=1.4).contains(&checks),
        "{checks:.2} checks per interval at one origin (want 1)"
    );
    let loads: Vec<Load> = (0..3).map(|_| Load::start(p.addr, "/")).collect();
    wait_until(Duration::from_secs(10), "load on c", || {
        c.stats().requests_total > 20 && pooled(&p, c_addr) > 0.0
    });
    let stopped = Instant::now();
    c.stop();
    wait_until(Duration::from_secs(5), "c down by its check", || {
        let m = p.metrics();
        try_metric(
            &m,
            &format!("ringway_server_check_up{{backend=\"web\",server=\"{c_addr}\"}}"),
        ) == Some(0)
    });
    let took = stopped.elapsed();
    // fall x interval = 400 ms, plus one interval of phase and the timeout.
    assert!(took < Duration::from_millis(1500), "down after {took:?}");
    wait_until(
        Duration::from_secs(2),
        "c's pooled connections closed on every shard",
        || pooled(&p, c_addr) == 0.0,
    );
    let before = loads.iter().map(|l| l.ok()).sum::<u64>();
    wait_until(Duration::from_secs(10), "load goes on", || {
        loads.iter().map(|l| l.ok()).sum::<u64>() > before + 100
    });
    // Its checks keep failing while it is stopped (passive checks may have taken it out
    // before the check did: then it is down for its check all the same).
    wait_until(Duration::from_secs(5), "c's checks fail", || {
        try_metric(
            &p.metrics(),
            &format!("ringway_server_checks_failed_total{{backend=\"web\",server=\"{c_addr}\"}}"),
        )
        .is_some_and(|n| n >= 2)
    });
    // Restart c on the same port.
    let c2 = origin_with(OriginConfig {
        listen: c_addr,
        ..OriginConfig::default()
    });
    let restarted = Instant::now();
    wait_until(Duration::from_secs(5), "c used again", || {
        c2.stats().requests_total > 30
    });
    assert!(restarted.elapsed() < Duration::from_secs(3));
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            &format!("ringway_server_check_up{{backend=\"web\",server=\"{c_addr}\"}}")
        ),
        1
    );
    assert!(
        metric(
            &m,
            &format!("ringway_server_checks_failed_total{{backend=\"web\",server=\"{c_addr}\"}}")
        ) >= 2
    );
    let mut failed = 0;
    let mut why = Vec::new();
    for l in loads {
        let (_, f, w) = l.finish();
        failed += f;
        why.extend(w);
    }
    assert_eq!(failed, 0, "client requests failed: {why:?}");
    // The log reaches the test through a reader thread: wait for the lines.
    wait_until(Duration::from_secs(5), "the down and up log lines", || {
        let log = p.stderr();
        log.contains("health check: server is down") && log.contains("health check: server is up")
    });
}

/// A server that answers its health check (`/healthz`) with 200 and every other request
/// with 500 while `failing` is set (200 otherwise), on keep-alive connections; counts the
/// requests that are not checks.
fn flaky() -> (SocketAddr, Arc<AtomicBool>, Arc<AtomicU64>) {
    use std::io::{BufRead, BufReader};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let served = Arc::new(AtomicU64::new(0));
    let (f, n) = (failing.clone(), served.clone());
    std::thread::spawn(move || {
        for sock in l.incoming() {
            let Ok(sock) = sock else { return };
            let (f, n) = (f.clone(), n.clone());
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
                let mut w = sock.try_clone().unwrap();
                let mut r = BufReader::new(sock);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let check = line.contains("/healthz");
                    // The rest of the head (requests here have no body).
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    if !check {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    let status = if !check && f.load(Ordering::Relaxed) {
                        "500 Internal Server Error"
                    } else {
                        "200 OK"
                    };
                    let resp = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok");
                    if w.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, failing, served)
}

/// Passive checks defer to the active check: a server taken out by passive checks (5xx
/// in a row) while its check still passes is down for its check, and comes back only
/// after `rise` passed checks — not when `outlier-max-ejection` (100 ms here) runs out.
#[test]
fn passive_checks_defer_to_the_active_check() {
    let good = origin();
    let (bad, failing, bad_served) = flaky();
    let f = TempFile(temp_path("defer.toml"));
    write_file(
        &f.0,
        &format!(
            "[backends.d]\nservers = [\"{}\", \"{bad}\"]\noutlier-failures = 2\noutlier-ejection = \"50ms\"\noutlier-max-ejection = \"100ms\"\n[backends.d.check]\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 3\nfall = 2\n",
            good.addr()
        ),
    );
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "2"]);
    let check_up = format!("ringway_server_check_up{{backend=\"d\",server=\"{bad}\"}}");
    wait_until(Duration::from_secs(5), "the check state", || {
        try_metric(&p.metrics(), &check_up) == Some(1)
    });
    // Requests until the bad server has answered 500 twice in a row on some shard.
    let mut conn = p.connect();
    let mut five = 0;
    for _ in 0..200 {
        let r = conn.request("GET", "/", &[], None);
        if r.status == 500 {
            five += 1;
        }
        if r.says_close() {
            conn = p.connect();
        }
        if try_metric(&p.metrics(), &check_up) == Some(0) {
            break;
        }
    }
    assert!(five >= 2, "the bad server answered {five} 500s");
    assert_eq!(
        try_metric(&p.metrics(), &check_up),
        Some(0),
        "taken out by passive checks, the server is down for its check too"
    );
    // It is healthy again at once; its check passed all along.
    failing.store(false, Ordering::Relaxed);
    let out = Instant::now();
    let before = bad_served.load(Ordering::Relaxed);
    let mut back = None;
    while out.elapsed() < Duration::from_secs(5) {
        let r = conn.request("GET", "/", &[], None);
        assert_eq!(r.status, 200, "{}", r.text());
        if bad_served.load(Ordering::Relaxed) > before {
            back = Some(out.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let back = back.expect("the server came back within 5 s");
    // rise 3 x interval 200 ms: at least two intervals after the first passed check,
    // far past the 100 ms longest ejection.
    assert!(
        back >= Duration::from_millis(350),
        "back after {back:?}, before rise passed checks"
    );
    assert_eq!(try_metric(&p.metrics(), &check_up), Some(1));
    wait_until(Duration::from_secs(5), "the log lines", || {
        let log = p.stderr();
        log.contains("passive check: 2 failures in a row")
            && log.contains("taken out by passive checks")
            && log.contains("health check: server is up")
    });
}

/// Reload on SIGHUP under continuous load: a backend's servers and a route change, no
/// client request fails, the new route serves, the unchanged server keeps its pooled
/// connection (no new connection at its origin), the removed one gets nothing more; an
/// invalid file is refused with the reason and counted, and the old configuration keeps
/// serving; a change that needs a restart is reported as such.
#[test]
fn reload_under_load_keeps_unchanged_pools_and_refuses_bad_files() {
    let (a, b, d, e) = (origin(), origin(), origin(), origin());
    let f = TempFile(temp_path("reload.toml"));
    let v1 = format!(
        "route = [\"*/api=api\"]\ndefault-backend = \"web\"\n[backends.web]\nservers = [\"{}\"]\n[backends.api]\nservers = [\"{}\", \"{}\"]\n",
        e.addr(),
        a.addr(),
        b.addr()
    );
    write_file(&f.0, &v1);
    let p = Proxy::start(&["--config", f.0.to_str().unwrap()]);
    let mut probe = p.connect();
    let r = probe.request("GET", "/new/x", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(
        served(&[&d]),
        vec![0],
        "/new goes to web (e) before the reload"
    );
    let load = Load::start(p.addr, "/api/x");
    wait_until(Duration::from_secs(10), "load", || load.ok() > 50);
    let a_conns = a.stats().connections_total;
    assert_eq!(
        a_conns, 1,
        "one sequential client: one pooled connection to a"
    );

    // v2: api = [a, d] (b removed, d added); a new route /new -> fresh backend "new" = [d].
    let v2 = format!(
        "route = [\"*/api=api\", \"*/new=new\"]\ndefault-backend = \"web\"\ntakeover-timeout = \"7ms\"\n[backends.web]\nservers = [\"{}\"]\n[backends.api]\nservers = [\"{}\", \"{}\"]\n[backends.new]\nservers = [\"{}\"]\n",
        e.addr(),
        a.addr(),
        d.addr(),
        d.addr()
    );
    write_file(&f.0, &v2);
    p.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the reload", || {
        metric(&p.metrics(), "ringway_config_reloads_total") == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    let b_after = b.stats().requests_total;
    let ok_at_reload = load.ok();
    wait_until(Duration::from_secs(10), "load after the reload", || {
        load.ok() > ok_at_reload + 100
    });
    assert_eq!(
        b.stats().requests_total,
        b_after,
        "the removed server gets nothing more"
    );
    assert!(d.stats().requests_total > 20, "the added server serves api");
    assert_eq!(
        a.stats().connections_total,
        a_conns,
        "the unchanged server's pooled connection survived the reload"
    );
    let before = d.stats().requests_total;
    let r = probe.request("GET", "/new/x", &[], None);
    assert_eq!(r.status, 200);
    assert!(d.stats().requests_total > before, "the new route serves");
    wait_until(Duration::from_secs(5), "the reload's log lines", || {
        let log = p.stderr();
        log.contains("takeover-timeout changed, which needs a restart")
            && log.contains("backend new added")
    });

    // An invalid file: refused with the reason, counted; the old configuration serves.
    write_file(
        &f.0,
        &v2.replace("[backends.new]\n", "[backends.new]\nbalance = \"random\"\n"),
    );
    p.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the refused reload", || {
        metric(&p.metrics(), "ringway_config_reload_failures_total") == 1
    });
    // The log reaches the test through a reader thread: wait for the line.
    wait_until(
        Duration::from_secs(5),
        "the refused-reload log line",
        || {
            let log = p.stderr();
            log.contains("configuration reload refused") && log.contains("backends.new.balance")
        },
    );
    // check-config says the same of the same file.
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config", f.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backends.new.balance"));
    let ok_now = load.ok();
    wait_until(
        Duration::from_secs(10),
        "load after the refused reload",
        || load.ok() > ok_now + 50,
    );
    let r = probe.request("GET", "/new/x", &[], None);
    assert_eq!(r.status, 200);
    let (ok, failed, why) = load.finish();
    assert_eq!(
        failed, 0,
        "client requests failed across the reloads: {why:?}"
    );
    assert!(ok > 200);
    assert_eq!(metric(&p.metrics(), "ringway_config_reloads_total"), 1);
}

/// nginx as a non-ours origin: HTTP/1.1 or h2c (`listen ... http2`), answering
/// `server=NAME` and `/health` with the given status.
struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

impl Nginx {
    fn start(name: &str, h2: bool, health: u16) -> Nginx {
        let dir = TempDir::new(&format!("trf-{name}"));
        let port = closed_port();
        let d = dir.to_string_lossy().to_string();
        let http2 = if h2 { " http2" } else { "" };
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n  listen 127.0.0.1:{port}{http2};\n\
             location = /health {{ return {health}; }}\n\
             location / {{ default_type text/plain; return 200 \"server={name}\\n\"; }}\n }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new("nginx")
            .args([
                "-p",
                &d,
                "-c",
                &conf_path.to_string_lossy(),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx is needed for this test (installed by .ci/run)");
        wait_until(Duration::from_secs(10), "nginx to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Active checks against nginx over HTTP/1.1 and over HTTP/2 (h2c://): the server whose
/// `/health` answers 503 (outside the expected 200-399) is down by its check on both, and
/// every request goes to its healthy peer.
#[test]
fn nginx_checks_over_http1_and_h2c() {
    let (a, b) = (Nginx::start("a", false, 200), Nginx::start("b", false, 503));
    let (c, d) = (Nginx::start("c", true, 204), Nginx::start("d", true, 503));
    let f = TempFile(temp_path("nginx-checks.toml"));
    write_file(
        &f.0,
        &format!(
            "route = [\"*/h2=h2\"]\ncheck-path = \"/health\"\ncheck-interval = \"100ms\"\ncheck-timeout = \"500ms\"\ncheck-fall = 2\n\
             [backends.h1]\nservers = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\
             [backends.h2]\nservers = [\"h2c://127.0.0.1:{}\", \"h2c://127.0.0.1:{}\"]\n",
            a.port, b.port, c.port, d.port
        ),
    );
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "2"]);
    let up = |backend: &str, port: u16| {
        try_metric(
            &p.metrics(),
            &format!(
                "ringway_server_check_up{{backend=\"{backend}\",server=\"127.0.0.1:{port}\"}}"
            ),
        )
    };
    wait_until(
        Duration::from_secs(10),
        "the 503 servers down by their checks",
        || up("h1", b.port) == Some(0) && up("h2", d.port) == Some(0),
    );
    assert_eq!(up("h1", a.port), Some(1));
    assert_eq!(up("h2", c.port), Some(1), "204 is in 200-399");
    let mut conn = p.connect();
    for _ in 0..20 {
        let r = conn.request("GET", "/x", &[], None);
        assert_eq!((r.status, r.text()), (200, "server=a\n".to_string()));
        let r = conn.request("GET", "/h2/x", &[], None);
        assert_eq!((r.status, r.text()), (200, "server=c\n".to_string()));
    }
}

/// Weight 0 drains a server at run time (by a reload), and a backend whose every server
/// is drained answers 503 with a log line saying why.
#[test]
fn weight_zero_drains_and_no_usable_server_is_503_and_counted() {
    let (a, b) = (origin(), origin());
    let f = TempFile(temp_path("drain.toml"));
    let cfg = |wa: u32, wb: u32| {
        format!(
            "[backends.d]\nservers = [\"{} weight={wa}\", \"{} weight={wb}\"]\n",
            a.addr(),
            b.addr()
        )
    };
    write_file(&f.0, &cfg(1, 1));
    let p = Proxy::start(&["--config", f.0.to_str().unwrap()]);
    let mut conn = p.connect();
    for _ in 0..10 {
        get_ok(&mut conn, "/", &[]);
    }
    assert_eq!(served(&[&a, &b]), vec![5, 5]);
    write_file(&f.0, &cfg(1, 0));
    p.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the reload", || {
        metric(&p.metrics(), "ringway_config_reloads_total") == 1
    });
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..10 {
        get_ok(&mut conn, "/", &[]);
    }
    assert_eq!(served(&[&a, &b]), vec![15, 5], "b is drained");
    write_file(&f.0, &cfg(0, 0));
    p.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the second reload", || {
        metric(&p.metrics(), "ringway_config_reloads_total") == 2
    });
    std::thread::sleep(Duration::from_millis(100));
    let no_server = "ringway_backend_no_server_total{shard=\"0\",backend=\"d\"}";
    assert_eq!(
        metric(&p.metrics(), no_server),
        0,
        "no 503 of this kind yet"
    );
    for _ in 0..3 {
        let r = conn.request("GET", "/", &[], None);
        assert_eq!(r.status, 503);
        if r.says_close() {
            conn = p.connect();
        }
    }
    // Counted per backend, in /metrics.
    assert_eq!(metric(&p.metrics(), no_server), 3);
    // The log line reaches the test through a reader thread: wait for it.
    wait_until(
        Duration::from_secs(5),
        "the no-usable-server log line",
        || {
            p.stderr()
                .contains("no usable server in backend d: answering 503")
        },
    );
}

/// The worked example of docs/traffic.md is a configuration check-config accepts.
#[test]
fn the_traffic_guide_example_is_valid() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/traffic.md"))
        .unwrap();
    let start = doc.find("```toml\n").expect("a TOML example") + 8;
    let end = start + doc[start..].find("```").unwrap();
    let f = TempFile(temp_path("guide.toml"));
    write_file(&f.0, &doc[start..end]);
    let out = std::process::Command::new(BIN)
        .args([
            "check-config",
            "--config",
            f.0.to_str().unwrap(),
            "--shards",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("balance least-request; check GET /healthz"),
        "{text}"
    );
    assert!(text.contains("balance hash on path"), "{text}");
}
