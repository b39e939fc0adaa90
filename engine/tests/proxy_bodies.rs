//! Streamed bodies through the proxy: 64 MiB each way checked by SHA-256 (with the raw
//! client and with curl), the proxy's memory not growing with body size, and chunked
//! bodies in both directions.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

const BIG: u64 = 64 << 20;
const SMALL: u64 = 1 << 20;
/// How much more the proxy may hold after a 64 MiB transfer than after a 1 MiB one.
const RSS_SLACK: u64 = 16 << 20;

/// GET /size/N on `c`, hashing the body as it streams; returns (digest, peak proxy RSS
/// sampled every 4 MiB).
fn get_sized(c: &mut Conn, proxy: &Proxy, n: u64) -> ([u8; 32], u64) {
    c.send(format!("GET /size/{n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let mut h = Sha256::new();
    let mut got = 0u64;
    let mut next_sample = 0u64;
    let mut peak = proxy.rss();
    let r = c
        .read_response_with(false, &mut |d| {
            h.update(d);
            got += d.len() as u64;
            if got >= next_sample {
                peak = peak.max(proxy.rss());
                next_sample += 4 << 20;
            }
        })
        .expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.num("content-length"), n);
    assert_eq!(got, n);
    peak = peak.max(proxy.rss());
    (h.finalize().into(), peak)
}

/// POST N pattern bytes to /echo on `c` from a writer thread while reading the echo;
/// returns (digest of the echo, peak proxy RSS).
fn post_echo(c: &mut Conn, proxy: &Proxy, n: u64) -> ([u8; 32], u64) {
    c.send(format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").as_bytes());
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let block = pattern(251 * 256);
        let mut left = n;
        while left > 0 {
            let k = left.min(block.len() as u64) as usize;
            w.write_all(&block[..k])?;
            left -= k as u64;
        }
        std::io::Result::Ok(())
    });
    let mut h = Sha256::new();
    let mut got = 0u64;
    let mut next_sample = 0u64;
    let mut peak = proxy.rss();
    let r = c.read_response_with(false, &mut |d| {
        h.update(d);
        got += d.len() as u64;
        if got >= next_sample {
            peak = peak.max(proxy.rss());
            next_sample += 4 << 20;
        }
    });
    let wrote = writer.join().unwrap();
    let r = r.unwrap_or_else(|e| panic!("echo response of {n} bytes: {e} (writer: {wrote:?})"));
    assert_eq!(
        (r.status, got),
        (200, n),
        "POST /echo of {n} bytes: status and bytes echoed (writer: {wrote:?}); \
         an origin that answers while still reading the body needs both directions \
         relayed at once"
    );
    wrote.expect("request body written");
    peak = peak.max(proxy.rss());
    (h.finalize().into(), peak)
}

#[test]
fn get_64mib_by_digest_memory_flat() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();

    let (digest, small_peak) = get_sized(&mut c, &proxy, SMALL);
    assert_eq!(digest, pattern_sha256(SMALL));
    let (digest, big_peak) = get_sized(&mut c, &proxy, BIG);
    assert_eq!(digest, pattern_sha256(BIG), "64 MiB body differs");
    eprintln!(
        "proxy RSS peak: {} KiB (1 MiB body), {} KiB (64 MiB body)",
        small_peak >> 10,
        big_peak >> 10
    );
    assert!(
        big_peak < small_peak + RSS_SLACK,
        "proxy RSS grew with the body: {} KiB after 1 MiB, {} KiB during 64 MiB",
        small_peak >> 10,
        big_peak >> 10
    );
    // Same connection still fine after.
    assert_eq!(c.get("/size/5").body, pattern(5));
    proxy.assert_healthy();
}

#[test]
fn post_64mib_echo_by_digest_memory_flat() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--timeout-backend", "5s"]);
    let mut c = proxy.connect();

    let (digest, small_peak) = post_echo(&mut c, &proxy, SMALL);
    assert_eq!(digest, pattern_sha256(SMALL));
    let (digest, big_peak) = post_echo(&mut c, &proxy, BIG);
    assert_eq!(digest, pattern_sha256(BIG), "64 MiB echo differs");
    eprintln!(
        "proxy RSS peak: {} KiB (1 MiB body), {} KiB (64 MiB body)",
        small_peak >> 10,
        big_peak >> 10
    );
    assert!(
        big_peak < small_peak + RSS_SLACK,
        "proxy RSS grew with the body: {} KiB after 1 MiB, {} KiB during 64 MiB",
        small_peak >> 10,
        big_peak >> 10
    );
    assert_eq!(c.get("/size/5").body, pattern(5));
    proxy.assert_healthy();
}

/// POST N pattern bytes to `/` (the origin reads the whole body, then answers); returns
/// the peak proxy RSS while sending.
fn post_drained(c: &mut Conn, proxy: &Proxy, n: u64) -> u64 {
    c.send(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").as_bytes());
    let block = pattern(251 * 256);
    let mut left = n;
    let mut peak = proxy.rss();
    let mut next_sample = n;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        c.send(&block[..k]);
        left -= k as u64;
        if left <= next_sample {
            peak = peak.max(proxy.rss());
            next_sample = next_sample.saturating_sub(4 << 20);
        }
    }
    let r = c.read_response(false);
    assert_eq!(
        (r.status, r.text()),
        (200, "hello, world\n".to_string()),
        "POST of {n} bytes"
    );
    peak.max(proxy.rss())
}

#[test]
fn post_64mib_to_a_reading_origin_memory_flat() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();
    let small_peak = post_drained(&mut c, &proxy, SMALL);
    let big_peak = post_drained(&mut c, &proxy, BIG);
    eprintln!(
        "proxy RSS peak: {} KiB (1 MiB body), {} KiB (64 MiB body)",
        small_peak >> 10,
        big_peak >> 10
    );
    assert!(
        big_peak < small_peak + RSS_SLACK,
        "proxy RSS grew with the request body: {} KiB after 1 MiB, {} KiB during 64 MiB",
        small_peak >> 10,
        big_peak >> 10
    );
    assert_eq!(origin.stats().requests_total, 2);
    assert_eq!(c.get("/size/5").body, pattern(5));
    proxy.assert_healthy();
}

#[test]
fn curl_64mib_get_and_post_by_digest() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend, "--timeout-backend", "5s"]);

    let body = curl_ok(&[&proxy.url(&format!("/size/{BIG}"))]);
    assert_eq!(body.len() as u64, BIG);
    assert_eq!(
        sha256(&body),
        pattern_sha256(BIG),
        "curl GET 64 MiB differs"
    );

    let file = TempFile(temp_path("upload"));
    std::fs::write(&file.0, &body).unwrap();
    drop(body);
    let path = file.0.to_str().unwrap();
    // -T streams the file (curl does not load it into memory); -X POST makes it a POST.
    let mut echoed = curl_ok(&[
        "-X",
        "POST",
        "-T",
        path,
        "-H",
        "Expect:",
        "-w",
        "%{http_code}",
        &proxy.url("/echo"),
    ]);
    let code = echoed.split_off(echoed.len().saturating_sub(3));
    assert_eq!(
        (
            String::from_utf8_lossy(&code).into_owned(),
            echoed.len() as u64
        ),
        ("200".to_string(), BIG),
        "curl POST /echo of 64 MiB: status and bytes echoed"
    );
    assert_eq!(
        sha256(&echoed),
        pattern_sha256(BIG),
        "curl POST 64 MiB echo differs"
    );
    assert_eq!(origin.stats().requests_total, 2);
    proxy.assert_healthy();
}

#[test]
fn chunked_response_relayed() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();

    for n in [0usize, 1, 16 << 10, (1 << 20) + 7] {
        let r = c.get(&format!("/chunked/{n}"));
        assert_eq!(r.status, 200);
        assert!(
            r.chunked,
            "/chunked/{n} not chunked to an HTTP/1.1 client: {:?}",
            r.headers
        );
        assert_eq!(r.body.len(), n);
        assert_eq!(sha256(&r.body), sha256(&pattern(n)), "/chunked/{n}");
    }

    // 64 MiB chunked, by digest.
    c.send(format!("GET /chunked/{BIG} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let mut h = Sha256::new();
    let mut got = 0u64;
    let r = c
        .read_response_with(false, &mut |d| {
            h.update(d);
            got += d.len() as u64;
        })
        .expect("chunked response");
    assert!(r.chunked);
    assert_eq!(got, BIG);
    assert_eq!(<[u8; 32]>::from(h.finalize()), pattern_sha256(BIG));

    // curl decodes it too.
    let body = curl_ok(&[&proxy.url("/chunked/300000")]);
    assert_eq!(body, pattern(300000));

    // An HTTP/1.0 client cannot take chunked: it gets the plain bytes, then a close.
    let mut c10 = proxy.connect();
    c10.send(b"GET /chunked/70000 HTTP/1.0\r\nHost: t\r\n\r\n");
    let r = c10.read_response(false);
    assert_eq!(r.status, 200);
    assert!(
        !r.chunked,
        "chunked sent to an HTTP/1.0 client: {:?}",
        r.headers
    );
    assert_eq!(r.body, pattern(70000));
    proxy.assert_healthy();
}

#[test]
fn chunked_request_body_relayed() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();

    // Several chunks, an extension, a trailer; split across writes at awkward places.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    c.send(b"lo\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, world");

    // A larger chunked body, many chunks of odd sizes, then the connection is reused.
    let payload = pattern(300_001);
    let mut req = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in payload.chunks(7_777) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    c.send(&req);
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(sha256(&r.body), sha256(&payload));
    assert_eq!(c.get("/size/4").body, pattern(4));

    // curl with a chunked upload.
    let file = TempFile(temp_path("chunked-upload"));
    let payload = pattern(200_000);
    std::fs::write(&file.0, &payload).unwrap();
    let data = format!("@{}", file.0.display());
    let echoed = curl_ok(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect:",
        "--data-binary",
        &data,
        &proxy.url("/echo"),
    ]);
    assert_eq!(echoed.len(), payload.len());
    assert_eq!(sha256(&echoed), sha256(&payload));
    let stray = c.unread_bytes(Duration::from_millis(20));
    assert!(stray.is_empty());
    proxy.assert_healthy();
}

/// Minor page faults of `pid` so far (field 10 of /proc/PID/stat).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let rest = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    rest.split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .expect("minflt field")
}

/// At steady state a proxied 16 KiB response costs no page fault: the shard's allocator
/// must not hand the top of its heap back to the kernel after a response and fault it in
/// again for the next. glibc's per-thread arenas did exactly that (1.4 faults per request
/// in a release build, about a quarter of the CPU per request) until `main` set a top pad.
#[test]
fn steady_16k_responses_cost_no_page_faults() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let proxy = Proxy::start(&["--backend", &backend, "--access-log", "off"]);
    const CONNS: usize = 32;
    const WARM: usize = 100;
    const MEASURED: usize = 600;
    let run = |per_conn: usize| {
        std::thread::scope(|s| {
            for _ in 0..CONNS {
                s.spawn(|| {
                    let mut c = proxy.connect();
                    for _ in 0..per_conn {
                        let r = c.get("/size/16384");
                        assert_eq!(r.status, 200);
                        assert_eq!(r.body.len(), 16384);
                    }
                });
            }
        });
    };
    run(WARM);
    let before = minor_faults(proxy.pid());
    run(MEASURED);
    let faults = minor_faults(proxy.pid()) - before;
    let per_req = faults as f64 / (CONNS * MEASURED) as f64;
    eprintln!(
        "{faults} minor faults over {} requests: {per_req:.3} per request",
        CONNS * MEASURED
    );
    // New connections (32 here) and the buffer pool's first growth may fault a few pages;
    // the per-request thrash was more than one page each.
    assert!(
        per_req < 0.1,
        "{per_req:.3} page faults per proxied 16 KiB response"
    );
}

/// A response the backend sends in one write, larger than one read of the proxy's
/// 16 KiB buffer (head and 16 KiB or 30,000 body bytes), leaves the proxy in one write
/// too: one data segment to the client on loopback. Before, the proxy wrote what each
/// read gave it (head and the first 16 KiB, then the rest): two or three segments per
/// response, and a third more kernel CPU per 16 KiB response than HAProxy (which
/// sends one). With the receive buffer ring off (kernels without one), receives are
/// queued on the ring and bytes behind a full read only come a loop turn later, so there
/// the test holds the proxy to correct bodies only.
#[test]
fn a_response_that_arrived_at_once_leaves_in_one_segment() {
    let origin = origin();
    let backend = origin.addr().to_string();
    for (env, coalesced) in [
        ("GLOMMIO_RECV_BUFFER_RING=on", true),
        ("GLOMMIO_RECV_BUFFER_RING=off", false),
    ] {
        let proxy = Proxy::start_with_env(&[env], &["--backend", &backend]);
        let mut c = proxy.connect();
        for n in [16_384usize, 30_000] {
            // Warm up: the backend connection pooled, the client connection past TCP's
            // quick-ACK start.
            for _ in 0..4 {
                assert_eq!(c.get(&format!("/size/{n}")).body.len(), n);
            }
            let mut single = 0;
            for _ in 0..20 {
                let before = tcp_info(&c.stream).tcpi_data_segs_in;
                let r = c.get(&format!("/size/{n}"));
                let segments = tcp_info(&c.stream).tcpi_data_segs_in - before;
                assert_eq!(r.status, 200);
                assert!(
                    r.body == pattern(n),
                    "{env}: the {n}-byte body is the origin's"
                );
                assert!(segments >= 1);
                single += usize::from(segments == 1);
            }
            // The origin writes head and body at once; on a busy machine part of it may
            // still reach the proxy a loop turn late, so most (not all) responses must be
            // one segment. Before the change none was.
            assert!(
                !coalesced || single >= 15,
                "{env}: only {single} of 20 {n}-byte responses came in one segment"
            );
        }
    }
}

/// A large body that arrives faster than one 16 KiB read at a time leaves in larger
/// writes: the proxy gathers what has already arrived, up to 48 KiB per write, instead
/// of one write (one TCP segment on loopback) per 16 KiB read. A 192 KiB body took at
/// least 12 data segments to the client before; the median of 10 must now be at most 8.
#[test]
fn a_large_body_leaves_in_writes_larger_than_one_read() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let proxy = Proxy::start(&["--backend", &backend]);
    let mut c = proxy.connect();
    const N: usize = 192 << 10;
    for _ in 0..3 {
        assert_eq!(c.get(&format!("/size/{N}")).body.len(), N);
    }
    let mut counts = Vec::new();
    for _ in 0..10 {
        let before = tcp_info(&c.stream).tcpi_data_segs_in;
        let r = c.get(&format!("/size/{N}"));
        counts.push(tcp_info(&c.stream).tcpi_data_segs_in - before);
        assert!(r.body == pattern(N), "the body is the origin's");
    }
    counts.sort_unstable();
    eprintln!("data segments per 192 KiB response: {counts:?}");
    assert!(
        counts[5] <= 8,
        "192 KiB responses came in {counts:?} segments"
    );
}
