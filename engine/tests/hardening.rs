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
