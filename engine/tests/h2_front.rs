//! The HTTP/2 front (h2c with prior knowledge) end to end: real clients (`nghttp`,
//! `h2load`) and an `h2` client on glommio, through ringway to `ringway-origin` over
//! HTTP/1.1. Many concurrent streams, 16 MiB each way checked by digest, error statuses
//! on streams that leave the connection usable, and HTTP/1.1 on the same listener.

mod common;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use glommio::net::TcpStream;
use h2::client::SendRequest;
use ringway_h2mux::io::TokioIo;
use sha2::{Digest, Sha256};

const BIG: u64 = 16 << 20;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

async fn h2_connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let (send, task) = h2_connect_joined(addr).await;
    task.detach();
    send
}

/// [`h2_connect`] with the task that drives the connection: awaiting it after the last
/// `SendRequest` is dropped ends the client session (a close the proxy sees) before the
/// executor goes away. A detached task still running when its executor ends is never
/// dropped, and its socket is never closed; writes complete on the ring's next turn, so
/// the connection's last writes need that turn.
async fn h2_connect_joined(addr: SocketAddr) -> (SendRequest<Bytes>, glommio::Task<()>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Bytes>(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    let task = glommio::spawn_local(async move {
        let _ = conn.await;
    });
    (send, task)
}

/// One exchange: (status, selected headers, SHA-256 of the body, body length, body if
/// short). A `body` is sent with flow control in 64 KiB pieces.
struct Got {
    status: u16,
    headers: http::HeaderMap,
    digest: [u8; 32],
    len: u64,
    text: String,
}

async fn exchange(
    send: &SendRequest<Bytes>,
    method: &str,
    uri: &str,
    body: Option<Vec<u8>>,
) -> Result<Got, h2::Error> {
    let mut ready = send.clone().ready().await?;
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .unwrap();
    let (response, mut stream) = ready.send_request(req, body.is_none())?;
    let upload = async {
        if let Some(body) = body {
            let mut data = Bytes::from(body);
            while !data.is_empty() {
                stream.reserve_capacity(data.len().min(64 << 10));
                let cap = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                    Some(Ok(n)) => n,
                    Some(Err(e)) => return Err(e),
                    None => break,
                };
                if cap == 0 {
                    continue;
                }
                let piece = data.split_to(cap.min(data.len()));
                stream.send_data(piece, data.is_empty())?;
            }
        }
        Ok(())
    };
    let download = async {
        let response = response.await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let mut h = Sha256::new();
        let mut len = 0u64;
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            h.update(&chunk);
            len += chunk.len() as u64;
            if text.len() < 4096 {
                text.extend_from_slice(&chunk);
            }
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        Ok(Got {
            status,
            headers,
            digest: h.finalize().into(),
            len,
            text: String::from_utf8_lossy(&text).into_owned(),
        })
    };
    let (up, down) = futures_lite::future::zip(upload, download).await;
    up?;
    down
}

#[test]
fn nghttp_prior_knowledge_get() {
    if !have("nghttp") {
        eprintln!("skipped: nghttp not installed (apt-get install nghttp2-client)");
        return;
    }
    let o = origin();
    let mut proxy = Proxy::start(&["--backend", &o.addr().to_string()]);
    let out = Command::new("nghttp")
        .args(["-nv", "-t", "10", &proxy.url("/")])
        .output()
        .expect("run nghttp");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(":status: 200"), "{text}");
    assert!(text.contains("via: 2.0 ringway"), "{text}");
    assert!(
        text.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):256"),
        "{text}"
    );
    for bad in [
        "connection:",
        "keep-alive:",
        "transfer-encoding:",
        "upgrade:",
    ] {
        assert!(!text.contains(bad), "{bad} in {text}");
    }
    // The backend sees an HTTP/1.1 request with Host from :authority and our fields.
    let out = Command::new("nghttp")
        .args(["-t", "10", &proxy.url("/headers")])
        .output()
        .expect("run nghttp");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.starts_with("GET /headers HTTP/1.1\r\n"), "{seen}");
    assert!(
        seen.contains(&format!("Host: {}\r\n", proxy.addr)),
        "{seen}"
    );
    assert!(seen.contains("X-Forwarded-For: 127.0.0.1\r\n"), "{seen}");
    assert!(seen.contains("X-Forwarded-Proto: http\r\n"), "{seen}");
    assert!(seen.contains("Via: 2.0 ringway\r\n"), "{seen}");
    proxy.assert_healthy();
}

#[test]
fn h2load_streams_all_succeed() {
    if !have("h2load") {
        eprintln!("skipped: h2load not installed (apt-get install nghttp2-client)");
        return;
    }
    let o = origin();
    let mut proxy = Proxy::start(&["--backend", &o.addr().to_string()]);
    o.reset_stats();
    let out = Command::new("h2load")
        .args(["-n", "2000", "-c", "4", "-m", "16", &proxy.url("/")])
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no requests line in {text}"));
    let count = |what: &str| -> u64 {
        let words: Vec<&str> = line.split([',', ' ']).filter(|w| !w.is_empty()).collect();
        let i = words
            .iter()
            .position(|w| *w == what)
            .unwrap_or_else(|| panic!("{what} in {line}"));
        words[i - 1].parse().unwrap()
    };
    assert_eq!(count("succeeded"), 2000, "{text}");
    assert_eq!(count("failed"), 0, "{text}");
    assert!(text.contains("2000 2xx"), "{text}");
    assert_eq!(o.stats().requests_total, 2000);
    let m = proxy.metrics();
    assert!(metric(&m, "ringway_requests_total{shard=\"all\"}") >= 2000);
    proxy.assert_healthy();
}

#[test]
fn h2_streams_bodies_errors_and_http1_alongside() {
    let o = origin();
    let dead = format!("dead=127.0.0.1:{}", closed_port());
    let live = format!("live={}", o.addr());
    let mut proxy = Proxy::start(&[
        "--backend",
        &live,
        "--backend",
        &dead,
        "--route",
        "127.0.0.1=live",
        "--route",
        "dead.test=dead",
        "--default-backend",
        "none",
    ]);
    let addr = proxy.addr;
    let base = format!("http://127.0.0.1:{}", addr.port());
    o.reset_stats();
    let report = on_glommio(move || async move {
        let send = h2_connect(addr).await;
        // Many concurrent streams on one connection.
        let mut tasks = Vec::new();
        for i in 0..200 {
            let send = send.clone();
            let uri = format!("{base}/size/{}", 1000 + i);
            tasks.push(glommio::spawn_local(async move {
                exchange(&send, "GET", &uri, None)
                    .await
                    .map(|g| (g.status, g.len))
            }));
        }
        let mut statuses = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let (status, len) = t.await.expect("stream");
            assert_eq!(len, 1000 + i as u64);
            statuses.push(status);
        }
        // 16 MiB up to /echo and 16 MiB down from /size, at the same time.
        let body = pattern(BIG as usize);
        let up_digest: [u8; 32] = Sha256::digest(&body).into();
        let (echo_uri, size_uri) = (format!("{base}/echo"), format!("{base}/size/{BIG}"));
        let echo = exchange(&send, "POST", &echo_uri, Some(body));
        let size = exchange(&send, "GET", &size_uri, None);
        let (echo, size) = futures_lite::future::zip(echo, size).await;
        let (echo, size) = (echo.expect("echo"), size.expect("size"));
        assert_eq!((echo.status, echo.len), (200, BIG));
        assert_eq!(echo.digest, up_digest, "echoed body differs");
        assert_eq!((size.status, size.len), (200, BIG));
        assert_eq!(size.digest, pattern_sha256(BIG), "downloaded body differs");
        assert_eq!(size.headers["content-length"], BIG.to_string().as_str());
        // A chunked response arrives de-chunked, without transfer-encoding.
        let chunked = exchange(&send, "GET", &format!("{base}/chunked/100000"), None)
            .await
            .expect("chunked");
        assert_eq!((chunked.status, chunked.len), (200, 100_000));
        assert_eq!(chunked.digest, pattern_sha256(100_000));
        assert!(!chunked.headers.contains_key("transfer-encoding"));
        // Errors are statuses on their stream; the connection stays usable.
        let none = exchange(&send, "GET", "http://nowhere.test/", None)
            .await
            .expect("404 stream");
        assert_eq!(none.status, 404, "{}", none.text);
        let gone = exchange(&send, "GET", "http://dead.test/", None)
            .await
            .expect("502 stream");
        assert_eq!(gone.status, 502, "{}", gone.text);
        let status = exchange(&send, "GET", &format!("{base}/status/503"), None)
            .await
            .expect("503 stream");
        assert_eq!(status.status, 503);
        let after = exchange(&send, "GET", &format!("{base}/"), None)
            .await
            .expect("after errors");
        assert_eq!(after.status, 200);
        assert_eq!(after.text, "hello, world\n");
        statuses
    });
    assert!(report.iter().all(|s| *s == 200), "{report:?}");
    // HTTP/1.1 clients still work on the same listener.
    let mut c = proxy.connect();
    let r = c.request("GET", "/", &[("Host", "127.0.0.1")], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, world\n");
    // 200 + echo + size + chunked + 503 + after + the HTTP/1.1 GET reached the origin.
    assert_eq!(o.stats().requests_total, 200 + 6);
    let m = proxy.metrics();
    assert!(metric(&m, "ringway_no_route_total{shard=\"all\"}") >= 1);
    proxy.assert_healthy();
}

#[test]
fn graceful_shutdown_sends_goaway() {
    let o = origin();
    let mut proxy = Proxy::start(&["--backend", &o.addr().to_string()]);
    let addr = proxy.addr;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<bool>();
    let client = std::thread::spawn(move || {
        on_glommio(move || async move {
            let send = h2_connect(addr).await;
            let got = exchange(&send, "GET", &format!("http://{addr}/"), None)
                .await
                .expect("first");
            assert_eq!(got.status, 200);
            // A stream in flight when the drain starts still gets its whole response.
            let slow_send = send.clone();
            let slow = glommio::spawn_local(async move {
                exchange(
                    &slow_send,
                    "GET",
                    &format!("http://{addr}/delay/1000"),
                    None,
                )
                .await
                .map(|g| (g.status, g.text))
                .ok()
            });
            glommio::timer::sleep(Duration::from_millis(200)).await;
            let _ = tx.send(());
            let slow = slow.await;
            // After the proxy's GOAWAY, new streams fail and the connection ends.
            let mut refused = false;
            for _ in 0..100 {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                match send.clone().ready().await {
                    Err(e) if e.is_go_away() || e.is_io() => {
                        refused = true;
                        break;
                    }
                    Err(_) => {
                        refused = true;
                        break;
                    }
                    Ok(_) => {}
                }
            }
            let _ = done_tx.send(refused && slow == Some((200, "hello, world\n".to_string())));
        })
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("first response");
    let status = proxy.terminate();
    assert!(status.success(), "{status:?}; stderr:\n{}", proxy.stderr());
    assert!(done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("client"));
    client.join().unwrap();
}

/// Reads until the proxy closes the connection; false if it is still open after `within`.
fn closes_within(c: &mut Conn, within: Duration) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut b = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        c.stream.set_read_timeout(Some(left)).unwrap();
        match c.stream.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn broken_prefaces_and_frames_close_without_harm() {
    let o = origin();
    let mut proxy = Proxy::start(&["--backend", &o.addr().to_string()]);
    let cases: [&[u8]; 4] = [
        // A preface that goes wrong after its first line.
        b"PRI * HTTP/2.0\r\n\r\nXY\r\n\r\n",
        // A good preface, then a frame header announcing a huge SETTINGS frame.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x04\x00\x00\x00\x00\x00garbage",
        // A good preface, then HEADERS on stream 0.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x05\x01\x05\x00\x00\x00\x00\x82\x84\x86\x41\x00",
        // A partial preface, then the client closes its side.
        b"PRI * HTTP/2.0\r\n",
    ];
    for raw in cases {
        let mut c = proxy.connect();
        c.send(raw);
        c.shutdown_write();
        assert!(
            closes_within(&mut c, Duration::from_secs(10)),
            "still open after {:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Still serving both protocols.
    assert_eq!(proxy.connect().get("/").status, 200);
    let addr = proxy.addr;
    let status = on_glommio(move || async move {
        let send = h2_connect(addr).await;
        exchange(&send, "GET", &format!("http://{addr}/"), None)
            .await
            .map(|g| g.status)
            .ok()
    });
    assert_eq!(status, Some(200));
    proxy.assert_healthy();
}

#[test]
fn client_reset_abandons_the_exchange_and_idle_connections_get_goaway() {
    let o = origin();
    let mut proxy = Proxy::start(&[
        "--backend",
        &o.addr().to_string(),
        "--timeout-client-idle",
        "1s",
    ]);
    let addr = proxy.addr;
    let admin = proxy.admin;
    let (after_reset, goaway) = on_glommio(move || async move {
        let send = h2_connect(addr).await;
        let mut ready = send.clone().ready().await.expect("ready");
        let req = http::Request::builder()
            .uri(format!("http://{addr}/delay/5000"))
            .body(())
            .unwrap();
        let (response, mut stream) = ready.send_request(req, true).expect("send");
        glommio::timer::sleep(Duration::from_millis(200)).await;
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        // The proxy notices at once (well before the 5 s delay ends).
        let mut aborted = false;
        for _ in 0..100 {
            let m = metrics(admin);
            if metric(&m, "ringway_client_aborts_total{shard=\"all\"}") >= 1 {
                aborted = true;
                break;
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        assert!(aborted, "the reset was not noticed within 2 s");
        let after = exchange(&send, "GET", &format!("http://{addr}/"), None)
            .await
            .map(|g| g.status)
            .ok();
        // Idle for longer than --timeout-client-idle: GOAWAY, and new streams are refused.
        let mut goaway = false;
        for _ in 0..100 {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            if send.clone().ready().await.is_err() {
                goaway = true;
                break;
            }
        }
        (after, goaway)
    });
    assert_eq!(after_reset, Some(200));
    assert!(goaway, "no GOAWAY after the idle timeout");
    proxy.assert_healthy();
}

#[test]
fn a_client_that_stops_reading_gets_rst_stream_after_the_idle_timeout() {
    let o = origin();
    let mut proxy = Proxy::start(&[
        "--backend",
        &o.addr().to_string(),
        "--timeout-client-idle",
        "1s",
    ]);
    let addr = proxy.addr;
    let admin = proxy.admin;
    let outcome = on_glommio(move || async move {
        let send = h2_connect(addr).await;
        let mut ready = send.clone().ready().await.expect("ready");
        let req = http::Request::builder()
            .uri(format!("http://{addr}/size/{BIG}"))
            .body(())
            .unwrap();
        let (response, _stream) = ready.send_request(req, true).expect("send");
        let response = response.await.expect("response head");
        assert_eq!(response.status(), 200);
        // Never read the body: the window closes, and the proxy gives up on the stream.
        let mut body = response.into_body();
        let mut aborted = false;
        for _ in 0..250 {
            glommio::timer::sleep(Duration::from_millis(20)).await;
            let m = metrics(admin);
            if metric(&m, "ringway_client_aborts_total{shard=\"all\"}") >= 1 {
                aborted = true;
                break;
            }
        }
        // What arrived before the window closed, then the reset.
        let mut got = 0usize;
        let mut reset = false;
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(c) => got += c.len(),
                Err(e) => {
                    reset = e.is_reset();
                    break;
                }
            }
        }
        (aborted, reset, got)
    });
    let (aborted, reset, got) = outcome;
    assert!(aborted, "the stalled stream was never given up");
    assert!(reset, "no RST_STREAM after {got} bytes");
    assert!((got as u64) < BIG);
    proxy.assert_healthy();
}

/// `--reuse never`: an HTTP/2 client keeps private backend connections for its session,
/// as an HTTP/1.1 client does — 100 sequential streams on one connection are one backend
/// connection at the origin, and it closes with the client.
#[test]
fn reuse_never_keeps_the_h2_sessions_backend_connection_private() {
    let o = origin();
    let backend = o.addr().to_string();
    let proxy = Proxy::start(&["--backend", &backend, "--reuse", "never", "--shards", "1"]);
    let addr = proxy.addr;
    o.reset_stats();
    let conns = on_glommio(move || async move {
        let (send, conn) = h2_connect_joined(addr).await;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..100 {
            let got = exchange(
                &send,
                "GET",
                &format!("http://127.0.0.1:{}/", addr.port()),
                None,
            )
            .await
            .expect("stream");
            assert_eq!(got.status, 200, "stream {i}: {}", got.text);
            let conn = got.headers["x-origin-conn"].to_str().unwrap().to_string();
            seen.insert(conn);
        }
        // The client ends its session.
        drop(send);
        conn.await;
        seen
    });
    assert_eq!(conns.len(), 1, "backend connections used: {conns:?}");
    assert_eq!(
        o.stats().connections_total,
        1,
        "the origin saw more than one connection"
    );
    assert_eq!(o.stats().requests_total, 100);
    // The private connection ends with its client session.
    wait_until(
        Duration::from_secs(5),
        "the private backend connection to close",
        || o.stats().connections_open == 0,
    );
}

#[test]
fn h2_paths_cannot_step_around_a_route() {
    let (a, b) = (origin(), origin());
    let (aa, ba) = (format!("a={}", a.addr()), format!("b={}", b.addr()));
    let mut proxy = Proxy::start(&[
        "--backend",
        &aa,
        "--backend",
        &ba,
        "--route",
        "*/admin=b",
        "--route",
        "secret.test=b",
    ]);
    let addr = proxy.addr;
    let port = addr.port();
    let paths = [
        "/admin/x",
        "/ADMIN",
        "/%61dmin",
        "//admin",
        "/x/../admin",
        "/x/%2E%2E/admin",
        "/admin;p=1",
    ];
    let n = paths.len() as u64;
    let statuses = on_glommio(move || async move {
        let send = h2_connect(addr).await;
        let mut statuses = Vec::new();
        for p in paths {
            let uri = format!("http://public.test:{port}{p}");
            statuses.push(exchange(&send, "GET", &uri, None).await.expect(p).status);
        }
        // `:authority` is what routes see.
        let uri = format!("http://secret.test:{port}/");
        statuses.push(
            exchange(&send, "GET", &uri, None)
                .await
                .expect("authority")
                .status,
        );
        statuses
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        b.stats().requests_total,
        n + 1,
        "every spelling reached the /admin route"
    );
    assert_eq!(a.stats().requests_total, 0);
    proxy.assert_healthy();
}

/// A stream waiting for its backend holds a small head buffer, not a 16 KiB body buffer
/// (those come from a per-shard pool once a body streams): 2,000 streams waiting at a
/// slow origin cost the proxy well under 16 KiB each, all in (h2 state, the task, the
/// request head, the backend connection).
#[test]
fn waiting_streams_hold_small_buffers() {
    let o = origin();
    let mut proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    let addr = proxy.addr;
    let admin = proxy.admin;
    // Warm up allocator arenas and the pool with a few bodies first.
    on_glommio(move || async move {
        let send = h2_connect(addr).await;
        for _ in 0..20 {
            let g = exchange(&send, "GET", &format!("http://{addr}/size/100000"), None)
                .await
                .expect("warm-up");
            assert_eq!(g.status, 200);
        }
    });
    let before = proxy.rss();
    const CONNS: usize = 8;
    const PER: usize = 250;
    let pid = proxy.pid();
    let peak = on_glommio(move || async move {
        let mut sends = Vec::new();
        for _ in 0..CONNS {
            sends.push(h2_connect(addr).await);
        }
        let mut tasks = Vec::new();
        for send in &sends {
            for _ in 0..PER {
                let send = send.clone();
                tasks.push(glommio::spawn_local(async move {
                    exchange(&send, "GET", &format!("http://{addr}/delay/3000"), None)
                        .await
                        .map(|g| g.status)
                        .ok()
                }));
            }
        }
        // Peak: every stream in flight at the proxy.
        let mut peak = 0u64;
        for _ in 0..200 {
            glommio::timer::sleep(Duration::from_millis(25)).await;
            let inflight = sum_metric(&metrics(admin), "ringway_inflight_requests", &[]) as usize;
            if inflight >= CONNS * PER {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                let kib: u64 = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
                    .unwrap();
                peak = kib * 1024;
                break;
            }
        }
        let mut ok = 0;
        for t in tasks {
            if t.await == Some(200) {
                ok += 1;
            }
        }
        assert_eq!(ok, CONNS * PER, "every waiting stream got its answer");
        peak
    });
    assert!(peak > 0, "the streams were never all in flight at once");
    let per_stream = peak.saturating_sub(before) / (CONNS * PER) as u64;
    eprintln!(
        "RSS {} KiB -> {} KiB with {} streams waiting: {per_stream} bytes per stream",
        before / 1024,
        peak / 1024,
        CONNS * PER
    );
    assert!(
        per_stream < 16 << 10,
        "{per_stream} bytes per waiting stream"
    );
    proxy.assert_healthy();
}

#[test]
fn a_field_that_changes_in_every_response_is_decoded_right_every_time() {
    // `x-origin-req` takes a new value in each response, so ringway's HPACK encoder
    // adds the first few to its table and then sends the rest as literals that name a
    // table entry (vendor/h2 `MAX_SAME_NAME`): a wrong index would give the client
    // another field's name or value. Requests one after another on one connection reuse
    // one backend connection, whose counter goes up by one each time.
    let o = origin();
    let proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    let addr = proxy.addr;
    let seen = on_glommio(move || async move {
        let send = h2_connect(addr).await;
        let mut seen = Vec::new();
        for _ in 0..60 {
            let g = exchange(&send, "GET", &format!("http://{addr}/"), None)
                .await
                .expect("stream");
            assert_eq!(g.status, 200);
            assert_eq!(g.text, "hello, world\n");
            let field = |name: &str| -> u64 {
                let v = g.headers.get_all(name).iter().collect::<Vec<_>>();
                assert_eq!(v.len(), 1, "one {name}: {:?}", g.headers);
                v[0].to_str()
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name} is a number: {:?}", g.headers))
            };
            seen.push((field("x-origin-conn"), field("x-origin-req")));
            assert_eq!(field("content-length"), 13);
        }
        seen
    });
    let conns: std::collections::BTreeSet<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        conns.len(),
        1,
        "one backend connection served them: {seen:?}"
    );
    for w in seen.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1, "the counter went up by one: {seen:?}");
    }
}

#[test]
fn the_vendored_h2_refuses_to_send_connection_specific_fields() {
    // vendor/h2 `Send::check_headers` (one pass over the fields, RINGWAY-PATCHES.md):
    // the same check guards ringway's responses on its front and its requests to
    // HTTP/2 backends. Here it is the vendored client's: a request carrying a field of
    // HTTP/1.1's connection management is refused before anything is sent, and the
    // connection goes on serving the requests that follow.
    let o = origin();
    let proxy = Proxy::start(&["--backend", &o.addr().to_string(), "--access-log", "off"]);
    let addr = proxy.addr;
    on_glommio(move || async move {
        let send = h2_connect(addr).await;
        let bad: [(&str, &str); 7] = [
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-ok", "1"), // with a second `te` below
        ];
        for (i, (name, value)) in bad.iter().enumerate() {
            let mut b = http::Request::builder()
                .method("GET")
                .uri(format!("http://{addr}/"))
                .header("x-before", "1")
                .header(*name, *value);
            if i == bad.len() - 1 {
                // Every `te` must say trailers, not only the first.
                b = b.header("te", "trailers").header("te", "gzip");
            }
            let req = b.body(()).unwrap();
            let mut ready = send.clone().ready().await.expect("ready");
            match ready.send_request(req, true) {
                Err(e) => assert!(
                    e.to_string().contains("malformed headers"),
                    "{name}: refused as malformed, not {e}"
                ),
                Ok(_) => panic!("a request with `{name}: {value}` was sent"),
            }
        }
        // `te: trailers` is allowed, and the connection is unharmed.
        let mut ready = send.clone().ready().await.expect("ready");
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("http://{addr}/"))
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (resp, _) = ready.send_request(req, true).expect("te: trailers is sent");
        let resp = resp.await.expect("response");
        assert_eq!(resp.status(), 200);
        let g = exchange(&send, "GET", &format!("http://{addr}/"), None)
            .await
            .expect("stream");
        assert_eq!(g.text, "hello, world\n");
    });
    assert_eq!(
        o.stats().requests_total,
        2,
        "only the two good requests went through"
    );
}
