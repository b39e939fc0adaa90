//! Every bad-input case of the foundation issue, each with its status; in each case a
//! bystander keep-alive client on another connection is unaffected, and the proxy is
//! still alive at the end without having panicked.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The bystander's Host: routed to the live origin in every fixture.
const LIVE: &[(&str, &str)] = &[("Host", "live.test")];

/// A proxy in front of one origin, with a bystander connection that has already made one
/// request (so it is a live keep-alive connection when the bad input arrives).
struct Fixture {
    origin: Origin,
    proxy: Proxy,
    bystander: Conn,
}

impl Fixture {
    fn new(extra: &[&str]) -> Fixture {
        let origin = origin();
        let backend = format!("live={}", origin.addr());
        let mut args = vec!["--backend", backend.as_str()];
        args.extend_from_slice(extra);
        let proxy = Proxy::start(&args);
        let mut bystander = proxy.connect();
        let r = bystander.request("GET", "/size/100", LIVE, None);
        assert_eq!(r.status, 200);
        Fixture {
            origin,
            proxy,
            bystander,
        }
    }

    /// The bystander's connection still serves requests, and the proxy is healthy.
    fn check_unaffected(&mut self) {
        for n in [0usize, 1000, 70_000] {
            let r = self
                .bystander
                .request("GET", &format!("/size/{n}"), LIVE, None);
            assert_eq!(r.status, 200, "bystander after bad input");
            assert_eq!(r.body, pattern(n), "bystander after bad input");
        }
        let r = self
            .bystander
            .request("POST", "/echo", LIVE, Some(b"still here"));
        assert_eq!(r.body, b"still here");
        let mut fresh = self.proxy.connect();
        let r = fresh.request("GET", "/", LIVE, None);
        assert_eq!(r.status, 200, "a new client after bad input");
        self.proxy.assert_healthy();
    }

    /// Sends `raw` on a new connection; returns the response and whether the proxy then
    /// closed the connection.
    fn send_bad(&self, raw: &[u8]) -> (Response, bool) {
        let mut c = self.proxy.connect();
        c.send(raw);
        let r = c
            .try_read_response(false)
            .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)));
        let closed = r.says_close() && c.closed_within(Duration::from_secs(5));
        (r, closed)
    }

    fn expect_refused(&self, raw: &[u8], status: u16) {
        let requests = self.origin.stats().requests_total;
        let (r, closed) = self.send_bad(raw);
        let shown = String::from_utf8_lossy(raw);
        assert_eq!(r.status, status, "{shown:?} -> {r:?}");
        assert!(closed, "{shown:?}: connection not closed after {status}");
        assert_eq!(
            self.origin.stats().requests_total,
            requests,
            "{shown:?} was forwarded to the origin"
        );
    }
}

#[test]
fn malformed_request_line_is_400() {
    let mut f = Fixture::new(&[]);
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTX/1.1\r\nHost: t\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        f.expect_refused(raw, 400);
    }
    let m = f.proxy.metrics();
    assert_eq!(metric(&m, r#"ringway_bad_request_total{shard="all"}"#), 6);
    f.check_unaffected();
}

#[test]
fn bad_header_is_400() {
    let mut f = Fixture::new(&[]);
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: t\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\n: empty-name\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
    ] {
        f.expect_refused(raw, 400);
    }
    f.check_unaffected();
}

#[test]
fn malformed_host_or_authority_is_400() {
    // RFC 9110 §7.2 / RFC 9112 §3.2: an invalid Host field value or request-target
    // authority gets 400; it must not be forwarded (nor used for routing).
    let mut f = Fixture::new(&[]);
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a]b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h:1:2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h:port\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET http://[::1]x/ HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET http://h:1:2/ HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        f.expect_refused(raw, 400);
    }
    // Well-formed ones pass.
    for host in ["[::1]:8080", "[::1]", "h.test:8080", "h.test"] {
        let r = f.bystander.request("GET", "/", &[("Host", host)], None);
        assert_eq!(r.status, 200, "Host: {host}");
    }
    f.check_unaffected();
}

#[test]
fn head_over_max_head_is_431() {
    let mut f = Fixture::new(&["--max-head", "4KiB"]);
    let big = "x".repeat(8 << 10);
    let raw = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    f.expect_refused(raw.as_bytes(), 431);
    // Many small fields adding up past the limit.
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..200 {
        raw.push_str(&format!("X-F{i}: 0123456789abcdef\r\n"));
    }
    raw.push_str("\r\n");
    f.expect_refused(raw.as_bytes(), 431);
    // Just under the limit passes.
    let ok = "y".repeat(3 << 10);
    let r = f.bystander.request(
        "GET",
        "/",
        &[("Host", "live.test"), ("X-Fits", ok.as_str())],
        None,
    );
    assert_eq!(r.status, 200);
    let m = f.proxy.metrics();
    assert_eq!(
        metric(&m, r#"ringway_head_too_large_total{shard="all"}"#),
        2
    );
    f.check_unaffected();
}

#[test]
fn content_length_with_transfer_encoding_is_400_and_closes() {
    let mut f = Fixture::new(&[]);
    f.expect_refused(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    f.expect_refused(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    );
    // A transfer coding the proxy cannot frame.
    f.expect_refused(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nxxxxx",
        400,
    );
    f.check_unaffected();
}

#[test]
fn differing_content_lengths_are_400_and_close() {
    let mut f = Fixture::new(&[]);
    f.expect_refused(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    );
    f.expect_refused(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
        400,
    );
    f.expect_refused(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\nhello",
        400,
    );
    f.expect_refused(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x10\r\n\r\nhello",
        400,
    );
    f.check_unaffected();
}

#[test]
fn bad_chunk_syntax_is_400_and_closes() {
    let mut f = Fixture::new(&[]);
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"-1\r\nx\r\n0\r\n\r\n",
        b"fffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    ] {
        let mut raw =
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(body);
        let (r, closed) = f.send_bad(&raw);
        let shown = String::from_utf8_lossy(body);
        assert_eq!(r.status, 400, "{shown:?} -> {r:?}");
        assert!(closed, "{shown:?}: connection not closed after 400");
    }
    f.check_unaffected();
}

#[test]
fn slow_client_head_is_408() {
    let mut f = Fixture::new(&["--timeout-client-head", "300ms"]);
    let mut c = f.proxy.connect();
    let started = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHo");
    let r = c.read_response(false);
    let waited = started.elapsed();
    assert_eq!(r.status, 408);
    assert!(
        waited >= Duration::from_millis(250),
        "408 after only {waited:?}"
    );
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "not closed after 408"
    );
    // The bystander idled on a complete head boundary: not a slow head, still served.
    let m = f.proxy.metrics();
    assert_eq!(metric(&m, r#"ringway_head_timeout_total{shard="all"}"#), 1);
    f.check_unaffected();
}

#[test]
fn backend_refusing_is_502() {
    let port = closed_port();
    let dead = format!("dead=127.0.0.1:{port}");
    let mut f = Fixture::new(&["--backend", &dead, "--route", "dead.test=dead"]);
    let mut c = f.proxy.connect();
    for _ in 0..2 {
        let r = c.request("GET", "/", &[("Host", "dead.test")], None);
        assert_eq!(r.status, 502);
    }
    // The same client connection can still reach a live backend.
    let r = c.request("GET", "/size/8", LIVE, None);
    assert_eq!((r.status, r.body), (200, pattern(8)));
    let m = f.proxy.metrics();
    assert!(metric(&m, r#"ringway_backend_connect_errors_total{shard="all"}"#) >= 2);
    f.check_unaffected();
}

#[test]
fn backend_too_slow_is_504_and_others_unaffected_meanwhile() {
    let mut f = Fixture::new(&["--timeout-backend", "300ms"]);
    let addr = f.proxy.addr;
    let slow = std::thread::spawn(move || {
        let mut c = Conn::connect(addr);
        let started = Instant::now();
        let r = c.get("/delay/2000");
        (r, started.elapsed())
    });
    // While the slow request waits, the bystander is served.
    wait_until(
        Duration::from_secs(10),
        "the slow request to reach the origin",
        || f.origin.stats().requests_total >= 2,
    );
    let r = f.bystander.request("GET", "/size/10", LIVE, None);
    assert_eq!(r.body, pattern(10));
    let (r, took) = slow.join().unwrap();
    assert_eq!(r.status, 504);
    assert!(took < Duration::from_millis(1900), "504 took {took:?}");
    f.check_unaffected();
}

#[test]
fn backend_reset_is_502() {
    let mut f = Fixture::new(&[]);
    let mut c = f.proxy.connect();
    let r = c.get("/reset");
    assert_eq!(r.status, 502);
    // Fresh client too.
    let mut c2 = f.proxy.connect();
    assert_eq!(c2.get("/reset").status, 502);
    f.check_unaffected();
}

#[test]
fn backend_garbage_is_502() {
    let mut f = Fixture::new(&[]);
    let mut c = f.proxy.connect();
    let r = c.get("/garbage");
    assert_eq!(r.status, 502);
    let mut c2 = f.proxy.connect();
    assert_eq!(c2.get("/garbage").status, 502);
    f.check_unaffected();
}

#[test]
fn no_route_is_404() {
    let mut f = Fixture::new(&["--route", "live.test=live", "--default-backend", "none"]);
    let mut c = f.proxy.connect();
    let r = c.get("/");
    assert_eq!(r.status, 404);
    assert!(!r.says_close(), "404 closed a keep-alive connection");
    let r = c.request("GET", "/", &[("Host", "live.test")], None);
    assert_eq!(r.status, 200);
    let r = c.request(
        "POST",
        "/echo",
        &[("Host", "elsewhere.test")],
        Some(b"body"),
    );
    assert_eq!(r.status, 404);
    // After a 404 for a request with a body, either the connection goes on or it closes
    // cleanly; a fresh connection is served either way.
    let mut c3 = f.proxy.connect();
    let r = c3.request("GET", "/size/4", LIVE, None);
    assert_eq!(r.body, pattern(4));
    let m = f.proxy.metrics();
    assert_eq!(metric(&m, r#"ringway_no_route_total{shard="all"}"#), 2);
    f.check_unaffected();
}

#[test]
fn unsupported_version_and_junk_do_not_panic() {
    let mut f = Fixture::new(&[]);
    for raw in [
        &b"GET / HTTP/2.0\r\nHost: t\r\n\r\n"[..],
        b"\r\n\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut c = f.proxy.connect();
        c.send(raw);
        c.shutdown_write();
        if let Ok(r) = c.try_read_response(false) {
            assert!(
                (400..500).contains(&r.status) || r.status == 505,
                "{:?} -> {}",
                String::from_utf8_lossy(raw),
                r.status
            );
        }
    }
    f.check_unaffected();
}

/// Two pipelined requests to a backend that refuses connections: each gets its own 502
/// and the connection stays usable. (The answer path once consumed the request head a
/// second time, eating the next pipelined request.)
#[test]
fn pipelined_requests_to_a_dead_backend_each_get_502() {
    let dead = format!("127.0.0.1:{}", closed_port());
    let proxy = Proxy::start(&["--backend", &dead]);
    let mut c = proxy.connect();
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    let a = c.read_response(false);
    let b = c.read_response(false);
    assert_eq!((a.status, b.status), (502, 502));
    assert!(!a.says_close() && !b.says_close());
    let third = c.get("/c");
    assert_eq!(third.status, 502);
}
