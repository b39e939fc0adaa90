//! PROXY protocol on client listeners (`--accept-proxy`), with HAProxy in front sending
//! v1 (`send-proxy`) and v2 (`send-proxy-v2`): the client's own address — curl bound to
//! 127.0.0.5, while HAProxy connects from 127.0.0.9 — is what the origin sees in
//! `X-Forwarded-For` and what the access log says. Connections without a header, with a
//! malformed one or a truncated one are closed unanswered and counted; other clients are
//! unaffected.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Haproxy {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Haproxy {
    /// HAProxy listening on a free port, forwarding to `to` with `send` (`send-proxy` or
    /// `send-proxy-v2`), its own connections made from 127.0.0.9.
    fn start(tag: &str, to: std::net::SocketAddr, send: &str) -> Haproxy {
        Haproxy::start_with(tag, |port| {
            format!(
                "global\n  maxconn 256\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
                 frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\
                 backend b\n  server s {to} {send} source 127.0.0.9\n"
            )
        })
    }

    /// HAProxy as a backend that expects PROXY headers (`bind ... accept-proxy`, v1 and
    /// v2 alike) and tells the origin `to` whom the header named: `X-Client-IP: %[src]`,
    /// `X-Client-Port: %[src_port]`.
    fn accepting(tag: &str, to: std::net::SocketAddr) -> Haproxy {
        Haproxy::start_with(tag, |port| {
            format!(
                "global\n  maxconn 256\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
                 frontend f\n  bind 127.0.0.1:{port} accept-proxy\n\
                 \x20 http-request set-header X-Client-IP %[src]\n\
                 \x20 http-request set-header X-Client-Port %[src_port]\n  default_backend b\n\
                 backend b\n  server s {to}\n"
            )
        })
    }

    fn start_with(tag: &str, conf: impl FnOnce(u16) -> String) -> Haproxy {
        let dir = TempDir::new(&format!("haproxy-{tag}"));
        let port = closed_port();
        let conf = conf(port);
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, conf).expect("haproxy config");
        let child = Command::new("haproxy")
            .args(["-db", "-f", &path.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is needed for this test (installed by .ci/run)");
        wait_until(Duration::from_secs(10), "haproxy to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Haproxy {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn haproxy_in_front_names_the_client_with_v1_and_v2() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let log_file = TempFile(temp_path("proxy-proto-log"));
    let log = &log_file.0;
    let log_s = log.to_string_lossy().to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--accept-proxy",
        "--access-log",
        &log_s,
        "--access-log-format",
        "json",
    ]);
    for send in ["send-proxy", "send-proxy-v2"] {
        let hap = Haproxy::start(send, proxy.addr, send);
        let url = format!("http://127.0.0.1:{}/headers", hap.port);
        let body = curl_ok(&["-s", "--interface", "127.0.0.5", &url]);
        let text = String::from_utf8_lossy(&body).to_lowercase();
        let xff: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("x-forwarded-for:"))
            .collect();
        // HAProxy adds no X-Forwarded-For of its own here (no `option forwardfor`), so the
        // one the origin sees is ringway's, and it names curl, not HAProxy.
        assert_eq!(xff, vec!["x-forwarded-for: 127.0.0.5"], "{send}:\n{text}");
    }
    // The access log says the same (it is flushed within a second).
    let lines = wait_for(Duration::from_secs(5), "two access log lines", || {
        let t = std::fs::read_to_string(log).unwrap_or_default();
        let v: Vec<String> = t.lines().map(str::to_string).collect();
        (v.len() >= 2).then_some(v)
    });
    for l in &lines {
        let j: serde_json::Value = serde_json::from_str(l).expect("json line");
        let client = j["client"].as_str().unwrap_or_default();
        assert!(client.starts_with("127.0.0.5"), "{l}");
    }
    assert_eq!(
        metric(
            &proxy.metrics(),
            "ringway_proxy_header_errors_total{shard=\"all\"}"
        ),
        0
    );
    proxy.assert_healthy();
}

#[test]
fn connections_without_a_valid_header_are_closed_and_counted() {
    let origin = origin();
    let backend = origin.addr().to_string();
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend,
        "--accept-proxy",
        "--timeout-client-head",
        "1s",
    ]);
    let closed_unanswered = |bytes: &[u8]| {
        let mut s = TcpStream::connect(proxy.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).expect("send");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    // A client speaking HTTP directly, a malformed v1 line, a v2 signature with a bad
    // version, and a header that never ends (cut by --timeout-client-head).
    assert!(closed_unanswered(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_empty());
    assert!(closed_unanswered(b"PROXY TCP4 nope 1.2.3.4 1 2\r\nGET / HTTP/1.1\r\n\r\n").is_empty());
    assert!(closed_unanswered(b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c").is_empty());
    assert!(closed_unanswered(b"PROXY TCP4 1.2.3.4 ").is_empty());
    let m = wait_for(Duration::from_secs(5), "four refusals counted", || {
        let m = proxy.metrics();
        (metric(&m, "ringway_proxy_header_errors_total{shard=\"all\"}") == 4).then_some(m)
    });
    assert_eq!(metric(&m, "ringway_requests_total{shard=\"all\"}"), 0);

    // A valid header followed by requests on the same connection: served, and the
    // client's own bytes that arrived with the header are not lost.
    let mut c = Conn::connect(proxy.addr);
    c.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 80\r\nGET /headers HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .to_lowercase()
            .contains("x-forwarded-for: 192.0.2.7"),
        "{}",
        r.text()
    );
    assert_eq!(c.get("/").status, 200);
    // LOCAL (a balancer's health check) keeps the socket's address.
    let mut c = Conn::connect(proxy.addr);
    c.send(b"PROXY UNKNOWN\r\nGET /headers HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false);
    assert!(
        r.text()
            .to_lowercase()
            .contains("x-forwarded-for: 127.0.0.1"),
        "{}",
        r.text()
    );
    proxy.assert_healthy();
}

/// The `X-Client-IP` values HAProxy (as the backend) put in the requests the origin echoed.
fn client_ips(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .to_lowercase()
        .lines()
        .filter_map(|l| l.strip_prefix("x-client-ip:").map(|v| v.trim().to_string()))
        .collect()
}

fn write_config(tag: &str, text: &str) -> TempFile {
    let f = TempFile(temp_path(tag));
    std::fs::write(&f.0, text).expect("config file");
    f
}

/// `send-proxy = "v1"` and `"v2"`: HAProxy as the backend (`accept-proxy`) sees each
/// client's own address — curl bound to 127.0.0.5, .6, .7 — and its health checks pass
/// (they carry LOCAL / UNKNOWN headers, which HAProxy accepts). Each client connection
/// gets its own backend connection, reused for that client's later requests only: over
/// two shards, 3 clients x 4 requests = 3 new connections, 9 reuses of the client's own,
/// none taken over, none pooled.
#[test]
fn send_proxy_v1_and_v2_name_each_client_to_haproxy() {
    let origin = origin();
    for v in ["v1", "v2"] {
        let hap = Haproxy::accepting(&format!("backend-{v}"), origin.addr());
        let backend = format!("127.0.0.1:{}", hap.port);
        let f = write_config(
            &format!("send-proxy-{v}.toml"),
            &format!(
                "[backends.b]\nservers = [\"{backend}\"]\nsend-proxy = \"{v}\"\n[backends.b.check]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n"
            ),
        );
        let mut proxy = Proxy::start(&["--config", f.0.to_str().unwrap(), "--shards", "2"]);
        // Checks through HAProxy's accept-proxy bind pass: a check without a header
        // would be refused by HAProxy (fall 1: down at once).
        let checks = format!("ringway_server_checks_total{{backend=\"b\",server=\"{backend}\"}}");
        let up = format!("ringway_server_check_up{{backend=\"b\",server=\"{backend}\"}}");
        wait_until(Duration::from_secs(10), "three passed checks", || {
            let m = proxy.metrics();
            try_metric(&m, &checks).is_some_and(|n| n >= 3) && try_metric(&m, &up) == Some(1)
        });
        let url = proxy.url("/headers");
        for ip in ["127.0.0.5", "127.0.0.6", "127.0.0.7"] {
            // One curl = one client connection with four requests on it.
            let body = curl_ok(&["-s", "--interface", ip, &url, &url, &url, &url]);
            let ips = client_ips(&body);
            assert_eq!(ips, vec![ip; 4], "{v}: {}", String::from_utf8_lossy(&body));
        }
        let m = proxy.metrics();
        assert_eq!(metric(&m, &up), 1, "{v}: checks still pass");
        let by = |conn: &str| {
            sum_metric(
                &m,
                "ringway_server_requests_total",
                &[("server", &backend), ("conn", conn)],
            )
        };
        assert_eq!(
            by("new"),
            3.0,
            "{v}: one backend connection per client connection"
        );
        assert_eq!(by("reused"), 9.0, "{v}: each reused by its own client only");
        assert_eq!(by("taken_over"), 0.0, "{v}: never taken over");
        let pooled = sum_metric(&m, "ringway_server_idle_cur", &[("server", &backend)])
            + sum_metric(&m, "ringway_server_safe_cur", &[("server", &backend)]);
        assert_eq!(pooled, 0.0, "{v}: never pooled");
        proxy.assert_healthy();
    }
}

/// The whole chain: HAProxy in front (`send-proxy-v2`, connecting from 127.0.0.9) ->
/// ringway `--accept-proxy` -> `send-proxy = "v1"` -> HAProxy `accept-proxy` -> origin:
/// the address the last HAProxy sees is curl's own, 127.0.0.5, and so is ringway's
/// X-Forwarded-For.
#[test]
fn the_client_address_travels_through_accept_proxy_and_send_proxy() {
    let origin = origin();
    let back = Haproxy::accepting("chain-back", origin.addr());
    let backend = format!("127.0.0.1:{}", back.port);
    let f = write_config(
        "chain.toml",
        &format!("[backends.b]\nservers = [\"{backend}\"]\nsend-proxy = \"v1\"\n"),
    );
    let mut proxy = Proxy::start(&["--config", f.0.to_str().unwrap(), "--accept-proxy"]);
    let front = Haproxy::start("chain-front", proxy.addr, "send-proxy-v2");
    let url = format!("http://127.0.0.1:{}/headers", front.port);
    let body = curl_ok(&["-s", "--interface", "127.0.0.5", &url]);
    assert_eq!(
        client_ips(&body),
        vec!["127.0.0.5"],
        "{}",
        String::from_utf8_lossy(&body)
    );
    let text = String::from_utf8_lossy(&body).to_lowercase();
    assert!(text.contains("x-forwarded-for: 127.0.0.5"), "{text}");
    // The port is curl's too (not HAProxy's 127.0.0.9 connection, not ringway's).
    assert!(
        text.lines()
            .any(|l| l.starts_with("x-client-port:") && l.trim() != "x-client-port: 0"),
        "{text}"
    );
    proxy.assert_healthy();
}

/// `send-proxy` with an HTTP/2 server is refused (its connections are shared by many
/// clients), and so is a version that does not exist: exit 2 naming backend and key.
#[test]
fn send_proxy_with_h2_servers_or_a_bad_version_exits_2() {
    for (text, want) in [
        (
            "[backends.h]\nservers = [\"127.0.0.1:9\", \"h2c://127.0.0.1:10\"]\nsend-proxy = \"v2\"\n",
            "not supported with the HTTP/2 server 127.0.0.1:10",
        ),
        (
            "[backends.h]\nservers = [\"127.0.0.1:9\"]\nsend-proxy = \"v3\"\n",
            "'v3' is not a PROXY protocol version",
        ),
    ] {
        let f = write_config("send-proxy-bad.toml", text);
        let out = std::process::Command::new(BIN)
            .args(["check-config", "--config", f.0.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("backends.h.send-proxy"), "{err}");
        assert!(err.contains(want) && err.contains("line 3"), "{err}");
    }
}

/// A backend that records the PROXY v1 line each connection starts with and answers
/// every request on it with `200 ok`.
fn proxy_line_recorder() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut byte = [0u8; 1];
                let mut sent_line = false;
                while conn.read(&mut byte).unwrap_or(0) == 1 {
                    got.push(byte[0]);
                    if !sent_line && got.ends_with(b"\r\n") {
                        let _ = tx.send(String::from_utf8_lossy(&got).trim_end().to_string());
                        got.clear();
                        sent_line = true;
                    } else if sent_line && got.ends_with(b"\r\n\r\n") {
                        got.clear();
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if conn.write_all(ok).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// The addresses `send-proxy` names are the client connection's own: its source address
/// and port as the accept returned them, and the address and port it connected to, on a
/// listener bound to one address (taken from the listener), on a wildcard listener
/// (asked of the connection: 127.0.0.2 here, not 0.0.0.0) and on IPv6. The proxy learns
/// the first two without a system call per connection, so this holds it to the values.
#[test]
fn send_proxy_names_the_addresses_each_client_connected_from_and_to() {
    let (backend, lines) = proxy_line_recorder();
    let f = write_config(
        "send-proxy-addrs.toml",
        &format!("[backends.b]\nservers = [\"{backend}\"]\nsend-proxy = \"v1\"\n"),
    );
    let proxy = Proxy::start(&[
        "--config",
        f.0.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "0.0.0.0:0",
        "--listen",
        "[::1]:0",
    ]);
    assert_eq!(proxy.listeners.len(), 3, "{:?}", proxy.listeners);
    let targets = [
        proxy.listeners[0],
        std::net::SocketAddr::new([127, 0, 0, 2].into(), proxy.listeners[1].port()),
        proxy.listeners[2],
    ];
    for to in targets {
        for _ in 0..3 {
            let mut c = Conn::connect(to);
            let from = c.stream.local_addr().unwrap();
            let r = c.get("/");
            assert_eq!(r.status, 200, "via {to}");
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .expect("a PROXY line");
            let family = if to.is_ipv4() { "TCP4" } else { "TCP6" };
            let want = format!(
                "PROXY {family} {} {} {} {}",
                from.ip(),
                to.ip(),
                from.port(),
                to.port()
            );
            assert_eq!(line, want, "via {to}");
        }
    }
}
