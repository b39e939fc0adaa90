//! HTTP/2 backends (`h2c://`) end to end: nginx with `listen ... http2` (an origin that
//! is not ours) and a small h2c origin written here with the `h2` crate on glommio, which
//! counts its connections and can announce a small SETTINGS_MAX_CONCURRENT_STREAMS, reset
//! streams or send GOAWAY. Clients are `curl` (HTTP/1.1 and `--http2-prior-knowledge`)
//! and `h2load`. What is asserted is what a user sees: statuses, bodies, the framing of
//! the HTTP/1.1 answer, the origin's connection count (multiplexing), no failed request
//! when the server sends GOAWAY, and no stream over the server's limit (no retries).

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use h2::server::SendResponse;
use h2::RecvStream;
use ringway_h2mux::server::{self as h2s, Settings};

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

// ---------------------------------------------------------------------------------------
// nginx as an h2c origin

/// nginx as an h2c origin (the shared helper in `common`).
type Nginx = NginxH2c;

/// Runs h2load; returns (succeeded, failed, its whole output).
fn h2load(args: &[&str]) -> (u64, u64, String) {
    let out = Command::new("h2load")
        .args(args)
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no requests line in {text}"))
        .to_string();
    let words: Vec<&str> = line.split([',', ' ']).filter(|w| !w.is_empty()).collect();
    let count = |what: &str| -> u64 {
        let i = words
            .iter()
            .position(|w| *w == what)
            .unwrap_or_else(|| panic!("{what} in {line}"));
        words[i - 1].parse().unwrap()
    };
    (count("succeeded"), count("failed"), text)
}

#[test]
fn nginx_h2c_origin_curl_and_h2load_share_few_connections() {
    if !have("h2load") || !have("nginx") {
        panic!("nginx and h2load are needed (installed by .ci/run)");
    }
    let nginx = Nginx::start("mux", 1_000_000);
    let backend = format!("h2c://127.0.0.1:{}", nginx.port);
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let base = nginx.accepts();

    // HTTP/1.1 client: Host becomes :authority; the answer is HTTP/1.1.
    let out = curl_ok(&["-i", "-H", "Host: a.example", &proxy.url("/?t=11")]);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("tok=11 host=a.example\n"), "{text}");
    // HTTP/2 client.
    let out = curl_ok(&["--http2-prior-knowledge", &proxy.url("/?t=22")]);
    assert!(String::from_utf8_lossy(&out).starts_with("tok=22 "));
    // A body (nginx drops it, but it must go up and the answer come back).
    let out = curl_ok(&["--data-binary", "hello", &proxy.url("/?t=33")]);
    assert!(String::from_utf8_lossy(&out).starts_with("tok=33 "));

    // 400 concurrent streams from 20 connections.
    let (ok, failed, text) = h2load(&["-c", "20", "-m", "20", "-n", "20000", &proxy.url("/?t=1")]);
    assert_eq!((ok, failed), (20000, 0), "{text}");
    // And HTTP/1.1 clients share the same connections.
    let (ok, failed, text) = h2load(&["--h1", "-c", "20", "-n", "2000", &proxy.url("/?t=2")]);
    assert_eq!((ok, failed), (2000, 0), "{text}");
    let conns = nginx.accepts() - base;
    // nginx allows 128 streams per connection: a handful carry 400 concurrent streams.
    assert!((1..=12).contains(&conns), "{conns} backend connections");
    let m = proxy.metrics();
    assert!(metric(&m, "ringway_requests_total{shard=\"all\"}") >= 22003);
    proxy.assert_healthy();
}

#[test]
fn nginx_goaway_after_max_requests_is_retried_without_client_errors() {
    if !have("h2load") || !have("nginx") {
        panic!("nginx and h2load are needed (installed by .ci/run)");
    }
    // nginx sends GOAWAY after 50 streams on a connection.
    let nginx = Nginx::start("goaway", 50);
    let backend = format!("h2c://127.0.0.1:{}", nginx.port);
    // Two shards with takeover on: HTTP/2 connections stay on their shard.
    let mut proxy = Proxy::start(&["--backend", &backend, "--shards", "2", "--takeover", "on"]);
    let base = nginx.accepts();
    let (ok, failed, text) = h2load(&["-c", "10", "-m", "10", "-n", "5000", &proxy.url("/")]);
    assert_eq!((ok, failed), (5000, 0), "{text}");
    assert!(text.contains("5000 2xx"), "{text}");
    let conns = nginx.accepts() - base;
    // At most 50 streams each: GOAWAY was sent, and new connections were made.
    assert!(conns >= 100, "{conns} backend connections for 5000 streams");
    let m = proxy.metrics();
    // Streams above a GOAWAY's last_stream_id (or refused) were sent again, unseen.
    assert!(metric(&m, "ringway_retries_total{shard=\"all\"}") > 0);
    proxy.assert_healthy();
}

// ---------------------------------------------------------------------------------------
// Our own h2c origin

#[derive(Default)]
struct OriginCounters {
    conns: AtomicU64,
    /// Connections that ended.
    closed: AtomicU64,
    streams: AtomicU64,
    /// Most streams open at once on one connection.
    peak: AtomicU64,
    /// Streams whose client reset them before the answer was sent.
    cancelled: AtomicU64,
}

/// Starts an h2c origin on its own glommio thread announcing `max_streams`. Each stream
/// answers after `delay`: `method=M path=P authority=A te=T conn=C len=N` (the request
/// body's length), without content-length; `/reset` is reset with INTERNAL_ERROR;
/// `/big?n=N` answers N bytes.
fn h2_origin(max_streams: u32, delay: Duration) -> (SocketAddr, Arc<OriginCounters>) {
    h2_origin_opts(max_streams, delay, false)
}

/// Like [`h2_origin`]; with `freeze`, each connection serves its first stream and then
/// stops reading (a server that hangs with the connection open: PINGs go unanswered).
fn h2_origin_opts(
    max_streams: u32,
    delay: Duration,
    freeze: bool,
) -> (SocketAddr, Arc<OriginCounters>) {
    let counters = Arc::new(OriginCounters::default());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let (tx, rx) = mpsc::channel();
    let c = counters.clone();
    std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("bind origin");
                tx.send(()).unwrap();
                loop {
                    let Ok(stream) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    c.conns.fetch_add(1, Ordering::Relaxed);
                    let c = c.clone();
                    glommio::spawn_local(serve_origin_conn(stream, max_streams, delay, freeze, c))
                        .detach();
                }
            })
            .expect("origin executor")
            .join()
            .ok();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("origin listens");
    (addr, counters)
}

async fn serve_origin_conn(
    stream: glommio::net::TcpStream,
    max_streams: u32,
    delay: Duration,
    freeze: bool,
    c: Arc<OriginCounters>,
) {
    let settings = Settings {
        max_concurrent_streams: max_streams,
        ..Settings::default()
    };
    let Ok(mut conn) = h2s::handshake(stream, Vec::new(), &settings).await else {
        c.closed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let open = std::rc::Rc::new(std::cell::Cell::new(0u64));
    if freeze {
        if let Some(Ok((req, respond))) = conn.accept().await {
            c.streams.fetch_add(1, Ordering::Relaxed);
            let c = c.clone();
            glommio::spawn_local(async move { origin_stream(req, respond, delay, &c).await })
                .detach();
        }
        // Long enough for the answer to leave, then hang with the socket open.
        futures_lite::future::or(
            async { while let Some(Ok(_)) = conn.accept().await {} },
            glommio::timer::sleep(Duration::from_millis(300)),
        )
        .await;
        glommio::timer::sleep(Duration::from_secs(3600)).await;
        return;
    }
    while let Some(Ok((req, respond))) = conn.accept().await {
        c.streams.fetch_add(1, Ordering::Relaxed);
        open.set(open.get() + 1);
        c.peak.fetch_max(open.get(), Ordering::Relaxed);
        let (open, c) = (open.clone(), c.clone());
        glommio::spawn_local(async move {
            origin_stream(req, respond, delay, &c).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
    c.closed.fetch_add(1, Ordering::Relaxed);
}

async fn origin_stream(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    delay: Duration,
    c: &OriginCounters,
) {
    let (parts, mut body) = req.into_parts();
    let mut len = 0usize;
    while let Some(Ok(d)) = body.data().await {
        len += d.len();
        let _ = body.flow_control().release_capacity(d.len());
    }
    if !delay.is_zero() {
        glommio::timer::sleep(delay).await;
    }
    let path = parts.uri.path().to_string();
    if path == "/reset" {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    }
    if path == "/slow" {
        // Never answers: the client's reset must reach us as a cancel.
        if futures_lite::future::poll_fn(|cx| respond.poll_reset(cx))
            .await
            .is_ok()
        {
            c.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    let text = if path == "/big" {
        let n: usize = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("n="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        vec![b'x'; n]
    } else {
        let h = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        format!(
            "method={} path={} authority={} te={} conn={} len={len}\n",
            parts.method,
            parts.uri.path_and_query().map_or("", |p| p.as_str()),
            parts.uri.authority().map_or("-", |a| a.as_str()),
            h("te"),
            h("connection"),
        )
        .into_bytes()
    };
    let resp = http::Response::builder()
        .status(200)
        .header("x-origin", "h2")
        .body(())
        .unwrap();
    if let Ok(mut send) = respond.send_response(resp, false) {
        let _ = h2s::send_body(&mut send, Bytes::from(text), true).await;
    }
}

#[test]
fn own_origin_translation_bodies_resets_and_cancels() {
    let (addr, counters) = h2_origin(100, Duration::ZERO);
    let backend = format!("h2c://{addr}");
    let mut proxy = Proxy::start(&["--backend", &backend, "--timeout-backend", "5s"]);

    // HTTP/1.1 client: chunked answer (no content-length from the origin), Host as
    // :authority, connection-specific fields (TE too: the front drops it) not forwarded.
    let out = curl_ok(&[
        "-i",
        "-H",
        "Host: h.example",
        "-H",
        "TE: trailers",
        &proxy.url("/p?q=1"),
    ]);
    let text = String::from_utf8_lossy(&out).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );
    assert!(text.contains("x-origin: h2"), "{text}");
    assert!(
        text.ends_with("method=GET path=/p?q=1 authority=h.example te=- conn=- len=0\n"),
        "{text}"
    );
    // HTTP/1.0 without a Host: the server's own address is the :authority.
    let mut c = proxy.connect();
    c.send(b"GET /nohost HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().ends_with(&format!(
            "method=GET path=/nohost authority={addr} te=- conn=- len=0\n"
        )),
        "{}",
        r.text()
    );
    // HTTP/2 client, with a body of 1 MiB (several windows' worth of DATA frames).
    let dir = std::env::temp_dir().join(format!("ringway-h2b-body-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body");
    std::fs::write(&file, vec![b'y'; 3 << 20]).unwrap();
    let at = format!("@{}", file.display());
    let out = curl_ok(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &at,
        &proxy.url("/up"),
    ]);
    assert!(
        String::from_utf8_lossy(&out).ends_with(&format!("len={}\n", 3 << 20)),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // HTTP/1.1 client, by length and chunked.
    let out = curl_ok(&["--data-binary", &at, &proxy.url("/up")]);
    assert!(String::from_utf8_lossy(&out).ends_with(&format!("len={}\n", 3 << 20)));
    let out = curl_ok(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &at,
        &proxy.url("/up"),
    ]);
    assert!(String::from_utf8_lossy(&out).ends_with(&format!("len={}\n", 3 << 20)));
    // Big answers, both client protocols.
    for h2 in [false, true] {
        let url = proxy.url(&format!("/big?n={}", 5 << 20));
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code} %{size_download}"];
        if h2 {
            args.insert(0, "--http2-prior-knowledge");
        }
        args.push(&url);
        let out = curl_ok(&args);
        assert_eq!(String::from_utf8_lossy(&out), format!("200 {}", 5 << 20));
    }
    // HEAD: the head only, in both client protocols.
    for h2 in [false, true] {
        let url = proxy.url("/head");
        let mut args = vec![
            "-I",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ];
        if h2 {
            args.insert(0, "--http2-prior-knowledge");
        }
        args.push(&url);
        assert_eq!(String::from_utf8_lossy(&curl_ok(&args)), "200 0");
    }
    // A backend reset before the head: 502, and the connection stays usable.
    for h2 in [false, true] {
        let url = proxy.url("/reset");
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        if h2 {
            args.insert(0, "--http2-prior-knowledge");
        }
        args.push(&url);
        assert_eq!(String::from_utf8_lossy(&curl_ok(&args)), "502");
    }
    // A client that gives up cancels its backend stream.
    let out = curl(&["--max-time", "1", &proxy.url("/slow")]);
    assert!(!out.status.success());
    let out = curl(&[
        "--http2-prior-knowledge",
        "--max-time",
        "1",
        &proxy.url("/slow"),
    ]);
    assert!(!out.status.success());
    wait_until(
        Duration::from_secs(10),
        "both backend streams cancelled",
        || counters.cancelled.load(Ordering::Relaxed) == 2,
    );
    // Still one backend connection for all of it.
    let out = curl_ok(&[&proxy.url("/after")]);
    assert!(String::from_utf8_lossy(&out).contains("path=/after"));
    assert_eq!(counters.conns.load(Ordering::Relaxed), 1);
    let _ = std::fs::remove_dir_all(&dir);
    proxy.assert_healthy();
}

#[test]
fn own_origin_max_concurrent_streams_is_honoured() {
    if !have("h2load") {
        panic!("h2load is needed (installed by .ci/run)");
    }
    // Two streams per connection, each answered after 20 ms: 100 concurrent client
    // streams need more connections, and none may be opened over the limit.
    let (addr, counters) = h2_origin(2, Duration::from_millis(20));
    let backend = format!("h2c://{addr}");
    let mut proxy = Proxy::start(&["--backend", &backend]);
    let (ok, failed, text) = h2load(&["-c", "10", "-m", "10", "-n", "2000", &proxy.url("/")]);
    assert_eq!((ok, failed), (2000, 0), "{text}");
    assert_eq!(counters.streams.load(Ordering::Relaxed), 2000);
    assert!(counters.peak.load(Ordering::Relaxed) <= 2);
    let conns = counters.conns.load(Ordering::Relaxed);
    assert!(conns >= 5, "{conns} backend connections");
    let m = proxy.metrics();
    // A stream over the limit is refused by the server and retried: none were.
    assert_eq!(metric(&m, "ringway_retries_total{shard=\"all\"}"), 0);
    proxy.assert_healthy();
}

#[test]
fn idle_h2_connections_are_closed_by_the_purge() {
    let (addr, counters) = h2_origin(100, Duration::ZERO);
    let backend = format!("h2c://{addr}");
    let mut proxy = Proxy::start(&["--backend", &backend, "--pool-purge-delay", "200ms"]);
    let out = curl_ok(&[&proxy.url("/one")]);
    assert!(String::from_utf8_lossy(&out).contains("path=/one"));
    wait_until(
        Duration::from_secs(10),
        "the idle connection to close",
        || counters.closed.load(Ordering::Relaxed) == 1,
    );
    let out = curl_ok(&[&proxy.url("/two")]);
    assert!(String::from_utf8_lossy(&out).contains("path=/two"));
    assert_eq!(counters.conns.load(Ordering::Relaxed), 2);
    proxy.assert_healthy();
}

#[test]
fn an_idle_h2_connection_that_stops_answering_pings_is_closed() {
    let (addr, counters) = h2_origin_opts(100, Duration::ZERO, true);
    let backend = format!("h2c://{addr}");
    let mut proxy = Proxy::start(&["--backend", &backend, "--timeout-backend", "30s"]);
    let out = curl_ok(&[&proxy.url("/one")]);
    assert!(String::from_utf8_lossy(&out).contains("path=/one"));
    // The sweep PINGs the idle connection; the hung server never answers.
    wait_until(
        Duration::from_secs(15),
        "the hung connection to be closed",
        || {
            let m = proxy.metrics();
            try_metric(&m, "ringway_idle_closed_by_server_total{shard=\"all\"}") == Some(1)
        },
    );
    // The next request gets a new connection instead of waiting on the hung one.
    let out = curl_ok(&["--max-time", "10", &proxy.url("/two")]);
    assert!(String::from_utf8_lossy(&out).contains("path=/two"));
    assert_eq!(counters.conns.load(Ordering::Relaxed), 2);
    proxy.assert_healthy();
}

#[test]
fn max_reuse_counts_streams_and_reuse_never_keeps_connections_private() {
    let (addr, counters) = h2_origin(100, Duration::ZERO);
    let backend = format!("h2c://{addr}");
    let mut proxy = Proxy::start(&["--backend", &backend, "--max-reuse", "5"]);
    for i in 0..20 {
        let out = curl_ok(&[&proxy.url(&format!("/r{i}"))]);
        assert!(String::from_utf8_lossy(&out).contains(&format!("path=/r{i}")));
    }
    // 5 streams per connection.
    assert_eq!(counters.conns.load(Ordering::Relaxed), 4);
    proxy.assert_healthy();
    drop(proxy);

    let (addr, counters) = h2_origin(100, Duration::ZERO);
    let backend = format!("h2c://{addr}");
    let mut proxy = Proxy::start(&["--backend", &backend, "--reuse", "never"]);
    for i in 0..3 {
        let out = curl_ok(&["--http2-prior-knowledge", &proxy.url(&format!("/n{i}"))]);
        assert!(String::from_utf8_lossy(&out).contains(&format!("path=/n{i}")));
    }
    assert_eq!(counters.conns.load(Ordering::Relaxed), 3);
    wait_until(
        Duration::from_secs(10),
        "private connections to close",
        || counters.closed.load(Ordering::Relaxed) == 3,
    );
    proxy.assert_healthy();
}

/// Reads one HTTP/1.1 response with a `content-length` or chunked body from `s`; returns
/// the head and the number of body bytes read (what the test needs to tell answers apart).
fn read_h1_response(s: &mut std::net::TcpStream, pending: &mut Vec<u8>) -> String {
    use std::io::Read;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).to_string();
            let lower = head.to_ascii_lowercase();
            let body_end = if let Some(cl) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                (pending.len() >= end + 4 + cl).then_some(end + 4 + cl)
            } else {
                // Chunked: ends with the last chunk.
                pending[end + 4..]
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                    .map(|p| end + 4 + p + 5)
            };
            if let Some(n) = body_end {
                pending.drain(..n);
                return head;
            }
        }
        assert!(std::time::Instant::now() < deadline, "response within 10 s");
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).expect("read response");
        assert!(n > 0, "connection closed before a whole response");
        pending.extend_from_slice(&b[..n]);
    }
}

/// An HTTP/1.1 client that hangs up while its request waits at an h2c backend cancels
/// the backend stream at once (RST_STREAM(CANCEL), counted as `cancelled` by
/// `ringway-origin --h2c`), long before the backend would have answered or
/// `--timeout-backend` passed; the shared backend connection stays. A client that stays,
/// pipelines, or sends its body slowly is not taken for gone.
#[test]
fn an_http1_client_that_hangs_up_cancels_its_backend_stream() {
    use ringway_bench::origin::Protocol;
    use std::io::Write;
    let origin = origin_with(OriginConfig {
        protocol: Protocol::H2c,
        ..OriginConfig::default()
    });
    let backend = format!("h2c://{}", origin.addr());
    let proxy = Proxy::start(&["--backend", &backend, "--timeout-backend", "60s"]);
    // Warm the backend connection up, so every later request shares it.
    let out = curl_ok(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &proxy.url("/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out), "200");

    for (i, how) in ["close", "shutdown-write"].iter().enumerate() {
        let before = origin.stats();
        let mut s = std::net::TcpStream::connect(proxy.addr).expect("connect");
        s.write_all(b"GET /delay/20000 HTTP/1.1\r\nHost: h\r\n\r\n")
            .expect("send");
        wait_until(
            Duration::from_secs(10),
            "the stream reached the origin",
            || origin.stats().requests_total > before.requests_total,
        );
        let gone_at = std::time::Instant::now();
        if *how == "close" {
            drop(s);
        } else {
            // A half-close is a client that gave up too (as nginx and HAProxy read it).
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            std::mem::forget(s);
        }
        wait_until(
            Duration::from_secs(5),
            &format!("backend stream cancelled after the client's {how}"),
            || origin.stats().cancelled == i as u64 + 1,
        );
        eprintln!(
            "{how}: backend stream cancelled {:?} after the hang-up",
            gone_at.elapsed()
        );
    }

    // A client that waits, and one that pipelines its next request, are answered in full.
    let mut s = std::net::TcpStream::connect(proxy.addr).expect("connect");
    s.write_all(
        b"GET /delay/300 HTTP/1.1\r\nHost: h\r\n\r\nGET /delay/300 HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    .expect("send");
    let mut pending = Vec::new();
    for _ in 0..2 {
        let head = read_h1_response(&mut s, &mut pending);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // A body sent slowly (bytes arrive while the answer is awaited) is no hang-up either.
    s.write_all(b"POST /delay/300 HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc")
        .expect("send");
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"def").expect("send");
    let head = read_h1_response(&mut s, &mut pending);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(origin.stats().cancelled, 2, "nothing else was cancelled");
    assert_eq!(
        origin.stats().connections_total,
        1,
        "one backend connection carried every stream"
    );
}
