//! Micro-benchmarks of the HTTP/1.1 codec on the proxy's hot path: parsing and rewriting
//! request and response heads, and finding the end of a chunked body.
//!
//! Run with `cargo bench -p ringway --bench http1`. Results: `docs/microbench.md`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use divan::counter::BytesCount;
use divan::Bencher;
use ringway_http1::{
    parse_request, parse_request_for_upstream, parse_response, parse_response_with,
    write_request_upstream, write_response_downstream, ChunkedScanner, Forwarded, Method,
    RequestHead, ResponseHead,
};

fn main() {
    divan::main();
}

const MAX_HEAD: usize = 16 * 1024;

/// A browser-like GET: 10 header fields, about 400 bytes.
const BROWSER_GET: &[u8] = b"GET /static/js/app.3f9c2b7e.js?v=20241127 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/products/index.html\r\n\
Connection: keep-alive\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
\r\n";

/// What wrk sends by default.
const WRK_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

/// A small 200 with Content-Length, as a typical origin answers.
const SMALL_200: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: ringway-origin\r\n\
Date: Fri, 27 Nov 2026 10:00:00 GMT\r\n\
Content-Type: text/plain\r\n\
Content-Length: 13\r\n\
\r\n\
Hello, world!";

fn forwarded() -> Forwarded<'static> {
    Forwarded {
        client_ip: Ipv4Addr::new(192, 0, 2, 17).into(),
        proto: "http",
        via: "1.1 ringway",
        host_when_absent: Some(b""),
    }
}

fn request_head(raw: &[u8]) -> RequestHead {
    parse_request(raw, MAX_HEAD)
        .expect("valid request")
        .expect("complete request head")
}

fn response_head(raw: &[u8]) -> ResponseHead {
    parse_response(raw, Method::Get, MAX_HEAD)
        .expect("valid response")
        .expect("complete response head")
}

/// 16 chunks of 1 KiB each, then the last chunk and an empty trailer section.
fn chunked_body() -> Vec<u8> {
    let mut body = Vec::with_capacity(16 * (1024 + 7) + 5);
    for i in 0..16u8 {
        body.extend_from_slice(b"400\r\n");
        body.resize(body.len() + 1024, b'a' + i);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// The request heads benchmarked, by name.
fn request_raw(name: &str) -> &'static [u8] {
    match name {
        "browser" => BROWSER_GET,
        "wrk" => WRK_GET,
        _ => unreachable!("unknown request {name}"),
    }
}

#[divan::bench(args = ["browser", "wrk"], sample_count = 500, sample_size = 64)]
fn parse_request_head(bencher: Bencher, name: &str) {
    let raw = request_raw(name);
    bencher
        .counter(BytesCount::of_slice(raw))
        .bench(|| parse_request(black_box(raw), MAX_HEAD));
}

/// The head that goes upstream (hop-by-hop fields dropped, X-Forwarded-For, -Proto and Via
/// added), written into a reused buffer as the proxy does.
#[divan::bench(args = ["browser", "wrk"], sample_count = 500, sample_size = 64)]
fn write_request_upstream_head(bencher: Bencher, name: &str) {
    let raw = request_raw(name);
    let head = request_head(raw);
    let fwd = forwarded();
    let mut out = Vec::with_capacity(1024);
    bencher.counter(BytesCount::of_slice(raw)).bench_local(|| {
        out.clear();
        write_request_upstream(black_box(raw), black_box(&head), &fwd, &mut out);
        out.len()
    });
}

/// What the proxy does per request head: check it and write its upstream form from the
/// same parse (the two rows above, less one `httparse` pass).
#[divan::bench(args = ["browser", "wrk"], sample_count = 500, sample_size = 64)]
fn parse_request_for_upstream_head(bencher: Bencher, name: &str) {
    let raw = request_raw(name);
    let fwd = forwarded();
    let mut out = Vec::with_capacity(1024);
    bencher.counter(BytesCount::of_slice(raw)).bench_local(|| {
        out.clear();
        let head = parse_request_for_upstream(black_box(raw), MAX_HEAD, &fwd, &mut out);
        (head.is_ok(), out.len())
    });
}

/// What the proxy does per response head: check it and write the client's head from the
/// same parse (`parse_response` and `write_response_downstream` less one pass).
#[divan::bench(sample_count = 500, sample_size = 64)]
fn parse_response_with_downstream_head(bencher: Bencher) {
    let mut out = Vec::with_capacity(1024);
    bencher
        .counter(BytesCount::of_slice(SMALL_200))
        .bench_local(|| {
            out.clear();
            let head = parse_response_with(black_box(SMALL_200), Method::Get, MAX_HEAD, |f| {
                f.write_downstream("1.1 ringway", true, 1, &mut out)
            });
            (head.is_ok(), out.len())
        });
}

#[divan::bench(sample_count = 500, sample_size = 64)]
fn parse_response_head(bencher: Bencher) {
    bencher
        .counter(BytesCount::of_slice(SMALL_200))
        .bench(|| parse_response(black_box(SMALL_200), Method::Get, MAX_HEAD));
}

/// The head that goes to a keep-alive HTTP/1.1 client, into a reused buffer.
#[divan::bench(sample_count = 500, sample_size = 64)]
fn write_response_downstream_head(bencher: Bencher) {
    let head = response_head(SMALL_200);
    let mut out = Vec::with_capacity(1024);
    bencher
        .counter(BytesCount::of_slice(SMALL_200))
        .bench_local(|| {
            out.clear();
            write_response_downstream(
                black_box(SMALL_200),
                black_box(&head),
                "1.1 ringway",
                true,
                1,
                &mut out,
            );
            out.len()
        });
}

/// One `feed` over a whole 16 × 1 KiB chunked body (the scanner validates framing only).
#[divan::bench(sample_count = 500, sample_size = 64)]
fn chunked_scan_16x1k(bencher: Bencher) {
    let body = chunked_body();
    assert_eq!(ChunkedScanner::new().feed(&body), Ok((body.len(), true)));
    bencher
        .counter(BytesCount::of_slice(&body))
        .bench(|| ChunkedScanner::new().feed(black_box(&body)));
}
