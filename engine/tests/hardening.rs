//! Issue 14's hardening, end to end through the real binary: targets that try to step
//! around a route, CONNECT and h2c upgrades, a backend that answers before reading a
//! body (one client's answer must never reach another), 1xx floods, trickled bodies and
//! the smaller framing cases. Each test fails on the behaviour the issue describes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Which origin served one raw request on `c`, from the origins' counters.
fn served_by(c: &mut Conn, a: &Origin, b: &Origin, raw: &str) -> char {
    let (ra, rb) = (a.stats().requests_total, b.stats().requests_total);
    c.send(raw.as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{raw:?}: {}", r.text());
    let (da, db) = (a.stats().requests_total - ra, b.stats().requests_total - rb);
    match (da, db) {
        (1, 0) => 'a',
        (0, 1) => 'b',
        _ => panic!("{raw:?}: origin a counted {da}, origin b {db}"),
    }
}

#[test]
fn route_bypass_attempts_land_on_the_route_they_name() {
    let (a, b) = (origin(), origin());
    let (aa, ba) = (format!("a={}", a.addr()), format!("b={}", b.addr()));
    let mut proxy = Proxy::start(&[
        "--backend",
        &aa,
        "--backend",
        &ba,
        "--route",
        "*/admin=b",
        "--route",
        "secret.example=b",
        "--default-backend",
        "a",
    ]);
    let mut c = proxy.connect();
    let admin = [
        "/admin/x",
        "/ADMIN/x",
        "/Admin",
        "/%61dmin/x",
        "/%41DMIN",
        "//admin/x",
        "/./admin",
        "/x/../admin/x",
        "/x/%2e%2e/admin",
        "/x/..%2fadmin",
        "/x/..;/admin",
        "/admin;jsessionid=1",
        "/x\\..\\admin",
        "http://public.example/admin/x",
        "HTTP://public.example//admin",
    ];
    for t in admin {
        let raw = format!("GET {t} HTTP/1.1\r\nHost: public.example\r\n\r\n");
        assert_eq!(served_by(&mut c, &a, &b, &raw), 'b', "{t}");
    }
    // The authority of an absolute-form target replaces Host, for routing too.
    let raw = "GET http://secret.example/a HTTP/1.1\r\nHost: public.example\r\n\r\n";
    assert_eq!(served_by(&mut c, &a, &b, raw), 'b');
    let raw = "GET http://SECRET.example:80/a HTTP/1.1\r\nHost: public.example\r\n\r\n";
    assert_eq!(served_by(&mut c, &a, &b, raw), 'b');
    // And the reverse: Host names the secret host, the target another one.
    let raw = "GET http://public.example/a HTTP/1.1\r\nHost: secret.example\r\n\r\n";
    assert_eq!(served_by(&mut c, &a, &b, raw), 'a');
    for t in [
        "/administrator-not",
        "/public/admin",
        "/x/admin",
        "/%2561dmin",
    ] {
        let raw = format!("GET {t} HTTP/1.1\r\nHost: public.example\r\n\r\n");
        let want = if t.starts_with("/administrator") {
            'b'
        } else {
            'a'
        };
        assert_eq!(served_by(&mut c, &a, &b, &raw), want, "{t}");
    }
    // What goes upstream is the normalised target and the authority as Host.
    c.send(
        b"GET http://secret.example/x/../headers?q=/../y HTTP/1.1\r\nHost: public.example\r\n\r\n",
    );
    let r = c.read_response(false);
    let seen = r.text();
    assert!(
        seen.starts_with("GET http://secret.example/headers?q=/../y HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("Host: secret.example\r\n"), "{seen}");
    assert!(!seen.contains("public.example"), "{seen}");
    proxy.assert_healthy();
}

#[test]
fn connect_is_refused_and_h2c_upgrades_are_stripped() {
    let o = origin();
    let be = format!("o={}", o.addr());
    let mut proxy = Proxy::start(&["--backend", &be]);
    // CONNECT never reaches a backend: 501, and the connection closes.
    let mut c = proxy.connect();
    c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 501);
    assert!(r.says_close());
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(o.stats().requests_total, 0, "CONNECT was forwarded");
    // h2c: Upgrade and HTTP2-Settings do not go up, and the request is served as HTTP/1.1.
    let mut c = proxy.connect();
    c.send(
        b"GET /headers HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    let seen = r.text().to_ascii_lowercase();
    assert!(!seen.contains("upgrade"), "{seen}");
    assert!(!seen.contains("http2-settings"), "{seen}");
    // Even when Connection does not name it.
    c.send(b"GET /headers HTTP/1.1\r\nHost: t\r\nHTTP2-Settings: AAMAAABk\r\n\r\n");
    let r = c.read_response(false);
    assert!(
        !r.text().to_ascii_lowercase().contains("http2-settings"),
        "{}",
        r.text()
    );
    // The connection is still plain HTTP/1.1.
    assert_eq!(c.get("/").status, 200);
    proxy.assert_healthy();
}

/// A one-connection-at-a-time origin on std threads: `handler` gets the connection.
fn raw_origin(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let h = handler.clone();
            std::thread::spawn(move || h(s));
        }
    });
    addr
}

/// Reads from `s` until `buf` holds a complete head (`\r\n\r\n`); false at EOF.
fn read_head_into(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut b = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    true
}

#[test]
fn a_101_to_a_request_that_did_not_ask_to_upgrade_is_refused() {
    let addr = raw_origin(|mut s| {
        let mut buf = Vec::new();
        if read_head_into(&mut s, &mut buf) {
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
            );
            let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        }
    });
    let be = format!("o={addr}");
    let mut proxy = Proxy::start(&["--backend", &be]);
    let mut c = proxy.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 502, "a switch nobody asked for must not pass");
    proxy.assert_healthy();
}

/// A naive origin: `POST /early` is answered as soon as its head is in, and its body is
/// then parsed as the next request on the connection (servers like this exist). Every
/// other request is answered with its own target as the body, so a client can tell
/// whose answer it got.
fn early_answering_origin() -> SocketAddr {
    raw_origin(|mut s| {
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            if !read_head_into(&mut s, &mut buf) {
                return;
            }
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let target = head.split(' ').nth(1).unwrap_or("").to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            buf.drain(..end + 4);
            if target == "/early" {
                // The body stays in `buf`: it will be read as the next request.
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
                    .is_err()
                {
                    return;
                }
                continue;
            }
            while buf.len() < len {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            buf.drain(..len);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}",
                target.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

fn no_answer_goes_to_the_wrong_client(reuse: &str) {
    let addr = early_answering_origin();
    let be = format!("o={addr}");
    let mut proxy = Proxy::start(&["--backend", &be, "--reuse", reuse]);
    let smuggled = b"GET /ok?SMUGGLED-BY-A HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut wrong = Vec::new();
    for round in 0..5 {
        let mut a = proxy.connect();
        let r = a.request("POST", "/early", &[], Some(smuggled));
        assert_eq!((r.status, r.text().as_str()), (200, "early"));
        let mut b = proxy.connect();
        for i in 0..20 {
            let t = format!("/ok?B-{round}-{i}");
            let r = b.get(&t);
            if r.status != 200 || r.text() != t {
                wrong.push(format!("{t} got {} {:?}", r.status, r.text()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "--reuse {reuse}: answers for someone else: {wrong:?}"
    );
    proxy.assert_healthy();
}

#[test]
fn no_answer_goes_to_the_wrong_client_reuse_always() {
    no_answer_goes_to_the_wrong_client("always");
}

#[test]
fn no_answer_goes_to_the_wrong_client_reuse_safe() {
    no_answer_goes_to_the_wrong_client("safe");
}

#[test]
fn bytes_past_the_end_of_a_response_are_a_desync() {
    let conns = Arc::new(AtomicU64::new(0));
    let counted = conns.clone();
    let addr = raw_origin(move |mut s| {
        counted.fetch_add(1, Ordering::SeqCst);
        let mut buf = Vec::new();
        while read_head_into(&mut s, &mut buf) {
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
            buf.drain(..end + 4);
            // One write: the answer, then an answer to a request nobody sent.
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstray!",
            );
        }
    });
    let be = format!("o={addr}");
    let mut proxy = Proxy::start(&["--backend", &be, "--reuse", "always"]);
    let mut c = proxy.connect();
    for _ in 0..3 {
        let r = c.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "ringway_backend_desync_total{shard=\"all\"}"),
        3,
        "{m}"
    );
    assert_eq!(
        conns.load(Ordering::SeqCst),
        3,
        "a desynchronised connection was reused"
    );
    proxy.assert_healthy();
}

#[test]
fn interim_responses_forever_get_504_within_the_backend_timeout() {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let addr = raw_origin(move |mut s| {
        let mut buf = Vec::new();
        if read_head_into(&mut s, &mut buf) {
            // A 100 Continue every 100 ms, never a final status.
            while !stopped.load(Ordering::SeqCst) {
                if s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let be = format!("o={addr}");
    let mut proxy = Proxy::start(&["--backend", &be, "--timeout-backend", "1s"]);
    let mut c = proxy.connect();
    let t0 = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.try_read_response(false);
    let took = t0.elapsed();
    stop.store(true, Ordering::SeqCst);
    let r = r.expect("an answer, not a hang");
    assert_eq!(r.status, 504);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "ringway_backend_timeouts_total{shard=\"all\"}"),
        1
    );
    proxy.assert_healthy();
}

#[test]
fn a_trickled_body_is_cut_at_the_body_deadline() {
    let o = origin();
    let be = format!("o={}", o.addr());
    let mut proxy = Proxy::start(&["--backend", &be, "--timeout-client-body", "1s"]);
    for (framing, small) in [
        ("Content-Length: 100", true),
        ("Transfer-Encoding: chunked", false),
    ] {
        let mut c = proxy.connect();
        // `/` is answered once the whole body is in, so nothing can come before the cut.
        c.send(format!("POST / HTTP/1.1\r\nHost: t\r\n{framing}\r\n\r\n").as_bytes());
        let t0 = Instant::now();
        // One byte every 200 ms (each read is well within --timeout-client-idle).
        let mut got = None;
        for _ in 0..100 {
            if c.stream
                .write_all(if small { b"x" } else { b"1\r\nx\r\n" })
                .is_err()
            {
                break;
            }
            c.stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut b = [0u8; 1024];
            match c.stream.read(&mut b) {
                Ok(n) if n > 0 => {
                    got = Some(String::from_utf8_lossy(&b[..n]).into_owned());
                    break;
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
        let took = t0.elapsed();
        let got = got.unwrap_or_default();
        assert!(
            got.starts_with("HTTP/1.1 408"),
            "{framing}: {got:?} after {took:?}"
        );
        assert!(got.contains("Connection: close"), "{got:?}");
        assert!(
            took >= Duration::from_millis(900),
            "{framing}: cut early, {took:?}"
        );
        assert!(took < Duration::from_secs(8), "{framing}: took {took:?}");
    }
    let m = proxy.metrics();
    assert_eq!(
        metric(&m, "ringway_body_timeout_total{shard=\"all\"}"),
        2,
        "{m}"
    );
    proxy.assert_healthy();
}

#[test]
fn http10_without_host_goes_up_with_a_host_and_fragments_are_refused() {
    let o = origin();
    let be = format!("o={}", o.addr());
    let mut proxy = Proxy::start(&["--backend", &be]);
    let mut c = proxy.connect();
    c.send(b"GET /headers HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    let seen = r.text();
    assert!(seen.starts_with("GET /headers HTTP/1.1\r\n"), "{seen}");
    assert!(
        seen.contains("\r\nHost: \r\n"),
        "HTTP/1.1 requires a Host: {seen}"
    );
    let mut c = proxy.connect();
    c.send(b"GET /a#frag HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).status, 400);
    assert_eq!(
        o.stats().requests_total,
        1,
        "the fragment request was forwarded"
    );
    proxy.assert_healthy();
}

/// Issue 14, item 6 (second half): at the fd limit `/metrics` still answers. Under
/// `prlimit --nofile=256`, 600 idle clients take every descriptor the two shards may give
/// to connections; the ones past that get a `503` (counted), never a hang; the admin
/// listener, which draws on the reserve the shards never touch, answers `/metrics`; and
/// once the clients leave, requests are served again.
#[test]
fn at_the_fd_limit_metrics_still_answer_and_extra_clients_get_503() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start_with_nofile(256, &["--backend", &backend, "--shards", "2"]);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..600 {
        let Ok(s) = std::net::TcpStream::connect(proxy.addr) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut peek = [0u8; 12];
        // A refused client gets `HTTP/1.1 503` at once; a served one hears nothing yet.
        match s.peek(&mut peek) {
            Ok(n) if n > 0 => {
                assert!(peek[..n].starts_with(b"HTTP/1.1 503"), "{:?}", &peek[..n]);
                refused += 1;
            }
            _ => held.push(s),
        }
    }
    assert!(refused > 0, "no client was refused; {} held", held.len());
    assert!(
        held.len() < 256,
        "{} connections held under a 256 fd limit",
        held.len()
    );
    // The admin listener answers at the limit.
    let m = proxy.metrics();
    assert!(metric(&m, "ringway_refused_capacity_total{shard=\"all\"}") >= refused);
    assert!(metric(&m, "ringway_open_fds") <= 256);
    // With the idle clients gone, requests are proxied again.
    drop(held);
    let served = wait_for(Duration::from_secs(10), "service back", || {
        let mut c = Conn::try_connect(proxy.addr).ok()?;
        let r = c.get("/");
        (r.status == 200).then_some(r.status)
    });
    assert_eq!(served, 200);
    proxy.assert_healthy();
}

/// Issue 14, item 8: a chunk extension that does not follow RFC 9112's grammar is not
/// forwarded verbatim for the origin to read another way: the request gets `400`, and a
/// well-formed extension still goes through.
#[test]
fn chunk_extensions_with_bad_grammar_are_refused() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    for body in [
        &b"5;a b\r\nhello\r\n0\r\n\r\n"[..],
        b"5;a=\"open\r\nhello\r\n0\r\n\r\n",
        b"5;=x\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut c = Conn::connect(proxy.addr);
        // The origin answers only after 300 ms, so the answer a client sees is ringway's
        // verdict on the body (all of it is sent at once), not an early origin answer.
        let mut req =
            b"POST /delay/300 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        c.send(&req);
        let r = c.read_response(false);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(body));
        // The head may have gone before the body was scanned (the origin counts it when
        // it answers, 300 ms later, so a count here would race); the client's connection
        // is not kept after a body that cannot be trusted.
        assert!(r.says_close() || c.closed_within(Duration::from_secs(2)));
    }
    let mut c = Conn::connect(proxy.addr);
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b c\";d\r\nhello\r\n0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    proxy.assert_healthy();
}
