//! Basic proxying through the `ringway` binary: GET/HEAD/POST with curl and a raw client,
//! the forwarding headers added and hop-by-hop headers removed, bodiless responses framed
//! correctly on a kept-alive connection, and `Expect: 100-continue`.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn curl_get_head_post() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);

    let body = curl_ok(&[&proxy.url("/")]);
    assert_eq!(body, b"hello, world\n");

    let body = curl_ok(&[&proxy.url("/size/5000")]);
    assert_eq!(body, pattern(5000));

    // HEAD: the head of the GET, no body.
    let out = curl_ok(&["-I", &proxy.url("/size/5000")]);
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-length: 5000"), "{text}");
    assert!(text.contains("via: 1.1 ringway"), "{text}");

    let body = curl_ok(&["--data-binary", "posted bytes", &proxy.url("/echo")]);
    assert_eq!(body, b"posted bytes");

    // A status from the origin comes through as is.
    let code = curl_ok(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &proxy.url("/status/418"),
    ]);
    assert_eq!(code, b"418");

    assert_eq!(origin.stats().requests_total, 5);
    proxy.assert_healthy();
}

#[test]
fn raw_client_get_head_post_on_one_connection() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();

    let r = c.get("/size/1000");
    assert_eq!(r.status, 200);
    assert_eq!(r.num("content-length"), 1000);
    assert_eq!(r.body, pattern(1000));
    assert_eq!(r.header("via"), Some("1.1 ringway"));

    let r = c.request("HEAD", "/size/1000", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.num("content-length"), 1000);
    assert!(r.body.is_empty());

    let payload = b"the quick brown fox".repeat(100);
    let r = c.request("POST", "/echo", &[], Some(&payload));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, payload);

    let r = c.request("PUT", "/echo", &[], Some(b"put"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"put");

    // All four on one client connection, and nothing stray after them.
    assert!(c.unread_bytes(Duration::from_millis(50)).is_empty());
    let m = proxy.metrics();
    assert_eq!(metric(&m, r#"ringway_requests_total{shard="all"}"#), 4);
    assert_eq!(metric(&m, r#"ringway_accepted_total{shard="all"}"#), 1);
    proxy.assert_healthy();
}

#[test]
fn forwarding_headers_added_and_hop_by_hop_removed() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();
    let r = c.request(
        "GET",
        "/headers",
        &[
            ("Connection", "keep-alive, Foo"),
            ("Foo", "must-go"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Forwarded-For", "10.9.9.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Kept", "yes"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    let seen = r.text();
    let fields: Vec<(String, String)> = seen
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let get = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert!(seen.starts_with("GET /headers HTTP/1.1\r\n"), "{seen}");
    for gone in ["foo", "keep-alive", "te", "upgrade", "proxy-connection"] {
        assert!(get(gone).is_empty(), "{gone} forwarded:\n{seen}");
    }
    // `Connection` may be absent or name only what the proxy itself wants.
    for v in get("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("foo"),
            "Connection: {v} forwarded:\n{seen}"
        );
    }
    assert_eq!(get("x-kept"), ["yes"], "{seen}");
    assert_eq!(get("host"), ["test"], "{seen}");
    let xff = get("x-forwarded-for").join(", ");
    assert_eq!(xff, "10.9.9.9, 127.0.0.1", "{seen}");
    assert_eq!(get("x-forwarded-proto"), ["http"], "{seen}");
    assert_eq!(get("via"), ["1.1 ringway"], "{seen}");

    // Without any client-sent forwarding fields.
    let r = c.get("/headers");
    let seen = r.text().to_ascii_lowercase();
    assert!(
        seen.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\r\nx-forwarded-proto: http\r\n"), "{seen}");
    assert!(seen.contains("\r\nvia: 1.1 ringway\r\n"), "{seen}");
    proxy.assert_healthy();
}

#[test]
fn bodiless_responses_keep_the_connection_usable() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();

    for code in [204u16, 304] {
        let r = c.get(&format!("/status/{code}"));
        assert_eq!(r.status, code);
        assert!(r.body.is_empty());
        assert!(r.header("transfer-encoding").is_none(), "{:?}", r.headers);
        // The next request on the same connection gets its own, intact response.
        let r = c.get("/size/10");
        assert_eq!(r.status, 200, "after {code}");
        assert_eq!(r.body, pattern(10), "after {code}");
    }

    // HEAD of a length-framed and of a chunked response: heads only.
    let r = c.request("HEAD", "/size/100000", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.num("content-length"), 100000);
    let r = c.get("/size/7");
    assert_eq!(r.body, pattern(7), "after HEAD /size");

    let r = c.request("HEAD", "/chunked/100000", &[], None);
    assert_eq!(r.status, 200);
    let r = c.get("/size/9");
    assert_eq!(r.body, pattern(9), "after HEAD /chunked");

    // HEAD, 204 and 304 pipelined: still answered one by one.
    c.send(
        b"HEAD /size/50 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /status/304 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /size/11 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let r = c.read_response(true);
    assert_eq!((r.status, r.num("content-length")), (200, 50));
    assert_eq!(c.read_response(false).status, 204);
    assert_eq!(c.read_response(false).status, 304);
    let r = c.read_response(false);
    assert_eq!(r.body, pattern(11));

    let stray = c.unread_bytes(Duration::from_millis(100));
    assert!(
        stray.is_empty(),
        "stray bytes: {:?}",
        String::from_utf8_lossy(&stray)
    );
    proxy.assert_healthy();
}

#[test]
fn expect_100_continue_with_curl_is_prompt() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let file = TempFile(temp_path("expect"));
    let payload = pattern(4096);
    std::fs::write(&file.0, &payload).unwrap();
    let data = format!("@{}", file.0.display());

    let started = Instant::now();
    let out = curl_ok(&[
        "-H",
        "Expect: 100-continue",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &data,
        "-w",
        "\n%{http_code}",
        &proxy.url("/echo"),
    ]);
    let elapsed = started.elapsed();
    let (body, code) = out.split_at(out.len() - 4);
    assert_eq!(code, b"\n200");
    assert_eq!(body, &payload[..]);
    // curl waits 1 s for a 100 it never gets; a prompt 100 makes this much shorter.
    assert!(
        elapsed < Duration::from_millis(900),
        "Expect: 100-continue took {elapsed:?}: no prompt 100 Continue?"
    );
    proxy.assert_healthy();
}

#[test]
fn expect_100_continue_raw_interim_before_body() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();

    // Send only the head; the 100 must come before we send the body.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c
        .read_head()
        .expect("an interim response before the body is sent");
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert!(
        r.interim.is_empty(),
        "a second 100 was relayed: {:?}",
        r.interim
    );

    // The connection still works afterwards.
    let r = c.get("/size/3");
    assert_eq!(r.body, pattern(3));
    let stray = c.unread_bytes(Duration::from_millis(50));
    assert!(
        stray.is_empty(),
        "stray bytes: {:?}",
        String::from_utf8_lossy(&stray)
    );
    proxy.assert_healthy();
}

/// A 101 answer turns both connections into one tunnel (WebSocket and friends): bytes
/// flow both ways, a half-close is passed on, and the backend connection is never pooled.
#[test]
fn switching_protocols_tunnels_and_is_never_pooled() {
    use std::io::{Read, Write};
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = backend.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = backend.accept() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            assert!(String::from_utf8_lossy(&head)
                .to_ascii_lowercase()
                .contains("upgrade: websocket"));
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            );
            // Echo in upper case until the client half-closes, then say goodbye.
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = s.write_all(&buf[..n].to_ascii_uppercase());
                    }
                }
            }
            let _ = s.write_all(b"bye");
        }
    });
    let proxy = Proxy::start(&["--backend", &addr, "--reuse", "always"]);
    let mut c = proxy.connect();
    c.send(b"GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.read_head().expect("101 head");
    assert_eq!(r.status, 101);
    c.send(b"hello");
    let mut got = c.unread_bytes(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 5 && Instant::now() < deadline {
        got.extend(c.unread_bytes(Duration::from_millis(100)));
    }
    assert_eq!(got, b"HELLO");
    c.shutdown_write();
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rest.len() < 3 && Instant::now() < deadline {
        rest.extend(c.unread_bytes(Duration::from_millis(100)));
    }
    assert_eq!(rest, b"bye", "the half-close was not passed on");
    let m = wait_for(Duration::from_secs(5), "tunnel finished", || {
        let m = proxy.metrics();
        (metric(&m, "ringway_inflight_requests{shard=\"all\"}") == 0).then_some(m)
    });
    let pooled = metric(
        &m,
        &format!("ringway_server_idle_cur{{shard=\"all\",backend=\"default\",server=\"{addr}\"}}"),
    ) + metric(
        &m,
        &format!("ringway_server_safe_cur{{shard=\"all\",backend=\"default\",server=\"{addr}\"}}"),
    );
    assert_eq!(pooled, 0, "an upgraded connection was pooled:\n{m}");
}
