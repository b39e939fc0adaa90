//! Renders response heads into a connection's reusable write buffer: status line,
//! framing header, `X-Origin-Conn`/`X-Origin-Req`, `Connection`. Integers go through
//! `std::fmt` into a `Vec` that already has capacity, so nothing here allocates per
//! request. The fixed `GET /` head prefix is pre-rendered once per shard.

use std::io::Write;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no `Content-Length` (204, 304).
    None,
    Length(u64),
    Chunked,
    /// No framing header: the body ends when the connection closes (HTTP/1.0 clients).
    UntilClose,
}

/// The reason phrase for `code`.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Whether a response with this status never has a body.
pub fn bodiless(code: u16) -> bool {
    code == 204 || code == 304 || (100..200).contains(&code)
}

/// `HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n`: the pre-rendered prefix of the
/// default response.
pub fn fixed_prefix(len: usize) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n").into_bytes()
}

/// Identity of one response on its connection.
#[derive(Debug, Clone, Copy)]
pub struct Tags {
    pub conn_id: u64,
    pub req_index: u64,
    /// Send `Connection: close` (and close after the response).
    pub close: bool,
    /// The request was HTTP/1.0 and stays open: send `Connection: keep-alive`.
    pub keep_alive_10: bool,
}

/// Appends a status line and framing header to `out`.
pub fn status_and_framing(out: &mut Vec<u8>, code: u16, framing: BodyFraming) {
    let _ = write!(out, "HTTP/1.1 {code} {}\r\n", reason(code));
    match framing {
        BodyFraming::None | BodyFraming::UntilClose => {}
        BodyFraming::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
}

/// Appends the per-response headers and the empty line ending the head.
pub fn finish_head(out: &mut Vec<u8>, tags: Tags, extra: &[u8]) {
    let _ = write!(
        out,
        "X-Origin-Conn: {}\r\nX-Origin-Req: {}\r\n",
        tags.conn_id, tags.req_index
    );
    if tags.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if tags.keep_alive_10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

/// Appends a chunk-size line for a chunk of `len` bytes.
pub fn chunk_line(out: &mut Vec<u8>, len: usize) {
    let _ = write!(out, "{len:x}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_heads() {
        let mut out = Vec::new();
        status_and_framing(&mut out, 204, BodyFraming::None);
        finish_head(
            &mut out,
            Tags {
                conn_id: 7,
                req_index: 2,
                close: true,
                keep_alive_10: false,
            },
            b"",
        );
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nX-Origin-Conn: 7\r\nX-Origin-Req: 2\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        status_and_framing(&mut out, 200, BodyFraming::Length(5));
        assert_eq!(out, fixed_prefix(5));
    }
}
