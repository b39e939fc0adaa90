//! Routing: which backend a request goes to, from its `Host` and path. Which server of
//! that backend serves it is the upstream layer's choice (`upstream/balance.rs`).
//!
//! The routing table is built from the configuration; each shard holds its own copy,
//! replaced by a configuration reload between requests.
//! Routes match the normalised view of a request (`Host`, or the authority of an
//! absolute-form target; the path as `ringway_http1::route_path` makes it), never the raw
//! target: see docs/operations.md, "How targets are normalised".

use crate::config::{Config, RouteConfig};

/// The routing table, read-only after start-up.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<RouteConfig>,
    default_backend: Option<usize>,
}

impl Router {
    pub fn new(cfg: &Config) -> Router {
        let mut routes = cfg.routes.clone();
        // Most specific first: exact hosts before `*`, then longest prefix.
        routes.sort_by(|a, b| {
            (a.host == "*")
                .cmp(&(b.host == "*"))
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        Router {
            routes,
            default_backend: cfg.default_backend,
        }
    }

    /// The backend for a request; `None` means no route and no default backend (404).
    /// `path` is the routing view of the target (`ringway_http1::route_path`); prefixes
    /// match it ignoring ASCII case, so `/ADMIN` cannot step around a `/admin` route.
    pub fn route(&self, host: Option<&[u8]>, path: &[u8]) -> Option<usize> {
        if self.routes.is_empty() {
            return self.default_backend;
        }
        let host = host.map(strip_port);
        for r in &self.routes {
            let host_ok =
                r.host == "*" || host.is_some_and(|h| h.eq_ignore_ascii_case(r.host.as_bytes()));
            let prefix = r.path_prefix.as_bytes();
            let path_ok =
                path.len() >= prefix.len() && path[..prefix.len()].eq_ignore_ascii_case(prefix);
            if host_ok && path_ok {
                return Some(r.backend);
            }
        }
        self.default_backend
    }
}

fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        // [v6]:port
        return match host.iter().position(|&c| c == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.iter().rposition(|&c| c == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn router(args: &[&str]) -> Router {
        let mut v = vec!["ringway"];
        v.extend_from_slice(args);
        let cli = crate::config::Cli::try_parse_from(v).unwrap();
        Router::new(&Config::from_opts(&cli.opts).unwrap())
    }

    #[test]
    fn host_and_longest_prefix() {
        let r = router(&[
            "--backend=a=127.0.0.1:1",
            "--backend=b=127.0.0.1:2",
            "--backend=c=127.0.0.1:3",
            "--route=example.com/=b",
            "--route=example.com/api/v2=c",
            "--route=*/static=c",
        ]);
        assert_eq!(r.route(Some(b"example.com"), b"/x"), Some(1));
        assert_eq!(r.route(Some(b"EXAMPLE.com:8080"), b"/api/v2/x"), Some(2));
        assert_eq!(r.route(Some(b"other"), b"/static/a.css"), Some(2));
        assert_eq!(r.route(Some(b"other"), b"/"), Some(0), "default backend");
        assert_eq!(r.route(None, b"/"), Some(0));
        assert_eq!(
            r.route(Some(b"x"), b"/STATIC/a.css"),
            Some(2),
            "prefixes ignore case"
        );
    }

    #[test]
    fn no_default_means_no_route() {
        let r = router(&[
            "--backend=a=127.0.0.1:1",
            "--route=a.test=a",
            "--default-backend=none",
        ]);
        assert_eq!(r.route(Some(b"a.test"), b"/"), Some(0));
        assert_eq!(r.route(Some(b"b.test"), b"/"), None);
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"a.test:8080"), b"a.test");
    }
}
