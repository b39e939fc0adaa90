//! The responses ringway writes itself when something is wrong (DESIGN.md, "What a client
//! gets when something is wrong"): a status line, a short text body and its length.
//!
//! It owns the reason phrases. It must never echo anything from the request (no reflected
//! input) and never allocate beyond extending the caller's buffer.

use super::push_u64;

/// The reason phrase ringway uses for `status` (RFC 9110 §15); "Unknown" when it has none.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Append a complete canned response: `HTTP/1.1 <status> <reason>`, a `text/plain` body
/// (the reason phrase and a newline), its Content-Length, `Cache-Control: no-store`, and
/// `Connection: close` when `close` is true. 1xx/204/304 are written without a body.
pub fn write_error(status: u16, close: bool, out: &mut Vec<u8>) {
    let reason = reason_phrase(status);
    let bodyless = (100..200).contains(&status) || status == 204 || status == 304;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if bodyless {
        out.extend_from_slice(b"\r\n");
        return;
    }
    out.extend_from_slice(
        b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: ",
    );
    push_u64(out, reason.len() as u64 + 1);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::super::{parse_response, Framing, Method};
    use super::*;

    #[test]
    fn canned_responses_parse_back() {
        for status in [400u16, 404, 408, 413, 431, 502, 503, 504, 505] {
            for close in [false, true] {
                let mut out = b"prefix".to_vec();
                write_error(status, close, &mut out);
                let raw = &out[6..];
                let h = parse_response(raw, Method::Get, 4096).unwrap().unwrap();
                assert_eq!(h.status, status);
                assert_eq!(h.keep_alive, !close);
                let body = &raw[h.head_len..];
                assert_eq!(h.framing, Framing::Length(body.len() as u64));
                assert_eq!(body, format!("{}\n", reason_phrase(status)).as_bytes());
            }
        }
        let mut out = Vec::new();
        write_error(502, true, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Cache-Control: no-store\r\nContent-Length: 12\r\n\r\nBad Gateway\n"
        );
    }

    #[test]
    fn bodyless_statuses() {
        let mut out = Vec::new();
        write_error(100, false, &mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}
