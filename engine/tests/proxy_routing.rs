//! Routing by `Host` and path prefix to two origins, the default backend and
//! `--default-backend none`, and round-robin across a backend's servers.

mod common;

use common::*;

/// Which origin served one request: sends it on `c` and compares the origins' counters.
fn served_by(c: &mut Conn, a: &Origin, b: &Origin, host: &str, path: &str) -> char {
    let (ra, rb) = (a.stats().requests_total, b.stats().requests_total);
    let r = c.request("GET", path, &[("Host", host)], None);
    assert_eq!(r.status, 200, "Host: {host}, {path}");
    let (da, db) = (a.stats().requests_total - ra, b.stats().requests_total - rb);
    match (da, db) {
        (1, 0) => 'a',
        (0, 1) => 'b',
        _ => panic!("Host: {host}, {path}: origin a counted {da}, origin b {db}"),
    }
}

#[test]
fn routes_by_host_and_path_prefix() {
    let (a, b) = (origin(), origin());
    let (aa, ba) = (format!("a={}", a.addr()), format!("b={}", b.addr()));
    let mut proxy = Proxy::start(&[
        "--backend",
        &aa,
        "--backend",
        &ba,
        "--route",
        "b.test=b",
        "--route",
        "a.test/static=b",
        "--route",
        "a.test/static/a-again=a",
    ]);
    let mut c = proxy.connect();
    let cases = [
        ("a.test", "/", 'a'),
        ("b.test", "/", 'b'),
        ("b.test", "/anything/else", 'b'),
        ("B.Test", "/", 'b'),
        ("b.test:8080", "/", 'b'),
        ("a.test", "/static/logo.png", 'b'),
        ("a.test", "/static/a-again/x", 'a'),
        ("a.test", "/dynamic", 'a'),
        ("c.test", "/static/logo.png", 'a'),
        ("unrouted.example", "/", 'a'),
    ];
    for (host, path, want) in cases {
        assert_eq!(
            served_by(&mut c, &a, &b, host, path),
            want,
            "Host: {host}, {path}"
        );
    }
    // The right bytes come back through each route, on the same client connection.
    let r = c.request("GET", "/size/321", &[("Host", "b.test")], None);
    assert_eq!(r.body, pattern(321));
    let r = c.request("GET", "/static/x", &[("Host", "a.test")], None);
    assert_eq!(r.body, b"hello, world\n");
    proxy.assert_healthy();
}

#[test]
fn wildcard_host_route_and_named_default() {
    let (a, b) = (origin(), origin());
    let (aa, ba) = (format!("a={}", a.addr()), format!("b={}", b.addr()));
    let mut proxy = Proxy::start(&[
        "--backend",
        &aa,
        "--backend",
        &ba,
        "--route",
        "*/api=a",
        "--default-backend",
        "b",
    ]);
    let mut c = proxy.connect();
    assert_eq!(served_by(&mut c, &a, &b, "x.test", "/api/v1"), 'a');
    assert_eq!(served_by(&mut c, &a, &b, "y.test", "/api"), 'a');
    assert_eq!(served_by(&mut c, &a, &b, "x.test", "/"), 'b');
    assert_eq!(served_by(&mut c, &a, &b, "x.test", "/ap"), 'b');
    proxy.assert_healthy();
}

#[test]
fn default_backend_none_gives_404_and_the_connection_keeps_working() {
    let a = origin();
    let aa = format!("a={}", a.addr());
    let mut proxy = Proxy::start(&[
        "--backend",
        &aa,
        "--route",
        "a.test=a",
        "--default-backend",
        "none",
    ]);
    let mut c = proxy.connect();
    let r = c.request("GET", "/", &[("Host", "nowhere.test")], None);
    assert_eq!(r.status, 404);
    assert!(
        !r.says_close(),
        "404 for no route closed a keep-alive connection"
    );
    let r = c.request("GET", "/size/12", &[("Host", "a.test")], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, pattern(12));
    let r = c.request("GET", "/", &[("Host", "other.test")], None);
    assert_eq!(r.status, 404);
    let r = c.request("GET", "/", &[("Host", "a.test")], None);
    assert_eq!(r.status, 200);
    assert_eq!(
        a.stats().requests_total,
        2,
        "an unrouted request reached the origin"
    );

    let m = proxy.metrics();
    assert_eq!(metric(&m, r#"ringway_no_route_total{shard="all"}"#), 2);
    assert_eq!(
        metric(&m, r#"ringway_responses_total{shard="all",code="4xx"}"#),
        2
    );
    assert_eq!(
        metric(&m, r#"ringway_responses_total{shard="all",code="2xx"}"#),
        2
    );
    proxy.assert_healthy();
}

#[test]
fn round_robin_across_a_backends_servers() {
    let (a, b) = (origin(), origin());
    let spec = format!("pair={},{}", a.addr(), b.addr());
    let mut proxy = Proxy::start(&["--backend", &spec]);
    let mut c = proxy.connect();
    for _ in 0..10 {
        assert_eq!(c.get("/").status, 200);
    }
    let (na, nb) = (a.stats().requests_total, b.stats().requests_total);
    assert_eq!(na + nb, 10);
    assert!(
        na >= 4 && nb >= 4,
        "round-robin split 10 requests as {na} and {nb}"
    );
    proxy.assert_healthy();
}
