//! The admin listener (`--admin`), served by shard 0: `GET /metrics` in Prometheus text
//! format, gathered from every shard through the mesh; `GET /healthz`, 200 while the
//! process is alive (a liveness probe); `GET /readyz`, 200 while it serves and 503 once
//! it drains (a readiness probe: a load balancer stops sending before the listeners
//! close).
//!
//! It is deliberately small: one request per connection, no keep-alive, bounded reads
//! and a bounded wait for the other shards' snapshots.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

/// What the admin listener serves: the metrics of every shard, rendered as Prometheus
/// text. The shard implements it (gathering through the mesh); this module only speaks
/// HTTP.
pub trait Source: 'static {
    fn metrics(&self) -> impl std::future::Future<Output = String>;
    /// Whether the proxy takes new requests (not draining).
    fn ready(&self) -> bool;
}

pub async fn serve<S: Source>(src: Rc<S>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(handle(src.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle<S: Source>(src: Rc<S>, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    let path = loop {
        match stream.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(_)) => break req.path.unwrap_or("/").to_string(),
            Ok(httparse::Status::Partial) if n < buf.len() => continue,
            _ => {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
        }
    };
    let path = path.split('?').next().unwrap_or("/");
    let (status, body) = match path {
        "/metrics" => ("200 OK", src.metrics().await),
        "/healthz" => ("200 OK", "ok\n".to_string()),
        "/readyz" if src.ready() => ("200 OK", "ready\n".to_string()),
        "/readyz" => ("503 Service Unavailable", "draining\n".to_string()),
        _ => (
            "404 Not Found",
            "try /metrics, /healthz or /readyz\n".to_string(),
        ),
    };
    let content_type = if path == "/metrics" {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}
