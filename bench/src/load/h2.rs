//! The HTTP/2 client: h2c with prior knowledge over glommio, through the `h2` crate.
//!
//! A connection is a glommio `TcpStream` wrapped in `ringway_h2mux::io::TokioIo`, handed to
//! `h2`'s client handshake; the returned `Connection` future runs as its own task on the
//! shard, and each stream slot of that connection sends requests through a clone of the
//! `SendRequest` handle. Request heads are built once per slot and cloned per request;
//! bodies are counted and their flow-control capacity released at once, so a slow reader
//! never throttles the server. `h2` has no timers: the per-request timeout is glommio's.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use glommio::net::TcpStream;
use h2::client::SendRequest;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use ringway_h2mux::io::TokioIo;

use super::config::Plan;
use super::report::ErrorKind;

/// Per-stream receive window: large enough that 1 MiB responses flow without stalls.
const STREAM_WINDOW: u32 = 4 << 20;
/// Per-connection receive window.
const CONN_WINDOW: u32 = 64 << 20;

/// What every request of a run looks like, prepared once.
#[derive(Clone)]
pub struct H2Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl H2Request {
    /// Prepares the request from the plan; fails on a header `http` refuses.
    pub fn new(plan: &Plan) -> anyhow::Result<H2Request> {
        let method = Method::from_bytes(plan.method.as_bytes())
            .map_err(|_| anyhow::anyhow!("{:?} is not a valid method", plan.method))?;
        let uri: Uri = format!("http://{}{}", plan.target.authority, plan.target.path)
            .parse()
            .map_err(|e| anyhow::anyhow!("cannot build the request URI: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &plan.headers {
            let lower = name.to_ascii_lowercase();
            // Connection-specific headers are illegal in HTTP/2; Host becomes :authority.
            if matches!(
                lower.as_str(),
                "host" | "connection" | "keep-alive" | "transfer-encoding" | "upgrade"
            ) {
                continue;
            }
            let n = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| anyhow::anyhow!("bad header name {name:?}"))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| anyhow::anyhow!("bad value for header {name:?}"))?;
            headers.append(n, v);
        }
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static("ringway-bench"),
            );
        }
        let body = (plan.body_size > 0).then(|| Bytes::from(vec![b'x'; plan.body_size]));
        Ok(H2Request {
            method,
            uri,
            headers,
            body,
        })
    }

    fn build(&self) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// An open HTTP/2 connection: the handle streams are sent through, and the task that
/// drives the connection (it ends when the connection does).
pub struct H2Conn {
    pub send: SendRequest<Bytes>,
    pub driver: glommio::task::JoinHandle<()>,
}

/// Connects and completes the h2c handshake within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<H2Conn, ErrorKind> {
    let stream = match TcpStream::connect_timeout(addr, timeout).await {
        Ok(s) => s,
        Err(e) => {
            let e: std::io::Error = e.into();
            return Err(match ErrorKind::of_io(&e) {
                ErrorKind::Timeout => ErrorKind::Timeout,
                _ => ErrorKind::Connect,
            });
        }
    };
    if stream.set_nodelay(true).is_err() {
        return Err(ErrorKind::Connect);
    }
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .enable_push(false)
        .handshake::<_, Bytes>(TokioIo::new(stream));
    let handshake = glommio::timer::timeout(timeout, async { Ok(handshake.await) }).await;
    let (send, conn) = match handshake {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(kind_of(&e)),
        Err(_) => return Err(ErrorKind::Timeout),
    };
    let task = glommio::spawn_local(async move {
        // The connection's end is seen by the streams as their errors.
        let _ = conn.await;
    });
    let driver = task.detach();
    Ok(H2Conn { send, driver })
}

/// A failed HTTP/2 request: its kind, and whether the whole connection is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamError {
    pub kind: ErrorKind,
    pub fatal: bool,
}

/// Sends one request on `send` and reads its whole response; returns (status, body bytes).
/// A timed-out stream is dropped (h2 resets it) and the connection stays usable.
pub async fn exchange(
    send: &mut SendRequest<Bytes>,
    req: &H2Request,
    timeout: Duration,
) -> Result<(u16, u64), StreamError> {
    let work = async {
        let ready = send.clone().ready().await;
        let mut ready = match ready {
            Ok(r) => r,
            Err(e) => return Ok(Err(stream_error(&e))),
        };
        let end = req.body.is_none();
        let (response, mut stream) = match ready.send_request(req.build(), end) {
            Ok(pair) => pair,
            Err(e) => return Ok(Err(stream_error(&e))),
        };
        if let Some(body) = &req.body {
            if let Err(e) = stream.send_data(body.clone(), true) {
                return Ok(Err(stream_error(&e)));
            }
        }
        let response = match response.await {
            Ok(r) => r,
            Err(e) => return Ok(Err(stream_error(&e))),
        };
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = 0u64;
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    bytes += chunk.len() as u64;
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Err(e) => return Ok(Err(stream_error(&e))),
            }
        }
        Ok(Ok((status, bytes)))
    };
    match glommio::timer::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(StreamError {
            kind: ErrorKind::Timeout,
            fatal: false,
        }),
    }
}

fn stream_error(e: &h2::Error) -> StreamError {
    StreamError {
        kind: kind_of(e),
        // A stream reset leaves the connection usable; I/O errors and GOAWAY do not.
        fatal: e.is_io() || e.is_go_away() || !e.is_reset(),
    }
}

/// Sorts an `h2` error into a kind.
fn kind_of(e: &h2::Error) -> ErrorKind {
    if let Some(io) = e.get_io() {
        return ErrorKind::of_io(io);
    }
    if e.is_reset() {
        ErrorKind::Reset
    } else if e.is_go_away() {
        ErrorKind::Closed
    } else {
        ErrorKind::Other
    }
}
