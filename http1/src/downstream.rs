//! The response head ringway sends to the client, rewritten from the backend's.
//!
//! [`write_response_downstream`] re-reads the head `parse_response` accepted and re-emits it
//! as `HTTP/1.1` with CRLF line ends: the backend's status and reason phrase, end-to-end
//! fields unchanged and in order, connection-specific fields removed (the same rules as
//! `rewrite.rs`), framing fields matching the parsed [`Framing`], `Via` appended and the
//! client-side `Connection` decided here. It must never emit a framing the client would read
//! differently from what the proxy relays, and never allocate (it only extends `out`).
//!
//! Decisions: the status line is always `HTTP/1.1` (RFC 9110 §2.5: a server sends its own
//! highest version; HTTP/1.0 clients accept it). A chunked body for an HTTP/1.0 client is
//! de-chunked by the proxy ([`ResponseHead::needs_dechunk`]), so `Transfer-Encoding` is
//! dropped and the connection closes after the body. 1xx and 204 lose any framing fields;
//! HEAD and 304 responses keep theirs (they describe the representation).

use httparse::Header;

use super::fields::{name_is, named_in_connection, ConnectionOptions};
use super::rewrite::{is_hop_by_hop, push_combined, via_parts};
use super::{
    header_slots, parse_response_into, push_field, push_field_parts, push_u64, Framing,
    ResponseHead,
};

impl ResponseHead {
    /// The body must be de-chunked for this client: a chunked response to an HTTP/1.0
    /// client, which cannot read chunked coding. [`write_response_downstream`] then drops
    /// `Transfer-Encoding` and closes after the body; the proxy relays the payload with
    /// `ChunkedScanner::feed_decoded` and closes the client connection at its end.
    pub fn needs_dechunk(&self, client_minor: u8) -> bool {
        client_minor == 0 && self.framing == Framing::Chunked
    }
}

/// Append to `out` the head of `head`'s response as it goes to the client. `buf` must be
/// the buffer `head` was parsed from.
///
/// `Connection: close` is sent when `!client_keep_alive`, when the body is read until the
/// backend closes (the client can only find its end by the close) and when the body must
/// be de-chunked for an HTTP/1.0 client; otherwise `Connection: keep-alive` for an
/// HTTP/1.0 client. A 1xx response gets no `Connection` field, except 101, which keeps
/// `Upgrade` and gets `Connection: upgrade`. The proxy must not relay a 1xx other than 101
/// to an HTTP/1.0 client (RFC 9110 §15.2).
pub fn write_response_downstream(
    buf: &[u8],
    head: &ResponseHead,
    via: &str,
    client_keep_alive: bool,
    client_minor: u8,
    out: &mut Vec<u8>,
) {
    let mut slots = header_slots();
    let Some((resp, Ok(httparse::Status::Complete(_)))) = buf
        .get(..head.head_len)
        .map(|b| parse_response_into(b, &mut slots))
    else {
        debug_assert!(
            false,
            "write_response_downstream: buffer does not hold the parsed head"
        );
        return;
    };
    let reason = resp.reason.unwrap_or("");
    let headers: &[Header<'_>] = resp.headers;
    let switching = head.status == 101;
    let interim = head.is_interim() && !switching;
    let dechunk = head.needs_dechunk(client_minor);
    // 1xx and 204 must not carry framing fields; HEAD and 304 keep them as metadata.
    let no_framing_fields = head.is_interim() || head.status == 204;

    out.reserve(head.head_len + 64);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");

    let mut conn = ConnectionOptions::default();
    for h in headers.iter().filter(|h| name_is(h.name, "connection")) {
        conn.add(h.value);
    }
    let nominated = |name: &str| conn.names_fields && named_in_connection(headers, name);
    let via_dropped = nominated("via");
    let via = via_parts(via, head.minor);
    let (mut wrote_via, mut wrote_cl) = (false, false);

    for h in headers {
        let name = h.name;
        if is_hop_by_hop(name) {
            if switching && name_is(name, "upgrade") {
                push_field(out, name.as_bytes(), h.value);
            }
            continue;
        }
        match name.len() {
            3 if name_is(name, "via") => {
                if !wrote_via && !via_dropped {
                    push_combined(out, b"Via", headers, "via", &via);
                    wrote_via = true;
                }
                continue;
            }
            14 if name_is(name, "content-length") => {
                // Length(n) is re-emitted once below; with TE present, TE won and CL goes.
                if head.framing == Framing::Empty && !no_framing_fields && !wrote_cl {
                    push_field(out, name.as_bytes(), h.value);
                    wrote_cl = true;
                }
                continue;
            }
            17 if name_is(name, "transfer-encoding") => {
                if !no_framing_fields && !dechunk {
                    push_field(out, name.as_bytes(), h.value);
                }
                continue;
            }
            _ => {}
        }
        if nominated(name) {
            continue;
        }
        push_field(out, name.as_bytes(), h.value);
    }

    if let Framing::Length(n) = head.framing {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, n);
        out.extend_from_slice(b"\r\n");
    }
    if switching {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if !interim {
        let close = !client_keep_alive || head.framing == Framing::UntilClose || dechunk;
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if client_minor == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    if !wrote_via {
        push_field_parts(out, b"Via", &via);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::{parse_response, Method};
    use super::*;

    fn downstream(raw: &str, m: Method, keep_alive: bool, client_minor: u8) -> String {
        let h = parse_response(raw.as_bytes(), m, 8192).unwrap().unwrap();
        let mut out = Vec::new();
        write_response_downstream(
            raw.as_bytes(),
            &h,
            "1.1 ringway",
            keep_alive,
            client_minor,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let back = parse_response(text.as_bytes(), m, 8192).unwrap().unwrap();
        assert_eq!(back.status, h.status);
        assert_eq!(back.head_len, text.len());
        text
    }

    #[test]
    fn response_basics() {
        let out = downstream(
            "HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nServer: o\r\n\r\n",
            Method::Get,
            true,
            1,
        );
        assert_eq!(out, "HTTP/1.1 200 Fine Thanks\r\nServer: o\r\nContent-Length: 2\r\nVia: 1.1 ringway\r\n\r\n");
        let out = downstream(
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nVia: 1.1 x\r\n\r\n",
            Method::Get,
            false,
            1,
        );
        assert!(out.contains("Connection: close\r\n"));
        assert!(out.contains("Via: 1.1 x, 1.0 ringway\r\n"), "{out}");
        let out = downstream(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            Method::Get,
            true,
            0,
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(out.contains("Connection: keep-alive\r\n"));
        let out = downstream(
            "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
            Method::Get,
            true,
            1,
        );
        assert!(out.starts_with("HTTP/1.1 404 \r\n"));
    }

    #[test]
    fn response_framing_fields() {
        let out = downstream(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            Method::Get,
            true,
            1,
        );
        assert!(out.contains("Transfer-Encoding: gzip, chunked\r\n"));
        assert!(!out.contains("Content-Length"));
        assert!(
            !out.contains("Connection"),
            "client side may stay open: {out}"
        );
        let out = downstream("HTTP/1.1 200 OK\r\nServer: o\r\n\r\n", Method::Get, true, 1);
        assert!(
            out.contains("Connection: close\r\n"),
            "until-close body: {out}"
        );
        let out = downstream(
            "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
            Method::Head,
            true,
            1,
        );
        assert!(out.contains("Content-Length: 42\r\n"));
        let out = downstream(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\nContent-Length: 42\r\n\r\n",
            Method::Get,
            true,
            1,
        );
        assert_eq!(out.matches("Content-Length: 42").count(), 1);
        let out = downstream(
            "HTTP/1.1 204 No Content\r\nContent-Length: 42\r\n\r\n",
            Method::Get,
            true,
            1,
        );
        assert!(!out.contains("Content-Length"));
    }

    #[test]
    fn chunked_to_http10_client_is_dechunked_and_closed() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let h = parse_response(raw.as_bytes(), Method::Get, 8192)
            .unwrap()
            .unwrap();
        assert!(h.needs_dechunk(0) && !h.needs_dechunk(1));
        let out = downstream(raw, Method::Get, true, 0);
        assert!(!out.contains("Transfer-Encoding"));
        assert!(out.contains("Connection: close\r\n"));
    }

    #[test]
    fn interim_and_switching() {
        let out = downstream("HTTP/1.1 100 Continue\r\n\r\n", Method::Put, false, 1);
        assert_eq!(out, "HTTP/1.1 100 Continue\r\nVia: 1.1 ringway\r\n\r\n");
        let out = downstream(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n",
            Method::Get,
            true,
            1,
        );
        assert!(out.contains("Upgrade: websocket\r\n") && out.contains("Connection: upgrade\r\n"));
        assert!(out.contains("Sec-WebSocket-Accept: x\r\n"));
    }
}
