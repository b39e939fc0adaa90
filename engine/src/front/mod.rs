//! The accept layer: every client connection starts here, above both fronts.
//!
//! [`accept_loop`] accepts on one listener (refusing with 503 over
//! `--max-conns-per-shard`), and [`serve`] decides which front a connection belongs to
//! before either sees it: today by sniffing its first bytes for the HTTP/2 preface (h2c
//! with prior knowledge), once TLS lands by ALPN. The bytes read for that decision are
//! handed to the front, never read twice.

pub mod h1;
pub mod h2;

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use ringway_h2mux::server::PREFACE;
use ringway_http1 as http1;

use crate::buf::Buf;
use crate::ctx::{Counted, ShardCtx};

/// Each client connection's receive buffer (it grows up to `--max-head` for a large head).
pub const BUF_SIZE: usize = 16 << 10;

/// Accepts clients on one listener until the task is dropped (shard draining).
pub async fn accept_loop(ctx: Rc<ShardCtx>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                ctx.metrics.borrow_mut().c.accepted += 1;
                if ctx.load.client_conns.get() as usize >= ctx.config().max_conns_per_shard {
                    ctx.metrics.borrow_mut().c.refused_capacity += 1;
                    glommio::spawn_local(refuse(stream)).detach();
                    continue;
                }
                glommio::spawn_local(serve(ctx.clone(), stream)).detach();
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                ctx.warn.warn(ctx.id, "accept failed", &io::Error::from(e));
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn refuse(mut stream: TcpStream) {
    let mut out = Vec::new();
    http1::write_error(503, true, &mut out);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out).await;
}

/// The protocol a connection speaks, as far as its first bytes tell.
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    Http1,
    /// It opened with the HTTP/2 preface (or closed before it could say).
    Http2,
    /// Nothing arrived (closed, or idle past `--timeout-client-idle`).
    Nothing,
}

/// Whether `data` so far could still become the HTTP/2 preface.
fn could_be_preface(data: &[u8]) -> bool {
    let n = data.len().min(PREFACE.len());
    n > 0 && data[..n] == PREFACE[..n]
}

/// Serves one client connection to its end, in the front its first bytes call for.
pub async fn serve(ctx: Rc<ShardCtx>, mut stream: TcpStream) {
    let _conn = Counted::new(&ctx, |l| &l.client_conns);
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let mut buf = Buf::with_capacity(BUF_SIZE);
    match sniff(&ctx, &mut stream, &mut buf).await {
        Sniffed::Nothing => {}
        Sniffed::Http1 => h1::serve(ctx, stream, peer, buf).await,
        Sniffed::Http2 => h2::serve(ctx, stream, peer, buf.data().to_vec()).await,
    }
}

/// Reads the first bytes: until they are not the start of the HTTP/2 preface, or are
/// all of it. The first read waits up to `--timeout-client-idle`, the rest of a preface
/// up to `--timeout-client-head`.
async fn sniff(ctx: &ShardCtx, stream: &mut TcpStream, buf: &mut Buf) -> Sniffed {
    let t = &ctx.config().timeouts;
    let _ = stream.set_read_timeout(Some(t.client_idle));
    match buf.fill_from(stream).await {
        Ok(0) | Err(_) => return Sniffed::Nothing,
        Ok(_) => {}
    }
    let deadline = Instant::now() + t.client_head;
    while could_be_preface(buf.data()) && buf.len() < PREFACE.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = stream.set_read_timeout(Some(left));
        match buf.fill_from(stream).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if could_be_preface(buf.data()) && buf.len() >= PREFACE.len() {
        Sniffed::Http2
    } else {
        // A partial preface that stopped is not HTTP/2: the HTTP/1.1 front answers it
        // (400 or 408) as it would any broken head.
        Sniffed::Http1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_prefixes() {
        assert!(could_be_preface(b"PRI * HTTP/2.0\r\n"));
        assert!(could_be_preface(PREFACE));
        assert!(!could_be_preface(b"GET / HTTP/1.1\r\n"));
        assert!(!could_be_preface(b"PRI * HTTP/1.1\r\n"));
        assert!(!could_be_preface(b""));
    }
}
