//! Trailers both ways through ringway (issue 9 item 3): an HTTP/2 client's request
//! trailers reach an HTTP/1.1 backend as the chunked trailer section and an h2c backend as
//! HTTP/2 trailers; the backends' response trailers (chunked section, HTTP/2 trailers)
//! reach the HTTP/2 client as HTTP/2 trailers. Fields that must not be trailers
//! (`content-length`, `transfer-encoding`, `host`, ...) are dropped on the way.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringway_h2mux::io::TokioIo;
use ringway_h2mux::server::{self as h2s, Settings};

/// What the client got: status, body, trailers.
type Got = (u16, Vec<u8>, Option<http::HeaderMap>);

/// POSTs `body` with request trailers `x-req-sum: 42` and `content-length: 9` (which
/// must be dropped) over h2 prior knowledge.
async fn post_with_trailers(addr: SocketAddr, path: &str, body: &'static [u8]) -> Got {
    let stream = glommio::net::TcpStream::connect(addr)
        .await
        .expect("connect");
    let (send, conn) = h2::client::handshake(TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    glommio::spawn_local(async move {
        let _ = conn.await;
    })
    .detach();
    let mut ready = send.ready().await.expect("ready");
    let req = http::Request::post(format!("http://test{path}"))
        .body(())
        .unwrap();
    let (response, mut up) = ready.send_request(req, false).expect("send");
    up.send_data(Bytes::from_static(body), false).expect("data");
    let mut t = http::HeaderMap::new();
    t.insert("x-req-sum", http::HeaderValue::from_static("42"));
    t.insert("content-length", http::HeaderValue::from_static("9"));
    up.send_trailers(t).expect("trailers");
    let resp = response.await.expect("response");
    let status = resp.status().as_u16();
    let mut recv = resp.into_body();
    let mut got = Vec::new();
    while let Some(d) = recv.data().await {
        let d = d.expect("data");
        let _ = recv.flow_control().release_capacity(d.len());
        got.extend_from_slice(&d);
    }
    let trailers = recv.trailers().await.expect("trailers");
    (status, got, trailers)
}

#[test]
fn trailers_cross_between_an_h2_client_and_an_http1_chunked_backend() {
    // A raw HTTP/1.1 backend: records the request as received and answers a chunked
    // body with a trailer section.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // The head, the chunked body and its trailer section: two blank lines in all.
        while buf.windows(4).filter(|w| w == b"\r\n\r\n").count() < 2 {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        *s2.lock().unwrap() = buf;
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\nx-resp-sum: 7\r\nTransfer-Encoding: x\r\n\r\n",
        );
        std::thread::sleep(Duration::from_millis(500));
    });
    let proxy = Proxy::start(&["--backend", &backend.to_string(), "--access-log", "off"]);
    let addr = proxy.addr;
    let (status, body, trailers) =
        on_glommio(move || async move { post_with_trailers(addr, "/up", b"abc").await });
    let raw = String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
    assert_eq!(status, 200);
    assert_eq!(body, b"hello");
    let trailers = trailers.expect("response trailers");
    assert_eq!(
        trailers.get("x-resp-sum").map(|v| v.as_bytes()),
        Some(&b"7"[..])
    );
    assert!(trailers.get("transfer-encoding").is_none(), "{trailers:?}");
    // The request went up chunked with the client's trailers as its trailer section.
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked\r\n"), "{raw}");
    assert!(
        raw.ends_with("3\r\nabc\r\n0\r\nx-req-sum: 42\r\n\r\n"),
        "{raw:?}"
    );
}

#[test]
fn trailers_cross_between_an_h2_client_and_an_h2c_backend() {
    // An h2c backend that records the request trailers and answers with its own.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = l.local_addr().unwrap();
    drop(l);
    let (tx, rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel::<(Vec<u8>, Option<http::HeaderMap>)>();
    std::thread::spawn(move || {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(backend).expect("bind");
                tx.send(()).unwrap();
                while let Ok(stream) = listener.accept().await {
                    let seen_tx = seen_tx.clone();
                    glommio::spawn_local(async move {
                        let Ok(mut conn) =
                            h2s::handshake(stream, Vec::new(), &Settings::default()).await
                        else {
                            return;
                        };
                        while let Some(Ok((req, mut respond))) = conn.accept().await {
                            let seen_tx = seen_tx.clone();
                            glommio::spawn_local(async move {
                                let mut body = req.into_body();
                                let mut got = Vec::new();
                                while let Some(Ok(d)) = body.data().await {
                                    let _ = body.flow_control().release_capacity(d.len());
                                    got.extend_from_slice(&d);
                                }
                                let t = body.trailers().await.ok().flatten();
                                let _ = seen_tx.send((got, t));
                                let resp = http::Response::new(());
                                if let Ok(mut send) = respond.send_response(resp, false) {
                                    let _ = send.send_data(Bytes::from_static(b"hello"), false);
                                    let mut t = http::HeaderMap::new();
                                    t.insert("grpc-status", http::HeaderValue::from_static("0"));
                                    let _ = send.send_trailers(t);
                                }
                            })
                            .detach();
                        }
                    })
                    .detach();
                }
            })
            .expect("backend executor")
            .join()
            .ok();
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("backend listens");
    let spec = format!("h2c://{backend}");
    let proxy = Proxy::start(&["--backend", &spec, "--access-log", "off"]);
    let addr = proxy.addr;
    let (status, body, trailers) =
        on_glommio(move || async move { post_with_trailers(addr, "/up", b"abc").await });
    assert_eq!(status, 200);
    assert_eq!(body, b"hello");
    let trailers = trailers.expect("response trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let (got, req_trailers) = seen_rx.recv_timeout(Duration::from_secs(10)).expect("seen");
    assert_eq!(got, b"abc");
    let req_trailers = req_trailers.expect("request trailers at the backend");
    assert_eq!(
        req_trailers.get("x-req-sum").map(|v| v.as_bytes()),
        Some(&b"42"[..])
    );
    assert!(
        req_trailers.get("content-length").is_none(),
        "{req_trailers:?}"
    );
    // An HTTP/1.1 client sees the h2c backend's trailers as a chunked trailer section.
    let mut c = proxy.connect();
    c.send(b"POST /h1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-req-sum: 43\r\n\r\n");
    let mut raw = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !raw.ends_with(b"0\r\ngrpc-status: 0\r\n\r\n") && std::time::Instant::now() < deadline {
        raw.extend(c.unread_bytes(Duration::from_millis(200)));
    }
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.ends_with("0\r\ngrpc-status: 0\r\n\r\n"), "{text:?}");
    let (_, req_trailers) = seen_rx.recv_timeout(Duration::from_secs(10)).expect("seen");
    assert_eq!(
        req_trailers.and_then(|t| t.get("x-req-sum").cloned()),
        Some(http::HeaderValue::from_static("43"))
    );
}
