//! Property tests ("fuzzing" that runs under plain `cargo test`) for ringway's HTTP/1.1
//! codec: the request and response parsers, the chunked scanner and both head rewriters.
//!
//! Inputs come from structured generators (`fuzz/gen.rs`: request and status lines,
//! header fields with framing, connection and host values, odd separators, bare CR/LF,
//! obs-fold, NULs) mixed with random mutations and fully random bytes. Each property runs a bounded number of
//! cases in `cargo test` (see [`config`]); `PROPTEST_CASES=100000 cargo test -p
//! ringway-http1 --test fuzz` runs them longer. A failure proptest finds is shrunk and its
//! seed saved in `fuzz.proptest-regressions` beside this file (commit it: its cases are
//! replayed first on every run).
//! See `docs/fuzzing.md` for the targets and what they have found.

use std::net::Ipv4Addr;

#[path = "fuzz/gen.rs"]
mod gen;

use gen::*;
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
