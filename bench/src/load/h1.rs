//! The HTTP/1.1 client connection: one request at a time, keep-alive or `Connection: close`.
//!
//! A connection owns a glommio `TcpStream` and one receive buffer, allocated when it is
//! opened and reused for every response, so a request costs no allocation: the request
//! bytes are encoded once per shard ([`encode_request`]) and written as they are; the
//! response head is parsed in place and the body is counted and discarded as it arrives.
//! Framing decisions belong to `framing`; this module only moves bytes and maps what goes
//! wrong on the wire to an [`ErrorKind`]. It never retries: the scheduler decides that.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::config::Plan;
use super::framing::{parse_head, Chunked, Framing, HeadParse};
use super::report::ErrorKind;

/// Receive buffer per connection: big enough for any sane head, and for large bodies to
/// arrive in few reads.
const RECV_BUF: usize = 32 << 10;

/// Encodes the request every slot of a run sends (head and body).
pub fn encode_request(plan: &Plan) -> Vec<u8> {
    let mut r = Vec::with_capacity(256 + plan.body_size);
    r.extend_from_slice(plan.method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(plan.target.path.as_bytes());
    r.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    r.extend_from_slice(plan.target.authority.as_bytes());
    r.extend_from_slice(b"\r\n");
    let mut has_ua = false;
    for (name, value) in &plan.headers {
        has_ua |= name.eq_ignore_ascii_case("user-agent");
        if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(value.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    if !has_ua {
        r.extend_from_slice(b"User-Agent: ringway-bench\r\n");
    }
    if plan.close {
        r.extend_from_slice(b"Connection: close\r\n");
    }
    if plan.body_size > 0 || !matches!(plan.method.as_str(), "GET" | "HEAD" | "DELETE") {
        r.extend_from_slice(format!("Content-Length: {}\r\n", plan.body_size).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.resize(r.len() + plan.body_size, b'x');
    r
}

/// What a completed exchange returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Body bytes (chunk payloads for chunked bodies).
    pub body: u64,
    /// The connection may carry another request.
    pub reusable: bool,
}

/// An HTTP/1.1 client connection.
pub struct H1Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// Bytes `buf[start..end]` were received and not yet consumed.
    start: usize,
    end: usize,
}

impl H1Conn {
    /// Connects to `addr` within `timeout`, with `TCP_NODELAY` and read/write timeouts set.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<H1Conn, ErrorKind> {
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
        let setup = stream
            .set_nodelay(true)
            .and_then(|_| stream.set_read_timeout(Some(timeout)))
            .and_then(|_| stream.set_write_timeout(Some(timeout)));
        if setup.is_err() {
            return Err(ErrorKind::Connect);
        }
        Ok(H1Conn {
            stream,
            buf: vec![0u8; RECV_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        })
    }

    /// Sends `request` and reads the whole response. `head_request` is true for `HEAD`.
    /// After an error the connection must be dropped.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
    ) -> Result<Response, ErrorKind> {
        if self.start != self.end {
            // The server sent bytes nobody asked for: framing can no longer be trusted.
            return Err(ErrorKind::Other);
        }
        self.start = 0;
        self.end = 0;
        if let Err(e) = self.stream.write_all(request).await {
            return Err(ErrorKind::of_io(&e));
        }
        loop {
            let head = self.read_head(head_request).await?;
            if (100..200).contains(&head.status) {
                if head.status == 101 {
                    return Err(ErrorKind::Other);
                }
                self.start += head.len;
                continue;
            }
            self.start += head.len;
            let body = match head.framing {
                Framing::Length(n) => self.skip_exact(n).await?,
                Framing::Chunked => self.skip_chunked().await?,
                Framing::UntilClose => self.skip_to_eof().await?,
            };
            return Ok(Response {
                status: head.status,
                body,
                reusable: !head.close,
            });
        }
    }

    /// Reads until the server closes (used after `Connection: close`, so that the server,
    /// not this client, holds the TIME_WAIT state).
    pub async fn drain_to_eof(&mut self) {
        self.start = 0;
        self.end = 0;
        while let Ok(n) = self.stream.read(&mut self.buf).await {
            if n == 0 {
                break;
            }
        }
    }

    async fn fill(&mut self) -> Result<usize, ErrorKind> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(ErrorKind::Other); // a head larger than the buffer
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e) => Err(ErrorKind::of_io(&e)),
        }
    }

    async fn read_head(&mut self, head_request: bool) -> Result<super::framing::Head, ErrorKind> {
        loop {
            if self.start != self.end {
                match parse_head(&self.buf[self.start..self.end], head_request) {
                    HeadParse::Complete(h) => return Ok(h),
                    HeadParse::Invalid(_) => return Err(ErrorKind::Other),
                    HeadParse::Partial => {}
                }
            }
            if self.fill().await? == 0 {
                return Err(ErrorKind::Closed);
            }
        }
    }

    async fn skip_exact(&mut self, n: u64) -> Result<u64, ErrorKind> {
        let buffered = ((self.end - self.start) as u64).min(n);
        self.start += buffered as usize;
        let mut left = n - buffered;
        while left > 0 {
            // Read straight over the whole buffer: the body is counted, not kept.
            let want = (left.min(self.buf.len() as u64)) as usize;
            match self.stream.read(&mut self.buf[..want]).await {
                Ok(0) => return Err(ErrorKind::Closed),
                Ok(got) => left -= got as u64,
                Err(e) => return Err(ErrorKind::of_io(&e)),
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(n)
    }

    async fn skip_chunked(&mut self) -> Result<u64, ErrorKind> {
        let mut dec = Chunked::new();
        loop {
            let used = dec
                .feed(&self.buf[self.start..self.end])
                .map_err(|_| ErrorKind::Other)?;
            self.start += used;
            if dec.done() {
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                return Ok(dec.data);
            }
            self.start = 0;
            self.end = 0;
            if self.fill().await? == 0 {
                return Err(ErrorKind::Closed);
            }
        }
    }

    async fn skip_to_eof(&mut self) -> Result<u64, ErrorKind> {
        let mut total = (self.end - self.start) as u64;
        self.start = 0;
        self.end = 0;
        loop {
            match self.stream.read(&mut self.buf).await {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) => return Err(ErrorKind::of_io(&e)),
            }
        }
    }
}
