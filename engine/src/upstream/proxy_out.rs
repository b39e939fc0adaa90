//! The PROXY protocol header ringway sends at the start of a backend connection
//! (`send-proxy = "v1" | "v2"` on a backend), HAProxy's spec, built with the `ppp` crate
//! (the same one that reads the header on `--accept-proxy` listeners, `front/proxy.rs`).
//!
//! A request connection names its client: source = the client's address (the one an
//! `--accept-proxy` header gave, else the socket's peer), destination = the address the
//! client connected to (the header's, else the listener's). A health check names nobody:
//! v2 `LOCAL`, v1 `PROXY UNKNOWN` — the spec's forms for a proxy's own connections.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ppp::v2;

use crate::config::values::ProxyVersion;

/// Both ends as one address family (the header has one): an IPv4-mapped IPv6 address is
/// written as IPv4; if the families still differ, the destination becomes the
/// unspecified address of the source's family.
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let unmap = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    };
    let (src, dst) = (unmap(src), unmap(dst));
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V6(_)) => (src, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)),
        (IpAddr::V6(_), IpAddr::V4(_)) => (src, SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)),
        _ => (src, dst),
    }
}

/// The header naming a client `src` that connected to `dst`.
pub fn header(version: ProxyVersion, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    match version {
        ProxyVersion::V1 => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        // Two socket addresses of one family and no TLVs always fit; should the builder
        // ever refuse, LOCAL keeps the connection usable (the server sees our address).
        .unwrap_or_else(|_| local(ProxyVersion::V2)),
    }
}

/// The header of a connection the proxy makes for itself (a health check).
pub fn local(version: ProxyVersion) -> Vec<u8> {
    match version {
        ProxyVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        ProxyVersion::V2 => v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap_or_else(|_| {
            // The fixed 16-byte LOCAL header, should the builder ever refuse it.
            let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            h
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::HeaderResult;

    #[test]
    fn v1_and_v2_round_trip_through_ppp() {
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let h1 = header(ProxyVersion::V1, src, dst);
        assert_eq!(h1, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n");
        let h2 = header(ProxyVersion::V2, src, dst);
        match HeaderResult::parse(&h2) {
            HeaderResult::V2(Ok(h)) => {
                assert_eq!(h.command, v2::Command::Proxy);
                match h.addresses {
                    v2::Addresses::IPv4(a) => {
                        assert_eq!(SocketAddr::new(a.source_address.into(), a.source_port), src);
                        assert_eq!(
                            SocketAddr::new(a.destination_address.into(), a.destination_port),
                            dst
                        );
                    }
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        let s6: SocketAddr = "[2001:db8::7]:1".parse().unwrap();
        let d6: SocketAddr = "[2001:db8::1]:2".parse().unwrap();
        assert_eq!(
            header(ProxyVersion::V1, s6, d6),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n"
        );
        // Mixed families: mapped addresses unmapped, else the destination unspecified.
        let mapped: SocketAddr = "[::ffff:192.0.2.9]:80".parse().unwrap();
        assert_eq!(
            header(ProxyVersion::V1, src, mapped),
            b"PROXY TCP4 192.0.2.7 192.0.2.9 40000 80\r\n"
        );
        assert_eq!(
            header(ProxyVersion::V1, src, d6),
            b"PROXY TCP4 192.0.2.7 0.0.0.0 40000 0\r\n"
        );
    }

    #[test]
    fn local_headers_parse_as_local() {
        assert!(matches!(
            HeaderResult::parse(&local(ProxyVersion::V1)),
            HeaderResult::V1(Ok(h)) if h.addresses == ppp::v1::Addresses::Unknown
        ));
        match HeaderResult::parse(&local(ProxyVersion::V2)) {
            HeaderResult::V2(Ok(h)) => assert_eq!(h.command, v2::Command::Local),
            other => panic!("{other:?}"),
        }
    }
}
