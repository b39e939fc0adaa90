//! ringway-http1: the sans-IO HTTP/1.1 codec of the proxy path.
//!
//! This module owns everything ringway knows about HTTP/1.1 *bytes*: parsing a request or
//! response head out of a buffer ([`parse_request`], [`parse_response`]), deciding how the
//! body that follows is framed ([`Framing`]), refusing heads that could be read two ways
//! (request smuggling), writing the heads that go upstream and downstream
//! ([`write_request_upstream`], [`write_response_downstream`], [`write_error`];
//! [`parse_request_for_upstream`] checks a request and writes its upstream head from one
//! parse) and tracking
//! where a body ends ([`ChunkedScanner`], [`LengthCounter`]).
//!
//! It must never do I/O, know about glommio or sockets, allocate while parsing, or panic on
//! input: every function here is a pure function over byte slices that the proxy loop
//! (`engine/src/front/h1.rs`) drives. It is its own crate so that
//! the promise is a compile-time fact: it depends on `httparse` and `thiserror` only, and
//! holds no `unsafe`. Writers only ever *extend* the caller's (reused) output buffer.
//!
//! Files, one concept each: `request.rs` (request head and smuggling checks), `response.rs`
//! (response head and its framing), `fields.rs` (header-value grammar shared by both),
//! `rewrite.rs` (the request head we send upstream, and the hop-by-hop rules),
//! `target.rs` (the normalised request-target: what routes match and what goes upstream),
//! `downstream.rs` (the response head we send to the client), `canned.rs` (the error
//! responses ringway makes itself), `chunked.rs` and `length.rs` (body boundaries).
#![forbid(unsafe_code)]

mod canned;
mod chunked;
mod downstream;
mod fields;
mod length;
mod request;
mod response;
mod rewrite;
mod target;

use std::mem::MaybeUninit;

pub use canned::{reason_phrase, write_error};
pub use chunked::{ChunkError, ChunkedScanner, MAX_TRAILER};
pub use downstream::{write_response_downstream, HeadOut};
pub use length::LengthCounter;
pub use request::{parse_request, parse_request_for_upstream, RequestHead};
pub use response::{parse_response, parse_response_with, ResponseFields, ResponseHead};
pub use rewrite::{write_request_upstream, Forwarded};
pub use target::{route_path, split_absolute, write_normalized_target};

/// Most header fields accepted in one head; one more is [`HeadError::TooLarge`] (431).
pub const MAX_HEADERS: usize = 128;

/// How the body after a head is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (a request without Content-Length or Transfer-Encoding, a response
    /// to HEAD, a 1xx/204/304 response).
    Empty,
    /// Exactly this many bytes (`Content-Length`; `Length(0)` when the header says 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`; the bytes are forwarded verbatim, see [`ChunkedScanner`].
    Chunked,
    /// A response body that ends when the backend closes (never used for requests).
    UntilClose,
}

/// The request method, as far as the proxy cares. Extension methods are `Other`; their
/// bytes are still forwarded unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Connect,
    Patch,
    Other,
}

impl Method {
    /// Methods that may be retried on another connection (RFC 9110 §9.2.2).
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }

    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is an extension method.
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// Why a head was refused. For a request, [`HeadError::status`] is what the client gets
/// (and the proxy then closes); for a response the proxy answers 502 instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed HTTP/1.x head: {0}")]
    Malformed(&'static str),
    #[error("HTTP head too large: no complete head within the limit, or more than {MAX_HEADERS} header fields")]
    TooLarge,
    #[error("ambiguous or invalid message framing: {0}")]
    BadFraming(&'static str),
    #[error("unsupported HTTP version (only HTTP/1.0 and HTTP/1.1 are spoken here)")]
    UnsupportedVersion,
}

impl HeadError {
    /// The status a client gets for a request head refused this way.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) | HeadError::BadFraming(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::UnsupportedVersion => 505,
        }
    }
}

/// Map an `httparse` error. `TooManyHeaders` is a size problem (431), a bad version 505.
fn from_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version => HeadError::UnsupportedVersion,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status code"),
        httparse::Error::Token => HeadError::Malformed("invalid token in the start line"),
    }
}

/// Header slots for one parse, left uninitialised: `httparse` fills them in, so a parse
/// does not start with a 4 KiB memset.
pub(crate) type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

fn header_slots<'b>() -> HeaderSlots<'b> {
    [MaybeUninit::uninit(); MAX_HEADERS]
}

/// Parse a request head into `slots` (no allocation, no initialisation of the slots).
fn parse_request_into<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
) -> (httparse::Request<'h, 'b>, httparse::Result<usize>) {
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, slots);
    (req, status)
}

/// Parse a response head into `slots` (no allocation, no initialisation of the slots).
fn parse_response_into<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
) -> (httparse::Response<'h, 'b>, httparse::Result<usize>) {
    let mut resp = httparse::Response::new(&mut []);
    let status =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots);
    (resp, status)
}

/// Byte offset of `part` inside `buf`; `part` must be a sub-slice of `buf` (as every slice
/// `httparse` hands back is).
fn offset_in(buf: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize)
}

/// The range of `part` inside `buf` (see [`offset_in`]).
fn range_in(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = offset_in(buf, part);
    start..start + part.len()
}

/// Append the decimal digits of `n` without `fmt` machinery.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Append `name: value\r\n`.
#[inline]
fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    push_field_parts(out, name, &[value]);
}

/// A field whose value is the concatenation of `parts` (e.g. a `Via` entry rewritten for
/// an HTTP/1.0 hop), without building the value first. Inlined: most names are constants
/// (`X-Forwarded-For`, `Via`, `Content-Length`), whose copies then need no `memcpy` call.
#[inline(always)]
fn push_field_parts(out: &mut Vec<u8>, name: &[u8], parts: &[&[u8]]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_design() {
        assert_eq!(HeadError::Malformed("x").status(), 400);
        assert_eq!(HeadError::BadFraming("x").status(), 400);
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
    }

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::Get,
            Method::Head,
            Method::Put,
            Method::Delete,
            Method::Options,
            Method::Trace,
        ] {
            assert!(m.is_idempotent(), "{m:?}");
        }
        for m in [Method::Post, Method::Patch, Method::Connect, Method::Other] {
            assert!(!m.is_idempotent(), "{m:?}");
        }
        assert_eq!(Method::from_bytes(b"get"), Method::Other);
        assert_eq!(Method::from_bytes(b"PATCH"), Method::Patch);
    }

    /// What the proxy loop does with a connection's bytes: head, body, next head.
    #[test]
    fn pipelined_requests_with_bodies() {
        let raw: &[u8] = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n\
            PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nwxyz\
            GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut at = 0;
        let mut paths = Vec::new();
        while at < raw.len() {
            let rest = &raw[at..];
            let head = parse_request(rest, 4096).unwrap().unwrap();
            paths.push(String::from_utf8(rest[head.path.clone()].to_vec()).unwrap());
            let body = &rest[head.head_len..];
            let used = match head.framing {
                Framing::Empty => 0,
                Framing::Length(n) => LengthCounter::new(n).feed(body).0,
                Framing::Chunked => {
                    let (used, done) = ChunkedScanner::new().feed(body).unwrap();
                    assert!(done);
                    used
                }
                Framing::UntilClose => unreachable!("requests are never read until close"),
            };
            at += head.head_len + used;
        }
        assert_eq!(paths, ["/a", "/b", "/c"]);
    }

    /// Mutated heads never panic, and whatever is accepted is forwarded as a head that
    /// parses back with the same framing (no smuggling through our own rewrite).
    #[test]
    fn mutated_heads_never_panic_and_rewrite_consistently() {
        let seeds: [&[u8]; 3] = [
            b"POST http://h:1/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: x, close\r\nX: y\r\n\r\n",
            b"PUT /a HTTP/1.0\r\nHost: a\r\nContent-Length: 5, 5\r\nVia: 1.0 a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\nConnection: a\r\na: b\r\n\r\n",
        ];
        let alphabet = b" \t\r\n:,;0159aAzZ-_/\x00\x7f\xff";
        let fwd = Forwarded {
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            proto: "http",
            via: "1.1 ringway",
            host_when_absent: None,
        };
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20_000 {
            let mut m = seeds[round % seeds.len()].to_vec();
            for _ in 0..(1 + next() % 3) {
                let at = (next() as usize) % m.len();
                let b = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => m[at] = b,
                    1 => m.insert(at, b),
                    _ => {
                        m.remove(at);
                    }
                }
            }
            // The proxy's one-parse path agrees with parse + write on every input.
            let mut fused = Vec::new();
            let parsed = parse_request(&m, 4096);
            assert_eq!(
                parse_request_for_upstream(&m, 4096, &fwd, &mut fused),
                parsed
            );
            if let Ok(Some(h)) = &parsed {
                let mut out = Vec::new();
                write_request_upstream(&m, h, &fwd, &mut out);
                assert_eq!(fused, out);
            } else {
                assert!(fused.is_empty());
            }
            // (An HTTP/1.0 request without Host goes up without one: the caller adds it.)
            if let Ok(Some(h)) = parsed.map(|h| h.filter(|h| h.host.is_some())) {
                let mut out = Vec::new();
                write_request_upstream(&m, &h, &fwd, &mut out);
                let back = parse_request(&out, 8192);
                let back = back.unwrap_or_else(|e| {
                    panic!(
                        "{:?} -> {:?}: {e}",
                        String::from_utf8_lossy(&m),
                        String::from_utf8_lossy(&out)
                    )
                });
                let back = back.expect("a complete head");
                assert_eq!(back.framing, h.framing);
                assert_eq!(back.head_len, out.len());
            }
            for method in [Method::Get, Method::Head] {
                let parsed = parse_response(&m, method, 4096);
                // One parse that checks and writes agrees with the two-pass way: same
                // result or error, same bytes, the closure never called on a refusal.
                let fused = parse_response_with(&m, method, 4096, |f| {
                    let mut out = Vec::new();
                    f.write_downstream("1.1 ringway", false, 1, &mut out);
                    (f.bytes().len(), out)
                });
                let fused_head = fused.as_ref().map_err(|e| *e);
                assert_eq!(
                    fused_head.map(|o| o.as_ref().map(|(h, _)| h.clone())),
                    parsed.clone()
                );
                if let (Ok(Some((h, (len, fused)))), Ok(Some(_))) = (&fused, &parsed) {
                    let mut out = Vec::new();
                    write_response_downstream(&m, h, "1.1 ringway", false, 1, &mut out);
                    assert_eq!(*fused, out);
                    assert_eq!(*len, h.head_len);
                }
                if let Ok(Some(h)) = parsed {
                    for client_minor in [0, 1] {
                        let mut out = Vec::new();
                        write_response_downstream(
                            &m,
                            &h,
                            "1.1 ringway",
                            true,
                            client_minor,
                            &mut out,
                        );
                        let back = parse_response(&out, method, 8192).ok().flatten();
                        let back =
                            back.unwrap_or_else(|| panic!("{:?}", String::from_utf8_lossy(&out)));
                        if !h.needs_dechunk(client_minor) {
                            assert_eq!(
                                back.framing,
                                h.framing,
                                "{:?}",
                                String::from_utf8_lossy(&out)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn decimal_formatting() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }
}
