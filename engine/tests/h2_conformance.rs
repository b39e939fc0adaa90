//! RFC 9113 conformance of the HTTP/2 front for what a client can get wrong, with raw
//! frames over a `std` socket (no client library would send these): malformed requests
//! are stream errors (RST_STREAM PROTOCOL_ERROR) that leave the connection serving;
//! nothing more is sent on a stream the client reset; a broken preface is a connection
//! error (GOAWAY PROTOCOL_ERROR), not an HTTP/1.1 answer; oversized header lists and
//! CONTINUATION floods end with the right codes; errors are counted in `/metrics`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PROTOCOL_ERROR: u32 = 1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal field without indexing, new name, no Huffman (short fields only).
fn lit(name: &str, value: &str) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// A header block: `fields` in order, each (name, value).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    fields.iter().flat_map(|(n, v)| lit(n, v)).collect()
}

fn get(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "http".into()),
        (":path", path.into()),
        (":authority", "test".into()),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// A raw HTTP/2 client connection.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(4, 0, 0, &[]));
        s.write_all(&hello).unwrap();
        let mut r = Raw { s, buf: Vec::new() };
        // The server's SETTINGS; ACK it.
        let f = r.next(Duration::from_secs(10)).expect("server SETTINGS");
        assert_eq!(f.kind, 4, "{f:?}");
        r.send(&frame(4, 1, 0, &[]));
        r
    }

    fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, String)], end_stream: bool) {
        let f: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let flags = 0x4 | if end_stream { 0x1 } else { 0 };
        self.send(&frame(1, flags, stream, &block(&f)));
    }

    /// The next frame, or None on close/timeout. PINGs and SETTINGS are answered.
    fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until one on `stream` matches `want` (or GOAWAY, or nothing for `within`).
    fn until(&mut self, within: Duration, want: impl Fn(&Frame) -> bool) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.next(left)?;
            if want(&f) || f.kind == 7 {
                return Some(f);
            }
        }
    }

    /// The error code of the RST_STREAM on `stream` (None: something else came).
    fn reset_code(&mut self, stream: u32) -> Option<u32> {
        match self.error_on(stream) {
            Some((3, code)) => Some(code),
            _ => None,
        }
    }

    /// The first RST_STREAM on `stream` or GOAWAY, as (frame type, error code); None if
    /// the stream was answered (HEADERS) or nothing came.
    fn error_on(&mut self, stream: u32) -> Option<(u8, u32)> {
        let f = self.until(Duration::from_secs(10), |f| {
            f.stream == stream && (f.kind == 3 || f.kind == 1)
        })?;
        match f.kind {
            3 => Some((3, u32::from_be_bytes(f.payload[..4].try_into().unwrap()))),
            7 => Some((7, u32::from_be_bytes(f.payload[4..8].try_into().unwrap()))),
            _ => None,
        }
    }

    /// Whether a GET on `stream` is answered (a HEADERS frame on it): the connection
    /// still serves.
    fn serves(&mut self, stream: u32) -> bool {
        self.headers(stream, &get("/"), true);
        self.until(Duration::from_secs(10), |f| {
            f.stream == stream && f.kind == 1
        })
        .is_some_and(|f| f.kind == 1)
    }
}

#[test]
fn malformed_requests_are_stream_errors_and_the_connection_serves_on() {
    let o = origin();
    let proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    let with = |extra: &[(&'static str, &str)]| {
        let mut f = get("/");
        f.extend(extra.iter().map(|(n, v)| (*n, v.to_string())));
        f
    };
    let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        (
            "connection-specific field",
            with(&[("connection", "keep-alive")]),
        ),
        ("keep-alive", with(&[("keep-alive", "5")])),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
        ),
        ("upgrade", with(&[("upgrade", "websocket")])),
        ("TE other than trailers", with(&[("te", "gzip")])),
        ("Host differs from :authority", with(&[("host", "other")])),
        ("value with leading space", with(&[("x-a", " v")])),
        ("value with trailing tab", with(&[("x-a", "v\t")])),
        (
            "pseudo-header after a regular field",
            vec![
                (":method", "GET".into()),
                (":scheme", "http".into()),
                ("x-a", "1".into()),
                (":path", "/".into()),
            ],
        ),
        ("unknown pseudo-header", with(&[(":foo", "bar")])),
        (
            "repeated :path",
            vec![
                (":method", "GET".into()),
                (":scheme", "http".into()),
                (":path", "/".into()),
                (":path", "/x".into()),
            ],
        ),
        (
            "missing :path",
            vec![(":method", "GET".into()), (":scheme", "http".into())],
        ),
        (
            "missing :method",
            vec![(":scheme", "http".into()), (":path", "/".into())],
        ),
        (
            ":path not absolute",
            vec![
                (":method", "GET".into()),
                (":scheme", "http".into()),
                (":path", "x".into()),
                (":authority", "test".into()),
            ],
        ),
        (":status in a request", with(&[(":status", "200")])),
    ];
    for (what, fields) in &cases {
        let mut c = Raw::connect(proxy.addr);
        c.headers(1, fields, true);
        match c.error_on(1) {
            Some((3, PROTOCOL_ERROR)) => {
                assert!(c.serves(3), "{what}: the connection stopped serving")
            }
            // `h2` makes an unknown pseudo-header a connection error, which RFC 9113 §5.4
            // allows for any stream error.
            Some((7, PROTOCOL_ERROR)) if *what == "unknown pseudo-header" => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    // TE: trailers is fine.
    let mut c = Raw::connect(proxy.addr);
    c.headers(1, &with(&[("te", "trailers")]), true);
    let f = c.until(Duration::from_secs(10), |f| {
        f.stream == 1 && (f.kind == 1 || f.kind == 3)
    });
    assert_eq!(f.map(|f| f.kind), Some(1), "TE: trailers was refused");
    let m = proxy.metrics();
    assert!(
        sum_metric(&m, "ringway_h2_stream_errors_total", &[]) >= 4.0,
        "the stream errors ringway found itself are counted"
    );
}

#[test]
fn content_length_must_match_the_data_received() {
    let o = origin();
    let proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    let post = |cl: &str| {
        vec![
            (":method", "POST".into()),
            (":scheme", "http".into()),
            (":path", "/echo".into()),
            (":authority", "test".into()),
            ("content-length", cl.to_string()),
        ]
    };
    // Less DATA than announced, then END_STREAM.
    let mut c = Raw::connect(proxy.addr);
    c.headers(1, &post("10"), false);
    c.send(&frame(0, 1, 1, b"abc"));
    assert_eq!(c.reset_code(1), Some(PROTOCOL_ERROR), "short body");
    assert!(c.serves(3));
    // More DATA than announced.
    let mut c = Raw::connect(proxy.addr);
    c.headers(1, &post("2"), false);
    c.send(&frame(0, 1, 1, b"abcdef"));
    assert_eq!(c.reset_code(1), Some(PROTOCOL_ERROR), "long body");
    assert!(c.serves(3));
    // The backend has answered already (a 1 MiB response, held by the client's 64 KiB
    // window, so the stream is still open): DATA past the content-length is still a
    // stream error.
    let mut c = Raw::connect(proxy.addr);
    let mut fields = post("4");
    fields[2].1 = "/size/1048576".into();
    c.headers(1, &fields, false);
    c.send(&frame(0, 0, 1, b"abcd"));
    let answered = c.until(Duration::from_secs(10), |f| f.stream == 1 && f.kind == 1);
    assert_eq!(
        answered.map(|f| f.kind),
        Some(1),
        "no answer to a complete body"
    );
    c.send(&frame(0, 1, 1, b"more"));
    let f = c.until(Duration::from_secs(10), |f| f.kind == 3 && f.stream == 1);
    let code = f.map(|f| u32::from_be_bytes(f.payload[..4].try_into().unwrap()));
    assert_eq!(
        code,
        Some(PROTOCOL_ERROR),
        "DATA past content-length after the answer"
    );
    assert!(c.serves(3));
}

#[test]
fn nothing_more_is_sent_on_a_stream_the_client_reset() {
    let o = origin();
    let proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    let mut c = Raw::connect(proxy.addr);
    // 1 MiB at the client's initial 64 KiB window: the proxy stops after 65,535 bytes.
    c.headers(1, &get("/size/1048576"), true);
    let mut got = 0usize;
    while got < 65_535 {
        let f = c
            .until(Duration::from_secs(10), |f| f.stream == 1 && f.kind == 0)
            .expect("DATA on stream 1");
        assert_eq!(f.kind, 0, "{f:?}");
        got += f.payload.len();
    }
    // Reset it, then open both windows wide: a proxy that ignored the reset would send.
    c.send(&frame(3, 0, 1, &8u32.to_be_bytes()));
    c.send(&frame(8, 0, 1, &(1u32 << 20).to_be_bytes()));
    c.send(&frame(8, 0, 0, &(1u32 << 20).to_be_bytes()));
    c.headers(3, &get("/"), true);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut done3 = false;
    while Instant::now() < deadline {
        let Some(f) = c.next(Duration::from_millis(500)) else {
            if done3 {
                break;
            }
            continue;
        };
        assert!(
            f.stream != 1 || f.kind == 8,
            "a frame on the reset stream: {f:?}"
        );
        if f.stream == 3 && f.flags & 1 == 1 {
            done3 = true;
        }
    }
    assert!(done3, "stream 3 was not served");
}

#[test]
fn a_broken_preface_gets_goaway_protocol_error_not_an_http1_answer() {
    let o = origin();
    let proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    for raw in [
        &b"PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r",
    ] {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.write_all(raw).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        assert!(!all.starts_with(b"HTTP/1"), "an HTTP/1.1 answer: {all:?}");
        // SETTINGS, then GOAWAY(0, PROTOCOL_ERROR).
        assert_eq!(
            all,
            [
                &[0u8, 0, 0, 4, 0, 0, 0, 0, 0][..],
                &[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
            ]
            .concat(),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // An HTTP/1.1 request that merely looks like it is still HTTP/1.1's.
    let mut c = proxy.connect();
    c.send(b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.try_read_response(false).expect("an HTTP/1.1 answer");
    assert!((400..=505).contains(&r.status));
    let m = proxy.metrics();
    assert!(sum_metric(&m, "ringway_h2_connection_errors_total", &[]) >= 2.0);
}

#[test]
fn oversized_header_lists_and_continuation_floods_are_bounded() {
    let o = origin();
    let proxy = Proxy::start(&[
        "--backend",
        &o.addr().to_string(),
        "--max-head",
        "16KiB",
        "--access-log",
        "off",
    ]);
    let rss_before = proxy.rss();
    // A header list over --max-head: refused (431 or a reset), the connection serves on.
    let mut c = Raw::connect(proxy.addr);
    let mut blockb = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "t"),
    ]);
    for i in 0..300 {
        blockb.extend(lit(&format!("x-pad-{i}"), &"v".repeat(100)));
    }
    // HEADERS + CONTINUATION in 8 KiB pieces.
    let pieces: Vec<&[u8]> = blockb.chunks(8192).collect();
    for (i, p) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let (kind, flags) = if i == 0 { (1, 0x1) } else { (9, 0) };
        c.send(&frame(kind, flags | if last { 0x4 } else { 0 }, 1, p));
    }
    let f = c
        .until(Duration::from_secs(10), |f| {
            f.stream == 1 && (f.kind == 1 || f.kind == 3)
        })
        .expect("an answer to the oversized head");
    assert!(f.kind == 1 || f.kind == 3, "{f:?}");
    assert!(
        c.serves(3),
        "the connection stopped serving after an oversized head"
    );

    // A CONTINUATION flood: HEADERS without END_HEADERS, then CONTINUATION for ever.
    let mut c = Raw::connect(proxy.addr);
    c.send(&frame(
        1,
        0x1,
        1,
        &block(&[(":method", "GET"), (":path", "/")]),
    ));
    let piece = frame(9, 0, 1, &lit("x-flood", &"f".repeat(100)).repeat(100));
    let mut sent = 0usize;
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && sent < (256 << 20) {
        if c.s.write_all(&piece).is_err() {
            closed = true;
            break;
        }
        sent += piece.len();
    }
    let goaway = c.until(Duration::from_secs(5), |f| f.kind == 7);
    eprintln!(
        "CONTINUATION flood cut after {} KiB: {goaway:?}",
        sent / 1024
    );
    assert!(
        closed || goaway.is_some(),
        "a CONTINUATION flood of {sent} bytes was not cut"
    );
    if let Some(g) = goaway {
        assert_eq!(g.kind, 7);
        let code = u32::from_be_bytes(g.payload[4..8].try_into().unwrap());
        // ENHANCE_YOUR_CALM, PROTOCOL_ERROR or COMPRESSION_ERROR: never NO_ERROR.
        assert!([1, 9, 11].contains(&code), "GOAWAY code {code}");
    }
    assert!(
        sent < (64 << 20),
        "{sent} bytes of CONTINUATION were read before the cut"
    );
    assert!(
        proxy.rss() < rss_before + (64 << 20),
        "RSS grew by more than 64 MiB"
    );
    // Others unaffected.
    assert_eq!(proxy.connect().get("/").status, 200);
}

#[test]
fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let o = origin();
    let proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    let mut c = Raw::connect(proxy.addr);
    let fields = vec![
        (":method", "POST".to_string()),
        (":scheme", "http".into()),
        (":path", "/echo".into()),
        (":authority", "test".into()),
        ("content-length", "5".into()),
        ("expect", "100-continue".into()),
    ];
    c.headers(1, &fields, false);
    // The interim response comes before any body byte is sent (a client waits for it).
    let first = c
        .until(Duration::from_secs(5), |f| {
            f.stream == 1 && (f.kind == 1 || f.kind == 3)
        })
        .expect("an interim response");
    assert_eq!((first.kind, first.flags & 1), (1, 0), "{first:?}");
    c.send(&frame(0, 1, 1, b"hello"));
    let mut body = Vec::new();
    let mut heads = 1;
    loop {
        let f = c
            .until(Duration::from_secs(10), |f| f.stream == 1)
            .expect("the final response");
        assert_ne!(f.kind, 3, "reset: {f:?}");
        if f.kind == 1 {
            heads += 1;
        }
        if f.kind == 0 {
            body.extend_from_slice(&f.payload);
        }
        if f.flags & 1 == 1 {
            break;
        }
    }
    assert_eq!(heads, 2, "one 100, one final head");
    assert_eq!(body, b"hello");
}

#[test]
fn zero_window_readers_are_reset_and_hold_little_memory() {
    let o = origin();
    let proxy = Proxy::start(&[
        "--backend",
        &o.addr().to_string(),
        "--timeout-client-idle",
        "1s",
        "--access-log",
        "off",
    ]);
    let rss_before = proxy.rss();
    // A client that announces a zero stream window and never opens it.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(4, 0, 0, &[0, 4, 0, 0, 0, 0])); // SETTINGS_INITIAL_WINDOW_SIZE = 0
    s.write_all(&hello).unwrap();
    let mut c = Raw { s, buf: Vec::new() };
    c.send(&frame(4, 1, 0, &[]));
    const STREAMS: u32 = 200;
    for i in 0..STREAMS {
        c.headers(2 * i + 1, &get("/size/1048576"), true);
    }
    // Every stream gets its head, no DATA, and RST_STREAM(CANCEL) once the client has
    // given no window for --timeout-client-idle.
    let mut reset = std::collections::BTreeSet::new();
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reset.len() < STREAMS as usize && Instant::now() < deadline {
        let Some(f) = c.next(Duration::from_secs(5)) else {
            break;
        };
        assert!(
            f.kind != 0 || f.payload.is_empty(),
            "DATA beyond a zero window: {f:?}"
        );
        if f.kind == 3 {
            let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
            assert_eq!(code, 8, "CANCEL expected: {f:?}");
            reset.insert(f.stream);
            peak = peak.max(proxy.rss());
        }
    }
    assert_eq!(reset.len(), STREAMS as usize, "streams reset");
    let grown = peak.saturating_sub(rss_before);
    eprintln!(
        "{STREAMS} zero-window streams of 1 MiB: RSS +{} KiB",
        grown / 1024
    );
    // 200 MiB of responses are waiting at the origin; the proxy holds a bounded part.
    assert!(grown < 48 << 20, "RSS grew by {grown} bytes");
    assert_eq!(proxy.connect().get("/").status, 200);
}

/// The kinds of the field representations in an HPACK block (RFC 7541 §6), in order:
/// `'i'` indexed, `'+'` literal with incremental indexing (added to the table), `'-'`
/// literal without or never indexed, `'s'` a table size update. Values are skipped by
/// their lengths, so Huffman-coded strings need no decoding.
fn representations(block: &[u8]) -> Vec<char> {
    fn int(b: &[u8], i: &mut usize, prefix: u32) -> usize {
        let max = (1usize << prefix) - 1;
        let mut v = b[*i] as usize & max;
        *i += 1;
        if v == max {
            let mut shift = 0;
            loop {
                let c = b[*i] as usize;
                *i += 1;
                v += (c & 0x7f) << shift;
                shift += 7;
                if c & 0x80 == 0 {
                    break;
                }
            }
        }
        v
    }
    fn string(b: &[u8], i: &mut usize) {
        let len = int(b, i, 7);
        *i += len;
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < block.len() {
        let first = block[i];
        if first & 0x80 != 0 {
            int(block, &mut i, 7);
            out.push('i');
        } else if first & 0xc0 == 0x40 {
            if int(block, &mut i, 6) == 0 {
                string(block, &mut i);
            }
            string(block, &mut i);
            out.push('+');
        } else if first & 0xe0 == 0x20 {
            int(block, &mut i, 5);
            out.push('s');
        } else {
            if int(block, &mut i, 4) == 0 {
                string(block, &mut i);
            }
            string(block, &mut i);
            out.push('-');
        }
    }
    out
}

#[test]
fn a_response_field_that_changes_every_time_stops_filling_the_hpack_table() {
    // ringway-origin's `x-origin-req` counts the requests on its connection: a new
    // value in every response, like a request id. The encoder used to add each one to
    // its dynamic table and compare every later value with all of them (vendor/h2
    // `MAX_SAME_NAME`): past a few entries of the name, a new value goes out as a
    // literal that is not added, so a response adds nothing after the first few.
    let o = origin();
    let proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    let mut c = Raw::connect(proxy.addr);
    let mut added = Vec::new();
    for n in 0..40u32 {
        let stream = 1 + 2 * n;
        c.headers(stream, &get("/"), true);
        let f = c
            .until(Duration::from_secs(10), |f| {
                f.stream == stream && f.kind == 1
            })
            .unwrap_or_else(|| panic!("no response HEADERS on stream {stream}"));
        assert_eq!(f.kind, 1, "{f:?}");
        assert_ne!(f.flags & 0x4, 0, "one HEADERS frame (END_HEADERS): {f:?}");
        let reps = representations(&f.payload);
        added.push(reps.iter().filter(|&&r| r == '+').count());
        // The body, so the stream ends before the next one starts.
        c.until(Duration::from_secs(10), |f| {
            f.stream == stream && f.kind == 0 && f.flags & 0x1 != 0
        })
        .expect("response body");
    }
    assert!(
        added[0] >= 1,
        "the first response adds its fields to the table: {added:?}"
    );
    assert!(
        added[10..].iter().all(|&a| a == 0),
        "responses after the first ten add nothing to the HPACK table: {added:?}"
    );
}
