//! Parses one HTTP/1.1 request head (with `httparse`, headers on the stack) into the few
//! facts the origin acts on: route, HEAD or not, version, body framing, keep-alive and
//! `Expect: 100-continue`. It allocates nothing and borrows nothing past the call, so the
//! read buffer is free again as soon as it returns. Ambiguous framing is refused.

use super::route::{route, Route};

/// Most headers one request may carry.
const MAX_HEADERS: usize = 100;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length: n` (n > 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The facts of a parsed request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of blank lines before the request line (tolerated, not part of the head).
    pub skipped: usize,
    /// Length of the head from the request line through the empty line.
    pub len: usize,
    pub route: Route,
    /// The method is `HEAD`: answer with headers only.
    pub is_head: bool,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub framing: Framing,
    /// The connection may stay open after this request.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// The outcome of parsing the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    Complete(RequestHead),
    /// The head is not complete yet.
    Partial,
    /// The head is malformed; answer 400 and close.
    Invalid(&'static str),
}

/// Parses the head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let total = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid("too many headers"),
        Err(_) => return Parsed::Invalid("malformed request head"),
    };
    let skipped = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Invalid("incomplete request line");
    };

    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_length(h.value) else {
                return Parsed::Invalid("bad Content-Length");
            };
            if length.is_some_and(|prev| prev != n) {
                return Parsed::Invalid("conflicting Content-Length headers");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            // Only the final coding decides; anything but chunked last is unframed.
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    let framing = match (has_te, chunked, length) {
        (true, _, Some(_)) => return Parsed::Invalid("both Transfer-Encoding and Content-Length"),
        (true, false, None) => return Parsed::Invalid("Transfer-Encoding without chunked last"),
        (true, true, None) => Framing::Chunked,
        (false, _, Some(0) | None) => Framing::Empty,
        (false, _, Some(n)) => Framing::Length(n),
    };
    let keep_alive = !close && (minor >= 1 || keep_alive_token);
    Parsed::Complete(RequestHead {
        skipped,
        len: total - skipped,
        route: route(path),
        is_head: method == "HEAD",
        minor,
        framing,
        keep_alive,
        expect_continue,
    })
}

fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> RequestHead {
        match parse(s.as_bytes()) {
            Parsed::Complete(h) => h,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_and_keepalive() {
        let h = head("GET / HTTP/1.1\r\nHost: a\r\n\r\nrest");
        assert_eq!(h.len, 27);
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
        let h = head("\r\nPOST /echo HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
        assert_eq!(h.skipped, 2);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(!h.keep_alive);
        assert_eq!(h.route, Route::Echo);
        let h = head("POST / HTTP/1.0\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
        let h = head("HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\nExpect: 100-continue\r\n\r\n");
        assert!(h.keep_alive && h.is_head && h.expect_continue);
    }

    #[test]
    fn refuses_ambiguous_or_broken() {
        for bad in [
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET / HTTP/9.1\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Parsed::Invalid(_)),
                "{bad:?}"
            );
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost"), Parsed::Partial);
    }
}
