//! Parsing a backend's response head and deciding how its body is framed.
//!
//! [`parse_response`] follows RFC 9112 §6.3 in order: a response to HEAD and a 1xx, 204 or
//! 304 response have no body; then Transfer-Encoding (chunked last: `Chunked`, otherwise
//! read until close); then Content-Length; otherwise until close. A response that carries
//! both CL and TE is read by TE and the backend connection is not reused. An invalid
//! Content-Length or an ill-formed Transfer-Encoding is a [`HeadError`] (the proxy answers
//! 502 and drops the backend connection). It must never allocate or panic on input.

use httparse::Header;

use super::fields::{fold_content_length, list_items, name_is, ConnectionOptions};
use super::{from_httparse, header_slots, parse_response_into, Framing, HeadError, Method};

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// HTTP/1.<minor>, 0 or 1.
    pub minor: u8,
    /// Bytes of the head including the final empty line.
    pub head_len: usize,
    pub framing: Framing,
    /// The backend connection may be reused after this response's body: HTTP/1.1 without
    /// `Connection: close`, HTTP/1.0 with `Connection: keep-alive`; never when the body is
    /// read until close or the head had both CL and TE.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// An interim (1xx) response: another head follows on the same exchange, except after
    /// `101 Switching Protocols`, where the connection becomes a tunnel.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Parse a response head at the start of `buf`, for a request made with `req_method`.
///
/// Same contract as [`super::parse_request`] for `Ok(None)` and `TooLarge`.
pub fn parse_response(
    buf: &[u8],
    req_method: Method,
    max_head: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    Ok(parse_response_with(buf, req_method, max_head, |_| ())?.map(|(head, ())| head))
}

/// A checked response head with its fields as parsed, handed to the closure of
/// [`parse_response_with`]: what is needed to write the head on
/// ([`ResponseFields::write_downstream`]) without parsing it again.
pub struct ResponseFields<'h, 'b> {
    pub(crate) head: &'h ResponseHead,
    /// The head's bytes (`head.head_len` of them).
    pub(crate) bytes: &'b [u8],
    pub(crate) reason: &'b str,
    pub(crate) headers: &'h [Header<'b>],
}

impl ResponseFields<'_, '_> {
    /// The head as [`parse_response`] returns it.
    pub fn head(&self) -> &ResponseHead {
        self.head
    }

    /// The head's bytes as the backend sent them, up to and including its empty line.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

/// [`parse_response`], and on a complete, valid head calls `f` with it and its fields
/// while they are still parsed: the proxy writes the client's head from them in the same
/// pass ([`ResponseFields::write_downstream`]). `f` is not called for an incomplete or
/// refused head.
pub fn parse_response_with<T>(
    buf: &[u8],
    req_method: Method,
    max_head: usize,
    f: impl FnOnce(&ResponseFields<'_, '_>) -> T,
) -> Result<Option<(ResponseHead, T)>, HeadError> {
    let window = &buf[..buf.len().min(max_head)];
    let mut slots = header_slots();
    let (resp, status) = parse_response_into(window, &mut slots);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if window.len() >= max_head {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(from_httparse(e)),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(HeadError::Malformed("status code out of range"));
    }
    let minor = minor.min(1);

    let mut content_length: Option<u64> = None;
    let mut te_present = false;
    let mut te_chunked_last = false;
    let mut conn = ConnectionOptions::default();
    for h in resp.headers.iter() {
        match h.name.len() {
            10 if name_is(h.name, "connection") => conn.add(h.value),
            14 if name_is(h.name, "content-length") => {
                content_length = Some(
                    fold_content_length(h.value, content_length).map_err(HeadError::BadFraming)?,
                );
            }
            17 if name_is(h.name, "transfer-encoding") => {
                // Fields combine into one list in order; chunked may only be the last coding.
                for coding in list_items(h.value) {
                    if coding.is_empty() {
                        return Err(HeadError::BadFraming("empty transfer coding"));
                    }
                    if te_chunked_last {
                        return Err(HeadError::BadFraming("transfer coding after chunked"));
                    }
                    te_chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                    te_present = true;
                }
            }
            _ => {}
        }
    }

    let mut keep_alive = if minor == 1 {
        !conn.close
    } else {
        conn.keep_alive && !conn.close
    };
    let no_body = req_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else if te_present {
        if content_length.is_some() {
            // RFC 9112 §6.3 rule 3: TE overrides CL, and the connection must not be reused.
            keep_alive = false;
        }
        if te_chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    let head = ResponseHead {
        status,
        minor,
        head_len,
        framing,
        keep_alive,
    };
    let fields = ResponseFields {
        head: &head,
        bytes: &window[..head_len],
        reason: resp.reason.unwrap_or(""),
        headers: resp.headers,
    };
    let out = f(&fields);
    Ok(Some((head, out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn ok(raw: &str, m: Method) -> ResponseHead {
        match parse_response(raw.as_bytes(), m, MAX) {
            Ok(Some(h)) => h,
            other => panic!("{raw:?} -> {other:?}"),
        }
    }

    fn get(raw: &str) -> ResponseHead {
        ok(raw, Method::Get)
    }

    #[test]
    fn length_and_keep_alive() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let h = get(raw);
        assert_eq!((h.status, h.minor, h.head_len), (200, 1, raw.len() - 3));
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        assert!(
            !get("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n").keep_alive
        );
        assert!(!get("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n").keep_alive);
        assert!(
            get("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n")
                .keep_alive
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n").framing,
            Framing::Length(3)
        );
    }

    #[test]
    fn no_body_cases() {
        let with_len = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(ok(with_len, Method::Head).framing, Framing::Empty);
        assert!(ok(with_len, Method::Head).keep_alive);
        let chunked_head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(ok(chunked_head, Method::Head).framing, Framing::Empty);
        for s in [
            "100 Continue",
            "101 Switching Protocols",
            "103 Early Hints",
            "204 No Content",
            "304 Not Modified",
        ] {
            let raw = format!("HTTP/1.1 {s}\r\nContent-Length: 10\r\n\r\n");
            let h = get(&raw);
            assert_eq!(h.framing, Framing::Empty, "{s}");
            assert!(h.keep_alive, "{s}");
        }
        assert!(get("HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(!get("HTTP/1.1 204 No Content\r\n\r\n").is_interim());
    }

    #[test]
    fn until_close() {
        let h = get("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let h = get("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
    }

    #[test]
    fn chunked_and_te_wins() {
        assert_eq!(
            get("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert!(get("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").keep_alive);
        assert_eq!(
            get("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            get("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
                .framing,
            Framing::Chunked
        );
        let h = get("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
    }

    #[test]
    fn bad_framing_is_an_error() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_response(raw.as_bytes(), Method::Get, MAX),
                    Err(HeadError::BadFraming(_))
                ),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn malformed_and_versions() {
        for raw in [
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_response(raw.as_bytes(), Method::Get, MAX),
                    Err(HeadError::Malformed(_))
                ),
                "{raw:?}"
            );
        }
        assert_eq!(
            parse_response(b"HTTP/2 200 OK\r\n\r\n", Method::Get, MAX),
            Err(HeadError::UnsupportedVersion)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", Method::Get, MAX),
            Ok(None)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n", Method::Get, 20),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn never_panics_on_prefixes() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\nabcde";
        for end in 0..raw.len() {
            for max in [0, 1, end, MAX] {
                let _ = parse_response(&raw[..end], Method::Get, max);
            }
        }
    }
}
