//! The request head ringway sends to the backend, rewritten from the client's, and the
//! field rules shared with the response side (`downstream.rs`).
//!
//! [`write_request_upstream`] re-reads the head `parse_request` accepted (same bytes, so the
//! same fields) and re-emits it with CRLF line ends: the request line as HTTP/1.1 with the
//! target unchanged, end-to-end fields unchanged and in order, connection-specific fields
//! removed (RFC 9110 §7.6.1), framing fields normalised to what the parser decided, and
//! the proxy's own fields (`X-Forwarded-For`, `X-Forwarded-Proto`, `Via`) added. It must
//! never emit a framing different from the parsed [`Framing`], never drop `Host` or the
//! framing fields because a `Connection` option names them, never allocate (it only
//! extends `out`).
//!
//! Decisions (RFC 9110/9112), both directions:
//! - `Proxy-Authorization` and `Proxy-Authenticate` are forwarded: §7.6.1 does not list
//!   them as connection-specific, and ringway demands no proxy authentication itself, so
//!   the credentials are for whatever inbound component asked for them.
//! - `Trailer` is forwarded: RFC 9110 (unlike RFC 2616) does not make it hop-by-hop, and
//!   we forward chunked trailers verbatim, so the announcement stays true.
//! - Removed: `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade` (kept for an
//!   upgrade request and a 101 response) and every field a `Connection` option names,
//!   except `Host`, `Content-Length` and `Transfer-Encoding`.
//! - For an absolute-form target, `Host` is replaced by the target's authority (RFC 9112
//!   §3.2.2), so the backend routes on what we routed on. An HTTP/1.0 origin-form request
//!   without Host gets [`Forwarded::host_when_absent`]: the caller decides.
//! - The target goes up normalised to an RFC 3986-equivalent form (`target.rs`): unreserved
//!   escapes decoded, dot-segments removed; routes match a view computed from that form.
//! - `HTTP2-Settings` is removed, and an `Upgrade` offering `h2c` is not an upgrade (the
//!   parser says so): the backend connection stays HTTP/1.1.
//! - `X-Forwarded-For` is appended to (all client values folded into one field, then the
//!   client address); `X-Forwarded-Proto` is replaced; `Expect` is forwarded as-is.
//! - `Via` gets the received protocol of the hop it describes: `1.0 ringway` when the
//!   message came in as HTTP/1.0, whatever version `via` names.

use std::io::Write as _;
use std::net::IpAddr;

use httparse::Header;

use super::fields::{name_is, named_in_connection, ConnectionOptions};
use super::{
    header_slots, parse_request_into, push_field, push_field_parts, push_u64,
    write_normalized_target, Framing, Method, RequestHead,
};

/// What the proxy adds about the client to a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    pub client_ip: IpAddr,
    /// `"http"` or `"https"`: the client's scheme, sent as `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// This hop's `Via` entry, e.g. `"1.1 ringway"`.
    pub via: &'a str,
    /// The `Host` to send for a request that has none (HTTP/1.0 in origin-form): the
    /// request goes up as HTTP/1.1, which requires one (RFC 9112 §3.2). The proxy sends
    /// an empty one, as that section says a client must when the target URI has no
    /// authority. `None` sends none.
    pub host_when_absent: Option<&'a [u8]>,
}

/// Fields that only concern one connection (besides those named in `Connection`).
pub(super) fn is_hop_by_hop(name: &str) -> bool {
    match name.len() {
        2 => name_is(name, "te"),
        7 => name_is(name, "upgrade"),
        // RFC 9113 §3.1 (and 7540 §3.2.1): HTTP2-Settings belongs to the h2c upgrade of
        // one connection; ringway never lets a client upgrade a backend to h2c.
        14 => name_is(name, "http2-settings"),
        10 => name_is(name, "connection") || name_is(name, "keep-alive"),
        16 => name_is(name, "proxy-connection"),
        _ => false,
    }
}

/// Append `Name: v1, v2, ..., ours\r\n` folding every field called `name` into one line
/// (order among same-named fields is kept, which is all RFC 9110 §5.3 asks).
pub(super) fn push_combined(
    out: &mut Vec<u8>,
    canonical: &[u8],
    headers: &[Header<'_>],
    name: &str,
    ours: &[&[u8]],
) {
    out.extend_from_slice(canonical);
    out.extend_from_slice(b": ");
    for h in headers.iter().filter(|h| name_is(h.name, name)) {
        if !h.value.is_empty() {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    for part in ours {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// This hop's Via entry for a message received as HTTP/1.<minor>.
pub(super) fn via_parts(via: &str, minor: u8) -> [&[u8]; 2] {
    match via.as_bytes() {
        [b'1', b'.', b'1', b' ', rest @ ..] if minor == 0 => [b"1.0 ", rest],
        v => [v, b""],
    }
}

/// Format an address as X-Forwarded-For wants it (IPv4-mapped IPv6 as IPv4, no brackets).
fn format_ip(ip: IpAddr, buf: &mut [u8; 48]) -> usize {
    let ip = ip.to_canonical();
    if let IpAddr::V4(v4) = ip {
        // The common case, without `fmt`.
        let mut len = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[len] = b'.';
                len += 1;
            }
            let (h, t, o) = (octet / 100, octet / 10 % 10, octet % 10);
            if h > 0 {
                buf[len] = b'0' + h;
                len += 1;
            }
            if h > 0 || t > 0 {
                buf[len] = b'0' + t;
                len += 1;
            }
            buf[len] = b'0' + o;
            len += 1;
        }
        return len;
    }
    let mut cursor = &mut buf[..];
    let before = cursor.len();
    // 48 bytes hold the longest IPv6 text (45); a failure would only shorten the output.
    let _ = write!(cursor, "{ip}");
    before - cursor.len()
}

/// Append to `out` the head of `head`'s request as it goes to the backend. `buf` must be
/// the buffer `head` was parsed from. See the module docs for what changes.
pub fn write_request_upstream(buf: &[u8], head: &RequestHead, fwd: &Forwarded, out: &mut Vec<u8>) {
    let mut slots = header_slots();
    let parsed = buf.get(..head.head_len).and_then(|b| {
        let (req, status) = parse_request_into(b, &mut slots);
        match (status, req.method) {
            (Ok(httparse::Status::Complete(_)), Some(m)) => Some((m.as_bytes(), &*req.headers)),
            _ => None,
        }
    });
    let Some((method, headers)) = parsed else {
        debug_assert!(
            false,
            "write_request_upstream: buffer does not hold the parsed head"
        );
        return;
    };
    write_upstream_from(buf, head, method, headers, fwd, out);
}

/// [`write_request_upstream`] with the method and fields already parsed from `buf`.
pub(crate) fn write_upstream_from(
    buf: &[u8],
    head: &RequestHead,
    method: &[u8],
    headers: &[Header<'_>],
    fwd: &Forwarded,
    out: &mut Vec<u8>,
) {
    let target = buf.get(head.path.clone()).unwrap_or(b"/");
    let absolute_form =
        head.method != Method::Connect && target.first().is_some_and(|&b| b != b'/' && b != b'*');

    out.reserve(head.head_len + 128);
    out.extend_from_slice(method);
    out.push(b' ');
    if head.method == Method::Connect {
        out.extend_from_slice(target);
    } else {
        write_normalized_target(target, out);
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut conn = ConnectionOptions::default();
    for h in headers.iter().filter(|h| name_is(h.name, "connection")) {
        conn.add(h.value);
    }
    let nominated = |name: &str| conn.names_fields && named_in_connection(headers, name);
    let xff_dropped = nominated("x-forwarded-for");
    let via_dropped = nominated("via");

    let mut ip_buf = [0u8; 48];
    let ip_len = format_ip(fwd.client_ip, &mut ip_buf);
    let ip = &ip_buf[..ip_len];
    let via = via_parts(fwd.via, head.minor);
    let (mut wrote_xff, mut wrote_via) = (false, false);

    for h in headers {
        let name = h.name;
        if is_hop_by_hop(name) {
            if head.upgrade && name_is(name, "upgrade") {
                push_field(out, name.as_bytes(), h.value);
            }
            continue;
        }
        match name.len() {
            4 if name_is(name, "host") => {
                if !absolute_form {
                    push_field(out, name.as_bytes(), h.value);
                }
                continue;
            }
            3 if name_is(name, "via") => {
                if !wrote_via && !via_dropped {
                    push_combined(out, b"Via", headers, "via", &via);
                    wrote_via = true;
                }
                continue;
            }
            14 if name_is(name, "content-length") => continue,
            15 if name_is(name, "x-forwarded-for") => {
                if !wrote_xff && !xff_dropped {
                    push_combined(out, b"X-Forwarded-For", headers, "x-forwarded-for", &[ip]);
                    wrote_xff = true;
                }
                continue;
            }
            17 if name_is(name, "transfer-encoding") || name_is(name, "x-forwarded-proto") => {
                continue
            }
            _ => {}
        }
        if nominated(name) {
            continue;
        }
        push_field(out, name.as_bytes(), h.value);
    }

    if absolute_form {
        if let Some(host) = head.host.clone().and_then(|r| buf.get(r)) {
            push_field(out, b"Host", host);
        }
    }
    if head.host.is_none() {
        if let Some(host) = fwd.host_when_absent {
            push_field(out, b"Host", host);
        }
    }
    match head.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Empty | Framing::UntilClose => {}
    }
    if head.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    }
    if !wrote_xff {
        push_field(out, b"X-Forwarded-For", ip);
    }
    push_field(out, b"X-Forwarded-Proto", fwd.proto.as_bytes());
    if !wrote_via {
        push_field_parts(out, b"Via", &via);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::parse_request;
    use super::*;

    fn fwd() -> Forwarded<'static> {
        Forwarded {
            client_ip: "10.1.2.3".parse().unwrap(),
            proto: "https",
            via: "1.1 ringway",
            host_when_absent: None,
        }
    }

    fn upstream(raw: &str) -> String {
        let h = parse_request(raw.as_bytes(), 8192).unwrap().unwrap();
        let mut out = b"KEEP".to_vec();
        write_request_upstream(raw.as_bytes(), &h, &fwd(), &mut out);
        assert!(out.starts_with(b"KEEP"), "writers only extend");
        // The proxy writes it from its one parse: the same bytes.
        let mut fused = b"KEEP".to_vec();
        let again = crate::parse_request_for_upstream(raw.as_bytes(), 8192, &fwd(), &mut fused);
        assert_eq!(again, Ok(Some(h.clone())));
        assert_eq!(
            fused, out,
            "parse_request_for_upstream and write_request_upstream differ"
        );
        let text = String::from_utf8(out[4..].to_vec()).unwrap();
        // What we send must parse back with the same framing.
        let back = parse_request(text.as_bytes(), 8192).unwrap().unwrap();
        assert_eq!(back.framing, h.framing);
        assert_eq!(back.head_len, text.len());
        assert_eq!(back.minor, 1);
        text
    }

    fn fields(n: usize) -> String {
        (0..n).map(|i| format!("X-F{i}: v{i}\r\n")).collect()
    }

    /// A request written from its one parse (`parse_request_for_upstream`) is written as
    /// `write_request_upstream` writes it after `parse_request`; nothing is written for a
    /// head that is incomplete or refused.
    #[test]
    fn requests_written_from_their_parse_are_written_the_same() {
        let big = "b".repeat(70_000);
        let requests = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
            // httparse skips an empty line before the request line: the method is not at 0.
            "\r\nPURGE /x HTTP/1.1\r\nHost: a\r\nConnection: x-a\r\nX-A: 1\r\n\r\n".into(),
            format!(
                "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n{}\r\n",
                fields(14)
            ),
            format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", fields(60)),
            format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\nX-After: 1\r\n\r\n"),
            "GET / HTTP/1.0\r\nX-Empty:\r\n\r\n".into(),
        ];
        for raw in &requests {
            let buf = raw.as_bytes();
            let mut a = b"KEEP".to_vec();
            let fused = crate::parse_request_for_upstream(buf, 1 << 20, &fwd(), &mut a);
            let head = parse_request(buf, 1 << 20).unwrap().unwrap();
            assert_eq!(fused, Ok(Some(head.clone())), "{:.60}", raw);
            let mut b = b"KEEP".to_vec();
            write_request_upstream(buf, &head, &fwd(), &mut b);
            assert_eq!(a, b, "{:.60}", raw);
            assert!(a[4..].starts_with(raw.trim_start().split(' ').next().unwrap().as_bytes()));
        }
        for refused in ["GET / HTTP/1.1\r\nHost: a\r\n", "GET / HTTP/1.1\r\n\r\n"] {
            let mut out = Vec::new();
            let got = crate::parse_request_for_upstream(refused.as_bytes(), 8192, &fwd(), &mut out);
            assert_eq!(got, parse_request(refused.as_bytes(), 8192));
            assert!(out.is_empty(), "{refused:?} wrote {out:?}");
        }
    }

    #[test]
    fn plain_request() {
        let out = upstream("GET /x?y HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n");
        assert_eq!(
            out,
            "GET /x?y HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\nX-Forwarded-For: 10.1.2.3\r\n\
             X-Forwarded-Proto: https\r\nVia: 1.1 ringway\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_removed_including_nominated() {
        let out = upstream(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, host, content-length\r\n\
             Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n\
             X-Secret: s\r\nx-secret: t\r\nContent-Length: 3\r\nTrailer: X-Sum\r\nProxy-Authorization: Basic x\r\n\r\n",
        );
        for gone in [
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "TE:",
            "Upgrade",
            "X-Secret",
            "x-secret",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("Host: a\r\n"));
        assert!(out.contains("Content-Length: 3\r\n"));
        assert!(out.contains("Trailer: X-Sum\r\n"));
        assert!(out.contains("Proxy-Authorization: Basic x\r\n"));
    }

    #[test]
    fn forwarded_for_and_via_are_appended() {
        let out = upstream(
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\nVia: 1.0 fred\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\
             X-Forwarded-Proto: http\r\nvia: 1.1 p\r\n\r\n",
        );
        assert!(
            out.contains("X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("X-Forwarded-For").count(), 1);
        assert!(
            out.contains("Via: 1.0 fred, 1.1 p, 1.1 ringway\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("Via").count() + out.matches("via").count(), 1);
        assert!(out.contains("X-Forwarded-Proto: https\r\n"));
        assert!(!out.contains("X-Forwarded-Proto: http\r\n"));
        // A client cannot make us drop our own entries by naming them in Connection.
        let out = upstream("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-for, via\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
        assert!(out.contains("X-Forwarded-For: 10.1.2.3\r\n"), "{out}");
        assert!(!out.contains("6.6.6.6"));
        assert!(out.contains("Via: 1.1 ringway\r\n"));
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let h = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        for (ip, text) in [
            ("2001:db8::1", "2001:db8::1"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
        ] {
            let mut out = Vec::new();
            let f = Forwarded {
                client_ip: ip.parse().unwrap(),
                proto: "http",
                via: "1.1 ringway",
                host_when_absent: None,
            };
            write_request_upstream(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &h, &f, &mut out);
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.contains(&format!("X-Forwarded-For: {text}\r\n")),
                "{out}"
            );
        }
    }

    #[test]
    fn framing_is_normalised() {
        let out = upstream(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(out.matches("Content-Length").count(), 1);
        assert!(out.contains("Content-Length: 5\r\n"));
        let out = upstream("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked\r\nExpect: 100-continue\r\n\r\n");
        assert!(out.contains("Transfer-Encoding: chunked\r\n"));
        assert_eq!(out.matches("Transfer-Encoding").count(), 1);
        assert!(out.contains("Expect: 100-continue\r\n"));
    }

    #[test]
    fn http10_request_goes_up_as_11() {
        let out =
            upstream("GET http://b.example:8080/p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(out.starts_with("GET http://b.example:8080/p HTTP/1.1\r\n"));
        assert!(out.contains("Host: b.example:8080\r\n"));
        assert!(out.contains("Via: 1.0 ringway\r\n"), "{out}");
        assert!(!out.contains("Connection"));
        // Origin-form 1.0 without Host: the caller decides; we add none.
        let raw = "GET / HTTP/1.0\r\n\r\n";
        let h = parse_request(raw.as_bytes(), 8192).unwrap().unwrap();
        let mut out = Vec::new();
        write_request_upstream(raw.as_bytes(), &h, &fwd(), &mut out);
        assert!(!String::from_utf8(out).unwrap().contains("Host"));
        // Absolute-form 1.1: the authority replaces Host.
        let out = upstream("GET https://c.example/ HTTP/1.1\r\nHost: evil\r\n\r\n");
        assert!(
            out.contains("Host: c.example\r\n") && !out.contains("evil"),
            "{out}"
        );
    }

    #[test]
    fn h2c_upgrade_goes_up_as_a_plain_request() {
        let out = upstream("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n");
        assert!(!out.to_ascii_lowercase().contains("upgrade"), "{out}");
        assert!(
            !out.to_ascii_lowercase().contains("http2-settings"),
            "{out}"
        );
        let out = upstream("GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAMA\r\n\r\n");
        assert!(
            !out.to_ascii_lowercase().contains("http2-settings"),
            "{out}"
        );
    }

    #[test]
    fn targets_go_up_normalised_and_hostless_10_gets_the_given_host() {
        let out = upstream("GET /a/../%62?x=%61 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(out.starts_with("GET /b?x=%61 HTTP/1.1\r\n"), "{out}");
        let raw = "GET / HTTP/1.0\r\n\r\n";
        let h = parse_request(raw.as_bytes(), 8192).unwrap().unwrap();
        let mut out = Vec::new();
        let f = Forwarded {
            host_when_absent: Some(b""),
            ..fwd()
        };
        write_request_upstream(raw.as_bytes(), &h, &f, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("GET / HTTP/1.1\r\nHost: \r\n"), "{out}");
        assert!(parse_request(out.as_bytes(), 8192).unwrap().is_some());
    }

    #[test]
    fn upgrade_request_keeps_upgrade() {
        let out = upstream("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
        assert!(out.contains("Upgrade: websocket\r\n"));
        assert!(out.contains("Connection: upgrade\r\n"));
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
    }

    #[test]
    fn bare_lf_heads_are_reemitted_with_crlf() {
        let raw = "GET / HTTP/1.1\nHost: a\nX-A: b\n\n";
        let out = upstream(raw);
        assert!(
            out.starts_with("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n"),
            "{out}"
        );
    }
}
