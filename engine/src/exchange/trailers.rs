//! Trailers between HTTP/1.1's chunked trailer section and HTTP/2's trailing HEADERS.
//! The exchange speaks HTTP/1.1 framing inside (a chunked body is the common form), so a
//! trailer field crosses as text: [`parse`] reads the section a `ChunkedScanner` handed
//! over into fields for `send_trailers`, [`write`] turns HTTP/2 trailers into the last
//! chunk and its section. Fields that must not be trailers (framing, routing,
//! connection-specific: RFC 9110 §6.5.1, RFC 9113 §8.2.2) are dropped both ways.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Largest trailer section passed on (the scanner's own limit).
pub const MAX: usize = ringway_http1::MAX_TRAILER;

/// Fields never passed on as trailers.
const NOT_TRAILERS: [&str; 10] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
    "content-encoding",
];

fn allowed(name: &str) -> bool {
    !NOT_TRAILERS.contains(&name) && !name.starts_with(':')
}

/// The fields of a chunked trailer section (field lines and the final CRLF, as the
/// scanner handed them over). Empty when there were none or they do not parse.
pub fn parse(section: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(section, &mut slots)
    else {
        return map;
    };
    for f in fields {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) else {
            continue;
        };
        if allowed(name.as_str()) {
            map.append(name, value);
        }
    }
    map
}

/// `trailers` less the fields that must not be trailers (as they came from an HTTP/2
/// backend, for an HTTP/2 client): the map itself when none is there, the usual case.
pub fn allowed_only(trailers: HeaderMap) -> HeaderMap {
    if trailers.keys().all(|n| allowed(n.as_str())) {
        return trailers;
    }
    let mut map = HeaderMap::new();
    let mut last = None;
    for (name, value) in trailers {
        // `into_iter` names a field once, then yields its further values with `None`.
        if let Some(n) = name {
            last = Some(n);
        }
        if let Some(n) = last.as_ref().filter(|n| allowed(n.as_str())) {
            map.append(n.clone(), value);
        }
    }
    map
}

/// The end of a chunked body carrying `trailers`: `0\r\n`, the fields, `\r\n`.
pub fn write(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        if allowed(name.as_str()) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forbidden_fields_dropped() {
        let mut map = HeaderMap::new();
        map.append("x-checksum", HeaderValue::from_static("abc"));
        map.append("grpc-status", HeaderValue::from_static("0"));
        map.append("content-length", HeaderValue::from_static("5"));
        let mut out = Vec::new();
        write(Some(&map), &mut out);
        assert_eq!(out, b"0\r\nx-checksum: abc\r\ngrpc-status: 0\r\n\r\n");
        let back = parse(&out[3..]);
        assert_eq!(back.len(), 2);
        assert_eq!(back["grpc-status"], "0");
        let mut out = Vec::new();
        write(None, &mut out);
        assert_eq!(out, b"0\r\n\r\n");
        assert!(parse(b"\r\n").is_empty());
        assert!(parse(b"Transfer-Encoding: chunked\r\n\r\n").is_empty());
        let kept = allowed_only(map.clone());
        assert_eq!(kept.len(), 2);
        assert_eq!(kept["x-checksum"], "abc");
        assert!(!kept.contains_key("content-length"));
        map.remove("content-length");
        assert_eq!(allowed_only(map.clone()), map);
    }
}
