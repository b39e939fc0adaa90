//! HTTP/2 backends (`h2c://`, ringway-origin in its h2c mode) and traffic management:
//! retries to another server — a stream refused by every connection of a server
//! (`REFUSED_STREAM`, never processed) is sent to another server whatever its method, a
//! server that cannot be reached is skipped by the backend's `retries` — and the
//! per-server figures (requests by connection kind, first-byte times) for HTTP/2 servers.

mod common;

use common::*;
use ringway_bench::origin::Protocol;

fn h2c_origin(refuse: bool) -> Origin {
    origin_with(OriginConfig {
        protocol: Protocol::H2c,
        refuse_streams: refuse,
        ..OriginConfig::default()
    })
}

fn write_config(tag: &str, text: &str) -> TempFile {
    let f = TempFile(temp_path(tag));
    std::fs::write(&f.0, text).expect("config file");
    f
}

/// One server refuses every stream (RST_STREAM REFUSED_STREAM): the streams it refused
/// were not processed, so they go to the other server — GETs and POSTs alike, with no
/// `retries` configured — and no client sees an error.
#[test]
fn refused_streams_go_to_another_server() {
    let (refuser, good) = (h2c_origin(true), h2c_origin(false));
    let f = write_config(
        "h2-refused.toml",
        &format!(
            "[backends.h]\nservers = [\"h2c://{}\", \"h2c://{}\"]\noutlier-failures = 0\n",
            refuser.addr(),
            good.addr()
        ),
    );
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "1"]);
    let mut conn = p.connect();
    for i in 0..20 {
        let r = if i % 2 == 0 {
            conn.request("GET", "/", &[], None)
        } else {
            conn.request("POST", "/echo", &[], Some(b"hello"))
        };
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(
        good.stats().requests_total,
        20,
        "every request served by the good one"
    );
    assert!(
        refuser.stats().requests_total >= 10,
        "the refusing server was tried ({} streams)",
        refuser.stats().requests_total
    );
    assert!(metric(&p.metrics(), "ringway_retries_total{shard=\"all\"}") >= 10);
}

/// A server that cannot be reached (nothing listens) with `retries = 1` on
/// connect-failure: the requests go to the other HTTP/2 server, none fails.
#[test]
fn an_unreachable_h2_server_is_retried_elsewhere() {
    let good = h2c_origin(false);
    let dead = format!("127.0.0.1:{}", closed_port());
    let f = write_config(
        "h2-dead.toml",
        &format!(
            "[backends.h]\nservers = [\"h2c://{dead}\", \"h2c://{}\"]\nretries = 1\nretry-on = [\"connect-failure\"]\n",
            good.addr()
        ),
    );
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "1"]);
    let mut conn = p.connect();
    for i in 0..10 {
        let r = conn.request("GET", "/", &[], None);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(good.stats().requests_total, 10);
}

/// Without `retries`, the same unreachable server costs the client a 502 (the rule is
/// the backend's): the test above can fail.
#[test]
fn without_retries_an_unreachable_h2_server_is_a_502() {
    let good = h2c_origin(false);
    let dead = format!("127.0.0.1:{}", closed_port());
    let f = write_config(
        "h2-dead-noretry.toml",
        &format!(
            "[backends.h]\nservers = [\"h2c://{dead}\", \"h2c://{}\"]\n",
            good.addr()
        ),
    );
    let p = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "1"]);
    let mut conn = p.connect();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = conn.request("GET", "/", &[], None);
        statuses.push(r.status);
        if r.says_close() {
            conn = p.connect();
        }
    }
    assert!(statuses.contains(&502), "{statuses:?}");
}

/// Requests to an HTTP/2 server are counted per server by connection kind (one new
/// connection, then streams on it: reused) and their first-byte times are recorded, as
/// for HTTP/1.1 servers.
#[test]
fn h2_servers_have_request_counts_and_first_byte_times() {
    let o = h2c_origin(false);
    let server = o.addr().to_string();
    let backend = format!("h2c://{server}");
    let p = Proxy::start(&["--backend", &backend, "--shards", "1"]);
    let mut conn = p.connect();
    for _ in 0..10 {
        assert_eq!(conn.get("/").status, 200);
    }
    let m = p.metrics();
    let by = |kind: &str| {
        sum_metric(
            &m,
            "ringway_server_requests_total",
            &[("server", &server), ("conn", kind)],
        )
    };
    assert_eq!(by("new"), 1.0, "{m}");
    assert_eq!(by("reused"), 9.0, "{m}");
    assert_eq!(
        sum_metric(
            &m,
            "ringway_server_first_byte_seconds_count",
            &[("server", &server)]
        ),
        10.0,
        "{m}"
    );
    assert_eq!(
        sum_metric(
            &m,
            "ringway_server_connect_duration_seconds_count",
            &[("server", &server)]
        ),
        1.0
    );
    assert_eq!(o.stats().connections_total, 1);
}
