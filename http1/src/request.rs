//! Parsing a client's request head, and the request-smuggling defence.
//!
//! [`parse_request`] reads one head with `httparse` into a stack array, then decides the
//! body's framing, keep-alive, `Expect` and `Upgrade` the way RFC 9112 says a server must.
//! It refuses (with [`HeadError`], status 400/431/505, after which the proxy closes) every
//! head a backend could read differently from us: CL together with TE, any TE but a single
//! `chunked`, TE on HTTP/1.0, bad or conflicting Content-Length, obs-fold, missing or
//! repeated Host, odd request-targets. It must never allocate, never panic on input, and
//! never accept a head whose body boundary is ambiguous.

use std::ops::Range;

use super::fields::{fold_content_length, name_is, name_loosely_is, valid_host, ConnectionOptions};
use super::{
    from_httparse, header_slots, parse_request_into, range_in, Framing, HeadError, HeaderSlots,
    Method,
};
use httparse::Header;

/// A parsed request head. Ranges index the buffer given to [`parse_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// HTTP/1.<minor>, 0 or 1.
    pub minor: u8,
    /// Bytes of the head including the final empty line; the body starts here.
    pub head_len: usize,
    /// The request-target, unchanged.
    pub path: Range<usize>,
    /// The Host header value (OWS trimmed, port kept); for an absolute-form target, the
    /// target's authority instead (RFC 9112 §3.2.2). `None` only for HTTP/1.0 without Host.
    pub host: Option<Range<usize>>,
    /// The request body: `Empty` when there is neither Content-Length nor Transfer-Encoding.
    /// Never `UntilClose`.
    pub framing: Framing,
    /// HTTP/1.1: true unless `Connection: close`; HTTP/1.0: false unless `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (case-insensitive).
    pub expect_continue: bool,
    /// HTTP/1.1 with `Connection: upgrade` and an `Upgrade` field that does not offer `h2c`.
    pub upgrade: bool,
}

/// Parse a request head at the start of `buf`.
///
/// `Ok(None)`: incomplete and `buf.len() < max_head`, read more. `Err(TooLarge)`: no
/// complete head within `max_head` bytes, or more than [`super::MAX_HEADERS`] header fields.
/// Bytes after `head_len` (a body, a pipelined request) are not looked at.
pub fn parse_request(buf: &[u8], max_head: usize) -> Result<Option<RequestHead>, HeadError> {
    let mut slots = header_slots();
    Ok(parse_request_parts(buf, max_head, &mut slots)?.map(|(head, ..)| head))
}

/// [`parse_request`], and on a complete head also append its upstream form to `out`
/// (what [`super::write_request_upstream`] writes), from the one parse. A proxy that
/// forwards what it parsed saves the second parse (about 800 instructions for a small
/// request). Nothing is written when the head is incomplete or refused.
pub fn parse_request_for_upstream(
    buf: &[u8],
    max_head: usize,
    fwd: &super::Forwarded<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut slots = header_slots();
    let Some((head, method, headers)) = parse_request_parts(buf, max_head, &mut slots)? else {
        return Ok(None);
    };
    super::rewrite::write_upstream_from(buf, &head, method, headers, fwd, out);
    Ok(Some(head))
}

/// A parsed request head with its method and its fields as `httparse` found them.
type HeadParts<'b, 's> = (RequestHead, &'b [u8], &'s [Header<'b>]);

/// [`parse_request`], also returning the method and the fields as parsed (into `slots`).
fn parse_request_parts<'b, 's>(
    buf: &'b [u8],
    max_head: usize,
    slots: &'s mut HeaderSlots<'b>,
) -> Result<Option<HeadParts<'b, 's>>, HeadError> {
    let window = &buf[..buf.len().min(max_head)];
    let (req, status) = parse_request_into(window, slots);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if window.len() >= max_head {
                Err(HeadError::TooLarge)
            } else if looks_like_h2_preface(window) {
                Err(HeadError::UnsupportedVersion)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::Version) => return Err(version_error(window)),
        Err(e) => return Err(from_httparse(e)),
    };
    // All three are Some on Complete; treat the impossible as malformed, never panic.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let minor = minor.min(1);
    let method_bytes = method.as_bytes();
    let method = Method::from_bytes(method_bytes);
    let target_bytes = target.as_bytes();
    if target_bytes.contains(&b'#') {
        // RFC 9112 §3.2: a request-target has no fragment. Refused rather than stripped,
        // as HAProxy does since 2.8.2: servers disagree on where such a path ends.
        return Err(HeadError::Malformed("fragment (#) in the request-target"));
    }
    let authority = check_target(method, target_bytes)?;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut host: Option<&[u8]> = None;
    let mut conn = ConnectionOptions::default();
    let mut expect_continue = false;
    let mut upgrade_field = false;
    let mut upgrade_h2c = false;

    let headers: &'s [Header<'b>] = req.headers;
    for h in headers.iter() {
        let name = h.name;
        // Dispatch on length first: most fields are none of these.
        match name.len() {
            4 if name_is(name, "host") => {
                if host.is_some() {
                    return Err(HeadError::Malformed("more than one Host header field"));
                }
                if !valid_host(h.value) {
                    return Err(HeadError::Malformed("invalid Host header value"));
                }
                host = Some(h.value);
            }
            6 if name_is(name, "expect") => {
                expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
            }
            7 if name_is(name, "upgrade") => {
                upgrade_field = true;
                // h2c over HTTP/1.1 is refused as an upgrade (the backend side is
                // HTTP/1.1, and after a 101 the client's HTTP/2 bytes would bypass us).
                upgrade_h2c |= h
                    .value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"));
            }
            10 if name_is(name, "connection") => conn.add(h.value),
            14 if name_is(name, "content-length") => {
                content_length = Some(
                    fold_content_length(h.value, content_length).map_err(HeadError::BadFraming)?,
                );
            }
            17 if name_is(name, "transfer-encoding") => {
                if chunked {
                    return Err(HeadError::BadFraming(
                        "more than one Transfer-Encoding header field",
                    ));
                }
                if !h.value.eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::BadFraming(
                        "Transfer-Encoding other than a single `chunked`",
                    ));
                }
                chunked = true;
            }
            14 | 17
                if name_loosely_is(name, "content-length")
                    || name_loosely_is(name, "transfer-encoding") =>
            {
                // A backend behind CGI/WSGI-style `_`-to-`-` mapping would frame by it.
                return Err(HeadError::BadFraming(
                    "framing header name spelt with `_` instead of `-`",
                ));
            }
            _ => {}
        }
    }

    let framing = match (chunked, content_length) {
        (true, Some(_)) => {
            return Err(HeadError::BadFraming(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (true, None) if minor == 0 => {
            return Err(HeadError::BadFraming(
                "Transfer-Encoding in an HTTP/1.0 request",
            ))
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Empty,
    };
    if minor == 1 && host.is_none() {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    let host = match authority {
        Some(a) => Some(range_in(buf, a)),
        None => host.map(|h| range_in(buf, h)),
    };
    let keep_alive = if minor == 1 {
        !conn.close
    } else {
        conn.keep_alive && !conn.close
    };
    let parsed = RequestHead {
        method,
        minor,
        head_len,
        path: range_in(buf, target_bytes),
        host,
        framing,
        keep_alive,
        // RFC 9110 §10.1.1: an HTTP/1.0 request's 100-continue expectation is ignored.
        expect_continue: expect_continue && minor == 1,
        // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored.
        // An Upgrade offering h2c is not passed on (it is hop-by-hop, so it is dropped).
        upgrade: minor == 1 && conn.upgrade && upgrade_field && !upgrade_h2c,
    };
    Ok(Some((parsed, method_bytes, headers)))
}

/// Check the request-target's form (RFC 9112 §3.2) against the method; return the
/// authority of an absolute-form target.
fn check_target(method: Method, t: &[u8]) -> Result<Option<&[u8]>, HeadError> {
    match t {
        [b'/', ..] if method != Method::Connect => Ok(None),
        b"*" if method == Method::Options => Ok(None),
        _ if method == Method::Connect => {
            // authority-form: host ":" port, nothing else.
            let colon = t.iter().rposition(|&b| b == b':');
            match colon {
                Some(i)
                    if i > 0
                        && i + 1 < t.len()
                        && t[i + 1..].iter().all(u8::is_ascii_digit)
                        && valid_host(t) =>
                {
                    Ok(None)
                }
                _ => Err(HeadError::Malformed("CONNECT target must be host:port")),
            }
        }
        _ => {
            let rest =
                strip_scheme(t).ok_or(HeadError::Malformed("request-target form not accepted"))?;
            let end = rest
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            let authority = &rest[..end];
            if authority.is_empty() || authority[0] == b':' || !valid_host(authority) {
                return Err(HeadError::Malformed(
                    "invalid authority in absolute-form target",
                ));
            }
            Ok(Some(authority))
        }
    }
}

fn strip_scheme(t: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&t[scheme.len()..]);
        }
    }
    None
}

/// `httparse` says "bad version" both for `HTTP/2.0` and for a request line with a space
/// in its target (`GET /a b HTTP/1.1`): only the first is a 505, the second is a 400.
///
/// The answer depends only on the bytes up to the version (what follows it may not have
/// arrived yet), so it is the same however the head was split across reads: a version
/// `HTTP/` other than 1.0 and 1.1 is a 505; anything else (a space in the target, junk
/// after a good version) a 400.
fn version_error(window: &[u8]) -> HeadError {
    let line = window
        .split(|&b| b == b'\n')
        .find(|l| !l.is_empty() && *l != b"\r")
        .unwrap_or(b"");
    // The version starts after the second space (method SP target SP).
    let version = line.splitn(3, |&b| b == b' ').nth(2).unwrap_or(b"");
    if version.starts_with(b"HTTP/")
        && !version.starts_with(b"HTTP/1.0")
        && !version.starts_with(b"HTTP/1.1")
    {
        HeadError::UnsupportedVersion
    } else {
        HeadError::Malformed("invalid request line")
    }
}

/// The HTTP/2 connection preface (`PRI * HTTP/2.0`), possibly still incomplete, but at
/// least up to the `2` of its version: `PRI * HTTP/1.1` is a bad request (400), not an
/// HTTP/2 client, and the answer must not depend on how much of it has arrived.
fn looks_like_h2_preface(buf: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    buf.len() >= b"PRI * HTTP/2".len() && PREFACE.starts_with(&buf[..buf.len().min(PREFACE.len())])
}

#[cfg(test)]
mod tests {
    use super::super::MAX_HEADERS;
    use super::*;

    const MAX: usize = 8192;

    fn ok(raw: &str) -> RequestHead {
        match parse_request(raw.as_bytes(), MAX) {
            Ok(Some(h)) => h,
            other => panic!("{raw:?} -> {other:?}"),
        }
    }

    fn err(raw: &str) -> HeadError {
        match parse_request(raw.as_bytes(), MAX) {
            Err(e) => e,
            other => panic!("{raw:?} should be refused, got {other:?}"),
        }
    }

    fn bad_framing(raw: &str) {
        assert!(matches!(err(raw), HeadError::BadFraming(_)), "{raw:?}");
        assert_eq!(err(raw).status(), 400);
    }

    fn malformed(raw: &str) {
        assert!(
            matches!(err(raw), HeadError::Malformed(_)),
            "{raw:?}: {:?}",
            err(raw)
        );
    }

    #[test]
    fn simple_get() {
        let raw = "GET /a?b=c HTTP/1.1\r\nHost: example.com:8080 \r\nUser-Agent: t\r\n\r\nNEXT";
        let h = ok(raw);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.minor, 1);
        assert_eq!(h.head_len, raw.len() - 4);
        assert_eq!(&raw[h.path.clone()], "/a?b=c");
        assert_eq!(&raw[h.host.clone().unwrap()], "example.com:8080");
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive && !h.expect_continue && !h.upgrade);
    }

    #[test]
    fn incomplete_vs_too_large() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n", MAX),
            Ok(None)
        );
        assert_eq!(parse_request(b"", MAX), Ok(None));
        assert_eq!(parse_request(b"GE", MAX), Ok(None));
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        big.resize(100, b'a');
        assert_eq!(parse_request(&big, 100), Err(HeadError::TooLarge));
        assert_eq!(parse_request(&big[..99], 100), Ok(None));
        // A head that completes exactly at the limit is fine, even with more bytes after it.
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODYBYTES";
        let h = parse_request(raw, 27).unwrap().unwrap();
        assert_eq!(h.head_len, 27);
        assert_eq!(parse_request(raw, 26), Err(HeadError::TooLarge));
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    #[test]
    fn header_count_limit() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 1..MAX_HEADERS {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert!(parse_request(raw.as_bytes(), 1 << 20).unwrap().is_some());
        let raw = raw.replacen("\r\n\r\n", "\r\nX-last: v\r\n\r\n", 1);
        assert_eq!(
            parse_request(raw.as_bytes(), 1 << 20),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn versions() {
        assert_eq!(
            err("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(err("PRI * HTTP/2.0\r\n"), HeadError::UnsupportedVersion);
        assert_eq!(
            err("GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(
            err("GET / HTTP/2\r\nHost: a\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(err("GET / HTTP/1.2\r\n").status(), 505);
        // HTTP/0.9: no version at all.
        malformed("GET /\r\n\r\n");
        malformed("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET / HTTP/1.1 x\r\nHost: a\r\n\r\n");
        // An extension method PRI is not taken for the preface until `PRI * ` is seen.
        assert_eq!(parse_request(b"PRI /", MAX), Ok(None));
    }

    /// Found by `fuzz::request_prefix_invariance`: the status for a bad version used to
    /// depend on bytes after the version, so a client got 505 or 400 for the same head
    /// depending on how it arrived (`HTTP/1.2` then `\r\rHost: a\r\n` was a 505 if the
    /// first read ended at the version, a 400 if it did not).
    #[test]
    fn request_prefix_invariance_version_error() {
        let raw = b"GET / HTTP/1.2\r\rHost: a b\r\n\r\n";
        for end in 10..=raw.len() {
            match parse_request(&raw[..end], MAX) {
                Ok(None) => assert!(end < 14, "prefix {end}"),
                got => assert_eq!(got, Err(HeadError::UnsupportedVersion), "prefix {end}"),
            }
        }
        let raw = b"GET / HTTP/2x y\r\nHost: a\r\n\r\n";
        for end in 12..=raw.len() {
            assert_eq!(
                parse_request(&raw[..end], MAX),
                Err(HeadError::UnsupportedVersion),
                "prefix {end}"
            );
        }
        // Junk after a good version is a bad request line, whatever the split.
        let raw = b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n";
        for end in 15..=raw.len() {
            malformed(std::str::from_utf8(&raw[..end]).unwrap());
        }
    }

    /// Found by `fuzz::request_prefix_invariance`: `PRI * ` was taken for the HTTP/2
    /// preface as soon as it arrived, so `PRI * HTTP/1.1` got 505 when the first read
    /// ended early and 400 when it did not.
    #[test]
    fn request_prefix_invariance_h2_preface() {
        let raw = b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n";
        for end in 0..raw.len() {
            match parse_request(&raw[..end], MAX) {
                Ok(None) => {}
                got => assert!(
                    matches!(got, Err(HeadError::Malformed(_))),
                    "{end}: {got:?}"
                ),
            }
        }
        malformed("PRI * HTTP/1.1\r\nHost: a\r\n\r\n");
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for end in 12..=preface.len() {
            assert_eq!(
                parse_request(&preface[..end], MAX),
                Err(HeadError::UnsupportedVersion),
                "{end}"
            );
        }
    }

    #[test]
    fn lowercase_method_is_other() {
        assert_eq!(
            ok("get / HTTP/1.1\r\nHost: a\r\n\r\n").method,
            Method::Other
        );
        assert_eq!(
            ok("PURGE / HTTP/1.1\r\nHost: a\r\n\r\n").method,
            Method::Other
        );
    }

    #[test]
    fn bodies() {
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::Length(0)
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5, 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
                .framing,
            Framing::Length(5)
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked \r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            ok("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n").framing,
            Framing::Length(3)
        );
        // HTTP/1.0 without Content-Length has no body (requests are never read until close).
        assert_eq!(ok("POST / HTTP/1.0\r\n\r\n").framing, Framing::Empty);
    }

    #[test]
    fn smuggling_cl_te() {
        bad_framing(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        bad_framing(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        );
        bad_framing(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        );
    }

    #[test]
    fn smuggling_transfer_encoding() {
        for te in [
            "chunked, gzip",
            "gzip, chunked",
            "gzip",
            "identity",
            "xchunked",
            "chunkedx",
            "chunked, chunked",
            "chunked,",
            ",chunked",
            "\"chunked\"",
            "chunk ed",
            "chunked;q=1",
            "",
        ] {
            bad_framing(&format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n"
            ));
        }
        bad_framing("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
        bad_framing("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
        bad_framing("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        bad_framing("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
    }

    #[test]
    fn smuggling_te_odd_bytes_are_refused() {
        // Vertical tab, form feed, NUL, bare CR: either the field is invalid or TE is not `chunked`.
        for te in [
            "\x0bchunked",
            "chunked\x0b",
            "\x0cchunked",
            "chunked\x00",
            "chun\rked",
        ] {
            let e = err(&format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n"
            ));
            assert_eq!(e.status(), 400, "{te:?}");
        }
        // Whitespace between name and colon (httparse refuses it in requests, RFC 9112 §5.1).
        malformed("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n");
        malformed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n");
        // Space before the first field name would be a continuation of the request line.
        malformed("POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn smuggling_underscored_framing_names() {
        bad_framing("POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n");
        bad_framing(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer_Encoding: chunked\r\n\r\n",
        );
        // Other names with `_` are fine.
        ok("GET / HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\n\r\n");
    }

    #[test]
    fn smuggling_content_length() {
        for cl in [
            "+5",
            "-5",
            "5a",
            "0x5",
            "5.0",
            "",
            "5, 6",
            "18446744073709551616",
            "1 2",
            "5,",
        ] {
            bad_framing(&format!(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\n"
            ));
        }
        bad_framing("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        bad_framing(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5, 7\r\n\r\n",
        );
    }

    #[test]
    fn obs_fold_and_bad_bytes() {
        malformed("GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n\ttwo\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a\r\nX-A: o\0ne\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a\r\nX-A: o\rne\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a\r\nX A: one\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a\r\n: one\r\n\r\n");
        malformed("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET  / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn bare_lf_in_a_value_ends_the_line() {
        // httparse accepts bare LF as a line end (RFC 9112 §2.2 MAY); the rewritten head
        // always uses CRLF, so the backend sees the same fields we do.
        let h = ok("GET / HTTP/1.1\nHost: a\nX-A: b\n\n");
        assert_eq!(h.head_len, 31);
    }

    #[test]
    fn targets() {
        assert_eq!(
            ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").method,
            Method::Options
        );
        malformed("GET * HTTP/1.1\r\nHost: a\r\n\r\n");
        let raw = "GET http://Example.com:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n";
        let h = ok(raw);
        assert_eq!(&raw[h.host.clone().unwrap()], "Example.com:81");
        assert_eq!(&raw[h.path.clone()], "http://Example.com:81/x?y");
        let raw = "GET HTTPS://b.example HTTP/1.0\r\n\r\n";
        assert_eq!(&raw[ok(raw).host.unwrap()], "b.example");
        let raw = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
        assert_eq!(ok(raw).method, Method::Connect);
        malformed("CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("CONNECT example.com: HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET http://:80/x HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET http://us@er/x HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET x HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn host_rules() {
        malformed("GET / HTTP/1.1\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a\r\nhOsT: b\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
        malformed("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n");
        malformed("GET http://a/ HTTP/1.1\r\n\r\n");
        assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").host, None);
        let raw = "GET / HTTP/1.1\r\nHost:\r\n\r\n";
        assert_eq!(ok(raw).host.map(|r| r.len()), Some(0));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            !ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n").keep_alive
        );
        assert!(
            !ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n")
                .keep_alive
        );
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn expect_and_upgrade() {
        assert!(
            ok("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert!(!ok("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n").expect_continue);
        assert!(!ok("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        let ws = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(ok(ws).upgrade);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").upgrade);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n").upgrade);
        assert!(!ok("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
    }

    #[test]
    fn h2c_is_not_an_upgrade_and_fragments_are_refused() {
        let h2c = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n";
        assert!(!ok(h2c).upgrade);
        let both =
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket, H2C\r\n\r\n";
        assert!(!ok(both).upgrade);
        malformed("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n");
        malformed("GET http://h/#x HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn pipelined_requests_are_left_alone() {
        let raw = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = parse_request(raw, MAX).unwrap().unwrap();
        let h2 = parse_request(&raw[h.head_len..], MAX).unwrap().unwrap();
        assert_eq!(&raw[h.head_len..][h2.path], b"/2");
    }

    #[test]
    fn never_panics_on_prefixes() {
        let raw = b"POST http://h:1/p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: x, close\r\n\r\n";
        for end in 0..raw.len() {
            assert_eq!(parse_request(&raw[..end], MAX), Ok(None), "prefix {end}");
            for max in 0..=end {
                let _ = parse_request(&raw[..end], max);
            }
        }
    }
}
