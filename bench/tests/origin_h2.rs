//! End-to-end tests of `ringway-origin` in h2c mode: real shards on 127.0.0.1, driven by a
//! real HTTP/2 client (the `h2` crate on glommio, through `ringway_h2mux`'s client
//! handshake), by `curl --http2-prior-knowledge` and `h2load`, and by the binary itself.
//! What is asserted is what a client observes (statuses, headers, bodies, resets, GOAWAY,
//! connection ends) and the origin's counters (connections, streams, multiplexing,
//! cancels), which is what the proxy tests lean on.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::Task;
use h2::client::SendRequest;
use h2::Reason;
use http::{HeaderMap, Method, Request, StatusCode};
use ringway_bench::origin::payload::pattern;
use ringway_bench::origin::{Origin, OriginConfig, OriginStats, Protocol};
use ringway_h2mux::client::{self, ClientSettings};
use ringway_h2mux::server::send_body;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn h2c(cfg: OriginConfig) -> Origin {
    Origin::start(OriginConfig {
        protocol: Protocol::H2c,
        ..cfg
    })
    .expect("origin starts")
}

/// Runs `f` on a glommio executor of its own, failing the test after [`TEST_TIMEOUT`].
fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            future::or(f(), async {
                glommio::timer::sleep(TEST_TIMEOUT).await;
                panic!("test timed out after {TEST_TIMEOUT:?}");
            })
            .await
        })
        .expect("executor")
        .join()
        .expect("test executor");
}

/// An h2c client connection; the driver task ends (with the connection's result) when the
/// connection does.
struct Conn {
    send: SendRequest<Bytes>,
    driver: Task<Result<(), h2::Error>>,
}

async fn connect(addr: SocketAddr) -> Conn {
    let s = glommio::net::TcpStream::connect(addr)
        .await
        .expect("connect");
    let (send, conn) = client::handshake(s, &ClientSettings::default())
        .await
        .expect("h2 handshake");
    let driver = glommio::spawn_local(conn);
    Conn { send, driver }
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
}

impl Resp {
    fn num(&self, name: &str) -> u64 {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number")
    }
}

/// One request: `body` (with its length announced when `length`) and optional trailers.
async fn exchange(
    send: &SendRequest<Bytes>,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    trailers: Option<HeaderMap>,
) -> Result<Resp, h2::Error> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://origin.test{path}"));
    if let Some(b) = &body {
        req = req.header("content-length", b.len());
    }
    let req = req.body(()).expect("request");
    let mut send = send.clone().ready().await?;
    let end = body.is_none() && trailers.is_none();
    let (resp, mut stream) = send.send_request(req, end)?;
    // The body goes out on its own task: /echo answers while it is still being sent.
    let sender = glommio::spawn_local(async move {
        if let Some(b) = body {
            if send_body(&mut stream, b, trailers.is_none()).await.is_err() {
                return;
            }
        }
        if let Some(t) = trailers {
            let _ = stream.send_trailers(t);
        }
    });
    let resp = resp.await?;
    let (parts, mut recv) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await?;
    sender.await;
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body: data,
        trailers,
    })
}

/// The connection ended without an HTTP/2 error: no GOAWAY with an error code, no
/// protocol error. glommio reports the shutdown of a socket the peer already closed as
/// `NotConnected`, which `h2` passes on as an I/O error: that is a clean end too.
fn ended_cleanly(result: Result<(), h2::Error>) {
    if let Err(e) = result {
        assert!(
            e.is_io() && e.reason().is_none(),
            "the connection ended with {e:?}"
        );
    }
}

async fn get(send: &SendRequest<Bytes>, path: &str) -> Resp {
    exchange(send, Method::GET, path, None, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Polls `f` (on the executor) until it holds or 10 s pass.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn routes_behave_as_in_http1_mode() {
    let origin = h2c(OriginConfig::default());
    let addr = origin.addr();
    run(move || async move {
        let c = connect(addr).await;
        // The default body, with content-length; requests numbered on the connection.
        for i in 1..=3 {
            let r = get(&c.send, "/").await;
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"hello, world\n");
            assert_eq!(r.num("content-length"), 13);
            assert_eq!(r.num("x-origin-req"), i);
            assert_eq!(r.num("x-origin-conn"), 1);
        }
        let r = get(&c.send, "/size/100000").await;
        assert_eq!(r.num("content-length"), 100_000);
        assert_eq!(r.body, pattern(100_000));
        // /chunked: no length (HTTP/2 has no chunked coding), the same pattern.
        let r = get(&c.send, "/chunked/50000").await;
        assert!(r.headers.get("content-length").is_none(), "{:?}", r.headers);
        assert_eq!(r.body, pattern(50_000));
        let r = get(&c.send, "/size/0").await;
        assert_eq!((r.num("content-length"), r.body.len()), (0, 0));
        let r = get(&c.send, "/status/503").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"503 Service Unavailable\n");
        let r = get(&c.send, "/status/204").await;
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty() && r.headers.get("content-length").is_none());
        let r = get(&c.send, "/status/abc").await;
        assert_eq!(r.status, 400);
        let r = exchange(&c.send, Method::HEAD, "/size/777", None, None)
            .await
            .expect("HEAD");
        assert_eq!((r.status.as_u16(), r.num("content-length")), (200, 777));
        assert!(r.body.is_empty());
        // /headers: the head as the origin saw it, pseudo-headers first.
        let req = Request::builder()
            .uri("http://origin.test/headers?q=1")
            .header("x-token", "abc-123")
            .body(())
            .expect("request");
        let (resp, _) = c
            .send
            .clone()
            .ready()
            .await
            .expect("ready")
            .send_request(req, true)
            .expect("send");
        let (parts, mut body) = resp.await.expect("response").into_parts();
        assert_eq!(parts.status, 200);
        let mut text = Vec::new();
        while let Some(d) = body.data().await {
            text.extend_from_slice(&d.expect("data"));
        }
        let text = String::from_utf8(text).expect("utf-8");
        assert!(
            text.starts_with(
                ":method: GET\n:scheme: http\n:authority: origin.test\n:path: /headers?q=1\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nx-token: abc-123\n"), "{text}");
        // Request trailers are shown after the head.
        let mut t = HeaderMap::new();
        t.insert("x-sum", "9".parse().expect("value"));
        let r = exchange(
            &c.send,
            Method::POST,
            "/headers",
            Some(Bytes::from_static(b"abc")),
            Some(t),
        )
        .await
        .expect("POST /headers with trailers");
        let text = String::from_utf8(r.body).expect("utf-8");
        assert!(
            text.ends_with("\ncontent-length: 3\ntrailer x-sum: 9\n"),
            "{text}"
        );
        // The request body is read and dropped on every route but /echo.
        let r = exchange(
            &c.send,
            Method::POST,
            "/size/5",
            Some(Bytes::from(vec![7u8; 300_000])),
            None,
        )
        .await
        .expect("POST");
        assert_eq!(r.body, pattern(5));
    });
    let s = origin.stats();
    assert_eq!(s.connections_total, 1);
    assert_eq!(s.requests_total, 13);
    assert_eq!(s.max_requests_per_conn, 13);
}

#[test]
fn echo_answers_every_stream_with_its_own_body_on_one_connection() {
    let origin = h2c(OriginConfig::default());
    let addr = origin.addr();
    run(move || async move {
        let c = Rc::new(connect(addr).await);
        // 300 streams at once (more than the 128 the origin allows: the client queues).
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let c = c.clone();
                glommio::spawn_local(async move {
                    let token = format!("token-{i}-").repeat(1 + i % 50);
                    let r = exchange(
                        &c.send,
                        Method::POST,
                        "/echo",
                        Some(Bytes::from(token.clone())),
                        None,
                    )
                    .await
                    .expect("echo");
                    assert_eq!(r.status, 200);
                    assert_eq!(r.num("content-length"), token.len() as u64);
                    assert_eq!(String::from_utf8_lossy(&r.body), token, "stream {i}");
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        // 8 MiB: many windows' worth, streamed back while it is still being sent.
        let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
        let r = exchange(
            &c.send,
            Method::PUT,
            "/echo",
            Some(Bytes::from(big.clone())),
            None,
        )
        .await
        .expect("big echo");
        assert!(
            r.body == big,
            "8 MiB echo differs ({} bytes back)",
            r.body.len()
        );
        // Trailers come back as the response's trailers.
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "42".parse().expect("value"));
        let r = exchange(
            &c.send,
            Method::POST,
            "/echo",
            Some(Bytes::from_static(b"abc")),
            Some(t),
        )
        .await
        .expect("echo with trailers");
        assert_eq!(r.body, b"abc");
        let trailers = r.trailers.expect("trailers echoed");
        assert_eq!(
            trailers.get("x-checksum").map(|v| v.as_bytes()),
            Some(&b"42"[..])
        );
        // An empty body.
        let r = exchange(&c.send, Method::POST, "/echo", None, None)
            .await
            .expect("empty echo");
        assert_eq!((r.num("content-length"), r.body.len()), (0, 0));
    });
    let s = origin.stats();
    assert_eq!(s.connections_total, 1, "{s}");
    assert_eq!(s.requests_total, 303, "{s}");
    assert!(s.pipelined > 0, "no stream overlapped another: {s}");
    assert!((2..=128).contains(&s.max_open_per_conn), "{s}");
}

#[test]
fn max_concurrent_streams_is_announced_and_never_exceeded() {
    let origin = h2c(OriginConfig {
        max_concurrent_streams: 4,
        ..OriginConfig::default()
    });
    let addr = origin.addr();
    run(move || async move {
        let c = Rc::new(connect(addr).await);
        // The first answer means the origin's SETTINGS are in.
        assert_eq!(get(&c.send, "/").await.status, 200);
        assert_eq!(c.send.current_max_send_streams(), 4);
        let started = Instant::now();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                glommio::spawn_local(async move { get(&c.send, "/delay/50").await.status })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await, 200);
        }
        // 20 streams of 50 ms, 4 at a time: at least 5 rounds.
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
    });
    let s = origin.stats();
    assert_eq!(s.max_open_per_conn, 4, "{s}");
    assert_eq!((s.connections_total, s.requests_total), (1, 21), "{s}");
}

#[test]
fn close_after_and_close_send_goaway_after_answering() {
    let origin = h2c(OriginConfig {
        close_after: Some(3),
        ..OriginConfig::default()
    });
    let addr = origin.addr();
    run(move || async move {
        let c = connect(addr).await;
        for i in 1..=3 {
            assert_eq!(get(&c.send, "/").await.num("x-origin-req"), i);
        }
        // GOAWAY after the third stream: the connection ends, cleanly.
        ended_cleanly(c.driver.await);
        assert!(exchange(&c.send, Method::GET, "/", None, None)
            .await
            .is_err());
        // /close: answered, then the connection ends.
        let c = connect(addr).await;
        let r = get(&c.send, "/close").await;
        assert_eq!((r.status.as_u16(), r.num("x-origin-req")), (200, 1));
        ended_cleanly(c.driver.await);
    });
    let s = origin.stats();
    assert_eq!((s.connections_total, s.requests_total), (2, 4), "{s}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.stats().connections_open != 0 {
        assert!(
            Instant::now() < deadline,
            "connections stay open: {}",
            origin.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn idle_close_ends_connections_without_streams_only() {
    let origin = h2c(OriginConfig {
        idle_close: Some(Duration::from_millis(200)),
        ..OriginConfig::default()
    });
    let addr = origin.addr();
    run(move || async move {
        let c = connect(addr).await;
        // A stream longer than the idle time keeps the connection.
        assert_eq!(get(&c.send, "/delay/600").await.status, 200);
        assert_eq!(get(&c.send, "/").await.num("x-origin-req"), 2);
        let idle = Instant::now();
        ended_cleanly(c.driver.await);
        let took = idle.elapsed();
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_secs(5),
            "closed after {took:?}"
        );
    });
    assert_eq!(origin.stats().connections_total, 1);
}

#[test]
fn reset_resets_one_stream_and_garbage_ends_the_connection() {
    let origin = h2c(OriginConfig::default());
    let addr = origin.addr();
    run(move || async move {
        let c = connect(addr).await;
        let err = exchange(&c.send, Method::GET, "/reset", None, None)
            .await
            .expect_err("/reset is reset");
        assert_eq!(err.reason(), Some(Reason::INTERNAL_ERROR), "{err}");
        // The connection is unaffected.
        assert_eq!(get(&c.send, "/").await.num("x-origin-req"), 2);
        // /garbage is a connection error; how the `h2` client reports it depends on
        // whether its own writes fail first (broken pipe), so nghttp below checks the
        // frame itself. Here: the stream fails and the connection ends.
        assert!(exchange(&c.send, Method::GET, "/garbage", None, None)
            .await
            .is_err());
        let _ = c.driver.await;
    });
}

#[test]
fn garbage_is_goaway_protocol_error_seen_by_nghttp() {
    let origin = h2c(OriginConfig::default());
    let out = Command::new("nghttp")
        .args([
            "-v",
            "-t",
            "10",
            &format!("http://{}/garbage", origin.addr()),
        ])
        .output()
        .expect("nghttp is needed (nghttp2-client, installed by .ci/run)");
    let text = String::from_utf8_lossy(&out.stdout);
    let goaway = text
        .lines()
        .skip_while(|l| !l.contains("recv GOAWAY frame"))
        .nth(1)
        .unwrap_or_else(|| panic!("no GOAWAY received: {text}"));
    assert!(goaway.contains("error_code=PROTOCOL_ERROR"), "{goaway}");
    // Other connections are unaffected.
    let addr = origin.addr();
    run(move || async move {
        let c = connect(addr).await;
        assert_eq!(get(&c.send, "/").await.status, 200);
    });
}

#[test]
fn a_stream_the_client_resets_is_counted_as_cancelled() {
    let origin = h2c(OriginConfig::default());
    let addr = origin.addr();
    let counts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = counts.clone();
    let origin = std::sync::Arc::new(origin);
    let o = origin.clone();
    run(move || async move {
        let c = connect(addr).await;
        let req = Request::builder()
            .uri("http://origin.test/delay/10000")
            .body(())
            .expect("request");
        let mut send = c.send.clone().ready().await.expect("ready");
        let (resp, mut stream) = send.send_request(req, false).expect("send");
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        stream.send_reset(Reason::CANCEL);
        drop(resp);
        eventually("the cancel to be counted", || o.stats().cancelled == 1).await;
        out.lock().expect("lock").push(started.elapsed());
        // The connection still serves.
        assert_eq!(get(&c.send, "/").await.status, 200);
    });
    let took = counts.lock().expect("lock")[0];
    assert!(
        took < Duration::from_secs(5),
        "the cancel took {took:?} to be seen"
    );
    assert_eq!(origin.stats().requests_total, 2);
}

#[test]
fn an_http1_request_ends_the_connection_and_the_origin_keeps_serving() {
    let origin = h2c(OriginConfig::default());
    let mut s = TcpStream::connect(origin.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    // The origin ends the connection (its GOAWAY, maybe, then EOF or a reset).
    let _ = s.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1"), "{got:?}");
    let addr = origin.addr();
    run(move || async move {
        let c = connect(addr).await;
        assert_eq!(get(&c.send, "/").await.status, 200);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.stats().connections_open != 0 {
        assert!(Instant::now() < deadline, "{}", origin.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(origin.stats().connections_total, 2);
}

#[test]
fn stats_over_h2c_and_delay_option() {
    let origin = h2c(OriginConfig {
        delay: Some(Duration::from_millis(100)),
        ..OriginConfig::default()
    });
    let addr = origin.addr();
    run(move || async move {
        let c = connect(addr).await;
        let started = Instant::now();
        assert_eq!(get(&c.send, "/").await.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(100));
        let r = get(&c.send, "/stats").await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["requests_total"], 2);
        assert_eq!(v["connections_total"], 1);
        assert_eq!(v["connections_open"], 1);
        assert_eq!(v["cancelled"], 0);
        assert_eq!(
            get(&c.send, "/stats/reset").await.body,
            b"{\"reset\":true}\n"
        );
    });
    assert_eq!(
        origin.stats(),
        OriginStats {
            connections_open: origin.stats().connections_open,
            ..OriginStats::default()
        }
    );
}

fn curl(args: &[&str]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2-prior-knowledge"])
        .args(args)
        .output()
        .expect("curl is needed (installed by .ci/run)");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    (out.stdout, started.elapsed())
}

#[test]
fn curl_expect_100_continue_and_h2load_multiplexing() {
    let origin = h2c(OriginConfig::default());
    let url = |p: &str| format!("http://{}{p}", origin.addr());
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let file = std::env::temp_dir().join(format!("ringway-origin-h2-{}", std::process::id()));
    std::fs::write(&file, &body).expect("write body");
    let at = format!("@{}", file.display());
    let (echoed, took) = curl(&[
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &at,
        &url("/echo"),
    ]);
    let _ = std::fs::remove_file(&file);
    assert!(echoed == body, "echo differs ({} bytes)", echoed.len());
    // curl waits up to 1 s for the 100 before sending anyway.
    assert!(took < Duration::from_millis(900), "took {took:?}");

    origin.reset_stats();
    let out = Command::new("h2load")
        .args(["-c", "2", "-m", "32", "-n", "2000", &url("/delay/2")])
        .output()
        .expect("h2load is needed (installed by .ci/run)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2000 succeeded, 0 failed"), "{text}");
    let s = origin.stats();
    assert_eq!((s.connections_total, s.requests_total), (2, 2000), "{s}");
    assert!(s.max_open_per_conn > 16, "{s}");
}

fn origin_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringway-origin"))
}

#[test]
fn binary_serves_h2c_with_its_stream_limit() {
    let mut child = origin_bin()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--h2c",
            "--max-concurrent-streams",
            "7",
            "--body-size",
            "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let addr: SocketAddr = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .expect("address");
    let (body, _) = curl(&[&format!("http://{addr}/")]);
    assert_eq!(body, b"hello");
    run(move || async move {
        let c = connect(addr).await;
        assert_eq!(get(&c.send, "/").await.status, 200);
        assert_eq!(c.send.current_max_send_streams(), 7);
    });
    let (stats, _) = curl(&[&format!("http://{addr}/stats")]);
    let v: serde_json::Value = serde_json::from_slice(&stats).expect("json");
    assert_eq!(v["connections_total"], 3);
    assert_eq!(v["requests_total"], 3);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "origin did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code.code(), Some(0));

    // The stream limit is an h2c setting: without --h2c it is refused, naming the flag.
    let out = origin_bin()
        .args(["--max-concurrent-streams", "4"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--h2c") && err.contains("--max-concurrent-streams"),
        "{err}"
    );
    let out = origin_bin()
        .args(["--h2c", "--max-concurrent-streams", "many"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
