//! The HTTP/1.1 request path: accept a client, read its requests one after another
//! (pipelined ones in order), route each, forward it on a backend connection, stream both
//! bodies, and give the connection back to the pool.
//!
//! Each client connection is one task on its shard, with two buffers it keeps for its
//! life (client side, backend side) and one scratch vector for heads: nothing is
//! allocated per request. Bodies are streamed through those buffers, never held whole.
//! Every failure becomes a status the client can read (see DESIGN.md) or, once a response
//! has started, a closed connection; nothing here panics on what a peer sent.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use ringway_pool::ServerId;

use crate::backend::{AcquireError, BackendConn};
use crate::body::{copy_body, copy_dechunked, CopyError};
use crate::buf::Buf;
use crate::http1::{self, Framing, HeadError, Method, RequestHead, ResponseHead};
use crate::shard::Shard;

const VIA: &str = "1.1 ringway";
const BUF_SIZE: usize = 16 << 10;

/// Accepts clients on one listener until the task is dropped (shard draining).
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                shard.metrics.borrow_mut().c.accepted += 1;
                if shard.client_conns.get() as usize >= shard.config().max_conns_per_shard {
                    shard.metrics.borrow_mut().c.refused_capacity += 1;
                    glommio::spawn_local(refuse(stream)).detach();
                    continue;
                }
                glommio::spawn_local(serve_client(shard.clone(), stream)).detach();
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off briefly instead of spinning.
                warn_rate_limited(&shard, "accept failed", &io::Error::from(e));
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Logs a resource error at most once a second per shard (the fd limit can make every
/// accept and connect fail at once), with how many were not logged.
pub fn warn_rate_limited(shard: &Shard, what: &str, e: &io::Error) {
    let now = Instant::now();
    let (last, quiet) = shard.warn_state.get();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
        shard.warn_state.set((last, quiet + 1));
        return;
    }
    tracing::warn!(shard = shard.id, error = %e, suppressed = quiet, "{what}");
    shard.warn_state.set((Some(now), 0));
}

async fn refuse(mut stream: TcpStream) {
    let mut out = Vec::new();
    http1::write_error(503, true, &mut out);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out).await;
}

/// Counts a client connection for as long as it lives.
struct ConnGuard(Rc<Shard>);
impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0
            .client_conns
            .set(self.0.client_conns.get().saturating_sub(1));
    }
}

/// Counts a request in flight (the drain waits for these).
pub(crate) struct InflightGuard(pub(crate) Rc<Shard>);
impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.set(self.0.inflight.get().saturating_sub(1));
    }
}

/// Serves one client connection to its end.
pub async fn serve_client(shard: Rc<Shard>, stream: TcpStream) {
    shard.client_conns.set(shard.client_conns.get() + 1);
    let _guard = ConnGuard(shard.clone());
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let mut c = Client {
        shard,
        stream,
        peer,
        buf: Buf::with_capacity(BUF_SIZE),
        bbuf: Buf::with_capacity(BUF_SIZE),
        out: Vec::with_capacity(1024),
        private: None,
        first: true,
    };
    let http2 = c.run().await;
    if let Some(bc) = c.private.take() {
        c.shard.pool.borrow_mut().released(bc.server);
        c.shard.close_conn(bc);
    }
    if http2 {
        // The client opened with the HTTP/2 preface: the connection (still counted by
        // `_guard`) is HTTP/2 from here on, starting with the bytes already read.
        let Client {
            shard, stream, buf, ..
        } = c;
        crate::h2front::serve(shard, stream, peer, buf.data().to_vec()).await;
    }
}

/// What became of one request, for the connection's next step.
struct Outcome {
    status: u16,
    keep_alive: bool,
}

impl Outcome {
    fn close(status: u16) -> Outcome {
        Outcome {
            status,
            keep_alive: false,
        }
    }
}

struct Client {
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: IpAddr,
    /// Bytes from the client not yet consumed (head, body, next pipelined request).
    buf: Buf,
    /// Bytes from the backend not yet consumed.
    bbuf: Buf,
    /// Scratch for heads we write.
    out: Vec<u8>,
    /// `--reuse never`: the connection private to this client.
    private: Option<BackendConn>,
    /// The session's first request is yet to be sent (HAProxy's reuse semantics).
    first: bool,
}

enum HeadRead {
    Head(RequestHead),
    /// The client closed (or idled out) between requests: close quietly.
    Closed,
    /// The head did not complete in time.
    Timeout,
    Bad(HeadError),
}

impl Client {
    /// Serves requests until the connection ends; true when the client turned out to
    /// speak HTTP/2 (prior knowledge) and nothing was answered yet.
    async fn run(&mut self) -> bool {
        loop {
            let head = match self.read_head().await {
                HeadRead::Head(h) => h,
                HeadRead::Closed => return false,
                HeadRead::Timeout => {
                    self.shard.metrics.borrow_mut().c.head_timeout += 1;
                    self.send_error(408, true).await;
                    return false;
                }
                HeadRead::Bad(HeadError::UnsupportedVersion)
                    if self.first
                        && ringway_h2mux::server::starts_with_preface(self.buf.data()) =>
                {
                    return true;
                }
                HeadRead::Bad(e) => {
                    {
                        let mut m = self.shard.metrics.borrow_mut();
                        if matches!(e, HeadError::TooLarge) {
                            m.c.head_too_large += 1;
                        } else {
                            m.c.bad_request += 1;
                        }
                    }
                    tracing::debug!(peer = %self.peer, error = %e, "bad request head");
                    self.send_error(e.status(), true).await;
                    return false;
                }
            };
            let start = Instant::now();
            self.shard.metrics.borrow_mut().c.requests += 1;
            self.shard.inflight.set(self.shard.inflight.get() + 1);
            let outcome = {
                let _inflight = InflightGuard(self.shard.clone());
                self.handle(head).await
            };
            {
                let mut m = self.shard.metrics.borrow_mut();
                // 499: the client went away; nothing was sent, nothing to count as a response.
                if outcome.status != 499 {
                    m.record_status(outcome.status);
                }
                let us = start.elapsed().as_micros() as u64;
                let _ = m.latency.record(us.max(1));
            }
            if !outcome.keep_alive || self.shard.draining.get() {
                return false;
            }
        }
    }

    /// Reads until a complete request head is buffered.
    async fn read_head(&mut self) -> HeadRead {
        let cfg = &self.shard.shared.config;
        let max_head = cfg.max_head;
        let mut head_deadline: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                match http1::parse_request(self.buf.data(), max_head) {
                    Ok(Some(h)) => return HeadRead::Head(h),
                    Ok(None) => {}
                    Err(e) => return HeadRead::Bad(e),
                }
                if head_deadline.is_none() {
                    head_deadline = Some(Instant::now() + cfg.timeouts.client_head);
                }
            }
            let timeout = match head_deadline {
                None => cfg.timeouts.client_idle,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return HeadRead::Timeout;
                    }
                    left
                }
            };
            let _ = self.stream.set_read_timeout(Some(timeout));
            if self.buf.spare_capacity() == 0 && !self.buf.grow(max_head + 1) {
                return HeadRead::Bad(HeadError::TooLarge);
            }
            match self.buf.fill_from(&mut self.stream).await {
                Ok(0) => return HeadRead::Closed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return if head_deadline.is_some() {
                        HeadRead::Timeout
                    } else {
                        HeadRead::Closed
                    };
                }
                Err(_) => return HeadRead::Closed,
            }
        }
    }

    async fn send_error(&mut self, status: u16, close: bool) {
        self.out.clear();
        http1::write_error(status, close, &mut self.out);
        let _ = self
            .stream
            .set_write_timeout(Some(self.shard.config().timeouts.client_idle));
        let _ = self.stream.write_all(&self.out).await;
        if close {
            let _ = self.stream.shutdown(std::net::Shutdown::Write).await;
        }
    }

    /// Answers a request without a backend; closes if the request has a body we did not read.
    async fn answer_locally(&mut self, head: &RequestHead, status: u16) -> Outcome {
        let close = !head.keep_alive || head.framing != Framing::Empty;
        if !close {
            self.buf.consume(head.head_len);
        }
        self.send_error(status, close).await;
        Outcome {
            status,
            keep_alive: !close,
        }
    }

    async fn handle(&mut self, head: RequestHead) -> Outcome {
        let shard = self.shard.clone();
        let backend = {
            let data = self.buf.data();
            let host = head.host.clone().map(|r| &data[r]);
            shard.shared.router.route(host, &data[head.path.clone()])
        };
        let Some(backend) = backend else {
            shard.metrics.borrow_mut().c.no_route += 1;
            return self.answer_locally(&head, 404).await;
        };
        let server = shard.choose_server(backend);

        // The upstream head, kept until a response head arrives (a retry resends it).
        self.out.clear();
        http1::write_request_upstream(
            self.buf.data(),
            &head,
            &http1::Forwarded {
                client_ip: self.peer,
                proto: "http",
                via: VIA,
            },
            &mut self.out,
        );
        self.buf.consume(head.head_len);
        // A body that is already here in full travels in the same write as the head (and
        // is resent with it on a retry).
        let mut head = head;
        if let Framing::Length(n) = head.framing {
            if n <= self.buf.len() as u64 {
                self.out.extend_from_slice(&self.buf.data()[..n as usize]);
                self.buf.consume(n as usize);
                head.framing = Framing::Empty;
                head.expect_continue = false;
            }
        }
        let upstream_head = std::mem::take(&mut self.out);
        let outcome = self.forward(&head, server, &upstream_head).await;
        self.out = upstream_head;
        self.first = false;
        outcome
    }

    /// Gets a connection: this client's private one (reuse never), or from the shard.
    async fn connection(
        &mut self,
        server: ServerId,
        fresh: bool,
    ) -> Result<(BackendConn, bool), AcquireError> {
        if let Some(bc) = self.private.take() {
            if bc.server == server && !fresh {
                return Ok((bc, true));
            }
            self.shard.pool.borrow_mut().released(bc.server);
            self.shard.close_conn(bc);
        }
        self.shard.acquire(server, self.first, fresh).await
    }

    async fn forward(&mut self, head: &RequestHead, server: ServerId, upstream: &[u8]) -> Outcome {
        let shard = self.shard.clone();
        let cfg = &shard.shared.config;
        let client_idle = cfg.timeouts.client_idle;
        let backend_timeout = cfg.timeouts.backend;
        let has_body = head.framing != Framing::Empty;

        if head.expect_continue && has_body {
            // We answer 100 ourselves and stream the body at once; the backend's own
            // interim 100, if any, is dropped when its response is read.
            let _ = self.stream.set_write_timeout(Some(client_idle));
            if self
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return Outcome::close(499);
            }
        }

        let mut retried = false;
        loop {
            let (mut bc, reused) = match self.connection(server, retried).await {
                Ok(x) => x,
                Err(e) => {
                    if let AcquireError::Refused(err) = &e {
                        tracing::debug!(error = %err, "backend connect refused");
                    }
                    return self.answer_locally(head, e.status()).await;
                }
            };
            bc.begin_request(backend_timeout);
            let _ = self.stream.set_write_timeout(Some(client_idle));
            self.bbuf.clear();
            let retryable = reused && !retried && !has_body && head.method.is_idempotent();

            if let Err(e) = bc.stream.write_all(upstream).await {
                shard.release(bc, false);
                if retryable {
                    retried = true;
                    shard.metrics.borrow_mut().c.retries += 1;
                    continue;
                }
                tracing::debug!(error = %e, "writing the request head to the backend failed");
                shard.metrics.borrow_mut().c.backend_errors += 1;
                return self.answer_locally(head, 502).await;
            }

            let relayed = if has_body && self.needs_duplex(head.framing) {
                self.exchange_duplex(head, &mut bc).await
            } else {
                if has_body {
                    let _ = self.stream.set_read_timeout(Some(client_idle));
                    let copied = copy_body(
                        head.framing,
                        &mut self.stream,
                        &mut self.buf,
                        &mut bc.stream,
                    )
                    .await;
                    if let Err(e) = copied {
                        shard.release(bc, false);
                        return self.request_body_failed(e).await;
                    }
                }
                let Client {
                    stream, bbuf, out, ..
                } = self;
                relay_response(&shard, head, &mut bc, bbuf, out, stream).await
            };
            return match relayed {
                Ok(done) => {
                    if done.status == 101 && head.upgrade {
                        // The backend switched protocols (WebSocket and friends): from
                        // here on both connections are one tunnel, then both close.
                        self.tunnel(&mut bc).await;
                        shard.release(bc, false);
                        return Outcome::close(101);
                    }
                    if done.reusable && shard.config().reuse == ringway_pool::ReuseMode::Never {
                        self.private = Some(bc);
                    } else {
                        shard.release(bc, done.reusable);
                    }
                    Outcome {
                        status: done.status,
                        keep_alive: done.client_keep_alive,
                    }
                }
                Err(RelayError::BeforeHead(RespErr::NothingReceived(e))) => {
                    shard.release(bc, false);
                    if retryable {
                        retried = true;
                        shard.metrics.borrow_mut().c.retries += 1;
                        continue;
                    }
                    self.backend_failed(head, &e).await
                }
                Err(RelayError::BeforeHead(RespErr::Io(e))) => {
                    shard.release(bc, false);
                    self.backend_failed(head, &e).await
                }
                Err(RelayError::BeforeHead(RespErr::Bad(e))) => {
                    tracing::debug!(error = %e, "backend sent a bad response head");
                    shard.release(bc, false);
                    shard.metrics.borrow_mut().c.backend_errors += 1;
                    self.send_error(502, true).await;
                    Outcome::close(502)
                }
                Err(RelayError::RequestBody(e)) => {
                    shard.release(bc, false);
                    self.request_body_failed(e).await
                }
                Err(RelayError::AfterHead {
                    status,
                    client_gone,
                }) => {
                    let mut m = shard.metrics.borrow_mut();
                    if client_gone {
                        m.c.client_aborts += 1;
                    } else {
                        m.c.backend_errors += 1;
                    }
                    drop(m);
                    shard.release(bc, false);
                    Outcome::close(status)
                }
            };
        }
    }

    /// Relays bytes both ways after a `101 Switching Protocols`, until each side has
    /// closed its half (a half-close is passed on) or stays silent for
    /// `--timeout-client-idle`.
    async fn tunnel(&mut self, bc: &mut BackendConn) {
        let idle = self.shard.config().timeouts.client_idle;
        let (mut client_w, mut backend_w) = match (
            crate::fd::duplicate(&self.stream),
            crate::fd::duplicate(&bc.stream),
        ) {
            (Ok(c), Ok(b)) => (c, b),
            _ => return,
        };
        for s in [&self.stream, &bc.stream, &client_w, &backend_w] {
            let _ = s.set_read_timeout(Some(idle));
            let _ = s.set_write_timeout(Some(idle));
        }
        let Client {
            stream, buf, bbuf, ..
        } = self;
        let up = async {
            let _ = copy_body(Framing::UntilClose, stream, buf, &mut backend_w).await;
            let _ = backend_w.shutdown(std::net::Shutdown::Write).await;
        };
        let down = async {
            let _ = copy_body(Framing::UntilClose, &mut bc.stream, bbuf, &mut client_w).await;
            let _ = client_w.shutdown(std::net::Shutdown::Write).await;
        };
        futures_lite::future::zip(up, down).await;
    }

    /// Whether the request body must flow while the response is already being read: a
    /// backend may answer (and stop reading) before the body ends, and a body larger
    /// than the socket buffers would then stall both sides until a timeout.
    fn needs_duplex(&self, framing: Framing) -> bool {
        match framing {
            Framing::Length(n) => n > DUPLEX_ABOVE && n > self.buf.len() as u64,
            Framing::Chunked => true,
            Framing::Empty | Framing::UntilClose => false,
        }
    }

    /// Sends the request body and relays the response at the same time, on a second
    /// stream object for each socket (one side reads, the other writes).
    async fn exchange_duplex(
        &mut self,
        head: &RequestHead,
        bc: &mut BackendConn,
    ) -> Result<RelayDone, RelayError> {
        let shard = self.shard.clone();
        let (mut client_w, mut backend_w) = match (
            crate::fd::duplicate(&self.stream),
            crate::fd::duplicate(&bc.stream),
        ) {
            (Ok(c), Ok(b)) => (c, b),
            // The body is unread: answer 502 and close the client connection.
            _ => {
                return Err(RelayError::RequestBody(CopyError::Dst(io::Error::other(
                    "cannot duplicate a socket (fd limit?)",
                ))))
            }
        };
        let cfg = shard.config();
        let _ = client_w.set_write_timeout(Some(cfg.timeouts.client_idle));
        let _ = backend_w.set_write_timeout(Some(cfg.timeouts.backend));
        let _ = self.stream.set_read_timeout(Some(cfg.timeouts.client_idle));
        let Client {
            stream,
            buf,
            bbuf,
            out,
            ..
        } = self;
        let mut request = std::pin::pin!(copy_body(head.framing, stream, buf, &mut backend_w));
        let mut response =
            std::pin::pin!(relay_response(&shard, head, bc, bbuf, out, &mut client_w));
        let mut request_done: Option<Result<(), CopyError>> = None;
        let relayed = std::future::poll_fn(|cx| {
            if request_done.is_none() {
                if let std::task::Poll::Ready(r) = request.as_mut().poll(cx) {
                    request_done = Some(r);
                }
            }
            // A request body that failed before any response head ends the exchange.
            if let Some(Err(_)) = &request_done {
                return std::task::Poll::Ready(None);
            }
            response.as_mut().poll(cx).map(Some)
        })
        .await;
        match (relayed, request_done) {
            (None, Some(Err(e))) => Err(RelayError::RequestBody(e)),
            (Some(Ok(done)), Some(Ok(()))) => Ok(done),
            (Some(Ok(mut done)), _) => {
                // The backend answered before the body was all sent: neither connection
                // can be trusted for another request.
                done.reusable = false;
                done.client_keep_alive = false;
                Ok(done)
            }
            (Some(Err(e)), _) => Err(e),
            (None, _) => Err(RelayError::BeforeHead(RespErr::Io(io::Error::other(
                "request body failed",
            )))),
        }
    }

    async fn request_body_failed(&mut self, e: CopyError) -> Outcome {
        let shard = self.shard.clone();
        match e {
            CopyError::Src(_) => {
                shard.metrics.borrow_mut().c.client_aborts += 1;
                Outcome::close(499)
            }
            CopyError::Framing => {
                shard.metrics.borrow_mut().c.bad_request += 1;
                self.send_error(400, true).await;
                Outcome::close(400)
            }
            CopyError::Dst(e) => {
                tracing::debug!(error = %e, "backend stopped reading the request body");
                shard.metrics.borrow_mut().c.backend_errors += 1;
                self.send_error(502, true).await;
                Outcome::close(502)
            }
        }
    }

    async fn backend_failed(&mut self, head: &RequestHead, e: &io::Error) -> Outcome {
        let status = if e.kind() == io::ErrorKind::TimedOut {
            self.shard.metrics.borrow_mut().c.backend_timeouts += 1;
            504
        } else {
            self.shard.metrics.borrow_mut().c.backend_errors += 1;
            502
        };
        tracing::debug!(error = %e, status, "backend failed before responding");
        // The request body (if any) was consumed, so the client connection stays usable.
        self.send_error(status, !head.keep_alive).await;
        Outcome {
            status,
            keep_alive: head.keep_alive,
        }
    }
}

/// Bodies up to this size are sent whole before the response is read.
const DUPLEX_ABOVE: u64 = 256 << 10;

/// A response relayed to its end.
struct RelayDone {
    status: u16,
    /// The client connection may carry another request.
    client_keep_alive: bool,
    /// The backend connection may carry another request.
    reusable: bool,
}

enum RelayError {
    /// Nothing was sent to the client yet: the caller answers with an error status.
    BeforeHead(RespErr),
    /// The request body failed (client side, framing, or the backend stopped reading).
    RequestBody(CopyError),
    /// The response started and then broke: the only way to tell the client is to close.
    AfterHead { status: u16, client_gone: bool },
}

/// Reads the backend's response head (skipping interim 100s) and relays the response
/// to the client through `client`.
async fn relay_response(
    shard: &Rc<Shard>,
    head: &RequestHead,
    bc: &mut BackendConn,
    bbuf: &mut Buf,
    out: &mut Vec<u8>,
    client: &mut TcpStream,
) -> Result<RelayDone, RelayError> {
    let resp = read_response_head(shard.config().max_head, bc, bbuf, head.method)
        .await
        .map_err(RelayError::BeforeHead)?;
    let dechunk = resp.needs_dechunk(head.minor);
    let client_keep_alive = head.keep_alive
        && !shard.draining.get()
        && resp.framing != Framing::UntilClose
        && !dechunk
        && resp.status != 101;
    out.clear();
    http1::write_response_downstream(bbuf.data(), &resp, VIA, client_keep_alive, head.minor, out);
    bbuf.consume(resp.head_len);
    // Body bytes that came with the head leave in the same write as the head.
    let mut framing = resp.framing;
    if let (Framing::Length(n), false) = (framing, dechunk) {
        let take = (bbuf.len() as u64).min(n) as usize;
        out.extend_from_slice(&bbuf.data()[..take]);
        bbuf.consume(take);
        framing = Framing::Length(n - take as u64);
    }
    let broken = |client_gone| RelayError::AfterHead {
        status: resp.status,
        client_gone,
    };
    client.write_all(out).await.map_err(|_| broken(true))?;
    let copied = if dechunk {
        copy_dechunked(&mut bc.stream, bbuf, client).await
    } else {
        copy_body(framing, &mut bc.stream, bbuf, client).await
    };
    match copied {
        Ok(()) => {}
        Err(CopyError::Dst(_)) => return Err(broken(true)),
        Err(CopyError::Src(e)) => {
            tracing::debug!(error = %e, "backend response body ended early");
            return Err(broken(false));
        }
        Err(CopyError::Framing) => {
            tracing::debug!("backend sent a bad chunked body");
            return Err(broken(false));
        }
    }
    Ok(RelayDone {
        status: resp.status,
        client_keep_alive,
        // After a 101 the connection speaks another protocol: never pool it.
        reusable: resp.keep_alive
            && resp.framing != Framing::UntilClose
            && resp.status != 101
            && bbuf.is_empty(),
    })
}

pub(crate) async fn read_response_head(
    max_head: usize,
    bc: &mut BackendConn,
    bbuf: &mut Buf,
    method: Method,
) -> Result<ResponseHead, RespErr> {
    let mut received = false;
    loop {
        if !bbuf.is_empty() {
            match http1::parse_response(bbuf.data(), method, max_head) {
                Ok(Some(r)) if r.is_interim() && r.status != 101 => {
                    // Interim response: the client was already told to continue.
                    bbuf.consume(r.head_len);
                    continue;
                }
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(RespErr::Bad(e)),
            }
        }
        if bbuf.spare_capacity() == 0 && !bbuf.grow(max_head + 1) {
            return Err(RespErr::Bad(HeadError::TooLarge));
        }
        match bbuf.fill_from(&mut bc.stream).await {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "backend closed");
                return Err(if received {
                    RespErr::Io(e)
                } else {
                    RespErr::NothingReceived(e)
                });
            }
            Ok(_) => received = true,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(RespErr::Io(e)),
            Err(e) => {
                return Err(if received {
                    RespErr::Io(e)
                } else {
                    RespErr::NothingReceived(e)
                })
            }
        }
    }
}

pub(crate) enum RespErr {
    /// The connection failed before any response byte: a reused connection the server
    /// had closed meanwhile; retryable for idempotent requests.
    NothingReceived(io::Error),
    Io(io::Error),
    Bad(HeadError),
}
