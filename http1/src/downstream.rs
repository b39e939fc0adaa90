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
use super::response::ResponseFields;
use super::rewrite::{is_hop_by_hop, push_combined, via_parts};
use super::{header_slots, parse_response_into, push_field_parts, push_u64, Framing, ResponseHead};

/// Where [`write_response_downstream`] puts the head it decides on: HTTP/1.1 text (a
/// `Vec<u8>`), or the fields of another protocol's head (the HTTP/2 front builds its
/// `HEADERS` from them directly, without writing and re-reading text).
pub trait HeadOut {
    /// The status line: the backend's status and reason phrase.
    fn status_line(&mut self, status: u16, reason: &[u8]);
    /// A field whose value is the concatenation of `parts`.
    fn field(&mut self, name: &[u8], parts: &[&[u8]]);
    /// A field whose value is every non-empty value of the `name` fields in `headers`,
    /// then `ours`, joined with `, ` (how `Via` is extended).
    fn combined(&mut self, canonical: &[u8], headers: &[Header<'_>], name: &str, ours: &[&[u8]]);
    /// The head is complete.
    fn end(&mut self);
    /// About `n` bytes are coming (text outputs reserve them).
    fn reserve(&mut self, _n: usize) {}
}

impl HeadOut for Vec<u8> {
    fn status_line(&mut self, status: u16, reason: &[u8]) {
        self.extend_from_slice(b"HTTP/1.1 ");
        push_u64(self, u64::from(status));
        self.push(b' ');
        self.extend_from_slice(reason);
        self.extend_from_slice(b"\r\n");
    }

    // Inlined, like `push_field_parts`: the constant names and values the writer passes
    // (`Content-Length`, `Connection: keep-alive`, `Via`) are then copied without a call.
    #[inline(always)]
    fn field(&mut self, name: &[u8], parts: &[&[u8]]) {
        push_field_parts(self, name, parts);
    }

    fn combined(&mut self, canonical: &[u8], headers: &[Header<'_>], name: &str, ours: &[&[u8]]) {
        push_combined(self, canonical, headers, name, ours);
    }

    fn end(&mut self) {
        self.extend_from_slice(b"\r\n");
    }

    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n);
    }
}

/// `n` in decimal, in `digits`; returns the written tail.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[i..]
}

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
    out: &mut impl HeadOut,
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
    let fields = ResponseFields {
        head,
        bytes: &buf[..head.head_len],
        reason: resp.reason.unwrap_or(""),
        headers: resp.headers,
    };
    fields.write_downstream(via, client_keep_alive, client_minor, out);
}

impl ResponseFields<'_, '_> {
    /// Append to `out` the head as it goes to the client: what
    /// [`write_response_downstream`] writes, from the parse that checked the head
    /// ([`super::parse_response_with`]) rather than a second one.
    pub fn write_downstream(
        &self,
        via: &str,
        client_keep_alive: bool,
        client_minor: u8,
        out: &mut impl HeadOut,
    ) {
        let (head, reason, headers) = (self.head, self.reason, self.headers);
        let switching = head.status == 101;
        let interim = head.is_interim() && !switching;
        let dechunk = head.needs_dechunk(client_minor);
        // 1xx and 204 must not carry framing fields; HEAD and 304 keep them as metadata.
        let no_framing_fields = head.is_interim() || head.status == 204;

        out.reserve(head.head_len + 64);
        out.status_line(head.status, reason.as_bytes());

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
                    out.field(name.as_bytes(), &[h.value]);
                }
                continue;
            }
            match name.len() {
                3 if name_is(name, "via") => {
                    if !wrote_via && !via_dropped {
                        out.combined(b"Via", headers, "via", &via);
                        wrote_via = true;
                    }
                    continue;
                }
                14 if name_is(name, "content-length") => {
                    // Length(n) is re-emitted once below; with TE present, TE won and CL goes.
                    if head.framing == Framing::Empty && !no_framing_fields && !wrote_cl {
                        out.field(name.as_bytes(), &[h.value]);
                        wrote_cl = true;
                    }
                    continue;
                }
                17 if name_is(name, "transfer-encoding") => {
                    if !no_framing_fields && !dechunk {
                        out.field(name.as_bytes(), &[h.value]);
                    }
                    continue;
                }
                _ => {}
            }
            if nominated(name) {
                continue;
            }
            out.field(name.as_bytes(), &[h.value]);
        }

        if let Framing::Length(n) = head.framing {
            let mut digits = [0u8; 20];
            out.field(b"Content-Length", &[decimal(n, &mut digits)]);
        }
        if switching {
            out.field(b"Connection", &[b"upgrade"]);
        } else if !interim {
            let close = !client_keep_alive || head.framing == Framing::UntilClose || dechunk;
            if close {
                out.field(b"Connection", &[b"close"]);
            } else if client_minor == 0 {
                out.field(b"Connection", &[b"keep-alive"]);
            }
        }
        if !wrote_via {
            out.field(b"Via", &via);
        }
        out.end();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_response, parse_response_with, Method};
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
        // The same head written from the parse that checked it.
        let (h2, fused) = parse_response_with(raw.as_bytes(), m, 8192, |f| {
            let mut fused = Vec::new();
            f.write_downstream("1.1 ringway", keep_alive, client_minor, &mut fused);
            fused
        })
        .unwrap()
        .unwrap();
        assert_eq!(h2, h);
        assert_eq!(fused, out);
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
