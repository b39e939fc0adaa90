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
    _dir: std::path::PathBuf,
}

impl Haproxy {
    /// HAProxy listening on a free port, forwarding to `to` with `send` (`send-proxy` or
    /// `send-proxy-v2`), its own connections made from 127.0.0.9.
    fn start(tag: &str, to: std::net::SocketAddr, send: &str) -> Haproxy {
        let dir = temp_path(&format!("haproxy-{tag}"));
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let port = closed_port();
        let conf = format!(
            "global\n  maxconn 256\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\
             backend b\n  server s {to} {send} source 127.0.0.9\n"
        );
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
    let log = temp_path("proxy-proto-log");
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
        let t = std::fs::read_to_string(&log).unwrap_or_default();
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
