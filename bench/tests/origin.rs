//! End-to-end tests of `ringway-origin`: real shards on 127.0.0.1 with ephemeral ports,
//! driven by plain `std::net::TcpStream` clients (and `curl`, and the binary itself),
//! asserting what a client observes: status, headers, body bytes and digests, closes,
//! resets, and the counters.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringway_bench::origin::payload::pattern;
use ringway_bench::origin::{Origin, OriginConfig, OriginStats};
use sha2::{Digest, Sha256};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn start(cfg: OriginConfig) -> Origin {
    Origin::start(cfg).expect("origin starts")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunk_sizes: Vec<usize>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .parse()
            .expect("number")
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one response; `head` marks the answer to a HEAD request.
fn read_response(r: &mut impl BufRead, head: bool) -> io::Result<Resp> {
    let status_line = read_line(r)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').expect("header line");
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
        chunk_sizes: Vec::new(),
    };
    if head || status == 204 || status == 304 || status < 200 {
        return Ok(resp);
    }
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().expect("length");
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body)?;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size = usize::from_str_radix(&read_line(r)?, 16).expect("chunk size");
            if size == 0 {
                assert_eq!(read_line(r)?, "", "no trailers expected");
                break;
            }
            resp.chunk_sizes.push(size);
            let at = resp.body.len();
            resp.body.resize(at + size, 0);
            r.read_exact(&mut resp.body[at..])?;
            assert_eq!(read_line(r)?, "");
        }
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// One connection to an origin, speaking HTTP/1.1 request by request.
struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            r: BufReader::new(connect(addr)),
        }
    }

    fn send(&mut self, raw: &[u8]) {
        self.r.get_mut().write_all(raw).expect("send");
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: o\r\n\r\n").as_bytes());
        read_response(&mut self.r, false).expect("response")
    }

    fn read(&mut self, head: bool) -> Resp {
        read_response(&mut self.r, head).expect("response")
    }

    /// Waits for the server to close: Ok(()) on EOF, Err on reset.
    fn eof(&mut self) -> io::Result<()> {
        let mut rest = Vec::new();
        self.r.read_to_end(&mut rest)?;
        assert!(rest.is_empty(), "unexpected bytes {rest:?}");
        Ok(())
    }
}

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// Polls `f` until it holds or 10 s pass.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn get_root_keeps_alive_and_numbers_requests() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    let first = c.get("/");
    assert_eq!(first.status, 200);
    assert_eq!(first.body, b"hello, world\n");
    assert_eq!(first.header("content-length"), Some("13"));
    for i in 2..=3 {
        let r = c.get("/anything/unknown?x=1");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello, world\n");
        assert_eq!(r.num("x-origin-req"), i);
        assert_eq!(r.num("x-origin-conn"), first.num("x-origin-conn"));
    }
    let mut other_client = Client::new(origin.addr());
    let other = other_client.get("/");
    assert_ne!(other.num("x-origin-conn"), first.num("x-origin-conn"));
    assert_eq!(other.num("x-origin-req"), 1);
    let s = origin.stats();
    assert_eq!(s.connections_total, 2);
    assert_eq!(s.connections_open, 2);
    assert_eq!(s.requests_total, 4);
    assert_eq!(s.max_requests_per_conn, 3);
    assert_eq!(s.pipelined, 0);
    drop(c);
    eventually("connections to close", || {
        origin.stats().connections_open == 1
    });
}

#[test]
fn body_size_sets_the_default_body() {
    let origin = start(OriginConfig {
        body_size: 100_000,
        ..OriginConfig::default()
    });
    let r = Client::new(origin.addr()).get("/");
    assert_eq!(r.body.len(), 100_000);
    assert!(r.body.starts_with(b"hello, world\nhello"));
    assert_eq!(r.body[13..26], *b"hello, world\n");
}

#[test]
fn size_and_chunked_send_the_pattern() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    for n in [0usize, 1, 250, 251, 252, 65_536, 1_000_003] {
        let r = c.get(&format!("/size/{n}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.num("content-length"), n as u64);
        assert_eq!(sha(&r.body), sha(&pattern(n)), "/size/{n}");

        let r = c.get(&format!("/chunked/{n}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None);
        assert_eq!(sha(&r.body), sha(&pattern(n)), "/chunked/{n}");
        assert!(r.chunk_sizes.iter().all(|&s| s <= 16 << 10));
    }
    assert_eq!(pattern(3), [0, 1, 2]);
    assert_eq!(pattern(253)[250..], [250, 0, 1]);
}

#[test]
fn big_size_streams_by_digest() {
    let origin = start(OriginConfig::default());
    let n: u64 = 200 << 20;
    let mut s = connect(origin.addr());
    write!(s, "GET /size/{n} HTTP/1.1\r\nHost: o\r\n\r\n").expect("send");
    let mut r = BufReader::new(s);
    let head = read_response(&mut r, true).expect("head");
    assert_eq!(head.num("content-length"), n);
    let mut hasher = Sha256::new();
    let mut expect = Sha256::new();
    let unit = pattern(251 * 1000);
    let mut left = n as usize;
    let mut buf = vec![0; 1 << 20];
    while left > 0 {
        let got = r.read(&mut buf[..left.min(1 << 20)]).expect("read");
        assert!(got > 0, "body ended early");
        hasher.update(&buf[..got]);
        left -= got;
    }
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(unit.len());
        expect.update(&unit[..k]);
        left -= k;
    }
    assert_eq!(hasher.finalize(), expect.finalize());
}

#[test]
fn echo_streams_64_mib_by_digest() {
    let origin = start(OriginConfig::default());
    let len: usize = 64 << 20;
    let s = connect(origin.addr());
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let mut h = Sha256::new();
        write!(
            w,
            "POST /echo HTTP/1.1\r\nHost: o\r\nContent-Length: {len}\r\n\r\n"
        )
        .expect("send");
        let mut block = vec![0u8; 1 << 16];
        let mut sent = 0usize;
        let mut x: u32 = 0x1234_5678;
        while sent < len {
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let k = block.len().min(len - sent);
            w.write_all(&block[..k]).expect("send body");
            h.update(&block[..k]);
            sent += k;
        }
        h.finalize()
    });
    let mut r = BufReader::new(s);
    let head = read_response(&mut r, true).expect("head");
    assert_eq!(head.status, 200);
    assert_eq!(head.num("content-length"), len as u64);
    let mut h = Sha256::new();
    let mut left = len;
    let mut buf = vec![0; 1 << 16];
    while left > 0 {
        let got = r.read(&mut buf[..left.min(1 << 16)]).expect("read echo");
        assert!(got > 0, "echo ended early");
        h.update(&buf[..got]);
        left -= got;
    }
    let sent = writer.join().expect("writer");
    assert_eq!(h.finalize(), sent);
    // The connection is still usable.
    let mut c = Client { r };
    assert_eq!(c.get("/").num("x-origin-req"), 2);
}

#[test]
fn echo_answers_chunked_with_chunked() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;x=y\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: 1\r\n\r\n",
    );
    let r = c.read(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, b"hello, world");
    // An empty body echoes as Content-Length: 0, and the connection goes on.
    c.send(b"POST /echo HTTP/1.1\r\nHost: o\r\nContent-Length: 0\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.num("x-origin-req"), 2);
    // A malformed chunked body to a draining route: 400 and close.
    c.send(b"POST / HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    let r = c.read(false);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    c.eof().expect("clean close");
}

#[test]
fn request_bodies_are_consumed_on_every_route() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    let body = vec![b'x'; 300_000];
    c.send(
        format!(
            "POST /size/3 HTTP/1.1\r\nHost: o\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    assert_eq!(c.read(false).body, [0, 1, 2]);
    c.send(b"PUT /status/201 HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.status, 201);
    assert_eq!(r.num("x-origin-req"), 2);
    assert_eq!(c.get("/").num("x-origin-req"), 3);
}

#[test]
fn headers_returns_the_head_as_received() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    let head = "GET /headers?q=1 HTTP/1.1\r\nHost: o\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 ringway\r\nX-CaSe:  spaced \r\n\r\n";
    c.send(head.as_bytes());
    let r = c.read(false);
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), head);
}

#[test]
fn status_codes_and_head_requests() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    for code in [204u16, 304] {
        let r = c.get(&format!("/status/{code}"));
        assert_eq!(r.status, code);
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("transfer-encoding"), None);
    }
    let r = c.get("/status/503");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, b"503 Service Unavailable\n");
    let r = c.get("/status/99");
    assert_eq!(r.status, 400);
    // HEAD: headers only, with the length a GET would have; the next response on the
    // connection parses, so no body bytes were sent.
    c.send(b"HEAD /size/100000 HTTP/1.1\r\nHost: o\r\n\r\n");
    let r = c.read(true);
    assert_eq!(r.num("content-length"), 100_000);
    c.send(b"HEAD /chunked/100 HTTP/1.1\r\nHost: o\r\n\r\n");
    assert_eq!(c.read(true).header("transfer-encoding"), Some("chunked"));
    c.send(b"HEAD / HTTP/1.1\r\nHost: o\r\n\r\n");
    assert_eq!(c.read(true).num("content-length"), 13);
    let r = c.get("/");
    assert_eq!(r.body, b"hello, world\n");
    assert_eq!(r.num("x-origin-req"), 8);
}

#[test]
fn close_garbage_and_reset() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    let r = c.get("/close");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    c.eof().expect("FIN after /close");

    let mut s = connect(origin.addr());
    s.write_all(b"GET /garbage HTTP/1.1\r\nHost: o\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"garbage\r\n\r\n");

    let mut s = connect(origin.addr());
    s.write_all(b"GET /reset HTTP/1.1\r\nHost: o\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let err = s.read_to_end(&mut got).expect_err("reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(got.is_empty());
}

#[test]
fn delay_route_and_delay_option_wait() {
    let origin = start(OriginConfig::default());
    let t = Instant::now();
    let r = Client::new(origin.addr()).get("/delay/150");
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    let origin = start(OriginConfig {
        delay: Some(Duration::from_millis(100)),
        ..OriginConfig::default()
    });
    let mut c = Client::new(origin.addr());
    for path in ["/", "/echo"] {
        let t = Instant::now();
        assert_eq!(c.get(path).status, 200);
        assert!(t.elapsed() >= Duration::from_millis(100), "{path}");
    }
}

#[test]
fn stats_over_http() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    c.get("/");
    let r = c.get("/stats");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["requests_total"], 2);
    assert_eq!(v["connections_total"], 1);
    assert_eq!(v["connections_open"], 1);
    assert_eq!(v["max_requests_per_conn"], 2);
    assert_eq!(v["pipelined"], 0);
    assert_eq!(c.get("/stats/reset").status, 200);
    assert_eq!(
        origin.stats(),
        OriginStats {
            connections_open: 1,
            ..OriginStats::default()
        }
    );
    origin.reset_stats();
    c.get("/");
    assert_eq!(origin.stats().requests_total, 1);
    assert_eq!(origin.stats().to_json()["requests_total"], 1);
}

#[test]
fn pipelined_requests_are_counted() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    c.get("/");
    c.get("/");
    assert_eq!(origin.stats().pipelined, 0);
    c.send(b"GET /size/5 HTTP/1.1\r\nHost: o\r\n\r\nGET /echo HTTP/1.1\r\nHost: o\r\nContent-Length: 2\r\n\r\nhi");
    let a = c.read(false);
    let b = c.read(false);
    assert_eq!((a.num("x-origin-req"), b.num("x-origin-req")), (3, 4));
    assert_eq!(a.body, [0, 1, 2, 3, 4]);
    assert_eq!(b.body, b"hi");
    assert_eq!(origin.stats().pipelined, 1);
}

#[test]
fn a_request_sent_during_a_slow_response_counts_as_pipelined() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    c.r.get_ref().set_nodelay(true).expect("nodelay");
    for _ in 0..200 {
        assert_eq!(c.get("/size/10").status, 200);
    }
    assert_eq!(
        origin.stats().pipelined,
        0,
        "sequential requests are not pipelined"
    );
    // The second request waits in the origin's socket, unread, while the first is
    // being answered.
    c.send(b"GET /delay/200 HTTP/1.1\r\nHost: o\r\n\r\n");
    c.send(b"GET / HTTP/1.1\r\nHost: o\r\n\r\n");
    assert_eq!(c.read(false).num("x-origin-req"), 201);
    assert_eq!(c.read(false).num("x-origin-req"), 202);
    assert_eq!(origin.stats().pipelined, 1);
}

#[test]
fn large_heads_spanning_reads_are_parsed() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    let one = format!(
        "GET /headers HTTP/1.1\r\nHost: o\r\nX-Big: {}\r\n\r\n",
        "b".repeat(12 << 10)
    );
    // Three 12 KiB heads in one write overflow the 32 KiB read buffer mid-head.
    c.send(one.repeat(3).as_bytes());
    for i in 1..=3 {
        let r = c.read(false);
        assert_eq!(r.body, one.as_bytes());
        assert_eq!(r.num("x-origin-req"), i);
    }
}

#[test]
fn close_after_closes_the_connection() {
    let origin = start(OriginConfig {
        close_after: Some(2),
        ..OriginConfig::default()
    });
    let mut c = Client::new(origin.addr());
    let r = c.get("/");
    assert_eq!(r.header("connection"), None);
    let r = c.get("/");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.num("x-origin-req"), 2);
    c.eof().expect("FIN after close_after");
    // Pipelined past the limit: the last answered request is the second one and the
    // client still reads both responses before the close.
    let mut c = Client::new(origin.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: o\r\n\r\nGET / HTTP/1.1\r\nHost: o\r\n\r\nGET / HTTP/1.1\r\nHost: o\r\n\r\n");
    assert_eq!(c.read(false).num("x-origin-req"), 1);
    assert_eq!(c.read(false).header("connection"), Some("close"));
    c.eof()
        .expect("FIN, not RST, despite the unread third request");
    assert_eq!(origin.stats().max_requests_per_conn, 2);
}

#[test]
fn idle_close_closes_idle_connections() {
    let origin = start(OriginConfig {
        idle_close: Some(Duration::from_millis(200)),
        ..OriginConfig::default()
    });
    let mut c = Client::new(origin.addr());
    assert_eq!(c.get("/").status, 200);
    let t = Instant::now();
    c.eof().expect("FIN on idle");
    assert!(t.elapsed() >= Duration::from_millis(150));
    eventually("idle connection to close", || {
        origin.stats().connections_open == 0
    });
}

#[test]
fn http10_closes_unless_keep_alive() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.header("connection"), Some("close"));
    c.eof().expect("FIN for HTTP/1.0");

    let mut c = Client::new(origin.addr());
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read(false).header("connection"), Some("keep-alive"));
    c.send(b"GET /chunked/300 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.body, pattern(300));

    let mut c = Client::new(origin.addr());
    c.get("/");
    c.send(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read(false).header("connection"), Some("close"));
    c.eof().expect("FIN after Connection: close");
}

#[test]
fn expect_100_continue_before_the_body() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: o\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read(false);
    assert_eq!(interim.status, 100);
    c.send(b"ping");
    let r = c.read(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ping");
}

#[test]
fn malformed_requests_get_400_and_close() {
    let origin = start(OriginConfig::default());
    for bad in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\xff\xfe\r\n\r\n",
    ] {
        let mut c = Client::new(origin.addr());
        c.send(bad);
        let r = c.read(false);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(r.header("connection"), Some("close"));
        c.eof().expect("close after 400");
    }
    let mut c = Client::new(origin.addr());
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(40 << 10));
    c.send(huge.as_bytes());
    assert_eq!(c.read(false).status, 431);
    // Half a request then EOF: no answer, no crash.
    let mut s = connect(origin.addr());
    s.write_all(b"GET / HT").expect("send");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("eof");
    assert!(got.is_empty());
    assert_eq!(Client::new(origin.addr()).get("/").status, 200);
}

#[test]
fn shards_share_one_ephemeral_port() {
    let origin = start(OriginConfig {
        shards: 3,
        ..OriginConfig::default()
    });
    assert_ne!(origin.addr().port(), 0);
    let mut conns = std::collections::HashSet::new();
    for _ in 0..30 {
        let r = Client::new(origin.addr()).get("/");
        assert_eq!(r.status, 200);
        assert!(
            conns.insert(r.num("x-origin-conn")),
            "connection ids are unique"
        );
    }
    eventually("30 connections counted", || {
        origin.stats().connections_total == 30
    });
    origin.stop();

    let pinned = start(OriginConfig {
        cpus: Some(vec![0]),
        ..OriginConfig::default()
    });
    assert_eq!(Client::new(pinned.addr()).get("/").status, 200);
    let err = Origin::start(OriginConfig {
        cpus: Some(vec![100_000]),
        ..OriginConfig::default()
    })
    .expect_err("missing CPU");
    assert!(err.to_string().contains("100000"), "{err}");
    let err = Origin::start(OriginConfig {
        listen: "192.0.2.1:1".parse().expect("addr"),
        ..OriginConfig::default()
    })
    .expect_err("address not on this host");
    assert!(err.to_string().contains("192.0.2.1:1"), "{err}");
}

#[test]
fn stop_closes_open_connections() {
    let origin = start(OriginConfig::default());
    let mut c = Client::new(origin.addr());
    assert_eq!(c.get("/").status, 200);
    let t = Instant::now();
    origin.stop();
    assert!(t.elapsed() < IO_TIMEOUT);
    let mut rest = Vec::new();
    // EOF or reset, but no hang.
    let _ = c.r.read_to_end(&mut rest);
    assert!(TcpStream::connect(c.r.get_ref().peer_addr().expect("peer")).is_err());
}

#[test]
fn curl_reuses_the_connection() {
    let origin = start(OriginConfig::default());
    let base = format!("http://{}", origin.addr());
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null"])
        .arg(format!("{base}/size/1000"))
        .arg(format!("{base}/status/204"))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("X-Origin-Req: 1"), "{text}");
    assert!(text.contains("X-Origin-Req: 2"), "{text}");
    assert_eq!(origin.stats().connections_total, 1);
}

fn origin_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringway-origin"))
}

#[test]
fn binary_prints_its_address_and_exits_0_on_sigterm() {
    let mut child = origin_bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--body-size",
            "5",
            "--idle-close",
            "5s",
            "--delay",
            "1ms",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let addr = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let addr: SocketAddr = addr.parse().expect("address");
    assert_ne!(addr.port(), 0);
    assert_eq!(Client::new(addr).get("/").body, b"hello");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + IO_TIMEOUT;
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "origin did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code.code(), Some(0));
}

#[test]
fn binary_rejects_bad_flags_with_exit_2() {
    for args in [
        // `5` alone is 5 s, as for ringway and ringway-bench (one duration grammar).
        &["--delay", "5 parsecs"][..],
        &["--idle-close", "1x"],
        &["--cpus", "2-1"],
        &["--cpus", "100000"],
        &["--shards", "0"],
        &["--shards", "2", "--cpus", "0"],
        &["--close-after", "0"],
        &["--listen", "nowhere"],
        // An h2c setting without --h2c, and a stream limit that is not a number.
        &["--max-concurrent-streams", "4"],
        &["--h2c", "--max-concurrent-streams", "-1"],
        &["--bogus"],
    ] {
        let out = origin_bin().args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn binary_explains_a_low_memlock_limit() {
    let out = Command::new("prlimit")
        .arg("--memlock=65536:65536")
        .arg(env!("CARGO_BIN_EXE_ringway-origin"))
        .output();
    let Ok(out) = out else {
        eprintln!("prlimit not available; skipped");
        return;
    };
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RLIMIT_MEMLOCK") && err.contains("ulimit -l"),
        "{err}"
    );
}

#[test]
fn origin_handle_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Origin>();
    let origin = start(OriginConfig::default());
    let addr = origin.addr();
    let stopper = std::thread::spawn(move || origin.stop());
    stopper.join().expect("stop from another thread");
    assert!(TcpStream::connect(addr).is_err());
}
