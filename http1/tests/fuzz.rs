//! Property tests ("fuzzing" that runs under plain `cargo test`) for ringway's HTTP/1.1
//! codec: the request and response parsers, the chunked scanner and both head rewriters.
//!
//! Inputs come from structured generators (request and status lines, header fields with
//! framing, connection and host values, odd separators, bare CR/LF, obs-fold, NULs) mixed
//! with random mutations and fully random bytes. Each property runs a bounded number of
//! cases in `cargo test` (see [`config`]); `PROPTEST_CASES=100000 cargo test -p
//! ringway-http1 --test fuzz` runs them longer. A failure proptest finds is shrunk and its
//! seed saved in `fuzz.proptest-regressions` beside this file (commit it: its cases are
//! replayed first on every run).
//! See `docs/fuzzing.md` for the targets and what they have found.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::Config;
use ringway_http1::{
    parse_request, parse_response, route_path, write_normalized_target, write_request_upstream,
    write_response_downstream, ChunkError, ChunkedScanner, Forwarded, Framing, HeadError, Method,
    RequestHead,
};

/// `cases` per property in an ordinary `cargo test` run, unless `PROPTEST_CASES` is set.
fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

const MAX: usize = 8192;

const METHODS: &[Method] = &[
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Options,
    Method::Trace,
    Method::Connect,
    Method::Patch,
    Method::Other,
];

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

fn bytes_of(s: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    select(s).prop_map(|s| s.as_bytes().to_vec())
}

/// Randomly re-case ASCII letters (field names and codings are case-insensitive).
fn recase(v: Vec<u8>, mask: u64) -> Vec<u8> {
    v.into_iter()
        .enumerate()
        .map(|(i, b)| {
            if mask >> (i % 64) & 1 == 1 {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Bytes that matter to an HTTP/1 parser, plus a few ordinary ones.
const ODD: &[u8] = b" \t\r\n\x00\x0b\x0c\x7f\x80\xff:,;=\"/?#%.\\@[]aZ09-_";

fn odd_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(select(ODD), 0..max)
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => bytes_of(&[
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH",
            "PURGE", "get", "PRI",
        ]),
        1 => "[A-Za-z!#$%&'*+.^_`|~-]{1,8}".prop_map(String::into_bytes),
        1 => odd_bytes(4),
    ]
}

fn host_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => bytes_of(&[
            "a", "example.com", "Example.com:8080", "[::1]:80", "10.0.0.1", "h:", "b.example",
        ]),
        1 => bytes_of(&["", "a b", "a,b", "h:1:2", "user@h", "a/b", "[::1", "\u{e9}.com", "h:port"]),
        1 => "[a-z0-9.-]{1,10}(:[0-9]{1,5})?".prop_map(String::into_bytes),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        select(&[
            "a", "b", "admin", "..", ".", "%2e", "%2E%2e", "%41", "%2f", "%7e", "%zz", "%", "/",
            "/", "/", ";p=1", "?x=/../y", "?", "//", "\\", "~", "#f", "%00",
        ]),
        0..8,
    )
    .prop_map(|parts| {
        let mut p = b"/".to_vec();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
        }
        p
    })
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => path(),
        3 => (
            bytes_of(&["http://", "HTTP://", "https://", "ftp://", "http:///"]),
            host_value(),
            prop_oneof![path(), Just(Vec::new()), Just(b"?q".to_vec())],
        )
            .prop_map(|(s, h, p)| [s, h, p].concat()),
        1 => bytes_of(&["*", "example.com:443", "example.com", "x", "", "/a b"]),
        1 => odd_bytes(8),
    ]
}

fn version() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => bytes_of(&["HTTP/1.1", "HTTP/1.0"]),
        1 => bytes_of(&["HTTP/1.2", "HTTP/2", "HTTP/2.0", "http/1.1", "HTTP/1.1 x", ""]),
    ]
}

/// A line end. Mostly CRLF; bare LF is accepted by the parser, bare CR is not, and a line
/// end followed by a space or tab starts an obs-fold continuation.
fn eol() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        24 => Just(&b"\r\n"[..]),
        2 => Just(&b"\n"[..]),
        1 => Just(&b"\r"[..]),
        1 => Just(&b"\r\n "[..]),
        1 => Just(&b"\r\n\t"[..]),
        1 => Just(&b"\r\r\n"[..]),
    ]
}

fn separator() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        12 => Just(&b": "[..]),
        4 => Just(&b":"[..]),
        2 => Just(&b":  "[..]),
        1 => Just(&b" :"[..]),
        1 => Just(&b"\t: "[..]),
        1 => Just(&b"::"[..]),
    ]
}

fn content_length_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (0u64..100_000).prop_map(|n| n.to_string().into_bytes()),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        2 => bytes_of(&[
            "0", "5", "5, 5", "5,5", " 5 ", "005", "5, 6", "+5", "-5", "0x5", "5.0", "", "5,",
            ",5", "1 2", "18446744073709551615", "18446744073709551616", "5\x00",
        ]),
    ]
}

fn transfer_encoding_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => bytes_of(&["chunked"]).prop_flat_map(|v| any::<u64>().prop_map(move |m| recase(v.clone(), m))),
        3 => bytes_of(&[
            " chunked ", "gzip, chunked", "chunked, gzip", "gzip", "identity", "chunked, chunked",
            "chunked,", ",chunked", "\"chunked\"", "chunked;q=1", "", "\x0bchunked", "chunked\x00",
            "xchunked", "deflate,chunked", "chunk ed", "gzip,\tchunked",
        ]),
        1 => odd_bytes(10),
    ]
}

fn connection_value() -> impl Strategy<Value = Vec<u8>> {
    bytes_of(&[
        "close",
        "keep-alive",
        "Keep-Alive",
        "Upgrade",
        "keep-alive, Upgrade",
        "X-Secret",
        "x-secret, close",
        "host, content-length, transfer-encoding",
        "x-forwarded-for, via",
        "te, http2-settings",
        "Upgrade, HTTP2-Settings",
        "",
        " , ",
    ])
}

fn generic_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => "[ -~]{0,16}".prop_map(String::into_bytes),
        1 => odd_bytes(12),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

/// One header field line, without its line end: `name sep value`.
fn field() -> impl Strategy<Value = Vec<u8>> {
    let named = |names: &'static [&'static str], value: BoxedStrategy<Vec<u8>>| {
        (bytes_of(names), any::<u64>(), separator(), value)
            .prop_map(|(n, m, s, v)| [recase(n, m), s.to_vec(), v].concat())
    };
    prop_oneof![
        3 => named(&["Host"], host_value().boxed()),
        4 => named(&["Content-Length"], content_length_value().boxed()),
        4 => named(&["Transfer-Encoding"], transfer_encoding_value().boxed()),
        2 => named(&["Connection"], connection_value().boxed()),
        2 => named(&["Upgrade"], bytes_of(&["websocket", "h2c", "websocket, H2C", ""]).boxed()),
        1 => named(&["Expect"], bytes_of(&["100-continue", "100-Continue", "200-ok"]).boxed()),
        3 => named(
            &[
                "Keep-Alive", "Proxy-Connection", "TE", "HTTP2-Settings", "Via", "X-Forwarded-For",
                "X-Forwarded-Proto", "Trailer", "X-Secret", "Proxy-Authorization",
            ],
            generic_value().boxed(),
        ),
        1 => named(&["Content_Length", "Transfer_Encoding", "X_Custom"], content_length_value().boxed()),
        4 => ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", separator(), generic_value())
            .prop_map(|(n, s, v)| [n.into_bytes(), s.to_vec(), v].concat()),
        1 => odd_bytes(16),
    ]
}

fn fields(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((field(), eol()), 0..max).prop_map(|fs| {
        let mut out = Vec::new();
        for (f, e) in fs {
            out.extend_from_slice(&f);
            out.extend_from_slice(e);
        }
        out
    })
}

/// A field line the parser accepts in itself (what it says may still be refused).
fn clean_field() -> impl Strategy<Value = Vec<u8>> {
    let named = |names: &'static [&'static str], value: BoxedStrategy<Vec<u8>>| {
        (bytes_of(names), any::<u64>(), ok_separator(), value)
            .prop_map(|(n, m, s, v)| [recase(n, m), s.to_vec(), v].concat())
    };
    let value = || {
        "([!-~]([ -~]{0,10}[!-~])?)?"
            .prop_map(String::into_bytes)
            .boxed()
    };
    prop_oneof![
        3 => named(&["Content-Length"], (0u64..100_000).prop_map(|n| n.to_string().into_bytes()).boxed()),
        1 => named(&["Content-Length"], bytes_of(&["5, 5", "0", "5", "007"]).boxed()),
        3 => named(&["Transfer-Encoding"], bytes_of(&["chunked", "Chunked", "chunked ", "CHUNKED"]).boxed()),
        1 => named(&["Transfer-Encoding"], bytes_of(&["gzip, chunked", "gzip"]).boxed()),
        3 => named(&["Connection"], connection_value().boxed()),
        2 => named(&["Upgrade"], bytes_of(&["websocket", "h2c", "websocket, H2C"]).boxed()),
        1 => bytes_of(&["Connection: keep-alive, Upgrade\r\nUpgrade: websocket"]),
        1 => named(&["Expect"], bytes_of(&["100-continue", "200-ok"]).boxed()),
        4 => named(
            &[
                "Keep-Alive", "Proxy-Connection", "TE", "HTTP2-Settings", "Via", "X-Forwarded-For",
                "X-Forwarded-Proto", "Trailer", "X-Secret", "Proxy-Authorization", "Server",
            ],
            value(),
        ),
        4 => ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", ok_separator(), value())
            .prop_map(|(n, s, v)| [n.into_bytes(), s.to_vec(), v].concat()),
    ]
}

fn clean_fields(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let eol = prop_oneof![8 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])];
    prop::collection::vec((clean_field(), eol), 0..max).prop_map(|fs| {
        let mut out = Vec::new();
        for (f, e) in fs {
            out.extend_from_slice(&f);
            out.extend_from_slice(e);
        }
        out
    })
}

/// A request head that is well-formed line by line (mostly accepted).
fn clean_request_head() -> impl Strategy<Value = Vec<u8>> {
    let target = prop_oneof![
        6 => path().prop_map(|p| p.into_iter().filter(|&b| b != b'#').collect::<Vec<u8>>()),
        2 => (bytes_of(&["http://", "HTTPS://"]), bytes_of(&["a", "b.example:8080", "[::1]"]), prop_oneof![path(), Just(Vec::new()), Just(b"?q=1".to_vec())])
            .prop_map(|(s, h, p)| [s, h, p].concat().into_iter().filter(|&b| b != b'#').collect()),
        1 => bytes_of(&["*", "example.com:443"]),
    ];
    (
        bytes_of(&[
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH", "PURGE", "PRI",
        ]),
        target,
        bytes_of(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
        prop::option::weighted(
            0.9,
            bytes_of(&["a", "example.com:8080", "[::1]:80", "10.0.0.1", ""]),
        ),
        clean_fields(6),
    )
        .prop_map(|(m, t, v, host, fs)| {
            let mut out = [m, b" ".to_vec(), t, b" ".to_vec(), v, b"\r\n".to_vec()].concat();
            if let Some(h) = host {
                out.extend_from_slice(b"Host: ");
                out.extend_from_slice(&h);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(&fs);
            out.extend_from_slice(b"\r\n");
            out
        })
}

fn clean_response_head() -> impl Strategy<Value = Vec<u8>> {
    (
        bytes_of(&["HTTP/1.1", "HTTP/1.0"]),
        select(&[
            100u16, 101, 103, 200, 204, 206, 301, 304, 404, 500, 502, 999,
        ]),
        bytes_of(&["OK", "Not Found", "", "Fine \t Thanks"]),
        clean_fields(6),
    )
        .prop_map(|(v, s, r, fs)| {
            [
                v,
                format!(" {s} ").into_bytes(),
                r,
                b"\r\n".to_vec(),
                fs,
                b"\r\n".to_vec(),
            ]
            .concat()
        })
}

/// A request head, mostly well-formed: request line, usually a Host first, fields, end.
fn request_head() -> impl Strategy<Value = Vec<u8>> {
    (
        method(),
        target(),
        version(),
        eol(),
        prop::option::weighted(0.8, host_value()),
        fields(8),
        eol(),
    )
        .prop_map(|(m, t, v, e, host, fs, end)| {
            let mut out = [m, b" ".to_vec(), t, b" ".to_vec(), v, e.to_vec()].concat();
            if let Some(h) = host {
                out.extend_from_slice(b"Host: ");
                out.extend_from_slice(&h);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(&fs);
            out.extend_from_slice(end);
            out
        })
}

fn response_head() -> impl Strategy<Value = Vec<u8>> {
    (
        bytes_of(&["HTTP/1.1", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/1.1 "]),
        prop_oneof![
            6 => select(&[100u16, 101, 103, 200, 204, 206, 301, 304, 404, 500, 502])
                .prop_map(|s| s.to_string().into_bytes()),
            1 => (0u16..1200).prop_map(|s| format!("{s:03}").into_bytes()),
            1 => odd_bytes(4),
        ],
        prop_oneof![
            4 => bytes_of(&[" OK", " Not Found", " ", "", " Fine \t Thanks", " \u{e9}t\u{e9}"]),
            1 => odd_bytes(8).prop_map(|r| [b" ".to_vec(), r].concat()),
        ],
        eol(),
        fields(8),
        eol(),
    )
        .prop_map(|(v, s, r, e, fs, end)| {
            [v, b" ".to_vec(), s, r, e.to_vec(), fs, end.to_vec()].concat()
        })
}

/// Byte-level edits: replace, insert or delete at a random place.
fn mutate(mut v: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    for &(at, byte, op) in edits {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let i = at.index(v.len());
        match op % 3 {
            0 => v[i] = byte,
            1 => v.insert(i, byte),
            _ => {
                v.remove(i);
            }
        }
    }
    v
}

fn edits() -> impl Strategy<Value = Vec<(Index, u8, u8)>> {
    prop::collection::vec(
        (
            any::<Index>(),
            prop_oneof![select(ODD), any::<u8>()],
            any::<u8>(),
        ),
        1..4,
    )
}

/// Structured heads, mutated heads and random bytes, followed by random "body" bytes.
fn any_input(
    clean: BoxedStrategy<Vec<u8>>,
    head: BoxedStrategy<Vec<u8>>,
) -> impl Strategy<Value = Vec<u8>> {
    let mutated =
        (prop_oneof![clean.clone(), head.clone()], edits()).prop_map(|(h, e)| mutate(h, &e));
    (
        prop_oneof![
            4 => clean,
            3 => head,
            3 => mutated,
            1 => prop::collection::vec(any::<u8>(), 0..256),
            // The HTTP/2 preface, and request lines that start like it.
            1 => bytes_of(&[
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "PRI * HTTP/1.1\r\nHost: a\r\n\r\n",
                "PRI * HTTP/1.0\r\n\r\n", "PRI / HTTP/1.1\r\nHost: a\r\n\r\n",
            ]),
        ],
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(h, tail)| [h, tail].concat())
}

fn requests() -> impl Strategy<Value = Vec<u8>> {
    any_input(clean_request_head().boxed(), request_head().boxed())
}

fn responses() -> impl Strategy<Value = Vec<u8>> {
    any_input(clean_response_head().boxed(), response_head().boxed())
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

fn fwd() -> Forwarded<'static> {
    Forwarded {
        client_ip: Ipv4Addr::new(10, 1, 2, 3).into(),
        proto: "https",
        via: "1.1 ringway",
        // Always give a hostless HTTP/1.0 request a Host, so "exactly one Host" holds.
        host_when_absent: Some(b""),
    }
}

/// Header (name, value) pairs of a head the parser accepted (re-read with httparse).
fn header_pairs(head: &[u8], request: bool) -> Vec<(String, Vec<u8>)> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let headers = if request {
        let mut req = httparse::Request::new(&mut slots);
        assert!(
            req.parse(head).is_ok_and(|s| s.is_complete()),
            "{}",
            show(head)
        );
        req.headers.to_vec()
    } else {
        let mut resp = httparse::Response::new(&mut slots);
        assert!(
            resp.parse(head).is_ok_and(|s| s.is_complete()),
            "{}",
            show(head)
        );
        resp.headers.to_vec()
    };
    headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect()
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn normalized(target: &[u8], method: Method) -> Vec<u8> {
    if method == Method::Connect {
        return target.to_vec();
    }
    let mut out = Vec::new();
    write_normalized_target(target, &mut out);
    out
}

/// A request head's own invariants (ranges inside the head, never read until close).
fn check_request_head(buf: &[u8], max: usize, h: &RequestHead) {
    assert!(h.head_len <= buf.len().min(max), "{}", show(buf));
    assert!(h.path.end <= h.head_len && h.path.start <= h.path.end);
    if let Some(host) = &h.host {
        assert!(host.end <= h.head_len && host.start <= host.end);
    }
    assert!(h.minor <= 1);
    assert_ne!(h.framing, Framing::UntilClose);
    assert_eq!(h.method, Method::from_bytes(method_of(&buf[..h.head_len])));
}

fn method_of(head: &[u8]) -> &[u8] {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let rest = &head[start..];
    &rest[..rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())]
}

/// Feed `data` to a fresh scanner in the given pieces, stopping at the end of the body:
/// (bytes of the body, done, decoded payload), or the error.
fn scan(data: &[u8], cuts: &[usize]) -> Result<(usize, bool, Vec<u8>), ChunkError> {
    let mut s = ChunkedScanner::new();
    let mut decoded = Vec::new();
    let mut used = 0;
    let mut at = 0;
    for end in cuts.iter().map(|&c| c.min(data.len())).chain([data.len()]) {
        let end = end.max(at);
        let piece = &data[at..end];
        let (n, done) = s.feed_decoded(piece, |d| decoded.extend_from_slice(d))?;
        assert!(n <= piece.len(), "took more than given");
        used += n;
        if done {
            assert!(s.is_done());
            assert_eq!(s.feed(b"next"), Ok((0, true)));
            return Ok((used, true, decoded));
        }
        assert_eq!(n, piece.len(), "an unfinished body takes all it is given");
        at = end;
    }
    Ok((used, false, decoded))
}

fn cuts(max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..max, 0..4).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

// ---------------------------------------------------------------------------------------
// 1. Nothing panics; every answer keeps its own contract.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn request_parser_total(buf in requests(), max in prop_oneof![Just(MAX), 0usize..300]) {
        match parse_request(&buf, max) {
            Ok(Some(h)) => check_request_head(&buf, max, &h),
            Ok(None) => prop_assert!(buf.len() < max, "{}", show(&buf)),
            Err(e) => prop_assert!(matches!(e.status(), 400 | 431 | 505)),
        }
    }

    #[test]
    fn response_parser_total(buf in responses(), max in prop_oneof![Just(MAX), 0usize..300]) {
        for &m in METHODS {
            match parse_response(&buf, m, max) {
                Ok(Some(h)) => {
                    prop_assert!(h.head_len <= buf.len().min(max));
                    prop_assert!((100..=999).contains(&h.status));
                    if m == Method::Head || h.is_interim() || h.status == 204 || h.status == 304 {
                        prop_assert_eq!(h.framing, Framing::Empty);
                    }
                    if h.framing == Framing::UntilClose {
                        prop_assert!(!h.keep_alive);
                    }
                }
                Ok(None) => prop_assert!(buf.len() < max),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn chunked_scanner_total(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            odd_bytes(64),
            (chunked_body(), edits()).prop_map(|((b, _), e)| mutate(b, &e)),
        ],
        cuts in cuts(128),
    ) {
        let _ = scan(&data, &cuts);
    }
}

// ---------------------------------------------------------------------------------------
// 2. Split invariance.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    /// A buffer fed whole or in pieces gives the same total, the same end and the same
    /// payload (or the same error).
    #[test]
    fn chunked_split_invariance(
        data in prop_oneof![
            chunked_body().prop_map(|(b, _)| b),
            (chunked_body(), edits()).prop_map(|((b, _), e)| mutate(b, &e)),
            odd_bytes(64),
        ],
        cuts in cuts(160),
    ) {
        let whole = scan(&data, &[]);
        let split = scan(&data, &cuts);
        prop_assert_eq!(&whole, &split, "{} cut at {:?}", show(&data), cuts);
        if let Some(&c) = cuts.first() {
            prop_assert_eq!(&whole, &scan(&data, &[c]), "{} cut at {}", show(&data), c);
        }
    }

    /// A prefix of a buffer needs more or fails the same way; any buffer that extends a
    /// complete head gives the same head.
    #[test]
    fn request_prefix_invariance(buf in requests(), cut in any::<Index>()) {
        let full = parse_request(&buf, MAX);
        let k = cut.index(buf.len() + 1);
        let prefix = parse_request(&buf[..k], MAX);
        match &full {
            Ok(Some(h)) if k >= h.head_len => prop_assert_eq!(&prefix, &full),
            Ok(_) => prop_assert_eq!(&prefix, &Ok(None), "{} at {}", show(&buf), k),
            Err(e) => prop_assert!(
                prefix == Ok(None) || prefix == Err(*e),
                "{} at {}: {:?} vs {:?}", show(&buf), k, prefix, e
            ),
        }
    }

    #[test]
    fn response_prefix_invariance(buf in responses(), cut in any::<Index>()) {
        let k = cut.index(buf.len() + 1);
        for m in [Method::Get, Method::Head] {
            let full = parse_response(&buf, m, MAX);
            let prefix = parse_response(&buf[..k], m, MAX);
            match &full {
                Ok(Some(h)) if k >= h.head_len => prop_assert_eq!(&prefix, &full),
                Ok(_) => prop_assert_eq!(&prefix, &Ok(None), "{} at {}", show(&buf), k),
                Err(e) => prop_assert!(
                    prefix == Ok(None) || prefix == Err(*e),
                    "{} at {}: {:?} vs {:?}", show(&buf), k, prefix, e
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. What goes upstream parses back to the same request.
// ---------------------------------------------------------------------------------------

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "http2-settings",
];

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn request_rewrite_round_trip(buf in requests()) {
        let Ok(Some(h)) = parse_request(&buf, MAX) else { return Ok(()) };
        let mut out = b"KEEP".to_vec();
        write_request_upstream(&buf, &h, &fwd(), &mut out);
        prop_assert!(out.starts_with(b"KEEP"), "writers only extend");
        let out = out.split_off(4);

        // Bytes after the head are never part of what was written.
        let mut alone = Vec::new();
        write_request_upstream(&buf[..h.head_len], &h, &fwd(), &mut alone);
        prop_assert_eq!(&alone, &out, "{}", show(&buf));

        let back = parse_request(&out, 2 * MAX);
        let Ok(Some(back)) = back else {
            return Err(TestCaseError::fail(format!(
                "{} went up as {}, which parses as {back:?}", show(&buf), show(&out)
            )));
        };
        let ctx = || format!("{} -> {}", show(&buf), show(&out));
        prop_assert_eq!(back.head_len, out.len(), "{}", ctx());
        prop_assert_eq!(back.minor, 1);
        prop_assert_eq!(back.method, h.method, "{}", ctx());
        prop_assert_eq!(method_of(&out), method_of(&buf[..h.head_len]));
        prop_assert_eq!(back.framing, h.framing, "{}", ctx());
        prop_assert_eq!(back.upgrade, h.upgrade, "{}", ctx());

        // The target goes up normalised, and normalising it again changes nothing.
        let sent = &out[back.path.clone()];
        let original = &buf[h.path.clone()];
        prop_assert_eq!(sent, &normalized(original, h.method)[..], "{}", ctx());
        prop_assert_eq!(&normalized(sent, h.method)[..], sent, "{}", ctx());
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        prop_assert_eq!(route_path(sent, &mut s1), route_path(original, &mut s2), "{}", ctx());

        // The backend routes on the host we routed on.
        let host = |b: &[u8], r: &Option<std::ops::Range<usize>>| {
            r.clone().map(|r| b[r].to_vec()).unwrap_or_default()
        };
        prop_assert_eq!(host(&out, &back.host), host(&buf, &h.host), "{}", ctx());

        // No hop-by-hop field (bar an upgrade's own), none a Connection option names,
        // exactly one Host.
        let sent_fields = header_pairs(&out, true);
        let received = header_pairs(&buf[..h.head_len], true);
        for (name, value) in &sent_fields {
            if h.upgrade && (name == "upgrade" || (name == "connection" && value == b"upgrade")) {
                continue;
            }
            prop_assert!(!HOP_BY_HOP.contains(&name.as_str()), "{name} in {}", ctx());
        }
        let named: Vec<String> = received
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(|&b| b == b',').map(|o| trim_ows(o).to_ascii_lowercase()))
            .filter_map(|o| String::from_utf8(o).ok())
            // `close` is an option, not a field name, to the codec (as to most proxies).
            .filter(|o| !o.is_empty() && o != "close")
            .collect();
        for (name, _) in &sent_fields {
            let ours = ["host", "content-length", "transfer-encoding", "x-forwarded-for",
                "x-forwarded-proto", "via", "connection", "upgrade"];
            if !ours.contains(&name.as_str()) {
                prop_assert!(!named.contains(name), "{name} is named in Connection: {}", ctx());
            }
        }
        prop_assert_eq!(sent_fields.iter().filter(|(n, _)| n == "host").count(), 1, "{}", ctx());
        let framing_fields = sent_fields
            .iter()
            .filter(|(n, _)| n == "content-length" || n == "transfer-encoding")
            .count();
        prop_assert_eq!(framing_fields, usize::from(h.framing != Framing::Empty), "{}", ctx());
    }
}

// ---------------------------------------------------------------------------------------
// 4. What goes downstream parses back with the same status and framing.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn response_rewrite_round_trip(buf in responses(), keep_alive in any::<bool>()) {
        for &m in METHODS {
            let Ok(Some(h)) = parse_response(&buf, m, MAX) else { continue };
            for client_minor in [0u8, 1] {
                let mut out = Vec::new();
                write_response_downstream(&buf, &h, "1.1 ringway", keep_alive, client_minor, &mut out);
                let mut alone = Vec::new();
                write_response_downstream(
                    &buf[..h.head_len], &h, "1.1 ringway", keep_alive, client_minor, &mut alone,
                );
                prop_assert_eq!(&alone, &out, "{}", show(&buf));
                let ctx = || format!("{m:?} 1.{client_minor} {} -> {}", show(&buf), show(&out));
                let back = parse_response(&out, m, 2 * MAX);
                let Ok(Some(back)) = back else {
                    return Err(TestCaseError::fail(format!("{} parses as {back:?}", ctx())));
                };
                prop_assert_eq!(back.head_len, out.len(), "{}", ctx());
                prop_assert_eq!(back.status, h.status, "{}", ctx());
                let expect = if h.needs_dechunk(client_minor) {
                    // De-chunked for an HTTP/1.0 client: the body ends at the close.
                    Framing::UntilClose
                } else {
                    h.framing
                };
                prop_assert_eq!(back.framing, expect, "{}", ctx());
                if !keep_alive && !h.is_interim() {
                    prop_assert!(!back.keep_alive, "{}", ctx());
                }
                for (name, _) in header_pairs(&out, false) {
                    if h.status == 101 && (name == "upgrade" || name == "connection") {
                        continue;
                    }
                    prop_assert!(
                        name == "connection" || !HOP_BY_HOP.contains(&name.as_str()),
                        "{name} in {}", ctx()
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. Smuggling: heads a backend could frame differently are refused.
// ---------------------------------------------------------------------------------------

/// A request head the parser accepts (checked), split where extra fields may go.
fn clean_request() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        bytes_of(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"]),
        path(),
        prop::collection::vec(
            ("X-[A-Za-z0-9-]{1,8}", "[!-~]([ -~]{0,8}[!-~])?")
                .prop_map(|(n, v)| format!("{n}: {v}\r\n").into_bytes()),
            0..4,
        ),
    )
        .prop_map(|(m, p, fs)| {
            let p: Vec<u8> = p.into_iter().filter(|&b| b != b'#').collect();
            let line = [m, b" ".to_vec(), p, b" HTTP/1.1\r\nHost: a\r\n".to_vec()].concat();
            (line, fs.concat())
        })
}

fn framing_field(name: &'static str, value: Vec<u8>, mask: u64, sep: &'static [u8]) -> Vec<u8> {
    [
        recase(name.as_bytes().to_vec(), mask),
        sep.to_vec(),
        value,
        b"\r\n".to_vec(),
    ]
    .concat()
}

/// A separator the parser accepts in a request.
fn ok_separator() -> impl Strategy<Value = &'static [u8]> {
    const OK: &[&[u8]] = &[b": ", b":", b":  ", b":\t"];
    select(OK)
}

#[derive(Debug, Clone)]
enum Smuggle {
    /// Both Content-Length and Transfer-Encoding, in either order, any values.
    ClAndTe {
        cl: Vec<u8>,
        te: Vec<u8>,
        te_first: bool,
    },
    /// Two different Content-Length values, in two fields or one list.
    TwoLengths { a: u64, b: u64, one_field: bool },
    /// Transfer-Encoding whose last coding is not `chunked` (one field or two).
    NotChunkedLast {
        codings: Vec<&'static str>,
        split: bool,
    },
}

fn smuggle() -> impl Strategy<Value = Smuggle> {
    let coding = select(&["chunked", "gzip", "deflate", "identity", "x-chunked", "br"]);
    prop_oneof![
        (
            content_length_value(),
            transfer_encoding_value(),
            any::<bool>()
        )
            // A line end inside a value would end the head early: not this property.
            .prop_filter("one line", |(_, te, _)| !te.contains(&b'\r')
                && !te.contains(&b'\n'))
            .prop_map(|(cl, te, te_first)| Smuggle::ClAndTe { cl, te, te_first }),
        (0u64..1000, 0u64..1000, any::<bool>())
            .prop_filter("different", |(a, b, _)| a != b)
            .prop_map(|(a, b, one_field)| Smuggle::TwoLengths { a, b, one_field }),
        (
            prop::collection::vec(coding, 0..3),
            select(&[
                "gzip",
                "deflate",
                "identity",
                "x-chunked",
                "chunked;q=1",
                ""
            ]),
            any::<bool>()
        )
            .prop_map(|(mut codings, last, split)| {
                codings.push(last);
                Smuggle::NotChunkedLast { codings, split }
            }),
    ]
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn smuggling_heads_are_refused(
        (line, others) in clean_request(),
        s in smuggle(),
        masks in any::<(u64, u64)>(),
        seps in (ok_separator(), ok_separator()),
        at in any::<Index>(),
    ) {
        // The head without the framing fields is accepted: the refusal below is theirs.
        let clean = [line.clone(), others.clone(), b"\r\n".to_vec()].concat();
        prop_assert!(matches!(parse_request(&clean, MAX), Ok(Some(_))), "{}", show(&clean));

        let framing: Vec<u8> = match &s {
            Smuggle::ClAndTe { cl, te, te_first } => {
                let cl = framing_field("Content-Length", cl.clone(), masks.0, seps.0);
                let te = framing_field("Transfer-Encoding", te.clone(), masks.1, seps.1);
                if *te_first { [te, cl].concat() } else { [cl, te].concat() }
            }
            Smuggle::TwoLengths { a, b, one_field: true } => {
                framing_field("Content-Length", format!("{a}, {b}").into_bytes(), masks.0, seps.0)
            }
            Smuggle::TwoLengths { a, b, one_field: false } => [
                framing_field("Content-Length", a.to_string().into_bytes(), masks.0, seps.0),
                framing_field("Content-Length", b.to_string().into_bytes(), masks.1, seps.1),
            ]
            .concat(),
            Smuggle::NotChunkedLast { codings, split } if *split && codings.len() > 1 => {
                let (last, first) = codings.split_last().unwrap_or((&"", &[]));
                [
                    framing_field("Transfer-Encoding", first.join(", ").into_bytes(), masks.0, seps.0),
                    framing_field("Transfer-Encoding", last.as_bytes().to_vec(), masks.1, seps.1),
                ]
                .concat()
            }
            Smuggle::NotChunkedLast { codings, .. } => {
                framing_field("Transfer-Encoding", codings.join(", ").into_bytes(), masks.0, seps.0)
            }
        };
        // The framing fields go anywhere among the others (field lines all end in CRLF).
        let lines: Vec<&[u8]> = others.split_inclusive(|&b| b == b'\n').collect();
        let i = at.index(lines.len() + 1);
        let head = [
            line,
            lines[..i].concat(),
            framing,
            lines[i..].concat(),
            b"\r\n".to_vec(),
        ]
        .concat();
        let got = parse_request(&head, MAX);
        prop_assert!(
            matches!(got, Err(HeadError::BadFraming(_) | HeadError::Malformed(_))),
            "{:?} accepted: {}", s, show(&head)
        );
        prop_assert_eq!(got.err().map(|e| e.status()), Some(400));
    }

    /// The documented rule in full: a request's Transfer-Encoding is exactly one field
    /// saying `chunked` (any case, OWS around it) on HTTP/1.1 without Content-Length;
    /// anything else is refused.
    #[test]
    fn request_transfer_encoding_is_a_single_chunked(
        (line, others) in clean_request(),
        te in prop::collection::vec(transfer_encoding_value(), 1..3),
        mask in any::<u64>(),
        http10 in any::<bool>(),
    ) {
        let mut head = line.clone();
        if http10 {
            head = String::from_utf8_lossy(&head).replace("HTTP/1.1", "HTTP/1.0").into_bytes();
        }
        head.extend_from_slice(&others);
        for v in &te {
            head.extend_from_slice(&framing_field("Transfer-Encoding", v.clone(), mask, b": "));
        }
        head.extend_from_slice(b"\r\n");
        let single_chunked = te.len() == 1 && trim_ows(&te[0]).eq_ignore_ascii_case(b"chunked");
        match parse_request(&head, MAX) {
            Ok(Some(h)) => {
                prop_assert!(single_chunked && !http10, "{}", show(&head));
                prop_assert_eq!(h.framing, Framing::Chunked);
            }
            Ok(None) => prop_assert!(false, "incomplete? {}", show(&head)),
            Err(e) => {
                prop_assert_eq!(e.status(), 400);
                prop_assert!(!single_chunked || http10, "{}: {:?}", show(&head), e);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 6. Chunked bodies from an encoder written here.
// ---------------------------------------------------------------------------------------

/// A chunked encoding of a random payload: random chunk sizes, hex in either case with
/// optional leading zeros, optional extensions, a `0` terminator (maybe `000`), optional
/// trailers. Returns (encoding, payload).
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..40),
        0usize..3,
        any::<bool>(),
        prop::option::weighted(
            0.3,
            select(&[
                ";a",
                ";name=value",
                " ;x",
                ";q=\"a b\"",
                "\t;ext=1",
                ";a;b=c",
            ]),
        ),
    );
    (
        prop::collection::vec(chunk, 0..6),
        0usize..3,
        prop::option::weighted(0.3, select(&[";last", " ;x=1"])),
        prop::collection::vec(
            ("[A-Za-z0-9-]{1,10}", "[ -~]{0,12}").prop_map(|(n, v)| format!("{n}:{v}\r\n")),
            0..3,
        ),
    )
        .prop_map(|(chunks, zeros, last_ext, trailers)| {
            let mut enc = Vec::new();
            let mut payload = Vec::new();
            for (data, lead, upper, ext) in chunks {
                let size = format!("{:0>width$x}", data.len(), width = lead + 1);
                let size = if upper {
                    size.to_ascii_uppercase()
                } else {
                    size
                };
                enc.extend_from_slice(size.as_bytes());
                if let Some(e) = ext {
                    enc.extend_from_slice(e.as_bytes());
                }
                enc.extend_from_slice(b"\r\n");
                enc.extend_from_slice(&data);
                enc.extend_from_slice(b"\r\n");
                payload.extend_from_slice(&data);
            }
            enc.extend_from_slice("0".repeat(zeros + 1).as_bytes());
            if let Some(e) = last_ext {
                enc.extend_from_slice(e.as_bytes());
            }
            enc.extend_from_slice(b"\r\n");
            for t in trailers {
                enc.extend_from_slice(t.as_bytes());
            }
            enc.extend_from_slice(b"\r\n");
            (enc, payload)
        })
}

/// Where each chunk-size line of an encoding starts and ends (the CRLF excluded).
fn size_lines(enc: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut lines = Vec::new();
    let mut at = 0;
    while at < enc.len() {
        let Some(cr) = enc[at..].iter().position(|&b| b == b'\r') else {
            break;
        };
        let line = at..at + cr;
        let digits = &enc[at..at + cr];
        let hex: String = digits
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .map(|&b| b as char)
            .collect();
        let size = usize::from_str_radix(&hex, 16).unwrap_or(0);
        lines.push(line);
        if size == 0 {
            break;
        }
        at += cr + 2 + size + 2;
    }
    lines
}

const SIZE_BYTES: &[u8] = b"0123456789abcdefABCDEFxX+- \t;\r\n\x00=\"g";

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn encoded_bodies_are_accepted_whole(
        (enc, payload) in chunked_body(),
        next in prop::collection::vec(any::<u8>(), 0..32),
        cuts in cuts(300),
    ) {
        let data = [enc.clone(), next].concat();
        let got = scan(&data, &cuts);
        prop_assert_eq!(got, Ok((enc.len(), true, payload)), "{} cut at {:?}", show(&enc), cuts);
        // Every strict prefix is an unfinished body that takes all of itself.
        let k = cuts.first().copied().unwrap_or(0).min(enc.len().saturating_sub(1));
        let mut s = ChunkedScanner::new();
        prop_assert_eq!(s.feed(&enc[..k]), Ok((k, false)));
    }

    /// An edit to a chunk-size line is refused, or the scanner re-synchronises on what
    /// the edited bytes say; it never takes more bytes than it is given, and what it calls
    /// a whole body is one on its own.
    #[test]
    fn mutated_size_lines_are_refused_or_resync(
        (enc, payload) in chunked_body(),
        which in any::<Index>(),
        at in any::<Index>(),
        byte in prop_oneof![select(SIZE_BYTES), any::<u8>()],
        op in 0u8..3,
        cuts in cuts(300),
    ) {
        let lines = size_lines(&enc);
        let line = lines[which.index(lines.len())].clone();
        // A position on the line or on its CR/LF.
        let i = line.start + at.index(line.len() + 2);
        let mut m = enc.clone();
        match op {
            0 => m[i] = byte,
            1 => m.insert(i, byte),
            _ => {
                m.remove(i);
            }
        }
        let whole = scan(&m, &[]);
        prop_assert_eq!(&whole, &scan(&m, &cuts), "{}", show(&m));
        if let Ok((used, done, decoded)) = whole {
            prop_assert!(used <= m.len());
            prop_assert!(decoded.len() <= used);
            if done {
                let again = scan(&m[..used], &[]);
                prop_assert_eq!(again, Ok((used, true, decoded.clone())));
            } else {
                prop_assert_eq!(used, m.len());
            }
            if m == enc {
                prop_assert_eq!((used, done, decoded), (enc.len(), true, payload));
            }
        }
    }
}
