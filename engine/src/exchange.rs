//! One request's exchange with a backend, the same for every front.
//!
//! A front (HTTP/1.1 or HTTP/2 today, TLS fronts next) turns a client request into a
//! [`Request`] — the pool slot chosen by routing, the method and the head to send
//! upstream — plus a [`BodySource`] for the body still to come, and gives a
//! [`ResponseSink`] that turns a backend response back into its protocol. [`forward`]
//! does everything in between, once: takes a [`Lease`] (through the client's
//! [`Session`], which keeps private connections for `--reuse never`), sends the head,
//! streams the body while the response comes back when it must, applies the retry rule,
//! bounds the backend by `--timeout-backend`, decides whether the connection can be
//! pooled again, counts errors, and maps every failure to what the client should get
//! ([`Failure`]). The front then says it in its own protocol.
//!
//! The retry rule: an idempotent request with no body still to send, whose *reused*
//! connection failed before any response byte (the server closed it while idle), is
//! sent once more on a fresh connection. Never after a response byte; never twice.
//!
//! Slots whose servers speak HTTP/2 (`h2c://`) take the second path, [`h2back`]: a
//! stream on a shared connection instead of a lease on a whole one, with the same
//! contract towards the front and the same failures.

mod h2back;
mod h2body;
pub mod trailers;

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use ringway_http1::{self as http1, Framing, HeadError, Method, ResponseHead};
use ringway_pool::{ReuseMode, ServerId};

use crate::buf::Buf;
use crate::config::CancelLimits;
use crate::ctx::ShardCtx;
use crate::duplex::Duplex;
use crate::rate::TokenBucket;
use crate::splice::SpliceEnd;
use crate::trace::Trace;
use crate::upstream::{AcquireError, Lease, Upstreams, Verdict};

/// A client connection's standing with the backends: whether its first request is yet
/// to be sent (HAProxy's reuse modes treat it apart), and the backend connections
/// private to it (with `--reuse never`, every one; otherwise those that have carried one
/// of its request bodies), kept between its requests (one per concurrent request at
/// most) and closed with it.
///
/// It also keeps what this client's cancelled requests have cost in backend connections
/// over time (`--cancel-connect-rate`/`--cancel-connect-burst`): once that budget is
/// spent, a request of this client that would connect waits for the budget (or for an
/// idle pooled connection) instead of opening one more connection, so no client can turn
/// cancels into a connection storm at the origin.
///
/// With `send-proxy` on a backend, every connection to its servers starts with a PROXY
/// header naming this client ([`ClientAddr`]) and is private to this session the same
/// way (HAProxy marks such connections private): opened for this client, reused only
/// for its later requests, never pooled for another client nor taken over by another
/// shard, and closed when the client connection ends.
pub struct Session {
    first: Cell<bool>,
    /// Who the client is (for the PROXY header of `send-proxy` backends).
    client: ClientAddr,
    private: RefCell<Vec<Lease>>,
    /// Backend connects this client may still cause (made on first use): a connect takes a
    /// token, given back when its connection ends up pooled or reused (it cost nothing)
    /// and kept when the client's cancel closed it.
    /// Boxed: most connections never connect (their requests find a pooled connection),
    /// and an idle one keeps its `Session` for its life (40 bytes inline).
    cancel_budget: RefCell<Option<Box<TokenBucket>>>,
}

/// The client of a connection as the backends may be told (`send-proxy`): its address
/// (from the `--accept-proxy` header when the listener has one, else the socket's peer)
/// and the address it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
}

impl Session {
    pub fn new(client: ClientAddr) -> Session {
        Session {
            first: Cell::new(true),
            client,
            private: RefCell::new(Vec::new()),
            cancel_budget: RefCell::new(None),
        }
    }

    /// The client's address (as the PROXY header named it, else the socket's peer).
    pub fn peer(&self) -> std::net::IpAddr {
        self.client.src.ip()
    }

    fn with_budget<T>(&self, limits: &CancelLimits, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
        let mut b = self.cancel_budget.borrow_mut();
        let b = b.get_or_insert_with(|| {
            Box::new(TokenBucket::new(
                limits.connect_rate,
                limits.connect_burst,
                glommio::clock::now(),
            ))
        });
        f(b)
    }

    /// Takes a token for a connect of this client for `slot`: `Ok(true)` when one was
    /// taken, `Ok(false)` when none is needed (no bound, or an idle connection is pooled
    /// here, so the request will not connect), `Err(wait)` when the budget is spent.
    fn take_connect(
        &self,
        ups: &Upstreams,
        slot: ServerId,
        limits: &CancelLimits,
    ) -> Result<bool, Duration> {
        if limits.connect_rate == 0 || ups.idle_here(slot) > 0 {
            return Ok(false);
        }
        self.with_budget(limits, |b| {
            let now = glommio::clock::now();
            if b.take(now) {
                Ok(true)
            } else {
                Err(b.wait(now))
            }
        })
    }

    /// A connection for `slot` that needs no wait: one of this client's own, else
    /// (without `send-proxy`) an idle one from this shard's pool.
    fn lease_now(
        &self,
        ups: &Rc<Upstreams>,
        slot: ServerId,
        first: bool,
        fresh: bool,
    ) -> Option<Lease> {
        if fresh {
            return None;
        }
        {
            let mut private = self.private.borrow_mut();
            while let Some(i) = private.iter().position(|l| l.slot() == slot) {
                let mut lease = private.swap_remove(i);
                // One that carried a body, or a `send-proxy` one, is peeked before each
                // reuse (one syscall, on those paths only); one the server closed or
                // wrote on is dropped.
                if !(lease.carried_body() || lease.is_private()) || lease.still_quiet() {
                    // It carried a request before: the stale-connection retry applies.
                    return Some(lease.kept());
                }
                lease.set_reusable(false);
            }
        }
        if ups.backend_of(slot).and_then(|b| b.send_proxy).is_some() {
            return None;
        }
        ups.acquire_local(slot, first)
    }

    /// A connection for `slot` when [`lease_now`](Self::lease_now) had none: a
    /// takeover or a new connect (`send-proxy`: always a new one, naming the client).
    async fn lease(
        &self,
        ups: &Rc<Upstreams>,
        slot: ServerId,
        first: bool,
        fresh: bool,
    ) -> Result<Lease, AcquireError> {
        let send_proxy = ups.backend_of(slot).and_then(|b| b.send_proxy);
        match send_proxy {
            // Only this client's own connections: a new one names it first.
            Some(v) => {
                let header =
                    crate::upstream::proxy_out::header(v, self.client.src, self.client.dst);
                ups.acquire_private(slot, &header).await
            }
            None => ups.acquire(slot, first, fresh).await,
        }
    }

    /// The exchange is over with this lease: keep it private (`--reuse never`, a
    /// connection that has carried a request body: no other client may ever get an
    /// answer a backend gave to what it took for a request inside that body, or one that
    /// began with this client's PROXY header) or let it
    /// go back to the pool (or close) as it was marked.
    fn finish(&self, lease: Lease, reuse: ReuseMode) {
        if lease.is_reusable()
            && (reuse == ReuseMode::Never || lease.carried_body() || lease.is_private())
        {
            self.private.borrow_mut().push(lease);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Private connections end with their client (a plain close, not a policy RST).
        for mut lease in self.private.get_mut().drain(..) {
            lease.set_reusable(false);
        }
    }
}

/// What a front asks the exchange to send.
pub struct Request<'a> {
    /// Where: the pool slot of the server routing chose.
    pub slot: ServerId,
    pub method: Method,
    /// The head to send upstream, with the body already folded in when it was small and
    /// complete (then `BodySource::pending` is false).
    pub head: &'a [u8],
    /// The request has a body (folded into `head` or still pending): the connection is
    /// then peeked before any reuse (see `BackendConn::carried_body`).
    pub has_body: bool,
    /// Where the exchange notes its connection and the bytes it sent, for the logs.
    pub trace: &'a Trace,
}

/// Why a request body could not be sent.
pub enum BodyError {
    /// The client went away, reset the stream, or stopped sending.
    Client,
    /// The body's framing is broken (bad chunk syntax): a 400.
    Framing,
    /// The backend stopped reading it.
    Backend(io::Error),
    /// The whole body did not arrive within `--timeout-client-body`: a 408.
    TooSlow,
}

/// The request body still to come from the client.
#[allow(async_fn_in_trait)] // one shard, one thread: no `Send` bound is ever wanted
pub trait BodySource {
    /// True while body bytes remain to be sent after the head.
    fn pending(&self) -> bool;
    /// Whether the body must flow while the response is read: a backend may answer (and
    /// stop reading) before a large or unbounded body ends.
    fn duplex(&self) -> bool;
    /// Sends the rest of the body to the backend.
    async fn send<W: AsyncWrite + Unpin>(&mut self, dst: &mut W) -> Result<(), BodyError>;
}

/// Why a response could not be passed on after it started.
pub enum DeliverError {
    /// The client went away (or reset the stream).
    ClientGone,
    /// The backend's body broke (ended early, bad chunking, timed out).
    Backend,
}

/// Where the response goes: the client, in the front's protocol.
#[allow(async_fn_in_trait)]
pub trait ResponseSink {
    /// Whether a `101 Switching Protocols` can be passed on (HTTP/1.1 only).
    fn can_switch(&self) -> bool;
    /// Ready once the client has given up on this request (HTTP/2 `RST_STREAM`; an
    /// HTTP/1.1 client that closed its connection while its request waits at an HTTP/2
    /// backend), so a wait for the backend's head is abandoned. Otherwise HTTP/1.1
    /// notices on its next write.
    fn poll_gone(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
    /// Whether [`deliver_h2`](Self::deliver_h2) takes an HTTP/2 backend's response as it
    /// came (the HTTP/2 front): no HTTP/1.1 text of the head, no chunk framing of the
    /// body in between. Otherwise the response is turned into HTTP/1.1 for
    /// [`deliver`](Self::deliver).
    fn takes_h2(&self) -> bool {
        false
    }
    /// Relays an HTTP/2 backend's response (head, DATA, trailers) when
    /// [`takes_h2`](Self::takes_h2) says so; the backend's window is given back as the
    /// client takes the bytes, and `idle` is how long the backend may stay silent
    /// mid-body. Returns whether the client connection may carry another request.
    async fn deliver_h2(
        &mut self,
        _head: http::response::Parts,
        _body: h2::RecvStream,
        _idle: Duration,
    ) -> Result<bool, DeliverError> {
        Err(DeliverError::Backend)
    }
    /// Takes the final response head while it is parsed (called once, before
    /// [`deliver`](Self::deliver) and from the parse that checked the head): the front
    /// writes its own head from these fields, so the head is never parsed twice.
    fn head(&mut self, fields: &http1::ResponseFields<'_, '_>);
    /// Sends the response head taken by [`head`](Self::head) (`resp`, its bytes at the
    /// front of `bbuf`) and streams the body from `src`. Consumes what it used of
    /// `bbuf`. Returns whether the client connection may carry another request.
    async fn deliver<R: AsyncRead + Unpin + SpliceEnd>(
        &mut self,
        resp: &ResponseHead,
        bbuf: &mut Buf,
        src: &mut R,
    ) -> Result<bool, DeliverError>;
}

/// A response passed on to its end.
pub struct Exchanged {
    pub status: u16,
    /// The client connection may carry another request.
    pub client_keep_alive: bool,
    /// After a `101`: the backend connection, for the front to tunnel (or drop).
    pub upgraded: Option<Lease>,
}

/// What the client should get when the exchange failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing was sent to the client yet: answer `status`; `close` when the client
    /// connection can no longer be trusted (its request body was not all read).
    Answer { status: u16, close: bool },
    /// The client went away before the response started (499 in the metrics).
    ClientGone,
    /// The response started and then broke: the only way to say so is to close the
    /// client connection (or reset the stream). `status` is the one that was sent.
    Broken { status: u16, client_gone: bool },
}

/// Forwards one request and its response. See the module docs.
///
/// Around the exchange itself, for the upstream layer's traffic management: the request
/// counts as outstanding on its server while it runs (least-request balancing), and how
/// it ended is told to the passive checks ([`crate::upstream::Verdict`]).
pub async fn forward(
    ctx: &ShardCtx,
    session: &Session,
    req: &Request<'_>,
    src: &mut impl BodySource,
    sink: &mut impl ResponseSink,
    bbuf: &mut Buf,
) -> Result<Exchanged, Failure> {
    let _outstanding = ctx.upstreams.begin_outstanding(req.slot);
    if ctx.upstreams.is_h2(req.slot) {
        session.first.set(false);
        // Boxed: the HTTP/2 exchange's state is larger than the HTTP/1.1 one's, and
        // every request's exchange future (boxed and moved per request by the fronts)
        // would otherwise be that large.
        let (r, slot) = Box::pin(h2back::forward(ctx, req, src, sink, bbuf)).await;
        ctx.upstreams.passive(slot, verdict_of(&r));
        return r;
    }
    let (r, slot) = forward_h1(ctx, session, req, src, sink, bbuf).await;
    ctx.upstreams.passive(slot, verdict_of(&r));
    r
}

/// What an exchange's result says about its server, for the passive checks.
fn verdict_of(r: &Result<Exchanged, Failure>) -> Verdict {
    match r {
        Ok(x) if x.status >= 500 => Verdict::Failed,
        Ok(_) | Err(Failure::ClientGone) => Verdict::Ok,
        Err(Failure::Broken { client_gone, .. }) if *client_gone => Verdict::Ok,
        // 503 from our own limits is not the server's fault; the rest are.
        Err(Failure::Answer { status: 503, .. }) => Verdict::Ok,
        Err(_) => Verdict::Failed,
    }
}

/// The retry rule across servers (`retries`, `retry-on`): another server of the backend
/// for a request that is idempotent, has no body left to send and got no response byte.
/// Returns the slot to try next, or `None` when the request may not be retried.
fn retry_elsewhere(
    ctx: &ShardCtx,
    req: &Request<'_>,
    slot: ServerId,
    streamed_body: bool,
    tries: &mut u32,
    on: fn(&crate::config::values::RetryOn) -> bool,
) -> Option<ServerId> {
    let be = ctx.upstreams.backend_of(slot)?;
    if *tries >= be.retries || !on(&be.retry_on) || streamed_body || !req.method.is_idempotent() {
        return None;
    }
    *tries += 1;
    ctx.upstreams.passive(slot, Verdict::Failed);
    ctx.metrics.borrow_mut().c.retries += 1;
    let key = crate::upstream::balance::KeySource {
        head: req.head,
        path: b"",
        client: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    ctx.upstreams.choose_other(slot, &key)
}

/// The HTTP/1.1 exchange, with its retries; also returns the slot of the last try.
async fn forward_h1(
    ctx: &ShardCtx,
    session: &Session,
    req: &Request<'_>,
    src: &mut impl BodySource,
    sink: &mut impl ResponseSink,
    bbuf: &mut Buf,
) -> (Result<Exchanged, Failure>, ServerId) {
    let mut slot = req.slot;
    let r = forward_tries(ctx, session, req, &mut slot, src, sink, bbuf).await;
    (r, slot)
}

async fn forward_tries(
    ctx: &ShardCtx,
    session: &Session,
    req: &Request<'_>,
    slot: &mut ServerId,
    src: &mut impl BodySource,
    sink: &mut impl ResponseSink,
    bbuf: &mut Buf,
) -> Result<Exchanged, Failure> {
    let cfg = ctx.config();
    let max_head = cfg.max_head;
    let body_time = cfg.timeouts.client_body;
    let first = session.first.replace(false);
    let reuse = ctx.upstreams.reuse_mode();
    let mut retried = false;
    let mut tries = 0u32;
    // A body streamed from the client cannot be sent again: no retry elsewhere then.
    let streamed = src.pending();
    loop {
        let backend_timeout = ctx
            .upstreams
            .backend_of(*slot)
            .map_or(cfg.timeouts.backend, |b| {
                b.timeout_try.unwrap_or(b.timeout_backend)
            });
        let asked = glommio::clock::now();
        let mut prepaid = Prepaid {
            session,
            limits: &cfg.cancel,
            taken: false,
        };
        if !retried {
            match wait_for_connect_budget(ctx, session, req, sink).await {
                Some(taken) => prepaid.taken = taken,
                None => {
                    ctx.metrics.borrow_mut().c.client_aborts += 1;
                    return Err(Failure::ClientGone);
                }
            }
        }
        // The pooled connection without an await; a connect or a takeover (boxed:
        // their state is most of the exchange's otherwise) only when there is none.
        let leased = match session.lease_now(&ctx.upstreams, *slot, first, retried) {
            Some(l) => Ok(l),
            None => Box::pin(session.lease(&ctx.upstreams, *slot, first, retried)).await,
        };
        let mut lease = match leased {
            Ok(l) => {
                req.trace.leased(&l, asked);
                if l.reused() {
                    // Pooled or taken over after all: no connect was made.
                    prepaid.refund();
                }
                l
            }
            Err(e) => {
                if let AcquireError::Refused(err) = &e {
                    tracing::debug!(error = %err, "backend connect refused");
                }
                if !matches!(e, AcquireError::Unavailable(_)) {
                    if let Some(next) =
                        retry_elsewhere(ctx, req, *slot, streamed, &mut tries, |r| {
                            r.connect_failure
                        })
                    {
                        *slot = next;
                        continue;
                    }
                }
                return Err(Failure::Answer {
                    status: e.status(),
                    close: src.pending(),
                });
            }
        };
        lease.begin_request(backend_timeout, req.has_body);
        bbuf.clear();
        let retryable = lease.reused() && !retried && !src.pending() && req.method.is_idempotent();

        req.trace.add_in(req.head.len());
        let sent = match lease.transport().write_all(req.head).await {
            Ok(()) => lease.transport().flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            drop(lease);
            if retryable {
                retried = true;
                ctx.metrics.borrow_mut().c.retries += 1;
                continue;
            }
            tracing::debug!(error = %e, "writing the request head to the backend failed");
            ctx.metrics.borrow_mut().c.backend_errors += 1;
            return Err(Failure::Answer {
                status: 502,
                close: src.pending(),
            });
        }

        let (relayed, body_sent) = {
            let backend = Duplex::new(lease.transport());
            let (mut up, mut down) = (&backend, &backend);
            if src.pending() && !src.duplex() {
                // Small body: send it all, then read the answer.
                if let Err(e) = send_body(src, &mut up, body_time).await {
                    return Err(body_failed(ctx, e));
                }
                (
                    relay(
                        sink,
                        req.method,
                        (max_head, backend_timeout),
                        bbuf,
                        &mut down,
                    )
                    .await,
                    true,
                )
            } else if src.pending() {
                // Boxed: a body streamed both ways at once is rare next to a bodiless
                // request, and its state would double the size of every exchange.
                match Box::pin(duplex(
                    ctx,
                    src,
                    sink,
                    req.method,
                    (max_head, backend_timeout, body_time),
                    bbuf,
                    &backend,
                ))
                .await
                {
                    Ok(x) => x,
                    Err(f) => return Err(f),
                }
            } else {
                (
                    relay(
                        sink,
                        req.method,
                        (max_head, backend_timeout),
                        bbuf,
                        &mut down,
                    )
                    .await,
                    true,
                )
            }
        };

        match relayed {
            Ok((status, client_keep_alive, backend_ok)) => {
                if status == 101 {
                    lease.set_reusable(false);
                    return Ok(Exchanged {
                        status,
                        client_keep_alive: false,
                        upgraded: Some(lease),
                    });
                }
                // Both framings intact, nothing unread on the connection: it can carry
                // another request. A body the backend answered before it was all sent
                // leaves neither connection trustworthy.
                if !bbuf.is_empty() {
                    // Bytes past the end of the response: the backend and we disagree on
                    // where a message ended (a desync). Close it, count it, never pool it.
                    ctx.metrics.borrow_mut().c.backend_desync += 1;
                    tracing::debug!(
                        extra = bbuf.len(),
                        "bytes past the end of a backend response"
                    );
                }
                lease.set_reusable(backend_ok && body_sent && bbuf.is_empty());
                session.finish(lease, reuse);
                return Ok(Exchanged {
                    status,
                    client_keep_alive: client_keep_alive && body_sent,
                    upgraded: None,
                });
            }
            Err(RelayError::NothingReceived(_)) if retryable => {
                drop(lease);
                retried = true;
                ctx.metrics.borrow_mut().c.retries += 1;
                continue;
            }
            // Closed, reset, or silent past the per-try timeout with not a byte of a
            // response (a timeout arrives as `Io`, the buffer empty): another server may
            // get it (`retries`, `retry-on`).
            Err(RelayError::NothingReceived(e)) | Err(RelayError::Io(e))
                if body_sent && bbuf.is_empty() =>
            {
                drop(lease);
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                let on: fn(&crate::config::values::RetryOn) -> bool = if timed_out {
                    |r| r.timeout
                } else {
                    |r| r.reset
                };
                if let Some(next) = retry_elsewhere(ctx, req, *slot, streamed, &mut tries, on) {
                    *slot = next;
                    retried = false;
                    continue;
                }
                tracing::debug!(error = %e, "backend failed before responding");
                let status = if timed_out {
                    ctx.metrics.borrow_mut().c.backend_timeouts += 1;
                    504
                } else {
                    ctx.metrics.borrow_mut().c.backend_errors += 1;
                    502
                };
                return Err(Failure::Answer {
                    status,
                    close: false,
                });
            }
            Err(RelayError::NothingReceived(e) | RelayError::Io(e)) => {
                let status = if e.kind() == io::ErrorKind::TimedOut {
                    ctx.metrics.borrow_mut().c.backend_timeouts += 1;
                    504
                } else {
                    ctx.metrics.borrow_mut().c.backend_errors += 1;
                    502
                };
                tracing::debug!(error = %e, status, "backend failed before responding");
                return Err(Failure::Answer {
                    status,
                    close: !body_sent,
                });
            }
            Err(RelayError::Bad(e)) => {
                tracing::debug!(error = %e, "backend sent a bad response head");
                ctx.metrics.borrow_mut().c.backend_errors += 1;
                return Err(Failure::Answer {
                    status: 502,
                    close: true,
                });
            }
            Err(RelayError::Switching) => {
                tracing::debug!("backend answered 101 to a request that cannot switch");
                ctx.metrics.borrow_mut().c.backend_errors += 1;
                return Err(Failure::Answer {
                    status: 502,
                    close: !body_sent,
                });
            }
            Err(RelayError::ClientGoneBeforeHead) => {
                ctx.metrics.borrow_mut().c.client_aborts += 1;
                // The request went out whole: its response can still be read to its end
                // and the connection pooled, instead of costing a connection per cancel.
                let saved = body_sent
                    && !req.has_body
                    && reuse != ReuseMode::Never
                    && drain(ctx, &mut lease, req.method, bbuf).await;
                let mut m = ctx.metrics.borrow_mut();
                if saved {
                    m.c.cancel_drained += 1;
                    drop(m);
                    lease.set_reusable(true);
                    // One that carried a body of this client before stays private to it.
                    session.finish(lease, reuse);
                } else {
                    m.c.cancel_closed += 1;
                    prepaid.keep();
                }
                return Err(Failure::ClientGone);
            }
            Err(RelayError::AfterHead {
                status,
                client_gone,
            }) => {
                let mut m = ctx.metrics.borrow_mut();
                if client_gone {
                    m.c.client_aborts += 1;
                    m.c.cancel_closed += 1;
                    prepaid.keep();
                    return Err(Failure::Broken {
                        status,
                        client_gone,
                    });
                } else {
                    m.c.backend_errors += 1;
                }
                return Err(Failure::Broken {
                    status,
                    client_gone,
                });
            }
        }
    }
}

/// A token of the client's connect budget taken for this request: given back when the
/// request ends (its connection was pooled, reused, or failed for the backend's reasons),
/// unless [`Prepaid::keep`] says the client's cancel cost the connection.
struct Prepaid<'a> {
    session: &'a Session,
    limits: &'a CancelLimits,
    taken: bool,
}

impl Prepaid<'_> {
    fn refund(&mut self) {
        if std::mem::take(&mut self.taken) {
            self.session.with_budget(self.limits, TokenBucket::refund);
        }
    }

    /// The client's cancel closed the connection: the token stays spent.
    fn keep(&mut self) {
        self.taken = false;
    }
}

impl Drop for Prepaid<'_> {
    fn drop(&mut self) {
        self.refund();
    }
}

/// Waits while this client's connect budget is spent and this request would need a new
/// connection (`--cancel-connect-rate`), then takes a token if one is needed:
/// `Some(taken)`, or `None` when the client gave up meanwhile. The wait is bounded by
/// `--timeout-backend`; past it the request goes ahead (the budget bounds the rate, it
/// never starves a client).
async fn wait_for_connect_budget(
    ctx: &ShardCtx,
    session: &Session,
    req: &Request<'_>,
    sink: &mut impl ResponseSink,
) -> Option<bool> {
    let cfg = ctx.config();
    let until = glommio::clock::now() + cfg.timeouts.backend;
    let mut counted = false;
    loop {
        let wait = match session.take_connect(&ctx.upstreams, req.slot, &cfg.cancel) {
            Ok(taken) => return Some(taken),
            Err(wait) => wait,
        };
        if glommio::clock::now() >= until {
            return Some(false);
        }
        if !counted {
            counted = true;
            ctx.metrics.borrow_mut().c.cancel_connect_waits += 1;
        }
        let mut sleep = pin!(glommio::timer::sleep(wait.max(Duration::from_millis(1))));
        let gone = poll_fn(|cx| {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            sink.poll_gone(cx).map(|()| true)
        })
        .await;
        if gone {
            return None;
        }
    }
}

/// After a client cancelled a request whose response had not started: reads the rest
/// of the response (head and body) and discards it, within `--cancel-drain-time` and
/// `--cancel-drain-size`. True when the response ended cleanly with the connection
/// reusable (it may then be pooled); false when it must be closed (too slow, too big,
/// `Connection: close`, body until close, broken framing, bytes past the end).
async fn drain(ctx: &ShardCtx, lease: &mut Lease, method: Method, bbuf: &mut Buf) -> bool {
    let cfg = ctx.config();
    let (limit, max_size) = (cfg.cancel.drain_time, cfg.cancel.drain_size);
    if limit.is_zero() {
        return false;
    }
    let max_head = cfg.max_head;
    let work = async {
        let src = lease.transport();
        let resp = read_response_head((max_head, limit), src, bbuf, method, &mut Discard)
            .await
            .ok()?;
        if !resp.keep_alive || resp.status == 101 {
            return None;
        }
        bbuf.consume(resp.head_len);
        match resp.framing {
            Framing::Empty => {}
            Framing::UntilClose => return None,
            Framing::Length(n) => {
                if n > max_size {
                    return None;
                }
                let mut left = n;
                loop {
                    let take = (bbuf.len() as u64).min(left) as usize;
                    bbuf.consume(take);
                    left -= take as u64;
                    if left == 0 {
                        break;
                    }
                    bbuf.clear();
                    if bbuf.fill_from(src).await.ok()? == 0 {
                        return None;
                    }
                }
            }
            Framing::Chunked => {
                let mut scanner = http1::ChunkedScanner::new();
                let mut seen = 0u64;
                loop {
                    if !bbuf.is_empty() {
                        // The scanner takes everything it is given unless the body ends.
                        let (used, done) = scanner
                            .feed_decoded(bbuf.data(), |d| seen += d.len() as u64)
                            .ok()?;
                        bbuf.consume(used);
                        if done {
                            break;
                        }
                        if seen > max_size {
                            return None;
                        }
                    }
                    bbuf.clear();
                    if bbuf.fill_from(src).await.ok()? == 0 {
                        return None;
                    }
                }
            }
        }
        // Anything past the end is a desync: never pooled.
        bbuf.is_empty().then_some(())
    };
    let done = futures_lite::future::or(work, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await;
    done.is_some()
}

/// Sends the request body, all of it within `limit` (`--timeout-client-body`): a client
/// that trickles its body cannot hold a backend connection longer than that.
async fn send_body<W: AsyncWrite + Unpin>(
    src: &mut impl BodySource,
    dst: &mut W,
    limit: Duration,
) -> Result<(), BodyError> {
    let deadline = async {
        glommio::timer::sleep(limit).await;
        Err(BodyError::TooSlow)
    };
    futures_lite::future::or(src.send(dst), deadline).await
}

/// Maps a request body that could not be sent (nothing was answered yet).
fn body_failed(ctx: &ShardCtx, e: BodyError) -> Failure {
    let mut m = ctx.metrics.borrow_mut();
    match e {
        BodyError::Client => {
            m.c.client_aborts += 1;
            Failure::ClientGone
        }
        BodyError::Framing => {
            m.c.bad_request += 1;
            Failure::Answer {
                status: 400,
                close: true,
            }
        }
        BodyError::TooSlow => {
            m.c.body_timeout += 1;
            Failure::Answer {
                status: 408,
                close: true,
            }
        }
        BodyError::Backend(e) => {
            tracing::debug!(error = %e, "backend stopped reading the request body");
            m.c.backend_errors += 1;
            Failure::Answer {
                status: 502,
                close: true,
            }
        }
    }
}

type Relayed = Result<(u16, bool, bool), RelayError>;

/// Sends the body and relays the response at the same time. A body the client breaks
/// ends the exchange; a backend that stops reading it may still answer.
#[allow(clippy::too_many_arguments)]
async fn duplex<T: AsyncRead + AsyncWrite + Unpin + SpliceEnd>(
    ctx: &ShardCtx,
    src: &mut impl BodySource,
    sink: &mut impl ResponseSink,
    method: Method,
    (max_head, head_time, body_time): (usize, Duration, Duration),
    bbuf: &mut Buf,
    backend: &Duplex<'_, T>,
) -> Result<(Relayed, bool), Failure> {
    let (mut up, mut down) = (backend, backend);
    let mut request = pin!(send_body(src, &mut up, body_time));
    let mut response = pin!(relay(sink, method, (max_head, head_time), bbuf, &mut down));
    let mut request_done: Option<Result<(), BodyError>> = None;
    let relayed = poll_fn(|cx| {
        if request_done.is_none() {
            if let Poll::Ready(r) = request.as_mut().poll(cx) {
                request_done = Some(r);
            }
        }
        if let Some(Err(BodyError::Client | BodyError::Framing | BodyError::TooSlow)) =
            &request_done
        {
            return Poll::Ready(None);
        }
        response.as_mut().poll(cx).map(Some)
    })
    .await;
    match (relayed, request_done) {
        (Some(r), done) => Ok((r, matches!(done, Some(Ok(()))))),
        (None, Some(Err(e))) => Err(body_failed(ctx, e)),
        (None, _) => Err(Failure::ClientGone),
    }
}

/// How relaying a response failed.
enum RelayError {
    /// The connection failed before any response byte (retryable on a reused one).
    NothingReceived(io::Error),
    Io(io::Error),
    Bad(HeadError),
    /// A `101` the front cannot pass on.
    Switching,
    /// The client gave up while the backend's head was awaited.
    ClientGoneBeforeHead,
    /// The response started and then broke.
    AfterHead {
        status: u16,
        client_gone: bool,
    },
}

/// Reads the backend's response head (skipping interim responses) and passes the
/// response on. Returns (status, client keep-alive, backend framing intact).
async fn relay<R: AsyncRead + Unpin + SpliceEnd>(
    sink: &mut impl ResponseSink,
    method: Method,
    (max_head, head_time): (usize, Duration),
    bbuf: &mut Buf,
    src: &mut R,
) -> Relayed {
    let resp =
        read_response_head((max_head, head_time), src, bbuf, method, &mut ToSink(sink)).await?;
    let client_keep_alive =
        sink.deliver(&resp, bbuf, src)
            .await
            .map_err(|e| RelayError::AfterHead {
                status: resp.status,
                client_gone: matches!(e, DeliverError::ClientGone),
            })?;
    // After a 101 the connection speaks another protocol: never pool it.
    let backend_ok = resp.keep_alive && resp.framing != Framing::UntilClose && resp.status != 101;
    Ok((resp.status, client_keep_alive, backend_ok))
}

/// What takes a final response head while it is parsed, and says when a wait for it
/// is abandoned.
trait TakeHead {
    /// Ready once the client has given up (see [`ResponseSink::poll_gone`]).
    fn poll_gone(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
    /// The final head, while it is parsed; false refuses it.
    fn take(&mut self, fields: &http1::ResponseFields<'_, '_>) -> bool;
}

/// Relaying: the sink writes its head from the parse ([`ResponseSink::head`]); a `101`
/// it cannot pass on is refused.
struct ToSink<'a, S>(&'a mut S);

impl<S: ResponseSink> TakeHead for ToSink<'_, S> {
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_gone(cx)
    }

    fn take(&mut self, fields: &http1::ResponseFields<'_, '_>) -> bool {
        if fields.head().status == 101 && !self.0.can_switch() {
            return false;
        }
        self.0.head(fields);
        true
    }
}

/// Draining a cancelled request's response: only the head's framing matters.
struct Discard;

impl TakeHead for Discard {
    fn take(&mut self, _: &http1::ResponseFields<'_, '_>) -> bool {
        true
    }
}

/// Reads until a complete final response head is buffered in `bbuf` and hands it to
/// `taker` from the parse that checked it (interim `1xx` other than 101 are dropped:
/// the client was already told to continue). From the first byte of a response, the
/// final head must be complete within `head_time` (`--timeout-backend`), however many
/// interim responses or slow bytes come before it; each read is also bounded by the
/// transport's own timeout (backend silence). A wait for bytes ends early when the
/// taker's client gives up.
async fn read_response_head<R: AsyncRead + Unpin>(
    (max_head, head_time): (usize, Duration),
    src: &mut R,
    bbuf: &mut Buf,
    method: Method,
    taker: &mut impl TakeHead,
) -> Result<ResponseHead, RelayError> {
    let mut received = false;
    let mut deadline: Option<Instant> = None;
    let too_slow = || {
        RelayError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "no final response head within --timeout-backend of its first byte",
        ))
    };
    loop {
        if !bbuf.is_empty() {
            // `None`: an interim response, dropped; otherwise whether the taker took it.
            let parsed = http1::parse_response_with(bbuf.data(), method, max_head, |f| {
                let r = f.head();
                (!r.is_interim() || r.status == 101).then(|| taker.take(f))
            });
            match parsed {
                Ok(Some((r, None))) => {
                    bbuf.consume(r.head_len);
                    continue;
                }
                Ok(Some((_, Some(false)))) => return Err(RelayError::Switching),
                Ok(Some((r, Some(true)))) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(RelayError::Bad(e)),
            }
        }
        if bbuf.spare_capacity() == 0 && !bbuf.grow(max_head + 1) {
            return Err(RelayError::Bad(HeadError::TooLarge));
        }
        let left = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(glommio::clock::now());
                if left.is_zero() {
                    return Err(too_slow());
                }
                Some(left)
            }
        };
        let fill = async {
            match left {
                None => bbuf.fill_from(src).await,
                Some(left) => {
                    let timer = async {
                        glommio::timer::sleep(left).await;
                        Err(io::Error::from(io::ErrorKind::TimedOut))
                    };
                    futures_lite::future::or(bbuf.fill_from(src), timer).await
                }
            }
        };
        let mut fill = pin!(fill);
        let filled = poll_fn(|cx| {
            if let Poll::Ready(r) = fill.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            taker.poll_gone(cx).map(|()| None)
        })
        .await;
        let Some(filled) = filled else {
            return Err(RelayError::ClientGoneBeforeHead);
        };
        if deadline.is_none() {
            deadline = Some(glommio::clock::now() + head_time);
        }
        match filled {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "backend closed");
                return Err(if received {
                    RelayError::Io(e)
                } else {
                    RelayError::NothingReceived(e)
                });
            }
            Ok(_) => received = true,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(RelayError::Io(e)),
            Err(e) => {
                return Err(if received {
                    RelayError::Io(e)
                } else {
                    RelayError::NothingReceived(e)
                })
            }
        }
    }
}
