//! The admin listener (`--admin`), served by shard 0: `GET /metrics` in Prometheus text
//! format, gathered from every shard through the mesh, and `GET /healthz`.
//!
//! It is deliberately small: one request per connection, no keep-alive, bounded reads
//! and a bounded wait for the other shards' snapshots.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::metrics::{render, ServerLabels};
use crate::shard::Shard;

pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(handle(shard.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(shard: Rc<Shard>, mut stream: TcpStream) {
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
    let (status, body) = match path.as_str() {
        "/metrics" => {
            let mut snaps = crate::mesh::gather(&shard, Duration::from_secs(2)).await;
            let labels = shard.shared.server_labels();
            (
                "200 OK",
                render(
                    &mut snaps,
                    ServerLabels { labels: &labels },
                    crate::fd::open_fds(),
                ),
            )
        }
        "/healthz" => ("200 OK", "ok\n".to_string()),
        _ => ("404 Not Found", "try /metrics\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}
