//! Keep-alive on both sides: a client connection reuses one backend connection, pipelined
//! requests are answered in order, 1,000 keep-alive requests need only a few backend
//! connections, and with two shards both shards serve requests.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn keep_alive_reuses_the_backend_connection() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();

    let first = c.get("/");
    assert_eq!(first.status, 200);
    let conn = first.num("x-origin-conn");
    let req = first.num("x-origin-req");
    for i in 0..9usize {
        let r = c.get(&format!("/size/{i}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, pattern(i));
        assert_eq!(
            r.num("x-origin-conn"),
            conn,
            "request {i} went on another backend connection"
        );
        assert_eq!(r.num("x-origin-req"), req + 1 + i as u64, "request {i}");
        assert!(!r.says_close());
    }
    assert_eq!(origin.stats().connections_total, 1);

    // A second client: under `--reuse safe` (the default) its first request gets a
    // connection of its own; its later requests may take pooled ones.
    drop(c);
    let mut c2 = proxy.connect();
    let r = c2.get("/");
    assert_ne!(
        r.num("x-origin-conn"),
        conn,
        "safe reuse: a session's first request reused"
    );
    for _ in 0..5 {
        assert_eq!(c2.get("/").status, 200);
    }
    assert_eq!(origin.stats().connections_total, 2);

    // curl fetching two URLs reuses its client connection; both answered.
    let out = curl_ok(&[&proxy.url("/size/3"), &proxy.url("/size/4")]);
    assert_eq!(out, [pattern(3), pattern(4)].concat());
    let m = proxy.metrics();
    assert_eq!(metric(&m, r#"ringway_requests_total{shard="all"}"#), 18);
    proxy.assert_healthy();
}

#[test]
fn reuse_always_lets_a_new_client_take_a_pooled_connection() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--reuse", "always"]);
    let conn = proxy.connect().get("/").num("x-origin-conn");
    for i in 0..5 {
        let mut c = proxy.connect();
        let r = c.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.num("x-origin-conn"),
            conn,
            "client {i} did not reuse the idle connection"
        );
    }
    assert_eq!(origin.stats().connections_total, 1);
    proxy.assert_healthy();
}

#[test]
fn pipelined_requests_answered_in_order() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();

    // Three requests in one write: a sized GET, an echo POST, a headers echo.
    c.send(
        b"GET /size/10 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nsecond\
          GET /headers HTTP/1.1\r\nHost: t\r\nX-Marker: third\r\n\r\n",
    );
    let r1 = c.read_response(false);
    assert_eq!((r1.status, r1.body.clone()), (200, pattern(10)));
    let r2 = c.read_response(false);
    assert_eq!((r2.status, r2.text()), (200, "second".to_string()));
    let r3 = c.read_response(false);
    assert_eq!(r3.status, 200);
    let t = r3.text();
    assert!(t.starts_with("GET /headers HTTP/1.1\r\n"), "{t}");
    assert!(t.contains("X-Marker: third\r\n"), "{t}");

    // A slow request first: the fast ones behind it still wait their turn.
    c.send(
        b"GET /delay/200 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /size/3 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /chunked/5 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let r = c.read_response(false);
    assert_eq!((r.status, r.text()), (200, "hello, world\n".to_string()));
    let r = c.read_response(false);
    assert_eq!(r.body, pattern(3));
    let r = c.read_response(false);
    assert_eq!(r.body, pattern(5));
    assert!(r.chunked);

    // Many small pipelined requests in one write, answered in order.
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend_from_slice(format!("GET /size/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    c.send(&batch);
    for i in 0..50 {
        let r = c.read_response(false);
        assert_eq!(r.body, pattern(i), "pipelined response {i}");
    }
    let stray = c.unread_bytes(Duration::from_millis(50));
    assert!(stray.is_empty());
    proxy.assert_healthy();
}

#[test]
fn thousand_keep_alive_requests_few_backend_connections() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();
    for i in 0..1000 {
        let r = c.get("/");
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.body, b"hello, world\n", "request {i}");
    }
    let stats = origin.stats();
    assert_eq!(stats.requests_total, 1000);
    assert!(
        stats.connections_total <= 5,
        "1,000 keep-alive requests opened {} backend connections",
        stats.connections_total
    );
    let m = proxy.metrics();
    assert_eq!(metric(&m, r#"ringway_requests_total{shard="all"}"#), 1000);
    let server = format!(
        r#"ringway_server_connect_total{{shard="all",backend="default",server="{backend}"}}"#
    );
    assert!(
        metric(&m, &server) <= 5,
        "{server} = {}",
        metric(&m, &server)
    );
    assert_eq!(
        metric(&m, r#"ringway_responses_total{shard="all",code="2xx"}"#),
        1000
    );
    proxy.assert_healthy();
}

#[test]
fn two_shards_both_serve_requests() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--shards", "2"]);
    let key = |s: &str| format!(r#"ringway_requests_total{{shard="{s}"}}"#);

    // SO_REUSEPORT spreads connections by their addresses: new connections, each with
    // one request, until both shards have counted some (bounded by a deadline).
    let mut sent = 0u64;
    wait_until(Duration::from_secs(20), "requests on both shards", || {
        for _ in 0..8 {
            let mut c = proxy.connect();
            let r = c.get("/");
            assert_eq!(r.status, 200);
            sent += 1;
        }
        let m = proxy.metrics();
        metric(&m, &key("0")) > 0 && metric(&m, &key("1")) > 0
    });
    let m = proxy.metrics();
    let (s0, s1, all) = (
        metric(&m, &key("0")),
        metric(&m, &key("1")),
        metric(&m, &key("all")),
    );
    assert!(s0 > 0 && s1 > 0, "shard 0: {s0}, shard 1: {s1}");
    assert_eq!(s0 + s1, all);
    assert_eq!(all, sent);
    assert_eq!(origin.stats().requests_total, sent);
    proxy.assert_healthy();
}

#[test]
fn backend_closing_after_each_few_requests_is_invisible_to_the_client() {
    let origin = origin_with(OriginConfig {
        close_after: Some(3),
        ..OriginConfig::default()
    });
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();
    for i in 0..30 {
        let r = c.get(&format!("/size/{i}"));
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.body, pattern(i), "request {i}");
        assert!(r.num("x-origin-req") <= 3);
    }
    let stats = origin.stats();
    assert_eq!(stats.requests_total, 30);
    assert!(stats.connections_total >= 10, "{stats:?}");
    proxy.assert_healthy();
}

#[test]
fn backend_closing_idle_pooled_connections_is_invisible_to_the_client() {
    let origin = origin_with(OriginConfig {
        idle_close: Some(Duration::from_millis(100)),
        ..OriginConfig::default()
    });
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();
    for round in 0..3 {
        for i in 0..3 {
            let r = c.get("/size/20");
            assert_eq!(r.status, 200, "round {round}, request {i}");
            assert_eq!(r.body, pattern(20));
        }
        // The origin closes the pooled connection while it idles in the proxy's pool.
        wait_until(
            Duration::from_secs(10),
            "the origin to close idle connections",
            || origin.stats().connections_open == 0,
        );
    }
    // A POST cannot be retried: the proxy must not send it on a connection it knows closed.
    let r = c.request("POST", "/echo", &[], Some(b"after idle close"));
    assert_eq!((r.status, r.text()), (200, "after idle close".to_string()));
    assert_eq!(origin.stats().requests_total, 10);
    proxy.assert_healthy();
}

/// A client that sends one request with `Connection: close` gets three segments from the
/// proxy before it closes its side: SYN-ACK, the response (which carries the ACK of the
/// request) and the FIN. Linux ACKs a new connection's first segments at once, so
/// without `TCP_QUICKACK` off on the accepted socket the request got a bare ACK of its
/// own first, a moment before the response: four. Most of 20 connections must get three
/// (each sends its request once the proxy has had time to accept it).
#[test]
fn a_short_lived_connection_gets_no_bare_ack_before_its_response() {
    use std::io::{Read, Write};
    let origin = origin();
    let backend = origin.addr().to_string();
    let proxy = Proxy::start(&["--backend", &backend]);
    // The backend connection pooled first: its connect is not part of the wait.
    assert_eq!(proxy.connect().get("/").status, 200);
    let mut three = 0;
    for _ in 0..20 {
        let mut s = std::net::TcpStream::connect(proxy.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A request that reaches the socket before the proxy accepted it (and turned
        // quick ACKs off) is ACKed at once whatever the proxy does: give it the time to.
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("response, then EOF");
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        let segs = tcp_info(&s).tcpi_segs_in;
        assert!(segs >= 3, "SYN-ACK, response, FIN: {segs}");
        three += usize::from(segs == 3);
    }
    assert!(
        three >= 15,
        "only {three} of 20 connections got 3 segments, not 4"
    );
}
