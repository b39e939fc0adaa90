//! The PROXY protocol (v1 text and v2 binary, HAProxy's spec) on listeners that expect it
//! (`--accept-proxy`): a load balancer in front says who the client is before the
//! client's first byte, and that address is what logs, `X-Forwarded-For` and hashing see.
//!
//! Parsing is the `ppp` crate's; this module reads just enough bytes for it, bounded in
//! size and time. A listener that expects the header refuses a connection without one,
//! or with a malformed or truncated one: it is closed, unanswered, and counted
//! (`ringway_proxy_header_errors_total`). `LOCAL` (v2) and `UNKNOWN` (v1) headers — a
//! balancer's own health checks — keep the socket's peer address.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use ppp::v1;
use ppp::v2;
use ppp::{HeaderResult, PartialResult};

/// The largest header accepted: a v1 line is at most 107 bytes; a v2 header is 16 bytes
/// plus addresses and TLVs, which balancers keep small.
pub const MAX_HEADER: usize = 4096;
/// The longest v1 line, CRLF included (the spec's figure).
const V1_MAX: usize = 107;

/// What a complete header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxied {
    /// The client's address, or `None` for `LOCAL`/`UNKNOWN` (keep the socket's peer).
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the balancer's listener), with `source`.
    pub dest: Option<SocketAddr>,
    /// The header's length: the client's own bytes start after it.
    pub len: usize,
}

/// Why a connection's header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a PROXY header (for example, a client speaking HTTP directly).
    Missing,
    /// Starts like one but is not valid.
    Malformed(String),
    /// The connection closed, or the time ran out, before the header was complete.
    Truncated,
    /// Longer than [`MAX_HEADER`].
    TooLong,
}

/// Parses the header at the start of `data`: `Ok(None)` if more bytes are needed.
pub fn parse(data: &[u8]) -> Result<Option<Proxied>, Refused> {
    let v2_sig: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    let v1_sig: &[u8] = b"PROXY ";
    let n = data.len().min(v2_sig.len());
    let maybe_v2 = data[..n] == v2_sig[..n];
    let m = data.len().min(v1_sig.len());
    let maybe_v1 = data[..m] == v1_sig[..m];
    if !maybe_v1 && !maybe_v2 {
        return Err(Refused::Missing);
    }
    if maybe_v1 {
        // A v1 header is one line: parse it only once its CRLF is there (`ppp` reads a
        // cut line as a bad one).
        let window = &data[..data.len().min(V1_MAX)];
        if !window.windows(2).any(|w| w == b"\r\n") {
            return if data.len() >= V1_MAX {
                Err(Refused::Malformed(format!(
                    "v1: no CRLF within {V1_MAX} bytes"
                )))
            } else {
                Ok(None)
            };
        }
    } else if data.len() < 16 {
        return Ok(None);
    }
    let parsed = HeaderResult::parse(data);
    if parsed.is_incomplete() && !maybe_v1 {
        return if data.len() >= MAX_HEADER {
            Err(Refused::TooLong)
        } else {
            Ok(None)
        };
    }
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let (source, dest) = match h.addresses {
                v1::Addresses::Tcp4(a) => (
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
                    Some(SocketAddr::new(
                        IpAddr::V4(a.destination_address),
                        a.destination_port,
                    )),
                ),
                v1::Addresses::Tcp6(a) => (
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
                    Some(SocketAddr::new(
                        IpAddr::V6(a.destination_address),
                        a.destination_port,
                    )),
                ),
                v1::Addresses::Unknown => (None, None),
            };
            Ok(Some(Proxied {
                source,
                dest,
                len: h.header.len(),
            }))
        }
        HeaderResult::V2(Ok(h)) => {
            let (source, dest) = match (h.command, h.addresses) {
                (v2::Command::Local, _) => (None, None),
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => (
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port)),
                    Some(SocketAddr::new(
                        IpAddr::V4(a.destination_address),
                        a.destination_port,
                    )),
                ),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => (
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port)),
                    Some(SocketAddr::new(
                        IpAddr::V6(a.destination_address),
                        a.destination_port,
                    )),
                ),
                // A unix-socket or unspecified source says nothing about an IP client.
                (v2::Command::Proxy, _) => (None, None),
            };
            if h.len() > MAX_HEADER {
                return Err(Refused::TooLong);
            }
            Ok(Some(Proxied {
                source,
                dest,
                len: h.len(),
            }))
        }
        HeaderResult::V1(Err(e)) => Err(Refused::Malformed(format!("v1: {e}"))),
        HeaderResult::V2(Err(e)) => Err(Refused::Malformed(format!("v2: {e}"))),
    }
}

/// Reads the header at the start of `stream` within `limit`: what it said, and the
/// client's bytes read past it (to be handed to whatever reads the connection next).
pub async fn read_header(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<(Proxied, Vec<u8>), Refused> {
    let mut data: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let _ = stream.set_read_timeout(Some(limit));
    let deadline = glommio::clock::now() + limit;
    loop {
        if let Some(p) = parse(&data)? {
            let rest = data.split_off(p.len);
            return Ok((p, rest));
        }
        let left = deadline.saturating_duration_since(glommio::clock::now());
        if left.is_zero() {
            return Err(Refused::Truncated);
        }
        let _ = stream.set_read_timeout(Some(left));
        // At most what is left of the largest header, so a v1 line's read stops short of
        // the client's own bytes as often as not (they are kept either way).
        let want = chunk.len().min(MAX_HEADER + 1 - data.len().min(MAX_HEADER));
        match stream.read(&mut chunk[..want.max(1)]).await {
            Ok(0) => return Err(Refused::Truncated),
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Refused::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nGET / HTTP/1.1\r\n";
        let p = parse(h).unwrap().unwrap();
        assert_eq!(p.source, Some("192.0.2.7:40000".parse().unwrap()));
        assert_eq!(&h[p.len..p.len + 3], b"GET");
        let h6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n";
        assert_eq!(
            parse(h6).unwrap().unwrap().source,
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().source, None);
    }

    #[test]
    fn v2_proxy_and_local() {
        let h = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "192.0.2.9:5555".parse::<SocketAddr>().unwrap(),
                "198.51.100.1:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let mut with_data = h.clone();
        with_data.extend_from_slice(b"GET /");
        let p = parse(&with_data).unwrap().unwrap();
        assert_eq!(p.source, Some("192.0.2.9:5555".parse().unwrap()));
        assert_eq!(p.len, h.len());
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local).unwrap().unwrap().source, None);
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n";
        for n in 1..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "{n} bytes");
        }
        assert_eq!(parse(b"\r\n\r\n\0\r\n"), Ok(None));
    }

    #[test]
    fn missing_malformed_and_too_long() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Refused::Missing));
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n"), Err(Refused::Missing));
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-address 198.51.100.1 1 2\r\n"),
            Err(Refused::Malformed(_))
        ));
        assert!(matches!(
            parse(b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n"),
            Err(Refused::Malformed(_))
        ));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', MAX_HEADER + 10));
        assert!(parse(&long).is_err());
    }
}
