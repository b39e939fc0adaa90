//! Header-field grammar shared by requests and responses: comma-separated lists,
//! `Content-Length` values, `Connection` options and `Host` values.
//!
//! Everything here is a strict, allocation-free reading of RFC 9110/9112. It never decides
//! what to do with a message; `request.rs` and `response.rs` do, and `rewrite.rs` uses the
//! same helpers so that what we parse and what we forward can never disagree.

use httparse::Header;

/// `a` and `b` are the same field name (field names are case-insensitive).
pub(super) fn name_is(name: &str, lit: &str) -> bool {
    name.eq_ignore_ascii_case(lit)
}

/// `name` reads as `lit` to a backend that maps `_` to `-` (CGI and WSGI environments).
pub(super) fn name_loosely_is(name: &str, lit: &str) -> bool {
    name.len() == lit.len()
        && name
            .bytes()
            .zip(lit.bytes())
            .all(|(a, b)| a.eq_ignore_ascii_case(&b) || (a == b'_' && b == b'-'))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The elements of a comma-separated list value (`#element`), OWS trimmed. Empty elements
/// are yielded as empty slices so callers can decide whether to tolerate them.
pub(super) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// Fold one `Content-Length` field value into what was seen so far.
///
/// Accepts `5` and lists of identical values (`5, 5`, RFC 9110 §8.6); refuses empty
/// elements, signs, non-digits, overflow and values that differ from `seen`.
pub(super) fn fold_content_length(value: &[u8], seen: Option<u64>) -> Result<u64, &'static str> {
    let mut acc = seen;
    for item in list_items(value) {
        if item.is_empty() {
            return Err("empty Content-Length");
        }
        let mut n: u64 = 0;
        for &b in item {
            if !b.is_ascii_digit() {
                return Err("Content-Length is not a decimal number");
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or("Content-Length overflows")?;
        }
        match acc {
            Some(prev) if prev != n => return Err("conflicting Content-Length values"),
            _ => acc = Some(n),
        }
    }
    acc.ok_or("empty Content-Length")
}

/// What the `Connection` header fields of a head say.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Some other option: a header field that must not be forwarded.
    pub names_fields: bool,
}

impl ConnectionOptions {
    pub fn add(&mut self, value: &[u8]) {
        for item in list_items(value) {
            if item.is_empty() {
                continue;
            }
            if item.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if item.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if item.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                self.names_fields = true;
            }
        }
    }
}

/// `name` is listed as an option of some `Connection` field in `headers` (RFC 9110
/// §7.6.1: such fields are connection-specific and must not be forwarded).
pub(super) fn named_in_connection(headers: &[Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| name_is(h.name, "connection"))
        .any(|h| list_items(h.value).any(|item| item.eq_ignore_ascii_case(name.as_bytes())))
}

/// A `Host` value is `uri-host [ ":" port ]` (RFC 9110 §7.2): reg-name, IPv4 or an IP
/// literal in brackets. Anything else (spaces, `/`, `@`, `,` of a list, obs-text) is
/// refused, so routing on it and the backend's reading of it cannot differ. Empty is valid
/// (a target without authority).
pub(super) fn valid_host(value: &[u8]) -> bool {
    // Split off the port: after the closing bracket of an IP literal, else at the only ':'.
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..close];
        // IPv6 (or IPvFuture's usual characters); no nested brackets.
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'%' | b'v' | b'V'))
        {
            return false;
        }
        (&b""[..], &value[close + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, &b""[..]),
        }
    };
    let reg_name_ok = host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b';'
                    | b'='
            )
    });
    // port = ":" *DIGIT (RFC 3986 allows an empty port).
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    reg_name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        assert_eq!(fold_content_length(b"0", None), Ok(0));
        assert_eq!(fold_content_length(b"42", None), Ok(42));
        assert_eq!(fold_content_length(b"5, 5", None), Ok(5));
        assert_eq!(fold_content_length(b"5,5", Some(5)), Ok(5));
        assert_eq!(
            fold_content_length(b"18446744073709551615", None),
            Ok(u64::MAX)
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b"5a",
            b"0x5",
            b"5,",
            b",5",
            b"5, 6",
            b"5 5",
            b"18446744073709551616",
            b"1e3",
        ] {
            assert!(
                fold_content_length(bad, None).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(fold_content_length(b"6", Some(5)).is_err());
    }

    #[test]
    fn connection_options() {
        let mut c = ConnectionOptions::default();
        c.add(b"Keep-Alive, Upgrade");
        c.add(b" , X-Foo ");
        assert!(c.keep_alive && c.upgrade && c.names_fields && !c.close);
    }

    #[test]
    fn host_values() {
        for ok in [
            &b""[..],
            b"example.com",
            b"example.com:8080",
            b"[::1]:80",
            b"10.0.0.1",
        ] {
            assert!(valid_host(ok));
        }
        for bad in [
            &b"a b"[..],
            b"a/b",
            b"user@host",
            b"a,b",
            b"\xc3\xa9.com",
            b"[::1",
            b"a]b",
            b"[::1]x",
            b"h:1:2",
            b"h:port",
            b"[zz]",
            b"[]",
        ] {
            assert!(!valid_host(bad));
        }
    }
}
